//! `throtl race`: flags and the glue around [`crate::race`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

use super::{parse_duration, parse_headers, print_stdout, ApiArg};
use crate::config::normalize_base_url;
use crate::race::board::{Column, RaceBoard};
use crate::race::{
    summary, RaceConfig, RaceEntry, RaceReport, RaceTarget, RankMetric, TargetOptions,
};

/// The prompt raced when none is given.
pub const DEFAULT_PROMPT: &str =
    "Explain, in one paragraph, how a large language model generates text one token at a time.";

/// `throtl race` flags.
#[derive(Debug, Args)]
pub struct RaceArgs {
    /// A target, as NAME=URL (repeat for each; at least two make a race).
    #[arg(
        long = "target",
        value_name = "NAME=URL",
        required_unless_present_any = ["demo", "discover"]
    )]
    pub targets: Vec<String>,
    /// Race the healthy engines `throtl discover` finds (optionally a label selector, e.g. tier=llm).
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "SELECTOR", conflicts_with_all = ["targets", "demo"])]
    pub discover: Option<String>,
    /// Race three built-in simulators with different TTFT and ITL (no server needed).
    #[arg(long, conflicts_with = "targets")]
    pub demo: bool,
    /// The prompt every target gets.
    #[arg(long, short = 'p', default_value = DEFAULT_PROMPT)]
    pub prompt: String,
    /// max_tokens of the request.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: u32,
    /// Send ignore_eos so vLLM-style servers generate exactly --max-tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Race this many times and report statistics (5 or more adds a significance test).
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
    /// Metric that orders the summary.
    #[arg(long, value_enum, default_value = "e2e")]
    pub rank_by: RankArg,
    /// Model name to request [default: the first model each target lists].
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Wire protocol; `auto` detects each target.
    #[arg(long, value_enum, default_value = "auto")]
    pub api: ApiArg,
    /// Environment variable holding the API key [default: the protocol's conventional one if set].
    #[arg(long, value_name = "NAME")]
    pub api_key_env: Option<String>,
    /// Extra header sent with every request (repeatable; values are never printed).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Azure OpenAI api-version query value.
    #[arg(long, value_name = "VERSION")]
    pub api_version: Option<String>,
    /// Per-request timeout, from send to end of stream.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Write the race result as JSON (schema throtl.race.v1) here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// No live columns; print a line as each target finishes.
    #[arg(long)]
    pub no_tui: bool,
}

/// `--rank-by` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RankArg {
    /// Time to first token (lowest first).
    Ttft,
    /// End-to-end latency (lowest first).
    E2e,
    /// Decode tokens/s (highest first).
    Tps,
}

impl From<RankArg> for RankMetric {
    fn from(r: RankArg) -> Self {
        match r {
            RankArg::Ttft => RankMetric::Ttft,
            RankArg::E2e => RankMetric::E2e,
            RankArg::Tps => RankMetric::TokensPerS,
        }
    }
}

impl RaceArgs {
    fn validate(&self) -> Result<()> {
        if self.runs == 0 {
            bail!("--runs must be at least 1");
        }
        if self.max_tokens == 0 {
            bail!("--max-tokens must be at least 1");
        }
        if self.prompt.trim().is_empty() {
            bail!("--prompt is empty; give the text every target should answer");
        }
        Ok(())
    }

    /// Sets up one target: protocol and model (probing unless both are
    /// given). A failure is kept as a [`RaceEntry::Failed`] naming the target.
    async fn entry(&self, name: &str, url: &str) -> RaceEntry {
        match self.target(name, url).await {
            Ok(t) => RaceEntry::Ready(t),
            Err(e) => RaceEntry::Failed {
                name: name.to_owned(),
                url: url.to_owned(),
                reason: format!("{e:#}"),
            },
        }
    }

    async fn target(&self, name: &str, url: &str) -> Result<RaceTarget> {
        let headers = parse_headers(&self.headers)?;
        let (api, model) = match (self.api.kind(), &self.model) {
            (Some(api), Some(m)) => (api, m.clone()),
            (kind, model) => {
                let p = crate::probe::probe(url, &headers).await?;
                let api = kind.unwrap_or_else(|| p.api_kind());
                let model = match model {
                    Some(m) => m.clone(),
                    None => p.first_model()?,
                };
                (api, model)
            }
        };
        let opts = TargetOptions {
            api_key_env: self.api_key_env.clone(),
            headers,
            api_version: self.api_version.clone(),
            timeout: self.timeout,
        };
        Ok(RaceTarget::new(name, url, &model, api, &opts)?)
    }
}

/// Runs `throtl race`.
pub fn run_race(args: &RaceArgs) -> Result<ExitCode> {
    args.validate()?;
    let json = args
        .json
        .as_ref()
        .map(|p| {
            std::fs::File::create(p).with_context(|| format!("cannot write '{}'", p.display()))
        })
        .transpose()?;
    let demo = if args.demo {
        crate::race::start_demo().context("cannot start the demo simulators")?
    } else {
        Vec::new()
    };
    let targets = if args.demo {
        demo.iter().map(|(n, h)| (n.clone(), h.url())).collect()
    } else {
        super::results::parse_targets(&args.targets)?
    };
    let rt = super::runtime(None)?;
    let report = rt.block_on(race_targets(args, &targets))?;
    drop(demo);
    print_stdout(&summary::render(&report));
    if let (Some(file), Some(path)) = (json, &args.json) {
        serde_json::to_writer_pretty(std::io::BufWriter::new(file), &report)
            .with_context(|| format!("cannot write '{}'", path.display()))?;
        eprintln!("race result written to {}", path.display());
    }
    Ok(exit_code(&report))
}

fn exit_code(r: &RaceReport) -> ExitCode {
    let any_ok = r
        .targets
        .iter()
        .any(|t| t.runs.iter().any(|o| o.error.is_none()));
    if any_ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("Error: every target failed; see the messages above");
        ExitCode::FAILURE
    }
}

async fn race_targets(args: &RaceArgs, targets: &[(String, String)]) -> Result<RaceReport> {
    let mut entries = Vec::new();
    for (name, url) in targets {
        let url = normalize_base_url(url)?;
        let e = args.entry(name, &url).await;
        if let RaceEntry::Failed { reason, .. } = &e {
            eprintln!("target '{name}' ({url}) cannot race: {reason}");
        }
        entries.push(e);
    }
    let cfg = RaceConfig {
        targets: entries,
        prompt: args.prompt.clone(),
        max_tokens: args.max_tokens,
        ignore_eos: args.ignore_eos,
        runs: args.runs,
        rank_by: args.rank_by.into(),
    };
    let cancel = CancellationToken::new();
    let ctrl_c = tokio::spawn({
        let c = cancel.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                c.cancel();
            }
        }
    });
    let live = !args.no_tui && std::io::stderr().is_terminal();
    let report = if live {
        race_live(&cfg, &cancel).await?
    } else {
        let runs = cfg.runs;
        crate::race::race(&cfg, None, &cancel, |name, o| {
            eprintln!("{}", summary::done_line(name, o, runs));
        })
        .await
    };
    ctrl_c.abort();
    Ok(report)
}

async fn race_live(cfg: &RaceConfig, cancel: &CancellationToken) -> Result<RaceReport> {
    let columns = cfg
        .targets
        .iter()
        .map(|e| {
            let err = match e {
                RaceEntry::Failed { reason, .. } => Some(reason.clone()),
                RaceEntry::Ready(_) => None,
            };
            Column::new(e.name(), e.protocol(), err)
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let title = crate::api::sample_text(&cfg.prompt, 60);
    let view =
        crate::tui::race::spawn(RaceBoard::new(columns, cfg.runs), rx, cancel.clone(), title)
            .context("cannot start the live view")?;
    let report = crate::race::race(cfg, Some(tx), cancel, |_, _| {}).await;
    let _ = tokio::task::spawn_blocking(move || view.join()).await;
    Ok(report)
}
