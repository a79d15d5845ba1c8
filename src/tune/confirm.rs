//! The confirm phase: the best few candidates and the defaults are measured
//! again in interleaved rounds (the order rotates each round, so drift on
//! the machine hits every candidate alike). Each candidate then has its
//! search value plus one value per round. A winner is named only when its
//! lead over the defaults *and* over the runner-up is significant by the
//! statistics `throtl compare` uses: Mann–Whitney p < 0.05 and a 95 %
//! bootstrap interval of the difference of means that excludes 0
//! ([`crate::results::compare::Difference::significant`]). With the
//! default 3 rounds (4 samples each) only a complete separation reaches
//! p < 0.05 — which is the point: a lead that noise can explain is no lead.

use serde::{Deserialize, Serialize};

use super::report::{Phase, TrialRecord};
use super::space::Candidate;
use super::TuneConfig;
use crate::results::compare::{Difference, LEVEL, RESAMPLES, SEED};
use crate::results::stats::{bootstrap_diff, mann_whitney, mean, Statistic};

/// One candidate of the confirm phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finalist {
    /// Search trial index.
    pub trial: usize,
    /// The engine's defaults.
    pub is_default: bool,
    /// Knobs.
    pub knobs: Candidate,
    /// Objective values: the search trial's, then each confirm round's.
    pub samples: Vec<f64>,
    /// Their mean.
    pub mean: f64,
}

/// One candidate against a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Baseline search trial.
    pub baseline: usize,
    /// Relative difference of means (candidate / baseline − 1).
    pub rel: f64,
    /// 95 % bootstrap interval of `rel`.
    pub rel_ci: (f64, f64),
    /// Two-sided Mann–Whitney p-value.
    pub p_value: f64,
    /// Significant and in the candidate's favour.
    pub better: bool,
}

/// The outcome of the confirm phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    /// Rounds run.
    pub rounds: u32,
    /// Candidates re-measured.
    pub finalists: Vec<Finalist>,
    /// Index into `finalists` of the winner, when there is one.
    pub winner: Option<usize>,
    /// Index into `finalists` of what is recommended (the winner, else the
    /// best that significantly beats the defaults, else the defaults).
    pub recommended: usize,
    /// The verdict in words.
    pub verdict: String,
    /// Recommended against the defaults.
    pub vs_defaults: Option<Comparison>,
    /// Best against the runner-up.
    pub vs_runner_up: Option<Comparison>,
}

/// Search trials re-measured: the best `cfg.finalists` measured ones plus the defaults.
pub fn finalists(cfg: &TuneConfig, records: &[TrialRecord]) -> Vec<usize> {
    let score = |r: &TrialRecord| r.outcome.value().map(|v| cfg.objective.score(v));
    let mut measured: Vec<&TrialRecord> = records
        .iter()
        .filter(|r| r.phase == Phase::Search && score(r).is_some())
        .collect();
    measured.sort_by(|a, b| score(b).unwrap_or(0.0).total_cmp(&score(a).unwrap_or(0.0)));
    let mut out: Vec<usize> = measured
        .iter()
        .filter(|r| !r.is_default)
        .take(cfg.finalists)
        .map(|r| r.index)
        .collect();
    if let Some(d) = measured.iter().find(|r| r.is_default) {
        out.insert(0, d.index);
    }
    out
}

/// The order of round `round` (from 1): rotated by one each round.
pub fn round_order(finalists: &[usize], round: u32) -> Vec<usize> {
    let mut v = finalists.to_vec();
    if !v.is_empty() {
        let k = (round as usize - 1) % v.len();
        v.rotate_left(k);
    }
    v
}

/// Compares `cand` against `base` (objective values; `higher` is better).
pub fn compare(base: &[f64], cand: &[f64], baseline: usize, higher: bool) -> Option<Comparison> {
    let ci = bootstrap_diff(base, cand, Statistic::Mean, RESAMPLES, LEVEL, SEED)?;
    let p_value = mann_whitney(base, cand)?.p_value;
    let d = Difference {
        ci: Some(ci),
        p_value: Some(p_value),
        rel: ci.rel,
    };
    Some(Comparison {
        baseline,
        rel: ci.rel,
        rel_ci: ci.rel_ci,
        p_value,
        better: d.significant() && ((ci.diff > 0.0) == higher),
    })
}

/// Decides from the confirm trials; `None` when there were none.
pub fn decide(cfg: &TuneConfig, records: &[TrialRecord]) -> Option<Confirmation> {
    let mut rounds = 0;
    let mut finals: Vec<Finalist> = Vec::new();
    for r in records {
        let Phase::Confirm { round, of } = r.phase else {
            continue;
        };
        rounds = rounds.max(round);
        let Some(v) = r.outcome.value() else { continue };
        if let Some(f) = finals.iter_mut().find(|f| f.trial == of) {
            f.samples.push(v);
            continue;
        }
        let search = &records[of];
        let mut samples: Vec<f64> = search.outcome.value().into_iter().collect();
        samples.push(v);
        finals.push(Finalist {
            trial: of,
            is_default: search.is_default,
            knobs: search.knobs.clone(),
            samples,
            mean: 0.0,
        });
    }
    if finals.len() < 2 {
        return None;
    }
    for f in &mut finals {
        f.mean = mean(&f.samples);
    }
    Some(verdict(cfg, finals, rounds))
}

fn verdict(cfg: &TuneConfig, finalists: Vec<Finalist>, rounds: u32) -> Confirmation {
    let higher = cfg.objective.higher_is_better();
    let score = |f: &Finalist| cfg.objective.score(f.mean);
    let mut order: Vec<usize> = (0..finalists.len()).collect();
    order.sort_by(|&a, &b| score(&finalists[b]).total_cmp(&score(&finalists[a])));
    let cmp = |c: usize, b: usize| {
        let (fb, fc): (&Finalist, &Finalist) = (&finalists[b], &finalists[c]);
        compare(&fb.samples, &fc.samples, fb.trial, higher)
    };
    let (best, runner) = (order[0], order[1]);
    let defaults = finalists.iter().position(|f| f.is_default);
    let ranked = Ranked {
        best,
        runner,
        defaults,
        vs_runner: cmp(best, runner),
        vs_def: defaults.filter(|&d| d != best).and_then(|d| cmp(best, d)),
    };
    let (winner, recommended, verdict) = ranked.judge(&finalists);
    let vs_defaults = defaults
        .filter(|&d| d != recommended)
        .and_then(|d| cmp(recommended, d));
    Confirmation {
        rounds,
        finalists,
        winner,
        recommended,
        verdict,
        vs_defaults,
        vs_runner_up: ranked.vs_runner,
    }
}

/// The best and runner-up finalists and how the best compares.
struct Ranked {
    best: usize,
    runner: usize,
    defaults: Option<usize>,
    vs_runner: Option<Comparison>,
    vs_def: Option<Comparison>,
}

fn name(f: &Finalist) -> String {
    if f.is_default {
        "the defaults".into()
    } else {
        format!("trial-{}", f.trial)
    }
}

fn p(c: &Option<Comparison>) -> f64 {
    c.as_ref().map_or(1.0, |c| c.p_value)
}

impl Ranked {
    /// (winner, recommended, verdict): see the module docs.
    fn judge(&self, f: &[Finalist]) -> (Option<usize>, usize, String) {
        let (best, runner) = (&f[self.best], &f[self.runner]);
        let beats_runner = self.vs_runner.as_ref().is_some_and(|c| c.better);
        let pr = p(&self.vs_runner);
        if self.defaults == Some(self.best) {
            let text = if beats_runner {
                format!(
                    "the defaults are best: significantly ahead of {} (p = {pr:.3})",
                    name(runner)
                )
            } else {
                format!("the candidates are indistinguishable from the defaults (best other: {}, p = {pr:.3}); keep the defaults", name(runner))
            };
            return (None, self.best, text);
        }
        let against_defaults = match self.defaults {
            Some(_) => format!("the defaults (p = {:.3})", p(&self.vs_def)),
            None => "the defaults, which did not start".into(),
        };
        let beats_def = self.defaults.is_none() || self.vs_def.as_ref().is_some_and(|c| c.better);
        match (beats_def, beats_runner) {
            (true, true) => (
                Some(self.best),
                self.best,
                format!("{} wins: significantly better than {against_defaults} and than the runner-up {} (p = {pr:.3})", name(best), name(runner)),
            ),
            (true, false) => (
                None,
                self.best,
                format!("{} beats {against_defaults} but is indistinguishable from {} (p = {pr:.3}); either will do, recommending the higher mean", name(best), name(runner)),
            ),
            _ => (
                None,
                self.defaults.unwrap_or(self.best),
                format!("the candidates are indistinguishable: {} does not beat {against_defaults} significantly; keep the defaults", name(best)),
            ),
        }
    }
}
