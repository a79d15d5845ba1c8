//! A Server-Sent Events decoder following the WHATWG event-stream rules.
//!
//! Handles `\n`, `\r\n` and `\r` line endings (even when a `\r\n` pair is split
//! across reads), comments and keep-alives (`:` lines), multi-line `data:`
//! fields, and `event:` names. Feeding the same bytes split at any points
//! yields the same events.

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if the event named one.
    pub event: Option<String>,
    /// The `data:` fields joined with `\n`.
    pub data: String,
}

/// Incremental decoder: feed bytes as they arrive, collect complete events.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// The previous byte was a `\r`: a `\n` right after it ends no new line.
    after_cr: bool,
}

impl SseDecoder {
    /// A decoder with empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk of the body; complete events are appended to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    self.end_line(out);
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
    }

    /// True when bytes of an unfinished line or event are buffered, i.e. the
    /// stream stopped mid-event.
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        if self.line.is_empty() {
            self.dispatch(out);
            return;
        }
        let line = std::mem::take(&mut self.line);
        self.process_field(&line);
        self.line = line;
        self.line.clear();
    }

    fn process_field(&mut self, line: &[u8]) {
        if line[0] == b':' {
            return; // comment or keep-alive
        }
        let (name, value) = match line.iter().position(|&c| c == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event = Some(value.into_owned()),
            _ => {} // id, retry and unknown fields do not affect content
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            });
        }
        self.event = None;
        self.has_data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        out
    }

    #[test]
    fn decodes_data_event_and_comment() {
        let ev = decode_all(&[b": ping\n\ndata: {\"a\":1}\n\n"]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[0].event, None);
    }

    #[test]
    fn joins_multiline_data_and_keeps_event_name() {
        let ev = decode_all(&[b"event: message_start\r\ndata: a\r\ndata: b\r\n\r\n"]);
        assert_eq!(
            ev,
            vec![SseEvent {
                event: Some("message_start".into()),
                data: "a\nb".into()
            }]
        );
    }

    #[test]
    fn crlf_split_across_reads_is_one_line_end() {
        let ev = decode_all(&[b"data: x\r", b"\n\r", b"\n"]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "x");
    }

    #[test]
    fn field_without_space_and_unterminated_event() {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        d.feed(b"data:y\n\ndata: partial", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, "y");
        assert!(d.has_partial());
    }

    const SAMPLE: &[u8] =
        b": keep-alive\r\n\r\nevent: a\ndata: {\"x\": 1}\n\ndata: one\ndata: two\r\n\r\n\
id: 7\nretry: 100\ndata: [DONE]\r\r";

    proptest! {
        #[test]
        fn any_split_gives_same_events(cuts in proptest::collection::vec(0usize..SAMPLE.len(), 0..12)) {
            let whole = decode_all(&[SAMPLE]);
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts { pieces.push(&SAMPLE[last..c]); last = c; }
            pieces.push(&SAMPLE[last..]);
            prop_assert_eq!(decode_all(&pieces), whole.clone());
            prop_assert_eq!(whole.len(), 3);
        }
    }
}
