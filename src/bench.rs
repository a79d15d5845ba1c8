//! `throtl bench`: opens outputs, checks the target, runs the engine, builds
//! the report. A short pipeline; each step lives in its own function.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use tokio::sync::watch;

use crate::api::{AuthStyle, Protocol, ProtocolOptions};
use crate::config::{BenchConfig, ConfigError};
use crate::engine::request::{error_chain, Transport};
use crate::engine::tokenizer::Tokenizer;
use crate::engine::workload::{self, SyntheticSpec, TokenLengths, Workload};
use crate::engine::{self, Controls, LoadPlan, LoadShape, StopCondition};
use crate::live::{JsonOut, LiveRun, Outlet, RunIdentity};
use crate::progress::{Progress, ProgressInputs};
use crate::report::RunReport;
use crate::results::{Format, RunData};
use crate::scrape::recorder::Recorder;
use crate::stats::aggregator::RecordsOut;
use crate::stats::{Aggregator, Snapshot};
use crate::store::runs::StoredRun;
use crate::store::Store;
use crate::summary;

/// How often the target's `/metrics` is scraped during a run by default.
const SERVER_SCRAPE_EVERY: Duration = Duration::from_secs(1);

/// Failures that stop a bench before or after it measured.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The target could not be reached at all.
    #[error("cannot reach {url}: {reason}. Is the server running, and is --url right?")]
    Unreachable {
        /// Target URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// An output file could not be created or written.
    #[error("cannot write '{path}': {source}. Check that the directory exists and is writable")]
    Output {
        /// The path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The history store could not be opened or written.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Internal failure (threads, runtime).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Output files, created before any load so a bad path fails at once.
pub struct Outputs {
    json: Option<JsonOut>,
    records: Option<(PathBuf, File)>,
    store: Option<Store>,
    html: Option<(PathBuf, File)>,
    markdown: Option<(PathBuf, File)>,
    csv: Option<(PathBuf, File)>,
}

fn create(path: &Path) -> Result<(PathBuf, File), BenchError> {
    File::create(path)
        .map(|f| (path.to_owned(), f))
        .map_err(|source| BenchError::Output {
            path: path.to_owned(),
            source,
        })
}

impl Outputs {
    /// Creates (truncates) every requested output file.
    pub fn open(cfg: &BenchConfig) -> Result<Self, BenchError> {
        Ok(Self {
            json: cfg
                .json_out
                .as_deref()
                .map(create)
                .transpose()?
                .map(|(path, file)| JsonOut::new(path, file)),
            records: cfg.records_out.as_deref().map(create).transpose()?,
            store: cfg.results.db.as_deref().map(Store::open).transpose()?,
            html: cfg.results.html_out.as_deref().map(create).transpose()?,
            markdown: cfg
                .results
                .markdown_out
                .as_deref()
                .map(create)
                .transpose()?,
            csv: cfg.results.csv_out.as_deref().map(create).transpose()?,
        })
    }

    fn want_samples(&self) -> bool {
        self.store.is_some() || self.html.is_some() || self.markdown.is_some() || self.csv.is_some()
    }

    /// Stores the run and writes the report files.
    fn finish(&mut self, run: &StoredRun) -> Result<(), BenchError> {
        if let Some(store) = self.store.as_mut() {
            store.insert_run(run)?;
        }
        let data = [RunData::from(run.clone())];
        let files = [
            (self.html.take(), Format::Html),
            (self.markdown.take(), Format::Markdown),
            (self.csv.take(), Format::Csv),
        ];
        for (out, format) in files {
            if let Some((path, mut file)) = out {
                let bytes = crate::results::render(&data, format);
                file.write_all(&bytes)
                    .map_err(|source| BenchError::Output { path, source })?;
            }
        }
        Ok(())
    }
}

/// Writes a run finished elsewhere (merged shards) to every output of
/// `cfg`: `--json`, the history database, HTML, Markdown, CSV.
pub fn write_finished(cfg: &BenchConfig, run: &StoredRun) -> Result<(), BenchError> {
    let mut outputs = Outputs::open(cfg)?;
    if let Some(json) = outputs.json.take() {
        json.write_final(&run.report)?;
    }
    outputs.finish(run)
}

/// Runs a whole bench: validate, open outputs, probe, measure, report, write.
pub async fn run(cfg: &BenchConfig, controls: Controls) -> Result<RunReport, BenchError> {
    run_full(cfg, controls).await.map(|r| r.report)
}

/// Like [`run`], returning the report with its samples and histograms.
pub async fn run_full(cfg: &BenchConfig, controls: Controls) -> Result<StoredRun, BenchError> {
    let mut session = Session::open(cfg, &controls).await?;
    session.run_slice(Slice::whole(cfg), controls).await;
    session.finish()
}

/// One stretch of load: the whole run, or one turn of an interleaved
/// multi-target bench.
#[derive(Debug, Clone, Copy)]
pub struct Slice {
    /// Sequence number (workload position) of the slice's first request.
    pub first_seq: u64,
    /// Warmup requests at the start of the slice.
    pub warmup: u64,
    /// When the slice's measured part ends.
    pub stop: StopCondition,
    /// Ramp-up at the start of the slice.
    pub ramp_up: Duration,
}

impl Slice {
    /// The whole run as one slice.
    pub fn whole(cfg: &BenchConfig) -> Self {
        Self {
            first_seq: 0,
            warmup: cfg.warmup,
            stop: cfg.stop,
            ramp_up: cfg.workload.ramp_up,
        }
    }
}

/// A bench against one target in progress: outputs open, the target
/// checked, the aggregator, scraper and progress display running. Load is
/// applied in one or more [`Slice`]s; [`Session::finish`] builds, stores and
/// writes the report.
pub struct Session {
    cfg: BenchConfig,
    outputs: Outputs,
    transport: Arc<Transport>,
    workload: Workload,
    tx: std::sync::mpsc::Sender<crate::engine::record::RequestRecord>,
    aggregator: Aggregator,
    recorder: Option<Recorder>,
    progress: Progress,
    started_wall: time::OffsetDateTime,
    cpu_before: Option<Duration>,
    slices: Vec<engine::EngineOutcome>,
    run_id: String,
    live: LiveRun,
    /// The instant the run's series and samples start at.
    origin: Instant,
    /// The common start of a sharded run (else this run's own start).
    t0: time::OffsetDateTime,
    /// How long after `t0` measuring started.
    shift: Duration,
    /// Arrival offsets of a replayed trace, built once.
    trace_offsets: Option<Arc<[Duration]>>,
}

impl Session {
    /// Validates, opens every output, builds the workload, checks the
    /// target answers, and starts the aggregator, scraper and progress.
    pub async fn open(cfg: &BenchConfig, controls: &Controls) -> Result<Self, BenchError> {
        cfg.validate()?;
        let mut outputs = Outputs::open(cfg)?;
        if let Some(sh) = cfg
            .client
            .shard
            .as_ref()
            .filter(|s| !crate::shard::is_stdout(&s.out))
        {
            create(&sh.out)?;
        }
        let workload = build_workload(cfg)?;
        preflight(&build_client()?, &cfg.url).await?;
        let transport = Arc::new(build_transport(cfg)?);
        let collect = outputs.want_samples() || cfg.client.shard.is_some();
        let (t0, shift) = wait_for_start(cfg).await;
        let started_wall = time::OffsetDateTime::now_utc();
        let origin = Instant::now();
        let cpu_before = crate::sys::cpu_time();
        let (tx, rx) = std::sync::mpsc::channel();
        let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
        let records_out = outputs.records.take().map(|(_, f)| RecordsOut {
            writer: Box::new(BufWriter::with_capacity(1 << 16, f)) as Box<dyn Write + Send>,
            origin,
        });
        let initial = crate::stats::Stats {
            series: crate::stats::TimeSeries::starting_at(origin),
            slos: cfg.workload.slos.clone(),
            ..Default::default()
        };
        let run_id = summary::run_id(started_wall);
        let identity = RunIdentity {
            cfg: cfg.clone(),
            run_id: run_id.clone(),
            started_wall,
            origin,
            cpu_before,
            distinct_prompts: workload.len(),
        };
        let outlet = Outlet {
            store: outputs.store.take(),
            json: outputs.json.take(),
            error: None,
        };
        let persisting = outlet.store.is_some() || outlet.json.is_some();
        let live = LiveRun::start(identity, &initial, outlet)?;
        let aggregator = Aggregator::start_persisting(
            rx,
            cfg.input_tokens,
            records_out,
            snap_tx,
            (initial, collect.then_some(origin)),
            persisting.then(|| live.checkpoints()),
        )
        .map_err(|e| BenchError::Internal(e.to_string()))?;
        let (server_tx, server_rx) = watch::channel(None);
        let every = cfg.api_options.scrape_every.unwrap_or(SERVER_SCRAPE_EVERY);
        let other_shard = cfg
            .client
            .shard
            .as_ref()
            .is_some_and(|s| s.slice.index != 0);
        let recorder = if every.is_zero() || other_shard {
            None
        } else {
            Recorder::start(&cfg.url, every, origin, server_tx).ok()
        };
        let inputs = ProgressInputs {
            stop_at: cfg.stop,
            warmup: cfg.warmup,
            server: Some(server_rx),
            title: format!(
                "{}  model {}  concurrency {}",
                cfg.url, cfg.model, cfg.concurrency
            ),
            controls: controls.clone(),
        };
        let progress = Progress::start(cfg.progress, snap_rx, inputs);
        Ok(Self {
            cfg: cfg.clone(),
            outputs,
            transport,
            workload,
            tx,
            aggregator,
            recorder,
            progress,
            started_wall,
            cpu_before,
            slices: Vec::new(),
            run_id,
            live,
            origin,
            t0,
            shift,
            trace_offsets: cfg.workload.trace.as_ref().map(|t| t.offsets().into()),
        })
    }

    /// Applies one slice of load; its records go to this session's aggregator.
    pub async fn run_slice(&mut self, slice: Slice, controls: Controls) -> engine::EngineOutcome {
        let cfg = &self.cfg;
        let shard = cfg.client.shard.as_ref().map(|s| s.slice);
        let (stop, warmup) = sharded_counts(shard, cfg.workload.shape, slice.stop, slice.warmup);
        let plan = Arc::new(LoadPlan {
            concurrency: cfg.concurrency,
            stop,
            warmup,
            model: cfg.model.clone(),
            ignore_eos: cfg.ignore_eos,
            workload: self.workload.clone(),
            shape: cfg.workload.shape,
            ramp_up: slice.ramp_up,
            first_seq: slice.first_seq,
            turns: cfg.workload.turns,
            retry: cfg.client.retry,
            cold_connections: cfg.client.cold_connections,
            shard,
            trace_offsets: self.trace_offsets.clone(),
        });
        let outcome = engine::run(self.transport.clone(), plan, self.tx.clone(), controls).await;
        self.slices.push(outcome);
        outcome
    }

    /// The slices as one outcome: active time only, so time spent on other
    /// targets' turns is neither run time nor part of the throughput window.
    fn outcome(&self) -> (engine::EngineOutcome, Duration) {
        let now = Instant::now();
        let first = self.slices.first().map_or(now, |o| o.started);
        let active: Duration = self.slices.iter().map(|o| o.ended - o.started).sum();
        let idle = self
            .slices
            .windows(2)
            .map(|w| w[1].started.saturating_duration_since(w[0].ended))
            .sum();
        let outcome = engine::EngineOutcome {
            started: first,
            ended: first + active,
            peak_in_flight: self
                .slices
                .iter()
                .map(|o| o.peak_in_flight)
                .max()
                .unwrap_or(0),
            interrupted: self.slices.iter().any(|o| o.interrupted),
        };
        (outcome, idle)
    }

    /// Builds the report, stores the run and writes every output.
    pub fn finish(self) -> Result<StoredRun, BenchError> {
        let (outcome, idle) = self.outcome();
        let Session {
            cfg,
            mut outputs,
            workload,
            tx,
            aggregator,
            recorder,
            progress,
            started_wall,
            cpu_before,
            run_id,
            live,
            origin,
            t0,
            shift,
            ..
        } = self;
        drop(tx);
        let (mut stats, samples) =
            aggregator
                .finish_with_samples()
                .map_err(|source| BenchError::Output {
                    path: cfg.records_out.clone().unwrap_or_default(),
                    source,
                })?;
        stats.idle = idle;
        // The aggregator has ended, so the writer has every checkpoint: wait
        // for it before the final write, which must not be overwritten.
        let outlet = live.finish()?;
        outputs.store = outlet.store;
        progress.finish();
        let server_metrics = recorder.and_then(Recorder::finish);
        let cpu = match (cpu_before, crate::sys::cpu_time()) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
            _ => None,
        };
        let mut report = summary::build(&cfg, &stats, &outcome, started_wall, cpu);
        summary::add_workload(&mut report, &cfg, &stats, workload.len());
        report.server_metrics = server_metrics;
        report.cost = cfg.results.cost.price(&report);
        report.run_id = run_id;
        if let Some(e) = outlet.error {
            report.warnings.push(format!(
                "saving results during the run failed ({e}); the final results below are complete"
            ));
        }
        if let Some(json) = outlet.json {
            json.write_final(&report)?;
        }
        if let Some(sh) = &cfg.client.shard {
            let file = crate::shard::shard_file(crate::shard::ShardParts {
                cfg: &cfg,
                stats: &stats,
                samples: &samples,
                outcome: &outcome,
                origin,
                t0,
                shift,
                report: &report,
            });
            crate::shard::write(&sh.out, &file).map_err(|source| BenchError::Output {
                path: sh.out.clone(),
                source,
            })?;
        }
        let run = StoredRun {
            histograms: stats.histograms(),
            report,
            samples,
            group: cfg.results.group.clone(),
        };
        outputs.finish(&run)?;
        Ok(run)
    }
}

/// Waits for `--start-at` (a sharded run's common start T0); returns T0 and
/// how long after it this process starts measuring. Without `--start-at`,
/// T0 is now.
async fn wait_for_start(cfg: &BenchConfig) -> (time::OffsetDateTime, Duration) {
    let now = time::OffsetDateTime::now_utc();
    let Some(t0) = cfg.client.shard.as_ref().and_then(|s| s.start_at) else {
        return (now, Duration::ZERO);
    };
    let wait = t0 - now;
    if wait.is_positive() {
        tokio::time::sleep(wait.try_into().unwrap_or_default()).await;
    }
    let late = time::OffsetDateTime::now_utc() - t0;
    (t0, late.try_into().unwrap_or_default())
}

/// A closed-loop shard's own request and warmup counts: its share of the
/// run's. An open-loop shard walks the whole schedule, so its stop is the run's.
fn sharded_counts(
    shard: Option<engine::ShardSlice>,
    shape: LoadShape,
    stop: StopCondition,
    warmup: u64,
) -> (StopCondition, u64) {
    match (shard, shape, stop) {
        (Some(s), LoadShape::Closed { .. }, StopCondition::Requests(n)) => {
            (StopCondition::Requests(s.share(n)), s.share(warmup))
        }
        (Some(s), LoadShape::Closed { .. }, d) => (d, s.share(warmup)),
        _ => (stop, warmup),
    }
}

/// Most distinct prompts pre-built for one run; later requests reuse them.
const MAX_DISTINCT_PROMPTS: usize = 20_000;

/// How many distinct requests the run will likely need (warmup included).
fn planned_requests(cfg: &BenchConfig) -> usize {
    let ramp = cfg.workload.ramp_up.as_secs_f64();
    let n = match (cfg.stop, cfg.workload.shape) {
        (StopCondition::Requests(n), LoadShape::Open { arrivals, .. }) => {
            n as f64 + arrivals.rate * ramp
        }
        (StopCondition::Requests(n), LoadShape::Closed { .. }) => {
            n as f64 + 4.0 * f64::from(cfg.concurrency)
        }
        (StopCondition::Duration(d), LoadShape::Open { arrivals, .. }) => {
            arrivals.rate * (d.as_secs_f64() + ramp) * 1.1
        }
        (StopCondition::Duration(_), LoadShape::Closed { .. }) => 4096.0,
    };
    (n as usize)
        .saturating_add(cfg.warmup as usize)
        .clamp(1, MAX_DISTINCT_PROMPTS)
}

/// Builds every request of the run before any load starts: tokenizes
/// prompts and datasets, so nothing of it happens while requests are due.
pub fn build_workload(cfg: &BenchConfig) -> Result<Workload, BenchError> {
    let w = &cfg.workload;
    let count = planned_requests(cfg);
    let output = w.output.unwrap_or(TokenLengths::Fixed {
        n: cfg.output_tokens,
    });
    if let Some(t) = &w.trace {
        let tok = w.tokenizer.as_ref().map(Tokenizer::load).transpose();
        let tok = tok.map_err(|e| ConfigError(e.0))?;
        return Ok(crate::trace::prompts::workload(
            &t.requests,
            tok.as_ref(),
            cfg.seed,
        ));
    }
    let Some(spec) = &w.tokenizer else {
        return Ok(Workload::words(count, cfg.input_tokens, &output, cfg.seed));
    };
    let tok = Tokenizer::load(spec).map_err(|e| ConfigError(e.0))?;
    if let Some(ds) = &w.dataset {
        let records = crate::engine::dataset::load(ds).map_err(|e| ConfigError(e.0))?;
        return Ok(workload::from_dataset(
            &records, &tok, &output, count, cfg.seed,
        ));
    }
    let synth = SyntheticSpec {
        input: w.input.unwrap_or(TokenLengths::Fixed {
            n: cfg.input_tokens,
        }),
        output,
        prefix_tokens: w.prefix_tokens,
        prefix_groups: w.prefix_groups,
        seed: cfg.seed,
    };
    Ok(workload::synthetic(&synth, &tok, count))
}

/// Serialises the report as pretty JSON.
pub fn write_json(report: &RunReport, file: File) -> std::io::Result<()> {
    let mut w = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, report)?;
    w.write_all(b"\n")?;
    w.flush()
}

/// A client for one-off control requests (preflight, model discovery); the
/// measured requests use [`crate::engine::request::build_http_client`].
pub fn build_client() -> Result<reqwest::Client, BenchError> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| BenchError::Internal(error_chain(&e)))
}

/// Fails fast when nothing answers at the target's address.
async fn preflight(client: &reqwest::Client, url: &str) -> Result<(), BenchError> {
    let probe = client
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match probe {
        Ok(_) => Ok(()),
        Err(e) if e.is_connect() || e.is_timeout() => Err(BenchError::Unreachable {
            url: url.to_owned(),
            reason: error_chain(&e),
        }),
        Err(_) => Ok(()), // a server that answers oddly to GET / is still there
    }
}

fn build_transport(cfg: &BenchConfig) -> Result<Transport, BenchError> {
    let protocol: Arc<dyn Protocol> = Arc::from(cfg.api.protocol_with(&ProtocolOptions {
        api_version: cfg.api_options.api_version.clone(),
    }));
    let headers = request_headers(cfg, protocol.as_ref())?;
    Ok(Transport::new(&cfg.url, headers, protocol, cfg.timeout))
}

/// Every header sent with each request: the protocol's fixed headers, the
/// API key (from `--api-key-env` or the protocol's conventional variable),
/// then `-H` headers. Key and `-H` values are marked sensitive.
pub fn request_headers(
    cfg: &BenchConfig,
    protocol: &dyn Protocol,
) -> Result<HeaderMap, ConfigError> {
    headers_for(
        cfg.api_key_env.as_deref(),
        &cfg.api_options.headers,
        protocol,
    )
}

/// [`request_headers`] from its parts: `--api-key-env` and the `-H` headers.
pub fn headers_for(
    api_key_env: Option<&str>,
    extra: &[(String, String)],
    protocol: &dyn Protocol,
) -> Result<HeaderMap, ConfigError> {
    let mut headers = HeaderMap::new();
    for (name, value) in protocol.fixed_headers() {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    if let Some((var, key)) = api_key(api_key_env, protocol)? {
        let (name, value) = match protocol.auth() {
            AuthStyle::Bearer => (AUTHORIZATION, format!("Bearer {key}")),
            AuthStyle::Header(h) => (HeaderName::from_static(h), key),
        };
        headers.insert(name, sensitive(&value, &format!("the API key in ${var}"))?);
    }
    for (name, value) in extra {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError(format!("-H '{name}' is not a valid header name")))?;
        let value = sensitive(value, &format!("the value of -H '{name}'"))?;
        headers.insert(name, value);
    }
    Ok(headers)
}

fn sensitive(value: &str, what: &str) -> Result<HeaderValue, ConfigError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        ConfigError(format!(
            "{what} contains characters not allowed in an HTTP header"
        ))
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The API key and the variable it came from, if any.
fn api_key(
    api_key_env: Option<&str>,
    protocol: &dyn Protocol,
) -> Result<Option<(String, String)>, ConfigError> {
    let Some(var) = api_key_env.or(protocol.key_env()) else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(key) if !key.trim().is_empty() => Ok(Some((var.to_owned(), key.trim().to_owned()))),
        _ if api_key_env.is_some() => Err(ConfigError(format!(
            "--api-key-env names '{var}', but that environment variable is not set"
        ))),
        _ => Ok(None),
    }
}
