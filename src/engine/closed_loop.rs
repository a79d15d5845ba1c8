//! Closed loop: `concurrency` users, each sending its next request when its
//! previous one ends, optionally after a think time. With `--ramp-up`, user
//! `i` starts at `i/concurrency` of the ramp.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::record::RequestRecord;
use super::request::Transport;
use super::{
    Controls, Conversation, Dispatch, EngineOutcome, Issuer, LoadPlan, LoadShape, ThinkTime,
};

/// Runs `plan` as a closed loop. Returns when all users stop.
pub async fn run_closed_loop(
    transport: Arc<Transport>,
    plan: Arc<LoadPlan>,
    sink: Sender<RequestRecord>,
    controls: Controls,
) -> EngineOutcome {
    let started = Instant::now();
    let issuer = Arc::new(Issuer::new(
        Arc::clone(&plan),
        controls.soft.clone(),
        started,
    ));
    let think = match plan.shape {
        LoadShape::Closed { think } => think,
        LoadShape::Open { .. } => None,
    };
    let d = Dispatch::new(transport, Arc::clone(&plan), sink, &controls);
    let mut users = tokio::task::JoinSet::new();
    let n = plan.concurrency.max(1);
    for i in (0..n).filter(|i| plan.shard.is_none_or(|s| s.owns(u64::from(*i)))) {
        let start_at = started + plan.ramp_up.mul_f64(f64::from(i) / f64::from(n));
        let rng = SmallRng::seed_from_u64(plan.workload.seed() ^ u64::from(i));
        users.spawn(user(d.clone(), Arc::clone(&issuer), start_at, think, rng));
    }
    let outcome_source = d.clone();
    drop(d);
    while users.join_next().await.is_some() {}
    outcome_source.outcome(started, &controls.soft)
}

async fn user(
    d: Dispatch,
    issuer: Arc<Issuer>,
    start_at: Instant,
    think: Option<ThinkTime>,
    mut rng: SmallRng,
) {
    // In a closed loop a request is due the moment its user is ready.
    let mut due = start_at;
    if !sleep_until(&d, due, &issuer).await {
        return;
    }
    let mut conv: Option<Conversation> = None;
    let mut first = true;
    while let Some((local, warmup)) = issuer.next_for_user(due, first) {
        first = false;
        let seq = d.plan.shard.map_or(local, |s| s.global_seq(local));
        let alive = if d.plan.turns > 1 {
            d.run_turn(seq, warmup, due, &mut conv).await
        } else {
            d.run_one(seq, warmup, due, false).await
        };
        if !alive {
            return;
        }
        due = Instant::now() + think.map_or(Duration::ZERO, |t| draw_think(t, &mut rng));
        if !sleep_until(&d, due, &issuer).await {
            return;
        }
    }
}

/// Waits until `at`; false when the run was stopped meanwhile.
async fn sleep_until(d: &Dispatch, at: Instant, issuer: &Issuer) -> bool {
    if at <= Instant::now() {
        return true;
    }
    tokio::select! {
        () = d.sleep_until(at) => true,
        () = issuer.soft.cancelled() => false,
    }
}

/// A think time uniform in `mean ± jitter` (never negative).
fn draw_think(t: ThinkTime, rng: &mut SmallRng) -> Duration {
    if t.jitter.is_zero() {
        return t.mean;
    }
    let lo = t.mean.saturating_sub(t.jitter).as_secs_f64();
    let hi = (t.mean + t.jitter).as_secs_f64();
    Duration::from_secs_f64(rng.random_range(lo..=hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_time_stays_within_its_jitter() {
        let t = ThinkTime {
            mean: Duration::from_secs(2),
            jitter: Duration::from_millis(500),
        };
        let mut rng = SmallRng::seed_from_u64(3);
        let draws: Vec<f64> = (0..2000)
            .map(|_| draw_think(t, &mut rng).as_secs_f64())
            .collect();
        assert!(draws.iter().all(|&x| (1.5..=2.5).contains(&x)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 2.0).abs() < 0.03, "{mean}");
        let fixed = ThinkTime {
            mean: Duration::from_secs(1),
            jitter: Duration::ZERO,
        };
        assert_eq!(draw_think(fixed, &mut rng), Duration::from_secs(1));
    }
}
