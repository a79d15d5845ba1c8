//! `throtl race`: one prompt streamed to several targets at the same instant.
//!
//! Each run spawns one task per target. The tasks wait at a barrier, then all
//! see the same start instant, and each streams the request through the
//! engine's own [`execute_with`] (timestamps where bytes arrive). TTFT and
//! e2e are measured from that common start. The measuring tasks only stamp
//! and forward raw chunks (a channel send); decoding them into text for the
//! live view happens on the presentation thread ([`board`]).

pub mod board;
pub mod summary;

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{watch, Barrier};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiKind, GenRequest, Protocol, ProtocolOptions};
use crate::bench::headers_for;
use crate::config::ConfigError;
use crate::engine::record::{ErrorClass, RequestRecord};
use crate::engine::request::{execute_with, Transport};
use crate::sim::{SimConfig, SimHandle};
pub use summary::{RaceReport, RankMetric, RunOutcome};

/// A target ready to race: its protocol and model are known.
pub struct RaceTarget {
    /// Display name (`NAME` of `--target NAME=URL`).
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Model requested.
    pub model: String,
    /// Protocol spoken.
    pub api: ApiKind,
    /// Client, headers, protocol and timeout.
    pub transport: Arc<Transport>,
}

/// How requests to a target are sent, besides its URL, protocol and model.
#[derive(Debug, Clone, Default)]
pub struct TargetOptions {
    /// `--api-key-env`.
    pub api_key_env: Option<String>,
    /// `-H` headers.
    pub headers: Vec<(String, String)>,
    /// Azure OpenAI `api-version`.
    pub api_version: Option<String>,
    /// Per-request timeout (60 s when zero).
    pub timeout: Duration,
}

impl RaceTarget {
    /// A target with its own connection pool and the bench's headers
    /// (API key, `-H`).
    pub fn new(
        name: &str,
        url: &str,
        model: &str,
        api: ApiKind,
        opts: &TargetOptions,
    ) -> Result<Self, ConfigError> {
        let protocol: Arc<dyn Protocol> = Arc::from(api.protocol_with(&ProtocolOptions {
            api_version: opts.api_version.clone(),
        }));
        let headers = headers_for(
            opts.api_key_env.as_deref(),
            &opts.headers,
            protocol.as_ref(),
        )?;
        let timeout = if opts.timeout.is_zero() {
            Duration::from_secs(60)
        } else {
            opts.timeout
        };
        Ok(Self {
            name: name.to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            model: model.to_owned(),
            api,
            transport: Arc::new(Transport::new(url, headers, protocol, timeout)),
        })
    }
}

/// A target in the race: ready, or failed before the start (probe error).
pub enum RaceEntry {
    /// Ready to race.
    Ready(RaceTarget),
    /// Could not be set up; reported, and the others still race.
    Failed {
        /// Display name.
        name: String,
        /// Base URL.
        url: String,
        /// Why it cannot race.
        reason: String,
    },
}

impl RaceEntry {
    /// Display name.
    pub fn name(&self) -> &str {
        match self {
            RaceEntry::Ready(t) => &t.name,
            RaceEntry::Failed { name, .. } => name,
        }
    }

    /// The target's protocol, when ready.
    pub fn protocol(&self) -> Option<Arc<dyn Protocol>> {
        match self {
            RaceEntry::Ready(t) => Some(t.transport.protocol.clone()),
            RaceEntry::Failed { .. } => None,
        }
    }
}

/// What to race.
pub struct RaceConfig {
    /// Targets, in `--target` order.
    pub targets: Vec<RaceEntry>,
    /// The prompt every target gets.
    pub prompt: String,
    /// `max_tokens` of the request.
    pub max_tokens: u32,
    /// Send `ignore_eos`.
    pub ignore_eos: bool,
    /// How many times to race.
    pub runs: u32,
    /// Which metric orders the summary.
    pub rank_by: RankMetric,
}

/// What the measuring side tells the presentation side.
#[derive(Debug, Clone)]
pub enum RaceEvent {
    /// Run `run` (0-based) started at `at`; every target was released then.
    RunStarted {
        /// Run index.
        run: u32,
        /// The common start instant.
        at: Instant,
    },
    /// Raw body bytes of target `target`, read at `at`.
    Chunk {
        /// Index in [`RaceConfig::targets`].
        target: usize,
        /// Arrival instant (taken before parsing).
        at: Instant,
        /// The bytes as read.
        bytes: Bytes,
    },
    /// Target `target` finished the current run.
    Finished {
        /// Index in [`RaceConfig::targets`].
        target: usize,
        /// Its numbers.
        outcome: RunOutcome,
    },
}

/// Races `cfg.runs` times. `events` feeds a live view (raw chunks and
/// results); `on_done` is called on the coordinating task as each target
/// finishes a run (plain progress lines). `cancel` stops the race.
pub async fn race(
    cfg: &RaceConfig,
    events: Option<Sender<RaceEvent>>,
    cancel: &CancellationToken,
    mut on_done: impl FnMut(&str, &RunOutcome),
) -> RaceReport {
    let mut outcomes: Vec<Vec<RunOutcome>> = vec![Vec::new(); cfg.targets.len()];
    for run in 0..cfg.runs {
        if cancel.is_cancelled() {
            break;
        }
        let mut set = race_once(cfg, run, events.as_ref(), cancel).await;
        while let Some(joined) = set.join_next().await {
            let Ok((target, outcome)) = joined else {
                continue;
            };
            on_done(cfg.targets[target].name(), &outcome);
            if let Some(tx) = &events {
                let _ = tx.send(RaceEvent::Finished {
                    target,
                    outcome: outcome.clone(),
                });
            }
            outcomes[target].push(outcome);
        }
    }
    summary::build(cfg, outcomes)
}

/// Starts one run: every ready target released at the same instant. The
/// set yields (target index, outcome) as each finishes.
async fn race_once(
    cfg: &RaceConfig,
    run: u32,
    events: Option<&Sender<RaceEvent>>,
    cancel: &CancellationToken,
) -> JoinSet<(usize, RunOutcome)> {
    let ready: Vec<(usize, &RaceTarget)> = cfg
        .targets
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            RaceEntry::Ready(t) => Some((i, t)),
            RaceEntry::Failed { .. } => None,
        })
        .collect();
    let barrier = Arc::new(Barrier::new(ready.len() + 1));
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let mut set = JoinSet::new();
    for (i, t) in ready {
        let req = GenRequest::single(&t.model, &cfg.prompt, cfg.max_tokens, cfg.ignore_eos);
        let lane = Lane {
            target: i,
            run,
            transport: t.transport.clone(),
            events: events.cloned(),
            cancel: cancel.clone(),
        };
        set.spawn(lane.run(req, barrier.clone(), go_rx.clone()));
    }
    barrier.wait().await;
    let start = Instant::now();
    if let Some(tx) = events {
        // Before the release, so the view resets before any chunk arrives.
        let _ = tx.send(RaceEvent::RunStarted { run, at: start });
    }
    let _ = go_tx.send(Some(start));
    set
}

/// One target's part of one run.
struct Lane {
    target: usize,
    run: u32,
    transport: Arc<Transport>,
    events: Option<Sender<RaceEvent>>,
    cancel: CancellationToken,
}

impl Lane {
    async fn run(
        self,
        req: GenRequest,
        barrier: Arc<Barrier>,
        mut go: watch::Receiver<Option<Instant>>,
    ) -> (usize, RunOutcome) {
        // Every target starts with an open connection, so no one's TTFT
        // includes a TCP handshake the others skipped (or all pay for).
        self.transport.preconnect().await;
        barrier.wait().await;
        let start = match go.wait_for(Option::is_some).await {
            Ok(v) => v.unwrap_or_else(Instant::now),
            Err(_) => Instant::now(),
        };
        let mut rec = RequestRecord::new(
            u64::from(self.run),
            false,
            start,
            1 + req.max_tokens as usize,
        );
        let (target, events) = (self.target, self.events.as_ref());
        execute_with(
            &self.transport,
            &req,
            &mut rec,
            &self.cancel,
            |at, bytes| {
                if let Some(tx) = events {
                    let _ = tx.send(RaceEvent::Chunk {
                        target,
                        at,
                        bytes: Bytes::copy_from_slice(bytes),
                    });
                }
            },
        )
        .await;
        (target, RunOutcome::from_record(self.run, &rec))
    }
}

/// Millisecond value of a duration (presentation and JSON only).
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl RunOutcome {
    /// The race numbers of one request record.
    pub fn from_record(run: u32, rec: &RequestRecord) -> Self {
        let (tokens, _) = rec.output_tokens();
        let ttft = rec.ttft();
        let decode_rate = match ttft {
            Some(t) if tokens >= 2 && rec.e2e() > t => {
                Some((tokens - 1) as f64 / (rec.e2e() - t).as_secs_f64())
            }
            _ => None,
        };
        let error = rec.error.map(|c| match c {
            ErrorClass::Cancelled => "cancelled".to_owned(),
            c => format!(
                "{}: {}",
                c.key(),
                rec.error_sample.as_deref().unwrap_or("no detail")
            ),
        });
        Self {
            run,
            ttft_ms: ttft.map(ms),
            e2e_ms: ms(rec.e2e()),
            output_tokens: tokens,
            tokens_per_s: decode_rate,
            send_skew_ms: ms(rec.send_lag()),
            error,
        }
    }
}

/// The simulators of `throtl race --demo`: (name, TTFT, ITL). Chosen so the
/// three metrics rank them differently.
pub const DEMO_PROFILES: [(&str, u64, u64); 3] = [
    ("snappy", 30, 20),
    ("steady", 100, 8),
    ("sluggish", 200, 30),
];

/// Starts the demo simulators in-process; keep the handles alive while racing.
pub fn start_demo() -> Result<Vec<(String, SimHandle)>, crate::sim::SimError> {
    DEMO_PROFILES
        .iter()
        .map(|&(name, ttft, itl)| {
            let h = crate::sim::start(SimConfig {
                ttft: Duration::from_millis(ttft),
                itl: Duration::from_millis(itl),
                model: format!("sim-{name}"),
                ..SimConfig::default()
            })?;
            Ok((name.to_owned(), h))
        })
        .collect()
}
