#![allow(clippy::unwrap_used)]
//! Issue 7: `bench --target … --interleave` alternates the targets in time
//! and still gives each its full request count and the same prompts.

mod common;

use throtl::engine::Controls;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Absolute start (ms since the epoch) of every sample of a run.
fn absolute_starts(run: &throtl::store::runs::StoredRun) -> Vec<(f64, f64)> {
    let t0 = OffsetDateTime::parse(&run.report.started_at, &Rfc3339).unwrap();
    let base = t0.unix_timestamp_nanos() as f64 / 1e6;
    run.samples
        .iter()
        .map(|s| (base + s.start_ms, base + s.end_ms))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_targets_alternate_in_time_and_each_gets_every_request() {
    let (a, b) = (common::sim(5, 1), common::sim(5, 1));
    let dir = common::tmpdir();
    let cfgs: Vec<_> = [&a, &b]
        .iter()
        .map(|s| {
            let mut c = common::config(&s.url(), 2, 12, 4);
            c.warmup = 2;
            c.results.db = Some(dir.path().join("runs.db"));
            c.results.group = Some("g".into());
            c
        })
        .collect();
    let mut turns = Vec::new();
    let runs = throtl::multi::run_interleaved(&cfgs, 3, Controls::default(), |t, r, _| {
        turns.push((t, r));
    })
    .await
    .unwrap();
    // Round r starts with target r mod 2.
    assert_eq!(turns, [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (1, 2)]);
    for run in &runs {
        assert_eq!(run.report.requests.ok, 12);
        assert_eq!(run.report.load.warmup_requests, 2);
        // The same prompts, in the same order, for every target.
        let mut seqs: Vec<u64> = run.samples.iter().map(|s| s.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (2..14).collect::<Vec<u64>>());
    }
    // Every sample of both runs on one time line: the targets' blocks alternate
    // A | B B | A A | B (merged where a target has two turns in a row), never overlapping.
    let mut all: Vec<(f64, f64, usize)> = runs
        .iter()
        .enumerate()
        .flat_map(|(i, r)| absolute_starts(r).into_iter().map(move |(s, e)| (s, e, i)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut blocks: Vec<(usize, f64, f64)> = Vec::new();
    for (s, e, i) in all {
        match blocks.last_mut() {
            Some(b) if b.0 == i => b.2 = b.2.max(e),
            _ => blocks.push((i, s, e)),
        }
    }
    let order: Vec<usize> = blocks.iter().map(|b| b.0).collect();
    assert_eq!(order, [0, 1, 0, 1], "{blocks:?}");
    for w in blocks.windows(2) {
        // 2 ms of slack for the wall-clock anchoring of each run.
        assert!(w[0].2 <= w[1].1 + 2.0, "blocks overlap: {blocks:?}");
    }
    // Throughput is over each target's own turns, not the whole interleaved span.
    for run in &runs {
        let span = run.samples.iter().map(|s| s.end_ms).fold(0.0, f64::max)
            - run
                .samples
                .iter()
                .map(|s| s.start_ms)
                .fold(f64::MAX, f64::min);
        assert!(
            run.report.throughput.window_s * 1000.0 < span,
            "{} vs {span}",
            run.report.throughput.window_s
        );
    }
    let store = throtl::store::Store::open(&dir.path().join("runs.db")).unwrap();
    assert_eq!(store.group_runs("g").unwrap().len(), 2);
}
