//! Google Gemini streaming: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`.
//!
//! Chunks carry `candidates[].content.parts[].text` and `usageMetadata`.
//! There is no terminator: a chunk with `finishReason` marks the normal end,
//! and the body ending before one is a truncated stream.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::json;

use super::{
    capture, encode_path, from_json, has_text, AuthStyle, Framing, GenRequest, HttpRequestSpec,
    MalformedMessage, ParsedEvent, Protocol, Role, Usage,
};

/// The Gemini protocol.
#[derive(Debug, Clone, Copy)]
pub struct Gemini;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chunk<'a> {
    #[serde(borrow, default)]
    candidates: Vec<Candidate<'a>>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    parts: Vec<Part<'a>>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    thought: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: Option<u32>,
    candidates_token_count: Option<u32>,
    thoughts_token_count: Option<u32>,
}

impl Protocol for Gemini {
    fn build(&self, req: &GenRequest) -> HttpRequestSpec {
        let model = req.model.strip_prefix("models/").unwrap_or(&req.model);
        let mut body = json!({
            "contents": contents(req),
            "generationConfig": {"maxOutputTokens": req.max_tokens},
        });
        let system: Vec<serde_json::Value> = req
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| json!({"text": m.content}))
            .collect();
        if !system.is_empty() {
            body["systemInstruction"] = json!({"parts": system});
        }
        HttpRequestSpec {
            path: format!(
                "/v1beta/models/{}:streamGenerateContent?alt=sse",
                encode_path(model)
            ),
            body: body.to_string().into_bytes(),
        }
    }

    fn framing(&self) -> Framing {
        Framing::Sse
    }

    fn parse_capture(
        &self,
        _event: Option<&str>,
        data: &str,
        mut answer: Option<&mut String>,
    ) -> Result<ParsedEvent, MalformedMessage> {
        let chunk: Chunk<'_> = from_json(data.trim())?;
        if let Some(e) = chunk.error {
            return Ok(ParsedEvent::error(&e.to_string()));
        }
        if answer.is_some() {
            // The first candidate is the answer; thought parts are not part of it.
            let parts = chunk.candidates.first().and_then(|c| c.content.as_ref());
            for p in parts
                .iter()
                .flat_map(|c| c.parts.iter())
                .filter(|p| !p.thought)
            {
                capture(&mut answer, &p.text);
            }
        }
        let content = chunk
            .candidates
            .iter()
            .filter_map(|c| c.content.as_ref())
            .any(|c| c.parts.iter().any(|p| has_text(&p.text)));
        let finished = chunk.candidates.iter().any(|c| c.finish_reason.is_some());
        let usage = chunk.usage_metadata.map(|u| Usage {
            input_tokens: u.prompt_token_count,
            output_tokens: match (u.candidates_token_count, u.thoughts_token_count) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
            },
        });
        Ok(ParsedEvent {
            content,
            usage,
            finished,
            ..Default::default()
        })
    }

    fn key_env(&self) -> Option<&'static str> {
        Some("GEMINI_API_KEY")
    }

    fn auth(&self) -> AuthStyle {
        AuthStyle::Header("x-goog-api-key")
    }
}

/// Non-system messages as Gemini `contents`: role `user` or `model`.
fn contents(req: &GenRequest) -> serde_json::Value {
    req.messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| {
            let role = if m.role == Role::Assistant {
                "model"
            } else {
                "user"
            };
            json!({"role": role, "parts": [{"text": m.content}]})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_usage_and_finish() {
        let p = Gemini;
        let e = p
            .parse(None, r#"{"candidates": [{"content": {"parts": [{"text": "Hi"}],"role": "model"}}],"usageMetadata": {"promptTokenCount": 9,"totalTokenCount": 9}}"#)
            .unwrap();
        assert!(e.content && !e.finished);
        assert_eq!(
            e.usage,
            Some(Usage {
                input_tokens: Some(9),
                output_tokens: None
            })
        );
        let last = p
            .parse(None, r#"{"candidates":[{"content":{"parts":[{"text":"."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":12}}"#)
            .unwrap();
        assert!(last.finished);
        assert_eq!(last.usage.unwrap().output_tokens, Some(12));
        let err = p
            .parse(
                None,
                r#"{"error":{"code":500,"message":"internal","status":"INTERNAL"}}"#,
            )
            .unwrap();
        assert!(err.error.is_some());
        let spec = p.build(&GenRequest::single(
            "models/gemini-2.0-flash",
            "p",
            5,
            false,
        ));
        assert_eq!(
            spec.path,
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn history_maps_assistant_to_model_and_parts_text_is_captured() {
        let spec = Gemini.build(&crate::api::test_history());
        let v: serde_json::Value = serde_json::from_slice(&spec.body).unwrap();
        assert_eq!(
            v["systemInstruction"],
            serde_json::json!({"parts": [{"text": "be brief"}]})
        );
        assert_eq!(
            v["contents"],
            serde_json::json!([
                {"role": "user", "parts": [{"text": "first question"}]},
                {"role": "model", "parts": [{"text": "first answer"}]},
                {"role": "user", "parts": [{"text": "second question"}]}
            ])
        );
        let mut answer = String::new();
        for d in [
            r#"{"candidates":[{"content":{"parts":[{"text":"plan","thought":true}],"role":"model"}}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"Hi"},{"text":" you"}],"role":"model"}}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"."}]},"finishReason":"STOP"}]}"#,
        ] {
            Gemini.parse_capture(None, d, Some(&mut answer)).unwrap();
        }
        assert_eq!(answer, "Hi you.");
    }
}
