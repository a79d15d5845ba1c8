//! The single owner of run statistics: consumes records on its own thread,
//! writes the per-request JSONL file, and publishes snapshots for presentation.

use std::io::Write;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
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

/// How often finished requests reach `--records` (flushed) and a
/// [`Checkpoint`]: a run killed without warning loses about this much. Half
/// the "at most a second apart", so a kill 5 s into a run surely
/// leaves 4 s; each tick costs one write and one small transaction, off the
/// measuring path.
pub const PERSIST_EVERY: Duration = Duration::from_millis(500);

/// How often a [`Checkpoint`] also carries the statistics so far, for the
/// partial report: a copy of them costs more than a batch of samples.
pub const REPORT_EVERY: Duration = Duration::from_secs(2);

/// What the aggregator hands to a persistence writer while the run goes on
/// (on a channel, so the writer's disk waits never hold up the aggregator).
#[derive(Debug)]
pub struct Checkpoint {
    /// Samples of the requests finished since the previous checkpoint.
    pub samples: Vec<RequestSample>,
    /// The statistics so far, every [`REPORT_EVERY`].
    pub stats: Option<Box<Stats>>,
}

/// The aggregator's side of live persistence: flushes `--records` and hands
/// out checkpoints at most [`PERSIST_EVERY`] apart.
struct Persister {
    checkpoints: Option<Sender<Checkpoint>>,
    handed_over: usize,
    last_flush: Instant,
    last_report: Instant,
}

impl Persister {
    fn new(checkpoints: Option<Sender<Checkpoint>>) -> Self {
        Self {
            checkpoints,
            handed_over: 0,
            last_flush: Instant::now(),
            last_report: Instant::now(),
        }
    }

    fn tick(
        &mut self,
        stats: &Stats,
        samples: &[RequestSample],
        records: Option<&mut RecordsOut>,
    ) -> std::io::Result<()> {
        if self.last_flush.elapsed() < PERSIST_EVERY {
            return Ok(());
        }
        self.last_flush = Instant::now();
        if let Some(out) = records {
            out.writer.flush()?;
        }
        let Some(tx) = &self.checkpoints else {
            return Ok(());
        };
        let with_stats = self.last_report.elapsed() >= REPORT_EVERY;
        if with_stats {
            self.last_report = Instant::now();
        }
        let fresh = samples.get(self.handed_over..).unwrap_or_default();
        if fresh.is_empty() && !with_stats {
            return Ok(());
        }
        let checkpoint = Checkpoint {
            samples: fresh.to_vec(),
            stats: with_stats.then(|| Box::new(stats.clone())),
        };
        self.handed_over = samples.len();
        if tx.send(checkpoint).is_err() {
            // The writer is gone (it failed); the run goes on, kept in memory.
            self.checkpoints = None;
        }
        Ok(())
    }
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
        records: Option<RecordsOut>,
        snapshots: watch::Sender<Arc<Snapshot>>,
        initial: Stats,
        samples_origin: Option<Instant>,
    ) -> std::io::Result<Self> {
        Self::start_persisting(
            rx,
            requested_input_tokens,
            records,
            snapshots,
            (initial, samples_origin),
            None,
        )
    }

    /// Like [`Aggregator::start_with`] (`initial` is its statistics and
    /// samples origin), also sending [`Checkpoint`]s to `checkpoints`, and
    /// flushing `records`, at most [`PERSIST_EVERY`] apart.
    pub fn start_persisting(
        rx: Receiver<RequestRecord>,
        requested_input_tokens: u32,
        mut records: Option<RecordsOut>,
        snapshots: watch::Sender<Arc<Snapshot>>,
        (initial, samples_origin): (Stats, Option<Instant>),
        checkpoints: Option<Sender<Checkpoint>>,
    ) -> std::io::Result<Self> {
        let thread = std::thread::Builder::new()
            .name("throtl-aggregator".into())
            .spawn(move || {
                let mut stats = initial;
                let mut samples = Vec::new();
                let mut rolling = Rolling::new();
                let mut last = Instant::now();
                let mut persister = Persister::new(checkpoints);
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
                    persister.tick(&stats, &samples, records.as_mut())?;
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

/// Hands the buffer one whole line per write, so the buffer (flushed when
/// full or every [`PERSIST_EVERY`]) only ever holds whole lines and a run
/// killed at any moment leaves no half line in the file.
fn write_record(out: &mut RecordsOut, r: &RequestRecord) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&RecordLine::from_record(r, out.origin))?;
    line.push(b'\n');
    out.writer.write_all(&line)
}
