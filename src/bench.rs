//! `throtl bench`: opens outputs, checks the target, runs the engine, builds
//! the report. A short pipeline; each step lives in its own function.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use tokio::sync::watch;

use crate::config::{BenchConfig, ConfigError};
use crate::engine::request::{error_chain, Transport};
use crate::engine::workload::PromptSource;
use crate::engine::{self, Controls, LoadPlan};
use crate::progress::{Progress, ProgressInputs};
use crate::report::samples::RequestSample;
use crate::report::RunReport;
use crate::results::{Format, RunData};
use crate::scrape::recorder::Recorder;
use crate::stats::aggregator::RecordsOut;
use crate::stats::{Aggregator, Snapshot, Stats};
use crate::store::runs::StoredRun;
use crate::store::Store;
use crate::summary;

/// How often the target's `/metrics` is scraped during a run.
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
    json: Option<(PathBuf, File)>,
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
            json: cfg.json_out.as_deref().map(create).transpose()?,
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

/// Runs a whole bench: validate, open outputs, probe, measure, report, write.
pub async fn run(cfg: &BenchConfig, controls: Controls) -> Result<RunReport, BenchError> {
    run_full(cfg, controls).await.map(|r| r.report)
}

/// Like [`run`], returning the report with its samples and histograms.
pub async fn run_full(cfg: &BenchConfig, controls: Controls) -> Result<StoredRun, BenchError> {
    cfg.validate()?;
    let mut outputs = Outputs::open(cfg)?;
    preflight(&build_client()?, &cfg.url).await?;
    let transport = Arc::new(build_transport(cfg)?);
    let collect = outputs.want_samples();
    let (mut report, stats, samples) =
        measure(cfg, transport, controls, outputs.records.take(), collect).await?;
    report.cost = cfg.results.cost.price(&report);
    if let Some((path, file)) = outputs.json.take() {
        write_json(&report, file).map_err(|source| BenchError::Output { path, source })?;
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

async fn measure(
    cfg: &BenchConfig,
    transport: Arc<Transport>,
    controls: Controls,
    records: Option<(PathBuf, File)>,
    collect: bool,
) -> Result<(RunReport, Stats, Vec<RequestSample>), BenchError> {
    let started_wall = time::OffsetDateTime::now_utc();
    let origin = Instant::now();
    let cpu_before = crate::sys::cpu_time();
    let (tx, rx) = std::sync::mpsc::channel();
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let records_out = records.map(|(_, f)| RecordsOut {
        writer: Box::new(BufWriter::with_capacity(1 << 16, f)) as Box<dyn Write + Send>,
        origin,
    });
    let aggregator = Aggregator::start_collecting(
        rx,
        cfg.input_tokens,
        records_out,
        snap_tx,
        collect.then_some(origin),
    )
    .map_err(|e| BenchError::Internal(e.to_string()))?;
    let (server_tx, server_rx) = watch::channel(None);
    let recorder = Recorder::start(&cfg.url, SERVER_SCRAPE_EVERY, origin, server_tx).ok();
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
    let plan = Arc::new(LoadPlan {
        concurrency: cfg.concurrency,
        stop: cfg.stop,
        warmup: cfg.warmup,
        model: cfg.model.clone(),
        max_tokens: cfg.output_tokens,
        ignore_eos: cfg.ignore_eos,
        prompts: PromptSource::new(cfg.input_tokens, cfg.seed),
    });
    let outcome = engine::run_closed_loop(transport, plan, tx, controls).await;
    let (stats, samples) =
        aggregator
            .finish_with_samples()
            .map_err(|source| BenchError::Output {
                path: cfg.records_out.clone().unwrap_or_default(),
                source,
            })?;
    progress.finish();
    let server_metrics = recorder.and_then(Recorder::finish);
    let cpu = match (cpu_before, crate::sys::cpu_time()) {
        (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
        _ => None,
    };
    let mut report = summary::build(cfg, &stats, &outcome, started_wall, cpu);
    report.server_metrics = server_metrics;
    Ok((report, stats, samples))
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
    let mut headers = HeaderMap::new();
    let key_var = cfg.api_key_env.as_deref().unwrap_or("OPENAI_API_KEY");
    if let Ok(key) = std::env::var(key_var) {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| {
            ConfigError(format!(
                "the API key in ${key_var} contains characters not allowed in an HTTP header"
            ))
        })?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    } else if cfg.api_key_env.is_some() {
        return Err(ConfigError(format!(
            "--api-key-env names '{key_var}', but that environment variable is not set"
        ))
        .into());
    }
    Ok(Transport {
        client: crate::engine::request::build_http_client(),
        base: cfg.url.clone(),
        headers,
        protocol: Arc::from(cfg.api.protocol()),
        timeout: cfg.timeout,
    })
}
