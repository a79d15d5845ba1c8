//! Issue 14: trace parsing and replay (`throtl bench --trace`) against the
//! in-process simulator.
//!
//! Fixtures (tests/fixtures/traces/, see its README) are small files we wrote
//! in each public format: Mooncake's FAST'25 trace JSONL (kvcache-ai/Mooncake
//! `FAST25-release/traces`), the Azure LLM inference trace 2023 CSV
//! (Azure/AzurePublicDataset) and the BurstGPT CSV (HPMLL/BurstGPT).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use throtl::cli::{Cli, Command};
use throtl::config::BenchConfig;
use throtl::engine::Controls;
use throtl::report::RunReport;
use throtl::sim::engine::profile::Profile;
use throtl::sim::engine::EngineConfig;
use throtl::sim::{self, SimConfig};
use throtl::trace::{ReplayOptions, TraceFormat, TracePlan, TraceSpec};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/traces")
        .join(name)
}

fn plan(spec: &str, o: ReplayOptions) -> TracePlan {
    TracePlan::load(&TraceSpec::parse(spec).unwrap(), &o).unwrap()
}

/// A bench config from command-line flags, as `throtl bench` builds it.
fn bench_config(url: &str, extra: &[&str]) -> anyhow::Result<BenchConfig> {
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
    if !extra.contains(&"--tokenizer") {
        argv.extend(["--tokenizer", "words"]);
    }
    argv.extend_from_slice(extra);
    let Command::Bench(args) = Cli::try_parse_from(argv)?.command else {
        unreachable!()
    };
    args.to_config("throtl-sim".into())
}

fn run(cfg: &BenchConfig) -> RunReport {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(throtl::bench::run(cfg, Controls::default()))
        .unwrap()
}

#[test]
fn issue14_each_format_parses_its_fixture() {
    let m = plan(
        &format!("mooncake:{}", fixture("mooncake.jsonl").display()),
        ReplayOptions::default(),
    );
    assert_eq!(m.requests.len(), 40);
    assert_eq!(
        m.requests[0].at,
        Duration::ZERO,
        "time 0 is the first arrival"
    );
    assert_eq!(m.requests[0].input_tokens, 1302);
    assert_eq!(m.requests[0].hash_ids, vec![0, 1, 1000]);
    assert_eq!(m.requests[0].block_tokens, 512);

    let a = plan(
        &format!("azure:{}", fixture("azure_conv.csv").display()),
        ReplayOptions::default(),
    );
    assert_eq!(a.requests.len(), 30);
    assert_eq!(
        (a.requests[0].input_tokens, a.requests[0].output_tokens),
        (380, 27)
    );
    // 18:15:46.88059 → 18:15:47.28059: 400 ms.
    assert_eq!(a.requests[1].at, Duration::from_millis(400));

    let b = plan(
        &format!("burstgpt:{}", fixture("burstgpt.csv").display()),
        ReplayOptions::default(),
    );
    assert_eq!(b.requests.len(), 30);
    assert_eq!(b.requests[0].model.as_deref(), Some("GPT-4"));
    let gpt4 = plan(
        &format!("burstgpt:{}", fixture("burstgpt.csv").display()),
        ReplayOptions {
            model: Some("GPT-4".into()),
            ..Default::default()
        },
    );
    assert_eq!(gpt4.requests.len(), 10);
    assert!(gpt4
        .requests
        .iter()
        .all(|r| r.model.as_deref() == Some("GPT-4")));
}

#[test]
fn issue14_bad_input_names_file_line_and_field() {
    let dir = common::tmpdir();
    let p = dir.path().join("bad.jsonl");
    std::fs::write(
        &p,
        "{\"timestamp\":0,\"input_length\":5,\"output_length\":1,\"hash_ids\":[0]}\n{\"timestamp\":10,\"input_length\":\"many\",\"output_length\":1}\n",
    )
    .unwrap();
    let e = TracePlan::load(
        &TraceSpec {
            format: TraceFormat::Mooncake,
            path: p.clone(),
        },
        &ReplayOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("bad.jsonl:2") && e.contains("input_length"),
        "{e}"
    );
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.1,3\n").unwrap();
    let e = TracePlan::load(
        &TraceSpec {
            format: TraceFormat::Azure,
            path: csv,
        },
        &ReplayOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("GeneratedTokens") && e.contains("bad.csv:1"),
        "{e}"
    );

    let e = Cli::try_parse_from_checked(
        [
            "throtl",
            "bench",
            "--url",
            "http://127.0.0.1:1",
            "--trace",
            "splunk:x",
        ]
        .map(Into::into)
        .to_vec(),
    )
    .unwrap_err();
    assert!(
        e.contains("known formats: mooncake, azure, burstgpt, throtl"),
        "{e}"
    );

    // Flags the trace decides are refused, not silently ignored.
    for flag in [
        ["-c", "8"],
        ["--input-tokens", "64"],
        ["--rate", "3"],
        ["--turns", "2"],
    ] {
        let argv = [
            "throtl",
            "bench",
            "--url",
            "http://127.0.0.1:1",
            "--trace",
            "mooncake:x",
            flag[0],
            flag[1],
        ];
        let e = Cli::try_parse_from_checked(argv.map(Into::into).to_vec()).unwrap_err();
        assert!(e.contains("cannot be used with"), "{flag:?}: {e}");
    }
    let window = format!("mooncake:{}", fixture("mooncake.jsonl").display());
    let e = bench_config(
        "http://127.0.0.1:1",
        &["--trace", &window, "--trace-window", "1h..2h"],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("holds no request"), "{e}");
}

/// Per-second arrival counts of `offsets_ms` from the first one.
fn per_second(offsets_ms: &[f64]) -> Vec<i64> {
    let t0 = offsets_ms.iter().copied().fold(f64::INFINITY, f64::min);
    let mut v = Vec::new();
    for &t in offsets_ms {
        let i = ((t - t0) / 1000.0).floor() as usize;
        if v.len() <= i {
            v.resize(i + 1, 0);
        }
        v[i] += 1;
    }
    v
}

#[test]
fn issue14_replay_reproduces_the_trace_arrivals_and_speed_halves_it() {
    let sim = common::sim(5, 1);
    let dir = common::tmpdir();
    let spec = format!("mooncake:{}", fixture("mooncake.jsonl").display());
    let trace = plan(&spec, ReplayOptions::default());
    let records = dir.path().join("r.jsonl");
    let cfg = bench_config(
        &sim.url(),
        &["--trace", &spec, "--records", records.to_str().unwrap()],
    )
    .unwrap();
    let r = run(&cfg);
    let s = r.schedule.as_ref().unwrap();
    assert_eq!(s.arrival.as_deref(), Some("trace"));
    assert_eq!(s.arrivals, 40, "every trace line is sent");
    assert_eq!(r.requests.ok, 40);
    let t = s.trace.as_ref().unwrap();
    assert_eq!(t.requests, 40);
    assert!(
        (s.offered_rate_per_s - trace.offered_rate()).abs() < 1e-6 * trace.offered_rate(),
        "offered {} vs trace {}",
        s.offered_rate_per_s,
        trace.offered_rate()
    );
    assert!(
        (s.sent_rate_per_s - trace.offered_rate()).abs() < 0.03 * trace.offered_rate(),
        "sent {} vs trace {}",
        s.sent_rate_per_s,
        trace.offered_rate()
    );
    assert!(t.lateness_ms.p99 < 20.0, "lateness {:?}", t.lateness_ms);

    // Achieved per-second counts within 1 of the trace's.
    let sent: Vec<f64> = std::fs::read_to_string(&records)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["sent_ms"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let want = per_second(
        &trace
            .requests
            .iter()
            .map(|r| r.at.as_secs_f64() * 1000.0)
            .collect::<Vec<_>>(),
    );
    let got = per_second(&sent);
    assert_eq!(want.len(), got.len(), "{want:?} vs {got:?}");
    assert!(
        want.iter().zip(&got).all(|(a, b)| (a - b).abs() <= 1),
        "{want:?} vs {got:?}"
    );

    let fast = run(&bench_config(&sim.url(), &["--trace", &spec, "--trace-speed", "2"]).unwrap());
    let ft = fast.schedule.as_ref().unwrap().trace.as_ref().unwrap();
    assert!(
        (ft.duration_s * 2.0 - t.duration_s).abs() < 1e-6,
        "{} vs {}",
        ft.duration_s,
        t.duration_s
    );
    let fs = fast.schedule.as_ref().unwrap();
    assert!((fs.offered_rate_per_s / s.offered_rate_per_s - 2.0).abs() < 1e-3);
}

#[test]
fn issue14_window_max_requests_and_rate_filters() {
    let spec = format!("mooncake:{}", fixture("mooncake.jsonl").display());
    let all = plan(&spec, ReplayOptions::default());
    let start = Duration::from_secs(1);
    let end = Duration::from_secs(2);
    let in_window = all
        .requests
        .iter()
        .filter(|r| r.at >= start && r.at < end)
        .count();
    let cfg = bench_config(
        "http://127.0.0.1:1",
        &["--trace", &spec, "--trace-window", "1s..2s"],
    )
    .unwrap();
    let t = cfg.workload.trace.as_ref().unwrap();
    assert_eq!(t.requests.len(), in_window);
    assert!(t.requests.iter().all(|r| r.at < Duration::from_secs(1)));
    assert_eq!(
        cfg.stop,
        throtl::engine::StopCondition::Requests(in_window as u64)
    );

    let cfg = bench_config(
        "http://127.0.0.1:1",
        &["--trace", &spec, "--trace-max-requests", "7"],
    )
    .unwrap();
    assert_eq!(cfg.workload.trace.as_ref().unwrap().requests.len(), 7);

    let cfg = bench_config(
        "http://127.0.0.1:1",
        &["--trace", &spec, "--trace-rate", "50"],
    )
    .unwrap();
    let t = cfg.workload.trace.as_ref().unwrap();
    assert!(
        (t.offered_rate() - 50.0).abs() < 1e-6,
        "{}",
        t.offered_rate()
    );
    // Proportions kept: gap ratios equal the original ones.
    let g = |p: &TracePlan, i: usize| (p.requests[i + 1].at - p.requests[i].at).as_secs_f64();
    assert!((g(t, 4) / g(t, 5) - g(&all, 4) / g(&all, 5)).abs() < 1e-6);
}

#[test]
fn issue14_mooncake_shared_hash_ids_share_exact_prefix_blocks() {
    let spec = format!("mooncake:{}", fixture("mooncake.jsonl").display());
    let tp = plan(&spec, ReplayOptions::default());
    // With a real tokenizer: token-exact lengths.
    let cfg = bench_config(
        "http://127.0.0.1:1",
        &["--trace", &spec, "--tokenizer", "cl100k_base"],
    )
    .unwrap();
    let w = throtl::bench::build_workload(&cfg).unwrap();
    for (i, r) in tp.requests.iter().enumerate() {
        assert_eq!(
            w.item(i as u64).input_tokens,
            Some(r.input_tokens),
            "request {i}"
        );
    }
    // Requests 0 and 3 share blocks 0 and 1 (1024 words), then differ.
    let (a, b) = (&w.item(0).prompt, &w.item(3).prompt);
    assert_eq!(tp.requests[3].hash_ids[..2], tp.requests[0].hash_ids[..2]);
    let wa: Vec<&str> = a.split(' ').collect();
    let wb: Vec<&str> = b.split(' ').collect();
    assert_eq!(wa[..1024], wb[..1024]);
    assert_ne!(wa[1024..1100], wb[1024..1100]);
    // A different group shares nothing at the start.
    let c: Vec<&str> = w.item(1).prompt.split(' ').collect();
    assert_ne!(wa[..64], c[..64]);
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn issue14_sim_prefix_cache_hit_rate_equals_trace_block_reuse() {
    let mut engine = EngineConfig::new(Profile::builtin("llama3-8b-h100").unwrap());
    engine.prefix_caching = true;
    engine.kv_blocks = Some(20_000);
    let sim = sim::start(SimConfig {
        engine_model: Some(engine),
        ..SimConfig::default()
    })
    .unwrap();
    let spec = format!("mooncake:{}", fixture("mooncake.jsonl").display());
    let tp = plan(&spec, ReplayOptions::default());
    let reuse = throtl::trace::stats::prefix(&tp.requests).unwrap();
    let r = run(&bench_config(&sim.url(), &["--trace", &spec]).unwrap());
    assert_eq!(r.requests.ok, 40);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let text = rt.block_on(async {
        reqwest::get(format!("{}/metrics", sim.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let hits = metric(&text, "vllm:prefix_cache_hits_total");
    let queries = metric(&text, "vllm:prefix_cache_queries_total");
    let hit_rate = hits / queries;
    // The simulator caches whole 16-token blocks and always computes a
    // prompt's last token, so it can fall a little short of the trace.
    assert!(
        (hit_rate - reuse.token_reuse_ratio).abs() < 0.02,
        "sim hit rate {hit_rate:.4} vs trace token reuse {:.4}",
        reuse.token_reuse_ratio
    );
}

#[test]
fn issue14_replay_report_validates_and_max_concurrency_holds_arrivals() {
    // Fixed 300 ms TTFT and a cap of 1: arrivals 20-40 ms apart must wait.
    let sim = common::sim(300, 1);
    let dir = common::tmpdir();
    let json = dir.path().join("run.json");
    let spec = format!("mooncake:{}", fixture("mooncake.jsonl").display());
    let cfg = bench_config(
        &sim.url(),
        &[
            "--trace",
            &spec,
            "--trace-max-requests",
            "6",
            "--max-concurrency",
            "1",
            "--json",
            json.to_str().unwrap(),
        ],
    )
    .unwrap();
    let r = run(&cfg);
    let s = r.schedule.as_ref().unwrap();
    assert_eq!(s.arrivals, 6);
    assert_eq!(s.max_concurrency, Some(1));
    assert!(s.held_by_cap >= 4, "{s:?}");
    assert_eq!(s.on_time + s.late + s.held_by_cap, 6);

    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/run.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = v.iter_errors(&report).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(report["schedule"]["trace"]["requests"], 6);
    assert_eq!(report["schedule"]["arrival"], "trace");
}
