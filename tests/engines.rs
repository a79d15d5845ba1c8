#![allow(clippy::unwrap_used)]
//! Issue 3: every `--api` end to end against `throtl mock --engine X`
//! in-process, `probe` identifying every engine, and keys never leaking.

use std::time::Duration;

use throtl::api::ApiKind;
use throtl::config::{ApiOptions, BenchConfig, ProgressMode};
use throtl::engine::{Controls, StopCondition};
use throtl::sim::{self, EngineFlavor, SimConfig};

const TOKENS: u32 = 7;
const REQUESTS: u64 = 6;

fn sim(engine: EngineFlavor) -> sim::SimHandle {
    sim::start(SimConfig {
        engine,
        ttft: Duration::from_millis(3),
        itl: Duration::from_millis(1),
        model: "m1".into(),
        ..SimConfig::default()
    })
    .unwrap()
}

fn config(url: String, api: ApiKind, model: &str) -> BenchConfig {
    BenchConfig {
        url,
        model: model.into(),
        api,
        concurrency: 2,
        stop: StopCondition::Requests(REQUESTS),
        input_tokens: 9,
        output_tokens: TOKENS,
        warmup: 1,
        timeout: Duration::from_secs(10),
        ignore_eos: false,
        seed: 1,
        json_out: None,
        records_out: None,
        progress: ProgressMode::Quiet,
        grace: Duration::from_secs(1),
        api_key_env: None,
        api_options: ApiOptions::default(),
        workload: Default::default(),
        results: Default::default(),
        client: Default::default(),
    }
}

/// Every protocol and the engine flavour that serves it.
const PAIRS: [(EngineFlavor, ApiKind); 13] = [
    (EngineFlavor::Vllm, ApiKind::OpenaiChat),
    (EngineFlavor::Vllm, ApiKind::OpenaiCompletions),
    (EngineFlavor::Sglang, ApiKind::OpenaiChat),
    (EngineFlavor::Llamacpp, ApiKind::OpenaiChat),
    (EngineFlavor::Openai, ApiKind::OpenaiChat),
    (EngineFlavor::Openai, ApiKind::AzureOpenai),
    (EngineFlavor::Tgi, ApiKind::Tgi),
    (EngineFlavor::Ollama, ApiKind::OllamaChat),
    (EngineFlavor::Ollama, ApiKind::OllamaGenerate),
    (EngineFlavor::Ollama, ApiKind::OpenaiChat),
    (EngineFlavor::Anthropic, ApiKind::Anthropic),
    (EngineFlavor::Gemini, ApiKind::Gemini),
    (EngineFlavor::Cohere, ApiKind::Cohere),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue3_every_api_benches_its_engine_end_to_end() {
    for (engine, api) in PAIRS {
        let server = sim(engine);
        let r = throtl::bench::run(&config(server.url(), api, "m1"), Controls::default())
            .await
            .unwrap();
        let what = format!("{engine:?} via {api}");
        assert_eq!(
            (r.requests.ok, r.requests.failed),
            (REQUESTS, 0),
            "{what}: {:?}",
            r.requests.error_samples
        );
        assert_eq!(
            r.tokens.output_total,
            REQUESTS * u64::from(TOKENS),
            "{what}"
        );
        assert_eq!(r.tokens.source, "usage", "{what}");
        // The prompt is 9 words; every simulator front-end reports it back.
        assert_eq!(r.tokens.input_total, REQUESTS * 9, "{what}");
        // One content message per token: ITL gaps = tokens − 1 per request.
        assert_eq!(
            r.latency_ms.itl.count,
            REQUESTS * u64::from(TOKENS - 1),
            "{what}"
        );
        let server_side = matches!(engine, EngineFlavor::Llamacpp)
            || matches!(api, ApiKind::OllamaChat | ApiKind::OllamaGenerate);
        assert_eq!(r.server.is_some(), server_side, "{what}");
        if let Some(s) = &r.server {
            assert_eq!(s.requests, REQUESTS, "{what}");
            assert!(s.decode_tokens_per_s.unwrap() > 0.0, "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue3_probe_identifies_every_engine() {
    let cases = [
        (EngineFlavor::Vllm, "vllm", "openai-chat", true),
        (EngineFlavor::Tgi, "tgi", "tgi", true),
        (EngineFlavor::Ollama, "ollama", "ollama-chat", false),
        (EngineFlavor::Llamacpp, "llamacpp", "openai-chat", true),
        (EngineFlavor::Sglang, "sglang", "openai-chat", true),
        (EngineFlavor::Openai, "openai", "openai-chat", false),
        (EngineFlavor::Anthropic, "anthropic", "anthropic", false),
        (EngineFlavor::Gemini, "gemini", "gemini", false),
        (EngineFlavor::Cohere, "cohere", "cohere", false),
    ];
    for (flavor, engine, api, has_metrics) in cases {
        let server = sim(flavor);
        let p = throtl::probe::probe(&server.url(), &[]).await.unwrap();
        assert_eq!(
            (p.engine.as_str(), p.api.as_str()),
            (engine, api),
            "{flavor:?}: {:?}",
            p.evidence
        );
        assert_eq!(p.models, vec!["m1".to_owned()], "{flavor:?}");
        assert_eq!(p.healthy, Some(true), "{flavor:?}");
        assert_eq!(p.metrics.is_some(), has_metrics, "{flavor:?}");
        if matches!(
            flavor,
            EngineFlavor::Vllm
                | EngineFlavor::Tgi
                | EngineFlavor::Ollama
                | EngineFlavor::Llamacpp
                | EngineFlavor::Sglang
        ) {
            assert!(p.version.is_some(), "{flavor:?} version");
        }
        let json = serde_json::to_value(&p).unwrap();
        for key in ["engine", "version", "models", "healthy", "metrics", "api"] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
    }
}

#[tokio::test]
async fn issue3_unknown_server_falls_back_to_openai_chat() {
    // A server that answers everything with 404 is reachable but unknown.
    let app = axum::Router::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let p = throtl::probe::probe(&format!("http://{addr}"), &[])
        .await
        .unwrap();
    assert_eq!(
        (p.engine.as_str(), p.api.as_str()),
        ("unknown", "openai-chat")
    );
    assert!(p.choice_line().starts_with("warning:"));
    assert!(p.metrics.is_none());
}

#[tokio::test]
async fn issue3_probe_of_nothing_is_an_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let err = throtl::probe::probe(&url, &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot reach"), "{err}");
}

#[test]
fn issue3_metrics_use_each_engines_names() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (flavor, must, must_not) in [
        (EngineFlavor::Vllm, "vllm:num_requests_running", "sglang:"),
        (EngineFlavor::Sglang, "sglang:num_running_reqs", "vllm:"),
        (
            EngineFlavor::Llamacpp,
            "llamacpp:tokens_predicted_total",
            "vllm:",
        ),
        (EngineFlavor::Tgi, "tgi_request_success", "vllm:"),
    ] {
        let server = sim(flavor);
        let body = rt.block_on(async {
            reqwest::get(format!("{}/metrics", server.url()))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        assert!(
            body.contains(must) && !body.contains(must_not),
            "{flavor:?}: {body}"
        );
    }
    let server = sim(EngineFlavor::Ollama);
    let status = rt.block_on(async {
        reqwest::get(format!("{}/metrics", server.url()))
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 404, "Ollama has no /metrics");
}

/// A key and a `-H` value must reach the server but appear in no output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue3_keys_never_appear_in_any_output() {
    const KEY: &str = "sk-ant-SECRET-0123456789";
    const HEADER_SECRET: &str = "hdr-SECRET-abcdef";
    std::env::set_var("THROTL_TEST_ISSUE3_KEY", KEY);
    let server = sim(EngineFlavor::Anthropic);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(server.url(), ApiKind::Anthropic, "m1");
    cfg.api_key_env = Some("THROTL_TEST_ISSUE3_KEY".into());
    cfg.api_options.headers = vec![("X-Org-Token".into(), HEADER_SECRET.into())];
    cfg.json_out = Some(dir.path().join("run.json"));
    cfg.records_out = Some(dir.path().join("records.jsonl"));
    let report = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    assert_eq!(report.requests.ok, REQUESTS);
    // The headers were built as the protocol wants them, marked sensitive.
    let headers =
        throtl::bench::request_headers(&cfg, ApiKind::Anthropic.protocol().as_ref()).unwrap();
    assert_eq!(headers["x-api-key"], KEY);
    assert!(headers["x-api-key"].is_sensitive() && headers["x-org-token"].is_sensitive());
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert!(format!("{headers:?}").contains("Sensitive") && !format!("{headers:?}").contains(KEY));
    let outputs = [
        std::fs::read_to_string(dir.path().join("run.json")).unwrap(),
        std::fs::read_to_string(dir.path().join("records.jsonl")).unwrap(),
        throtl::report::console::render(&report),
        serde_json::to_string(&cfg).unwrap(),
        format!("{cfg:?}"),
    ];
    for out in &outputs {
        assert!(
            !out.contains(KEY) && !out.contains(HEADER_SECRET),
            "secret leaked: {out}"
        );
    }
    assert!(
        outputs[0].contains("X-Org-Token"),
        "header names are recorded"
    );
    std::env::remove_var("THROTL_TEST_ISSUE3_KEY");
}

#[test]
fn issue3_cli_bench_auto_says_what_it_picked_and_probe_prints_json() {
    let server = sim(EngineFlavor::Tgi);
    let bin = env!("CARGO_BIN_EXE_throtl");
    let out = std::process::Command::new(bin)
        .args([
            "bench",
            "--url",
            &server.url(),
            "-n",
            "3",
            "--warmup",
            "0",
            "--output-tokens",
            "4",
            "--no-tui",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("detected tgi 3.3.4") && stderr.contains("using --api tgi"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("(tgi, model 'm1')") && stdout.contains("3 ok, 0 failed"),
        "{stdout}"
    );

    let out = std::process::Command::new(bin)
        .args(["probe", &server.url(), "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["engine"].as_str(), v["api"].as_str()),
        (Some("tgi"), Some("tgi"))
    );
    assert_eq!(
        v["metrics"].as_str(),
        Some(format!("{}/metrics", server.url()).as_str())
    );
}

#[test]
fn issue3_cli_rejects_a_missing_key_variable_and_bad_headers() {
    let server = sim(EngineFlavor::Vllm);
    let bin = env!("CARGO_BIN_EXE_throtl");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--url",
            server.url().leak(),
            "-n",
            "1",
            "--warmup",
            "0",
            "-q",
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(bin)
            .args(args)
            .env_remove("THROTL_NO_SUCH_VAR")
            .output()
            .unwrap()
    };
    let out = run(&["--api-key-env", "THROTL_NO_SUCH_VAR"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("THROTL_NO_SUCH_VAR"),
        "{err}"
    );
    let out = run(&["-H", "no colon here"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("-H expects"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue3_server_section_matches_the_schema() {
    let server = sim(EngineFlavor::Ollama);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(server.url(), ApiKind::OllamaChat, "m1");
    cfg.json_out = Some(dir.path().join("run.json"));
    let report = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    let s = report.server.as_ref().unwrap();
    // Exact token sums; speeds are timing-dependent, so only their presence is checked.
    assert_eq!(s.requests, REQUESTS);
    assert_eq!(s.decode_tokens_per_s_per_request.count, REQUESTS);
    assert!(
        s.decode_tokens_per_s.unwrap() > 0.0 && s.prompt_tokens_per_s.unwrap() > 0.0,
        "{s:?}"
    );
    assert!(throtl::report::console::render(&report).contains("server      prompt"));
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/run.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap())
            .unwrap();
    assert!(json.get("server").is_some());
    let v = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = v
        .iter_errors(&json)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
