//! The scheduler core: vLLM-V1-style continuous batching as a pure state
//! machine. [`SchedulerCore::step`] takes the current model time, decides the
//! batch, prices it with the profile's roofline and applies its effects as of
//! the step's end. No clock, no I/O: the async loop in `engine/mod.rs` supplies
//! real time, and tests drive it with simulated time.

use std::collections::VecDeque;

use super::kv::{BlockId, KvCache};
use super::profile::Profile;

/// Scheduler knobs (vLLM's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedConfig {
    /// `--max-num-seqs`: requests in the running batch at most.
    pub max_num_seqs: u32,
    /// `--max-num-batched-tokens`: tokens computed per step at most.
    pub max_num_batched_tokens: u32,
    /// `--kv-blocks`: blocks in the KV cache.
    pub kv_blocks: u32,
    /// `--block-size`: tokens per block.
    pub block_size: u32,
    /// `--enable-prefix-caching`.
    pub prefix_caching: bool,
    /// `--chunked-prefill`: split long prompts over steps.
    pub chunked_prefill: bool,
}

impl SchedConfig {
    /// Whether a request of this size can ever complete; the error says why not.
    pub fn admissible(&self, prompt_tokens: u32, max_tokens: u32) -> Result<(), String> {
        let total = u64::from(prompt_tokens) + u64::from(max_tokens);
        let capacity = u64::from(self.kv_blocks) * u64::from(self.block_size);
        if total > capacity {
            return Err(format!(
                "This model's KV cache holds {capacity} tokens, but the request needs {total} ({prompt_tokens} prompt + {max_tokens} output). Reduce the prompt or max_tokens"
            ));
        }
        if !self.chunked_prefill && total > u64::from(self.max_num_batched_tokens) {
            return Err(format!(
                "Without chunked prefill a sequence must fit in max_num_batched_tokens ({}), but the request needs {total} tokens",
                self.max_num_batched_tokens
            ));
        }
        Ok(())
    }
}

/// A request entering the engine.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// Engine-wide id.
    pub id: u64,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Tokens to generate.
    pub max_tokens: u32,
    /// Chained hashes of the prompt's full blocks (empty: no prefix reuse).
    pub block_hashes: Vec<u64>,
    /// Arrival, model time in seconds; not scheduled before it.
    pub arrival: f64,
}

/// A token produced at the end of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenOut {
    /// Request id.
    pub id: u64,
    /// 0-based index of the token in the request's output.
    pub index: u32,
    /// The request is complete with this token.
    pub finished: bool,
}

/// Histogram samples (seconds), named after vLLM's metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// Arrival to first token.
    Ttft(f64),
    /// Gap between consecutive tokens of one request.
    Itl(f64),
    /// Arrival to last token.
    E2e(f64),
    /// Arrival to first scheduled.
    Queue(f64),
    /// First scheduled to first token.
    Prefill(f64),
    /// First token to last token.
    Decode(f64),
    /// First scheduled to last token.
    Inference(f64),
    /// Decode time / (tokens − 1).
    Tpot(f64),
}

/// Cumulative counters of the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Prompt tokens of requests that produced their first token.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub generation_tokens: u64,
    /// Requests preempted (by recompute).
    pub preemptions: u64,
    /// Prompt tokens looked up in the prefix cache.
    pub prefix_queries: u64,
    /// Of those, tokens found cached.
    pub prefix_hits: u64,
    /// Requests finished (all tokens generated).
    pub finished: u64,
    /// Requests aborted (client gone).
    pub aborted: u64,
    /// Engine steps run.
    pub steps: u64,
    /// Steps that computed prompt tokens.
    pub prefill_steps: u64,
    /// Sum over steps of the running batch size.
    pub batch_seqs: u64,
    /// Total modelled busy time (s).
    pub busy_s: f64,
}

/// The state an observer sees after a step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineSnapshot {
    /// Requests in the running batch.
    pub running: u32,
    /// Requests waiting (queued or preempted).
    pub waiting: u32,
    /// KV blocks referenced.
    pub kv_used_blocks: u32,
    /// KV blocks in total.
    pub kv_total_blocks: u32,
    /// Tokens per block.
    pub block_size: u32,
    /// Cumulative counters.
    pub counters: Counters,
}

/// One engine step: what ran, how long it takes, what it produced.
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// Model time the step starts (s).
    pub start: f64,
    /// Modelled duration (s); outputs happen at `start + duration`.
    pub duration: f64,
    /// Tokens computed (prefill chunks + decodes).
    pub scheduled_tokens: u32,
    /// Of those, prompt (or recompute) tokens.
    pub prefill_tokens: u32,
    /// Requests in the batch.
    pub batch_size: u32,
    /// Tokens emitted at the step's end, in batch order.
    pub tokens: Vec<TokenOut>,
    /// Histogram samples.
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
struct Seq {
    req: NewRequest,
    computed: u32,
    generated: u32,
    blocks: Vec<BlockId>,
    committed: usize,
    first_scheduled: Option<f64>,
    first_token: Option<f64>,
    last_token: f64,
}

impl Seq {
    /// Tokens whose KV must exist before the next token can be sampled.
    fn target(&self) -> u32 {
        self.req.prompt_tokens + self.generated
    }
}

/// Continuous-batching scheduler with a paged KV cache.
#[derive(Debug, Clone)]
pub struct SchedulerCore {
    cfg: SchedConfig,
    profile: Profile,
    kv: KvCache,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    counters: Counters,
}

impl SchedulerCore {
    /// An idle engine.
    pub fn new(cfg: SchedConfig, profile: Profile) -> Self {
        let kv = KvCache::new(cfg.kv_blocks, cfg.block_size, cfg.prefix_caching);
        Self {
            cfg,
            profile,
            kv,
            waiting: VecDeque::new(),
            running: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// Whether a request of this size can ever complete; the error says why not.
    pub fn admissible(&self, prompt_tokens: u32, max_tokens: u32) -> Result<(), String> {
        self.cfg.admissible(prompt_tokens, max_tokens)
    }

    /// Queues a request (FCFS).
    pub fn add(&mut self, mut req: NewRequest) {
        // Every sequence has at least one prompt token (BOS) and one output.
        req.prompt_tokens = req.prompt_tokens.max(1);
        req.max_tokens = req.max_tokens.max(1);
        let arrival = req.arrival;
        self.waiting.push_back(Seq {
            req,
            computed: 0,
            generated: 0,
            blocks: Vec::new(),
            committed: 0,
            first_scheduled: None,
            first_token: None,
            last_token: arrival,
        });
    }

    /// Removes a request wherever it is and frees its blocks. Returns false if unknown.
    pub fn abort(&mut self, id: u64) -> bool {
        let seq = if let Some(i) = self.running.iter().position(|s| s.req.id == id) {
            self.running.remove(i)
        } else if let Some(i) = self.waiting.iter().position(|s| s.req.id == id) {
            match self.waiting.remove(i) {
                Some(s) => s,
                None => return false,
            }
        } else {
            return false;
        };
        self.kv.release(&seq.blocks);
        self.counters.aborted += 1;
        true
    }

    /// No request running or waiting.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Earliest arrival among waiting requests that have not arrived by `now`.
    pub fn next_arrival_after(&self, now: f64) -> Option<f64> {
        self.waiting
            .iter()
            .map(|s| s.req.arrival)
            .filter(|&a| a > now)
            .min_by(f64::total_cmp)
    }

    /// Current gauges and counters.
    pub fn snapshot(&self) -> EngineSnapshot {
        EngineSnapshot {
            running: self.running.len() as u32,
            waiting: self.waiting.len() as u32,
            kv_used_blocks: self.kv.used_blocks(),
            kv_total_blocks: self.kv.num_blocks(),
            block_size: self.cfg.block_size,
            counters: self.counters,
        }
    }

    /// The KV cache (for invariant checks).
    pub fn kv(&self) -> &KvCache {
        &self.kv
    }

    /// Plans and applies one step starting at `now`. A step with
    /// `scheduled_tokens == 0` did nothing (idle, or waiting for an arrival).
    pub fn step(&mut self, now: f64) -> Step {
        let mut budget = self.cfg.max_num_batched_tokens;
        let mut plan: Vec<(usize, u32)> = Vec::new();
        let preempted = self.schedule_running(&mut budget, &mut plan);
        if !preempted {
            self.schedule_waiting(now, &mut budget, &mut plan);
        }
        let mut step = Step {
            start: now,
            ..Step::default()
        };
        if plan.is_empty() {
            return step;
        }
        step.duration = self.step_time(&plan);
        step.batch_size = plan.len() as u32;
        self.apply(&plan, now + step.duration, &mut step);
        step
    }

    /// Running requests first, in order; preempts from the back when the
    /// cache is full. Returns whether anything was preempted.
    fn schedule_running(&mut self, budget: &mut u32, plan: &mut Vec<(usize, u32)>) -> bool {
        let mut preempted = false;
        let mut i = 0;
        while i < self.running.len() && *budget > 0 {
            let remaining = self.running[i].target() - self.running[i].computed;
            let n = remaining.min(*budget);
            if !self.cfg.chunked_prefill && n < remaining {
                i += 1;
                continue;
            }
            let need = self
                .kv
                .blocks_for(self.running[i].computed + n)
                .saturating_sub(self.running[i].blocks.len() as u32);
            let mut self_preempted = false;
            while need > self.kv.free_blocks() {
                preempted = true;
                let victim = self.running.len() - 1;
                self.preempt_last();
                if victim == i {
                    self_preempted = true;
                    break;
                }
            }
            if self_preempted {
                break;
            }
            if let Some(new) = self.kv.allocate(need) {
                self.running[i].blocks.extend(new);
            }
            plan.push((i, n));
            *budget -= n;
            i += 1;
        }
        preempted
    }

    fn preempt_last(&mut self) {
        if let Some(mut s) = self.running.pop() {
            self.kv.release(&s.blocks);
            s.blocks.clear();
            s.committed = 0;
            s.computed = 0;
            self.counters.preemptions += 1;
            self.waiting.push_front(s);
        }
    }

    /// Admits waiting requests FCFS while seats, budget and blocks last.
    fn schedule_waiting(&mut self, now: f64, budget: &mut u32, plan: &mut Vec<(usize, u32)>) {
        while *budget > 0 && (self.running.len() as u32) < self.cfg.max_num_seqs {
            let Some(front) = self.waiting.front() else {
                break;
            };
            if front.req.arrival > now {
                break;
            }
            let target = front.target();
            // At least one token is always computed, so the last block is never a hit.
            let limit = ((target - 1) / self.cfg.block_size) as usize;
            let hits = self.kv.lookup(&front.req.block_hashes, limit);
            let cached = hits.len() as u32 * self.cfg.block_size;
            let n = (target - cached).min(*budget);
            if !self.cfg.chunked_prefill && n < target - cached {
                break;
            }
            let need = self.kv.blocks_for(cached + n) - hits.len() as u32;
            if need + self.kv.unreferenced(&hits) > self.kv.free_blocks() {
                break;
            }
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            self.kv.touch(&hits);
            seq.blocks = hits;
            seq.committed = seq.blocks.len();
            if let Some(new) = self.kv.allocate(need) {
                seq.blocks.extend(new);
            }
            seq.computed = cached;
            seq.first_scheduled.get_or_insert(now);
            self.counters.prefix_queries += u64::from(target);
            self.counters.prefix_hits += u64::from(cached);
            self.running.push(seq);
            plan.push((self.running.len() - 1, n));
            *budget -= n;
        }
    }

    /// Roofline: overhead + max(FLOPs / FLOP rate, bytes / bandwidth).
    fn step_time(&self, plan: &[(usize, u32)]) -> f64 {
        let p = &self.profile;
        let (mut tokens, mut ctx_read, mut attn_pairs) = (0f64, 0f64, 0f64);
        for &(i, n) in plan {
            let c = f64::from(self.running[i].computed);
            let n = f64::from(n);
            tokens += n;
            ctx_read += c + n;
            attn_pairs += n * c + n * (n + 1.0) / 2.0;
        }
        let flops = 2.0 * p.params * tokens
            + 4.0 * f64::from(p.layers) * f64::from(p.hidden_size) * attn_pairs;
        let bytes = p.weight_bytes() + p.kv_bytes_per_token() * ctx_read;
        p.step_overhead_us * 1e-6
            + (flops / p.effective_flops()).max(bytes / p.effective_bandwidth())
    }

    /// Advances every scheduled request as of `end`; emits tokens, samples
    /// and frees finished requests.
    fn apply(&mut self, plan: &[(usize, u32)], end: f64, step: &mut Step) {
        self.counters.steps += 1;
        self.counters.batch_seqs += plan.len() as u64;
        self.counters.busy_s += step.duration;
        let mut done = Vec::new();
        for &(i, n) in plan {
            let s = &mut self.running[i];
            let is_decode = s.generated > 0 && n == 1 && s.computed + 1 == s.target();
            if !is_decode {
                step.prefill_tokens += n;
            }
            step.scheduled_tokens += n;
            s.computed += n;
            commit_blocks(&mut self.kv, s);
            if s.computed < s.target() {
                continue;
            }
            s.generated += 1;
            let finished = s.generated >= s.req.max_tokens;
            step.tokens.push(TokenOut {
                id: s.req.id,
                index: s.generated - 1,
                finished,
            });
            record_token(s, end, &mut self.counters, &mut step.samples);
            if finished {
                record_finish(s, end, &mut step.samples);
                done.push(i);
            }
        }
        if step.prefill_tokens > 0 {
            self.counters.prefill_steps += 1;
        }
        for &i in done.iter().rev() {
            let s = self.running.remove(i);
            self.kv.release(&s.blocks);
            self.counters.finished += 1;
        }
    }
}

/// Registers every newly full prompt block in the prefix cache.
fn commit_blocks(kv: &mut KvCache, s: &mut Seq) {
    let full = (s.computed / kv.block_size()) as usize;
    while s.committed < full.min(s.req.block_hashes.len()) && s.committed < s.blocks.len() {
        kv.commit(s.blocks[s.committed], s.req.block_hashes[s.committed]);
        s.committed += 1;
    }
}

fn record_token(s: &mut Seq, end: f64, c: &mut Counters, samples: &mut Vec<Sample>) {
    c.generation_tokens += 1;
    if s.first_token.is_none() {
        s.first_token = Some(end);
        c.prompt_tokens += u64::from(s.req.prompt_tokens);
        samples.push(Sample::Ttft(end - s.req.arrival));
        samples.push(Sample::Queue(
            s.first_scheduled.unwrap_or(end) - s.req.arrival,
        ));
    } else {
        samples.push(Sample::Itl(end - s.last_token));
    }
    s.last_token = end;
}

fn record_finish(s: &Seq, end: f64, samples: &mut Vec<Sample>) {
    let first_token = s.first_token.unwrap_or(end);
    let scheduled = s.first_scheduled.unwrap_or(end);
    samples.push(Sample::E2e(end - s.req.arrival));
    samples.push(Sample::Prefill(first_token - scheduled));
    samples.push(Sample::Decode(end - first_token));
    samples.push(Sample::Inference(end - scheduled));
    if s.generated > 1 {
        samples.push(Sample::Tpot(
            (end - first_token) / f64::from(s.generated - 1),
        ));
    }
}
