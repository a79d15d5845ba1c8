//! Alert rules over derived metrics, with hold times.
//!
//! A rule fires when its condition has held continuously for its hold time
//! (`for`), and resolves at the first evaluation where it no longer holds.
//! A missing metric counts as "condition not met".

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scrape::derive::METRIC_NAMES;
use crate::scrape::Derived;

/// The rules shipped with throtl (see docs/monitor.md for the reasoning).
pub const DEFAULT_RULES: &str = include_str!("default_rules.yaml");

/// A rules file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// YAML syntax or shape.
    #[error(
        "rules file: {0}. Expected `rules:` with items having name, when, for, severity, message"
    )]
    Yaml(String),
    /// A bad `when` or `for`.
    #[error("rule '{rule}': {reason}")]
    Rule {
        /// Rule name.
        rule: String,
        /// What is wrong and how to write it.
        reason: String,
    },
}

/// Severity of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    when: String,
    #[serde(default, rename = "for")]
    hold: Option<String>,
    #[serde(default = "default_severity")]
    severity: Severity,
    #[serde(default)]
    message: Option<String>,
}

fn default_severity() -> Severity {
    Severity::Warning
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// What a rule tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// `metric OP threshold`.
    Compare(Op, f64),
    /// The metric increased, then never decreased.
    Rising,
    /// The metric decreased, then never increased.
    Falling,
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Name, unique in the file.
    pub name: String,
    /// Metric watched (a name of [`METRIC_NAMES`]).
    pub metric: String,
    /// Condition.
    pub condition: Condition,
    /// Hold time.
    pub hold: Duration,
    /// Severity.
    pub severity: Severity,
    /// Message for people.
    pub message: String,
}

/// Parses a rules file (YAML).
pub fn parse_rules(yaml: &str) -> Result<Vec<Rule>, RuleError> {
    let file: RulesFile =
        serde_norway::from_str(yaml).map_err(|e| RuleError::Yaml(e.to_string()))?;
    let mut out: Vec<Rule> = Vec::new();
    for raw in file.rules {
        let err = |reason: String| RuleError::Rule {
            rule: raw.name.clone(),
            reason,
        };
        if out.iter().any(|r| r.name == raw.name) {
            return Err(err("the name is used twice".into()));
        }
        let (metric, condition) = parse_when(&raw.when).map_err(err)?;
        let hold = match raw.hold.as_deref() {
            Some(h) => humantime::parse_duration(h).map_err(|e| {
                err(format!(
                    "for: '{h}' is not a duration ({e}); write e.g. 30s, 5m"
                ))
            })?,
            None => Duration::ZERO,
        };
        let message = raw.message.clone().unwrap_or_else(|| raw.when.clone());
        out.push(Rule {
            name: raw.name,
            metric,
            condition,
            hold,
            severity: raw.severity,
            message,
        });
    }
    Ok(out)
}

/// Parses `metric > 0.9`, `ttft_p95 > 1s`, `kv_cache_usage >= 90%`, `waiting_requests rising`.
fn parse_when(when: &str) -> Result<(String, Condition), String> {
    let words: Vec<&str> = when.split_whitespace().collect();
    let metric = *words.first().ok_or("`when` is empty")?;
    if !METRIC_NAMES.contains(&metric) {
        return Err(format!(
            "unknown metric '{metric}'; known: {}",
            METRIC_NAMES.join(", ")
        ));
    }
    let cond = match words.as_slice() {
        [_, "rising"] => Condition::Rising,
        [_, "falling"] => Condition::Falling,
        [_, op, v] => Condition::Compare(parse_op(op)?, parse_threshold(v)?),
        _ => {
            return Err(format!(
                "cannot read when: '{when}'; write `METRIC > VALUE` or `METRIC rising`"
            ))
        }
    };
    Ok((metric.to_owned(), cond))
}

fn parse_op(op: &str) -> Result<Op, String> {
    match op {
        ">" => Ok(Op::Gt),
        ">=" => Ok(Op::Ge),
        "<" => Ok(Op::Lt),
        "<=" => Ok(Op::Le),
        _ => Err(format!("unknown operator '{op}'; use >, >=, < or <=")),
    }
}

/// A number, a percentage (`90%` = 0.9) or a duration in seconds (`1s`, `250ms`).
fn parse_threshold(v: &str) -> Result<f64, String> {
    if let Ok(x) = v.parse::<f64>() {
        return Ok(x);
    }
    if let Some(p) = v.strip_suffix('%') {
        return p
            .parse::<f64>()
            .map(|x| x / 100.0)
            .map_err(|_| format!("'{v}' is not a percentage"));
    }
    humantime::parse_duration(v)
        .map(|d| d.as_secs_f64())
        .map_err(|_| format!("'{v}' is not a number, percentage or duration"))
}

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition held for the hold time.
    Firing,
    /// It no longer holds.
    Resolved,
}

impl AlertState {
    /// `firing` / `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One alert transition; also the webhook's JSON body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// Server base URL.
    pub server: String,
    /// Rule name.
    pub rule: String,
    /// New state.
    pub state: AlertState,
    /// Rule severity.
    pub severity: Severity,
    /// Metric watched.
    pub metric: String,
    /// Its value at the transition (absent if the metric disappeared).
    pub value: Option<f64>,
    /// Rule message.
    pub message: String,
    /// Unix time (ms).
    pub ts_ms: i64,
}

impl AlertEvent {
    /// The stderr log line.
    pub fn log_line(&self) -> String {
        let value = self
            .value
            .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.4}"));
        format!(
            "alert {} [{}] {} server={} {}={}: {}",
            self.state.as_str(),
            self.severity,
            self.rule,
            self.server,
            self.metric,
            value,
            self.message
        )
    }
}

#[derive(Debug, Default, Clone)]
struct RuleState {
    pending_since: Option<f64>,
    firing: bool,
    prev: Option<f64>,
}

/// Evaluates rules per server over successive derived samples.
#[derive(Debug)]
pub struct Evaluator {
    rules: Vec<Rule>,
    ignore_hold: bool,
    state: HashMap<(String, usize), RuleState>,
}

impl Evaluator {
    /// An evaluator; `ignore_hold` makes a condition fire at once (one-shot checks).
    pub fn new(rules: Vec<Rule>, ignore_hold: bool) -> Self {
        Self {
            rules,
            ignore_hold,
            state: HashMap::new(),
        }
    }

    /// The rules evaluated.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Alerts currently firing, as (server, rule index).
    pub fn firing(&self) -> impl Iterator<Item = (&str, &Rule)> {
        self.state
            .iter()
            .filter(|(_, s)| s.firing)
            .map(|((server, i), _)| (server.as_str(), &self.rules[*i]))
    }

    /// Feeds one derived sample of `server` taken at monotonic time `t` (s);
    /// returns the transitions it causes.
    pub fn evaluate(&mut self, server: &str, t: f64, d: &Derived) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let st = self.state.entry((server.to_owned(), i)).or_default();
            let value = d.get(&rule.metric);
            let holds = condition_holds(rule.condition, value, st);
            st.prev = value;
            let event = |state| AlertEvent {
                server: server.to_owned(),
                rule: rule.name.clone(),
                state,
                severity: rule.severity,
                metric: rule.metric.clone(),
                value,
                message: rule.message.clone(),
                ts_ms: d.wall_ms,
            };
            if holds {
                let since = *st.pending_since.get_or_insert(t);
                let held = self.ignore_hold || t - since >= rule.hold.as_secs_f64() - 1e-9;
                if held && !st.firing {
                    st.firing = true;
                    events.push(event(AlertState::Firing));
                }
            } else {
                st.pending_since = None;
                if std::mem::take(&mut st.firing) {
                    events.push(event(AlertState::Resolved));
                }
            }
        }
        events
    }
}

/// Rising: the first step must increase; later steps must not decrease.
fn condition_holds(c: Condition, value: Option<f64>, st: &RuleState) -> bool {
    let Some(v) = value else { return false };
    let started = st.pending_since.is_some();
    match (c, st.prev) {
        (Condition::Compare(op, x), _) => match op {
            Op::Gt => v > x,
            Op::Ge => v >= x,
            Op::Lt => v < x,
            Op::Le => v <= x,
        },
        (Condition::Rising, Some(p)) => v > p || (started && v >= p),
        (Condition::Falling, Some(p)) => v < p || (started && v <= p),
        (_, None) => false,
    }
}

/// Posts alert events as JSON to a webhook, off the scrape path.
#[derive(Debug, Clone)]
pub struct Webhook {
    client: reqwest::Client,
    url: String,
}

impl Webhook {
    /// A webhook poster for `url`.
    pub fn new(url: &str) -> Result<Self, RuleError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| RuleError::Yaml(e.to_string()))?;
        Ok(Self {
            client,
            url: url.to_owned(),
        })
    }

    /// Posts one event; errors are returned as text for the log.
    pub async fn post(&self, event: &AlertEvent) -> Result<(), String> {
        let resp = self
            .client
            .post(&self.url)
            .json(event)
            .send()
            .await
            .map_err(|e| crate::engine::request::error_chain(&e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered HTTP {}", resp.status().as_u16()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(y: &str) -> Vec<Rule> {
        parse_rules(y).unwrap()
    }

    fn kv(v: f64, t: i64) -> Derived {
        Derived {
            kv_cache_usage: Some(v),
            wall_ms: t,
            ..Derived::default()
        }
    }

    #[test]
    fn default_rules_parse() {
        let r = rules(DEFAULT_RULES);
        assert!(r.len() >= 4);
        let ttft = r.iter().find(|r| r.metric == "ttft_p95").unwrap();
        assert_eq!(ttft.condition, Condition::Compare(Op::Gt, 2.0));
        assert_eq!(ttft.hold, Duration::from_secs(120));
    }

    #[test]
    fn thresholds_with_units_and_bad_rules() {
        let r = rules("rules:\n- {name: a, when: ttft_p95 > 250ms, for: 1m, severity: critical, message: m}\n- {name: b, when: kv_cache_usage >= 90%}\n");
        assert_eq!(r[0].condition, Condition::Compare(Op::Gt, 0.25));
        assert_eq!(r[0].severity, Severity::Critical);
        assert_eq!(r[1].condition, Condition::Compare(Op::Ge, 0.9));
        assert_eq!(r[1].hold, Duration::ZERO);
        let e = parse_rules("rules:\n- {name: a, when: nope > 1}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown metric 'nope'"), "{e}");
        assert!(parse_rules("rules:\n- {name: a, when: kv_cache_usage ~ 1}\n").is_err());
        assert!(parse_rules("rules:\n- {name: a, when: kv_cache_usage > 1, for: soon}\n").is_err());
        assert!(parse_rules("rules: 3").is_err());
    }

    #[test]
    fn fires_only_after_the_hold_time_and_resolves() {
        let mut ev = Evaluator::new(
            rules("rules:\n- {name: kv, when: kv_cache_usage > 0.9, for: 5m}\n"),
            false,
        );
        // scripted series every 60 s: high from t=60 on, a dip at t=180 restarts the hold
        let series = [
            (0, 0.5),
            (60, 0.95),
            (120, 0.95),
            (180, 0.85),
            (240, 0.95),
            (300, 0.96),
            (420, 0.97),
            (540, 0.97),
            (600, 0.5),
        ];
        let mut log = Vec::new();
        for (t, v) in series {
            for e in ev.evaluate("s", f64::from(t), &kv(v, i64::from(t))) {
                log.push((t, e.state));
            }
        }
        // pending from 240; 240 + 300 = 540 fires; 600 resolves
        assert_eq!(
            log,
            vec![(540, AlertState::Firing), (600, AlertState::Resolved)]
        );
    }

    #[test]
    fn rising_requires_growth_then_no_drop() {
        let mut ev = Evaluator::new(
            rules("rules:\n- {name: q, when: waiting_requests rising, for: 2m}\n"),
            false,
        );
        let mut fired = Vec::new();
        let series = [
            (0, 1.0),
            (30, 1.0),
            (60, 2.0),
            (90, 3.0),
            (120, 3.0),
            (150, 4.0),
            (180, 5.0),
            (210, 2.0),
        ];
        for (t, v) in series {
            let d = Derived {
                waiting: Some(v),
                ..Derived::default()
            };
            for e in ev.evaluate("s", f64::from(t), &d) {
                fired.push((t, e.state));
            }
        }
        // starts rising at 60; held 2 min at 180; drops at 210
        assert_eq!(
            fired,
            vec![(180, AlertState::Firing), (210, AlertState::Resolved)]
        );
    }

    #[test]
    fn one_shot_checks_ignore_hold_and_missing_metrics_do_not_fire() {
        let mut ev = Evaluator::new(
            rules("rules:\n- {name: kv, when: kv_cache_usage > 0.9, for: 5m}\n"),
            true,
        );
        assert!(ev.evaluate("s", 0.0, &Derived::default()).is_empty());
        let e = ev.evaluate("s", 1.0, &kv(0.95, 7));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].ts_ms, 7);
        assert!(e[0]
            .log_line()
            .contains("alert firing [warning] kv server=s kv_cache_usage=0.9500"));
        assert_eq!(ev.firing().count(), 1);
    }
}
