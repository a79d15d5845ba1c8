//! Local tokenizers used to build prompts of an exact token length and to
//! count prompt tokens on the client. All of them work offline: the OpenAI
//! encodings ship inside `tiktoken-rs`; a Hugging Face `tokenizer.json` is read
//! from a local path.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Which tokenizer to build prompts with (`--tokenizer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum TokenizerSpec {
    /// OpenAI `cl100k_base` (GPT-3.5/4; close to Llama 3 for plain English).
    Cl100kBase,
    /// OpenAI `o200k_base` (GPT-4o and later).
    O200kBase,
    /// A Hugging Face `tokenizer.json` file.
    HuggingFace(PathBuf),
}

impl TokenizerSpec {
    /// Parses `cl100k_base`, `o200k_base` or a path to a `tokenizer.json`.
    pub fn parse(s: &str) -> Self {
        match s {
            "cl100k_base" | "cl100k" => TokenizerSpec::Cl100kBase,
            "o200k_base" | "o200k" => TokenizerSpec::O200kBase,
            path => TokenizerSpec::HuggingFace(PathBuf::from(path)),
        }
    }

    /// A short name for reports.
    pub fn name(&self) -> String {
        match self {
            TokenizerSpec::Cl100kBase => "cl100k_base".into(),
            TokenizerSpec::O200kBase => "o200k_base".into(),
            TokenizerSpec::HuggingFace(p) => p.display().to_string(),
        }
    }
}

/// A tokenizer could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenizerError(pub String);

/// A loaded tokenizer.
pub enum Tokenizer {
    /// A tiktoken BPE.
    Tiktoken(Box<tiktoken_rs::CoreBPE>),
    /// A Hugging Face tokenizer.
    HuggingFace(Box<tokenizers::Tokenizer>),
}

impl Tokenizer {
    /// Loads the tokenizer `spec` names.
    pub fn load(spec: &TokenizerSpec) -> Result<Self, TokenizerError> {
        let builtin = |e: String| {
            TokenizerError(format!(
                "cannot load the built-in encoding {}: {e}",
                spec.name()
            ))
        };
        match spec {
            TokenizerSpec::Cl100kBase => tiktoken_rs::cl100k_base()
                .map(|b| Tokenizer::Tiktoken(Box::new(b)))
                .map_err(|e| builtin(e.to_string())),
            TokenizerSpec::O200kBase => tiktoken_rs::o200k_base()
                .map(|b| Tokenizer::Tiktoken(Box::new(b)))
                .map_err(|e| builtin(e.to_string())),
            TokenizerSpec::HuggingFace(p) => load_hf(p),
        }
    }

    /// Number of tokens in `text`, without special tokens (BOS, chat template).
    pub fn count(&self, text: &str) -> usize {
        match self {
            Tokenizer::Tiktoken(b) => b.encode_ordinary(text).len(),
            Tokenizer::HuggingFace(t) => t.encode(text, false).map_or(0, |e| e.len()),
        }
    }
}

fn load_hf(path: &Path) -> Result<Tokenizer, TokenizerError> {
    if !path.exists() {
        return Err(TokenizerError(format!(
            "--tokenizer '{}': no such file. Give 'cl100k_base', 'o200k_base' or the path of a Hugging Face tokenizer.json",
            path.display()
        )));
    }
    tokenizers::Tokenizer::from_file(path)
        .map(|t| Tokenizer::HuggingFace(Box::new(t)))
        .map_err(|e| {
            TokenizerError(format!(
                "--tokenizer '{}' is not a valid tokenizer.json: {e}",
                path.display()
            ))
        })
}
