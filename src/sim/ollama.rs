//! Ollama's native routes: `POST /api/chat`, `POST /api/generate` (NDJSON),
//! and `/api/version`, `/api/tags`, `/api/ps`, `GET /`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;

use super::frontend::{
    message_word_ids, respond, u32_or, word_ids, Outcome, SimRequest, StreamFormat,
};
use super::SimState;

/// The Ollama version the simulator reports.
const VERSION: &str = "0.12.6";

/// Adds Ollama's generation and info routes.
pub(super) fn routes(r: Router<Arc<SimState>>) -> Router<Arc<SimState>> {
    r.route("/api/chat", post(chat))
        .route("/api/generate", post(generate))
        .route(
            "/api/version",
            get(|| async { Json(json!({"version": VERSION})) }),
        )
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/", get(|| async { "Ollama is running" }))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

struct OllamaFormat {
    chat: bool,
    model: String,
}

impl OllamaFormat {
    fn line(&self, text: &str, done: bool) -> Value {
        let mut v = json!({"model": self.model, "created_at": now_rfc3339()});
        if self.chat {
            v["message"] = json!({"role": "assistant", "content": text});
        } else {
            v["response"] = json!(text);
        }
        v["done"] = json!(done);
        v
    }

    /// The final line's fields: reason and the server's own durations (ns).
    fn finish(&self, v: &mut Value, o: &Outcome) {
        v["done_reason"] = json!(if o.hit_limit() { "length" } else { "stop" });
        v["total_duration"] = json!(Outcome::ns(o.arrival, o.end));
        v["load_duration"] = json!(0);
        v["prompt_eval_count"] = json!(o.prompt_tokens);
        v["prompt_eval_duration"] = json!(Outcome::ns(o.arrival, o.first));
        v["eval_count"] = json!(o.tokens);
        v["eval_duration"] = json!(Outcome::ns(o.first, o.end));
        if !self.chat {
            v["context"] = json!([]);
        }
    }

    fn push(out: &mut String, v: &Value) {
        out.push_str(&v.to_string());
        out.push('\n');
    }
}

impl StreamFormat for OllamaFormat {
    fn content_type(&self) -> &'static str {
        "application/x-ndjson"
    }

    fn token(&mut self, out: &mut String, _k: u32, text: &str, _last: bool) {
        Self::push(out, &self.line(text, false));
    }

    fn end(&mut self, out: &mut String, o: &Outcome) {
        let mut v = self.line("", true);
        self.finish(&mut v, o);
        Self::push(out, &v);
    }

    fn fail(&mut self, out: &mut String, msg: &str) {
        Self::push(out, &json!({"error": msg}));
    }

    fn whole(&self, text: &str, o: &Outcome) -> Value {
        let mut v = self.line(text, true);
        self.finish(&mut v, o);
        v
    }

    fn error_response(&self, status: StatusCode, msg: &str) -> Response {
        (status, Json(json!({"error": msg}))).into_response()
    }
}

fn parse(
    st: &SimState,
    body: &[u8],
    chat: bool,
) -> Result<(SimRequest, OllamaFormat), Box<Response>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("invalid JSON: {e}")})),
            )
                .into_response(),
        )
    })?;
    let prompt = if chat {
        message_word_ids(&v["messages"], "content")
    } else {
        word_ids(&v["prompt"])
    };
    let req = SimRequest::new(
        prompt,
        u32_or(&v["options"]["num_predict"], st.cfg.default_output_tokens),
        v["stream"].as_bool().unwrap_or(true),
    );
    let model = v["model"].as_str().unwrap_or(&st.cfg.model).to_owned();
    Ok((req, OllamaFormat { chat, model }))
}

async fn chat(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let arrival = std::time::Instant::now();
    match parse(&st, &body, true) {
        Ok((req, fmt)) => respond(st, arrival, req, fmt).await,
        Err(r) => *r,
    }
}

async fn generate(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let arrival = std::time::Instant::now();
    match parse(&st, &body, false) {
        Ok((req, fmt)) => respond(st, arrival, req, fmt).await,
        Err(r) => *r,
    }
}

fn model_entry(name: &str) -> Value {
    json!({
        "name": name, "model": name, "modified_at": now_rfc3339(), "size": 2019393189u64,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                    "parameter_size": "3.2B", "quantization_level": "Q4_K_M"},
    })
}

async fn tags(State(st): State<Arc<SimState>>) -> Json<Value> {
    Json(json!({"models": [model_entry(&st.cfg.model)]}))
}

async fn ps(State(st): State<Arc<SimState>>) -> Json<Value> {
    let mut m = model_entry(&st.cfg.model);
    m["expires_at"] = json!(now_rfc3339());
    m["size_vram"] = json!(2019393189u64);
    Json(json!({"models": [m]}))
}
