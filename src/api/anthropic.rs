//! Anthropic Messages API streaming: `POST /v1/messages`.
//!
//! `message_start` carries input tokens, `content_block_delta` the text,
//! `message_delta` the cumulative output tokens, `message_stop` ends the
//! stream; `ping` events are ignored and an `error` event is an error.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::json;

use super::{
    capture, from_json, has_text, AuthStyle, Framing, GenRequest, HttpRequestSpec,
    MalformedMessage, ParsedEvent, Protocol, Role, Usage,
};

/// The `anthropic-version` header value sent.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The Anthropic Messages protocol.
#[derive(Debug, Clone, Copy)]
pub struct Anthropic;

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(default)]
    message: Option<MessageObj>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct MessageObj {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireUsage {
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
}

impl Protocol for Anthropic {
    fn build(&self, req: &GenRequest) -> HttpRequestSpec {
        let mut body = json!({
            "model": req.model, "max_tokens": req.max_tokens, "stream": true,
            "messages": chat_messages(req),
        });
        if let Some(system) = system_text(req) {
            body["system"] = json!(system);
        }
        HttpRequestSpec {
            path: "/v1/messages".into(),
            body: body.to_string().into_bytes(),
        }
    }

    fn framing(&self) -> Framing {
        Framing::Sse
    }

    fn parse_capture(
        &self,
        event: Option<&str>,
        data: &str,
        mut answer: Option<&mut String>,
    ) -> Result<ParsedEvent, MalformedMessage> {
        let ev: Event<'_> = from_json(data.trim())?;
        if ev.kind == "error" || event == Some("error") {
            let msg = ev.error.map_or_else(|| data.to_owned(), |e| e.to_string());
            return Ok(ParsedEvent::error(&msg));
        }
        let mut out = ParsedEvent::default();
        match ev.kind.as_ref() {
            "message_start" => {
                // message_start's output_tokens is a placeholder (≈1); only the input count is kept.
                let u = ev.message.and_then(|m| m.usage);
                out.usage = u.map(|u| Usage {
                    input_tokens: u.input_tokens,
                    output_tokens: None,
                });
            }
            "content_block_delta" => {
                if let Some(d) = &ev.delta {
                    capture(&mut answer, &d.text);
                }
                out.content = ev
                    .delta
                    .is_some_and(|d| has_text(&d.text) || has_text(&d.thinking));
            }
            "message_delta" => {
                out.usage = ev.usage.map(|u| Usage {
                    input_tokens: u.input_tokens,
                    output_tokens: u.output_tokens,
                });
            }
            "message_stop" => out.done = true,
            _ => {} // ping, content_block_start/stop and future event types
        }
        Ok(out)
    }

    fn key_env(&self) -> Option<&'static str> {
        Some("ANTHROPIC_API_KEY")
    }

    fn auth(&self) -> AuthStyle {
        AuthStyle::Header("x-api-key")
    }

    fn fixed_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[("anthropic-version", ANTHROPIC_VERSION)]
    }
}

/// Non-system messages; Anthropic takes the system prompt as a top-level field.
fn chat_messages(req: &GenRequest) -> serde_json::Value {
    req.messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
        .collect()
}

/// The system messages joined, if any.
fn system_text(req: &GenRequest) -> Option<String> {
    let parts: Vec<&str> = req
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_classified() {
        let p = Anthropic;
        let start = p
            .parse(Some("message_start"), r#"{"type":"message_start","message":{"usage":{"input_tokens":14,"output_tokens":1}}}"#)
            .unwrap();
        assert_eq!(
            start.usage,
            Some(Usage {
                input_tokens: Some(14),
                output_tokens: None
            })
        );
        assert!(p.parse(None, r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#).unwrap().content);
        assert_eq!(
            p.parse(None, r#"{"type": "ping"}"#).unwrap(),
            ParsedEvent::default()
        );
        let d = p.parse(None, r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#).unwrap();
        assert_eq!(d.usage.unwrap().output_tokens, Some(9));
        assert!(p.parse(None, r#"{"type":"message_stop"}"#).unwrap().done);
        let e = p.parse(Some("error"), r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#).unwrap();
        assert!(e.error.unwrap().contains("Overloaded"));
    }

    #[test]
    fn history_puts_system_on_top_and_text_deltas_are_captured() {
        let spec = Anthropic.build(&crate::api::test_history());
        let v: serde_json::Value = serde_json::from_slice(&spec.body).unwrap();
        assert_eq!(v["system"], "be brief");
        assert_eq!(
            v["messages"],
            serde_json::json!([
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second question"}
            ])
        );
        let single = Anthropic.build(&GenRequest::single("m", "p", 1, false));
        let s: serde_json::Value = serde_json::from_slice(&single.body).unwrap();
        assert!(s.get("system").is_none());
        let mut answer = String::new();
        for d in [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":" there"}}"#,
            r#"{"type":"message_stop"}"#,
        ] {
            Anthropic.parse_capture(None, d, Some(&mut answer)).unwrap();
        }
        assert_eq!(answer, "Hi there");
    }
}
