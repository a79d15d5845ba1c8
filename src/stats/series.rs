//! Per-second time series of a run: what happened in each second since the
//! run's origin. Latency percentiles per second are exact (nearest rank over
//! the samples of that second), so memory grows with requests, not time.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::record::{ErrorClass, RequestRecord};

/// What one second of the run saw. Requests are placed by the second they
/// ended in (latencies, outcomes) or were sent in (`sent`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Start of the second, in seconds since the run began.
    pub t_s: u64,
    /// Requests sent in this second (warmup included).
    pub sent: u64,
    /// Measured requests that ended successfully in this second.
    pub ok: u64,
    /// Measured requests that failed in this second.
    pub errors: u64,
    /// Warmup requests that ended in this second.
    pub warmup: u64,
    /// Output tokens of the successful requests that ended in this second.
    pub output_tokens: u64,
    /// Mean requests in flight during this second (time-weighted).
    pub in_flight: f64,
    /// TTFT percentiles of requests that ended in this second (ms).
    pub ttft_ms: Percentiles,
    /// End-to-end latency percentiles of requests that ended in this second (ms).
    pub e2e_ms: Percentiles,
}

/// Nearest-rank percentiles of a small sample (0 when there is none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// One second's raw counts, latencies kept per request so percentiles of
/// merged seconds stay exact.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bucket {
    sent: u64,
    ok: u64,
    errors: u64,
    warmup: u64,
    output_tokens: u64,
    busy: Duration,
    ttft_us: Vec<u64>,
    e2e_us: Vec<u64>,
}

/// Per-second buckets, indexed from `origin`.
#[derive(Debug, Clone, Default)]
pub struct TimeSeries {
    origin: Option<Instant>,
    buckets: Vec<Bucket>,
}

/// Longest series kept (one day); later seconds fold into the last bucket.
const MAX_SECONDS: usize = 86_400;

impl TimeSeries {
    /// An empty series whose second 0 starts at `origin`.
    pub fn starting_at(origin: Instant) -> Self {
        Self {
            origin: Some(origin),
            buckets: Vec::new(),
        }
    }

    fn index(&self, at: Instant) -> Option<usize> {
        let secs = at.saturating_duration_since(self.origin?).as_secs();
        Some((secs as usize).min(MAX_SECONDS - 1))
    }

    fn bucket(&mut self, i: usize) -> &mut Bucket {
        if self.buckets.len() <= i {
            self.buckets.resize_with(i + 1, Bucket::default);
        }
        &mut self.buckets[i]
    }

    /// Adds one record (no-op without an origin).
    pub fn ingest(&mut self, r: &RequestRecord) {
        if r.not_sent {
            return;
        }
        let (Some(sent_i), Some(end_i)) = (self.index(r.sent), self.index(r.end)) else {
            return;
        };
        self.bucket(sent_i).sent += 1;
        self.add_busy(r.sent, r.end);
        let b = self.bucket(end_i);
        match r.error {
            Some(ErrorClass::Cancelled) => {}
            _ if r.warmup => b.warmup += 1,
            Some(_) => b.errors += 1,
            None => {
                b.ok += 1;
                b.output_tokens += r.output_tokens().0;
                b.e2e_us.push(micros(r.e2e()));
                if let Some(t) = r.ttft() {
                    b.ttft_us.push(micros(t));
                }
            }
        }
    }

    /// Spreads the time a request was in flight over the seconds it spans.
    fn add_busy(&mut self, from: Instant, to: Instant) {
        let Some(origin) = self.origin else { return };
        let mut t = from;
        while t < to {
            let Some(i) = self.index(t) else { return };
            let bucket_end = origin + Duration::from_secs(i as u64 + 1);
            let until = if i == MAX_SECONDS - 1 {
                to
            } else {
                bucket_end.min(to)
            };
            self.bucket(i).busy += until - t;
            t = until;
        }
    }

    /// Folds `o` in (both must share an origin; otherwise `o` is ignored).
    pub fn merge(&mut self, o: &TimeSeries) {
        if self.origin != o.origin {
            return;
        }
        for (i, b) in o.buckets.iter().enumerate() {
            let a = self.bucket(i);
            a.sent += b.sent;
            a.ok += b.ok;
            a.errors += b.errors;
            a.warmup += b.warmup;
            a.output_tokens += b.output_tokens;
            a.busy += b.busy;
            a.ttft_us.extend_from_slice(&b.ttft_us);
            a.e2e_us.extend_from_slice(&b.e2e_us);
        }
    }

    /// The buckets with their index shifted by `shift_s` seconds (a shard
    /// that started later than T0), for a shard file.
    pub(super) fn shifted_buckets(&self, shift_s: usize) -> Vec<Bucket> {
        let mut out = vec![Bucket::default(); shift_s];
        out.extend(self.buckets.iter().cloned());
        out
    }

    /// A series at `origin` holding `buckets` (from a shard file).
    pub(super) fn from_buckets(origin: Instant, buckets: Vec<Bucket>) -> Self {
        Self {
            origin: Some(origin),
            buckets,
        }
    }

    /// The series as report points, one per second.
    pub fn points(&self) -> Vec<SeriesPoint> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| SeriesPoint {
                t_s: i as u64,
                sent: b.sent,
                ok: b.ok,
                errors: b.errors,
                warmup: b.warmup,
                output_tokens: b.output_tokens,
                in_flight: b.busy.as_secs_f64(),
                ttft_ms: percentiles(&b.ttft_us),
                e2e_ms: percentiles(&b.e2e_us),
            })
            .collect()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Nearest-rank percentiles (the smallest value with at least p% of samples at or below it), in ms.
fn percentiles(us: &[u64]) -> Percentiles {
    if us.is_empty() {
        return Percentiles::default();
    }
    let mut v = us.to_vec();
    v.sort_unstable();
    let at = |p: f64| {
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1] as f64 / 1000.0
    };
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t0: Instant, sent_ms: u64, end_ms: u64) -> RequestRecord {
        let ms = Duration::from_millis;
        let mut r = RequestRecord::new(0, false, t0 + ms(sent_ms), 2);
        r.sent = t0 + ms(sent_ms);
        r.token_times = vec![t0 + ms(sent_ms + 10)];
        r.end = t0 + ms(end_ms);
        r
    }

    #[test]
    fn seconds_hold_counts_in_flight_and_exact_percentiles() {
        let t0 = Instant::now();
        let mut s = TimeSeries::starting_at(t0);
        s.ingest(&rec(t0, 500, 1500)); // in flight 0.5 s in second 0 and 0.5 s in second 1
        s.ingest(&rec(t0, 1000, 1100));
        let mut failed = rec(t0, 1200, 2100);
        failed.error = Some(ErrorClass::Http(500));
        s.ingest(&failed);
        let p = s.points();
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].sent, p[1].sent, p[1].ok, p[2].errors), (1, 2, 2, 1));
        assert!((p[0].in_flight - 0.5).abs() < 1e-6);
        assert!(
            (p[1].in_flight - (0.5 + 0.1 + 0.8)).abs() < 1e-6,
            "{}",
            p[1].in_flight
        );
        assert!((p[1].e2e_ms.p50 - 100.0).abs() < 1e-9);
        assert!((p[1].e2e_ms.p99 - 1000.0).abs() < 1e-9);
    }
}
