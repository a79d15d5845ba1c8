//! The single owner of run statistics: consumes records on its own thread,
//! writes the per-request JSONL file, and publishes snapshots for presentation.

use std::io::Write;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{LatencyHistogram, Stats};
use crate::engine::record::RequestRecord;
use crate::report::records::RecordLine;
use crate::report::samples::RequestSample;

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
    /// Input tokens of successful measured requests.
    pub input_tokens: u64,
    /// Failed measured requests by class.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// TTFT percentiles (ms) over the last 10–20 s of finished requests.
    pub recent_ttft_ms: Percentiles,
    /// ITL percentiles (ms) over the last 10–20 s of finished requests.
    pub recent_itl_ms: Percentiles,
}

/// p50 / p95 / p99 of a rolling window (0 when it is empty).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Samples in the window.
    pub count: u64,
}

impl Percentiles {
    fn of(h: &LatencyHistogram) -> Self {
        let d = h.distribution(1000.0);
        Self {
            p50: d.p50,
            p95: d.p95,
            p99: d.p99,
            count: h.count(),
        }
    }
}

/// How long each half of the rolling window lasts.
const ROLLING_HALF: Duration = Duration::from_secs(10);

/// TTFT and ITL of recently finished requests: two halves, rotated every
/// [`ROLLING_HALF`], so the window covers the last 10–20 s.
struct Rolling {
    cur: (LatencyHistogram, LatencyHistogram),
    prev: (LatencyHistogram, LatencyHistogram),
    since: Instant,
}

impl Rolling {
    fn new() -> Self {
        Self {
            cur: Default::default(),
            prev: Default::default(),
            since: Instant::now(),
        }
    }

    fn ingest(&mut self, r: &RequestRecord) {
        if r.warmup || r.error.is_some() {
            return;
        }
        if let Some(t) = r.ttft() {
            self.cur.0.record(t);
        }
        for gap in r.itl_gaps() {
            self.cur.1.record(gap);
        }
    }

    fn rotate(&mut self) {
        if self.since.elapsed() >= ROLLING_HALF {
            self.prev = std::mem::take(&mut self.cur);
            self.since = Instant::now();
        }
    }

    fn percentiles(&self) -> (Percentiles, Percentiles) {
        let mut ttft = self.prev.0.clone();
        ttft.merge(&self.cur.0);
        let mut itl = self.prev.1.clone();
        itl.merge(&self.cur.1);
        (Percentiles::of(&ttft), Percentiles::of(&itl))
    }
}

impl Snapshot {
    fn of(s: &Stats, rolling: &Rolling) -> Self {
        let (recent_ttft_ms, recent_itl_ms) = rolling.percentiles();
        Self {
            input_tokens: s.input_tokens,
            errors: s.errors.clone(),
            recent_ttft_ms,
            recent_itl_ms,
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
    thread: JoinHandle<std::io::Result<(Stats, Vec<RequestSample>)>>,
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
            None,
        )
    }

    /// Like [`Aggregator::start`], folding records into `initial` (which may
    /// carry a time-series origin and SLOs), and, with `samples_origin`, also
    /// keeping one compact [`RequestSample`] per measured request timed from it.
    pub fn start_with(
        rx: Receiver<RequestRecord>,
        requested_input_tokens: u32,
        mut records: Option<RecordsOut>,
        snapshots: watch::Sender<Arc<Snapshot>>,
        initial: Stats,
        samples_origin: Option<Instant>,
    ) -> std::io::Result<Self> {
        let thread = std::thread::Builder::new()
            .name("throtl-aggregator".into())
            .spawn(move || {
                let mut stats = initial;
                let mut samples = Vec::new();
                let mut rolling = Rolling::new();
                let mut last = Instant::now();
                loop {
                    match rx.recv_timeout(SNAPSHOT_EVERY) {
                        Ok(r) => {
                            stats.ingest(&r, requested_input_tokens);
                            rolling.ingest(&r);
                            if let Some(origin) = samples_origin {
                                samples.extend(RequestSample::from_record(&r, origin));
                            }
                            if let Some(out) = records.as_mut() {
                                write_record(out, &r)?;
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    if last.elapsed() >= SNAPSHOT_EVERY {
                        last = Instant::now();
                        rolling.rotate();
                        let _ = snapshots.send(Arc::new(Snapshot::of(&stats, &rolling)));
                    }
                }
                if let Some(out) = records.as_mut() {
                    out.writer.flush()?;
                }
                let _ = snapshots.send(Arc::new(Snapshot::of(&stats, &rolling)));
                Ok((stats, samples))
            })?;
        Ok(Self { thread })
    }

    /// Waits for the channel to close and returns the final statistics.
    pub fn finish(self) -> std::io::Result<Stats> {
        self.finish_with_samples().map(|(s, _)| s)
    }

    /// Like [`Aggregator::finish`], with the samples kept by
    /// [`Aggregator::start_with`] (empty otherwise).
    pub fn finish_with_samples(self) -> std::io::Result<(Stats, Vec<RequestSample>)> {
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
