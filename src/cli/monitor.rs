//! `throtl monitor` and `throtl history`: flags and their conversion.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{parse_duration, print_stdout, runtime};
use crate::alert::{parse_rules, AlertState, DEFAULT_RULES};
use crate::config::normalize_base_url;
use crate::monitor::{MonitorConfig, MonitorOutcome, MonitorSinks, MonitorSnapshot};
use crate::scrape::unix_ms;
use crate::store::{SampleQuery, Store};

/// `throtl monitor` flags.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Server base URLs to watch (each must serve /metrics, or be Ollama).
    #[arg(required_unless_present = "discover", value_name = "URL")]
    pub urls: Vec<String>,
    /// Watch the healthy engines `throtl discover` finds (optionally a label selector, e.g. app=vllm).
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "SELECTOR", conflicts_with = "urls")]
    pub discover: Option<String>,
    /// Time between scrapes.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Sliding window of rates and percentiles.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub window: Duration,
    /// No dashboard: one JSON line per server per interval on stdout (or --jsonl).
    #[arg(long)]
    pub no_tui: bool,
    /// Write the JSON lines to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// History database [default: $XDG_DATA_HOME/throtl/throtl.db or ~/.local/share/throtl/throtl.db].
    #[arg(long, env = "THROTL_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Do not store samples or alerts (overrides --db).
    #[arg(long)]
    pub no_history: bool,
    /// Delete history older than this at start, e.g. 7d.
    #[arg(long, value_parser = parse_duration)]
    pub keep: Option<Duration>,
    /// Alert rules file (YAML) [default: the built-in rules, see docs/monitor.md].
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// POST each alert transition as JSON to this URL.
    #[arg(long, env = "THROTL_WEBHOOK", value_name = "URL")]
    pub webhook: Option<String>,
    /// Exit with status 1 if any alert fired, 2 if a server could not be scraped at the end.
    #[arg(long)]
    pub check: bool,
    /// Scrape twice, one --interval apart, evaluate the rules once (hold times ignored), exit.
    #[arg(long)]
    pub once: bool,
    /// Stop after this many intervals.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Add this machine's NVIDIA GPU utilisation and memory (nvidia-smi) to servers whose /metrics have none.
    #[arg(long)]
    pub local_gpu: bool,
}

/// Output formats of `throtl history`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum HistoryFormat {
    /// Aligned columns.
    Table,
    /// Comma-separated values with a header.
    Csv,
    /// A JSON array.
    Json,
}

/// `throtl history` flags.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// History database [default: as for monitor].
    #[arg(long, env = "THROTL_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Only this server (base URL as given to monitor).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Only the last period, e.g. 1h, 30m, 7d.
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Only this metric, e.g. kv_cache_usage (see docs/monitor.md).
    #[arg(long)]
    pub metric: Option<String>,
    /// Show alert events instead of samples.
    #[arg(long)]
    pub alerts: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: HistoryFormat,
    /// Delete history older than this first, e.g. 7d.
    #[arg(long, value_parser = parse_duration)]
    pub keep: Option<Duration>,
}

fn db_path(db: Option<&PathBuf>) -> Result<PathBuf> {
    match db {
        Some(p) => Ok(p.clone()),
        None => crate::store::default_path()
            .context("no home directory to keep history in: set --db PATH (or XDG_DATA_HOME), or pass --no-history"),
    }
}

impl MonitorArgs {
    /// Converts flags into a validated config.
    pub fn to_config(&self, log_alerts: bool) -> Result<MonitorConfig> {
        if self.interval < Duration::from_millis(100) {
            bail!("--interval must be at least 100ms");
        }
        if self.window < self.interval {
            bail!(
                "--window ('{}') must be at least --interval",
                humantime::format_duration(self.window)
            );
        }
        if self.count == Some(0) {
            bail!("--count must be at least 1");
        }
        let targets = self
            .urls
            .iter()
            .map(|u| normalize_base_url(u))
            .collect::<Result<Vec<_>, _>>()?;
        let rules = match &self.rules {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read --rules '{}'", p.display()))?;
                parse_rules(&text).with_context(|| format!("in --rules '{}'", p.display()))?
            }
            None => parse_rules(DEFAULT_RULES)?,
        };
        if let Some(w) = &self.webhook {
            normalize_base_url(w)
                .map_err(|_| anyhow::anyhow!("--webhook '{w}' is not an http(s) URL"))?;
        }
        Ok(MonitorConfig {
            targets,
            interval: self.interval,
            window: self.window,
            db: if self.no_history {
                None
            } else {
                Some(db_path(self.db.as_ref())?)
            },
            keep: self.keep,
            rules,
            webhook: self.webhook.clone(),
            once: self.once,
            max_intervals: self.count,
            log_alerts,
            local_gpu: self.local_gpu,
        })
    }
}

/// Runs `throtl monitor`.
pub fn run_monitor(args: &MonitorArgs) -> Result<ExitCode> {
    let tui = !args.no_tui
        && !args.once
        && std::io::stderr().is_terminal()
        && std::io::stdout().is_terminal();
    let cfg = args.to_config(!tui)?;
    let jsonl: Option<Box<dyn Write + Send>> = match (&args.jsonl, tui) {
        (Some(p), _) => {
            Some(Box::new(std::fs::File::create(p).with_context(|| {
                format!("cannot create --jsonl '{}'", p.display())
            })?))
        }
        (None, false) => Some(Box::new(std::io::stdout())),
        (None, true) => None,
    };
    let stop = CancellationToken::new();
    let rt = runtime(None)?;
    let outcome = rt.block_on(async {
        let ctrl_c = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                ctrl_c.cancel();
            }
        });
        let (snap_tx, snap_rx) = watch::channel(Arc::new(MonitorSnapshot::new(
            &cfg.targets,
            cfg.interval,
            cfg.window,
        )));
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let dashboard = tui.then(|| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("throtl-dashboard".into())
                .spawn(move || crate::tui::monitor::run(snap_rx, cmd_tx, stop))
        });
        let dashboard = dashboard
            .transpose()
            .context("cannot start the dashboard thread")?;
        let sinks = MonitorSinks {
            jsonl,
            snapshots: Some(snap_tx),
            commands: Some(cmd_rx),
            stop: stop.clone(),
        };
        let result = crate::monitor::run(&cfg, sinks).await;
        stop.cancel();
        if let Some(d) = dashboard {
            d.join()
                .map_err(|_| anyhow::anyhow!("dashboard thread panicked"))?
                .context("dashboard failed")?;
        }
        anyhow::Ok(result?)
    })?;
    if tui {
        outcome
            .events
            .iter()
            .for_each(|e| eprintln!("{}", e.log_line()));
    }
    Ok(monitor_exit(args, &outcome))
}

fn monitor_exit(args: &MonitorArgs, o: &MonitorOutcome) -> ExitCode {
    let fired = o
        .events
        .iter()
        .filter(|e| e.state == AlertState::Firing)
        .count();
    if args.check && fired > 0 {
        eprintln!("check failed: {fired} alert(s) fired");
        return ExitCode::from(1);
    }
    if args.check && !o.unreachable.is_empty() {
        o.unreachable
            .iter()
            .for_each(|(_, e)| eprintln!("check failed: {e}"));
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

/// Runs `throtl history`.
pub fn run_history(args: &HistoryArgs) -> Result<ExitCode> {
    let path = db_path(args.db.as_ref())?;
    if !path.exists() {
        bail!(
            "no history at '{}': run `throtl monitor` first, or point --db at a history file",
            path.display()
        );
    }
    let store = Store::open(&path)?;
    if let Some(keep) = args.keep {
        let n = store.prune(unix_ms() - keep.as_millis() as i64)?;
        eprintln!(
            "deleted {n} row(s) older than {}",
            humantime::format_duration(keep)
        );
    }
    let q = SampleQuery {
        server: args
            .server
            .as_deref()
            .map(|s| s.trim_end_matches('/').to_owned()),
        metric: args.metric.clone(),
        since_ms: args.since.map(|d| unix_ms() - d.as_millis() as i64),
    };
    let out = if args.alerts {
        render_alerts(&store, &q, args.format)?
    } else {
        render_samples(&store, &q, args.format)?
    };
    print_stdout(&out);
    Ok(ExitCode::SUCCESS)
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

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn render_samples(store: &Store, q: &SampleQuery, f: HistoryFormat) -> Result<String> {
    let rows = store.samples(q)?;
    Ok(match f {
        HistoryFormat::Json => serde_json::to_string_pretty(&rows)? + "\n",
        HistoryFormat::Csv => {
            let mut s = "time,server,metric,value\n".to_owned();
            for r in &rows {
                s += &format!(
                    "{},{},{},{}\n",
                    rfc3339(r.ts_ms),
                    csv_field(&r.server),
                    csv_field(&r.metric),
                    r.value
                );
            }
            s
        }
        HistoryFormat::Table => {
            let mut s = format!(
                "{:<30} {:<28} {:<24} {:>14}\n",
                "time", "server", "metric", "value"
            );
            for r in &rows {
                s += &format!(
                    "{:<30} {:<28} {:<24} {:>14.6}\n",
                    rfc3339(r.ts_ms),
                    r.server,
                    r.metric,
                    r.value
                );
            }
            s
        }
    })
}

fn render_alerts(store: &Store, q: &SampleQuery, f: HistoryFormat) -> Result<String> {
    let rows = store.alerts(q)?;
    let value = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
    Ok(match f {
        HistoryFormat::Json => serde_json::to_string_pretty(&rows)? + "\n",
        HistoryFormat::Csv => {
            let mut s = "time,server,rule,state,severity,metric,value,message\n".to_owned();
            for r in &rows {
                s += &format!(
                    "{},{},{},{},{},{},{},{}\n",
                    rfc3339(r.ts_ms),
                    csv_field(&r.server),
                    csv_field(&r.rule),
                    r.state,
                    r.severity,
                    r.metric,
                    value(r.value),
                    csv_field(&r.message)
                );
            }
            s
        }
        HistoryFormat::Table => {
            let mut s = String::new();
            for r in &rows {
                s += &format!(
                    "{} {:<8} [{}] {} {} {}={}: {}\n",
                    rfc3339(r.ts_ms),
                    r.state,
                    r.severity,
                    r.rule,
                    r.server,
                    r.metric,
                    value(r.value),
                    r.message
                );
            }
            s
        }
    })
}
