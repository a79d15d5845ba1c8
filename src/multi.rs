//! Multi-target bench, interleaved (`bench --target … --interleave`): the
//! workload is cut into rounds; in each round every target gets its next
//! slice of requests in turn, so slow drift of the client machine or the
//! network is spread over all targets instead of hitting whichever ran last.
//! Round `r` starts with target `r mod T`, so no target is always first.
//! Every target keeps one aggregator, one run and one report across its
//! slices; time spent on other targets' turns is excluded from its duration
//! and throughput window.

use crate::bench::{BenchError, Session, Slice};
use crate::config::{BenchConfig, ConfigError};
use crate::engine::{Controls, EngineOutcome, StopCondition};
use crate::store::runs::StoredRun;

/// Measured requests per round: `n` split as evenly as possible, the
/// remainder going to the first rounds.
pub fn split_requests(n: u64, rounds: u32) -> Result<Vec<u64>, ConfigError> {
    let r = u64::from(rounds);
    if r == 0 || r > n {
        return Err(ConfigError(format!(
            "--interleave {rounds}: the rounds must be between 1 and --requests ({n})"
        )));
    }
    Ok((0..r).map(|i| n / r + u64::from(i < n % r)).collect())
}

/// Target indices in the order they take their turn in round `round`.
pub fn turn_order(targets: usize, round: u32) -> Vec<usize> {
    (0..targets)
        .map(|i| (i + round as usize) % targets.max(1))
        .collect()
}

/// The slices of every round (the same for every target): round 0 carries
/// the warmup and ramp-up; later rounds continue the workload where the
/// previous one stopped, so each target gets the same prompts in the same order.
pub fn slices(cfg: &BenchConfig, rounds: u32) -> Result<Vec<Slice>, ConfigError> {
    let StopCondition::Requests(n) = cfg.stop else {
        return Err(ConfigError(
            "--interleave needs a request count (--requests), so every target gets the same requests"
                .into(),
        ));
    };
    let mut next = cfg.warmup;
    let mut out = Vec::new();
    for (i, k) in split_requests(n, rounds)?.into_iter().enumerate() {
        let first = i == 0;
        out.push(Slice {
            first_seq: if first { 0 } else { next },
            warmup: if first { cfg.warmup } else { 0 },
            stop: StopCondition::Requests(k),
            ramp_up: if first {
                cfg.workload.ramp_up
            } else {
                std::time::Duration::ZERO
            },
        });
        next += k;
    }
    Ok(out)
}

/// Benches every config (one per target) in `rounds` interleaved rounds.
/// `on_turn(target, round, outcome)` is called after each turn. Returns one
/// stored run per target, in `cfgs` order.
pub async fn run_interleaved(
    cfgs: &[BenchConfig],
    rounds: u32,
    controls: Controls,
    mut on_turn: impl FnMut(usize, u32, &EngineOutcome),
) -> Result<Vec<StoredRun>, BenchError> {
    let plan = match cfgs.first() {
        Some(c) => slices(c, rounds)?,
        None => return Ok(Vec::new()),
    };
    let mut sessions = Vec::with_capacity(cfgs.len());
    for cfg in cfgs {
        sessions.push(Session::open(cfg, &controls).await?);
    }
    'rounds: for (round, slice) in (0u32..).zip(&plan) {
        for t in turn_order(sessions.len(), round) {
            if controls.soft.is_cancelled() {
                break 'rounds;
            }
            let outcome = sessions[t].run_slice(*slice, controls.clone()).await;
            on_turn(t, round, &outcome);
        }
    }
    sessions.into_iter().map(Session::finish).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_split_evenly_and_turns_rotate() {
        assert_eq!(split_requests(10, 3).unwrap(), vec![4, 3, 3]);
        assert_eq!(split_requests(6, 6).unwrap(), vec![1; 6]);
        assert!(split_requests(2, 3).is_err());
        assert!(split_requests(5, 0).is_err());
        assert_eq!(turn_order(3, 0), vec![0, 1, 2]);
        assert_eq!(turn_order(3, 1), vec![1, 2, 0]);
        assert_eq!(turn_order(3, 4), vec![1, 2, 0]);
    }
}
