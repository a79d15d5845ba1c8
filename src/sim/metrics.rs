//! The simulator's Prometheus `/metrics`, with the imitated engine's metric
//! names, types and bucket bounds (vLLM by default; TGI, llama.cpp and SGLang
//! selected by [`EngineFlavor`]).
//!
//! Two sources feed it. In fixed-delay mode the protocol front-end reports
//! requests as it streams them (`start_request`, `first_token`, ...). With the
//! batching engine model the engine loop is the source of truth, as in the
//! real engines: it publishes its state after every step (`set_engine`) and
//! its latency samples (`observe`), and the front-end calls become no-ops.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::engine::scheduler::{EngineSnapshot, Sample};
use super::EngineFlavor;

/// vLLM's bucket bounds for `vllm:time_to_first_token_seconds` (vllm/v1/metrics/loggers.py).
const VLLM_TTFT: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's bounds for inter-token latency and time per output token.
const VLLM_ITL: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's bounds for request-level latency histograms (e2e, queue, prefill, ...).
const VLLM_REQUEST: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// SGLang's bounds (python/sglang/srt/metrics/collector.py).
const SGLANG_TTFT: &[f64] = &[
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0,
    400.0,
];
const SGLANG_ITL: &[f64] = &[
    0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.08, 0.1, 0.2,
    0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0,
];
const SGLANG_E2E: &[f64] = &[
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0,
    400.0, 600.0, 1200.0, 1800.0, 2400.0,
];
const SGLANG_QUEUE: &[f64] = &[
    0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0,
    80.0, 90.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 900.0, 1000.0, 1200.0,
    1400.0, 1600.0, 1800.0, 2000.0, 2500.0, 3000.0,
];

/// TGI's duration buckets: 0.0001·1.5ⁿ for n = 1..=35 (router/src/server.rs).
fn tgi_buckets() -> Vec<f64> {
    let mut v = 0.0001;
    (0..35)
        .map(|_| {
            v *= 1.5;
            v
        })
        .collect()
}

/// The latency histograms every flavor keeps (rendered where the engine has them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hist {
    /// Time to first token.
    Ttft = 0,
    /// Inter-token latency.
    Itl,
    /// End-to-end latency.
    E2e,
    /// Queue time.
    Queue,
    /// Prefill time.
    Prefill,
    /// Decode time.
    Decode,
    /// Inference (prefill + decode) time.
    Inference,
    /// Per-request time per output token.
    Tpot,
}

/// Injected faults, counted in `throtl_sim_faults_injected_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// 429 from `--rate-limit`.
    RateLimited = 0,
    /// 503 from `--max-queue`.
    QueueFull,
    /// 500 from `--fail-rate`.
    Failed,
    /// Connection dropped mid-stream (`--disconnect-rate`).
    Disconnected,
    /// Corrupt chunk (`--malformed-rate`).
    Malformed,
    /// Pause mid-stream (`--stall`).
    Stalled,
    /// Request held by `--cold-start`.
    ColdStart,
}

const FAULT_KINDS: [FaultKind; 7] = [
    FaultKind::RateLimited,
    FaultKind::QueueFull,
    FaultKind::Failed,
    FaultKind::Disconnected,
    FaultKind::Malformed,
    FaultKind::Stalled,
    FaultKind::ColdStart,
];

impl FaultKind {
    /// Label value.
    pub fn key(self) -> &'static str {
        match self {
            FaultKind::RateLimited => "rate_limited",
            FaultKind::QueueFull => "queue_full",
            FaultKind::Failed => "failed",
            FaultKind::Disconnected => "disconnected",
            FaultKind::Malformed => "malformed",
            FaultKind::Stalled => "stalled",
            FaultKind::ColdStart => "cold_start",
        }
    }
}

/// What DCGM-style GPU metrics are computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuInfo {
    /// GPUs the model is sharded over.
    pub gpus: u32,
    /// Memory of one GPU, bytes.
    pub memory_bytes: f64,
    /// Weight bytes (whole model).
    pub weight_bytes: f64,
    /// Bytes of one KV block (whole model).
    pub kv_block_bytes: f64,
}

/// A cumulative Prometheus histogram.
#[derive(Debug, Clone)]
pub struct PromHistogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl PromHistogram {
    fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation in seconds.
    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    /// Sum of observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b:?}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

fn bounds(flavor: EngineFlavor, h: Hist) -> Vec<f64> {
    match flavor {
        EngineFlavor::Sglang => match h {
            Hist::Ttft => SGLANG_TTFT.to_vec(),
            Hist::Itl | Hist::Tpot => SGLANG_ITL.to_vec(),
            Hist::Queue => SGLANG_QUEUE.to_vec(),
            _ => SGLANG_E2E.to_vec(),
        },
        EngineFlavor::Tgi => tgi_buckets(),
        _ => match h {
            Hist::Ttft => VLLM_TTFT.to_vec(),
            Hist::Itl | Hist::Tpot => VLLM_ITL.to_vec(),
            _ => VLLM_REQUEST.to_vec(),
        },
    }
}

/// Live counters and histograms of the simulated server.
pub struct SimMetrics {
    flavor: EngineFlavor,
    engine_driven: bool,
    running: AtomicI64,
    waiting: AtomicI64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    success: AtomicU64,
    hists: Mutex<Vec<PromHistogram>>,
    engine: Mutex<EngineSnapshot>,
    faults: [AtomicU64; 7],
    gpu: Option<GpuInfo>,
    util: Mutex<(Instant, f64)>,
}

impl Default for SimMetrics {
    fn default() -> Self {
        Self::new(EngineFlavor::Vllm, false, None)
    }
}

/// Values rendered, from whichever source feeds the metrics.
struct View {
    running: i64,
    waiting: i64,
    kv_usage: f64,
    kv_used_tokens: u64,
    prompt: u64,
    generation: u64,
    success: u64,
    snap: EngineSnapshot,
}

impl SimMetrics {
    /// Metrics named after `flavor`; `engine_driven` when a batching engine
    /// model publishes its state; `gpu` adds DCGM-style GPU metrics.
    pub fn new(flavor: EngineFlavor, engine_driven: bool, gpu: Option<GpuInfo>) -> Self {
        let hs = [
            Hist::Ttft,
            Hist::Itl,
            Hist::E2e,
            Hist::Queue,
            Hist::Prefill,
            Hist::Decode,
            Hist::Inference,
            Hist::Tpot,
        ];
        Self {
            flavor,
            engine_driven,
            running: AtomicI64::new(0),
            waiting: AtomicI64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            success: AtomicU64::new(0),
            hists: Mutex::new(
                hs.iter()
                    .map(|&h| PromHistogram::new(&bounds(flavor, h)))
                    .collect(),
            ),
            engine: Mutex::new(EngineSnapshot::default()),
            faults: Default::default(),
            gpu,
            util: Mutex::new((Instant::now(), 0.0)),
        }
    }

    /// Whether the imitated engine serves `/metrics` at all.
    pub fn served(&self) -> bool {
        matches!(
            self.flavor,
            EngineFlavor::Vllm | EngineFlavor::Tgi | EngineFlavor::Llamacpp | EngineFlavor::Sglang
        )
    }

    /// A request entered the running batch (front-end; fixed-delay mode).
    pub fn start_request(&self, prompt_tokens: u32) {
        if self.engine_driven {
            return;
        }
        self.running.fetch_add(1, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add(u64::from(prompt_tokens), Ordering::Relaxed);
    }

    /// One token was emitted (front-end; fixed-delay mode).
    pub fn token(&self) {
        if !self.engine_driven {
            self.generation_tokens.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The first token of a request went out after `ttft` (front-end; fixed-delay mode).
    pub fn first_token(&self, ttft: Duration) {
        if !self.engine_driven {
            self.observe_hist(Hist::Ttft, ttft.as_secs_f64());
        }
    }

    /// A request left the batch; `finished` is false when the client went away
    /// (front-end; fixed-delay mode).
    pub fn end_request(&self, e2e: Duration, finished: bool) {
        if self.engine_driven {
            return;
        }
        self.running.fetch_sub(1, Ordering::Relaxed);
        if finished {
            self.success.fetch_add(1, Ordering::Relaxed);
            self.observe_hist(Hist::E2e, e2e.as_secs_f64());
        }
    }

    /// A latency sample from the engine model.
    pub fn observe(&self, s: Sample) {
        let (h, v) = match s {
            Sample::Ttft(v) => (Hist::Ttft, v),
            Sample::Itl(v) => (Hist::Itl, v),
            Sample::E2e(v) => (Hist::E2e, v),
            Sample::Queue(v) => (Hist::Queue, v),
            Sample::Prefill(v) => (Hist::Prefill, v),
            Sample::Decode(v) => (Hist::Decode, v),
            Sample::Inference(v) => (Hist::Inference, v),
            Sample::Tpot(v) => (Hist::Tpot, v),
        };
        self.observe_hist(h, v);
    }

    fn observe_hist(&self, h: Hist, v: f64) {
        lock(&self.hists)[h as usize].observe(v);
    }

    /// The engine model's state after a step.
    pub fn set_engine(&self, s: EngineSnapshot) {
        *lock(&self.engine) = s;
    }

    /// Counts one injected fault.
    pub fn fault(&self, kind: FaultKind) {
        self.faults[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Faults of `kind` injected so far.
    pub fn fault_count(&self, kind: FaultKind) -> u64 {
        self.faults[kind as usize].load(Ordering::Relaxed)
    }

    fn view(&self) -> View {
        let snap = *lock(&self.engine);
        if self.engine_driven {
            let c = snap.counters;
            View {
                running: i64::from(snap.running),
                waiting: i64::from(snap.waiting),
                kv_usage: if snap.kv_total_blocks == 0 {
                    0.0
                } else {
                    f64::from(snap.kv_used_blocks) / f64::from(snap.kv_total_blocks)
                },
                kv_used_tokens: u64::from(snap.kv_used_blocks) * u64::from(snap.block_size),
                prompt: c.prompt_tokens,
                generation: c.generation_tokens,
                success: c.finished,
                snap,
            }
        } else {
            View {
                running: self.running.load(Ordering::Relaxed),
                waiting: self.waiting.load(Ordering::Relaxed),
                kv_usage: 0.0,
                kv_used_tokens: 0,
                prompt: self.prompt_tokens.load(Ordering::Relaxed),
                generation: self.generation_tokens.load(Ordering::Relaxed),
                success: self.success.load(Ordering::Relaxed),
                snap,
            }
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self, model: &str) -> String {
        let v = self.view();
        let hists = lock(&self.hists).clone();
        let mut out = String::with_capacity(8192);
        let m = escape_label(model);
        match self.flavor {
            EngineFlavor::Sglang => render_sglang(&mut out, &v, &hists, &m),
            EngineFlavor::Tgi => render_tgi(&mut out, &v, &hists),
            EngineFlavor::Llamacpp => render_llamacpp(&mut out, &v, &hists),
            _ => render_vllm(&mut out, &v, &hists, &m),
        }
        self.render_faults(&mut out);
        if let Some(g) = self.gpu {
            self.render_dcgm(&mut out, &v, g, &m);
        }
        out
    }

    fn render_faults(&self, out: &mut String) {
        let name = "throtl_sim_faults_injected_total";
        let _ = writeln!(out, "# HELP {name} Faults injected by the simulator (--fail-rate, --rate-limit, ...).\n# TYPE {name} counter");
        for k in FAULT_KINDS {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{}\"}} {}",
                k.key(),
                self.fault_count(k)
            );
        }
    }

    fn render_dcgm(&self, out: &mut String, v: &View, g: GpuInfo, model: &str) {
        let util = {
            let mut u = lock(&self.util);
            let now = Instant::now();
            let wall = now.duration_since(u.0).as_secs_f64();
            let busy = v.snap.counters.busy_s - u.1;
            *u = (now, v.snap.counters.busy_s);
            if wall > 0.0 {
                (busy / wall * 100.0).clamp(0.0, 100.0)
            } else {
                0.0
            }
        };
        let gpus = f64::from(g.gpus.max(1));
        // vLLM allocates the whole KV pool at start-up, so framebuffer use is
        // weights + pool, whatever the pool's occupancy.
        let used = ((g.weight_bytes + g.kv_block_bytes * f64::from(v.snap.kv_total_blocks)) / gpus)
            .min(g.memory_bytes);
        let mib = |b: f64| (b / 1_048_576.0).round();
        for (name, help, val) in [
            (
                "DCGM_FI_DEV_GPU_UTIL",
                "GPU utilization (in %).",
                util.round(),
            ),
            (
                "DCGM_FI_DEV_FB_USED",
                "Framebuffer memory used (in MiB).",
                mib(used),
            ),
            (
                "DCGM_FI_DEV_FB_FREE",
                "Framebuffer memory free (in MiB).",
                mib(g.memory_bytes - used),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for gpu in 0..g.gpus.max(1) {
                let _ = writeln!(out, "{name}{{gpu=\"{gpu}\",modelName=\"{model}\"}} {val}");
            }
        }
    }
}

fn render_vllm(out: &mut String, v: &View, h: &[PromHistogram], model: &str) {
    let l = format!("engine=\"0\",model_name=\"{model}\"");
    let c = v.snap.counters;
    gauge(
        out,
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        &l,
        v.running,
    );
    gauge(
        out,
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        &l,
        v.waiting,
    );
    gauge_f(
        out,
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        &l,
        v.kv_usage,
    );
    counter(
        out,
        "vllm:prefix_cache_queries_total",
        "Prefix cache queries, in terms of number of queried tokens.",
        &l,
        c.prefix_queries,
    );
    counter(
        out,
        "vllm:prefix_cache_hits_total",
        "Prefix cache hits, in terms of number of cached tokens.",
        &l,
        c.prefix_hits,
    );
    counter(
        out,
        "vllm:num_preemptions_total",
        "Cumulative number of preemption from the engine.",
        &l,
        c.preemptions,
    );
    counter(
        out,
        "vllm:prompt_tokens_total",
        "Number of prefill tokens processed.",
        &l,
        v.prompt,
    );
    counter(
        out,
        "vllm:generation_tokens_total",
        "Number of generation tokens processed.",
        &l,
        v.generation,
    );
    let name = "vllm:request_success_total";
    let _ = writeln!(
        out,
        "# HELP {name} Count of successfully processed requests.\n# TYPE {name} counter"
    );
    for (reason, n) in [
        ("stop", 0),
        ("length", v.success),
        ("abort", c.aborted),
        ("error", 0),
    ] {
        let _ = writeln!(
            out,
            "{name}{{engine=\"0\",finished_reason=\"{reason}\",model_name=\"{model}\"}} {n}"
        );
    }
    for (hist, name, help) in [
        (
            Hist::Ttft,
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
        ),
        (
            Hist::Itl,
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
        ),
        (
            Hist::Tpot,
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
        ),
        (
            Hist::E2e,
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
        ),
        (
            Hist::Queue,
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
        ),
        (
            Hist::Inference,
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
        ),
        (
            Hist::Prefill,
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
        ),
        (
            Hist::Decode,
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        h[hist as usize].render(out, name, &l);
    }
}

fn render_sglang(out: &mut String, v: &View, h: &[PromHistogram], model: &str) {
    let l = format!("model_name=\"{model}\"");
    let c = v.snap.counters;
    counter(
        out,
        "sglang:prompt_tokens_total",
        "Number of prefill tokens processed.",
        &l,
        v.prompt,
    );
    counter(
        out,
        "sglang:generation_tokens_total",
        "Number of generation tokens processed.",
        &l,
        v.generation,
    );
    counter(
        out,
        "sglang:cached_tokens_total",
        "Number of cached prompt tokens.",
        &l,
        c.prefix_hits,
    );
    counter(
        out,
        "sglang:num_requests_total",
        "Number of requests processed.",
        &l,
        v.success,
    );
    counter(
        out,
        "sglang:num_aborted_requests_total",
        "Number of requests aborted.",
        &l,
        c.aborted,
    );
    for (hist, name, help) in [
        (
            Hist::Ttft,
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
        ),
        (
            Hist::Itl,
            "sglang:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
        ),
        (
            Hist::E2e,
            "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds",
        ),
        (
            Hist::Queue,
            "sglang:queue_time_seconds",
            "Histogram of queueing time in seconds.",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        h[hist as usize].render(out, name, &l);
    }
    gauge(
        out,
        "sglang:num_running_reqs",
        "The number of running requests.",
        &l,
        v.running,
    );
    gauge(
        out,
        "sglang:num_used_tokens",
        "The number of used tokens.",
        &l,
        v.kv_used_tokens as i64,
    );
    gauge_f(
        out,
        "sglang:token_usage",
        "The token usage.",
        &l,
        v.kv_usage,
    );
    gauge(
        out,
        "sglang:num_queue_reqs",
        "The number of requests in the waiting queue.",
        &l,
        v.waiting,
    );
    let hit_rate = if c.prefix_queries == 0 {
        0.0
    } else {
        c.prefix_hits as f64 / c.prefix_queries as f64
    };
    gauge_f(
        out,
        "sglang:cache_hit_rate",
        "The prefix cache hit rate.",
        &l,
        hit_rate,
    );
    gauge(
        out,
        "sglang:num_retracted_reqs",
        "The number of retracted requests.",
        &l,
        c.preemptions as i64,
    );
}

fn render_tgi(out: &mut String, v: &View, h: &[PromHistogram]) {
    let c = v.snap.counters;
    let _ = writeln!(out, "# TYPE tgi_batch_inference_count counter");
    let _ = writeln!(
        out,
        "tgi_batch_inference_count{{method=\"decode\"}} {}",
        c.steps - c.prefill_steps
    );
    let _ = writeln!(
        out,
        "tgi_batch_inference_count{{method=\"prefill\"}} {}\n",
        c.prefill_steps
    );
    for (name, kind, val) in [
        (
            "tgi_request_count",
            "counter",
            (v.success + c.aborted) as i64,
        ),
        ("tgi_request_success", "counter", v.success as i64),
        ("tgi_batch_current_size", "gauge", v.running),
        ("tgi_queue_size", "gauge", v.waiting),
    ] {
        let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {val}\n");
    }
    for (hist, name) in [
        (Hist::E2e, "tgi_request_duration"),
        (Hist::Inference, "tgi_request_inference_duration"),
        (Hist::Tpot, "tgi_request_mean_time_per_token_duration"),
        (Hist::Queue, "tgi_request_queue_duration"),
    ] {
        let _ = writeln!(out, "# TYPE {name} histogram");
        h[hist as usize].render(out, name, "");
        out.push('\n');
    }
}

fn render_llamacpp(out: &mut String, v: &View, h: &[PromHistogram]) {
    let c = v.snap.counters;
    let prompt_s = h[Hist::Prefill as usize].sum();
    let decode_s = h[Hist::Decode as usize].sum();
    let rate = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    let busy = if c.steps == 0 {
        0.0
    } else {
        c.batch_seqs as f64 / c.steps as f64
    };
    let plain = |out: &mut String, name: &str, kind: &str, help: &str, val: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {val}"
        );
    };
    plain(
        out,
        "llamacpp:prompt_tokens_total",
        "counter",
        "Number of prompt tokens processed, excluding cached tokens",
        (v.prompt.saturating_sub(c.prefix_hits)).to_string(),
    );
    plain(
        out,
        "llamacpp:prompt_tokens_cached_total",
        "counter",
        "Number of prompt tokens reused from the cache",
        c.prefix_hits.to_string(),
    );
    plain(
        out,
        "llamacpp:prompt_seconds_total",
        "counter",
        "Total time spent processing prompts",
        format!("{prompt_s}"),
    );
    plain(
        out,
        "llamacpp:tokens_predicted_total",
        "counter",
        "Number of generation tokens processed",
        v.generation.to_string(),
    );
    plain(
        out,
        "llamacpp:tokens_predicted_seconds_total",
        "counter",
        "Total time spent generating tokens",
        format!("{decode_s}"),
    );
    plain(
        out,
        "llamacpp:n_decode_total",
        "counter",
        "Total number of llama_decode() calls",
        c.steps.to_string(),
    );
    plain(
        out,
        "llamacpp:prompt_tokens_seconds",
        "gauge",
        "Average prompt throughput in tokens/s",
        format!("{}", rate(v.prompt, prompt_s)),
    );
    plain(
        out,
        "llamacpp:predicted_tokens_seconds",
        "gauge",
        "Average generation throughput in tokens/s",
        format!("{}", rate(v.generation, decode_s)),
    );
    plain(
        out,
        "llamacpp:requests_processing",
        "gauge",
        "Number of requests processing",
        v.running.to_string(),
    );
    plain(
        out,
        "llamacpp:requests_deferred",
        "gauge",
        "Number of requests deferred",
        v.waiting.to_string(),
    );
    plain(
        out,
        "llamacpp:n_busy_slots_per_decode",
        "gauge",
        "Average number of busy slots per llama_decode() call",
        format!("{busy}"),
    );
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn gauge(out: &mut String, name: &str, help: &str, labels: &str, v: i64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {v}"
    );
}

fn gauge_f(out: &mut String, name: &str, help: &str, labels: &str, v: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {v}"
    );
}

fn counter(out: &mut String, name: &str, help: &str, labels: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{labels}}} {v}"
    );
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::engine::scheduler::Counters;

    #[test]
    fn histogram_is_cumulative_with_inf_bucket() {
        let m = SimMetrics::default();
        m.start_request(10);
        m.first_token(Duration::from_millis(100));
        m.first_token(Duration::from_millis(300));
        m.end_request(Duration::from_millis(900), true);
        let text = m.render("m");
        let l = "engine=\"0\",model_name=\"m\"";
        assert!(text.contains(&format!("vllm:prompt_tokens_total{{{l}}} 10")));
        assert!(text.contains(&format!(
            "vllm:time_to_first_token_seconds_bucket{{{l},le=\"0.1\"}} 1"
        )));
        assert!(text.contains(&format!(
            "vllm:time_to_first_token_seconds_bucket{{{l},le=\"0.5\"}} 2"
        )));
        assert!(text.contains(&format!(
            "vllm:time_to_first_token_seconds_bucket{{{l},le=\"+Inf\"}} 2"
        )));
        assert!(text.contains(&format!("vllm:e2e_request_latency_seconds_count{{{l}}} 1")));
        assert!(text.contains(&format!("vllm:num_requests_running{{{l}}} 0")));
    }

    fn engine_metrics(flavor: EngineFlavor) -> SimMetrics {
        let m = SimMetrics::new(flavor, true, None);
        m.start_request(99); // ignored: the engine is the source
        m.set_engine(EngineSnapshot {
            running: 3,
            waiting: 2,
            kv_used_blocks: 25,
            kv_total_blocks: 100,
            block_size: 16,
            counters: Counters {
                prompt_tokens: 500,
                generation_tokens: 70,
                preemptions: 4,
                prefix_queries: 500,
                prefix_hits: 128,
                finished: 5,
                steps: 40,
                prefill_steps: 6,
                batch_seqs: 100,
                ..Counters::default()
            },
        });
        m.observe(Sample::Ttft(0.05));
        m.observe(Sample::Itl(0.02));
        m.fault(FaultKind::Failed);
        m
    }

    #[test]
    fn each_flavor_uses_its_engines_names() {
        let v = engine_metrics(EngineFlavor::Vllm).render("m");
        for needle in [
            "vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3",
            "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.25",
            "vllm:num_preemptions_total{engine=\"0\",model_name=\"m\"} 4",
            "vllm:prompt_tokens_total{engine=\"0\",model_name=\"m\"} 500",
            "vllm:inter_token_latency_seconds_count{engine=\"0\",model_name=\"m\"} 1",
            "throtl_sim_faults_injected_total{kind=\"failed\"} 1",
        ] {
            assert!(v.contains(needle), "{needle} missing in\n{v}");
        }
        let s = engine_metrics(EngineFlavor::Sglang).render("m");
        assert!(
            s.contains("sglang:num_queue_reqs{model_name=\"m\"} 2")
                && s.contains("sglang:cached_tokens_total{model_name=\"m\"} 128")
                && s.contains("sglang:token_usage{model_name=\"m\"} 0.25"),
            "{s}"
        );
        let t = engine_metrics(EngineFlavor::Tgi).render("m");
        assert!(
            t.contains("tgi_queue_size 2\n")
                && t.contains("tgi_batch_inference_count{method=\"prefill\"} 6")
                && !t.contains("# HELP tgi"),
            "{t}"
        );
        assert!(
            t.contains("tgi_request_duration_bucket{le=\"0.00015000000000000001\"} 0"),
            "{t}"
        );
        let l = engine_metrics(EngineFlavor::Llamacpp).render("m");
        assert!(
            l.contains("llamacpp:requests_deferred 2")
                && l.contains("llamacpp:prompt_tokens_cached_total 128")
                && l.contains("llamacpp:n_busy_slots_per_decode 2.5"),
            "{l}"
        );
        assert!(!SimMetrics::new(EngineFlavor::Ollama, true, None).served());
    }

    #[test]
    fn dcgm_reports_weights_plus_kv_pool() {
        let gpu = GpuInfo {
            gpus: 2,
            memory_bytes: 80.0 * 1_073_741_824.0,
            weight_bytes: 40.0 * 1_073_741_824.0,
            kv_block_bytes: 1_048_576.0,
        };
        let m = SimMetrics::new(EngineFlavor::Vllm, true, Some(gpu));
        m.set_engine(EngineSnapshot {
            kv_total_blocks: 2048,
            ..EngineSnapshot::default()
        });
        let t = m.render("m");
        // (40 GiB + 2 GiB) / 2 GPUs = 21 GiB = 21504 MiB on each of gpu 0 and 1.
        assert!(
            t.contains("DCGM_FI_DEV_FB_USED{gpu=\"1\",modelName=\"m\"} 21504"),
            "{t}"
        );
    }
}
