//! A local NVIDIA GPU through `nvidia-smi`, for servers on this machine whose
//! `/metrics` has no DCGM series (`throtl monitor --local-gpu`).

use std::process::Command;

use super::ServerSample;

/// One reading summed (memory) or averaged (utilisation) over all GPUs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuReading {
    /// Mean utilisation, 0–1.
    pub util: f64,
    /// Memory used (bytes).
    pub mem_used: f64,
    /// Memory total (bytes).
    pub mem_total: f64,
}

impl GpuReading {
    /// Fills the GPU fields of `s` that its own metrics left empty.
    pub fn fill(&self, s: &mut ServerSample) {
        if s.gpu_util.is_none() && s.gpu_mem_used.is_none() {
            s.gpu_util = Some(self.util);
            s.gpu_mem_used = Some(self.mem_used);
            s.gpu_mem_total = Some(self.mem_total);
        }
    }
}

/// Parses `nvidia-smi --query-gpu=utilization.gpu,memory.used,memory.total
/// --format=csv,noheader,nounits` (percent, MiB, MiB; one line per GPU).
pub fn parse_nvidia_smi(text: &str) -> Option<GpuReading> {
    const MIB: f64 = 1024.0 * 1024.0;
    let mut n = 0.0;
    let (mut util, mut used, mut total) = (0.0, 0.0, 0.0);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<f64> = line
            .split(',')
            .map(|x| x.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .ok()?;
        let [u, m, t] = f.as_slice() else { return None };
        util += u;
        used += m;
        total += t;
        n += 1.0;
    }
    (n > 0.0).then(|| GpuReading {
        util: util / n / 100.0,
        mem_used: used * MIB,
        mem_total: total * MIB,
    })
}

/// Reads the local GPUs; `None` when `nvidia-smi` is missing or fails.
pub fn query_local() -> Option<GpuReading> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=utilization.gpu,memory.used,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    out.status.success().then_some(())?;
    parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_two_gpus_and_rejects_garbage() {
        let r = parse_nvidia_smi("62, 30000, 40960\n38, 10000, 40960\n").unwrap();
        assert_eq!(r.util, 0.5);
        assert_eq!(r.mem_used, 40000.0 * 1024.0 * 1024.0);
        assert_eq!(r.mem_total, 81920.0 * 1024.0 * 1024.0);
        assert!(parse_nvidia_smi("[N/A], 1, 2\n").is_none());
        assert!(parse_nvidia_smi("").is_none());
    }

    #[test]
    fn fills_only_missing_gpu_fields() {
        let r = GpuReading {
            util: 0.5,
            mem_used: 1.0,
            mem_total: 2.0,
        };
        let mut s = ServerSample::default();
        r.fill(&mut s);
        assert_eq!(s.gpu_util, Some(0.5));
        let mut dcgm = ServerSample {
            gpu_util: Some(0.9),
            ..ServerSample::default()
        };
        r.fill(&mut dcgm);
        assert_eq!(dcgm.gpu_util, Some(0.9));
    }
}
