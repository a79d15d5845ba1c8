//! Text renderings: Markdown (pull-request comments), CSV, and the console
//! table of `throtl compare`.

use std::fmt::Write;

use super::compare::{compare, MetricKey, MetricRow, LEVEL, RESAMPLES, SEED};
use super::stats::{bootstrap_ci, Statistic};
use super::{label, RunData, SampleMetric};

/// A percentile with its bootstrap CI from the samples, e.g. `412.3 (95% CI 401.0–420.9)`.
pub fn with_ci(run: &RunData, m: SampleMetric, q: u32) -> String {
    let mut v = m.values(&run.samples);
    let stat = Statistic::Quantile(q);
    if v.is_empty() {
        return "–".into();
    }
    let ci = bootstrap_ci(&v, stat, RESAMPLES / 2, LEVEL, SEED);
    let x = stat.of(&mut v);
    match ci {
        Some((lo, hi)) => format!("{x:.1} ({lo:.1}–{hi:.1})"),
        None => format!("{x:.1}"),
    }
}

/// Markdown summary: one table of key numbers, then the comparison.
pub fn markdown(runs: &[RunData]) -> String {
    let mut s = String::from("### throtl results\n\n| | ");
    s.push_str(
        &runs
            .iter()
            .enumerate()
            .map(|(i, r)| format!("#{} `{}`", i + 1, r.report.run_id))
            .collect::<Vec<_>>()
            .join(" | "),
    );
    s.push_str(" |\n|---|");
    s.push_str(&"---:|".repeat(runs.len()));
    s.push('\n');
    type Cell<'a> = &'a dyn Fn(&RunData) -> String;
    let rows: [(&str, Cell); 9] = [
        ("target", &|r| {
            format!("{} ({})", r.report.target.url, r.report.target.model)
        }),
        ("requests ok / failed", &|r| {
            format!("{} / {}", r.report.requests.ok, r.report.requests.failed)
        }),
        ("output tok/s", &|r| {
            format!("{:.1}", r.report.throughput.output_tokens_per_s)
        }),
        ("TTFT p50 ms (95% CI)", &|r| {
            with_ci(r, SampleMetric::Ttft, 500)
        }),
        ("TTFT p99 ms (95% CI)", &|r| {
            with_ci(r, SampleMetric::Ttft, 990)
        }),
        ("TPOT p50 ms (95% CI)", &|r| {
            with_ci(r, SampleMetric::Tpot, 500)
        }),
        ("e2e p99 ms (95% CI)", &|r| {
            with_ci(r, SampleMetric::E2e, 990)
        }),
        ("ITL p50 / p99 ms", &|r| {
            format!(
                "{:.2} / {:.2}",
                r.report.latency_ms.itl.p50, r.report.latency_ms.itl.p99
            )
        }),
        ("cost", &|r| {
            r.report.cost.as_ref().map_or("–".into(), |c| {
                format!(
                    "${:.4}/1M out tok, ${:.6}/req",
                    c.usd_per_1m_output_tokens, c.usd_per_request
                )
            })
        }),
    ];
    for (name, f) in rows {
        let _ = writeln!(
            s,
            "| {name} | {} |",
            runs.iter().map(f).collect::<Vec<_>>().join(" | ")
        );
    }
    if runs.len() > 1 {
        s.push('\n');
        s.push_str(&compare_table(
            &compare(runs, &MetricKey::defaults()),
            runs.len(),
            true,
        ));
    }
    s
}

/// The comparison as a Markdown (`md`) or plain text table.
pub fn compare_table(rows: &[MetricRow], n_runs: usize, md: bool) -> String {
    let mut head = vec!["metric".to_owned()];
    head.extend((1..=n_runs).map(|i| format!("#{i}")));
    for i in 2..=n_runs {
        head.push(format!("#{i} vs #1 [95% CI]"));
        head.push("p (MWU)".into());
        head.push("verdict".into());
    }
    let mut table = vec![head];
    for row in rows {
        let mut line = vec![format!("{} ({})", row.key.name(), row.key.unit())];
        line.extend(row.values.iter().map(|v| format!("{v:.2}")));
        for (i, d) in row.diffs.iter().enumerate() {
            let ci = d.ci.map_or(String::new(), |c| {
                format!(
                    " [{:+.1}%, {:+.1}%]",
                    c.rel_ci.0 * 100.0,
                    c.rel_ci.1 * 100.0
                )
            });
            line.push(format!("{:+.1}%{ci}", d.rel * 100.0));
            line.push(d.p_value.map_or("–".into(), |p| format!("{p:.3}")));
            line.push(row.verdict(i));
        }
        table.push(line);
    }
    if md {
        let mut s = String::new();
        for (i, l) in table.iter().enumerate() {
            let _ = writeln!(s, "| {} |", l.join(" | "));
            if i == 0 {
                let _ = writeln!(s, "|{}", "---|".repeat(l.len()));
            }
        }
        return s;
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| {
            table
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for l in &table {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(s, "{}", cells.join("  ").trim_end());
    }
    s
}

/// The console output of `throtl compare`.
pub fn compare_console(runs: &[RunData]) -> String {
    let mut s = String::new();
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            s,
            "#{} {}  ({} requests, {} samples)",
            i + 1,
            label(&r.report),
            r.report.requests.ok,
            r.samples.len()
        );
    }
    s.push('\n');
    s.push_str(&compare_table(
        &compare(runs, &MetricKey::defaults()),
        runs.len(),
        false,
    ));
    s.push_str("\nA winner is named only when Mann–Whitney p < 0.05 and the 95% bootstrap CI of the difference excludes 0.\n");
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// CSV: one row per run with the key numbers.
pub fn csv(runs: &[RunData]) -> String {
    let mut s = String::from("run_id,status,target,model,concurrency,requests_ok,requests_failed,output_tokens_per_s,requests_per_s,ttft_p50_ms,ttft_p90_ms,ttft_p99_ms,itl_p50_ms,itl_p99_ms,tpot_p50_ms,tpot_p99_ms,e2e_p50_ms,e2e_p99_ms,usd_per_1m_output_tokens,usd_per_request\n");
    for r in runs {
        let r = &r.report;
        let l = &r.latency_ms;
        let cost = |f: fn(&crate::results::cost::Cost) -> f64| {
            r.cost.as_ref().map_or(String::new(), |c| f(c).to_string())
        };
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.run_id),
            format!("{:?}", r.status).to_lowercase(),
            csv_field(&r.target.url),
            csv_field(&r.target.model),
            r.load.concurrency,
            r.requests.ok,
            r.requests.failed,
            r.throughput.output_tokens_per_s,
            r.throughput.requests_per_s,
            l.ttft.p50,
            l.ttft.p90,
            l.ttft.p99,
            l.itl.p50,
            l.itl.p99,
            l.tpot.p50,
            l.tpot.p99,
            l.e2e.p50,
            l.e2e.p99,
            cost(|c| c.usd_per_1m_output_tokens),
            cost(|c| c.usd_per_request),
        );
    }
    s
}

/// Samples as CSV (`runs export --format csv`).
pub fn samples_csv(run: &RunData) -> String {
    let mut s = String::from("seq,start_ms,end_ms,ttft_ms,tpot_ms,e2e_ms,output_tokens,error\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| x.to_string());
    for x in &run.samples {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{}",
            x.seq,
            x.start_ms,
            x.end_ms,
            opt(x.ttft_ms),
            opt(x.tpot_ms),
            (x.e2e_ms() * 1000.0).round() / 1000.0,
            x.output_tokens,
            x.error.as_deref().unwrap_or("")
        );
    }
    s
}
