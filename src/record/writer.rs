//! The writer thread of `throtl record`: analyses each finished capture,
//! writes its line, flushes whenever it has nothing else to do (so a crash
//! or Ctrl-C loses at most the lines in flight), and rotates files by size.
//!
//! Rotated parts are numbered beside the first file (`traffic.trace`,
//! `traffic.1.trace`, `traffic.2.trace`, …). All parts of one recording share
//! its time origin and hash key, so `cat` of the parts in order is one trace.

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::analyze::Analyzer;
use super::capture::Capture;
use super::{RecordConfig, RecordError};

/// What a recording wrote.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WriterSummary {
    /// Lines written.
    pub lines: u64,
    /// Lines that recorded an error.
    pub errors: u64,
    /// Every file written, in order.
    pub files: Vec<PathBuf>,
}

/// The running writer: a sender for captures and its thread.
pub struct LineWriter {
    tx: Option<Sender<Capture>>,
    thread: Option<JoinHandle<Result<WriterSummary, RecordError>>>,
}

impl LineWriter {
    /// Creates the first file (failing at once on a bad path) and starts the thread.
    pub fn start(cfg: &RecordConfig) -> Result<Self, RecordError> {
        let file = open(&cfg.out)?;
        let (tx, rx) = channel();
        let analyzer = Analyzer {
            origin: Instant::now(),
            origin_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            key: RandomState::new(),
            block_tokens: cfg.block_tokens.max(1),
            keep_text: cfg.keep_text,
        };
        let files = Files {
            base: cfg.out.clone(),
            current: BufWriter::with_capacity(1 << 16, file),
            bytes: 0,
            rotate: cfg.rotate_bytes,
            summary: WriterSummary {
                lines: 0,
                errors: 0,
                files: vec![cfg.out.clone()],
            },
        };
        let thread = std::thread::Builder::new()
            .name("throtl-record-writer".into())
            .spawn(move || run(rx, analyzer, files))
            .map_err(|source| RecordError::Output {
                path: cfg.out.clone(),
                source,
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// A sender for captures.
    pub fn sender(&self) -> Sender<Capture> {
        self.tx.clone().unwrap_or_else(|| channel().0)
    }

    /// Waits until every capture sent so far is written, flushes, closes.
    /// Senders still held elsewhere must be dropped first (the server stopped).
    pub fn finish(mut self) -> Result<WriterSummary, RecordError> {
        self.tx.take();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(RecordError::Client(
                "the trace writer thread panicked".into(),
            )),
        }
    }
}

fn open(path: &Path) -> Result<File, RecordError> {
    File::create(path).map_err(|source| RecordError::Output {
        path: path.to_owned(),
        source,
    })
}

/// The files of a recording.
struct Files {
    base: PathBuf,
    current: BufWriter<File>,
    bytes: u64,
    rotate: Option<u64>,
    summary: WriterSummary,
}

impl Files {
    fn write(&mut self, line: &[u8]) -> Result<(), RecordError> {
        if self
            .rotate
            .is_some_and(|max| self.bytes > 0 && self.bytes + line.len() as u64 > max)
        {
            self.next_file()?;
        }
        let path = self.summary.files.last().cloned().unwrap_or_default();
        self.current
            .write_all(line)
            .map_err(|source| RecordError::Output { path, source })?;
        self.bytes += line.len() as u64;
        Ok(())
    }

    fn next_file(&mut self) -> Result<(), RecordError> {
        self.flush()?;
        let path = part_path(&self.base, self.summary.files.len());
        self.current = BufWriter::with_capacity(1 << 16, open(&path)?);
        self.summary.files.push(path);
        self.bytes = 0;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RecordError> {
        let path = self.summary.files.last().cloned().unwrap_or_default();
        self.current
            .flush()
            .map_err(|source| RecordError::Output { path, source })
    }
}

/// `dir/name.N.ext` for part `n` of `dir/name.ext` (`name.N` without an extension).
pub fn part_path(base: &Path, n: usize) -> PathBuf {
    let stem = base
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let name = match base.extension() {
        Some(ext) => format!("{stem}.{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{n}"),
    };
    base.with_file_name(name)
}

fn run(rx: Receiver<Capture>, a: Analyzer, mut files: Files) -> Result<WriterSummary, RecordError> {
    // Parsing and hashing can wait; forwarding chunks cannot.
    crate::sys::lower_thread_priority(10);
    loop {
        let c = match rx.try_recv() {
            Ok(c) => c,
            Err(TryRecvError::Empty) => {
                // Idle: make everything so far durable before waiting.
                files.flush()?;
                match rx.recv() {
                    Ok(c) => c,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let line = a.line(&c);
        files.summary.lines += 1;
        if line.error.is_some() || line.status.is_some_and(|s| s >= 400) {
            files.summary.errors += 1;
        }
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        files.write(&bytes)?;
    }
    files.flush()?;
    Ok(files.summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_numbered_beside_the_first_file() {
        assert_eq!(
            part_path(Path::new("/t/traffic.trace"), 2),
            PathBuf::from("/t/traffic.2.trace")
        );
        assert_eq!(part_path(Path::new("out"), 1), PathBuf::from("out.1"));
    }
}
