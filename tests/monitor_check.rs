#![allow(clippy::unwrap_used)]
//! `throtl monitor --check --once` exit codes, alert webhooks (received by a
//! local axum server), and `throtl history` reading back what was stored.

use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::routing::post;
use axum::{Json, Router};
use throtl::sim::{self, SimConfig};

fn throtl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_throtl"))
}

/// A webhook receiver on 127.0.0.1:0, on its own runtime thread.
fn receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new().route(
                "/hook",
                post(move |Json(v): Json<serde_json::Value>| {
                    let sink = Arc::clone(&sink);
                    async move { sink.lock().unwrap().push(v) }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}/hook"), got)
}

#[test]
fn check_once_fails_when_a_rule_fires_and_posts_the_webhook() {
    let server = sim::start(SimConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    // Idle simulator: 0 running requests, so `<= 0` holds; hold time ignored by --once.
    std::fs::write(&rules, "rules:\n  - name: idle\n    when: running_requests <= 0\n    for: 5m\n    severity: critical\n    message: nothing runs\n").unwrap();
    let (hook, got) = receiver();
    let db = dir.path().join("h.db");
    let out = throtl()
        .args([
            "monitor",
            &server.url(),
            "--check",
            "--once",
            "--interval",
            "200ms",
            "--rules",
        ])
        .arg(&rules)
        .arg("--db")
        .arg(&db)
        .args(["--webhook", &hook])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("alert firing [critical] idle"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().count(),
        2,
        "two scrapes, one JSON line each: {stdout}"
    );
    let posted = got.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0]["rule"], "idle");
    assert_eq!(posted[0]["state"], "firing");
    assert_eq!(posted[0]["severity"], "critical");
    assert_eq!(posted[0]["value"], 0.0);

    // history reads back samples and alerts
    let csv = throtl()
        .args([
            "history",
            "--metric",
            "running_requests",
            "--format",
            "csv",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(csv.status.success());
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(csv.starts_with("time,server,metric,value\n"), "{csv}");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.lines().nth(1).unwrap().ends_with(",running_requests,0"),
        "{csv}"
    );
    let alerts = throtl()
        .args([
            "history", "--alerts", "--format", "json", "--since", "1h", "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&alerts.stdout).unwrap();
    assert_eq!(v[0]["rule"], "idle");
}

#[test]
fn check_once_passes_when_nothing_fires() {
    let server = sim::start(SimConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = throtl()
        .args([
            "monitor",
            &server.url(),
            "--check",
            "--once",
            "--interval",
            "200ms",
            "--no-history",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(line["engine"], "vllm");
    assert_eq!(line["metrics"]["running"], 0.0);
    drop(dir);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("r.yaml");
    std::fs::write(&rules, "rules:\n  - name: x\n    when: kv_usage > 1\n").unwrap();
    let out = throtl()
        .args([
            "monitor",
            "http://127.0.0.1:9",
            "--once",
            "--no-history",
            "--rules",
        ])
        .arg(&rules)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown metric 'kv_usage'"), "{err}");
    let out = throtl()
        .args([
            "monitor",
            "http://127.0.0.1:9",
            "--check",
            "--once",
            "--interval",
            "100ms",
            "--no-history",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("check failed: cannot scrape http://127.0.0.1:9/metrics"));
    let out = throtl()
        .args(["history", "--db"])
        .arg(dir.path().join("none.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no history at"));
}
