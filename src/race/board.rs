//! The live race board: built on the presentation thread from
//! [`RaceEvent`]s. It decodes the raw chunks the measuring tasks forwarded
//! (SSE or NDJSON framing, the target's own protocol to tell content from
//! other messages) and pulls out the generated text for display. Nothing
//! here runs on a measuring task.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::{RaceEvent, RunOutcome};
use crate::api::{Framing, Protocol};
use crate::stream::{NdjsonDecoder, SseDecoder};

/// Most text kept per column (the newest part is shown).
const MAX_TEXT: usize = 4000;

/// One target's column.
pub struct Column {
    /// Display name.
    pub name: String,
    protocol: Option<Arc<dyn Protocol>>,
    sse: SseDecoder,
    ndjson: NdjsonDecoder,
    /// Generated text so far in this run (the newest 4,000 bytes).
    pub text: String,
    /// Content messages so far in this run.
    pub tokens: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// The target's result once it finished this run.
    pub done: Option<RunOutcome>,
    /// Why it could not race at all.
    pub setup_error: Option<String>,
    /// Finished runs.
    pub history: Vec<RunOutcome>,
}

impl Column {
    /// A column for a target speaking `protocol` (`None`: it cannot race).
    pub fn new(
        name: &str,
        protocol: Option<Arc<dyn Protocol>>,
        setup_error: Option<String>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            protocol,
            sse: SseDecoder::new(),
            ndjson: NdjsonDecoder::new(),
            text: String::new(),
            tokens: 0,
            first: None,
            last: None,
            done: None,
            setup_error,
            history: Vec::new(),
        }
    }

    fn reset(&mut self) {
        self.sse = SseDecoder::new();
        self.ndjson = NdjsonDecoder::new();
        self.text.clear();
        self.tokens = 0;
        self.first = None;
        self.last = None;
        self.done = None;
    }

    fn feed(&mut self, at: Instant, bytes: &[u8]) {
        let Some(p) = self.protocol.clone() else {
            return;
        };
        let msgs: Vec<(Option<String>, String)> = match p.framing() {
            Framing::Sse => {
                let mut out = Vec::new();
                self.sse.feed(bytes, &mut out);
                out.into_iter().map(|e| (e.event, e.data)).collect()
            }
            Framing::Ndjson => {
                let mut out = Vec::new();
                self.ndjson.feed(bytes, &mut out);
                out.into_iter().map(|l| (None, l)).collect()
            }
        };
        for (event, data) in msgs {
            if p.parse(event.as_deref(), &data).is_ok_and(|e| e.content) {
                self.tokens += 1;
                self.first.get_or_insert(at);
                self.last = Some(at);
                if let Some(t) = extract_text(&data) {
                    self.push_text(&t);
                }
            }
        }
    }

    fn push_text(&mut self, t: &str) {
        self.text.push_str(t);
        if self.text.len() > MAX_TEXT {
            let mut cut = self.text.len() - MAX_TEXT;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
        }
    }

    /// Live TTFT from the common start, ms (the final one once done).
    pub fn ttft_ms(&self, start: Option<Instant>) -> Option<f64> {
        if let Some(d) = &self.done {
            return d.ttft_ms;
        }
        Some(super::ms(self.first?.saturating_duration_since(start?)))
    }

    /// Live decode rate: (tokens − 1) / (last − first), tokens/s.
    pub fn tokens_per_s(&self) -> Option<f64> {
        if let Some(d) = &self.done {
            return d.tokens_per_s;
        }
        let span = self
            .last?
            .saturating_duration_since(self.first?)
            .as_secs_f64();
        (self.tokens >= 2 && span > 0.0).then(|| (self.tokens - 1) as f64 / span)
    }
}

/// Everything the live view shows.
pub struct RaceBoard {
    /// Runs requested.
    pub runs: u32,
    /// Current run (0-based).
    pub run: u32,
    /// Common start of the current run.
    pub start: Option<Instant>,
    /// One column per target.
    pub columns: Vec<Column>,
}

impl RaceBoard {
    /// An empty board.
    pub fn new(columns: Vec<Column>, runs: u32) -> Self {
        Self {
            runs,
            run: 0,
            start: None,
            columns,
        }
    }

    /// Applies one event.
    pub fn apply(&mut self, ev: RaceEvent) {
        match ev {
            RaceEvent::RunStarted { run, at } => {
                self.run = run;
                self.start = Some(at);
                self.columns.iter_mut().for_each(Column::reset);
            }
            RaceEvent::Chunk { target, at, bytes } => {
                if let Some(c) = self.columns.get_mut(target) {
                    c.feed(at, &bytes);
                }
            }
            RaceEvent::Finished { target, outcome } => {
                if let Some(c) = self.columns.get_mut(target) {
                    c.history.push(outcome.clone());
                    c.done = Some(outcome);
                }
            }
        }
    }
}

/// The generated text of one stream message, whatever the protocol:
/// OpenAI chat/completions, TGI, Ollama chat/generate, Anthropic, Gemini,
/// Cohere.
pub fn extract_text(data: &str) -> Option<String> {
    let v: Value = serde_json::from_str(data).ok()?;
    const PATHS: [&str; 9] = [
        "/choices/0/delta/content",
        "/choices/0/delta/reasoning_content",
        "/choices/0/text",
        "/token/text",
        "/message/content",
        "/response",
        "/delta/text",
        "/candidates/0/content/parts/0/text",
        "/delta/message/content/text",
    ];
    PATHS
        .iter()
        .filter_map(|p| v.pointer(p).and_then(Value::as_str))
        .find(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_found_in_every_protocols_messages() {
        for (msg, want) in [
            (r#"{"choices":[{"delta":{"content":"Hi"}}]}"#, "Hi"),
            (r#"{"choices":[{"text":" there"}]}"#, " there"),
            (r#"{"token":{"id":1,"text":"tg"}}"#, "tg"),
            (
                r#"{"message":{"role":"assistant","content":"ol"},"done":false}"#,
                "ol",
            ),
            (r#"{"response":"gen","done":false}"#, "gen"),
            (
                r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"an"}}"#,
                "an",
            ),
            (
                r#"{"candidates":[{"content":{"parts":[{"text":"ge"}]}}]}"#,
                "ge",
            ),
            (
                r#"{"type":"content-delta","delta":{"message":{"content":{"text":"co"}}}}"#,
                "co",
            ),
        ] {
            assert_eq!(extract_text(msg).as_deref(), Some(want), "{msg}");
        }
        assert_eq!(extract_text("[DONE]"), None);
        assert_eq!(extract_text(r#"{"choices":[{"delta":{}}]}"#), None);
    }

    #[test]
    fn board_shows_text_and_live_numbers_from_raw_chunks() {
        let p: Arc<dyn Protocol> = Arc::from(crate::api::ApiKind::OpenaiChat.protocol());
        let mut b = RaceBoard::new(vec![Column::new("a", Some(p), None)], 1);
        let t0 = Instant::now();
        b.apply(RaceEvent::RunStarted { run: 0, at: t0 });
        let chunk =
            |s: &str| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{s}\"}}}}]}}\n\n");
        let ms = std::time::Duration::from_millis;
        // The second message is split across two reads.
        let two = chunk("lo");
        let (x, y) = two.split_at(10);
        for (at, bytes) in [
            (ms(50), chunk("Hel")),
            (ms(60), x.to_owned()),
            (ms(70), y.to_owned()),
        ] {
            b.apply(RaceEvent::Chunk {
                target: 0,
                at: t0 + at,
                bytes: bytes.into_bytes().into(),
            });
        }
        let c = &b.columns[0];
        assert_eq!((c.text.as_str(), c.tokens), ("Hello", 2));
        assert!((c.ttft_ms(b.start).unwrap() - 50.0).abs() < 1e-6);
        assert!((c.tokens_per_s().unwrap() - 50.0).abs() < 1e-6);
    }
}
