//! Google Gemini: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`
//! (CRLF-framed SSE, no terminator), `:generateContent`, `GET /v1beta/models`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::frontend::{
    message_word_ids, new_id, respond, u32_or, Outcome, SimRequest, StreamFormat,
};
use super::SimState;

/// Adds the Gemini generation and model-list routes.
pub(super) fn routes(r: Router<Arc<SimState>>) -> Router<Arc<SimState>> {
    r.route("/v1beta/models", get(models))
        .route("/v1beta/models/{*action}", post(generate))
}

struct GeminiFormat {
    model: String,
    id: String,
    prompt_tokens: u32,
}

impl GeminiFormat {
    fn chunk(&self, text: &str, finish: Option<&str>, output: Option<u32>) -> Value {
        let mut cand = json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
        if let Some(f) = finish {
            cand["finishReason"] = json!(f);
        }
        let mut usage = json!({"promptTokenCount": self.prompt_tokens, "totalTokenCount": self.prompt_tokens + output.unwrap_or(0)});
        if let Some(n) = output {
            usage["candidatesTokenCount"] = json!(n);
        }
        json!({"candidates": [cand], "usageMetadata": usage, "modelVersion": self.model, "responseId": self.id})
    }

    fn push(out: &mut String, v: &Value) {
        out.push_str("data: ");
        out.push_str(&v.to_string());
        out.push_str("\r\n\r\n");
    }
}

fn finish_reason(o: &Outcome) -> &'static str {
    if o.hit_limit() {
        "MAX_TOKENS"
    } else {
        "STOP"
    }
}

impl StreamFormat for GeminiFormat {
    fn token(&mut self, out: &mut String, _k: u32, text: &str, _last: bool) {
        Self::push(out, &self.chunk(text, None, None));
    }

    fn end(&mut self, out: &mut String, o: &Outcome) {
        Self::push(out, &self.chunk("", Some(finish_reason(o)), Some(o.tokens)));
    }

    fn fail(&mut self, out: &mut String, msg: &str) {
        Self::push(
            out,
            &json!({"error": {"code": 500, "message": msg, "status": "INTERNAL"}}),
        );
    }

    fn whole(&self, text: &str, o: &Outcome) -> Value {
        self.chunk(text, Some(finish_reason(o)), Some(o.tokens))
    }

    fn error_response(&self, status: StatusCode, msg: &str) -> Response {
        let name = match status.as_u16() {
            400 => "INVALID_ARGUMENT",
            404 => "NOT_FOUND",
            429 => "RESOURCE_EXHAUSTED",
            503 => "UNAVAILABLE",
            _ => "INTERNAL",
        };
        (
            status,
            Json(json!({"error": {"code": status.as_u16(), "message": msg, "status": name}})),
        )
            .into_response()
    }
}

async fn generate(
    State(st): State<Arc<SimState>>,
    Path(action): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let arrival = std::time::Instant::now();
    let Some((model, method)) = action.rsplit_once(':') else {
        return not_found(&action);
    };
    let stream = match method {
        "streamGenerateContent" => true,
        "generateContent" => false,
        _ => return not_found(&action),
    };
    if stream && q.get("alt").map(String::as_str) != Some("sse") {
        let msg = "the simulator streams only with ?alt=sse";
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"code": 400, "message": msg, "status": "INVALID_ARGUMENT"}})),
        )
            .into_response();
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let req = SimRequest::new(
        message_word_ids(&v["contents"], "parts"),
        u32_or(
            &v["generationConfig"]["maxOutputTokens"],
            st.cfg.default_output_tokens,
        ),
        stream,
    );
    let prompt_tokens = req.prompt_tokens;
    let fmt = GeminiFormat {
        model: model.to_owned(),
        id: new_id(""),
        prompt_tokens,
    };
    respond(st, arrival, req, fmt).await
}

fn not_found(action: &str) -> Response {
    let msg = format!("models/{action} is not found or not supported");
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"code": 404, "message": msg, "status": "NOT_FOUND"}})),
    )
        .into_response()
}

async fn models(State(st): State<Arc<SimState>>) -> Json<Value> {
    Json(json!({"models": [{
        "name": format!("models/{}", st.cfg.model), "displayName": st.cfg.model, "version": "001",
        "inputTokenLimit": 1048576, "outputTokenLimit": 8192,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
    }]}))
}
