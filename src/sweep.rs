//! `throtl sweep`: one bench per load level, then the saturation knee and the
//! highest load that still meets the SLOs.
//!
//! **Knee.** Throughput is the completed (ok) requests per second of each
//! step; the *base efficiency* is the first step's throughput per unit of
//! load. The knee is the smallest load beyond which no later step gains at
//! least [`KNEE_GAIN`] (half) of the base efficiency per unit of added load:
//! `(thr_j − thr_i) / (load_j − load_i) < 0.5 · thr_0 / load_0` for every
//! later step `j`. Past it, more load buys little throughput and mostly adds
//! queueing. Looking at *every* later step (not just the next) keeps one noisy
//! step from ending the search early. If the knee is the largest load swept,
//! the server did not saturate (`saturated: false`) and the real knee lies
//! beyond the sweep.

use std::path::PathBuf;

use crate::results::RunData;
use serde::{Deserialize, Serialize};

use crate::bench::{self, BenchError};
use crate::config::BenchConfig;
use crate::engine::arrival::{ArrivalConfig, ArrivalProcess};
use crate::engine::{Controls, LoadShape};
use crate::report::RunReport;

/// Identifier of the sweep JSON format.
pub const SWEEP_SCHEMA: &str = "throtl.sweep.v1";

/// Share of the base efficiency below which added load counts as wasted.
pub const KNEE_GAIN: f64 = 0.5;

/// Fractions of the probed maximum swept by `--rates auto`.
pub const AUTO_FRACTIONS: &[f64] = &[0.1, 0.25, 0.5, 0.7, 0.85, 1.0, 1.15];

/// What a sweep varies.
#[derive(Debug, Clone, PartialEq)]
pub enum SweepAxis {
    /// Closed-loop concurrency levels.
    Concurrency(Vec<u32>),
    /// Open-loop rates (requests/s).
    Rates(Vec<f64>),
    /// Probe the maximum throughput with a closed loop at the base
    /// concurrency, then sweep [`AUTO_FRACTIONS`] of it.
    RatesAuto,
}

/// A whole sweep, validated.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// Settings shared by every step (outputs of the base are ignored).
    pub base: BenchConfig,
    /// Levels.
    pub axis: SweepAxis,
    /// Where to write the sweep JSON (rewritten after every step).
    pub json_out: Option<PathBuf>,
}

/// One step: the load level and its full run summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepStep {
    /// Concurrency or rate of this step.
    pub load: f64,
    /// The run summary in the core schema.
    pub run: RunReport,
}

/// The saturation knee.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Knee {
    /// Index into `steps`.
    pub step: usize,
    /// Load at the knee.
    pub load: f64,
    /// Throughput at the knee (requests/s).
    pub requests_per_s: f64,
    /// Highest throughput of the sweep (requests/s).
    pub peak_requests_per_s: f64,
    /// False when the knee is the largest load swept (no saturation seen).
    pub saturated: bool,
    /// How the knee was chosen.
    pub method: String,
}

/// The SLO outcome across steps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SweepSlo {
    /// Percentile the objectives were judged at.
    pub percentile: f64,
    /// For each step, whether every objective was met.
    pub met_by_step: Vec<bool>,
    /// Highest load whose step met every objective.
    pub max_load_meeting_slo: Option<f64>,
    /// Goodput at that load (requests/s).
    pub goodput_at_max_load: Option<f64>,
    /// Highest goodput of any step (requests/s).
    pub best_goodput_requests_per_s: f64,
}

/// The `--json` output of a sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepReport {
    /// Always [`SWEEP_SCHEMA`].
    pub schema: String,
    /// `concurrency` or `rate`.
    pub axis: String,
    /// `--rates auto`: the closed-loop probe that found the maximum.
    pub probe: Option<RunReport>,
    /// Every step in order.
    pub steps: Vec<SweepStep>,
    /// The saturation knee (absent with fewer than two steps).
    pub knee: Option<Knee>,
    /// SLO result (with `--slo`).
    pub slo: Option<SweepSlo>,
    /// The run stopped early (Ctrl-C).
    pub interrupted: bool,
    /// History group of the steps' stored runs (`throtl report GROUP`,
    /// `runs list --group GROUP`).
    #[serde(default)]
    pub group: Option<String>,
}

/// Finds the knee of (load, throughput) points in increasing load; see the module docs.
pub fn find_knee(points: &[(f64, f64)]) -> Option<Knee> {
    if points.len() < 2 {
        return None;
    }
    let (l0, t0) = points[0];
    let base = if l0 > 0.0 { t0 / l0 } else { 0.0 };
    let gain = |i: usize, j: usize| {
        let dl = points[j].0 - points[i].0;
        if dl > 0.0 {
            (points[j].1 - points[i].1) / dl
        } else {
            0.0
        }
    };
    let last = points.len() - 1;
    let step = (0..=last)
        .find(|&i| (i + 1..=last).all(|j| gain(i, j) < KNEE_GAIN * base))
        .unwrap_or(last);
    let peak = points.iter().map(|p| p.1).fold(0.0, f64::max);
    Some(Knee {
        step,
        load: points[step].0,
        requests_per_s: points[step].1,
        peak_requests_per_s: peak,
        saturated: step < last,
        method: format!(
            "smallest load after which every further step gains < {:.0}% of the first step's throughput per unit of load",
            KNEE_GAIN * 100.0
        ),
    })
}

/// Summarises the SLO verdicts of the steps.
pub fn slo_summary(steps: &[SweepStep]) -> Option<SweepSlo> {
    let first = steps.first()?.run.slo.as_ref()?;
    let met_by_step: Vec<bool> = steps
        .iter()
        .map(|s| s.run.slo.as_ref().is_some_and(|r| r.met))
        .collect();
    let best = steps
        .iter()
        .filter_map(|s| s.run.slo.as_ref().map(|r| r.goodput_requests_per_s))
        .fold(0.0, f64::max);
    let top = steps
        .iter()
        .zip(&met_by_step)
        .filter(|(_, m)| **m)
        .map(|(s, _)| s)
        .max_by(|a, b| a.load.total_cmp(&b.load));
    Some(SweepSlo {
        percentile: first.percentile,
        max_load_meeting_slo: top.map(|s| s.load),
        goodput_at_max_load: top.and_then(|s| s.run.slo.as_ref().map(|r| r.goodput_requests_per_s)),
        met_by_step,
        best_goodput_requests_per_s: best,
    })
}

/// The config of one step.
fn step_config(base: &BenchConfig, axis_is_rate: bool, load: f64) -> BenchConfig {
    let mut cfg = base.clone();
    cfg.json_out = None;
    cfg.records_out = None;
    // The sweep writes its own report files; steps only store their runs.
    cfg.results.html_out = None;
    cfg.results.markdown_out = None;
    cfg.results.csv_out = None;
    if axis_is_rate {
        let (process, seed, max_concurrency) = match base.workload.shape {
            LoadShape::Open {
                arrivals,
                max_concurrency,
            } => (arrivals.process, arrivals.seed, max_concurrency),
            LoadShape::Closed { .. } => (ArrivalProcess::Poisson, base.seed, None),
        };
        let arrivals = ArrivalConfig {
            rate: load,
            process,
            seed,
            ramp_up: base.workload.ramp_up,
        };
        cfg.workload.shape = LoadShape::Open {
            arrivals,
            max_concurrency,
        };
    } else {
        cfg.concurrency = load as u32;
        if let LoadShape::Open { .. } = cfg.workload.shape {
            cfg.workload.shape = LoadShape::Closed { think: None };
        }
    }
    cfg
}

/// Runs the sweep, rewriting `json_out` after every step so nothing is lost.
/// `on_step` sees each finished step (for progress output).
pub async fn run(
    cfg: &SweepConfig,
    controls: Controls,
    mut on_step: impl FnMut(&SweepStep),
) -> Result<SweepReport, BenchError> {
    let (axis_is_rate, mut loads, mut probe) = match &cfg.axis {
        SweepAxis::Concurrency(c) => (
            false,
            c.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
            None,
        ),
        SweepAxis::Rates(r) => (true, r.clone(), None),
        SweepAxis::RatesAuto => (true, Vec::new(), Some(())),
    };
    let mut report = SweepReport {
        schema: SWEEP_SCHEMA.into(),
        axis: if axis_is_rate {
            "rate".into()
        } else {
            "concurrency".into()
        },
        probe: None,
        steps: Vec::new(),
        knee: None,
        slo: None,
        interrupted: false,
        group: cfg.base.results.db.as_ref().map(|_| {
            cfg.base
                .results
                .group
                .clone()
                .unwrap_or_else(|| format!("sweep-{}", crate::scrape::unix_ms()))
        }),
    };
    check_output(cfg)?;
    let mut base = cfg.base.clone();
    base.results.group.clone_from(&report.group);
    let mut step_runs: Vec<RunData> = Vec::new();
    if probe.take().is_some() {
        let p = bench::run(
            &step_config(&cfg.base, false, f64::from(cfg.base.concurrency)),
            controls.clone(),
        )
        .await?;
        let max = p.throughput.requests_per_s;
        if max <= 0.0 {
            return Err(BenchError::Internal("--rates auto: the probe completed no request, so there is no maximum to take fractions of".into()));
        }
        loads = AUTO_FRACTIONS.iter().map(|f| round_rate(f * max)).collect();
        report.probe = Some(p);
    }
    for load in loads {
        if controls.soft.is_cancelled() {
            report.interrupted = true;
            break;
        }
        let stored =
            bench::run_full(&step_config(&base, axis_is_rate, load), controls.clone()).await?;
        let run = stored.report.clone();
        step_runs.push(RunData::from(stored));
        report.interrupted |= run.status == crate::report::RunStatus::Interrupted;
        report.steps.push(SweepStep { load, run });
        if let Some(s) = report.steps.last() {
            on_step(s);
        }
        finish(&mut report);
        write(cfg, &report)?;
        write_reports(cfg, &step_runs)?;
    }
    Ok(report)
}

fn round_rate(r: f64) -> f64 {
    (r * 100.0).round() / 100.0
}

fn finish(report: &mut SweepReport) {
    let points: Vec<(f64, f64)> = report
        .steps
        .iter()
        .map(|s| (s.load, s.run.throughput.requests_per_s))
        .collect();
    report.knee = find_knee(&points);
    report.slo = slo_summary(&report.steps);
}

/// Creates every output file before the first step, so a bad path fails
/// before any load (not after the first step).
fn check_output(cfg: &SweepConfig) -> Result<(), BenchError> {
    let r = &cfg.base.results;
    for p in [&cfg.json_out, &r.html_out, &r.markdown_out, &r.csv_out]
        .into_iter()
        .flatten()
    {
        std::fs::File::create(p).map_err(|source| BenchError::Output {
            path: p.clone(),
            source,
        })?;
    }
    Ok(())
}

fn write(cfg: &SweepConfig, report: &SweepReport) -> Result<(), BenchError> {
    let Some(p) = &cfg.json_out else {
        return Ok(());
    };
    let out = |source| BenchError::Output {
        path: p.clone(),
        source,
    };
    let text = serde_json::to_string_pretty(report).map_err(|e| out(std::io::Error::other(e)))?;
    std::fs::write(p, text + "\n").map_err(out)
}

/// Rewrites `--html` (sweep curves and every step overlaid), `--markdown`
/// and `--csv` (every step) after each step.
fn write_reports(cfg: &SweepConfig, steps: &[RunData]) -> Result<(), BenchError> {
    use crate::results::{render, Format};
    let r = &cfg.base.results;
    for (path, format) in [
        (&r.html_out, Format::Html),
        (&r.markdown_out, Format::Markdown),
        (&r.csv_out, Format::Csv),
    ] {
        let Some(p) = path else { continue };
        let bytes = match format {
            Format::Html => crate::results::html::render_sweep(steps).into_bytes(),
            f => render(steps, f),
        };
        std::fs::write(p, bytes).map_err(|source| BenchError::Output {
            path: p.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The sweep as a table, one line per step, the knee marked.
pub fn render(r: &SweepReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>10} {:>9} {:>11} {:>10} {:>10} {:>10} {:>10} {:>7} {:>5}",
        r.axis,
        "req/s",
        "out tok/s",
        "TTFT p50",
        "TTFT p95",
        "TPOT p50",
        "E2E p95",
        "errors",
        "SLO"
    );
    for (i, st) in r.steps.iter().enumerate() {
        let run = &st.run;
        let slo = match (&run.slo, r.slo.as_ref()) {
            (Some(x), Some(_)) if x.met => "ok",
            (Some(_), Some(_)) => "miss",
            _ => "",
        };
        let knee = if r.knee.as_ref().is_some_and(|k| k.step == i) {
            "  ← knee"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "{:>10} {:>9.2} {:>11.1} {:>10.1} {:>10.1} {:>10.2} {:>10.1} {:>7} {:>5}{knee}",
            st.load,
            run.throughput.requests_per_s,
            run.throughput.output_tokens_per_s,
            run.latency_ms.ttft.p50,
            run.latency_ms.ttft.p95,
            run.latency_ms.tpot.p50,
            run.latency_ms.e2e.p95,
            run.requests.failed,
            slo
        );
    }
    if let Some(k) = &r.knee {
        let sat = if k.saturated {
            ""
        } else {
            " (throughput was still rising: the knee may lie beyond the sweep)"
        };
        let _ = writeln!(
            s,
            "knee: {} {} at {:.2} req/s (peak {:.2} req/s){sat}",
            r.axis, k.load, k.requests_per_s, k.peak_requests_per_s
        );
    }
    if let Some(slo) = &r.slo {
        match (slo.max_load_meeting_slo, slo.goodput_at_max_load) {
            (Some(l), Some(g)) => {
                let _ = writeln!(
                    s,
                    "SLO (p{}): met up to {} {l}, goodput {g:.2} req/s there",
                    slo.percentile, r.axis
                );
            }
            _ => {
                let _ = writeln!(s, "SLO (p{}): no step met every objective", slo.percentile);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knee_is_smallest_load_near_peak() {
        let k = find_knee(&[
            (1.0, 10.0),
            (2.0, 20.0),
            (4.0, 39.0),
            (8.0, 41.0),
            (16.0, 40.0),
        ])
        .unwrap();
        assert_eq!((k.step, k.load, k.saturated), (2, 4.0, true));
        let linear = find_knee(&[(1.0, 1.0), (2.0, 2.0), (4.0, 4.0), (4.6, 4.6)]).unwrap();
        assert_eq!((linear.load, linear.saturated), (4.6, false));
        // A noisy dip does not end the search: 8 → 16 still gains.
        let noisy = find_knee(&[
            (1.0, 10.0),
            (2.0, 20.0),
            (4.0, 38.0),
            (8.0, 36.0),
            (16.0, 150.0),
            (32.0, 151.0),
        ])
        .unwrap();
        assert_eq!(noisy.load, 16.0);
        // Throughput that falls after overload.
        let falling = find_knee(&[(10.0, 10.0), (20.0, 20.0), (40.0, 30.0), (80.0, 25.0)]).unwrap();
        assert_eq!(falling.load, 40.0);
        assert!(find_knee(&[(1.0, 1.0)]).is_none());
    }
}
