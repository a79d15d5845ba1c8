//! Prompts for a trace: each prefix block (hash id) becomes a fixed run of
//! words, so requests sharing a hash id share exactly that block of text and
//! a server's prefix cache sees the reuse the trace had.
//!
//! Every word is one token: without a tokenizer, words are counted as tokens
//! (as the simulator does); with `--tokenizer`, only words the tokenizer
//! confirms as single tokens (alone and after a space) are used, and every
//! prompt is counted to report its exact length.

use std::collections::HashMap;

use super::TraceRequest;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::workload::{splitmix, PromptBuilder, WorkItem, Workload, WORDS};

/// Builds one work item per trace request, in order: item `i` is request `i`.
pub fn workload(reqs: &[TraceRequest], tok: Option<&Tokenizer>, seed: u64) -> Workload {
    let builder = tok.map(PromptBuilder::new);
    let words: &[&'static str] = builder.as_ref().map_or(WORDS, |b| b.words());
    let sessions = sessions(reqs);
    let items = reqs
        .iter()
        .zip(sessions)
        .enumerate()
        .map(|(i, (r, session))| {
            let prompt = prompt(r, i as u64, words, seed);
            WorkItem {
                input_tokens: tok.map(|t| u32::try_from(t.count(&prompt)).unwrap_or(u32::MAX)),
                prompt,
                max_tokens: r.output_tokens.max(1),
                messages: None,
                session,
            }
        })
        .collect();
    Workload::new(items, seed)
}

/// Each request's (conversation number, turn): conversations numbered in
/// order of first appearance, turns in arrival order within each.
fn sessions(reqs: &[TraceRequest]) -> Vec<Option<(u64, u32)>> {
    let mut seen: HashMap<&str, (u64, u32)> = HashMap::new();
    reqs.iter()
        .map(|r| {
            let id = r.conversation.as_deref()?;
            let next = seen.len() as u64;
            let e = seen.entry(id).or_insert((next, 0));
            let out = *e;
            e.1 += 1;
            Some(out)
        })
        .collect()
}

/// The prompt of request `index`: its blocks' words (the last block cut to
/// the prompt length), then words unique to the request for any length the
/// blocks do not cover.
pub fn prompt(r: &TraceRequest, index: u64, words: &[&'static str], seed: u64) -> String {
    let mut left = r.input_tokens.max(1);
    let mut out = String::with_capacity(left as usize * 8);
    let bt = r.block_tokens.max(1);
    for &h in &r.hash_ids {
        if left == 0 {
            break;
        }
        let k = left.min(bt);
        push_words(
            &mut out,
            words,
            seed ^ h.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            k,
        );
        left -= k;
    }
    if left > 0 {
        // Keyed by the request index with a different mix, so the unique
        // tail never collides with a block's words.
        let key = splitmix(seed ^ 0x7A11_0000_0000_0000 ^ index);
        push_words(&mut out, words, key, left);
    }
    out
}

fn push_words(out: &mut String, words: &[&'static str], key: u64, n: u32) {
    let mut state = splitmix(key);
    for _ in 0..n {
        if !out.is_empty() {
            out.push(' ');
        }
        state = splitmix(state);
        out.push_str(words[(state % words.len() as u64) as usize]);
    }
}
