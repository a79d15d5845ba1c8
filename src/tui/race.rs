//! The live `throtl race` view: one column per target, tokens appearing as
//! they arrive, TTFT and tokens/s per column. It runs on its own OS thread,
//! owns the [`RaceBoard`] fed by the race's event channel, and redraws at
//! most [`super::MAX_FPS`] times a second when something changed. q or
//! Ctrl-C cancels the race.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Instant;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;
use tokio_util::sync::CancellationToken;

use super::{fmt_secs, frame_period, is_quit, next_key, TerminalGuard};
use crate::race::board::{Column, RaceBoard};
use crate::race::RaceEvent;

/// Starts the view thread; it ends when the event channel closes.
pub fn spawn(
    board: RaceBoard,
    rx: Receiver<RaceEvent>,
    cancel: CancellationToken,
    title: String,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("throtl-race-view".into())
        .spawn(move || {
            if let Ok(mut guard) = TerminalGuard::enter() {
                view_loop(&mut guard, board, &rx, &cancel, &title);
            } else {
                // No terminal after all: drain so senders never block.
                while rx.recv().is_ok() {}
            }
        })
}

fn view_loop(
    guard: &mut TerminalGuard,
    mut board: RaceBoard,
    rx: &Receiver<RaceEvent>,
    cancel: &CancellationToken,
    title: &str,
) {
    let mut dirty = true;
    let mut last_draw: Option<Instant> = None;
    loop {
        match rx.recv_timeout(frame_period()) {
            Ok(ev) => {
                board.apply(ev);
                while let Ok(ev) = rx.try_recv() {
                    board.apply(ev);
                }
                dirty = true;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if next_key(std::time::Duration::ZERO).is_some_and(|k| is_quit(&k)) {
            cancel.cancel();
        }
        if dirty && last_draw.is_none_or(|t| t.elapsed() >= frame_period()) {
            let _ = guard.terminal.draw(|f| draw(f, &board, title));
            last_draw = Some(Instant::now());
            dirty = false;
        }
    }
}

/// Draws one frame.
pub fn draw(f: &mut Frame, board: &RaceBoard, title: &str) {
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let run = format!("  run {}/{}", board.run + 1, board.runs);
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("throtl race", Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(run),
            Span::styled(format!("  {title}"), Style::default().fg(Color::DarkGray)),
        ])),
        head,
    );
    let n = board.columns.len().max(1) as u32;
    let areas = Layout::horizontal((0..n).map(|_| Constraint::Ratio(1, n))).split(body);
    for (c, area) in board.columns.iter().zip(areas.iter()) {
        draw_column(f, c, board.start, *area);
    }
    f.render_widget(
        Paragraph::new("q: stop   TTFT from the common start; tok/s = decode rate")
            .style(Style::default().fg(Color::DarkGray)),
        foot,
    );
}

fn column_title(c: &Column) -> Line<'static> {
    let (mark, color) = match (&c.setup_error, &c.done) {
        (Some(_), _) => (" ✗", Color::Red),
        (None, Some(d)) if d.error.is_some() => (" ✗", Color::Red),
        (None, Some(_)) => (" ✓", Color::Green),
        (None, None) => ("", Color::Cyan),
    };
    Line::from(Span::styled(
        format!(" {}{mark} ", c.name),
        Style::default().fg(color).add_modifier(Modifier::BOLD),
    ))
}

fn stats_line(c: &Column, start: Option<Instant>) -> Line<'static> {
    let ttft = c
        .ttft_ms(start)
        .map_or_else(|| "…".to_owned(), |v| fmt_secs(v / 1000.0));
    let tps = c
        .tokens_per_s()
        .map_or_else(|| "…".to_owned(), |v| format!("{v:.1}"));
    let mut spans = vec![
        Span::raw("TTFT "),
        Span::styled(ttft, Style::default().fg(Color::Yellow)),
        Span::raw("  tok/s "),
        Span::styled(tps, Style::default().fg(Color::Yellow)),
        Span::raw(format!("  {} tok", c.tokens)),
    ];
    if let Some(d) = &c.done {
        spans.push(Span::raw(format!("  e2e {}", fmt_secs(d.e2e_ms / 1000.0))));
    }
    Line::from(spans)
}

fn draw_column(f: &mut Frame, c: &Column, start: Option<Instant>, area: Rect) {
    let block = Block::bordered().title(column_title(c));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [stats, text] = Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(inner);
    f.render_widget(Paragraph::new(stats_line(c, start)), stats);
    let error = c
        .setup_error
        .clone()
        .or_else(|| c.done.as_ref().and_then(|d| d.error.clone()));
    let body = match error {
        Some(e) => Paragraph::new(e).style(Style::default().fg(Color::Red)),
        None => Paragraph::new(tail(
            &c.text,
            usize::from(text.width) * usize::from(text.height),
        )),
    };
    f.render_widget(body.wrap(Wrap { trim: false }), text);
}

/// The last `max` characters of `s` (what fits in the column).
fn tail(s: &str, max: usize) -> String {
    let n = s.chars().count();
    s.chars().skip(n.saturating_sub(max)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use std::sync::Arc;

    #[test]
    fn columns_show_each_targets_text_and_numbers() {
        let p: Arc<dyn crate::api::Protocol> =
            Arc::from(crate::api::ApiKind::OpenaiChat.protocol());
        let mut b = RaceBoard::new(
            vec![
                Column::new("fast", Some(p.clone()), None),
                Column::new("down", None, Some("cannot reach".into())),
            ],
            1,
        );
        let t0 = Instant::now();
        b.apply(RaceEvent::RunStarted { run: 0, at: t0 });
        let data = "data: {\"choices\":[{\"delta\":{\"content\":\"Once upon\"}}]}\n\n";
        b.apply(RaceEvent::Chunk {
            target: 0,
            at: t0 + std::time::Duration::from_millis(42),
            bytes: data.as_bytes().to_vec().into(),
        });
        let mut term = Terminal::new(TestBackend::new(80, 12)).unwrap();
        term.draw(|f| draw(f, &b, "prompt")).unwrap();
        let screen: String = term
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect();
        for want in ["fast", "down", "Once upon", "TTFT 42.0 ms", "cannot reach"] {
            assert!(screen.contains(want), "{want} missing in {screen}");
        }
    }
}
