//! Persistence while a bench runs (issue 12, "never lose a run"): the
//! history row written as `running` before load, then a writer thread that
//! takes the aggregator's [`Checkpoint`]s and appends their samples to the
//! database and rewrites the partial report (the row's summary and the
//! `--json` file, atomically). It runs on its own thread so neither the
//! request tasks nor the aggregator ever wait for the disk.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bench::BenchError;
use crate::config::BenchConfig;
use crate::engine::EngineOutcome;
use crate::report::{RunReport, RunStatus};
use crate::stats::aggregator::Checkpoint;
use crate::stats::Stats;
use crate::store::Store;
use crate::summary;

/// Where the `--json` summary goes.
pub enum JsonOut {
    /// A regular file: rewritten during the run by write-and-rename, so a
    /// reader sees either the previous or the next complete report.
    Rewritable(PathBuf),
    /// Anything else (a pipe, `/dev/stdout`): renaming over it would replace
    /// the device, so it gets one write, at the end.
    Stream(PathBuf, File),
}

impl JsonOut {
    /// Classifies the file `Outputs` has just created at `path`.
    pub fn new(path: PathBuf, file: File) -> Self {
        match file.metadata() {
            Ok(m) if m.is_file() => Self::Rewritable(path),
            _ => Self::Stream(path, file),
        }
    }

    /// Writes the final report.
    pub fn write_final(self, report: &RunReport) -> Result<(), BenchError> {
        match self {
            Self::Rewritable(path) => write_json_atomic(report, &path)
                .map_err(|source| BenchError::Output { path, source }),
            Self::Stream(path, file) => crate::bench::write_json(report, file)
                .map_err(|source| BenchError::Output { path, source }),
        }
    }
}

/// Writes the report as pretty JSON to a temporary file beside `path`, then
/// renames it over `path` (atomic on one file system).
pub fn write_json_atomic(report: &RunReport, path: &Path) -> std::io::Result<()> {
    let name = path.file_name().map_or_else(
        || "throtl.json".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = File::create(&tmp).and_then(|f| {
        let mut w = std::io::BufWriter::new(f);
        serde_json::to_writer_pretty(&mut w, report)?;
        w.write_all(b"\n")?;
        w.flush()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// What a partial report is built from, besides the statistics.
pub struct RunIdentity {
    /// The run's configuration.
    pub cfg: BenchConfig,
    /// Its id, fixed before load so every checkpoint names the same row.
    pub run_id: String,
    /// Wall-clock start.
    pub started_wall: time::OffsetDateTime,
    /// The run's time origin.
    pub origin: Instant,
    /// Process CPU time at the start.
    pub cpu_before: Option<Duration>,
    /// Distinct pre-built requests.
    pub distinct_prompts: usize,
}

impl RunIdentity {
    /// The report of what has finished so far, status `running`.
    pub fn partial_report(&self, stats: &Stats) -> RunReport {
        let outcome = EngineOutcome {
            started: self.origin,
            ended: Instant::now(),
            peak_in_flight: 0, // known to the engine only when the load ends
            interrupted: false,
        };
        let cpu = match (self.cpu_before, crate::sys::cpu_time()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
            _ => None,
        };
        let cfg = &self.cfg;
        let mut r = summary::build(cfg, stats, &outcome, self.started_wall, cpu);
        summary::add_workload(&mut r, cfg, stats, self.distinct_prompts);
        r.cost = cfg.results.cost.price(&r);
        r.run_id.clone_from(&self.run_id);
        r.status = RunStatus::Running;
        r
    }
}

/// The writer thread of a running bench.
pub struct LiveRun {
    checkpoints: Sender<Checkpoint>,
    thread: JoinHandle<Outlet>,
}

/// What the writer owns, handed back at the end for the final write.
pub struct Outlet {
    /// The history database, if the run is stored.
    pub store: Option<Store>,
    /// The `--json` destination, if any.
    pub json: Option<JsonOut>,
    /// The first failure to persist during the run (the run went on).
    pub error: Option<String>,
}

impl LiveRun {
    /// Writes the `running` row and the first partial `--json` (nothing
    /// finished yet), then starts the writer. Fails before any load when
    /// the row cannot be written.
    pub fn start(
        identity: RunIdentity,
        initial: &Stats,
        outlet: Outlet,
    ) -> Result<Self, BenchError> {
        let report = identity.partial_report(initial);
        if let Some(store) = &outlet.store {
            store.begin_run(&report, identity.cfg.results.group.as_deref())?;
        }
        if let Some(JsonOut::Rewritable(path)) = &outlet.json {
            write_json_atomic(&report, path).map_err(|source| BenchError::Output {
                path: path.clone(),
                source,
            })?;
        }
        let (checkpoints, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("throtl-persist".into())
            .spawn(move || write_checkpoints(&identity, rx, outlet))
            .map_err(|e| BenchError::Internal(e.to_string()))?;
        Ok(Self {
            checkpoints,
            thread,
        })
    }

    /// The sender the aggregator hands checkpoints to.
    pub fn checkpoints(&self) -> Sender<Checkpoint> {
        self.checkpoints.clone()
    }

    /// Waits for the writer to drain (the aggregator must have finished,
    /// dropping its sender) and takes back the store and `--json` output.
    pub fn finish(self) -> Result<Outlet, BenchError> {
        drop(self.checkpoints);
        self.thread
            .join()
            .map_err(|_| BenchError::Internal("persistence thread panicked".into()))
    }
}

/// The writer loop: runs until the aggregator drops its sender. A failure
/// is kept, not raised: the run goes on and its final write is tried anyway.
fn write_checkpoints(
    identity: &RunIdentity,
    rx: Receiver<Checkpoint>,
    mut outlet: Outlet,
) -> Outlet {
    while let Ok(first) = rx.recv() {
        let checkpoint = with_queued(first, &rx);
        if let Err(e) = persist(identity, &checkpoint, &outlet) {
            outlet.error.get_or_insert(e);
        }
    }
    outlet
}

/// Folds the checkpoints that queued while the last write waited (a busy
/// database, a slow disk) into one: every sample, the newest statistics. So
/// a slow writer catches up in one write instead of falling further behind.
fn with_queued(mut c: Checkpoint, rx: &Receiver<Checkpoint>) -> Checkpoint {
    for next in rx.try_iter() {
        c.samples.extend(next.samples);
        if next.stats.is_some() {
            c.stats = next.stats;
        }
    }
    c
}

fn persist(identity: &RunIdentity, c: &Checkpoint, outlet: &Outlet) -> Result<(), String> {
    if let (Some(store), false) = (&outlet.store, c.samples.is_empty()) {
        store
            .append_samples(&identity.run_id, &c.samples)
            .map_err(|e| e.to_string())?;
    }
    let Some(stats) = &c.stats else {
        return Ok(());
    };
    let report = identity.partial_report(stats);
    if let Some(store) = &outlet.store {
        store
            .update_running_summary(&report)
            .map_err(|e| e.to_string())?;
    }
    if let Some(JsonOut::Rewritable(path)) = &outlet.json {
        write_json_atomic(&report, path)
            .map_err(|e| format!("cannot rewrite '{}': {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::samples::RequestSample;

    fn sample(seq: u64) -> RequestSample {
        RequestSample {
            seq,
            start_ms: 0.0,
            end_ms: 1.0,
            ttft_ms: None,
            tpot_ms: None,
            output_tokens: 1,
            error: None,
        }
    }

    #[test]
    fn queued_checkpoints_fold_into_every_sample_and_the_newest_stats() {
        let (tx, rx) = std::sync::mpsc::channel();
        let newest = Stats {
            ok: 3,
            ..Stats::default()
        };
        for (seq, stats) in [(2, Some(Box::new(newest))), (3, None)] {
            tx.send(Checkpoint {
                samples: vec![sample(seq)],
                stats,
            })
            .unwrap();
        }
        let first = Checkpoint {
            samples: vec![sample(1)],
            stats: Some(Box::default()),
        };
        let c = with_queued(first, &rx);
        let seqs: Vec<u64> = c.samples.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(c.stats.map(|s| s.ok), Some(3));
    }
}
