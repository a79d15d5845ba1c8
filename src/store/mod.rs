//! The local history store: one SQLite file (bundled SQLite), schema versioned
//! with `PRAGMA user_version` and migrated forward on open.
//!
//! Tables: `samples` (one row per server, time and derived metric) and
//! `alerts` (firing / resolved events). Later schema versions add tables
//! (bench `runs`, `requests`) by appending to [`MIGRATIONS`]; [`live`] holds
//! what a bench writes while it runs.

pub mod live;
pub mod runs;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};
use serde::Serialize;

/// Schema migrations; migration `i` brings `user_version` from `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // v1: derived monitor samples.
    "CREATE TABLE samples (
        server TEXT NOT NULL,
        ts_ms  INTEGER NOT NULL,
        metric TEXT NOT NULL,
        value  REAL NOT NULL
    );
    CREATE INDEX samples_by_server_time ON samples(server, ts_ms);",
    // v2: engine per sample, metric index, alert events.
    "ALTER TABLE samples ADD COLUMN engine TEXT NOT NULL DEFAULT '';
    CREATE INDEX samples_by_metric_time ON samples(metric, ts_ms);
    CREATE TABLE alerts (
        id       INTEGER PRIMARY KEY,
        server   TEXT NOT NULL,
        ts_ms    INTEGER NOT NULL,
        rule     TEXT NOT NULL,
        state    TEXT NOT NULL CHECK (state IN ('firing', 'resolved')),
        severity TEXT NOT NULL,
        metric   TEXT NOT NULL,
        value    REAL,
        message  TEXT NOT NULL
    );
    CREATE INDEX alerts_by_time ON alerts(ts_ms);",
    // v3: bench runs, their HDR histograms and compact per-request samples.
    runs::MIGRATION_V3,
    // v4: runs persisted while they run: pid/host of the writer, appended samples.
    live::MIGRATION_V4,
];

/// Errors of the history store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened, created or migrated.
    #[error("history database '{path}': {source}. Choose another file with --db")]
    Open {
        /// Database path.
        path: PathBuf,
        /// SQLite error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer throtl.
    #[error("history database '{path}' has schema version {found}, newer than this throtl understands ({known}); upgrade throtl or use another --db")]
    TooNew {
        /// Database path.
        path: PathBuf,
        /// `user_version` found.
        found: i64,
        /// Newest version known.
        known: i64,
    },
    /// The directory of the database could not be created.
    #[error(
        "cannot create '{path}' for the history database: {source}. Choose another file with --db"
    )]
    Dir {
        /// Directory.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A query failed.
    #[error("history database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored value could not be encoded or decoded.
    #[error("history database: stored run data is unreadable ({0})")]
    Corrupt(String),
}

/// The default database path: `$XDG_DATA_HOME/throtl/throtl.db`, else
/// `~/.local/share/throtl/throtl.db`; `None` when neither variable is set.
pub fn default_path() -> Option<PathBuf> {
    path_under(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"))
}

fn path_under(
    xdg_data_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<std::ffi::OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = set(xdg_data_home).or_else(|| set(home).map(|h| h.join(".local").join("share")))?;
    Some(dir.join("throtl").join("throtl.db"))
}

/// An open, migrated history database.
pub struct Store {
    conn: Connection,
}

/// One stored sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleRow {
    /// Server base URL.
    pub server: String,
    /// Unix time (ms).
    pub ts_ms: i64,
    /// Metric name (see docs/monitor.md).
    pub metric: String,
    /// Value.
    pub value: f64,
}

/// One stored alert event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRow {
    /// Server base URL.
    pub server: String,
    /// Unix time (ms).
    pub ts_ms: i64,
    /// Rule name.
    pub rule: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// Rule severity.
    pub severity: String,
    /// Metric the rule watches.
    pub metric: String,
    /// Metric value at the event.
    pub value: Option<f64>,
    /// Rule message.
    pub message: String,
}

/// What to read back.
#[derive(Debug, Clone, Default)]
pub struct SampleQuery {
    /// Only this server.
    pub server: Option<String>,
    /// Only this metric.
    pub metric: Option<String>,
    /// Only samples at or after this unix time (ms).
    pub since_ms: Option<i64>,
}

impl Store {
    /// Opens (creating it and its directory if needed), migrates, and marks
    /// `lost` the runs whose process died while running (see
    /// [`Store::mark_lost_runs`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        enable_wal(&conn);
        migrate(&mut conn, path)?;
        let mut store = Self { conn };
        store.mark_lost_runs()?;
        Ok(store)
    }

    /// The schema version in the file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Stores one server's derived metrics at `ts_ms`, in one transaction.
    pub fn insert_samples(
        &mut self,
        server: &str,
        engine: &str,
        ts_ms: i64,
        metrics: &[(String, f64)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached("INSERT INTO samples (server, engine, ts_ms, metric, value) VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for (m, v) in metrics {
                st.execute(params![server, engine, ts_ms, m, v])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores an alert event.
    pub fn insert_alert(&self, a: &AlertRow) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO alerts (server, ts_ms, rule, state, severity, metric, value, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![a.server, a.ts_ms, a.rule, a.state, a.severity, a.metric, a.value, a.message],
        )?;
        Ok(())
    }

    /// Samples matching `q`, oldest first.
    pub fn samples(&self, q: &SampleQuery) -> Result<Vec<SampleRow>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT server, ts_ms, metric, value FROM samples
             WHERE (?1 IS NULL OR server = ?1) AND (?2 IS NULL OR metric = ?2) AND (?3 IS NULL OR ts_ms >= ?3)
             ORDER BY ts_ms, server, metric",
        )?;
        let rows = st.query_map(params![q.server, q.metric, q.since_ms], |r| {
            Ok(SampleRow {
                server: r.get(0)?,
                ts_ms: r.get(1)?,
                metric: r.get(2)?,
                value: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Alert events matching the server and time of `q`, oldest first.
    pub fn alerts(&self, q: &SampleQuery) -> Result<Vec<AlertRow>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT server, ts_ms, rule, state, severity, metric, value, message FROM alerts
             WHERE (?1 IS NULL OR server = ?1) AND (?2 IS NULL OR ts_ms >= ?2) ORDER BY ts_ms, id",
        )?;
        let rows = st.query_map(params![q.server, q.since_ms], |r| {
            Ok(AlertRow {
                server: r.get(0)?,
                ts_ms: r.get(1)?,
                rule: r.get(2)?,
                state: r.get(3)?,
                severity: r.get(4)?,
                metric: r.get(5)?,
                value: r.get(6)?,
                message: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes samples and alerts older than `before_ms`; returns rows deleted.
    pub fn prune(&self, before_ms: i64) -> Result<usize, StoreError> {
        let a = self
            .conn
            .execute("DELETE FROM samples WHERE ts_ms < ?1", [before_ms])?;
        let b = self
            .conn
            .execute("DELETE FROM alerts WHERE ts_ms < ?1", [before_ms])?;
        Ok(a + b)
    }
}

/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Switches the file to WAL so readers never block the writer. Another
/// process switching (or migrating) at the same moment makes SQLite answer
/// `SQLITE_BUSY` at once, without calling the busy handler, so retry for up
/// to the busy timeout. Failing in the end is harmless: WAL is a property of
/// the file, so whoever switched it first already made it WAL, and a file
/// left in rollback mode still works, with less concurrency.
fn enable_wal(conn: &Connection) {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        let mode = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0));
        match mode {
            Ok(_) => return,
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return,
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Brings the schema to the newest version. The version is read again
/// inside an IMMEDIATE transaction, which takes the write lock at `BEGIN`:
/// two processes opening a fresh file at once then migrate one after the
/// other (the second waits on the busy timeout and finds nothing left to do)
/// instead of both applying version 1.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let known = MIGRATIONS.len() as i64;
    // Fast path without the write lock: an up-to-date file needs nothing.
    if user_version(conn).map_err(open_err)? == known {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_err)?;
    let current = user_version(&tx).map_err(open_err)?;
    if current > known {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: current,
            known,
        });
    }
    for sql in MIGRATIONS.iter().skip(current.max(0) as usize) {
        tx.execute_batch(sql).map_err(open_err)?;
    }
    tx.pragma_update(None, "user_version", known)
        .map_err(open_err)?;
    tx.commit().map_err(open_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_a_version_1_database_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute("INSERT INTO samples (server, ts_ms, metric, value) VALUES ('http://a', 5, 'kv_cache_usage', 0.5)", [])
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let rows = store.samples(&SampleQuery::default()).unwrap();
        assert_eq!(
            rows,
            vec![SampleRow {
                server: "http://a".into(),
                ts_ms: 5,
                metric: "kv_cache_usage".into(),
                value: 0.5
            }]
        );
        let alert = AlertRow {
            server: "http://a".into(),
            ts_ms: 6,
            rule: "r".into(),
            state: "firing".into(),
            severity: "warning".into(),
            metric: "kv_cache_usage".into(),
            value: Some(0.95),
            message: "m".into(),
        };
        store.insert_alert(&alert).unwrap();
        assert_eq!(store.alerts(&SampleQuery::default()).unwrap(), vec![alert]);
    }

    #[test]
    fn default_path_follows_xdg_then_home() {
        let p = |x: Option<&str>, h: Option<&str>| path_under(x.map(Into::into), h.map(Into::into));
        assert_eq!(
            p(Some("/x"), Some("/h")),
            Some(PathBuf::from("/x/throtl/throtl.db"))
        );
        assert_eq!(
            p(Some(""), Some("/h")),
            Some(PathBuf::from("/h/.local/share/throtl/throtl.db"))
        );
        assert_eq!(p(None, None), None);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Store::open(&path).err().unwrap();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    }

    #[test]
    fn query_filters_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("sub/dir/h.db")).unwrap();
        s.insert_samples(
            "a",
            "vllm",
            1000,
            &[
                ("kv_cache_usage".into(), 0.1),
                ("waiting_requests".into(), 3.0),
            ],
        )
        .unwrap();
        s.insert_samples("b", "tgi", 2000, &[("kv_cache_usage".into(), 0.2)])
            .unwrap();
        let q = |server: Option<&str>, metric: Option<&str>, since| SampleQuery {
            server: server.map(Into::into),
            metric: metric.map(Into::into),
            since_ms: since,
        };
        assert_eq!(s.samples(&q(None, None, None)).unwrap().len(), 3);
        assert_eq!(s.samples(&q(Some("a"), None, None)).unwrap().len(), 2);
        assert_eq!(
            s.samples(&q(None, Some("kv_cache_usage"), Some(1500)))
                .unwrap()[0]
                .server,
            "b"
        );
        assert_eq!(s.prune(1500).unwrap(), 2);
        assert_eq!(s.samples(&q(None, None, None)).unwrap().len(), 1);
    }
}
