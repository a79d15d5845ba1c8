//! The realistic engine model: continuous batching over a paged KV cache,
//! stepped in real time.
//!
//! [`BatchEngine`] hands each admitted request to a scheduler loop task on the
//! simulator's runtime. The loop runs [`scheduler::SchedulerCore`] one step at
//! a time, sleeps (sub-millisecond [`PreciseTimer`]) until the step's modelled
//! end, then emits the step's tokens to their requests' channels and publishes
//! the engine state and latency samples to `/metrics`.

pub mod kv;
pub mod profile;
pub mod scheduler;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::metrics::{GpuInfo, SimMetrics};
use super::model::{Admission, EngineModel, GenEvent, Generation, Rejection};
use crate::timer::PreciseTimer;
use profile::Profile;
use scheduler::{NewRequest, SchedConfig, SchedulerCore, Step};

/// The engine model's configuration: a profile plus vLLM's scheduler knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Hardware + model numbers.
    pub profile: Profile,
    /// `--max-num-seqs` (vLLM default 256).
    pub max_num_seqs: u32,
    /// `--max-num-batched-tokens`; `None`: the profile's default.
    pub max_num_batched_tokens: Option<u32>,
    /// `--kv-blocks`; `None`: the profile's default.
    pub kv_blocks: Option<u32>,
    /// `--block-size` in tokens (vLLM default 16).
    pub block_size: u32,
    /// `--enable-prefix-caching`.
    pub prefix_caching: bool,
    /// `--chunked-prefill` (on by default, as in vLLM V1).
    pub chunked_prefill: bool,
}

impl EngineConfig {
    /// vLLM's defaults on `profile`.
    pub fn new(profile: Profile) -> Self {
        Self {
            profile,
            max_num_seqs: 256,
            max_num_batched_tokens: None,
            kv_blocks: None,
            block_size: 16,
            prefix_caching: false,
            chunked_prefill: true,
        }
    }

    /// The scheduler knobs with defaults filled in.
    pub fn sched(&self) -> SchedConfig {
        SchedConfig {
            max_num_seqs: self.max_num_seqs,
            max_num_batched_tokens: self
                .max_num_batched_tokens
                .unwrap_or(self.profile.max_num_batched_tokens),
            kv_blocks: self.kv_blocks.unwrap_or(self.profile.kv_blocks),
            block_size: self.block_size,
            prefix_caching: self.prefix_caching,
            chunked_prefill: self.chunked_prefill,
        }
    }

    /// Checks the knobs; the error names the flag.
    pub fn validate(&self) -> Result<(), String> {
        self.profile
            .validate()
            .map_err(|e| format!("profile '{}': {e}", self.profile.name))?;
        let s = self.sched();
        for (flag, v) in [
            ("--max-num-seqs", s.max_num_seqs),
            ("--max-num-batched-tokens", s.max_num_batched_tokens),
            ("--kv-blocks", s.kv_blocks),
            ("--block-size", s.block_size),
        ] {
            if v == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        Ok(())
    }

    /// What DCGM-style GPU metrics are computed from.
    pub fn gpu_info(&self) -> GpuInfo {
        let p = &self.profile;
        GpuInfo {
            gpus: p.gpus,
            memory_bytes: p.gpu_memory_gb * 1e9,
            weight_bytes: p.weight_bytes(),
            kv_block_bytes: p.kv_bytes_per_token() * f64::from(self.block_size),
        }
    }
}

struct Submission {
    req: NewRequest,
    tx: mpsc::Sender<GenEvent>,
}

/// The batching engine model (an [`EngineModel`]).
pub struct BatchEngine {
    submit: mpsc::UnboundedSender<Submission>,
    sched: SchedConfig,
    next_id: AtomicU64,
    pending: Arc<AtomicUsize>,
    waiting: Arc<AtomicUsize>,
    epoch: Instant,
}

impl BatchEngine {
    /// Starts the scheduler loop on `rt`.
    pub fn start(
        cfg: &EngineConfig,
        rt: &tokio::runtime::Runtime,
        timer: PreciseTimer,
        metrics: Arc<SimMetrics>,
    ) -> Self {
        let sched = cfg.sched();
        let core = SchedulerCore::new(sched.clone(), cfg.profile.clone());
        let (submit, rx) = mpsc::unbounded_channel();
        let epoch = Instant::now();
        let pending = Arc::new(AtomicUsize::new(0));
        let waiting = Arc::new(AtomicUsize::new(0));
        metrics.set_engine(core.snapshot());
        let lp = EngineLoop {
            core,
            rx,
            senders: HashMap::new(),
            timer,
            metrics,
            epoch,
            pending: Arc::clone(&pending),
            waiting: Arc::clone(&waiting),
        };
        rt.spawn(lp.run());
        Self {
            submit,
            sched,
            next_id: AtomicU64::new(0),
            pending,
            waiting,
            epoch,
        }
    }
}

impl EngineModel for BatchEngine {
    fn admit(&self, a: Admission) -> Result<Generation, Rejection> {
        self.admit_prompt(a, &[])
    }

    fn admit_prompt(&self, a: Admission, prompt: &[u64]) -> Result<Generation, Rejection> {
        let (tx, rx) = mpsc::channel(a.max_tokens.max(1) as usize + 1);
        if a.max_tokens == 0 {
            return Ok(Generation::Channel(rx));
        }
        self.sched
            .admissible(a.prompt_tokens.max(1), a.max_tokens)
            .map_err(|message| Rejection {
                status: 400,
                message,
                retry_after_s: None,
            })?;
        let block_hashes = if self.sched.prefix_caching {
            kv::block_hashes(prompt, self.sched.block_size)
        } else {
            Vec::new()
        };
        let req = NewRequest {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            prompt_tokens: a.prompt_tokens,
            max_tokens: a.max_tokens,
            block_hashes,
            arrival: a
                .arrival
                .saturating_duration_since(self.epoch)
                .as_secs_f64(),
        };
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.submit.send(Submission { req, tx }).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            Rejection {
                status: 503,
                message: "engine stopped".into(),
                retry_after_s: None,
            }
        })?;
        Ok(Generation::Channel(rx))
    }

    fn queue_depth(&self) -> Option<usize> {
        Some(self.pending.load(Ordering::Relaxed) + self.waiting.load(Ordering::Relaxed))
    }
}

/// Steps closer than this to the previous step's planned end start exactly
/// there, so wake-up slack does not accumulate into lost throughput.
const CONTIGUOUS: Duration = Duration::from_millis(2);

struct EngineLoop {
    core: SchedulerCore,
    rx: mpsc::UnboundedReceiver<Submission>,
    senders: HashMap<u64, mpsc::Sender<GenEvent>>,
    timer: PreciseTimer,
    metrics: Arc<SimMetrics>,
    epoch: Instant,
    pending: Arc<AtomicUsize>,
    waiting: Arc<AtomicUsize>,
}

impl EngineLoop {
    async fn run(mut self) {
        let mut clock = Instant::now();
        loop {
            self.intake();
            self.reap_closed();
            if self.core.is_idle() {
                self.publish();
                if !self.wait_for_work(None).await {
                    return;
                }
                continue;
            }
            let now = Instant::now();
            let start = if now.saturating_duration_since(clock) < CONTIGUOUS {
                clock
            } else {
                now
            };
            let t = start.saturating_duration_since(self.epoch).as_secs_f64();
            let step = self.core.step(t);
            if step.scheduled_tokens == 0 {
                self.publish();
                let wake = self
                    .core
                    .next_arrival_after(t)
                    .map(|a| self.epoch + Duration::from_secs_f64(a));
                if !self.wait_for_work(wake).await {
                    return;
                }
                clock = Instant::now();
                continue;
            }
            let end = start + Duration::from_secs_f64(step.duration);
            self.timer.sleep_until(end).await;
            clock = end;
            self.deliver(&step);
        }
    }

    /// Waits for a new request (or until `wake`); false when the server is gone.
    async fn wait_for_work(&mut self, wake: Option<Instant>) -> bool {
        let sub = match wake {
            Some(at) => {
                tokio::select! {
                    s = self.rx.recv() => s,
                    () = self.timer.sleep_until(at) => return true,
                }
            }
            None => self.rx.recv().await,
        };
        match sub {
            Some(s) => {
                self.accept(s);
                true
            }
            None => false,
        }
    }

    fn intake(&mut self) {
        while let Ok(s) = self.rx.try_recv() {
            self.accept(s);
        }
    }

    fn accept(&mut self, s: Submission) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
        self.senders.insert(s.req.id, s.tx);
        self.core.add(s.req);
    }

    /// Aborts requests whose client went away.
    fn reap_closed(&mut self) {
        let core = &mut self.core;
        self.senders.retain(|&id, tx| {
            let open = !tx.is_closed();
            if !open {
                core.abort(id);
            }
            open
        });
    }

    fn deliver(&mut self, step: &Step) {
        for t in &step.tokens {
            let Some(tx) = self.senders.get(&t.id) else {
                continue;
            };
            if tx.try_send(GenEvent::Token).is_err() {
                self.core.abort(t.id);
                self.senders.remove(&t.id);
                continue;
            }
            if t.finished {
                self.senders.remove(&t.id);
            }
        }
        for &s in &step.samples {
            self.metrics.observe(s);
        }
        self.publish();
    }

    fn publish(&self) {
        let snap = self.core.snapshot();
        self.waiting.store(snap.waiting as usize, Ordering::Relaxed);
        self.metrics.set_engine(snap);
    }
}
