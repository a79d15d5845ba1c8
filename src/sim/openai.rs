//! OpenAI-compatible routes of the simulator (vLLM's response shapes).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::model::{Admission, GenEvent, Generation, Rejection};
use super::SimState;

/// Words the simulator "generates"; each is one token of common tokenizers.
const WORDS: &[&str] = &[
    " the", " of", " and", " to", " in", " is", " that", " it", " for", " on", " with", " as",
    " was", " at", " by", " an", " be", " this", " from", " or",
];

/// The parts of a generation request the simulator honours.
struct Gen {
    chat: bool,
    stream: bool,
    include_usage: bool,
    max_tokens: u32,
    prompt_tokens: u32,
    model: String,
}

fn parse_request(st: &SimState, body: &[u8], chat: bool) -> Result<Gen, Box<Response>> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(&format!("invalid JSON body: {e}")))?;
    let prompt_tokens = if chat {
        let msgs = v["messages"]
            .as_array()
            .ok_or_else(|| bad_request("'messages' must be an array"))?;
        msgs.iter().map(|m| count_words(&m["content"])).sum()
    } else {
        count_words(&v["prompt"])
    };
    let max_tokens = v["max_completion_tokens"]
        .as_u64()
        .or_else(|| v["max_tokens"].as_u64())
        .map_or(st.cfg.default_output_tokens, |n| {
            u32::try_from(n).unwrap_or(u32::MAX)
        });
    Ok(Gen {
        chat,
        stream: v["stream"].as_bool().unwrap_or(false),
        include_usage: v["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false),
        max_tokens,
        prompt_tokens,
        model: v["model"].as_str().unwrap_or(&st.cfg.model).to_owned(),
    })
}

/// Whitespace-separated words: the simulator's token count of a prompt.
fn count_words(v: &Value) -> u32 {
    let n = match v {
        Value::String(s) => s.split_whitespace().count(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str().or(p.as_str()))
            .map(|s| s.split_whitespace().count())
            .sum(),
        _ => 0,
    };
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn bad_request(msg: &str) -> Box<Response> {
    let body = json!({"object": "error", "message": msg, "type": "BadRequestError", "param": null, "code": 400});
    Box::new((StatusCode::BAD_REQUEST, Json(body)).into_response())
}

fn server_error(msg: &str) -> Response {
    let body = json!({"object": "error", "message": msg, "type": "InternalServerError", "param": null, "code": 500});
    (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
}

fn rejection(r: &Rejection) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let body = json!({"object": "error", "message": r.message, "type": "ServiceUnavailableError", "param": null, "code": r.status});
    let mut resp = (status, Json(body)).into_response();
    if let Some(s) = r.retry_after_s {
        if let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string()) {
            resp.headers_mut().insert("retry-after", v);
        }
    }
    resp
}

/// `POST /v1/chat/completions`.
pub(super) async fn chat(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    generate(st, &body, true).await
}

/// `POST /v1/completions`.
pub(super) async fn completions(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    generate(st, &body, false).await
}

async fn generate(st: Arc<SimState>, body: &[u8], chat: bool) -> Response {
    let arrival = Instant::now();
    let gen = match parse_request(&st, body, chat) {
        Ok(g) => g,
        Err(resp) => return *resp,
    };
    let admission = Admission {
        prompt_tokens: gen.prompt_tokens,
        max_tokens: gen.max_tokens,
        arrival,
    };
    let tokens = match st.model.admit(admission) {
        Ok(t) => t,
        Err(r) => return rejection(&r),
    };
    st.metrics.start_request(gen.prompt_tokens);
    if gen.stream {
        stream_response(st, gen, tokens, arrival)
    } else {
        whole_response(st, gen, tokens, arrival).await
    }
}

async fn whole_response(
    st: Arc<SimState>,
    gen: Gen,
    mut tokens: Generation,
    arrival: Instant,
) -> Response {
    let mut text = String::new();
    let mut k = 0u32;
    while let Some(ev) = tokens.next().await {
        if let GenEvent::Fail(msg) = ev {
            st.metrics.end_request(arrival.elapsed(), false);
            return server_error(&msg);
        }
        if k == 0 {
            st.metrics.first_token(arrival.elapsed());
        }
        st.metrics.token();
        text.push_str(WORDS[k as usize % WORDS.len()]);
        k += 1;
    }
    st.metrics.end_request(arrival.elapsed(), true);
    let ids = ids(&gen);
    let choice = if gen.chat {
        json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"})
    } else {
        json!({"index": 0, "text": text, "finish_reason": "length"})
    };
    Json(json!({
        "id": ids.id, "object": ids.object_whole, "created": ids.created, "model": gen.model,
        "choices": [choice], "usage": usage(&gen),
    }))
    .into_response()
}

struct Ids {
    id: String,
    object_whole: &'static str,
    object_chunk: &'static str,
    created: u64,
}

fn ids(gen: &Gen) -> Ids {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    if gen.chat {
        Ids {
            id: format!("chatcmpl-{created:x}{nanos:x}"),
            object_whole: "chat.completion",
            object_chunk: "chat.completion.chunk",
            created,
        }
    } else {
        Ids {
            id: format!("cmpl-{created:x}{nanos:x}"),
            object_whole: "text_completion",
            object_chunk: "text_completion",
            created,
        }
    }
}

fn usage(gen: &Gen) -> Value {
    json!({"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.max_tokens,
           "total_tokens": gen.prompt_tokens + gen.max_tokens})
}

fn stream_response(st: Arc<SimState>, gen: Gen, tokens: Generation, arrival: Instant) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(produce_stream(st, gen, tokens, arrival, tx));
    let body = Body::from_stream(tokio_stream_from(rx));
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Writes one SSE frame per token at its deadline; stops if the client leaves.
async fn produce_stream(
    st: Arc<SimState>,
    gen: Gen,
    mut tokens: Generation,
    arrival: Instant,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let ids = ids(&gen);
    // Formatted once per request: per token only the choice is written, so
    // the simulator's own cost stays far below the delays it simulates.
    let head = chunk_head(&ids, &gen);
    let mut finished = gen.max_tokens == 0;
    let mut k = 0u32;
    while let Some(ev) = tokens.next().await {
        if let GenEvent::Fail(msg) = ev {
            let err = json!({"error": {"object": "error", "message": msg, "type": "InternalServerError", "param": null, "code": 500}});
            let _ = tx
                .send(Ok(Bytes::from(format!("data: {err}\n\ndata: [DONE]\n\n"))))
                .await;
            break;
        }
        let mut frame = String::with_capacity(head.len() * 2 + 128);
        if k == 0 {
            st.metrics.first_token(arrival.elapsed());
            if gen.chat {
                frame.push_str(&head);
                frame.push_str(r#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#);
                frame.push_str("\n\n");
            }
        }
        let last = k + 1 == gen.max_tokens;
        push_token(&mut frame, &head, gen.chat, k, last);
        st.metrics.token();
        if last {
            finish_frame(&mut frame, &ids, &gen);
            finished = true;
        }
        if tx.send(Ok(Bytes::from(frame))).await.is_err() {
            break;
        }
        k += 1;
    }
    if gen.max_tokens == 0 {
        let mut frame = String::new();
        finish_frame(&mut frame, &ids, &gen);
        let _ = tx.send(Ok(Bytes::from(frame))).await;
    }
    st.metrics.end_request(arrival.elapsed(), finished);
}

/// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[` of one request.
fn chunk_head(ids: &Ids, gen: &Gen) -> String {
    format!(
        r#"data: {{"id":{},"object":"{}","created":{},"model":{},"choices":["#,
        Value::from(ids.id.as_str()),
        ids.object_chunk,
        ids.created,
        Value::from(gen.model.as_str())
    )
}

/// Appends one token's chunk; the words need no JSON escaping.
fn push_token(frame: &mut String, head: &str, chat: bool, k: u32, last: bool) {
    let word = WORDS[k as usize % WORDS.len()];
    let finish = if last { r#""length""# } else { "null" };
    frame.push_str(head);
    if chat {
        frame.push_str(r#"{"index":0,"delta":{"content":""#);
    } else {
        frame.push_str(r#"{"index":0,"text":""#);
    }
    frame.push_str(word);
    frame.push_str(if chat {
        r#""},"logprobs":null,"finish_reason":"#
    } else {
        r#"","logprobs":null,"finish_reason":"#
    });
    frame.push_str(finish);
    frame.push_str("}]}\n\n");
}

fn finish_frame(frame: &mut String, ids: &Ids, gen: &Gen) {
    if gen.include_usage {
        let chunk = json!({"id": ids.id, "object": ids.object_chunk, "created": ids.created,
                           "model": gen.model, "choices": [], "usage": usage(gen)});
        frame.push_str("data: ");
        frame.push_str(&chunk.to_string());
        frame.push_str("\n\n");
    }
    frame.push_str("data: [DONE]\n\n");
}

/// `GET /v1/models`.
pub(super) async fn models(State(st): State<Arc<SimState>>) -> Json<Value> {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Json(json!({"object": "list", "data": [{
        "id": st.cfg.model, "object": "model", "created": created, "owned_by": "vllm",
        "root": st.cfg.model, "parent": null, "max_model_len": 8192,
    }]}))
}
