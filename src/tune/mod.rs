//! `throtl tune` (issue 13): find the engine configuration that serves the
//! user's traffic best, and say why.
//!
//! The pipeline: [`space`] (knobs, defaults, constraints) and [`template`]
//! (`--launch`) are validated first; [`search`] proposes candidates (trial 0
//! the defaults, then the grid or random + TPE); an [`Evaluator`] measures
//! each (live: [`harness`] starts the engine, [`objective`] runs benches
//! through [`crate::bench`]); [`confirm`] re-measures the best few in
//! interleaved rounds and decides whether a winner is real; [`report`]
//! renders the result. Every finished trial is appended to the [`journal`],
//! so `--resume` continues a killed tune without re-running any.

pub mod confirm;
pub mod expr;
pub mod harness;
pub mod html;
pub mod journal;
pub mod objective;
pub mod report;
pub mod search;
pub mod space;
pub mod template;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::api::ApiKind;
use crate::config::BenchConfig;
use crate::engine::Controls;
use journal::Journal;
use report::{TrialRecord, TuneReport};
use search::Observation;
use space::{Candidate, Space};
use template::Template;

/// Identifier of the tune JSON format (docs/tune.md).
pub const TUNE_SCHEMA: &str = "throtl.tune.v1";

/// Infeasible starts in a row that stop the search.
pub const MAX_INFEASIBLE_IN_A_ROW: usize = 3;

/// What a trial optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Highest open-loop request rate meeting every SLO (req/s, higher is better).
    Capacity,
    /// Output tokens/s at a fixed concurrency (higher is better).
    Throughput,
    /// USD per 1M output tokens that met the SLOs, at the offered load (lower is better).
    Cost,
}

impl Objective {
    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Objective::Cost)
    }

    /// Unit for display.
    pub fn unit(self) -> &'static str {
        match self {
            Objective::Capacity => "req/s",
            Objective::Throughput => "tok/s",
            Objective::Cost => "$/1M good tok",
        }
    }

    /// Name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Objective::Capacity => "capacity",
            Objective::Throughput => "throughput",
            Objective::Cost => "cost",
        }
    }

    /// The value as a higher-is-better score.
    pub fn score(self, value: f64) -> f64 {
        if self.higher_is_better() {
            value
        } else {
            -value
        }
    }
}

/// Errors of a tune; each names the flag or file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// The space file is invalid.
    #[error("{0}")]
    Space(String),
    /// The launch template is invalid.
    #[error("{0}")]
    Template(String),
    /// Flags that do not fit together.
    #[error("{0}")]
    Config(String),
    /// The journal cannot be read, written or resumed.
    #[error("{0}")]
    Journal(String),
    /// A report file cannot be written.
    #[error("cannot write '{path}': {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
}

/// How capacity is searched.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CapacitySearch {
    /// First rate probed without a hint (req/s).
    pub start_rate: f64,
    /// Stop bisecting when the failing rate is within this share of the passing one.
    pub precision: f64,
    /// Probes at most per capacity measurement.
    pub max_probes: u32,
}

impl Default for CapacitySearch {
    fn default() -> Self {
        Self {
            start_rate: 1.0,
            precision: 0.05,
            max_probes: 16,
        }
    }
}

/// A whole tune, validated.
#[derive(Debug, Clone)]
pub struct TuneConfig {
    /// Knobs and constraints.
    pub space: Space,
    /// The `--launch` template.
    pub template: Template,
    /// Text of the space file (fingerprint of the journal, the report).
    pub space_text: String,
    /// What to optimise.
    pub objective: Objective,
    /// Search trials at most (trial 0, the defaults, included).
    pub trials: usize,
    /// Wall time at most for the whole tune.
    pub budget: Option<Duration>,
    /// One trial (start-up + measurement) at most.
    pub trial_timeout: Duration,
    /// Start-up (until healthy) at most.
    pub startup_timeout: Duration,
    /// Between SIGTERM and SIGKILL of an engine's process group.
    pub stop_grace: Duration,
    /// Routes polled until one answers 200.
    pub health_paths: Vec<String>,
    /// Journal of finished trials.
    pub journal: Option<PathBuf>,
    /// Continue the journal instead of starting over.
    pub resume: bool,
    /// Where engine logs go (next to the journal, else a temp dir).
    pub log_dir: PathBuf,
    /// `--json` report.
    pub json_out: Option<PathBuf>,
    /// `--html` report.
    pub html_out: Option<PathBuf>,
    /// Confirm rounds (0: no confirm phase).
    pub confirm_rounds: u32,
    /// Best candidates (besides the defaults) re-measured in the confirm phase.
    pub finalists: usize,
    /// Seed of the search.
    pub seed: u64,
    /// Bench settings of every measurement; url, model and load are set per probe.
    pub bench: BenchConfig,
    /// Model to request; `None`: the first the engine lists.
    pub model: Option<String>,
    /// Protocol; `None`: probe the engine.
    pub api: Option<ApiKind>,
    /// Capacity search settings.
    pub capacity: CapacitySearch,
    /// USD per GPU-hour (cost objective).
    pub gpu_cost_per_hour: Option<f64>,
}

/// One measurement request to an [`Evaluator`].
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// `trial-3`, `confirm-2-1`: names the engine log.
    pub label: String,
    /// The knobs.
    pub candidate: Candidate,
    /// The objective measured before for this candidate (warm start).
    pub hint: Option<f64>,
}

/// What an [`Evaluator`] returns.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The result.
    pub outcome: report::Outcome,
    /// The launch command run.
    pub command: Option<String>,
    /// Process group of the engine (checked dead by tests).
    pub pgid: Option<i32>,
    /// The engine's log.
    pub log: Option<PathBuf>,
}

/// Measures candidates: live (launch + bench) or a model in tests.
pub trait Evaluator {
    /// Measures one candidate.
    fn evaluate(&mut self, req: &EvalRequest) -> impl Future<Output = Evaluation>;
}

/// Runs the tune. `on_trial` sees every finished trial (progress output);
/// `controls.soft` cancelled (Ctrl-C) stops after the current trial.
pub async fn run<E: Evaluator>(
    cfg: &TuneConfig,
    eval: &mut E,
    controls: &Controls,
    mut on_trial: impl FnMut(&TrialRecord),
) -> Result<TuneReport, TuneError> {
    let started = Instant::now();
    let mut state = State {
        cfg,
        started,
        journal: Journal::open(cfg)?,
        records: Vec::new(),
        stop_reason: None,
    };
    report::check_outputs(cfg)?;
    let searcher = state.search(eval, controls, &mut on_trial).await?;
    let finalists = confirm::finalists(cfg, &state.records);
    if state.stop_reason.is_none() && cfg.confirm_rounds > 0 && finalists.len() >= 2 {
        state
            .confirm(eval, controls, &finalists, &mut on_trial)
            .await?;
    }
    let report = report::build(
        cfg,
        state.records,
        searcher,
        state.stop_reason,
        started.elapsed(),
    );
    report::write_outputs(cfg, &report)?;
    Ok(report)
}

struct State<'a> {
    cfg: &'a TuneConfig,
    started: Instant,
    journal: Journal,
    records: Vec<TrialRecord>,
    stop_reason: Option<String>,
}

impl State<'_> {
    /// The search phase: trial 0 the defaults, then the searcher's
    /// proposals; stops early on Ctrl-C, the budget, or
    /// [`MAX_INFEASIBLE_IN_A_ROW`] infeasible starts. Returns the searcher's name.
    async fn search<E: Evaluator>(
        &mut self,
        eval: &mut E,
        controls: &Controls,
        on_trial: &mut impl FnMut(&TrialRecord),
    ) -> Result<&'static str, TuneError> {
        let cfg = self.cfg;
        let mut searcher = search::for_space(&cfg.space, cfg.trials, cfg.seed);
        let mut infeasible_run = 0usize;
        for i in 0..cfg.trials {
            if let Some(why) = self.should_stop(controls) {
                self.stop_reason = Some(why);
                break;
            }
            let candidate = if i == 0 {
                cfg.space.defaults()
            } else {
                match searcher.propose(&self.observations()) {
                    Some(c) => c,
                    None => break,
                }
            };
            let req = EvalRequest {
                label: format!("trial-{i}"),
                candidate,
                hint: None,
            };
            let Some(rec) = self
                .step(eval, req, report::Phase::Search, controls)
                .await?
            else {
                self.stop_reason = Some("interrupted".into());
                break;
            };
            on_trial(&rec);
            infeasible_run = if rec.outcome.is_infeasible() {
                infeasible_run + 1
            } else {
                0
            };
            if infeasible_run >= MAX_INFEASIBLE_IN_A_ROW {
                self.stop_reason = Some(format!(
                    "stopped: {MAX_INFEASIBLE_IN_A_ROW} configurations in a row failed to start (last: {}); check the template and the space (e.g. memory settings) before tuning further",
                    rec.outcome.reason().unwrap_or_default()
                ));
                break;
            }
        }
        Ok(searcher.name())
    }

    /// The confirm phase: `finalists` (search trial indices) re-measured in
    /// rotated order each round.
    async fn confirm<E: Evaluator>(
        &mut self,
        eval: &mut E,
        controls: &Controls,
        finalists: &[usize],
        on_trial: &mut impl FnMut(&TrialRecord),
    ) -> Result<(), TuneError> {
        for round in 1..=self.cfg.confirm_rounds {
            for (k, &idx) in confirm::round_order(finalists, round).iter().enumerate() {
                if let Some(why) = self.should_stop(controls) {
                    self.stop_reason = Some(format!("confirm phase cut short: {why}"));
                    return Ok(());
                }
                let r = &self.records[idx];
                let req = EvalRequest {
                    label: format!("confirm-{round}-{k}"),
                    candidate: r.knobs.clone(),
                    hint: r.outcome.value(),
                };
                let phase = report::Phase::Confirm { round, of: idx };
                let Some(rec) = self.step(eval, req, phase, controls).await? else {
                    self.stop_reason = Some("confirm phase cut short: interrupted".into());
                    return Ok(());
                };
                on_trial(&rec);
            }
        }
        Ok(())
    }

    fn observations(&self) -> Vec<Observation> {
        self.records
            .iter()
            .filter(|r| r.phase == report::Phase::Search)
            .map(|r| Observation {
                candidate: r.knobs.clone(),
                score: r.outcome.value().map(|v| self.cfg.objective.score(v)),
            })
            .collect()
    }

    fn should_stop(&self, controls: &Controls) -> Option<String> {
        if controls.soft.is_cancelled() {
            return Some("interrupted".into());
        }
        let budget = self.cfg.budget?;
        (self.started.elapsed() >= budget)
            .then(|| format!("--budget {} used up", humantime::format_duration(budget)))
    }

    /// Replays the journal's record of this step, or measures it and appends it.
    async fn step<E: Evaluator>(
        &mut self,
        eval: &mut E,
        req: EvalRequest,
        phase: report::Phase,
        controls: &Controls,
    ) -> Result<Option<TrialRecord>, TuneError> {
        let index = self.records.len();
        if let Some(rec) = self.journal.replay(index, &req.candidate, &phase)? {
            self.records.push(rec.clone());
            return Ok(Some(rec));
        }
        let t0 = Instant::now();
        let e = eval.evaluate(&req).await;
        let rec = TrialRecord {
            index,
            label: req.label,
            phase,
            is_default: req.candidate == self.cfg.space.defaults(),
            knobs: req.candidate,
            command: e.command,
            pgid: e.pgid,
            log: e.log,
            wall_s: t0.elapsed().as_secs_f64(),
            outcome: e.outcome,
        };
        // An interrupted measurement is not a result: leave it out of the
        // journal and the report, so that --resume measures it again.
        if controls.soft.is_cancelled() {
            return Ok(None);
        }
        self.journal.append(&rec)?;
        self.records.push(rec.clone());
        Ok(Some(rec))
    }
}
