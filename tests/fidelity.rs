//! Fidelity: against the simulator with TTFT 100 ms and ITL 20 ms, 64 tokens,
//! at 256 concurrent streams, the reported TTFT p50 is within 1 ms of 100 ms
//! and ITL p50 within 0.5 ms of 20 ms (issue 2). Also checks that the
//! requested concurrency was actually held.
#![allow(clippy::unwrap_used)]

mod common;

use throtl::engine::Controls;

#[test]
fn issue2_fidelity_at_256_streams() {
    let server = common::sim(100, 20);
    let mut cfg = common::config(&server.url(), 256, 768, 64);
    cfg.warmup = 256;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt
        .block_on(throtl::bench::run(&cfg, Controls::default()))
        .unwrap();
    eprintln!(
        "ttft p50 {:.3} ms (p99 {:.3}), itl p50 {:.3} ms (p99 {:.3}), achieved concurrency {:.1}, peak {}",
        r.latency_ms.ttft.p50, r.latency_ms.ttft.p99, r.latency_ms.itl.p50, r.latency_ms.itl.p99,
        r.load.achieved_concurrency, r.load.peak_in_flight
    );
    assert_eq!(r.requests.ok, 768);
    assert_eq!(r.load.peak_in_flight, 256);
    let ttft = r.latency_ms.ttft.p50;
    let itl = r.latency_ms.itl.p50;
    assert!(
        (100.0..=101.0).contains(&ttft),
        "TTFT p50 {ttft} ms not within 1 ms of 100 ms"
    );
    assert!(
        (19.5..=20.5).contains(&itl),
        "ITL p50 {itl} ms not within 0.5 ms of 20 ms"
    );
}
