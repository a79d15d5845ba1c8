//! Turns final statistics into the [`RunReport`].

use crate::config::BenchConfig;
use crate::engine::arrival::ArrivalProcess;
use crate::engine::dataset::DatasetSpec;
use crate::engine::EngineOutcome;
use crate::engine::LoadShape;
use crate::report::{
    ClientChecks, ConnectionReport, Environment, Latencies, LoadInfo, RequestCounts, RetryReport,
    RunReport, RunStatus, TargetInfo, Throughput, TokenTotals, RUN_SCHEMA,
};
use crate::report::{ScheduleReport, TraceReplayReport, WorkloadReport};
use crate::slo::SloReport;
use crate::stats::{ArrivalCounts, AttemptCounts, Stats, LATE_AFTER};

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
            warmup_errors: s.warmup_errors.clone(),
            retries: retry_report(&s.attempts),
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
            connections: connection_report(&s.attempts),
        },
        server: s.server.report(),
        environment: environment(),
        warnings: Vec::new(),
        config: serde_json::to_value(cfg).unwrap_or_default(),
        server_metrics: None,
        schedule: None,
        workload: None,
        slo: None,
        timeseries: Vec::new(),
        cost: None,
    };
    report.warnings = warnings(&report);
    report
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}

fn retry_report(a: &AttemptCounts) -> RetryReport {
    RetryReport {
        attempts: a.attempts,
        attempts_per_request: if a.requests == 0 {
            1.0
        } else {
            ratio(a.attempts, a.requests)
        },
        retried: a.retried,
        retry_rate: ratio(a.retried, a.requests),
        retried_errors: a.retried_errors.clone(),
    }
}

fn connection_report(a: &AttemptCounts) -> Option<ConnectionReport> {
    (a.connection_known > 0).then(|| ConnectionReport {
        requests: a.connection_known,
        new_connections: a.new_connections,
        new_connection_share: ratio(a.new_connections, a.connection_known),
        connect_ms: a.connect_time.distribution(1000.0),
    })
}

/// Adds the schedule, workload, SLO and time-series parts (issue 4) and
/// their warnings to a built report.
pub fn add_workload(report: &mut RunReport, cfg: &BenchConfig, s: &Stats, distinct_prompts: usize) {
    let schedule = schedule_report(cfg, s, report.throughput.window_s);
    report.load.mode = schedule.mode.clone();
    if schedule.mode != "closed" {
        // Users with think time or an open loop do not aim at `concurrency` in flight.
        report
            .warnings
            .retain(|w| !w.starts_with("achieved concurrency"));
    }
    if schedule.held_by_cap > 0 {
        // Send lag then mostly measures the wait for a slot, explained by its own warning.
        report
            .warnings
            .retain(|w| !w.starts_with("requests left up to"));
    }
    report.schedule = Some(schedule);
    report.workload = Some(workload_report(cfg, s, distinct_prompts));
    report.slo = slo_report(cfg, s, report.throughput.window_s);
    report.timeseries = s.series.points();
    let extra = workload_warnings(report);
    report.warnings.extend(extra);
}

fn schedule_report(cfg: &BenchConfig, s: &Stats, window: f64) -> ScheduleReport {
    let a = &s.arrivals;
    let finished = s.ok + s.failed();
    let mut r = ScheduleReport {
        mode: "closed".into(),
        arrival: None,
        target_rate_per_s: None,
        burstiness_cv: None,
        max_concurrency: None,
        ramp_up_s: cfg.workload.ramp_up.as_secs_f64(),
        think_time_s: None,
        arrivals: a.total(),
        offered_rate_per_s: ArrivalCounts::rate(a.total(), a.scheduled_span),
        sent_rate_per_s: ArrivalCounts::rate(a.sent(), a.sent_span),
        completed_rate_per_s: if window > 0.0 {
            finished as f64 / window
        } else {
            0.0
        },
        on_time: a.on_time,
        late: a.late,
        held_by_cap: a.held,
        not_sent_interrupted: a.not_sent,
        late_after_ms: LATE_AFTER.as_secs_f64() * 1000.0,
        trace: cfg
            .workload
            .trace
            .as_ref()
            .map(|t| trace_report(t, s.send_lag.distribution(1000.0))),
    };
    match cfg.workload.shape {
        LoadShape::Closed { think: Some(t) } => {
            r.mode = "users".into();
            r.think_time_s = Some(t.mean.as_secs_f64());
        }
        LoadShape::Closed { think: None } => {}
        LoadShape::Open {
            arrivals,
            max_concurrency,
        } => {
            r.mode = "open".into();
            r.target_rate_per_s = Some(arrivals.rate);
            r.max_concurrency = max_concurrency;
            let (name, cv) = match arrivals.process {
                ArrivalProcess::Constant => ("constant", None),
                ArrivalProcess::Poisson => ("poisson", None),
                ArrivalProcess::Gamma { cv } => ("gamma", Some(cv)),
                ArrivalProcess::Trace => ("trace", None),
            };
            r.arrival = Some(name.into());
            r.burstiness_cv = cv;
        }
    }
    r
}

fn trace_report(
    t: &crate::trace::TracePlan,
    lateness_ms: crate::stats::Distribution,
) -> TraceReplayReport {
    let o = &t.options;
    TraceReplayReport {
        source: t.spec.label(),
        lines_in_file: t.lines_in_file,
        requests: t.requests.len(),
        duration_s: t.span().as_secs_f64(),
        trace_rate_per_s: t.offered_rate(),
        speed: o.speed,
        rate: o.rate,
        window_s: o
            .window
            .map(|(a, b)| (a.as_secs_f64(), b.map(|b| b.as_secs_f64()))),
        max_requests: o.max_requests,
        model: o.model.clone(),
        lateness_ms,
    }
}

fn workload_report(cfg: &BenchConfig, s: &Stats, distinct_prompts: usize) -> WorkloadReport {
    let c = &s.input_check;
    WorkloadReport {
        tokenizer: cfg.workload.tokenizer.as_ref().map(|t| t.name()),
        source: match &cfg.workload.dataset {
            None if cfg.workload.trace.is_some() => cfg
                .workload
                .trace
                .as_ref()
                .map_or_else(String::new, |t| format!("trace {}", t.spec.label())),
            None => "synthetic".into(),
            Some(DatasetSpec::Jsonl(p)) => format!("jsonl:{}", p.display()),
            Some(DatasetSpec::Sharegpt(p)) => format!("sharegpt:{}", p.display()),
        },
        distinct_prompts,
        input_tokens_compared: c.compared,
        input_tokens_local: c.local,
        input_tokens_server: c.server,
        input_tokens_difference_pct: c.relative_difference().map(|d| d * 100.0),
    }
}

fn slo_report(cfg: &BenchConfig, s: &Stats, window: f64) -> Option<SloReport> {
    let w = &cfg.workload;
    (!w.slos.is_empty()).then(|| crate::slo::judge(&w.slos, w.slo_percentile, s, window))
}

/// Warnings about the schedule and workload, each naming what to change.
fn workload_warnings(r: &RunReport) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(s) = &r.schedule {
        schedule_warnings(s, &mut w);
    }
    if let Some(wl) = &r.workload {
        if let Some(d) = wl.input_tokens_difference_pct.filter(|d| d.abs() > 5.0) {
            w.push(format!(
                "the server counted {d:+.1}% prompt tokens vs. the local tokenizer ({} vs {}): pass the model's own tokenizer.json with --tokenizer (chat templates also add tokens; --api openai-completions avoids them)",
                wl.input_tokens_server, wl.input_tokens_local
            ));
        }
        let used = r.requests.total + r.requests.cancelled + r.load.warmup_requests;
        if used > wl.distinct_prompts as u64 {
            w.push(format!(
                "{used} requests reused {} distinct prompts: repeated prompts can hit the server's prefix cache. Use --requests instead of --duration, or a larger dataset",
                wl.distinct_prompts
            ));
        }
    }
    w
}

fn schedule_warnings(s: &ScheduleReport, w: &mut Vec<String>) {
    if s.mode != "open" || s.arrivals == 0 {
        return;
    }
    let n = s.arrivals as f64;
    if s.late as f64 / n > 0.01 {
        w.push(format!(
            "{} of {} arrivals ({:.1}%) left more than {} ms late: the client could not keep the schedule, so latencies include its lag. Lower --rate, raise --threads, or run the client on a bigger machine",
            s.late, s.arrivals, 100.0 * s.late as f64 / n, s.late_after_ms
        ));
    }
    if s.held_by_cap > 0 {
        w.push(format!(
            "{} of {} arrivals waited for a --max-concurrency slot: the server is slower than the offered rate, and their wait is included in their latency. Raise --max-concurrency or lower --rate",
            s.held_by_cap, s.arrivals
        ));
    }
    if s.offered_rate_per_s > 0.0 && s.completed_rate_per_s < 0.9 * s.offered_rate_per_s {
        w.push(format!(
            "achieved {:.2} req/s of the {:.2} req/s offered: the server (or the cap) could not keep up with the offered load",
            s.completed_rate_per_s, s.offered_rate_per_s
        ));
    }
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
    let warm_failed: u64 = r.requests.warmup_errors.values().sum();
    if warm_failed > 0 {
        w.push(format!(
            "{warm_failed} warmup request(s) failed ({}); they are not in the error counts above. Use --warmup 0 to count every request",
            class_list(&r.requests.warmup_errors)
        ));
    }
    if let Some(c) = r
        .client
        .connections
        .as_ref()
        .filter(|c| c.new_connection_share > 0.01)
    {
        w.push(format!(
            "{:.1}% of measured requests opened a new TCP connection (connect p50 {:.2} ms): their latencies include the handshake. The server may be closing keep-alive connections; --cold-connections measures this on purpose",
            c.new_connection_share * 100.0,
            c.connect_ms.p50
        ));
    }
    if r.requests.retries.retried > 0 {
        w.push(format!(
            "{} request(s) were retried ({:.1}%; retried failures: {}); their latencies count from the first attempt's due time",
            r.requests.retries.retried,
            r.requests.retries.retry_rate * 100.0,
            class_list(&r.requests.retries.retried_errors)
        ));
    }
    if r.tokens.source != "usage" && r.requests.ok > 0 {
        w.push("the server did not report usage for every request: output tokens were counted as content chunks, which can differ from tokens".into());
    }
    w
}

/// `http_429 ×3, connect ×1`.
fn class_list(m: &std::collections::BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
    parts.join(", ")
}

/// `YYYYmmddTHHMMSSZ-xxxx`: sorts by start time, unique enough per host.
/// A new run id for a run started at `t`: `YYYYmmddTHHMMSSZ-xxxx` (random
/// suffix), sortable by start.
pub fn run_id(t: time::OffsetDateTime) -> String {
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
