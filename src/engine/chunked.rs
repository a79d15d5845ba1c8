//! Incremental decoder of HTTP/1.1 `Transfer-Encoding: chunked` bodies
//! (RFC 9112 §7.1) for the measuring client.
//!
//! It works on whatever the socket delivered, never copies data, and reports
//! the data bytes of each read as ranges of that read's buffer, so every
//! byte keeps the timestamp of the read that brought it.

use std::ops::Range;

/// A violation of the chunked framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked encoding: {0}")]
pub struct ChunkedError(&'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `digits` counts them.
    Size { n: u64, digits: u8 },
    /// A chunk extension after the size, skipped up to the line end.
    Extension { n: u64 },
    /// The LF after the size line's CR.
    SizeLf { n: u64 },
    /// Data bytes still to come in the current chunk.
    Data(u64),
    /// The CR after a chunk's data.
    DataCr,
    /// The LF after a chunk's data.
    DataLf,
    /// Trailer section; `line_start` when at the start of a line.
    Trailer { line_start: bool },
    /// The LF of the empty line that ends the trailers.
    TrailerLf,
    /// The last chunk and its trailers have been read.
    Done,
}

/// Decoder state carried from one read to the next.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            state: State::Size { n: 0, digits: 0 },
        }
    }
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input consumed; less than its length only once done.
    pub consumed: usize,
    /// True once the terminating chunk and trailers have been read.
    pub done: bool,
}

impl ChunkedDecoder {
    /// Decodes `input`, appending the ranges of `input` that are body data
    /// to `data` (cleared first).
    pub fn decode(
        &mut self,
        input: &[u8],
        data: &mut Vec<Range<usize>>,
    ) -> Result<Decoded, ChunkedError> {
        data.clear();
        let mut i = 0;
        while i < input.len() {
            if let State::Data(rem) = self.state {
                let take = usize::try_from(rem)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - i);
                data.push(i..i + take);
                i += take;
                let left = rem - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                continue;
            }
            if self.state == State::Done {
                break;
            }
            self.state = step(self.state, input[i])?;
            i += 1;
        }
        Ok(Decoded {
            consumed: i,
            done: self.state == State::Done,
        })
    }
}

/// Advances the framing state by one byte outside chunk data.
fn step(state: State, b: u8) -> Result<State, ChunkedError> {
    Ok(match state {
        State::Size { n, digits } => match b {
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                if digits >= 15 {
                    return Err(ChunkedError("chunk size too large"));
                }
                let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                State::Size {
                    n: n * 16 + d,
                    digits: digits + 1,
                }
            }
            _ if digits == 0 => return Err(ChunkedError("missing chunk size")),
            b';' | b' ' | b'\t' => State::Extension { n },
            b'\r' => State::SizeLf { n },
            b'\n' => after_size_line(n),
            _ => return Err(ChunkedError("invalid character in chunk size")),
        },
        State::Extension { n } => match b {
            b'\r' => State::SizeLf { n },
            b'\n' => after_size_line(n),
            _ => State::Extension { n },
        },
        State::SizeLf { n } => match b {
            b'\n' => after_size_line(n),
            _ => return Err(ChunkedError("CR without LF after chunk size")),
        },
        State::DataCr => match b {
            b'\r' => State::DataLf,
            b'\n' => State::Size { n: 0, digits: 0 },
            _ => return Err(ChunkedError("chunk data longer than its size")),
        },
        State::DataLf => match b {
            b'\n' => State::Size { n: 0, digits: 0 },
            _ => return Err(ChunkedError("CR without LF after chunk data")),
        },
        State::Trailer { line_start: true } => match b {
            b'\r' => State::TrailerLf,
            b'\n' => State::Done,
            _ => State::Trailer { line_start: false },
        },
        State::Trailer { line_start: false } => State::Trailer {
            line_start: b == b'\n',
        },
        State::TrailerLf => match b {
            b'\n' => State::Done,
            _ => return Err(ChunkedError("CR without LF after trailers")),
        },
        State::Data(_) | State::Done => state,
    })
}

fn after_size_line(n: u64) -> State {
    if n == 0 {
        State::Trailer { line_start: true }
    } else {
        State::Data(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes `parts` in order; returns the body and whether it completed.
    fn decode_parts(parts: &[&[u8]]) -> Result<(Vec<u8>, bool), ChunkedError> {
        let mut d = ChunkedDecoder::default();
        let mut body = Vec::new();
        let mut ranges = Vec::new();
        for p in parts {
            let r = d.decode(p, &mut ranges)?;
            for range in &ranges {
                body.extend_from_slice(&p[range.clone()]);
            }
            if r.done {
                return Ok((body, true));
            }
        }
        Ok((body, false))
    }

    fn encode(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    #[test]
    fn decodes_a_plain_body() {
        let (body, done) = decode_parts(&[b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"]).unwrap();
        assert_eq!(body, b"hello world");
        assert!(done);
    }

    #[test]
    fn skips_extensions_and_trailers() {
        let wire = b"5;name=value\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n";
        assert_eq!(decode_parts(&[wire]).unwrap(), (b"hello".to_vec(), true));
    }

    #[test]
    fn upper_case_hex_and_bare_lf_are_accepted() {
        let wire = b"A\nabcdefghij\n0\n\n";
        assert_eq!(
            decode_parts(&[wire]).unwrap(),
            (b"abcdefghij".to_vec(), true)
        );
    }

    #[test]
    fn unfinished_body_is_not_done() {
        let (body, done) = decode_parts(&[b"5\r\nhel"]).unwrap();
        assert_eq!(body, b"hel");
        assert!(!done);
    }

    #[test]
    fn bytes_after_the_end_are_not_consumed() {
        let mut d = ChunkedDecoder::default();
        let mut ranges = Vec::new();
        let r = d.decode(b"0\r\n\r\nHTTP/1.1", &mut ranges).unwrap();
        assert_eq!(
            r,
            Decoded {
                consumed: 5,
                done: true
            }
        );
    }

    #[test]
    fn framing_errors_are_reported() {
        assert!(decode_parts(&[b"zz\r\n"]).is_err());
        assert!(decode_parts(&[b"\r\n"]).is_err());
        assert!(decode_parts(&[b"2\r\nabc\r\n"]).is_err());
        assert!(decode_parts(&[b"1\rx"]).is_err());
        assert!(decode_parts(&[b"ffffffffffffffffff\r\n"]).is_err());
    }

    proptest! {
        /// Any split of an encoded body decodes to the same bytes.
        #[test]
        fn any_split_gives_the_same_body(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let wire = encode(&chunks);
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
            points.sort_unstable();
            let mut parts = Vec::new();
            let mut last = 0;
            for p in points {
                parts.push(&wire[last..p]);
                last = p;
            }
            parts.push(&wire[last..]);
            let (body, done) = decode_parts(&parts).unwrap();
            prop_assert_eq!(body, chunks.concat());
            prop_assert!(done);
        }

        /// Arbitrary bytes, arbitrarily cut, never panic, and the data
        /// ranges handed out lie inside the read (nothing is allocated
        /// from a size line: `ffff…` is only a number).
        #[test]
        fn issue12_arbitrary_bytes_never_panic(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
        ) {
            let mut d = ChunkedDecoder::default();
            let mut ranges = Vec::new();
            for p in &parts {
                match d.decode(p, &mut ranges) {
                    Ok(r) => {
                        prop_assert!(r.consumed <= p.len());
                        prop_assert!(ranges.iter().all(|r| r.end <= p.len()));
                        if r.done { break; }
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
