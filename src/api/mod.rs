//! Wire protocols: how a generation request is built and how its stream is read.
//!
//! Each protocol turns a [`GenRequest`] into an HTTP request and classifies
//! each framed stream message into a [`ParsedEvent`]. Protocols never touch
//! clocks; the engine stamps arrival times before calling them.

pub mod openai;

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
}

impl ApiKind {
    /// The `--api` spelling of this protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKind::OpenaiChat => "openai-chat",
            ApiKind::OpenaiCompletions => "openai-completions",
        }
    }

    /// The implementation of this protocol.
    pub fn protocol(self) -> Box<dyn Protocol> {
        match self {
            ApiKind::OpenaiChat => Box::new(openai::OpenAi { chat: true }),
            ApiKind::OpenaiCompletions => Box::new(openai::OpenAi { chat: false }),
        }
    }
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

/// The meaning of one stream message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedEvent {
    /// The message carried non-empty generated text.
    pub content: bool,
    /// Token counts carried by this message.
    pub usage: Option<Usage>,
    /// The message ends the stream (terminator seen).
    pub done: bool,
    /// The server reported an error inside the stream.
    pub error: Option<String>,
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
