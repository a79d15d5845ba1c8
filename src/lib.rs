//! Throtl: measure, compare and watch LLM inference servers.
//!
//! Layers: [`cli`] (flags only) → [`config`] (validated) → [`bench`]
//! (pipeline) → [`engine`] (load, records) → [`stats`] (aggregator,
//! histograms) → [`report`] (presentation). [`sim`] is the built-in server.

pub mod alert;
pub mod api;
pub mod bench;
pub mod cli;
pub mod cli_workload;
pub mod config;
pub mod config_file;
pub mod demo;
pub mod discover;
pub mod engine;
pub mod k8s;
pub mod live;
pub mod monitor;
pub mod multi;
pub mod probe;
pub mod progress;
pub mod race;
pub mod record;
pub mod report;
pub mod results;
pub mod scrape;
pub mod shard;
pub mod sim;
pub mod slo;
pub mod stats;
pub mod store;
pub mod stream;
pub mod summary;
pub mod sweep;
pub mod sys;
pub mod timer;
pub mod trace;
pub mod tui;
pub mod tune;

use std::time::Duration;

pub use bench::BenchError;
use config::{BenchConfig, ProgressMode};
use engine::Controls;
use report::RunReport;

/// Runs a bench with Ctrl-C handling: the first Ctrl-C stops new requests and
/// gives in-flight ones `cfg.grace` to finish; a second one (or the grace
/// expiring) cancels them. The report is then marked interrupted.
pub async fn run_bench_with_interrupt(cfg: &BenchConfig) -> Result<RunReport, BenchError> {
    run_bench_stored_with_interrupt(cfg).await.map(|r| r.report)
}

/// Like [`run_bench_with_interrupt`], with the run's samples and histograms.
pub async fn run_bench_stored_with_interrupt(
    cfg: &BenchConfig,
) -> Result<store::runs::StoredRun, BenchError> {
    let controls = Controls::default();
    let watcher = tokio::spawn(watch_interrupts(
        controls.clone(),
        cfg.grace,
        cfg.progress != ProgressMode::Quiet,
    ));
    let result = bench::run_full(cfg, controls).await;
    watcher.abort();
    result
}

/// Turns Ctrl-C into `controls`: the first stops new requests, a second one
/// (or `grace` expiring) cancels in-flight ones. Runs until then.
pub async fn watch_interrupts(controls: Controls, grace: Duration, verbose: bool) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    controls.soft.cancel();
    if verbose {
        eprintln!("\ninterrupted: no new requests; waiting up to {grace:?} for in-flight ones (Ctrl-C again to stop now)");
    }
    tokio::select! {
        () = tokio::time::sleep(grace) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    controls.hard.cancel();
}
