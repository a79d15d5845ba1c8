//! Turns a finished [`Capture`] into one trace line, on the writer thread.
//!
//! - Prompt tokens are **words** (whitespace-separated) of the prompt text —
//!   every message's content, the prompt, system text — counted without a
//!   tokenizer so nothing heavy runs per request. For Throtl's own prompts
//!   (one token per word) and the simulator (which counts words) this is
//!   exact; for natural English text it is an estimate (about 0.75 words per
//!   token with GPT-style tokenizers).
//! - Prefix hashes: the prompt's words in blocks of `block_tokens`, each
//!   block's hash chained over the previous one (so equal hashes mean equal
//!   prefixes, as in the Mooncake traces), keyed with SipHash under a random
//!   128-bit key drawn when the recording starts and never written: without
//!   it no hash can be matched to a guessed text. Hashes are cut to 53 bits
//!   so every JSON reader keeps them exact.
//! - Output tokens: the server's `usage` when it reports one, else the count
//!   of stream messages carrying text (one token each on vLLM-style servers).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::capture::Capture;
use crate::api::{ApiKind, Framing};
use crate::stream::{NdjsonDecoder, SseDecoder};

/// The protocol of a generation route, or `None` for anything else
/// (models lists, health, metrics: forwarded, not recorded).
pub fn route(path: &str) -> Option<ApiKind> {
    let p = path.trim_end_matches('/');
    Some(match p {
        _ if p.starts_with("/openai/deployments/") && p.ends_with("/chat/completions") => {
            ApiKind::AzureOpenai
        }
        "/v1/chat/completions" | "/chat/completions" => ApiKind::OpenaiChat,
        "/v1/completions" | "/completions" => ApiKind::OpenaiCompletions,
        "/generate_stream" | "/generate" => ApiKind::Tgi,
        "/api/chat" => ApiKind::OllamaChat,
        "/api/generate" => ApiKind::OllamaGenerate,
        "/v1/messages" => ApiKind::Anthropic,
        "/v2/chat" => ApiKind::Cohere,
        _ if p.contains(":streamGenerateContent") || p.contains(":generateContent") => {
            ApiKind::Gemini
        }
        _ => return None,
    })
}

/// One line of a `throtl` trace (docs/trace.schema.json).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraceLine {
    /// Format version (1).
    pub v: u32,
    /// Arrival at the proxy, ms from the start of the recording.
    pub timestamp_ms: f64,
    /// Arrival as Unix time (ms).
    pub unix_ms: f64,
    /// Protocol (`--api` spelling).
    pub protocol: &'static str,
    /// Request path.
    pub path: String,
    /// Model asked for.
    pub model: Option<String>,
    /// The client asked for a stream.
    pub stream: bool,
    /// Prompt length (words; see the module docs).
    pub prompt_tokens: u32,
    /// `max_tokens` (or the protocol's equivalent), if set.
    pub max_tokens: Option<u32>,
    /// Generated tokens.
    pub output_tokens: Option<u32>,
    /// `usage` (server) or `chunks` (text-bearing messages counted).
    pub output_tokens_source: Option<&'static str>,
    /// Words per prefix block.
    pub block_tokens: u32,
    /// Salted, chained prefix-block hashes.
    pub hash_ids: Vec<u64>,
    /// Conversation id the client sent, if any.
    pub conversation: Option<String>,
    /// HTTP status passed to the client.
    pub status: Option<u16>,
    /// What went wrong (upstream unreachable, stream broken, server error).
    pub error: Option<String>,
    /// First text-bearing chunk, ms after arrival.
    pub ttft_ms: Option<f64>,
    /// Last byte, ms after arrival.
    pub duration_ms: Option<f64>,
    /// Prompt text (only with `--keep-text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_text: Option<String>,
    /// Answer text (only with `--keep-text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_text: Option<String>,
}

/// Settings and keys of one recording.
pub struct Analyzer {
    /// Start of the recording.
    pub origin: Instant,
    /// Its Unix time (ms).
    pub origin_unix_ms: f64,
    /// Secret hash key (random per recording).
    pub key: RandomState,
    /// Words per block.
    pub block_tokens: u32,
    /// Write texts.
    pub keep_text: bool,
}

/// Seconds as milliseconds, rounded to the microsecond.
fn micros(s: f64) -> f64 {
    (s * 1e6).round() / 1000.0
}

/// The JSON-safe part of a hash (53 bits).
const HASH_MASK: u64 = (1 << 53) - 1;

impl Analyzer {
    /// The trace line of `c`.
    pub fn line(&self, c: &Capture) -> TraceLine {
        let body: Value = serde_json::from_slice(&c.request).unwrap_or(Value::Null);
        let prompt = prompt_text(&body);
        let words: Vec<&str> = prompt.split_whitespace().collect();
        let out = output(c, self.keep_text);
        let ms = |t: Instant| micros(t.saturating_duration_since(c.arrival).as_secs_f64());
        let at = micros(
            c.arrival
                .saturating_duration_since(self.origin)
                .as_secs_f64(),
        );
        TraceLine {
            v: 1,
            timestamp_ms: at,
            unix_ms: (self.origin_unix_ms + at).round(),
            protocol: c.api.as_str(),
            path: c.path.clone(),
            model: model(c.api, &c.path, &body),
            stream: streamed(c.api, &body),
            prompt_tokens: u32::try_from(words.len()).unwrap_or(u32::MAX),
            max_tokens: max_tokens(&body),
            output_tokens: out.tokens,
            output_tokens_source: out.source,
            block_tokens: self.block_tokens,
            hash_ids: self.hashes(&words),
            conversation: conversation(c, &body),
            status: c.status,
            error: c.error.clone().or(out.error),
            ttft_ms: out.first.map(ms),
            duration_ms: c.end.map(ms),
            prompt_text: self.keep_text.then_some(prompt),
            answer_text: out.answer,
        }
    }

    /// Chained keyed hashes of the blocks of `words` (the last may be partial).
    fn hashes(&self, words: &[&str]) -> Vec<u64> {
        let mut prev = 0u64;
        words
            .chunks(self.block_tokens.max(1) as usize)
            .map(|block| {
                prev = self.key.hash_one((prev, block)) & HASH_MASK;
                prev
            })
            .collect()
    }
}

/// Text of every string under `text`, `content` and `parts` of `v`.
fn collect(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(s);
        }
        Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
        Value::Object(o) => {
            for k in ["text", "content", "parts"] {
                if let Some(x) = o.get(k) {
                    collect(x, out);
                }
            }
        }
        _ => {}
    }
}

/// The prompt text of a request body of any supported protocol.
fn prompt_text(body: &Value) -> String {
    let mut out = String::new();
    for field in [
        "system",
        "systemInstruction",
        "messages",
        "prompt",
        "inputs",
        "contents",
        "message",
    ] {
        if let Some(v) = body.get(field) {
            collect(v, &mut out);
        }
    }
    out
}

fn model(api: ApiKind, path: &str, body: &Value) -> Option<String> {
    if let Some(m) = body.get("model").and_then(Value::as_str) {
        return Some(m.to_owned());
    }
    match api {
        ApiKind::AzureOpenai => path
            .strip_prefix("/openai/deployments/")
            .and_then(|r| r.split('/').next())
            .map(str::to_owned),
        ApiKind::Gemini => path
            .split("/models/")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .map(str::to_owned),
        _ => None,
    }
}

fn streamed(api: ApiKind, body: &Value) -> bool {
    match api {
        ApiKind::Gemini | ApiKind::Tgi => true,
        // Ollama streams unless told not to.
        ApiKind::OllamaChat | ApiKind::OllamaGenerate => {
            body.get("stream").and_then(Value::as_bool).unwrap_or(true)
        }
        _ => body.get("stream").and_then(Value::as_bool).unwrap_or(false),
    }
}

fn max_tokens(body: &Value) -> Option<u32> {
    let paths: [&[&str]; 5] = [
        &["max_tokens"],
        &["max_completion_tokens"],
        &["parameters", "max_new_tokens"],
        &["options", "num_predict"],
        &["generationConfig", "maxOutputTokens"],
    ];
    paths.iter().find_map(|p| {
        let v = p.iter().try_fold(body, |v, k| v.get(*k))?;
        v.as_u64().map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    })
}

/// A header the client sent, else the body's `user` (OpenAI) or
/// `metadata.user_id` (Anthropic).
fn conversation(c: &Capture, body: &Value) -> Option<String> {
    c.conversation_header.clone().or_else(|| {
        body.get("user")
            .or_else(|| body.get("metadata").and_then(|m| m.get("user_id")))
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
}

/// What the response said.
#[derive(Default)]
struct Output {
    tokens: Option<u32>,
    source: Option<&'static str>,
    first: Option<Instant>,
    error: Option<String>,
    answer: Option<String>,
}

fn output(c: &Capture, keep_text: bool) -> Output {
    let framed = c
        .content_type
        .as_deref()
        .is_some_and(|t| t.contains("event-stream") || t.contains("ndjson"));
    let protocol = c.api.protocol();
    let mut o = Output {
        answer: keep_text.then(String::new),
        ..Output::default()
    };
    if !framed {
        return whole_body(c, o);
    }
    let mut chunks_with_text = 0u32;
    let mut usage = None;
    let mut sse = SseDecoder::new();
    let mut nd = NdjsonDecoder::new();
    let mut msgs: Vec<(Option<String>, String)> = Vec::new();
    for (at, bytes) in &c.chunks {
        msgs.clear();
        decode(protocol.framing(), bytes, &mut sse, &mut nd, &mut msgs);
        for (event, data) in &msgs {
            let Ok(ev) = protocol.parse_capture(event.as_deref(), data, o.answer.as_mut()) else {
                continue;
            };
            if ev.content {
                chunks_with_text += 1;
                o.first.get_or_insert(*at);
            }
            if let Some(n) = ev.usage.and_then(|u| u.output_tokens) {
                usage = Some(n);
            }
            if ev.error.is_some() {
                o.error = ev.error;
            }
        }
    }
    (o.tokens, o.source) = match usage {
        Some(n) => (Some(n), Some("usage")),
        None => (Some(chunks_with_text), Some("chunks")),
    };
    o
}

fn decode(
    framing: Framing,
    bytes: &[u8],
    sse: &mut SseDecoder,
    nd: &mut NdjsonDecoder,
    out: &mut Vec<(Option<String>, String)>,
) {
    match framing {
        Framing::Sse => {
            let mut evs = Vec::new();
            sse.feed(bytes, &mut evs);
            out.extend(evs.into_iter().map(|e| (e.event, e.data)));
        }
        Framing::Ndjson => {
            let mut lines = Vec::new();
            nd.feed(bytes, &mut lines);
            out.extend(lines.into_iter().map(|l| (None, l)));
        }
    }
}

/// A response that is one JSON document (no stream): its usage, and the
/// first byte as the first token.
fn whole_body(c: &Capture, mut o: Output) -> Output {
    o.first = c.chunks.first().map(|(t, _)| *t);
    let bytes: Vec<u8> = c
        .chunks
        .iter()
        .flat_map(|(_, b)| b.iter().copied())
        .collect();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let paths: [&[&str]; 6] = [
        &["usage", "completion_tokens"],
        &["usage", "output_tokens"],
        &["eval_count"],
        &["details", "generated_tokens"],
        &["usageMetadata", "candidatesTokenCount"],
        &["usage", "tokens", "output_tokens"],
    ];
    o.tokens = paths.iter().find_map(|p| {
        let x = p.iter().try_fold(&v, |v, k| v.get(*k))?;
        x.as_u64().map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    });
    o.source = o.tokens.map(|_| "usage");
    if let Some(a) = o.answer.as_mut() {
        a.push_str(&String::from_utf8_lossy(&bytes));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_protocols() {
        assert_eq!(route("/v1/chat/completions"), Some(ApiKind::OpenaiChat));
        assert_eq!(route("/api/generate"), Some(ApiKind::OllamaGenerate));
        assert_eq!(
            route("/v1beta/models/gemini-2.0-flash:streamGenerateContent"),
            Some(ApiKind::Gemini)
        );
        assert_eq!(
            route("/openai/deployments/gpt4o/chat/completions"),
            Some(ApiKind::AzureOpenai)
        );
        assert_eq!(route("/v1/models"), None);
        assert_eq!(route("/metrics"), None);
    }

    #[test]
    fn prompt_text_max_tokens_and_hashes() {
        let body: Value = serde_json::from_str(
            r#"{"model":"m","max_tokens":7,"user":"u1","messages":[{"role":"system","content":"a b"},{"role":"user","content":[{"type":"text","text":"c d e"}]}]}"#,
        )
        .unwrap();
        assert_eq!(prompt_text(&body).split_whitespace().count(), 5);
        assert_eq!(max_tokens(&body), Some(7));
        let a = Analyzer {
            origin: Instant::now(),
            origin_unix_ms: 0.0,
            key: RandomState::new(),
            block_tokens: 2,
            keep_text: false,
        };
        let h1 = a.hashes(&["a", "b", "c", "d", "e"]);
        let h2 = a.hashes(&["a", "b", "c", "x"]);
        assert_eq!(h1.len(), 3);
        assert_eq!(h1[0], h2[0], "same first block");
        assert_ne!(h1[1], h2[1]);
        assert!(h1.iter().all(|h| *h <= HASH_MASK));
        let other = Analyzer {
            key: RandomState::new(),
            ..a
        };
        assert_ne!(other.hashes(&["a", "b"])[0], h1[0], "keyed per recording");
    }
}
