//! `throtl demo`: the simulator and a short bench, in one process.

use std::path::PathBuf;
use std::time::Duration;

use std::io::IsTerminal;

use crate::api::ApiKind;
use crate::config::{BenchConfig, ProgressMode};
use crate::engine::StopCondition;
use crate::report::RunReport;
use crate::sim::{self, SimConfig};

/// Starts the simulator on a free port (TTFT 100 ms, ITL 20 ms, 64 tokens)
/// and benchmarks it; returns the report and the config used.
pub async fn run(
    concurrency: u32,
    requests: u64,
    json: PathBuf,
) -> anyhow::Result<(RunReport, BenchConfig)> {
    let sim_cfg = SimConfig {
        worker_threads: 1,
        ..SimConfig::default()
    };
    let (ttft, itl) = (sim_cfg.ttft, sim_cfg.itl);
    let server = sim::start(sim_cfg)?;
    eprintln!(
        "throtl demo: simulated server at {} (TTFT {ttft:?}, ITL {itl:?}, 64 tokens); running {requests} requests at concurrency {concurrency}",
        server.url()
    );
    let cfg = BenchConfig {
        url: server.url(),
        model: "throtl-sim".into(),
        api: ApiKind::OpenaiChat,
        concurrency,
        stop: StopCondition::Requests(requests),
        input_tokens: 128,
        output_tokens: 64,
        warmup: 8,
        timeout: Duration::from_secs(30),
        ignore_eos: true,
        seed: 0,
        json_out: Some(json),
        records_out: None,
        progress: if std::io::stderr().is_terminal() {
            ProgressMode::Tui
        } else {
            ProgressMode::Lines
        },
        grace: Duration::from_secs(2),
        api_key_env: None,
        api_options: Default::default(),
        workload: Default::default(),
        results: Default::default(),
        client: Default::default(),
    };
    let report = crate::run_bench_with_interrupt(&cfg).await?;
    drop(server);
    Ok((report, cfg))
}
