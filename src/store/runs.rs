//! Bench runs in the history store: the summary, the exact config, HDR
//! histograms (V2 + DEFLATE serialization) and compact per-request samples
//! (DEFLATE-compressed JSON lines).

use std::io::{Read, Write};

use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{Store, StoreError};
use crate::report::samples::RequestSample;
use crate::report::RunReport;

/// Schema v3: `runs`, `run_histograms`.
pub const MIGRATION_V3: &str = "CREATE TABLE runs (
        id           TEXT PRIMARY KEY,
        started_ms   INTEGER NOT NULL,
        status       TEXT NOT NULL,
        target       TEXT NOT NULL,
        model        TEXT NOT NULL,
        tool_version TEXT NOT NULL,
        environment  TEXT NOT NULL,
        config       TEXT NOT NULL,
        summary      TEXT NOT NULL,
        requests     BLOB NOT NULL,
        grp          TEXT
    );
    CREATE INDEX runs_by_time ON runs(started_ms);
    CREATE TABLE run_histograms (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name   TEXT NOT NULL,
        data   BLOB NOT NULL,
        PRIMARY KEY (run_id, name)
    );";

/// A run as stored: the report plus what it was computed from.
#[derive(Debug, Clone)]
pub struct StoredRun {
    /// The JSON summary, exactly as written at the end of the run.
    pub report: RunReport,
    /// One sample per measured request.
    pub samples: Vec<RequestSample>,
    /// HDR histograms by name (`ttft`, `itl`, `tpot`, `e2e`; µs).
    pub histograms: Vec<(String, Histogram<u64>)>,
    /// Comparison group (multi-target bench), if any.
    pub group: Option<String>,
}

/// One line of `throtl runs list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunListing {
    /// Run id.
    pub id: String,
    /// Start (unix ms).
    pub started_ms: i64,
    /// `completed`, `interrupted`, `running` or `lost`.
    pub status: String,
    /// Target URL.
    pub target: String,
    /// Model.
    pub model: String,
    /// Successful requests.
    pub ok: u64,
    /// Output tokens/s.
    pub output_tokens_per_s: f64,
    /// TTFT p50 (ms).
    pub ttft_p50_ms: f64,
    /// Group (multi-target comparison `group-…` or sweep `sweep-…`), if any.
    pub group: Option<String>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// Compresses samples as DEFLATE'd JSON lines.
pub fn encode_samples(samples: &[RequestSample]) -> Result<Vec<u8>, StoreError> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    for s in samples {
        serde_json::to_writer(&mut enc, s).map_err(|e| corrupt("samples", e))?;
        enc.write_all(b"\n").map_err(|e| corrupt("samples", e))?;
    }
    enc.finish().map_err(|e| corrupt("samples", e))
}

/// Inverse of [`encode_samples`].
pub fn decode_samples(blob: &[u8]) -> Result<Vec<RequestSample>, StoreError> {
    let mut text = String::new();
    flate2::read::DeflateDecoder::new(blob)
        .read_to_string(&mut text)
        .map_err(|e| corrupt("samples", e))?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| corrupt("samples", e)))
        .collect()
}

/// The run's start as unix ms (0 when `started_at` is unreadable).
pub(super) fn started_ms(report: &RunReport) -> i64 {
    time::OffsetDateTime::parse(
        &report.started_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
    .unwrap_or(0)
}

impl Store {
    /// Stores a finished run in one transaction, replacing the `running`
    /// row (and its appended samples) that [`Store::begin_run`] wrote for it.
    pub fn insert_run(&mut self, run: &StoredRun) -> Result<(), StoreError> {
        let r = &run.report;
        let status = serde_json::to_value(r.status).map_err(|e| corrupt("status", e))?;
        let env = serde_json::to_string(&r.environment).map_err(|e| corrupt("environment", e))?;
        let config = serde_json::to_string(&r.config).map_err(|e| corrupt("config", e))?;
        let summary = serde_json::to_string(r).map_err(|e| corrupt("summary", e))?;
        let requests = encode_samples(&run.samples)?;
        let tx = self.conn.transaction()?;
        for table in ["run_requests", "run_histograms"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE run_id = ?1"),
                [&r.run_id],
            )?;
        }
        tx.execute("DELETE FROM runs WHERE id = ?1", [&r.run_id])?;
        tx.execute(
            "INSERT INTO runs (id, started_ms, status, target, model, tool_version, environment, config, summary, requests, grp)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![r.run_id, started_ms(r), status.as_str().unwrap_or("completed"), r.target.url, r.target.model,
                r.tool_version, env, config, summary, requests, run.group],
        )?;
        for (name, h) in &run.histograms {
            let mut buf = Vec::new();
            V2DeflateSerializer::new()
                .serialize(h, &mut buf)
                .map_err(|e| corrupt("histogram", format!("{e:?}")))?;
            tx.execute(
                "INSERT INTO run_histograms (run_id, name, data) VALUES (?1, ?2, ?3)",
                params![r.run_id, name, buf],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Loads one run; `None` when no run has that id.
    pub fn run(&self, id: &str) -> Result<Option<StoredRun>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT summary, requests, grp FROM runs WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((summary, requests, group)) = row else {
            return Ok(None);
        };
        let report = serde_json::from_str(&summary).map_err(|e| corrupt("summary", e))?;
        let mut samples = decode_samples(&requests)?;
        // A running or lost run keeps its samples in batches, not in the blob.
        samples.extend(self.appended_samples(id)?);
        let mut st = self
            .conn
            .prepare("SELECT name, data FROM run_histograms WHERE run_id = ?1 ORDER BY name")?;
        let blobs = st
            .query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut histograms = Vec::new();
        for (name, data) in blobs {
            let h = Deserializer::new()
                .deserialize(&mut data.as_slice())
                .map_err(|e| corrupt("histogram", format!("{e:?}")))?;
            histograms.push((name, h));
        }
        Ok(Some(StoredRun {
            report,
            samples,
            histograms,
            group,
        }))
    }

    /// Runs, newest first, optionally only one target (URL substring) and
    /// only those started at or after `since_ms`.
    pub fn list_runs(
        &self,
        target: Option<&str>,
        since_ms: Option<i64>,
    ) -> Result<Vec<RunListing>, StoreError> {
        self.list_runs_in(target, since_ms, None)
    }

    /// Like [`Store::list_runs`], optionally only the runs of one group.
    pub fn list_runs_in(
        &self,
        target: Option<&str>,
        since_ms: Option<i64>,
        group: Option<&str>,
    ) -> Result<Vec<RunListing>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, started_ms, status, target, model, summary, grp FROM runs
             WHERE (?1 IS NULL OR instr(target, ?1) > 0) AND (?2 IS NULL OR started_ms >= ?2)
               AND (?3 IS NULL OR grp = ?3)
             ORDER BY id DESC",
        )?;
        let rows = st.query_map(params![target, since_ms, group], |r| {
            Ok((
                RunListing {
                    id: r.get(0)?,
                    started_ms: r.get(1)?,
                    status: r.get(2)?,
                    target: r.get(3)?,
                    model: r.get(4)?,
                    ok: 0,
                    output_tokens_per_s: 0.0,
                    ttft_p50_ms: 0.0,
                    group: r.get(6)?,
                },
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut l, summary) = row?;
            if let Ok(rep) = serde_json::from_str::<RunReport>(&summary) {
                l.ok = rep.requests.ok;
                l.output_tokens_per_s = rep.throughput.output_tokens_per_s;
                l.ttft_p50_ms = rep.latency_ms.ttft.p50;
            }
            out.push(l);
        }
        Ok(out)
    }

    /// Deletes a run; returns whether it existed.
    pub fn delete_run(&self, id: &str) -> Result<bool, StoreError> {
        self.conn
            .execute("DELETE FROM run_histograms WHERE run_id = ?1", [id])?;
        self.conn
            .execute("DELETE FROM run_requests WHERE run_id = ?1", [id])?;
        Ok(self.conn.execute("DELETE FROM runs WHERE id = ?1", [id])? > 0)
    }

    /// Deletes runs started before `before_ms`; returns how many.
    pub fn prune_runs(&self, before_ms: i64) -> Result<usize, StoreError> {
        for table in ["run_histograms", "run_requests"] {
            self.conn.execute(
                &format!("DELETE FROM {table} WHERE run_id IN (SELECT id FROM runs WHERE started_ms < ?1)"),
                [before_ms],
            )?;
        }
        Ok(self
            .conn
            .execute("DELETE FROM runs WHERE started_ms < ?1", [before_ms])?)
    }

    /// Ids of the runs of a comparison group, oldest first.
    pub fn group_runs(&self, group: &str) -> Result<Vec<String>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT id FROM runs WHERE grp = ?1 ORDER BY started_ms, id")?;
        let rows = st.query_map([group], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::super::{Store, MIGRATIONS};
    use crate::report::samples::RequestSample;

    #[test]
    fn a_version_2_database_migrates_and_keeps_its_samples() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute("INSERT INTO samples (server, engine, ts_ms, metric, value) VALUES ('http://a', 'vllm', 5, 'waiting_requests', 2)", [])
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(store.samples(&Default::default()).unwrap().len(), 1);
        assert!(store.list_runs(None, None).unwrap().is_empty());
    }

    #[test]
    fn samples_round_trip_through_compression() {
        let s = vec![
            RequestSample {
                seq: 3,
                start_ms: 1.5,
                end_ms: 20.25,
                ttft_ms: Some(4.125),
                tpot_ms: None,
                output_tokens: 1,
                error: None,
            },
            RequestSample {
                seq: 4,
                start_ms: 2.0,
                end_ms: 3.0,
                ttft_ms: None,
                tpot_ms: None,
                output_tokens: 0,
                error: Some("http_500".into()),
            },
        ];
        assert_eq!(
            super::decode_samples(&super::encode_samples(&s).unwrap()).unwrap(),
            s
        );
    }
}
