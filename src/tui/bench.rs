//! The live `throtl bench` dashboard: progress, live rates, rolling TTFT/ITL
//! percentiles, errors by class and, when the target has `/metrics`, the
//! server's own queue, batch and KV-cache usage.
//!
//! It reads aggregator snapshots only; q or Ctrl-C stops the run like a
//! Ctrl-C signal would (raw mode swallows the signal).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Gauge, Paragraph};
use ratatui::Frame;
use tokio::sync::watch;

use super::{fmt_secs, frame_period, is_quit, next_key, Level, TerminalGuard};
use crate::engine::{Controls, StopCondition};
use crate::scrape::Derived;
use crate::stats::aggregator::Percentiles;
use crate::stats::Snapshot;

/// How far back live rates look.
const LIVE_WINDOW: Duration = Duration::from_secs(5);

/// Everything one frame shows.
#[derive(Debug, Clone, Default)]
pub struct BenchFrame {
    /// Latest aggregator snapshot.
    pub snap: Snapshot,
    /// Title (target, model, load).
    pub title: String,
    /// Progress 0–1.
    pub progress: f64,
    /// Progress label.
    pub progress_label: String,
    /// Successful requests/s over the last seconds.
    pub live_rps: f64,
    /// Output tokens/s over the last seconds.
    pub live_tps: f64,
    /// The server's own view, when scraped.
    pub server: Option<Derived>,
    /// Stopping after a q / Ctrl-C.
    pub stopping: bool,
}

/// Live rates from successive snapshots.
#[derive(Debug, Default)]
pub struct LiveRates {
    points: VecDeque<(Instant, u64, u64)>,
}

impl LiveRates {
    /// Adds a snapshot seen at `now`; returns (req/s, tok/s) over the last 5 s.
    pub fn update(&mut self, now: Instant, s: &Snapshot) -> (f64, f64) {
        self.points.push_back((now, s.ok, s.output_tokens));
        while self.points.len() > 2
            && self
                .points
                .front()
                .is_some_and(|p| now.duration_since(p.0) > LIVE_WINDOW)
        {
            self.points.pop_front();
        }
        match (self.points.front(), self.points.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let dt = b.0.duration_since(a.0).as_secs_f64();
                ((b.1 - a.1) as f64 / dt, (b.2 - a.2) as f64 / dt)
            }
            _ => (0.0, 0.0),
        }
    }
}

/// What the dashboard thread needs.
pub struct BenchDashboard {
    /// Aggregator snapshots.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Server metrics, when scraped.
    pub server: Option<watch::Receiver<Option<Derived>>>,
    /// The run's stop condition.
    pub stop_at: StopCondition,
    /// Title line.
    pub title: String,
    /// Run controls (q: soft stop, again: hard stop).
    pub controls: Controls,
}

/// Runs until `done` is set; call on its own thread.
pub fn run(mut d: BenchDashboard, done: &AtomicBool) -> std::io::Result<()> {
    let mut guard = TerminalGuard::enter()?;
    let started = Instant::now();
    let mut rates = LiveRates::default();
    let mut frame = BenchFrame {
        title: d.title.clone(),
        ..BenchFrame::default()
    };
    let mut last_draw: Option<Instant> = None;
    while !done.load(Ordering::Relaxed) {
        let key = next_key(frame_period());
        if key.as_ref().is_some_and(is_quit) {
            stop_run(&d.controls, &mut frame);
        }
        let fresh = d.snapshots.has_changed().unwrap_or(false);
        if !(fresh || key.is_some() || last_draw.is_none())
            || last_draw.is_some_and(|t| t.elapsed() < frame_period())
        {
            continue;
        }
        let snap = Arc::clone(&d.snapshots.borrow_and_update());
        (frame.live_rps, frame.live_tps) = rates.update(Instant::now(), &snap);
        (frame.progress, frame.progress_label) = progress(&snap, d.stop_at, started.elapsed());
        frame.server = d
            .server
            .as_mut()
            .and_then(|r| r.borrow_and_update().clone());
        frame.snap = (*snap).clone();
        guard.terminal.draw(|f| draw(f, &frame))?;
        last_draw = Some(Instant::now());
    }
    Ok(())
}

fn stop_run(c: &Controls, frame: &mut BenchFrame) {
    if c.soft.is_cancelled() {
        c.hard.cancel();
    } else {
        c.soft.cancel();
    }
    frame.stopping = true;
}

fn progress(s: &Snapshot, stop_at: StopCondition, elapsed: Duration) -> (f64, String) {
    match stop_at {
        StopCondition::Requests(n) => {
            let done = s.done.min(n);
            (
                done as f64 / n.max(1) as f64,
                format!("{done}/{n} requests  ({:.0} s)", elapsed.as_secs_f64()),
            )
        }
        StopCondition::Duration(d) => {
            let w = s.window.min(d);
            (
                w.as_secs_f64() / d.as_secs_f64().max(1e-9),
                format!("{:.0}/{:.0} s measured", w.as_secs_f64(), d.as_secs_f64()),
            )
        }
    }
}

/// Draws one frame (pure function of `f`'s data).
pub fn draw(f: &mut Frame, fr: &BenchFrame) {
    let server_h = if fr.server.is_some() { 7 } else { 0 };
    let [title, gauge, body, server] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Min(8),
        Constraint::Length(server_h),
    ])
    .areas(f.area());
    let stop = if fr.stopping {
        "  stopping…"
    } else {
        "  q: stop"
    };
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(
                "throtl bench ",
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!("{}{stop}", fr.title)),
        ])),
        title,
    );
    f.render_widget(
        Gauge::default()
            .block(Block::bordered().title(" progress "))
            .gauge_style(Style::default().fg(Color::Cyan))
            .ratio(fr.progress.clamp(0.0, 1.0))
            .label(fr.progress_label.clone()),
        gauge,
    );
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(body);
    f.render_widget(client_panel(fr), left);
    f.render_widget(errors_panel(&fr.snap), right);
    if let Some(d) = &fr.server {
        f.render_widget(server_panel(d), server);
    }
}

fn pct_line(label: &str, p: Percentiles) -> Line<'static> {
    if p.count == 0 {
        return Line::from(format!("{label:<14}—"));
    }
    Line::from(format!(
        "{label:<14}p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  (n={})",
        p.p50, p.p95, p.p99, p.count
    ))
}

fn client_panel(fr: &BenchFrame) -> Paragraph<'static> {
    let s = &fr.snap;
    let lines = vec![
        Line::from(format!(
            "{:<14}{:.1} req/s   {:.0} tok/s",
            "live (5 s)", fr.live_rps, fr.live_tps
        )),
        Line::from(format!(
            "{:<14}{} ok  {} failed  {} warmup",
            "requests", s.ok, s.failed, s.warmup
        )),
        Line::from(format!(
            "{:<14}{} in  {} out",
            "tokens", s.input_tokens, s.output_tokens
        )),
        pct_line("TTFT (20 s)", s.recent_ttft_ms),
        pct_line("ITL (20 s)", s.recent_itl_ms),
        Line::from(format!(
            "{:<14}TTFT p50 {:.1} ms  ITL p50 {:.2} ms",
            "whole run", s.ttft_p50_ms, s.itl_p50_ms
        )),
    ];
    Paragraph::new(lines).block(Block::bordered().title(" client "))
}

fn errors_panel(s: &Snapshot) -> Paragraph<'static> {
    let lines: Vec<Line> = if s.errors.is_empty() {
        vec![Line::from(Span::styled(
            "no errors",
            Style::default().fg(Color::Green),
        ))]
    } else {
        s.errors
            .iter()
            .map(|(k, v)| {
                Line::from(Span::styled(
                    format!("{k:<16}{v}"),
                    Style::default().fg(Color::Red),
                ))
            })
            .collect()
    };
    Paragraph::new(lines).block(Block::bordered().title(" errors by class "))
}

fn server_panel(d: &Derived) -> Paragraph<'static> {
    let n = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.0}"));
    let kv = d.kv_cache_usage;
    let kv_span = Span::styled(
        kv.map_or_else(|| "—".to_owned(), |v| format!("{:.1}%", v * 100.0)),
        Style::default().fg(kv.map_or(Color::Reset, |v| Level::of(v, 0.7, 0.9).color())),
    );
    let lines = vec![
        Line::from(format!(
            "{:<14}{} running   {} waiting",
            "batch / queue",
            n(d.running),
            n(d.waiting)
        )),
        Line::from(vec![Span::raw(format!("{:<14}", "KV cache")), kv_span]),
        Line::from(format!(
            "{:<14}{} tok/s generated   {} prompt tok/s",
            "server rate",
            n(d.generation_tokens_per_s),
            n(d.prompt_tokens_per_s)
        )),
        Line::from(format!(
            "{:<14}{}",
            "server TTFT",
            d.ttft.map_or_else(
                || "—".to_owned(),
                |q| format!("p50 {}  p95 {}", fmt_secs(q.p50), fmt_secs(q.p95))
            )
        )),
    ];
    Paragraph::new(lines).block(Block::bordered().title(" server /metrics "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    #[test]
    fn renders_client_errors_and_server_views() {
        let mut snap = Snapshot {
            done: 50,
            ok: 48,
            failed: 2,
            output_tokens: 6144,
            input_tokens: 1000,
            ..Snapshot::default()
        };
        snap.errors.insert("http_503".into(), 2);
        snap.recent_ttft_ms = Percentiles {
            p50: 101.0,
            p95: 150.5,
            p99: 180.0,
            count: 48,
        };
        let (progress, progress_label) =
            progress(&snap, StopCondition::Requests(100), Duration::from_secs(3));
        let fr = BenchFrame {
            snap,
            title: "http://x model m concurrency 4".into(),
            progress,
            progress_label,
            live_rps: 12.5,
            live_tps: 1600.0,
            server: Some(Derived {
                running: Some(4.0),
                waiting: Some(0.0),
                kv_cache_usage: Some(0.5),
                ..Derived::default()
            }),
            stopping: false,
        };
        let mut t = Terminal::new(TestBackend::new(110, 24)).unwrap();
        t.draw(|f| draw(f, &fr)).unwrap();
        let buf = t.backend().buffer();
        let text: String = (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
                    + "\n"
            })
            .collect();
        assert!(text.contains("50/100 requests"), "{text}");
        assert!(text.contains("12.5 req/s   1600 tok/s"), "{text}");
        assert!(
            text.contains("p50 101.0 ms  p95 150.5 ms  p99 180.0 ms  (n=48)"),
            "{text}"
        );
        assert!(text.contains("http_503        2"), "{text}");
        assert!(text.contains("4 running   0 waiting"), "{text}");
        assert!(text.contains("50.0%"), "{text}");
    }

    #[test]
    fn live_rates_use_the_last_seconds() {
        let mut r = LiveRates::default();
        let t0 = Instant::now();
        let s = |ok, tok| Snapshot {
            ok,
            output_tokens: tok,
            ..Snapshot::default()
        };
        assert_eq!(r.update(t0, &s(0, 0)), (0.0, 0.0));
        let (rps, tps) = r.update(t0 + Duration::from_secs(2), &s(20, 2000));
        assert!((rps - 10.0).abs() < 1e-9 && (tps - 1000.0).abs() < 1e-9);
        // after 10 s the first point has left the window
        let (rps, _) = r.update(t0 + Duration::from_secs(10), &s(100, 10000));
        assert!((rps - 10.0).abs() < 1e-9, "{rps}");
    }
}
