//! Prompts from files: `--dataset jsonl:PATH` and `--dataset sharegpt:PATH`.
//!
//! JSONL: one object per line with `"prompt"` (a string) or `"messages"` (an
//! array of `{"role","content"}`, role `system`, `user` or `assistant`; chat
//! protocols receive it as a real message list), and optionally `"max_tokens"`. ShareGPT: a
//! JSON array of `{"conversations":[{"from":"human","value":…},{"from":"gpt","value":…}]}`;
//! the first human turn is the prompt and the length of the first reply is
//! `max_tokens` (vLLM's benchmark does the same). Every problem names the line
//! (JSONL) or record (ShareGPT) it is on.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::{ChatMessage, Role};

/// File formats of `--dataset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "format", content = "path")]
pub enum DatasetSpec {
    /// One JSON object per line.
    Jsonl(PathBuf),
    /// ShareGPT JSON.
    Sharegpt(PathBuf),
}

impl DatasetSpec {
    /// Parses `jsonl:PATH` or `sharegpt:PATH`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("jsonl", p)) if !p.is_empty() => Ok(DatasetSpec::Jsonl(p.into())),
            Some(("sharegpt", p)) if !p.is_empty() => Ok(DatasetSpec::Sharegpt(p.into())),
            _ => Err(format!(
                "--dataset '{s}': write jsonl:PATH or sharegpt:PATH"
            )),
        }
    }
}

/// A dataset that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DatasetError(pub String);

/// One prompt from a dataset, before tokenization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRecord {
    /// The prompt text (a `messages` record: its messages flattened, one per
    /// line as `role: content`, for completion protocols and local counting).
    pub prompt: String,
    /// A `messages` record's messages, sent as such by chat protocols.
    pub messages: Option<Vec<ChatMessage>>,
    /// `max_tokens` given by the record, if any.
    pub max_tokens: Option<u32>,
    /// Text of a reference answer (ShareGPT), whose length sets `max_tokens`.
    pub reference_answer: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlLine {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    max_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: String,
}

/// Reads every record of the dataset.
pub fn load(spec: &DatasetSpec) -> Result<Vec<DatasetRecord>, DatasetError> {
    match spec {
        DatasetSpec::Jsonl(p) => parse_jsonl(p, &read(p)?),
        DatasetSpec::Sharegpt(p) => parse_sharegpt(p, &read(p)?),
    }
}

fn read(p: &Path) -> Result<String, DatasetError> {
    std::fs::read_to_string(p)
        .map_err(|e| DatasetError(format!("--dataset: cannot read '{}': {e}", p.display())))
}

/// Parses JSONL text; blank lines are skipped.
pub fn parse_jsonl(path: &Path, text: &str) -> Result<Vec<DatasetRecord>, DatasetError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        out.push(jsonl_record(line, &at)?);
    }
    if out.is_empty() {
        return Err(DatasetError(format!(
            "--dataset: '{}' has no records",
            path.display()
        )));
    }
    Ok(out)
}

fn jsonl_record(line: &str, at: &str) -> Result<DatasetRecord, DatasetError> {
    let rec: JsonlLine = serde_json::from_str(line).map_err(|e| {
        DatasetError(format!(
            "{at}: {e}. Each line must be one JSON object like {{\"prompt\": \"...\", \"max_tokens\": 128}} or {{\"messages\": [{{\"role\": \"user\", \"content\": \"...\"}}]}}"
        ))
    })?;
    let (prompt, messages) = match (rec.prompt, rec.messages) {
        (Some(p), None) => (p, None),
        (None, Some(m)) if !m.is_empty() => {
            let msgs = chat_messages(m, at)?;
            (join_messages(&msgs), Some(msgs))
        }
        (Some(_), Some(_)) => {
            return Err(DatasetError(format!(
                "{at}: give either \"prompt\" or \"messages\", not both"
            )))
        }
        _ => {
            return Err(DatasetError(format!(
                "{at}: the record has no \"prompt\" and no non-empty \"messages\""
            )))
        }
    };
    if rec.max_tokens == Some(0) {
        return Err(DatasetError(format!(
            "{at}: \"max_tokens\" must be at least 1"
        )));
    }
    Ok(DatasetRecord {
        prompt,
        messages,
        max_tokens: rec.max_tokens,
        reference_answer: None,
    })
}

/// The record's messages with checked roles.
fn chat_messages(m: Vec<Message>, at: &str) -> Result<Vec<ChatMessage>, DatasetError> {
    m.into_iter()
        .enumerate()
        .map(|(i, x)| {
            let role = match x.role.as_str() {
                "system" | "developer" => Role::System,
                "user" | "human" => Role::User,
                "assistant" | "gpt" | "model" => Role::Assistant,
                other => {
                    return Err(DatasetError(format!(
                        "{at}: message {i} has role '{other}'; use \"system\", \"user\" or \"assistant\""
                    )))
                }
            };
            Ok(ChatMessage {
                role,
                content: x.content,
            })
        })
        .collect()
}

/// The flat rendering of a conversation (completion protocols, local token
/// counts): each message on its own line as `role: content`; one message
/// alone is its text.
fn join_messages(m: &[ChatMessage]) -> String {
    if let [only] = m {
        return only.content.clone();
    }
    m.iter()
        .map(|x| format!("{}: {}", x.role.as_str(), x.content))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Deserialize)]
struct ShareGptConversation {
    #[serde(default)]
    conversations: Vec<ShareGptTurn>,
}

#[derive(Deserialize)]
struct ShareGptTurn {
    from: String,
    value: String,
}

/// Parses ShareGPT JSON. Conversations without a human turn followed by a
/// reply are skipped (as in vLLM's benchmark); none usable is an error.
pub fn parse_sharegpt(path: &Path, text: &str) -> Result<Vec<DatasetRecord>, DatasetError> {
    let convs: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| {
        DatasetError(format!("{}: not a ShareGPT JSON array ({e}). Expected [{{\"conversations\": [{{\"from\": \"human\", \"value\": \"...\"}}, ...]}}, ...]", path.display()))
    })?;
    let mut out = Vec::new();
    for (i, v) in convs.into_iter().enumerate() {
        let conv: ShareGptConversation = serde_json::from_value(v).map_err(|e| {
            DatasetError(format!(
                "{}: record {} (0-based): {e}. Each turn needs \"from\" and \"value\" strings",
                path.display(),
                i
            ))
        })?;
        let turns = &conv.conversations;
        let Some(h) = turns
            .iter()
            .position(|t| t.from == "human" || t.from == "user")
        else {
            continue;
        };
        if let Some(reply) = turns.get(h + 1) {
            out.push(DatasetRecord {
                prompt: turns[h].value.clone(),
                messages: None,
                max_tokens: None,
                reference_answer: Some(reply.value.clone()),
            });
        }
    }
    if out.is_empty() {
        return Err(DatasetError(format!(
            "{}: no conversation has a human turn followed by a reply",
            path.display()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_bad_lines_are_named_by_line_number() {
        let p = Path::new("d.jsonl");
        let good = "{\"prompt\":\"hi\",\"max_tokens\":5}\n\n{\"messages\":[{\"role\":\"user\",\"content\":\"yo\"}]}\n";
        let recs = parse_jsonl(p, good).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].max_tokens, Some(5));
        assert_eq!(recs[1].prompt, "yo");
        let conv = "{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"hello\"},{\"role\":\"user\",\"content\":\"more\"}]}\n";
        let r = &parse_jsonl(p, conv).unwrap()[0];
        let roles: Vec<Role> = r
            .messages
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.role)
            .collect();
        assert_eq!(
            roles,
            [Role::System, Role::User, Role::Assistant, Role::User]
        );
        assert_eq!(
            r.prompt,
            "system: be brief\nuser: hi\nassistant: hello\nuser: more"
        );
        let cases = [
            ("{\"prompt\":\"a\"}\n{\"prompt\": 3}\n", "d.jsonl:2"),
            (
                "{\"prompt\":\"a\"}\n{\"prompt\":\"b\"}\nnot json\n",
                "d.jsonl:3",
            ),
            ("{\"max_tokens\": 4}\n", "d.jsonl:1"),
            ("{\"prompt\":\"a\",\"max_tokens\":0}\n", "d.jsonl:1"),
            ("{\"promt\":\"typo\"}\n", "d.jsonl:1"),
            (
                "{\"prompt\":\"a\"}\n{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}\n",
                "d.jsonl:2",
            ),
        ];
        for (text, want) in cases {
            let e = parse_jsonl(p, text).unwrap_err().0;
            assert!(e.starts_with(&format!("{want}:")), "{e}");
        }
        assert!(parse_jsonl(p, "\n\n").unwrap_err().0.contains("no records"));
    }

    #[test]
    fn sharegpt_takes_first_human_turn_and_reply() {
        let p = Path::new("s.json");
        let text = r#"[{"id":"a","conversations":[{"from":"human","value":"Q1"},{"from":"gpt","value":"A one"}]},
                       {"id":"b","conversations":[{"from":"human","value":"alone"}]}]"#;
        let recs = parse_sharegpt(p, text).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].prompt, "Q1");
        assert_eq!(recs[0].reference_answer.as_deref(), Some("A one"));
        let e = parse_sharegpt(p, r#"[{"conversations":[{"from":"human"}]}]"#)
            .unwrap_err()
            .0;
        assert!(e.contains("record 0"), "{e}");
        assert!(parse_sharegpt(p, "{").unwrap_err().0.contains("s.json"));
        assert!(DatasetSpec::parse("csv:x").is_err());
    }
}
