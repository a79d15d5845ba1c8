#![allow(clippy::unwrap_used)]
//! Issue 4: an open loop interrupted (soft stop, as Ctrl-C does) while
//! arrivals wait for a `--max-concurrency` slot still accounts for every
//! arrival that was due: none is lost.

mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use throtl::api::ApiKind;
use throtl::engine::arrival::{ArrivalConfig, ArrivalProcess};
use throtl::engine::record::{ErrorClass, RequestRecord};
use throtl::engine::request::Transport;
use throtl::engine::workload::{TokenLengths, Workload};
use throtl::engine::{Controls, LoadPlan, LoadShape, StopCondition};

/// 50 arrivals/s, evenly spaced (the k-th is due at k·20 ms), at most one in flight.
fn shape() -> LoadShape {
    LoadShape::Open {
        arrivals: ArrivalConfig {
            rate: 50.0,
            process: ArrivalProcess::Constant,
            seed: 1,
            ramp_up: Duration::ZERO,
        },
        max_concurrency: Some(1),
    }
}

/// Stops issuing after `after`, then cancels in flight; returns the stop instant.
fn interrupt_after(controls: &Controls, after: Duration) -> tokio::task::JoinHandle<Instant> {
    let c = controls.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let at = Instant::now();
        c.soft.cancel();
        c.hard.cancel();
        at
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue4_interrupt_while_waiting_for_a_slot_accounts_every_due_arrival() {
    // A slow server: the first request holds the only slot for 2 s.
    let server = common::sim(2000, 10);
    let transport = Arc::new(Transport::new(
        &server.url(),
        Default::default(),
        Arc::from(ApiKind::OpenaiChat.protocol()),
        Duration::from_secs(10),
    ));
    let plan = Arc::new(LoadPlan {
        concurrency: 1,
        stop: StopCondition::Duration(Duration::from_secs(30)),
        warmup: 0,
        model: "throtl-sim".into(),
        ignore_eos: true,
        workload: Workload::words(4, 4, &TokenLengths::Fixed { n: 4 }, 1),
        shape: shape(),
        ramp_up: Duration::ZERO,
        turns: 1,
        first_seq: 0,
        retry: Default::default(),
        cold_connections: false,
        shard: None,
        trace_offsets: None,
    });
    let controls = Controls::default();
    let stopper = interrupt_after(&controls, Duration::from_millis(300));
    let (tx, rx) = mpsc::channel();
    throtl::engine::run(transport, plan, tx, controls).await;
    let stopped_at = stopper.await.unwrap();
    let mut recs: Vec<RequestRecord> = rx.try_iter().collect();
    recs.sort_by_key(|r| r.seq);

    // Every numbered arrival has a record: seqs are 0..n without a gap.
    let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..recs.len() as u64).collect::<Vec<_>>());
    // ~300 ms at 50/s: about 15 arrivals were due (generous bounds).
    assert!((8..=20).contains(&recs.len()), "{}", recs.len());
    // The first one was sent and cut by the hard stop; the rest never left.
    assert!(!recs[0].not_sent);
    assert_eq!(recs[0].error, Some(ErrorClass::Cancelled));
    for r in &recs[1..] {
        assert!(r.not_sent, "seq {}", r.seq);
        assert_eq!(r.error, Some(ErrorClass::Cancelled));
        assert!(r.scheduled <= r.end);
    }
    // Nothing due before the stop is missing: the arrival after the last
    // record (20 ms later) was not due yet when the run was stopped.
    let last = recs.last().unwrap().scheduled;
    assert!(last <= stopped_at + Duration::from_millis(5));
    assert!(last + Duration::from_millis(20) > stopped_at);
    // Consecutive arrivals are 20 ms apart: none skipped in the middle.
    for w in recs.windows(2) {
        let gap = w[1].scheduled - w[0].scheduled;
        assert!(
            (Duration::from_millis(19)..=Duration::from_millis(21)).contains(&gap),
            "{gap:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_open_loop_reports_not_sent_arrivals_in_the_json() {
    let server = common::sim(2000, 10);
    let mut cfg = common::config(&server.url(), 1, 1, 4);
    cfg.stop = StopCondition::Duration(Duration::from_secs(30));
    cfg.workload.shape = shape();
    let controls = Controls::default();
    let stopper = interrupt_after(&controls, Duration::from_millis(300));
    let r = throtl::bench::run(&cfg, controls).await.unwrap();
    stopper.await.unwrap();
    let s = r.schedule.as_ref().unwrap();
    assert!(s.not_sent_interrupted >= 5, "{s:?}");
    assert_eq!(
        s.on_time + s.late + s.held_by_cap + s.not_sent_interrupted,
        s.arrivals,
        "{s:?}"
    );
    assert_eq!(r.requests.cancelled, s.arrivals, "all were cut by the stop");
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v["schedule"]["not_sent_interrupted"].as_u64(),
        Some(s.not_sent_interrupted)
    );
}
