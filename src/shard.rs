//! Sharded runs (`bench --shard K/N`, `throtl merge`): each load generator
//! writes a shard file holding everything a report needs — counters, error
//! classes, every histogram, the per-second series, window bounds as times
//! since the common start T0 — and `merge` folds the files into the report
//! one machine would have written. HDR histograms and counters merge
//! exactly; see docs/distributed.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::BenchConfig;
use crate::engine::EngineOutcome;
use crate::report::samples::RequestSample;
use crate::report::RunReport;
use crate::stats::portable::{PortableStats, Timebase};
use crate::stats::Stats;
use crate::store::runs::StoredRun;

/// Identifier of the shard file format.
pub const SHARD_SCHEMA: &str = "throtl.shard.v1";

/// One shard's results (`--shard-out`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardFile {
    /// Always [`SHARD_SCHEMA`].
    pub schema: String,
    /// Hash of the run's configuration without its shard and output
    /// settings: equal for every slice of one plan.
    pub plan_hash: String,
    /// K.
    pub shard: u32,
    /// N.
    pub shards: u32,
    /// The common start, RFC 3339 (the shard's own start without `--start-at`).
    pub t0: String,
    /// How long after T0 this shard started measuring (its clock's offset
    /// plus its start-up delay): shifts windows, never latencies.
    pub start_offset_s: f64,
    /// The `bench` flags of the run (they rebuild its configuration).
    pub args: Vec<String>,
    /// The protocol the shard used (`--api` value).
    pub api: String,
    /// The model it sent.
    pub model: String,
    /// The shard's own run id.
    pub run_id: String,
    /// Everything measured, instants as offsets from T0.
    pub stats: PortableStats,
    /// When the shard's load started and ended, since T0.
    pub started_since_t0: Duration,
    /// See `started_since_t0`.
    pub ended_since_t0: Duration,
    /// Peak requests in flight on this shard.
    pub peak_in_flight: u64,
    /// Ctrl-C ended this shard.
    pub interrupted: bool,
    /// The shard process's CPU time (s); reported per shard, not merged.
    pub cpu_s: Option<f64>,
    /// Distinct pre-built prompts.
    pub distinct_prompts: usize,
    /// One sample per measured request, times since T0 (ms).
    pub samples: Vec<RequestSample>,
    /// The target's `/metrics` series (shard 0 only scrapes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_metrics: Option<crate::scrape::recorder::ServerMetrics>,
}

/// Why shard files cannot be merged. Each names the offending file.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A file could not be read or parsed.
    #[error("cannot read shard file '{path}': {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// Nothing to merge.
    #[error("no shard files given: pass every shard-K.json of the run")]
    Empty,
    /// Shards of different plans.
    #[error("'{path}' is a shard of another plan (plan {found}, expected {expected}): merge the shards of one run only")]
    MixedPlans {
        /// The file.
        path: PathBuf,
        /// Its plan hash.
        found: String,
        /// The first file's.
        expected: String,
    },
    /// The same slice twice.
    #[error("'{path}' is shard {shard}/{shards} again: each slice may be merged once")]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// K.
        shard: u32,
        /// N.
        shards: u32,
    },
    /// Slices missing.
    #[error("shards {missing:?} of {shards} are missing; pass them, or --allow-partial to merge what is here")]
    Missing {
        /// The absent Ks.
        missing: Vec<u32>,
        /// N.
        shards: u32,
    },
    /// A shard started too late after T0.
    #[error("'{path}' started {late_s:.3} s after T0, more than --max-start-skew {bound_s:.3} s: its load did not overlap the others'. Re-run it, or raise the bound")]
    Late {
        /// The file.
        path: PathBuf,
        /// Its start offset.
        late_s: f64,
        /// The bound.
        bound_s: f64,
    },
}

/// A stable 64-bit FNV-1a hash of the run's configuration JSON (keys in
/// sorted order), outputs left out.
pub fn plan_hash(cfg: &BenchConfig) -> String {
    let mut v = serde_json::to_value(cfg).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        for k in ["json_out", "records_out", "progress", "results"] {
            m.remove(k);
        }
    }
    let text = v.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// What a finishing bench hands over to become a shard file.
pub struct ShardParts<'a> {
    /// The run's configuration (with its shard settings).
    pub cfg: &'a BenchConfig,
    /// Final statistics.
    pub stats: &'a Stats,
    /// Samples, times from `origin`.
    pub samples: &'a [RequestSample],
    /// The engine's outcome.
    pub outcome: &'a EngineOutcome,
    /// The local instant the shard's series and samples start at.
    pub origin: Instant,
    /// T0 and how long after it `origin` is.
    pub t0: time::OffsetDateTime,
    /// See `t0`.
    pub shift: Duration,
    /// The shard's own report (id, CPU, server metrics).
    pub report: &'a RunReport,
}

/// Builds the shard file of a finished slice.
pub fn shard_file(p: ShardParts<'_>) -> ShardFile {
    let tb = Timebase {
        origin: p.origin,
        shift: p.shift,
    };
    let shard = p.cfg.client.shard.as_ref();
    let shift_ms = p.shift.as_secs_f64() * 1000.0;
    let samples = p
        .samples
        .iter()
        .cloned()
        .map(|mut s| {
            s.start_ms += shift_ms;
            s.end_ms += shift_ms;
            s
        })
        .collect();
    let since = |at: Instant| at.saturating_duration_since(p.origin) + p.shift;
    ShardFile {
        schema: SHARD_SCHEMA.into(),
        plan_hash: plan_hash(p.cfg),
        shard: shard.map_or(0, |s| s.slice.index),
        shards: shard.map_or(1, |s| s.slice.count),
        t0: rfc3339(p.t0),
        start_offset_s: p.shift.as_secs_f64(),
        args: shard.map(|s| s.args.clone()).unwrap_or_default(),
        api: p.cfg.api.to_string(),
        model: p.cfg.model.clone(),
        run_id: p.report.run_id.clone(),
        stats: PortableStats::from_stats(p.stats, tb),
        started_since_t0: since(p.outcome.started),
        ended_since_t0: since(p.outcome.ended),
        peak_in_flight: p.outcome.peak_in_flight,
        interrupted: p.outcome.interrupted,
        cpu_s: p.report.client.cpu_s,
        distinct_prompts: p.report.workload.as_ref().map_or(0, |w| w.distinct_prompts),
        samples,
        server_metrics: p.report.server_metrics.clone(),
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Line before a shard file printed to stdout (`--shard-out -`, e.g. in a pod's log).
pub const BEGIN_MARKER: &str = "-----BEGIN THROTL SHARD-----";
/// Line after it.
pub const END_MARKER: &str = "-----END THROTL SHARD-----";

/// True for the `--shard-out` value that means stdout.
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Writes `f` as pretty JSON (write then rename, so a collector never reads
/// half a file); to `-`, prints it to stdout between [`BEGIN_MARKER`] and
/// [`END_MARKER`] in one write.
pub fn write(path: &Path, f: &ShardFile) -> std::io::Result<()> {
    if is_stdout(path) {
        use std::io::Write;
        let json = serde_json::to_string(f).map_err(std::io::Error::other)?;
        let mut out = std::io::stdout().lock();
        return out
            .write_all(format!("{BEGIN_MARKER}\n{json}\n{END_MARKER}\n").as_bytes())
            .and_then(|()| out.flush());
    }
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(f).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Every shard file printed between markers in `text` (pod logs).
pub fn extract_from_log(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN_MARKER) {
        let after = &rest[start + BEGIN_MARKER.len()..];
        let Some(end) = after.find(END_MARKER) else {
            break;
        };
        out.push(after[..end].trim());
        rest = &after[end + END_MARKER.len()..];
    }
    out
}

/// Reads shard files.
pub fn load(paths: &[PathBuf]) -> Result<Vec<(PathBuf, ShardFile)>, MergeError> {
    paths
        .iter()
        .map(|p| {
            let read_err = |reason: String| MergeError::Read {
                path: p.clone(),
                reason,
            };
            let text = std::fs::read_to_string(p).map_err(|e| read_err(e.to_string()))?;
            let f: ShardFile = serde_json::from_str(&text).map_err(|e| read_err(e.to_string()))?;
            if f.schema != SHARD_SCHEMA {
                return Err(read_err(format!(
                    "schema '{}', expected '{SHARD_SCHEMA}'",
                    f.schema
                )));
            }
            Ok((p.clone(), f))
        })
        .collect()
}

/// Checks that `files` are the slices of one plan, each once, none late;
/// returns the missing slices (empty unless `allow_partial`).
pub fn check(
    files: &[(PathBuf, ShardFile)],
    allow_partial: bool,
    max_skew: Duration,
) -> Result<Vec<u32>, MergeError> {
    let Some((_, first)) = files.first() else {
        return Err(MergeError::Empty);
    };
    let mut seen = BTreeSet::new();
    for (path, f) in files {
        if f.plan_hash != first.plan_hash || f.shards != first.shards {
            return Err(MergeError::MixedPlans {
                path: path.clone(),
                found: format!("{} ({} shards)", f.plan_hash, f.shards),
                expected: format!("{} ({} shards)", first.plan_hash, first.shards),
            });
        }
        if !seen.insert(f.shard) {
            return Err(MergeError::Duplicate {
                path: path.clone(),
                shard: f.shard,
                shards: f.shards,
            });
        }
        if f.start_offset_s > max_skew.as_secs_f64() {
            return Err(MergeError::Late {
                path: path.clone(),
                late_s: f.start_offset_s,
                bound_s: max_skew.as_secs_f64(),
            });
        }
    }
    let missing: Vec<u32> = (0..first.shards).filter(|k| !seen.contains(k)).collect();
    if !missing.is_empty() && !allow_partial {
        return Err(MergeError::Missing {
            missing,
            shards: first.shards,
        });
    }
    Ok(missing)
}

/// Folds the shards into one run, reported through the same summary code as
/// a single-machine run of `cfg` (rebuilt from the shards' flags, without
/// the shard settings). Client CPU is the sum over shards (each shard's is
/// in its own file).
pub fn merge(cfg: &BenchConfig, files: &[(PathBuf, ShardFile)], missing: &[u32]) -> StoredRun {
    let t0 = Instant::now();
    // Fold onto the first shard: its series already starts at `t0` (an
    // empty series has no origin and would drop the others' seconds).
    let mut shards = files.iter().map(|(_, f)| f.stats.clone().into_stats(t0));
    let mut stats = shards.next().unwrap_or_else(|| Stats {
        series: crate::stats::TimeSeries::starting_at(t0),
        ..Default::default()
    });
    for s in shards {
        stats.merge(&s);
    }
    stats.slos = cfg.workload.slos.clone();
    let first = files
        .iter()
        .map(|(_, f)| f.started_since_t0)
        .min()
        .unwrap_or_default();
    let last = files
        .iter()
        .map(|(_, f)| f.ended_since_t0)
        .max()
        .unwrap_or_default();
    let outcome = EngineOutcome {
        started: t0 + first,
        ended: t0 + last.max(first),
        peak_in_flight: files.iter().map(|(_, f)| f.peak_in_flight).sum(),
        interrupted: files.iter().any(|(_, f)| f.interrupted),
    };
    let started_wall = files
        .first()
        .and_then(|(_, f)| {
            time::OffsetDateTime::parse(&f.t0, &time::format_description::well_known::Rfc3339).ok()
        })
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let cpu: Option<f64> = files.iter().map(|(_, f)| f.cpu_s).sum();
    let mut report = crate::summary::build(cfg, &stats, &outcome, started_wall, cpu);
    let distinct = files
        .iter()
        .map(|(_, f)| f.distinct_prompts)
        .max()
        .unwrap_or(0);
    crate::summary::add_workload(&mut report, cfg, &stats, distinct);
    report.server_metrics = files.iter().find_map(|(_, f)| f.server_metrics.clone());
    report.cost = cfg.results.cost.price(&report);
    report.warnings.extend(merge_warnings(files, missing));
    let mut samples: Vec<RequestSample> = files
        .iter()
        .flat_map(|(_, f)| f.samples.iter().cloned())
        .collect();
    samples.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    StoredRun {
        histograms: stats.histograms(),
        report,
        samples,
        group: cfg.results.group.clone(),
    }
}

fn merge_warnings(files: &[(PathBuf, ShardFile)], missing: &[u32]) -> Vec<String> {
    let n = files.first().map_or(0, |(_, f)| f.shards);
    let mut w = vec![format!(
        "merged from {} of {n} shards; client CPU is the sum of the shards' (each shard's is in its file); peak in flight is the sum of the shards' peaks",
        files.len()
    )];
    if !missing.is_empty() {
        w.push(format!(
            "shards {missing:?} of {n} are missing (--allow-partial): the numbers cover the other slices only"
        ));
    }
    let t0s: BTreeSet<&str> = files.iter().map(|(_, f)| f.t0.as_str()).collect();
    if t0s.len() > 1 {
        w.push(format!(
            "the shards name different start instants T0 ({}): each is aligned on its own, so a shard started at another time overlaps the others in the merged windows and throughput; latencies are unaffected",
            t0s.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    let skew = files
        .iter()
        .map(|(_, f)| f.start_offset_s)
        .fold(0.0, f64::max);
    if skew > 0.01 {
        w.push(format!(
            "shards started up to {:.0} ms after T0: windows and throughput may shift by that much, latencies do not",
            skew * 1000.0
        ));
    }
    w
}
