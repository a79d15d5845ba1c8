//! Validated run configuration. The core sees only these types, never clap's.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::api::ApiKind;
use crate::engine::StopCondition;

/// A configuration mistake, naming the flag and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// How progress is shown while a run is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressMode {
    /// A live progress bar (terminal).
    Bar,
    /// The live ratatui dashboard (terminal).
    Tui,
    /// A plain line every few seconds (pipes, CI logs).
    Lines,
    /// Nothing but the result.
    Quiet,
}

/// Everything `throtl bench` needs, validated.
#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    /// Server base URL, without a trailing `/` or `/v1`.
    pub url: String,
    /// Model name sent with each request.
    pub model: String,
    /// Wire protocol.
    pub api: ApiKind,
    /// Closed-loop concurrency.
    pub concurrency: u32,
    /// End of the measured phase.
    #[serde(serialize_with = "ser_stop")]
    pub stop: StopCondition,
    /// Prompt length in tokens (words of the synthetic prompt).
    pub input_tokens: u32,
    /// `max_tokens` per request.
    pub output_tokens: u32,
    /// Warmup requests, excluded from statistics.
    pub warmup: u64,
    /// Per-request timeout.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Send `ignore_eos: true`.
    pub ignore_eos: bool,
    /// Seed of the prompt generator.
    pub seed: u64,
    /// Where to write the JSON summary.
    pub json_out: Option<PathBuf>,
    /// Where to write one JSON line per request.
    pub records_out: Option<PathBuf>,
    /// Progress display.
    pub progress: ProgressMode,
    /// How long in-flight requests may finish after Ctrl-C.
    #[serde(serialize_with = "ser_duration")]
    pub grace: Duration,
    /// Name of the environment variable holding the API key (never the key).
    pub api_key_env: Option<String>,
    /// Run history, report files and cost (see docs/results.md).
    pub results: ResultOptions,
}

/// Where a bench run is kept and rendered besides `--json`, and how it is priced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResultOptions {
    /// History database to store the run in; `None` with `--no-store`.
    pub db: Option<PathBuf>,
    /// Self-contained HTML report.
    pub html_out: Option<PathBuf>,
    /// Markdown summary.
    pub markdown_out: Option<PathBuf>,
    /// CSV summary.
    pub csv_out: Option<PathBuf>,
    /// Pricing of the run.
    pub cost: crate::results::cost::CostModel,
    /// Comparison group the stored run belongs to (multi-target bench).
    pub group: Option<String>,
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn ser_stop<S: serde::Serializer>(stop: &StopCondition, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(1))?;
    match stop {
        StopCondition::Requests(n) => m.serialize_entry("requests", n)?,
        StopCondition::Duration(d) => m.serialize_entry("duration_s", &d.as_secs_f64())?,
    }
    m.end()
}

impl BenchConfig {
    /// Checks cross-field rules that flag parsing cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return Err(ConfigError("--concurrency must be at least 1".into()));
        }
        if self.output_tokens == 0 {
            return Err(ConfigError("--output-tokens must be at least 1".into()));
        }
        match self.stop {
            StopCondition::Requests(0) => {
                return Err(ConfigError("--requests must be at least 1".into()))
            }
            StopCondition::Duration(d) if d.is_zero() => {
                return Err(ConfigError("--duration must be longer than 0s".into()))
            }
            _ => {}
        }
        if self.timeout.is_zero() {
            return Err(ConfigError("--timeout must be longer than 0s".into()));
        }
        Ok(())
    }
}

/// Normalises a base URL: requires http(s), drops a trailing `/` and `/v1`.
pub fn normalize_base_url(raw: &str) -> Result<String, ConfigError> {
    let url = reqwest::Url::parse(raw).map_err(|e| {
        ConfigError(format!(
            "--url '{raw}' is not a valid URL ({e}); use e.g. 'http://127.0.0.1:8000'"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError(format!(
            "--url '{raw}' must start with http:// or https://"
        )));
    }
    let mut s = raw.trim_end_matches('/').to_owned();
    if s.ends_with("/v1") {
        s.truncate(s.len() - 3);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_is_normalised_and_checked() {
        assert_eq!(normalize_base_url("http://h:1/v1/").unwrap(), "http://h:1");
        assert_eq!(normalize_base_url("http://h:1").unwrap(), "http://h:1");
        assert!(normalize_base_url("h:1").is_err());
        assert!(normalize_base_url("ftp://h").is_err());
    }
}
