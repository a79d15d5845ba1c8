//! What each request asks: prompts of a requested token length (built with a
//! real tokenizer), `max_tokens`, shared prefixes, or records of a dataset.
//!
//! A [`Workload`] is built completely before the run starts, so no
//! tokenization or text generation ever happens while a request is due.

use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::Serialize;

use super::dataset::DatasetRecord;
use super::tokenizer::Tokenizer;
use crate::api::ChatMessage;

/// Common English words that are one token each in cl100k/o200k and Llama 3
/// tokenizers. With a tokenizer, only the words it confirms are used.
pub const WORDS: &[&str] = &[
    "time",
    "year",
    "people",
    "way",
    "day",
    "man",
    "thing",
    "woman",
    "life",
    "child",
    "world",
    "school",
    "state",
    "family",
    "student",
    "group",
    "country",
    "problem",
    "hand",
    "part",
    "place",
    "case",
    "week",
    "company",
    "system",
    "program",
    "question",
    "work",
    "government",
    "number",
    "night",
    "point",
    "home",
    "water",
    "room",
    "mother",
    "area",
    "money",
    "story",
    "fact",
    "month",
    "lot",
    "right",
    "study",
    "book",
    "eye",
    "job",
    "word",
    "business",
    "issue",
    "side",
    "kind",
    "head",
    "house",
    "service",
    "friend",
    "father",
    "power",
    "hour",
    "game",
    "line",
    "end",
    "member",
    "law",
    "car",
    "city",
    "community",
    "name",
    "president",
    "team",
];

/// Builds deterministic prompts of whitespace-separated words (no tokenizer):
/// request `seq` gets its own word sequence, so prompts differ (no accidental
/// prefix-cache hits) but runs are repeatable.
#[derive(Debug, Clone)]
pub struct PromptSource {
    words: u32,
    seed: u64,
}

impl PromptSource {
    /// Prompts of `words` words, varied by `seed`.
    pub fn new(words: u32, seed: u64) -> Self {
        Self { words, seed }
    }

    /// The prompt of request `seq`.
    pub fn prompt(&self, seq: u64) -> String {
        let mut state = splitmix(self.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut out = String::with_capacity(self.words as usize * 8);
        for i in 0..self.words {
            if i > 0 {
                out.push(' ');
            }
            state = splitmix(state);
            out.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
        }
        out
    }
}

pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A distribution of token lengths (`--input-tokens`, `--output-tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TokenLengths {
    /// Always this many.
    Fixed {
        /// The length.
        n: u32,
    },
    /// Normal with this mean and standard deviation, rounded, at least 1.
    Normal {
        /// Mean.
        mean: u32,
        /// Standard deviation.
        stddev: u32,
    },
    /// Uniform over `lo..=hi`.
    Uniform {
        /// Smallest length.
        lo: u32,
        /// Largest length.
        hi: u32,
    },
}

impl TokenLengths {
    /// Parses `512`, `fixed:512`, `512:128` (normal: mean:stddev) or
    /// `uniform:128-1024`. `flag` names the flag in errors.
    pub fn parse(flag: &str, s: &str) -> Result<Self, String> {
        let num = |t: &str| -> Result<u32, String> {
            t.trim().parse::<u32>().map_err(|_| {
                format!("{flag} '{s}': '{t}' is not a whole number. Write e.g. 512, 512:128 (normal mean:stddev) or uniform:128-1024")
            })
        };
        if let Some(range) = s.strip_prefix("uniform:") {
            let (lo, hi) = range.split_once('-').ok_or_else(|| {
                format!("{flag} '{s}': write the range as uniform:LOW-HIGH, e.g. uniform:128-1024")
            })?;
            let (lo, hi) = (num(lo)?, num(hi)?);
            if lo > hi {
                return Err(format!(
                    "{flag} '{s}': the low end {lo} is above the high end {hi}"
                ));
            }
            return Ok(TokenLengths::Uniform { lo, hi });
        }
        if let Some(n) = s.strip_prefix("fixed:") {
            return Ok(TokenLengths::Fixed { n: num(n)? });
        }
        match s.split_once(':') {
            Some((m, sd)) => Ok(TokenLengths::Normal {
                mean: num(m)?,
                stddev: num(sd)?,
            }),
            None => Ok(TokenLengths::Fixed { n: num(s)? }),
        }
    }

    /// The mean length.
    pub fn mean(&self) -> u32 {
        match *self {
            TokenLengths::Fixed { n } => n,
            TokenLengths::Normal { mean, .. } => mean,
            TokenLengths::Uniform { lo, hi } => lo + (hi - lo) / 2,
        }
    }

    /// The smallest length this can produce.
    pub fn min(&self) -> u32 {
        match *self {
            TokenLengths::Fixed { n } => n,
            TokenLengths::Normal { .. } => 1,
            TokenLengths::Uniform { lo, .. } => lo,
        }
    }

    /// Draws one length.
    pub fn sample(&self, rng: &mut SmallRng) -> u32 {
        match *self {
            TokenLengths::Fixed { n } => n,
            TokenLengths::Uniform { lo, hi } => rng.random_range(lo..=hi),
            TokenLengths::Normal { mean, stddev } => {
                match Normal::new(f64::from(mean), f64::from(stddev)) {
                    Ok(d) => d.sample(rng).round().clamp(1.0, f64::from(u32::MAX)) as u32,
                    Err(_) => mean.max(1),
                }
            }
        }
    }
}

/// One pre-built request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkItem {
    /// Prompt text (a single user message on chat routes).
    pub prompt: String,
    /// `max_tokens` of the request.
    pub max_tokens: u32,
    /// Prompt tokens counted by the local tokenizer, when one was used.
    pub input_tokens: Option<u32>,
    /// A dataset `messages` record's own message list (chat protocols send
    /// it instead of `prompt` as one user message).
    pub messages: Option<Vec<ChatMessage>>,
    /// A replayed trace's session: (conversation number, turn), written to
    /// the request's record.
    pub session: Option<(u64, u32)>,
}

impl WorkItem {
    /// The messages of a first turn: the record's list, or `prompt` as one user message.
    pub fn first_messages(&self) -> Vec<ChatMessage> {
        match &self.messages {
            Some(m) => m.clone(),
            None => vec![ChatMessage::user(self.prompt.clone())],
        }
    }
}

/// The pre-built requests of a run; request `seq` uses item `seq mod len`.
#[derive(Debug, Clone)]
pub struct Workload {
    items: Arc<Vec<WorkItem>>,
    seed: u64,
}

impl Workload {
    /// A workload of `items` (at least one; an empty list gets one empty prompt).
    pub fn new(mut items: Vec<WorkItem>, seed: u64) -> Self {
        if items.is_empty() {
            items.push(WorkItem {
                prompt: String::new(),
                max_tokens: 1,
                input_tokens: None,
                messages: None,
                session: None,
            });
        }
        Self {
            items: Arc::new(items),
            seed,
        }
    }

    /// Word prompts without a tokenizer (the simulator counts words as tokens).
    pub fn words(count: usize, input_words: u32, output: &TokenLengths, seed: u64) -> Self {
        let src = PromptSource::new(input_words, seed);
        let mut rng = SmallRng::seed_from_u64(seed);
        let items = (0..count.max(1) as u64)
            .map(|i| WorkItem {
                prompt: src.prompt(i),
                max_tokens: output.sample(&mut rng).max(1),
                input_tokens: None,
                messages: None,
                session: None,
            })
            .collect();
        Self::new(items, seed)
    }

    /// The item of request `seq`.
    pub fn item(&self, seq: u64) -> &WorkItem {
        let i = (seq % self.items.len() as u64) as usize;
        &self.items[i]
    }

    /// Number of distinct items (requests beyond this repeat prompts).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Always false: a workload has at least one item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Seed the workload was built with (also seeds think times).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Largest `max_tokens` of any item.
    pub fn max_output(&self) -> u32 {
        self.items.iter().map(|i| i.max_tokens).max().unwrap_or(1)
    }
}

/// What synthetic prompts to build.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SyntheticSpec {
    /// Length of the unique part of each prompt.
    pub input: TokenLengths,
    /// `max_tokens` of each request.
    pub output: TokenLengths,
    /// Length of a prefix shared by every prompt of a group (0: none).
    pub prefix_tokens: u32,
    /// Number of distinct shared prefixes; request `i` uses prefix `i mod groups`.
    pub prefix_groups: u32,
    /// Seed of lengths and words.
    pub seed: u64,
}

/// Builds prompts of an exact token count with a tokenizer: words the
/// tokenizer confirms as one token (alone and after a space) are joined, the
/// result is counted, and words are added or removed until the count is exact.
pub struct PromptBuilder<'a> {
    tok: &'a Tokenizer,
    words: Vec<&'static str>,
}

impl<'a> PromptBuilder<'a> {
    /// Vets [`WORDS`] against `tok`.
    pub fn new(tok: &'a Tokenizer) -> Self {
        let mut words: Vec<&'static str> = WORDS
            .iter()
            .copied()
            .filter(|w| tok.count(w) == 1 && tok.count(&format!(" {w}")) == 1)
            .collect();
        if words.is_empty() {
            words = WORDS.to_vec();
        }
        Self { tok, words }
    }

    /// Words the tokenizer confirmed as single tokens.
    pub fn vetted_words(&self) -> usize {
        self.words.len()
    }

    /// The confirmed words themselves, for prompts of other shapes (trace
    /// prefix blocks): joined by spaces, each is one token.
    pub fn words(&self) -> &[&'static str] {
        &self.words
    }

    /// Text of `n` tokens following `prefix` (which has `prefix_tokens`
    /// tokens); returns the whole prompt and its counted length.
    pub fn build(
        &self,
        prefix: &str,
        prefix_tokens: u32,
        n: u32,
        rng: &mut SmallRng,
    ) -> (String, u32) {
        let (text, count, _) = self.build_checked(prefix, prefix_tokens, n, rng, true);
        (text, count)
    }

    /// Like [`PromptBuilder::build`]; with `verify` false the text is not
    /// counted and the target is returned. The flag says whether the first
    /// joined text already had the exact count (true when not verified).
    fn build_checked(
        &self,
        prefix: &str,
        prefix_tokens: u32,
        n: u32,
        rng: &mut SmallRng,
        verify: bool,
    ) -> (String, u32, bool) {
        let target = (prefix_tokens + n) as usize;
        let mut words: Vec<&str> = (0..n).map(|_| self.pick(rng)).collect();
        let mut text = join(prefix, &words);
        if !verify {
            return (text, prefix_tokens + n, true);
        }
        let mut first_exact = None;
        for _ in 0..16 {
            let count = self.tok.count(&text);
            first_exact.get_or_insert(count == target);
            if count == target {
                break;
            }
            if count > target {
                let keep = words.len().saturating_sub(count - target);
                words.truncate(keep);
            } else {
                words.extend((0..target - count).map(|_| self.pick(rng)));
            }
            text = join(prefix, &words);
        }
        let count = u32::try_from(self.tok.count(&text)).unwrap_or(u32::MAX);
        (text, count, first_exact.unwrap_or(true))
    }

    fn pick(&self, rng: &mut SmallRng) -> &'static str {
        self.words[rng.random_range(0..self.words.len())]
    }
}

fn join(prefix: &str, words: &[&str]) -> String {
    let mut s = String::with_capacity(prefix.len() + words.len() * 8);
    s.push_str(prefix);
    for w in words {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(w);
    }
    s
}

/// Prompts always counted at the start of a workload.
const VERIFY_FIRST: usize = 64;
/// After those, every this-many-th prompt is counted as a spot check.
const VERIFY_EVERY: usize = 32;

/// Builds `count` synthetic items of exact token lengths with `tok`.
///
/// Joining words the tokenizer confirmed as single tokens gives the exact
/// count by construction for tokenizers that split on spaces. To keep large
/// workloads fast, the first [`VERIFY_FIRST`] prompts and every
/// [`VERIFY_EVERY`]-th after are counted; if any of them needed adjusting,
/// the whole workload is rebuilt (same seed, same items) counting every prompt.
pub fn synthetic(spec: &SyntheticSpec, tok: &Tokenizer, count: usize) -> Workload {
    let builder = PromptBuilder::new(tok);
    match build_items(spec, &builder, count, false) {
        Some(items) => Workload::new(items, spec.seed),
        None => Workload::new(
            build_items(spec, &builder, count, true).unwrap_or_default(),
            spec.seed,
        ),
    }
}

/// The items; `None` when a spot check failed (only when not `verify_all`).
fn build_items(
    spec: &SyntheticSpec,
    builder: &PromptBuilder<'_>,
    count: usize,
    verify_all: bool,
) -> Option<Vec<WorkItem>> {
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let prefixes: Vec<(String, u32)> = (0..spec.prefix_groups.max(1))
        .map(|g| {
            let mut prng = SmallRng::seed_from_u64(spec.seed ^ 0xA5A5_0000 ^ u64::from(g));
            match spec.prefix_tokens {
                0 => (String::new(), 0),
                p => builder.build("", 0, p, &mut prng),
            }
        })
        .collect();
    let mut items = Vec::with_capacity(count.max(1));
    for i in 0..count.max(1) {
        let (prefix, ptoks) = &prefixes[i % prefixes.len()];
        let n = spec.input.sample(&mut rng);
        let verify = verify_all || i < VERIFY_FIRST || i % VERIFY_EVERY == 0;
        let (prompt, counted, exact) = builder.build_checked(prefix, *ptoks, n, &mut rng, verify);
        if !exact && !verify_all {
            return None;
        }
        items.push(WorkItem {
            prompt,
            max_tokens: spec.output.sample(&mut rng).max(1),
            input_tokens: Some(counted),
            messages: None,
            session: None,
        });
    }
    Some(items)
}

/// Builds a workload from dataset records, cycling them to `count` items if
/// fewer. `max_tokens` is the record's own, else the token length of its
/// reference answer, else drawn from `output`.
pub fn from_dataset(
    records: &[DatasetRecord],
    tok: &Tokenizer,
    output: &TokenLengths,
    count: usize,
    seed: u64,
) -> Workload {
    let mut rng = SmallRng::seed_from_u64(seed);
    let n = count.clamp(1, records.len().max(1));
    let items = records
        .iter()
        .take(n)
        .map(|r| {
            let answer = r
                .reference_answer
                .as_deref()
                .map(|a| tok.count(a).max(1) as u32);
            WorkItem {
                prompt: r.prompt.clone(),
                max_tokens: r
                    .max_tokens
                    .or(answer)
                    .unwrap_or_else(|| output.sample(&mut rng).max(1)),
                input_tokens: Some(u32::try_from(tok.count(&r.prompt)).unwrap_or(u32::MAX)),
                messages: r.messages.clone(),
                session: None,
            }
        })
        .collect();
    Workload::new(items, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_have_exact_word_count_and_differ() {
        let p = PromptSource::new(256, 7);
        assert_eq!(p.prompt(0).split_whitespace().count(), 256);
        assert_ne!(p.prompt(0), p.prompt(1));
        assert_eq!(p.prompt(3), PromptSource::new(256, 7).prompt(3));
        assert_eq!(PromptSource::new(0, 1).prompt(0), "");
    }

    #[test]
    fn token_length_specs_parse_and_sample() {
        assert_eq!(
            TokenLengths::parse("--input-tokens", "512"),
            Ok(TokenLengths::Fixed { n: 512 })
        );
        assert_eq!(
            TokenLengths::parse("--input-tokens", "fixed:64"),
            Ok(TokenLengths::Fixed { n: 64 })
        );
        assert_eq!(
            TokenLengths::parse("--input-tokens", "512:128"),
            Ok(TokenLengths::Normal {
                mean: 512,
                stddev: 128
            })
        );
        assert_eq!(
            TokenLengths::parse("--x", "uniform:128-1024"),
            Ok(TokenLengths::Uniform { lo: 128, hi: 1024 })
        );
        let e = TokenLengths::parse("--output-tokens", "uniform:9-3").unwrap_err();
        assert!(e.contains("--output-tokens") && e.contains("above"), "{e}");
        assert!(TokenLengths::parse("--input-tokens", "lots")
            .unwrap_err()
            .contains("'lots'"));
        let mut rng = SmallRng::seed_from_u64(1);
        let u = TokenLengths::Uniform { lo: 10, hi: 20 };
        assert!((0..500)
            .map(|_| u.sample(&mut rng))
            .all(|x| (10..=20).contains(&x)));
        let n = TokenLengths::Normal {
            mean: 500,
            stddev: 50,
        };
        let xs: Vec<f64> = (0..5000).map(|_| f64::from(n.sample(&mut rng))).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
        assert!(
            (mean - 500.0).abs() < 3.0 && (sd - 50.0).abs() < 3.0,
            "{mean} {sd}"
        );
    }
}
