//! Hugging Face TGI native streaming: `POST /generate_stream`.
//!
//! Events are `data:{"index","token":{"text","special"},"generated_text","details"}`;
//! the last one carries `generated_text` (and `details` with token counts).
//! There is no `[DONE]`: the event with a non-null `generated_text` ends it.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::json;

use super::{
    from_json, Framing, GenRequest, HttpRequestSpec, MalformedMessage, ParsedEvent, Protocol, Usage,
};

/// The TGI native protocol.
#[derive(Debug, Clone, Copy)]
pub struct Tgi;

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    token: Option<Token<'a>>,
    #[serde(default)]
    generated_text: Option<IgnoredAny>,
    #[serde(default)]
    details: Option<Details>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error_type: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Token<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    special: bool,
}

#[derive(Deserialize)]
struct Details {
    generated_tokens: Option<u32>,
    input_length: Option<u32>,
}

impl Protocol for Tgi {
    fn build(&self, req: &GenRequest) -> HttpRequestSpec {
        let body = json!({
            "inputs": req.prompt_text(),
            "parameters": {"max_new_tokens": req.max_tokens, "details": true, "do_sample": false},
        });
        HttpRequestSpec {
            path: "/generate_stream".into(),
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
        let ev: Event<'_> = from_json(data.trim())?;
        if let Some(e) = ev.error {
            let kind = ev.error_type.as_deref().unwrap_or("error");
            return Ok(ParsedEvent::error(&format!("{kind}: {e}")));
        }
        let token = ev.token.as_ref().filter(|t| !t.special);
        if let Some(t) = token {
            super::capture(&mut answer, &t.text);
        }
        let content = token.is_some_and(|t| super::has_text(&t.text));
        let usage = ev.details.map(|d| Usage {
            input_tokens: d.input_length,
            output_tokens: d.generated_tokens,
        });
        Ok(ParsedEvent {
            content,
            usage,
            done: ev.generated_text.is_some(),
            ..Default::default()
        })
    }

    fn key_env(&self) -> Option<&'static str> {
        Some("HF_TOKEN")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_final_and_error_events() {
        let t = Tgi;
        let e = t
            .parse(None, r#"{"index":1,"token":{"id":5,"text":" a","logprob":-0.1,"special":false},"generated_text":null,"details":null}"#)
            .unwrap();
        assert!(e.content && !e.done);
        let special = t
            .parse(None, r#"{"index":2,"token":{"id":2,"text":"</s>","special":true},"generated_text":null,"details":null}"#)
            .unwrap();
        assert!(!special.content);
        let last = t
            .parse(None, r#"{"index":3,"token":{"id":5,"text":"b","special":false},"generated_text":"a b","details":{"finish_reason":"length","generated_tokens":3,"seed":null,"input_length":7}}"#)
            .unwrap();
        assert!(last.done && last.content);
        assert_eq!(
            last.usage,
            Some(Usage {
                input_tokens: Some(7),
                output_tokens: Some(3)
            })
        );
        let err = t
            .parse(None, r#"{"error":"OOM","error_type":"generation"}"#)
            .unwrap();
        assert_eq!(err.error.as_deref(), Some("generation: OOM"));
    }

    #[test]
    fn history_is_flattened_into_inputs_and_token_text_is_captured() {
        let spec = Tgi.build(&crate::api::test_history());
        let v: serde_json::Value = serde_json::from_slice(&spec.body).unwrap();
        assert_eq!(
            v["inputs"],
            "system: be brief\nuser: first question\nassistant: first answer\nuser: second question"
        );
        let mut answer = String::new();
        for d in [
            r#"{"index":1,"token":{"id":5,"text":"Hi","special":false},"generated_text":null,"details":null}"#,
            r#"{"index":2,"token":{"id":6,"text":" x","special":false},"generated_text":null,"details":null}"#,
            r#"{"index":3,"token":{"id":2,"text":"</s>","special":true},"generated_text":"Hi x","details":null}"#,
        ] {
            Tgi.parse_capture(None, d, Some(&mut answer)).unwrap();
        }
        assert_eq!(answer, "Hi x");
    }
}
