//! Statistics: HDR histograms, mergeable run statistics, the aggregator.

pub mod aggregator;
mod histogram;

pub use aggregator::{Aggregator, Snapshot};
pub use histogram::{Distribution, LatencyHistogram};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::engine::record::{ErrorClass, RequestRecord, TokenSource};

/// Everything the run's summary is computed from. Mergeable, so per-shard or
/// per-step statistics can be combined.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Time to first token (µs).
    pub ttft: LatencyHistogram,
    /// Every gap between successive content chunks (µs).
    pub itl: LatencyHistogram,
    /// Per-request time per output token (µs).
    pub tpot: LatencyHistogram,
    /// End-to-end latency (µs).
    pub e2e: LatencyHistogram,
    /// Per-request output tokens/s, stored ×1000 for three decimals.
    pub output_rate_milli: LatencyHistogram,
    /// How late requests left relative to their schedule (µs): client self-check.
    pub send_lag: LatencyHistogram,
    /// Measured requests that succeeded.
    pub ok: u64,
    /// Measured requests that failed, by class (cancellations excluded).
    pub errors: BTreeMap<String, u64>,
    /// One sample message per error class.
    pub error_samples: BTreeMap<String, String>,
    /// Requests cut by the end of the run.
    pub cancelled: u64,
    /// Warmup requests seen (excluded from everything else).
    pub warmup: u64,
    /// Prompt tokens of successful measured requests.
    pub input_tokens: u64,
    /// Output tokens of successful measured requests.
    pub output_tokens: u64,
    /// Successful requests whose output count came from server usage.
    pub usage_counted: u64,
    /// Successful requests whose output count came from counting chunks.
    pub chunk_counted: u64,
    /// Sum of in-flight time of measured requests, for Little's-law concurrency.
    pub busy: Duration,
    /// Earliest scheduled time among measured requests.
    pub window_start: Option<Instant>,
    /// Latest end among measured requests.
    pub window_end: Option<Instant>,
    /// Stream messages parsed by the client (measured requests).
    pub messages: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            ttft: LatencyHistogram::new(),
            itl: LatencyHistogram::new(),
            tpot: LatencyHistogram::new(),
            e2e: LatencyHistogram::new(),
            output_rate_milli: LatencyHistogram::new(),
            send_lag: LatencyHistogram::new(),
            ok: 0,
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            cancelled: 0,
            warmup: 0,
            input_tokens: 0,
            output_tokens: 0,
            usage_counted: 0,
            chunk_counted: 0,
            busy: Duration::ZERO,
            window_start: None,
            window_end: None,
            messages: 0,
        }
    }
}

impl Stats {
    /// The latency histograms by name, for storage (values in µs).
    pub fn histograms(&self) -> Vec<(String, hdrhistogram::Histogram<u64>)> {
        [
            ("e2e", &self.e2e),
            ("itl", &self.itl),
            ("tpot", &self.tpot),
            ("ttft", &self.ttft),
        ]
        .into_iter()
        .map(|(n, h)| (n.to_owned(), h.inner().clone()))
        .collect()
    }

    /// Failed measured requests (all classes but cancellation).
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Length of the measured window: first scheduled send to last end.
    pub fn window(&self) -> Duration {
        match (self.window_start, self.window_end) {
            (Some(s), Some(e)) => e.saturating_duration_since(s),
            _ => Duration::ZERO,
        }
    }

    /// Adds one request's record. Warmup records only count as warmup.
    pub fn ingest(&mut self, r: &RequestRecord, requested_input_tokens: u32) {
        if r.warmup {
            self.warmup += 1;
            return;
        }
        if r.error == Some(ErrorClass::Cancelled) {
            self.cancelled += 1;
            return;
        }
        self.extend_window(r);
        self.messages += u64::from(r.messages);
        self.send_lag.record(r.send_lag());
        match r.error {
            Some(class) => self.ingest_error(class, r),
            None => self.ingest_ok(r, requested_input_tokens),
        }
    }

    fn extend_window(&mut self, r: &RequestRecord) {
        self.window_start = Some(
            self.window_start
                .map_or(r.scheduled, |s| s.min(r.scheduled)),
        );
        self.window_end = Some(self.window_end.map_or(r.end, |e| e.max(r.end)));
        self.busy += r.end.saturating_duration_since(r.sent);
    }

    fn ingest_error(&mut self, class: ErrorClass, r: &RequestRecord) {
        let key = class.key();
        *self.errors.entry(key.clone()).or_default() += 1;
        if let Some(sample) = &r.error_sample {
            self.error_samples
                .entry(key)
                .or_insert_with(|| sample.clone());
        }
    }

    fn ingest_ok(&mut self, r: &RequestRecord, requested_input_tokens: u32) {
        self.ok += 1;
        let e2e = r.e2e();
        self.e2e.record(e2e);
        if let Some(t) = r.ttft() {
            self.ttft.record(t);
        }
        for gap in r.itl_gaps() {
            self.itl.record(gap);
        }
        if let Some(t) = r.tpot() {
            self.tpot.record(t);
        }
        let (out, source) = r.output_tokens();
        match source {
            TokenSource::Usage => self.usage_counted += 1,
            TokenSource::Chunks => self.chunk_counted += 1,
        }
        self.output_tokens += out;
        self.input_tokens += u64::from(r.usage.input_tokens.unwrap_or(requested_input_tokens));
        if e2e > Duration::ZERO && out > 0 {
            let rate = out as f64 / e2e.as_secs_f64();
            self.output_rate_milli.record_value((rate * 1000.0) as u64);
        }
    }

    /// Folds another set of statistics into this one.
    pub fn merge(&mut self, o: &Stats) {
        for (a, b) in [
            (&mut self.ttft, &o.ttft),
            (&mut self.itl, &o.itl),
            (&mut self.tpot, &o.tpot),
            (&mut self.e2e, &o.e2e),
            (&mut self.output_rate_milli, &o.output_rate_milli),
            (&mut self.send_lag, &o.send_lag),
        ] {
            a.merge(b);
        }
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.error_samples {
            self.error_samples
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        self.ok += o.ok;
        self.cancelled += o.cancelled;
        self.warmup += o.warmup;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.usage_counted += o.usage_counted;
        self.chunk_counted += o.chunk_counted;
        self.busy += o.busy;
        self.messages += o.messages;
        self.window_start = min_opt(self.window_start, o.window_start);
        self.window_end = max_opt(self.window_end, o.window_end);
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

fn max_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, t0: Instant, ttft_ms: u64, tokens: u64) -> RequestRecord {
        let ms = Duration::from_millis;
        let mut r = RequestRecord::new(seq, false, t0, 8);
        r.sent = t0;
        for k in 0..tokens {
            r.token_times.push(t0 + ms(ttft_ms + 10 * k));
        }
        r.end = t0 + ms(ttft_ms + 10 * (tokens - 1));
        r
    }

    #[test]
    fn ingest_counts_every_gap_and_merges() {
        let t0 = Instant::now();
        let mut a = Stats::default();
        a.ingest(&record(0, t0, 100, 5), 10);
        let mut b = Stats::default();
        b.ingest(&record(1, t0, 200, 3), 10);
        let mut failed = record(2, t0, 50, 2);
        failed.error = Some(ErrorClass::Http(503));
        failed.error_sample = Some("busy".into());
        b.ingest(&failed, 10);
        a.merge(&b);
        assert_eq!(a.ok, 2);
        assert_eq!(a.itl.count(), 4 + 2);
        assert_eq!(a.failed(), 1);
        assert_eq!(a.errors["http_503"], 1);
        assert_eq!(a.output_tokens, 8);
        assert_eq!(a.chunk_counted, 2);
        assert_eq!(a.window(), Duration::from_millis(220));
    }

    #[test]
    fn warmup_and_cancelled_are_excluded() {
        let t0 = Instant::now();
        let mut s = Stats::default();
        let mut w = record(0, t0, 100, 5);
        w.warmup = true;
        s.ingest(&w, 1);
        let mut c = record(1, t0, 100, 5);
        c.error = Some(ErrorClass::Cancelled);
        s.ingest(&c, 1);
        assert_eq!((s.ok, s.failed(), s.warmup, s.cancelled), (0, 0, 1, 1));
        assert_eq!(s.ttft.count(), 0);
    }
}
