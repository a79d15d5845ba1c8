//! Terminal dashboards (ratatui): the monitor ([`monitor`]) and the live bench
//! view ([`mod@bench`]). Each renders from immutable snapshots on its own OS
//! thread at most [`MAX_FPS`] times a second, redrawing only when a new
//! snapshot or a key arrives. A RAII guard and a panic hook restore the
//! terminal on every exit path.

pub mod bench;
pub mod monitor;
pub mod race;

use std::io::{self, Stderr};
use std::sync::Once;
use std::time::Duration;

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::style::Color;
use ratatui::Terminal;

/// Highest redraw rate.
pub const MAX_FPS: u32 = 10;

/// The time between frames at [`MAX_FPS`].
pub fn frame_period() -> Duration {
    Duration::from_millis(1000 / u64::from(MAX_FPS))
}

/// Owns the terminal in raw mode on the alternate screen (drawn on stderr,
/// so stdout stays clean for results); restores it when dropped.
pub struct TerminalGuard {
    /// The ratatui terminal.
    pub terminal: Terminal<CrosstermBackend<Stderr>>,
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen, and installs the panic hook.
    pub fn enter() -> io::Result<Self> {
        install_panic_hook();
        enable_raw_mode()?;
        if let Err(e) = execute!(io::stderr(), EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(io::stderr())) {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen; safe to call more than once.
pub fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stderr(), LeaveAlternateScreen, cursor::Show);
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// A key press, if one arrives within `timeout`.
pub fn next_key(timeout: Duration) -> Option<KeyEvent> {
    if !event::poll(timeout).unwrap_or(false) {
        return None;
    }
    match event::read() {
        Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => Some(k),
        _ => None,
    }
}

/// Whether `k` asks to quit (q, Esc, Ctrl-C).
pub fn is_quit(k: &KeyEvent) -> bool {
    matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
        || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL))
}

/// Traffic-light level of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Healthy.
    Ok,
    /// Watch it.
    Warn,
    /// Act.
    Bad,
}

impl Level {
    /// `Ok` below `warn`, `Warn` below `bad`, else `Bad`.
    pub fn of(v: f64, warn: f64, bad: f64) -> Self {
        if v < warn {
            Self::Ok
        } else if v < bad {
            Self::Warn
        } else {
            Self::Bad
        }
    }

    /// Its colour.
    pub fn color(self) -> Color {
        match self {
            Self::Ok => Color::Green,
            Self::Warn => Color::Yellow,
            Self::Bad => Color::Red,
        }
    }
}

/// Seconds shown as ms or s.
pub fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

/// The newest `width` points of a series, scaled to integers for a sparkline.
pub fn spark_data(s: &crate::monitor::view::Series, scale: f64, width: usize) -> Vec<u64> {
    let skip = s.0.len().saturating_sub(width);
    s.0.iter()
        .skip(skip)
        .map(|&(_, v)| (v * scale).max(0.0).round() as u64)
        .collect()
}
