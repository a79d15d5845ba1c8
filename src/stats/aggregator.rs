//! The single owner of run statistics: consumes records on its own thread,
//! writes the per-request JSONL file, and publishes snapshots for presentation.

use std::io::Write;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Stats;
use crate::engine::record::RequestRecord;
use crate::report::records::RecordLine;

/// How often a snapshot is published at most.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);

/// A cheap, immutable view of the run so far, for progress displays.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Measured requests finished (ok + failed).
    pub done: u64,
    /// Successful measured requests.
    pub ok: u64,
    /// Failed measured requests.
    pub failed: u64,
    /// Warmup requests finished.
    pub warmup: u64,
    /// Output tokens of successful measured requests.
    pub output_tokens: u64,
    /// Length of the measured window so far.
    pub window: Duration,
    /// Median TTFT so far, in ms.
    pub ttft_p50_ms: f64,
    /// Median ITL so far, in ms.
    pub itl_p50_ms: f64,
}

impl Snapshot {
    fn of(s: &Stats) -> Self {
        Self {
            done: s.ok + s.failed(),
            ok: s.ok,
            failed: s.failed(),
            warmup: s.warmup,
            output_tokens: s.output_tokens,
            window: s.window(),
            ttft_p50_ms: s.ttft.distribution(1000.0).p50,
            itl_p50_ms: s.itl.distribution(1000.0).p50,
        }
    }
}

/// A running aggregator thread.
pub struct Aggregator {
    thread: JoinHandle<std::io::Result<Stats>>,
}

/// Where per-request lines go, with the run's time origin.
pub struct RecordsOut {
    /// Destination (already created, so a bad path failed before the run).
    pub writer: Box<dyn Write + Send>,
    /// Instant that offsets are measured from.
    pub origin: Instant,
}

impl Aggregator {
    /// Starts the thread. It ends when every sender of `rx` is dropped.
    pub fn start(
        rx: Receiver<RequestRecord>,
        requested_input_tokens: u32,
        records: Option<RecordsOut>,
        snapshots: watch::Sender<Arc<Snapshot>>,
    ) -> std::io::Result<Self> {
        Self::start_with(
            rx,
            requested_input_tokens,
            records,
            snapshots,
            Stats::default(),
        )
    }

    /// Like [`Aggregator::start`], folding records into `initial` (which may
    /// carry a time-series origin and SLOs).
    pub fn start_with(
        rx: Receiver<RequestRecord>,
        requested_input_tokens: u32,
        mut records: Option<RecordsOut>,
        snapshots: watch::Sender<Arc<Snapshot>>,
        initial: Stats,
    ) -> std::io::Result<Self> {
        let thread = std::thread::Builder::new()
            .name("throtl-aggregator".into())
            .spawn(move || {
                let mut stats = initial;
                let mut last = Instant::now();
                loop {
                    match rx.recv_timeout(SNAPSHOT_EVERY) {
                        Ok(r) => {
                            stats.ingest(&r, requested_input_tokens);
                            if let Some(out) = records.as_mut() {
                                write_record(out, &r)?;
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    if last.elapsed() >= SNAPSHOT_EVERY {
                        last = Instant::now();
                        let _ = snapshots.send(Arc::new(Snapshot::of(&stats)));
                    }
                }
                if let Some(out) = records.as_mut() {
                    out.writer.flush()?;
                }
                let _ = snapshots.send(Arc::new(Snapshot::of(&stats)));
                Ok(stats)
            })?;
        Ok(Self { thread })
    }

    /// Waits for the channel to close and returns the final statistics.
    pub fn finish(self) -> std::io::Result<Stats> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("aggregator thread panicked")))
    }
}

fn write_record(out: &mut RecordsOut, r: &RequestRecord) -> std::io::Result<()> {
    let line = RecordLine::from_record(r, out.origin);
    serde_json::to_writer(&mut out.writer, &line)?;
    out.writer.write_all(b"\n")
}
