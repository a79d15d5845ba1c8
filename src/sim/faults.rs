//! Seeded, reproducible fault injection for reliability testing.
//!
//! [`FaultyModel`] wraps any [`EngineModel`]: it rejects requests (429 past
//! `--rate-limit`, 503 past `--max-queue`, 500 at `--fail-rate`), holds them
//! during `--cold-start`, and plans mid-stream faults (disconnect, malformed
//! chunk, stall) that its [`FaultyGeneration`] raises as [`GenEvent`]s.
//! Every protocol front-end realises those events with the shared helpers
//! [`fault_item`] (streams) and [`whole_fault_response`] (whole bodies).
//!
//! Each admitted request draws the same number of values from one seeded
//! generator, in admission order, so a run with the same seed and the same
//! request order injects the same faults at the same tokens.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::metrics::{FaultKind, SimMetrics};
use super::model::{Admission, EngineModel, GenEvent, Generation, Rejection};
use crate::timer::PreciseTimer;

/// `--stall D@P`: with probability P a request pauses for D mid-stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StallSpec {
    /// Length of the pause.
    pub duration: Duration,
    /// Probability per request.
    pub probability: f64,
}

impl FromStr for StallSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (d, p) = s
            .split_once('@')
            .ok_or_else(|| format!("'{s}' is not DURATION@PROBABILITY, e.g. 2s@0.01"))?;
        let duration = humantime::parse_duration(d.trim())
            .map_err(|e| format!("'{d}' is not a duration ({e}); write e.g. 2s@0.01"))?;
        let probability: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("'{p}' is not a probability; write e.g. 2s@0.01"))?;
        if !(0.0..=1.0).contains(&probability) {
            return Err(format!("stall probability '{p}' must be between 0 and 1"));
        }
        Ok(Self {
            duration,
            probability,
        })
    }
}

/// Which faults to inject.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultConfig {
    /// Seed of the fault generator.
    pub seed: u64,
    /// Probability of an HTTP 500 per request.
    pub fail_rate: f64,
    /// Requests per second accepted; more get 429 with `Retry-After`.
    pub rate_limit: Option<f64>,
    /// Probability that a request's connection drops mid-stream.
    pub disconnect_rate: f64,
    /// Probability that a request's stream carries a corrupt chunk.
    pub malformed_rate: f64,
    /// Mid-stream pauses.
    pub stall: Option<StallSpec>,
    /// The first request waits this long ("model load"), and so does every
    /// request arriving before the load completes.
    pub cold_start: Option<Duration>,
    /// Waiting requests at most; more get 503.
    pub max_queue: Option<usize>,
}

impl FaultConfig {
    /// Whether any fault is configured.
    pub fn is_active(&self) -> bool {
        self.fail_rate > 0.0
            || self.rate_limit.is_some()
            || self.disconnect_rate > 0.0
            || self.malformed_rate > 0.0
            || self.stall.is_some_and(|s| s.probability > 0.0)
            || self.cold_start.is_some()
            || self.max_queue.is_some()
    }

    /// Checks ranges; the error names the flag.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, v) in [
            ("--fail-rate", self.fail_rate),
            ("--disconnect-rate", self.disconnect_rate),
            ("--malformed-rate", self.malformed_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!(
                    "{flag} '{v}' must be a probability between 0 and 1"
                ));
            }
        }
        if let Some(r) = self.rate_limit {
            if !(r.is_finite() && r > 0.0) {
                return Err(format!(
                    "--rate-limit '{r}' must be a positive number of requests per second"
                ));
            }
        }
        if self.max_queue == Some(0) {
            return Err("--max-queue '0' would reject every request; use at least 1".into());
        }
        Ok(())
    }
}

/// The random draws of one request, always the same number per request.
struct Draws {
    fail: f64,
    disconnect: f64,
    disconnect_at: f64,
    malformed: f64,
    malformed_at: f64,
    stall: f64,
    stall_at: f64,
}

/// Where a request's mid-stream faults fire: before output token k.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FaultPlan {
    disconnect_at: Option<u32>,
    malformed_at: Option<u32>,
    stall_at: Option<u32>,
}

fn position(u: f64, max_tokens: u32) -> u32 {
    ((u * f64::from(max_tokens)) as u32).min(max_tokens.saturating_sub(1))
}

impl FaultPlan {
    fn new(d: &Draws, cfg: &FaultConfig, max_tokens: u32) -> Self {
        if max_tokens == 0 {
            return Self::default();
        }
        let stall_p = cfg.stall.map_or(0.0, |s| s.probability);
        Self {
            disconnect_at: (d.disconnect < cfg.disconnect_rate)
                .then(|| position(d.disconnect_at, max_tokens)),
            malformed_at: (d.malformed < cfg.malformed_rate)
                .then(|| position(d.malformed_at, max_tokens)),
            stall_at: (d.stall < stall_p).then(|| position(d.stall_at, max_tokens)),
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Decrements the in-flight count when a generation ends.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An engine model with faults injected.
pub struct FaultyModel {
    inner: Box<dyn EngineModel>,
    cfg: FaultConfig,
    rng: Mutex<SmallRng>,
    bucket: Mutex<Bucket>,
    in_flight: Arc<AtomicUsize>,
    loaded_at: OnceLock<Instant>,
    timer: PreciseTimer,
    metrics: Arc<SimMetrics>,
}

impl FaultyModel {
    /// Wraps `inner`; faults are counted in `metrics`.
    pub fn new(
        inner: Box<dyn EngineModel>,
        cfg: FaultConfig,
        timer: PreciseTimer,
        metrics: Arc<SimMetrics>,
    ) -> Self {
        let burst = cfg.rate_limit.unwrap_or(1.0).max(1.0);
        Self {
            inner,
            rng: Mutex::new(SmallRng::seed_from_u64(cfg.seed)),
            bucket: Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
            }),
            cfg,
            in_flight: Arc::new(AtomicUsize::new(0)),
            loaded_at: OnceLock::new(),
            timer,
            metrics,
        }
    }

    /// Token bucket of `--rate-limit`: Err(seconds to wait) when empty.
    fn take_token(&self, now: Instant) -> Result<(), u64> {
        let Some(rate) = self.cfg.rate_limit else {
            return Ok(());
        };
        let mut b = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let burst = rate.max(1.0);
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    fn draw(&self) -> Draws {
        let mut r = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        Draws {
            fail: r.random(),
            disconnect: r.random(),
            disconnect_at: r.random(),
            malformed: r.random(),
            malformed_at: r.random(),
            stall: r.random(),
            stall_at: r.random(),
        }
    }

    fn reject(
        &self,
        kind: FaultKind,
        status: u16,
        message: String,
        retry_after_s: Option<u64>,
    ) -> Result<Generation, Rejection> {
        self.metrics.fault(kind);
        Err(Rejection {
            status,
            message,
            retry_after_s,
        })
    }
}

impl EngineModel for FaultyModel {
    fn admit(&self, a: Admission) -> Result<Generation, Rejection> {
        self.admit_prompt(a, &[])
    }

    fn admit_prompt(&self, mut a: Admission, prompt: &[u64]) -> Result<Generation, Rejection> {
        if let Err(wait) = self.take_token(a.arrival) {
            let msg = format!(
                "rate limit of {} requests/s exceeded (simulated)",
                self.cfg.rate_limit.unwrap_or(0.0)
            );
            return self.reject(FaultKind::RateLimited, 429, msg, Some(wait));
        }
        if let Some(max) = self.cfg.max_queue {
            let depth = self
                .inner
                .queue_depth()
                .unwrap_or_else(|| self.in_flight.load(Ordering::Relaxed));
            if depth >= max {
                return self.reject(
                    FaultKind::QueueFull,
                    503,
                    format!("queue full ({depth} requests waiting, --max-queue {max}) (simulated)"),
                    Some(1),
                );
            }
        }
        let draws = self.draw();
        if draws.fail < self.cfg.fail_rate {
            return self.reject(
                FaultKind::Failed,
                500,
                "internal server error (simulated by --fail-rate)".into(),
                None,
            );
        }
        if let Some(load) = self.cfg.cold_start {
            let ready = *self.loaded_at.get_or_init(|| a.arrival + load);
            if a.arrival < ready {
                self.metrics.fault(FaultKind::ColdStart);
                a.arrival = ready;
            }
        }
        let plan = FaultPlan::new(&draws, &self.cfg, a.max_tokens);
        let inner = self.inner.admit_prompt(a, prompt)?;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Generation::Faulty(Box::new(FaultyGeneration {
            inner,
            plan,
            stall: self.cfg.stall.map_or(Duration::ZERO, |s| s.duration),
            next: 0,
            ended: false,
            timer: self.timer.clone(),
            metrics: Arc::clone(&self.metrics),
            _in_flight: InFlight(Arc::clone(&self.in_flight)),
        })))
    }

    fn queue_depth(&self) -> Option<usize> {
        self.inner.queue_depth()
    }
}

/// A generation with planned mid-stream faults.
pub struct FaultyGeneration {
    inner: Generation,
    plan: FaultPlan,
    stall: Duration,
    next: u32,
    ended: bool,
    timer: PreciseTimer,
    metrics: Arc<SimMetrics>,
    _in_flight: InFlight,
}

impl FaultyGeneration {
    /// The next event: a planned fault before token `next`, else the inner event.
    pub async fn next(&mut self) -> Option<GenEvent> {
        if self.ended {
            return None;
        }
        let k = Some(self.next);
        if self.plan.disconnect_at == k {
            self.ended = true;
            self.metrics.fault(FaultKind::Disconnected);
            return Some(GenEvent::Disconnect);
        }
        if self.plan.malformed_at == k {
            self.ended = true;
            self.metrics.fault(FaultKind::Malformed);
            return Some(GenEvent::Malformed);
        }
        if self.plan.stall_at == k {
            self.plan.stall_at = None;
            self.metrics.fault(FaultKind::Stalled);
            self.timer.sleep_until(Instant::now() + self.stall).await;
        }
        let ev = Box::pin(self.inner.next()).await;
        if ev == Some(GenEvent::Token) {
            self.next += 1;
        }
        ev
    }
}

/// How a front-end's stream is framed, for the corrupt chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFraming {
    /// Server-sent events (`data: ...\n\n`).
    Sse,
    /// Newline-delimited JSON.
    Ndjson,
}

/// A truncated JSON object: no client can parse it.
const CORRUPT_JSON: &str = "{\"id\":\"throtl-malformed\",\"choices\":[{\"delta\":{\"content\":\"";

/// The bytes of a corrupt chunk in `framing`.
pub fn malformed_frame(framing: WireFraming) -> Bytes {
    match framing {
        WireFraming::Sse => Bytes::from(format!("data: {CORRUPT_JSON}\n\n")),
        WireFraming::Ndjson => Bytes::from(format!("{CORRUPT_JSON}\n")),
    }
}

/// The last body item of a stream that realises fault `ev`, if it is one:
/// an I/O error (the server drops the connection without the stream's
/// terminator) or a corrupt frame (after which the stream ends).
pub fn fault_item(ev: &GenEvent, framing: WireFraming) -> Option<Result<Bytes, std::io::Error>> {
    match ev {
        GenEvent::Disconnect => Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "simulated disconnect",
        ))),
        GenEvent::Malformed => Some(Ok(malformed_frame(framing))),
        _ => None,
    }
}

/// Realises a fault event on a non-streamed response, if `ev` is one.
pub fn whole_fault_response(ev: &GenEvent) -> Option<Response> {
    match ev {
        GenEvent::Disconnect => {
            let err = std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "simulated disconnect",
            );
            let body = Body::from_stream(futures_util::stream::iter([Err::<Bytes, _>(err)]));
            Some(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(body)
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
            )
        }
        GenEvent::Malformed => {
            Some(([("content-type", "application/json")], CORRUPT_JSON).into_response())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_spec_parses_and_rejects() {
        let s: StallSpec = "2s@0.01".parse().unwrap();
        assert_eq!(
            s,
            StallSpec {
                duration: Duration::from_secs(2),
                probability: 0.01
            }
        );
        assert!("2s"
            .parse::<StallSpec>()
            .unwrap_err()
            .contains("DURATION@PROBABILITY"));
        assert!("2s@1.5".parse::<StallSpec>().is_err());
        assert!("xs@0.5".parse::<StallSpec>().is_err());
    }

    #[test]
    fn validation_names_the_flag() {
        let c = FaultConfig {
            fail_rate: 2.0,
            ..FaultConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("--fail-rate"));
        assert!(!FaultConfig::default().is_active());
    }

    #[test]
    fn plans_are_reproducible_from_the_seed() {
        let cfg = FaultConfig {
            seed: 42,
            disconnect_rate: 0.3,
            malformed_rate: 0.3,
            ..FaultConfig::default()
        };
        let plans = |cfg: &FaultConfig| {
            let mut r = SmallRng::seed_from_u64(cfg.seed);
            (0..50)
                .map(|_| {
                    let d = Draws {
                        fail: r.random(),
                        disconnect: r.random(),
                        disconnect_at: r.random(),
                        malformed: r.random(),
                        malformed_at: r.random(),
                        stall: r.random(),
                        stall_at: r.random(),
                    };
                    FaultPlan::new(&d, cfg, 10)
                })
                .collect::<Vec<_>>()
        };
        let a = plans(&cfg);
        assert_eq!(a, plans(&cfg));
        assert!(
            a.iter().any(|p| p.disconnect_at.is_some())
                && a.iter().any(|p| p.disconnect_at.is_none())
        );
        assert!(a.iter().filter_map(|p| p.disconnect_at).all(|k| k < 10));
    }
}
