//! The load engine: issues requests, measures them, emits one record each.
//!
//! A run is a *schedule* (when each request is due: [`LoadShape`]) composed
//! with a *stop condition* ([`StopCondition`]) and a *workload* (what each
//! request asks). The engine knows nothing about terminals or reports: it
//! sends [`record::RequestRecord`]s down a channel to the aggregator.

pub mod arrival;
mod chunked;
mod closed_loop;
pub mod dataset;
mod h1;
mod open_loop;
pub mod record;
pub mod request;
pub mod retry;
pub mod tokenizer;
pub mod workload;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::api::{ChatMessage, GenRequest};
use crate::timer::PreciseTimer;
use arrival::ArrivalConfig;
use record::RequestRecord;
use request::{execute, Transport};
use retry::RetryPolicy;
use workload::Workload;

pub use closed_loop::run_closed_loop;
pub use open_loop::run_open_loop;

/// When the measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCondition {
    /// After this many measured requests have been issued.
    Requests(u64),
    /// No new request is issued (open loop: scheduled) this long after the first measured one.
    Duration(Duration),
}

/// Pause of a user between the end of one request and the next, drawn
/// uniformly from `mean ± jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ThinkTime {
    /// Mean pause.
    #[serde(serialize_with = "ser_secs")]
    pub mean: Duration,
    /// Half-width of the uniform jitter around the mean.
    #[serde(serialize_with = "ser_secs")]
    pub jitter: Duration,
}

/// When requests are due.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum LoadShape {
    /// `concurrency` users; each sends its next request when its previous one
    /// ends plus an optional think time (none: a classic closed loop).
    Closed {
        /// Pause between a user's requests.
        think: Option<ThinkTime>,
    },
    /// Requests arrive on a schedule regardless of how fast the server answers.
    Open {
        /// The arrival process.
        arrivals: ArrivalConfig,
        /// At most this many requests in flight; later arrivals wait (and are counted as held).
        max_concurrency: Option<u32>,
    },
}

/// What load to apply.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Closed-loop workers (users). Ignored by the open loop.
    pub concurrency: u32,
    /// End of the measured phase.
    pub stop: StopCondition,
    /// Requests issued first and excluded from statistics.
    pub warmup: u64,
    /// Model name sent with each request.
    pub model: String,
    /// Send `ignore_eos`.
    pub ignore_eos: bool,
    /// Pre-built requests.
    pub workload: Workload,
    /// Schedule.
    pub shape: LoadShape,
    /// Load ramps up over this long; requests due during the ramp count as warmup.
    pub ramp_up: Duration,
    /// Sequence number of the first request (0; later slices of an
    /// interleaved multi-target bench continue where the previous one ended,
    /// so they send the next prompts of the workload).
    pub first_seq: u64,
    /// Chat turns per conversation (1: independent requests). Closed loop
    /// only: each user runs its conversation's turns one after another.
    pub turns: u32,
    /// How failed requests are retried (`--retries`; none by default).
    pub retry: RetryPolicy,
    /// Measure connection setup on purpose (`--cold-connections`): no
    /// connections are opened ahead of the load and warmup is not extended
    /// to every user.
    pub cold_connections: bool,
    /// The slice of a sharded run this process sends (`--shard K/N`).
    pub shard: Option<ShardSlice>,
    /// Arrival offsets of a replayed trace (open loop with
    /// [`arrival::ArrivalProcess::Trace`]); request `i` is due at offset `i`.
    pub trace_offsets: Option<Arc<[Duration]>>,
}

/// One slice of a run sharded over several load generators (`--shard K/N`).
///
/// Open loop: every shard builds the whole seeded schedule and sends the
/// arrivals with `seq mod N == K`, so the union of the slices is exactly
/// the single-machine schedule, bursts included. Closed loop: users are
/// assigned whole (`user mod N == K`) and requests and warmup divided
/// ([`ShardSlice::share`]); request `i` of shard K is sequence number
/// `i·N + K`, so the slices' sequence numbers never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShardSlice {
    /// K: this shard, 0-based.
    pub index: u32,
    /// N: shards in the run.
    pub count: u32,
}

impl ShardSlice {
    /// Parses `K/N` (0 ≤ K < N).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard '{s}' must be K/N with 0 <= K < N, e.g. 0/4");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// True when this shard sends schedule entry (or user) `i`.
    pub fn owns(self, i: u64) -> bool {
        i % u64::from(self.count) == u64::from(self.index)
    }

    /// This shard's part of `total` (users, requests, warmup): the
    /// entries `i < total` it [`owns`](Self::owns).
    pub fn share(self, total: u64) -> u64 {
        let n = u64::from(self.count);
        total / n + u64::from(u64::from(self.index) < total % n)
    }

    /// The run-wide sequence number of this shard's `local`-th closed-loop request.
    pub fn global_seq(self, local: u64) -> u64 {
        local * u64::from(self.count) + u64::from(self.index)
    }
}

/// Most connections opened ahead of an uncapped open loop.
pub const MAX_WARM_UNCAPPED: u32 = 1024;

impl LoadPlan {
    /// Connections the load needs at once: one per closed-loop user, or one
    /// per `--max-concurrency` slot in open loop. An uncapped open loop has
    /// `rate × latency` requests in flight, latency unknown before the run:
    /// one second's worth of arrivals (at most [`MAX_WARM_UNCAPPED`]) covers
    /// requests up to a second long; longer ones open the rest as needed,
    /// which `connect_ms` shows.
    pub fn connections_needed(&self) -> u32 {
        match self.shape {
            LoadShape::Open {
                max_concurrency: Some(cap),
                ..
            } => cap,
            LoadShape::Open { arrivals, .. } => {
                let per_second = arrivals
                    .rate
                    .ceil()
                    .clamp(1.0, f64::from(MAX_WARM_UNCAPPED));
                self.concurrency.max(per_second as u32)
            }
            LoadShape::Closed { .. } => self.concurrency,
        }
        .max(1)
    }
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
    measured: AtomicU64,
    plan: Arc<LoadPlan>,
    measure_start: OnceLock<Instant>,
    soft: CancellationToken,
    ramp_end: Instant,
}

impl Issuer {
    fn new(plan: Arc<LoadPlan>, soft: CancellationToken, started: Instant) -> Self {
        let ramp_end = started + plan.ramp_up;
        Self {
            next: AtomicU64::new(plan.first_seq),
            measured: AtomicU64::new(0),
            plan,
            measure_start: OnceLock::new(),
            soft,
            ramp_end,
        }
    }

    /// The request due at `due` as (seq, is_warmup), or `None` to stop.
    /// Requests due before the ramp-up ends are warmup too.
    fn next(&self, due: Instant) -> Option<(u64, bool)> {
        if self.soft.is_cancelled() {
            return None;
        }
        self.admit(due)
    }

    /// Like [`Issuer::next`] for a closed-loop user; `first` marks the
    /// user's first request. With a warmup, every user's first request is
    /// warmup (so every connection and user has completed one before it is
    /// measured), unless `--cold-connections` asks to measure that on purpose.
    fn next_for_user(&self, due: Instant, first: bool) -> Option<(u64, bool)> {
        let warm_user = first && self.plan.warmup > 0 && !self.plan.cold_connections;
        if !warm_user {
            return self.next(due);
        }
        if self.soft.is_cancelled() {
            return None;
        }
        Some((self.next.fetch_add(1, Ordering::Relaxed), true))
    }

    /// Like [`Issuer::next`] but also after a soft stop: numbers an arrival
    /// that was due before the stop, so it can be accounted as not sent.
    fn admit(&self, due: Instant) -> Option<(u64, bool)> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        if seq < self.plan.first_seq + self.plan.warmup || due < self.ramp_end {
            return Some((seq, true));
        }
        let go = match self.plan.stop {
            StopCondition::Requests(k) => self.measured.fetch_add(1, Ordering::Relaxed) < k,
            StopCondition::Duration(d) => {
                let start = *self.measure_start.get_or_init(|| due);
                due.saturating_duration_since(start) < d
            }
        };
        go.then_some((seq, false))
    }
}

/// Requests in flight right now and the peak.
#[derive(Default)]
pub(crate) struct InFlight {
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

/// A multi-turn conversation in progress: its id, the next turn and the
/// history sent so far (user messages and the answers actually streamed).
#[derive(Debug, Default)]
pub(crate) struct Conversation {
    id: u64,
    turn: u32,
    history: Vec<ChatMessage>,
}

/// Everything one request needs besides its own numbers; shared by all shapes.
#[derive(Clone)]
struct Dispatch {
    transport: Arc<Transport>,
    plan: Arc<LoadPlan>,
    sink: Sender<RequestRecord>,
    hard: CancellationToken,
    soft: CancellationToken,
    in_flight: Arc<InFlight>,
    conversations: Arc<AtomicU64>,
    /// Sub-millisecond sleeps for arrivals, think times and ramps; `None`
    /// falls back to Tokio's millisecond timer.
    timer: Option<PreciseTimer>,
}

impl Dispatch {
    fn new(
        transport: Arc<Transport>,
        plan: Arc<LoadPlan>,
        sink: Sender<RequestRecord>,
        controls: &Controls,
    ) -> Self {
        Self {
            transport,
            plan,
            sink,
            hard: controls.hard.clone(),
            soft: controls.soft.clone(),
            in_flight: Arc::new(InFlight::default()),
            conversations: Arc::new(AtomicU64::new(0)),
            timer: PreciseTimer::start().ok(),
        }
    }

    /// True when this process sends schedule entry `seq` (always, unsharded).
    fn owns(&self, seq: u64) -> bool {
        self.plan.shard.is_none_or(|s| s.owns(seq))
    }

    /// Sleeps until `at` (never wakes early), to within tens of
    /// microseconds where the precise timer runs.
    async fn sleep_until(&self, at: Instant) {
        match &self.timer {
            Some(t) => t.sleep_until(at).await,
            None => tokio::time::sleep_until(at.into()).await,
        }
    }

    fn request(&self, messages: Vec<ChatMessage>, max_tokens: u32) -> GenRequest {
        GenRequest {
            model: self.plan.model.clone(),
            messages,
            max_tokens,
            ignore_eos: self.plan.ignore_eos,
        }
    }

    /// Sends `req`, measuring it into `rec`, and sends it again while the
    /// retry policy allows. The request stays in flight (and keeps its
    /// `--max-concurrency` slot) during backoff; a stop during backoff keeps
    /// the last attempt's error as the final one.
    async fn measure(&self, req: &GenRequest, rec: &mut RequestRecord) {
        self.in_flight.enter();
        execute(&self.transport, req, rec, &self.hard).await;
        // Send lag and busy time are those of the first attempt.
        let first_sent = rec.sent;
        while self.plan.retry.should_retry(rec) && self.back_off(rec).await {
            rec.reset_for_retry();
            execute(&self.transport, req, rec, &self.hard).await;
        }
        rec.sent = first_sent;
        self.in_flight.leave();
    }

    /// Waits before the next attempt of `rec`; false when the run stopped.
    async fn back_off(&self, rec: &RequestRecord) -> bool {
        let wait = self.plan.retry.wait(rec, self.plan.workload.seed());
        tokio::select! {
            () = tokio::time::sleep(wait) => !self.soft.is_cancelled(),
            () = self.soft.cancelled() => false,
            () = self.hard.cancelled() => false,
        }
    }

    /// Sends request `seq` (due at `scheduled`), measures it and emits its
    /// record. Returns false when the aggregator is gone.
    async fn run_one(&self, seq: u64, warmup: bool, scheduled: Instant, held: bool) -> bool {
        let item = self.plan.workload.item(seq);
        let req = self.request(item.first_messages(), item.max_tokens);
        let mut rec = RequestRecord::new(seq, warmup, scheduled, item.max_tokens as usize + 1);
        rec.held_by_cap = held;
        rec.local_input_tokens = item.input_tokens;
        if let Some((conversation, turn)) = item.session {
            rec.conversation = Some(conversation);
            rec.turn = Some(turn);
        }
        self.measure(&req, &mut rec).await;
        self.sink.send(rec).is_ok()
    }

    /// Sends request `seq` as the next turn of `conv` (starting a new
    /// conversation when there is none): the history so far plus item `seq`
    /// as a new user message. A successful turn appends the streamed answer
    /// to the history; a failed turn, or the last one, ends the conversation.
    /// Returns false when the aggregator is gone.
    async fn run_turn(
        &self,
        seq: u64,
        warmup: bool,
        scheduled: Instant,
        conv: &mut Option<Conversation>,
    ) -> bool {
        let item = self.plan.workload.item(seq);
        let c = conv.get_or_insert_with(|| Conversation {
            // Run-wide ids: shard K's i-th conversation is i·N + K.
            id: {
                let local = self.conversations.fetch_add(1, Ordering::Relaxed);
                self.plan.shard.map_or(local, |s| s.global_seq(local))
            },
            ..Conversation::default()
        });
        if c.turn == 0 {
            c.history = item.first_messages();
        } else {
            c.history.push(ChatMessage::user(item.prompt.clone()));
        }
        let mut rec = RequestRecord::new(seq, warmup, scheduled, item.max_tokens as usize + 1);
        rec.conversation = Some(c.id);
        rec.turn = Some(c.turn);
        // Only the first turn's prompt is what the local tokenizer counted.
        rec.local_input_tokens = item.input_tokens.filter(|_| c.turn == 0);
        rec.answer = Some(String::with_capacity(item.max_tokens as usize * 8));
        let req = self.request(std::mem::take(&mut c.history), item.max_tokens);
        self.measure(&req, &mut rec).await;
        c.history = req.messages;
        let answer = rec
            .answer
            .as_deref()
            .filter(|a| !a.is_empty() && rec.is_ok());
        match answer {
            Some(a) if c.turn + 1 < self.plan.turns => {
                c.history.push(ChatMessage::assistant(a));
                c.turn += 1;
            }
            _ => *conv = None,
        }
        self.sink.send(rec).is_ok()
    }

    /// Emits the record of an arrival that was due but never sent because
    /// the run was interrupted. Returns false when the aggregator is gone.
    fn not_sent(&self, seq: u64, warmup: bool, scheduled: Instant, stopped: Instant) -> bool {
        let mut rec = RequestRecord::new(seq, warmup, scheduled, 0);
        rec.not_sent = true;
        rec.sent = stopped;
        rec.end = stopped;
        rec.error = Some(record::ErrorClass::Cancelled);
        rec.error_sample = Some("not sent: the run was interrupted while the arrival waited for a --max-concurrency slot".into());
        self.sink.send(rec).is_ok()
    }

    fn outcome(&self, started: Instant, soft: &CancellationToken) -> EngineOutcome {
        EngineOutcome {
            started,
            ended: Instant::now(),
            peak_in_flight: self.in_flight.peak.load(Ordering::Relaxed),
            interrupted: soft.is_cancelled(),
        }
    }
}

/// Runs `plan` with its load shape until its stop condition.
pub async fn run(
    transport: Arc<Transport>,
    plan: Arc<LoadPlan>,
    sink: Sender<RequestRecord>,
    controls: Controls,
) -> EngineOutcome {
    if !plan.cold_connections {
        transport.warm_connections(plan.connections_needed()).await;
    }
    match plan.shape {
        LoadShape::Closed { .. } => run_closed_loop(transport, plan, sink, controls).await,
        LoadShape::Open { .. } => run_open_loop(transport, plan, sink, controls).await,
    }
}

/// Serialises a duration as seconds.
pub(crate) fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
