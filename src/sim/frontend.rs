//! What every protocol front-end of the simulator shares: admitting a
//! request to the [`EngineModel`](super::model::EngineModel), consuming its
//! [`Generation`] events, keeping `/metrics` current, and streaming the
//! frames a [`StreamFormat`] renders. New [`GenEvent`] variants are handled
//! here, in [`drive`], once for all protocols.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::faults::{self, WireFraming};
use super::model::{Admission, GenEvent, Generation, Rejection};
use super::SimState;

/// Words the simulator "generates"; each is one token of common tokenizers.
pub(crate) const WORDS: &[&str] = &[
    " the", " of", " and", " to", " in", " is", " that", " it", " for", " on", " with", " as",
    " was", " at", " by", " an", " be", " this", " from", " or",
];

/// The text of token `k` (0-based).
pub(crate) fn word(k: u32) -> &'static str {
    WORDS[k as usize % WORDS.len()]
}

/// The simulator's tokens of a prompt value: one id per whitespace-separated
/// word of a string, or of an array of strings and parts (their `text`,
/// `content` and `parts`). The count is the prompt length; the ids feed the
/// engine model's prefix cache.
pub(crate) fn word_ids(v: &Value) -> Vec<u64> {
    let mut out = Vec::new();
    push_word_ids(v, &mut out);
    out
}

fn push_word_ids(v: &Value, out: &mut Vec<u64>) {
    match v {
        Value::String(s) => out.extend(s.split_whitespace().map(word_id)),
        Value::Array(parts) => {
            for p in parts {
                match p {
                    Value::String(s) => out.extend(s.split_whitespace().map(word_id)),
                    Value::Object(_) => {
                        if let Some(t) = p["text"].as_str() {
                            out.extend(t.split_whitespace().map(word_id));
                        }
                        push_word_ids(&p["content"], out);
                        push_word_ids(&p["parts"], out);
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// [`word_ids`] of `field` of every message in `msgs`, in order.
pub(crate) fn message_word_ids(msgs: &Value, field: &str) -> Vec<u64> {
    msgs.as_array().map_or_else(Vec::new, |m| {
        m.iter().flat_map(|m| word_ids(&m[field])).collect()
    })
}

/// FNV-1a of a word.
fn word_id(w: &str) -> u64 {
    w.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A request id unique enough for a simulator.
pub(crate) fn new_id(prefix: &str) -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{prefix}{:x}{:08x}", d.as_secs(), d.subsec_nanos())
}

/// A `u32` from a JSON number, or `default`.
pub(crate) fn u32_or(v: &Value, default: u32) -> u32 {
    v.as_u64()
        .map_or(default, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// The protocol-neutral part of a generation request.
#[derive(Debug, Clone)]
pub(crate) struct SimRequest {
    /// Prompt length in tokens (words).
    pub prompt_tokens: u32,
    /// Tokens to generate.
    pub max_tokens: u32,
    /// Stream the answer.
    pub stream: bool,
    /// One id per prompt word, in order, for the engine model's prefix cache.
    pub prompt_ids: Vec<u64>,
}

impl SimRequest {
    /// A request whose prompt is `prompt_ids` (its length is the prompt length).
    pub fn new(prompt_ids: Vec<u64>, max_tokens: u32, stream: bool) -> Self {
        Self {
            prompt_tokens: u32::try_from(prompt_ids.len()).unwrap_or(u32::MAX),
            max_tokens,
            stream,
            prompt_ids,
        }
    }
}

/// How a generation went, for end frames and whole responses.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// Tokens emitted.
    pub tokens: u32,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Tokens requested.
    pub max_tokens: u32,
    /// Arrival at the server.
    pub arrival: Instant,
    /// First token (arrival when none).
    pub first: Instant,
    /// End of generation.
    pub end: Instant,
}

impl Outcome {
    /// True when generation stopped at the token limit.
    pub fn hit_limit(&self) -> bool {
        self.tokens >= self.max_tokens
    }

    /// Nanoseconds between two instants.
    pub fn ns(a: Instant, b: Instant) -> u64 {
        u64::try_from(b.saturating_duration_since(a).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// One protocol's rendering of a generation.
pub(crate) trait StreamFormat: Send + 'static {
    /// Content type of the streamed body.
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }
    /// Frames sent right before the first token (or at the end if none came).
    fn start(&mut self, _out: &mut String, _o: &SimRequest) {}
    /// The frame of token `k`; `last` when it is the final token requested.
    fn token(&mut self, out: &mut String, k: u32, text: &str, last: bool);
    /// Frames after the last token: usage, finish and terminator.
    fn end(&mut self, out: &mut String, o: &Outcome);
    /// An error frame after streaming started.
    fn fail(&mut self, out: &mut String, msg: &str);
    /// The non-streaming response body.
    fn whole(&self, text: &str, o: &Outcome) -> Value;
    /// An HTTP error response in this protocol's shape.
    fn error_response(&self, status: StatusCode, msg: &str) -> Response {
        let body = json!({"object": "error", "message": msg, "type": "BadRequestError", "param": null, "code": status.as_u16()});
        (status, Json(body)).into_response()
    }
}

/// Admits `req` and answers it in `fmt`'s protocol, streamed or whole.
pub(crate) async fn respond<F: StreamFormat>(
    st: Arc<SimState>,
    arrival: Instant,
    req: SimRequest,
    fmt: F,
) -> Response {
    let admission = Admission {
        prompt_tokens: req.prompt_tokens,
        max_tokens: req.max_tokens,
        arrival,
    };
    let gen = match st.model.admit_prompt(admission, &req.prompt_ids) {
        Ok(g) => g,
        Err(r) => return rejection(&fmt, &r),
    };
    st.metrics.start_request(req.prompt_tokens);
    if req.stream {
        stream(st, req, gen, arrival, fmt)
    } else {
        whole(st, req, gen, arrival, fmt).await
    }
}

fn rejection<F: StreamFormat>(fmt: &F, r: &Rejection) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut resp = fmt.error_response(status, &r.message);
    if let Some(s) = r.retry_after_s {
        if let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string()) {
            resp.headers_mut().insert("retry-after", v);
        }
    }
    resp
}

/// What a front-end is told at each step of a generation.
enum Step {
    Token {
        k: u32,
        text: &'static str,
        last: bool,
    },
    End(Outcome),
    Fail(String),
    /// An injected fault (disconnect, corrupt chunk): see [`faults`].
    Fault(GenEvent),
}

/// Turns a [`Generation`]'s events into [`Step`]s, keeping `/metrics`
/// current. The single place where [`GenEvent`]s are interpreted.
/// Dropping it before [`Steps::close`] (the client went away) records the
/// request as not finished, so `/metrics` never leaks a running request.
struct Steps {
    st: Arc<SimState>,
    req: SimRequest,
    gen: Generation,
    arrival: Instant,
    k: u32,
    first: Option<Instant>,
    over: bool,
    closed: bool,
}

impl Steps {
    fn new(st: Arc<SimState>, req: SimRequest, gen: Generation, arrival: Instant) -> Self {
        Self {
            st,
            req,
            gen,
            arrival,
            k: 0,
            first: None,
            over: false,
            closed: false,
        }
    }

    async fn next(&mut self) -> Option<Step> {
        if self.over {
            return None;
        }
        match self.gen.next().await {
            Some(GenEvent::Token) => {
                if self.k == 0 {
                    self.first = Some(Instant::now());
                    self.st.metrics.first_token(self.arrival.elapsed());
                }
                self.st.metrics.token();
                let k = self.k;
                self.k += 1;
                Some(Step::Token {
                    k,
                    text: word(k),
                    last: self.k == self.req.max_tokens,
                })
            }
            Some(GenEvent::Fail(msg)) => {
                self.over = true;
                Some(Step::Fail(msg))
            }
            Some(ev @ (GenEvent::Disconnect | GenEvent::Malformed)) => {
                self.over = true;
                Some(Step::Fault(ev))
            }
            None => {
                self.over = true;
                let end = Instant::now();
                Some(Step::End(Outcome {
                    tokens: self.k,
                    prompt_tokens: self.req.prompt_tokens,
                    max_tokens: self.req.max_tokens,
                    arrival: self.arrival,
                    first: self.first.unwrap_or(end),
                    end,
                }))
            }
        }
    }

    /// Records the request's end, once; `finished` is false for failures
    /// and clients that went away.
    fn close(&mut self, finished: bool) {
        if !self.closed {
            self.closed = true;
            self.st
                .metrics
                .end_request(self.arrival.elapsed(), finished);
        }
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        self.close(false);
    }
}

async fn whole<F: StreamFormat>(
    st: Arc<SimState>,
    req: SimRequest,
    gen: Generation,
    arrival: Instant,
    fmt: F,
) -> Response {
    let mut text = String::new();
    let mut steps = Steps::new(st, req, gen, arrival);
    while let Some(step) = steps.next().await {
        match step {
            Step::Token { text: t, .. } => text.push_str(t),
            Step::End(o) => {
                steps.close(true);
                return Json(fmt.whole(&text, &o)).into_response();
            }
            // Dropping `steps` records these as not finished.
            Step::Fail(msg) => {
                return fmt.error_response(StatusCode::INTERNAL_SERVER_ERROR, &msg);
            }
            Step::Fault(ev) => {
                return faults::whole_fault_response(&ev).unwrap_or_else(|| {
                    fmt.error_response(StatusCode::INTERNAL_SERVER_ERROR, "injected fault")
                });
            }
        }
    }
    fmt.error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "generation ended without a result",
    )
}

fn stream<F: StreamFormat>(
    st: Arc<SimState>,
    req: SimRequest,
    gen: Generation,
    arrival: Instant,
    fmt: F,
) -> Response {
    let content_type = fmt.content_type();
    let framing = if content_type.contains("ndjson") {
        WireFraming::Ndjson
    } else {
        WireFraming::Sse
    };
    let producer = Producer {
        steps: Steps::new(st, req, gen, arrival),
        fmt,
        started: false,
        framing,
    };
    // The connection's own task polls the generation: a token costs one
    // wake-up, with no producer task and channel in between.
    let frames = futures_util::stream::unfold(producer, |mut p| async move {
        let item = p.next_frame().await?;
        Some((item, p))
    });
    Response::builder()
        .header("content-type", content_type)
        .header("cache-control", "no-cache")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Renders each step's frames as the body is polled.
struct Producer<F> {
    steps: Steps,
    fmt: F,
    started: bool,
    framing: WireFraming,
}

impl<F: StreamFormat> Producer<F> {
    /// The next body item; `None` once the stream is over.
    async fn next_frame(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        let step = self.steps.next().await?;
        if let Step::Fault(ev) = &step {
            self.steps.close(false);
            if !self.started {
                // Let the connection send the response head first, as a
                // server that fails mid-stream has: one Pending does it.
                tokio::task::yield_now().await;
            }
            return faults::fault_item(ev, self.framing);
        }
        let mut out = String::with_capacity(256);
        if !self.started && !matches!(step, Step::Fail(_)) {
            self.fmt.start(&mut out, &self.steps.req);
            self.started = true;
        }
        match step {
            Step::Token { k, text, last } => self.fmt.token(&mut out, k, text, last),
            Step::End(o) => {
                self.fmt.end(&mut out, &o);
                self.steps.close(true);
            }
            Step::Fail(msg) => {
                self.fmt.fail(&mut out, &msg);
                self.steps.close(false);
            }
            Step::Fault(_) => {}
        }
        Some(Ok(Bytes::from(out)))
    }
}
