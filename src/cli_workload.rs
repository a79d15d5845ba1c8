//! Command-line flags of load shapes, data, SLOs and `throtl sweep`/`init`
//! (issue 4), and their conversion into core configs. Like `cli`, nothing
//! outside the CLI layer sees these clap types.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use crate::cli::{parse_duration, BenchArgs};
use crate::config::{BenchConfig, ConfigError, WorkloadOptions};
use crate::engine::arrival::{ArrivalConfig, ArrivalProcess};
use crate::engine::dataset::DatasetSpec;
use crate::engine::tokenizer::TokenizerSpec;
use crate::engine::workload::TokenLengths;
use crate::engine::{LoadShape, ThinkTime};
use crate::slo::Slo;
use crate::sweep::{SweepAxis, SweepConfig};
use crate::trace::{ReplayOptions, TracePlan, TraceSpec};

/// Arrival processes of `--arrival`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArrivalArg {
    /// Evenly spaced.
    Constant,
    /// Exponential gaps.
    Poisson,
    /// Gamma gaps with CV --burstiness.
    Gamma,
}

/// Built-in presets of `--preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// 50 requests at concurrency 4: a smoke test.
    Quick,
    /// 500 requests at concurrency 16, 512±128-token prompts.
    Standard,
    /// 5 minutes at concurrency 128, mixed prompt and answer lengths.
    Stress,
}

/// Load-shape, data and SLO flags shared by `bench` and `sweep`.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// Open loop: requests per second, sent on schedule whatever the server's speed.
    #[arg(long, conflicts_with_all = ["concurrency", "users"], help_heading = "Load shape")]
    pub rate: Option<f64>,
    /// Open loop: arrival process.
    #[arg(
        long,
        value_enum,
        default_value = "poisson",
        help_heading = "Load shape"
    )]
    pub arrival: ArrivalArg,
    /// Gamma arrivals: coefficient of variation of the gaps (1 = Poisson, >1 bursty).
    #[arg(long, value_name = "CV", help_heading = "Load shape")]
    pub burstiness: Option<f64>,
    /// Open loop: at most this many requests in flight; later arrivals wait (counted, never dropped).
    #[arg(long, help_heading = "Load shape")]
    pub max_concurrency: Option<u32>,
    /// Ramp users or rate up linearly over this long; requests due meanwhile are warmup.
    #[arg(long, value_parser = parse_duration, help_heading = "Load shape")]
    pub ramp_up: Option<Duration>,
    /// Closed-loop users (same as --concurrency; use with --think-time).
    #[arg(long, conflicts_with = "concurrency", help_heading = "Load shape")]
    pub users: Option<u32>,
    /// Pause of each user between requests: 2s, or 2s:500ms for 2s ± 500ms uniform.
    #[arg(long, value_parser = parse_think_time, help_heading = "Load shape")]
    pub think_time: Option<ThinkTime>,

    /// Tokenizer building exact-length prompts: cl100k_base, o200k_base, a tokenizer.json path, or 'words'.
    #[arg(long, default_value = "cl100k_base", help_heading = "Data")]
    pub tokenizer: String,
    /// Prompts from a file: jsonl:PATH or sharegpt:PATH.
    #[arg(long, value_parser = DatasetSpec::parse, help_heading = "Data")]
    pub dataset: Option<DatasetSpec>,
    /// Tokens of a prefix shared by all prompts of a group (measures prefix caching).
    #[arg(long, default_value_t = 0, help_heading = "Data")]
    pub prefix_tokens: u32,
    /// Number of distinct shared prefixes.
    #[arg(long, default_value_t = 1, help_heading = "Data")]
    pub prefix_groups: u32,
    /// Chat turns per conversation: each turn resends the history (earlier prompts and the answers streamed back) plus a new prompt. Closed loop, chat protocols.
    #[arg(long, default_value_t = 1, help_heading = "Data")]
    pub turns: u32,

    /// Service-level objective METRIC=DURATION (ttft, tpot, itl, e2e); repeatable.
    #[arg(long, value_parser = Slo::parse, help_heading = "SLO")]
    pub slo: Vec<Slo>,
    /// Percentile at which the SLOs must hold.
    #[arg(long, default_value_t = 95.0, help_heading = "SLO")]
    pub slo_percentile: f64,

    /// Replay a trace at its own timestamps: mooncake:FILE.jsonl, azure:FILE.csv, burstgpt:FILE.csv or throtl:FILE (from `throtl record`).
    #[arg(long, value_name = "FORMAT:PATH", value_parser = TraceSpec::parse, conflicts_with_all = ["rate", "concurrency", "users", "think_time", "arrival", "burstiness", "dataset", "input_tokens", "output_tokens", "prefix_tokens", "prefix_groups", "turns", "ramp_up"], help_heading = "Trace")]
    pub trace: Option<TraceSpec>,
    /// Replay the trace this many times faster (2 halves every gap).
    #[arg(
        long,
        value_name = "X",
        requires = "trace",
        conflicts_with = "trace_rate",
        help_heading = "Trace"
    )]
    pub trace_speed: Option<f64>,
    /// Replay only arrivals in START..END of trace time (0 = first arrival), e.g. 10m..20m, 30s.., ..5m.
    #[arg(long, value_name = "START..END", value_parser = crate::trace::parse_window, requires = "trace", help_heading = "Trace")]
    pub trace_window: Option<(Duration, Option<Duration>)>,
    /// Replay at most the first N requests (after --trace-window).
    #[arg(long, value_name = "N", requires = "trace", help_heading = "Trace")]
    pub trace_max_requests: Option<usize>,
    /// Rescale the trace's time so its mean rate is R requests/s, keeping the burst structure.
    #[arg(long, value_name = "R", requires = "trace", help_heading = "Trace")]
    pub trace_rate: Option<f64>,
    /// Replay only requests for this model (formats with a model column: burstgpt, throtl).
    #[arg(long, value_name = "MODEL", requires = "trace", help_heading = "Trace")]
    pub trace_model: Option<String>,

    /// Start from a preset (flags and --config override it).
    #[arg(long, value_enum, help_heading = "Config")]
    pub preset: Option<PresetArg>,
    /// Read flags from a YAML file (keys are flag names; flags override it).
    #[arg(long, value_name = "FILE.yaml", help_heading = "Config")]
    pub config: Option<PathBuf>,
}

fn parse_think_time(s: &str) -> Result<ThinkTime, String> {
    let (mean, jitter) = match s.split_once(':') {
        Some((m, j)) => (parse_duration(m)?, parse_duration(j)?),
        None => (parse_duration(s)?, Duration::ZERO),
    };
    if jitter > mean {
        return Err(format!(
            "--think-time '{s}': the jitter is larger than the mean"
        ));
    }
    Ok(ThinkTime { mean, jitter })
}

impl WorkloadArgs {
    fn arrival_process(&self) -> Result<ArrivalProcess, ConfigError> {
        match (self.arrival, self.burstiness) {
            (ArrivalArg::Gamma, cv) => Ok(ArrivalProcess::Gamma {
                cv: cv.unwrap_or(1.0),
            }),
            (_, Some(_)) => Err(ConfigError("--burstiness needs --arrival gamma".into())),
            (ArrivalArg::Constant, None) => Ok(ArrivalProcess::Constant),
            (ArrivalArg::Poisson, None) => Ok(ArrivalProcess::Poisson),
        }
    }

    /// The trace to replay, read and cut now, so a bad file or an empty
    /// window fails before any output is opened.
    pub fn trace_plan(&self) -> Result<Option<TracePlan>, ConfigError> {
        let Some(spec) = &self.trace else {
            return Ok(None);
        };
        let options = ReplayOptions {
            speed: self.trace_speed,
            window: self.trace_window,
            max_requests: self.trace_max_requests,
            rate: self.trace_rate,
            model: self.trace_model.clone(),
        };
        TracePlan::load(spec, &options)
            .map(Some)
            .map_err(|e| ConfigError(e.0))
    }

    fn shape(&self, seed: u64, trace: Option<&TracePlan>) -> Result<LoadShape, ConfigError> {
        if let Some(t) = trace {
            let arrivals = ArrivalConfig {
                rate: t.offered_rate(),
                process: ArrivalProcess::Trace,
                seed,
                ramp_up: Duration::ZERO,
            };
            return Ok(LoadShape::Open {
                arrivals,
                max_concurrency: self.max_concurrency,
            });
        }
        let ramp_up = self.ramp_up.unwrap_or_default();
        match self.rate {
            Some(rate) => {
                if self.think_time.is_some() {
                    return Err(ConfigError(
                        "--think-time applies to --users, not to an open loop (--rate)".into(),
                    ));
                }
                let arrivals = ArrivalConfig {
                    rate,
                    process: self.arrival_process()?,
                    seed,
                    ramp_up,
                };
                Ok(LoadShape::Open {
                    arrivals,
                    max_concurrency: self.max_concurrency,
                })
            }
            None => {
                if self.max_concurrency.is_some() {
                    return Err(ConfigError("--max-concurrency caps an open loop; add --rate, or use --concurrency for a closed loop".into()));
                }
                Ok(LoadShape::Closed {
                    think: self.think_time,
                })
            }
        }
    }

    /// The validated workload options.
    pub fn to_options(
        &self,
        input: &TokenLengths,
        output: &TokenLengths,
        seed: u64,
    ) -> Result<WorkloadOptions, ConfigError> {
        let tokenizer = match self.tokenizer.as_str() {
            "words" | "none" => None,
            s => Some(TokenizerSpec::parse(s)),
        };
        let fixed = |t: &TokenLengths| matches!(t, TokenLengths::Fixed { .. });
        let trace = self.trace_plan()?;
        Ok(WorkloadOptions {
            shape: self.shape(seed, trace.as_ref())?,
            trace,
            ramp_up: self.ramp_up.unwrap_or_default(),
            input: (!fixed(input)).then_some(*input),
            output: (!fixed(output)).then_some(*output),
            tokenizer,
            dataset: self.dataset.clone(),
            prefix_tokens: self.prefix_tokens,
            prefix_groups: self.prefix_groups,
            turns: self.turns,
            slos: self.slo.clone(),
            slo_percentile: self.slo_percentile,
        })
    }

    /// Settings that live in the base config (users → concurrency).
    pub fn apply_to(&self, mut cfg: BenchConfig) -> BenchConfig {
        if let Some(u) = self.users {
            cfg.concurrency = u;
        }
        cfg
    }
}

/// `throtl sweep` flags: the levels plus every `bench` flag.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Open-loop rates to sweep, e.g. 1,2,4,8, or 'auto' (probe the maximum, then sweep fractions of it).
    #[arg(long, value_delimiter = ',', help_heading = "Sweep")]
    pub rates: Vec<String>,
    /// Every bench flag; --concurrency takes a list here, e.g. 1,2,4,8,16.
    #[command(flatten)]
    pub bench: BenchArgs,
}

impl SweepArgs {
    fn axis(&self) -> Result<SweepAxis> {
        let conc = &self.bench.concurrency;
        match (self.rates.as_slice(), conc.len()) {
            ([], n) if n >= 2 => Ok(SweepAxis::Concurrency(conc.clone())),
            ([], _) => bail!("give the levels to sweep: --concurrency 1,2,4,8 or --rates 1,2,4 or --rates auto"),
            ([a], _) if a == "auto" => Ok(SweepAxis::RatesAuto),
            (rs, n) if n <= 1 => rs
                .iter()
                .map(|r| r.trim().parse::<f64>().ok().filter(|x| *x > 0.0).with_context(|| format!("--rates: '{r}' is not a positive number of requests per second")))
                .collect::<Result<Vec<_>>>()
                .map(SweepAxis::Rates),
            _ => bail!("--rates sweeps rates at one --concurrency (the --rates auto probe); give a single --concurrency value"),
        }
    }
}

/// `throtl init` flags.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the example config.
    #[arg(default_value = "throtl.yaml")]
    pub path: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

/// Runs `throtl sweep`.
pub fn run_sweep(args: &SweepArgs) -> Result<ExitCode> {
    if args.bench.shape.trace.is_some() {
        bail!("--trace replays one trace at its own timestamps; sweep the replay speed by running bench with --trace-speed or --trace-rate instead");
    }
    let axis = args.axis()?;
    let rate_sweep = !args.rates.is_empty() && args.bench.shape.max_concurrency.is_none();
    let threads = if rate_sweep && args.bench.threads.is_none() {
        None // uncapped open loop: in flight unknown, one thread per CPU
    } else {
        crate::cli::client_threads(&args.bench, 1)
    };
    let rt = crate::cli::runtime_for(threads)?;
    rt.block_on(async {
        let (api, model) = crate::cli::resolve_target(&args.bench).await?;
        // The first --concurrency (or --users) is the base; the axis sets each step's.
        let cfg = args.bench.to_config_unchecked(model, api)?;
        cfg.validate()?;
        let sweep = SweepConfig {
            json_out: cfg.json_out.clone(),
            base: cfg,
            axis,
        };
        let controls = crate::engine::Controls::default();
        let watcher = tokio::spawn(stop_on_ctrl_c(controls.clone(), sweep.base.grace));
        let report = crate::sweep::run(&sweep, controls, |s| {
            eprintln!(
                "step {}: {:.2} req/s, TTFT p95 {:.1} ms",
                s.load, s.run.throughput.requests_per_s, s.run.latency_ms.ttft.p95
            );
        })
        .await;
        watcher.abort();
        let report = report?;
        crate::cli::print_out(&crate::sweep::render(&report));
        Ok(if report.interrupted {
            ExitCode::from(130)
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// First Ctrl-C: stop issuing (the current step ends, its JSON is kept);
/// after `grace` or a second Ctrl-C, cancel in-flight requests.
async fn stop_on_ctrl_c(controls: crate::engine::Controls, grace: Duration) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    controls.soft.cancel();
    eprintln!("\ninterrupted: finishing the current step (Ctrl-C again to stop now)");
    tokio::select! {
        () = tokio::time::sleep(grace) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    controls.hard.cancel();
}

/// Runs `throtl init`.
pub fn run_init(args: &InitArgs) -> Result<ExitCode> {
    if args.path.exists() && !args.force {
        bail!(
            "'{}' exists; pass --force to overwrite it",
            args.path.display()
        );
    }
    std::fs::write(&args.path, crate::config_file::EXAMPLE)
        .with_context(|| format!("cannot write '{}'", args.path.display()))?;
    eprintln!(
        "wrote {}; run it with: throtl bench --config {}",
        args.path.display(),
        args.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
