//! The per-request measurement record.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api::{ServerTimings, Usage};

/// Why a request failed. Cancellation at the end of a run is not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// TCP connect failed or was refused.
    Connect,
    /// The request did not finish within `--timeout`.
    Timeout,
    /// The server answered with an HTTP status outside 2xx.
    Http(u16),
    /// A stream message could not be parsed.
    Malformed,
    /// The stream ended (or the connection dropped) before its terminator.
    Truncated,
    /// The server reported an error inside the stream.
    StreamError,
    /// Any other transport failure.
    Io,
    /// Stopped by the end of the run (Ctrl-C grace expired): not counted as failed.
    Cancelled,
}

impl ErrorClass {
    /// Stable name used as the key in `requests.errors`.
    pub fn key(self) -> String {
        match self {
            ErrorClass::Connect => "connect".into(),
            ErrorClass::Timeout => "timeout".into(),
            ErrorClass::Http(code) => format!("http_{code}"),
            ErrorClass::Malformed => "malformed".into(),
            ErrorClass::Truncated => "truncated".into(),
            ErrorClass::StreamError => "stream_error".into(),
            ErrorClass::Io => "io".into(),
            ErrorClass::Cancelled => "cancelled".into(),
        }
    }
}

/// Where a request's output token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The server's `usage` report.
    Usage,
    /// The number of content chunks received (one token per chunk assumed).
    Chunks,
}

/// Everything measured about one request. Instants come from the monotonic
/// clock, taken when the bytes were read from the socket, before parsing.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Sequence number in issue order (0-based, warmup included).
    pub seq: u64,
    /// Part of the warmup phase: excluded from statistics.
    pub warmup: bool,
    /// When the request was due to be sent.
    pub scheduled: Instant,
    /// Just before the request was handed to the HTTP client.
    pub sent: Instant,
    /// When the response status and headers arrived.
    pub headers: Option<Instant>,
    /// Arrival of every chunk that carried content; the first is the first token.
    pub token_times: Vec<Instant>,
    /// When the stream ended (terminator or error).
    pub end: Instant,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// Failure class; `None` for a successful request.
    pub error: Option<ErrorClass>,
    /// A short sample of the error body or message.
    pub error_sample: Option<String>,
    /// Token counts the server reported.
    pub usage: Usage,
    /// Stream messages parsed (content or not).
    pub messages: u32,
    /// Timings the server reported about its own work (Ollama, llama.cpp).
    pub server: Option<ServerTimings>,
    /// Open loop: the arrival found every `--max-concurrency` slot busy and waited.
    pub held_by_cap: bool,
    /// Prompt tokens as counted by the local tokenizer, when one built the prompt.
    pub local_input_tokens: Option<u32>,
    /// Multi-turn runs (`--turns`): the conversation this request belongs to.
    pub conversation: Option<u64>,
    /// Multi-turn runs: the turn within its conversation (0-based).
    pub turn: Option<u32>,
    /// The answer text streamed back, captured only when the workload needs
    /// it (multi-turn); `None` otherwise, so single-turn runs never copy text.
    pub answer: Option<String>,
    /// Open loop: the arrival was due but never sent because the run was
    /// interrupted (Ctrl-C) while it waited for a concurrency slot. Its
    /// error class is [`ErrorClass::Cancelled`].
    pub not_sent: bool,
    /// Time spent opening a TCP connection for this request's final attempt:
    /// zero on a reused keep-alive connection, `None` when the transport
    /// cannot tell (the general client used for `https://`).
    pub connect: Option<Duration>,
    /// Attempts made (1 without retries; see `--retries`).
    pub attempts: u32,
    /// Error classes of the attempts before the final one, in order.
    pub retried_errors: Vec<ErrorClass>,
    /// The server's `Retry-After`, when an error response carried one.
    pub retry_after: Option<Duration>,
}

impl RequestRecord {
    /// A fresh record for a request scheduled at `scheduled`.
    pub fn new(seq: u64, warmup: bool, scheduled: Instant, capacity: usize) -> Self {
        Self {
            seq,
            warmup,
            scheduled,
            sent: scheduled,
            headers: None,
            token_times: Vec::with_capacity(capacity),
            end: scheduled,
            status: None,
            error: None,
            error_sample: None,
            usage: Usage::default(),
            messages: 0,
            server: None,
            held_by_cap: false,
            local_input_tokens: None,
            conversation: None,
            turn: None,
            answer: None,
            not_sent: false,
            connect: None,
            attempts: 1,
            retried_errors: Vec::new(),
            retry_after: None,
        }
    }

    /// Clears what one attempt measured, keeping the request's identity, its
    /// due time (latency of a retried request counts from its first due
    /// time) and the errors of earlier attempts, before the next attempt.
    pub fn reset_for_retry(&mut self) {
        if let Some(e) = self.error.take() {
            self.retried_errors.push(e);
        }
        self.attempts += 1;
        self.headers = None;
        self.token_times.clear();
        self.status = None;
        self.error_sample = None;
        self.usage = Usage::default();
        self.messages = 0;
        self.server = None;
        self.connect = None;
        self.retry_after = None;
        if let Some(a) = self.answer.as_mut() {
            a.clear();
        }
    }

    /// True when the request completed without error.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// Time to first token, measured from the scheduled send time.
    pub fn ttft(&self) -> Option<Duration> {
        self.token_times.first().map(|t| *t - self.scheduled)
    }

    /// End-to-end latency from the scheduled send time to the stream's end.
    pub fn e2e(&self) -> Duration {
        self.end - self.scheduled
    }

    /// Output tokens: the server's count when reported, else content chunks.
    pub fn output_tokens(&self) -> (u64, TokenSource) {
        match self.usage.output_tokens {
            Some(n) => (u64::from(n), TokenSource::Usage),
            None => (self.token_times.len() as u64, TokenSource::Chunks),
        }
    }

    /// Time per output token: (e2e − TTFT) / (output tokens − 1).
    pub fn tpot(&self) -> Option<Duration> {
        let (tokens, _) = self.output_tokens();
        let ttft = self.ttft()?;
        if tokens < 2 {
            return None;
        }
        let decode = self.e2e().saturating_sub(ttft);
        Some(decode / u32::try_from(tokens - 1).unwrap_or(u32::MAX))
    }

    /// Gaps between successive content chunks: one inter-token latency sample each.
    pub fn itl_gaps(&self) -> impl Iterator<Item = Duration> + '_ {
        self.token_times.windows(2).map(|w| w[1] - w[0])
    }

    /// The request's mean inter-token latency: (last content message − first)
    /// / (content messages − 1), i.e. the mean of its [`Self::itl_gaps`].
    /// `None` with fewer than two content messages. This per-request value is
    /// what the `itl` SLO judges (as vLLM's and GuideLLM's per-request goodput do).
    pub fn itl_mean(&self) -> Option<Duration> {
        let (first, last) = (self.token_times.first()?, self.token_times.last()?);
        let gaps = u32::try_from(self.token_times.len() - 1).unwrap_or(u32::MAX);
        (gaps > 0).then(|| (*last - *first) / gaps)
    }

    /// How late the request left relative to its schedule (client self-check).
    pub fn send_lag(&self) -> Duration {
        self.sent.saturating_duration_since(self.scheduled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_metrics_follow_their_definitions() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = RequestRecord::new(0, false, t0, 4);
        r.sent = t0 + ms(1);
        r.token_times = vec![t0 + ms(100), t0 + ms(120), t0 + ms(150)];
        r.end = t0 + ms(160);
        assert_eq!(r.ttft(), Some(ms(100)));
        assert_eq!(r.e2e(), ms(160));
        assert_eq!(r.itl_gaps().collect::<Vec<_>>(), vec![ms(20), ms(30)]);
        assert_eq!(r.itl_mean(), Some(ms(25)));
        // chunks: 3 tokens → (160-100)/2 = 30 ms
        assert_eq!(r.tpot(), Some(ms(30)));
        r.usage.output_tokens = Some(4);
        assert_eq!(r.output_tokens(), (4, TokenSource::Usage));
        assert_eq!(r.tpot(), Some(ms(20)));
        assert_eq!(r.send_lag(), ms(1));
    }
}
