#![allow(clippy::unwrap_used)]
//! Issue 4: `throtl sweep` finds the knee of a server with a hard capacity.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use tokio::sync::Semaphore;

use throtl::api::ApiKind;
use throtl::config::{BenchConfig, ProgressMode, WorkloadOptions};
use throtl::engine::arrival::{ArrivalConfig, ArrivalProcess};
use throtl::engine::{Controls, LoadShape, StopCondition};
use throtl::slo::Slo;
use throtl::sweep::{SweepAxis, SweepConfig, SweepReport};

const SLOTS: usize = 2;
const SERVICE: Duration = Duration::from_millis(40);

/// A server that works on at most SLOTS requests at once, SERVICE each:
/// capacity SLOTS / SERVICE = 50 requests/s; extra requests queue.
async fn capacity_server() -> String {
    let slots = Arc::new(Semaphore::new(SLOTS));
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let slots = Arc::clone(&slots);
            async move {
                let _permit = slots.acquire().await.unwrap();
                tokio::time::sleep(SERVICE).await;
                let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n\
                            data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"}}]}\n\n\
                            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n\
                            data: [DONE]\n\n";
                ([("content-type", "text/event-stream")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn base(url: String, json: Option<std::path::PathBuf>) -> BenchConfig {
    BenchConfig {
        url,
        model: "m".into(),
        api: ApiKind::OpenaiChat,
        concurrency: 1,
        stop: StopCondition::Requests(24),
        input_tokens: 4,
        output_tokens: 2,
        warmup: 2,
        timeout: Duration::from_secs(20),
        ignore_eos: false,
        seed: 0,
        json_out: json,
        records_out: None,
        progress: ProgressMode::Quiet,
        grace: Duration::from_secs(1),
        api_key_env: None,
        api_options: Default::default(),
        results: Default::default(),
        client: Default::default(),
        workload: WorkloadOptions {
            slos: vec![Slo::parse("ttft=65ms").unwrap()],
            slo_percentile: 90.0,
            ..WorkloadOptions::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_sweep_finds_the_knee_and_the_slo_limit() {
    let url = capacity_server().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("sweep.json");
    let (db, html) = (dir.path().join("h.db"), dir.path().join("sweep.html"));
    let mut b = base(url, None);
    b.results.db = Some(db.clone());
    b.results.html_out = Some(html.clone());
    let cfg = SweepConfig {
        base: b,
        axis: SweepAxis::Concurrency(vec![1, 2, 4, 8]),
        json_out: Some(json.clone()),
    };
    let mut seen = 0;
    let report = throtl::sweep::run(&cfg, Controls::default(), |_| seen += 1)
        .await
        .unwrap();
    assert_eq!(seen, 4);
    let thr: Vec<f64> = report
        .steps
        .iter()
        .map(|s| s.run.throughput.requests_per_s)
        .collect();
    // Concurrency 1 gets about half the capacity; 2 and above saturate it.
    assert!(thr[0] > 15.0 && thr[0] < 27.0, "{thr:?}");
    assert!(thr[3] > 35.0 && thr[3] < 52.0, "{thr:?}");
    let knee = report.knee.as_ref().unwrap();
    assert_eq!(knee.load, 2.0, "{thr:?} {knee:?}");
    assert!(knee.saturated);
    // TTFT ≈ 40 ms without queueing (c ≤ 2), ≥ 80 ms for most requests at c = 4 and 8.
    let slo = report.slo.as_ref().unwrap();
    assert_eq!(slo.met_by_step, vec![true, true, false, false], "{thr:?}");
    assert_eq!(slo.max_load_meeting_slo, Some(2.0));
    // The JSON holds every step in the core schema plus knee and SLO.
    let back: SweepReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(back.steps.len(), 4);
    assert_eq!(back.steps[1].run.schema, "throtl.run.v1");
    assert_eq!(back.knee, report.knee);
    let table = throtl::sweep::render(&report);
    assert!(
        table.contains("← knee") && table.contains("SLO (p90): met up to concurrency 2"),
        "{table}"
    );
    sweep_is_stored_as_a_group_and_drawn_with_its_knee(&report, &db, &html);
}

/// Issue 7: the steps are one history group; `sweep --html` and `report
/// GROUP` draw the sweep curves with the same knee.
fn sweep_is_stored_as_a_group_and_drawn_with_its_knee(
    report: &SweepReport,
    db: &std::path::Path,
    html: &std::path::Path,
) {
    let group = report.group.clone().unwrap();
    assert!(group.starts_with("sweep-"), "{group}");
    let store = throtl::store::Store::open(db).unwrap();
    let listed = store.list_runs_in(None, None, Some(&group)).unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed
        .iter()
        .all(|r| r.group.as_deref() == Some(group.as_str())));
    let loaded = throtl::results::load_many(&group, Some(&store)).unwrap();
    assert!(loaded.sweep);
    let curves = throtl::results::curves::SweepCurves::from_runs(&loaded.runs);
    assert_eq!(curves.knee, report.knee);
    assert_eq!(
        curves.points.iter().map(|p| p.load).collect::<Vec<_>>(),
        [1.0, 2.0, 4.0, 8.0]
    );
    assert!(curves.points.iter().all(|p| p.goodput.is_some()));
    let page = std::fs::read_to_string(html).unwrap();
    for want in [
        "Sweep curves",
        "TTFT vs throughput",
        "Throughput and goodput vs load",
        "knee (concurrency 2)",
        "2 ◀ knee",
    ] {
        assert!(page.contains(want), "{want} missing");
    }
    assert!(page.matches("<svg").count() >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_sweep_finds_the_capacity_knee() {
    let url = capacity_server().await;
    let mut b = base(url, None);
    b.stop = StopCondition::Duration(Duration::from_millis(800));
    b.warmup = 0;
    // Constant arrivals keep short steps free of Poisson noise.
    let arrivals = ArrivalConfig {
        rate: 1.0,
        process: ArrivalProcess::Constant,
        seed: 0,
        ramp_up: Duration::ZERO,
    };
    b.workload.shape = LoadShape::Open {
        arrivals,
        max_concurrency: None,
    };
    let cfg = SweepConfig {
        base: b,
        axis: SweepAxis::Rates(vec![10.0, 25.0, 50.0, 100.0]),
        json_out: None,
    };
    let report = throtl::sweep::run(&cfg, Controls::default(), |_| {})
        .await
        .unwrap();
    let done: Vec<f64> = report
        .steps
        .iter()
        .map(|s| s.run.schedule.as_ref().unwrap().completed_rate_per_s)
        .collect();
    let knee = report.knee.as_ref().unwrap();
    // Capacity is 50 req/s: the 100 req/s step completes no more than the 50 req/s step.
    assert_eq!(knee.load, 50.0, "{done:?} {knee:?}");
    assert!(
        report.steps[3]
            .run
            .schedule
            .as_ref()
            .unwrap()
            .offered_rate_per_s
            > 70.0
    );
    assert!(
        report.steps[3].run.latency_ms.e2e.p95 > 200.0,
        "overload shows up as latency"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue4_rates_auto_probes_the_maximum_then_sweeps_fractions_of_it() {
    let url = capacity_server().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("auto.json");
    let mut b = base(url, Some(json.clone()));
    b.concurrency = 8;
    b.stop = StopCondition::Duration(Duration::from_millis(500));
    b.warmup = 0;
    b.workload.slos.clear();
    let cfg = SweepConfig {
        base: b,
        axis: SweepAxis::RatesAuto,
        json_out: Some(json.clone()),
    };
    let report = throtl::sweep::run(&cfg, Controls::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(report.axis, "rate");
    let max = report.probe.as_ref().unwrap().throughput.requests_per_s;
    // The server's capacity is 50 req/s; the closed-loop probe at 8 saturates it.
    assert!((35.0..=60.0).contains(&max), "{max}");
    let loads: Vec<f64> = report.steps.iter().map(|s| s.load).collect();
    assert_eq!(loads.len(), 7, "{loads:?}");
    for (load, f) in loads.iter().zip([0.10, 0.25, 0.50, 0.70, 0.85, 1.00, 1.15]) {
        assert!((load / max - f).abs() < 0.05, "{loads:?} of {max}");
    }
    // Each step is an open loop at its rate.
    for s in &report.steps {
        let sc = s.run.schedule.as_ref().unwrap();
        assert_eq!(sc.mode, "open");
        assert_eq!(sc.target_rate_per_s, Some(s.load));
    }
    assert!(report.knee.is_some());
    // Every step of --json, and the probe, validate against the core run schema.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/run.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let out: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(out["steps"].as_array().unwrap().len(), 7);
    for run in out["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["run"])
        .chain([&out["probe"]])
    {
        let errors: Vec<String> = validator.iter_errors(run).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
    assert!(out["knee"].is_object());
}
