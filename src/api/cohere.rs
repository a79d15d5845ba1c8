//! Cohere v2 chat streaming: `POST /v2/chat`.
//!
//! Events are named by `type`: `content-delta` carries text in
//! `delta.message.content.text`; `message-end` carries usage and marks the
//! normal end; a trailing `data: [DONE]` (seen in SDK fixtures) is accepted.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::json;

use super::{
    capture, from_json, has_text, Framing, GenRequest, HttpRequestSpec, MalformedMessage,
    ParsedEvent, Protocol, Usage,
};

/// The Cohere v2 chat protocol.
#[derive(Debug, Clone, Copy)]
pub struct Cohere;

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    message: Option<DeltaMessage<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct DeltaMessage<'a> {
    #[serde(borrow, default)]
    content: Option<DeltaContent<'a>>,
}

#[derive(Deserialize)]
struct DeltaContent<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    tokens: Option<Counts>,
    #[serde(default)]
    billed_units: Option<Counts>,
}

#[derive(Deserialize)]
struct Counts {
    input_tokens: Option<f64>,
    output_tokens: Option<f64>,
}

fn count(v: Option<f64>) -> Option<u32> {
    v.filter(|n| n.is_finite() && *n >= 0.0).map(|n| n as u32)
}

impl Protocol for Cohere {
    fn build(&self, req: &GenRequest) -> HttpRequestSpec {
        let body = json!({
            "model": req.model, "stream": true, "max_tokens": req.max_tokens,
            "messages": req.role_content_json(),
        });
        HttpRequestSpec {
            path: "/v2/chat".into(),
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
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(ParsedEvent::done());
        }
        let ev: Event<'_> = from_json(data)?;
        let kind = ev.kind.as_deref().or(event).unwrap_or("");
        if kind == "error" || ev.error.is_some() {
            let msg = ev.error.map_or_else(|| data.to_owned(), |e| e.to_string());
            return Ok(ParsedEvent::error(&msg));
        }
        let mut out = ParsedEvent::default();
        match kind {
            "content-delta" => {
                let text = ev
                    .delta
                    .and_then(|d| d.message)
                    .and_then(|m| m.content)
                    .and_then(|c| c.text);
                capture(&mut answer, &text);
                out.content = has_text(&text);
            }
            "message-end" => {
                if let Some(d) = ev
                    .delta
                    .as_ref()
                    .filter(|d| d.finish_reason.as_deref() == Some("ERROR"))
                {
                    let msg = d
                        .error
                        .as_ref()
                        .map_or_else(|| "finish_reason ERROR".to_owned(), |e| e.to_string());
                    return Ok(ParsedEvent::error(&msg));
                }
                out.finished = true;
                let u = ev.delta.and_then(|d| d.usage);
                let counts = u.and_then(|u| u.tokens.or(u.billed_units));
                out.usage = counts.map(|c| Usage {
                    input_tokens: count(c.input_tokens),
                    output_tokens: count(c.output_tokens),
                });
            }
            _ => {}
        }
        Ok(out)
    }

    fn key_env(&self) -> Option<&'static str> {
        Some("COHERE_API_KEY")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_end_and_done() {
        let p = Cohere;
        assert!(p.parse(Some("content-delta"), r#"{"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Hello"}}}}"#).unwrap().content);
        assert!(!p.parse(None, r#"{"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}"#).unwrap().content);
        let end = p
            .parse(None, r#"{"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":6,"output_tokens":10},"tokens":{"input_tokens":497,"output_tokens":12}}}}"#)
            .unwrap();
        assert!(end.finished);
        assert_eq!(
            end.usage,
            Some(Usage {
                input_tokens: Some(497),
                output_tokens: Some(12)
            })
        );
        assert!(p.parse(None, "[DONE]").unwrap().done);
        let err = p
            .parse(
                None,
                r#"{"type":"message-end","delta":{"finish_reason":"ERROR","error":"boom"}}"#,
            )
            .unwrap();
        assert!(err.error.unwrap().contains("boom"));
    }

    #[test]
    fn history_is_sent_as_messages_and_content_deltas_are_captured() {
        let spec = Cohere.build(&crate::api::test_history());
        let v: serde_json::Value = serde_json::from_slice(&spec.body).unwrap();
        let roles: Vec<&str> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(v["messages"][2]["content"], "first answer");
        let mut answer = String::new();
        for d in [
            r#"{"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}"#,
            r#"{"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Hello"}}}}"#,
            r#"{"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"!"}}}}"#,
            r#"{"type":"message-end","delta":{"finish_reason":"COMPLETE"}}"#,
        ] {
            Cohere.parse_capture(None, d, Some(&mut answer)).unwrap();
        }
        assert_eq!(answer, "Hello!");
    }
}
