//! Client cost benchmark (issue 2): how much CPU, memory and timing overhead
//! the measuring client spends, against `throtl mock` in a separate process.
//!
//! Run: `cargo bench --bench client_overhead` (add `-- --quick` for a short run).
//! Prints one line per scenario; docs/performance.md records the numbers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use throtl::api::{ApiKind, Usage};
use throtl::config::{BenchConfig, ProgressMode};
use throtl::engine::record::RequestRecord;
use throtl::engine::{Controls, StopCondition};
use throtl::report::RunReport;
use throtl::stats::Stats;

struct Mock {
    child: Child,
    url: String,
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mock(ttft: &str, itl: &str, threads: &str) -> Mock {
    let mut child = Command::new(env!("CARGO_BIN_EXE_throtl"))
        .args([
            "mock",
            "--port",
            "0",
            "--ttft",
            ttft,
            "--itl",
            itl,
            "--threads",
            threads,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start throtl mock");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Mock {
        child,
        url: line.trim().to_owned(),
    }
}

fn config(url: &str, concurrency: u32, requests: u64) -> BenchConfig {
    BenchConfig {
        url: url.to_owned(),
        model: "throtl-sim".into(),
        api: ApiKind::OpenaiChat,
        concurrency,
        stop: StopCondition::Requests(requests),
        input_tokens: 32,
        output_tokens: 64,
        warmup: u64::from(concurrency),
        timeout: Duration::from_secs(60),
        ignore_eos: true,
        seed: 0,
        json_out: None,
        records_out: None,
        progress: ProgressMode::Quiet,
        grace: Duration::from_secs(1),
        api_key_env: None,
        api_options: Default::default(),
        workload: Default::default(),
        results: Default::default(),
        client: Default::default(),
    }
}

/// Runs a bench on a single-threaded runtime: everything the client does
/// happens on one core (plus the aggregator thread, included in CPU time).
fn run_one_core(cfg: &BenchConfig) -> RunReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(throtl::bench::run(cfg, Controls::default()))
        .unwrap()
}

fn zero_delay_cost(concurrency: u32, requests: u64) {
    let m = mock("0ms", "0ms", "1");
    let r = run_one_core(&config(&m.url, concurrency, requests));
    let cpu = r.client.cpu_s.unwrap_or(f64::NAN);
    let total = (r.requests.ok + r.load.warmup_requests) as f64;
    let rss = throtl::sys::peak_rss_bytes().unwrap_or(0) as f64 / 1e6;
    println!(
        "zero-delay c={concurrency:<5} requests={:<6} wall={:.2}s cpu={:.2}s  cpu/1000req={:.3}s  req/s/core={:.0}  chunks/s/core={:.0}  achieved={:.1} peak_in_flight={} peak_rss={rss:.1}MB failed={}",
        r.requests.ok, r.duration_s, cpu, cpu / total * 1000.0, total / cpu,
        r.client.messages_parsed as f64 / cpu, r.load.achieved_concurrency, r.load.peak_in_flight, r.requests.failed
    );
}

fn fidelity_at(concurrency: u32, requests: u64, ramp_up: Duration) {
    let m = mock("100ms", "20ms", "2");
    let mut cfg = config(&m.url, concurrency, requests);
    cfg.workload.ramp_up = ramp_up;
    let r = run_one_core(&cfg);
    let rss = throtl::sys::peak_rss_bytes().unwrap_or(0) as f64 / 1e6;
    let cpu = r.client.cpu_s.unwrap_or(f64::NAN);
    println!(
        "truth ttft=100ms itl=20ms c={concurrency:<5} ramp_up={ramp_up:?} ok={} ttft_p50={:.3}ms itl_p50={:.3}ms tpot_p50={:.3}ms achieved={:.1} peak_in_flight={} cpu/1000req={:.3}s peak_rss={rss:.1}MB send_lag_p99={:.3}ms",
        r.requests.ok, r.latency_ms.ttft.p50, r.latency_ms.itl.p50, r.latency_ms.tpot.p50,
        r.load.achieved_concurrency, r.load.peak_in_flight,
        cpu / (r.requests.ok + r.load.warmup_requests) as f64 * 1000.0, r.client.send_lag_ms.p99
    );
}

/// CPU time (user + system) of this process's waited-for children.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The whole `throtl bench` process with default flags (start-up,
/// tokenizer-free word prompts, default runtime threads) against a truth
/// mock, streams de-phased by `--ramp-up`: what a user's run costs.
fn process_cost(concurrency: u32, requests: u64, ramp_up: &str, extra: &[&str]) {
    let m = mock("100ms", "20ms", "2");
    let dir = std::env::temp_dir().join(format!("throtl-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("run.json");
    let before = children_cpu();
    let status = Command::new(env!("CARGO_BIN_EXE_throtl"))
        .args([
            "bench",
            "--url",
            &m.url,
            "-m",
            "throtl-sim",
            "--no-store",
            "-q",
        ])
        .args(["-c", &concurrency.to_string(), "-n", &requests.to_string()])
        .args([
            "--ramp-up",
            ramp_up,
            "--output-tokens",
            "64",
            "--input-tokens",
            "128",
        ])
        .arg("--json")
        .arg(&json)
        .args(extra)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let cpu = (children_cpu() - before).as_secs_f64();
    let r: RunReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let sent = (r.requests.ok + r.requests.failed + r.load.warmup_requests) as f64;
    println!(
        "process c={concurrency:<5} ramp_up={ramp_up} {} requests={sent} cpu={cpu:.2}s cpu/1000req={:.3}s ttft_p50={:.3}ms ttft_p99={:.3}ms send_lag_p99={:.3}ms",
        extra.join(" "), cpu / sent * 1000.0, r.latency_ms.ttft.p50, r.latency_ms.ttft.p99, r.client.send_lag_ms.p99
    );
}

/// Cost of the per-request instrumentation: 66 clock reads (send, headers,
/// 64 tokens) plus folding the record into the histograms.
fn timing_overhead() {
    let n = 100_000u32;
    let mut stats = Stats::default();
    let started = Instant::now();
    for i in 0..n {
        let mut rec = RequestRecord::new(u64::from(i), false, Instant::now(), 65);
        rec.sent = Instant::now();
        rec.headers = Some(Instant::now());
        for _ in 0..64 {
            rec.token_times.push(Instant::now());
        }
        rec.end = Instant::now();
        rec.usage = Usage {
            input_tokens: Some(32),
            output_tokens: Some(64),
        };
        stats.ingest(&rec, 32);
    }
    let per = started.elapsed() / n;
    assert!(stats.ok == u64::from(n));
    println!(
        "timing overhead per 64-token request (clock reads + record + histogram updates): {:.2} µs",
        per.as_secs_f64() * 1e6
    );
}

/// Each scenario runs in a fresh process so its peak RSS is its own.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        run_scenario(&args[i + 1]);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let scenarios: &[&str] = if quick {
        &["overhead", "zero-100", "truth-256"]
    } else {
        &[
            "overhead",
            "zero-1",
            "zero-100",
            "zero-1000",
            "truth-256",
            "truth-1000",
            "truth-256-ramp",
            "truth-1000-ramp",
            "process-256-ramp",
            "process-256-ramp-1thread",
            "process-1000-ramp",
        ]
    };
    for s in scenarios {
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--scenario", s])
            .status()
            .unwrap();
        assert!(status.success(), "scenario {s} failed");
    }
}

fn run_scenario(name: &str) {
    match name {
        "overhead" => timing_overhead(),
        "zero-1" => zero_delay_cost(1, 2_000),
        "zero-100" => zero_delay_cost(100, 10_000),
        "zero-1000" => zero_delay_cost(1000, 10_000),
        "truth-256" => fidelity_at(256, 1_024, Duration::ZERO),
        "truth-1000" => fidelity_at(1000, 3_000, Duration::ZERO),
        "truth-256-ramp" => fidelity_at(256, 1_024, Duration::from_secs(1)),
        "truth-1000-ramp" => fidelity_at(1000, 3_000, Duration::from_secs(2)),
        "process-256-ramp" => process_cost(256, 1_024, "2s", &[]),
        "process-256-ramp-1thread" => process_cost(256, 1_024, "2s", &["--threads", "1"]),
        "process-1000-ramp" => process_cost(1000, 3_000, "2s", &[]),
        other => panic!("unknown scenario {other}"),
    }
}
