#![allow(clippy::unwrap_used)]
//! End-to-end: `throtl monitor` (no TUI) against the in-process simulator
//! under load from `throtl::bench`; the server-side numbers it derives must
//! agree with what the client measured.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use throtl::api::ApiKind;
use throtl::config::{BenchConfig, ProgressMode};
use throtl::engine::{Controls, StopCondition};
use throtl::monitor::{MonitorConfig, MonitorSinks};
use throtl::sim::{self, SimConfig};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn bench_config(url: String) -> BenchConfig {
    BenchConfig {
        url,
        model: "throtl-sim".into(),
        api: ApiKind::OpenaiChat,
        concurrency: 8,
        stop: StopCondition::Requests(160),
        input_tokens: 32,
        output_tokens: 16,
        warmup: 0,
        timeout: Duration::from_secs(30),
        ignore_eos: true,
        seed: 0,
        json_out: None,
        records_out: None,
        progress: ProgressMode::Quiet,
        grace: Duration::from_secs(2),
        api_key_env: None,
        api_options: Default::default(),
        workload: Default::default(),
        results: Default::default(),
        client: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_agrees_with_the_client_under_load() {
    let server = sim::start(SimConfig {
        ttft: Duration::from_millis(30),
        itl: Duration::from_millis(5),
        ..SimConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let cfg = MonitorConfig {
        targets: vec![server.url()],
        interval: Duration::from_millis(250),
        window: Duration::from_secs(600), // every scrape stays in the window
        db: Some(db.clone()),
        keep: None,
        rules: throtl::alert::parse_rules("rules:\n- {name: busy, when: running_requests > 0}\n")
            .unwrap(),
        webhook: None,
        once: false,
        max_intervals: None,
        log_alerts: false,
        local_gpu: false,
    };
    let out = Buf::default();
    let stop = CancellationToken::new();
    let sinks = MonitorSinks {
        jsonl: Some(Box::new(out.clone())),
        snapshots: None,
        commands: None,
        stop: stop.clone(),
    };
    let monitor = tokio::spawn(async move { throtl::monitor::run(&cfg, sinks).await });
    tokio::time::sleep(Duration::from_millis(400)).await; // a scrape before the load
    let report = throtl::bench::run(&bench_config(server.url()), Controls::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await; // a scrape after it
    stop.cancel();
    let outcome = monitor.await.unwrap().unwrap();
    assert!(outcome.intervals >= 4, "{}", outcome.intervals);

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len() as u64,
        outcome.intervals,
        "one line per server per interval"
    );
    let last = &lines.last().unwrap()["metrics"];
    assert_eq!(lines.last().unwrap()["engine"], "vllm");
    let window = last["window_s"].as_f64().unwrap();
    // Counter rates × window = increases over the whole monitored span = the whole run.
    let requests = last["requests_per_s"].as_f64().unwrap() * window;
    let tokens = last["generation_tokens_per_s"].as_f64().unwrap() * window;
    let prompt = last["prompt_tokens_per_s"].as_f64().unwrap() * window;
    assert!(
        (requests - report.requests.ok as f64).abs() < 0.5,
        "server {requests} vs client {}",
        report.requests.ok
    );
    assert!(
        (tokens - report.tokens.output_total as f64).abs() < 0.5,
        "server {tokens} vs client {}",
        report.tokens.output_total
    );
    assert!(prompt > 0.0);
    // Quantiles from bucket deltas: 30 ms TTFT lies in vLLM's (0.02, 0.04] bucket.
    let ttft_p50 = last["ttft"]["p50"].as_f64().unwrap();
    assert!(
        (0.02..=0.04).contains(&ttft_p50),
        "server TTFT p50 {ttft_p50}"
    );
    assert_eq!(
        last["ttft"]["count"].as_f64().unwrap(),
        report.requests.ok as f64
    );
    let client_ttft_ms = report.latency_ms.ttft.p50;
    assert!(
        (25.0..60.0).contains(&client_ttft_ms),
        "client TTFT p50 {client_ttft_ms}"
    );
    // A peak mid-run saw the running batch.
    let peak_running = lines
        .iter()
        .filter_map(|l| l["metrics"]["running"].as_f64())
        .fold(0.0, f64::max);
    assert!((1.0..=8.0).contains(&peak_running), "{peak_running}");

    // The alert fired while requests ran and resolved after; both are in history.
    let states: Vec<_> = outcome.events.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(states.first(), Some(&"firing"));
    assert_eq!(states.last(), Some(&"resolved"));
    let store = throtl::store::Store::open(&db).unwrap();
    let q = throtl::store::SampleQuery {
        metric: Some("generation_tokens_per_s".into()),
        ..Default::default()
    };
    assert!(!store.samples(&q).unwrap().is_empty());
    assert_eq!(
        store.alerts(&Default::default()).unwrap().len(),
        outcome.events.len()
    );

    // The bench stored the server's own view of the run too.
    let sm = report
        .server_metrics
        .as_ref()
        .expect("server_metrics in the report");
    assert_eq!(sm.totals.requests_ok, Some(report.requests.ok as f64));
    assert_eq!(
        sm.totals.generation_tokens,
        Some(report.tokens.output_total as f64)
    );
    assert!(!sm.points.is_empty());
    let console = throtl::report::console::render(&report);
    assert!(
        console.contains("server      vllm /metrics: 160 requests ok, 0 failed"),
        "{console}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["server_metrics"]["points"][0]["metrics"].is_object());
}
