//! Input mutation shared by the parser fuzz tests (`tests/issue12_fuzz.rs`)
//! and the million-input benchmark (`benches/parser_fuzz.rs`): real captures
//! from tests/fixtures, damaged the ways a network or a buggy server damages
//! them, then cut into arbitrary reads.
#![allow(dead_code)]

/// One damage to apply at a position (taken modulo the input length).
#[derive(Debug, Clone, Copy)]
pub enum Mutation {
    /// Replace the byte.
    Flip(usize, u8),
    /// Insert a byte.
    Insert(usize, u8),
    /// Delete up to n bytes.
    Delete(usize, usize),
    /// Repeat a span of up to n bytes in place.
    Duplicate(usize, usize),
    /// Cut the input here.
    Truncate(usize),
}

/// Applies `mutations` in order.
pub fn mutate(mut input: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = input.len().max(1);
        match *m {
            Mutation::Flip(at, b) if !input.is_empty() => input[at % len] = b,
            Mutation::Insert(at, b) => input.insert(at % (input.len() + 1), b),
            Mutation::Delete(at, n) if !input.is_empty() => {
                let at = at % len;
                let end = (at + n).min(input.len());
                input.drain(at..end);
            }
            Mutation::Duplicate(at, n) if !input.is_empty() => {
                let at = at % len;
                let end = (at + n).min(input.len());
                let span = input[at..end].to_vec();
                input.splice(at..at, span);
            }
            Mutation::Truncate(at) => input.truncate(at % (input.len() + 1)),
            _ => {}
        }
    }
    input
}

/// `input` cut at the given offsets (each modulo the length), in order.
pub fn split(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    at.push(0);
    at.push(input.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| input[w[0]..w[1]].to_vec()).collect()
}

/// Every stream capture in tests/fixtures/streams with the protocols it
/// belongs to, by file extension: SSE or NDJSON.
pub fn stream_fixtures() -> Vec<(String, Vec<u8>)> {
    fixtures("streams")
}

/// Every Prometheus exposition in tests/fixtures/metrics.
pub fn metrics_fixtures() -> Vec<(String, Vec<u8>)> {
    fixtures("metrics")
}

fn fixtures(dir: &str) -> Vec<(String, Vec<u8>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&root)
        .expect("fixture directory")
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("fixture"))
        })
        .collect();
    out.sort();
    out
}
