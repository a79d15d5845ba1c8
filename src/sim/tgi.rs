//! TGI's native routes: `POST /generate_stream` (SSE, `data:` without a
//! space) and `POST /generate`, plus `/info`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::frontend::{respond, u32_or, word_ids, Outcome, SimRequest, StreamFormat};
use super::SimState;

/// Adds TGI's generation and info routes.
pub(super) fn routes(r: Router<Arc<SimState>>) -> Router<Arc<SimState>> {
    r.route("/generate_stream", post(generate_stream))
        .route("/generate", post(generate))
        .route("/info", get(info))
        .route("/", post(compat_generate))
}

struct TgiFormat {
    details: bool,
    prompt_tokens: u32,
    text: String,
    sent_final: bool,
}

impl TgiFormat {
    fn details(&self, o: &Outcome, finish: &str) -> Value {
        json!({"finish_reason": finish, "generated_tokens": o.tokens, "seed": null, "input_length": o.prompt_tokens})
    }

    fn event(out: &mut String, v: &Value) {
        out.push_str("data:");
        out.push_str(&v.to_string());
        out.push_str("\n\n");
    }
}

fn token_id(k: u32) -> u32 {
    1000 + k % 20
}

impl StreamFormat for TgiFormat {
    fn token(&mut self, out: &mut String, k: u32, text: &str, last: bool) {
        self.text.push_str(text);
        let token = json!({"id": token_id(k), "text": text, "logprob": -0.25, "special": false});
        let mut ev =
            json!({"index": k + 1, "token": token, "generated_text": null, "details": null});
        if last {
            // The final token carries the whole text (and details): TGI's end marker.
            ev["generated_text"] = json!(self.text);
            if self.details {
                ev["details"] = json!({"finish_reason": "length", "generated_tokens": k + 1, "seed": null, "input_length": self.prompt_tokens});
            }
            self.sent_final = true;
        }
        Self::event(out, &ev);
    }

    fn end(&mut self, out: &mut String, o: &Outcome) {
        if self.sent_final {
            return;
        }
        // Stopped before the limit: an end-of-sequence (special) token ends it.
        let token = json!({"id": 2, "text": "</s>", "logprob": -0.1, "special": true});
        let details = if self.details {
            self.details(o, "eos_token")
        } else {
            Value::Null
        };
        let ev = json!({"index": o.tokens + 1, "token": token, "generated_text": self.text, "details": details});
        Self::event(out, &ev);
    }

    fn fail(&mut self, out: &mut String, msg: &str) {
        Self::event(out, &json!({"error": msg, "error_type": "generation"}));
    }

    fn whole(&self, text: &str, o: &Outcome) -> Value {
        let mut v = json!({"generated_text": text});
        if self.details {
            let finish = if o.hit_limit() { "length" } else { "eos_token" };
            v["details"] = json!({"finish_reason": finish, "generated_tokens": o.tokens, "seed": null, "prefill": [], "tokens": []});
        }
        v
    }

    fn error_response(&self, status: StatusCode, msg: &str) -> Response {
        let kind = if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::SERVICE_UNAVAILABLE
        {
            "overloaded"
        } else {
            "validation"
        };
        (status, Json(json!({"error": msg, "error_type": kind}))).into_response()
    }
}

fn parse(
    st: &SimState,
    body: &[u8],
    stream: bool,
) -> Result<(SimRequest, TgiFormat), Box<Response>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error": format!("invalid JSON: {e}"), "error_type": "validation"})),
            )
                .into_response(),
        )
    })?;
    let p = &v["parameters"];
    let req = SimRequest::new(
        word_ids(&v["inputs"]),
        u32_or(&p["max_new_tokens"], st.cfg.default_output_tokens),
        stream,
    );
    let fmt = TgiFormat {
        details: p["details"].as_bool().unwrap_or(false),
        prompt_tokens: req.prompt_tokens,
        text: String::new(),
        sent_final: false,
    };
    Ok((req, fmt))
}

async fn generate_stream(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
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

/// `POST /`: TGI's compatibility route, streaming when the body says
/// `"stream": true` (what huggingface_hub's `InferenceClient` calls).
async fn compat_generate(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let arrival = std::time::Instant::now();
    let stream =
        serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["stream"].as_bool() == Some(true));
    match parse(&st, &body, stream) {
        Ok((req, fmt)) => respond(st, arrival, req, fmt).await,
        Err(r) => *r,
    }
}

/// `GET /info` (router `Info` struct).
async fn info(State(st): State<Arc<SimState>>) -> Json<Value> {
    Json(json!({
        "model_id": st.cfg.model, "model_sha": null, "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": 128, "max_best_of": 2, "max_stop_sequences": 4,
        "max_input_tokens": 4095, "max_total_tokens": 4096, "validation_workers": 2,
        "max_client_batch_size": 4, "router": "text-generation-router", "version": "3.3.4",
        "sha": null, "docker_label": null,
    }))
}
