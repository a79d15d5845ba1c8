//! One JSON line per request (`--records`): timestamps as ms from run start.

use std::time::Instant;

use serde::Serialize;

use crate::engine::record::{RequestRecord, TokenSource};

/// The serialized form of a [`RequestRecord`].
#[derive(Debug, Serialize)]
pub struct RecordLine {
    /// Issue order.
    pub seq: u64,
    /// Warmup request (excluded from statistics).
    pub warmup: bool,
    /// Scheduled send (ms from run start).
    pub scheduled_ms: f64,
    /// Actual send.
    pub sent_ms: f64,
    /// Response headers arrived.
    pub headers_ms: Option<f64>,
    /// First content chunk arrived.
    pub first_token_ms: Option<f64>,
    /// Stream ended.
    pub end_ms: f64,
    /// Arrival of every content chunk.
    pub token_ms: Vec<f64>,
    /// HTTP status.
    pub status: Option<u16>,
    /// Error class, if failed.
    pub error: Option<String>,
    /// Error sample.
    pub error_sample: Option<String>,
    /// Prompt tokens reported by the server.
    pub input_tokens: Option<u32>,
    /// Output tokens (see `token_source`).
    pub output_tokens: u64,
    /// Where `output_tokens` came from.
    pub token_source: TokenSource,
    /// Server-reported prompt time (ms), when the server reports timings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_prompt_ms: Option<f64>,
    /// Server-reported decode time (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_decode_ms: Option<f64>,
    /// Multi-turn runs: the conversation (0-based id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<u64>,
    /// Multi-turn runs: the turn within the conversation (0-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn: Option<u32>,
    /// Open loop: due, but never sent because the run was interrupted while
    /// it waited for a `--max-concurrency` slot.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub not_sent: bool,
    /// TCP connect time of the final attempt (0 on a reused connection;
    /// absent when the transport cannot tell).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<f64>,
    /// Attempts made (1 unless retried).
    pub attempts: u32,
    /// Error classes of the attempts before the final one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retried_errors: Vec<String>,
}

fn ms(t: Instant, origin: Instant) -> f64 {
    let d = t.saturating_duration_since(origin);
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl RecordLine {
    /// Converts a record, with instants relative to `origin`.
    pub fn from_record(r: &RequestRecord, origin: Instant) -> Self {
        let (output_tokens, token_source) = r.output_tokens();
        Self {
            seq: r.seq,
            warmup: r.warmup,
            scheduled_ms: ms(r.scheduled, origin),
            sent_ms: ms(r.sent, origin),
            headers_ms: r.headers.map(|t| ms(t, origin)),
            first_token_ms: r.token_times.first().map(|&t| ms(t, origin)),
            end_ms: ms(r.end, origin),
            token_ms: r.token_times.iter().map(|&t| ms(t, origin)).collect(),
            status: r.status,
            error: r.error.map(|e| e.key()),
            error_sample: r.error_sample.clone(),
            input_tokens: r.usage.input_tokens,
            output_tokens,
            token_source,
            server_prompt_ms: r.server.and_then(|t| t.prompt_ns).map(|ns| ns as f64 / 1e6),
            server_decode_ms: r.server.and_then(|t| t.decode_ns).map(|ns| ns as f64 / 1e6),
            conversation: r.conversation,
            turn: r.turn,
            not_sent: r.not_sent,
            connect_ms: r.connect.map(|d| d.as_secs_f64() * 1e3),
            attempts: r.attempts,
            retried_errors: r.retried_errors.iter().map(|e| e.key()).collect(),
        }
    }
}
