//! Command-line interface: clap types and their conversion into core configs.
//! Nothing outside this module sees clap.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::ApiKind;
use crate::config::{
    normalize_base_url, parse_header, ApiOptions, BenchConfig, ClientOptions, ProgressMode,
    ShardConfig, EXIT_TOO_MANY_ERRORS,
};
use crate::engine::retry::{RetryOn, RetryPolicy};
use crate::engine::workload::TokenLengths;
use crate::engine::ShardSlice;
use crate::engine::StopCondition;
use crate::report::{RunReport, RunStatus};
use crate::sim::engine::profile::Profile;
use crate::sim::engine::{EngineConfig, KvCacheDtype};
use crate::sim::faults::FaultConfig;
use crate::sim::{EngineFlavor, SimConfig};

mod k8s;
mod merge;
mod monitor;
mod race;
mod results;
pub use k8s::{CollectArgs, DiscoverArgs, JobArgs, K8sAction, K8sArgs};
pub use merge::MergeArgs;
mod traffic;
pub use monitor::{HistoryArgs, HistoryFormat, MonitorArgs};
pub use race::{RaceArgs, RankArg};
pub use results::{CompareArgs, ExportFormat, ReportArgs, ResultArgs, RunsAction, RunsArgs};
pub use traffic::{RecordArgs, TraceAction, TraceArgs, TraceStatsArgs};
mod tune;
pub use tune::{ObjectiveArg, TuneArgs};

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

impl Cli {
    /// Keeps the (config-expanded) command line in the bench flags, so a
    /// sharded bench can record how its run was configured.
    pub fn with_argv(mut self, argv: &[std::ffi::OsString]) -> Self {
        if let Command::Bench(b) = &mut self.command {
            b.argv = argv
                .iter()
                .skip_while(|a| a.to_str() != Some("bench"))
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
        }
        self
    }

    /// Parses `argv`, returning clap's error text (first line) on failure.
    pub fn try_parse_from_checked(
        argv: Vec<std::ffi::OsString>,
    ) -> std::result::Result<(), String> {
        Cli::try_parse_from(argv).map(|_| ()).map_err(|e| {
            let text = e.to_string();
            text.lines()
                .next()
                .unwrap_or("invalid value")
                .trim_start_matches("error: ")
                .to_owned()
        })
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Benchmark a server: stream requests and measure TTFT, ITL, TPOT, throughput.
    Bench(Box<BenchArgs>),
    /// Run the built-in simulated server (vLLM by default; --engine picks another engine or API).
    Mock(MockArgs),
    /// Run a short benchmark against the built-in simulator and show the result.
    Demo(DemoArgs),
    /// Watch servers' /metrics live: dashboard, history, alert rules.
    Monitor(MonitorArgs),
    /// Print or export what `monitor` recorded.
    History(HistoryArgs),
    /// Identify a server: engine, version, models, health, /metrics, and the --api bench would use.
    Probe(ProbeArgs),
    /// Run a bench at each of several concurrencies or rates; find the knee and the SLO limit.
    Sweep(Box<crate::cli_workload::SweepArgs>),
    /// Write a commented example config file for --config.
    Init(crate::cli_workload::InitArgs),
    /// List, show, export, delete and prune stored bench runs.
    Runs(RunsArgs),
    /// Render stored runs (or JSON files) as HTML, Markdown or CSV.
    Report(ReportArgs),
    /// Compare runs with confidence intervals and significance tests; gate regressions.
    Compare(CompareArgs),
    /// Stream one prompt to several targets at once, side by side; rank them (--demo: simulators).
    Race(Box<RaceArgs>),
    /// Merge the shard files of one sharded run (bench --shard K/N) into one report.
    Merge(MergeArgs),
    /// Kubernetes: print an Indexed Job for a sharded bench, collect and merge its results.
    K8s(K8sArgs),
    /// Find inference engines in the current kube context (Services, Ingresses, Routes) and probe them.
    Discover(DiscoverArgs),
    /// Proxy a server and write the shape of the traffic (no text) as a trace `bench --trace throtl:FILE` replays.
    Record(RecordArgs),
    /// Inspect request traces (Mooncake, Azure, BurstGPT, throtl record).
    Trace(TraceArgs),
    /// Find the engine configuration that serves your traffic best: launch, measure, confirm, explain (--demo: simulator).
    Tune(Box<TuneArgs>),
}

/// Wire protocols selectable with `--api`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiArg {
    /// Detect the server (as `throtl probe` does) and use its native protocol.
    Auto,
    /// OpenAI chat completions (`/v1/chat/completions`): vLLM, SGLang, llama.cpp, TRT-LLM, OpenAI.
    OpenaiChat,
    /// OpenAI legacy completions (`/v1/completions`).
    OpenaiCompletions,
    /// Hugging Face TGI native `/generate_stream`.
    Tgi,
    /// Ollama `/api/chat` (NDJSON).
    OllamaChat,
    /// Ollama `/api/generate` (NDJSON).
    OllamaGenerate,
    /// Anthropic Messages API (`/v1/messages`).
    Anthropic,
    /// Google Gemini `streamGenerateContent?alt=sse`.
    Gemini,
    /// Cohere v2 chat (`/v2/chat`).
    Cohere,
    /// Azure OpenAI (`/openai/deployments/{--model}/chat/completions?api-version=…`).
    AzureOpenai,
}

impl ApiArg {
    /// The protocol, or `None` for `auto`.
    pub fn kind(self) -> Option<ApiKind> {
        Some(match self {
            ApiArg::Auto => return None,
            ApiArg::OpenaiChat => ApiKind::OpenaiChat,
            ApiArg::OpenaiCompletions => ApiKind::OpenaiCompletions,
            ApiArg::Tgi => ApiKind::Tgi,
            ApiArg::OllamaChat => ApiKind::OllamaChat,
            ApiArg::OllamaGenerate => ApiKind::OllamaGenerate,
            ApiArg::Anthropic => ApiKind::Anthropic,
            ApiArg::Gemini => ApiKind::Gemini,
            ApiArg::Cohere => ApiKind::Cohere,
            ApiArg::AzureOpenai => ApiKind::AzureOpenai,
        })
    }
}

/// Engines the simulator imitates (`throtl mock --engine`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EngineArg {
    /// vLLM: OpenAI routes, /version, `vllm:*` metrics.
    Vllm,
    /// Hugging Face TGI: /generate_stream, /info, `tgi_*` metrics.
    Tgi,
    /// Ollama: /api/chat, /api/generate, /api/tags, /api/ps; no /metrics.
    Ollama,
    /// llama.cpp server: OpenAI routes with timings, /props, `llamacpp:*` metrics.
    Llamacpp,
    /// SGLang: OpenAI routes, /get_model_info, `sglang:*` metrics.
    Sglang,
    /// OpenAI's hosted API (and Azure deployment routes).
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini API.
    Gemini,
    /// Cohere v2 chat.
    Cohere,
}

impl From<EngineArg> for EngineFlavor {
    fn from(e: EngineArg) -> Self {
        match e {
            EngineArg::Vllm => EngineFlavor::Vllm,
            EngineArg::Tgi => EngineFlavor::Tgi,
            EngineArg::Ollama => EngineFlavor::Ollama,
            EngineArg::Llamacpp => EngineFlavor::Llamacpp,
            EngineArg::Sglang => EngineFlavor::Sglang,
            EngineArg::Openai => EngineFlavor::Openai,
            EngineArg::Anthropic => EngineFlavor::Anthropic,
            EngineArg::Gemini => EngineFlavor::Gemini,
            EngineArg::Cohere => EngineFlavor::Cohere,
        }
    }
}

/// `throtl probe` flags.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Server base URL.
    pub url: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Extra header sent with every probe request, e.g. -H 'Authorization: Bearer …' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
}

/// `throtl bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server base URL (a trailing /v1 is accepted).
    #[arg(
        long,
        env = "THROTL_URL",
        required_unless_present_any = ["targets", "discover"],
        help_heading = "Target"
    )]
    pub url: Option<String>,
    /// Bench the healthy engines `throtl discover` finds in the kube context (optionally a label selector, e.g. app=vllm); several become --targets.
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "SELECTOR", conflicts_with_all = ["url", "targets"], help_heading = "Target")]
    pub discover: Option<String>,
    /// Several targets, benched one after another with the same workload and compared: NAME=URL, repeated.
    #[arg(
        long = "target",
        value_name = "NAME=URL",
        conflicts_with = "url",
        help_heading = "Target"
    )]
    pub targets: Vec<String>,
    /// With several --target: alternate them in ROUNDS rounds (default 5) instead of one after
    /// another, so drift on this machine hits every target alike (needs --requests).
    #[arg(
        long,
        value_name = "ROUNDS",
        num_args = 0..=1,
        default_missing_value = "5",
        requires = "targets",
        help_heading = "Target"
    )]
    pub interleave: Option<u32>,
    /// Model name to request [default: the first model listed by /v1/models].
    #[arg(long, short = 'm', env = "THROTL_MODEL", help_heading = "Target")]
    pub model: Option<String>,
    /// Wire protocol; `auto` detects the server and says what it picked.
    #[arg(long, value_enum, default_value = "auto", help_heading = "Target")]
    pub api: ApiArg,
    /// Environment variable holding the API key [default: the protocol's conventional one if set:
    /// OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, COHERE_API_KEY, AZURE_OPENAI_API_KEY, HF_TOKEN].
    #[arg(long, value_name = "NAME", help_heading = "Target")]
    pub api_key_env: Option<String>,
    /// Extra header sent with every request, e.g. -H 'X-Org: a' (repeatable; values are never printed).
    #[arg(
        long = "header",
        short = 'H',
        value_name = "NAME: VALUE",
        help_heading = "Target"
    )]
    pub headers: Vec<String>,
    /// Azure OpenAI api-version query value.
    #[arg(long, value_name = "VERSION", help_heading = "Target")]
    pub api_version: Option<String>,
    /// How often the target's /metrics is scraped during the run, for the server's own view in the results (0 turns it off).
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION", help_heading = "Target")]
    pub scrape_interval: Duration,

    /// Closed-loop workers: each sends its next request when its previous one ends (sweep: a list, e.g. 1,2,4).
    #[arg(
        long,
        short = 'c',
        default_value = "1",
        value_delimiter = ',',
        help_heading = "Load"
    )]
    pub concurrency: Vec<u32>,
    /// Measured requests to send (after warmup) [default: 100 unless --duration is given].
    #[arg(long, short = 'n', conflicts_with = "duration", help_heading = "Load")]
    pub requests: Option<u64>,
    /// Measure for this long after warmup, e.g. 30s, 2m.
    #[arg(long, short = 'd', value_parser = parse_duration, help_heading = "Load")]
    pub duration: Option<Duration>,
    /// Requests sent first and excluded from statistics.
    #[arg(long, default_value_t = 8, help_heading = "Load")]
    pub warmup: u64,
    /// Prompt length in tokens: 512, 512:128 (normal mean:stddev), uniform:128-1024.
    #[arg(long, default_value = "256", value_parser = parse_input_tokens, help_heading = "Load")]
    pub input_tokens: TokenLengths,
    /// max_tokens of each request: 128, 128:32 (normal), uniform:64-256.
    #[arg(long, default_value = "128", value_parser = parse_output_tokens, help_heading = "Load")]
    pub output_tokens: TokenLengths,
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

    /// Client runtime threads [default: one per 1,000 users or --max-concurrency slots, at most one per CPU; one per CPU for an uncapped open loop].
    #[arg(long, help_heading = "Client")]
    pub threads: Option<usize>,
    /// After Ctrl-C, how long in-flight requests may finish.
    #[arg(long, default_value = "3s", value_parser = parse_duration, help_heading = "Client")]
    pub grace: Duration,
    /// Send a failed request again up to N times (off by default: latencies are those of first attempts).
    #[arg(long, default_value_t = 0, value_name = "N", help_heading = "Client")]
    pub retries: u32,
    /// Failures that are retried: a list of 429, 5xx, connect, truncated, timeout.
    #[arg(long, default_value = "429,5xx,connect", value_parser = parse_retry_on, value_name = "LIST", help_heading = "Client")]
    pub retry_on: RetryOn,
    /// Longest wait before a retry, the server's Retry-After included (backoff: 0.5 s doubling, full jitter).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION", help_heading = "Client")]
    pub retry_max_wait: Duration,
    /// Do not open connections before the load, and warm up only --warmup requests: measures TCP setup on purpose.
    #[arg(long, help_heading = "Client")]
    pub cold_connections: bool,
    /// Send one slice of a run sharded over N load generators, K of N (0-based), and write a shard file for `throtl merge` (docs/distributed.md).
    #[arg(long, value_parser = parse_shard, value_name = "K/N", help_heading = "Sharding")]
    pub shard: Option<ShardSlice>,
    /// Common start of every shard, RFC 3339 (e.g. 2026-12-02T10:00:00Z): each waits for it, then measures on its own clock.
    #[arg(long, value_parser = parse_rfc3339, value_name = "T0", requires = "shard", help_heading = "Sharding")]
    pub start_at: Option<time::OffsetDateTime>,
    /// Where this shard's results go; - prints them on stdout between markers (pod logs) [default: shard-K.json].
    #[arg(
        long,
        value_name = "FILE",
        requires = "shard",
        help_heading = "Sharding"
    )]
    pub shard_out: Option<PathBuf>,
    /// The bench flags as given (after config-file expansion), kept in shard files.
    #[arg(skip)]
    pub argv: Vec<String>,
    /// Exit with status 4 (after writing every output) when more than this fraction of measured requests failed.
    #[arg(
        long,
        default_value_t = 0.5,
        value_name = "FRACTION",
        help_heading = "Client"
    )]
    pub max_error_rate: f64,

    /// Load shapes, data and SLOs.
    #[command(flatten)]
    pub shape: crate::cli_workload::WorkloadArgs,
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
    /// Fixed-delay mode: time to first token [default: 100ms when --itl is given]. Replaces the engine model.
    #[arg(long, value_parser = parse_duration, help_heading = "Fixed-delay mode")]
    pub ttft: Option<Duration>,
    /// Fixed-delay mode: inter-token latency [default: 20ms when --ttft is given]. Replaces the engine model.
    #[arg(long, value_parser = parse_duration, help_heading = "Fixed-delay mode")]
    pub itl: Option<Duration>,
    /// Tokens generated when a request sets no max_tokens.
    #[arg(long, default_value_t = 64)]
    pub output_tokens: u32,
    /// Model name to serve.
    #[arg(long, default_value = "throtl-sim")]
    pub model: String,
    /// Server runtime threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Engine or hosted API to imitate: routes, stream format, info endpoints, /metrics names.
    #[arg(long, value_enum, default_value = "vllm")]
    pub engine: EngineArg,
    /// Model-load time: every route (health, models included) answers 503 until it has passed.
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    pub startup_delay: Duration,
    #[command(flatten)]
    pub engine_model: EngineArgs,
    #[command(flatten)]
    pub faults: FaultArgs,
}

/// The batching engine model (used unless --ttft/--itl select fixed delays).
#[derive(Debug, Args)]
#[command(next_help_heading = "Engine model")]
pub struct EngineArgs {
    /// Built-in hardware + model profile: llama3-8b-rtx4090, llama3-8b-h100, llama3-70b-4xh100.
    #[arg(long, default_value = "llama3-8b-rtx4090", conflicts_with_all = ["ttft", "itl"])]
    pub profile: String,
    /// Your own profile as a JSON file (fields in docs/simulator.md); overrides --profile.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ttft", "itl"])]
    pub profile_file: Option<PathBuf>,
    /// Requests in the running batch at most.
    #[arg(long, default_value_t = 256, conflicts_with_all = ["ttft", "itl"])]
    pub max_num_seqs: u32,
    /// Tokens computed per engine step at most [default: the profile's].
    #[arg(long, conflicts_with_all = ["ttft", "itl"])]
    pub max_num_batched_tokens: Option<u32>,
    /// KV-cache blocks [default: the profile's, from GPU memory left after weights].
    #[arg(long, conflicts_with_all = ["ttft", "itl"])]
    pub kv_blocks: Option<u32>,
    /// Tokens per KV-cache block.
    #[arg(long, default_value_t = 16, conflicts_with_all = ["ttft", "itl"])]
    pub block_size: u32,
    /// Reuse KV blocks of identical prompt prefixes.
    #[arg(long, conflicts_with_all = ["ttft", "itl"])]
    pub enable_prefix_caching: bool,
    /// Split long prompts over several steps (true|false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL", conflicts_with_all = ["ttft", "itl"])]
    pub chunked_prefill: bool,
    /// Add DCGM-style GPU metrics (utilisation, framebuffer) to /metrics.
    #[arg(long, conflicts_with_all = ["ttft", "itl"])]
    pub gpu_metrics: bool,
    /// Share of GPU memory for weights, activations and KV cache (sizes the KV cache unless --kv-blocks; too little exits as vLLM does) [default: 0.9, the profile's KV blocks].
    #[arg(long, value_name = "F", conflicts_with_all = ["ttft", "itl", "kv_blocks"])]
    pub gpu_memory_utilization: Option<f64>,
    /// KV-cache element type: auto (the profile's) or fp8 (half the bytes: about twice the blocks).
    #[arg(long, value_enum, default_value = "auto", conflicts_with_all = ["ttft", "itl"])]
    pub kv_cache_dtype: KvCacheDtypeArg,
    /// Refuse to start (exit 1, vLLM's message) unless the KV cache holds one sequence of this many tokens.
    #[arg(long, value_name = "TOKENS", conflicts_with_all = ["ttft", "itl"])]
    pub max_model_len: Option<u32>,
}

/// `--kv-cache-dtype` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KvCacheDtypeArg {
    /// The profile's element size.
    Auto,
    /// One byte per element.
    Fp8,
}

/// Seeded fault injection.
#[derive(Debug, Args)]
#[command(next_help_heading = "Faults")]
pub struct FaultArgs {
    /// Probability that a request fails with HTTP 500.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Requests per second accepted; more get 429 with Retry-After.
    #[arg(long, value_name = "R")]
    pub rate_limit: Option<f64>,
    /// Probability that a request's connection drops mid-stream.
    #[arg(long, default_value_t = 0.0)]
    pub disconnect_rate: f64,
    /// Probability that a request's stream carries a corrupt chunk.
    #[arg(long, default_value_t = 0.0)]
    pub malformed_rate: f64,
    /// Pause mid-stream, as DURATION@PROBABILITY, e.g. 2s@0.01.
    #[arg(long, value_name = "D@P")]
    pub stall: Option<crate::sim::faults::StallSpec>,
    /// The first request waits this long for "model load" (as do requests arriving meanwhile).
    #[arg(long, value_parser = parse_duration)]
    pub cold_start: Option<Duration>,
    /// Waiting requests at most; more get HTTP 503.
    #[arg(long, value_name = "N")]
    pub max_queue: Option<usize>,
    /// Seed of the fault generator (same seed, same request order: same faults).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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

fn parse_input_tokens(s: &str) -> Result<TokenLengths, String> {
    TokenLengths::parse("--input-tokens", s)
}

fn parse_output_tokens(s: &str) -> Result<TokenLengths, String> {
    TokenLengths::parse("--output-tokens", s)
}

fn parse_shard(s: &str) -> Result<ShardSlice, String> {
    ShardSlice::parse(s)
}

fn parse_rfc3339(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|e| {
        format!("'{s}' is not an RFC 3339 time ({e}); write e.g. 2026-12-02T10:00:00Z")
    })
}

impl BenchArgs {
    fn shard_config(&self) -> Option<ShardConfig> {
        let slice = self.shard?;
        Some(ShardConfig {
            slice,
            start_at: self.start_at,
            out: self
                .shard_out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("shard-{}.json", slice.index))),
            args: self.argv.clone(),
        })
    }
}

fn parse_retry_on(s: &str) -> Result<RetryOn, String> {
    s.parse()
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration ({e}); write e.g. 500ms, 30s, 2m"))
}

pub(crate) fn progress_mode(no_tui: bool, quiet: bool) -> ProgressMode {
    if quiet {
        ProgressMode::Quiet
    } else if no_tui || !std::io::stderr().is_terminal() {
        ProgressMode::Lines
    } else {
        ProgressMode::Tui
    }
}

impl BenchArgs {
    /// Converts flags into a validated config; model and protocol (for
    /// `--api auto`) are resolved separately.
    pub fn to_config(&self, model: String) -> Result<BenchConfig> {
        self.to_config_with(model, self.api.kind().unwrap_or(ApiKind::OpenaiChat))
    }

    /// Converts flags into a validated config with the resolved protocol.
    pub fn to_config_with(&self, model: String, api: ApiKind) -> Result<BenchConfig> {
        let url = self
            .url
            .as_deref()
            .context("--url is required (or --target NAME=URL)")?;
        self.to_config_for(url, model, api)
    }

    /// Like [`BenchArgs::to_config_with`], for the target at `url`.
    pub fn to_config_for(&self, url: &str, model: String, api: ApiKind) -> Result<BenchConfig> {
        if self.concurrency.len() != 1 {
            anyhow::bail!("--concurrency takes one value in bench; to try several, run: throtl sweep --concurrency {}", self.concurrency.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
        }
        let cfg = self.to_config_unchecked_for(url, model, api)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Converts flags into a config without validating it (sweep sets the level first).
    pub fn to_config_unchecked(&self, model: String, api: ApiKind) -> Result<BenchConfig> {
        let url = self
            .url
            .as_deref()
            .context("--url is required (or --target NAME=URL)")?;
        self.to_config_unchecked_for(url, model, api)
    }

    fn to_config_unchecked_for(
        &self,
        url: &str,
        model: String,
        api: ApiKind,
    ) -> Result<BenchConfig> {
        // Checked here, not as clap conflicts: `tune` flattens the same
        // workload flags without bench's --requests/--duration/--interleave.
        if self.shape.trace.is_some() {
            for (given, flag) in [
                (self.requests.is_some(), "--requests"),
                (self.duration.is_some(), "--duration"),
                (self.interleave.is_some(), "--interleave"),
            ] {
                if given {
                    anyhow::bail!("--trace decides how many requests are sent and when: leave out {flag} (use --trace-max-requests or --trace-window)");
                }
            }
        }
        let stop = match (self.requests, self.duration) {
            (_, Some(d)) => StopCondition::Duration(d),
            (Some(n), None) => StopCondition::Requests(n),
            (None, None) => StopCondition::Requests(100),
        };
        let workload = self
            .shape
            .to_options(&self.input_tokens, &self.output_tokens, self.seed)?;
        let stop = match &workload.trace {
            Some(t) => trace_stop(t.requests.len(), self.warmup)?,
            None => stop,
        };
        let cfg = BenchConfig {
            url: normalize_base_url(url)?,
            model,
            api,
            concurrency: self.concurrency.first().copied().unwrap_or(1),
            stop,
            input_tokens: self.input_tokens.mean(),
            output_tokens: self.output_tokens.mean().max(1),
            warmup: self.warmup,
            timeout: self.timeout,
            ignore_eos: self.ignore_eos,
            seed: self.seed,
            json_out: self.json.clone(),
            records_out: self.records.clone(),
            progress: progress_mode(self.no_tui, self.quiet),
            grace: self.grace,
            api_key_env: self.api_key_env.clone(),
            api_options: ApiOptions {
                headers: parse_headers(&self.headers)?,
                api_version: self.api_version.clone(),
                scrape_every: Some(self.scrape_interval),
            },
            workload,
            results: self.results.to_options()?,
            client: ClientOptions {
                retry: RetryPolicy {
                    retries: self.retries,
                    on: self.retry_on,
                    max_wait: self.retry_max_wait,
                    ..RetryPolicy::default()
                },
                cold_connections: self.cold_connections,
                max_error_rate: self.max_error_rate,
                shard: self.shard_config(),
            },
        };
        Ok(self.shape.apply_to(cfg))
    }
}

/// A trace replays every request of its window: the first `warmup` are
/// warmup, the rest measured.
fn trace_stop(requests: usize, warmup: u64) -> Result<StopCondition> {
    let n = requests as u64;
    if warmup >= n {
        anyhow::bail!("--warmup {warmup} leaves no measured request of the {n} in the trace window; lower --warmup (e.g. --warmup 0)");
    }
    Ok(StopCondition::Requests(n - warmup))
}

impl MockArgs {
    /// Fixed-delay mode when --ttft or --itl is given; else the engine model.
    pub fn is_fixed(&self) -> bool {
        self.ttft.is_some() || self.itl.is_some()
    }

    fn engine_config(&self) -> Result<Option<EngineConfig>> {
        if self.is_fixed() {
            return Ok(None);
        }
        let e = &self.engine_model;
        let profile = match &e.profile_file {
            Some(path) => Profile::from_file(path)?,
            None => Profile::builtin(&e.profile)?,
        };
        Ok(Some(EngineConfig {
            profile,
            max_num_seqs: e.max_num_seqs,
            max_num_batched_tokens: e.max_num_batched_tokens,
            kv_blocks: e.kv_blocks,
            block_size: e.block_size,
            prefix_caching: e.enable_prefix_caching,
            chunked_prefill: e.chunked_prefill,
            gpu_memory_utilization: e.gpu_memory_utilization,
            kv_cache_dtype: match e.kv_cache_dtype {
                KvCacheDtypeArg::Auto => KvCacheDtype::Auto,
                KvCacheDtypeArg::Fp8 => KvCacheDtype::Fp8,
            },
            max_model_len: e.max_model_len,
        }))
    }

    fn fault_config(&self) -> FaultConfig {
        let f = &self.faults;
        FaultConfig {
            seed: f.seed,
            fail_rate: f.fail_rate,
            rate_limit: f.rate_limit,
            disconnect_rate: f.disconnect_rate,
            malformed_rate: f.malformed_rate,
            stall: f.stall,
            cold_start: f.cold_start,
            max_queue: f.max_queue,
        }
    }

    /// Converts flags into the simulator's configuration (loads --profile-file).
    pub fn to_config(&self) -> Result<SimConfig> {
        let defaults = SimConfig::default();
        Ok(SimConfig {
            host: self.host,
            port: self.port,
            ttft: self.ttft.unwrap_or(defaults.ttft),
            itl: self.itl.unwrap_or(defaults.itl),
            default_output_tokens: self.output_tokens,
            model: self.model.clone(),
            worker_threads: self.threads,
            engine_model: self.engine_config()?,
            faults: self.fault_config(),
            gpu_metrics: self.engine_model.gpu_metrics,
            engine: self.engine.into(),
            startup_delay: self.startup_delay,
        })
    }
}

/// The healthy engines `throtl discover` finds with label `selector`
/// (empty: every one), as (name, URL); kubectl is `$THROTL_KUBECTL` or
/// `kubectl`.
fn discovered(selector: &str) -> Result<Vec<(String, String)>> {
    let q = crate::discover::DiscoverQuery {
        kubectl: std::env::var("THROTL_KUBECTL").unwrap_or_else(|_| "kubectl".into()),
        selector: (!selector.is_empty()).then(|| selector.to_owned()),
        ..Default::default()
    };
    let mut found = q.endpoints()?;
    let rt = runtime(Some(2))?;
    rt.block_on(crate::discover::probe_all(
        &mut found,
        Duration::from_secs(10),
    ));
    rt.shutdown_background();
    let healthy: Vec<(String, String)> = found
        .into_iter()
        .filter(|e| e.healthy)
        .map(|e| (format!("{}-{}", e.namespace, e.name), e.url))
        .collect();
    if healthy.is_empty() {
        anyhow::bail!("--discover found no healthy engine (selector '{selector}'); run `throtl discover` to see what it finds");
    }
    for (name, url) in &healthy {
        eprintln!("discovered {name} at {url}");
    }
    Ok(healthy)
}

/// NAME=URL target flags.
fn as_targets(found: Vec<(String, String)>) -> Vec<String> {
    found.into_iter().map(|(n, u)| format!("{n}={u}")).collect()
}

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Bench(mut args) => {
            if let Some(sel) = args.discover.take() {
                let found = discovered(&sel)?;
                match found.as_slice() {
                    [(_, url)] => args.url = Some(url.clone()),
                    _ => args.targets = as_targets(found),
                }
            }
            run_bench(&args)
        }
        Command::Mock(args) => run_mock(&args),
        Command::Demo(args) => run_demo(&args),
        Command::Monitor(mut args) => {
            if let Some(sel) = args.discover.take() {
                args.urls = discovered(&sel)?.into_iter().map(|(_, u)| u).collect();
            }
            monitor::run_monitor(&args)
        }
        Command::History(args) => monitor::run_history(&args),
        Command::Runs(args) => results::run_runs(&args),
        Command::Report(args) => results::run_report(&args),
        Command::Compare(args) => results::run_compare(&args),
        Command::Probe(args) => run_probe(&args),
        Command::Sweep(args) => crate::cli_workload::run_sweep(&args),
        Command::Init(args) => crate::cli_workload::run_init(&args),
        Command::Race(mut args) => {
            if let Some(sel) = args.discover.take() {
                args.targets = as_targets(discovered(&sel)?);
            }
            race::run_race(&args)
        }
        Command::Merge(args) => merge::run_merge(&args),
        Command::K8s(args) => k8s::run_k8s(args),
        Command::Discover(args) => k8s::run_discover(&args),
        Command::Record(args) => traffic::run_record(&args),
        Command::Trace(args) => traffic::run_trace(&args),
        Command::Tune(args) => tune::run_tune(&args),
    }
}

fn parse_headers(raw: &[String]) -> Result<Vec<(String, String)>, crate::config::ConfigError> {
    raw.iter().map(|h| parse_header(h)).collect()
}

fn run_probe(args: &ProbeArgs) -> Result<ExitCode> {
    let base = normalize_base_url(&args.url)?;
    let headers = parse_headers(&args.headers)?;
    let rt = runtime(Some(2))?;
    let report = rt.block_on(crate::probe::probe(&base, &headers))?;
    if args.json {
        print_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?));
    } else {
        print_stdout(&report.render());
    }
    Ok(ExitCode::SUCCESS)
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

pub(crate) fn runtime_for(threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    runtime(threads)
}

/// Requests one client worker thread keeps in flight by default: one core
/// streams a thousand 20 ms-ITL streams at ~0.7 CPU-s per 1,000 requests
/// (docs/performance.md).
const STREAMS_PER_THREAD: u32 = 1000;

/// `--threads`, else one runtime thread per [`STREAMS_PER_THREAD`] requests
/// in flight (users, or the open loop's cap), at most one per CPU; an open
/// loop without a cap, whose in-flight count is unknown, gets one per CPU.
/// Measured at 256 streams on 2 cores, one thread costs 10 % less CPU than
/// two and reads a tighter TTFT p99 (thread hand-offs), so more threads
/// only pay when one core cannot keep up.
pub(crate) fn client_threads(args: &BenchArgs, targets: u32) -> Option<usize> {
    if args.threads.is_some() {
        return args.threads;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let open = args.shape.rate.is_some() || args.shape.trace.is_some();
    let open_uncapped = open && args.shape.max_concurrency.is_none();
    if open_uncapped {
        return Some(cpus);
    }
    let per_target = args
        .shape
        .max_concurrency
        .filter(|_| open)
        .or(args.shape.users)
        .unwrap_or_else(|| args.concurrency.iter().copied().max().unwrap_or(1));
    let in_flight = per_target.saturating_mul(targets.max(1));
    Some((in_flight.div_ceil(STREAMS_PER_THREAD) as usize).clamp(1, cpus))
}

fn run_bench(args: &BenchArgs) -> Result<ExitCode> {
    if !args.targets.is_empty() {
        return results::run_multi(args);
    }
    let rt = runtime(client_threads(args, 1))?;
    rt.block_on(async {
        let (api, model) = resolve_target(args).await?;
        let cfg = args.to_config_with(model, api)?;
        let report = crate::run_bench_with_interrupt(&cfg).await?;
        finish_report(&report, &cfg)
    })
}

/// The protocol (`--api auto` probes the server and says what it picked)
/// and the model (`--model`, else the first one the server lists).
pub(crate) async fn resolve_target(args: &BenchArgs) -> Result<(ApiKind, String)> {
    resolve_target_at(args, args.url.as_deref().unwrap_or_default()).await
}

/// [`resolve_target`] for the server at `url` (each `--target` of a multi-target bench).
pub(crate) async fn resolve_target_at(args: &BenchArgs, url: &str) -> Result<(ApiKind, String)> {
    let base = normalize_base_url(url)?;
    let headers = parse_headers(&args.headers)?;
    let (api, probed) = match args.api.kind() {
        Some(k) => (k, None),
        None => {
            let p = crate::probe::probe(&base, &headers).await?;
            if !args.quiet {
                eprintln!("{}", p.choice_line());
            }
            (p.api_kind(), Some(p))
        }
    };
    let model = match (&args.model, probed) {
        (Some(m), _) => m.clone(),
        (None, Some(p)) => p.first_model()?,
        (None, None) => crate::probe::probe(&base, &headers).await?.first_model()?,
    };
    Ok((api, model))
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
    Ok(exit_code(report, cfg))
}

/// The exit status of a finished run (docs/results.md): 130 interrupted,
/// [`EXIT_TOO_MANY_ERRORS`] when the error rate exceeded `--max-error-rate`,
/// else 0.
pub(crate) fn exit_code(report: &RunReport, cfg: &BenchConfig) -> ExitCode {
    match report.status {
        RunStatus::Interrupted => ExitCode::from(130),
        // A finished bench never reports these; fail rather than pass if one does.
        RunStatus::Running | RunStatus::Lost => ExitCode::FAILURE,
        _ if report.error_rate() > cfg.client.max_error_rate => {
            eprintln!(
                "error: {:.1} % of measured requests failed, more than --max-error-rate {} allows",
                report.error_rate() * 100.0,
                cfg.client.max_error_rate
            );
            ExitCode::from(EXIT_TOO_MANY_ERRORS)
        }
        RunStatus::Completed => ExitCode::SUCCESS,
    }
}

/// Prints to stdout; a closed pipe (e.g. `| head`) is not an error.
pub(crate) fn print_out(s: &str) {
    print_stdout(s);
}

/// Prints to stdout; a closed pipe (e.g. `| head`) is not an error.
fn print_stdout(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
}

fn run_mock(args: &MockArgs) -> Result<ExitCode> {
    let cfg = args.to_config()?;
    let what = match &cfg.engine_model {
        Some(e) => {
            let s = e.sched();
            format!(
                "profile {}, max-num-seqs {}, max-num-batched-tokens {}, {} KV blocks of {} tokens{}{}",
                e.profile.name,
                s.max_num_seqs,
                s.max_num_batched_tokens,
                s.kv_blocks,
                s.block_size,
                if s.prefix_caching { ", prefix caching" } else { "" },
                if s.chunked_prefill { "" } else { ", no chunked prefill" }
            )
        }
        None => format!("fixed delays: ttft {:?}, itl {:?}", cfg.ttft, cfg.itl),
    };
    let delay = cfg.startup_delay;
    let handle = crate::sim::start(cfg)?;
    eprintln!(
        "throtl mock ({:?}) listening on {} ({what}); Ctrl-C to stop",
        args.engine,
        handle.url()
    );
    print_stdout(&format!("{}\n", handle.url()));
    let rt = runtime(Some(1))?;
    rt.block_on(async {
        if !delay.is_zero() {
            eprintln!(
                "INFO: loading model weights ({delay:?} start-up); routes answer 503 until then"
            );
            tokio::time::sleep(delay).await;
            eprintln!("INFO: Application startup complete.");
        }
        tokio::signal::ctrl_c().await
    })
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

    fn mock(args: &[&str]) -> MockArgs {
        let mut v = vec!["throtl", "mock"];
        v.extend_from_slice(args);
        let Command::Mock(m) = Cli::try_parse_from(v).unwrap().command else {
            panic!("mock")
        };
        m
    }

    #[test]
    fn mock_defaults_to_the_engine_model_and_ttft_selects_fixed_delays() {
        let e = mock(&[]).to_config().unwrap().engine_model.unwrap();
        assert_eq!(e.profile.name, "llama3-8b-rtx4090");
        assert!(e.chunked_prefill && !e.prefix_caching);
        let f = mock(&["--ttft", "50ms"]).to_config().unwrap();
        assert!(f.engine_model.is_none());
        assert_eq!(
            (f.ttft, f.itl),
            (Duration::from_millis(50), Duration::from_millis(20))
        );
        assert!(
            Cli::try_parse_from(["throtl", "mock", "--itl", "5ms", "--kv-blocks", "10"]).is_err()
        );
        let k = mock(&[
            "--profile",
            "llama3-70b-4xh100",
            "--kv-blocks",
            "99",
            "--chunked-prefill",
            "false",
            "--enable-prefix-caching",
            "--stall",
            "1s@0.5",
            "--seed",
            "3",
        ])
        .to_config()
        .unwrap();
        let s = k.engine_model.unwrap().sched();
        assert_eq!(
            (s.kv_blocks, s.chunked_prefill, s.prefix_caching),
            (99, false, true)
        );
        assert_eq!(k.faults.stall.unwrap().probability, 0.5);
        let err = mock(&["--profile", "nope"])
            .to_config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown profile 'nope'"), "{err}");
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

    #[test]
    fn issue12_client_threads_follow_the_streams_in_flight() {
        let threads = |extra: &[&str]| {
            let mut argv = vec!["throtl", "bench", "--url", "http://x"];
            argv.extend_from_slice(extra);
            let Command::Bench(b) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("bench")
            };
            client_threads(&b, 1)
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        // 256 streams: one thread (cheaper and closer to the truth than two).
        assert_eq!(threads(&["-c", "256"]), Some(1));
        assert_eq!(threads(&["-c", "3000"]), Some(3.min(cpus)));
        assert_eq!(
            threads(&["--rate", "10", "--max-concurrency", "64"]),
            Some(1)
        );
        assert_eq!(threads(&["--rate", "10"]), Some(cpus), "in flight unknown");
        assert_eq!(threads(&["-c", "256", "--threads", "4"]), Some(4));
    }
}
