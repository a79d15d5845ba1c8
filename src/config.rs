//! Validated run configuration. The core sees only these types, never clap's.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::api::ApiKind;
use crate::engine::arrival::{ArrivalProcess, Arrivals};
use crate::engine::dataset::DatasetSpec;
use crate::engine::tokenizer::TokenizerSpec;
use crate::engine::workload::TokenLengths;
use crate::engine::{LoadShape, StopCondition};
use crate::slo::Slo;

/// A configuration mistake, naming the flag and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// How progress is shown while a run is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressMode {
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
    /// Extra headers and protocol options.
    pub api_options: ApiOptions,
    /// Load shape, workload and SLOs beyond the closed-loop basics.
    pub workload: WorkloadOptions,
    /// Run history, report files and cost (see docs/results.md).
    pub results: ResultOptions,
    /// Connections, retries and the error rate a run may have.
    pub client: ClientOptions,
}

/// How the client treats connections and failures (issue 12), and which
/// slice of a sharded run it sends (issue 15).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientOptions {
    /// Retries of failed requests (none by default).
    pub retry: crate::engine::retry::RetryPolicy,
    /// Do not open connections ahead of the load (`--cold-connections`).
    pub cold_connections: bool,
    /// A run whose measured error rate exceeds this exits with
    /// [`EXIT_TOO_MANY_ERRORS`] after writing everything.
    pub max_error_rate: f64,
    /// `--shard K/N`: this process sends one slice and writes a shard file.
    #[serde(skip)]
    pub shard: Option<ShardConfig>,
}

/// A sharded run's part for this process (docs/distributed.md).
#[derive(Debug, Clone, PartialEq)]
pub struct ShardConfig {
    /// K of N.
    pub slice: crate::engine::ShardSlice,
    /// Common start (`--start-at`); `None` starts at once.
    pub start_at: Option<time::OffsetDateTime>,
    /// Where the shard file goes (`--shard-out`).
    pub out: PathBuf,
    /// The `bench` flags that rebuild this run's configuration at merge.
    pub args: Vec<String>,
}

/// Exit status of a run whose error rate exceeded `--max-error-rate`.
pub const EXIT_TOO_MANY_ERRORS: u8 = 4;

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            retry: Default::default(),
            cold_connections: false,
            max_error_rate: 0.5,
            shard: None,
        }
    }
}

/// Extra request headers (`-H`) and protocol options (`--api-version`).
/// Neither `Serialize` nor `Debug` shows header values.
#[derive(Clone, Default, Serialize)]
pub struct ApiOptions {
    /// Extra headers sent with every request. Only the names are ever
    /// serialized: values may hold secrets.
    #[serde(serialize_with = "ser_header_names")]
    pub headers: Vec<(String, String)>,
    /// Azure OpenAI `api-version`.
    pub api_version: Option<String>,
    /// How often the target's `/metrics` is scraped during the run: `None`
    /// every second (the default), zero never.
    #[serde(serialize_with = "ser_opt_secs")]
    pub scrape_every: Option<Duration>,
}

fn ser_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl std::fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ApiOptions")
            .field("headers", &names)
            .field("api_version", &self.api_version)
            .field("scrape_every", &self.scrape_every)
            .finish()
    }
}

fn ser_header_names<S: serde::Serializer>(h: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(h.iter().map(|(name, _)| name))
}

/// Parses a `-H 'Name: value'` header argument.
pub fn parse_header(raw: &str) -> Result<(String, String), ConfigError> {
    let Some((name, value)) = raw.split_once(':') else {
        return Err(ConfigError(
            "-H expects 'Name: value' (a colon between name and value)".into(),
        ));
    };
    let name = name.trim();
    let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
        && reqwest::header::HeaderValue::from_str(value.trim()).is_ok();
    if name.is_empty() || !valid {
        // The value is not echoed: it may be a secret.
        return Err(ConfigError(format!(
            "-H '{name}: …' is not a valid HTTP header name and value"
        )));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// How load is shaped and what each request asks (issue 4). The default is a
/// closed loop of word prompts of exactly `input_tokens` words and
/// `output_tokens` max tokens, as before.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadOptions {
    /// Closed loop (with optional think time) or open loop.
    pub shape: LoadShape,
    /// Ramp-up of users or rate; requests due during it are warmup.
    #[serde(serialize_with = "ser_duration")]
    pub ramp_up: Duration,
    /// Distribution of prompt lengths (default: exactly `input_tokens`).
    pub input: Option<TokenLengths>,
    /// Distribution of `max_tokens` (default: exactly `output_tokens`).
    pub output: Option<TokenLengths>,
    /// Tokenizer building the prompts; `None` builds word prompts without one.
    pub tokenizer: Option<TokenizerSpec>,
    /// Prompts from a file instead of synthetic ones.
    pub dataset: Option<DatasetSpec>,
    /// Tokens of a prefix shared within each group (0: none).
    pub prefix_tokens: u32,
    /// Number of distinct shared prefixes.
    pub prefix_groups: u32,
    /// Chat turns per conversation (`--turns`; 1: independent requests).
    pub turns: u32,
    /// Objectives judged per request and at `slo_percentile`.
    pub slos: Vec<Slo>,
    /// Percentile the SLOs are judged at (e.g. 95).
    pub slo_percentile: f64,
    /// A trace replayed at its own timestamps (`--trace`), read and cut
    /// before the run; the open loop's arrivals are then
    /// [`ArrivalProcess::Trace`].
    pub trace: Option<crate::trace::TracePlan>,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        Self {
            shape: LoadShape::Closed { think: None },
            ramp_up: Duration::ZERO,
            input: None,
            output: None,
            tokenizer: None,
            dataset: None,
            prefix_tokens: 0,
            prefix_groups: 1,
            turns: 1,
            slos: Vec::new(),
            slo_percentile: 95.0,
            trace: None,
        }
    }
}

impl WorkloadOptions {
    /// Checks the load-shape and workload rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let LoadShape::Open {
            arrivals,
            max_concurrency,
        } = &self.shape
        {
            match (arrivals.process, &self.trace) {
                (ArrivalProcess::Trace, None) => {
                    return Err(ConfigError(
                        "trace arrivals need a trace: add --trace FORMAT:PATH".into(),
                    ))
                }
                (ArrivalProcess::Trace, Some(_)) => {}
                _ => {
                    Arrivals::new(arrivals).map_err(|e| ConfigError(e.0))?;
                }
            }
            if *max_concurrency == Some(0) {
                return Err(ConfigError(
                    "--max-concurrency must be at least 1 (leave it out for no cap)".into(),
                ));
            }
        }
        if self.turns == 0 {
            return Err(ConfigError("--turns must be at least 1".into()));
        }
        if self.turns > 1 && matches!(self.shape, LoadShape::Open { .. }) {
            return Err(ConfigError(
                "--turns runs each conversation's turns one after another per user, so it needs a closed loop: use --concurrency or --users (with --think-time) instead of --rate".into(),
            ));
        }
        if self.trace.is_some() {
            self.validate_trace()?;
        }
        if self.prefix_groups == 0 {
            return Err(ConfigError("--prefix-groups must be at least 1".into()));
        }
        if !(self.slo_percentile > 0.0 && self.slo_percentile <= 100.0) {
            return Err(ConfigError(format!(
                "--slo-percentile '{}' must be in (0, 100], e.g. 95",
                self.slo_percentile
            )));
        }
        if self.dataset.is_some() && self.prefix_tokens > 0 {
            return Err(ConfigError(
                "--prefix-tokens works with synthetic prompts only; drop it or --dataset".into(),
            ));
        }
        if self.tokenizer.is_none()
            && (self.dataset.is_some()
                || self
                    .input
                    .is_some_and(|i| !matches!(i, TokenLengths::Fixed { .. })))
        {
            return Err(ConfigError("this workload needs a tokenizer: add --tokenizer cl100k_base (or a tokenizer.json path)".into()));
        }
        Ok(())
    }
}

impl WorkloadOptions {
    /// A trace brings its own arrivals, lengths and prefixes.
    fn validate_trace(&self) -> Result<(), ConfigError> {
        let open_trace = matches!(
            self.shape,
            LoadShape::Open { arrivals, .. } if arrivals.process == ArrivalProcess::Trace
        );
        if !open_trace {
            return Err(ConfigError(
                "--trace replays arrivals at the trace's timestamps (an open loop); drop --concurrency, --users and --rate".into(),
            ));
        }
        if self.dataset.is_some() || self.prefix_tokens > 0 || self.turns > 1 {
            return Err(ConfigError(
                "--trace sets prompt lengths and shared prefixes itself; drop --dataset, --prefix-tokens and --turns".into(),
            ));
        }
        if !self.ramp_up.is_zero() {
            return Err(ConfigError(
                "--ramp-up would distort the trace's arrivals; use --trace-window to skip its start instead".into(),
            ));
        }
        Ok(())
    }
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
        let r = self.client.max_error_rate;
        if !(0.0..=1.0).contains(&r) {
            return Err(ConfigError(format!(
                "--max-error-rate '{r}' must be a fraction between 0 and 1, e.g. 0.05"
            )));
        }
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
        if self.workload.turns > 1 && !self.api.is_chat() {
            return Err(ConfigError(format!(
                "--turns {} needs a chat protocol that takes a message list, and --api {} sends a single prompt. Use --api openai-chat (TGI and vLLM serve /v1/chat/completions) or --api ollama-chat, or drop --turns",
                self.workload.turns, self.api
            )));
        }
        self.workload.validate()
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

    #[test]
    fn header_args_parse_and_never_echo_values() {
        assert_eq!(
            parse_header("X-A: b c").unwrap(),
            ("X-A".into(), "b c".into())
        );
        assert!(parse_header("nocolon").is_err());
        let e = parse_header("bad name: s3cret\n").unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        let opts = ApiOptions {
            headers: vec![("Authorization".into(), "Bearer s3cret".into())],
            api_version: None,
            scrape_every: None,
        };
        let json = serde_json::to_string(&opts).unwrap();
        assert!(
            json.contains("Authorization") && !json.contains("s3cret"),
            "{json}"
        );
    }
}
