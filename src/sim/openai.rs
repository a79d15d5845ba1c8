//! OpenAI-compatible routes of the simulator, in the shape of vLLM, SGLang,
//! llama.cpp (with `timings`), Ollama's compatibility layer, OpenAI and Azure.

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
    message_word_ids, new_id, respond, u32_or, unix_now, word_ids, Outcome, SimRequest,
    StreamFormat,
};
use super::{EngineFlavor, SimState};

/// Adds `/v1/chat/completions`, `/v1/completions` and `/v1/models`.
pub(super) fn routes(r: Router<Arc<SimState>>) -> Router<Arc<SimState>> {
    r.route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
}

/// Adds Azure OpenAI's deployment route.
pub(super) fn azure_routes(r: Router<Arc<SimState>>) -> Router<Arc<SimState>> {
    r.route(
        "/openai/deployments/{deployment}/chat/completions",
        post(azure_chat),
    )
}

/// One OpenAI-style stream.
struct OpenAiFormat {
    chat: bool,
    include_usage: bool,
    flavor: EngineFlavor,
    id: String,
    created: u64,
    model: String,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[`,
    /// formatted once per request so per-token work stays tiny.
    head: String,
}

impl OpenAiFormat {
    fn new(st: &SimState, v: &Value, chat: bool) -> Self {
        let prefix = if chat { "chatcmpl-" } else { "cmpl-" };
        let mut f = Self {
            chat,
            include_usage: v["stream_options"]["include_usage"]
                .as_bool()
                .unwrap_or(false),
            flavor: st.cfg.engine,
            id: new_id(prefix),
            created: unix_now(),
            model: v["model"].as_str().unwrap_or(&st.cfg.model).to_owned(),
            head: String::new(),
        };
        f.set_model(f.model.clone());
        f
    }

    /// Sets the model name echoed in chunks (and the pre-formatted head).
    fn set_model(&mut self, model: String) {
        self.head = format!(
            r#"data: {{"id":{},"object":"{}","created":{},"model":{},"choices":["#,
            Value::from(self.id.as_str()),
            self.object(true),
            self.created,
            Value::from(model.as_str())
        );
        self.model = model;
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.chat, chunk) {
            (true, true) => "chat.completion.chunk",
            (true, false) => "chat.completion",
            (false, _) => "text_completion",
        }
    }

    fn push(&self, out: &mut String, choices: Value, usage: Option<&Outcome>) {
        let mut chunk = json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": choices});
        if let Some(o) = usage {
            chunk["usage"] = usage_json(o);
            if self.flavor == EngineFlavor::Llamacpp {
                chunk["timings"] = llamacpp_timings(o);
            }
        }
        out.push_str("data: ");
        out.push_str(&chunk.to_string());
        out.push_str("\n\n");
    }
}

fn usage_json(o: &Outcome) -> Value {
    json!({"prompt_tokens": o.prompt_tokens, "completion_tokens": o.tokens, "total_tokens": o.prompt_tokens + o.tokens})
}

/// llama.cpp's `timings` object for a finished generation.
fn llamacpp_timings(o: &Outcome) -> Value {
    let prompt_ms = Outcome::ns(o.arrival, o.first) as f64 / 1e6;
    let predicted_ms = Outcome::ns(o.first, o.end) as f64 / 1e6;
    let per_s = |n: u32, ms: f64| {
        if ms > 0.0 {
            f64::from(n) * 1000.0 / ms
        } else {
            0.0
        }
    };
    json!({
        "cache_n": 0, "prompt_n": o.prompt_tokens, "prompt_ms": prompt_ms,
        "prompt_per_token_ms": if o.prompt_tokens > 0 { prompt_ms / f64::from(o.prompt_tokens) } else { 0.0 },
        "prompt_per_second": per_s(o.prompt_tokens, prompt_ms),
        "predicted_n": o.tokens, "predicted_ms": predicted_ms,
        "predicted_per_token_ms": if o.tokens > 0 { predicted_ms / f64::from(o.tokens) } else { 0.0 },
        "predicted_per_second": per_s(o.tokens, predicted_ms),
    })
}

impl StreamFormat for OpenAiFormat {
    fn start(&mut self, out: &mut String, _r: &SimRequest) {
        if self.chat {
            // Pre-formatted: all first tokens of a burst are due at once.
            out.push_str(&self.head);
            out.push_str(if self.flavor == EngineFlavor::Llamacpp {
                r#"{"index":0,"delta":{"role":"assistant","content":null},"logprobs":null,"finish_reason":null}]}"#
            } else {
                r#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#
            });
            out.push_str("\n\n");
        }
    }

    fn token(&mut self, out: &mut String, _k: u32, text: &str, last: bool) {
        // Per token only the choice is written after the pre-formatted head.
        out.push_str(&self.head);
        out.push_str(if self.chat {
            r#"{"index":0,"delta":{"content":"#
        } else {
            r#"{"index":0,"text":"#
        });
        push_json_str(out, text);
        out.push_str(if self.chat {
            r#"},"logprobs":null,"finish_reason":"#
        } else {
            r#","logprobs":null,"finish_reason":"#
        });
        out.push_str(if last { r#""length""# } else { "null" });
        out.push_str("}]}\n\n");
    }

    fn end(&mut self, out: &mut String, o: &Outcome) {
        if !o.hit_limit() {
            let choice = if self.chat {
                json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"})
            } else {
                json!({"index": 0, "text": "", "logprobs": null, "finish_reason": "stop"})
            };
            self.push(out, json!([choice]), None);
        }
        if self.include_usage {
            self.push(out, json!([]), Some(o));
        }
        out.push_str("data: [DONE]\n\n");
    }

    fn fail(&mut self, out: &mut String, msg: &str) {
        if self.flavor == EngineFlavor::Llamacpp {
            // llama.cpp closes the stream after the error, without [DONE].
            let err = json!({"error": {"code": 500, "message": msg, "type": "server_error"}});
            out.push_str(&format!("data: {err}\n\n"));
        } else {
            let err = json!({"error": {"message": msg, "type": "InternalServerError", "param": null, "code": 500}});
            out.push_str(&format!("data: {err}\n\ndata: [DONE]\n\n"));
        }
    }

    fn whole(&self, text: &str, o: &Outcome) -> Value {
        let finish = if o.hit_limit() { "length" } else { "stop" };
        let choice = if self.chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
        };
        let mut v = json!({"id": self.id, "object": self.object(false), "created": self.created, "model": self.model, "choices": [choice], "usage": usage_json(o)});
        if self.flavor == EngineFlavor::Llamacpp {
            v["timings"] = llamacpp_timings(o);
        }
        v
    }

    fn error_response(&self, status: StatusCode, msg: &str) -> Response {
        error_json(self.flavor, status, msg)
    }
}

/// Appends `text` as a JSON string literal.
fn push_json_str(out: &mut String, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&Value::from(text).to_string());
    }
}

/// An error body: OpenAI wraps it in `{"error": …}`; the vLLM-style
/// engines answer with the flat `{"object": "error", …}` object.
fn error_json(flavor: EngineFlavor, status: StatusCode, msg: &str) -> Response {
    let kind = if status.is_server_error() {
        "InternalServerError"
    } else {
        "BadRequestError"
    };
    let inner = json!({"message": msg, "type": kind, "param": null, "code": status.as_u16()});
    let body = if flavor == EngineFlavor::Openai {
        json!({"error": inner})
    } else {
        json!({"object": "error", "message": msg, "type": kind, "param": null, "code": status.as_u16()})
    };
    (status, Json(body)).into_response()
}

fn bad_request(flavor: EngineFlavor, msg: &str) -> Response {
    error_json(flavor, StatusCode::BAD_REQUEST, msg)
}

fn parse(
    st: &SimState,
    body: &[u8],
    chat: bool,
) -> Result<(SimRequest, OpenAiFormat), Box<Response>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(bad_request(
            st.cfg.engine,
            &format!("invalid JSON body: {e}"),
        ))
    })?;
    if chat && !v["messages"].is_array() {
        return Err(Box::new(bad_request(
            st.cfg.engine,
            "'messages' must be an array",
        )));
    }
    let prompt = if chat {
        message_word_ids(&v["messages"], "content")
    } else {
        word_ids(&v["prompt"])
    };
    let limit = if v["max_completion_tokens"].is_u64() {
        &v["max_completion_tokens"]
    } else {
        &v["max_tokens"]
    };
    let req = SimRequest::new(
        prompt,
        u32_or(limit, st.cfg.default_output_tokens),
        v["stream"].as_bool().unwrap_or(false),
    );
    Ok((req, OpenAiFormat::new(st, &v, chat)))
}

async fn generate(st: Arc<SimState>, body: &[u8], chat: bool) -> Response {
    let arrival = std::time::Instant::now();
    match parse(&st, body, chat) {
        Ok((req, fmt)) => respond(st, arrival, req, fmt).await,
        Err(resp) => *resp,
    }
}

/// `POST /v1/chat/completions`.
async fn chat(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    generate(st, &body, true).await
}

/// `POST /v1/completions`.
async fn completions(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    generate(st, &body, false).await
}

/// `POST /openai/deployments/{deployment}/chat/completions?api-version=…`.
async fn azure_chat(
    State(st): State<Arc<SimState>>,
    Path(deployment): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let arrival = std::time::Instant::now();
    if !q.contains_key("api-version") {
        return bad_request(
            st.cfg.engine,
            "Missing required query parameter 'api-version'",
        );
    }
    match parse(&st, &body, true) {
        Ok((req, mut fmt)) => {
            fmt.set_model(deployment);
            respond(st, arrival, req, fmt).await
        }
        Err(resp) => *resp,
    }
}

/// The `owned_by` each engine reports in `/v1/models`.
fn owned_by(f: EngineFlavor) -> &'static str {
    match f {
        EngineFlavor::Sglang => "sglang",
        EngineFlavor::Llamacpp => "llamacpp",
        EngineFlavor::Ollama => "library",
        EngineFlavor::Openai => "system",
        EngineFlavor::Tgi => "text-generation-inference",
        _ => "vllm",
    }
}

/// `GET /v1/models`.
async fn models(State(st): State<Arc<SimState>>) -> Json<Value> {
    let mut m = json!({"id": st.cfg.model, "object": "model", "created": unix_now(), "owned_by": owned_by(st.cfg.engine)});
    if st.cfg.engine == EngineFlavor::Vllm {
        m["root"] = json!(st.cfg.model);
        m["parent"] = Value::Null;
        m["max_model_len"] = json!(8192);
    }
    Json(json!({"object": "list", "data": [m]}))
}
