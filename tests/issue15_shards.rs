//! Issue 15: sharded runs merge into exactly the report one machine gives.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use throtl::api::ApiKind;
use throtl::engine::arrival::{ArrivalConfig, ArrivalProcess};
use throtl::engine::record::{ErrorClass, RequestRecord};
use throtl::engine::request::Transport;
use throtl::engine::workload::{TokenLengths, Workload};
use throtl::engine::{Controls, LoadPlan, LoadShape, ShardSlice, StopCondition};
use throtl::stats::portable::{PortableStats, Timebase};
use throtl::stats::{Stats, TimeSeries};

fn record(
    t0: Instant,
    seq: u64,
    ttft_us: u64,
    tokens: u64,
    gap_us: u64,
    fail: bool,
) -> RequestRecord {
    let us = Duration::from_micros;
    let mut r = RequestRecord::new(seq, false, t0 + us(seq * 997), tokens as usize);
    r.sent = r.scheduled + us(seq % 7);
    for k in 0..tokens {
        r.token_times.push(r.scheduled + us(ttft_us + k * gap_us));
    }
    r.end = r.scheduled + us(ttft_us + tokens * gap_us);
    r.connect = Some(Duration::ZERO);
    if fail {
        r.error = Some(ErrorClass::Http(500));
        r.error_sample = Some("boom".into());
    }
    r
}

fn stats_of<'a>(t0: Instant, recs: impl Iterator<Item = &'a RequestRecord>) -> Stats {
    let mut s = Stats {
        series: TimeSeries::starting_at(t0),
        ..Default::default()
    };
    for r in recs {
        s.ingest(r, 16);
    }
    s
}

/// Crosses a machine: to JSON and back onto another instant.
fn ship(s: &Stats, t0: Instant, to: Instant) -> Stats {
    let p = PortableStats::from_stats(
        s,
        Timebase {
            origin: t0,
            shift: Duration::ZERO,
        },
    );
    let text = serde_json::to_string(&p).unwrap();
    serde_json::from_str::<PortableStats>(&text)
        .unwrap()
        .into_stats(to)
}

fn summary_of(s: &Stats) -> String {
    let h: Vec<_> = s
        .histograms()
        .into_iter()
        .map(|(n, h)| {
            (
                n,
                h.len(),
                h.min(),
                h.max(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.mean(),
            )
        })
        .collect();
    format!(
        "{h:?} ok={} errors={:?} tokens={} busy={:?} window={:?} series={:?} send_lag={:?} itl_req={:?}",
        s.ok, s.errors, s.output_tokens, s.busy, s.window(), s.series.points(),
        s.send_lag.distribution(1000.0), s.itl_request.distribution(1000.0)
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn issue15_shard_stats_merge_to_the_union_exactly(
        reqs in proptest::collection::vec((1u64..400_000, 1u64..40, 1u64..60_000, proptest::bool::weighted(0.1)), 1..120),
        shards in 1u32..6,
    ) {
        let t0 = Instant::now();
        let recs: Vec<RequestRecord> = reqs
            .iter()
            .enumerate()
            .map(|(i, &(ttft, tok, gap, fail))| record(t0, i as u64, ttft, tok, gap, fail))
            .collect();
        let whole = stats_of(t0, recs.iter());
        let elsewhere = t0 + Duration::from_secs(5);
        let mut merged: Option<Stats> = None;
        for k in 0..shards {
            let slice = ShardSlice { index: k, count: shards };
            let part = stats_of(t0, recs.iter().filter(|r| slice.owns(r.seq)));
            let shipped = ship(&part, t0, elsewhere);
            match merged.as_mut() {
                Some(m) => m.merge(&shipped),
                None => merged = Some(shipped),
            }
        }
        let merged = merged.unwrap();
        prop_assert_eq!(summary_of(&merged), summary_of(&whole));
        for ((n, a), (_, b)) in merged.histograms().iter().zip(whole.histograms().iter()) {
            prop_assert!(a == b, "histogram {} differs", n);
        }
    }
}

fn plan(
    shape: LoadShape,
    stop: StopCondition,
    shard: Option<ShardSlice>,
    users: u32,
) -> Arc<LoadPlan> {
    Arc::new(LoadPlan {
        concurrency: users,
        stop,
        warmup: 0,
        model: "throtl-sim".into(),
        ignore_eos: true,
        workload: Workload::words(64, 4, &TokenLengths::Fixed { n: 2 }, 3),
        shape,
        ramp_up: Duration::ZERO,
        first_seq: 0,
        turns: 1,
        retry: Default::default(),
        cold_connections: false,
        shard,
        trace_offsets: None,
    })
}

/// (seq, scheduled offset from the run start in ms) of every record.
async fn schedule(url: &str, p: Arc<LoadPlan>) -> Vec<(u64, f64)> {
    let transport = Arc::new(Transport::new(
        url,
        Default::default(),
        Arc::from(ApiKind::OpenaiChat.protocol()),
        Duration::from_secs(10),
    ));
    let (tx, rx) = mpsc::channel();
    let out = throtl::engine::run(transport, p, tx, Controls::default()).await;
    let mut v: Vec<(u64, f64)> = rx
        .try_iter()
        .map(|r| (r.seq, (r.scheduled - out.started).as_secs_f64() * 1000.0))
        .collect();
    v.sort_by_key(|x| x.0);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue15_open_loop_slices_are_disjoint_and_make_up_the_whole_schedule() {
    let server = common::sim(2, 1);
    for process in [
        ArrivalProcess::Constant,
        ArrivalProcess::Poisson,
        ArrivalProcess::Gamma { cv: 3.0 },
    ] {
        let shape = LoadShape::Open {
            arrivals: ArrivalConfig {
                rate: 300.0,
                process,
                seed: 9,
                ramp_up: Duration::ZERO,
            },
            max_concurrency: None,
        };
        let stop = StopCondition::Requests(90);
        let whole = schedule(&server.url(), plan(shape, stop, None, 1)).await;
        assert_eq!(whole.len(), 90);
        let mut union = Vec::new();
        let mut seen = BTreeSet::new();
        for k in 0..3 {
            let part = schedule(
                &server.url(),
                plan(shape, stop, Some(ShardSlice { index: k, count: 3 }), 1),
            )
            .await;
            for &(seq, at) in &part {
                assert!(seen.insert(seq), "{seq} in two slices");
                assert_eq!(seq % 3, u64::from(k));
                union.push((seq, at));
            }
        }
        union.sort_by_key(|x| x.0);
        assert_eq!(union.len(), whole.len(), "{process:?}");
        for (a, b) in union.iter().zip(&whole) {
            assert_eq!(a.0, b.0);
            // The same seeded schedule: due times agree (to the µs rounding
            // of each run's own start).
            assert!(
                (a.1 - b.1).abs() < 0.01,
                "{process:?} seq {}: {} vs {}",
                a.0,
                a.1,
                b.1
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue15_closed_loop_shards_split_users_and_requests() {
    let server = common::sim(2, 1);
    let shape = LoadShape::Closed { think: None };
    let mut all = BTreeSet::new();
    let mut total = 0;
    for k in 0..3 {
        let slice = ShardSlice { index: k, count: 3 };
        // 7 users and 40 requests over 3 shards: 3/2/2 users, 14/13/13 requests.
        let stop = StopCondition::Requests(slice.share(40));
        let part = schedule(&server.url(), plan(shape, stop, Some(slice), 7)).await;
        assert_eq!(part.len() as u64, slice.share(40));
        total += part.len();
        for (seq, _) in part {
            assert!(all.insert(seq), "{seq} twice");
        }
    }
    assert_eq!(total, 40);
    assert_eq!(
        [0, 1, 2].map(|k| ShardSlice { index: k, count: 3 }.share(7)),
        [3, 2, 2]
    );
    assert!(ShardSlice::parse("3/3").is_err() && ShardSlice::parse("x").is_err());
    assert_eq!(
        ShardSlice::parse("1/4").unwrap(),
        ShardSlice { index: 1, count: 4 }
    );
}

fn throtl(args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::bin())
        .args(args)
        .output()
        .unwrap()
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn issue15_two_shard_processes_merge_into_the_single_machine_report() {
    let server = common::sim(20, 2);
    let dir = common::tmpdir();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let url = server.url();
    let plan = [
        "--url",
        url.as_str(),
        "-m",
        "throtl-sim",
        "--api",
        "openai-chat",
        "--rate",
        "60",
        "--arrival",
        "poisson",
        "-n",
        "120",
        "--warmup",
        "0",
        "--output-tokens",
        "8",
        "-q",
        "--tokenizer",
        "words",
    ];
    let db = p("history.db");
    let single = throtl(
        &[
            &["bench"][..],
            &plan,
            &["--json", &p("single.json"), "--db", &db],
        ]
        .concat(),
    );
    assert!(
        single.status.success(),
        "{}",
        String::from_utf8_lossy(&single.stderr)
    );
    let t0 = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let t0 = t0
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let shards: Vec<_> = (0..2)
        .map(|k| {
            let shard = format!("{k}/2");
            let out = p(&format!("shard-{k}.json"));
            let args: Vec<String> = ["bench"]
                .iter()
                .chain(plan.iter())
                .map(|s| s.to_string())
                .chain([
                    "--shard".into(),
                    shard,
                    "--start-at".into(),
                    t0.clone(),
                    "--shard-out".into(),
                    out,
                    "--no-store".into(),
                ])
                .collect();
            std::process::Command::new(common::bin())
                .args(&args)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in shards {
        assert!(c.wait().unwrap().success());
    }
    let merged = throtl(&[
        "merge",
        &p("shard-0.json"),
        &p("shard-1.json"),
        "--db",
        &db,
        "--json",
        &p("merged.json"),
    ]);
    assert!(
        merged.status.success(),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );
    let (a, b) = (
        json(&dir.path().join("single.json")),
        json(&dir.path().join("merged.json")),
    );
    for key in ["total", "ok", "failed"] {
        assert_eq!(a["requests"][key], b["requests"][key], "{key}");
    }
    assert_eq!(b["requests"]["ok"], 120);
    assert_eq!(a["schedule"]["arrivals"], b["schedule"]["arrivals"]);
    // The same seeded schedule: the same offered rate.
    let rate = |v: &serde_json::Value| v["schedule"]["offered_rate_per_s"].as_f64().unwrap();
    assert!(
        (rate(&a) - rate(&b)).abs() < 0.01 * rate(&a),
        "{} vs {}",
        rate(&a),
        rate(&b)
    );
    // Latencies from fixed delays: equal within the histograms' precision
    // plus scheduling noise.
    let ttft = |v: &serde_json::Value| v["latency_ms"]["ttft"]["p50"].as_f64().unwrap();
    assert!(
        (ttft(&a) - ttft(&b)).abs() < 1.0,
        "{} vs {}",
        ttft(&a),
        ttft(&b)
    );
    assert!(b["warnings"]
        .to_string()
        .contains("merged from 2 of 2 shards"));
    // Stored as one run; `compare` finds no significant TTFT or e2e regression.
    let ids = [a["run_id"].as_str().unwrap(), b["run_id"].as_str().unwrap()];
    let cmp = throtl(&[
        "compare",
        ids[0],
        ids[1],
        "--db",
        &db,
        "--fail-on",
        "ttft.p50>+5%",
        "--fail-on",
        "e2e.p50>+5%",
    ]);
    assert_eq!(
        cmp.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&cmp.stdout),
        String::from_utf8_lossy(&cmp.stderr)
    );

    // Mixed, duplicate and missing shards are refused, naming the offender.
    let dup = throtl(&[
        "merge",
        &p("shard-0.json"),
        &p("shard-0.json"),
        "--no-store",
    ]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("shard 0/2 again"));
    let missing = throtl(&["merge", &p("shard-1.json"), "--no-store"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("[0]"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let partial = throtl(&[
        "merge",
        &p("shard-1.json"),
        "--no-store",
        "--allow-partial",
        "--json",
        &p("partial.json"),
    ]);
    assert!(partial.status.success());
    assert!(json(&dir.path().join("partial.json"))["warnings"]
        .to_string()
        .contains("missing"));
}

#[test]
fn issue15_a_shard_whose_clock_is_a_second_off_shifts_windows_not_latencies() {
    let server = common::sim(20, 2);
    let dir = common::tmpdir();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let url = server.url();
    let plan = |n: &'static str| {
        [
            "bench",
            "--url",
            url.as_str(),
            "-m",
            "throtl-sim",
            "--api",
            "openai-chat",
            "-c",
            "4",
            "-n",
            n,
            "--warmup",
            "0",
            "--output-tokens",
            "8",
            "--no-store",
            "-q",
            "--tokenizer",
            "words",
        ]
        .map(String::from)
        .to_vec()
    };
    let at = |secs: i64| {
        (time::OffsetDateTime::now_utc() + time::Duration::seconds(secs))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    // Shard 1's clock runs a second behind: it starts a second late in
    // real time, believing it is on time.
    let (t0, t0_behind) = (at(2), at(3));
    let run_shard = |k: u32, t: &str, n: &'static str, out: &str| {
        let mut args = plan(n);
        args.extend([
            "--shard".into(),
            format!("{k}/2"),
            "--start-at".into(),
            t.into(),
            "--shard-out".into(),
            out.into(),
        ]);
        std::process::Command::new(common::bin())
            .args(&args)
            .spawn()
            .unwrap()
    };
    let mut a = run_shard(0, &t0, "40", &p("s0.json"));
    let mut b = run_shard(1, &t0_behind, "40", &p("s1.json"));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let out = throtl(&[
        "merge",
        &p("s0.json"),
        &p("s1.json"),
        "--no-store",
        "--json",
        &p("m.json"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = json(&dir.path().join("m.json"));
    assert_eq!(m["requests"]["ok"], 40);
    // The simulator's fixed 20 ms TTFT, not shifted by the second (the
    // median: a p99 of 40 requests on a busy machine says little).
    let ttft = m["latency_ms"]["ttft"]["p50"].as_f64().unwrap();
    assert!((20.0..24.0).contains(&ttft), "latencies unchanged: {ttft}");
    // Each shard measured on its own clock from the T0 it was given: the
    // merge aligns them (it cannot see a wrong clock), so the windows
    // overlap instead of spanning the real second apart, and it says so
    // when the shards' T0s differ.
    assert!(m["throughput"]["window_s"].as_f64().unwrap() < 1.0);
    assert!(m["warnings"]
        .to_string()
        .contains("different start instants"));

    // A shard of another plan is refused, naming the file.
    let mut c = run_shard(1, &at(0), "80", &p("other.json"));
    assert!(c.wait().unwrap().success());
    let mixed = throtl(&["merge", &p("s0.json"), &p("other.json"), "--no-store"]);
    assert!(!mixed.status.success());
    let err = String::from_utf8_lossy(&mixed.stderr);
    assert!(
        err.contains("other.json") && err.contains("another plan"),
        "{err}"
    );
}

#[test]
fn issue15_the_job_manifest_is_a_valid_indexed_job() {
    let out = throtl(&[
        "k8s",
        "job",
        "--shards",
        "4",
        "--image",
        "ghcr.io/acme/throtl:1",
        "--name",
        "load-test",
        "--",
        "bench",
        "--url",
        "http://vllm.ml:8000",
        "--rate",
        "400",
        "-d",
        "5m",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml: serde_json::Value = serde_norway::from_slice(&out.stdout).unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/k8s/job-batch-v1.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&yaml)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{yaml:#}");
    let spec = &yaml["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!(
        (spec["completions"].as_u64(), spec["parallelism"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(spec["backoffLimit"], 0);
    let c = &spec["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(at("--shard"), "$(JOB_COMPLETION_INDEX)/4");
    assert_eq!(at("--shard-out"), "-");
    assert!(
        time::OffsetDateTime::parse(
            at("--start-at"),
            &time::format_description::well_known::Rfc3339
        )
        .unwrap()
            > time::OffsetDateTime::now_utc()
    );
    assert_eq!(c["env"][0]["name"], "JOB_COMPLETION_INDEX");
    // The flags inside must be valid bench flags, and the job sets its own shard flags.
    let bad = throtl(&[
        "k8s", "job", "--shards", "2", "--image", "i", "--", "bench", "--rate", "soon",
    ]);
    assert!(!bad.status.success());
    let own = throtl(&[
        "k8s", "job", "--shards", "2", "--image", "i", "--", "bench", "--url", "http://x",
        "--shard", "0/2",
    ]);
    assert!(String::from_utf8_lossy(&own.stderr).contains("set by the job itself"));
}

#[test]
fn issue15_collect_reads_the_shards_from_pod_logs_and_merges_them() {
    let server = common::sim(10, 1);
    let dir = common::tmpdir();
    let url = server.url();
    // Two "pods": shard benches printing their shard files to stdout, as in a pod log.
    let logs: Vec<String> = (0..2)
        .map(|k| {
            let out = throtl(&[
                "bench",
                "--url",
                &url,
                "-m",
                "throtl-sim",
                "--api",
                "openai-chat",
                "-c",
                "2",
                "-n",
                "20",
                "--warmup",
                "0",
                "--output-tokens",
                "4",
                "--tokenizer",
                "words",
                "--no-store",
                "--no-tui",
                "--shard",
                &format!("{k}/2"),
                "--shard-out",
                "-",
            ]);
            assert!(out.status.success());
            let path = dir.path().join(format!("pod-{k}.log"));
            std::fs::write(&path, &out.stdout).unwrap();
            path.to_string_lossy().into_owned()
        })
        .collect();
    // A fake kubectl answering `get pods` and `logs POD` from those files.
    let fake = dir.path().join("kubectl");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  get) printf 'pod/run-0-a\\npod/run-1-b\\n' ;;\n  logs) case \"$2\" in *0-a) cat '{}' ;; *) cat '{}' ;; esac ;;\n  *) echo \"unexpected $*\" >&2; exit 1 ;;\nesac\n",
            logs[0], logs[1]
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let merged = dir.path().join("merged.json");
    let out = throtl(&[
        "k8s",
        "collect",
        "run",
        "--kubectl",
        fake.to_str().unwrap(),
        "--out-dir",
        dir.path().join("shards").to_str().unwrap(),
        "--no-store",
        "--json",
        merged.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = json(&merged);
    // -n 20 is the whole plan: 10 requests per shard.
    assert_eq!(m["requests"]["ok"], 20);
    assert_eq!(m["load"]["concurrency"], 2);
    assert!(m["warnings"]
        .to_string()
        .contains("merged from 2 of 2 shards"));
    // A failing kubectl is reported with the command.
    let broken = throtl(&[
        "k8s",
        "collect",
        "run",
        "--kubectl",
        "/nonexistent/kubectl",
        "--no-store",
    ]);
    assert!(String::from_utf8_lossy(&broken.stderr).contains("kubectl get pods"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue15_conversations_stay_whole_on_one_shard() {
    let server = common::sim(2, 1);
    let transport = Arc::new(Transport::new(
        &server.url(),
        Default::default(),
        Arc::from(ApiKind::OpenaiChat.protocol()),
        Duration::from_secs(10),
    ));
    let mut seen = BTreeSet::new();
    for k in 0..2 {
        let slice = ShardSlice { index: k, count: 2 };
        let mut p = (*plan(
            LoadShape::Closed { think: None },
            StopCondition::Requests(slice.share(24)),
            Some(slice),
            4,
        ))
        .clone();
        p.turns = 3;
        let (tx, rx) = mpsc::channel();
        throtl::engine::run(Arc::clone(&transport), Arc::new(p), tx, Controls::default()).await;
        let recs: Vec<RequestRecord> = rx.try_iter().collect();
        let mut turns: std::collections::BTreeMap<u64, Vec<u32>> = Default::default();
        for r in &recs {
            turns
                .entry(r.conversation.unwrap())
                .or_default()
                .push(r.turn.unwrap());
        }
        for (conv, mut t) in turns {
            // Every conversation of this shard is its own (ids i·N + K) and
            // its turns are here in order from the first.
            assert_eq!(conv % 2, u64::from(k));
            assert!(seen.insert(conv), "conversation {conv} on two shards");
            t.sort_unstable();
            assert_eq!(t, (0..t.len() as u32).collect::<Vec<_>>());
        }
    }
}
