//! Cohere v2 chat: `POST /v2/chat` (named SSE events ending with
//! `message-end`) and `GET /v1/models`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::frontend::{
    message_word_ids, new_id, respond, u32_or, Outcome, SimRequest, StreamFormat,
};
use super::SimState;

/// Adds the chat and model-list routes.
pub(super) fn routes(r: Router<Arc<SimState>>) -> Router<Arc<SimState>> {
    r.route("/v2/chat", post(chat))
        .route("/v1/models", get(models))
}

struct CohereFormat {
    id: String,
}

fn event(out: &mut String, v: &Value) {
    out.push_str("event: ");
    out.push_str(v["type"].as_str().unwrap_or("message"));
    out.push_str("\ndata: ");
    out.push_str(&v.to_string());
    out.push_str("\n\n");
}

fn usage(o: &Outcome) -> Value {
    let counts = json!({"input_tokens": o.prompt_tokens, "output_tokens": o.tokens});
    json!({"billed_units": counts, "tokens": counts})
}

fn finish_reason(o: &Outcome) -> &'static str {
    if o.hit_limit() {
        "MAX_TOKENS"
    } else {
        "COMPLETE"
    }
}

impl StreamFormat for CohereFormat {
    fn start(&mut self, out: &mut String, _r: &SimRequest) {
        let msg = json!({"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []});
        event(
            out,
            &json!({"id": self.id, "type": "message-start", "delta": {"message": msg}}),
        );
        event(
            out,
            &json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
        );
    }

    fn token(&mut self, out: &mut String, _k: u32, text: &str, _last: bool) {
        event(
            out,
            &json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": text}}}}),
        );
    }

    fn end(&mut self, out: &mut String, o: &Outcome) {
        event(out, &json!({"type": "content-end", "index": 0}));
        event(
            out,
            &json!({"type": "message-end", "delta": {"finish_reason": finish_reason(o), "usage": usage(o)}}),
        );
    }

    fn fail(&mut self, out: &mut String, msg: &str) {
        event(
            out,
            &json!({"type": "message-end", "delta": {"finish_reason": "ERROR", "error": msg}}),
        );
    }

    fn whole(&self, text: &str, o: &Outcome) -> Value {
        json!({
            "id": self.id, "finish_reason": finish_reason(o),
            "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
            "usage": usage(o),
        })
    }

    fn error_response(&self, status: StatusCode, msg: &str) -> Response {
        (status, Json(json!({"message": msg}))).into_response()
    }
}

async fn chat(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let arrival = std::time::Instant::now();
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": format!("invalid JSON: {e}")})),
            )
                .into_response()
        }
    };
    let req = SimRequest::new(
        message_word_ids(&v["messages"], "content"),
        u32_or(&v["max_tokens"], st.cfg.default_output_tokens),
        v["stream"].as_bool().unwrap_or(false),
    );
    respond(st, arrival, req, CohereFormat { id: new_id("") }).await
}

async fn models(State(st): State<Arc<SimState>>) -> Json<Value> {
    Json(json!({"models": [{
        "name": st.cfg.model, "endpoints": ["chat", "generate"], "finetuned": false,
        "context_length": 128000, "features": ["tools"],
    }]}))
}
