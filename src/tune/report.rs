//! The tune report: wire types (schema `throtl.tune.v1`, docs/tune.md), the
//! console rendering, the reasons drawn from server metrics, and the files.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::confirm::Confirmation;
use super::space::{describe, Candidate};
use super::{TuneConfig, TuneError, TUNE_SCHEMA};

/// Which phase a trial belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// A search trial.
    Search,
    /// A confirm-phase re-measurement of search trial `of`.
    Confirm {
        /// Round, from 1.
        round: u32,
        /// Index of the search trial re-measured.
        of: usize,
    },
}

/// One capacity probe: a short open-loop bench at `rate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Offered rate (req/s).
    pub rate: f64,
    /// Every SLO met (and no more than 1 % errors).
    pub met: bool,
    /// Share of requests meeting every SLO.
    pub attainment: Option<f64>,
    /// Stored run id.
    pub run_id: String,
}

/// What the server's `/metrics` said during the deciding run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// Share of scrapes with requests waiting (0–1).
    pub waiting_share: Option<f64>,
    /// Mean requests waiting.
    pub waiting_mean: Option<f64>,
    /// Mean preemptions per second.
    pub preemptions_per_s: Option<f64>,
    /// Mean KV-cache usage (0–1).
    pub kv_usage_mean: Option<f64>,
    /// Mean requests running.
    pub running_mean: Option<f64>,
}

/// A measured trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The objective, in its unit.
    pub value: f64,
    /// Output tokens/s of the deciding run.
    pub output_tokens_per_s: f64,
    /// TTFT p95 of the deciding run (ms).
    pub ttft_p95_ms: f64,
    /// Share of requests meeting every SLO in the deciding run (with `--slo`).
    pub slo_attainment: Option<f64>,
    /// Capacity: every probe, in order.
    #[serde(default)]
    pub probes: Vec<Probe>,
    /// Server metrics of the deciding run.
    pub signals: Option<Signals>,
    /// Stored runs (history database ids).
    #[serde(default)]
    pub run_ids: Vec<String>,
}

/// How a trial ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Measured.
    Measured(Measurement),
    /// The engine did not start with this configuration (never retried).
    Infeasible {
        /// The log line or check that says why.
        reason: String,
    },
    /// Started, but the measurement failed (timeout, crash, no good tokens).
    Failed {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// The objective value when measured.
    pub fn value(&self) -> Option<f64> {
        match self {
            Outcome::Measured(m) => Some(m.value),
            _ => None,
        }
    }

    /// Whether the engine failed to start.
    pub fn is_infeasible(&self) -> bool {
        matches!(self, Outcome::Infeasible { .. })
    }

    /// The reason of an infeasible or failed trial.
    pub fn reason(&self) -> Option<String> {
        match self {
            Outcome::Measured(_) => None,
            Outcome::Infeasible { reason } | Outcome::Failed { reason } => Some(reason.clone()),
        }
    }

    /// The measurement, if any.
    pub fn measurement(&self) -> Option<&Measurement> {
        match self {
            Outcome::Measured(m) => Some(m),
            _ => None,
        }
    }
}

/// One trial (search or confirm), also one journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Position in the tune (search and confirm trials share the count).
    pub index: usize,
    /// `trial-3`, `confirm-1-0`.
    pub label: String,
    /// Search or confirm.
    #[serde(flatten)]
    pub phase: Phase,
    /// The engine's defaults.
    pub is_default: bool,
    /// Knob values.
    pub knobs: Candidate,
    /// The launch command run.
    pub command: Option<String>,
    /// The engine's process group (all stopped when the trial ended).
    pub pgid: Option<i32>,
    /// The engine's log file.
    pub log: Option<PathBuf>,
    /// Wall time of the trial (s).
    pub wall_s: f64,
    /// Result.
    pub outcome: Outcome,
}

/// The recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Search trial recommended.
    pub trial: usize,
    /// Its knobs.
    pub knobs: Candidate,
    /// Copy-paste launch command (port 8000).
    pub command: String,
    /// The knobs as YAML.
    pub yaml: String,
    /// Its objective (mean over confirm samples when confirmed).
    pub value: f64,
    /// Improvement over the defaults: relative difference with a 95 % CI.
    pub vs_defaults: Option<super::confirm::Comparison>,
    /// Why, from the server's metrics.
    pub why: Vec<String>,
}

/// The `--json` output of a tune.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TuneReport {
    /// Always [`TUNE_SCHEMA`].
    pub schema: String,
    /// `capacity`, `throughput` or `cost`.
    pub objective: super::Objective,
    /// Its unit.
    pub unit: String,
    /// The launch template.
    pub template: String,
    /// `grid` or `random + tpe`.
    pub search: String,
    /// Every trial in order.
    pub trials: Vec<TrialRecord>,
    /// The confirm phase (absent when it did not run).
    pub confirm: Option<Confirmation>,
    /// What to run (absent when no trial was measured).
    pub recommendation: Option<Recommendation>,
    /// Why the tune stopped early, if it did.
    pub stopped: Option<String>,
    /// Wall time (s).
    pub wall_s: f64,
    /// History group of the stored runs.
    pub group: Option<String>,
}

/// Assembles the report from the trials.
pub fn build(
    cfg: &TuneConfig,
    trials: Vec<TrialRecord>,
    search: &str,
    stopped: Option<String>,
    wall: Duration,
) -> TuneReport {
    let confirm = super::confirm::decide(cfg, &trials);
    let recommendation = recommend(cfg, &trials, confirm.as_ref());
    TuneReport {
        schema: TUNE_SCHEMA.into(),
        objective: cfg.objective,
        unit: cfg.objective.unit().into(),
        template: cfg.template.source().into(),
        search: search.into(),
        trials,
        confirm,
        recommendation,
        stopped,
        wall_s: wall.as_secs_f64(),
        group: cfg.bench.results.group.clone(),
    }
}

fn recommend(
    cfg: &TuneConfig,
    trials: &[TrialRecord],
    confirm: Option<&Confirmation>,
) -> Option<Recommendation> {
    let score = |r: &TrialRecord| r.outcome.value().map(|v| cfg.objective.score(v));
    let (trial, value, vs_defaults) = match confirm {
        Some(c) => {
            let f = &c.finalists[c.recommended];
            (
                f.trial,
                f.mean,
                c.vs_defaults.clone().filter(|_| !f.is_default),
            )
        }
        None => {
            let best = trials
                .iter()
                .filter(|r| r.phase == Phase::Search && score(r).is_some())
                .max_by(|a, b| score(a).unwrap_or(0.0).total_cmp(&score(b).unwrap_or(0.0)))?;
            (best.index, best.outcome.value().unwrap_or(0.0), None)
        }
    };
    let rec = &trials[trial];
    let defaults = trials
        .iter()
        .find(|r| r.is_default && r.phase == Phase::Search);
    Some(Recommendation {
        trial,
        command: cfg.template.render(&rec.knobs, 8000),
        yaml: yaml(&rec.knobs),
        knobs: rec.knobs.clone(),
        value,
        vs_defaults,
        why: why(defaults, rec),
    })
}

fn yaml(c: &Candidate) -> String {
    c.iter().fold(String::new(), |mut s, (k, v)| {
        let _ = writeln!(s, "{k}: {v}");
        s
    })
}

/// Two or three sentences of why, from the server metrics of the defaults
/// and of the recommendation.
pub fn why(defaults: Option<&TrialRecord>, rec: &TrialRecord) -> Vec<String> {
    let mut out = Vec::new();
    if rec.is_default {
        out.push("No candidate beat the engine's defaults significantly: keep them.".into());
    } else if let Some(d) = defaults {
        out.extend(knob_changes(d, rec));
    }
    let sig = |r: Option<&TrialRecord>| {
        r.and_then(|r| r.outcome.measurement())
            .and_then(|m| m.signals.clone())
    };
    match (sig(defaults), sig(Some(rec))) {
        (Some(d), Some(r)) => out.extend(metric_reasons(&d, &r)),
        _ => {
            if let Some(reason) = defaults
                .filter(|d| d.outcome.is_infeasible())
                .and_then(|d| d.outcome.reason())
            {
                out.push(format!("The defaults did not start: {reason}."));
            }
        }
    }
    out.truncate(4);
    out
}

/// "The recommendation changes a 1 → 2, b false → true."
fn knob_changes(defaults: &TrialRecord, rec: &TrialRecord) -> Option<String> {
    let changed: Vec<String> = rec
        .knobs
        .iter()
        .filter(|(k, v)| defaults.knobs.get(*k) != Some(*v))
        .map(|(k, v)| {
            let was = defaults
                .knobs
                .get(k)
                .map(ToString::to_string)
                .unwrap_or_default();
            format!("{k} {was} → {v}")
        })
        .collect();
    (!changed.is_empty()).then(|| format!("The recommendation changes {}.", changed.join(", ")))
}

/// Queueing, preemption and KV-cache sentences, defaults against the recommendation.
fn metric_reasons(d: &Signals, r: &Signals) -> Vec<String> {
    let pct = |x: f64| format!("{:.0} %", x * 100.0);
    let mut out = Vec::new();
    if let (Some(dw), Some(rw)) = (d.waiting_share, r.waiting_share) {
        // Only a clear difference in queueing is worth a sentence.
        if dw > 0.1 && dw > rw + 0.1 {
            out.push(format!(
                "The defaults queue requests: waiting > 0 in {} of the scrapes (mean {:.1} waiting); the recommendation in {}.",
                pct(dw),
                d.waiting_mean.unwrap_or(0.0),
                pct(rw)
            ));
        }
    }
    if let (Some(dp), Some(rp)) = (d.preemptions_per_s, r.preemptions_per_s) {
        if dp > 0.01 || rp > 0.01 {
            out.push(format!(
                "Preemptions: {dp:.2}/s with the defaults, {rp:.2}/s with the recommendation."
            ));
        }
    }
    if let (Some(dk), Some(rk)) = (d.kv_usage_mean, r.kv_usage_mean) {
        let full = if rk > 0.9 {
            " (close to full: more KV memory, e.g. gpu_memory_utilization or fp8 KV, may help further)"
        } else {
            ""
        };
        out.push(format!(
            "KV cache {} full on average with the defaults, {} with the recommendation{full}.",
            pct(dk),
            pct(rk)
        ));
    }
    out
}

/// Creates the output files before any load, so a bad path fails fast.
pub fn check_outputs(cfg: &TuneConfig) -> Result<(), TuneError> {
    for p in [&cfg.json_out, &cfg.html_out].into_iter().flatten() {
        std::fs::File::create(p).map_err(|source| TuneError::Output {
            path: p.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Writes `--json` and `--html`.
pub fn write_outputs(cfg: &TuneConfig, r: &TuneReport) -> Result<(), TuneError> {
    let write = |p: &PathBuf, bytes: String| {
        std::fs::write(p, bytes).map_err(|source| TuneError::Output {
            path: p.clone(),
            source,
        })
    };
    if let Some(p) = &cfg.json_out {
        let text = serde_json::to_string_pretty(r).map_err(|e| TuneError::Output {
            path: p.clone(),
            source: std::io::Error::other(e),
        })?;
        write(p, text + "\n")?;
    }
    if let Some(p) = &cfg.html_out {
        write(p, super::html::render(r))?;
    }
    Ok(())
}

/// Objective value for display.
pub fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The console report: trials table, confirm verdict, recommendation.
pub fn render(r: &TuneReport) -> String {
    let mut s = format!(
        "throtl tune: objective {} ({}), search {}, {} trials in {:.0} s\n",
        r.objective.name(),
        r.unit,
        r.search,
        r.trials.len(),
        r.wall_s
    );
    render_trials(&mut s, r);
    render_confirm(&mut s, r);
    if let Some(stop) = &r.stopped {
        let _ = writeln!(s, "\n{stop}");
    }
    render_recommendation(&mut s, r);
    s
}

fn render_trials(s: &mut String, r: &TuneReport) {
    let _ = writeln!(
        s,
        "{:<12} {:>14} {:>9} {:>10} {:>10}  knobs / reason",
        "trial", r.unit, "SLO att.", "out tok/s", "TTFT p95"
    );
    for t in &r.trials {
        let knobs = describe(&t.knobs) + if t.is_default { " (defaults)" } else { "" };
        let Some(m) = t.outcome.measurement() else {
            let status = if t.outcome.is_infeasible() {
                "infeasible"
            } else {
                "failed"
            };
            let reason = t.outcome.reason().unwrap_or_default();
            let _ = writeln!(
                s,
                "{:<12} {status:>14} {:>32}{knobs}\n{:<12} └ {reason}",
                t.label, "", ""
            );
            continue;
        };
        let att = m
            .slo_attainment
            .map_or_else(|| "-".into(), |a| format!("{:.1} %", a * 100.0));
        let _ = writeln!(
            s,
            "{:<12} {:>14} {att:>9} {:>10.0} {:>10.1}  {knobs}",
            t.label,
            fmt_value(m.value),
            m.output_tokens_per_s,
            m.ttft_p95_ms,
        );
    }
}

fn render_confirm(s: &mut String, r: &TuneReport) {
    let Some(c) = &r.confirm else { return };
    let _ = writeln!(s, "\nconfirm ({} rounds, interleaved):", c.rounds);
    for f in &c.finalists {
        let _ = writeln!(
            s,
            "  trial-{:<4} mean {} {} over {} samples{}",
            f.trial,
            fmt_value(f.mean),
            r.unit,
            f.samples.len(),
            if f.is_default { " (defaults)" } else { "" }
        );
    }
    let _ = writeln!(s, "  verdict: {}", c.verdict);
}

fn render_recommendation(s: &mut String, r: &TuneReport) {
    let Some(rec) = &r.recommendation else {
        let _ = writeln!(s, "\nno trial was measured: nothing to recommend");
        return;
    };
    let _ = writeln!(
        s,
        "\nrecommended (trial-{}): {} {}",
        rec.trial,
        fmt_value(rec.value),
        r.unit
    );
    if let Some(c) = &rec.vs_defaults {
        let _ = writeln!(
            s,
            "  vs defaults: {:+.1} % (95 % CI {:+.1} % … {:+.1} %, Mann–Whitney p = {:.3})",
            c.rel * 100.0,
            c.rel_ci.0 * 100.0,
            c.rel_ci.1 * 100.0,
            c.p_value
        );
    }
    let _ = writeln!(s, "  launch: {}", rec.command);
    let yaml: Vec<String> = rec.yaml.lines().map(|l| format!("    {l}")).collect();
    let _ = writeln!(s, "  yaml:\n{}", yaml.join("\n"));
    for w in &rec.why {
        let _ = writeln!(s, "  why: {w}");
    }
}
