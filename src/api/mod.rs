//! Wire protocols: how a generation request is built and how its stream is read.
//!
//! Each protocol turns a [`GenRequest`] into an HTTP request and classifies
//! each framed stream message into a [`ParsedEvent`]. Protocols never touch
//! clocks; the engine stamps arrival times before calling them.

pub mod anthropic;
pub mod cohere;
pub mod gemini;
pub mod ollama;
pub mod openai;
pub mod tgi;

use std::fmt;

use serde::{Deserialize, Serialize};

/// The protocol a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiKind {
    /// OpenAI `POST /v1/chat/completions` (vLLM, SGLang, llama.cpp, TRT-LLM, OpenAI).
    OpenaiChat,
    /// OpenAI legacy `POST /v1/completions`.
    OpenaiCompletions,
    /// Hugging Face TGI native `POST /generate_stream`.
    Tgi,
    /// Ollama `POST /api/chat` (NDJSON).
    OllamaChat,
    /// Ollama `POST /api/generate` (NDJSON).
    OllamaGenerate,
    /// Anthropic Messages API `POST /v1/messages`.
    Anthropic,
    /// Google Gemini `streamGenerateContent?alt=sse`.
    Gemini,
    /// Cohere v2 `POST /v2/chat`.
    Cohere,
    /// Azure OpenAI: deployment URL, `api-version` query, `api-key` header.
    AzureOpenai,
}

/// Azure OpenAI `api-version` used when none is given.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

impl ApiKind {
    /// Every protocol, in `--api` order.
    pub const ALL: [ApiKind; 9] = [
        ApiKind::OpenaiChat,
        ApiKind::OpenaiCompletions,
        ApiKind::Tgi,
        ApiKind::OllamaChat,
        ApiKind::OllamaGenerate,
        ApiKind::Anthropic,
        ApiKind::Gemini,
        ApiKind::Cohere,
        ApiKind::AzureOpenai,
    ];

    /// The `--api` spelling of this protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKind::OpenaiChat => "openai-chat",
            ApiKind::OpenaiCompletions => "openai-completions",
            ApiKind::Tgi => "tgi",
            ApiKind::OllamaChat => "ollama-chat",
            ApiKind::OllamaGenerate => "ollama-generate",
            ApiKind::Anthropic => "anthropic",
            ApiKind::Gemini => "gemini",
            ApiKind::Cohere => "cohere",
            ApiKind::AzureOpenai => "azure-openai",
        }
    }

    /// The implementation of this protocol with default options.
    pub fn protocol(self) -> Box<dyn Protocol> {
        self.protocol_with(&ProtocolOptions::default())
    }

    /// The implementation of this protocol.
    pub fn protocol_with(self, opts: &ProtocolOptions) -> Box<dyn Protocol> {
        match self {
            ApiKind::OpenaiChat => Box::new(openai::OpenAi { chat: true }),
            ApiKind::OpenaiCompletions => Box::new(openai::OpenAi { chat: false }),
            ApiKind::Tgi => Box::new(tgi::Tgi),
            ApiKind::OllamaChat => Box::new(ollama::Ollama { chat: true }),
            ApiKind::OllamaGenerate => Box::new(ollama::Ollama { chat: false }),
            ApiKind::Anthropic => Box::new(anthropic::Anthropic),
            ApiKind::Gemini => Box::new(gemini::Gemini),
            ApiKind::Cohere => Box::new(cohere::Cohere),
            ApiKind::AzureOpenai => Box::new(openai::AzureOpenAi {
                api_version: opts
                    .api_version
                    .clone()
                    .unwrap_or_else(|| DEFAULT_AZURE_API_VERSION.to_owned()),
            }),
        }
    }

    /// Parses an `--api` spelling.
    pub fn parse(s: &str) -> Option<ApiKind> {
        ApiKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Per-run protocol options.
#[derive(Debug, Clone, Default)]
pub struct ProtocolOptions {
    /// Azure OpenAI `api-version` query value.
    pub api_version: Option<String>,
}

/// How an API key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// The key alone in the named header (e.g. `x-api-key`).
    Header(&'static str),
}

impl fmt::Display for ApiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to generate: one request's prompt and limits, protocol-neutral.
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// The model name sent to the server.
    pub model: String,
    /// The prompt text (a single user message for chat protocols).
    pub prompt: String,
    /// Maximum number of tokens to generate.
    pub max_tokens: u32,
    /// Ask vLLM-style servers to keep generating past end-of-sequence.
    pub ignore_eos: bool,
}

/// An HTTP request ready to send: path relative to the target's base URL.
#[derive(Debug, Clone)]
pub struct HttpRequestSpec {
    /// Path and query, starting with `/`.
    pub path: String,
    /// JSON body bytes.
    pub body: Vec<u8>,
}

/// How messages are framed in the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `text/event-stream`.
    Sse,
    /// One JSON object per line.
    Ndjson,
}

/// Token counts as reported by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens, if reported.
    pub input_tokens: Option<u32>,
    /// Generated tokens, if reported.
    pub output_tokens: Option<u32>,
}

/// Timings the server reports about its own work on one request (Ollama's
/// durations, llama.cpp's `timings`). Durations in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerTimings {
    /// Prompt tokens the server evaluated (cached ones excluded where reported).
    pub prompt_tokens: Option<u32>,
    /// Time the server spent on the prompt (prefill).
    pub prompt_ns: Option<u64>,
    /// Tokens the server generated.
    pub decode_tokens: Option<u32>,
    /// Time the server spent generating.
    pub decode_ns: Option<u64>,
    /// Time spent loading the model (Ollama).
    pub load_ns: Option<u64>,
    /// Total server-side time (Ollama).
    pub total_ns: Option<u64>,
}

/// The meaning of one stream message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedEvent {
    /// The message carried non-empty generated text.
    pub content: bool,
    /// Token counts carried by this message.
    pub usage: Option<Usage>,
    /// The message ends the stream (terminator seen): stop reading.
    pub done: bool,
    /// The protocol's end marker was seen but more messages may follow
    /// (Gemini `finishReason`, Cohere `message-end`): the body ending after
    /// this is a normal end, not a truncation.
    pub finished: bool,
    /// The server reported an error inside the stream.
    pub error: Option<String>,
    /// Server-side timings carried by this message.
    pub server: Option<ServerTimings>,
}

impl ParsedEvent {
    /// An event that only reports an in-stream error.
    pub fn error(msg: &str) -> Self {
        Self {
            error: Some(sample_text(msg, 300)),
            ..Default::default()
        }
    }

    /// An event that ends the stream.
    pub fn done() -> Self {
        Self {
            done: true,
            ..Default::default()
        }
    }
}

/// A message that could not be understood (malformed stream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed stream message: {0}")]
pub struct MalformedMessage(pub String);

/// One wire protocol.
pub trait Protocol: Send + Sync {
    /// Builds the streaming HTTP request for `req`.
    fn build(&self, req: &GenRequest) -> HttpRequestSpec;
    /// How the response body is framed.
    fn framing(&self) -> Framing;
    /// Classifies one framed message (`event` is the SSE event name, if any).
    fn parse(&self, event: Option<&str>, data: &str) -> Result<ParsedEvent, MalformedMessage>;
    /// The conventional environment variable holding this API's key.
    fn key_env(&self) -> Option<&'static str> {
        Some("OPENAI_API_KEY")
    }
    /// How the key is sent.
    fn auth(&self) -> AuthStyle {
        AuthStyle::Bearer
    }
    /// Non-secret headers this protocol always sends (e.g. `anthropic-version`).
    fn fixed_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
}

/// Parses a JSON message or reports it as malformed.
pub(crate) fn from_json<'a, T: Deserialize<'a>>(data: &'a str) -> Result<T, MalformedMessage> {
    serde_json::from_str(data).map_err(|_| MalformedMessage(sample_text(data, 200)))
}

/// Non-empty text.
pub(crate) fn has_text(s: &Option<std::borrow::Cow<'_, str>>) -> bool {
    s.as_deref().is_some_and(|t| !t.is_empty())
}

/// Shortens a message for error samples, on a char boundary.
pub fn sample_text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Percent-encodes a value for use inside a URL path segment or query value.
pub fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
