//! HDR histogram wrapper with microsecond resolution.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest trackable value: one hour in microseconds.
const MAX_US: u64 = 3_600_000_000;

/// An HDR histogram of microsecond values, 3 significant digits (values are
/// kept to within 0.1%). Values above one hour are clamped to one hour.
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// A histogram crosses machines (shard files) as the hex of its V2 + DEFLATE
/// encoding: exact, compact, and independent of this struct's layout.
impl Serialize for LatencyHistogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
        let mut buf = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&self.0, &mut buf)
            .map_err(|e| serde::ser::Error::custom(format!("{e:?}")))?;
        s.serialize_str(&hex(&buf))
    }
}

impl<'de> serde::Deserialize<'de> for LatencyHistogram {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = unhex(&text).ok_or_else(|| serde::de::Error::custom("histogram: not hex"))?;
        let h: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| serde::de::Error::custom(format!("histogram: {e:?}")))?;
        // Same bounds as every histogram of this type, so counts add exactly.
        let mut out = Self::new();
        out.0
            .add(&h)
            .map_err(|e| serde::de::Error::custom(format!("histogram: {e:?}")))?;
        Ok(out)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        // Bounds are constants that hdrhistogram accepts; failure is impossible.
        #[allow(clippy::expect_used)]
        let h = Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds");
        Self(h)
    }

    /// Records a duration in microseconds (a zero duration counts as 0 µs).
    pub fn record(&mut self, d: Duration) {
        self.record_value(u64::try_from(d.as_micros()).unwrap_or(MAX_US));
    }

    /// Records a raw value.
    pub fn record_value(&mut self, v: u64) {
        self.0.saturating_record(v.min(MAX_US));
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, o: &LatencyHistogram) {
        // Same bounds by construction, so adding cannot fail.
        let _ = self.0.add(&o.0);
    }

    /// The underlying histogram (for serialization and CIs).
    pub fn inner(&self) -> &Histogram<u64> {
        &self.0
    }

    /// Summary statistics, each value divided by `scale` (1000 turns µs into ms).
    pub fn distribution(&self, scale: f64) -> Distribution {
        let h = &self.0;
        if h.is_empty() {
            return Distribution::default();
        }
        let q = |p: f64| h.value_at_quantile(p) as f64 / scale;
        Distribution {
            count: h.len(),
            mean: h.mean() / scale,
            stddev: h.stdev() / scale,
            min: h.min() as f64 / scale,
            max: h.max() as f64 / scale,
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
        }
    }
}

/// Summary of a distribution, in the unit chosen by the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Distribution {
    /// Number of samples.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Population standard deviation.
    pub stddev: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 0.001 + 1e-9
    }

    #[test]
    fn percentiles_match_exact_values_within_hdr_precision() {
        let mut h = LatencyHistogram::new();
        for v in 1..=10_000u64 {
            h.record_value(v);
        }
        let d = h.distribution(1.0);
        // Exact nearest-rank percentiles of 1..=10000.
        assert!(close(d.p50, 5000.0), "{}", d.p50);
        assert!(close(d.p90, 9000.0), "{}", d.p90);
        assert!(close(d.p99, 9900.0), "{}", d.p99);
        assert!(close(d.p999, 9990.0), "{}", d.p999);
        assert!(close(d.mean, 5000.5), "{}", d.mean);
        assert!(close(d.stddev, 2886.75), "{}", d.stddev);
        assert_eq!((d.min, d.count), (1.0, 10_000));
        assert!(close(d.max, 10_000.0));
    }

    #[test]
    fn durations_are_microseconds_and_scale_to_ms() {
        let mut h = LatencyHistogram::new();
        h.record(Duration::from_micros(100_250));
        let d = h.distribution(1000.0);
        assert!(close(d.p50, 100.25), "{}", d.p50);
    }

    #[test]
    fn empty_histogram_gives_zero_count() {
        assert_eq!(LatencyHistogram::new().distribution(1.0).count, 0);
    }
}
