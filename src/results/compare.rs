//! `throtl compare`: per metric, every run against the first (the baseline),
//! with a bootstrap CI of the difference and a Mann–Whitney U test, and the
//! `--fail-on` regression gate. Definitions: docs/results.md.

use super::stats::{bootstrap_diff, mann_whitney, BootstrapCi, Statistic};
use super::{per_second, RunData, SampleMetric};

/// Bootstrap resamples per comparison.
pub const RESAMPLES: usize = 2000;
/// Confidence level of intervals.
pub const LEVEL: f64 = 0.95;
/// Significance level of the test.
pub const ALPHA: f64 = 0.05;
/// Fixed seed: the same runs always give the same intervals.
pub const SEED: u64 = 0x7468_726f_746c;

/// A metric and statistic, e.g. `ttft.p99` or `throughput.output_tokens_per_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKey {
    /// A per-request metric's statistic.
    Request(SampleMetric, Statistic),
    /// Output tokens/s of the whole run (tested on per-second buckets).
    OutputThroughput,
    /// Successful requests/s of the whole run (tested on per-second buckets).
    RequestThroughput,
}

impl MetricKey {
    /// Parses `ttft.p99`, `e2e.mean`, `throughput.output_tokens_per_s`, ….
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "throughput.output_tokens_per_s" => return Some(Self::OutputThroughput),
            "throughput.requests_per_s" => return Some(Self::RequestThroughput),
            _ => {}
        }
        let (m, st) = s.rsplit_once('.')?;
        let metric = [
            SampleMetric::Ttft,
            SampleMetric::Tpot,
            SampleMetric::E2e,
            SampleMetric::RequestRate,
        ]
        .into_iter()
        .find(|x| x.name() == m)?;
        Some(Self::Request(metric, Statistic::parse(st)?))
    }

    /// Its name.
    pub fn name(self) -> String {
        match self {
            Self::Request(m, s) => format!("{}.{}", m.name(), s.name()),
            Self::OutputThroughput => "throughput.output_tokens_per_s".into(),
            Self::RequestThroughput => "throughput.requests_per_s".into(),
        }
    }

    /// Whether larger is better.
    pub fn higher_is_better(self) -> bool {
        match self {
            Self::Request(m, _) => m.higher_is_better(),
            _ => true,
        }
    }

    /// Unit for display.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Request(SampleMetric::RequestRate, _) | Self::OutputThroughput => "tok/s",
            Self::RequestThroughput => "req/s",
            Self::Request(..) => "ms",
        }
    }

    /// The metrics `compare` shows by default.
    pub fn defaults() -> Vec<Self> {
        use SampleMetric::*;
        let q = |m, p| Self::Request(m, Statistic::Quantile(p));
        vec![
            q(Ttft, 500),
            q(Ttft, 990),
            q(Tpot, 500),
            q(Tpot, 990),
            q(E2e, 500),
            q(E2e, 990),
            Self::OutputThroughput,
            Self::RequestThroughput,
        ]
    }

    /// The run's value (from the summary when it has one, else the samples).
    pub fn value(self, run: &RunData) -> f64 {
        let r = &run.report;
        match self {
            Self::OutputThroughput => r.throughput.output_tokens_per_s,
            Self::RequestThroughput => r.throughput.requests_per_s,
            Self::Request(m, s) => {
                let mut v = m.values(&run.samples);
                if !v.is_empty() {
                    return s.of(&mut v);
                }
                summary_value(run, m, s).unwrap_or(f64::NAN)
            }
        }
    }

    /// The samples the test and interval are computed from.
    fn samples(self, run: &RunData) -> Vec<f64> {
        match self {
            Self::Request(m, _) => m.values(&run.samples),
            Self::OutputThroughput => full_seconds(run, |b| b.output_tokens as f64),
            Self::RequestThroughput => full_seconds(run, |b| b.ok as f64),
        }
    }

    fn statistic(self) -> Statistic {
        match self {
            Self::Request(_, s) => s,
            _ => Statistic::Mean,
        }
    }
}

fn summary_value(run: &RunData, m: SampleMetric, s: Statistic) -> Option<f64> {
    let l = &run.report.latency_ms;
    let d = match m {
        SampleMetric::Ttft => &l.ttft,
        SampleMetric::Tpot => &l.tpot,
        SampleMetric::E2e => &l.e2e,
        SampleMetric::RequestRate => &run.report.output_tokens_per_s_per_request,
    };
    Some(match s {
        Statistic::Mean => d.mean,
        Statistic::Quantile(500) => d.p50,
        Statistic::Quantile(900) => d.p90,
        Statistic::Quantile(950) => d.p95,
        Statistic::Quantile(990) => d.p99,
        Statistic::Quantile(999) => d.p999,
        Statistic::Quantile(_) => return None,
    })
}

/// Per-second values, without the first and last (partial) seconds.
fn full_seconds(run: &RunData, f: impl Fn(&super::SecondBucket) -> f64) -> Vec<f64> {
    let b = per_second(&run.samples);
    if b.len() < 3 {
        return Vec::new();
    }
    b[1..b.len() - 1].iter().map(f).collect()
}

/// One run against the baseline on one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// Bootstrap interval; `None` without samples.
    pub ci: Option<BootstrapCi>,
    /// Mann–Whitney p-value; `None` without samples.
    pub p_value: Option<f64>,
    /// Observed relative difference (value / baseline − 1).
    pub rel: f64,
}

impl Difference {
    /// Significant at [`ALPHA`] and the CI of the difference excludes 0.
    pub fn significant(&self) -> bool {
        match (self.p_value, self.ci) {
            (Some(p), Some(ci)) => p < ALPHA && (ci.diff_ci.0 > 0.0 || ci.diff_ci.1 < 0.0),
            _ => false,
        }
    }
}

/// One metric across runs.
#[derive(Debug, Clone)]
pub struct MetricRow {
    /// Which metric.
    pub key: MetricKey,
    /// Value per run.
    pub values: Vec<f64>,
    /// Per run after the first: difference to the baseline.
    pub diffs: Vec<Difference>,
}

impl MetricRow {
    /// `"run N better"`, `"run N worse"` or `"no significant difference"`, per non-baseline run.
    pub fn verdict(&self, i: usize) -> String {
        let Some(d) = self.diffs.get(i) else {
            return String::new();
        };
        if d.p_value.is_none() {
            return "not tested (no per-request samples)".into();
        }
        if !d.significant() {
            return "no significant difference".into();
        }
        let better = (d.rel > 0.0) == self.key.higher_is_better();
        if better {
            format!("#{} better", i + 2)
        } else {
            "baseline better".into()
        }
    }
}

/// Compares every run against `runs[0]`.
pub fn compare(runs: &[RunData], keys: &[MetricKey]) -> Vec<MetricRow> {
    keys.iter()
        .map(|&key| {
            let base = key.samples(&runs[0]);
            let values: Vec<f64> = runs.iter().map(|r| key.value(r)).collect();
            let diffs = runs[1..]
                .iter()
                .zip(&values[1..])
                .map(|(r, v)| {
                    let other = key.samples(r);
                    Difference {
                        ci: bootstrap_diff(&base, &other, key.statistic(), RESAMPLES, LEVEL, SEED),
                        p_value: mann_whitney(&base, &other).map(|m| m.p_value),
                        rel: v / values[0] - 1.0,
                    }
                })
                .collect();
            MetricRow { key, values, diffs }
        })
        .collect()
}

/// A `--fail-on` rule: `ttft.p99>+10%` or `throughput.output_tokens_per_s<-5%`.
#[derive(Debug, Clone, PartialEq)]
pub struct GateRule {
    /// Metric watched.
    pub key: MetricKey,
    /// `true` for `>` (fail on increase), `false` for `<`.
    pub increase: bool,
    /// Threshold as a fraction (+0.10 for +10%).
    pub threshold: f64,
    /// The rule as written.
    pub text: String,
}

/// A `--fail-on` rule that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("--fail-on '{0}': expected METRIC.STAT>+N% or METRIC.STAT<-N%, e.g. 'ttft.p99>+10%' or 'throughput.output_tokens_per_s<-5%' (metrics: ttft, tpot, e2e, output_tokens_per_s_per_request with mean|p50|p90|p95|p99|p999; throughput.output_tokens_per_s, throughput.requests_per_s)")]
pub struct GateParseError(pub String);

impl GateRule {
    /// Parses a rule.
    pub fn parse(s: &str) -> Result<Self, GateParseError> {
        let err = || GateParseError(s.to_owned());
        let (pos, increase) = match (s.find('>'), s.find('<')) {
            (Some(p), None) => (p, true),
            (None, Some(p)) => (p, false),
            _ => return Err(err()),
        };
        let key = MetricKey::parse(s[..pos].trim()).ok_or_else(err)?;
        let num = s[pos + 1..].trim().strip_suffix('%').ok_or_else(err)?;
        let threshold = num.trim().parse::<f64>().map_err(|_| err())? / 100.0;
        if !threshold.is_finite() {
            return Err(err());
        }
        Ok(Self {
            key,
            increase,
            threshold,
            text: s.to_owned(),
        })
    }

    /// A failure message when `d` (new against base) breaks the rule
    /// significantly; `None` otherwise.
    pub fn check(&self, d: &Difference) -> Option<String> {
        let crossed = if self.increase {
            d.rel > self.threshold
        } else {
            d.rel < self.threshold
        };
        let direction_ok = if self.increase {
            d.ci.is_some_and(|c| c.diff_ci.0 > 0.0)
        } else {
            d.ci.is_some_and(|c| c.diff_ci.1 < 0.0)
        };
        if !(crossed && direction_ok && d.significant()) {
            return None;
        }
        let ci = d.ci.map_or(String::new(), |c| {
            format!(
                ", 95% CI [{:+.1}%, {:+.1}%]",
                c.rel_ci.0 * 100.0,
                c.rel_ci.1 * 100.0
            )
        });
        Some(format!(
            "regression: {} changed {:+.1}% (limit {}{:+.0}%{ci}, Mann–Whitney p = {:.2e})",
            self.key.name(),
            d.rel * 100.0,
            if self.increase { ">" } else { "<" },
            self.threshold * 100.0,
            d.p_value.unwrap_or(f64::NAN)
        ))
    }
}

/// Evaluates gate rules on `runs[1]` against `runs[0]`; returns the failures.
pub fn gate(runs: &[RunData], rules: &[GateRule]) -> Vec<String> {
    if runs.len() < 2 {
        return Vec::new();
    }
    let keys: Vec<MetricKey> = rules.iter().map(|r| r.key).collect();
    let rows = compare(&runs[..2], &keys);
    rules
        .iter()
        .zip(&rows)
        .filter_map(|(rule, row)| row.diffs.first().and_then(|d| rule.check(d)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_rules_parse_and_reject_nonsense() {
        let r = GateRule::parse("ttft.p99>+10%").unwrap();
        assert!(r.increase);
        assert!((r.threshold - 0.10).abs() < 1e-12);
        let r = GateRule::parse("throughput.output_tokens_per_s<-5%").unwrap();
        assert_eq!(r.key, MetricKey::OutputThroughput);
        assert!(!r.increase);
        assert!((r.threshold + 0.05).abs() < 1e-12);
        for bad in [
            "ttft.p99>10",
            "ttft.p42>+1%",
            "nope.p99>+1%",
            "ttft.p99",
            "e2e.mean>x%",
        ] {
            assert!(GateRule::parse(bad).is_err(), "{bad}");
        }
    }
}
