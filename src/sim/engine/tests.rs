//! Scheduler-core tests in simulated time: invariants (proptest), monotone
//! behaviour, and the roofline numbers documented in docs/simulator.md.

use std::collections::HashMap;

use proptest::prelude::*;

use super::kv::block_hashes;
use super::profile::Profile;
use super::scheduler::{NewRequest, Sample, SchedConfig, SchedulerCore, Step};

fn cfg(max_num_seqs: u32, mnbt: u32, kv_blocks: u32) -> SchedConfig {
    SchedConfig {
        max_num_seqs,
        max_num_batched_tokens: mnbt,
        kv_blocks,
        block_size: 16,
        prefix_caching: false,
        chunked_prefill: true,
    }
}

fn rtx4090() -> Profile {
    Profile::builtin("llama3-8b-rtx4090").unwrap()
}

fn req(id: u64, prompt: u32, out: u32, arrival: f64) -> NewRequest {
    NewRequest {
        id,
        prompt_tokens: prompt,
        max_tokens: out,
        block_hashes: Vec::new(),
        arrival,
    }
}

/// Result of a closed-loop run in simulated time.
struct Run {
    elapsed: f64,
    tokens: u64,
    ttft: Vec<f64>,
    itl: Vec<f64>,
}

impl Run {
    fn throughput(&self) -> f64 {
        self.tokens as f64 / self.elapsed
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// `clients` closed-loop clients send `total` requests of `prompt`/`out` tokens.
fn closed_loop(core: &mut SchedulerCore, clients: u32, total: u64, prompt: u32, out: u32) -> Run {
    let mut t = 0.0;
    let mut sent = 0u64;
    for _ in 0..clients.min(total as u32) {
        core.add(req(sent, prompt, out, t));
        sent += 1;
    }
    let mut run = Run {
        elapsed: 0.0,
        tokens: 0,
        ttft: Vec::new(),
        itl: Vec::new(),
    };
    loop {
        let step = core.step(t);
        if step.scheduled_tokens == 0 {
            break;
        }
        t += step.duration;
        collect(&step, &mut run);
        for tok in step.tokens.iter().filter(|k| k.finished) {
            let _ = tok;
            if sent < total {
                core.add(req(sent, prompt, out, t));
                sent += 1;
            }
        }
    }
    run.elapsed = t;
    run
}

fn collect(step: &Step, run: &mut Run) {
    run.tokens += step.tokens.len() as u64;
    for s in &step.samples {
        match *s {
            Sample::Ttft(v) => run.ttft.push(v),
            Sample::Itl(v) => run.itl.push(v),
            _ => {}
        }
    }
}

#[test]
fn single_request_decode_matches_the_roofline() {
    // 8.03e9 params × 2 B / (1008 GB/s × 0.85) + 1.5 ms ≈ 20.24 ms per token.
    let mut core = SchedulerCore::new(cfg(256, 2048, 1900), rtx4090());
    let run = closed_loop(&mut core, 1, 1, 128, 64);
    let itl = mean(&run.itl);
    let expected = 1.5e-3 + 8.03e9 * 2.0 / (1008e9 * 0.85) + 131_072.0 * 190.0 / (1008e9 * 0.85);
    assert!(
        (itl - expected).abs() / expected < 0.01,
        "itl {itl} vs {expected}"
    );
    assert!(
        (1.0 / itl - 49.4).abs() < 1.0,
        "decode speed {} tok/s",
        1.0 / itl
    );
}

#[test]
fn throughput_rises_then_saturates_with_concurrency() {
    let tput: Vec<f64> = [1u32, 4, 16, 64, 256, 512]
        .iter()
        .map(|&c| {
            let mut core = SchedulerCore::new(cfg(256, 2048, 1900), rtx4090());
            closed_loop(&mut core, c, u64::from(c) * 3, 128, 64).throughput()
        })
        .collect();
    for w in tput.windows(2) {
        assert!(w[1] >= w[0] * 0.98, "throughput fell: {tput:?}");
    }
    assert!(
        tput[2] > 8.0 * tput[0],
        "batching must multiply throughput: {tput:?}"
    );
    // Past max-num-seqs (256) and the KV capacity, more clients add nothing.
    assert!(tput[5] < tput[4] * 1.10, "must saturate: {tput:?}");
}

#[test]
fn ttft_rises_with_queue_length() {
    let ttft: Vec<f64> = [1u32, 8, 64, 256]
        .iter()
        .map(|&n| {
            let mut core = SchedulerCore::new(cfg(8, 2048, 1900), rtx4090());
            mean(&closed_loop(&mut core, n, u64::from(n), 512, 16).ttft)
        })
        .collect();
    for w in ttft.windows(2) {
        assert!(w[1] > w[0] * 1.5, "ttft must grow with the queue: {ttft:?}");
    }
}

#[test]
fn itl_rises_with_batch_size() {
    let itl: Vec<f64> = [1u32, 16, 64, 200]
        .iter()
        .map(|&n| {
            let mut core = SchedulerCore::new(cfg(256, 8192, 20_000), rtx4090());
            mean(&closed_loop(&mut core, n, u64::from(n), 256, 64).itl)
        })
        .collect();
    for w in itl.windows(2) {
        assert!(w[1] > w[0], "itl must grow with the batch: {itl:?}");
    }
}

#[test]
fn a_full_cache_preempts_and_everyone_still_finishes() {
    // 40 blocks × 16 = 640 tokens; 8 requests of 64 + 64 need 1024.
    let mut core = SchedulerCore::new(cfg(256, 2048, 40), rtx4090());
    let run = closed_loop(&mut core, 8, 8, 64, 64);
    let c = core.snapshot().counters;
    assert!(c.preemptions > 0, "{c:?}");
    assert_eq!(
        (c.finished, run.tokens, c.generation_tokens),
        (8, 8 * 64, 8 * 64)
    );
    assert!(core.is_idle());
    assert_eq!(core.kv().used_blocks(), 0);
}

#[test]
fn chunked_prefill_splits_long_prompts_and_off_rejects_them() {
    let mut core = SchedulerCore::new(cfg(256, 512, 1900), rtx4090());
    core.add(req(0, 2000, 4, 0.0));
    let first = core.step(0.0);
    assert_eq!((first.scheduled_tokens, first.tokens.len()), (512, 0));
    let mut steps = 1;
    let mut t = first.duration;
    while core.step(t).tokens.is_empty() {
        steps += 1;
        t += 0.01;
    }
    assert_eq!(steps + 1, 4, "2000 prompt tokens / 512 per step = 4 steps");
    let off = SchedConfig {
        chunked_prefill: false,
        ..cfg(256, 512, 1900)
    };
    assert!(off
        .admissible(2000, 4)
        .unwrap_err()
        .contains("max_num_batched_tokens"));
    assert!(off.admissible(400, 100).is_ok());
}

#[test]
fn prefix_cache_hits_shorten_ttft_and_are_counted() {
    let tokens: Vec<u64> = (0..1000).collect();
    let run = |prefix_caching: bool| {
        let mut core = SchedulerCore::new(
            SchedConfig {
                prefix_caching,
                ..cfg(256, 2048, 1900)
            },
            rtx4090(),
        );
        let hashes = block_hashes(&tokens, 16);
        let mut ttft = Vec::new();
        let mut t = 0.0;
        for id in 0..2 {
            core.add(NewRequest {
                id,
                prompt_tokens: 1000,
                max_tokens: 2,
                block_hashes: hashes.clone(),
                arrival: t,
            });
            loop {
                let s = core.step(t);
                t += s.duration;
                ttft.extend(s.samples.iter().filter_map(|x| {
                    if let Sample::Ttft(v) = x {
                        Some(*v)
                    } else {
                        None
                    }
                }));
                if s.tokens.iter().any(|k| k.finished) {
                    break;
                }
            }
        }
        (ttft, core.snapshot().counters)
    };
    let (ttft_on, c_on) = run(true);
    let (ttft_off, c_off) = run(false);
    assert_eq!(
        (c_on.prefix_queries, c_on.prefix_hits),
        (2000, 992),
        "second prompt reuses 62 full blocks"
    );
    assert_eq!(c_off.prefix_hits, 0);
    assert!(ttft_on[1] < ttft_on[0] * 0.5, "{ttft_on:?}");
    assert!((ttft_off[1] - ttft_off[0]).abs() < 1e-9);
}

#[test]
fn requests_that_can_never_fit_are_refused() {
    let c = cfg(256, 2048, 10);
    assert!(c.admissible(150, 10).is_ok());
    assert!(c
        .admissible(150, 11)
        .unwrap_err()
        .contains("KV cache holds 160 tokens"));
}

#[derive(Debug, Clone)]
struct Arrival {
    at_ms: u32,
    prompt: u32,
    out: u32,
    abort_after_tokens: Option<u32>,
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (
        0u32..400,
        1u32..300,
        1u32..40,
        prop::option::weighted(0.15, 0u32..40),
    )
        .prop_map(|(at_ms, prompt, out, abort_after_tokens)| Arrival {
            at_ms,
            prompt,
            out,
            abort_after_tokens,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// KV blocks never exceed capacity; batch limits hold; every request
    /// finishes with exactly max_tokens tokens or is aborted; counters exact.
    #[test]
    fn scheduler_invariants(
        arrivals in prop::collection::vec(arrival(), 1..40),
        max_num_seqs in 1u32..12,
        mnbt in 16u32..600,
        kv_blocks in 24u32..120,
        chunked in any::<bool>(),
        prefix in any::<bool>(),
    ) {
        let c = SchedConfig { max_num_seqs, max_num_batched_tokens: mnbt, kv_blocks, block_size: 16, prefix_caching: prefix, chunked_prefill: chunked };
        let mut core = SchedulerCore::new(c.clone(), rtx4090());
        let mut pending: Vec<(u64, Arrival)> = Vec::new();
        for (i, a) in arrivals.iter().enumerate() {
            if c.admissible(a.prompt, a.out).is_ok() {
                pending.push((i as u64, a.clone()));
            }
        }
        pending.sort_by_key(|(_, a)| a.at_ms);
        let shared_prefix: Vec<u64> = (0..300).collect();
        let mut emitted: HashMap<u64, u32> = HashMap::new();
        let mut finished: HashMap<u64, bool> = HashMap::new();
        let mut aborted = 0u64;
        let mut t = 0.0;
        let mut next = 0;
        let mut guard = 0;
        loop {
            while next < pending.len() && f64::from(pending[next].1.at_ms) / 1000.0 <= t {
                let (id, a) = &pending[next];
                let hashes = block_hashes(&shared_prefix[..a.prompt as usize], 16);
                core.add(NewRequest { id: *id, prompt_tokens: a.prompt, max_tokens: a.out, block_hashes: hashes, arrival: t });
                next += 1;
            }
            let step = core.step(t);
            prop_assert!(core.kv().used_blocks() <= kv_blocks);
            prop_assert!(core.kv().check().is_ok(), "{:?}", core.kv().check());
            prop_assert!(step.scheduled_tokens <= mnbt);
            prop_assert!(step.batch_size <= max_num_seqs);
            prop_assert!(core.snapshot().running <= max_num_seqs);
            for tok in &step.tokens {
                let n = emitted.entry(tok.id).or_insert(0);
                prop_assert_eq!(tok.index, *n, "tokens in order, none skipped");
                *n += 1;
                let want = pending.iter().find(|(id, _)| *id == tok.id).map(|(_, a)| a.out).unwrap();
                prop_assert_eq!(tok.finished, *n == want);
                if tok.finished {
                    prop_assert!(finished.insert(tok.id, true).is_none());
                }
            }
            for (id, a) in &pending {
                if a.abort_after_tokens.is_some_and(|k| emitted.get(id).copied().unwrap_or(0) >= k) && !finished.contains_key(id) && core.abort(*id) {
                    aborted += 1;
                }
            }
            if step.scheduled_tokens == 0 {
                if next >= pending.len() {
                    break;
                }
                t = f64::from(pending[next].1.at_ms) / 1000.0;
            } else {
                t += step.duration;
            }
            guard += 1;
            prop_assert!(guard < 200_000, "no progress");
        }
        prop_assert!(core.is_idle(), "every admitted request finishes or is aborted");
        prop_assert_eq!(core.kv().used_blocks(), 0);
        let counters = core.snapshot().counters;
        prop_assert_eq!(counters.finished as usize + aborted as usize, pending.len());
        prop_assert_eq!(counters.aborted, aborted);
        prop_assert_eq!(counters.generation_tokens, emitted.values().map(|&n| u64::from(n)).sum::<u64>());
        for (id, a) in &pending {
            if finished.contains_key(id) {
                prop_assert_eq!(emitted[id], a.out);
            }
        }
        prop_assert!(counters.prefix_hits <= counters.prefix_queries);
        if !prefix {
            prop_assert_eq!(counters.prefix_hits, 0);
        }
    }
}

#[test]
fn issue13_gpu_memory_utilization_sizes_the_kv_cache_and_too_little_is_oom() {
    use super::{EngineConfig, KvCacheDtype};
    let mut e = EngineConfig::new(rtx4090());
    // vLLM's default share reproduces the profile's blocks.
    e.gpu_memory_utilization = Some(0.9);
    assert_eq!(e.sched().kv_blocks, rtx4090().kv_blocks);
    e.gpu_memory_utilization = Some(0.95);
    let more = e.sched().kv_blocks;
    assert!(more > rtx4090().kv_blocks, "{more}");
    e.kv_cache_dtype = KvCacheDtype::Fp8;
    let fp8 = e.sched().kv_blocks;
    assert!((fp8 as i64 - 2 * more as i64).abs() <= 1, "{fp8} vs {more}");
    e.kv_cache_dtype = KvCacheDtype::Auto;
    e.gpu_memory_utilization = Some(0.7);
    let err = e.validate().unwrap_err();
    assert!(
        err.contains("No available memory for the cache blocks"),
        "{err}"
    );
    e.gpu_memory_utilization = Some(0.9);
    e.max_model_len = Some(1_000_000);
    let err = e.validate().unwrap_err();
    assert!(err.contains("max seq len (1000000)"), "{err}");
}
