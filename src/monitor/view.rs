//! Immutable monitor snapshots for presentation: latest derived metrics per
//! server plus bounded chart series.

use std::collections::VecDeque;
use std::time::Duration;

use crate::alert::{AlertEvent, Severity};
use crate::scrape::{Derived, Engine};

/// Points kept per chart series (at a 2 s interval: 10 minutes).
pub const SERIES_POINTS: usize = 300;
/// Alert events kept for display.
pub const EVENTS_KEPT: usize = 50;

/// A bounded `(t, value)` series.
#[derive(Debug, Clone, Default)]
pub struct Series(pub VecDeque<(f64, f64)>);

impl Series {
    fn push(&mut self, t: f64, v: Option<f64>) {
        let Some(v) = v.filter(|v| v.is_finite()) else {
            return;
        };
        if self.0.len() == SERIES_POINTS {
            self.0.pop_front();
        }
        self.0.push_back((t, v));
    }

    /// Points as a slice-friendly vector.
    pub fn points(&self) -> Vec<(f64, f64)> {
        self.0.iter().copied().collect()
    }
}

/// One server as the dashboard shows it.
#[derive(Debug, Clone, Default)]
pub struct ServerView {
    /// Base URL.
    pub url: String,
    /// Detected engine.
    pub engine: Engine,
    /// Last scrape error (cleared by a successful scrape).
    pub error: Option<String>,
    /// Latest derived metrics.
    pub derived: Option<Derived>,
    /// Generated tokens/s over time.
    pub gen_tps: Series,
    /// Running requests over time.
    pub running: Series,
    /// Waiting requests over time.
    pub waiting: Series,
    /// KV-cache usage over time.
    pub kv: Series,
    /// TTFT p95 (s) over time.
    pub ttft_p95: Series,
}

impl ServerView {
    /// Records a successful scrape at monotonic time `t`.
    pub fn update_ok(&mut self, t: f64, engine: Engine, d: Option<Derived>) {
        self.engine = engine;
        self.error = None;
        if let Some(d) = &d {
            self.gen_tps.push(t, d.generation_tokens_per_s);
            self.running.push(t, d.running);
            self.waiting.push(t, d.waiting);
            self.kv.push(t, d.kv_cache_usage);
            self.ttft_p95.push(t, d.ttft.map(|q| q.p95));
        }
        self.derived = d;
    }

    /// Records a failed scrape.
    pub fn update_err(&mut self, e: String) {
        self.error = Some(e);
    }
}

/// Everything the dashboard draws.
#[derive(Debug, Clone, Default)]
pub struct MonitorSnapshot {
    /// Servers in command-line order.
    pub servers: Vec<ServerView>,
    /// Scrape interval.
    pub interval: Duration,
    /// Window of rates and quantiles.
    pub window: Duration,
    /// Recent alert transitions, newest last.
    pub events: VecDeque<AlertEvent>,
    /// Alerts firing now: (server, rule, severity).
    pub firing: Vec<(String, String, Severity)>,
}

impl MonitorSnapshot {
    /// An empty snapshot for `targets`.
    pub fn new(targets: &[String], interval: Duration, window: Duration) -> Self {
        Self {
            servers: targets
                .iter()
                .map(|u| ServerView {
                    url: u.clone(),
                    ..ServerView::default()
                })
                .collect(),
            interval,
            window,
            ..Self::default()
        }
    }

    /// Adds an alert transition, dropping the oldest beyond [`EVENTS_KEPT`].
    pub fn push_event(&mut self, e: AlertEvent) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }
}
