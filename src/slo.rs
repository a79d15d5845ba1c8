//! Service-level objectives (`--slo ttft=500ms --slo tpot=50ms`) and goodput.
//!
//! A request is *good* when it succeeded and meets every objective on its own
//! numbers (TTFT, TPOT, E2E, and for ITL its largest gap). Goodput is good
//! requests per second of the measured window. A run *meets* its SLOs when,
//! for every objective, the chosen percentile (`--slo-percentile`, default 95)
//! of that metric's distribution is at or under the threshold.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::record::RequestRecord;

/// A metric an objective can bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SloMetric {
    /// Time to first token.
    Ttft,
    /// Time per output token.
    Tpot,
    /// Inter-token latency (per request: its largest gap).
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
            SloMetric::Itl => Some(r.itl_gaps().max().unwrap_or(Duration::ZERO)),
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
        assert!(!is_good(&[Slo::parse("itl=30ms").unwrap()], &r)); // largest gap 40 ms
        r.error = Some(crate::engine::record::ErrorClass::Timeout);
        assert!(!is_good(&slos, &r));
    }
}
