//! The history database shared by several throtl processes (issue 12).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};

use throtl::store::{Store, MIGRATIONS};

/// Kills and reaps every child it holds when dropped, so a failing assertion
/// leaves no process behind.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `runs list` opens (and so migrates) the database; a zero-byte file is an
/// empty SQLite database, as fresh as a new machine's.
fn runs_list(db: &std::path::Path) -> Child {
    Command::new(common::bin())
        .args(["runs", "list", "--db"])
        .arg(db)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn issue12_eight_processes_open_a_fresh_history_at_once() {
    let dir = common::tmpdir();
    // Several rounds: before the fix one round of eight failed often, not always.
    for round in 0..5 {
        let db = dir.path().join(format!("fresh-{round}.db"));
        std::fs::write(&db, b"").unwrap();
        let mut children = Children((0..8).map(|_| runs_list(&db)).collect());
        for (i, child) in children.0.iter_mut().enumerate() {
            let out = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
            let status = child.wait().unwrap();
            assert!(status.success(), "round {round}, process {i}: {out}");
        }
        let store = Store::open(&db).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert!(store.list_runs(None, None).unwrap().is_empty());
    }
}

#[test]
fn issue12_eight_processes_finding_a_dead_run_mark_it_lost_once() {
    let server = common::sim(2, 1);
    let dir = common::tmpdir();
    let db = dir.path().join("h.db");
    let mut cfg = common::config(&server.url(), 2, 10, 4);
    cfg.results.db = Some(db.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt
        .block_on(throtl::bench::run(
            &cfg,
            throtl::engine::Controls::default(),
        ))
        .unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    // The row as a bench killed mid-run leaves it.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE runs SET status = 'running', pid = ?2, host = ?3 WHERE id = ?1",
            rusqlite::params![report.run_id, gone.id(), throtl::sys::hostname()],
        )
        .unwrap();
    let mut children = Children((0..8).map(|_| runs_list(&db)).collect());
    for (i, child) in children.0.iter_mut().enumerate() {
        let out = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
        assert!(child.wait().unwrap().success(), "process {i}: {out}");
    }
    let runs = Store::open(&db).unwrap().list_runs(None, None).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "lost");
}
