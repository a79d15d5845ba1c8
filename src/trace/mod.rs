//! Request traces: public production traces (Mooncake, Azure, BurstGPT)
//! and the files `throtl record` writes, replayed by `throtl bench --trace`
//! and summarised by `throtl trace stats`.
//!
//! A trace is read completely and reduced to [`TraceRequest`]s (arrival
//! offset, lengths, prefix blocks, session) before any load starts; the
//! replay options ([`ReplayOptions`]) then cut a window, cap the count and
//! rescale time. Prompts are built from it by [`prompts`].

pub mod formats;
pub mod prompts;
pub mod stats;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// Tokens per prefix block in the Mooncake traces (and the default of
/// `throtl record`).
pub const MOONCAKE_BLOCK_TOKENS: u32 = 512;

/// The file formats `--trace` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceFormat {
    /// Mooncake JSONL (`timestamp` ms, `input_length`, `output_length`, `hash_ids`).
    Mooncake,
    /// Azure LLM inference trace CSV (`TIMESTAMP`, `ContextTokens`, `GeneratedTokens`).
    Azure,
    /// BurstGPT CSV (`Timestamp`, `Model`, `Request tokens`, `Response tokens`, `Log Type`).
    Burstgpt,
    /// The JSONL `throtl record` writes (docs/trace.schema.json).
    Throtl,
}

impl TraceFormat {
    /// Every format, in the order help lists them.
    pub const ALL: [TraceFormat; 4] = [
        TraceFormat::Mooncake,
        TraceFormat::Azure,
        TraceFormat::Burstgpt,
        TraceFormat::Throtl,
    ];

    /// The spelling in `FORMAT:PATH`.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceFormat::Mooncake => "mooncake",
            TraceFormat::Azure => "azure",
            TraceFormat::Burstgpt => "burstgpt",
            TraceFormat::Throtl => "throtl",
        }
    }

    /// Whether lines carry a model name (`--trace-model` filters on it).
    pub fn has_model(self) -> bool {
        matches!(self, TraceFormat::Burstgpt | TraceFormat::Throtl)
    }
}

/// A trace file and its format (`--trace FORMAT:PATH`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceSpec {
    /// File format.
    pub format: TraceFormat,
    /// Path of the file.
    pub path: PathBuf,
}

impl TraceSpec {
    /// Parses `FORMAT:PATH`; an unknown format lists the known ones.
    pub fn parse(s: &str) -> Result<Self, String> {
        let known = || {
            TraceFormat::ALL
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some((fmt, path)) = s.split_once(':').filter(|(_, p)| !p.is_empty()) else {
            return Err(format!(
                "--trace '{s}': write FORMAT:PATH, e.g. mooncake:trace.jsonl (formats: {})",
                known()
            ));
        };
        let format = TraceFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == fmt)
            .ok_or_else(|| {
                format!(
                    "--trace '{s}': unknown format '{fmt}'; known formats: {}",
                    known()
                )
            })?;
        Ok(Self {
            format,
            path: path.into(),
        })
    }

    /// `FORMAT:PATH`, as given.
    pub fn label(&self) -> String {
        format!("{}:{}", self.format.as_str(), self.path.display())
    }
}

/// One request of a trace, as parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceRequest {
    /// Arrival, from the start of the trace (the first line's timestamp;
    /// after [`ReplayOptions`], from the start of the replay).
    pub at: Duration,
    /// Prompt length in tokens.
    pub input_tokens: u32,
    /// Answer length in tokens (the replay's `max_tokens`).
    pub output_tokens: u32,
    /// Prefix-block hashes, one per `block_tokens` tokens of the prompt (the
    /// last block may be partial); requests sharing the first k hashes share
    /// those k blocks. Empty: no prefix information.
    pub hash_ids: Vec<u64>,
    /// Tokens per block of `hash_ids`.
    pub block_tokens: u32,
    /// Session (conversation) the request belongs to, if the format says.
    pub conversation: Option<String>,
    /// Model the request was for, if the format says.
    pub model: Option<String>,
    /// 1-based line of the file the request came from.
    pub line: usize,
}

/// A trace that cannot be used: names the file, and where it applies the
/// line and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TraceError(pub String);

impl TraceError {
    /// An error at `line` of `path` about `field`.
    pub fn at(path: &Path, line: usize, field: &str, why: impl std::fmt::Display) -> Self {
        TraceError(format!("{}:{line}: field '{field}': {why}", path.display()))
    }
}

/// How a trace is cut and rescaled before it is replayed.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ReplayOptions {
    /// Time scaling: 2 replays twice as fast (`--trace-speed`); `None`: 1.
    pub speed: Option<f64>,
    /// Keep arrivals in `start..end` of trace time (`--trace-window`).
    #[serde(serialize_with = "ser_window")]
    pub window: Option<(Duration, Option<Duration>)>,
    /// Keep at most this many requests (`--trace-max-requests`).
    pub max_requests: Option<usize>,
    /// Rescale time to this mean rate, keeping the burst structure (`--trace-rate`).
    pub rate: Option<f64>,
    /// Keep requests for this model only (`--trace-model`).
    pub model: Option<String>,
}

fn ser_window<S: serde::Serializer>(
    w: &Option<(Duration, Option<Duration>)>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match w {
        None => s.serialize_none(),
        Some((a, b)) => s.serialize_some(&(a.as_secs_f64(), b.map(|b| b.as_secs_f64()))),
    }
}

/// Parses `START..END`, `START..` or `..END` (durations such as 90s, 10m).
pub fn parse_window(s: &str) -> Result<(Duration, Option<Duration>), String> {
    let Some((a, b)) = s.split_once("..") else {
        return Err(format!(
            "--trace-window '{s}': write START..END, e.g. 10m..20m, 30s.. or ..5m"
        ));
    };
    let dur = |t: &str| {
        humantime::parse_duration(t.trim())
            .map_err(|e| format!("--trace-window '{s}': '{t}' is not a duration ({e})"))
    };
    let start = if a.trim().is_empty() {
        Duration::ZERO
    } else {
        dur(a)?
    };
    let end = if b.trim().is_empty() {
        None
    } else {
        Some(dur(b)?)
    };
    if end.is_some_and(|e| e <= start) {
        return Err(format!(
            "--trace-window '{s}': the end must come after the start"
        ));
    }
    Ok((start, end))
}

/// A trace read and cut, ready to replay.
#[derive(Debug, Clone, Serialize)]
pub struct TracePlan {
    /// The file.
    pub spec: TraceSpec,
    /// How it was cut and rescaled.
    pub options: ReplayOptions,
    /// Requests in the file (before any filter).
    pub lines_in_file: usize,
    /// The requests to replay, in arrival order, `at` from the replay start.
    #[serde(skip)]
    pub requests: Arc<Vec<TraceRequest>>,
}

impl TracePlan {
    /// Reads `spec` and applies `options`; an empty result is an error.
    pub fn load(spec: &TraceSpec, options: &ReplayOptions) -> Result<Self, TraceError> {
        let all = formats::read(spec)?;
        let lines_in_file = all.len();
        let requests = apply(spec, all, options)?;
        Ok(Self {
            spec: spec.clone(),
            options: options.clone(),
            lines_in_file,
            requests: Arc::new(requests),
        })
    }

    /// Arrival offsets from the replay start.
    pub fn offsets(&self) -> Vec<Duration> {
        self.requests.iter().map(|r| r.at).collect()
    }

    /// Span from the first to the last arrival.
    pub fn span(&self) -> Duration {
        span(&self.requests)
    }

    /// The mean offered rate: (requests − 1) / span, as the report's
    /// `offered_rate_per_s`; 0 for a single request.
    pub fn offered_rate(&self) -> f64 {
        mean_rate(&self.requests)
    }
}

fn span(reqs: &[TraceRequest]) -> Duration {
    match (reqs.first(), reqs.last()) {
        (Some(a), Some(b)) => b.at.saturating_sub(a.at),
        _ => Duration::ZERO,
    }
}

fn mean_rate(reqs: &[TraceRequest]) -> f64 {
    let s = span(reqs).as_secs_f64();
    if reqs.len() < 2 || s <= 0.0 {
        0.0
    } else {
        (reqs.len() - 1) as f64 / s
    }
}

/// Filters by model and window, caps the count, then rescales time.
fn apply(
    spec: &TraceSpec,
    mut reqs: Vec<TraceRequest>,
    o: &ReplayOptions,
) -> Result<Vec<TraceRequest>, TraceError> {
    let full_span = span(&reqs);
    if let Some(m) = &o.model {
        if !spec.format.has_model() {
            return Err(TraceError(format!(
                "--trace-model: {} traces have no model column; drop --trace-model",
                spec.format.as_str()
            )));
        }
        reqs.retain(|r| r.model.as_deref() == Some(m.as_str()));
        if reqs.is_empty() {
            return Err(TraceError(format!(
                "--trace-model '{m}': no request of {} is for that model",
                spec.path.display()
            )));
        }
    }
    if let Some((start, end)) = o.window {
        reqs.retain(|r| r.at >= start && end.is_none_or(|e| r.at < e));
        for r in &mut reqs {
            r.at -= start;
        }
    }
    if let Some(n) = o.max_requests {
        reqs.truncate(n);
    }
    if reqs.is_empty() {
        return Err(TraceError(format!(
            "the trace window holds no request: {} spans 0s..{:.3}s of trace time; check --trace-window and --trace-max-requests",
            spec.path.display(),
            full_span.as_secs_f64()
        )));
    }
    rescale(&mut reqs, o)?;
    Ok(reqs)
}

/// Divides every offset by the speed, or by the factor that makes the mean
/// rate `rate`: gaps keep their proportions, so bursts stay bursts.
fn rescale(reqs: &mut [TraceRequest], o: &ReplayOptions) -> Result<(), TraceError> {
    let factor = match (o.speed, o.rate) {
        (Some(_), Some(_)) => {
            return Err(TraceError(
                "--trace-speed and --trace-rate both rescale time; give one".into(),
            ))
        }
        (Some(s), None) => {
            if !(s.is_finite() && s > 0.0) {
                return Err(TraceError(format!(
                    "--trace-speed '{s}' must be a positive factor, e.g. 2 (twice as fast)"
                )));
            }
            s
        }
        (None, Some(r)) => {
            if !(r.is_finite() && r > 0.0) {
                return Err(TraceError(format!(
                    "--trace-rate '{r}' must be a positive number of requests per second"
                )));
            }
            let now = mean_rate(reqs);
            if now <= 0.0 {
                return Err(TraceError(
                    "--trace-rate needs at least two arrivals at different times in the window"
                        .into(),
                ));
            }
            r / now
        }
        (None, None) => return Ok(()),
    };
    for r in reqs {
        r.at = Duration::from_secs_f64(r.at.as_secs_f64() / factor);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ms: u64) -> TraceRequest {
        TraceRequest {
            at: Duration::from_millis(ms),
            input_tokens: 1,
            output_tokens: 1,
            ..Default::default()
        }
    }

    #[test]
    fn spec_parse_lists_known_formats() {
        assert_eq!(
            TraceSpec::parse("azure:a.csv").unwrap().format,
            TraceFormat::Azure
        );
        let e = TraceSpec::parse("splunk:x").unwrap_err();
        assert!(e.contains("mooncake, azure, burstgpt, throtl"), "{e}");
        assert!(TraceSpec::parse("mooncake").is_err());
    }

    #[test]
    fn window_parse() {
        assert_eq!(
            parse_window("1s..3s").unwrap(),
            (Duration::from_secs(1), Some(Duration::from_secs(3)))
        );
        assert_eq!(parse_window("..3s").unwrap().0, Duration::ZERO);
        assert_eq!(parse_window("2s..").unwrap().1, None);
        assert!(parse_window("3s..1s").is_err());
        assert!(parse_window("3s").is_err());
    }

    #[test]
    fn rate_rescale_keeps_proportions() {
        let spec = TraceSpec::parse("mooncake:x").unwrap();
        let reqs = vec![req(0), req(100), req(1000)];
        let o = ReplayOptions {
            rate: Some(4.0),
            ..Default::default()
        };
        let out = apply(&spec, reqs, &o).unwrap();
        // Mean rate 2 / 1 s = 2/s → 4/s halves every offset.
        assert_eq!(out[1].at, Duration::from_millis(50));
        assert_eq!(out[2].at, Duration::from_millis(500));
        let o = ReplayOptions {
            window: Some((Duration::from_millis(2000), None)),
            ..Default::default()
        };
        assert!(apply(&spec, vec![req(0)], &o).is_err());
    }
}
