//! Results: stored or exported runs, their comparison with statistics, and
//! their renderings (HTML with inline SVG charts, Markdown, CSV).
//! See docs/results.md.

pub mod compare;
pub mod cost;
pub mod curves;
pub mod html;
pub mod stats;
pub mod text;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::report::samples::RequestSample;
use crate::report::RunReport;
use crate::store::runs::StoredRun;
use crate::store::{Store, StoreError};

/// Identifier of the export format (`runs export --format json`).
pub const EXPORT_SCHEMA: &str = "throtl.run-export.v1";

/// A run with its per-request samples (empty for a plain `--json` summary).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunData {
    /// Always [`EXPORT_SCHEMA`] when serialized.
    #[serde(default)]
    pub schema: String,
    /// The summary.
    pub report: RunReport,
    /// Per-request samples.
    #[serde(default)]
    pub samples: Vec<RequestSample>,
}

impl From<StoredRun> for RunData {
    fn from(r: StoredRun) -> Self {
        Self {
            schema: EXPORT_SCHEMA.into(),
            report: r.report,
            samples: r.samples,
        }
    }
}

/// A run that could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Neither a stored run id nor a readable file.
    #[error("'{0}' is neither a run id in the history store nor a file; list runs with `throtl runs list`")]
    NotFound(String),
    /// The file is not a throtl summary or export.
    #[error("'{path}' is not a throtl JSON summary (--json) or export (runs export --format json): {reason}")]
    BadFile {
        /// The file.
        path: String,
        /// Parser message.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Loads a run by id from `store`, or from a JSON file (summary or export).
pub fn load(spec: &str, store: Option<&Store>) -> Result<RunData, LoadError> {
    let path = Path::new(spec);
    if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::BadFile {
            path: spec.into(),
            reason: e.to_string(),
        })?;
        return parse_file(&text).map_err(|reason| LoadError::BadFile {
            path: spec.into(),
            reason,
        });
    }
    match store.map(|s| s.run(spec)).transpose()?.flatten() {
        Some(run) => Ok(run.into()),
        None => Err(LoadError::NotFound(spec.into())),
    }
}

/// What one `report`/`compare` argument named: a run, a sweep JSON file
/// (its steps), or a history group (its runs, oldest first).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The runs.
    pub runs: Vec<RunData>,
    /// They are the steps of a sweep (draw sweep curves).
    pub sweep: bool,
}

/// Loads a run id, a JSON file (run summary, export, or `sweep --json`), or
/// a group id from the history (`runs list` shows it).
pub fn load_many(spec: &str, store: Option<&Store>) -> Result<Loaded, LoadError> {
    let path = Path::new(spec);
    if path.is_file() {
        if let Some(steps) = sweep_file(path) {
            return Ok(Loaded {
                runs: steps,
                sweep: true,
            });
        }
    } else if let Some(store) = store {
        let ids = store.group_runs(spec)?;
        if !ids.is_empty() {
            let runs = ids
                .iter()
                .map(|id| load(id, Some(store)))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Loaded {
                runs,
                sweep: spec.starts_with("sweep-"),
            });
        }
    }
    Ok(Loaded {
        runs: vec![load(spec, store)?],
        sweep: false,
    })
}

/// The steps of a `sweep --json` file, or `None` when it is not one.
fn sweep_file(path: &Path) -> Option<Vec<RunData>> {
    let text = std::fs::read_to_string(path).ok()?;
    let sweep: crate::sweep::SweepReport = serde_json::from_str(&text).ok()?;
    (sweep.schema == crate::sweep::SWEEP_SCHEMA).then(|| {
        sweep
            .steps
            .into_iter()
            .map(|s| RunData {
                schema: EXPORT_SCHEMA.into(),
                report: s.run,
                samples: Vec::new(),
            })
            .collect()
    })
}

fn parse_file(text: &str) -> Result<RunData, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if v.get("report").is_some() {
        serde_json::from_value(v).map_err(|e| e.to_string())
    } else {
        let report = serde_json::from_value(v).map_err(|e| e.to_string())?;
        Ok(RunData {
            schema: EXPORT_SCHEMA.into(),
            report,
            samples: Vec::new(),
        })
    }
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Self-contained HTML with inline SVG charts.
    Html,
    /// Markdown summary (pull-request comment).
    Markdown,
    /// CSV, one row per run.
    Csv,
}

/// Renders runs (one or several, overlaid) in `format`.
pub fn render(runs: &[RunData], format: Format) -> Vec<u8> {
    match format {
        Format::Html => html::render(runs).into_bytes(),
        Format::Markdown => text::markdown(runs).into_bytes(),
        Format::Csv => text::csv(runs).into_bytes(),
    }
}

/// A per-request metric that comparisons and charts read from samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleMetric {
    /// Time to first token (ms).
    Ttft,
    /// Time per output token (ms).
    Tpot,
    /// End-to-end latency (ms).
    E2e,
    /// Output tokens/s of each request.
    RequestRate,
}

impl SampleMetric {
    /// Name used in `--fail-on` and tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ttft => "ttft",
            Self::Tpot => "tpot",
            Self::E2e => "e2e",
            Self::RequestRate => "output_tokens_per_s_per_request",
        }
    }

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        self == Self::RequestRate
    }

    /// Values of successful requests.
    pub fn values(self, samples: &[RequestSample]) -> Vec<f64> {
        samples
            .iter()
            .filter(|s| s.is_ok())
            .filter_map(|s| match self {
                Self::Ttft => s.ttft_ms,
                Self::Tpot => s.tpot_ms,
                Self::E2e => Some(s.e2e_ms()),
                Self::RequestRate => s.output_rate(),
            })
            .collect()
    }
}

/// One second of a run, derived from samples (bucketed by request end).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SecondBucket {
    /// Start of the second (s from run start).
    pub t_s: f64,
    /// Output tokens of requests that ended successfully in this second.
    pub output_tokens: u64,
    /// Successful requests that ended.
    pub ok: u64,
    /// Failed requests that ended.
    pub errors: u64,
    /// Mean TTFT (ms) of those requests; 0 when none.
    pub ttft_mean_ms: f64,
    /// Mean e2e (ms) of those requests; 0 when none.
    pub e2e_mean_ms: f64,
}

/// Per-second series from first to last request end.
pub fn per_second(samples: &[RequestSample]) -> Vec<SecondBucket> {
    let Some(last) = samples.iter().map(|s| s.end_ms).reduce(f64::max) else {
        return Vec::new();
    };
    let first = samples.iter().map(|s| s.start_ms).fold(f64::MAX, f64::min);
    let (lo, hi) = ((first / 1000.0).floor() as usize, (last / 1000.0) as usize);
    let mut b: Vec<SecondBucket> = (lo..=hi)
        .map(|i| SecondBucket {
            t_s: i as f64,
            ..SecondBucket::default()
        })
        .collect();
    let mut ttft_n = vec![0u64; b.len()];
    for s in samples {
        let i = ((s.end_ms / 1000.0) as usize)
            .saturating_sub(lo)
            .min(b.len() - 1);
        if !s.is_ok() {
            b[i].errors += 1;
            continue;
        }
        b[i].ok += 1;
        b[i].output_tokens += s.output_tokens;
        b[i].e2e_mean_ms += s.e2e_ms();
        if let Some(t) = s.ttft_ms {
            b[i].ttft_mean_ms += t;
            ttft_n[i] += 1;
        }
    }
    for (x, n) in b.iter_mut().zip(ttft_n) {
        if x.ok > 0 {
            x.e2e_mean_ms /= x.ok as f64;
        }
        if n > 0 {
            x.ttft_mean_ms /= n as f64;
        }
    }
    b
}

/// A short label for a run in tables and legends.
pub fn label(r: &RunReport) -> String {
    format!("{} ({})", r.run_id, r.target.url)
}
