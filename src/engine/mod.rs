//! The load engine: issues requests, measures them, emits one record each.
//!
//! The engine knows nothing about terminals or reports: it sends
//! [`record::RequestRecord`]s down a channel to the aggregator.

pub mod record;
pub mod request;
pub mod workload;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::api::GenRequest;
use record::RequestRecord;
use request::{execute, Transport};
use workload::PromptSource;

/// When the measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCondition {
    /// After this many measured requests have been issued.
    Requests(u64),
    /// No new request is issued this long after the first measured one.
    Duration(Duration),
}

/// What load to apply.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Closed-loop workers.
    pub concurrency: u32,
    /// End of the measured phase.
    pub stop: StopCondition,
    /// Requests issued first and excluded from statistics.
    pub warmup: u64,
    /// Model name sent with each request.
    pub model: String,
    /// `max_tokens` of each request.
    pub max_tokens: u32,
    /// Send `ignore_eos`.
    pub ignore_eos: bool,
    /// Prompt generator.
    pub prompts: PromptSource,
}

/// Signals that end a run early: `soft` stops issuing; `hard` cancels in-flight requests.
#[derive(Debug, Clone, Default)]
pub struct Controls {
    /// Stop issuing new requests.
    pub soft: CancellationToken,
    /// Abort requests still in flight.
    pub hard: CancellationToken,
}

/// What the engine observed about itself.
#[derive(Debug, Clone, Copy)]
pub struct EngineOutcome {
    /// When the first request was issued.
    pub started: Instant,
    /// When the last worker finished.
    pub ended: Instant,
    /// Highest number of requests in flight at once.
    pub peak_in_flight: u64,
    /// The soft stop fired before the plan completed.
    pub interrupted: bool,
}

/// Hands out request sequence numbers and decides when to stop.
struct Issuer {
    next: AtomicU64,
    plan: Arc<LoadPlan>,
    measure_start: OnceLock<Instant>,
    soft: CancellationToken,
}

impl Issuer {
    /// The next request to issue as (seq, is_warmup), or `None` to stop.
    fn next(&self) -> Option<(u64, bool)> {
        if self.soft.is_cancelled() {
            return None;
        }
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let warmup = seq < self.plan.warmup;
        if warmup {
            return Some((seq, true));
        }
        match self.plan.stop {
            StopCondition::Requests(k) => (seq < self.plan.warmup + k).then_some((seq, false)),
            StopCondition::Duration(d) => {
                let start = *self.measure_start.get_or_init(Instant::now);
                (start.elapsed() < d).then_some((seq, false))
            }
        }
    }
}

#[derive(Default)]
struct InFlight {
    now: AtomicU64,
    peak: AtomicU64,
}

impl InFlight {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(n, Ordering::Relaxed);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `plan` as a closed loop: each of `concurrency` workers sends its next
/// request as soon as its previous one ends. Returns when all workers stop.
pub async fn run_closed_loop(
    transport: Arc<Transport>,
    plan: Arc<LoadPlan>,
    sink: Sender<RequestRecord>,
    controls: Controls,
) -> EngineOutcome {
    let issuer = Arc::new(Issuer {
        next: AtomicU64::new(0),
        plan: Arc::clone(&plan),
        measure_start: OnceLock::new(),
        soft: controls.soft.clone(),
    });
    let in_flight = Arc::new(InFlight::default());
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.concurrency {
        workers.spawn(worker(
            Arc::clone(&transport),
            Arc::clone(&issuer),
            sink.clone(),
            controls.hard.clone(),
            Arc::clone(&in_flight),
        ));
    }
    drop(sink);
    while workers.join_next().await.is_some() {}
    EngineOutcome {
        started,
        ended: Instant::now(),
        peak_in_flight: in_flight.peak.load(Ordering::Relaxed),
        interrupted: controls.soft.is_cancelled(),
    }
}

async fn worker(
    transport: Arc<Transport>,
    issuer: Arc<Issuer>,
    sink: Sender<RequestRecord>,
    hard: CancellationToken,
    in_flight: Arc<InFlight>,
) {
    let plan = &issuer.plan;
    while let Some((seq, warmup)) = issuer.next() {
        let req = GenRequest {
            model: plan.model.clone(),
            prompt: plan.prompts.prompt(seq),
            max_tokens: plan.max_tokens,
            ignore_eos: plan.ignore_eos,
        };
        // A closed loop has no timetable: a request is due once it is built,
        // so the client's own preparation time is never charged to the server.
        let scheduled = Instant::now();
        let mut rec = RequestRecord::new(seq, warmup, scheduled, plan.max_tokens as usize + 1);
        in_flight.enter();
        execute(&transport, &req, &mut rec, &hard).await;
        in_flight.leave();
        if sink.send(rec).is_err() {
            return;
        }
    }
}
