//! The search space (`--space FILE`): knobs, their values, the engine's
//! defaults and the constraints between knobs. Every knob is discrete (a
//! value list, or a range cut by `step` or into `steps` log-spaced points),
//! so the space is a finite grid the search samples from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::expr::Expr;
use super::TuneError;

/// One knob's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A real number.
    Float(f64),
    /// A word, e.g. `fp8`.
    Str(String),
}

impl Value {
    /// The number (booleans are 1/0); `None` for a string.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Str(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", round_float(*x)),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// Rounds away binary noise of range steps (0.1 + 0.2 → 0.3).
fn round_float(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

/// Knob values by name: one configuration.
pub type Candidate = BTreeMap<String, Value>;

/// The YAML form of a knob.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnobSpec {
    #[serde(rename = "type")]
    kind: Option<String>,
    values: Option<Vec<Value>>,
    min: Option<f64>,
    max: Option<f64>,
    step: Option<f64>,
    #[serde(default)]
    log: bool,
    steps: Option<u32>,
    default: Option<Value>,
}

/// The YAML form of a space.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpaceSpec {
    knobs: Option<BTreeMap<String, KnobSpec>>,
    #[serde(default)]
    constraints: Vec<String>,
    gpus: Option<String>,
}

/// A knob: its candidate values and the engine's default.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Knob {
    /// Name, as used by `{name}` in `--launch`.
    pub name: String,
    /// Candidate values, in order (numeric knobs ascending).
    pub values: Vec<Value>,
    /// The engine's default (trial 0).
    pub default: Value,
    /// A boolean flag (usable as `{name?--flag}`).
    pub is_bool: bool,
    /// Values are ordered, so neighbours are similar (numeric knobs).
    pub ordinal: bool,
}

/// A validated space.
#[derive(Debug, Clone)]
pub struct Space {
    /// Knobs by name order.
    pub knobs: Vec<Knob>,
    /// Constraints every launched candidate satisfies.
    pub constraints: Vec<(String, Expr)>,
    /// GPUs a candidate uses (`gpus:` expression; 1 without one), for `--objective cost`.
    pub gpus: Option<(String, Expr)>,
}

/// Largest grid enumerated exhaustively; bigger spaces are sampled.
pub const MAX_GRID: usize = 100_000;

impl Space {
    /// Reads and validates a space file.
    pub fn load(path: &Path) -> Result<Self, TuneError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            TuneError::Space(format!("cannot read --space '{}': {e}", path.display()))
        })?;
        Self::parse(&text)
            .map_err(|e| TuneError::Space(format!("--space '{}': {e}", path.display())))
    }

    /// Parses and validates a space from YAML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let spec: SpaceSpec = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        let knobs = spec
            .knobs
            .unwrap_or_default()
            .into_iter()
            .map(|(name, k)| knob(name, k))
            .collect::<Result<Vec<_>, _>>()?;
        if knobs.is_empty() {
            return Err("the space has no knobs: list at least one under 'knobs:' (throtl tune --init writes an example)".into());
        }
        let names: Vec<&str> = knobs.iter().map(|k| k.name.as_str()).collect();
        let parse = |src: &str| -> Result<(String, Expr), String> {
            let e = Expr::parse(src).map_err(|e| format!("constraint '{src}': {e}"))?;
            if let Some(bad) = e.knobs().into_iter().find(|k| !names.contains(k)) {
                return Err(format!(
                    "'{src}' names '{bad}', which is not a knob (knobs: {})",
                    names.join(", ")
                ));
            }
            Ok((src.to_owned(), e))
        };
        let constraints = spec
            .constraints
            .iter()
            .map(|c| parse(c))
            .collect::<Result<Vec<_>, _>>()?;
        let gpus = spec.gpus.as_deref().map(parse).transpose()?;
        let space = Space {
            knobs,
            constraints,
            gpus,
        };
        space.check_defaults()?;
        space.check_not_empty()?;
        Ok(space)
    }

    fn check_defaults(&self) -> Result<(), String> {
        let d = self.defaults();
        match self.violated(&d) {
            Some(c) => Err(format!(
                "the defaults ({}) violate the constraint '{c}'; trial 0 runs the defaults, so fix the defaults or the constraint",
                describe(&d)
            )),
            None => Ok(()),
        }
    }

    fn check_not_empty(&self) -> Result<(), String> {
        if self.size() <= MAX_GRID && self.grid().is_empty() {
            let list: Vec<&str> = self.constraints.iter().map(|c| c.0.as_str()).collect();
            return Err(format!(
                "the constraints exclude every candidate of the space ({}); loosen them",
                list.join("; ")
            ));
        }
        Ok(())
    }

    /// The knob called `name`.
    pub fn knob(&self, name: &str) -> Option<&Knob> {
        self.knobs.iter().find(|k| k.name == name)
    }

    /// The engine's defaults.
    pub fn defaults(&self) -> Candidate {
        self.knobs
            .iter()
            .map(|k| (k.name.clone(), k.default.clone()))
            .collect()
    }

    /// Candidates in the full grid (before constraints).
    pub fn size(&self) -> usize {
        self.knobs
            .iter()
            .map(|k| k.values.len())
            .fold(1usize, usize::saturating_mul)
    }

    /// The first constraint `c` violates (an evaluation error counts as a violation).
    pub fn violated(&self, c: &Candidate) -> Option<&str> {
        self.constraints
            .iter()
            .find(|(_, e)| !e.holds(c).unwrap_or(false))
            .map(|(s, _)| s.as_str())
    }

    /// GPUs of a candidate (the `gpus:` expression, else 1).
    pub fn gpus(&self, c: &Candidate) -> f64 {
        self.gpus
            .as_ref()
            .and_then(|(_, e)| e.number(c).ok())
            .filter(|g| *g > 0.0)
            .unwrap_or(1.0)
    }

    /// Every candidate meeting the constraints, in knob order (call only
    /// when [`Space::size`] ≤ [`MAX_GRID`]).
    pub fn grid(&self) -> Vec<Candidate> {
        let mut out = vec![Candidate::new()];
        for k in &self.knobs {
            out = out
                .into_iter()
                .flat_map(|c| {
                    k.values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.insert(k.name.clone(), v.clone());
                        c
                    })
                })
                .collect();
        }
        out.retain(|c| self.violated(c).is_none());
        out
    }
}

/// `a=1 b=true` for messages.
pub fn describe(c: &Candidate) -> String {
    c.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn knob(name: String, k: KnobSpec) -> Result<Knob, String> {
    let kind = k.kind.as_deref();
    let values = match (kind, &k.values) {
        (Some("bool"), None) => vec![Value::Bool(false), Value::Bool(true)],
        (_, Some(v)) if v.is_empty() => {
            return Err(format!("knob '{name}': 'values' is empty"));
        }
        (_, Some(v)) => v.clone(),
        (Some("int") | Some("float"), None) => range(&name, &k)?,
        (None, None) => {
            return Err(format!(
                "knob '{name}': give 'values: [..]', or 'type: int|float' with 'min', 'max' and 'step' (or 'log: true' and 'steps'), or 'type: bool'"
            ))
        }
        (Some(other), None) => {
            return Err(format!(
                "knob '{name}': unknown type '{other}' (use int, float or bool, or list 'values')"
            ))
        }
    };
    let is_bool = values.iter().all(|v| matches!(v, Value::Bool(_)));
    let default = match (k.default, is_bool) {
        (Some(d), _) => d,
        (None, true) => Value::Bool(false),
        (None, false) => {
            return Err(format!(
                "knob '{name}' has no 'default': give the engine's default value (trial 0 measures the defaults)"
            ))
        }
    };
    if is_bool && !matches!(default, Value::Bool(_)) {
        return Err(format!(
            "knob '{name}' is boolean but its default is '{default}'"
        ));
    }
    let ordinal = values
        .iter()
        .all(|v| matches!(v, Value::Int(_) | Value::Float(_)));
    Ok(Knob {
        name,
        values,
        default,
        is_bool,
        ordinal,
    })
}

fn range(name: &str, k: &KnobSpec) -> Result<Vec<Value>, String> {
    let (Some(min), Some(max)) = (k.min, k.max) else {
        return Err(format!("knob '{name}': a range needs 'min' and 'max'"));
    };
    if !(min.is_finite() && max.is_finite() && min <= max) {
        return Err(format!(
            "knob '{name}': need min <= max, got {min} and {max}"
        ));
    }
    let int = k.kind.as_deref() == Some("int");
    let points: Vec<f64> = if k.log {
        let n = k.steps.unwrap_or(5).max(2);
        if min <= 0.0 {
            return Err(format!("knob '{name}': a log range needs min > 0"));
        }
        let r = (max / min).ln() / f64::from(n - 1);
        (0..n).map(|i| min * (r * f64::from(i)).exp()).collect()
    } else {
        let Some(step) = k.step.filter(|s| *s > 0.0) else {
            return Err(format!("knob '{name}': a linear range needs a positive 'step' (or 'log: true' with 'steps')"));
        };
        let n = ((max - min) / step + 1e-9).floor() as u64;
        if n > 10_000 {
            return Err(format!(
                "knob '{name}': the range has {n} points; use a larger step"
            ));
        }
        (0..=n).map(|i| min + step * i as f64).collect()
    };
    let mut values: Vec<Value> = points
        .into_iter()
        .map(|x| {
            if int {
                Value::Int(x.round() as i64)
            } else {
                Value::Float(round_float(x))
            }
        })
        .collect();
    values.dedup();
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_ranges_log_and_constraints() {
        let s = Space::parse(
            r#"
knobs:
  max_num_seqs: {type: int, min: 16, max: 256, log: true, steps: 5, default: 256}
  mnbt: {type: int, min: 2048, max: 8192, step: 2048, default: 8192}
  util: {type: float, min: 0.8, max: 0.9, step: 0.05, default: 0.9}
  dtype: {values: [auto, fp8], default: auto}
  prefix: {type: bool}
constraints:
  - "max_num_seqs * 32 <= mnbt"
gpus: "1 + prefix"
"#,
        )
        .unwrap();
        let seqs = &s.knob("max_num_seqs").unwrap().values;
        assert_eq!(
            seqs,
            &[16, 32, 64, 128, 256].map(Value::Int).to_vec(),
            "log points"
        );
        assert_eq!(s.knob("mnbt").unwrap().values.len(), 4);
        assert_eq!(
            s.knob("util").unwrap().values,
            vec![Value::Float(0.8), Value::Float(0.85), Value::Float(0.9)]
        );
        assert!(s.knob("prefix").unwrap().is_bool);
        assert_eq!(s.size(), 5 * 4 * 3 * 2 * 2);
        assert!(s.grid().iter().all(|c| s.violated(c).is_none()));
        assert!(s.grid().len() < s.size());
        let mut d = s.defaults();
        assert_eq!(s.gpus(&d), 1.0);
        d.insert("prefix".into(), Value::Bool(true));
        assert_eq!(s.gpus(&d), 2.0);
    }

    #[test]
    fn issue13_space_errors_name_the_problem() {
        let e = Space::parse("knobs: {}").unwrap_err();
        assert!(e.contains("no knobs"), "{e}");
        let e = Space::parse("constraints: []").unwrap_err();
        assert!(e.contains("no knobs"), "{e}");
        let e = Space::parse("knobs: {a: {values: [1, 2], default: 1}}\nconstraints: ['a > 5']")
            .unwrap_err();
        assert!(e.contains("violate the constraint 'a > 5'"), "{e}");
        let e = Space::parse(
            "knobs: {a: {values: [1, 2], default: 1}, b: {values: [1], default: 9}}\nconstraints: ['a + b > 4 || a == 1 && b == 9']",
        )
        .unwrap_err();
        assert!(e.contains("exclude every candidate"), "{e}");
        let e =
            Space::parse("knobs: {a: {values: [1, 2], default: 1}}\nconstraints: ['a * tp <= 8']")
                .unwrap_err();
        assert!(e.contains("'tp', which is not a knob"), "{e}");
        let e = Space::parse("knobs: {a: {values: [1, 2]}}").unwrap_err();
        assert!(e.contains("no 'default'"), "{e}");
        let e = Space::parse("knobs: {a: {type: int, min: 1, max: 4, default: 1}}").unwrap_err();
        assert!(e.contains("'step'"), "{e}");
        let e = Space::parse("knobs: {a: {valuez: [1]}}").unwrap_err();
        assert!(e.contains("valuez"), "{e}");
    }
}
