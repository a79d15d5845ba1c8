//! `throtl bench` against the in-process simulator: measured numbers must
//! match the configured truth.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use throtl::engine::{Controls, StopCondition};
use throtl::report::RunStatus;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn issue2_measures_configured_ttft_itl_and_token_counts() {
    let server = common::sim(50, 10);
    let cfg = common::config(&server.url(), 8, 40, 16);
    let r = rt()
        .block_on(throtl::bench::run(&cfg, Controls::default()))
        .unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    assert_eq!(
        (r.requests.total, r.requests.ok, r.requests.failed),
        (40, 40, 0)
    );
    assert_eq!(r.tokens.output_total, 40 * 16);
    assert_eq!(r.tokens.source, "usage");
    // The simulator counts whitespace words: the prompt has exactly 16.
    assert_eq!(r.tokens.input_total, 40 * 16);
    let l = &r.latency_ms;
    assert!(
        l.ttft.p50 >= 50.0 && l.ttft.p50 < 55.0,
        "ttft p50 {}",
        l.ttft.p50
    );
    assert!(
        l.itl.p50 >= 9.5 && l.itl.p50 < 10.5,
        "itl p50 {}",
        l.itl.p50
    );
    assert_eq!(l.itl.count, 40 * 15, "one ITL sample per gap");
    assert!(
        l.tpot.p50 >= 9.5 && l.tpot.p50 < 10.5,
        "tpot p50 {}",
        l.tpot.p50
    );
    // e2e = ttft + 15 itl = 200 ms
    assert!(
        l.e2e.p50 >= 200.0 && l.e2e.p50 < 210.0,
        "e2e p50 {}",
        l.e2e.p50
    );
    assert_eq!(r.load.peak_in_flight, 8);
    // 8 workers × 16 tokens / ~0.2 s ⇒ about 40 req/s, 640 tok/s.
    assert!(
        r.throughput.requests_per_s > 30.0 && r.throughput.requests_per_s < 41.0,
        "{}",
        r.throughput.requests_per_s
    );
    let expected_out = r.throughput.requests_per_s * 16.0;
    assert!((r.throughput.output_tokens_per_s - expected_out).abs() < 1e-6 * expected_out.max(1.0));
}

#[test]
fn issue2_warmup_is_excluded_and_labelled() {
    let server = common::sim(5, 1);
    let mut cfg = common::config(&server.url(), 2, 10, 4);
    cfg.warmup = 4;
    let r = rt()
        .block_on(throtl::bench::run(&cfg, Controls::default()))
        .unwrap();
    assert_eq!(r.requests.total, 10);
    assert_eq!(r.load.warmup_requests, 4);
}

#[test]
fn issue2_duration_stop_condition_bounds_the_run() {
    let server = common::sim(5, 1);
    let mut cfg = common::config(&server.url(), 4, 1, 4);
    cfg.stop = StopCondition::Duration(Duration::from_millis(600));
    let r = rt()
        .block_on(throtl::bench::run(&cfg, Controls::default()))
        .unwrap();
    // Each request takes ~8 ms; 4 workers for 0.6 s ⇒ roughly 300 requests.
    assert!(r.requests.ok > 50, "{}", r.requests.ok);
    assert!(
        r.throughput.window_s >= 0.6 && r.throughput.window_s < 1.5,
        "{}",
        r.throughput.window_s
    );
}

#[test]
fn issue2_completions_route_works() {
    let server = common::sim(5, 1);
    let mut cfg = common::config(&server.url(), 2, 6, 5);
    cfg.api = throtl::api::ApiKind::OpenaiCompletions;
    let r = rt()
        .block_on(throtl::bench::run(&cfg, Controls::default()))
        .unwrap();
    assert_eq!(r.requests.ok, 6);
    assert_eq!(r.tokens.output_total, 30);
}

#[test]
fn issue2_soft_stop_marks_run_interrupted_and_keeps_results() {
    let server = common::sim(20, 5);
    let cfg = common::config(&server.url(), 4, 100_000, 8);
    let controls = Controls::default();
    let stopper = controls.clone();
    let r = rt().block_on(async move {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            stopper.soft.cancel();
        });
        throtl::bench::run(&cfg, controls).await
    });
    let r = r.unwrap();
    assert_eq!(r.status, RunStatus::Interrupted);
    assert!(
        r.requests.ok >= 10 && r.requests.ok < 100_000,
        "{}",
        r.requests.ok
    );
    assert_eq!(
        r.requests.cancelled, 0,
        "in-flight requests finished within the grace"
    );
}

#[test]
fn issue2_hard_stop_cancels_in_flight_without_counting_failures() {
    let server = common::sim(2000, 5);
    let cfg = common::config(&server.url(), 3, 100, 8);
    let controls = Controls::default();
    let stopper = controls.clone();
    let r = rt()
        .block_on(async move {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                stopper.soft.cancel();
                stopper.hard.cancel();
            });
            throtl::bench::run(&cfg, controls).await
        })
        .unwrap();
    assert_eq!(r.status, RunStatus::Interrupted);
    assert_eq!((r.requests.cancelled, r.requests.failed), (3, 0));
}

#[test]
fn issue2_unreachable_url_fails_fast_naming_the_url() {
    // Bind then drop a listener: the port is free and refuses connections.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let cfg = common::config(&url, 1, 1, 1);
    let started = std::time::Instant::now();
    let err = rt()
        .block_on(throtl::bench::run(&cfg, Controls::default()))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&url) && msg.contains("cannot reach"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn server_metrics_are_scraped_by_default_and_not_with_a_zero_interval() {
    let server = common::sim(5, 2);
    let mut cfg = common::config(&server.url(), 2, 8, 4);
    let scraped = rt()
        .block_on(throtl::bench::run(&cfg, Controls::default()))
        .unwrap();
    let sm = scraped
        .server_metrics
        .expect("default run scrapes /metrics");
    assert_eq!(
        sm.totals.requests_ok,
        Some(scraped.requests.ok as f64 + cfg.warmup as f64)
    );
    cfg.api_options.scrape_every = Some(Duration::ZERO);
    let quiet = rt()
        .block_on(throtl::bench::run(&cfg, Controls::default()))
        .unwrap();
    assert_eq!(quiet.requests.ok, 8);
    assert!(
        quiet.server_metrics.is_none(),
        "scraped with --scrape-interval 0"
    );
}
