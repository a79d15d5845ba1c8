//! Run reports: the serializable summary and its renderings.

pub mod console;
pub mod records;
pub mod samples;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::Distribution;

/// Identifier of the JSON summary format.
pub const RUN_SCHEMA: &str = "throtl.run.v1";

/// How a run ended, or that it has not (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The stop condition was reached.
    Completed,
    /// Ctrl-C ended the run; the numbers cover what was measured.
    Interrupted,
    /// Still measuring: a partial report rewritten during the run (`--json`,
    /// the history row), covering what has finished so far.
    Running,
    /// The process died while running (killed, out of memory, power cut);
    /// rebuilt from the records it had persisted.
    Lost,
}

/// The summary of one bench run (`--json`). Field names are stable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Always [`RUN_SCHEMA`].
    pub schema: String,
    /// Sortable, readable id: `YYYYmmddTHHMMSSZ-xxxx`.
    pub run_id: String,
    /// How the run ended.
    pub status: RunStatus,
    /// Wall-clock start, RFC 3339 UTC.
    pub started_at: String,
    /// Wall time of the whole run, warmup included (s).
    pub duration_s: f64,
    /// Version of throtl that measured.
    pub tool_version: String,
    /// What was measured.
    pub target: TargetInfo,
    /// The load applied.
    pub load: LoadInfo,
    /// Request outcomes.
    pub requests: RequestCounts,
    /// Rates over the measured window.
    pub throughput: Throughput,
    /// Token totals.
    pub tokens: TokenTotals,
    /// Latency distributions in milliseconds.
    pub latency_ms: Latencies,
    /// Per-request output tokens/s.
    pub output_tokens_per_s_per_request: Distribution,
    /// Client self-checks.
    pub client: ClientChecks,
    /// Speeds the server itself reported (Ollama durations, llama.cpp
    /// `timings`); absent when the server reports none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<crate::stats::server::ServerReport>,
    /// Where and with what it ran.
    pub environment: Environment,
    /// Warnings that may affect how far to trust the numbers.
    pub warnings: Vec<String>,
    /// The full configuration of the run.
    pub config: serde_json::Value,
    /// The target's own `/metrics` scraped during the run (absent when it has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_metrics: Option<crate::scrape::recorder::ServerMetrics>,
    /// When requests were due and how they left (issue 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleReport>,
    /// What the requests asked (issue 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadReport>,
    /// SLO outcome and goodput, with `--slo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<crate::slo::SloReport>,
    /// One point per second of the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeseries: Vec<crate::stats::series::SeriesPoint>,
    /// Cost from `--gpu-cost-per-hour` or a price table (absent when not priced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::results::cost::Cost>,
}

impl RunReport {
    /// Failed measured requests / (ok + failed); 0 when none finished.
    pub fn error_rate(&self) -> f64 {
        let r = &self.requests;
        if r.total == 0 {
            0.0
        } else {
            r.failed as f64 / r.total as f64
        }
    }
}

/// The schedule of a run: offered vs. achieved rates and how every measured
/// arrival left (never dropped: on time, late, or held by the cap).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScheduleReport {
    /// `closed`, `users` (closed with think time) or `open`.
    pub mode: String,
    /// Open loop: the configured arrival process (`constant`, `poisson`, `gamma`).
    pub arrival: Option<String>,
    /// Open loop: the configured rate (requests/s).
    pub target_rate_per_s: Option<f64>,
    /// Gamma CV of the gaps, when gamma.
    pub burstiness_cv: Option<f64>,
    /// Open loop: the in-flight cap.
    pub max_concurrency: Option<u32>,
    /// Ramp-up length (s).
    pub ramp_up_s: f64,
    /// Users: mean think time (s).
    pub think_time_s: Option<f64>,
    /// Measured arrivals (requests due after warmup and ramp-up).
    pub arrivals: u64,
    /// Offered rate: (arrivals − 1) / span of their scheduled times.
    pub offered_rate_per_s: f64,
    /// Achieved send rate: (sent arrivals − 1) / span of their actual send times.
    pub sent_rate_per_s: f64,
    /// Achieved completion rate: finished (ok + failed) measured requests per second of the window.
    pub completed_rate_per_s: f64,
    /// Sent within `late_after_ms` of their scheduled time.
    pub on_time: u64,
    /// Sent later than that without a cap holding them (the client lagged).
    pub late: u64,
    /// Waited for a `--max-concurrency` slot.
    pub held_by_cap: u64,
    /// Due, but never sent: the run was interrupted (Ctrl-C) while they
    /// waited for a `--max-concurrency` slot or queued behind one that did.
    #[serde(default)]
    pub not_sent_interrupted: u64,
    /// Lateness threshold (ms).
    pub late_after_ms: f64,
    /// A replayed trace (`--trace`): what it offered and how faithfully it
    /// was replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceReplayReport>,
}

/// How a trace was replayed (`--trace`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceReplayReport {
    /// `FORMAT:PATH`.
    pub source: String,
    /// Requests in the file.
    pub lines_in_file: usize,
    /// Requests replayed (in the window, after filters): warmup included.
    pub requests: usize,
    /// First to last scheduled arrival of the replay (s).
    pub duration_s: f64,
    /// The trace's own mean rate after rescaling: (requests − 1) / duration.
    pub trace_rate_per_s: f64,
    /// `--trace-speed`, when given.
    pub speed: Option<f64>,
    /// `--trace-rate`, when given.
    pub rate: Option<f64>,
    /// `--trace-window` start and end in trace time (s), when given.
    pub window_s: Option<(f64, Option<f64>)>,
    /// `--trace-max-requests`, when given.
    pub max_requests: Option<usize>,
    /// `--trace-model`, when given.
    pub model: Option<String>,
    /// Replay fidelity: how late measured arrivals left after their trace
    /// time (ms; the same samples as `client.send_lag_ms`).
    pub lateness_ms: Distribution,
}

/// What the requests asked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkloadReport {
    /// Tokenizer that built and counted prompts (`null`: word prompts).
    pub tokenizer: Option<String>,
    /// `synthetic`, `jsonl:PATH` or `sharegpt:PATH`.
    pub source: String,
    /// Distinct pre-built requests; later requests reuse them in order.
    pub distinct_prompts: usize,
    /// Requests (successful) that had both a local and a server prompt count.
    pub input_tokens_compared: u64,
    /// Their prompt tokens counted locally.
    pub input_tokens_local: u64,
    /// Their prompt tokens as reported by the server.
    pub input_tokens_server: u64,
    /// (server − local) / local × 100, when compared.
    pub input_tokens_difference_pct: Option<f64>,
}

/// The target server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Base URL.
    pub url: String,
    /// `--api` protocol used.
    pub api: String,
    /// Model name sent.
    pub model: String,
}

/// The load applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadInfo {
    /// `closed` (closed loop).
    pub mode: String,
    /// Requested concurrency.
    pub concurrency: u32,
    /// Mean requests in flight over the measured window (Little's law).
    pub achieved_concurrency: f64,
    /// Highest number of requests in flight at once.
    pub peak_in_flight: u64,
    /// Warmup requests (excluded from statistics).
    pub warmup_requests: u64,
    /// `max_tokens` per request.
    pub max_tokens: u32,
    /// Prompt length requested.
    pub input_tokens: u32,
}

/// Request outcomes of the measured phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestCounts {
    /// ok + failed.
    pub total: u64,
    /// Completed without error.
    pub ok: u64,
    /// Failed (any class in `errors`).
    pub failed: u64,
    /// Cut off by the end of the run; not failures.
    pub cancelled: u64,
    /// Failure count by class.
    pub errors: BTreeMap<String, u64>,
    /// One sample message per failure class.
    pub error_samples: BTreeMap<String, String>,
    /// Warmup requests that failed, by class (not part of `errors`).
    #[serde(default)]
    pub warmup_errors: BTreeMap<String, u64>,
    /// Attempts and retries (`--retries`).
    #[serde(default)]
    pub retries: RetryReport,
}

/// How often measured requests were sent again (`--retries`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RetryReport {
    /// Attempts over all sent measured requests.
    pub attempts: u64,
    /// attempts / sent measured requests (1 without retries).
    pub attempts_per_request: f64,
    /// Measured requests sent more than once.
    pub retried: u64,
    /// retried / sent measured requests.
    pub retry_rate: f64,
    /// Error classes of the attempts that were retried (final outcomes are in `errors`).
    pub retried_errors: BTreeMap<String, u64>,
}

/// Whether measured requests paid for opening a TCP connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectionReport {
    /// Measured requests whose transport tells new from reused connections.
    pub requests: u64,
    /// Of those, requests that opened a new connection.
    pub new_connections: u64,
    /// new_connections / requests.
    pub new_connection_share: f64,
    /// Connect time of the requests that opened one (ms).
    pub connect_ms: Distribution,
}

/// Rates over the measured window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throughput {
    /// Successful requests per second.
    pub requests_per_s: f64,
    /// Output tokens per second.
    pub output_tokens_per_s: f64,
    /// Input + output tokens per second.
    pub total_tokens_per_s: f64,
    /// Length of the measured window (s).
    pub window_s: f64,
}

/// Token totals of successful measured requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenTotals {
    /// Prompt tokens (server usage when reported, else the requested count).
    pub input_total: u64,
    /// Generated tokens.
    pub output_total: u64,
    /// `usage`, `chunks`, or `mixed`: where output counts came from.
    pub source: String,
}

/// Latency distributions (ms).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latencies {
    /// Time to first token.
    pub ttft: Distribution,
    /// Inter-token latency, one sample per gap.
    pub itl: Distribution,
    /// Time per output token, one sample per request.
    pub tpot: Distribution,
    /// End-to-end latency.
    pub e2e: Distribution,
}

/// Client-side self-checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientChecks {
    /// Lag between a request's scheduled and actual send (ms).
    pub send_lag_ms: Distribution,
    /// Stream messages parsed.
    pub messages_parsed: u64,
    /// Client process CPU time during the run (s), where the OS reports it.
    pub cpu_s: Option<f64>,
    /// New vs. reused connections of measured requests (absent when the
    /// transport cannot tell: `https://` targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<ConnectionReport>,
}

/// Where the run happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    /// Host name.
    pub host: String,
    /// Operating system and architecture.
    pub os: String,
    /// Logical CPUs.
    pub cpus: usize,
}
