//! `throtl runs`, `report`, `compare` and the bench's result flags.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use super::{parse_duration, print_stdout};
use crate::config::ResultOptions;
use crate::results::compare::{gate, GateRule};
use crate::results::cost::{CostModel, PriceTable};
use crate::results::{load_many, render, text, Format, RunData};
use crate::scrape::unix_ms;
use crate::store::Store;

/// Bench flags for history, report files and cost.
#[derive(Debug, Clone, Args)]
pub struct ResultArgs {
    /// History database the run is stored in [default: $XDG_DATA_HOME/throtl/throtl.db or ~/.local/share/throtl/throtl.db].
    #[arg(long, env = "THROTL_DB", value_name = "PATH", help_heading = "Results")]
    pub db: Option<PathBuf>,
    /// Do not store the run in the history database.
    #[arg(long, conflicts_with = "db", help_heading = "Results")]
    pub no_store: bool,
    /// Write a self-contained HTML report (charts, summary, config) here.
    #[arg(long, value_name = "FILE", help_heading = "Results")]
    pub html: Option<PathBuf>,
    /// Write a Markdown summary (for a pull-request comment) here.
    #[arg(long, value_name = "FILE", help_heading = "Results")]
    pub markdown: Option<PathBuf>,
    /// Write a one-row CSV summary here.
    #[arg(long, value_name = "FILE", help_heading = "Results")]
    pub csv: Option<PathBuf>,
    /// Hourly price (USD) of the serving hardware: adds $ per 1M output tokens and per request.
    #[arg(long, value_name = "USD", help_heading = "Results")]
    pub gpu_cost_per_hour: Option<f64>,
    /// Per-token prices by model (YAML, see docs/results.md) [default: the built-in dated table].
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "gpu_cost_per_hour",
        help_heading = "Results"
    )]
    pub price_file: Option<PathBuf>,
}

/// Resolves `--db` or the default path.
pub fn db_path(db: Option<&PathBuf>) -> Result<PathBuf> {
    match db {
        Some(p) => Ok(p.clone()),
        None => crate::store::default_path()
            .context("no home directory to keep run history in: set --db PATH (or XDG_DATA_HOME), or pass --no-store"),
    }
}

impl ResultArgs {
    /// Converts into the core options; reads the price file.
    pub fn to_options(&self) -> Result<ResultOptions> {
        if let Some(c) = self.gpu_cost_per_hour {
            if !(c.is_finite() && c > 0.0) {
                bail!("--gpu-cost-per-hour must be a positive number of USD, e.g. 2.5");
            }
        }
        let prices = match &self.price_file {
            Some(p) => PriceTable::load(p)?,
            None => PriceTable::builtin(),
        };
        Ok(ResultOptions {
            db: if self.no_store {
                None
            } else {
                Some(db_path(self.db.as_ref())?)
            },
            html_out: self.html.clone(),
            markdown_out: self.markdown.clone(),
            csv_out: self.csv.clone(),
            cost: CostModel {
                gpu_cost_per_hour: self.gpu_cost_per_hour,
                prices: Some(prices),
            },
            group: None,
        })
    }
}

/// `throtl runs` flags.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// History database [default: as for bench].
    #[arg(long, env = "THROTL_DB", value_name = "PATH", global = true)]
    pub db: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub action: RunsAction,
}

/// `throtl runs` actions.
#[derive(Debug, Subcommand)]
pub enum RunsAction {
    /// List stored runs, newest first.
    List {
        /// Only runs whose target URL contains this.
        #[arg(long)]
        target: Option<String>,
        /// Only runs started within this long, e.g. 7d.
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
        /// Only the runs of this group (a multi-target bench `group-…` or a sweep `sweep-…`).
        #[arg(long)]
        group: Option<String>,
    },
    /// Print a stored run's summary (as at the end of the bench).
    Show {
        /// Run id.
        id: String,
        /// Print the JSON summary instead (identical to the bench's --json file).
        #[arg(long)]
        json: bool,
    },
    /// Delete stored runs.
    Rm {
        /// Run ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Export a run: json (summary + samples), csv or jsonl (one line per request).
    Export {
        /// Run id.
        id: String,
        /// Format.
        #[arg(long, value_enum, default_value = "json")]
        format: ExportFormat,
        /// Write here instead of stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Delete runs older than --keep.
    Prune {
        /// Keep runs younger than this, e.g. 30d.
        #[arg(long, value_parser = parse_duration)]
        keep: Duration,
    },
}

/// `runs export` formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// `throtl.run-export.v1`: the summary and every per-request sample.
    Json,
    /// One CSV row per request.
    Csv,
    /// One JSON line per request.
    Jsonl,
}

/// `throtl report` flags.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run ids, JSON files (--json summaries, `runs export` files, `sweep --json` files) or group
    /// ids (all their runs; a sweep group draws sweep curves); several are overlaid.
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<String>,
    /// History database [default: as for bench].
    #[arg(long, env = "THROTL_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Write the self-contained HTML report here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the Markdown summary here ('-' for stdout; the default when no file is given).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write the CSV summary here.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
}

/// `throtl compare` flags.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Baseline, then the runs to compare with it (run ids or JSON files); a group id (see
    /// `runs list`) stands for all its runs, oldest first.
    #[arg(required = true, num_args = 1.., value_name = "RUN")]
    pub runs: Vec<String>,
    /// History database [default: as for bench].
    #[arg(long, env = "THROTL_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Exit 3 when the second run regresses significantly, e.g. 'ttft.p99>+10%' or 'throughput.output_tokens_per_s<-5%'.
    #[arg(long, value_name = "RULE")]
    pub fail_on: Vec<String>,
    /// Also write the comparison as Markdown here.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Also write an HTML report with the runs overlaid here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

fn open_store(db: Option<&PathBuf>) -> Result<Option<Store>> {
    let path = match db {
        Some(p) => p.clone(),
        None => match crate::store::default_path() {
            Some(p) => p,
            None => return Ok(None),
        },
    };
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(Store::open(&path)?))
}

fn open_existing(db: Option<&PathBuf>) -> Result<Store> {
    let path = db_path(db)?;
    if !path.exists() {
        bail!(
            "no run history at '{}': run `throtl bench` first, or point --db at a history file",
            path.display()
        );
    }
    Ok(Store::open(&path)?)
}

fn write_or_print(path: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match path {
        Some(p) if p != Path::new("-") => {
            std::fs::write(p, bytes).with_context(|| format!("cannot write '{}'", p.display()))
        }
        _ => {
            print_stdout(&String::from_utf8_lossy(bytes));
            Ok(())
        }
    }
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Runs `throtl runs …`.
pub fn run_runs(args: &RunsArgs) -> Result<ExitCode> {
    let store = open_existing(args.db.as_ref())?;
    match &args.action {
        RunsAction::List {
            target,
            since,
            group,
        } => {
            let since_ms = since.map(|d| unix_ms() - d.as_millis() as i64);
            let runs = store.list_runs_in(target.as_deref(), since_ms, group.as_deref())?;
            if runs.is_empty() && group.is_some() {
                bail!(
                    "no runs in group '{}'; `throtl runs list` shows each run's group",
                    group.as_deref().unwrap_or_default()
                );
            }
            print_stdout(&listing(&runs));
        }
        RunsAction::Show { id, json } => {
            let run = store
                .run(id)?
                .with_context(|| format!("no run '{id}' in the history; see `throtl runs list`"))?;
            if *json {
                let mut s = serde_json::to_string_pretty(&run.report)?;
                s.push('\n');
                print_stdout(&s);
            } else {
                let data = RunData::from(run);
                print_stdout(&crate::report::console::render(&data.report));
                print_stdout(&percentile_cis(&data));
            }
        }
        RunsAction::Rm { ids } => {
            for id in ids {
                if !store.delete_run(id)? {
                    bail!("no run '{id}' in the history; see `throtl runs list`");
                }
                eprintln!("deleted {id}");
            }
        }
        RunsAction::Export { id, format, output } => {
            let run: RunData = store
                .run(id)?
                .with_context(|| format!("no run '{id}' in the history; see `throtl runs list`"))?
                .into();
            let bytes = match format {
                ExportFormat::Json => {
                    let mut v = serde_json::to_vec_pretty(&run)?;
                    v.push(b'\n');
                    v
                }
                ExportFormat::Csv => text::samples_csv(&run).into_bytes(),
                ExportFormat::Jsonl => {
                    let mut v = Vec::new();
                    for s in &run.samples {
                        serde_json::to_writer(&mut v, s)?;
                        v.push(b'\n');
                    }
                    v
                }
            };
            write_or_print(output.as_deref(), &bytes)?;
        }
        RunsAction::Prune { keep } => {
            let n = store.prune_runs(unix_ms() - keep.as_millis() as i64)?;
            eprintln!(
                "deleted {n} run(s) older than {}",
                humantime::format_duration(*keep)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn listing(runs: &[crate::store::runs::RunListing]) -> String {
    let mut s = format!(
        "{:<22} {:<24} {:<11} {:>6} {:>10} {:>10}  {:<20}  {}\n",
        "ID", "STARTED", "STATUS", "OK", "OUT TOK/S", "TTFT P50", "GROUP", "TARGET (MODEL)"
    );
    for r in runs {
        s.push_str(&format!(
            "{:<22} {:<24} {:<11} {:>6} {:>10.1} {:>10.1}  {:<20}  {} ({})\n",
            r.id,
            rfc3339(r.started_ms),
            r.status,
            r.ok,
            r.output_tokens_per_s,
            r.ttft_p50_ms,
            r.group.as_deref().unwrap_or("-"),
            r.target,
            r.model
        ));
    }
    s
}

fn percentile_cis(run: &RunData) -> String {
    use crate::results::SampleMetric::*;
    if run.samples.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\nPercentiles with 95% bootstrap CIs (from the stored per-request samples, ms):\n",
    );
    for (m, name) in [(Ttft, "TTFT"), (Tpot, "TPOT"), (E2e, "e2e")] {
        s.push_str(&format!(
            "  {name:<5} p50 {}   p99 {}\n",
            text::with_ci(run, m, 500),
            text::with_ci(run, m, 990)
        ));
    }
    s
}

/// Loads every argument (run ids, JSON files, group ids); the flag says
/// whether they are the steps of one sweep.
fn load_all_with(specs: &[String], db: Option<&PathBuf>) -> Result<(Vec<RunData>, bool)> {
    let store = open_store(db)?;
    let mut runs = Vec::new();
    let mut sweep = specs.len() == 1;
    for spec in specs {
        let l = load_many(spec, store.as_ref())?;
        sweep &= l.sweep;
        runs.extend(l.runs);
    }
    Ok((runs, sweep))
}

fn load_all(specs: &[String], db: Option<&PathBuf>) -> Result<Vec<RunData>> {
    load_all_with(specs, db).map(|(r, _)| r)
}

/// Runs `throtl report …`.
pub fn run_report(args: &ReportArgs) -> Result<ExitCode> {
    let (runs, sweep) = load_all_with(&args.runs, args.db.as_ref())?;
    let mut wrote = false;
    for (path, format) in [
        (&args.html, Format::Html),
        (&args.markdown, Format::Markdown),
        (&args.csv, Format::Csv),
    ] {
        if let Some(p) = path {
            let bytes = if sweep && format == Format::Html {
                crate::results::html::render_sweep(&runs).into_bytes()
            } else {
                render(&runs, format)
            };
            write_or_print(Some(p), &bytes)?;
            if p != Path::new("-") {
                eprintln!("wrote {}", p.display());
            }
            wrote = true;
        }
    }
    if !wrote {
        print_stdout(&text::markdown(&runs));
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit status of `compare` when a `--fail-on` rule is broken.
pub const REGRESSION_EXIT: u8 = 3;

/// Runs `throtl compare …`.
pub fn run_compare(args: &CompareArgs) -> Result<ExitCode> {
    let rules = args
        .fail_on
        .iter()
        .map(|r| GateRule::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    let runs = load_all(&args.runs, args.db.as_ref())?;
    if runs.len() < 2 {
        bail!("compare needs at least two runs; a group id stands for all of its runs");
    }
    print_stdout(&text::compare_console(&runs));
    if let Some(p) = &args.markdown {
        write_or_print(Some(p), &render(&runs, Format::Markdown))?;
    }
    if let Some(p) = &args.html {
        write_or_print(Some(p), &render(&runs, Format::Html))?;
    }
    if rules.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    if runs[1].samples.is_empty() || runs[0].samples.is_empty() {
        bail!("--fail-on needs per-request samples: pass stored run ids or `throtl runs export --format json` files, not --json summaries");
    }
    let failures = gate(&runs, &rules);
    if failures.is_empty() {
        eprintln!(
            "gate passed: no significant regression beyond {}",
            args.fail_on.join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    Ok(ExitCode::from(REGRESSION_EXIT))
}

pub(crate) fn parse_targets(raw: &[String]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for t in raw {
        let Some((name, url)) = t
            .split_once('=')
            .filter(|(n, u)| !n.is_empty() && !u.is_empty())
        else {
            bail!("--target '{t}': expected NAME=URL, e.g. --target vllm=http://127.0.0.1:8000");
        };
        if out.iter().any(|(n, _)| n == name) {
            bail!("--target: the name '{name}' is used twice");
        }
        out.push((name.to_owned(), crate::config::normalize_base_url(url)?));
    }
    Ok(out)
}

fn with_suffix(p: &Path, name: &str) -> PathBuf {
    let stem = p
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let file = match p.extension() {
        Some(ext) => format!("{stem}-{name}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{name}"),
    };
    p.with_file_name(file)
}

async fn run_sequential(
    targets: &[(String, String)],
    cfgs: &[crate::config::BenchConfig],
) -> Result<Vec<(String, RunData)>> {
    let mut runs = Vec::new();
    for ((name, url), cfg) in targets.iter().zip(cfgs) {
        eprintln!("== target {name}: {url}");
        let run = crate::run_bench_stored_with_interrupt(cfg).await?;
        super::finish_report(&run.report, cfg)?;
        let interrupted = run.report.status == crate::report::RunStatus::Interrupted;
        runs.push((name.clone(), RunData::from(run)));
        if interrupted {
            break;
        }
    }
    Ok(runs)
}

/// `--interleave`: every target's session open at once, turns alternating
/// (see [`crate::multi`]); progress is one line per turn.
async fn run_interleaved(
    targets: &[(String, String)],
    mut cfgs: Vec<crate::config::BenchConfig>,
    rounds: u32,
) -> Result<Vec<(String, RunData)>> {
    let quiet = cfgs
        .first()
        .is_some_and(|c| c.progress == crate::config::ProgressMode::Quiet);
    for c in &mut cfgs {
        c.progress = crate::config::ProgressMode::Quiet;
    }
    let controls = crate::engine::Controls::default();
    let grace = cfgs.first().map_or(Duration::from_secs(3), |c| c.grace);
    let watcher = tokio::spawn(crate::watch_interrupts(controls.clone(), grace, !quiet));
    eprintln!(
        "== interleaving {} targets in {rounds} rounds",
        targets.len()
    );
    let result = crate::multi::run_interleaved(&cfgs, rounds, controls, |t, round, o| {
        if !quiet {
            eprintln!(
                "round {}/{rounds}  {}: {:.2} s",
                round + 1,
                targets[t].0,
                (o.ended - o.started).as_secs_f64()
            );
        }
    })
    .await;
    watcher.abort();
    let mut runs = Vec::new();
    for (((name, url), cfg), run) in targets.iter().zip(&cfgs).zip(result?) {
        eprintln!("== target {name}: {url}");
        super::finish_report(&run.report, cfg)?;
        runs.push((name.clone(), RunData::from(run)));
    }
    Ok(runs)
}

/// `throtl bench --target A=URL --target B=URL …`: the same workload (same
/// prompts, same seed) against each target in turn (or interleaved with
/// `--interleave`), stored as one group, then compared (the first target is
/// the baseline).
pub fn run_multi(args: &super::BenchArgs) -> Result<ExitCode> {
    let targets = parse_targets(&args.targets)?;
    let create = |p: &Option<PathBuf>| -> Result<Option<(PathBuf, std::fs::File)>> {
        p.as_ref()
            .map(|p| {
                std::fs::File::create(p)
                    .map(|f| (p.clone(), f))
                    .with_context(|| format!("cannot write '{}'", p.display()))
            })
            .transpose()
    };
    // The combined reports are created before any load, like every output.
    let combined = [
        (create(&args.results.html)?, Format::Html),
        (create(&args.results.markdown)?, Format::Markdown),
        (create(&args.results.csv)?, Format::Csv),
    ];
    let count = u32::try_from(args.targets.len()).unwrap_or(u32::MAX);
    let rt = super::runtime(super::client_threads(args, count))?;
    let group = format!("group-{}", unix_ms());
    let runs = rt.block_on(async {
        let mut cfgs = Vec::new();
        for (name, url) in &targets {
            let (api, model) = super::resolve_target_at(args, url).await?;
            let mut cfg = args.to_config_for(url, model, api)?;
            cfg.json_out = cfg.json_out.map(|p| with_suffix(&p, name));
            cfg.records_out = cfg.records_out.map(|p| with_suffix(&p, name));
            cfg.results.html_out = None;
            cfg.results.markdown_out = None;
            cfg.results.csv_out = None;
            cfg.results.group = Some(group.clone());
            cfgs.push(cfg);
        }
        match args.interleave {
            Some(rounds) => run_interleaved(&targets, cfgs, rounds).await,
            None => run_sequential(&targets, &cfgs).await,
        }
    })?;
    let mut s = String::from("\n== comparison (baseline: the first target)\n");
    for (i, (name, r)) in runs.iter().enumerate() {
        s.push_str(&format!("#{} = {name} ({})\n", i + 1, r.report.run_id));
    }
    let data: Vec<RunData> = runs.into_iter().map(|(_, r)| r).collect();
    if data.len() > 1 {
        s.push_str(&text::compare_console(&data));
    }
    print_stdout(&s);
    for (out, format) in combined {
        if let Some((path, mut file)) = out {
            use std::io::Write;
            file.write_all(&render(&data, format))
                .with_context(|| format!("cannot write '{}'", path.display()))?;
        }
    }
    let interrupted = data
        .iter()
        .any(|r| r.report.status == crate::report::RunStatus::Interrupted);
    Ok(if interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}
