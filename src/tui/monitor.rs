//! The `throtl monitor` dashboard: a tab per server, its derived metrics with
//! traffic-light colours, sparkline charts of the last minutes, alerts.
//!
//! Keys: Tab / → / ← switch server, p pause, w change window, q quit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Sparkline, Tabs};
use ratatui::Frame;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{fmt_secs, frame_period, is_quit, next_key, spark_data, Level, TerminalGuard};
use crate::alert::{AlertState, Severity};
use crate::monitor::{MonitorCommand, MonitorSnapshot, ServerView};
use crate::scrape::{Derived, Quantiles};

/// Windows cycled by the `w` key.
pub const WINDOWS: [Duration; 4] = [
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(300),
    Duration::from_secs(900),
];

/// What the viewer chose.
#[derive(Debug, Clone, Default)]
pub struct UiState {
    /// Index of the server shown.
    pub selected: usize,
    /// A frozen snapshot while paused.
    pub paused: Option<Arc<MonitorSnapshot>>,
}

/// Runs the dashboard until a quit key or `stop`; call on its own thread.
pub fn run(
    mut rx: watch::Receiver<Arc<MonitorSnapshot>>,
    commands: mpsc::UnboundedSender<MonitorCommand>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut guard = TerminalGuard::enter()?;
    let mut ui = UiState::default();
    let mut dirty = true;
    let mut last_draw: Option<Instant> = None;
    while !stop.is_cancelled() {
        if let Some(k) = next_key(frame_period()) {
            if is_quit(&k) {
                stop.cancel();
                break;
            }
            handle_key(&k, &mut ui, &rx.borrow(), &commands);
            dirty = true;
        }
        dirty |= rx.has_changed().unwrap_or(false);
        if dirty && last_draw.is_none_or(|t| t.elapsed() >= frame_period()) {
            let snap = ui
                .paused
                .clone()
                .unwrap_or_else(|| Arc::clone(&rx.borrow_and_update()));
            guard.terminal.draw(|f| draw(f, &snap, &ui))?;
            last_draw = Some(Instant::now());
            dirty = false;
        }
    }
    Ok(())
}

fn handle_key(
    k: &KeyEvent,
    ui: &mut UiState,
    snap: &Arc<MonitorSnapshot>,
    commands: &mpsc::UnboundedSender<MonitorCommand>,
) {
    let n = snap.servers.len().max(1);
    match k.code {
        KeyCode::Tab | KeyCode::Right | KeyCode::Char('l') => ui.selected = (ui.selected + 1) % n,
        KeyCode::BackTab | KeyCode::Left | KeyCode::Char('h') => {
            ui.selected = (ui.selected + n - 1) % n
        }
        KeyCode::Char('p') | KeyCode::Char(' ') => {
            ui.paused = if ui.paused.is_some() {
                None
            } else {
                Some(Arc::clone(snap))
            };
        }
        KeyCode::Char('w') => {
            let i = WINDOWS
                .iter()
                .position(|w| *w == snap.window)
                .map_or(0, |i| (i + 1) % WINDOWS.len());
            let _ = commands.send(MonitorCommand::SetWindow(WINDOWS[i]));
        }
        _ => {}
    }
}

/// Draws one frame (pure function of the snapshot and the view state).
pub fn draw(f: &mut Frame, snap: &MonitorSnapshot, ui: &UiState) {
    let [header, tabs, body, alerts] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(10),
        Constraint::Length(8),
    ])
    .areas(f.area());
    f.render_widget(header_line(snap, ui), header);
    f.render_widget(server_tabs(snap, ui), tabs);
    if let Some(server) = snap
        .servers
        .get(ui.selected.min(snap.servers.len().saturating_sub(1)))
    {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                .areas(body);
        f.render_widget(metrics_panel(server), left);
        draw_charts(f, server, right);
    }
    f.render_widget(alerts_panel(snap), alerts);
}

fn header_line(snap: &MonitorSnapshot, ui: &UiState) -> Paragraph<'static> {
    let paused = if ui.paused.is_some() {
        "  [PAUSED]"
    } else {
        ""
    };
    Paragraph::new(Line::from(vec![
        Span::styled("throtl monitor", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "  {} server(s)  interval {}  window {}{paused}   Tab/←/→ server  p pause  w window  q quit",
            snap.servers.len(),
            humantime::format_duration(snap.interval),
            humantime::format_duration(snap.window)
        )),
    ]))
}

fn server_tabs(snap: &MonitorSnapshot, ui: &UiState) -> Tabs<'static> {
    let titles: Vec<Line> = snap
        .servers
        .iter()
        .map(|s| {
            let color = if s.error.is_some() {
                Color::Red
            } else {
                Color::Green
            };
            Line::from(Span::styled(
                format!("{} ({})", s.url, s.engine),
                Style::default().fg(color),
            ))
        })
        .collect();
    Tabs::new(titles)
        .select(ui.selected)
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED))
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "—".to_owned(), f)
}

fn row(label: &str, value: String, level: Option<Level>) -> Line<'static> {
    let style = level.map_or_else(Style::default, |l| Style::default().fg(l.color()));
    Line::from(vec![
        Span::raw(format!("{label:<18}")),
        Span::styled(value, style),
    ])
}

fn quantile_row(label: &str, q: Option<Quantiles>, warn: f64, bad: f64) -> Line<'static> {
    match q {
        Some(q) => row(
            label,
            format!(
                "p50 {}  p95 {}  p99 {}",
                fmt_secs(q.p50),
                fmt_secs(q.p95),
                fmt_secs(q.p99)
            ),
            Some(Level::of(q.p95, warn, bad)),
        ),
        None => row(label, "—".into(), None),
    }
}

/// Rows with their colour thresholds (documented in docs/monitor.md).
fn metric_lines(d: &Derived) -> Vec<Line<'static>> {
    let pct = |v: f64| format!("{:.1}%", v * 100.0);
    let num = |v: f64| format!("{v:.0}");
    let rate = |v: f64| format!("{v:.1}/s");
    vec![
        row("running", opt(d.running, num), None),
        row(
            "waiting",
            opt(d.waiting, num),
            d.waiting.map(|v| Level::of(v, 1.0, 10.0)),
        ),
        row(
            "KV cache",
            opt(d.kv_cache_usage, pct),
            d.kv_cache_usage.map(|v| Level::of(v, 0.7, 0.9)),
        ),
        row(
            "prompt tok/s",
            opt(d.prompt_tokens_per_s, |v| format!("{v:.1}")),
            None,
        ),
        row(
            "gen tok/s",
            opt(d.generation_tokens_per_s, |v| format!("{v:.1}")),
            None,
        ),
        row("requests", opt(d.requests_per_s, rate), None),
        row(
            "failed",
            opt(d.failed_requests_per_s, rate),
            d.failed_requests_per_s.map(|v| Level::of(v, 1e-9, 0.1)),
        ),
        row(
            "preemptions",
            opt(d.preemptions_per_s, rate),
            d.preemptions_per_s.map(|v| Level::of(v, 1e-9, 0.1)),
        ),
        row("prefix hit rate", opt(d.prefix_cache_hit_rate, pct), None),
        quantile_row("TTFT", d.ttft, 0.5, 2.0),
        quantile_row("ITL", d.itl, 0.05, 0.2),
        quantile_row("E2E", d.e2e, 10.0, 30.0),
        quantile_row("queue", d.queue, 0.1, 1.0),
        row("GPU util", opt(d.gpu_util, pct), None),
        row("GPU memory", gpu_mem(d), None),
    ]
}

fn gpu_mem(d: &Derived) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    match (
        d.gpu_mem_used_bytes,
        d.gpu_mem_total_bytes,
        d.model_vram_bytes,
    ) {
        (Some(u), Some(t), _) => format!("{:.1} / {:.1} GiB", u / GIB, t / GIB),
        (Some(u), None, _) => format!("{:.1} GiB", u / GIB),
        (None, _, Some(v)) => format!(
            "{:.1} GiB held by {} model(s)",
            v / GIB,
            d.loaded_models.unwrap_or(0.0)
        ),
        _ => "—".into(),
    }
}

fn metrics_panel(s: &ServerView) -> Paragraph<'static> {
    let mut lines = match &s.derived {
        Some(d) => metric_lines(d),
        None => vec![Line::from("waiting for the first scrape…")],
    };
    if let Some(e) = &s.error {
        lines.push(Line::from(Span::styled(
            format!("scrape failed: {e}"),
            Style::default().fg(Color::Red),
        )));
    }
    Paragraph::new(lines).block(Block::bordered().title(format!(" {} ", s.url)))
}

fn draw_charts(f: &mut Frame, s: &ServerView, area: Rect) {
    let areas = Layout::vertical([Constraint::Ratio(1, 4); 4]).split(area);
    let w = usize::from(area.width.saturating_sub(2));
    let charts = [
        (
            "gen tok/s",
            spark_data(&s.gen_tps, 1.0, w),
            last(&s.gen_tps, |v| format!("{v:.0}")),
        ),
        (
            "KV cache %",
            spark_data(&s.kv, 100.0, w),
            last(&s.kv, |v| format!("{:.1}%", v * 100.0)),
        ),
        (
            "waiting",
            spark_data(&s.waiting, 1.0, w),
            last(&s.waiting, |v| format!("{v:.0}")),
        ),
        (
            "TTFT p95 ms",
            spark_data(&s.ttft_p95, 1000.0, w),
            last(&s.ttft_p95, fmt_secs),
        ),
    ];
    for ((title, data, now), a) in charts.into_iter().zip(areas.iter()) {
        let spark = Sparkline::default()
            .block(Block::bordered().title(format!(" {title}: {now} ")))
            .data(&data)
            .style(Style::default().fg(Color::Cyan));
        f.render_widget(spark, *a);
    }
}

fn last(s: &crate::monitor::view::Series, f: impl Fn(f64) -> String) -> String {
    s.0.back().map_or_else(|| "—".to_owned(), |&(_, v)| f(v))
}

fn alerts_panel(snap: &MonitorSnapshot) -> Paragraph<'static> {
    let mut lines: Vec<Line> = snap
        .firing
        .iter()
        .map(|(server, rule, sev)| {
            let color = if *sev == Severity::Critical {
                Color::Red
            } else {
                Color::Yellow
            };
            Line::from(Span::styled(
                format!("FIRING [{sev}] {rule} on {server}"),
                Style::default().fg(color),
            ))
        })
        .collect();
    for e in snap
        .events
        .iter()
        .rev()
        .take(6usize.saturating_sub(lines.len()))
    {
        let color = if e.state == AlertState::Firing {
            Color::Yellow
        } else {
            Color::Green
        };
        let when = e.ts_ms / 1000;
        lines.push(Line::from(Span::styled(
            format!(
                "{} {} {} ({}): {}",
                clock(when),
                e.state.as_str(),
                e.rule,
                e.server,
                e.message
            ),
            Style::default().fg(color),
        )));
    }
    if lines.is_empty() {
        lines.push(Line::from(Span::styled(
            "no alerts",
            Style::default().fg(Color::Green),
        )));
    }
    Paragraph::new(lines).block(Block::bordered().title(" alerts "))
}

fn clock(unix_s: i64) -> String {
    let s = unix_s.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertEvent;
    use crate::scrape::Engine;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn render(snap: &MonitorSnapshot, ui: &UiState) -> (String, ratatui::buffer::Buffer) {
        let mut t = Terminal::new(TestBackend::new(120, 36)).unwrap();
        t.draw(|f| draw(f, snap, ui)).unwrap();
        let buf = t.backend().buffer().clone();
        let text = (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n");
        (text, buf)
    }

    fn color_of(buf: &ratatui::buffer::Buffer, text: &str, needle: &str) -> Color {
        let (y, line) = text
            .lines()
            .enumerate()
            .find(|(_, l)| l.contains(needle))
            .unwrap();
        let x = line
            .chars()
            .take_while(|_| true)
            .collect::<String>()
            .find(needle)
            .unwrap();
        let col = line[..x].chars().count() as u16;
        buf[(col, y as u16)].fg
    }

    fn snapshot() -> MonitorSnapshot {
        let mut s = MonitorSnapshot::new(
            &["http://a:8000".into(), "http://b:9000".into()],
            Duration::from_secs(2),
            Duration::from_secs(60),
        );
        let d = Derived {
            running: Some(12.0),
            waiting: Some(3.0),
            kv_cache_usage: Some(0.95),
            generation_tokens_per_s: Some(1234.5),
            ttft: Some(Quantiles {
                p50: 0.12,
                p95: 0.3,
                p99: 0.9,
                mean: 0.15,
                count: 40.0,
            }),
            ..Derived::default()
        };
        for i in 0..5 {
            s.servers[0].update_ok(f64::from(i), Engine::Vllm, Some(d.clone()));
        }
        s.servers[1].update_err("connection refused".into());
        s.firing = vec![(
            "http://a:8000".into(),
            "kv_cache_nearly_full".into(),
            Severity::Warning,
        )];
        s.push_event(AlertEvent {
            server: "http://a:8000".into(),
            rule: "kv_cache_nearly_full".into(),
            state: AlertState::Firing,
            severity: Severity::Warning,
            metric: "kv_cache_usage".into(),
            value: Some(0.95),
            message: "KV cache above 90%".into(),
            ts_ms: 3_600_000,
        });
        s
    }

    #[test]
    fn renders_metrics_thresholds_charts_and_alerts() {
        let (text, buf) = render(&snapshot(), &UiState::default());
        assert!(text.contains("http://a:8000 (vllm)"), "{text}");
        assert!(text.contains("KV cache          95.0%"), "{text}");
        assert!(text.contains("gen tok/s         1234.5"), "{text}");
        assert!(
            text.contains("p50 120.0 ms  p95 300.0 ms  p99 900.0 ms"),
            "{text}"
        );
        assert!(text.contains("gen tok/s: 1234"), "chart title: {text}");
        assert!(
            text.contains("FIRING [warning] kv_cache_nearly_full on http://a:8000"),
            "{text}"
        );
        assert!(
            text.contains("01:00:00Z firing kv_cache_nearly_full"),
            "{text}"
        );
        assert_eq!(color_of(&buf, &text, "95.0%"), Color::Red);
        assert_eq!(color_of(&buf, &text, "3    "), Color::Yellow); // 3 waiting
        assert!(text.contains("window 1m"), "{text}");
    }

    #[test]
    fn switching_server_shows_its_error_and_pause_is_marked() {
        let snap = Arc::new(snapshot());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut ui = UiState::default();
        handle_key(&KeyEvent::from(KeyCode::Tab), &mut ui, &snap, &tx);
        handle_key(&KeyEvent::from(KeyCode::Char('p')), &mut ui, &snap, &tx);
        let (text, _) = render(&snap, &ui);
        assert!(text.contains("scrape failed: connection refused"), "{text}");
        assert!(text.contains("[PAUSED]"), "{text}");
        handle_key(&KeyEvent::from(KeyCode::Char('w')), &mut ui, &snap, &tx);
        assert!(
            matches!(rx.try_recv().unwrap(), MonitorCommand::SetWindow(w) if w == Duration::from_secs(300))
        );
    }
}
