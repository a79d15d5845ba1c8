//! A bench killed without warning keeps what it measured (issue 12).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Kills and reaps the child when dropped, so a failing assertion leaves no
/// process behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn throtl(args: &[&str], db: &Path) -> Output {
    let out = Command::new(common::bin())
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "throtl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Schema violations of a summary, as messages.
fn schema_errors(summary: &serde_json::Value) -> Vec<String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/run.schema.json"))
            .unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(summary)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

fn max_of(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max)
}

#[test]
fn issue12_kill_9_five_seconds_in_leaves_four_seconds_of_records() {
    let sim = common::sim(20, 5);
    let dir = common::tmpdir();
    let (db, records, json) = (
        dir.path().join("h.db"),
        dir.path().join("r.jsonl"),
        dir.path().join("run.json"),
    );
    let bench = Command::new(common::bin())
        .args(["bench", "--url", &sim.url(), "--model", "throtl-sim"])
        .args(["-c", "4", "--duration", "30s", "--warmup", "0"])
        .args(["--output-tokens", "8", "--input-tokens", "16", "-q"])
        .arg("--db")
        .arg(&db)
        .arg("--records")
        .arg(&records)
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut bench = Reaped(bench);
    // The first partial report is written just before load starts: from
    // then on the run is "running", and the kill comes 5 s into it.
    let started = std::time::Instant::now();
    while serde_json::from_slice::<serde_json::Value>(&std::fs::read(&json).unwrap_or_default())
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(5));
    bench.0.kill().unwrap(); // SIGKILL: no chance to write anything more
    bench.0.wait().unwrap();

    // The --json file is a complete partial report, whatever moment it was read.
    let partial: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(partial["status"], "running");
    assert_eq!(schema_errors(&partial), Vec::<String>::new());
    let id = partial["run_id"].as_str().unwrap().to_owned();

    let list = String::from_utf8(throtl(&["runs", "list"], &db).stdout).unwrap();
    let row = list.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(row.contains("lost"), "{list}");

    let shown = String::from_utf8(throtl(&["runs", "show", &id], &db).stdout).unwrap();
    assert!(shown.contains("LOST"), "{shown}");
    let summary: serde_json::Value =
        serde_json::from_slice(&throtl(&["runs", "show", &id, "--json"], &db).stdout).unwrap();
    assert_eq!(summary["status"], "lost");
    assert_eq!(schema_errors(&summary), Vec::<String>::new());
    let export = throtl(&["runs", "export", &id, "--format", "jsonl"], &db).stdout;
    let samples: Vec<serde_json::Value> = export
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let stored_until = max_of(samples.iter().map(|s| s["end_ms"].as_f64().unwrap()));
    eprintln!("killed 5 s in: samples end at {stored_until} ms");
    assert!(stored_until >= 4000.0, "samples end at {stored_until} ms");
    assert_eq!(summary["requests"]["total"], samples.len() as u64);
    assert!(summary["latency_ms"]["ttft"]["p50"].as_f64().unwrap() >= 20.0);
    throtl(&["report", &id], &db);

    let lines = std::fs::read_to_string(&records).unwrap();
    let recorded_until = max_of(lines.lines().map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["end_ms"].as_f64().unwrap()
    }));
    eprintln!("killed 5 s in: --records ends at {recorded_until} ms");
    assert!(
        recorded_until >= 4000.0,
        "--records ends at {recorded_until} ms"
    );
}

/// A finished run from the simulator, with its samples (stored in a
/// database of its own, which is what makes the bench keep samples).
fn finished_run() -> throtl::store::runs::StoredRun {
    let server = common::sim(2, 1);
    let dir = common::tmpdir();
    let mut cfg = common::config(&server.url(), 2, 20, 4);
    cfg.results.db = Some(dir.path().join("elsewhere.db"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(throtl::bench::run_full(
        &cfg,
        throtl::engine::Controls::default(),
    ))
    .unwrap()
}

/// A process id that surely no longer exists: a child that ran and was reaped.
fn dead_pid() -> i64 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    i64::from(pid)
}

fn set_owner(db: &Path, id: &str, pid: i64, host: &str) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute(
            "UPDATE runs SET pid = ?2, host = ?3 WHERE id = ?1",
            rusqlite::params![id, pid, host],
        )
        .unwrap();
}

#[test]
fn issue12_a_running_row_becomes_lost_only_when_its_process_is_gone_from_this_host() {
    use throtl::report::RunStatus;
    use throtl::store::Store;
    let run = finished_run();
    let dir = common::tmpdir();
    let db = dir.path().join("h.db");
    assert_eq!(run.samples.len(), 20);
    let (half, rest) = run.samples.split_at(run.samples.len() / 2);
    let mut running = run.report.clone();
    running.status = RunStatus::Running;
    let mut other_host = running.clone();
    other_host.run_id.push_str("-b");
    {
        let store = Store::open(&db).unwrap();
        for r in [&running, &other_host] {
            store.begin_run(r, None).unwrap();
            store.append_samples(&r.run_id, half).unwrap();
            store.append_samples(&r.run_id, rest).unwrap();
        }
    }
    // This process is alive: the row stays running and reads back as it is.
    let shown = Store::open(&db)
        .unwrap()
        .run(&running.run_id)
        .unwrap()
        .unwrap();
    assert_eq!(shown.report.status, RunStatus::Running);
    assert_eq!(shown.samples, run.samples);

    set_owner(&db, &running.run_id, dead_pid(), &throtl::sys::hostname());
    set_owner(&db, &other_host.run_id, dead_pid(), "another-host");
    let store = Store::open(&db).unwrap();
    let lost = store.run(&running.run_id).unwrap().unwrap();
    assert_eq!(lost.report.status, RunStatus::Lost);
    assert_eq!(lost.samples, run.samples);
    assert_eq!(lost.report.requests.ok, run.report.requests.ok);
    assert_eq!(
        lost.report.tokens.output_total,
        run.report.tokens.output_total
    );
    // Samples keep µs rounded, the live histograms µs truncated: the same
    // percentiles to within the histograms' 0.1 % (plus that 1 µs).
    let (a, b) = (lost.report.latency_ms.ttft, run.report.latency_ms.ttft);
    assert_eq!(a.count, b.count);
    for (x, y) in [(a.p50, b.p50), (a.p99, b.p99)] {
        assert!((x - y).abs() <= y * 0.001 + 0.002, "{x} vs {y}");
    }
    assert!(lost.report.warnings[0].starts_with("lost run"));
    let elsewhere = store.run(&other_host.run_id).unwrap().unwrap();
    assert_eq!(elsewhere.report.status, RunStatus::Running);
}

#[test]
fn issue12_the_final_write_replaces_the_running_row_and_its_batches() {
    use throtl::report::RunStatus;
    use throtl::store::Store;
    let run = finished_run();
    let dir = common::tmpdir();
    let mut store = Store::open(&dir.path().join("h.db")).unwrap();
    let mut running = run.report.clone();
    running.status = RunStatus::Running;
    store.begin_run(&running, None).unwrap();
    store.append_samples(&running.run_id, &run.samples).unwrap();
    store.insert_run(&run).unwrap();
    let stored = store.run(&run.report.run_id).unwrap().unwrap();
    assert_eq!(stored.report.status, RunStatus::Completed);
    assert_eq!(stored.samples, run.samples); // once, not twice
    assert_eq!(stored.histograms.len(), run.histograms.len());
    assert_eq!(store.list_runs(None, None).unwrap().len(), 1);
}
