//! Newline-delimited JSON framing (Ollama's streaming format).

/// Incremental line splitter: feed bytes, get complete non-empty lines.
#[derive(Debug, Default)]
pub struct NdjsonDecoder {
    buf: Vec<u8>,
}

impl NdjsonDecoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; complete non-blank lines (without line endings) go to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<String>) {
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.buf);
                let line = line.trim();
                if !line.is_empty() {
                    out.push(line.to_owned());
                }
                self.buf.clear();
            } else {
                self.buf.push(b);
            }
        }
    }

    /// The unterminated rest of the stream, if any (a last line without `\n`).
    pub fn take_rest(&mut self) -> Option<String> {
        let rest = String::from_utf8_lossy(&self.buf).trim().to_owned();
        self.buf.clear();
        (!rest.is_empty()).then_some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_reads() {
        let mut d = NdjsonDecoder::new();
        let mut out = Vec::new();
        d.feed(b"{\"a\":1}\r\n{\"b\"", &mut out);
        d.feed(b":2}\n\n{\"c\":3}", &mut out);
        assert_eq!(out, vec!["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(d.take_rest().as_deref(), Some("{\"c\":3}"));
    }
}
