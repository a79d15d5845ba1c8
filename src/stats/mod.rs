//! Statistics: HDR histograms, mergeable run statistics, the aggregator.

pub mod aggregator;
mod histogram;
pub mod portable;
pub mod series;
pub mod server;

pub use aggregator::{Aggregator, Snapshot};
pub use histogram::{Distribution, LatencyHistogram};
pub use series::TimeSeries;

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
    /// Per-request mean inter-token latency (µs): the `itl` SLO's metric.
    pub itl_request: LatencyHistogram,
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
    /// Timings reported by the server itself (successful measured requests).
    pub server: server::ServerStats,
    /// How every measured arrival left: on time, late, or held by the cap.
    pub arrivals: ArrivalCounts,
    /// Prompt tokens counted locally vs. by the server.
    pub input_check: InputTokenCheck,
    /// Per-second time series (empty unless an origin was given).
    pub series: TimeSeries,
    /// Objectives each request is judged against (`--slo`).
    pub slos: Vec<crate::slo::Slo>,
    /// Successful measured requests meeting every objective.
    pub good: u64,
    /// Time inside the measured window when this run sent nothing because
    /// other targets had their turn (`bench --interleave`); not part of
    /// [`Stats::window`].
    pub idle: Duration,
    /// Failed warmup requests by class: reported on their own line, so
    /// fault counts reconcile with what the server injected.
    pub warmup_errors: BTreeMap<String, u64>,
    /// Attempts, retries and new connections of measured requests.
    pub attempts: AttemptCounts,
}

/// How measured requests were sent: attempts (`--retries`) and whether a
/// connection had to be opened for them. Cancelled requests are included.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct AttemptCounts {
    /// Measured requests that were sent.
    pub requests: u64,
    /// Attempts over those requests (≥ requests).
    pub attempts: u64,
    /// Requests sent more than once.
    pub retried: u64,
    /// Error classes of the attempts that were retried.
    pub retried_errors: BTreeMap<String, u64>,
    /// Requests whose final attempt opened a new TCP connection.
    pub new_connections: u64,
    /// Requests whose transport tells new from reused connections.
    pub connection_known: u64,
    /// Connect time of the requests that opened one (µs).
    pub connect_time: LatencyHistogram,
}

impl AttemptCounts {
    fn ingest(&mut self, r: &RequestRecord) {
        if r.not_sent {
            return;
        }
        self.requests += 1;
        self.attempts += u64::from(r.attempts);
        if r.attempts > 1 {
            self.retried += 1;
        }
        for e in &r.retried_errors {
            *self.retried_errors.entry(e.key()).or_default() += 1;
        }
        if let Some(c) = r.connect {
            self.connection_known += 1;
            if !c.is_zero() {
                self.new_connections += 1;
                self.connect_time.record(c);
            }
        }
    }

    fn merge(&mut self, o: &AttemptCounts) {
        self.requests += o.requests;
        self.attempts += o.attempts;
        self.retried += o.retried;
        for (k, v) in &o.retried_errors {
            *self.retried_errors.entry(k.clone()).or_default() += v;
        }
        self.new_connections += o.new_connections;
        self.connection_known += o.connection_known;
        self.connect_time.merge(&o.connect_time);
    }
}

/// A request is late when it left more than this after it was due.
pub const LATE_AFTER: Duration = Duration::from_millis(5);

/// How measured requests left relative to their schedule (cancelled ones included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArrivalCounts {
    /// Sent within [`LATE_AFTER`] of the scheduled time.
    pub on_time: u64,
    /// Sent later than that without waiting for a concurrency slot (client lag).
    pub late: u64,
    /// Waited for a `--max-concurrency` slot.
    pub held: u64,
    /// Due but never sent: the run was interrupted first (open loop).
    pub not_sent: u64,
    /// Earliest and latest scheduled instants.
    pub scheduled_span: Option<(Instant, Instant)>,
    /// Earliest and latest actual send instants.
    pub sent_span: Option<(Instant, Instant)>,
}

impl ArrivalCounts {
    fn ingest(&mut self, r: &RequestRecord) {
        self.scheduled_span = Some(widen(self.scheduled_span, r.scheduled, r.scheduled));
        if r.not_sent {
            self.not_sent += 1;
            return;
        }
        if r.held_by_cap {
            self.held += 1;
        } else if r.send_lag() > LATE_AFTER {
            self.late += 1;
        } else {
            self.on_time += 1;
        }
        self.sent_span = Some(widen(self.sent_span, r.sent, r.sent));
    }

    fn merge(&mut self, o: &ArrivalCounts) {
        self.on_time += o.on_time;
        self.late += o.late;
        self.held += o.held;
        self.not_sent += o.not_sent;
        if let Some((a, b)) = o.scheduled_span {
            self.scheduled_span = Some(widen(self.scheduled_span, a, b));
        }
        if let Some((a, b)) = o.sent_span {
            self.sent_span = Some(widen(self.sent_span, a, b));
        }
    }

    /// All measured arrivals, sent or not.
    pub fn total(&self) -> u64 {
        self.sent() + self.not_sent
    }

    /// Measured arrivals that were sent.
    pub fn sent(&self) -> u64 {
        self.on_time + self.late + self.held
    }

    /// Arrivals per second over a span: (n − 1) / (last − first).
    pub fn rate(n: u64, span: Option<(Instant, Instant)>) -> f64 {
        match span {
            Some((a, b)) if b > a && n > 1 => (n - 1) as f64 / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

fn widen(span: Option<(Instant, Instant)>, lo: Instant, hi: Instant) -> (Instant, Instant) {
    match span {
        Some((a, b)) => (a.min(lo), b.max(hi)),
        None => (lo, hi),
    }
}

/// Prompt tokens of successful requests where both the local tokenizer and
/// the server gave a count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputTokenCheck {
    /// Requests with both counts.
    pub compared: u64,
    /// Their prompt tokens counted locally.
    pub local: u64,
    /// Their prompt tokens as the server reported.
    pub server: u64,
}

impl InputTokenCheck {
    fn ingest(&mut self, r: &RequestRecord) {
        if let (Some(l), Some(s)) = (r.local_input_tokens, r.usage.input_tokens) {
            self.compared += 1;
            self.local += u64::from(l);
            self.server += u64::from(s);
        }
    }

    fn merge(&mut self, o: &InputTokenCheck) {
        self.compared += o.compared;
        self.local += o.local;
        self.server += o.server;
    }

    /// (server − local) / local, when anything was compared.
    pub fn relative_difference(&self) -> Option<f64> {
        (self.compared > 0 && self.local > 0)
            .then(|| (self.server as f64 - self.local as f64) / self.local as f64)
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            ttft: LatencyHistogram::new(),
            itl: LatencyHistogram::new(),
            tpot: LatencyHistogram::new(),
            itl_request: LatencyHistogram::new(),
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
            server: server::ServerStats::default(),
            arrivals: ArrivalCounts::default(),
            input_check: InputTokenCheck::default(),
            series: TimeSeries::default(),
            slos: Vec::new(),
            good: 0,
            idle: Duration::ZERO,
            warmup_errors: BTreeMap::new(),
            attempts: AttemptCounts::default(),
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

    /// Length of the measured window: first scheduled send to last end,
    /// less [`Stats::idle`].
    pub fn window(&self) -> Duration {
        match (self.window_start, self.window_end) {
            (Some(s), Some(e)) => e.saturating_duration_since(s).saturating_sub(self.idle),
            _ => Duration::ZERO,
        }
    }

    /// Adds one request's record. Warmup records only count as warmup.
    pub fn ingest(&mut self, r: &RequestRecord, requested_input_tokens: u32) {
        self.series.ingest(r);
        if !r.warmup {
            self.arrivals.ingest(r);
            self.attempts.ingest(r);
        }
        if r.warmup {
            self.warmup += 1;
            if let Some(e) = r.error.filter(|e| *e != ErrorClass::Cancelled) {
                *self.warmup_errors.entry(e.key()).or_default() += 1;
            }
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
        self.input_check.ingest(r);
        if !self.slos.is_empty() && crate::slo::is_good(&self.slos, r) {
            self.good += 1;
        }
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
        if let Some(t) = r.itl_mean() {
            self.itl_request.record(t);
        }
        let (out, source) = r.output_tokens();
        match source {
            TokenSource::Usage => self.usage_counted += 1,
            TokenSource::Chunks => self.chunk_counted += 1,
        }
        self.output_tokens += out;
        if let Some(t) = &r.server {
            self.server.ingest(t);
        }
        let local_or_requested = r.local_input_tokens.unwrap_or(requested_input_tokens);
        self.input_tokens += u64::from(r.usage.input_tokens.unwrap_or(local_or_requested));
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
            (&mut self.itl_request, &o.itl_request),
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
        self.good += o.good;
        self.cancelled += o.cancelled;
        self.warmup += o.warmup;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.usage_counted += o.usage_counted;
        self.chunk_counted += o.chunk_counted;
        self.busy += o.busy;
        self.messages += o.messages;
        self.server.merge(&o.server);
        self.arrivals.merge(&o.arrivals);
        self.input_check.merge(&o.input_check);
        self.series.merge(&o.series);
        self.attempts.merge(&o.attempts);
        for (k, v) in &o.warmup_errors {
            *self.warmup_errors.entry(k.clone()).or_default() += v;
        }
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
