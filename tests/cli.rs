//! The `throtl` binary end to end: exit codes, messages, Ctrl-C, demo.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn issue2_refused_url_exits_nonzero_naming_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = Command::new(common::bin())
        .args([
            "bench",
            "--url",
            &url,
            "--model",
            "m",
            "-n",
            "1",
            "-q",
            "--no-store",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&url) && err.starts_with("Error:"), "{err}");
}

#[test]
fn issue2_invalid_flags_are_rejected_with_advice() {
    let out = Command::new(common::bin())
        .args(["bench", "--url", "http://x", "-n", "3", "-d", "5s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    let out = Command::new(common::bin())
        .args(["bench", "--url", "localhost:8000", "-m", "m"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http://"));
    let out = Command::new(common::bin())
        .args(["bench", "--url", "http://x", "--timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("500ms"));
}

#[test]
fn issue2_ctrl_c_saves_interrupted_results_and_exits_130() {
    let server = common::sim(20, 5);
    let dir = common::tmpdir();
    let json = dir.path().join("run.json");
    let records = dir.path().join("records.jsonl");
    let child = Command::new(common::bin())
        .args([
            "bench",
            "--no-store",
            "--url",
            &server.url(),
            "-c",
            "4",
            "-n",
            "100000",
            "--output-tokens",
            "8",
            "--warmup",
            "0",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--records")
        .arg(&records)
        .arg("--no-tui")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["status"], "interrupted");
    let ok = v["requests"]["ok"].as_u64().unwrap();
    assert!(ok > 10, "{ok}");
    let lines = std::fs::read_to_string(&records).unwrap().lines().count() as u64;
    assert_eq!(
        lines,
        ok + v["requests"]["failed"].as_u64().unwrap()
            + v["requests"]["cancelled"].as_u64().unwrap()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("INTERRUPTED"));
}

#[test]
fn issue2_demo_runs_and_writes_json() {
    let dir = common::tmpdir();
    let json = dir.path().join("demo.json");
    let out = Command::new(common::bin())
        .args(["demo", "--requests", "40", "--concurrency", "8", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("TTFT") && stdout.contains("40 ok"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&json.display().to_string()));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ttft = v["latency_ms"]["ttft"]["p50"].as_f64().unwrap();
    assert!((100.0..110.0).contains(&ttft), "{ttft}");
}

#[test]
fn issue2_mock_with_port_zero_prints_its_url() {
    let mut child = Command::new(common::bin())
        .args(["mock", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
        "{url}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = rt.block_on(async {
        reqwest::get(format!("{url}/v1/models"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(body.contains("throtl-sim"));
    let metrics = rt.block_on(async {
        reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(metrics.contains("vllm:num_requests_running"));
    let _ = child.kill();
    let _ = child.wait();
}
