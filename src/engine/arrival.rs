//! Arrival processes for open-loop load: when each request is due.
//!
//! Gaps between arrivals are drawn from a seeded generator, so a schedule is
//! repeatable. `constant` spaces arrivals exactly `1/rate` apart; `poisson`
//! draws exponential gaps (CV 1); `gamma` draws gamma gaps with mean
//! `1/rate` and a chosen coefficient of variation (CV > 1 is burstier than
//! Poisson, CV < 1 more regular). A replayed trace (`--trace`) brings its
//! own offsets instead: [`Schedule`] serves either to the open loop.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp, Gamma};
use serde::Serialize;

/// The shape of the gaps between arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ArrivalProcess {
    /// Evenly spaced arrivals.
    Constant,
    /// Exponential gaps (a Poisson process).
    Poisson,
    /// Gamma gaps with this coefficient of variation (stddev / mean).
    Gamma {
        /// Coefficient of variation of the gaps (`--burstiness`).
        cv: f64,
    },
    /// The arrival times of a replayed trace (`--trace`); `rate` is then the
    /// trace's mean rate, for planning and reports only.
    Trace,
}

/// A fully specified arrival schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ArrivalConfig {
    /// Target rate in requests per second, once ramped up.
    pub rate: f64,
    /// Gap distribution.
    pub process: ArrivalProcess,
    /// Seed of the gap generator.
    pub seed: u64,
    /// The rate grows linearly from 0 to `rate` over this long.
    #[serde(serialize_with = "crate::engine::ser_secs")]
    pub ramp_up: Duration,
}

enum Gaps {
    Constant(f64),
    Exp(Exp<f64>),
    Gamma(Gamma<f64>),
}

/// An endless, seeded sequence of arrival offsets from the start of the run.
pub struct Arrivals {
    rng: SmallRng,
    gaps: Gaps,
    /// Cumulative arrival time at full rate ("operational time"), seconds.
    full_rate_time: f64,
    ramp_s: f64,
}

/// A rate or burstiness that no process can have.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ArrivalError(pub String);

impl Arrivals {
    /// A generator for `cfg`; fails on a non-positive rate or CV.
    pub fn new(cfg: &ArrivalConfig) -> Result<Self, ArrivalError> {
        if !(cfg.rate.is_finite() && cfg.rate > 0.0) {
            return Err(ArrivalError(format!(
                "--rate '{}' must be a positive number of requests per second",
                cfg.rate
            )));
        }
        let mean = 1.0 / cfg.rate;
        let gaps = match cfg.process {
            ArrivalProcess::Constant => Gaps::Constant(mean),
            ArrivalProcess::Poisson => Gaps::Exp(exp(cfg.rate)?),
            ArrivalProcess::Gamma { cv } => Gaps::Gamma(gamma(cv, mean)?),
            ArrivalProcess::Trace => {
                return Err(ArrivalError(
                    "trace arrivals come from the trace's own timestamps, not a generator".into(),
                ))
            }
        };
        Ok(Self {
            rng: SmallRng::seed_from_u64(cfg.seed),
            gaps,
            full_rate_time: 0.0,
            ramp_s: cfg.ramp_up.as_secs_f64(),
        })
    }

    /// The next gap at full rate, in seconds.
    pub fn next_gap(&mut self) -> f64 {
        match &self.gaps {
            Gaps::Constant(g) => *g,
            Gaps::Exp(d) => d.sample(&mut self.rng),
            Gaps::Gamma(d) => d.sample(&mut self.rng),
        }
    }

    /// Offset of the next arrival from the start of the run.
    pub fn next_offset(&mut self) -> Duration {
        self.full_rate_time += self.next_gap();
        Duration::from_secs_f64(ramp_time(self.full_rate_time, self.ramp_s))
    }
}

/// When each arrival of an open loop is due: drawn from a process
/// (endless), or a trace's own offsets (ends with the trace).
pub enum Schedule {
    /// A seeded arrival process.
    Drawn(Arrivals),
    /// A trace's offsets from the start of the run, in order.
    Trace {
        /// The offsets.
        offsets: Arc<[Duration]>,
        /// Index of the next one.
        next: usize,
    },
}

impl Schedule {
    /// The schedule of `cfg`; a [`ArrivalProcess::Trace`] takes `trace`.
    pub fn new(cfg: &ArrivalConfig, trace: Option<&Arc<[Duration]>>) -> Result<Self, ArrivalError> {
        match (cfg.process, trace) {
            (ArrivalProcess::Trace, Some(t)) => Ok(Schedule::Trace {
                offsets: Arc::clone(t),
                next: 0,
            }),
            (ArrivalProcess::Trace, None) => Err(ArrivalError(
                "trace arrivals need the trace's offsets".into(),
            )),
            _ => Arrivals::new(cfg).map(Schedule::Drawn),
        }
    }

    /// Offset of the next arrival from the start of the run; `None` once a
    /// trace has no more.
    pub fn next_offset(&mut self) -> Option<Duration> {
        match self {
            Schedule::Drawn(a) => Some(a.next_offset()),
            Schedule::Trace { offsets, next } => {
                let o = offsets.get(*next).copied();
                *next += 1;
                o
            }
        }
    }
}

fn exp(rate: f64) -> Result<Exp<f64>, ArrivalError> {
    Exp::new(rate).map_err(|e| ArrivalError(format!("invalid --rate '{rate}': {e}")))
}

fn gamma(cv: f64, mean: f64) -> Result<Gamma<f64>, ArrivalError> {
    if !(cv.is_finite() && cv > 0.0) {
        return Err(ArrivalError(format!(
            "--burstiness '{cv}' must be a positive coefficient of variation (1 = Poisson, 2 = bursty, 0.5 = regular)"
        )));
    }
    let shape = 1.0 / (cv * cv);
    Gamma::new(shape, mean / shape)
        .map_err(|e| ArrivalError(format!("invalid --burstiness '{cv}': {e}")))
}

/// Maps time at full rate `u` to wall time when the rate ramps linearly from
/// 0 to full over `ramp` seconds: the expected arrivals by wall time `t`,
/// `∫₀ᵗ r(x)/R dx`, is `t²/2T` during the ramp and `t − T/2` after it.
fn ramp_time(u: f64, ramp: f64) -> f64 {
    if ramp <= 0.0 {
        u
    } else if u <= ramp / 2.0 {
        (2.0 * ramp * u).sqrt()
    } else {
        u + ramp / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(process: ArrivalProcess) -> ArrivalConfig {
        ArrivalConfig {
            rate: 50.0,
            process,
            seed: 42,
            ramp_up: Duration::ZERO,
        }
    }

    fn gaps(process: ArrivalProcess, n: usize) -> Vec<f64> {
        let mut a = Arrivals::new(&cfg(process)).unwrap();
        (0..n).map(|_| a.next_gap()).collect()
    }

    fn mean_cv(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var.sqrt() / mean)
    }

    /// One-sample Kolmogorov–Smirnov statistic against `cdf`.
    fn ks(mut xs: Vec<f64>, cdf: impl Fn(f64) -> f64) -> f64 {
        xs.sort_by(f64::total_cmp);
        let n = xs.len() as f64;
        xs.iter()
            .enumerate()
            .map(|(i, &x)| {
                let f = cdf(x);
                (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn constant_gaps_are_exact() {
        let g = gaps(ArrivalProcess::Constant, 100);
        assert!(g.iter().all(|&x| (x - 0.02).abs() < 1e-12));
    }

    #[test]
    fn poisson_gaps_are_exponential() {
        let n = 20_000;
        let g = gaps(ArrivalProcess::Poisson, n);
        let (mean, cv) = mean_cv(&g);
        assert!((mean - 0.02).abs() / 0.02 < 0.03, "mean {mean}");
        assert!((cv - 1.0).abs() < 0.03, "cv {cv}");
        // KS at the 1% level: critical value 1.63/sqrt(n).
        let d = ks(g, |x| 1.0 - (-50.0 * x).exp());
        assert!(d < 1.63 / (n as f64).sqrt(), "KS D = {d}");
    }

    #[test]
    fn gamma_gaps_have_requested_mean_cv_and_skew() {
        for cv_want in [0.5, 2.0] {
            let g = gaps(ArrivalProcess::Gamma { cv: cv_want }, 40_000);
            let (mean, cv) = mean_cv(&g);
            assert!(
                (mean - 0.02).abs() / 0.02 < 0.04,
                "cv {cv_want}: mean {mean}"
            );
            assert!(
                (cv - cv_want).abs() / cv_want < 0.05,
                "cv {cv_want}: got {cv}"
            );
            // Gamma skewness is 2·CV; a normal or exponential would not match both.
            let n = g.len() as f64;
            let sd = cv * mean;
            let skew = g.iter().map(|x| ((x - mean) / sd).powi(3)).sum::<f64>() / n;
            assert!(
                (skew - 2.0 * cv_want).abs() / (2.0 * cv_want) < 0.15,
                "cv {cv_want}: skew {skew}"
            );
        }
    }

    #[test]
    fn same_seed_same_schedule_and_bad_inputs_are_rejected() {
        let mut a = Arrivals::new(&cfg(ArrivalProcess::Poisson)).unwrap();
        let mut b = Arrivals::new(&cfg(ArrivalProcess::Poisson)).unwrap();
        for _ in 0..10 {
            assert_eq!(a.next_offset(), b.next_offset());
        }
        let bad = ArrivalConfig {
            rate: 0.0,
            ..cfg(ArrivalProcess::Poisson)
        };
        assert!(Arrivals::new(&bad).err().unwrap().0.contains("--rate"));
        let bad = cfg(ArrivalProcess::Gamma { cv: -1.0 });
        assert!(Arrivals::new(&bad)
            .err()
            .unwrap()
            .0
            .contains("--burstiness"));
    }

    #[test]
    fn ramp_up_thins_early_arrivals() {
        let c = ArrivalConfig {
            rate: 100.0,
            process: ArrivalProcess::Constant,
            seed: 1,
            ramp_up: Duration::from_secs(10),
        };
        let mut a = Arrivals::new(&c).unwrap();
        let offs: Vec<f64> = (0..2000).map(|_| a.next_offset().as_secs_f64()).collect();
        let count = |lo: f64, hi: f64| offs.iter().filter(|&&t| t >= lo && t < hi).count();
        // Rate r(t) = 10·t during the ramp: 5 arrivals in [0,1), 95 in [9,10), then 100/s.
        assert!((4..=6).contains(&count(0.0, 1.0)), "{}", count(0.0, 1.0));
        assert!(
            (94..=96).contains(&count(9.0, 10.0)),
            "{}",
            count(9.0, 10.0)
        );
        assert!(
            (99..=101).contains(&count(12.0, 13.0)),
            "{}",
            count(12.0, 13.0)
        );
    }
}
