//! Command-line interface: clap types and their conversion into core configs.
//! Nothing outside this module sees clap.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::ApiKind;
use crate::config::{normalize_base_url, BenchConfig, ProgressMode};
use crate::engine::StopCondition;
use crate::report::{RunReport, RunStatus};
use crate::sim::SimConfig;

mod monitor;
mod results;
pub use monitor::{HistoryArgs, HistoryFormat, MonitorArgs};
pub use results::{CompareArgs, ExportFormat, ReportArgs, ResultArgs, RunsAction, RunsArgs};

/// Measure, compare and watch LLM inference servers.
#[derive(Debug, Parser)]
#[command(
    name = "throtl",
    version,
    about,
    help_expected = true,
    propagate_version = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Benchmark a server: stream requests and measure TTFT, ITL, TPOT, throughput.
    Bench(Box<BenchArgs>),
    /// Run the built-in simulated OpenAI-compatible server.
    Mock(MockArgs),
    /// Run a short benchmark against the built-in simulator and show the result.
    Demo(DemoArgs),
    /// Watch servers' /metrics live: dashboard, history, alert rules.
    Monitor(MonitorArgs),
    /// Print or export what `monitor` recorded.
    History(HistoryArgs),
    /// List, show, export, delete and prune stored bench runs.
    Runs(RunsArgs),
    /// Render stored runs (or JSON files) as HTML, Markdown or CSV.
    Report(ReportArgs),
    /// Compare runs with confidence intervals and significance tests; gate regressions.
    Compare(CompareArgs),
}

/// Wire protocols selectable with `--api`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ApiArg {
    /// OpenAI chat completions (`/v1/chat/completions`).
    OpenaiChat,
    /// OpenAI legacy completions (`/v1/completions`).
    OpenaiCompletions,
}

impl From<ApiArg> for ApiKind {
    fn from(a: ApiArg) -> Self {
        match a {
            ApiArg::OpenaiChat => ApiKind::OpenaiChat,
            ApiArg::OpenaiCompletions => ApiKind::OpenaiCompletions,
        }
    }
}

/// `throtl bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server base URL (a trailing /v1 is accepted).
    #[arg(
        long,
        env = "THROTL_URL",
        required_unless_present = "targets",
        help_heading = "Target"
    )]
    pub url: Option<String>,
    /// Several targets, benched one after another with the same workload and compared: NAME=URL, repeated.
    #[arg(
        long = "target",
        value_name = "NAME=URL",
        conflicts_with = "url",
        help_heading = "Target"
    )]
    pub targets: Vec<String>,
    /// Model name to request [default: the first model listed by /v1/models].
    #[arg(long, short = 'm', env = "THROTL_MODEL", help_heading = "Target")]
    pub model: Option<String>,
    /// Wire protocol.
    #[arg(
        long,
        value_enum,
        default_value = "openai-chat",
        help_heading = "Target"
    )]
    pub api: ApiArg,
    /// Environment variable holding the API key, sent as a Bearer token [default: OPENAI_API_KEY if set].
    #[arg(long, value_name = "NAME", help_heading = "Target")]
    pub api_key_env: Option<String>,

    /// Closed-loop workers: each sends its next request when its previous one ends.
    #[arg(long, short = 'c', default_value_t = 1, help_heading = "Load")]
    pub concurrency: u32,
    /// Measured requests to send (after warmup) [default: 100 unless --duration is given].
    #[arg(long, short = 'n', conflicts_with = "duration", help_heading = "Load")]
    pub requests: Option<u64>,
    /// Measure for this long after warmup, e.g. 30s, 2m.
    #[arg(long, short = 'd', value_parser = parse_duration, help_heading = "Load")]
    pub duration: Option<Duration>,
    /// Requests sent first and excluded from statistics.
    #[arg(long, default_value_t = 8, help_heading = "Load")]
    pub warmup: u64,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 256, help_heading = "Load")]
    pub input_tokens: u32,
    /// max_tokens of each request.
    #[arg(long, default_value_t = 128, help_heading = "Load")]
    pub output_tokens: u32,
    /// Send ignore_eos so vLLM-style servers generate exactly --output-tokens.
    #[arg(long, help_heading = "Load")]
    pub ignore_eos: bool,
    /// Per-request timeout, from send to end of stream.
    #[arg(long, default_value = "60s", value_parser = parse_duration, help_heading = "Load")]
    pub timeout: Duration,
    /// Seed of the synthetic prompts.
    #[arg(long, default_value_t = 0, help_heading = "Load")]
    pub seed: u64,

    /// Write the JSON summary here.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub json: Option<PathBuf>,
    /// Write one JSON line per request here.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub records: Option<PathBuf>,
    /// No live display; print plain progress lines instead.
    #[arg(long, help_heading = "Output")]
    pub no_tui: bool,
    /// Print nothing but the final result.
    #[arg(long, short = 'q', help_heading = "Output")]
    pub quiet: bool,

    /// History, reports and cost.
    #[command(flatten)]
    pub results: ResultArgs,

    /// Runtime worker threads [default: number of CPUs].
    #[arg(long, help_heading = "Client")]
    pub threads: Option<usize>,
    /// After Ctrl-C, how long in-flight requests may finish.
    #[arg(long, default_value = "3s", value_parser = parse_duration, help_heading = "Client")]
    pub grace: Duration,
}

/// `throtl mock` flags.
#[derive(Debug, Args)]
pub struct MockArgs {
    /// Port to listen on; 0 picks a free one and prints it.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Time to first token.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub ttft: Duration,
    /// Inter-token latency.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    pub itl: Duration,
    /// Tokens generated when a request sets no max_tokens.
    #[arg(long, default_value_t = 64)]
    pub output_tokens: u32,
    /// Model name to serve.
    #[arg(long, default_value = "throtl-sim")]
    pub model: String,
    /// Server runtime threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// `throtl demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the JSON summary.
    #[arg(long, default_value = "throtl-demo.json")]
    pub json: PathBuf,
    /// Closed-loop concurrency of the demo run.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u32,
    /// Measured requests of the demo run.
    #[arg(long, default_value_t = 300)]
    pub requests: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration ({e}); write e.g. 500ms, 30s, 2m"))
}

fn progress_mode(no_tui: bool, quiet: bool) -> ProgressMode {
    if quiet {
        ProgressMode::Quiet
    } else if no_tui || !std::io::stderr().is_terminal() {
        ProgressMode::Lines
    } else {
        ProgressMode::Tui
    }
}

impl BenchArgs {
    /// Converts flags into a validated config (model resolved separately).
    pub fn to_config(&self, model: String) -> Result<BenchConfig> {
        let url = self
            .url
            .as_deref()
            .context("--url is required (or --target NAME=URL)")?;
        self.to_config_for(url, model)
    }

    /// Like [`BenchArgs::to_config`], for the target at `url`.
    pub fn to_config_for(&self, url: &str, model: String) -> Result<BenchConfig> {
        let stop = match (self.requests, self.duration) {
            (_, Some(d)) => StopCondition::Duration(d),
            (Some(n), None) => StopCondition::Requests(n),
            (None, None) => StopCondition::Requests(100),
        };
        let cfg = BenchConfig {
            url: normalize_base_url(url)?,
            model,
            api: self.api.into(),
            concurrency: self.concurrency,
            stop,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            warmup: self.warmup,
            timeout: self.timeout,
            ignore_eos: self.ignore_eos,
            seed: self.seed,
            json_out: self.json.clone(),
            records_out: self.records.clone(),
            progress: progress_mode(self.no_tui, self.quiet),
            grace: self.grace,
            api_key_env: self.api_key_env.clone(),
            results: self.results.to_options()?,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

impl From<&MockArgs> for SimConfig {
    fn from(a: &MockArgs) -> Self {
        SimConfig {
            host: a.host,
            port: a.port,
            ttft: a.ttft,
            itl: a.itl,
            default_output_tokens: a.output_tokens,
            model: a.model.clone(),
            worker_threads: a.threads,
            ..SimConfig::default()
        }
    }
}

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Bench(args) => run_bench(&args),
        Command::Mock(args) => run_mock(&args),
        Command::Demo(args) => run_demo(&args),
        Command::Monitor(args) => monitor::run_monitor(&args),
        Command::History(args) => monitor::run_history(&args),
        Command::Runs(args) => results::run_runs(&args),
        Command::Report(args) => results::run_report(&args),
        Command::Compare(args) => results::run_compare(&args),
    }
}

pub(crate) fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n.max(1));
    }
    b.enable_all()
        .thread_name("throtl-client")
        .build()
        .context("cannot start the async runtime")
}

fn run_bench(args: &BenchArgs) -> Result<ExitCode> {
    if !args.targets.is_empty() {
        return results::run_multi(args);
    }
    let rt = runtime(args.threads)?;
    rt.block_on(async {
        let base = normalize_base_url(args.url.as_deref().unwrap_or_default())?;
        let model = match &args.model {
            Some(m) => m.clone(),
            None => crate::discover::first_model(&base).await?,
        };
        let cfg = args.to_config(model)?;
        let report = crate::run_bench_with_interrupt(&cfg).await?;
        finish_report(&report, &cfg)
    })
}

pub(crate) fn finish_report(report: &RunReport, cfg: &BenchConfig) -> Result<ExitCode> {
    print_stdout(&crate::report::console::render(report));
    if let Some(c) = &report.cost {
        print_stdout(&format!(
            "Cost ({}): ${:.4} per 1M output tokens, ${:.6} per request\n",
            c.basis, c.usd_per_1m_output_tokens, c.usd_per_request
        ));
    }
    if cfg.progress != ProgressMode::Quiet {
        if let Some(db) = &cfg.results.db {
            eprintln!("run {} stored in {}", report.run_id, db.display());
        }
    }
    if let (Some(p), false) = (&cfg.json_out, cfg.progress == ProgressMode::Quiet) {
        eprintln!("JSON summary written to {}", p.display());
    }
    Ok(exit_code(report))
}

fn exit_code(report: &RunReport) -> ExitCode {
    match report.status {
        RunStatus::Interrupted => ExitCode::from(130),
        RunStatus::Completed => ExitCode::SUCCESS,
    }
}

/// Prints to stdout; a closed pipe (e.g. `| head`) is not an error.
fn print_stdout(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
}

fn run_mock(args: &MockArgs) -> Result<ExitCode> {
    let handle = crate::sim::start(SimConfig::from(args))?;
    eprintln!(
        "throtl mock listening on {} (ttft {:?}, itl {:?}); Ctrl-C to stop",
        handle.url(),
        args.ttft,
        args.itl
    );
    print_stdout(&format!("{}\n", handle.url()));
    let rt = runtime(Some(1))?;
    rt.block_on(async { tokio::signal::ctrl_c().await })
        .context("cannot wait for Ctrl-C")?;
    drop(handle);
    Ok(ExitCode::SUCCESS)
}

fn run_demo(args: &DemoArgs) -> Result<ExitCode> {
    let rt = runtime(None)?;
    rt.block_on(async {
        let (report, cfg) =
            crate::demo::run(args.concurrency, args.requests, args.json.clone()).await?;
        finish_report(&report, &cfg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn requests_and_duration_conflict() {
        let r = Cli::try_parse_from([
            "throtl",
            "bench",
            "--url",
            "http://x",
            "--requests",
            "5",
            "--duration",
            "1s",
        ]);
        assert!(r.is_err());
    }

    #[test]
    fn zero_concurrency_is_rejected_with_the_flag_name() {
        let cli = Cli::try_parse_from(["throtl", "bench", "--url", "http://x", "-c", "0"]).unwrap();
        let Command::Bench(b) = cli.command else {
            panic!("bench")
        };
        let err = b.to_config("m".into()).unwrap_err().to_string();
        assert!(err.contains("--concurrency"), "{err}");
    }
}
