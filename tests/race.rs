#![allow(clippy::unwrap_used)]
//! Issue 7: `throtl race` against several in-process simulators at once.

mod common;

use std::process::Command;
use std::time::Duration;

use throtl::api::ApiKind;
use throtl::race::summary::RankMetric;
use throtl::race::{race, RaceConfig, RaceEntry, RaceEvent, RaceTarget, TargetOptions};
use throtl::sim::faults::FaultConfig;
use throtl::sim::{self, SimConfig};
use tokio_util::sync::CancellationToken;

fn ready(name: &str, url: &str) -> RaceEntry {
    RaceEntry::Ready(
        RaceTarget::new(
            name,
            url,
            "throtl-sim",
            ApiKind::OpenaiChat,
            &TargetOptions {
                timeout: Duration::from_secs(10),
                ..Default::default()
            },
        )
        .unwrap(),
    )
}

fn config(targets: Vec<RaceEntry>, runs: u32) -> RaceConfig {
    RaceConfig {
        targets,
        prompt: "Tell me a story".into(),
        max_tokens: 16,
        ignore_eos: false,
        runs,
        rank_by: RankMetric::Ttft,
    }
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_ranks_three_simulators_and_measures_their_configured_ttft() {
    // (name, TTFT ms, ITL ms): 16 tokens → e2e ≈ TTFT + 15 × ITL.
    let profiles = [("a", 20, 15), ("b", 80, 4), ("c", 160, 20)];
    let sims: Vec<_> = profiles
        .iter()
        .map(|&(_, t, i)| common::sim(t, i))
        .collect();
    let targets = profiles
        .iter()
        .zip(&sims)
        .map(|(p, s)| ready(p.0, &s.url()))
        .collect();
    let cfg = config(targets, 5);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut lines = Vec::new();
    let report = race(&cfg, Some(tx), &CancellationToken::new(), |n, o| {
        lines.push((n.to_owned(), o.run));
    })
    .await;
    assert_eq!(lines.len(), 15, "a line per target per run");
    assert_eq!(report.ranking, ["a", "b", "c"], "ranked by TTFT");
    for (t, &(_, ttft, itl)) in report.targets.iter().zip(&profiles) {
        assert_eq!((t.failed, t.runs.len()), (0, 5), "{}", t.name);
        let m = t.ttft_ms.unwrap();
        assert_eq!(m.n, 5);
        let truth = ttft as f64;
        assert!(
            m.median >= truth && m.median < truth + 40.0,
            "{}: TTFT median {} vs configured {truth}",
            t.name,
            m.median
        );
        let e2e = truth + 15.0 * itl as f64;
        let got = t.e2e_ms.unwrap().median;
        assert!(
            got >= e2e && got < e2e + 60.0,
            "{}: e2e {got} vs {e2e}",
            t.name
        );
        assert!(m.min <= m.median && m.median <= m.max && m.stddev >= 0.0);
        assert_eq!(t.runs[0].output_tokens, 16);
    }
    let rank = |m: RankMetric| -> Vec<Option<usize>> {
        report
            .targets
            .iter()
            .map(|t| match m {
                RankMetric::Ttft => t.ranks.ttft,
                RankMetric::E2e => t.ranks.e2e,
                RankMetric::TokensPerS => t.ranks.tokens_per_s,
            })
            .collect()
    };
    // e2e: b (140) < a (245) < c (460); decode rate: b (250/s) > a (67/s) > c (50/s).
    assert_eq!(rank(RankMetric::E2e), [Some(2), Some(1), Some(3)]);
    assert_eq!(rank(RankMetric::TokensPerS), [Some(2), Some(1), Some(3)]);
    // Five runs each, perfectly separated: every lead is significant.
    assert_eq!(report.significance.len(), 3);
    let ttft = &report.significance[0];
    assert_eq!((ttft.leader.as_str(), ttft.runner_up.as_str()), ("a", "b"));
    assert!(report
        .significance
        .iter()
        .all(|s| s.significant && s.p_value < 0.05));
    // The live channel saw every run start and every target's chunks.
    let events: Vec<RaceEvent> = rx.try_iter().collect();
    let starts = events
        .iter()
        .filter(|e| matches!(e, RaceEvent::RunStarted { .. }))
        .count();
    let chunks = events
        .iter()
        .filter(|e| matches!(e, RaceEvent::Chunk { .. }))
        .count();
    assert_eq!(starts, 5);
    assert!(chunks >= 3 * 5 * 16, "{chunks} chunks");
    let text = throtl::race::summary::render(&report);
    assert!(
        text.contains("Ranked by TTFT") && text.contains("significant"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_is_reported_without_stopping_the_others() {
    let ok = common::sim(10, 2);
    let broken = sim::start(SimConfig {
        faults: FaultConfig {
            fail_rate: 1.0,
            ..FaultConfig::default()
        },
        ..SimConfig::default()
    })
    .unwrap();
    let down = format!("http://127.0.0.1:{}", dead_port());
    let targets = vec![
        ready("ok", &ok.url()),
        ready("down", &down),
        ready("http500", &broken.url()),
        RaceEntry::Failed {
            name: "unprobed".into(),
            url: "http://nowhere.invalid".into(),
            reason: "cannot reach it".into(),
        },
    ];
    let report = race(
        &config(targets, 2),
        None,
        &CancellationToken::new(),
        |_, _| {},
    )
    .await;
    assert_eq!(report.ranking[0], "ok");
    let t = |n: &str| report.targets.iter().find(|t| t.name == n).unwrap();
    assert_eq!(t("ok").failed, 0);
    assert_eq!(t("ok").runs.len(), 2);
    let down_err = t("down").runs[0].error.clone().unwrap();
    assert!(down_err.starts_with("connect"), "{down_err}");
    assert_eq!(t("down").failed, 2);
    assert!(t("down").ranks.ttft.is_none());
    assert!(t("http500").runs[0]
        .error
        .as_deref()
        .unwrap()
        .starts_with("http_500"));
    assert!(t("unprobed").runs.is_empty());
    let text = throtl::race::summary::render(&report);
    assert!(
        text.contains(&format!("target 'down' ({down}) failed 2 of 2")),
        "{text}"
    );
    assert!(text.contains("target 'unprobed'"), "{text}");
}

#[test]
fn race_cli_demo_and_an_unreachable_target() {
    let dir = common::tmpdir();
    let json = dir.path().join("race.json");
    let out = Command::new(common::bin())
        .args(["race", "--demo", "--max-tokens", "8", "--no-tui", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["schema"], "throtl.race.v1");
    assert_eq!(v["rank_by"], "e2e");
    // 8 tokens: steady 100 + 7×8 = 156 ms, snappy 30 + 7×20 = 170 ms, sluggish 410 ms.
    assert_eq!(
        v["ranking"],
        serde_json::json!(["steady", "snappy", "sluggish"])
    );
    for name in ["snappy", "steady", "sluggish"] {
        assert!(stderr.contains(&format!("{name}: TTFT")), "{stderr}");
    }

    let ok = common::sim(5, 1);
    let down = format!("http://127.0.0.1:{}", dead_port());
    let out = Command::new(common::bin())
        .args(["race", "--no-tui", "--max-tokens", "4", "--target"])
        .arg(format!("ok={}", ok.url()))
        .arg("--target")
        .arg(format!("down={down}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("target 'down' ({down}) cannot race")),
        "{stderr}"
    );
    assert!(stdout.contains("1     ok"), "{stdout}");

    let out = Command::new(common::bin())
        .args(["race", "--no-tui", "--target"])
        .arg(format!("down={down}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("every target failed"));
}
