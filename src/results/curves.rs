//! Sweep curves for the HTML report: throughput against latency, and
//! throughput and goodput against the offered load, with the knee marked.
//! Built from the steps' run summaries alone, so a sweep read back from the
//! history (`throtl report GROUP`) draws the same curves as `sweep --html`.

use super::html::{marked_chart, Marker, Series};
use super::RunData;
use crate::report::RunReport;
use crate::sweep::{find_knee, Knee};

/// One step of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    /// Concurrency or rate of the step.
    pub load: f64,
    /// Achieved successful requests/s.
    pub requests_per_s: f64,
    /// Achieved output tokens/s.
    pub output_tokens_per_s: f64,
    /// TTFT p50 and p99 (ms).
    pub ttft_ms: (f64, f64),
    /// e2e p50 and p99 (ms).
    pub e2e_ms: (f64, f64),
    /// Goodput (requests/s meeting every `--slo`), when SLOs were given.
    pub goodput: Option<f64>,
}

/// The steps of a sweep in increasing load, and its knee.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepCurves {
    /// `concurrency` or `rate (req/s)`.
    pub axis: &'static str,
    /// Steps by load.
    pub points: Vec<SweepPoint>,
    /// Saturation knee (as `throtl sweep` reports it).
    pub knee: Option<Knee>,
}

/// The load level of a step: the open-loop rate, else the concurrency.
fn load_of(r: &RunReport) -> (f64, bool) {
    match r.schedule.as_ref() {
        Some(s) if s.mode == "open" => (s.target_rate_per_s.unwrap_or(0.0), true),
        _ => (f64::from(r.load.concurrency), false),
    }
}

impl SweepCurves {
    /// The curves of the given steps.
    pub fn from_runs(runs: &[RunData]) -> Self {
        let mut rate_axis = false;
        let mut points: Vec<SweepPoint> = runs
            .iter()
            .map(|d| {
                let r = &d.report;
                let (load, open) = load_of(r);
                rate_axis |= open;
                SweepPoint {
                    load,
                    requests_per_s: r.throughput.requests_per_s,
                    output_tokens_per_s: r.throughput.output_tokens_per_s,
                    ttft_ms: (r.latency_ms.ttft.p50, r.latency_ms.ttft.p99),
                    e2e_ms: (r.latency_ms.e2e.p50, r.latency_ms.e2e.p99),
                    goodput: r.slo.as_ref().map(|s| s.goodput_requests_per_s),
                }
            })
            .collect();
        points.sort_by(|a, b| a.load.total_cmp(&b.load));
        let knee = find_knee(
            &points
                .iter()
                .map(|p| (p.load, p.requests_per_s))
                .collect::<Vec<_>>(),
        );
        Self {
            axis: if rate_axis {
                "rate (req/s)"
            } else {
                "concurrency"
            },
            points,
            knee,
        }
    }

    fn series(&self, label: &str, f: impl Fn(&SweepPoint) -> Option<(f64, f64)>) -> Series {
        Series {
            label: label.to_owned(),
            points: self.points.iter().filter_map(f).collect(),
        }
    }

    fn knee_point(&self) -> Option<&SweepPoint> {
        self.points.get(self.knee.as_ref()?.step)
    }

    /// The HTML section: three SVG charts and a table of the steps.
    pub fn section(&self) -> String {
        let knee_tp = self.knee_point().map(|p| Marker {
            x: p.requests_per_s,
            label: format!("knee ({} {})", self.axis, p.load),
        });
        let knee_load = self.knee_point().map(|p| Marker {
            x: p.load,
            label: "knee".into(),
        });
        let ttft = [
            self.series("TTFT p50", |p| Some((p.requests_per_s, p.ttft_ms.0))),
            self.series("TTFT p99", |p| Some((p.requests_per_s, p.ttft_ms.1))),
        ];
        let e2e = [
            self.series("e2e p50", |p| Some((p.requests_per_s, p.e2e_ms.0))),
            self.series("e2e p99", |p| Some((p.requests_per_s, p.e2e_ms.1))),
        ];
        let mut load = vec![self.series("achieved req/s", |p| Some((p.load, p.requests_per_s)))];
        if self.points.iter().any(|p| p.goodput.is_some()) {
            load.push(self.series("goodput req/s (SLO met)", |p| {
                p.goodput.map(|g| (p.load, g))
            }));
        }
        let tokens = [self.series("output tok/s", |p| Some((p.load, p.output_tokens_per_s)))];
        format!(
            "<h2>Sweep curves</h2><p class=\"note\">{} steps; knee: {}. Points are steps; latency from the scheduled send.</p><div class=\"grid\">{}{}{}{}</div>{}",
            self.points.len(),
            self.knee_text(),
            marked_chart("TTFT vs throughput", "achieved req/s", "ms", &ttft, knee_tp.as_ref()),
            marked_chart("e2e latency vs throughput", "achieved req/s", "ms", &e2e, knee_tp.as_ref()),
            marked_chart("Throughput and goodput vs load", self.axis, "req/s", &load, knee_load.as_ref()),
            marked_chart("Output tokens/s vs load", self.axis, "tok/s", &tokens, knee_load.as_ref()),
            self.table()
        )
    }

    fn knee_text(&self) -> String {
        match (&self.knee, self.knee_point()) {
            (Some(k), Some(p)) if k.saturated => format!(
                "{} {} at {:.2} req/s (peak {:.2} req/s)",
                self.axis, p.load, k.requests_per_s, k.peak_requests_per_s
            ),
            (Some(_), Some(_)) => "not reached: throughput still rising at the largest load".into(),
            _ => "needs at least two steps".into(),
        }
    }

    fn table(&self) -> String {
        let mut s = format!(
            "<table><tr><th>{}</th><th>req/s</th><th>output tok/s</th><th>TTFT p50</th><th>TTFT p99</th><th>e2e p50</th><th>e2e p99</th><th>goodput req/s</th></tr>",
            super::html::esc(self.axis)
        );
        for (i, p) in self.points.iter().enumerate() {
            let knee = if self.knee.as_ref().is_some_and(|k| k.step == i) {
                " ◀ knee"
            } else {
                ""
            };
            s.push_str(&format!(
                "<tr><td>{}{knee}</td><td>{:.2}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>",
                p.load,
                p.requests_per_s,
                p.output_tokens_per_s,
                p.ttft_ms.0,
                p.ttft_ms.1,
                p.e2e_ms.0,
                p.e2e_ms.1,
                p.goodput.map_or_else(|| "-".into(), |g| format!("{g:.2}"))
            ));
        }
        s.push_str("</table>");
        s
    }
}
