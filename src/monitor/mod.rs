//! `throtl monitor`: scrape servers on an interval, derive metrics over a
//! sliding window, evaluate alert rules, store history, and publish
//! snapshots for the dashboard (or JSON lines without it).
//!
//! The scrape loop never draws: presentation gets an `Arc<MonitorSnapshot>`
//! through a `watch` channel and renders on its own OS thread.

pub mod view;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::alert::{AlertEvent, Evaluator, Rule, Webhook};
use crate::scrape::{gpu, unix_ms, ScrapeError, Scraper, TimedSample, Window};
use crate::store::{AlertRow, Store, StoreError};
pub use view::{MonitorSnapshot, ServerView};

/// Everything `throtl monitor` needs, validated.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Server base URLs.
    pub targets: Vec<String>,
    /// Time between scrapes.
    pub interval: Duration,
    /// Sliding window of rates and quantiles.
    pub window: Duration,
    /// History database (`None`: do not store).
    pub db: Option<PathBuf>,
    /// Delete history older than this at start.
    pub keep: Option<Duration>,
    /// Alert rules.
    pub rules: Vec<Rule>,
    /// POST alert events here.
    pub webhook: Option<String>,
    /// Scrape twice (one interval apart), evaluate once, stop.
    pub once: bool,
    /// Stop after this many intervals.
    pub max_intervals: Option<u64>,
    /// Print alert log lines to stderr as they happen (off while a TUI owns the terminal).
    pub log_alerts: bool,
    /// Fill GPU metrics from this machine's `nvidia-smi` when a server's own metrics have none.
    pub local_gpu: bool,
}

/// Errors that stop the monitor.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// History store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A scraper could not be built.
    #[error(transparent)]
    Scrape(#[from] ScrapeError),
    /// JSON line output failed.
    #[error("cannot write JSON lines: {0}")]
    Output(#[from] std::io::Error),
    /// Bad webhook configuration.
    #[error(transparent)]
    Rule(#[from] crate::alert::RuleError),
}

/// Commands from the dashboard to the scrape loop.
#[derive(Debug, Clone, Copy)]
pub enum MonitorCommand {
    /// Use this window for rates and quantiles from now on.
    SetWindow(Duration),
}

/// How the monitor ended.
#[derive(Debug, Clone, Default)]
pub struct MonitorOutcome {
    /// Intervals completed.
    pub intervals: u64,
    /// Every alert transition, in order.
    pub events: Vec<AlertEvent>,
    /// Alerts firing at the end.
    pub firing: usize,
    /// Servers whose last scrape failed, with the error.
    pub unreachable: Vec<(String, String)>,
}

/// Where the monitor sends what it sees.
pub struct MonitorSinks {
    /// One JSON line per server per interval.
    pub jsonl: Option<Box<dyn Write + Send>>,
    /// Snapshots for a dashboard.
    pub snapshots: Option<watch::Sender<Arc<MonitorSnapshot>>>,
    /// Commands from the dashboard.
    pub commands: Option<mpsc::UnboundedReceiver<MonitorCommand>>,
    /// Stops the loop (Ctrl-C, dashboard quit).
    pub stop: CancellationToken,
}

struct Target {
    scraper: Scraper,
    window: Window,
}

/// Runs the monitor until `max_intervals`, `once`, or `sinks.stop`.
pub async fn run(
    cfg: &MonitorConfig,
    mut sinks: MonitorSinks,
) -> Result<MonitorOutcome, MonitorError> {
    let mut store = open_store(cfg)?;
    let webhook = cfg.webhook.as_deref().map(Webhook::new).transpose()?;
    let mut targets = cfg
        .targets
        .iter()
        .map(|u| {
            Ok(Target {
                scraper: Scraper::new(u, cfg.interval.max(Duration::from_secs(1)))?,
                window: Window::new(cfg.window),
            })
        })
        .collect::<Result<Vec<_>, ScrapeError>>()?;
    let mut evaluator = Evaluator::new(cfg.rules.clone(), cfg.once);
    let mut snapshot = MonitorSnapshot::new(&cfg.targets, cfg.interval, cfg.window);
    let origin = Instant::now();
    let mut outcome = MonitorOutcome::default();
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let total = if cfg.once { Some(2) } else { cfg.max_intervals };
    let mut posts = Vec::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = sinks.stop.cancelled() => break,
        }
        apply_commands(&mut sinks, &mut targets, &mut snapshot);
        let scrapes =
            futures_util::future::join_all(targets.iter().map(|t| t.scraper.scrape())).await;
        let gpu = match cfg.local_gpu {
            true => tokio::task::spawn_blocking(gpu::query_local)
                .await
                .ok()
                .flatten(),
            false => None,
        };
        let t = origin.elapsed().as_secs_f64();
        let wall = unix_ms();
        let last = total.is_some_and(|n| outcome.intervals + 1 >= n);
        for (i, result) in scrapes.into_iter().enumerate() {
            let tgt = &mut targets[i];
            let url = tgt.scraper.base().to_owned();
            let derived = match result {
                Ok(mut sample) => {
                    if let Some(g) = &gpu {
                        g.fill(&mut sample);
                    }
                    let engine = sample.engine;
                    tgt.window.push(TimedSample {
                        t,
                        wall_ms: wall,
                        sample,
                    });
                    let d = tgt.window.derive();
                    snapshot.servers[i].update_ok(t, engine, d.clone());
                    d.map(|d| (engine, d))
                }
                Err(e) => {
                    snapshot.servers[i].update_err(e.to_string());
                    None
                }
            };
            write_jsonl(&mut sinks, &snapshot.servers[i], wall)?;
            let Some((engine, d)) = derived else { continue };
            if let Some(s) = store.as_mut() {
                s.insert_samples(&url, &engine.to_string(), wall, &d.metrics())?;
            }
            if !cfg.once || last {
                let events = evaluator.evaluate(&url, t, &d);
                posts.extend(handle_events(
                    cfg,
                    &events,
                    store.as_ref(),
                    webhook.as_ref(),
                    &mut snapshot,
                )?);
                outcome.events.extend(events);
            }
        }
        outcome.intervals += 1;
        snapshot.firing = evaluator
            .firing()
            .map(|(s, r)| (s.to_owned(), r.name.clone(), r.severity))
            .collect();
        if let Some(tx) = &sinks.snapshots {
            let _ = tx.send(Arc::new(snapshot.clone()));
        }
        if last {
            break;
        }
    }
    outcome.firing = evaluator.firing().count();
    outcome.unreachable = snapshot
        .servers
        .iter()
        .filter_map(|s| s.error.clone().map(|e| (s.url.clone(), e)))
        .collect();
    // Let webhook posts finish (each has its own 10 s timeout).
    for p in posts {
        let _ = p.await;
    }
    Ok(outcome)
}

fn open_store(cfg: &MonitorConfig) -> Result<Option<Store>, MonitorError> {
    let Some(path) = &cfg.db else { return Ok(None) };
    let store = Store::open(path)?;
    if let Some(keep) = cfg.keep {
        store.prune(unix_ms() - keep.as_millis() as i64)?;
    }
    Ok(Some(store))
}

fn apply_commands(
    sinks: &mut MonitorSinks,
    targets: &mut [Target],
    snapshot: &mut MonitorSnapshot,
) {
    let Some(rx) = sinks.commands.as_mut() else {
        return;
    };
    while let Ok(cmd) = rx.try_recv() {
        match cmd {
            MonitorCommand::SetWindow(w) => {
                targets.iter_mut().for_each(|t| t.window.set_span(w));
                snapshot.window = w;
            }
        }
    }
}

fn write_jsonl(
    sinks: &mut MonitorSinks,
    server: &ServerView,
    wall_ms: i64,
) -> Result<(), MonitorError> {
    let Some(out) = sinks.jsonl.as_mut() else {
        return Ok(());
    };
    let line = serde_json::json!({
        "ts_ms": wall_ms,
        "server": server.url,
        "engine": server.engine,
        "error": server.error,
        "metrics": server.derived,
    });
    serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

fn handle_events(
    cfg: &MonitorConfig,
    events: &[AlertEvent],
    store: Option<&Store>,
    webhook: Option<&Webhook>,
    snapshot: &mut MonitorSnapshot,
) -> Result<Vec<tokio::task::JoinHandle<()>>, MonitorError> {
    let mut posts = Vec::new();
    for e in events {
        if cfg.log_alerts {
            eprintln!("{}", e.log_line());
        }
        if let Some(s) = store {
            s.insert_alert(&AlertRow {
                server: e.server.clone(),
                ts_ms: e.ts_ms,
                rule: e.rule.clone(),
                state: e.state.as_str().into(),
                severity: e.severity.to_string(),
                metric: e.metric.clone(),
                value: e.value,
                message: e.message.clone(),
            })?;
        }
        if let Some(w) = webhook.cloned() {
            let ev = e.clone();
            let log = cfg.log_alerts;
            posts.push(tokio::spawn(async move {
                if let Err(err) = w.post(&ev).await {
                    if log {
                        eprintln!("alert webhook failed for {}: {err}", ev.rule);
                    }
                }
            }));
        }
        snapshot.push_event(e.clone());
    }
    Ok(posts)
}
