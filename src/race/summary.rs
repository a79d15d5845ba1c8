//! Race results: per-run numbers, per-target statistics, ranking by each
//! metric, and a Mann–Whitney test of the leader's lead; plus their text.

use serde::Serialize;

use super::{RaceConfig, RaceEntry};
use crate::results::stats::{mann_whitney, mean, quantile};

/// Runs needed before the leader's lead is tested for significance.
pub const MIN_RUNS_FOR_TEST: usize = 5;

/// Significance level of that test.
pub const ALPHA: f64 = 0.05;

/// One target's numbers in one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOutcome {
    /// Run index (0-based).
    pub run: u32,
    /// Time to first token from the common start, ms.
    pub ttft_ms: Option<f64>,
    /// Common start to end of stream, ms.
    pub e2e_ms: f64,
    /// Output tokens (server usage, else content chunks).
    pub output_tokens: u64,
    /// Decode rate: (output tokens − 1) / (e2e − TTFT), tokens/s.
    pub tokens_per_s: Option<f64>,
    /// How long after the common start the request was handed to the client, ms.
    pub send_skew_ms: f64,
    /// Why the request failed, if it did.
    pub error: Option<String>,
}

/// The metric that orders the ranked summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RankMetric {
    /// Time to first token (lower wins).
    Ttft,
    /// End-to-end latency (lower wins).
    E2e,
    /// Decode tokens/s (higher wins).
    TokensPerS,
}

impl RankMetric {
    /// All three, in table order.
    pub const ALL: [RankMetric; 3] = [RankMetric::Ttft, RankMetric::E2e, RankMetric::TokensPerS];

    /// Display name.
    pub fn label(self) -> &'static str {
        match self {
            RankMetric::Ttft => "TTFT",
            RankMetric::E2e => "e2e",
            RankMetric::TokensPerS => "tokens/s",
        }
    }

    fn higher_wins(self) -> bool {
        self == RankMetric::TokensPerS
    }

    fn value(self, o: &RunOutcome) -> Option<f64> {
        if o.error.is_some() {
            return None;
        }
        match self {
            RankMetric::Ttft => o.ttft_ms,
            RankMetric::E2e => Some(o.e2e_ms),
            RankMetric::TokensPerS => o.tokens_per_s,
        }
    }
}

/// Summary statistics of one metric over a target's successful runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MetricStats {
    /// Successful runs with a value.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median (linear interpolation).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sample standard deviation (n − 1); 0 for one value.
    pub stddev: f64,
}

impl MetricStats {
    /// Statistics of `xs`; `None` when empty.
    pub fn of(xs: &[f64]) -> Option<Self> {
        if xs.is_empty() {
            return None;
        }
        let m = mean(xs);
        let var = if xs.len() > 1 {
            xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64
        } else {
            0.0
        };
        let mut sorted = xs.to_vec();
        Some(Self {
            n: xs.len(),
            mean: m,
            median: quantile(&mut sorted, 0.5),
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            stddev: var.sqrt(),
        })
    }
}

/// Ranks of a target by each metric (1 = best); `None` when it has no value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Ranks {
    /// Rank by median TTFT.
    pub ttft: Option<usize>,
    /// Rank by median e2e.
    pub e2e: Option<usize>,
    /// Rank by median tokens/s.
    pub tokens_per_s: Option<usize>,
}

impl Ranks {
    fn get(&self, m: RankMetric) -> Option<usize> {
        match m {
            RankMetric::Ttft => self.ttft,
            RankMetric::E2e => self.e2e,
            RankMetric::TokensPerS => self.tokens_per_s,
        }
    }

    fn set(&mut self, m: RankMetric, r: usize) {
        match m {
            RankMetric::Ttft => self.ttft = Some(r),
            RankMetric::E2e => self.e2e = Some(r),
            RankMetric::TokensPerS => self.tokens_per_s = Some(r),
        }
    }
}

/// One target's race result.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// Display name.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Model requested (when the target could be set up).
    pub model: Option<String>,
    /// Protocol spoken (when the target could be set up).
    pub api: Option<String>,
    /// Why the target could not race at all.
    pub setup_error: Option<String>,
    /// Every run, in order.
    pub runs: Vec<RunOutcome>,
    /// Runs that failed.
    pub failed: usize,
    /// TTFT statistics, ms.
    pub ttft_ms: Option<MetricStats>,
    /// e2e statistics, ms.
    pub e2e_ms: Option<MetricStats>,
    /// Decode tokens/s statistics.
    pub tokens_per_s: Option<MetricStats>,
    /// Rank by each metric's median.
    pub ranks: Ranks,
}

impl TargetResult {
    /// Statistics of metric `m`.
    pub fn stats(&self, m: RankMetric) -> Option<&MetricStats> {
        match m {
            RankMetric::Ttft => self.ttft_ms.as_ref(),
            RankMetric::E2e => self.e2e_ms.as_ref(),
            RankMetric::TokensPerS => self.tokens_per_s.as_ref(),
        }
    }

    fn values(&self, m: RankMetric) -> Vec<f64> {
        self.runs.iter().filter_map(|o| m.value(o)).collect()
    }
}

/// Is the leader's lead in one metric significant?
#[derive(Debug, Clone, Serialize)]
pub struct Significance {
    /// The metric.
    pub metric: RankMetric,
    /// Rank-1 target.
    pub leader: String,
    /// Rank-2 target.
    pub runner_up: String,
    /// Difference of medians, leader − runner-up (ms, or tokens/s).
    pub median_diff: f64,
    /// Two-sided Mann–Whitney U p-value on the per-run values.
    pub p_value: f64,
    /// `p_value < 0.05`.
    pub significant: bool,
}

/// The whole race (`--json`, schema `throtl.race.v1`).
#[derive(Debug, Clone, Serialize)]
pub struct RaceReport {
    /// Schema name.
    pub schema: &'static str,
    /// The prompt.
    pub prompt: String,
    /// `max_tokens` requested.
    pub max_tokens: u32,
    /// Runs requested.
    pub runs: u32,
    /// The metric ordering `ranking`.
    pub rank_by: RankMetric,
    /// Per target, in `--target` order.
    pub targets: Vec<TargetResult>,
    /// Target names ordered by `rank_by` (targets without a value last).
    pub ranking: Vec<String>,
    /// Leader vs runner-up per metric (only with at least 5 runs).
    pub significance: Vec<Significance>,
}

/// Builds the report from every target's outcomes.
pub fn build(cfg: &RaceConfig, outcomes: Vec<Vec<RunOutcome>>) -> RaceReport {
    let mut targets: Vec<TargetResult> = cfg
        .targets
        .iter()
        .zip(outcomes)
        .map(|(e, runs)| target_result(e, runs))
        .collect();
    for m in RankMetric::ALL {
        for (rank, i) in order_by(&targets, m).into_iter().enumerate() {
            targets[i].ranks.set(m, rank + 1);
        }
    }
    let ranking = ranking_names(&targets, cfg.rank_by);
    let significance = significance(&targets, cfg.runs as usize);
    RaceReport {
        schema: "throtl.race.v1",
        prompt: cfg.prompt.clone(),
        max_tokens: cfg.max_tokens,
        runs: cfg.runs,
        rank_by: cfg.rank_by,
        targets,
        ranking,
        significance,
    }
}

fn target_result(e: &RaceEntry, runs: Vec<RunOutcome>) -> TargetResult {
    let mut t = TargetResult {
        name: e.name().to_owned(),
        url: String::new(),
        model: None,
        api: None,
        setup_error: None,
        failed: runs.iter().filter(|o| o.error.is_some()).count(),
        runs,
        ttft_ms: None,
        e2e_ms: None,
        tokens_per_s: None,
        ranks: Ranks::default(),
    };
    match e {
        RaceEntry::Ready(r) => {
            t.url.clone_from(&r.url);
            t.model = Some(r.model.clone());
            t.api = Some(r.api.as_str().to_owned());
        }
        RaceEntry::Failed { url, reason, .. } => {
            t.url.clone_from(url);
            t.setup_error = Some(reason.clone());
        }
    }
    t.ttft_ms = MetricStats::of(&t.values(RankMetric::Ttft));
    t.e2e_ms = MetricStats::of(&t.values(RankMetric::E2e));
    t.tokens_per_s = MetricStats::of(&t.values(RankMetric::TokensPerS));
    t
}

/// Indices of targets with a value of `m`, best median first.
fn order_by(targets: &[TargetResult], m: RankMetric) -> Vec<usize> {
    let mut idx: Vec<(usize, f64)> = targets
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.stats(m).map(|s| (i, s.median)))
        .collect();
    idx.sort_by(|a, b| {
        let o = a.1.total_cmp(&b.1);
        if m.higher_wins() {
            o.reverse()
        } else {
            o
        }
    });
    idx.into_iter().map(|(i, _)| i).collect()
}

fn ranking_names(targets: &[TargetResult], m: RankMetric) -> Vec<String> {
    let mut order = order_by(targets, m);
    order.extend((0..targets.len()).filter(|i| targets[*i].ranks.get(m).is_none()));
    order.into_iter().map(|i| targets[i].name.clone()).collect()
}

fn significance(targets: &[TargetResult], runs: usize) -> Vec<Significance> {
    if runs < MIN_RUNS_FOR_TEST {
        return Vec::new();
    }
    RankMetric::ALL
        .into_iter()
        .filter_map(|m| {
            let order = order_by(targets, m);
            let (a, b) = (&targets[*order.first()?], &targets[*order.get(1)?]);
            let (va, vb) = (a.values(m), b.values(m));
            if va.len() < MIN_RUNS_FOR_TEST || vb.len() < MIN_RUNS_FOR_TEST {
                return None;
            }
            let p = mann_whitney(&va, &vb)?.p_value;
            Some(Significance {
                metric: m,
                leader: a.name.clone(),
                runner_up: b.name.clone(),
                median_diff: a.stats(m)?.median - b.stats(m)?.median,
                p_value: p,
                significant: p < ALPHA,
            })
        })
        .collect()
}

/// `12.3 ms` / `1.23 s` for a millisecond value; tokens/s with one decimal.
fn fmt_metric(m: RankMetric, v: f64) -> String {
    match m {
        RankMetric::TokensPerS => format!("{v:.1}"),
        _ if v >= 1000.0 => format!("{:.2} s", v / 1000.0),
        _ => format!("{v:.1} ms"),
    }
}

fn cell(t: &TargetResult, m: RankMetric) -> String {
    match (t.stats(m), t.ranks.get(m)) {
        (Some(s), Some(r)) => format!("{} (#{r})", fmt_metric(m, s.median)),
        _ => "-".into(),
    }
}

/// The ranked summary table, statistics (several runs), significance and
/// failures, as printed at the end of a race.
pub fn render(r: &RaceReport) -> String {
    let mut s = ranked_table(r);
    if r.runs > 1 {
        s.push_str(&stats_table(r));
        s.push_str(&significance_text(r));
    }
    s.push_str(&failures_text(r));
    s
}

fn ranked_table(r: &RaceReport) -> String {
    let what = if r.runs > 1 {
        "median over runs"
    } else {
        "one run"
    };
    let dir = if r.rank_by.higher_wins() {
        "highest"
    } else {
        "lowest"
    };
    let mut s = format!(
        "\nRanked by {} ({dir} first; {what}; (#n) = rank by that column)\n",
        r.rank_by.label()
    );
    s.push_str(&format!(
        "{:<5} {:<16} {:>18} {:>18} {:>16} {:>7} {:>6}\n",
        "RANK", "TARGET", "TTFT", "E2E", "TOKENS/S", "TOKENS", "FAILED"
    ));
    for (i, name) in r.ranking.iter().enumerate() {
        let Some(t) = r.targets.iter().find(|t| &t.name == name) else {
            continue;
        };
        let rank = t
            .ranks
            .get(r.rank_by)
            .map_or_else(|| "-".to_owned(), |_| (i + 1).to_string());
        let tokens = t.runs.iter().rev().find(|o| o.error.is_none());
        s.push_str(&format!(
            "{:<5} {:<16} {:>18} {:>18} {:>16} {:>7} {:>6}\n",
            rank,
            t.name,
            cell(t, RankMetric::Ttft),
            cell(t, RankMetric::E2e),
            cell(t, RankMetric::TokensPerS),
            tokens.map_or_else(|| "-".to_owned(), |o| o.output_tokens.to_string()),
            format!("{}/{}", t.failed, t.runs.len())
        ));
    }
    s
}

fn stats_table(r: &RaceReport) -> String {
    let mut s = format!(
        "\nStatistics over {} runs (successful runs only): mean / median / min / max / stddev\n",
        r.runs
    );
    for t in &r.targets {
        for m in RankMetric::ALL {
            let Some(st) = t.stats(m) else { continue };
            let unit = if m.higher_wins() { "tok/s" } else { "ms" };
            s.push_str(&format!(
                "{:<16} {:<9} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8.1}  ({unit}, n={})\n",
                t.name,
                m.label(),
                st.mean,
                st.median,
                st.min,
                st.max,
                st.stddev,
                st.n
            ));
        }
    }
    s
}

fn significance_text(r: &RaceReport) -> String {
    if (r.runs as usize) < MIN_RUNS_FOR_TEST {
        return format!(
            "\nToo few runs to test the leader's lead for significance: use --runs {MIN_RUNS_FOR_TEST} or more.\n"
        );
    }
    let mut s = String::from("\nLeader vs runner-up (Mann–Whitney U, two-sided, α = 0.05):\n");
    for g in &r.significance {
        let verdict = if g.significant {
            "significant"
        } else {
            "not significant: no clear winner"
        };
        s.push_str(&format!(
            "  {:<9} {} leads {} by {} (median), p = {:.4}: {verdict}\n",
            g.metric.label(),
            g.leader,
            g.runner_up,
            fmt_metric(g.metric, g.median_diff.abs()),
            g.p_value
        ));
    }
    s
}

fn failures_text(r: &RaceReport) -> String {
    let mut s = String::new();
    for t in &r.targets {
        if let Some(e) = &t.setup_error {
            s.push_str(&format!(
                "target '{}' ({}) did not race: {e}\n",
                t.name, t.url
            ));
        }
        if let Some(o) = t.runs.iter().find(|o| o.error.is_some()) {
            s.push_str(&format!(
                "target '{}' ({}) failed {} of {} run(s); first error: {}\n",
                t.name,
                t.url,
                t.failed,
                t.runs.len(),
                o.error.as_deref().unwrap_or_default()
            ));
        }
    }
    if !s.is_empty() {
        s.insert(0, '\n');
    }
    s
}

/// One plain line for a target that finished a run (no live view).
pub fn done_line(name: &str, o: &RunOutcome, runs: u32) -> String {
    let run = if runs > 1 {
        format!("run {}/{runs}  ", o.run + 1)
    } else {
        String::new()
    };
    match &o.error {
        Some(e) => format!("{run}{name}: failed after {:.1} ms: {e}", o.e2e_ms),
        None => format!(
            "{run}{name}: TTFT {}  e2e {}  {} tokens  {} tok/s",
            o.ttft_ms
                .map_or_else(|| "-".into(), |v| fmt_metric(RankMetric::Ttft, v)),
            fmt_metric(RankMetric::E2e, o.e2e_ms),
            o.output_tokens,
            o.tokens_per_s
                .map_or_else(|| "-".into(), |v| format!("{v:.1}"))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_stats_match_hand_computed_values() {
        let s = MetricStats::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(
            (s.n, s.mean, s.median, s.min, s.max),
            (8, 5.0, 4.5, 2.0, 9.0)
        );
        // Sample variance = 32 / 7.
        assert!((s.stddev - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(MetricStats::of(&[3.0]).unwrap().stddev, 0.0);
        assert!(MetricStats::of(&[]).is_none());
    }
}
