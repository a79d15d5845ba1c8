//! Live measurement: launch the engine through the template, wait until it
//! is healthy, measure the objective with short benches through
//! [`crate::bench`] (each stored in the history database under the tune's
//! group), stop the engine.
//!
//! - **capacity**: the highest open-loop rate whose probe meets every SLO
//!   (and fails ≤ 1 % of requests). Without a hint the first probe is at
//!   `start_rate` and the rate doubles until a probe misses (or halves until
//!   one meets); with a hint (the confirm phase) it starts there and steps
//!   by ×1.25. Then it bisects between the highest met and lowest missed
//!   rate until they are within `precision` (5 %). The capacity is the
//!   highest met rate.
//! - **throughput**: output tokens/s of one closed-loop run at `--concurrency`.
//! - **cost**: one open-loop run at `--rate`; USD per 1M good output tokens =
//!   `gpu_cost_per_hour × gpus / 3600 / (output tok/s × SLO attainment) × 1e6`,
//!   where *good* tokens are approximated as output tokens × the share of
//!   requests meeting every SLO (all of them without `--slo`).

use std::path::PathBuf;

use crate::bench;
use crate::config::BenchConfig;
use crate::engine::arrival::{ArrivalConfig, ArrivalProcess};
use crate::engine::{Controls, LoadShape};
use crate::report::RunReport;

use super::harness::{free_port, EngineGuard};
use super::report::{Measurement, Outcome, Probe, Signals};
use super::{EvalRequest, Evaluation, Evaluator, Objective, TuneConfig};

/// Error rate above which a capacity probe counts as missed.
pub const MAX_PROBE_ERROR_RATE: f64 = 0.01;

/// Launches and measures real engines.
pub struct LiveEvaluator<'a> {
    cfg: &'a TuneConfig,
    controls: Controls,
}

impl<'a> LiveEvaluator<'a> {
    /// An evaluator for `cfg`; `controls` (Ctrl-C) stop it.
    pub fn new(cfg: &'a TuneConfig, controls: Controls) -> Self {
        Self { cfg, controls }
    }
}

impl Evaluator for LiveEvaluator<'_> {
    async fn evaluate(&mut self, req: &EvalRequest) -> Evaluation {
        let log = self.cfg.log_dir.join(format!("{}.log", req.label));
        let port = match free_port() {
            Ok(p) => p,
            Err(e) => return failed(None, None, None, format!("cannot pick a free port: {e}")),
        };
        let command = self.cfg.template.render(&req.candidate, port);
        let (outcome, pgid) = match EngineGuard::launch(&command, &log, self.cfg.stop_grace) {
            Ok(mut engine) => {
                let outcome = self.trial(&mut engine, port, req).await;
                let pgid = engine.pgid();
                // Stopped here on success, failure and timeout; on Ctrl-C
                // (this future dropped) the guard's Drop does it.
                engine.stop();
                (outcome, Some(pgid))
            }
            Err(e) => (
                Outcome::Infeasible {
                    reason: e.to_string(),
                },
                None,
            ),
        };
        Evaluation {
            outcome,
            command: Some(command),
            pgid,
            log: Some(log),
        }
    }
}

impl LiveEvaluator<'_> {
    /// Health wait + measurement under `--trial-timeout`, cut short by Ctrl-C.
    async fn trial(&self, engine: &mut EngineGuard, port: u16, req: &EvalRequest) -> Outcome {
        let url = format!("http://127.0.0.1:{port}");
        let trial = Controls {
            soft: self.controls.soft.child_token(),
            hard: self.controls.hard.child_token(),
        };
        let measured = tokio::time::timeout(self.cfg.trial_timeout, async {
            let paths = &self.cfg.health_paths;
            if let Err(e) = engine
                .wait_healthy(&url, paths, self.cfg.startup_timeout)
                .await
            {
                return Outcome::Infeasible {
                    reason: e.to_string(),
                };
            }
            match measure(self.cfg, &url, req, &trial).await {
                Ok(m) => Outcome::Measured(m),
                Err(reason) => Outcome::Failed { reason },
            }
        });
        let outcome = tokio::select! {
            r = measured => r.unwrap_or_else(|_| {
                trial.hard.cancel();
                Outcome::Failed {
                    reason: format!(
                        "trial timeout: not done after --trial-timeout {}",
                        humantime::format_duration(self.cfg.trial_timeout)
                    ),
                }
            }),
            () = self.controls.soft.cancelled() => Outcome::Failed { reason: "interrupted".into() },
        };
        match (outcome, engine.exit_reason()) {
            // The engine died under load: say so with its log line.
            (Outcome::Failed { reason }, Some(why)) => Outcome::Failed {
                reason: format!("{reason}; the engine exited: {why}"),
            },
            (o, _) => o,
        }
    }
}

fn failed(
    command: Option<String>,
    pgid: Option<i32>,
    log: Option<PathBuf>,
    reason: String,
) -> Evaluation {
    Evaluation {
        outcome: Outcome::Failed { reason },
        command,
        pgid,
        log,
    }
}

/// Measures the objective against the healthy engine at `url`.
async fn measure(
    cfg: &TuneConfig,
    url: &str,
    req: &EvalRequest,
    controls: &Controls,
) -> Result<Measurement, String> {
    let base = target(cfg, url).await?;
    match cfg.objective {
        Objective::Capacity => capacity(cfg, &base, req.hint, controls).await,
        Objective::Throughput => {
            let mut b = base.clone();
            b.workload.shape = LoadShape::Closed { think: None };
            let run = bench_once(&b, controls).await?;
            Ok(measurement(
                &run,
                run.throughput.output_tokens_per_s,
                Vec::new(),
            ))
        }
        Objective::Cost => {
            let run = bench_once(&base, controls).await?;
            let good =
                run.throughput.output_tokens_per_s * run.slo.as_ref().map_or(1.0, |s| s.attainment);
            if good <= 0.0 {
                return Err("no output token met the SLOs at the offered load: the cost per good token is unbounded".into());
            }
            let usd_h = cfg.gpu_cost_per_hour.unwrap_or(0.0) * cfg.space.gpus(&req.candidate);
            Ok(measurement(&run, usd_h / 3600.0 / good * 1e6, Vec::new()))
        }
    }
}

/// The base bench config aimed at the engine: url, protocol and model resolved.
async fn target(cfg: &TuneConfig, url: &str) -> Result<BenchConfig, String> {
    let mut b = cfg.bench.clone();
    b.url = url.to_owned();
    let headers = b.api_options.headers.clone();
    let probed = match (cfg.api, &cfg.model) {
        (Some(_), Some(_)) => None,
        _ => Some(
            crate::probe::probe(url, &headers)
                .await
                .map_err(|e| format!("probing the engine failed: {e}"))?,
        ),
    };
    b.api = cfg
        .api
        .or(probed.as_ref().map(|p| p.api_kind()))
        .unwrap_or(b.api);
    b.model = match (&cfg.model, &probed) {
        (Some(m), _) => m.clone(),
        (None, Some(p)) => p.first_model().map_err(|e| e.to_string())?,
        (None, None) => b.model,
    };
    Ok(b)
}

async fn bench_once(b: &BenchConfig, controls: &Controls) -> Result<RunReport, String> {
    if controls.soft.is_cancelled() {
        return Err("interrupted".into());
    }
    bench::run_full(b, controls.clone())
        .await
        .map(|r| r.report)
        .map_err(|e| format!("bench failed: {e}"))
}

fn open_loop(base: &BenchConfig, rate: f64) -> BenchConfig {
    let mut b = base.clone();
    let (process, max_concurrency) = match base.workload.shape {
        LoadShape::Open {
            arrivals,
            max_concurrency,
        } => (arrivals.process, max_concurrency),
        LoadShape::Closed { .. } => (ArrivalProcess::Poisson, None),
    };
    b.workload.shape = LoadShape::Open {
        arrivals: ArrivalConfig {
            rate,
            process,
            seed: base.seed,
            ramp_up: base.workload.ramp_up,
        },
        max_concurrency,
    };
    b
}

fn probe_met(run: &RunReport) -> bool {
    run.slo.as_ref().is_some_and(|s| s.met) && run.error_rate() <= MAX_PROBE_ERROR_RATE
}

/// Doubling (or ×1.25 from a hint) then bisection; see the module docs.
async fn capacity(
    cfg: &TuneConfig,
    base: &BenchConfig,
    hint: Option<f64>,
    controls: &Controls,
) -> Result<Measurement, String> {
    let c = cfg.capacity;
    let growth = if hint.is_some() { 1.25 } else { 2.0 };
    let mut rate = hint.filter(|h| *h > 0.0).unwrap_or(c.start_rate);
    let (mut lo, mut hi): (Option<(f64, RunReport)>, Option<f64>) = (None, None);
    let mut probes = Vec::new();
    let min_rate = c.start_rate / 64.0;
    for _ in 0..c.max_probes {
        let run = bench_once(&open_loop(base, rate), controls).await?;
        let met = probe_met(&run);
        probes.push(Probe {
            rate,
            met,
            attainment: run.slo.as_ref().map(|s| s.attainment),
            run_id: run.run_id.clone(),
        });
        if met {
            lo = Some((rate, run));
        } else {
            hi = Some(rate);
        }
        rate = match (&lo, hi) {
            (Some((l, _)), Some(h)) if h <= l * (1.0 + c.precision) => break,
            (Some((l, _)), Some(h)) => (l + h) / 2.0,
            (Some((l, _)), None) => l * growth,
            (None, Some(h)) if h / growth < min_rate => break,
            (None, Some(h)) => h / growth,
            (None, None) => break,
        };
    }
    match lo {
        Some((l, run)) => Ok(measurement(&run, l, probes)),
        None => Ok(Measurement {
            value: 0.0,
            output_tokens_per_s: 0.0,
            ttft_p95_ms: 0.0,
            slo_attainment: probes.last().and_then(|p| p.attainment),
            run_ids: probes.iter().map(|p| p.run_id.clone()).collect(),
            probes,
            signals: None,
        }),
    }
}

fn measurement(run: &RunReport, value: f64, probes: Vec<Probe>) -> Measurement {
    let mut run_ids: Vec<String> = probes.iter().map(|p| p.run_id.clone()).collect();
    if run_ids.is_empty() {
        run_ids.push(run.run_id.clone());
    }
    Measurement {
        value,
        output_tokens_per_s: run.throughput.output_tokens_per_s,
        ttft_p95_ms: run.latency_ms.ttft.p95,
        slo_attainment: run.slo.as_ref().map(|s| s.attainment),
        probes,
        signals: signals(run),
        run_ids,
    }
}

/// Queue, preemption and KV-cache figures from the run's `/metrics` series.
pub fn signals(run: &RunReport) -> Option<Signals> {
    let pts = &run.server_metrics.as_ref()?.points;
    if pts.is_empty() {
        return None;
    }
    let avg = |f: &dyn Fn(&crate::scrape::derive::Derived) -> Option<f64>| {
        let v: Vec<f64> = pts.iter().filter_map(|p| f(&p.metrics)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    Some(Signals {
        waiting_share: avg(&|m| m.waiting.map(|w| f64::from(u8::from(w >= 0.5)))),
        waiting_mean: avg(&|m| m.waiting),
        preemptions_per_s: avg(&|m| m.preemptions_per_s),
        kv_usage_mean: avg(&|m| m.kv_cache_usage),
        running_mean: avg(&|m| m.running),
    })
}
