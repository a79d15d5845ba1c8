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
    let (best, runner) = (order[0], order[1]);
    let defaults = finalists.iter().position(|f| f.is_default);
    let cmp = |c: usize, b: usize| {
        compare(
            &finalists[b].samples,
            &finalists[c].samples,
            finalists[b].trial,
            higher,
        )
    };
    let vs_runner_up = cmp(best, runner);
    let beats_runner = vs_runner_up.as_ref().is_some_and(|c| c.better);
    let name = |i: usize| {
        let f: &Finalist = &finalists[i];
        if f.is_default {
            "the defaults".to_string()
        } else {
            format!("trial-{}", f.trial)
        }
    };
    let p = |c: &Option<Comparison>| c.as_ref().map_or(1.0, |c| c.p_value);
    let (winner, recommended, verdict) = match defaults {
        Some(d) if d == best => (
            None,
            d,
            if beats_runner {
                format!(
                    "the defaults are best: significantly ahead of {} (p = {:.3})",
                    name(runner),
                    p(&vs_runner_up)
                )
            } else {
                format!("the candidates are indistinguishable from the defaults (best other: {}, p = {:.3}); keep the defaults", name(runner), p(&vs_runner_up))
            },
        ),
        _ => {
            let vs_def = defaults.and_then(|d| cmp(best, d));
            let beats_def = defaults.is_none() || vs_def.as_ref().is_some_and(|c| c.better);
            match (beats_def, beats_runner) {
                (true, true) => (
                    Some(best),
                    best,
                    format!("{} wins: significantly better than the defaults (p = {:.3}) and than the runner-up {} (p = {:.3})", name(best), p(&vs_def), name(runner), p(&vs_runner_up)),
                ),
                (true, false) => (
                    None,
                    best,
                    format!("{} beats the defaults significantly (p = {:.3}) but is indistinguishable from {} (p = {:.3}); either will do, recommending the higher mean", name(best), p(&vs_def), name(runner), p(&vs_runner_up)),
                ),
                _ => (
                    None,
                    defaults.unwrap_or(best),
                    format!("the candidates are indistinguishable: {} does not beat the defaults significantly (p = {:.3}); keep the defaults", name(best), p(&vs_def)),
                ),
            }
        }
    };
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
        vs_runner_up,
    }
}
