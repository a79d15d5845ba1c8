#![allow(clippy::unwrap_used)]
//! Issue 5: the realistic engine simulator end to end — `/metrics` agrees
//! with what `throtl bench` measured, and injected faults are counted exactly.

use std::time::Duration;

use throtl::api::ApiKind;
use throtl::config::{BenchConfig, ProgressMode};
use throtl::engine::{Controls, StopCondition};
use throtl::report::RunReport;
use throtl::sim::engine::profile::Profile;
use throtl::sim::engine::EngineConfig;
use throtl::sim::faults::{FaultConfig, StallSpec};
use throtl::sim::{self, SimConfig, SimHandle};

fn bench_cfg(url: String, concurrency: u32, requests: u64, input: u32, output: u32) -> BenchConfig {
    BenchConfig {
        url,
        model: "throtl-sim".into(),
        api: ApiKind::OpenaiChat,
        concurrency,
        stop: StopCondition::Requests(requests),
        input_tokens: input,
        output_tokens: output,
        warmup: 0,
        timeout: Duration::from_secs(30),
        ignore_eos: true,
        seed: 1,
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

async fn bench(cfg: &BenchConfig) -> RunReport {
    throtl::bench::run(cfg, Controls::default()).await.unwrap()
}

async fn scrape(server: &SimHandle) -> String {
    reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the first series named `name` whose labels contain `label`.
fn value(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.contains(label)).then(|| v.parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("{name}{{{label}}} not in\n{text}"))
}

fn hist_mean(text: &str, name: &str) -> (f64, f64) {
    let count = value(text, &format!("{name}_count"), "");
    (count, value(text, &format!("{name}_sum"), "") / count)
}

fn engine_sim(e: EngineConfig, faults: FaultConfig) -> SimHandle {
    sim::start(SimConfig {
        engine_model: Some(e),
        faults,
        ..SimConfig::default()
    })
    .unwrap()
}

fn within(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue5_metrics_agree_with_what_bench_measured() {
    let server = engine_sim(
        EngineConfig::new(Profile::builtin("llama3-8b-rtx4090").unwrap()),
        FaultConfig::default(),
    );
    let report = bench(&bench_cfg(server.url(), 8, 32, 256, 16)).await;
    let text = scrape(&server).await;
    assert_eq!(report.requests.ok, 32, "{:?}", report.requests.errors);
    let ok = report.requests.ok as f64;
    assert_eq!(
        value(
            &text,
            "vllm:request_success_total",
            "finished_reason=\"length\""
        ),
        ok
    );
    assert_eq!(
        value(&text, "vllm:generation_tokens_total", ""),
        report.tokens.output_total as f64
    );
    assert_eq!(
        value(&text, "vllm:prompt_tokens_total", ""),
        report.tokens.input_total as f64
    );
    assert_eq!(value(&text, "vllm:num_requests_running", ""), 0.0);
    assert_eq!(value(&text, "vllm:kv_cache_usage_perc", ""), 0.0);
    let lat = &report.latency_ms;
    for (name, client_count, client_mean_ms) in [
        (
            "vllm:time_to_first_token_seconds",
            lat.ttft.count,
            lat.ttft.mean,
        ),
        (
            "vllm:inter_token_latency_seconds",
            lat.itl.count,
            lat.itl.mean,
        ),
        (
            "vllm:e2e_request_latency_seconds",
            lat.e2e.count,
            lat.e2e.mean,
        ),
    ] {
        let (count, mean_s) = hist_mean(&text, name);
        eprintln!(
            "{name}: n={count} server mean {:.3} ms, client mean {client_mean_ms:.3} ms",
            mean_s * 1000.0
        );
        assert_eq!(count, client_count as f64, "{name} count");
        assert!(
            within(mean_s * 1000.0, client_mean_ms, 0.05),
            "{name}: server mean {} ms, client {client_mean_ms} ms",
            mean_s * 1000.0
        );
    }
    // Decode at batch ≤ 8 on an RTX 4090 profile: ~20 ms per token.
    assert!(
        lat.itl.mean > 15.0 && lat.itl.mean < 40.0,
        "itl {}",
        lat.itl.mean
    );
    let (queue_n, _) = hist_mean(&text, "vllm:request_queue_time_seconds");
    assert_eq!(queue_n, ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue5_a_small_kv_cache_preempts_and_reports_it() {
    let mut e = EngineConfig::new(Profile::builtin("llama3-8b-h100").unwrap());
    e.kv_blocks = Some(24); // 384 tokens for 8 requests of 64 + 16
    let server = engine_sim(e, FaultConfig::default());
    let report = bench(&bench_cfg(server.url(), 8, 16, 64, 16)).await;
    let text = scrape(&server).await;
    assert_eq!(report.requests.ok, 16, "{:?}", report.requests.errors);
    assert!(
        value(&text, "vllm:num_preemptions_total", "") > 0.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "vllm:generation_tokens_total", ""),
        16.0 * 16.0
    );
}

fn fixed_sim(faults: FaultConfig) -> SimHandle {
    sim::start(SimConfig {
        ttft: Duration::from_millis(1),
        itl: Duration::from_micros(500),
        faults,
        ..SimConfig::default()
    })
    .unwrap()
}

fn errors(r: &RunReport, key: &str) -> u64 {
    r.requests.errors.get(key).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue5_faults_are_counted_exactly_by_bench() {
    let faults = FaultConfig {
        seed: 7,
        fail_rate: 0.1,
        disconnect_rate: 0.1,
        malformed_rate: 0.1,
        ..FaultConfig::default()
    };
    let server = fixed_sim(faults);
    let report = bench(&bench_cfg(server.url(), 4, 300, 16, 8)).await;
    let text = scrape(&server).await;
    let injected = |kind: &str| {
        value(
            &text,
            "throtl_sim_faults_injected_total",
            &format!("kind=\"{kind}\""),
        ) as u64
    };
    assert_eq!(errors(&report, "http_500"), injected("failed"));
    assert_eq!(errors(&report, "truncated"), injected("disconnected"));
    assert_eq!(errors(&report, "malformed"), injected("malformed"));
    assert_eq!(
        report.requests.failed,
        injected("failed") + injected("disconnected") + injected("malformed")
    );
    for kind in ["failed", "disconnected", "malformed"] {
        let n = injected(kind);
        assert!((10..=60).contains(&n), "{kind}: {n} of 300 at rate 0.1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue5_same_seed_same_faults() {
    let run = || async {
        let faults = FaultConfig {
            seed: 11,
            fail_rate: 0.2,
            disconnect_rate: 0.2,
            malformed_rate: 0.2,
            ..FaultConfig::default()
        };
        let server = fixed_sim(faults);
        bench(&bench_cfg(server.url(), 1, 60, 8, 4))
            .await
            .requests
            .errors
    };
    let a = run().await;
    assert_eq!(a, run().await);
    assert!(!a.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue5_rate_limit_and_queue_limit_answer_429_and_503() {
    let server = fixed_sim(FaultConfig {
        rate_limit: Some(20.0),
        ..FaultConfig::default()
    });
    let report = bench(&bench_cfg(server.url(), 4, 100, 8, 4)).await;
    let text = scrape(&server).await;
    let limited = value(
        &text,
        "throtl_sim_faults_injected_total",
        "kind=\"rate_limited\"",
    ) as u64;
    assert!(limited > 0);
    assert_eq!(errors(&report, "http_429"), limited);
    // A bucket of one request per second: the second request at once is refused.
    let one = fixed_sim(FaultConfig {
        rate_limit: Some(1.0),
        ..FaultConfig::default()
    });
    let post = || {
        reqwest::Client::new()
            .post(format!("{}/v1/completions", one.url()))
            .body(r#"{"prompt":"a","max_tokens":1}"#)
            .send()
    };
    assert_eq!(post().await.unwrap().status(), 200);
    let refused = post().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");

    let mut e = EngineConfig::new(Profile::builtin("llama3-8b-rtx4090").unwrap());
    e.max_num_seqs = 1;
    let server = engine_sim(
        e,
        FaultConfig {
            max_queue: Some(2),
            ..FaultConfig::default()
        },
    );
    let report = bench(&bench_cfg(server.url(), 8, 24, 8, 2)).await;
    let text = scrape(&server).await;
    let full = value(
        &text,
        "throtl_sim_faults_injected_total",
        "kind=\"queue_full\"",
    ) as u64;
    assert!(full > 0);
    assert_eq!(errors(&report, "http_503"), full);
    assert_eq!(report.requests.ok + full, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue5_cold_start_and_stalls_delay_but_do_not_fail() {
    let stall = StallSpec {
        duration: Duration::from_millis(150),
        probability: 1.0,
    };
    let server = fixed_sim(FaultConfig {
        cold_start: Some(Duration::from_millis(300)),
        stall: Some(stall),
        ..FaultConfig::default()
    });
    let report = bench(&bench_cfg(server.url(), 1, 3, 8, 4)).await;
    assert_eq!(report.requests.ok, 3);
    // The first request waits for the load, every request stalls once.
    assert!(
        report.latency_ms.ttft.max >= 300.0,
        "{:?}",
        report.latency_ms.ttft
    );
    assert!(
        report.latency_ms.e2e.min >= 150.0,
        "{:?}",
        report.latency_ms.e2e
    );
    let text = scrape(&server).await;
    assert_eq!(
        value(
            &text,
            "throtl_sim_faults_injected_total",
            "kind=\"stalled\""
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            "throtl_sim_faults_injected_total",
            "kind=\"cold_start\""
        ),
        1.0
    );
}
