//! Hardware + model profiles: the numbers the roofline step time is built from.
//!
//! Every field is documented in `docs/simulator.md`, together with where each
//! built-in profile's numbers come from.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A model served on some hardware: sizes, bandwidth, compute and the
/// efficiencies real kernels reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Profile name, e.g. `llama3-8b-rtx4090`.
    pub name: String,
    /// Model parameters (count, not billions).
    pub params: f64,
    /// Bytes per weight (2 for FP16/BF16, 1 for FP8).
    pub bytes_per_param: f64,
    /// Transformer layers.
    pub layers: u32,
    /// Hidden size (query projection width = heads × head dim).
    pub hidden_size: u32,
    /// Key/value heads (GQA).
    pub kv_heads: u32,
    /// Dimension of one attention head.
    pub head_dim: u32,
    /// Bytes per cached K or V element (2 for FP16 KV cache).
    pub kv_bytes_per_elem: f64,
    /// GPUs the model is sharded over (tensor parallel).
    pub gpus: u32,
    /// Memory bandwidth of one GPU, GB/s.
    pub mem_bandwidth_gbps: f64,
    /// Dense FP16/BF16 tensor throughput of one GPU, TFLOP/s.
    pub tflops: f64,
    /// Memory of one GPU, GB (for DCGM-style memory metrics).
    pub gpu_memory_gb: f64,
    /// Fraction of peak bandwidth decode kernels reach (0..1].
    pub bandwidth_efficiency: f64,
    /// Fraction of peak FLOP/s prefill kernels reach (0..1].
    pub compute_efficiency: f64,
    /// Fixed cost of every engine step (scheduling, kernel launches,
    /// sampling, all-reduce latency), microseconds.
    pub step_overhead_us: f64,
    /// KV-cache blocks when `--kv-blocks` is not given.
    pub kv_blocks: u32,
    /// Default `--max-num-batched-tokens`.
    pub max_num_batched_tokens: u32,
}

/// Names of the built-in profiles, default first.
pub const BUILTIN: &[&str] = &["llama3-8b-rtx4090", "llama3-8b-h100", "llama3-70b-4xh100"];

/// A profile could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Unknown built-in name.
    #[error("unknown profile '{0}'; built-in profiles: {list}. Or pass your own with --profile-file", list = BUILTIN.join(", "))]
    Unknown(String),
    /// The file could not be read.
    #[error("cannot read profile file '{path}': {err}")]
    Read {
        /// The path.
        path: String,
        /// OS error.
        err: std::io::Error,
    },
    /// The file is not a valid profile.
    #[error("profile file '{path}' is not a valid profile: {reason}. See docs/simulator.md for the fields")]
    Parse {
        /// The path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl Profile {
    /// A built-in profile by name.
    pub fn builtin(name: &str) -> Result<Self, ProfileError> {
        match name {
            "llama3-8b-rtx4090" => Ok(llama3_8b(
                "llama3-8b-rtx4090",
                1008.0,
                165.2,
                24.0,
                0.85,
                0.80,
                1500.0,
                1900,
                2048,
            )),
            "llama3-8b-h100" => Ok(llama3_8b(
                "llama3-8b-h100",
                3350.0,
                989.0,
                80.0,
                0.80,
                0.50,
                1500.0,
                25_000,
                8192,
            )),
            "llama3-70b-4xh100" => Ok(llama3_70b_4xh100()),
            other => Err(ProfileError::Unknown(other.to_owned())),
        }
    }

    /// Loads a profile from a JSON file (fields as in [`Profile`]).
    pub fn from_file(path: &Path) -> Result<Self, ProfileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ProfileError::Read {
            path: shown.clone(),
            err,
        })?;
        let p: Profile = serde_json::from_str(&text).map_err(|e| ProfileError::Parse {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        p.validate().map_err(|reason| ProfileError::Parse {
            path: shown,
            reason,
        })?;
        Ok(p)
    }

    /// Checks that every number is usable.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("params", self.params),
            ("bytes_per_param", self.bytes_per_param),
            ("kv_bytes_per_elem", self.kv_bytes_per_elem),
            ("mem_bandwidth_gbps", self.mem_bandwidth_gbps),
            ("tflops", self.tflops),
            ("gpu_memory_gb", self.gpu_memory_gb),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("'{name}' must be a positive number, got {v}"));
            }
        }
        for (name, v) in [
            ("bandwidth_efficiency", self.bandwidth_efficiency),
            ("compute_efficiency", self.compute_efficiency),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(format!("'{name}' must be in (0, 1], got {v}"));
            }
        }
        if !(self.step_overhead_us.is_finite() && self.step_overhead_us >= 0.0) {
            return Err(format!(
                "'step_overhead_us' must be >= 0, got {}",
                self.step_overhead_us
            ));
        }
        let ints = [
            ("layers", self.layers),
            ("hidden_size", self.hidden_size),
            ("kv_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("gpus", self.gpus),
            ("kv_blocks", self.kv_blocks),
            ("max_num_batched_tokens", self.max_num_batched_tokens),
        ];
        for (name, v) in ints {
            if v == 0 {
                return Err(format!("'{name}' must be at least 1"));
            }
        }
        Ok(())
    }

    /// Bytes of weights read by every forward pass.
    pub fn weight_bytes(&self) -> f64 {
        self.params * self.bytes_per_param
    }

    /// KV-cache bytes of one token (K and V, all layers).
    pub fn kv_bytes_per_token(&self) -> f64 {
        2.0 * f64::from(self.layers)
            * f64::from(self.kv_heads)
            * f64::from(self.head_dim)
            * self.kv_bytes_per_elem
    }

    /// Effective bytes/s of the whole (sharded) model.
    pub fn effective_bandwidth(&self) -> f64 {
        self.mem_bandwidth_gbps * 1e9 * f64::from(self.gpus) * self.bandwidth_efficiency
    }

    /// Effective FLOP/s of the whole (sharded) model.
    pub fn effective_flops(&self) -> f64 {
        self.tflops * 1e12 * f64::from(self.gpus) * self.compute_efficiency
    }
}

#[allow(clippy::too_many_arguments)]
fn llama3_8b(
    name: &str,
    bw: f64,
    tflops: f64,
    mem: f64,
    bw_eff: f64,
    fl_eff: f64,
    overhead: f64,
    blocks: u32,
    mnbt: u32,
) -> Profile {
    Profile {
        name: name.into(),
        params: 8.03e9,
        bytes_per_param: 2.0,
        layers: 32,
        hidden_size: 4096,
        kv_heads: 8,
        head_dim: 128,
        kv_bytes_per_elem: 2.0,
        gpus: 1,
        mem_bandwidth_gbps: bw,
        tflops,
        gpu_memory_gb: mem,
        bandwidth_efficiency: bw_eff,
        compute_efficiency: fl_eff,
        step_overhead_us: overhead,
        kv_blocks: blocks,
        max_num_batched_tokens: mnbt,
    }
}

fn llama3_70b_4xh100() -> Profile {
    Profile {
        name: "llama3-70b-4xh100".into(),
        params: 70.6e9,
        bytes_per_param: 2.0,
        layers: 80,
        hidden_size: 8192,
        kv_heads: 8,
        head_dim: 128,
        kv_bytes_per_elem: 2.0,
        gpus: 4,
        mem_bandwidth_gbps: 3350.0,
        tflops: 989.0,
        gpu_memory_gb: 80.0,
        bandwidth_efficiency: 0.65,
        compute_efficiency: 0.45,
        step_overhead_us: 3000.0,
        kv_blocks: 25_000,
        max_num_batched_tokens: 8192,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_valid_and_unknown_is_named() {
        for n in BUILTIN {
            let p = Profile::builtin(n).unwrap();
            p.validate().unwrap();
            assert_eq!(&p.name, n);
        }
        let e = Profile::builtin("gpt5-on-a-toaster")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("llama3-8b-h100") && e.contains("--profile-file"),
            "{e}"
        );
    }

    #[test]
    fn llama3_8b_kv_bytes_per_token_is_128_kib() {
        let p = Profile::builtin("llama3-8b-h100").unwrap();
        assert_eq!(p.kv_bytes_per_token(), 131_072.0);
    }

    #[test]
    fn profile_file_roundtrips_and_rejects_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let mut p = Profile::builtin("llama3-8b-rtx4090").unwrap();
        p.name = "mine".into();
        std::fs::write(&path, serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(Profile::from_file(&path).unwrap(), p);
        p.bandwidth_efficiency = 1.5;
        std::fs::write(&path, serde_json::to_string(&p).unwrap()).unwrap();
        let e = Profile::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("bandwidth_efficiency"), "{e}");
        std::fs::write(&path, "{\"name\": 1}").unwrap();
        assert!(Profile::from_file(&path).is_err());
    }
}
