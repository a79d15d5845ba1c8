//! Server-reported timings (Ollama durations, llama.cpp `timings`), summed
//! over successful measured requests so they can be shown beside the
//! client-side numbers.

use serde::{Deserialize, Serialize};

use super::{Distribution, LatencyHistogram};
use crate::api::ServerTimings;

/// Sums of server-reported work; mergeable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerStats {
    /// Requests that reported timings.
    pub requests: u64,
    /// Prompt tokens with a reported prompt time.
    pub prompt_tokens: u64,
    /// Prompt (prefill) time, ns.
    pub prompt_ns: u64,
    /// Generated tokens with a reported decode time.
    pub decode_tokens: u64,
    /// Decode time, ns.
    pub decode_ns: u64,
    /// Model load time, ns (Ollama).
    pub load_ns: u64,
    /// Per-request server decode tokens/s ×1000.
    pub decode_rate_milli: LatencyHistogram,
}

impl ServerStats {
    /// Adds one request's server timings.
    pub fn ingest(&mut self, t: &ServerTimings) {
        self.requests += 1;
        if let (Some(n), Some(ns)) = (t.prompt_tokens, t.prompt_ns) {
            self.prompt_tokens += u64::from(n);
            self.prompt_ns += ns;
        }
        if let (Some(n), Some(ns)) = (t.decode_tokens, t.decode_ns) {
            self.decode_tokens += u64::from(n);
            self.decode_ns += ns;
            if ns > 0 {
                let rate = f64::from(n) * 1e9 / ns as f64;
                self.decode_rate_milli.record_value((rate * 1000.0) as u64);
            }
        }
        self.load_ns += t.load_ns.unwrap_or(0);
    }

    /// Folds another set into this one.
    pub fn merge(&mut self, o: &ServerStats) {
        self.requests += o.requests;
        self.prompt_tokens += o.prompt_tokens;
        self.prompt_ns += o.prompt_ns;
        self.decode_tokens += o.decode_tokens;
        self.decode_ns += o.decode_ns;
        self.load_ns += o.load_ns;
        self.decode_rate_milli.merge(&o.decode_rate_milli);
    }

    /// The report section, or `None` when no request reported timings.
    pub fn report(&self) -> Option<ServerReport> {
        if self.requests == 0 {
            return None;
        }
        let rate = |tokens: u64, ns: u64| (ns > 0).then(|| tokens as f64 * 1e9 / ns as f64);
        Some(ServerReport {
            requests: self.requests,
            prompt_tokens_per_s: rate(self.prompt_tokens, self.prompt_ns),
            decode_tokens_per_s: rate(self.decode_tokens, self.decode_ns),
            mean_prompt_ms: (self.prompt_ns as f64 / self.requests as f64) / 1e6,
            mean_load_ms: (self.load_ns as f64 / self.requests as f64) / 1e6,
            decode_tokens_per_s_per_request: self.decode_rate_milli.distribution(1000.0),
        })
    }
}

/// Server-side speeds as the server itself reported them (`server` in the JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerReport {
    /// Successful measured requests that reported timings.
    pub requests: u64,
    /// Σ prompt tokens / Σ prompt time, as reported by the server.
    pub prompt_tokens_per_s: Option<f64>,
    /// Σ generated tokens / Σ decode time, as reported by the server.
    pub decode_tokens_per_s: Option<f64>,
    /// Mean server prompt (prefill) time per request (ms).
    pub mean_prompt_ms: f64,
    /// Mean model load time per request (ms; Ollama only, else 0).
    pub mean_load_ms: f64,
    /// Per-request server decode speed (tokens/s).
    pub decode_tokens_per_s_per_request: Distribution,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_ratios_of_sums() {
        let mut s = ServerStats::default();
        s.ingest(&ServerTimings {
            prompt_tokens: Some(31),
            prompt_ns: Some(143_000_000),
            decode_tokens: Some(11),
            decode_ns: Some(224_000_000),
            load_ns: Some(19_000_000),
            total_ns: None,
        });
        let mut o = ServerStats::default();
        o.ingest(&ServerTimings {
            prompt_tokens: Some(9),
            prompt_ns: Some(57_000_000),
            decode_tokens: Some(9),
            decode_ns: Some(76_000_000),
            ..Default::default()
        });
        s.merge(&o);
        let r = s.report().unwrap();
        assert_eq!(r.requests, 2);
        assert!((r.prompt_tokens_per_s.unwrap() - 200.0).abs() < 1e-9);
        assert!((r.decode_tokens_per_s.unwrap() - 20.0 / 0.3).abs() < 1e-9);
        assert!((r.mean_load_ms - 9.5).abs() < 1e-9);
        assert!(ServerStats::default().report().is_none());
    }
}
