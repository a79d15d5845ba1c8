//! The simulator's Prometheus `/metrics`, with vLLM's metric names.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// vLLM's bucket bounds for `vllm:time_to_first_token_seconds` (vllm/v1/metrics/loggers.py).
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's bucket bounds for request-level latency histograms (e2e).
const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// A cumulative Prometheus histogram.
#[derive(Debug, Clone)]
pub struct PromHistogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl PromHistogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
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

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b:?}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Live counters and histograms of the simulated server.
pub struct SimMetrics {
    running: AtomicI64,
    waiting: AtomicI64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    success: AtomicU64,
    ttft: Mutex<PromHistogram>,
    e2e: Mutex<PromHistogram>,
}

impl Default for SimMetrics {
    fn default() -> Self {
        Self {
            running: AtomicI64::new(0),
            waiting: AtomicI64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            success: AtomicU64::new(0),
            ttft: Mutex::new(PromHistogram::new(TTFT_BUCKETS)),
            e2e: Mutex::new(PromHistogram::new(E2E_BUCKETS)),
        }
    }
}

impl SimMetrics {
    /// A request entered the running batch.
    pub fn start_request(&self, prompt_tokens: u32) {
        self.running.fetch_add(1, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add(u64::from(prompt_tokens), Ordering::Relaxed);
    }

    /// One token was emitted.
    pub fn token(&self) {
        self.generation_tokens.fetch_add(1, Ordering::Relaxed);
    }

    /// The first token of a request went out after `ttft`.
    pub fn first_token(&self, ttft: Duration) {
        lock(&self.ttft).observe(ttft.as_secs_f64());
    }

    /// A request left the batch; `finished` is false when the client went away.
    pub fn end_request(&self, e2e: Duration, finished: bool) {
        self.running.fetch_sub(1, Ordering::Relaxed);
        if finished {
            self.success.fetch_add(1, Ordering::Relaxed);
            lock(&self.e2e).observe(e2e.as_secs_f64());
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self, model: &str) -> String {
        let labels = format!("model_name=\"{}\"", escape_label(model));
        let mut out = String::with_capacity(4096);
        gauge(
            &mut out,
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            &labels,
            self.running.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            &labels,
            self.waiting.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "vllm:prompt_tokens_total",
            "Number of prefill tokens processed.",
            &labels,
            self.prompt_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "vllm:generation_tokens_total",
            "Number of generation tokens processed.",
            &labels,
            self.generation_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "vllm:request_success_total",
            "Count of successfully processed requests.",
            &labels,
            self.success.load(Ordering::Relaxed),
        );
        lock(&self.ttft).render(
            &mut out,
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            &labels,
        );
        lock(&self.e2e).render(
            &mut out,
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            &labels,
        );
        out
    }
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

    #[test]
    fn histogram_is_cumulative_with_inf_bucket() {
        let m = SimMetrics::default();
        m.start_request(10);
        m.first_token(Duration::from_millis(100));
        m.first_token(Duration::from_millis(300));
        m.end_request(Duration::from_millis(900), true);
        let text = m.render("m");
        assert!(text.contains("vllm:prompt_tokens_total{model_name=\"m\"} 10"));
        assert!(
            text.contains("vllm:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.1\"} 1")
        );
        assert!(
            text.contains("vllm:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.5\"} 2")
        );
        assert!(text
            .contains("vllm:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 2"));
        assert!(text.contains("vllm:e2e_request_latency_seconds_count{model_name=\"m\"} 1"));
        assert!(text.contains("vllm:num_requests_running{model_name=\"m\"} 0"));
    }
}
