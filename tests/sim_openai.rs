//! The simulator speaks OpenAI's protocol as vLLM does (issue 2 baseline).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use serde_json::{json, Value};

async fn post(url: &str, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn data_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn issue2_stream_has_tokens_usage_and_done() {
    let server = common::sim(10, 2);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "one two three"}],
                      "stream": true, "max_tokens": 5, "stream_options": {"include_usage": true}});
    let text = post(&server.url(), "/v1/chat/completions", body)
        .await
        .text()
        .await
        .unwrap();
    let lines = data_lines(&text);
    assert_eq!(lines.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let contents = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        })
        .count();
    assert_eq!(contents, 5);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(usage["prompt_tokens"], 3);
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));
}

#[tokio::test]
async fn issue2_no_usage_chunk_unless_asked_and_max_completion_tokens_honoured() {
    let server = common::sim(1, 1);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true, "max_completion_tokens": 3});
    let text = post(&server.url(), "/v1/chat/completions", body)
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains("usage"));
    assert_eq!(text.matches("\"content\":\" ").count(), 3);
}

#[tokio::test]
async fn issue2_non_stream_completion_waits_for_all_tokens() {
    let server = common::sim(30, 10);
    let started = Instant::now();
    let body = json!({"model": "m", "prompt": "a b", "max_tokens": 4});
    let v: Value = post(&server.url(), "/v1/completions", body)
        .await
        .json()
        .await
        .unwrap();
    // Last token at 30 + 3·10 = 60 ms.
    assert!(started.elapsed().as_millis() >= 60);
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(
        v["choices"][0]["text"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        4
    );
}

#[tokio::test]
async fn issue2_bad_request_body_gets_openai_style_400() {
    let server = common::sim(1, 1);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url()))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("invalid JSON"));
}

#[tokio::test]
async fn issue2_metrics_count_what_was_served() {
    let server = common::sim(1, 1);
    for _ in 0..3 {
        let body = json!({"model": "m", "prompt": "a b c d", "max_tokens": 2, "stream": true});
        let _ = post(&server.url(), "/v1/completions", body)
            .await
            .text()
            .await
            .unwrap();
    }
    let text = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("vllm:prompt_tokens_total{engine=\"0\",model_name=\"throtl-sim\"} 12"),
        "{text}"
    );
    assert!(text.contains("vllm:generation_tokens_total{engine=\"0\",model_name=\"throtl-sim\"} 6"));
    assert!(text.contains(
        "vllm:time_to_first_token_seconds_count{engine=\"0\",model_name=\"throtl-sim\"} 3"
    ));
    assert!(text.contains(
        "vllm:e2e_request_latency_seconds_count{engine=\"0\",model_name=\"throtl-sim\"} 3"
    ));
    let health = reqwest::get(format!("{}/health", server.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
