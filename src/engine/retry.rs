//! Retries of failed requests (`--retries`, `--retry-on`,
//! `--retry-max-wait`): which failures are retried and how long to wait.
//!
//! Off by default, so latency statistics are those of first attempts unless
//! the user asks. A retried request keeps its first due time, so its
//! latencies include every failed attempt and every wait; its record keeps
//! the error class of each earlier attempt.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::record::{ErrorClass, RequestRecord};

/// Which failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryOn {
    /// HTTP 429 (rate limited).
    pub rate_limited: bool,
    /// HTTP 5xx.
    pub server_errors: bool,
    /// TCP connect failures.
    pub connect: bool,
    /// Streams cut before their end.
    pub truncated: bool,
    /// Requests that hit `--timeout`.
    pub timeout: bool,
}

impl Default for RetryOn {
    /// `429,5xx,connect`: the failures a hosted API asks clients to retry.
    fn default() -> Self {
        Self {
            rate_limited: true,
            server_errors: true,
            connect: true,
            truncated: false,
            timeout: false,
        }
    }
}

impl RetryOn {
    /// True when a failure of class `e` is retried.
    pub fn covers(&self, e: ErrorClass) -> bool {
        match e {
            ErrorClass::Http(429) => self.rate_limited,
            ErrorClass::Http(c) => self.server_errors && (500..600).contains(&c),
            ErrorClass::Connect => self.connect,
            ErrorClass::Truncated => self.truncated,
            ErrorClass::Timeout => self.timeout,
            _ => false,
        }
    }
}

impl FromStr for RetryOn {
    type Err = String;

    /// A comma-separated list of `429`, `5xx`, `connect`, `truncated`, `timeout`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut on = Self {
            rate_limited: false,
            server_errors: false,
            connect: false,
            truncated: false,
            timeout: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_lowercase().as_str() {
                "429" => on.rate_limited = true,
                "5xx" => on.server_errors = true,
                "connect" => on.connect = true,
                "truncated" => on.truncated = true,
                "timeout" => on.timeout = true,
                other => {
                    return Err(format!(
                        "'{other}' is not a retryable failure; use a list of 429, 5xx, connect, truncated, timeout"
                    ))
                }
            }
        }
        Ok(on)
    }
}

/// How failed requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// Extra attempts after the first (0: never retry).
    pub retries: u32,
    /// Which failures are retried.
    pub on: RetryOn,
    /// Backoff before the first retry; doubled for each later one.
    #[serde(serialize_with = "super::ser_secs")]
    pub base: Duration,
    /// Longest wait before any retry, `Retry-After` included.
    #[serde(serialize_with = "super::ser_secs")]
    pub max_wait: Duration,
}

/// Backoff before the first retry (the OpenAI and Anthropic SDKs use 0.5 s).
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest wait before a retry by default.
pub const DEFAULT_RETRY_MAX_WAIT: Duration = Duration::from_secs(30);

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 0,
            on: RetryOn::default(),
            base: DEFAULT_RETRY_BASE,
            max_wait: DEFAULT_RETRY_MAX_WAIT,
        }
    }
}

impl RetryPolicy {
    /// True when `rec`'s failed attempt should be sent again.
    pub fn should_retry(&self, rec: &RequestRecord) -> bool {
        rec.attempts <= self.retries && rec.error.is_some_and(|e| self.on.covers(e))
    }

    /// The wait before attempt `rec.attempts + 1`: the server's `Retry-After`
    /// when it sent one, else exponential backoff with full jitter (uniform
    /// in `0..base·2^(k−1)`), never longer than `max_wait`. Seeded by the
    /// request's sequence number, so a rerun waits the same.
    pub fn wait(&self, rec: &RequestRecord, seed: u64) -> Duration {
        if let Some(ra) = rec.retry_after {
            return ra.min(self.max_wait);
        }
        let doublings = rec.attempts.saturating_sub(1).min(30);
        let cap = self.base.saturating_mul(1 << doublings).min(self.max_wait);
        let mut rng =
            SmallRng::seed_from_u64(seed ^ rec.seq.rotate_left(17) ^ u64::from(rec.attempts));
        cap.mul_f64(rng.random_range(0.0..=1.0))
    }
}

/// A `Retry-After` header value: delay seconds or an HTTP date (RFC 9110
/// §10.2.3), relative to `now`. A date in the past is a zero wait.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn failed(class: ErrorClass, attempts: u32) -> RequestRecord {
        let mut r = RequestRecord::new(7, false, Instant::now(), 0);
        r.error = Some(class);
        r.attempts = attempts;
        r
    }

    #[test]
    fn retry_on_parses_lists_and_rejects_unknown_classes() {
        let on: RetryOn = "429, truncated".parse().unwrap();
        assert!(on.covers(ErrorClass::Http(429)) && on.covers(ErrorClass::Truncated));
        assert!(!on.covers(ErrorClass::Http(500)) && !on.covers(ErrorClass::Connect));
        let err = "429,404".parse::<RetryOn>().unwrap_err();
        assert!(err.contains("'404'"), "{err}");
        let d = RetryOn::default();
        assert!(d.covers(ErrorClass::Http(503)) && d.covers(ErrorClass::Connect));
        assert!(!d.covers(ErrorClass::Http(400)) && !d.covers(ErrorClass::Malformed));
    }

    #[test]
    fn retries_stop_after_the_allowed_attempts() {
        let p = RetryPolicy {
            retries: 2,
            ..RetryPolicy::default()
        };
        assert!(p.should_retry(&failed(ErrorClass::Http(429), 1)));
        assert!(p.should_retry(&failed(ErrorClass::Http(429), 2)));
        assert!(!p.should_retry(&failed(ErrorClass::Http(429), 3)));
        assert!(!p.should_retry(&failed(ErrorClass::Http(400), 1)));
        assert!(!RetryPolicy::default().should_retry(&failed(ErrorClass::Http(429), 1)));
    }

    #[test]
    fn backoff_is_jittered_below_a_doubling_cap_and_honours_retry_after() {
        let p = RetryPolicy {
            retries: 10,
            base: Duration::from_millis(100),
            max_wait: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        for attempts in 1..=6 {
            let cap = Duration::from_millis(100 * (1 << (attempts - 1))).min(p.max_wait);
            let waits: Vec<Duration> = (0..200)
                .map(|s| p.wait(&failed(ErrorClass::Http(503), attempts), s))
                .collect();
            assert!(waits.iter().all(|w| *w <= cap), "attempt {attempts}");
            let mean = waits.iter().sum::<Duration>() / 200;
            assert!(mean > cap / 3 && mean < cap * 2 / 3, "{mean:?} vs {cap:?}");
        }
        let mut r = failed(ErrorClass::Http(429), 1);
        r.retry_after = Some(Duration::from_secs(3));
        assert_eq!(p.wait(&r, 0), Duration::from_secs(1), "capped by max_wait");
        r.retry_after = Some(Duration::from_millis(200));
        assert_eq!(p.wait(&r, 0), Duration::from_millis(200));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after(" 2 ", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:30 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
