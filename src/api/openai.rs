//! OpenAI chat and completions streaming (also vLLM, SGLang, llama.cpp, TRT-LLM).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::json;

use super::{
    sample_text, AuthStyle, Framing, GenRequest, HttpRequestSpec, MalformedMessage, ParsedEvent,
    Protocol, ServerTimings, Usage,
};

/// OpenAI-compatible protocol; `chat` selects `/v1/chat/completions`.
#[derive(Debug, Clone, Copy)]
pub struct OpenAi {
    /// Chat route (true) or legacy completions route (false).
    pub chat: bool,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    timings: Option<LlamaTimings>,
}

/// llama.cpp's `timings` object (server-side prefill and decode).
#[derive(Deserialize)]
struct LlamaTimings {
    prompt_n: Option<u32>,
    prompt_ms: Option<f64>,
    predicted_n: Option<u32>,
    predicted_ms: Option<f64>,
}

fn ms_to_ns(ms: Option<f64>) -> Option<u64> {
    ms.filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| (v * 1e6) as u64)
}

impl LlamaTimings {
    fn to_server(&self) -> ServerTimings {
        ServerTimings {
            prompt_tokens: self.prompt_n,
            prompt_ns: ms_to_ns(self.prompt_ms),
            decode_tokens: self.predicted_n,
            decode_ns: ms_to_ns(self.predicted_ms),
            ..Default::default()
        }
    }
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
}

fn non_empty(s: &Option<Cow<'_, str>>) -> bool {
    s.as_deref().is_some_and(|t| !t.is_empty())
}

impl Choice<'_> {
    fn has_content(&self) -> bool {
        non_empty(&self.text)
            || self
                .delta
                .as_ref()
                .is_some_and(|d| non_empty(&d.content) || non_empty(&d.reasoning_content))
    }
}

impl OpenAi {
    fn body(&self, req: &GenRequest) -> serde_json::Value {
        let mut body = if self.chat {
            json!({"model": req.model, "messages": req.role_content_json()})
        } else {
            json!({"model": req.model, "prompt": req.prompt_text()})
        };
        body["stream"] = json!(true);
        body["max_tokens"] = json!(req.max_tokens);
        body["stream_options"] = json!({"include_usage": true});
        if req.ignore_eos {
            body["ignore_eos"] = json!(true);
        }
        body
    }
}

impl Protocol for OpenAi {
    fn build(&self, req: &GenRequest) -> HttpRequestSpec {
        let body = self.body(req);
        let path = if self.chat {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        };
        HttpRequestSpec {
            path: path.to_owned(),
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
        answer: Option<&mut String>,
    ) -> Result<ParsedEvent, MalformedMessage> {
        parse_chunk(data, answer)
    }
}

/// Azure OpenAI: OpenAI chat at a deployment URL with an `api-version`.
#[derive(Debug, Clone)]
pub struct AzureOpenAi {
    /// The `api-version` query value.
    pub api_version: String,
}

impl Protocol for AzureOpenAi {
    fn build(&self, req: &GenRequest) -> HttpRequestSpec {
        let mut body = OpenAi { chat: true }.body(req);
        if let Some(o) = body.as_object_mut() {
            o.remove("model");
            o.remove("ignore_eos");
        }
        HttpRequestSpec {
            path: format!(
                "/openai/deployments/{}/chat/completions?api-version={}",
                super::encode_path(&req.model),
                super::encode_path(&self.api_version)
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
        answer: Option<&mut String>,
    ) -> Result<ParsedEvent, MalformedMessage> {
        parse_chunk(data, answer)
    }

    fn key_env(&self) -> Option<&'static str> {
        Some("AZURE_OPENAI_API_KEY")
    }

    fn auth(&self) -> AuthStyle {
        AuthStyle::Header("api-key")
    }
}

/// Classifies one OpenAI-style chunk (also vLLM, SGLang, llama.cpp, Azure).
fn parse_chunk(
    data: &str,
    mut answer: Option<&mut String>,
) -> Result<ParsedEvent, MalformedMessage> {
    {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(ParsedEvent {
                done: true,
                ..Default::default()
            });
        }
        let chunk: Chunk<'_> =
            serde_json::from_str(data).map_err(|_| MalformedMessage(sample_text(data, 200)))?;
        if let Some(err) = chunk.error {
            return Ok(ParsedEvent {
                error: Some(sample_text(&err.to_string(), 300)),
                ..Default::default()
            });
        }
        let content = chunk
            .choices
            .as_ref()
            .is_some_and(|cs| cs.iter().any(Choice::has_content));
        if answer.is_some() {
            // The first choice is the answer (n = 1); reasoning text is not part of it.
            if let Some(c) = chunk.choices.as_ref().and_then(|cs| cs.first()) {
                super::capture(&mut answer, &c.text);
                if let Some(d) = &c.delta {
                    super::capture(&mut answer, &d.content);
                }
            }
        }
        let usage = chunk.usage.map(|u| Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
        });
        Ok(ParsedEvent {
            content,
            usage,
            server: chunk.timings.as_ref().map(LlamaTimings::to_server),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: OpenAi = OpenAi { chat: true };

    #[test]
    fn role_only_chunk_is_not_content() {
        let e = CHAT
            .parse(
                None,
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            )
            .unwrap();
        assert!(!e.content);
    }

    #[test]
    fn content_and_usage_are_read() {
        let e = CHAT
            .parse(
                None,
                r#"{"choices":[{"delta":{"content":"Hi"}}],"usage":null}"#,
            )
            .unwrap();
        assert!(e.content);
        let u = CHAT
            .parse(None, r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#)
            .unwrap();
        assert_eq!(u.usage.unwrap().output_tokens, Some(7));
        assert!(CHAT.parse(None, "[DONE]").unwrap().done);
    }

    #[test]
    fn error_object_is_an_error_not_content() {
        let e = CHAT
            .parse(
                None,
                r#"{"error":{"message":"boom","type":"server_error"}}"#,
            )
            .unwrap();
        assert!(e.error.unwrap().contains("boom"));
        assert!(CHAT.parse(None, "{not json").is_err());
    }

    #[test]
    fn completions_text_counts() {
        let p = OpenAi { chat: false };
        assert!(
            p.parse(None, r#"{"choices":[{"text":" a"}]}"#)
                .unwrap()
                .content
        );
        let spec = p.build(&GenRequest::single("m", "p", 3, true));
        let v: serde_json::Value = serde_json::from_slice(&spec.body).unwrap();
        assert_eq!(spec.path, "/v1/completions");
        assert_eq!(v["max_tokens"], 3);
        assert_eq!(v["ignore_eos"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn chat_renders_a_history_and_captures_delta_content() {
        let spec = CHAT.build(&crate::api::test_history());
        let v: serde_json::Value = serde_json::from_slice(&spec.body).unwrap();
        assert_eq!(
            v["messages"],
            serde_json::json!([
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second question"}
            ])
        );
        let azure = AzureOpenAi {
            api_version: "v".into(),
        }
        .build(&crate::api::test_history());
        let a: serde_json::Value = serde_json::from_slice(&azure.body).unwrap();
        assert_eq!(a["messages"], v["messages"]);
        let mut answer = String::new();
        for d in [
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#,
            r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"delta":{"content":"lo"}}]}"#,
            "[DONE]",
        ] {
            CHAT.parse_capture(None, d, Some(&mut answer)).unwrap();
        }
        assert_eq!(answer, "Hello");
        let completions = OpenAi { chat: false }.build(&crate::api::test_history());
        let c: serde_json::Value = serde_json::from_slice(&completions.body).unwrap();
        assert!(c["prompt"]
            .as_str()
            .unwrap()
            .ends_with("user: second question"));
    }
}
