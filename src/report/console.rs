//! The human summary printed at the end of a run.

use std::fmt::Write as _;

use super::{RunReport, RunStatus};
use crate::stats::Distribution;

/// Renders the end-of-run summary table.
pub fn render(r: &RunReport) -> String {
    let mut s = String::new();
    let status = match r.status {
        RunStatus::Completed => "completed",
        RunStatus::Interrupted => "INTERRUPTED (partial results)",
        RunStatus::Running => "RUNNING (partial results so far)",
        RunStatus::Lost => "LOST (the process died; rebuilt from the records it had stored)",
    };
    let _ = writeln!(s, "throtl run {} — {status}", r.run_id);
    let _ = writeln!(
        s,
        "  target      {} ({}, model '{}')",
        r.target.url, r.target.api, r.target.model
    );
    load_lines(&mut s, r);
    let _ = writeln!(
        s,
        "  requests    {} ok, {} failed, {} cancelled over {:.2} s",
        r.requests.ok, r.requests.failed, r.requests.cancelled, r.throughput.window_s
    );
    for (class, n) in &r.requests.errors {
        let sample = r
            .requests
            .error_samples
            .get(class)
            .map_or("", String::as_str);
        let _ = writeln!(s, "    {class:<12} {n:>6}  {sample}");
    }
    for (class, n) in &r.requests.warmup_errors {
        let _ = writeln!(s, "    {class:<12} {n:>6}  (warmup, not counted above)");
    }
    let retries = &r.requests.retries;
    if retries.retried > 0 {
        let _ = writeln!(
            s,
            "  retries     {} requests retried ({:.1}%), {:.2} attempts per request",
            retries.retried,
            retries.retry_rate * 100.0,
            retries.attempts_per_request
        );
    }
    let _ = writeln!(
        s,
        "  throughput  {:.2} req/s, {:.1} output tok/s, {:.1} total tok/s",
        r.throughput.requests_per_s,
        r.throughput.output_tokens_per_s,
        r.throughput.total_tokens_per_s
    );
    let _ = writeln!(
        s,
        "  tokens      {} in, {} out (output counted from {})",
        r.tokens.input_total,
        r.tokens.output_total,
        source_words(&r.tokens.source)
    );
    if let Some(sm) = &r.server_metrics {
        server_line(&mut s, sm);
    }
    server_speed_line(&mut s, r);
    slo_line(&mut s, r);
    let _ = writeln!(s);
    latency_table(&mut s, r);
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

/// The server's own counters over the run (from its /metrics), beside the client's.
fn server_line(s: &mut String, sm: &crate::scrape::recorder::ServerMetrics) {
    let n = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.0}"));
    let _ = writeln!(
        s,
        "  server      {} /metrics: {} requests ok, {} failed, {} prompt + {} generated tokens (warmup included; {} scrapes)",
        sm.engine,
        n(sm.totals.requests_ok),
        n(sm.totals.requests_failed),
        n(sm.totals.prompt_tokens),
        n(sm.totals.generation_tokens),
        sm.scrapes
    );
}

fn trace_line(s: &mut String, t: &crate::report::TraceReplayReport) {
    let _ = writeln!(
        s,
        "  trace       {}: {} of {} requests over {:.1} s ({:.2} req/s); lateness p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        t.source,
        t.requests,
        t.lines_in_file,
        t.duration_s,
        t.trace_rate_per_s,
        t.lateness_ms.p50,
        t.lateness_ms.p99,
        t.lateness_ms.max
    );
}

fn load_lines(s: &mut String, r: &RunReport) {
    let l = &r.load;
    match r.schedule.as_ref() {
        Some(sc) if sc.mode == "open" => {
            let cap = sc
                .max_concurrency
                .map_or(String::new(), |c| format!(", cap {c}"));
            let rate = match sc.trace {
                // A trace's rate is a measured mean, not a round setting.
                Some(_) => format!("a mean {:.2}", sc.target_rate_per_s.unwrap_or(0.0)),
                None => sc.target_rate_per_s.unwrap_or(0.0).to_string(),
            };
            let _ = writeln!(
                s,
                "  load        open loop, {} arrivals at {rate} req/s{cap} (peak {} in flight), {} warmup excluded",
                sc.arrival.as_deref().unwrap_or("?"),
                l.peak_in_flight,
                l.warmup_requests
            );
            let unsent = match sc.not_sent_interrupted {
                0 => String::new(),
                n => format!(", {n} not sent (interrupted)"),
            };
            let _ = writeln!(
                s,
                "  schedule    offered {:.2} req/s, sent {:.2}, completed {:.2}; {} on time, {} late (>{} ms), {} held by the cap{unsent}",
                sc.offered_rate_per_s, sc.sent_rate_per_s, sc.completed_rate_per_s, sc.on_time, sc.late, sc.late_after_ms, sc.held_by_cap
            );
            if let Some(t) = &sc.trace {
                trace_line(s, t);
            }
        }
        Some(sc) if sc.mode == "users" => {
            let _ = writeln!(
                s,
                "  load        {} users, think time {:.2} s (achieved {:.1} in flight, peak {}), {} warmup excluded",
                l.concurrency,
                sc.think_time_s.unwrap_or(0.0),
                l.achieved_concurrency,
                l.peak_in_flight,
                l.warmup_requests
            );
        }
        _ => {
            let _ = writeln!(
                s,
                "  load        closed loop, concurrency {} (achieved {:.1}, peak {}), {} warmup excluded",
                l.concurrency, l.achieved_concurrency, l.peak_in_flight, l.warmup_requests
            );
        }
    }
}

fn slo_line(s: &mut String, r: &RunReport) {
    let Some(slo) = &r.slo else { return };
    let parts: Vec<String> = slo
        .objectives
        .iter()
        .map(|o| {
            format!(
                "{:?} p{} {:.1} ms ≤ {:.0} ms {}",
                o.metric,
                slo.percentile,
                o.observed_ms,
                o.threshold_ms,
                if o.met { "ok" } else { "MISSED" }
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "  slo         {}; goodput {:.2} req/s ({:.1}% of requests good)",
        parts.join(", "),
        slo.goodput_requests_per_s,
        slo.attainment * 100.0
    );
}

fn source_words(source: &str) -> &'static str {
    match source {
        "usage" => "server usage",
        "chunks" => "content chunks",
        _ => "server usage where reported, else content chunks",
    }
}

fn latency_table(s: &mut String, r: &RunReport) {
    let _ = writeln!(
        s,
        "  {:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "ms", "mean", "min", "p50", "p90", "p95", "p99", "p99.9", "max"
    );
    let rows: [(&str, &Distribution); 4] = [
        ("TTFT", &r.latency_ms.ttft),
        ("ITL", &r.latency_ms.itl),
        ("TPOT", &r.latency_ms.tpot),
        ("E2E", &r.latency_ms.e2e),
    ];
    for (name, d) in rows {
        if d.count == 0 {
            let _ = writeln!(s, "  {name:<8} {:>9}", "—");
            continue;
        }
        let _ = writeln!(
            s,
            "  {name:<8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            d.mean, d.min, d.p50, d.p90, d.p95, d.p99, d.p999, d.max
        );
    }
}

/// Server-reported speeds beside the client-side per-request rate.
fn server_speed_line(s: &mut String, r: &RunReport) {
    let Some(sv) = &r.server else { return };
    let rate = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |x| format!("{x:.1}"));
    let _ = writeln!(
        s,
        "  server      prompt {} tok/s, decode {} tok/s (server-reported, {} requests); client-side {:.1} tok/s per request (p50)",
        rate(sv.prompt_tokens_per_s),
        rate(sv.decode_tokens_per_s),
        sv.requests,
        r.output_tokens_per_s_per_request.p50
    );
}
