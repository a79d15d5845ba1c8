//! Added latency of `throtl record` (issue 14), two ways, with `throtl
//! mock`, the proxy and the measuring client each in its own process:
//!
//! 1. **Per request** (the headline number): for each proxied request, the
//!    client's TTFT from its send minus the TTFT the proxy saw upstream from
//!    the request's arrival at the proxy (its trace line's `ttft_ms`). What
//!    is left is exactly the time the request and its first token spent
//!    getting through the proxy (one extra loopback hop included). Both are
//!    durations measured inside one process each, so no clocks are compared,
//!    and the simulator's own jitter cancels out.
//! 2. **Direct vs proxied**: the same load against the mock directly and
//!    through the proxy; the difference of the TTFT and ITL percentiles.
//!    This also shows the cost of the proxy's CPU share, but on a shared
//!    machine the p99 of separate runs moves by milliseconds from run to run.
//!
//! Run: `cargo bench --bench record_overhead` (add `-- --quick` for one short
//! round). Prints one line per run and a summary; docs/traces.md records the
//! numbers. Rounds alternate direct and proxied so drift hits both alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use throtl::api::ApiKind;
use throtl::config::{BenchConfig, ProgressMode};
use throtl::engine::{Controls, StopCondition};
use throtl::report::RunReport;

/// A child process killed and reaped by its own handle.
struct Proc {
    child: Child,
    url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mock() -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_throtl"))
        .args([
            "mock",
            "--port",
            "0",
            "--ttft",
            "20ms",
            "--itl",
            "5ms",
            "--threads",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start throtl mock");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Proc {
        child,
        url: line.trim().to_owned(),
    }
}

fn proxy(upstream: &str, out: &Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_throtl"))
        .args([
            "record",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
            "--out",
        ])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start throtl record");
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "throtl record: listening on http://127.0.0.1:PORT → …"
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    Proc { child, url }
}

fn config(url: &str, streams: u32, requests: u64, records: Option<PathBuf>) -> BenchConfig {
    BenchConfig {
        url: url.to_owned(),
        model: "throtl-sim".into(),
        api: ApiKind::OpenaiChat,
        concurrency: streams,
        stop: StopCondition::Requests(requests),
        input_tokens: 256,
        output_tokens: 32,
        warmup: u64::from(streams),
        timeout: Duration::from_secs(60),
        ignore_eos: true,
        seed: 0,
        json_out: None,
        records_out: records,
        progress: ProgressMode::Quiet,
        grace: Duration::from_secs(1),
        api_key_env: None,
        api_options: throtl::config::ApiOptions {
            scrape_every: Some(Duration::ZERO),
            ..Default::default()
        },
        workload: throtl::config::WorkloadOptions {
            ramp_up: Duration::from_millis(500),
            ..Default::default()
        },
        results: Default::default(),
        client: Default::default(),
    }
}

fn run(
    rt: &tokio::runtime::Runtime,
    url: &str,
    streams: u32,
    requests: u64,
    records: Option<PathBuf>,
) -> RunReport {
    let cfg = config(url, streams, requests, records);
    rt.block_on(throtl::bench::run(&cfg, Controls::default()))
        .unwrap()
}

/// CPU time (user + system) of process `pid` so far, from /proc.
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat: `rest` starts at field 3.
    let field = |i: usize| {
        f.get(i - 3)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = field(14) + field(15);
    // SAFETY: sysconf only reads its argument.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Per-request added TTFT (ms) of measured requests: client TTFT from send
/// minus the proxy's upstream TTFT, pairing requests in arrival order.
fn added_ttft(records: &Path, trace: &Path) -> Vec<f64> {
    let mut client = json_lines(records);
    let mut proxy = json_lines(trace);
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    client.sort_by(|a, b| f(a, "sent_ms").total_cmp(&f(b, "sent_ms")));
    proxy.sort_by(|a, b| f(a, "timestamp_ms").total_cmp(&f(b, "timestamp_ms")));
    assert_eq!(client.len(), proxy.len(), "one trace line per request");
    let mut added: Vec<f64> = client
        .iter()
        .zip(&proxy)
        .filter(|(c, _)| c["warmup"] == false)
        .map(|(c, p)| f(c, "first_token_ms") - f(c, "sent_ms") - f(p, "ttft_ms"))
        .collect();
    added.sort_by(f64::total_cmp);
    added
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let k = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[k - 1]
}

#[derive(Default)]
struct Pair {
    direct: Vec<(f64, f64, f64, f64)>,
    proxied: Vec<(f64, f64, f64, f64)>,
}

fn numbers(r: &RunReport) -> (f64, f64, f64, f64) {
    let l = &r.latency_ms;
    (l.ttft.p50, l.ttft.p99, l.itl.p50, l.itl.p99)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, requests) = if quick { (1, 500) } else { (5, 2000) };
    let streams = 100;
    let m = mock();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut pair = Pair::default();
    let mut per_request: Vec<(f64, f64)> = Vec::new();
    for round in 0..rounds {
        let d = run(&rt, &m.url, streams, requests, None);
        // A fresh proxy per round, so its trace holds this round only.
        let trace = dir.path().join(format!("round{round}.trace"));
        let records = dir.path().join(format!("round{round}.jsonl"));
        let p = proxy(&m.url, &trace);
        let x = run(&rt, &p.url, streams, requests, Some(records.clone()));
        // The proxy flushes when idle; give it a moment.
        std::thread::sleep(Duration::from_millis(300));
        let cpu = process_cpu(p.child.id());
        drop(p);
        let added = added_ttft(&records, &trace);
        let (a50, a99) = (pct(&added, 50.0), pct(&added, 99.0));
        per_request.push((a50, a99));
        for (name, r) in [("direct", &d), ("proxied", &x)] {
            let n = numbers(r);
            println!(
                "round {round} {name:<8} streams={streams} ok={} failed={} ttft p50 {:.3} ms p99 {:.3} ms  itl p50 {:.3} ms p99 {:.3} ms",
                r.requests.ok, r.requests.failed, n.0, n.1, n.2, n.3
            );
        }
        println!(
            "round {round} per-request added TTFT through the proxy: p50 {a50:.3} ms, p99 {a99:.3} ms, max {:.3} ms ({} requests); proxy CPU {:.2} s per 1,000 requests",
            added.last().copied().unwrap_or(f64::NAN),
            added.len(),
            cpu.as_secs_f64() * 1000.0 / (requests + u64::from(streams)) as f64
        );
        pair.direct.push(numbers(&d));
        pair.proxied.push(numbers(&x));
    }
    let diff = |f: fn(&(f64, f64, f64, f64)) -> f64| {
        median(
            pair.direct
                .iter()
                .zip(&pair.proxied)
                .map(|(d, x)| f(x) - f(d))
                .collect(),
        )
    };
    println!(
        "per-request added TTFT at {streams} streams (median over {rounds} rounds): p50 {:.3} ms, p99 {:.3} ms",
        median(per_request.iter().map(|x| x.0).collect()),
        median(per_request.iter().map(|x| x.1).collect()),
    );
    println!(
        "proxied minus direct at {streams} streams (median over {rounds} rounds): TTFT p50 {:+.3} ms, p99 {:+.3} ms; ITL p50 {:+.3} ms, p99 {:+.3} ms",
        diff(|n| n.0),
        diff(|n| n.1),
        diff(|n| n.2),
        diff(|n| n.3)
    );
}
