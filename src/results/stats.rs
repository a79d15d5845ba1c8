//! Statistics for comparisons: sample quantiles, a seeded percentile
//! bootstrap, and the Mann–Whitney U test (normal approximation with tie and
//! continuity corrections, as scipy's `mannwhitneyu(method="asymptotic")`).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A summary statistic of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    /// Arithmetic mean.
    Mean,
    /// Quantile `q` in per-mille (p99 = 990), linear interpolation.
    Quantile(u32),
}

impl Statistic {
    /// Parses `mean`, `p50`, `p90`, `p95`, `p99`, `p999`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "mean" => Self::Mean,
            "p50" => Self::Quantile(500),
            "p90" => Self::Quantile(900),
            "p95" => Self::Quantile(950),
            "p99" => Self::Quantile(990),
            "p999" => Self::Quantile(999),
            _ => return None,
        })
    }

    /// Its name.
    pub fn name(self) -> String {
        match self {
            Self::Mean => "mean".into(),
            Self::Quantile(999) => "p999".into(),
            Self::Quantile(q) => format!("p{}", q / 10),
        }
    }

    /// Value on `xs` (reordered in place); NaN when empty.
    pub fn of(self, xs: &mut [f64]) -> f64 {
        match self {
            Self::Mean => mean(xs),
            Self::Quantile(q) => quantile(xs, f64::from(q) / 1000.0),
        }
    }
}

/// Arithmetic mean; NaN when empty.
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Quantile with linear interpolation between order statistics (numpy's
/// default, "type 7"); reorders `xs`; NaN when empty.
pub fn quantile(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let h = (xs.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let n = xs.len();
    let (_, &mut a, rest) = xs.select_nth_unstable_by(lo, f64::total_cmp);
    if lo + 1 >= n || h == lo as f64 {
        return a;
    }
    let b = rest.iter().copied().fold(f64::INFINITY, f64::min);
    a + (h - lo as f64) * (b - a)
}

/// A bootstrap confidence interval of the difference `stat(b) - stat(a)`
/// and of the relative difference `stat(b) / stat(a) - 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapCi {
    /// Observed difference.
    pub diff: f64,
    /// Lower and upper bounds of the difference.
    pub diff_ci: (f64, f64),
    /// Observed relative difference.
    pub rel: f64,
    /// Lower and upper bounds of the relative difference.
    pub rel_ci: (f64, f64),
}

/// Percentile bootstrap with `resamples` draws (each sample resampled
/// independently, with replacement), at confidence `level`, seeded.
pub fn bootstrap_diff(
    a: &[f64],
    b: &[f64],
    stat: Statistic,
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<BootstrapCi> {
    if a.is_empty() || b.is_empty() || resamples == 0 {
        return None;
    }
    let (sa, sb) = (stat.of(&mut a.to_vec()), stat.of(&mut b.to_vec()));
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut ra, mut rb) = (vec![0.0; a.len()], vec![0.0; b.len()]);
    let mut diffs = Vec::with_capacity(resamples);
    let mut rels = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for x in ra.iter_mut() {
            *x = a[rng.random_range(0..a.len())];
        }
        for x in rb.iter_mut() {
            *x = b[rng.random_range(0..b.len())];
        }
        let (va, vb) = (stat.of(&mut ra), stat.of(&mut rb));
        diffs.push(vb - va);
        rels.push(vb / va - 1.0);
    }
    let alpha = (1.0 - level) / 2.0;
    let bounds = |v: &mut Vec<f64>| (quantile(v, alpha), quantile(v, 1.0 - alpha));
    Some(BootstrapCi {
        diff: sb - sa,
        diff_ci: bounds(&mut diffs),
        rel: sb / sa - 1.0,
        rel_ci: bounds(&mut rels),
    })
}

/// A bootstrap confidence interval of one statistic of one sample.
pub fn bootstrap_ci(
    xs: &[f64],
    stat: Statistic,
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<(f64, f64)> {
    if xs.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut r = vec![0.0; xs.len()];
    let mut vals = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for x in r.iter_mut() {
            *x = xs[rng.random_range(0..xs.len())];
        }
        vals.push(stat.of(&mut r));
    }
    let alpha = (1.0 - level) / 2.0;
    Some((quantile(&mut vals, alpha), quantile(&mut vals, 1.0 - alpha)))
}

/// Result of a Mann–Whitney U test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U statistic of the first sample.
    pub u1: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Two-sided Mann–Whitney U test, normal approximation with tie correction
/// and continuity correction. `None` when a sample is empty.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, true))
        .chain(b.iter().map(|&x| (x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let (mut r1, mut ties, mut i) = (0.0, 0.0, 0);
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        r1 += rank * all[i..=j].iter().filter(|x| x.1).count() as f64;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        i = j + 1;
    }
    let u1 = r1 - n1 * (n1 + 1.0) / 2.0;
    let u = u1.max(n1 * n2 - u1);
    let nf = n as f64;
    let var = n1 * n2 / 12.0 * ((nf + 1.0) - ties / (nf * (nf - 1.0)));
    let p_value = if var <= 0.0 {
        1.0
    } else {
        let z = (u - n1 * n2 / 2.0 - 0.5) / var.sqrt();
        (erfc(z / std::f64::consts::SQRT_2)).min(1.0)
    };
    Some(MannWhitney { u1, p_value })
}

/// Complementary error function (W. J. Cody's rational approximations via
/// the Numerical Recipes `erfcc` form; relative error below 1.2e-7).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= b.abs() * rel
    }

    #[test]
    fn mann_whitney_matches_scipy() {
        // scipy.stats.mannwhitneyu(males, females, method="asymptotic") from
        // the scipy documentation: statistic=17.0, pvalue=0.11134688653314041.
        let m = mann_whitney(&[19., 22., 16., 29., 24.], &[20., 11., 17., 12.]).unwrap();
        assert_eq!(m.u1, 17.0);
        assert!(
            close(m.p_value, 0.111_346_886_533_140_41, 1e-6),
            "{}",
            m.p_value
        );
        // Same formula evaluated with Python's math.erfc (with ties):
        // U1 = 10.5, p = 0.047326108581877586.
        let m = mann_whitney(
            &[1., 2., 2., 3., 4., 5., 5., 6.],
            &[3., 4., 5., 6., 7., 7., 8.],
        )
        .unwrap();
        assert_eq!(m.u1, 10.5);
        assert!(
            close(m.p_value, 0.047_326_108_581_877_586, 1e-6),
            "{}",
            m.p_value
        );
        // Complete separation, n = 5 + 5: p = 0.012185780355344818.
        let m = mann_whitney(&[1., 2., 3., 4., 5.], &[6., 7., 8., 9., 10.]).unwrap();
        assert!(
            close(m.p_value, 0.012_185_780_355_344_818, 1e-6),
            "{}",
            m.p_value
        );
        // Identical samples: no evidence at all.
        let m = mann_whitney(&[1., 1., 1.], &[1., 1., 1.]).unwrap();
        assert_eq!(m.p_value, 1.0);
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], [50, 90]) = [2.5, 3.7]
        assert!(close(quantile(&mut [4., 1., 3., 2.], 0.5), 2.5, 1e-12));
        assert!(close(quantile(&mut [4., 1., 3., 2.], 0.9), 3.7, 1e-12));
        assert_eq!(quantile(&mut [7.], 0.99), 7.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }

    #[test]
    fn bootstrap_of_a_mean_difference_matches_the_normal_theory_interval() {
        // a = 0..1000, b = a + 10: diff of means 10, and the normal-theory
        // 95% half-width is 1.96 * sqrt(2 * var / n) = 1.96 * sqrt(2 * 83333.25 / 1000) = 25.30.
        let a: Vec<f64> = (0..1000).map(f64::from).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 10.0).collect();
        let ci = bootstrap_diff(&a, &b, Statistic::Mean, 2000, 0.95, 7).unwrap();
        assert!(close(ci.diff, 10.0, 1e-9));
        let half = (ci.diff_ci.1 - ci.diff_ci.0) / 2.0;
        assert!(close(half, 25.30, 0.08), "half-width {half}");
        assert!(close(
            (ci.diff_ci.0 + ci.diff_ci.1) / 2.0,
            10.0,
            0.5 * 25.3 / 10.0
        ));
        // Seeded: the same inputs give the same interval.
        assert_eq!(
            ci,
            bootstrap_diff(&a, &b, Statistic::Mean, 2000, 0.95, 7).unwrap()
        );
        // Constant samples: a zero-width interval at the true difference.
        let ci = bootstrap_diff(
            &[5.0; 50],
            &[6.0; 50],
            Statistic::Quantile(990),
            200,
            0.95,
            1,
        )
        .unwrap();
        assert_eq!(ci.diff_ci, (1.0, 1.0));
        assert!(close(ci.rel, 0.2, 1e-12));
    }

    #[test]
    fn erfc_is_accurate() {
        // math.erfc(0.5) = 0.4795001221869535, math.erfc(-1) = 1.8427007929497148
        assert!(close(erfc(0.5), 0.479_500_122_186_953_5, 2e-7));
        assert!(close(erfc(-1.0), 1.842_700_792_949_714_8, 2e-7));
    }
}
