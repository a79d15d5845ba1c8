//! Cost of a run: from a GPU hourly price (self-hosted) or a per-token price
//! table (hosted APIs). Format and built-in table: docs/results.md.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::report::RunReport;

/// Date of the built-in price table; prices change, check before relying on them.
pub const BUILTIN_AS_OF: &str = "2025-06-01";

/// Built-in list prices (USD per 1M tokens: input, output) of a few hosted models.
const BUILTIN: &[(&str, f64, f64)] = &[
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("claude-sonnet-4-20250514", 3.00, 15.00),
    ("claude-3-5-haiku-20241022", 0.80, 4.00),
];

/// Per-token price of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenPrice {
    /// USD per 1M prompt tokens.
    pub input_per_1m: f64,
    /// USD per 1M generated tokens.
    pub output_per_1m: f64,
}

/// A `--price-file`: `as_of` date and prices by model name (YAML or JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceTable {
    /// When the prices were taken.
    pub as_of: String,
    /// Prices by model name.
    pub models: BTreeMap<String, TokenPrice>,
}

/// A bad `--price-file`.
#[derive(Debug, thiserror::Error)]
#[error("--price-file '{path}': {reason}. Expected YAML like:\nas_of: 2025-06-01\nmodels:\n  my-model: {{input_per_1m: 0.5, output_per_1m: 1.5}}")]
pub struct PriceFileError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl PriceTable {
    /// The built-in table (see [`BUILTIN_AS_OF`]).
    pub fn builtin() -> Self {
        Self {
            as_of: BUILTIN_AS_OF.into(),
            models: BUILTIN
                .iter()
                .map(|&(m, i, o)| {
                    (
                        m.to_owned(),
                        TokenPrice {
                            input_per_1m: i,
                            output_per_1m: o,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Reads a price file (YAML; JSON is valid YAML).
    pub fn load(path: &Path) -> Result<Self, PriceFileError> {
        let err = |reason: String| PriceFileError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let t: Self = serde_norway::from_str(&text).map_err(|e| err(e.to_string()))?;
        for (m, p) in &t.models {
            if !(p.input_per_1m >= 0.0 && p.output_per_1m >= 0.0) {
                return Err(err(format!("prices of '{m}' must be numbers ≥ 0")));
            }
        }
        Ok(t)
    }
}

/// How a run is priced (`--gpu-cost-per-hour`, `--price-file`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CostModel {
    /// USD per hour of the serving hardware (self-hosted).
    pub gpu_cost_per_hour: Option<f64>,
    /// Per-token prices (hosted APIs); looked up by the run's model name.
    pub prices: Option<PriceTable>,
}

/// The `cost` section of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// `gpu_hour` or `token_price`.
    pub basis: String,
    /// Hourly price used (gpu_hour basis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_cost_per_hour: Option<f64>,
    /// Token prices used (token_price basis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<TokenPrice>,
    /// Date of the token prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_as_of: Option<String>,
    /// USD per 1M output tokens.
    pub usd_per_1m_output_tokens: f64,
    /// USD per successful request.
    pub usd_per_request: f64,
}

impl CostModel {
    /// Prices a report; `None` when nothing is configured, the model has no
    /// price, or the run produced nothing to divide by.
    pub fn price(&self, r: &RunReport) -> Option<Cost> {
        if let Some(per_hour) = self.gpu_cost_per_hour {
            return gpu_cost(per_hour, r);
        }
        let table = self.prices.as_ref()?;
        let p = table.models.get(&r.target.model)?;
        let (ok, out) = (r.requests.ok, r.tokens.output_total);
        if ok == 0 || out == 0 {
            return None;
        }
        let total =
            (r.tokens.input_total as f64 * p.input_per_1m + out as f64 * p.output_per_1m) / 1e6;
        Some(Cost {
            basis: "token_price".into(),
            gpu_cost_per_hour: None,
            price: Some(p.clone()),
            price_as_of: Some(table.as_of.clone()),
            usd_per_1m_output_tokens: total / out as f64 * 1e6,
            usd_per_request: total / ok as f64,
        })
    }
}

fn gpu_cost(per_hour: f64, r: &RunReport) -> Option<Cost> {
    let t = &r.throughput;
    if t.output_tokens_per_s <= 0.0 || t.requests_per_s <= 0.0 {
        return None;
    }
    let per_s = per_hour / 3600.0;
    Some(Cost {
        basis: "gpu_hour".into(),
        gpu_cost_per_hour: Some(per_hour),
        price: None,
        price_as_of: None,
        usd_per_1m_output_tokens: per_s / t.output_tokens_per_s * 1e6,
        usd_per_request: per_s / t.requests_per_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_files_parse_and_bad_ones_explain_the_format() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("p.yaml");
        std::fs::write(
            &good,
            "as_of: 2025-01-01\nmodels:\n  m: {input_per_1m: 1.0, output_per_1m: 2.0}\n",
        )
        .unwrap();
        let t = PriceTable::load(&good).unwrap();
        assert_eq!(t.models["m"].output_per_1m, 2.0);
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "models: [1, 2]\n").unwrap();
        let err = PriceTable::load(&bad).unwrap_err().to_string();
        assert!(
            err.contains("--price-file") && err.contains("input_per_1m"),
            "{err}"
        );
        assert_eq!(PriceTable::builtin().as_of, BUILTIN_AS_OF);
    }
}
