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
    /// `--gpu-memory-utilization`: share of GPU memory the engine may use
    /// (weights, activations, KV cache). `None`: the profile's `kv_blocks`.
    pub gpu_memory_utilization: Option<f64>,
    /// `--kv-cache-dtype`: FP8 halves the bytes of a cached token, so about
    /// twice the blocks fit in the same memory and attention reads half the bytes.
    pub kv_cache_dtype: KvCacheDtype,
    /// `--max-model-len`: the KV cache must hold one sequence this long, or
    /// the engine refuses to start (as vLLM does). `None`: no such check.
    pub max_model_len: Option<u32>,
}

/// Element type of the KV cache (`--kv-cache-dtype`, vLLM's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvCacheDtype {
    /// The profile's `kv_bytes_per_elem` (FP16/BF16 in the built-ins).
    #[default]
    Auto,
    /// One byte per element.
    Fp8,
}

/// vLLM's default `--gpu-memory-utilization`; the built-in profiles'
/// `kv_blocks` are what is left for the KV cache at this share.
pub const DEFAULT_GPU_MEMORY_UTILIZATION: f64 = 0.9;

/// The engine cannot start with this configuration: the message is the log
/// line a real engine prints before exiting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct OutOfMemory(pub String);

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
            gpu_memory_utilization: None,
            kv_cache_dtype: KvCacheDtype::Auto,
            max_model_len: None,
        }
    }

    /// The profile as the engine runs it: with `--kv-cache-dtype fp8`, one
    /// byte per cached element.
    pub fn engine_profile(&self) -> Profile {
        let mut p = self.profile.clone();
        if self.kv_cache_dtype == KvCacheDtype::Fp8 {
            p.kv_bytes_per_elem = 1.0;
        }
        p
    }

    /// KV blocks when `--kv-blocks` is not given: the profile's, unless
    /// `--gpu-memory-utilization` or `--kv-cache-dtype` change the memory
    /// left for the cache (see [`EngineConfig::kv_budget_bytes`]).
    fn default_kv_blocks(&self) -> u32 {
        if self.gpu_memory_utilization.is_none() && self.kv_cache_dtype == KvCacheDtype::Auto {
            return self.profile.kv_blocks;
        }
        let block = self.engine_profile().kv_bytes_per_token() * f64::from(self.block_size.max(1));
        (self.kv_budget_bytes().max(0.0) / block)
            .floor()
            .min(f64::from(u32::MAX)) as u32
    }

    /// Bytes left for the KV cache on all GPUs: the utilisation's share of
    /// memory minus the weights and the activation reserve. The reserve is
    /// what the profile implies at vLLM's default utilisation 0.9 (memory ×
    /// 0.9 − weights − the profile's KV blocks), so 0.9 reproduces the
    /// profile's `kv_blocks`.
    pub fn kv_budget_bytes(&self) -> f64 {
        let p = &self.profile;
        let memory = p.gpu_memory_gb * 1e9 * f64::from(p.gpus);
        let profile_kv = f64::from(p.kv_blocks) * p.kv_bytes_per_token() * 16.0;
        let reserve =
            (memory * DEFAULT_GPU_MEMORY_UTILIZATION - p.weight_bytes() - profile_kv).max(0.0);
        let util = self
            .gpu_memory_utilization
            .unwrap_or(DEFAULT_GPU_MEMORY_UTILIZATION);
        memory * util - p.weight_bytes() - reserve
    }

    /// Whether the weights and the smallest usable KV cache fit; the error
    /// is the line vLLM logs before it exits.
    pub fn check_memory(&self) -> Result<(), OutOfMemory> {
        let s = self.sched();
        let gib = |b: f64| b / f64::from(1u32 << 30);
        if s.kv_blocks == 0 {
            return Err(OutOfMemory(format!(
                "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine. (weights {:.2} GiB, KV budget {:.2} GiB at gpu_memory_utilization {})",
                gib(self.profile.weight_bytes()),
                gib(self.kv_budget_bytes()),
                self.gpu_memory_utilization.unwrap_or(DEFAULT_GPU_MEMORY_UTILIZATION)
            )));
        }
        let capacity = u64::from(s.kv_blocks) * u64::from(s.block_size);
        match self.max_model_len {
            Some(len) if u64::from(len) > capacity => Err(OutOfMemory(format!(
                "ValueError: The model's max seq len ({len}) is larger than the maximum number of tokens that can be stored in KV cache ({capacity}). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."
            ))),
            _ => Ok(()),
        }
    }

    /// The scheduler knobs with defaults filled in.
    pub fn sched(&self) -> SchedConfig {
        SchedConfig {
            max_num_seqs: self.max_num_seqs,
            max_num_batched_tokens: self
                .max_num_batched_tokens
                .unwrap_or(self.profile.max_num_batched_tokens),
            kv_blocks: self.kv_blocks.unwrap_or_else(|| self.default_kv_blocks()),
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
        if let Some(u) = self.gpu_memory_utilization {
            if !(u > 0.0 && u <= 1.0) {
                return Err(format!(
                    "--gpu-memory-utilization must be in (0, 1], got {u}"
                ));
            }
        }
        let s = self.sched();
        for (flag, v) in [
            ("--max-num-seqs", s.max_num_seqs),
            ("--max-num-batched-tokens", s.max_num_batched_tokens),
            ("--block-size", s.block_size),
        ] {
            if v == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        if self.kv_blocks == Some(0) {
            return Err("--kv-blocks must be at least 1".into());
        }
        self.check_memory().map_err(|e| e.0)
    }

    /// What DCGM-style GPU metrics are computed from.
    pub fn gpu_info(&self) -> GpuInfo {
        let p = &self.profile;
        GpuInfo {
            gpus: p.gpus,
            memory_bytes: p.gpu_memory_gb * 1e9,
            weight_bytes: p.weight_bytes(),
            kv_block_bytes: self.engine_profile().kv_bytes_per_token() * f64::from(self.block_size),
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
        let core = SchedulerCore::new(sched.clone(), cfg.engine_profile());
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
