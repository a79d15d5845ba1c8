//! Fuzzing benchmark (issue 12): a million damaged inputs per parser, each
//! a real capture from tests/fixtures mutated and cut into reads, through
//! the SSE and NDJSON framing, every protocol's event parser (the client's
//! own decode path, `replay_body`) and the Prometheus text parser. Fails on
//! a panic; prints inputs per second and the process's peak memory, which
//! stays flat when nothing allocates beyond its input.
//!
//! Run: `cargo bench --bench parser_fuzz` (`-- --inputs N` to change the count).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mutate.rs"]
mod mutate;

use std::time::Instant;

use mutate::{mutate, split, Mutation};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use throtl::api::ApiKind;
use throtl::engine::request::replay_body;
use throtl::stream::{NdjsonDecoder, SseDecoder};

fn random_mutations(rng: &mut SmallRng) -> Vec<Mutation> {
    (0..rng.random_range(0..12))
        .map(|_| {
            let at = rng.random::<u32>() as usize;
            match rng.random_range(0..5) {
                0 => Mutation::Flip(at, rng.random()),
                1 => Mutation::Insert(at, rng.random()),
                2 => Mutation::Delete(at, rng.random_range(0..64)),
                3 => Mutation::Duplicate(at, rng.random_range(0..64)),
                _ => Mutation::Truncate(at),
            }
        })
        .collect()
}

/// A damaged fixture (or, one time in ten, noise) cut into reads.
fn damaged(fixtures: &[(String, Vec<u8>)], rng: &mut SmallRng) -> Vec<Vec<u8>> {
    let base = if rng.random_range(0..10) == 0 {
        (0..rng.random_range(0..512))
            .map(|_| rng.random())
            .collect()
    } else {
        fixtures[rng.random_range(0..fixtures.len())].1.clone()
    };
    let bytes = mutate(base, &random_mutations(rng));
    let cuts: Vec<usize> = (0..rng.random_range(0..16))
        .map(|_| rng.random::<u32>() as usize)
        .collect();
    split(&bytes, &cuts)
}

fn run(name: &str, inputs: u64, mut one: impl FnMut(&mut SmallRng)) {
    let mut rng = SmallRng::seed_from_u64(12);
    let started = Instant::now();
    for _ in 0..inputs {
        one(&mut rng);
    }
    let secs = started.elapsed().as_secs_f64();
    let rss = throtl::sys::peak_rss_bytes().unwrap_or(0) as f64 / 1e6;
    println!(
        "{name:<24} {inputs} inputs in {secs:.1} s ({:.0}/s), no panic, peak RSS {rss:.1} MB",
        inputs as f64 / secs
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let inputs = args
        .iter()
        .position(|a| a == "--inputs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(1_000_000u64);
    let streams = mutate::stream_fixtures();
    let metrics = mutate::metrics_fixtures();
    run("sse+ndjson framing", inputs, |rng| {
        let reads = damaged(&streams, rng);
        let (mut sse, mut ev, mut nd, mut lines) = (
            SseDecoder::new(),
            Vec::new(),
            NdjsonDecoder::new(),
            Vec::new(),
        );
        for r in &reads {
            sse.feed(r, &mut ev);
            nd.feed(r, &mut lines);
        }
    });
    for kind in ApiKind::ALL {
        let p = kind.protocol();
        run(&format!("protocol {kind}"), inputs, |rng| {
            let reads = damaged(&streams, rng);
            let _ = replay_body(p.as_ref(), reads.iter().map(Vec::as_slice));
        });
    }
    run("prometheus text", inputs, |rng| {
        let text = String::from_utf8_lossy(&damaged(&metrics, rng).concat()).into_owned();
        let _ = throtl::scrape::prom::parse(&text);
    });
}
