//! Ollama native streaming: `POST /api/chat` and `/api/generate` (NDJSON).
//!
//! Each line is a JSON object; the last has `"done":true` and the server's
//! own durations (ns) and token counts. A `{"error":"…"}` line is an error.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::json;

use super::{
    capture, from_json, has_text, Framing, GenRequest, HttpRequestSpec, MalformedMessage,
    ParsedEvent, Protocol, ServerTimings, Usage,
};

/// The Ollama protocol; `chat` selects `/api/chat` over `/api/generate`.
#[derive(Debug, Clone, Copy)]
pub struct Ollama {
    /// Chat route (true) or generate route (false).
    pub chat: bool,
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    message: Option<Message<'a>>,
    #[serde(borrow, default)]
    response: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    error: Option<serde_json::Value>,
    total_duration: Option<u64>,
    load_duration: Option<u64>,
    prompt_eval_count: Option<u32>,
    prompt_eval_duration: Option<u64>,
    eval_count: Option<u32>,
    eval_duration: Option<u64>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
}

impl Line<'_> {
    fn has_content(&self) -> bool {
        has_text(&self.response)
            || has_text(&self.thinking)
            || self
                .message
                .as_ref()
                .is_some_and(|m| has_text(&m.content) || has_text(&m.thinking))
    }

    fn server(&self) -> ServerTimings {
        ServerTimings {
            prompt_tokens: self.prompt_eval_count,
            prompt_ns: self.prompt_eval_duration,
            decode_tokens: self.eval_count,
            decode_ns: self.eval_duration,
            load_ns: self.load_duration,
            total_ns: self.total_duration,
        }
    }
}

impl Protocol for Ollama {
    fn build(&self, req: &GenRequest) -> HttpRequestSpec {
        let options = json!({"num_predict": req.max_tokens});
        let (path, body) = if self.chat {
            let msgs = req.role_content_json();
            (
                "/api/chat",
                json!({"model": req.model, "messages": msgs, "stream": true, "options": options}),
            )
        } else {
            (
                "/api/generate",
                json!({"model": req.model, "prompt": req.prompt_text(), "stream": true, "options": options}),
            )
        };
        HttpRequestSpec {
            path: path.into(),
            body: body.to_string().into_bytes(),
        }
    }

    fn framing(&self) -> Framing {
        Framing::Ndjson
    }

    fn parse_capture(
        &self,
        _event: Option<&str>,
        data: &str,
        mut answer: Option<&mut String>,
    ) -> Result<ParsedEvent, MalformedMessage> {
        let line: Line<'_> = from_json(data)?;
        if let Some(e) = &line.error {
            let msg = e.as_str().map_or_else(|| e.to_string(), str::to_owned);
            return Ok(ParsedEvent::error(&msg));
        }
        if answer.is_some() {
            capture(&mut answer, &line.response);
            if let Some(m) = &line.message {
                capture(&mut answer, &m.content);
            }
        }
        let mut ev = ParsedEvent {
            content: line.has_content(),
            ..Default::default()
        };
        if line.done {
            ev.done = true;
            ev.usage = Some(Usage {
                input_tokens: line.prompt_eval_count,
                output_tokens: line.eval_count,
            });
            ev.server = Some(line.server());
        }
        Ok(ev)
    }

    fn key_env(&self) -> Option<&'static str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_line_carries_usage_and_server_timings() {
        let p = Ollama { chat: true };
        let e = p
            .parse(None, r#"{"model":"m","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":412873166,"load_duration":19384208,"prompt_eval_count":31,"prompt_eval_duration":143000000,"eval_count":11,"eval_duration":224000000}"#)
            .unwrap();
        assert!(e.done && !e.content);
        assert_eq!(e.usage.unwrap().output_tokens, Some(11));
        let s = e.server.unwrap();
        assert_eq!(
            (s.prompt_tokens, s.decode_ns, s.load_ns),
            (Some(31), Some(224_000_000), Some(19_384_208))
        );
        assert!(
            p.parse(
                None,
                r#"{"message":{"role":"assistant","content":"Hi"},"done":false}"#
            )
            .unwrap()
            .content
        );
        let g = Ollama { chat: false };
        assert!(
            g.parse(None, r#"{"response":"Hi","done":false}"#)
                .unwrap()
                .content
        );
        let err = p.parse(None, r#"{"error":"model 'x' not found"}"#).unwrap();
        assert!(err.error.unwrap().contains("not found"));
    }

    #[test]
    fn chat_sends_the_history_and_message_content_is_captured() {
        let p = Ollama { chat: true };
        let spec = p.build(&crate::api::test_history());
        let v: serde_json::Value = serde_json::from_slice(&spec.body).unwrap();
        assert_eq!(spec.path, "/api/chat");
        assert_eq!(
            v["messages"][0],
            serde_json::json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(v["messages"][3]["content"], "second question");
        let mut answer = String::new();
        for d in [
            r#"{"message":{"role":"assistant","content":"","thinking":"hmm"},"done":false}"#,
            r#"{"message":{"role":"assistant","content":"Hi"},"done":false}"#,
            r#"{"message":{"role":"assistant","content":" all"},"done":false}"#,
            r#"{"message":{"role":"assistant","content":""},"done":true,"eval_count":2}"#,
        ] {
            p.parse_capture(None, d, Some(&mut answer)).unwrap();
        }
        assert_eq!(answer, "Hi all");
        let g = Ollama { chat: false }.build(&crate::api::test_history());
        let gv: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
        assert!(gv["prompt"]
            .as_str()
            .unwrap()
            .starts_with("system: be brief\n"));
    }
}
