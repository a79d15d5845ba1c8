//! The self-contained HTML report: inline CSS and SVG charts generated here,
//! no scripts, no external resources, so it works offline and in any viewer.

use std::fmt::Write;

use super::compare::{compare, MetricKey};
use super::{label, per_second, RunData, SampleMetric};
use crate::scrape::derive::Derived;

const COLORS: &[&str] = &[
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
];
const W: f64 = 520.0;
const H: f64 = 250.0;
const PAD_L: f64 = 56.0;
const PAD_B: f64 = 40.0;
const PAD_T: f64 = 28.0;
const PAD_R: f64 = 12.0;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line of a chart.
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
}

fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&m| m >= v)
        .unwrap_or(10.0 * mag)
}

/// A tick label with enough decimals to tell ticks `step` apart.
fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = if step > 0.0 && step.is_finite() {
        (1.0 - step.log10().floor()).clamp(0.0, 4.0) as usize
    } else {
        0
    };
    format!("{v:.decimals$}")
}

/// An SVG line chart with axes, ticks and a legend.
pub fn line_chart(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> String {
    chart(title, xlabel, ylabel, series, None, false)
}

/// A vertical marker line at `x` with a label (e.g. the sweep's knee).
pub struct Marker {
    /// Position on the x axis.
    pub x: f64,
    /// Text next to the line.
    pub label: String,
}

/// [`line_chart`] with a dot on every point and an optional vertical marker.
pub fn marked_chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    marker: Option<&Marker>,
) -> String {
    chart(title, xlabel, ylabel, series, marker, true)
}

fn chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    marker: Option<&Marker>,
    dots: bool,
) -> String {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in pts.filter(|p| p.0.is_finite() && p.1.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = nice_max(y1);
    let (pw, ph) = (W - PAD_L - PAD_R, H - PAD_T - PAD_B);
    let sx = |x: f64| PAD_L + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| PAD_T + ph - y / y1 * ph;
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><text x="{PAD_L}" y="16" class="title">{t}</text>"#,
        t = esc(title)
    );
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let (gy, gx) = (sy(f * y1), sx(x0 + f * (x1 - x0)));
        let _ = write!(
            s,
            r#"<line x1="{PAD_L}" x2="{:.1}" y1="{gy:.1}" y2="{gy:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text><text x="{gx:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"#,
            W - PAD_R,
            PAD_L - 4.0,
            gy + 4.0,
            fmt_tick(f * y1, y1 / 4.0),
            H - PAD_B + 14.0,
            fmt_tick(x0 + f * (x1 - x0), (x1 - x0) / 4.0),
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" class="axis" text-anchor="middle">{}</text><text transform="translate(12 {:.1}) rotate(-90)" class="axis" text-anchor="middle">{}</text>"#,
        PAD_L + pw / 2.0,
        H - 6.0,
        esc(xlabel),
        PAD_T + ph / 2.0,
        esc(ylabel)
    );
    for (i, se) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let path: Vec<String> = se
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.6" points="{}"/>"#,
            path.join(" ")
        );
        if dots {
            for p in &path {
                if let Some((x, y)) = p.split_once(',') {
                    let _ = write!(s, r#"<circle cx="{x}" cy="{y}" r="2.5" fill="{c}"/>"#);
                }
            }
        }
        if series.len() > 1 {
            let ly = PAD_T + 12.0 * i as f64;
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="10" height="3" fill="{c}"/><text x="{:.1}" y="{:.1}" class="legend">{}</text>"#,
                W - PAD_R - 150.0,
                ly - 3.0,
                W - PAD_R - 136.0,
                ly + 1.0,
                esc(&se.label)
            );
        }
    }
    if let Some(m) = marker.filter(|m| m.x.is_finite()) {
        let x = sx(m.x);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{PAD_T}" y2="{:.1}" class="knee" stroke="#dc2626" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" class="legend" fill="#dc2626">{}</text>"##,
            PAD_T + ph,
            x + 4.0,
            PAD_T + 10.0,
            esc(&m.label)
        );
    }
    s.push_str("</svg>");
    s
}

/// Histogram (as a step line of counts per bin, 40 bins on a shared range) of each run.
fn histogram(values: &[Vec<f64>], labels: &[String]) -> Vec<Series> {
    let hi = values
        .iter()
        .flat_map(|v| v.iter().copied())
        .fold(0.0f64, f64::max);
    let lo = values
        .iter()
        .flat_map(|v| v.iter().copied())
        .fold(hi, f64::min);
    let bins = 40;
    let width = ((hi - lo) / bins as f64).max(1e-9);
    values
        .iter()
        .zip(labels)
        .map(|(v, l)| {
            let mut counts = vec![0u64; bins];
            for &x in v {
                counts[(((x - lo) / width) as usize).min(bins - 1)] += 1;
            }
            let mut points = Vec::with_capacity(2 * bins);
            for (i, &c) in counts.iter().enumerate() {
                let x = lo + i as f64 * width;
                points.push((x, c as f64));
                points.push((x + width, c as f64));
            }
            Series {
                label: l.clone(),
                points,
            }
        })
        .collect()
}

fn cdf(values: &[Vec<f64>], labels: &[String]) -> Vec<Series> {
    values
        .iter()
        .zip(labels)
        .map(|(v, l)| {
            let mut v = v.clone();
            v.sort_by(f64::total_cmp);
            let n = v.len() as f64;
            let step = (v.len() / 400).max(1);
            let mut points: Vec<(f64, f64)> = v
                .iter()
                .enumerate()
                .step_by(step)
                .map(|(i, &x)| (x, (i + 1) as f64 / n))
                .collect();
            if let Some(&last) = v.last() {
                points.push((last, 1.0));
            }
            Series {
                label: l.clone(),
                points,
            }
        })
        .collect()
}

fn summary_table(runs: &[RunData]) -> String {
    let mut s = String::from("<table><tr><th>metric</th>");
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(s, "<th>#{} {}</th>", i + 1, esc(&label(&r.report)));
    }
    s.push_str("</tr>");
    type Cell = Box<dyn Fn(&RunData) -> String>;
    let rows: Vec<(&str, Cell)> = vec![
        (
            "status",
            Box::new(|r| format!("{:?}", r.report.status).to_lowercase()),
        ),
        ("model", Box::new(|r| esc(&r.report.target.model))),
        (
            "concurrency",
            Box::new(|r| r.report.load.concurrency.to_string()),
        ),
        (
            "requests ok / failed",
            Box::new(|r| format!("{} / {}", r.report.requests.ok, r.report.requests.failed)),
        ),
        (
            "output tok/s",
            Box::new(|r| format!("{:.1}", r.report.throughput.output_tokens_per_s)),
        ),
        (
            "requests/s",
            Box::new(|r| format!("{:.2}", r.report.throughput.requests_per_s)),
        ),
        (
            "TTFT p50 / p99 (ms)",
            Box::new(|r| {
                format!(
                    "{:.1} / {:.1}",
                    r.report.latency_ms.ttft.p50, r.report.latency_ms.ttft.p99
                )
            }),
        ),
        (
            "ITL p50 / p99 (ms)",
            Box::new(|r| {
                format!(
                    "{:.2} / {:.2}",
                    r.report.latency_ms.itl.p50, r.report.latency_ms.itl.p99
                )
            }),
        ),
        (
            "TPOT p50 / p99 (ms)",
            Box::new(|r| {
                format!(
                    "{:.2} / {:.2}",
                    r.report.latency_ms.tpot.p50, r.report.latency_ms.tpot.p99
                )
            }),
        ),
        (
            "e2e p50 / p99 (ms)",
            Box::new(|r| {
                format!(
                    "{:.1} / {:.1}",
                    r.report.latency_ms.e2e.p50, r.report.latency_ms.e2e.p99
                )
            }),
        ),
        (
            "cost",
            Box::new(|r| {
                r.report.cost.as_ref().map_or("–".into(), |c| {
                    format!(
                        "${:.4} / 1M output tokens, ${:.6} / request ({})",
                        c.usd_per_1m_output_tokens, c.usd_per_request, c.basis
                    )
                })
            }),
        ),
    ];
    for (name, f) in rows {
        let _ = write!(s, "<tr><td>{name}</td>");
        for r in runs {
            let _ = write!(s, "<td>{}</td>", f(r));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

fn comparison_table(runs: &[RunData]) -> String {
    if runs.len() < 2 {
        return String::new();
    }
    let mut s = String::from("<h2>Comparison against #1</h2><table><tr><th>metric</th>");
    for i in 0..runs.len() {
        let _ = write!(s, "<th>#{}</th>", i + 1);
    }
    for i in 1..runs.len() {
        let _ = write!(s, "<th>#{} vs #1 (95% CI)</th><th>verdict</th>", i + 1);
    }
    s.push_str("</tr>");
    for row in compare(runs, &MetricKey::defaults()) {
        let _ = write!(s, "<tr><td>{} ({})</td>", row.key.name(), row.key.unit());
        for v in &row.values {
            let _ = write!(s, "<td>{v:.2}</td>");
        }
        for (i, d) in row.diffs.iter().enumerate() {
            let ci = d.ci.map_or(String::new(), |c| {
                format!(
                    " [{:+.1}%, {:+.1}%]",
                    c.rel_ci.0 * 100.0,
                    c.rel_ci.1 * 100.0
                )
            });
            let _ = write!(
                s,
                "<td>{:+.1}%{ci}</td><td>{}</td>",
                d.rel * 100.0,
                esc(&row.verdict(i))
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</table><p class=\"note\">Winner only when Mann–Whitney p &lt; 0.05 and the bootstrap CI of the difference excludes 0 (docs/results.md).</p>");
    s
}

fn server_charts(runs: &[RunData], labels: &[String]) -> String {
    type Field = fn(&Derived) -> Option<f64>;
    let fields: [(&str, Field); 4] = [
        ("Requests waiting (server)", |d| d.waiting),
        ("Requests running (server)", |d| d.running),
        ("KV-cache usage (server, %)", |d| {
            d.kv_cache_usage.map(|v| v * 100.0)
        }),
        ("Generation tok/s (server)", |d| d.generation_tokens_per_s),
    ];
    let mut s = String::new();
    for (title, f) in fields {
        let series: Vec<Series> = runs
            .iter()
            .zip(labels)
            .filter_map(|(r, l)| {
                let sm = r.report.server_metrics.as_ref()?;
                let points: Vec<(f64, f64)> = sm
                    .points
                    .iter()
                    .filter_map(|p| f(&p.metrics).map(|v| (p.t_s, v)))
                    .collect();
                (!points.is_empty()).then(|| Series {
                    label: l.clone(),
                    points,
                })
            })
            .collect();
        if !series.is_empty() {
            s.push_str(&line_chart(title, "time (s)", "", &series));
        }
    }
    if s.is_empty() {
        s
    } else {
        format!("<h2>Server metrics over time</h2><div class=\"grid\">{s}</div>")
    }
}

pub(crate) const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#111;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #e5e7eb;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f4f6}
.grid{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #e5e7eb;border-radius:6px;background:#fff}
.chart .title{font-size:13px;font-weight:600}.chart .tick{font-size:10px;fill:#555}.chart .axis{font-size:11px;fill:#333}
.chart .legend{font-size:10px;fill:#333}.chart .grid{stroke:#eee}
pre{background:#f8fafc;border:1px solid #e5e7eb;padding:8px;font-size:12px;overflow:auto}
.note,.warn{font-size:12px;color:#555}.warn{color:#b45309}";

/// Renders one or several runs (overlaid) as a self-contained HTML page.
pub fn render(runs: &[RunData]) -> String {
    render_with(runs, None)
}

/// Renders the steps of a sweep: the sweep curves (throughput vs latency,
/// goodput vs load, knee marked) first, then every step overlaid.
pub fn render_sweep(steps: &[RunData]) -> String {
    let curves = super::curves::SweepCurves::from_runs(steps);
    render_with(steps, Some(&curves))
}

/// A self-contained page of a trace's summary (`throtl trace stats
/// --html`): arrivals per second, prompt and answer length histograms, and
/// requests per session when the trace has sessions.
pub fn render_trace(
    plan: &crate::trace::TracePlan,
    stats: &crate::trace::stats::TraceStats,
) -> String {
    let title = format!("throtl trace {}", stats.source);
    let mut s = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1><p class=\"note\">Generated by throtl {}; percentiles are nearest-rank (docs/traces.md).</p><pre>{}</pre>",
        env!("CARGO_PKG_VERSION"),
        esc(&crate::trace::stats::render(stats)),
        t = esc(&title)
    );
    let per_s = Series {
        label: "arrivals".into(),
        points: stats
            .per_second
            .counts
            .iter()
            .enumerate()
            .map(|(i, &c)| (i as f64, c as f64))
            .collect(),
    };
    s.push_str(&line_chart(
        "Arrivals per second",
        "trace time (s)",
        "requests",
        &[per_s],
    ));
    let lengths = |f: fn(&crate::trace::TraceRequest) -> u32| -> Vec<f64> {
        plan.requests.iter().map(|r| f64::from(f(r))).collect()
    };
    let label = ["requests".to_owned()];
    for (name, v) in [
        ("Prompt lengths", lengths(|r| r.input_tokens)),
        ("Answer lengths", lengths(|r| r.output_tokens)),
    ] {
        s.push_str(&line_chart(
            name,
            "tokens",
            "requests",
            &histogram(&[v], &label),
        ));
    }
    if stats.sessions.is_some() {
        let mut per: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
        for c in plan
            .requests
            .iter()
            .filter_map(|r| r.conversation.as_deref())
        {
            *per.entry(c).or_insert(0.0) += 1.0;
        }
        let turns: Vec<f64> = per.into_values().collect();
        s.push_str(&line_chart(
            "Requests per session",
            "requests",
            "sessions",
            &histogram(&[turns], &label),
        ));
    }
    s.push_str("</body></html>\n");
    s
}

fn render_with(runs: &[RunData], sweep: Option<&super::curves::SweepCurves>) -> String {
    let labels: Vec<String> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| format!("#{} {}", i + 1, r.report.target.url))
        .collect();
    let title = match (runs, sweep) {
        (_, Some(c)) => format!("throtl sweep: {} steps by {}", runs.len(), c.axis),
        ([one], None) => format!("throtl run {}", one.report.run_id),
        _ => format!("throtl: {} runs compared", runs.len()),
    };
    let mut s = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1><p class=\"note\">Generated by throtl {}. Latencies in ms from the scheduled send; definitions in docs/metrics.md.</p>",
        env!("CARGO_PKG_VERSION"),
        t = esc(&title)
    );
    if let Some(c) = sweep {
        s.push_str(&c.section());
    }
    s.push_str("<h2>Summary</h2>");
    s.push_str(&summary_table(runs));
    for r in runs {
        for w in &r.report.warnings {
            let _ = write!(
                s,
                "<p class=\"warn\">{}: {}</p>",
                esc(&r.report.run_id),
                esc(w)
            );
        }
    }
    s.push_str(&comparison_table(runs));
    s.push_str(&distribution_charts(runs, &labels));
    s.push_str(&time_charts(runs, &labels));
    s.push_str(&server_charts(runs, &labels));
    s.push_str("<h2>Configuration</h2>");
    for r in runs {
        let cfg = serde_json::to_string_pretty(&r.report.config).unwrap_or_default();
        let _ = write!(
            s,
            "<h3>{}</h3><pre>{}</pre>",
            esc(&label(&r.report)),
            esc(&cfg)
        );
    }
    s.push_str("</body></html>\n");
    s
}

fn distribution_charts(runs: &[RunData], labels: &[String]) -> String {
    if runs.iter().all(|r| r.samples.is_empty()) {
        return "<p class=\"note\">No per-request samples in these runs: distribution and time charts need a stored run (`throtl report ID`).</p>".into();
    }
    let mut s = String::from("<h2>Distributions</h2><div class=\"grid\">");
    for (m, name) in [
        (SampleMetric::Ttft, "TTFT"),
        (SampleMetric::Tpot, "TPOT"),
        (SampleMetric::E2e, "End-to-end latency"),
    ] {
        let values: Vec<Vec<f64>> = runs.iter().map(|r| m.values(&r.samples)).collect();
        s.push_str(&line_chart(
            &format!("{name} histogram"),
            "ms",
            "requests",
            &histogram(&values, labels),
        ));
        s.push_str(&line_chart(
            &format!("{name} CDF"),
            "ms",
            "fraction",
            &cdf(&values, labels),
        ));
    }
    s.push_str("</div>");
    s
}

fn time_charts(runs: &[RunData], labels: &[String]) -> String {
    type Pick = fn(&super::SecondBucket) -> Option<f64>;
    let charts: [(&str, &str, Pick); 4] = [
        ("Output throughput over time", "tok/s", |b| {
            Some(b.output_tokens as f64)
        }),
        ("Mean TTFT over time", "ms", |b| {
            (b.ok > 0).then_some(b.ttft_mean_ms)
        }),
        ("Mean e2e latency over time", "ms", |b| {
            (b.ok > 0).then_some(b.e2e_mean_ms)
        }),
        ("Errors over time", "errors/s", |b| Some(b.errors as f64)),
    ];
    let buckets: Vec<_> = runs.iter().map(|r| per_second(&r.samples)).collect();
    if buckets.iter().all(Vec::is_empty) {
        return String::new();
    }
    let mut s = String::from("<h2>Over time (per second, by request end)</h2><div class=\"grid\">");
    for (title, unit, f) in charts {
        let series: Vec<Series> = buckets
            .iter()
            .zip(labels)
            .map(|(b, l)| Series {
                label: l.clone(),
                points: b.iter().filter_map(|x| f(x).map(|v| (x.t_s, v))).collect(),
            })
            .collect();
        s.push_str(&line_chart(title, "time (s)", unit, &series));
    }
    s.push_str("</div>");
    s
}
