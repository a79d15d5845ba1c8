//! Derived metrics over a sliding window of scrapes: counter rates with reset
//! handling (as Prometheus' `rate`), histogram quantiles from bucket deltas
//! (as Prometheus' `histogram_quantile` over `increase(..._bucket)`).

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{Buckets, ServerSample};

/// A scrape with its times: `t` on a monotonic clock (s), `wall_ms` for storage.
#[derive(Debug, Clone)]
pub struct TimedSample {
    /// Seconds since the monitor's monotonic origin.
    pub t: f64,
    /// Unix time in milliseconds.
    pub wall_ms: i64,
    /// The mapped scrape.
    pub sample: ServerSample,
}

/// The last scrapes of one server, trimmed to a window.
#[derive(Debug, Clone)]
pub struct Window {
    span: f64,
    samples: VecDeque<TimedSample>,
}

impl Window {
    /// An empty window spanning `span`.
    pub fn new(span: Duration) -> Self {
        Self {
            span: span.as_secs_f64(),
            samples: VecDeque::new(),
        }
    }

    /// Changes the span (samples older than the new span are dropped on the next push).
    pub fn set_span(&mut self, span: Duration) {
        self.span = span.as_secs_f64();
    }

    /// Adds a scrape and drops the ones no longer needed: samples older than
    /// the span, except the newest of those (the base of the first delta).
    pub fn push(&mut self, s: TimedSample) {
        let cutoff = s.t - self.span;
        self.samples.push_back(s);
        while self.samples.len() > 2 && self.samples.get(1).is_some_and(|n| n.t <= cutoff) {
            self.samples.pop_front();
        }
    }

    /// Samples, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &TimedSample> {
        self.samples.iter()
    }

    /// Derives every metric from the window.
    pub fn derive(&self) -> Option<Derived> {
        let last = self.samples.back()?;
        let first = self.samples.front()?;
        let dt = last.t - first.t;
        let rate = |f: fn(&ServerSample) -> Option<f64>| {
            let inc = increase(self.samples.iter().map(|s| f(&s.sample)))?;
            (dt > 0.0).then(|| inc / dt)
        };
        let s = &last.sample;
        let q = |f: fn(&ServerSample) -> Option<&Buckets>| Quantiles::of(&self.bucket_delta(f)?);
        Some(Derived {
            wall_ms: last.wall_ms,
            window_s: dt,
            running: s.running,
            waiting: s.waiting,
            kv_cache_usage: s.kv_cache_usage,
            prompt_tokens_per_s: rate(|s| s.prompt_tokens),
            generation_tokens_per_s: rate(|s| s.generation_tokens),
            requests_per_s: rate(|s| s.requests_ok),
            failed_requests_per_s: rate(|s| s.requests_failed),
            preemptions_per_s: rate(|s| s.preemptions),
            prefix_cache_hit_rate: self.hit_rate().or(s.prefix_hit_rate_gauge),
            ttft: q(|s| s.ttft.as_ref()),
            itl: q(|s| s.itl.as_ref()),
            e2e: q(|s| s.e2e.as_ref()),
            queue: q(|s| s.queue.as_ref()),
            gpu_util: s.gpu_util,
            gpu_mem_used_bytes: s.gpu_mem_used,
            gpu_mem_total_bytes: s.gpu_mem_total,
            loaded_models: s.loaded_models,
            installed_models: s.installed_models,
            model_vram_bytes: s.model_vram,
        })
    }

    fn hit_rate(&self) -> Option<f64> {
        let queries = increase(self.samples.iter().map(|s| s.sample.prefix_queries))?;
        let hits = increase(self.samples.iter().map(|s| s.sample.prefix_hits))?;
        (queries > 0.0).then(|| hits / queries)
    }

    /// Bucket increases over the window, reset-aware pair by pair.
    fn bucket_delta(&self, f: fn(&ServerSample) -> Option<&Buckets>) -> Option<Buckets> {
        let mut acc: Option<Buckets> = None;
        let mut prev: Option<&Buckets> = None;
        for cur in self.samples.iter().filter_map(|s| f(&s.sample)) {
            if let Some(p) = prev {
                let d = pair_delta(p, cur);
                acc = Some(match acc {
                    Some(a) if a.bounds == d.bounds => add(a, &d),
                    _ => d,
                });
            }
            prev = Some(cur);
        }
        acc
    }
}

/// Increase of a counter over a series, as Prometheus computes it: a drop
/// means the counter restarted from zero, so the new value is all increase.
/// `None` when fewer than two points have a value.
pub fn increase(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut prev: Option<f64> = None;
    let mut total = 0.0;
    let mut pairs = 0;
    for v in values.flatten() {
        if let Some(p) = prev {
            total += if v < p { v } else { v - p };
            pairs += 1;
        }
        prev = Some(v);
    }
    (pairs > 0).then_some(total)
}

/// Bucket increase from `p` to `c`; a reset (count dropped, or bucket layout
/// changed) makes `c` the whole increase.
fn pair_delta(p: &Buckets, c: &Buckets) -> Buckets {
    if p.bounds != c.bounds
        || c.count < p.count
        || c.cumulative.iter().zip(&p.cumulative).any(|(a, b)| a < b)
    {
        return c.clone();
    }
    Buckets {
        bounds: c.bounds.clone(),
        cumulative: c
            .cumulative
            .iter()
            .zip(&p.cumulative)
            .map(|(a, b)| a - b)
            .collect(),
        sum: c.sum - p.sum,
        count: c.count - p.count,
    }
}

fn add(mut a: Buckets, d: &Buckets) -> Buckets {
    for (x, y) in a.cumulative.iter_mut().zip(&d.cumulative) {
        *x += y;
    }
    a.sum += d.sum;
    a.count += d.count;
    a
}

/// Prometheus' `histogram_quantile(q, buckets)`: linear interpolation inside
/// the bucket holding rank `q·total`; the first bucket starts at 0 (if its
/// bound is positive); a rank in the `+Inf` bucket returns the highest finite
/// bound. `None` (Prometheus: NaN) when there are no observations or no `+Inf`.
pub fn histogram_quantile(q: f64, b: &Buckets) -> Option<f64> {
    let n = b.bounds.len();
    if n < 2 || b.bounds[n - 1] != f64::INFINITY || !(0.0..=1.0).contains(&q) {
        return None;
    }
    // Ensure monotonic cumulative counts (Prometheus does the same repair).
    let mut cum = b.cumulative.clone();
    for i in 1..n {
        cum[i] = cum[i].max(cum[i - 1]);
    }
    let total = cum[n - 1];
    if total <= 0.0 {
        return None;
    }
    let mut rank = q * total;
    let i = cum.iter().position(|&c| c >= rank).unwrap_or(n - 1);
    if i == n - 1 {
        return Some(b.bounds[n - 2]);
    }
    if i == 0 && b.bounds[0] <= 0.0 {
        return Some(b.bounds[0]);
    }
    let (start, mut count) = (if i == 0 { 0.0 } else { b.bounds[i - 1] }, cum[i]);
    if i > 0 {
        count -= cum[i - 1];
        rank -= cum[i - 1];
    }
    Some(start + (b.bounds[i] - start) * (rank / count))
}

/// p50 / p95 / p99 and the mean of a windowed histogram (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// `Δsum / Δcount`.
    pub mean: f64,
    /// Observations in the window.
    pub count: f64,
}

impl Quantiles {
    /// Quantiles of a bucket delta; `None` when it holds no observation.
    pub fn of(b: &Buckets) -> Option<Self> {
        Some(Self {
            p50: histogram_quantile(0.5, b)?,
            p95: histogram_quantile(0.95, b)?,
            p99: histogram_quantile(0.99, b)?,
            mean: if b.count > 0.0 { b.sum / b.count } else { 0.0 },
            count: b.count,
        })
    }
}

/// Everything the monitor shows, stores and alerts on, for one server at one
/// time. Latencies in seconds, usage as fractions 0–1.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Derived {
    /// Unix time of the newest scrape (ms).
    pub wall_ms: i64,
    /// Time between the oldest and newest scrape used (s).
    pub window_s: f64,
    /// Requests running.
    pub running: Option<f64>,
    /// Requests waiting.
    pub waiting: Option<f64>,
    /// KV-cache usage (0–1).
    pub kv_cache_usage: Option<f64>,
    /// Prompt tokens/s.
    pub prompt_tokens_per_s: Option<f64>,
    /// Generated tokens/s.
    pub generation_tokens_per_s: Option<f64>,
    /// Successful requests/s.
    pub requests_per_s: Option<f64>,
    /// Failed or aborted requests/s.
    pub failed_requests_per_s: Option<f64>,
    /// Preemptions/s.
    pub preemptions_per_s: Option<f64>,
    /// Prefix-cache hit rate over the window (0–1).
    pub prefix_cache_hit_rate: Option<f64>,
    /// Time to first token (s).
    pub ttft: Option<Quantiles>,
    /// Inter-token latency (s).
    pub itl: Option<Quantiles>,
    /// End-to-end latency (s).
    pub e2e: Option<Quantiles>,
    /// Queue time (s).
    pub queue: Option<Quantiles>,
    /// GPU utilisation (0–1).
    pub gpu_util: Option<f64>,
    /// GPU memory used (bytes).
    pub gpu_mem_used_bytes: Option<f64>,
    /// GPU memory total (bytes).
    pub gpu_mem_total_bytes: Option<f64>,
    /// Models loaded in memory (Ollama).
    pub loaded_models: Option<f64>,
    /// Models installed (Ollama).
    pub installed_models: Option<f64>,
    /// VRAM held by loaded models (bytes, Ollama).
    pub model_vram_bytes: Option<f64>,
}

impl Derived {
    /// Flat `(metric, value)` pairs: the names used by history and alert rules.
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = [
            ("running_requests", self.running),
            ("waiting_requests", self.waiting),
            ("kv_cache_usage", self.kv_cache_usage),
            ("prompt_tokens_per_s", self.prompt_tokens_per_s),
            ("generation_tokens_per_s", self.generation_tokens_per_s),
            ("requests_per_s", self.requests_per_s),
            ("failed_requests_per_s", self.failed_requests_per_s),
            ("preemptions_per_s", self.preemptions_per_s),
            ("prefix_cache_hit_rate", self.prefix_cache_hit_rate),
            ("gpu_util", self.gpu_util),
            ("gpu_mem_used_bytes", self.gpu_mem_used_bytes),
            ("gpu_mem_total_bytes", self.gpu_mem_total_bytes),
            ("loaded_models", self.loaded_models),
            ("installed_models", self.installed_models),
            ("model_vram_bytes", self.model_vram_bytes),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.filter(|x| x.is_finite()).map(|x| (k.to_owned(), x)))
        .collect();
        for (name, q) in [
            ("ttft", self.ttft),
            ("itl", self.itl),
            ("e2e", self.e2e),
            ("queue", self.queue),
        ] {
            if let Some(q) = q {
                out.push((format!("{name}_p50"), q.p50));
                out.push((format!("{name}_p95"), q.p95));
                out.push((format!("{name}_p99"), q.p99));
            }
        }
        out
    }

    /// The value of one metric by its flat name.
    pub fn get(&self, metric: &str) -> Option<f64> {
        self.metrics()
            .into_iter()
            .find(|(k, _)| k == metric)
            .map(|(_, v)| v)
    }
}

/// Every metric name [`Derived::metrics`] can produce.
pub const METRIC_NAMES: &[&str] = &[
    "running_requests",
    "waiting_requests",
    "kv_cache_usage",
    "prompt_tokens_per_s",
    "generation_tokens_per_s",
    "requests_per_s",
    "failed_requests_per_s",
    "preemptions_per_s",
    "prefix_cache_hit_rate",
    "gpu_util",
    "gpu_mem_used_bytes",
    "gpu_mem_total_bytes",
    "loaded_models",
    "installed_models",
    "model_vram_bytes",
    "ttft_p50",
    "ttft_p95",
    "ttft_p99",
    "itl_p50",
    "itl_p95",
    "itl_p99",
    "e2e_p50",
    "e2e_p95",
    "e2e_p99",
    "queue_p50",
    "queue_p95",
    "queue_p99",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(bounds: &[f64], cum: &[f64]) -> Buckets {
        Buckets {
            bounds: bounds.to_vec(),
            cumulative: cum.to_vec(),
            sum: 0.0,
            count: *cum.last().unwrap(),
        }
    }

    #[test]
    fn increase_handles_counter_resets() {
        // 10 → 30 (+20), reset to 5 (+5), 5 → 12 (+7) = 32
        let v = [Some(10.0), Some(30.0), Some(5.0), Some(12.0)];
        assert_eq!(increase(v.into_iter()), Some(32.0));
        assert_eq!(increase([Some(3.0)].into_iter()), None);
        assert_eq!(
            increase([None, Some(1.0), None, Some(4.0)].into_iter()),
            Some(3.0)
        );
    }

    #[test]
    fn quantile_matches_hand_computed_prometheus_values() {
        // bounds 0.1, 0.5, 1, +Inf with 10, 30, 10, 0 observations (cumulative 10, 40, 50, 50)
        let b = buckets(&[0.1, 0.5, 1.0, f64::INFINITY], &[10.0, 40.0, 50.0, 50.0]);
        // p50: rank 25 in (0.1, 0.5], 15 of 30 → 0.1 + 0.4·0.5 = 0.3
        assert!((histogram_quantile(0.5, &b).unwrap() - 0.3).abs() < 1e-12);
        // p95: rank 47.5 in (0.5, 1], 7.5 of 10 → 0.875
        assert!((histogram_quantile(0.95, &b).unwrap() - 0.875).abs() < 1e-12);
        // p10: rank 5 in the first bucket, which starts at 0 → 0.05
        assert!((histogram_quantile(0.1, &b).unwrap() - 0.05).abs() < 1e-12);
        // a rank in +Inf returns the highest finite bound
        let tail = buckets(&[0.1, 1.0, f64::INFINITY], &[1.0, 2.0, 10.0]);
        assert_eq!(histogram_quantile(0.99, &tail), Some(1.0));
        assert_eq!(
            histogram_quantile(0.5, &buckets(&[1.0, f64::INFINITY], &[0.0, 0.0])),
            None
        );
        assert_eq!(
            histogram_quantile(0.5, &buckets(&[1.0, 2.0], &[1.0, 2.0])),
            None
        );
    }

    fn sample(t: f64, gen: f64, ttft: &[f64]) -> TimedSample {
        let mut s = ServerSample {
            generation_tokens: Some(gen),
            ..ServerSample::default()
        };
        let b = buckets(&[0.1, 0.5, 1.0, f64::INFINITY], ttft);
        s.ttft = Some(b);
        TimedSample {
            t,
            wall_ms: (t * 1000.0) as i64,
            sample: s,
        }
    }

    #[test]
    fn window_rates_and_quantiles_from_bucket_deltas() {
        let mut w = Window::new(Duration::from_secs(10));
        // old observations (all < 0.1) must not count: only the deltas do.
        w.push(sample(0.0, 1000.0, &[100.0, 100.0, 100.0, 100.0]));
        w.push(sample(2.0, 1200.0, &[100.0, 130.0, 130.0, 130.0]));
        w.push(sample(4.0, 1500.0, &[110.0, 140.0, 150.0, 150.0]));
        let d = w.derive().unwrap();
        assert_eq!(d.generation_tokens_per_s, Some(125.0)); // 500 tokens / 4 s
                                                            // delta: 10, 30, 10, 0 → the hand-computed histogram above
        let q = d.ttft.unwrap();
        assert!((q.p50 - 0.3).abs() < 1e-12 && (q.p95 - 0.875).abs() < 1e-12);
        assert_eq!(q.count, 50.0);
    }

    #[test]
    fn window_survives_a_server_restart() {
        let mut w = Window::new(Duration::from_secs(60));
        w.push(sample(0.0, 1000.0, &[5.0, 5.0, 5.0, 5.0]));
        w.push(sample(2.0, 1100.0, &[5.0, 5.0, 5.0, 5.0]));
        w.push(sample(4.0, 50.0, &[0.0, 2.0, 2.0, 2.0])); // restarted
        let d = w.derive().unwrap();
        assert_eq!(d.generation_tokens_per_s, Some(150.0 / 4.0)); // +100, then +50
        let q = d.ttft.unwrap();
        assert_eq!(q.count, 2.0);
        assert!((q.p50 - 0.3).abs() < 1e-12); // rank 1 of 2 in (0.1, 0.5]
    }

    #[test]
    fn window_trims_but_keeps_a_base_sample() {
        let mut w = Window::new(Duration::from_secs(3));
        for i in 0..10 {
            w.push(sample(
                f64::from(i),
                f64::from(i) * 10.0,
                &[0.0, 0.0, 0.0, 0.0],
            ));
        }
        let ts: Vec<f64> = w.samples().map(|s| s.t).collect();
        assert_eq!(ts, vec![6.0, 7.0, 8.0, 9.0]);
        assert_eq!(w.derive().unwrap().generation_tokens_per_s, Some(10.0));
    }
}
