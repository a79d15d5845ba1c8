//! Compact per-request samples kept with a stored run: what comparisons,
//! exports and charts are computed from.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::engine::record::{ErrorClass, RequestRecord};

/// One measured request (warmup and cancelled requests are not kept).
/// Times are milliseconds from the run's origin, rounded to 1 µs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestSample {
    /// Issue order.
    pub seq: u64,
    /// Scheduled send (ms from run start).
    pub start_ms: f64,
    /// Stream end (ms from run start).
    pub end_ms: f64,
    /// Time to first token (ms); absent when no token arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Time per output token (ms); absent below two tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_ms: Option<f64>,
    /// Output tokens.
    pub output_tokens: u64,
    /// Error class, if failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl RequestSample {
    /// The sample of a measured record; `None` for warmup and cancelled ones.
    pub fn from_record(r: &RequestRecord, origin: Instant) -> Option<Self> {
        if r.warmup || r.error == Some(ErrorClass::Cancelled) {
            return None;
        }
        Some(Self {
            seq: r.seq,
            start_ms: ms(r.scheduled.saturating_duration_since(origin)),
            end_ms: ms(r.end.saturating_duration_since(origin)),
            ttft_ms: r.ttft().map(ms),
            tpot_ms: r.tpot().map(ms),
            output_tokens: r.output_tokens().0,
            error: r.error.map(ErrorClass::key),
        })
    }

    /// True when the request succeeded.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// End-to-end latency (ms).
    pub fn e2e_ms(&self) -> f64 {
        self.end_ms - self.start_ms
    }

    /// Output tokens per second of this request (successful requests only).
    pub fn output_rate(&self) -> Option<f64> {
        let s = self.e2e_ms() / 1000.0;
        (self.is_ok() && s > 0.0).then(|| self.output_tokens as f64 / s)
    }
}
