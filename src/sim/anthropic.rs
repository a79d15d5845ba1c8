//! Anthropic's Messages API: `POST /v1/messages` (named SSE events) and
//! `GET /v1/models`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::frontend::{
    message_word_ids, new_id, respond, u32_or, word_ids, Outcome, SimRequest, StreamFormat,
};
use super::SimState;

/// Adds the Messages and Models routes.
pub(super) fn routes(r: Router<Arc<SimState>>) -> Router<Arc<SimState>> {
    r.route("/v1/messages", post(messages))
        .route("/v1/models", get(models))
}

struct AnthropicFormat {
    id: String,
    model: String,
}

fn event(out: &mut String, name: &str, data: &Value) {
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    out.push_str(&data.to_string());
    out.push_str("\n\n");
}

fn stop_reason(o: &Outcome) -> &'static str {
    if o.hit_limit() {
        "max_tokens"
    } else {
        "end_turn"
    }
}

impl StreamFormat for AnthropicFormat {
    fn start(&mut self, out: &mut String, r: &SimRequest) {
        let usage = json!({"input_tokens": r.prompt_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1, "service_tier": "standard"});
        let msg = json!({"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage});
        event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": msg}),
        );
        event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        );
        event(out, "ping", &json!({"type": "ping"}));
    }

    fn token(&mut self, out: &mut String, _k: u32, text: &str, _last: bool) {
        event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        );
    }

    fn end(&mut self, out: &mut String, o: &Outcome) {
        event(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        );
        let delta = json!({"stop_reason": stop_reason(o), "stop_sequence": null});
        event(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": delta, "usage": {"output_tokens": o.tokens}}),
        );
        event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn fail(&mut self, out: &mut String, msg: &str) {
        event(
            out,
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "message": msg}}),
        );
    }

    fn whole(&self, text: &str, o: &Outcome) -> Value {
        json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [{"type": "text", "text": text}], "stop_reason": stop_reason(o), "stop_sequence": null,
            "usage": {"input_tokens": o.prompt_tokens, "output_tokens": o.tokens},
        })
    }

    fn error_response(&self, status: StatusCode, msg: &str) -> Response {
        let kind = match status.as_u16() {
            429 => "rate_limit_error",
            529 | 503 => "overloaded_error",
            400 => "invalid_request_error",
            _ => "api_error",
        };
        (
            status,
            Json(json!({"type": "error", "error": {"type": kind, "message": msg}})),
        )
            .into_response()
    }
}

fn invalid(msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"type": "error", "error": {"type": "invalid_request_error", "message": msg}})),
    )
        .into_response()
}

async fn messages(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let arrival = std::time::Instant::now();
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return invalid(&format!("invalid JSON: {e}")),
    };
    if !v["messages"].is_array() {
        return invalid("messages: Field required");
    }
    if !v["max_tokens"].is_u64() {
        return invalid("max_tokens: Field required");
    }
    let mut prompt = word_ids(&v["system"]);
    prompt.extend(message_word_ids(&v["messages"], "content"));
    let req = SimRequest::new(
        prompt,
        u32_or(&v["max_tokens"], st.cfg.default_output_tokens),
        v["stream"].as_bool().unwrap_or(false),
    );
    let fmt = AnthropicFormat {
        id: new_id("msg_"),
        model: v["model"].as_str().unwrap_or(&st.cfg.model).to_owned(),
    };
    respond(st, arrival, req, fmt).await
}

async fn models(State(st): State<Arc<SimState>>) -> Json<Value> {
    let m = &st.cfg.model;
    Json(json!({
        "data": [{"type": "model", "id": m, "display_name": m, "created_at": "2025-05-14T00:00:00Z"}],
        "has_more": false, "first_id": m, "last_id": m,
    }))
}
