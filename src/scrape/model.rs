//! One model of a serving engine's state, mapped from each engine's metric names.
//!
//! Counters stay cumulative here (rates need two samples, see
//! [`super::derive`]); histograms are summed across label sets by `le`.

use serde::{Deserialize, Serialize};

use super::prom::{Exposition, MetricKind};

/// The engine family a `/metrics` body (or API) came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// vLLM (`vllm:*`, V0 and V1 names).
    Vllm,
    /// Hugging Face TGI (`tgi_*`).
    Tgi,
    /// llama.cpp server (`llamacpp:*`).
    Llamacpp,
    /// SGLang (`sglang:*`).
    Sglang,
    /// Ollama (`/api/ps`, `/api/tags`).
    Ollama,
    /// No known engine metric names.
    #[default]
    Unknown,
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Self::Vllm => "vllm",
            Self::Tgi => "tgi",
            Self::Llamacpp => "llamacpp",
            Self::Sglang => "sglang",
            Self::Ollama => "ollama",
            Self::Unknown => "unknown",
        };
        f.write_str(s)
    }
}

/// A cumulative histogram: upper bounds (ending with `+Inf`) and counts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Buckets {
    /// Upper bounds, ascending, the last one `+Inf`.
    pub bounds: Vec<f64>,
    /// Cumulative counts per bound.
    pub cumulative: Vec<f64>,
    /// `_sum`.
    pub sum: f64,
    /// `_count`.
    pub count: f64,
}

/// The state of one server at one scrape, in engine-neutral terms.
/// `None` means the engine does not expose that quantity.
#[derive(Debug, Clone, Default)]
pub struct ServerSample {
    /// Detected engine.
    pub engine: Engine,
    /// Requests in the running batch (gauge).
    pub running: Option<f64>,
    /// Requests queued (gauge).
    pub waiting: Option<f64>,
    /// KV-cache usage, 0–1 (gauge).
    pub kv_cache_usage: Option<f64>,
    /// Prompt tokens processed (counter).
    pub prompt_tokens: Option<f64>,
    /// Generated tokens (counter).
    pub generation_tokens: Option<f64>,
    /// Requests finished successfully (counter).
    pub requests_ok: Option<f64>,
    /// Requests failed or aborted (counter).
    pub requests_failed: Option<f64>,
    /// Preemptions (counter).
    pub preemptions: Option<f64>,
    /// Prefix-cache lookups, in tokens (counter).
    pub prefix_queries: Option<f64>,
    /// Prefix-cache hits, in tokens (counter).
    pub prefix_hits: Option<f64>,
    /// The engine's own prefix-cache hit-rate gauge, when it has no counters.
    pub prefix_hit_rate_gauge: Option<f64>,
    /// Time to first token (s).
    pub ttft: Option<Buckets>,
    /// Inter-token latency (s).
    pub itl: Option<Buckets>,
    /// End-to-end request latency (s).
    pub e2e: Option<Buckets>,
    /// Queue time (s).
    pub queue: Option<Buckets>,
    /// Mean GPU utilisation, 0–1.
    pub gpu_util: Option<f64>,
    /// GPU memory used (bytes, all GPUs).
    pub gpu_mem_used: Option<f64>,
    /// GPU memory total (bytes, all GPUs).
    pub gpu_mem_total: Option<f64>,
    /// Models loaded (Ollama) or served.
    pub models: Vec<String>,
    /// Number of models loaded in memory (Ollama).
    pub loaded_models: Option<f64>,
    /// Number of models installed (Ollama `/api/tags`).
    pub installed_models: Option<f64>,
    /// VRAM held by loaded models (bytes, Ollama).
    pub model_vram: Option<f64>,
}

/// Detects the engine from the metric names present.
pub fn detect(exp: &Exposition) -> Engine {
    let has = |p: &str| exp.families.iter().any(|f| f.name.starts_with(p));
    if has("vllm:") {
        Engine::Vllm
    } else if has("sglang:") {
        Engine::Sglang
    } else if has("llamacpp:") {
        Engine::Llamacpp
    } else if has("tgi_") {
        Engine::Tgi
    } else {
        Engine::Unknown
    }
}

/// Maps a parsed exposition into a [`ServerSample`].
pub fn map(exp: &Exposition) -> ServerSample {
    let engine = detect(exp);
    let mut s = match engine {
        Engine::Vllm => map_vllm(exp),
        Engine::Tgi => map_tgi(exp),
        Engine::Llamacpp => map_llamacpp(exp),
        Engine::Sglang => map_sglang(exp),
        Engine::Ollama | Engine::Unknown => ServerSample::default(),
    };
    s.engine = engine;
    map_dcgm(exp, &mut s);
    s
}

fn first_some(exp: &Exposition, names: &[&str]) -> Option<f64> {
    names.iter().find_map(|n| exp.sum(n))
}

fn map_vllm(e: &Exposition) -> ServerSample {
    let reason_sum = |failed: bool| {
        let mut it = e.series("vllm:request_success_total").peekable();
        it.peek()?;
        Some(
            it.filter(|s| matches!(s.label("finished_reason"), Some("abort" | "error")) == failed)
                .map(|s| s.value)
                .sum(),
        )
    };
    ServerSample {
        running: e.sum("vllm:num_requests_running"),
        waiting: e.sum("vllm:num_requests_waiting"),
        kv_cache_usage: first_some(
            e,
            &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
        ),
        prompt_tokens: e.sum("vllm:prompt_tokens_total"),
        generation_tokens: e.sum("vllm:generation_tokens_total"),
        requests_ok: reason_sum(false),
        requests_failed: reason_sum(true),
        preemptions: e.sum("vllm:num_preemptions_total"),
        prefix_queries: e.sum("vllm:prefix_cache_queries_total"),
        prefix_hits: e.sum("vllm:prefix_cache_hits_total"),
        ttft: histogram(e, "vllm:time_to_first_token_seconds"),
        itl: histogram(e, "vllm:inter_token_latency_seconds")
            .or_else(|| histogram(e, "vllm:time_per_output_token_seconds")),
        e2e: histogram(e, "vllm:e2e_request_latency_seconds"),
        queue: histogram(e, "vllm:request_queue_time_seconds"),
        ..ServerSample::default()
    }
}

fn map_tgi(e: &Exposition) -> ServerSample {
    ServerSample {
        running: e.sum("tgi_batch_current_size"),
        waiting: e.sum("tgi_queue_size"),
        prompt_tokens: e.sum("tgi_request_input_length_sum"),
        generation_tokens: e.sum("tgi_request_generated_tokens_sum"),
        requests_ok: e.sum("tgi_request_success"),
        requests_failed: e.sum("tgi_request_failure").or(Some(0.0)),
        itl: histogram(e, "tgi_request_mean_time_per_token_duration"),
        e2e: histogram(e, "tgi_request_duration"),
        queue: histogram(e, "tgi_request_queue_duration"),
        ..ServerSample::default()
    }
}

fn map_llamacpp(e: &Exposition) -> ServerSample {
    let processed = e.sum("llamacpp:prompt_tokens_total");
    let cached = e.sum("llamacpp:prompt_tokens_cached_total");
    ServerSample {
        running: e.sum("llamacpp:requests_processing"),
        waiting: e.sum("llamacpp:requests_deferred"),
        kv_cache_usage: e.sum("llamacpp:kv_cache_usage_ratio"),
        prompt_tokens: processed,
        generation_tokens: e.sum("llamacpp:tokens_predicted_total"),
        prefix_queries: cached.and_then(|c| processed.map(|p| p + c)),
        prefix_hits: cached,
        ..ServerSample::default()
    }
}

fn map_sglang(e: &Exposition) -> ServerSample {
    let has_hits = e.sum("sglang:cached_tokens_total").is_some();
    ServerSample {
        running: e.sum("sglang:num_running_reqs"),
        waiting: e.sum("sglang:num_queue_reqs"),
        kv_cache_usage: e.sum("sglang:token_usage"),
        prompt_tokens: e.sum("sglang:prompt_tokens_total"),
        generation_tokens: e.sum("sglang:generation_tokens_total"),
        requests_ok: e.sum("sglang:num_requests_total"),
        requests_failed: e.sum("sglang:num_aborted_requests_total"),
        prefix_queries: if has_hits {
            e.sum("sglang:prompt_tokens_total")
        } else {
            None
        },
        prefix_hits: e.sum("sglang:cached_tokens_total"),
        prefix_hit_rate_gauge: e.sum("sglang:cache_hit_rate"),
        ttft: histogram(e, "sglang:time_to_first_token_seconds"),
        itl: histogram(e, "sglang:inter_token_latency_seconds"),
        e2e: histogram(e, "sglang:e2e_request_latency_seconds"),
        queue: histogram(e, "sglang:queue_time_seconds"),
        ..ServerSample::default()
    }
}

/// NVIDIA dcgm-exporter names: utilisation in percent, framebuffer in MiB.
fn map_dcgm(e: &Exposition, s: &mut ServerSample) {
    let util: Vec<f64> = e.series("DCGM_FI_DEV_GPU_UTIL").map(|x| x.value).collect();
    if !util.is_empty() {
        s.gpu_util = Some(util.iter().sum::<f64>() / util.len() as f64 / 100.0);
    }
    const MIB: f64 = 1024.0 * 1024.0;
    let used = e.sum("DCGM_FI_DEV_FB_USED");
    let free = e.sum("DCGM_FI_DEV_FB_FREE");
    s.gpu_mem_used = used.map(|u| u * MIB);
    s.gpu_mem_total = used.zip(free).map(|(u, f)| (u + f) * MIB);
}

/// The histogram family `name`, summed across label sets by `le`.
pub fn histogram(e: &Exposition, name: &str) -> Option<Buckets> {
    let fam = e.family(name)?;
    if fam.kind != MetricKind::Histogram {
        return None;
    }
    let bucket = format!("{name}_bucket");
    let mut pairs: Vec<(f64, f64)> = Vec::new();
    for s in fam.samples.iter().filter(|s| s.name == bucket) {
        let Some(le) = s.label("le").and_then(parse_le) else {
            continue;
        };
        match pairs.iter_mut().find(|(b, _)| *b == le) {
            Some(p) => p.1 += s.value,
            None => pairs.push((le, s.value)),
        }
    }
    if pairs.is_empty() {
        return None;
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(Buckets {
        bounds: pairs.iter().map(|p| p.0).collect(),
        cumulative: pairs.iter().map(|p| p.1).collect(),
        sum: e.sum(&format!("{name}_sum")).unwrap_or(0.0),
        count: e.sum(&format!("{name}_count")).unwrap_or(0.0),
    })
}

fn parse_le(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        _ => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::prom::parse;

    fn fixture(name: &str) -> ServerSample {
        let path = format!(
            "{}/tests/fixtures/metrics/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        map(&parse(&text).unwrap())
    }

    #[test]
    fn vllm_v1_names() {
        let s = fixture("vllm_v1.prom");
        assert_eq!(s.engine, Engine::Vllm);
        assert_eq!(s.running, Some(12.0));
        assert_eq!(s.kv_cache_usage, Some(0.43359375));
        assert_eq!(s.prefix_queries, Some(208324.0));
        assert_eq!(s.prefix_hits, Some(47104.0));
        assert_eq!(s.requests_ok, Some(240.0));
        assert_eq!(s.requests_failed, Some(0.0));
        let ttft = s.ttft.unwrap();
        assert_eq!(ttft.bounds.len(), 23);
        assert_eq!(ttft.cumulative[7], 75.0); // le=0.1
        assert_eq!(*ttft.cumulative.last().unwrap(), ttft.count);
        assert!(s.itl.is_some() && s.e2e.is_some() && s.queue.is_some());
    }

    #[test]
    fn vllm_v0_old_names() {
        let s = fixture("vllm_v0_old.prom");
        assert_eq!(s.engine, Engine::Vllm);
        assert_eq!(s.kv_cache_usage, Some(0.2671875));
        assert_eq!(s.requests_ok, Some(96.0));
        assert!(s.itl.is_some(), "time_per_output_token_seconds maps to ITL");
        assert!(s.prefix_queries.is_none());
    }

    #[test]
    fn tgi_names() {
        let s = fixture("tgi.prom");
        assert_eq!(s.engine, Engine::Tgi);
        assert_eq!((s.running, s.waiting), (Some(6.0), Some(1.0)));
        assert_eq!(s.generation_tokens, Some(22619.0));
        assert_eq!(s.prompt_tokens, Some(130487.0));
        assert_eq!((s.requests_ok, s.requests_failed), (Some(150.0), Some(3.0)));
        assert_eq!(s.e2e.unwrap().count, 150.0);
        assert!(s.ttft.is_none());
    }

    #[test]
    fn llamacpp_names_current_and_legacy() {
        let s = fixture("llamacpp.prom");
        assert_eq!(s.engine, Engine::Llamacpp);
        assert_eq!((s.running, s.waiting), (Some(3.0), Some(1.0)));
        assert_eq!(s.prefix_hits, Some(17022.0));
        assert_eq!(s.prefix_queries, Some(48213.0 + 17022.0));
        assert!(s.kv_cache_usage.is_none());
        let l = fixture("llamacpp_legacy.prom");
        assert_eq!(l.kv_cache_usage, Some(0.34082));
        assert_eq!(l.generation_tokens, Some(22694.0));
    }

    #[test]
    fn sglang_names() {
        let s = fixture("sglang.prom");
        assert_eq!(s.engine, Engine::Sglang);
        assert_eq!((s.running, s.waiting), (Some(9.0), Some(2.0)));
        assert_eq!(s.kv_cache_usage, Some(0.18));
        assert_eq!(s.prefix_hits, Some(38912.0));
        assert_eq!(s.prefix_queries, Some(152828.0));
        assert_eq!(s.ttft.unwrap().count, 180.0);
        assert_eq!(s.queue.unwrap().count, 180.0);
    }

    #[test]
    fn dcgm_gpu_metrics() {
        let s = fixture("dcgm.prom");
        assert_eq!(s.engine, Engine::Unknown);
        assert_eq!(s.gpu_util, Some(0.5)); // (62 + 38) / 2 %
        assert_eq!(s.gpu_mem_used, Some((30000.0 + 10000.0) * 1024.0 * 1024.0));
        assert_eq!(
            s.gpu_mem_total,
            Some((30000.0 + 10000.0 + 10960.0 + 30960.0) * 1024.0 * 1024.0)
        );
    }
}
