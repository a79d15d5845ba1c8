#![allow(clippy::unwrap_used)]
//! Issue 4: open loop, users, time series, tokenizers, datasets, SLOs, sweeps.

use std::path::PathBuf;
use std::time::Duration;

use throtl::api::ApiKind;
use throtl::config::{BenchConfig, ProgressMode, WorkloadOptions};
use throtl::engine::arrival::{ArrivalConfig, ArrivalProcess};
use throtl::engine::dataset::DatasetSpec;
use throtl::engine::tokenizer::{Tokenizer, TokenizerSpec};
use throtl::engine::workload::{synthetic, SyntheticSpec, TokenLengths};
use throtl::engine::{Controls, LoadShape, StopCondition, ThinkTime};
use throtl::sim::{self, SimConfig};
use throtl::slo::Slo;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn base(url: String) -> BenchConfig {
    BenchConfig {
        url,
        model: "throtl-sim".into(),
        api: ApiKind::OpenaiChat,
        concurrency: 1,
        stop: StopCondition::Requests(40),
        input_tokens: 32,
        output_tokens: 8,
        warmup: 0,
        timeout: Duration::from_secs(20),
        ignore_eos: true,
        seed: 1,
        json_out: None,
        records_out: None,
        progress: ProgressMode::Quiet,
        grace: Duration::from_secs(1),
        api_key_env: None,
        api_options: Default::default(),
        results: Default::default(),
        client: Default::default(),
        workload: WorkloadOptions::default(),
    }
}

fn open(rate: f64, cap: Option<u32>) -> LoadShape {
    let arrivals = ArrivalConfig {
        rate,
        process: ArrivalProcess::Poisson,
        seed: 7,
        ramp_up: Duration::ZERO,
    };
    LoadShape::Open {
        arrivals,
        max_concurrency: cap,
    }
}

fn fast_sim() -> sim::SimHandle {
    sim::start(SimConfig {
        ttft: Duration::from_millis(5),
        itl: Duration::from_millis(1),
        ..SimConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn open_loop_reports_offered_vs_achieved_and_every_arrival() {
    let server = fast_sim();
    let mut cfg = base(server.url());
    cfg.stop = StopCondition::Requests(60);
    cfg.warmup = 5;
    cfg.workload.shape = open(60.0, None);
    let r = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    let s = r.schedule.as_ref().unwrap();
    assert_eq!(s.mode, "open");
    assert_eq!(r.load.mode, "open");
    assert_eq!(s.arrivals, 60, "every measured arrival is accounted for");
    assert_eq!(s.on_time + s.late + s.held_by_cap, 60);
    assert_eq!(s.held_by_cap, 0);
    assert_eq!(r.requests.ok, 60);
    assert_eq!(r.load.warmup_requests, 5);
    // 59 Poisson gaps: the offered rate is within ±40% of the target with overwhelming probability.
    assert!(
        (36.0..84.0).contains(&s.offered_rate_per_s),
        "{}",
        s.offered_rate_per_s
    );
    assert!(
        (s.sent_rate_per_s - s.offered_rate_per_s).abs() / s.offered_rate_per_s < 0.2,
        "{s:?}"
    );
    // Per-second series covers every request.
    let ok: u64 = r.timeseries.iter().map(|p| p.ok).sum();
    let sent: u64 = r.timeseries.iter().map(|p| p.sent).sum();
    assert_eq!((ok, sent), (60, 65));
    assert!(r
        .timeseries
        .iter()
        .any(|p| p.in_flight > 0.0 && p.e2e_ms.p50 > 0.0));
}

#[tokio::test]
async fn cap_holds_arrivals_and_their_wait_counts_as_latency() {
    // The server needs ≥ 5 + 19·1 ms per request; 2 slots serve ≲ 80 req/s; offer 400 req/s.
    let server = sim::start(SimConfig {
        ttft: Duration::from_millis(20),
        itl: Duration::from_millis(2),
        ..SimConfig::default()
    })
    .unwrap();
    let mut cfg = base(server.url());
    cfg.output_tokens = 5;
    cfg.stop = StopCondition::Requests(40);
    cfg.workload.shape = open(400.0, Some(2));
    let r = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    let s = r.schedule.as_ref().unwrap();
    assert_eq!(s.arrivals, 40);
    assert!(s.held_by_cap >= 30, "{s:?}");
    assert!(r.load.peak_in_flight <= 2);
    // Service time is ~28 ms; 40 requests through 2 slots take ≥ 20·28 ms, and
    // the last arrival (due at ~0.1 s) waits for most of it.
    assert!(
        r.latency_ms.e2e.max > 300.0,
        "latency must include the wait: {:?}",
        r.latency_ms.e2e
    );
    assert!(s.completed_rate_per_s < 0.5 * s.offered_rate_per_s);
    assert!(
        r.warnings.iter().any(|w| w.contains("--max-concurrency")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn client_lag_under_overload_is_reported_as_late() {
    // A single-threaded client runtime that another task keeps blocking: the
    // scheduler cannot send on time, and the report must say so.
    let server = fast_sim();
    let mut cfg = base(server.url());
    cfg.stop = StopCondition::Requests(60);
    cfg.workload.shape = open(200.0, None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(async {
        let hog = tokio::spawn(async {
            loop {
                std::thread::sleep(Duration::from_millis(40));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let r = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
        hog.abort();
        r
    });
    let s = r.schedule.as_ref().unwrap();
    assert_eq!(s.arrivals, 60);
    assert!(s.late >= 10, "{s:?}");
    assert!(
        r.client.send_lag_ms.max >= 20.0,
        "{:?}",
        r.client.send_lag_ms
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("late")),
        "{:?}",
        r.warnings
    );
}

#[tokio::test]
async fn users_with_think_time_pace_their_requests() {
    let server = fast_sim();
    let mut cfg = base(server.url());
    cfg.concurrency = 2;
    cfg.stop = StopCondition::Requests(8);
    cfg.workload.shape = LoadShape::Closed {
        think: Some(ThinkTime {
            mean: Duration::from_millis(100),
            jitter: Duration::from_millis(20),
        }),
    };
    let r = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    assert_eq!(r.load.mode, "users");
    assert_eq!(r.requests.ok, 8);
    // Each user sends 4 requests with ≥ 3 think times of ≥ 80 ms between them.
    assert!(r.throughput.window_s >= 0.24, "{}", r.throughput.window_s);
    assert!(!r
        .warnings
        .iter()
        .any(|w| w.starts_with("achieved concurrency")));
}

fn exact_lengths(spec: TokenizerSpec) {
    let tok = Tokenizer::load(&spec).unwrap();
    for (n, prefix) in [(1, 0), (7, 0), (64, 0), (513, 0), (50, 100)] {
        let synth = SyntheticSpec {
            input: TokenLengths::Fixed { n },
            output: TokenLengths::Fixed { n: 4 },
            prefix_tokens: prefix,
            prefix_groups: 2,
            seed: 3,
        };
        let w = synthetic(&synth, &tok, 6);
        for i in 0..6 {
            let item = w.item(i);
            assert_eq!(
                tok.count(&item.prompt) as u32,
                n + prefix,
                "{spec:?} n={n} prefix={prefix}"
            );
            assert_eq!(item.input_tokens, Some(n + prefix));
        }
        if prefix > 0 {
            let words = |i: u64| {
                w.item(i)
                    .prompt
                    .split(' ')
                    .take(30)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            assert_eq!(words(0), words(2), "same group shares its prefix");
            assert_ne!(words(0), words(1), "groups differ");
            assert_ne!(w.item(0).prompt, w.item(2).prompt, "suffixes differ");
        }
    }
    let uniform = SyntheticSpec {
        input: TokenLengths::Uniform { lo: 10, hi: 300 },
        ..SyntheticSpec {
            input: TokenLengths::Fixed { n: 0 },
            output: TokenLengths::Fixed { n: 1 },
            prefix_tokens: 0,
            prefix_groups: 1,
            seed: 9,
        }
    };
    // 300 items: beyond the first 64 only spot checks run while building, so count them all here.
    let w = synthetic(&uniform, &tok, 300);
    for i in 0..300 {
        let item = w.item(i);
        let c = tok.count(&item.prompt) as u32;
        assert_eq!(Some(c), item.input_tokens);
        assert!((10..=300).contains(&c));
    }
}

#[test]
fn token_lengths_are_exact_with_cl100k() {
    exact_lengths(TokenizerSpec::Cl100kBase);
}

#[test]
fn token_lengths_are_exact_with_o200k() {
    exact_lengths(TokenizerSpec::O200kBase);
}

#[test]
fn token_lengths_are_exact_with_a_tokenizer_json() {
    let spec = TokenizerSpec::HuggingFace(fixture("tokenizers/tiny-bpe.json"));
    let tok = Tokenizer::load(&spec).unwrap();
    assert!(tok.count("company") > 1, "the fixture splits some words");
    assert_eq!(tok.count("time people"), 2);
    exact_lengths(spec);
}

#[test]
fn missing_tokenizer_file_is_a_clear_error() {
    let e = Tokenizer::load(&TokenizerSpec::HuggingFace(
        "/nonexistent/tokenizer.json".into(),
    ))
    .err()
    .unwrap();
    assert!(
        e.0.contains("--tokenizer") && e.0.contains("no such file"),
        "{}",
        e.0
    );
}

#[tokio::test]
async fn local_and_server_prompt_counts_are_compared() {
    let server = fast_sim();
    // Synthetic cl100k prompts: the simulator counts words, which are single tokens here.
    let mut cfg = base(server.url());
    cfg.stop = StopCondition::Requests(10);
    cfg.workload.tokenizer = Some(TokenizerSpec::Cl100kBase);
    cfg.workload.input = Some(TokenLengths::Uniform { lo: 20, hi: 60 });
    let r = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    let w = r.workload.as_ref().unwrap();
    assert_eq!(w.input_tokens_compared, 10);
    assert_eq!(w.input_tokens_local, w.input_tokens_server);
    assert!(!r.warnings.iter().any(|x| x.contains("prompt tokens")));
    // A dataset of long words: many tokens each, one word each for the simulator.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    std::fs::write(&path, "{\"prompt\": \"antidisestablishmentarianism floccinaucinihilipilification\", \"max_tokens\": 3}\n").unwrap();
    cfg.workload.input = None;
    cfg.workload.dataset = Some(DatasetSpec::Jsonl(path));
    let r = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    assert!(
        r.warnings.iter().any(|x| x.contains("prompt tokens")),
        "{:?}",
        r.warnings
    );
    assert!(
        r.warnings.iter().any(|x| x.contains("distinct prompts")),
        "{:?}",
        r.warnings
    );
}

#[tokio::test]
async fn bad_dataset_line_stops_the_bench_before_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(
        &path,
        "{\"prompt\": \"ok\"}\n{\"prompt\": \"ok\"}\n{\"prompt\": 12}\n",
    )
    .unwrap();
    let mut cfg = base("http://127.0.0.1:9".into());
    cfg.workload.tokenizer = Some(TokenizerSpec::Cl100kBase);
    cfg.workload.dataset = Some(DatasetSpec::Jsonl(path.clone()));
    let e = throtl::bench::run(&cfg, Controls::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("{}:3:", path.display())), "{e}");
}

#[tokio::test]
async fn slo_goodput_counts_requests_meeting_every_objective() {
    let server = sim::start(SimConfig {
        ttft: Duration::from_millis(30),
        itl: Duration::from_millis(2),
        ..SimConfig::default()
    })
    .unwrap();
    let mut cfg = base(server.url());
    cfg.concurrency = 2;
    cfg.stop = StopCondition::Requests(20);
    cfg.workload.slos = vec![
        Slo::parse("ttft=500ms").unwrap(),
        Slo::parse("tpot=50ms").unwrap(),
    ];
    let r = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    let slo = r.slo.as_ref().unwrap();
    assert!(slo.met);
    assert_eq!(slo.good_requests, 20);
    assert!((slo.goodput_requests_per_s - r.throughput.requests_per_s).abs() < 1e-9);
    cfg.workload.slos = vec![Slo::parse("ttft=10ms").unwrap()];
    let r = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    let slo = r.slo.as_ref().unwrap();
    assert!(!slo.met && slo.good_requests == 0 && slo.goodput_requests_per_s == 0.0);
    assert!(slo.objectives[0].observed_ms >= 30.0);
}

#[tokio::test]
async fn ramp_up_staggers_users_and_labels_ramp_requests_as_warmup() {
    let server = fast_sim();
    let mut cfg = base(server.url());
    cfg.concurrency = 4;
    cfg.stop = StopCondition::Requests(20);
    cfg.workload.ramp_up = Duration::from_millis(400);
    let r = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    assert_eq!(r.requests.ok, 20);
    // Requests take ~12 ms; users start at 0, 100, 200, 300 ms, so many are due during the ramp.
    assert!(r.load.warmup_requests >= 10, "{}", r.load.warmup_requests);
    let warm: u64 = r.timeseries.iter().map(|p| p.warmup).sum();
    assert_eq!(
        warm, r.load.warmup_requests,
        "the series labels ramp requests as warmup"
    );
}
