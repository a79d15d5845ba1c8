//! [`Stats`] in a form that crosses machines (shard files): every instant
//! becomes a duration since the run's common start T0, every histogram its
//! exact encoding. Converting back onto any local instant and merging gives
//! exactly the statistics one machine would have computed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::series::Bucket;
use super::server::ServerStats;
use super::{ArrivalCounts, AttemptCounts, InputTokenCheck, LatencyHistogram, Stats, TimeSeries};

/// [`Stats`] without instants. Field meanings are those of [`Stats`];
/// `*_since_t0` fields are offsets from the run's common start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortableStats {
    /// TTFT (µs).
    pub ttft: LatencyHistogram,
    /// Every inter-token gap (µs).
    pub itl: LatencyHistogram,
    /// Per-request TPOT (µs).
    pub tpot: LatencyHistogram,
    /// Per-request mean ITL (µs), the `itl` SLO's metric.
    pub itl_request: LatencyHistogram,
    /// End-to-end latency (µs).
    pub e2e: LatencyHistogram,
    /// Per-request output tokens/s ×1000.
    pub output_rate_milli: LatencyHistogram,
    /// Send lag (µs).
    pub send_lag: LatencyHistogram,
    /// Successful measured requests.
    pub ok: u64,
    /// Failures by class.
    pub errors: BTreeMap<String, u64>,
    /// One sample per class.
    pub error_samples: BTreeMap<String, String>,
    /// Cut by the end of the run.
    pub cancelled: u64,
    /// Warmup requests.
    pub warmup: u64,
    /// Prompt tokens of successful requests.
    pub input_tokens: u64,
    /// Output tokens of successful requests.
    pub output_tokens: u64,
    /// Output counted from usage.
    pub usage_counted: u64,
    /// Output counted from chunks.
    pub chunk_counted: u64,
    /// Σ in-flight time of measured requests.
    pub busy: Duration,
    /// Earliest scheduled time of a measured request.
    pub window_start_since_t0: Option<Duration>,
    /// Latest end of a measured request.
    pub window_end_since_t0: Option<Duration>,
    /// Stream messages parsed.
    pub messages: u64,
    /// Server-reported timings.
    pub server: ServerStats,
    /// Arrivals on time / late / held / not sent.
    pub arrivals: PortableArrivals,
    /// Prompt tokens counted locally vs by the server.
    pub input_check: InputTokenCheck,
    /// Per-second buckets, second 0 starting at T0.
    pub series: Vec<Bucket>,
    /// Requests meeting every SLO.
    pub good: u64,
    /// Idle time inside the window (interleaved runs).
    pub idle: Duration,
    /// Failed warmup requests by class.
    pub warmup_errors: BTreeMap<String, u64>,
    /// Attempts, retries, new connections.
    pub attempts: AttemptCounts,
}

/// [`ArrivalCounts`] with its spans as offsets from T0.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct PortableArrivals {
    /// Sent on time.
    pub on_time: u64,
    /// Sent late.
    pub late: u64,
    /// Held by the cap.
    pub held: u64,
    /// Due, never sent.
    pub not_sent: u64,
    /// First and last scheduled instant.
    pub scheduled_span: Option<(Duration, Duration)>,
    /// First and last send instant.
    pub sent_span: Option<(Duration, Duration)>,
}

/// Maps instants of one process onto offsets from T0, and back.
#[derive(Debug, Clone, Copy)]
pub struct Timebase {
    /// The local instant that corresponds to T0 + `shift`.
    pub origin: Instant,
    /// How long after T0 `origin` is (a shard's start offset).
    pub shift: Duration,
}

impl Timebase {
    fn to_offset(self, at: Instant) -> Duration {
        at.saturating_duration_since(self.origin) + self.shift
    }

    fn to_instant(self, offset: Duration) -> Instant {
        self.origin + offset.saturating_sub(self.shift)
    }

    fn span_out(self, s: Option<(Instant, Instant)>) -> Option<(Duration, Duration)> {
        s.map(|(a, b)| (self.to_offset(a), self.to_offset(b)))
    }

    fn span_in(self, s: Option<(Duration, Duration)>) -> Option<(Instant, Instant)> {
        s.map(|(a, b)| (self.to_instant(a), self.to_instant(b)))
    }
}

impl PortableStats {
    /// `s`, with instants as offsets through `tb`. The series must start at
    /// `tb.origin` (as a bench's does); it is shifted by whole seconds.
    pub fn from_stats(s: &Stats, tb: Timebase) -> Self {
        let a = &s.arrivals;
        Self {
            ttft: s.ttft.clone(),
            itl: s.itl.clone(),
            tpot: s.tpot.clone(),
            itl_request: s.itl_request.clone(),
            e2e: s.e2e.clone(),
            output_rate_milli: s.output_rate_milli.clone(),
            send_lag: s.send_lag.clone(),
            ok: s.ok,
            errors: s.errors.clone(),
            error_samples: s.error_samples.clone(),
            cancelled: s.cancelled,
            warmup: s.warmup,
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            usage_counted: s.usage_counted,
            chunk_counted: s.chunk_counted,
            busy: s.busy,
            window_start_since_t0: s.window_start.map(|t| tb.to_offset(t)),
            window_end_since_t0: s.window_end.map(|t| tb.to_offset(t)),
            messages: s.messages,
            server: s.server.clone(),
            arrivals: PortableArrivals {
                on_time: a.on_time,
                late: a.late,
                held: a.held,
                not_sent: a.not_sent,
                scheduled_span: tb.span_out(a.scheduled_span),
                sent_span: tb.span_out(a.sent_span),
            },
            input_check: s.input_check,
            series: s.series.shifted_buckets(tb.shift.as_secs() as usize),
            good: s.good,
            idle: s.idle,
            warmup_errors: s.warmup_errors.clone(),
            attempts: s.attempts.clone(),
        }
    }

    /// Back to [`Stats`] on this process's clock: T0 becomes `t0`. The SLOs
    /// (configuration, not measurement) are the caller's to set.
    pub fn into_stats(self, t0: Instant) -> Stats {
        let tb = Timebase {
            origin: t0,
            shift: Duration::ZERO,
        };
        let a = self.arrivals;
        Stats {
            ttft: self.ttft,
            itl: self.itl,
            tpot: self.tpot,
            itl_request: self.itl_request,
            e2e: self.e2e,
            output_rate_milli: self.output_rate_milli,
            send_lag: self.send_lag,
            ok: self.ok,
            errors: self.errors,
            error_samples: self.error_samples,
            cancelled: self.cancelled,
            warmup: self.warmup,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            usage_counted: self.usage_counted,
            chunk_counted: self.chunk_counted,
            busy: self.busy,
            window_start: self.window_start_since_t0.map(|d| tb.to_instant(d)),
            window_end: self.window_end_since_t0.map(|d| tb.to_instant(d)),
            messages: self.messages,
            server: self.server,
            arrivals: ArrivalCounts {
                on_time: a.on_time,
                late: a.late,
                held: a.held,
                not_sent: a.not_sent,
                scheduled_span: tb.span_in(a.scheduled_span),
                sent_span: tb.span_in(a.sent_span),
            },
            input_check: self.input_check,
            series: TimeSeries::from_buckets(t0, self.series),
            slos: Vec::new(),
            good: self.good,
            idle: self.idle,
            warmup_errors: self.warmup_errors,
            attempts: self.attempts,
        }
    }
}
