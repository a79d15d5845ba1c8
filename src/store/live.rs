//! Runs in progress (issue 12, "never lose a run"): the row a bench writes
//! as `running` before load starts, the sample batches it appends while it
//! runs, its rewritten partial summary, and `lost` for a `running` row whose
//! process is gone.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::runs::{decode_samples, encode_samples};
use super::{Store, StoreError};
use crate::report::samples::RequestSample;
use crate::report::{RunReport, RunStatus};
use crate::stats::LatencyHistogram;

/// Schema v4: who is running a run (`pid`, `host`) and the per-request
/// samples appended while it runs (one row per batch, compressed like
/// `runs.requests`).
pub const MIGRATION_V4: &str = "ALTER TABLE runs ADD COLUMN pid INTEGER;
    ALTER TABLE runs ADD COLUMN host TEXT;
    CREATE TABLE run_requests (
        id      INTEGER PRIMARY KEY,
        run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        samples BLOB NOT NULL
    );
    CREATE INDEX run_requests_by_run ON run_requests(run_id, id);";

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl Store {
    /// Writes the row of a run about to start: status `running`, `report`
    /// (the partial summary so far) as its summary, and this process's id
    /// and host, so a later open can tell whether it is still alive.
    pub fn begin_run(&self, report: &RunReport, group: Option<&str>) -> Result<(), StoreError> {
        let env =
            serde_json::to_string(&report.environment).map_err(|e| corrupt("environment", e))?;
        let config = serde_json::to_string(&report.config).map_err(|e| corrupt("config", e))?;
        let summary = serde_json::to_string(report).map_err(|e| corrupt("summary", e))?;
        self.conn.execute(
            "INSERT INTO runs (id, started_ms, status, target, model, tool_version, environment, config, summary, requests, grp, pid, host)
             VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![report.run_id, super::runs::started_ms(report), report.target.url, report.target.model,
                report.tool_version, env, config, summary, encode_samples(&[])?, group,
                i64::from(std::process::id()), crate::sys::hostname()],
        )?;
        Ok(())
    }

    /// Appends one batch of a running run's samples.
    pub fn append_samples(
        &self,
        run_id: &str,
        samples: &[RequestSample],
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO run_requests (run_id, samples) VALUES (?1, ?2)",
            params![run_id, encode_samples(samples)?],
        )?;
        Ok(())
    }

    /// Replaces the summary of a run that is still `running` (a finished
    /// row is never overwritten by a late checkpoint).
    pub fn update_running_summary(&self, report: &RunReport) -> Result<(), StoreError> {
        let summary = serde_json::to_string(report).map_err(|e| corrupt("summary", e))?;
        self.conn.execute(
            "UPDATE runs SET summary = ?2 WHERE id = ?1 AND status = 'running'",
            params![report.run_id, summary],
        )?;
        Ok(())
    }

    /// The samples appended to a run while it ran, in order.
    pub(super) fn appended_samples(&self, run_id: &str) -> Result<Vec<RequestSample>, StoreError> {
        appended_samples(&self.conn, run_id)
    }

    /// Marks `lost` every `running` row of this host whose process no
    /// longer exists, with a summary rebuilt from its appended samples.
    /// Rows of other hosts stay `running`: their processes cannot be
    /// checked from here. Returns how many were marked.
    pub fn mark_lost_runs(&mut self) -> Result<usize, StoreError> {
        let host = crate::sys::hostname();
        let dead: Vec<String> = {
            let mut st = self.conn.prepare(
                "SELECT id, pid FROM runs WHERE status = 'running' AND host = ?1 AND pid IS NOT NULL",
            )?;
            let rows = st.query_map([&host], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|(_, pid)| process_is_gone(*pid))
                .map(|(id, _)| id)
                .collect()
        };
        for id in &dead {
            self.mark_lost(id)?;
        }
        Ok(dead.len())
    }

    /// Marks one run lost. IMMEDIATE, so the row is read under the write
    /// lock: a deferred transaction would fail with `SQLITE_BUSY` (no busy
    /// wait) when another process marked it between our read and our write.
    /// Finding it no longer `running` means that other process did the job.
    fn mark_lost(&mut self, id: &str) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let summary: Option<String> = tx
            .query_row(
                "SELECT summary FROM runs WHERE id = ?1 AND status = 'running'",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(summary) = summary else {
            return Ok(());
        };
        let checkpoint: RunReport =
            serde_json::from_str(&summary).map_err(|e| corrupt("summary", e))?;
        let samples = appended_samples(&tx, id)?;
        let lost = lost_report(checkpoint, &samples);
        let summary = serde_json::to_string(&lost).map_err(|e| corrupt("summary", e))?;
        tx.execute(
            "UPDATE runs SET status = 'lost', summary = ?2 WHERE id = ?1",
            params![id, summary],
        )?;
        tx.commit()?;
        Ok(())
    }
}

fn appended_samples(conn: &Connection, run_id: &str) -> Result<Vec<RequestSample>, StoreError> {
    let mut st = conn.prepare("SELECT samples FROM run_requests WHERE run_id = ?1 ORDER BY id")?;
    let blobs = st
        .query_map([run_id], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for blob in blobs {
        out.extend(decode_samples(&blob)?);
    }
    Ok(out)
}

/// True only when `pid` surely no longer exists on this host (`kill(pid, 0)`
/// fails with `ESRCH`); a process of another user (`EPERM`) is alive.
/// A zombie (killed but not yet reaped by its parent) still counts as alive.
pub fn process_is_gone(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 delivers nothing; it only asks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// The summary of a lost run: its last checkpoint, with the request counts,
/// throughput and TTFT / TPOT / e2e percentiles recomputed from every
/// persisted sample (which run up to half a second before the process died,
/// where the checkpoint is up to a few seconds old), and a warning saying
/// which numbers are the checkpoint's.
pub fn lost_report(mut r: RunReport, samples: &[RequestSample]) -> RunReport {
    let ok: Vec<&RequestSample> = samples.iter().filter(|s| s.is_ok()).collect();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for e in samples.iter().filter_map(|s| s.error.clone()) {
        *errors.entry(e).or_default() += 1;
    }
    let window_s = sample_window_s(samples);
    let per_s = |n: u64| {
        if window_s > 0.0 {
            n as f64 / window_s
        } else {
            0.0
        }
    };
    let output: u64 = ok.iter().map(|s| s.output_tokens).sum();
    r.status = RunStatus::Lost;
    r.requests.ok = ok.len() as u64;
    r.requests.failed = errors.values().sum();
    r.requests.total = r.requests.ok + r.requests.failed;
    r.requests.errors = errors;
    r.tokens.output_total = output;
    r.throughput.window_s = window_s;
    r.throughput.requests_per_s = per_s(ok.len() as u64);
    r.throughput.output_tokens_per_s = per_s(output);
    r.duration_s = r.duration_s.max(last_end_s(samples));
    r.latency_ms.ttft = distribution_of(ok.iter().filter_map(|s| s.ttft_ms));
    r.latency_ms.tpot = distribution_of(ok.iter().filter_map(|s| s.tpot_ms));
    r.latency_ms.e2e = distribution_of(ok.iter().map(|s| s.e2e_ms()));
    r.output_tokens_per_s_per_request = distribution_of(ok.iter().filter_map(|s| s.output_rate()));
    r.warnings.insert(0, format!(
        "lost run: the process ended without finishing (killed?). Requests, throughput and TTFT/TPOT/e2e come from the {} persisted samples; ITL, input tokens, send lag, schedule and the time series are from the last checkpoint",
        samples.len()
    ));
    r
}

/// First scheduled start to last end of the samples (s).
fn sample_window_s(samples: &[RequestSample]) -> f64 {
    let first = samples.iter().map(|s| s.start_ms).reduce(f64::min);
    match first {
        Some(first) => (last_end_s(samples) - first / 1000.0).max(0.0),
        None => 0.0,
    }
}

fn last_end_s(samples: &[RequestSample]) -> f64 {
    samples.iter().map(|s| s.end_ms).fold(0.0, f64::max) / 1000.0
}

/// The HDR summary a finished run's report uses (nearest rank, 0.1 %), of
/// values kept to three decimals (ms to µs, tokens/s to milli-tokens/s), so
/// a lost run's percentiles are computed like a finished one's.
fn distribution_of(values: impl Iterator<Item = f64>) -> crate::stats::Distribution {
    let mut h = LatencyHistogram::new();
    for v in values {
        h.record_value((v * 1000.0).round().max(0.0) as u64);
    }
    h.distribution(1000.0)
}
