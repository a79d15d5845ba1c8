//! `throtl trace stats`: what a trace asks of a server — how many requests,
//! how fast and how bursty, how long, how much prefix reuse, what sessions.
//! Percentiles are nearest-rank.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::{TracePlan, TraceRequest};

/// Summary of a trace.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraceStats {
    /// `FORMAT:PATH`.
    pub source: String,
    /// Requests summarised (after any window or filter).
    pub requests: usize,
    /// First to last arrival (s).
    pub duration_s: f64,
    /// (requests − 1) / duration.
    pub mean_rate_per_s: f64,
    /// Arrivals per one-second bucket.
    pub per_second: RateBuckets,
    /// Arrivals per one-minute bucket.
    pub per_minute: RateBuckets,
    /// Prompt lengths (tokens).
    pub input_tokens: Lengths,
    /// Answer lengths (tokens).
    pub output_tokens: Lengths,
    /// Prefix reuse, when the trace has block hashes.
    pub prefix: Option<PrefixStats>,
    /// Sessions, when the trace has conversation ids.
    pub sessions: Option<SessionStats>,
}

/// Counts of arrivals per fixed-width bucket from the first arrival.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RateBuckets {
    /// Bucket width (s).
    pub width_s: f64,
    /// Buckets from the first to the last arrival.
    pub buckets: usize,
    /// Mean arrivals per bucket.
    pub mean: f64,
    /// Median bucket.
    pub p50: u64,
    /// 99th-percentile bucket.
    pub p99: u64,
    /// Busiest bucket.
    pub max: u64,
    /// Peak / mean: how bursty at this scale (1 = perfectly even).
    pub peak_to_mean: f64,
    /// Every bucket's count, in order.
    pub counts: Vec<u64>,
}

/// A length distribution.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Lengths {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// How much of the prompts a prefix cache could reuse.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PrefixStats {
    /// Tokens per block.
    pub block_tokens: u32,
    /// Blocks over all prompts.
    pub blocks: u64,
    /// Distinct block hashes.
    pub distinct_blocks: u64,
    /// Blocks whose hash an earlier request already had.
    pub reused_blocks: u64,
    /// reused / blocks.
    pub block_reuse_ratio: f64,
    /// Prompt tokens in reused blocks / all prompt tokens: the prefix-cache
    /// hit rate an unbounded cache would reach.
    pub token_reuse_ratio: f64,
}

/// Conversations of the trace.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionStats {
    /// Distinct conversation ids.
    pub sessions: usize,
    /// Requests that carry one.
    pub requests_in_sessions: usize,
    /// Requests per session.
    pub turns: Lengths,
}

/// Summarises `plan`'s requests.
pub fn compute(plan: &TracePlan) -> TraceStats {
    let r = &plan.requests;
    let duration = plan.span().as_secs_f64();
    TraceStats {
        source: plan.spec.label(),
        requests: r.len(),
        duration_s: duration,
        mean_rate_per_s: plan.offered_rate(),
        per_second: buckets(r, 1.0),
        per_minute: buckets(r, 60.0),
        input_tokens: lengths(r.iter().map(|x| u64::from(x.input_tokens)).collect()),
        output_tokens: lengths(r.iter().map(|x| u64::from(x.output_tokens)).collect()),
        prefix: prefix(r),
        sessions: sessions(r),
    }
}

fn buckets(r: &[TraceRequest], width: f64) -> RateBuckets {
    let last = r.last().map_or(0.0, |x| x.at.as_secs_f64());
    let n = (last / width).floor() as usize + 1;
    let mut counts = vec![0u64; n];
    for x in r {
        let i = ((x.at.as_secs_f64() / width).floor() as usize).min(n - 1);
        counts[i] += 1;
    }
    let mean = r.len() as f64 / n as f64;
    let mut sorted = counts.clone();
    sorted.sort_unstable();
    let max = sorted.last().copied().unwrap_or(0);
    RateBuckets {
        width_s: width,
        buckets: n,
        mean,
        p50: rank(&sorted, 50.0),
        p99: rank(&sorted, 99.0),
        max,
        peak_to_mean: if mean > 0.0 { max as f64 / mean } else { 0.0 },
        counts,
    }
}

/// Nearest-rank percentile of sorted `xs`.
fn rank(xs: &[u64], p: f64) -> u64 {
    if xs.is_empty() {
        return 0;
    }
    let k = ((p / 100.0 * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[k - 1]
}

fn lengths(mut xs: Vec<u64>) -> Lengths {
    xs.sort_unstable();
    let mean = if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<u64>() as f64 / xs.len() as f64
    };
    Lengths {
        mean,
        p50: rank(&xs, 50.0),
        p90: rank(&xs, 90.0),
        p99: rank(&xs, 99.0),
        max: xs.last().copied().unwrap_or(0),
    }
}

/// Block and token reuse in arrival order: a block is reused when an
/// earlier request had its hash; of its tokens, at most as many as that
/// earlier block held count (a shorter partial last block covers less).
pub fn prefix(r: &[TraceRequest]) -> Option<PrefixStats> {
    if r.iter().all(|x| x.hash_ids.is_empty()) {
        return None;
    }
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let (mut blocks, mut reused, mut reused_tokens, mut tokens) = (0u64, 0u64, 0u64, 0u64);
    for x in r {
        tokens += u64::from(x.input_tokens);
        let mut left = x.input_tokens;
        let bt = x.block_tokens.max(1);
        for &h in &x.hash_ids {
            let k = left.min(bt);
            left -= k;
            blocks += 1;
            let before = seen.entry(h).or_insert(0);
            if *before > 0 {
                reused += 1;
                reused_tokens += u64::from(k.min(*before));
            }
            *before = (*before).max(k);
        }
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Some(PrefixStats {
        block_tokens: r.first().map_or(0, |x| x.block_tokens),
        blocks,
        distinct_blocks: seen.len() as u64,
        reused_blocks: reused,
        block_reuse_ratio: ratio(reused, blocks),
        token_reuse_ratio: ratio(reused_tokens, tokens),
    })
}

fn sessions(r: &[TraceRequest]) -> Option<SessionStats> {
    let mut per: HashMap<&str, u64> = HashMap::new();
    for c in r.iter().filter_map(|x| x.conversation.as_deref()) {
        *per.entry(c).or_insert(0) += 1;
    }
    if per.is_empty() {
        return None;
    }
    let ids: HashSet<&str> = per.keys().copied().collect();
    Some(SessionStats {
        sessions: ids.len(),
        requests_in_sessions: per.values().sum::<u64>() as usize,
        turns: lengths(per.into_values().collect()),
    })
}

/// The console text of `s`.
pub fn render(s: &TraceStats) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "trace {}", s.source);
    let _ = writeln!(
        o,
        "  requests      {}  over {:.1} s  (mean {:.2} req/s)",
        s.requests, s.duration_s, s.mean_rate_per_s
    );
    for b in [&s.per_second, &s.per_minute] {
        let _ = writeln!(
            o,
            "  per {:<8}  mean {:.2}  p50 {}  p99 {}  max {}  (peak/mean {:.1}, {} buckets)",
            if b.width_s >= 60.0 {
                "minute"
            } else {
                "second"
            },
            b.mean,
            b.p50,
            b.p99,
            b.max,
            b.peak_to_mean,
            b.buckets
        );
    }
    for (name, l) in [("input", &s.input_tokens), ("output", &s.output_tokens)] {
        let _ = writeln!(
            o,
            "  {name:<6} tokens mean {:.0}  p50 {}  p90 {}  p99 {}  max {}",
            l.mean, l.p50, l.p90, l.p99, l.max
        );
    }
    match &s.prefix {
        Some(p) => {
            let _ = writeln!(
                o,
                "  prefix        {} blocks of {} tokens, {} distinct; {:.1}% of blocks and {:.1}% of prompt tokens reuse an earlier block",
                p.blocks, p.block_tokens, p.distinct_blocks, 100.0 * p.block_reuse_ratio, 100.0 * p.token_reuse_ratio
            );
        }
        None => {
            let _ = writeln!(o, "  prefix        no block hashes in this format");
        }
    }
    match &s.sessions {
        Some(x) => {
            let _ = writeln!(
                o,
                "  sessions      {} ({} requests); turns per session p50 {}  p90 {}  max {}",
                x.sessions, x.requests_in_sessions, x.turns.p50, x.turns.p90, x.turns.max
            );
        }
        None => {
            let _ = writeln!(o, "  sessions      none (no conversation ids)");
        }
    }
    o
}
