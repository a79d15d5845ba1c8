//! Scrapes a bench target's `/metrics` during a run, on its own OS thread
//! (with its own single-threaded runtime), never on the request path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::derive::increase;
use super::{unix_ms, Derived, Engine, Scraper, ServerSample, TimedSample, Window};

/// Window of the rates and quantiles of each recorded point.
const POINT_WINDOW: Duration = Duration::from_secs(10);

/// One point of the server time series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerPoint {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Derived metrics over the preceding 10 s.
    pub metrics: Derived,
}

/// Counter increases between the first and last scrape of the run
/// (warmup included: the server cannot tell warmup requests apart).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerTotals {
    /// Prompt tokens processed.
    pub prompt_tokens: Option<f64>,
    /// Tokens generated.
    pub generation_tokens: Option<f64>,
    /// Requests finished successfully.
    pub requests_ok: Option<f64>,
    /// Requests failed or aborted.
    pub requests_failed: Option<f64>,
}

/// The server's view of a run: the `server_metrics` section of the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerMetrics {
    /// URL scraped.
    pub url: String,
    /// Engine detected.
    pub engine: Engine,
    /// Time between scrapes (s).
    pub interval_s: f64,
    /// Successful scrapes.
    pub scrapes: u64,
    /// Failed scrapes.
    pub scrape_errors: u64,
    /// Counter increases over the run.
    pub totals: ServerTotals,
    /// The time series.
    pub points: Vec<ServerPoint>,
}

/// A running recorder.
pub struct Recorder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Option<ServerMetrics>>>,
}

impl Recorder {
    /// Starts scraping `base` every `interval`; the latest derived metrics go
    /// to `live`. Times are relative to `origin`.
    pub fn start(
        base: &str,
        interval: Duration,
        origin: Instant,
        live: watch::Sender<Option<Derived>>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let base = base.to_owned();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("throtl-scrape".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(record(&base, interval, origin, &live, &flag, first_tx))
            })?;
        // The first scrape is the baseline of the run's totals: take it before any load.
        let _ = first_rx.recv_timeout(Duration::from_secs(3));
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Takes a last scrape and returns the series (`None` if no scrape succeeded).
    pub fn finish(mut self) -> Option<ServerMetrics> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok().flatten())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn record(
    base: &str,
    interval: Duration,
    origin: Instant,
    live: &watch::Sender<Option<Derived>>,
    stop: &AtomicBool,
    first_done: std::sync::mpsc::Sender<()>,
) -> Option<ServerMetrics> {
    let scraper = Scraper::new(base, interval.max(Duration::from_secs(2))).ok()?;
    let mut window = Window::new(POINT_WINDOW);
    let mut out = ServerMetrics {
        url: format!("{base}/metrics"),
        engine: Engine::Unknown,
        interval_s: interval.as_secs_f64(),
        scrapes: 0,
        scrape_errors: 0,
        totals: ServerTotals::default(),
        points: Vec::new(),
    };
    let (mut first, mut last): (Option<ServerSample>, Option<ServerSample>) = (None, None);
    let mut next = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping || Instant::now() >= next {
            next += interval;
            match scraper.scrape().await {
                Ok(sample) => {
                    out.scrapes += 1;
                    out.engine = sample.engine;
                    first.get_or_insert_with(|| sample.clone());
                    last = Some(sample.clone());
                    let t = origin.elapsed().as_secs_f64();
                    window.push(TimedSample {
                        t,
                        wall_ms: unix_ms(),
                        sample,
                    });
                    if let Some(d) = window.derive() {
                        let _ = live.send(Some(d.clone()));
                        out.points.push(ServerPoint { t_s: t, metrics: d });
                    }
                }
                Err(_) => out.scrape_errors += 1,
            }
            let _ = first_done.send(());
        }
        // A target without /metrics (a hosted API) is left alone after 3 tries.
        if stopping || (out.scrapes == 0 && out.scrape_errors >= 3) {
            break;
        }
        tokio::time::sleep(
            Duration::from_millis(50).min(next.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    out.totals = totals(first.as_ref()?, last.as_ref()?);
    Some(out)
}

fn totals(a: &ServerSample, b: &ServerSample) -> ServerTotals {
    let inc = |f: fn(&ServerSample) -> Option<f64>| increase([f(a), f(b)].into_iter());
    ServerTotals {
        prompt_tokens: inc(|s| s.prompt_tokens),
        generation_tokens: inc(|s| s.generation_tokens),
        requests_ok: inc(|s| s.requests_ok),
        requests_failed: inc(|s| s.requests_failed),
    }
}
