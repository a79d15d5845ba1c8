//! The `--json` summary of a real run validates against docs/run.schema.json,
//! and `--records` writes one line per request.
#![allow(clippy::unwrap_used)]

mod common;

use throtl::engine::Controls;

fn schema() -> serde_json::Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/run.schema.json"))
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn issue2_json_summary_matches_schema_and_records_are_complete() {
    let server = common::sim(5, 1);
    let dir = common::tmpdir();
    let mut cfg = common::config(&server.url(), 3, 12, 6);
    // At least one warmup request per user (issue 12): 3 users, 3 warmups.
    cfg.warmup = 3;
    cfg.json_out = Some(dir.path().join("run.json"));
    cfg.records_out = Some(dir.path().join("records.jsonl"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(throtl::bench::run(&cfg, Controls::default()))
        .unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    for key in [
        "/schema",
        "/run_id",
        "/started_at",
        "/tool_version",
        "/target/url",
        "/target/api",
        "/target/model",
        "/load/mode",
        "/load/concurrency",
        "/requests/total",
        "/requests/ok",
        "/requests/failed",
        "/requests/errors",
        "/throughput/requests_per_s",
        "/throughput/output_tokens_per_s",
        "/throughput/total_tokens_per_s",
        "/tokens/input_total",
        "/tokens/output_total",
        "/tokens/source",
        "/latency_ms/ttft/p999",
        "/latency_ms/itl/p50",
        "/latency_ms/tpot/stddev",
        "/latency_ms/e2e/max",
    ] {
        assert!(json.pointer(key).is_some(), "missing {key}");
    }
    assert_eq!(json["requests"]["total"], 12);

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 15, "12 measured + 3 warmup");
    assert_eq!(lines.iter().filter(|l| l["warmup"] == true).count(), 3);
    for l in &lines {
        assert_eq!(l["token_ms"].as_array().unwrap().len(), 6);
        assert!(l["first_token_ms"].as_f64().unwrap() >= l["sent_ms"].as_f64().unwrap() + 5.0);
        assert!(l["end_ms"].as_f64().unwrap() >= l["first_token_ms"].as_f64().unwrap());
        assert_eq!(l["output_tokens"], 6);
    }
}

#[test]
fn issue2_schema_rejects_a_summary_missing_required_keys() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let bad = serde_json::json!({"schema": "throtl.run.v1", "run_id": "x"});
    assert!(!validator.is_valid(&bad));
}

#[test]
fn issue2_bad_output_path_fails_before_any_load() {
    let cfg = {
        let mut c = common::config("http://127.0.0.1:9", 1, 1, 1);
        c.json_out = Some("/nonexistent-dir/run.json".into());
        c
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(throtl::bench::run(&cfg, Controls::default()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent-dir/run.json"), "{err}");
}
