//! Helpers shared by integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use throtl::api::ApiKind;
use throtl::config::{BenchConfig, ProgressMode};
use throtl::engine::StopCondition;
use throtl::sim::{self, SimConfig, SimHandle};

/// Starts the fixed-delay simulator on a free port.
pub fn sim(ttft_ms: u64, itl_ms: u64) -> SimHandle {
    sim::start(SimConfig {
        ttft: Duration::from_millis(ttft_ms),
        itl: Duration::from_millis(itl_ms),
        ..SimConfig::default()
    })
    .unwrap()
}

/// A quiet bench config against `url`.
pub fn config(url: &str, concurrency: u32, requests: u64, output_tokens: u32) -> BenchConfig {
    BenchConfig {
        url: url.to_owned(),
        model: "throtl-sim".into(),
        api: ApiKind::OpenaiChat,
        concurrency,
        stop: StopCondition::Requests(requests),
        input_tokens: 16,
        output_tokens,
        warmup: 0,
        timeout: Duration::from_secs(30),
        ignore_eos: false,
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

/// A fresh temporary directory.
pub fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Path of the built `throtl` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_throtl"))
}
