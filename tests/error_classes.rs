//! Error classification against canned server responses: HTTP errors,
//! malformed, truncated and in-stream errors are counted per class, with a
//! sample, and the run goes on.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use throtl::engine::Controls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

/// Serves `responses[i % len]` (raw HTTP, connection closed after each) to
/// the i-th POST; answers GET (the preflight) with 200.
async fn canned_server(responses: Vec<Vec<u8>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let responses = Arc::new(responses);
    let counter = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let responses = Arc::clone(&responses);
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let resp: Vec<u8> = if req.starts_with("GET") {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
                } else {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    responses[i % responses.len()].clone()
                };
                let _ = sock.write_all(&resp).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    url
}

fn sse(body: &str) -> Vec<u8> {
    format!("{SSE_HEAD}{body}").into_bytes()
}

fn chunk(text: &str) -> String {
    format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue2_each_failure_has_its_class_and_sample() {
    let ok = sse(&format!("{}{}data: [DONE]\n\n", chunk("a"), chunk("b")));
    let http500 = b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: 22\r\nconnection: close\r\n\r\n{\"error\":\"overloaded\"}".to_vec();
    let malformed = sse(&format!("{}data: {{not json\n\n", chunk("a")));
    let truncated = sse(&chunk("a"));
    let in_stream = sse(&format!(
        "{}data: {{\"error\": {{\"message\": \"boom\"}}}}\n\ndata: [DONE]\n\n",
        chunk("a")
    ));
    let url = canned_server(vec![ok, http500, malformed, truncated, in_stream]).await;
    let cfg = common::config(&url, 1, 10, 2);
    let r = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    assert_eq!(r.requests.total, 10);
    assert_eq!(r.requests.ok, 2);
    assert_eq!(r.requests.failed, 8);
    for class in ["http_500", "malformed", "truncated", "stream_error"] {
        assert_eq!(
            r.requests.errors.get(class),
            Some(&2),
            "{class}: {:?}",
            r.requests.errors
        );
    }
    assert!(r.requests.error_samples["http_500"].contains("overloaded"));
    assert!(r.requests.error_samples["stream_error"].contains("boom"));
    assert!(r.requests.error_samples["malformed"].contains("not json"));
    // Latency statistics cover the successful requests only.
    assert_eq!(r.latency_ms.ttft.count, 2);
    assert!(r.warnings.iter().any(|w| w.contains("failed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue2_captured_vllm_stream_is_counted_from_usage() {
    let body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/streams/openai_chat.sse"
    ))
    .unwrap();
    let url = canned_server(vec![sse(&body)]).await;
    let cfg = common::config(&url, 1, 3, 16);
    let r = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    assert_eq!(r.requests.ok, 3, "{:?}", r.requests.error_samples);
    // 10 content chunks, but the server's usage says 11 tokens (EOS counted).
    assert_eq!(r.tokens.output_total, 33);
    assert_eq!(r.tokens.input_total, 3 * 42);
    assert_eq!(r.tokens.source, "usage");
    assert_eq!(r.latency_ms.itl.count, 3 * 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue2_stream_without_usage_counts_chunks_and_says_so() {
    let url = canned_server(vec![sse(&format!(
        "{}{}{}data: [DONE]\n\n",
        chunk("a"),
        chunk("b"),
        chunk("c")
    ))])
    .await;
    let cfg = common::config(&url, 1, 2, 3);
    let r = throtl::bench::run(&cfg, Controls::default()).await.unwrap();
    assert_eq!(r.tokens.output_total, 6);
    assert_eq!(r.tokens.source, "chunks");
    assert!(r.warnings.iter().any(|w| w.contains("content chunks")));
}
