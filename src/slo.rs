//! Service-level objectives (`--slo ttft=500ms --slo tpot=50ms`) and goodput.
//!
//! Every objective is judged on one per-request value, the same for goodput
//! and for the percentile verdict: TTFT, TPOT, E2E, and for ITL the request's
//! *mean* inter-token latency ([`RequestRecord::itl_mean`], as vLLM's and
//! GuideLLM's per-request goodput use a per-request mean). A request is *good*
//! when it succeeded and each of its values is at or under its threshold.
//! Goodput is good requests per second of the measured window. A run *meets*
//! its SLOs when, for every objective, the chosen percentile
//! (`--slo-percentile`, default 95) of the per-request values of successful
//! requests is at or under the threshold.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::record::RequestRecord;
use crate::stats::{LatencyHistogram, Stats};

/// A metric an objective can bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SloMetric {
    /// Time to first token.
    Ttft,
    /// Time per output token.
    Tpot,
    /// Inter-token latency, per request: the mean of its gaps.
    Itl,
    /// End-to-end latency.
    E2e,
}

/// One objective: `metric` at most `threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Slo {
    /// The bounded metric.
    pub metric: SloMetric,
    /// Its upper bound.
    #[serde(serialize_with = "ser_ms")]
    pub threshold: Duration,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl Slo {
    /// Parses `ttft=500ms`, `tpot=50ms`, `itl=80ms` or `e2e=10s`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, value) = s.split_once('=').ok_or_else(|| {
            format!("--slo '{s}': write METRIC=DURATION, e.g. ttft=500ms or tpot=50ms")
        })?;
        let metric = match name.trim() {
            "ttft" => SloMetric::Ttft,
            "tpot" => SloMetric::Tpot,
            "itl" => SloMetric::Itl,
            "e2e" => SloMetric::E2e,
            other => {
                return Err(format!(
                    "--slo '{s}': unknown metric '{other}'; use ttft, tpot, itl or e2e"
                ))
            }
        };
        let threshold = humantime::parse_duration(value.trim()).map_err(|e| {
            format!("--slo '{s}': '{value}' is not a duration ({e}); write e.g. 500ms")
        })?;
        Ok(Slo { metric, threshold })
    }

    /// The request's value of this metric, if it has one.
    pub fn value(&self, r: &RequestRecord) -> Option<Duration> {
        match self.metric {
            SloMetric::Ttft => r.ttft(),
            SloMetric::Tpot => r.tpot(),
            SloMetric::Itl => r.itl_mean(),
            SloMetric::E2e => Some(r.e2e()),
        }
    }
}

/// True when `r` succeeded and meets every objective (a metric the request
/// lacks, like TPOT of a one-token answer, does not fail it).
pub fn is_good(slos: &[Slo], r: &RequestRecord) -> bool {
    r.is_ok()
        && slos
            .iter()
            .all(|s| s.value(r).is_none_or(|v| v <= s.threshold))
}

/// How one objective fared.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SloObjectiveReport {
    /// The metric.
    pub metric: SloMetric,
    /// The bound (ms).
    pub threshold_ms: f64,
    /// The metric at the chosen percentile (ms).
    pub observed_ms: f64,
    /// observed ≤ threshold.
    pub met: bool,
}

/// The SLO outcome of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SloReport {
    /// Percentile the objectives are judged at.
    pub percentile: f64,
    /// Each objective.
    pub objectives: Vec<SloObjectiveReport>,
    /// Every objective was met at the percentile.
    pub met: bool,
    /// Successful requests meeting every objective.
    pub good_requests: u64,
    /// good / (ok + failed) of measured requests.
    pub attainment: f64,
    /// Good requests per second of the measured window.
    pub goodput_requests_per_s: f64,
}

/// The histogram of per-request values of `metric` (the values [`Slo::value`] judges).
fn histogram(metric: SloMetric, s: &Stats) -> &LatencyHistogram {
    match metric {
        SloMetric::Ttft => &s.ttft,
        SloMetric::Tpot => &s.tpot,
        SloMetric::Itl => &s.itl_request,
        SloMetric::E2e => &s.e2e,
    }
}

/// Judges `slos` at `percentile` over the statistics of a run whose measured
/// window lasted `window_s` seconds. `s.good` must have been counted with the
/// same objectives (see [`Stats::slos`]).
pub fn judge(slos: &[Slo], percentile: f64, s: &Stats, window_s: f64) -> SloReport {
    let q = percentile / 100.0;
    let objectives: Vec<SloObjectiveReport> = slos
        .iter()
        .map(|o| {
            let h = histogram(o.metric, s);
            let observed_ms = if h.count() == 0 {
                f64::INFINITY
            } else {
                h.inner().value_at_quantile(q) as f64 / 1000.0
            };
            let threshold_ms = o.threshold.as_secs_f64() * 1000.0;
            SloObjectiveReport {
                metric: o.metric,
                threshold_ms,
                observed_ms,
                met: observed_ms <= threshold_ms,
            }
        })
        .collect();
    let total = s.ok + s.failed();
    SloReport {
        percentile,
        met: objectives.iter().all(|o| o.met) && s.ok > 0,
        objectives,
        good_requests: s.good,
        attainment: if total > 0 {
            s.good as f64 / total as f64
        } else {
            0.0
        },
        goodput_requests_per_s: if window_s > 0.0 {
            s.good as f64 / window_s
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn slos_parse_and_judge_requests() {
        assert_eq!(
            Slo::parse("ttft=500ms").unwrap().threshold,
            Duration::from_millis(500)
        );
        assert!(Slo::parse("ttfb=1s")
            .unwrap_err()
            .contains("unknown metric"));
        assert!(Slo::parse("ttft").unwrap_err().contains("METRIC=DURATION"));
        assert!(Slo::parse("tpot=fast").unwrap_err().contains("'fast'"));
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = RequestRecord::new(0, false, t0, 4);
        r.token_times = vec![t0 + ms(100), t0 + ms(110), t0 + ms(150)];
        r.end = t0 + ms(150);
        let slos = [
            Slo::parse("ttft=120ms").unwrap(),
            Slo::parse("tpot=30ms").unwrap(),
        ];
        assert!(is_good(&slos, &r)); // tpot = 50/2 = 25 ms
        assert!(!is_good(&[Slo::parse("itl=20ms").unwrap()], &r)); // mean gap 25 ms
        assert!(is_good(&[Slo::parse("itl=30ms").unwrap()], &r)); // though one gap is 40 ms
        r.error = Some(crate::engine::record::ErrorClass::Timeout);
        assert!(!is_good(&slos, &r));
    }

    /// Ten requests, each with nine 10 ms gaps and one 100 ms stall. Per gap,
    /// 10% of gaps are 100 ms, so a per-gap p95 is 100 ms and each request's
    /// largest gap is 100 ms: both would fail `itl=50ms`. Per request, the
    /// mean gap is 20 ms: every request is good and the p95 verdict agrees.
    #[test]
    fn itl_slo_judges_the_per_request_mean_for_goodput_and_percentile_alike() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let slos = vec![Slo::parse("itl=50ms").unwrap()];
        let mut stats = Stats {
            slos: slos.clone(),
            ..Stats::default()
        };
        for seq in 0..10 {
            let mut r = RequestRecord::new(seq, false, t0, 12);
            let mut t = t0 + ms(50);
            r.token_times.push(t);
            for gap in [10, 10, 10, 10, 100, 10, 10, 10, 10] {
                t += ms(gap);
                r.token_times.push(t);
            }
            r.end = t;
            assert_eq!(r.itl_mean(), Some(ms(20)));
            assert_eq!(r.itl_gaps().max(), Some(ms(100)));
            stats.ingest(&r, 8);
        }
        let per_gap_p95 = stats.itl.inner().value_at_quantile(0.95) as f64 / 1000.0;
        assert!(
            per_gap_p95 > 99.0,
            "the definitions disagree here: {per_gap_p95}"
        );
        let rep = judge(&slos, 95.0, &stats, 1.0);
        assert_eq!(rep.good_requests, 10);
        assert!(rep.met, "{rep:?}");
        assert!(
            (rep.objectives[0].observed_ms - 20.0).abs() < 0.1,
            "{rep:?}"
        );
        // A slower request set fails both the goodput count and the verdict together.
        let strict = vec![Slo::parse("itl=15ms").unwrap()];
        let mut s2 = Stats {
            slos: strict.clone(),
            ..Stats::default()
        };
        let mut r = RequestRecord::new(0, false, t0, 4);
        r.token_times = vec![t0, t0 + ms(19), t0 + ms(38)];
        r.end = t0 + ms(38);
        s2.ingest(&r, 8);
        let rep = judge(&strict, 95.0, &s2, 1.0);
        assert_eq!((rep.good_requests, rep.met), (0, false));
    }
}
