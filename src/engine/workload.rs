//! Synthetic prompts of a requested length.

/// Common English words that are one token each in cl100k/o200k and Llama 3
/// tokenizers, so a prompt of N words is about N tokens.
const WORDS: &[&str] = &[
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

/// Builds deterministic prompts: request `seq` gets its own word sequence, so
/// prompts differ (no accidental prefix-cache hits) but runs are repeatable.
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

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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
}
