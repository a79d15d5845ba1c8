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

    /// True for protocols that send a message list (and so can carry a
    /// multi-turn history); false for completion-only routes.
    pub fn is_chat(self) -> bool {
        !matches!(
            self,
            ApiKind::OpenaiCompletions | ApiKind::Tgi | ApiKind::OllamaGenerate
        )
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

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions (Anthropic `system`, Gemini `systemInstruction`).
    System,
    /// The user.
    User,
    /// The model's earlier answer (Gemini role `model`).
    Assistant,
}

impl Role {
    /// The OpenAI-style role name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a chat history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Its author.
    pub role: Role,
    /// Its text.
    pub content: String,
}

impl ChatMessage {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant (model) message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// What to generate: one request's messages and limits, protocol-neutral.
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// The model name sent to the server.
    pub model: String,
    /// The conversation so far, ending with the new user message. Chat
    /// protocols send it as their message list; completion protocols send
    /// [`GenRequest::prompt_text`].
    pub messages: Vec<ChatMessage>,
    /// Maximum number of tokens to generate.
    pub max_tokens: u32,
    /// Ask vLLM-style servers to keep generating past end-of-sequence.
    pub ignore_eos: bool,
}

impl GenRequest {
    /// A request of one user message.
    pub fn single(model: &str, prompt: &str, max_tokens: u32, ignore_eos: bool) -> Self {
        Self {
            model: model.to_owned(),
            messages: vec![ChatMessage::user(prompt)],
            max_tokens,
            ignore_eos,
        }
    }

    /// The prompt of completion-only protocols: a lone message's text as is;
    /// several messages one per line as `role: content`.
    pub fn prompt_text(&self) -> std::borrow::Cow<'_, str> {
        if let [only] = self.messages.as_slice() {
            return std::borrow::Cow::Borrowed(&only.content);
        }
        let lines: Vec<String> = self
            .messages
            .iter()
            .map(|m| format!("{}: {}", m.role.as_str(), m.content))
            .collect();
        std::borrow::Cow::Owned(lines.join("\n"))
    }

    /// Messages as OpenAI-style `[{"role","content"}]` (OpenAI, Cohere, Ollama).
    pub(crate) fn role_content_json(&self) -> serde_json::Value {
        self.messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role.as_str(), "content": m.content}))
            .collect()
    }
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
    fn parse(&self, event: Option<&str>, data: &str) -> Result<ParsedEvent, MalformedMessage> {
        self.parse_capture(event, data, None)
    }
    /// Like [`Protocol::parse`]; with `answer`, also appends the answer text
    /// the message carries (not reasoning or thinking text) to it. Only
    /// multi-turn workloads pass `answer`, so single-turn runs never copy text.
    fn parse_capture(
        &self,
        event: Option<&str>,
        data: &str,
        answer: Option<&mut String>,
    ) -> Result<ParsedEvent, MalformedMessage>;
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

/// Appends `text` to the answer being captured, if any.
pub(crate) fn capture(answer: &mut Option<&mut String>, text: &Option<std::borrow::Cow<'_, str>>) {
    if let (Some(buf), Some(t)) = (answer.as_deref_mut(), text.as_deref()) {
        buf.push_str(t);
    }
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

/// A four-message history (system, user, assistant, user) for protocol tests.
#[cfg(test)]
pub(crate) fn test_history() -> GenRequest {
    GenRequest {
        model: "m".into(),
        messages: vec![
            ChatMessage {
                role: Role::System,
                content: "be brief".into(),
            },
            ChatMessage::user("first question"),
            ChatMessage::assistant("first answer"),
            ChatMessage::user("second question"),
        ],
        max_tokens: 4,
        ignore_eos: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_prompt_flattens_a_history_and_keeps_a_lone_prompt() {
        assert_eq!(
            test_history().prompt_text(),
            "system: be brief\nuser: first question\nassistant: first answer\nuser: second question"
        );
        assert_eq!(
            GenRequest::single("m", "just this", 1, false).prompt_text(),
            "just this"
        );
        assert!(ApiKind::OpenaiChat.is_chat() && ApiKind::Gemini.is_chat());
        assert!(!ApiKind::Tgi.is_chat() && !ApiKind::OpenaiCompletions.is_chat());
        assert!(!ApiKind::OllamaGenerate.is_chat());
    }
}
