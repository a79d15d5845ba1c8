//! Issue 12: every stream parser and the Prometheus parser take damaged
//! input, cut at arbitrary places, without panicking. A short property run
//! here; `cargo bench --bench parser_fuzz` runs a million inputs per parser.
#![allow(clippy::unwrap_used)]

#[path = "common/mutate.rs"]
mod mutate;

use mutate::{mutate, split, Mutation};
use proptest::prelude::*;
use throtl::api::ApiKind;
use throtl::engine::request::replay_body;
use throtl::stream::{NdjsonDecoder, SseDecoder};

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), 0usize..64).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), 0usize..64).prop_map(|(a, n)| Mutation::Duplicate(a, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// A damaged capture (or pure noise), cut into reads.
fn damaged_reads(fixtures: Vec<(String, Vec<u8>)>) -> impl Strategy<Value = (usize, Vec<Vec<u8>>)> {
    let n = fixtures.len();
    (
        0..n + 1,
        proptest::collection::vec(mutation(), 0..12),
        proptest::collection::vec(any::<usize>(), 0..16),
        proptest::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(move |(i, muts, cuts, noise)| {
            let base = fixtures.get(i).map_or(noise, |(_, b)| b.clone());
            let bytes = mutate(base, &muts);
            (i, split(&bytes, &cuts))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn issue12_every_protocol_survives_damaged_streams(
        (_, reads) in damaged_reads(mutate::stream_fixtures())
    ) {
        for kind in ApiKind::ALL {
            let p = kind.protocol();
            let rec = replay_body(p.as_ref(), reads.iter().map(Vec::as_slice));
            // Whatever it was, the record is consistent.
            prop_assert!(rec.token_times.len() <= rec.messages as usize);
            prop_assert!(rec.end >= rec.scheduled);
        }
    }

    #[test]
    fn issue12_framing_decoders_survive_arbitrary_bytes(
        (_, reads) in damaged_reads(mutate::stream_fixtures())
    ) {
        let total: usize = reads.iter().map(Vec::len).sum();
        let (mut sse, mut events) = (SseDecoder::new(), Vec::new());
        let (mut nd, mut lines) = (NdjsonDecoder::new(), Vec::new());
        for r in &reads {
            sse.feed(r, &mut events);
            nd.feed(r, &mut lines);
        }
        // Output stays proportional to the input: nothing allocates beyond
        // what arrived (an invalid byte becomes a 3-byte U+FFFD at most).
        let sse_out: usize = events.iter().map(|e| e.data.len()).sum();
        let nd_out: usize = lines.iter().map(String::len).sum::<usize>()
            + nd.take_rest().map_or(0, |r| r.len());
        prop_assert!(sse_out <= 3 * total && nd_out <= 3 * total);
    }

    #[test]
    fn issue12_prometheus_parser_survives_damaged_expositions(
        (_, reads) in damaged_reads(mutate::metrics_fixtures())
    ) {
        let bytes = reads.concat();
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(exp) = throtl::scrape::prom::parse(&text) {
            prop_assert!(exp.families.len() <= text.lines().count() + 1);
        }
    }
}

#[test]
fn issue12_undamaged_fixtures_still_parse() {
    // The fuzz inputs start from real captures: make sure they are real.
    for (name, bytes) in mutate::metrics_fixtures() {
        let text = String::from_utf8(bytes).unwrap();
        assert!(throtl::scrape::prom::parse(&text).is_ok(), "{name}");
    }
    assert!(mutate::stream_fixtures().len() >= 10);
}
