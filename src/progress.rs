//! Live progress on its own OS thread, fed by aggregator snapshots.
//!
//! It never touches the engine's runtime: it only reads the latest snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::config::ProgressMode;
use crate::engine::StopCondition;
use crate::stats::Snapshot;

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
        stop_at: StopCondition,
        warmup: u64,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = match mode {
            ProgressMode::Quiet => None,
            _ => std::thread::Builder::new()
                .name("throtl-progress".into())
                .spawn(move || draw_loop(mode, rx, stop_at, warmup, &flag))
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

fn draw_loop(
    mode: ProgressMode,
    rx: watch::Receiver<Arc<Snapshot>>,
    stop_at: StopCondition,
    warmup: u64,
    stop: &AtomicBool,
) {
    let started = Instant::now();
    let bar = (mode == ProgressMode::Bar).then(|| new_bar(stop_at));
    let period = if bar.is_some() {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(5)
    };
    let mut last_line = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let snap = Arc::clone(&rx.borrow());
        let msg = status_line(&snap, warmup);
        match &bar {
            Some(b) => {
                b.set_position(position(&snap, stop_at));
                b.set_message(msg);
            }
            None if last_line.elapsed() >= period => {
                last_line = Instant::now();
                eprintln!("[{:>6.1}s] {msg}", started.elapsed().as_secs_f64());
            }
            None => {}
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

fn new_bar(stop_at: StopCondition) -> ProgressBar {
    let len = match stop_at {
        StopCondition::Requests(n) => n,
        StopCondition::Duration(d) => d.as_secs().max(1),
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(10));
    let template = "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} eta {eta}  {msg}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

fn position(s: &Snapshot, stop_at: StopCondition) -> u64 {
    match stop_at {
        StopCondition::Requests(_) => s.done,
        StopCondition::Duration(_) => s.window.as_secs(),
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
