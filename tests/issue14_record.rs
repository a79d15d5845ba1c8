//! Issue 14: `throtl record` in front of the simulator while `throtl bench`
//! runs through it, then `bench --trace throtl:FILE` replays what it wrote.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use throtl::cli::{Cli, Command};
use throtl::config::BenchConfig;
use throtl::engine::Controls;
use throtl::record::{RecordConfig, RecordHandle};
use throtl::report::RunReport;

fn record_config(upstream: &str, out: &Path) -> RecordConfig {
    RecordConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream: upstream.to_owned(),
        out: out.to_owned(),
        rotate_bytes: None,
        keep_text: false,
        block_tokens: 512,
        grace: Duration::from_secs(5),
    }
}

fn bench_config(url: &str, extra: &[&str]) -> BenchConfig {
    let mut argv = vec![
        "throtl",
        "bench",
        "--url",
        url,
        "--model",
        "throtl-sim",
        "--api",
        "openai-chat",
        "-q",
        "--no-store",
        "--warmup",
        "0",
    ];
    argv.extend_from_slice(extra);
    let Command::Bench(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    args.to_config("throtl-sim".into()).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn records(path: &Path) -> Vec<Value> {
    lines(path)
}

/// Sorted `field` of `rows`, made relative to the smallest.
fn relative(rows: &[Value], field: &str) -> Vec<f64> {
    let mut v: Vec<f64> = rows.iter().map(|r| r[field].as_f64().unwrap()).collect();
    v.sort_by(f64::total_cmp);
    let t0 = v[0];
    v.iter().map(|x| x - t0).collect()
}

/// Runs `f` with a recording proxy in front of `upstream`; returns its
/// result once the proxy has written every line.
fn with_proxy<T>(cfg: &RecordConfig, f: impl FnOnce(&str, &tokio::runtime::Runtime) -> T) -> T {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut handle: RecordHandle = rt.block_on(throtl::record::start(cfg)).unwrap();
    let out = f(&format!("http://{}", handle.addr()), &rt);
    assert!(
        rt.block_on(handle.stop()),
        "every stream ended before the stop"
    );
    handle.finish().unwrap();
    out
}

fn bench(rt: &tokio::runtime::Runtime, cfg: &BenchConfig) -> RunReport {
    rt.block_on(throtl::bench::run(cfg, Controls::default()))
        .unwrap()
}

#[test]
fn issue14_record_round_trip_lengths_no_text_and_replayed_arrivals() {
    let sim = common::sim(5, 1);
    let dir = common::tmpdir();
    let trace = dir.path().join("traffic.trace");
    let rec1 = dir.path().join("bench.jsonl");
    let cfg = bench_config(
        "http://placeholder",
        &[
            "--rate",
            "40",
            "--arrival",
            "poisson",
            "-n",
            "40",
            "--tokenizer",
            "cl100k_base",
            "--input-tokens",
            "uniform:50-1200",
            "--output-tokens",
            "uniform:2-12",
            "--records",
            rec1.to_str().unwrap(),
        ],
    );
    let workload = throtl::bench::build_workload(&cfg).unwrap();
    let report = with_proxy(&record_config(&sim.url(), &trace), |url, rt| {
        let mut cfg = cfg.clone();
        cfg.url = url.to_owned();
        bench(rt, &cfg)
    });
    assert_eq!(report.requests.ok, 40);

    let text = std::fs::read_to_string(&trace).unwrap();
    let rows = lines(&trace);
    assert_eq!(rows.len(), 40, "one line per request");
    // No prompt text: not even one prompt's first five words appear.
    for i in 0..40 {
        let p = &workload.item(i).prompt;
        let head: String = p.split(' ').take(5).collect::<Vec<_>>().join(" ");
        assert!(!text.contains(&head), "prompt text leaked: {head}");
    }
    assert!(!text.contains("prompt_text") && !text.contains("answer_text"));
    // The lengths the bench sent (prompt words are single tokens).
    let mut want_in: Vec<u64> = (0..40)
        .map(|i| u64::from(workload.item(i).input_tokens.unwrap()))
        .collect();
    let mut got_in: Vec<u64> = rows
        .iter()
        .map(|r| r["prompt_tokens"].as_u64().unwrap())
        .collect();
    want_in.sort_unstable();
    got_in.sort_unstable();
    assert_eq!(want_in, got_in);
    let bench_rows = records(&rec1);
    let mut want_out: Vec<u64> = bench_rows
        .iter()
        .map(|r| r["output_tokens"].as_u64().unwrap())
        .collect();
    let mut got_out: Vec<u64> = rows
        .iter()
        .map(|r| r["output_tokens"].as_u64().unwrap())
        .collect();
    want_out.sort_unstable();
    got_out.sort_unstable();
    assert_eq!(want_out, got_out);
    assert!(rows
        .iter()
        .all(|r| r["status"] == 200 && r["error"].is_null()));
    assert!(rows
        .iter()
        .all(|r| r["protocol"] == "openai-chat" && r["model"] == "throtl-sim"));

    // Replay the recording: the arrival times of the original bench, within 5 ms.
    let rec2 = dir.path().join("replay.jsonl");
    let spec = format!("throtl:{}", trace.display());
    let replay_cfg = bench_config(
        &sim.url(),
        &[
            "--trace",
            &spec,
            "--tokenizer",
            "words",
            "--records",
            rec2.to_str().unwrap(),
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let replay = bench(&rt, &replay_cfg);
    assert_eq!(replay.requests.ok, 40);
    let original = relative(&bench_rows, "sent_ms");
    let replayed = relative(&records(&rec2), "sent_ms");
    let worst = original
        .iter()
        .zip(&replayed)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 5.0, "arrivals differ by up to {worst:.2} ms");
    // Same lengths on the way back (the simulator counts words).
    let mut back: Vec<u64> = records(&rec2)
        .iter()
        .map(|r| r["input_tokens"].as_u64().unwrap())
        .collect();
    back.sort_unstable();
    assert_eq!(back, got_in);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn issue14_record_upstream_down_errors_reach_client_and_line() {
    let dir = common::tmpdir();
    let trace = dir.path().join("down.trace");
    let upstream = format!("http://127.0.0.1:{}", free_port());
    let (status, body) = with_proxy(&record_config(&upstream, &trace), |url, rt| {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{url}/v1/chat/completions"))
                .header("x-conversation-id", "c-1")
                .body(r#"{"model":"m","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi there"}]}"#)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    });
    assert_eq!(status, 502);
    assert!(body.contains("upstream"), "{body}");
    let rows = lines(&trace);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], 502);
    assert!(
        rows[0]["error"].as_str().unwrap().starts_with("upstream"),
        "{}",
        rows[0]
    );
    assert_eq!(rows[0]["conversation"], "c-1");
    assert_eq!(rows[0]["prompt_tokens"], 2);
    assert_eq!(rows[0]["max_tokens"], 5);
}

#[test]
fn issue14_record_rotates_keeps_text_on_request_and_stats_sees_sessions() {
    let sim = common::sim(2, 1);
    let dir = common::tmpdir();
    let trace = dir.path().join("t.trace");
    let mut cfg = record_config(&sim.url(), &trace);
    cfg.rotate_bytes = Some(1500);
    cfg.keep_text = true;
    with_proxy(&cfg, |url, rt| {
        rt.block_on(async {
            let c = reqwest::Client::new();
            for i in 0..6 {
                let body = format!(
                    r#"{{"model":"m","stream":true,"max_tokens":3,"user":"session-{}","messages":[{{"role":"user","content":"one two three {i}"}}]}}"#,
                    i % 2
                );
                let r = c
                    .post(format!("{url}/v1/chat/completions"))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.text().await.unwrap();
            }
        })
    });
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 2, "rotated into {files:?}");
    let all: Vec<Value> = files.iter().flat_map(|f| lines(f)).collect();
    assert_eq!(all.len(), 6);
    assert!(all.iter().all(|r| r["prompt_text"]
        .as_str()
        .unwrap()
        .starts_with("one two three")));
    assert!(all
        .iter()
        .all(|r| r["answer_text"].as_str().is_some_and(|a| !a.is_empty())));

    // The parts concatenated (in any order: lines are sorted by time) are
    // one trace; stats sees two sessions of 3.
    let joined = dir.path().join("joined.trace");
    let text: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    std::fs::write(&joined, text).unwrap();
    let out = std::process::Command::new(common::bin())
        .args([
            "trace",
            "stats",
            &format!("throtl:{}", joined.display()),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["requests"], 6);
    assert_eq!(stats["sessions"]["sessions"], 2);
    assert_eq!(stats["sessions"]["turns"]["max"], 3);
    assert_eq!(stats["input_tokens"]["max"], 4);

    // Replayed, each request's record names its session and turn.
    let rec = dir.path().join("replay.jsonl");
    let spec = format!("throtl:{}", joined.display());
    let cfg = bench_config(
        &sim.url(),
        &[
            "--trace",
            &spec,
            "--tokenizer",
            "words",
            "--records",
            rec.to_str().unwrap(),
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(bench(&rt, &cfg).requests.ok, 6);
    let mut turns: Vec<(u64, u64)> = records(&rec)
        .iter()
        .map(|r| {
            (
                r["conversation"].as_u64().unwrap(),
                r["turn"].as_u64().unwrap(),
            )
        })
        .collect();
    turns.sort_unstable();
    assert_eq!(turns, vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
}

/// A child process killed (if still running) and reaped by its own handle,
/// even when an assertion fails first.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `throtl record` binary: Ctrl-C (SIGINT) flushes every line and says
/// how many it wrote.
#[test]
fn issue14_record_binary_flushes_on_ctrl_c() {
    use std::io::{BufRead, BufReader, Read};
    let sim = common::sim(2, 1);
    let dir = common::tmpdir();
    let trace = dir.path().join("cli.trace");
    let mut child = Reaped(
        std::process::Command::new(common::bin())
            .args([
                "record",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                &sim.url(),
                "--out",
            ])
            .arg(&trace)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        for _ in 0..3 {
            let r = c
                .post(format!("{url}/v1/completions"))
                .body(r#"{"model":"m","stream":true,"max_tokens":4,"prompt":"a b c"}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap();
        }
    });
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) };
    let status = child.0.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("wrote 3 lines (0 with errors)"), "{rest}");
    let rows = lines(&trace);
    assert_eq!(rows.len(), 3);
    assert!(rows
        .iter()
        .all(|r| r["protocol"] == "openai-completions" && r["output_tokens"] == 4));
}

#[test]
fn issue14_trace_stats_summarises_each_fixture() {
    let fx = |n: &str| format!("{}/tests/fixtures/traces/{n}", env!("CARGO_MANIFEST_DIR"));
    for (spec, requests) in [
        (format!("mooncake:{}", fx("mooncake.jsonl")), 40),
        (format!("azure:{}", fx("azure_conv.csv")), 30),
        (format!("burstgpt:{}", fx("burstgpt.csv")), 30),
    ] {
        let out = std::process::Command::new(common::bin())
            .args(["trace", "stats", &spec, "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(s["requests"], requests, "{spec}");
        let per_s: u64 = s["per_second"]["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum();
        assert_eq!(
            per_s, requests,
            "{spec}: per-second buckets hold every request"
        );
        let text = std::process::Command::new(common::bin())
            .args(["trace", "stats", &spec])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&text.stdout).contains("per second"));
    }
    let out = std::process::Command::new(common::bin())
        .args([
            "trace",
            "stats",
            &format!("mooncake:{}", fx("mooncake.jsonl")),
            "--json",
        ])
        .output()
        .unwrap();
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    // 40 requests, 3 groups of 2 shared blocks: 37 × 2 reused blocks.
    assert_eq!(s["prefix"]["reused_blocks"], 74);
    assert!(s["prefix"]["token_reuse_ratio"].as_f64().unwrap() > 0.4);
}

/// Failures on the upstream's side pass through and are recorded: a
/// connection dropped mid-stream, a 500; and NDJSON streams (Ollama) are
/// counted too.
#[test]
fn issue14_record_passes_upstream_failures_and_ndjson_through() {
    let broken = throtl::sim::start(throtl::sim::SimConfig {
        ttft: Duration::from_millis(2),
        itl: Duration::from_millis(1),
        faults: throtl::sim::faults::FaultConfig {
            disconnect_rate: 1.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let dir = common::tmpdir();
    let trace = dir.path().join("broken.trace");
    let got = with_proxy(&record_config(&broken.url(), &trace), |url, rt| {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{url}/v1/chat/completions"))
                .body(r#"{"model":"m","stream":true,"max_tokens":50,"messages":[{"role":"user","content":"x"}]}"#)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.is_err())
        })
    });
    assert_eq!(got.0, 200);
    let rows = lines(&trace);
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("upstream stream broke") || e.contains("not finished")),
        "{}: client saw a broken body: {}",
        rows[0],
        got.1
    );

    let ollama = throtl::sim::start(throtl::sim::SimConfig {
        ttft: Duration::from_millis(2),
        itl: Duration::from_millis(1),
        engine: throtl::sim::EngineFlavor::Ollama,
        ..Default::default()
    })
    .unwrap();
    let trace = dir.path().join("ollama.trace");
    with_proxy(&record_config(&ollama.url(), &trace), |url, rt| {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{url}/api/chat"))
                .body(r#"{"model":"m","options":{"num_predict":6},"messages":[{"role":"user","content":"a b c d"}]}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap();
        })
    });
    let rows = lines(&trace);
    assert_eq!(rows[0]["protocol"], "ollama-chat");
    assert_eq!(rows[0]["stream"], true);
    assert_eq!(rows[0]["prompt_tokens"], 4);
    assert_eq!(rows[0]["max_tokens"], 6);
    assert_eq!(rows[0]["output_tokens"], 6, "{}", rows[0]);
}
