//! Live progress on its own OS thread, fed by aggregator snapshots.
//!
//! It never touches the engine's runtime: it only reads the latest snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::ProgressMode;
use crate::engine::{Controls, StopCondition};
use crate::scrape::Derived;
use crate::stats::Snapshot;
use crate::tui::bench::BenchDashboard;

/// What the live display shows besides the aggregator snapshots.
pub struct ProgressInputs {
    /// The run's stop condition.
    pub stop_at: StopCondition,
    /// Warmup requests.
    pub warmup: u64,
    /// The target's own metrics, when scraped.
    pub server: Option<watch::Receiver<Option<Derived>>>,
    /// Dashboard title (target, model, load).
    pub title: String,
    /// Run controls, for the dashboard's stop key.
    pub controls: Controls,
}

/// A running progress display.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing progress in `mode` (nothing for `Quiet`).
    pub fn start(
        mode: ProgressMode,
        rx: watch::Receiver<Arc<Snapshot>>,
        inputs: ProgressInputs,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (stop_at, warmup) = (inputs.stop_at, inputs.warmup);
        let thread = match mode {
            ProgressMode::Quiet => None,
            ProgressMode::Tui => std::thread::Builder::new()
                .name("throtl-dashboard".into())
                .spawn(move || {
                    let dash = BenchDashboard {
                        snapshots: rx.clone(),
                        server: inputs.server,
                        stop_at,
                        title: inputs.title,
                        controls: inputs.controls,
                    };
                    // No usable terminal: fall back to plain lines.
                    if crate::tui::bench::run(dash, &flag).is_err() {
                        crate::tui::restore();
                        print_lines(rx, warmup, &flag);
                    }
                })
                .ok(),
            ProgressMode::Lines => std::thread::Builder::new()
                .name("throtl-progress".into())
                .spawn(move || print_lines(rx, warmup, &flag))
                .ok(),
        };
        Self { stop, thread }
    }

    /// Stops and clears the display.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A plain status line every 5 s on stderr (pipes, CI logs).
fn print_lines(rx: watch::Receiver<Arc<Snapshot>>, warmup: u64, stop: &AtomicBool) {
    let started = Instant::now();
    let period = Duration::from_secs(5);
    let mut last_line = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last_line.elapsed() >= period {
            last_line = Instant::now();
            let snap = Arc::clone(&rx.borrow());
            let msg = status_line(&snap, warmup);
            eprintln!("[{:>6.1}s] {msg}", started.elapsed().as_secs_f64());
        }
    }
}

fn status_line(s: &Snapshot, warmup: u64) -> String {
    let secs = s.window.as_secs_f64();
    let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    if s.done == 0 {
        return format!("warming up ({}/{warmup} warmup requests done)", s.warmup);
    }
    format!(
        "{:.1} req/s  {:.0} tok/s  ok {}  errors {}  TTFT p50 {:.1} ms  ITL p50 {:.2} ms",
        rate(s.ok),
        rate(s.output_tokens),
        s.ok,
        s.failed,
        s.ttft_p50_ms,
        s.itl_p50_ms
    )
}
