//! `throtl tune` flags, their conversion into a [`TuneConfig`], `--init`,
//! `--demo` and `--dry-run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use super::{parse_duration, parse_input_tokens, parse_output_tokens, ApiArg, ResultArgs};
use crate::api::ApiKind;
use crate::config::{ApiOptions, BenchConfig, ClientOptions, ProgressMode};
use crate::engine::workload::TokenLengths;
use crate::engine::{Controls, StopCondition};
use crate::tune::space::{Space, MAX_GRID};
use crate::tune::template::{quote, Template};
use crate::tune::{CapacitySearch, Objective, TuneConfig};

/// `--objective` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObjectiveArg {
    /// Highest open-loop request rate meeting every --slo (doubling, then bisection to 5 %).
    Capacity,
    /// Output tokens/s at --concurrency.
    Throughput,
    /// USD per 1M output tokens meeting the SLOs at --rate (needs --gpu-cost-per-hour).
    Cost,
}

impl From<ObjectiveArg> for Objective {
    fn from(o: ObjectiveArg) -> Self {
        match o {
            ObjectiveArg::Capacity => Objective::Capacity,
            ObjectiveArg::Throughput => Objective::Throughput,
            ObjectiveArg::Cost => Objective::Cost,
        }
    }
}

/// `throtl tune` flags.
#[derive(Debug, Clone, Args)]
pub struct TuneArgs {
    /// Engine command: {port} (always), {knob} (its value), {knob?--text} (text when the boolean knob is true). Run by `sh -c` in its own process group.
    #[arg(long, value_name = "TEMPLATE", required_unless_present_any = ["demo", "init"], help_heading = "Tune")]
    pub launch: Option<String>,
    /// The search space: knobs, defaults, constraints (YAML; `--init` writes an example).
    #[arg(long, value_name = "FILE.yaml", required_unless_present_any = ["demo", "init"], help_heading = "Tune")]
    pub space: Option<PathBuf>,
    /// What to optimise [default: capacity; throughput with --demo].
    #[arg(long, value_enum, help_heading = "Tune")]
    pub objective: Option<ObjectiveArg>,
    /// Search trials at most, the defaults (trial 0) included [default: 20; the whole grid with --demo].
    #[arg(long, help_heading = "Tune")]
    pub trials: Option<usize>,
    /// Wall time at most for the whole tune, e.g. 2h (the trial in flight finishes).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", help_heading = "Tune")]
    pub budget: Option<Duration>,
    /// Confirm phase: rounds re-measuring the best candidates and the defaults (0: none).
    #[arg(long, default_value_t = 3, help_heading = "Tune")]
    pub confirm_rounds: u32,
    /// Confirm phase: best candidates re-measured besides the defaults.
    #[arg(long, default_value_t = 2, help_heading = "Tune")]
    pub finalists: usize,
    /// Seed of the search (same seed and results: same proposals).
    #[arg(long, default_value_t = 0, help_heading = "Tune")]
    pub seed: u64,
    /// Print every launch command the tune would run, and run nothing.
    #[arg(long, help_heading = "Tune")]
    pub dry_run: bool,
    /// Append each finished trial here (engine logs go to FILE.logs/).
    #[arg(long, value_name = "FILE", help_heading = "Tune")]
    pub journal: Option<PathBuf>,
    /// Continue the --journal of a stopped or killed tune without re-running its trials.
    #[arg(long, requires = "journal", help_heading = "Tune")]
    pub resume: bool,
    /// Write the tune report as JSON (schema in docs/tune.md).
    #[arg(long, value_name = "FILE", help_heading = "Tune")]
    pub json: Option<PathBuf>,
    /// Tune the built-in simulator: the template launches `throtl mock` processes.
    #[arg(long, conflicts_with_all = ["launch", "space"], help_heading = "Tune")]
    pub demo: bool,
    /// Write a commented example space (vLLM, SGLang and TGI flag names) and exit.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "tune.yaml", help_heading = "Tune")]
    pub init: Option<PathBuf>,
    /// With --init: overwrite an existing file.
    #[arg(long, requires = "init", help_heading = "Tune")]
    pub force: bool,

    /// Engine start-up (launch until healthy) at most; longer counts as infeasible.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION", help_heading = "Harness")]
    pub startup_timeout: Duration,
    /// One trial (start-up + measurement) at most; longer fails the trial and stops the engine.
    #[arg(long, default_value = "30m", value_parser = parse_duration, value_name = "DURATION", help_heading = "Harness")]
    pub trial_timeout: Duration,
    /// Between SIGTERM and SIGKILL when stopping an engine's process group.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION", help_heading = "Harness")]
    pub stop_grace: Duration,
    /// Readiness route polled until it answers 200 (repeatable) [default: /health and /v1/models].
    #[arg(long, value_name = "PATH", help_heading = "Harness")]
    pub health_path: Vec<String>,

    /// Model to request [default: the first model the engine lists].
    #[arg(long, short = 'm', help_heading = "Measurement")]
    pub model: Option<String>,
    /// Wire protocol; `auto` probes each engine.
    #[arg(long, value_enum, default_value = "auto", help_heading = "Measurement")]
    pub api: ApiArg,
    /// Extra header sent with every request (repeatable).
    #[arg(
        long = "header",
        short = 'H',
        value_name = "NAME: VALUE",
        help_heading = "Measurement"
    )]
    pub headers: Vec<String>,
    /// Closed-loop users of --objective throughput.
    #[arg(long, short = 'c', default_value_t = 32, help_heading = "Measurement")]
    pub concurrency: u32,
    /// Length of each measurement (a capacity probe, a throughput or cost run), after warmup.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION", help_heading = "Measurement")]
    pub probe_duration: Duration,
    /// Warmup requests of each measurement.
    #[arg(long, default_value_t = 4, help_heading = "Measurement")]
    pub warmup: u64,
    /// Capacity: first rate probed (req/s).
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "R",
        help_heading = "Measurement"
    )]
    pub start_rate: f64,
    /// Prompt length in tokens: 512, 512:128 (normal), uniform:128-1024.
    #[arg(long, default_value = "256", value_parser = parse_input_tokens, help_heading = "Measurement")]
    pub input_tokens: TokenLengths,
    /// max_tokens of each request: 128, 128:32 (normal), uniform:64-256.
    #[arg(long, default_value = "128", value_parser = parse_output_tokens, help_heading = "Measurement")]
    pub output_tokens: TokenLengths,
    /// Send ignore_eos so vLLM-style servers generate exactly --output-tokens.
    #[arg(long, help_heading = "Measurement")]
    pub ignore_eos: bool,
    /// Per-request timeout.
    #[arg(long, default_value = "60s", value_parser = parse_duration, help_heading = "Measurement")]
    pub timeout: Duration,

    /// Load shapes, data and SLOs, as in bench.
    #[command(flatten)]
    pub shape: crate::cli_workload::WorkloadArgs,
    /// History, reports and cost.
    #[command(flatten)]
    pub results: ResultArgs,
}

/// The demo's space: the "defaults" are a cautious deployment (max-num-seqs
/// 16); one memory setting does not fit, to show an infeasible trial.
pub const DEMO_SPACE: &str = r#"# throtl tune --demo: the simulator (llama3-8b on an RTX 4090 profile).
# default: is the deployment's current value (vLLM's own max-num-seqs default is 256).
knobs:
  max_num_seqs: {values: [16, 64, 256], default: 16}
  max_num_batched_tokens: {values: [512, 2048], default: 2048}
  enable_prefix_caching: {type: bool}
  gpu_memory_utilization: {values: [0.7, 0.9], default: 0.9}
constraints:
  # 0.7 leaves no room for the KV cache (the engine exits); try it once per prefix setting.
  - "gpu_memory_utilization == 0.9 || (max_num_seqs == 256 && max_num_batched_tokens == 2048)"
"#;

/// The demo's template, launching this very binary.
pub fn demo_template(exe: &Path) -> String {
    format!(
        "{} mock --port {{port}} --profile llama3-8b-rtx4090 --startup-delay 300ms --max-num-seqs {{max_num_seqs}} --max-num-batched-tokens {{max_num_batched_tokens}} --gpu-memory-utilization {{gpu_memory_utilization}} {{enable_prefix_caching?--enable-prefix-caching}}",
        quote(&exe.to_string_lossy())
    )
}

/// `--init`'s example space.
pub const EXAMPLE_SPACE: &str = include_str!("tune_example.yaml");

impl TuneArgs {
    fn space_and_template(&self) -> Result<(Space, String, Template)> {
        let (text, launch) = if self.demo {
            let exe = std::env::current_exe().context("cannot find this executable for --demo")?;
            (DEMO_SPACE.to_owned(), demo_template(&exe))
        } else {
            let path = self
                .space
                .as_ref()
                .context("--space FILE is required (or --demo)")?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --space '{}'", path.display()))?;
            (
                text,
                self.launch
                    .clone()
                    .context("--launch TEMPLATE is required (or --demo)")?,
            )
        };
        let shown = self
            .space
            .as_ref()
            .map_or("the demo space".into(), |p| format!("'{}'", p.display()));
        let space = Space::parse(&text).map_err(|e| anyhow::anyhow!("--space {shown}: {e}"))?;
        let template = Template::parse(&launch, &space)?;
        Ok((space, text, template))
    }

    fn objective(&self) -> Objective {
        match (self.objective, self.demo) {
            (Some(o), _) => o.into(),
            (None, true) => Objective::Throughput,
            (None, false) => Objective::Capacity,
        }
    }

    fn check_flags(&self, objective: Objective) -> Result<()> {
        let w = &self.shape;
        if w.preset.is_some() || w.config.is_some() {
            bail!("tune reads no --preset or --config; give the measurement flags directly");
        }
        if w.users.is_some() || w.think_time.is_some() {
            bail!("tune measures throughput with --concurrency and capacity/cost with an open loop; --users and --think-time are not supported");
        }
        let r = &self.results;
        if r.markdown.is_some() || r.csv.is_some() || r.price_file.is_some() {
            bail!("tune writes --json and --html reports; --markdown, --csv and --price-file are bench options");
        }
        match objective {
            Objective::Capacity if w.slo.is_empty() => bail!("--objective capacity finds the highest rate meeting the SLOs: give at least one --slo, e.g. --slo ttft=500ms"),
            Objective::Capacity if w.rate.is_some() => bail!("--objective capacity searches the rate itself: drop --rate (--start-rate sets the first probe)"),
            Objective::Cost if r.gpu_cost_per_hour.is_none() => bail!("--objective cost needs --gpu-cost-per-hour USD (multiplied by the space's 'gpus:' expression, else 1)"),
            Objective::Cost if w.rate.is_none() => bail!("--objective cost prices the offered load: give it with --rate R"),
            Objective::Throughput if w.rate.is_some() => bail!("--objective throughput runs a closed loop at --concurrency: drop --rate"),
            _ => {}
        }
        if (1..3).contains(&self.confirm_rounds) {
            bail!("--confirm-rounds {} can never show a significant difference (each candidate needs 4 samples, the search's and 3 rounds', for p < 0.05): use 3 or more, or 0 to skip the confirm phase", self.confirm_rounds);
        }
        if !(self.start_rate.is_finite() && self.start_rate > 0.0) {
            bail!("--start-rate must be a positive number of requests per second");
        }
        Ok(())
    }

    fn bench_config(&self, group: Option<String>) -> Result<BenchConfig> {
        let headers = self
            .headers
            .iter()
            .map(|h| crate::config::parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        let mut results = self.results.to_options()?;
        results.html_out = None;
        results.group = group;
        let cfg = BenchConfig {
            url: "http://127.0.0.1".into(),
            model: String::new(),
            api: self.api.kind().unwrap_or(ApiKind::OpenaiChat),
            concurrency: self.concurrency,
            stop: StopCondition::Duration(self.probe_duration),
            input_tokens: self.input_tokens.mean(),
            output_tokens: self.output_tokens.mean().max(1),
            warmup: self.warmup,
            timeout: self.timeout,
            ignore_eos: self.ignore_eos,
            seed: self.seed,
            json_out: None,
            records_out: None,
            progress: ProgressMode::Quiet,
            grace: Duration::from_secs(3),
            api_key_env: None,
            api_options: ApiOptions {
                headers,
                api_version: None,
                scrape_every: Some(Duration::from_secs(1)),
            },
            workload: self
                .shape
                .to_options(&self.input_tokens, &self.output_tokens, self.seed)?,
            results,
            client: ClientOptions::default(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn log_dir(&self) -> Result<PathBuf> {
        let dir = match &self.journal {
            Some(j) => PathBuf::from(format!("{}.logs", j.display())),
            None => std::env::temp_dir().join(format!("throtl-tune-{}", crate::scrape::unix_ms())),
        };
        std::fs::create_dir_all(&dir).with_context(|| {
            format!("cannot create the engine log directory '{}'", dir.display())
        })?;
        Ok(dir)
    }

    /// The validated tune (creates the log directory).
    pub fn to_config(&self) -> Result<TuneConfig> {
        let (space, space_text, template) = self.space_and_template()?;
        let objective = self.objective();
        self.check_flags(objective)?;
        let grid = if space.size() <= MAX_GRID {
            space.grid().len() + 1
        } else {
            20
        };
        let trials = self.trials.unwrap_or(if self.demo { grid } else { 20 });
        if trials == 0 {
            bail!("--trials must be at least 1 (trial 0 measures the defaults)");
        }
        let group = (!self.results.no_store).then(|| format!("tune-{}", crate::scrape::unix_ms()));
        let mut bench = self.bench_config(group)?;
        if self.demo && self.shape.prefix_tokens == 0 && self.shape.dataset.is_none() {
            // Shared prefixes, so that prefix caching has something to reuse.
            bench.workload.prefix_tokens = 192;
            bench.workload.prefix_groups = 4;
        }
        Ok(TuneConfig {
            space,
            template,
            space_text,
            objective,
            trials,
            budget: self.budget,
            trial_timeout: self.trial_timeout,
            startup_timeout: self.startup_timeout,
            stop_grace: self.stop_grace,
            health_paths: if self.health_path.is_empty() {
                vec!["/health".into(), "/v1/models".into()]
            } else {
                self.health_path.clone()
            },
            journal: self.journal.clone(),
            resume: self.resume,
            log_dir: if self.dry_run {
                std::env::temp_dir()
            } else {
                self.log_dir()?
            },
            json_out: self.json.clone(),
            html_out: self.results.html.clone(),
            confirm_rounds: self.confirm_rounds,
            finalists: self.finalists.max(1),
            seed: self.seed,
            bench,
            model: self.model.clone(),
            api: self.api.kind(),
            capacity: CapacitySearch {
                start_rate: self.start_rate,
                ..CapacitySearch::default()
            },
            gpu_cost_per_hour: self.results.gpu_cost_per_hour,
        })
    }
}

/// Runs `throtl tune`.
pub fn run_tune(args: &TuneArgs) -> Result<ExitCode> {
    if let Some(path) = &args.init {
        return write_example(path, args.force);
    }
    let mut args = args.clone();
    if args.demo {
        demo_settings(&mut args);
    }
    let args = &args;
    let cfg = args.to_config()?;
    if args.dry_run {
        super::print_out(&dry_run(&cfg));
        return Ok(ExitCode::SUCCESS);
    }
    let rt = super::runtime(None)?;
    rt.block_on(async {
        let controls = Controls::default();
        let watcher = tokio::spawn(stop_on_ctrl_c(controls.clone()));
        let mut eval = crate::tune::objective::LiveEvaluator::new(&cfg, controls.clone());
        eprintln!("engine logs: {}", cfg.log_dir.display());
        let report = crate::tune::run(&cfg, &mut eval, &controls, |t| {
            eprintln!("{}", progress_line(&cfg, t));
        })
        .await;
        watcher.abort();
        let report = report?;
        super::print_out(&crate::tune::report::render(&report));
        Ok(if controls.soft.is_cancelled() {
            ExitCode::from(130)
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// The demo's measurements are short (3 s, 48-token answers, word prompts)
/// so that it ends within three minutes; flags given explicitly win.
fn demo_settings(a: &mut TuneArgs) {
    if a.probe_duration == Duration::from_secs(10) {
        a.probe_duration = Duration::from_secs(3);
    }
    if parse_output_tokens("128").is_ok_and(|d| d == a.output_tokens) {
        if let Ok(t) = parse_output_tokens("48") {
            a.output_tokens = t;
        }
    }
    if a.shape.tokenizer == "cl100k_base" {
        a.shape.tokenizer = "words".into();
    }
    if a.shape.slo.is_empty() {
        if let Ok(s) = crate::slo::Slo::parse("ttft=1s") {
            a.shape.slo.push(s);
        }
    }
}

fn progress_line(cfg: &TuneConfig, t: &crate::tune::report::TrialRecord) -> String {
    use crate::tune::report::{fmt_value, Outcome};
    let what = match &t.outcome {
        Outcome::Measured(m) => format!("{} {}", fmt_value(m.value), cfg.objective.unit()),
        Outcome::Infeasible { reason } => format!("infeasible: {reason}"),
        Outcome::Failed { reason } => format!("failed: {reason}"),
    };
    format!(
        "{} ({:.1} s): {what}  [{}]",
        t.label,
        t.wall_s,
        crate::tune::space::describe(&t.knobs)
    )
}

/// `--dry-run`: every launch command, with `{port}` shown as 8000.
fn dry_run(cfg: &TuneConfig) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let searcher = crate::tune::search::for_space(&cfg.space, cfg.trials, cfg.seed);
    let _ = writeln!(
        s,
        "# objective {}, search {}, at most {} trials (port picked per trial; shown as 8000)",
        cfg.objective.name(),
        searcher.name(),
        cfg.trials
    );
    let d = cfg.space.defaults();
    let _ = writeln!(s, "trial-0 (defaults): {}", cfg.template.render(&d, 8000));
    if searcher.name() == "grid" {
        let rest = cfg.space.grid().into_iter().filter(|c| *c != d);
        for (i, c) in rest.enumerate() {
            let _ = writeln!(s, "trial-{}: {}", i + 1, cfg.template.render(&c, 8000));
        }
    } else {
        let _ = writeln!(s, "# trials 1..{}: random starts, then TPE proposals chosen from the measurements (constraints checked before launch)", cfg.trials.saturating_sub(1));
    }
    let _ = writeln!(
        s,
        "# then up to {} confirm rounds of the best {} and the defaults",
        cfg.confirm_rounds, cfg.finalists
    );
    s
}

fn write_example(path: &Path, force: bool) -> Result<ExitCode> {
    if path.exists() && !force {
        bail!("'{}' exists; pass --force to overwrite it", path.display());
    }
    std::fs::write(path, EXAMPLE_SPACE)
        .with_context(|| format!("cannot write '{}'", path.display()))?;
    eprintln!(
        "wrote {}; edit it, then run the vLLM template at its top",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// First Ctrl-C: stop after the current trial (its engine is stopped);
/// a second one cancels in-flight requests at once.
async fn stop_on_ctrl_c(controls: Controls) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    controls.soft.cancel();
    eprintln!(
        "\ninterrupted: stopping the current trial's engine (Ctrl-C again to abort requests now)"
    );
    if tokio::signal::ctrl_c().await.is_ok() {
        controls.hard.cancel();
    }
}
