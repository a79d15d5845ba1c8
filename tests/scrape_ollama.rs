#![allow(clippy::unwrap_used)]
//! A server without /metrics (404) is scraped as Ollama through /api/ps and
//! /api/tags, served here from the captured fixtures by a local axum server.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use throtl::scrape::{Engine, Scraper};

#[tokio::test]
async fn ollama_is_scraped_through_its_api() {
    let ps = include_str!("fixtures/info/ollama_ps.json");
    let tags = include_str!("fixtures/info/ollama_tags.json");
    let app = Router::new()
        .route("/api/ps", get(move || async move { ps }))
        .route("/api/tags", get(move || async move { tags }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let s = Scraper::new(&url, Duration::from_secs(5))
        .unwrap()
        .scrape()
        .await
        .unwrap();
    assert_eq!(s.engine, Engine::Ollama);
    assert_eq!(s.models, vec!["llama3.2:latest".to_owned()]);
    assert_eq!(s.model_vram, Some(3_772_581_888.0));
    assert!(s.installed_models.unwrap() >= 2.0);
}

#[tokio::test]
async fn a_server_with_neither_is_a_clear_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, Router::new()).await.unwrap() });
    let err = Scraper::new(&url, Duration::from_secs(5))
        .unwrap()
        .scrape()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/api/ps answered HTTP 404"), "{err}");
}
