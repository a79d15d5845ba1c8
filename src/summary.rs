//! Turns final statistics into the [`RunReport`].

use crate::config::BenchConfig;
use crate::engine::EngineOutcome;
use crate::report::{
    ClientChecks, Environment, Latencies, LoadInfo, RequestCounts, RunReport, RunStatus,
    TargetInfo, Throughput, TokenTotals, RUN_SCHEMA,
};
use crate::stats::Stats;

/// Builds the report of a finished (or interrupted) run.
pub fn build(
    cfg: &BenchConfig,
    s: &Stats,
    outcome: &EngineOutcome,
    started: time::OffsetDateTime,
    cpu_s: Option<f64>,
) -> RunReport {
    let window = s.window().as_secs_f64();
    let per_s = |n: u64| if window > 0.0 { n as f64 / window } else { 0.0 };
    let mut report = RunReport {
        schema: RUN_SCHEMA.into(),
        run_id: run_id(started),
        status: if outcome.interrupted {
            RunStatus::Interrupted
        } else {
            RunStatus::Completed
        },
        started_at: rfc3339(started),
        duration_s: (outcome.ended - outcome.started).as_secs_f64(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        target: TargetInfo {
            url: cfg.url.clone(),
            api: cfg.api.to_string(),
            model: cfg.model.clone(),
        },
        load: LoadInfo {
            mode: "closed".into(),
            concurrency: cfg.concurrency,
            achieved_concurrency: if window > 0.0 {
                s.busy.as_secs_f64() / window
            } else {
                0.0
            },
            peak_in_flight: outcome.peak_in_flight,
            warmup_requests: s.warmup,
            max_tokens: cfg.output_tokens,
            input_tokens: cfg.input_tokens,
        },
        requests: RequestCounts {
            total: s.ok + s.failed(),
            ok: s.ok,
            failed: s.failed(),
            cancelled: s.cancelled,
            errors: s.errors.clone(),
            error_samples: s.error_samples.clone(),
        },
        throughput: Throughput {
            requests_per_s: per_s(s.ok),
            output_tokens_per_s: per_s(s.output_tokens),
            total_tokens_per_s: per_s(s.output_tokens + s.input_tokens),
            window_s: window,
        },
        tokens: TokenTotals {
            input_total: s.input_tokens,
            output_total: s.output_tokens,
            source: token_source(s).into(),
        },
        latency_ms: Latencies {
            ttft: s.ttft.distribution(1000.0),
            itl: s.itl.distribution(1000.0),
            tpot: s.tpot.distribution(1000.0),
            e2e: s.e2e.distribution(1000.0),
        },
        output_tokens_per_s_per_request: s.output_rate_milli.distribution(1000.0),
        client: ClientChecks {
            send_lag_ms: s.send_lag.distribution(1000.0),
            messages_parsed: s.messages,
            cpu_s,
        },
        environment: environment(),
        warnings: Vec::new(),
        config: serde_json::to_value(cfg).unwrap_or_default(),
        server_metrics: None,
        cost: None,
    };
    report.warnings = warnings(&report);
    report
}

fn token_source(s: &Stats) -> &'static str {
    match (s.usage_counted, s.chunk_counted) {
        (_, 0) => "usage",
        (0, _) => "chunks",
        _ => "mixed",
    }
}

/// Advice about numbers that deserve less trust, each naming what to change.
fn warnings(r: &RunReport) -> Vec<String> {
    let mut w = Vec::new();
    let total = r.requests.total.max(1) as f64;
    if r.requests.failed as f64 / total > 0.05 {
        w.push(format!(
            "{:.1}% of requests failed; latency statistics cover successful requests only. See the error classes above",
            100.0 * r.requests.failed as f64 / total
        ));
    }
    if r.requests.ok < 30 {
        w.push(format!(
            "only {} successful requests: percentiles are unreliable. Raise --requests or --duration",
            r.requests.ok
        ));
    }
    if r.requests.ok > 0 && r.load.achieved_concurrency < 0.9 * f64::from(r.load.concurrency) {
        w.push(format!(
            "achieved concurrency {:.1} is below the requested {}: the run was too short for every worker to stay busy, or requests failed fast. Raise --requests",
            r.load.achieved_concurrency, r.load.concurrency
        ));
    }
    if r.client.send_lag_ms.p99 > 5.0 {
        w.push(format!(
            "requests left up to {:.1} ms (p99) after they were due: the client machine may be saturated; results may understate the server's speed",
            r.client.send_lag_ms.p99
        ));
    }
    if r.tokens.source != "usage" && r.requests.ok > 0 {
        w.push("the server did not report usage for every request: output tokens were counted as content chunks, which can differ from tokens".into());
    }
    w
}

/// `YYYYmmddTHHMMSSZ-xxxx`: sorts by start time, unique enough per host.
fn run_id(t: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let stamp = t.format(&fmt).unwrap_or_else(|_| "run".into());
    let suffix: u16 = rand::random();
    format!("{stamp}-{suffix:04x}")
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn environment() -> Environment {
    Environment {
        host: crate::sys::hostname(),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}
