//! Open loop: requests are due on an arrival schedule, whatever the server's
//! speed. Every request keeps its *scheduled* instant, and all its latencies
//! are measured from it, so a slow server (or a saturated client) shows up as
//! latency instead of silently lowering the offered load (no coordinated
//! omission). With `--max-concurrency`, an arrival that finds every slot busy
//! waits for one — it is never dropped — and its record says it was held.
//! When the run is interrupted (soft stop, Ctrl-C), every arrival that was
//! already due but not yet sent (waiting for a slot, or queued behind one that
//! was) gets a record marked `not_sent`, so the accounting stays complete.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::arrival::Schedule;
use super::record::RequestRecord;
use super::request::Transport;
use super::{Controls, Dispatch, EngineOutcome, Issuer, LoadPlan, LoadShape};

/// Runs `plan` as an open loop. Returns when the schedule has ended and every
/// request sent has finished.
pub async fn run_open_loop(
    transport: Arc<Transport>,
    plan: Arc<LoadPlan>,
    sink: Sender<RequestRecord>,
    controls: Controls,
) -> EngineOutcome {
    let started = Instant::now();
    let d = Dispatch::new(transport, Arc::clone(&plan), sink, &controls);
    let LoadShape::Open {
        arrivals,
        max_concurrency,
    } = plan.shape
    else {
        return d.outcome(started, &controls.soft);
    };
    // The config was validated, so this only fails on a programming error.
    let Ok(mut schedule) = Schedule::new(&arrivals, plan.trace_offsets.as_ref()) else {
        return d.outcome(started, &controls.soft);
    };
    let issuer = Issuer::new(Arc::clone(&plan), controls.soft.clone(), started);
    let cap = max_concurrency.map(|n| Arc::new(Semaphore::new(n.max(1) as usize)));
    let mut tasks = JoinSet::new();
    // Until when the dispatcher was last blocked waiting for a slot: an
    // arrival due before then queued behind the cap too, even if a slot is
    // free by the time the dispatcher reaches it.
    let mut cap_blocked_until: Option<Instant> = None;
    let unsent = loop {
        // A trace ends: every arrival was issued.
        let Some(offset) = schedule.next_offset() else {
            break None;
        };
        let due = started + offset;
        if !wait_until(&d, due, &controls.soft).await {
            break Some(Unsent::Due(due));
        }
        let Some((seq, warmup)) = issuer.next(due) else {
            break controls.soft.is_cancelled().then_some(Unsent::Due(due));
        };
        if !d.owns(seq) {
            continue; // another shard's arrival
        }
        let Some((permit, waited)) = take_slot(cap.as_ref(), &controls.soft).await else {
            break Some(Unsent::Issued(seq, warmup, due));
        };
        let held = waited || cap_blocked_until.is_some_and(|t| due < t);
        if waited {
            cap_blocked_until = Some(Instant::now());
        }
        let d = d.clone();
        tasks.spawn(async move {
            d.run_one(seq, warmup, due, held).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    };
    if let Some(first) = unsent {
        account_unsent(&d, &issuer, first, || {
            schedule.next_offset().map(|o| started + o)
        });
    }
    while tasks.join_next().await.is_some() {}
    d.outcome(started, &controls.soft)
}

/// The first arrival left unsent when the dispatcher stopped.
enum Unsent {
    /// Numbered (seq, warmup, due) and waiting for a slot.
    Issued(u64, bool, Instant),
    /// Due at this instant (maybe in the future), not numbered yet.
    Due(Instant),
}

/// Emits a `not_sent` record for `first` and every later arrival of the
/// schedule (`next_due`) that was due by now, within the stop condition.
fn account_unsent(
    d: &Dispatch,
    issuer: &Issuer,
    first: Unsent,
    mut next_due: impl FnMut() -> Option<Instant>,
) {
    let stopped = Instant::now();
    let mut pending = match first {
        Unsent::Issued(seq, warmup, due) => {
            if !d.not_sent(seq, warmup, due, stopped) {
                return;
            }
            None
        }
        Unsent::Due(due) => Some(due),
    };
    loop {
        let Some(due) = pending.take().or_else(&mut next_due) else {
            return;
        };
        if due > stopped {
            return;
        }
        let Some((seq, warmup)) = issuer.admit(due) else {
            return;
        };
        if d.owns(seq) && !d.not_sent(seq, warmup, due, stopped) {
            return;
        }
    }
}

/// Sleeps until `due` unless it has passed; false when the run was stopped.
async fn wait_until(d: &Dispatch, due: Instant, soft: &CancellationToken) -> bool {
    if due > Instant::now() {
        tokio::select! {
            () = d.sleep_until(due) => {}
            () = soft.cancelled() => return false,
        }
    }
    !soft.is_cancelled()
}

/// A concurrency slot (none without a cap) and whether the arrival had to
/// wait for it; `None` when the run was stopped while waiting.
async fn take_slot(
    cap: Option<&Arc<Semaphore>>,
    soft: &CancellationToken,
) -> Option<(Option<OwnedSemaphorePermit>, bool)> {
    let Some(sem) = cap else {
        return Some((None, false));
    };
    if let Ok(p) = Arc::clone(sem).try_acquire_owned() {
        return Some((Some(p), false));
    }
    let slot = tokio::select! {
        // A stop that comes with a freed slot (Ctrl-C cancels the request
        // holding it) must win: the arrival was not sent.
        biased;
        () = soft.cancelled() => None,
        p = Arc::clone(sem).acquire_owned() => p.ok().map(|p| (Some(p), true)),
    };
    slot.filter(|_| !soft.is_cancelled())
}
