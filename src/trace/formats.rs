//! Parsers of the trace formats. Each reads the whole file into
//! [`TraceRequest`]s sorted by arrival, with time 0 at the first arrival.
//! Every problem names the file, the 1-based line and the field.
//!
//! Sources of the formats (the full public files parse as they are):
//! - Mooncake: `kvcache-ai/Mooncake`, `FAST25-release/traces/*.jsonl` and its
//!   README: `timestamp` (ms), `input_length`, `output_length`, `hash_ids`
//!   (one id per 512-token block; equal ids mean equal prefixes).
//! - Azure: `Azure/AzurePublicDataset`, `AzureLLMInferenceTrace_{code,conv}.csv`
//!   (2023) and the 2024 week-long files: `TIMESTAMP,ContextTokens,GeneratedTokens`.
//! - BurstGPT: `HPMLL/BurstGPT`, `BurstGPT_*.csv`: `Timestamp` (s),
//!   `Model`, `Request tokens`, `Response tokens`, `Total tokens`, `Log Type`.
//! - Throtl: what `throtl record` writes, `docs/trace.schema.json`.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{TraceError, TraceFormat, TraceRequest, TraceSpec, MOONCAKE_BLOCK_TOKENS};

/// Reads every request of the trace `spec` names.
pub fn read(spec: &TraceSpec) -> Result<Vec<TraceRequest>, TraceError> {
    let text = std::fs::read_to_string(&spec.path)
        .map_err(|e| TraceError(format!("cannot read trace '{}': {e}", spec.path.display())))?;
    parse(spec.format, &spec.path, &text)
}

/// Parses `text` (the contents of `path`) as `format`.
pub fn parse(
    format: TraceFormat,
    path: &Path,
    text: &str,
) -> Result<Vec<TraceRequest>, TraceError> {
    let raw = match format {
        TraceFormat::Mooncake => jsonl(path, text, mooncake_line)?,
        TraceFormat::Throtl => jsonl(path, text, throtl_line)?,
        TraceFormat::Azure => csv(path, text, &AZURE)?,
        TraceFormat::Burstgpt => csv(path, text, &BURSTGPT)?,
    };
    Ok(normalise(raw))
}

/// A parsed request with its raw timestamp in nanoseconds (integers, so
/// Unix-epoch timestamps keep their sub-microsecond digits).
type Timed = (i128, TraceRequest);

/// Nanoseconds of `x` units of `per_ns` nanoseconds each.
fn nanos(x: f64, per_ns: f64) -> i128 {
    (x * per_ns).round() as i128
}

/// Sorts by time (stable: equal timestamps keep file order) and makes the
/// first arrival time 0.
fn normalise(mut raw: Vec<Timed>) -> Vec<TraceRequest> {
    raw.sort_by_key(|r| r.0);
    let t0 = raw.first().map_or(0, |r| r.0);
    raw.into_iter()
        .map(|(t, mut r)| {
            r.at = Duration::from_nanos(u64::try_from(t - t0).unwrap_or(u64::MAX));
            r
        })
        .collect()
}

fn jsonl(
    path: &Path,
    text: &str,
    line_fn: fn(&Path, usize, &Value) -> Result<Timed, TraceError>,
) -> Result<Vec<Timed>, TraceError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| TraceError(format!("{}:{n}: not a JSON object: {e}", path.display())))?;
        if !v.is_object() {
            return Err(TraceError(format!(
                "{}:{n}: not a JSON object",
                path.display()
            )));
        }
        out.push(line_fn(path, n, &v)?);
    }
    Ok(out)
}

fn num(path: &Path, n: usize, v: &Value, field: &str) -> Result<f64, TraceError> {
    match v.get(field) {
        None | Some(Value::Null) => Err(TraceError::at(path, n, field, "missing")),
        Some(x) => x
            .as_f64()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| TraceError::at(path, n, field, format!("'{x}' is not a number ≥ 0"))),
    }
}

fn count(path: &Path, n: usize, v: &Value, field: &str) -> Result<u32, TraceError> {
    let x = num(path, n, v, field)?;
    if x.fract() != 0.0 || x > f64::from(u32::MAX) {
        return Err(TraceError::at(
            path,
            n,
            field,
            format!("'{x}' is not a whole number of tokens"),
        ));
    }
    Ok(x as u32)
}

fn hashes(path: &Path, n: usize, v: &Value, field: &str) -> Result<Vec<u64>, TraceError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|h| {
                h.as_u64().ok_or_else(|| {
                    TraceError::at(path, n, field, format!("'{h}' is not a whole number"))
                })
            })
            .collect(),
        Some(x) => Err(TraceError::at(
            path,
            n,
            field,
            format!("'{x}' is not an array of block hashes"),
        )),
    }
}

fn mooncake_line(path: &Path, n: usize, v: &Value) -> Result<Timed, TraceError> {
    let t = nanos(num(path, n, v, "timestamp")?, 1e6);
    Ok((
        t,
        TraceRequest {
            input_tokens: count(path, n, v, "input_length")?,
            output_tokens: count(path, n, v, "output_length")?,
            hash_ids: hashes(path, n, v, "hash_ids")?,
            block_tokens: MOONCAKE_BLOCK_TOKENS,
            line: n,
            ..Default::default()
        },
    ))
}

fn opt_str(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(x) => Some(x.to_string()),
        _ => None,
    }
}

fn throtl_line(path: &Path, n: usize, v: &Value) -> Result<Timed, TraceError> {
    let version = v.get("v").and_then(Value::as_u64);
    if version != Some(1) {
        return Err(TraceError::at(
            path,
            n,
            "v",
            "expected 1 (this is not a `throtl record` trace, or a newer one)",
        ));
    }
    let t = nanos(num(path, n, v, "timestamp_ms")?, 1e6);
    let output = match v.get("output_tokens") {
        Some(Value::Null) | None => 0,
        Some(_) => count(path, n, v, "output_tokens")?,
    };
    let max = match v.get("max_tokens") {
        Some(Value::Null) | None => 0,
        Some(_) => count(path, n, v, "max_tokens")?,
    };
    let block_tokens = match v.get("block_tokens") {
        Some(Value::Null) | None => MOONCAKE_BLOCK_TOKENS,
        Some(_) => count(path, n, v, "block_tokens")?.max(1),
    };
    Ok((
        t,
        TraceRequest {
            input_tokens: count(path, n, v, "prompt_tokens")?,
            // What was generated is the shape of the traffic; a failed
            // request falls back to what it asked for.
            output_tokens: if output > 0 { output } else { max },
            hash_ids: hashes(path, n, v, "hash_ids")?,
            block_tokens,
            conversation: opt_str(v, "conversation"),
            model: opt_str(v, "model"),
            line: n,
            ..Default::default()
        },
    ))
}

/// Which columns of a CSV trace hold what.
struct CsvLayout {
    format: TraceFormat,
    timestamp: &'static str,
    input: &'static str,
    output: &'static str,
    model: Option<&'static str>,
    /// Parses a timestamp cell into nanoseconds.
    time: fn(&str) -> Option<i128>,
}

const AZURE: CsvLayout = CsvLayout {
    format: TraceFormat::Azure,
    timestamp: "TIMESTAMP",
    input: "ContextTokens",
    output: "GeneratedTokens",
    model: None,
    time: azure_time,
};

const BURSTGPT: CsvLayout = CsvLayout {
    format: TraceFormat::Burstgpt,
    timestamp: "Timestamp",
    input: "Request tokens",
    output: "Response tokens",
    model: Some("Model"),
    time: seconds,
};

fn seconds(s: &str) -> Option<i128> {
    s.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .map(|x| nanos(x, 1e9))
}

/// `2023-11-16 18:15:46.6805900` (any number of fraction digits, an
/// optional `+00:00` or `Z` suffix) as Unix nanoseconds.
fn azure_time(s: &str) -> Option<i128> {
    let s = s.trim().trim_end_matches('Z');
    let s = match s.rfind(['+', '-']) {
        Some(i) if i > 10 && s[i..].contains(':') => &s[..i],
        _ => s,
    };
    let (date, clock) = s.split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut c = clock.split(':');
    let (h, min) = (
        c.next()?.parse::<i64>().ok()?,
        c.next()?.parse::<i64>().ok()?,
    );
    let cell = c.next()?;
    let (sec, frac) = cell.split_once('.').unwrap_or((cell, ""));
    let sec = sec.parse::<i64>().ok()?;
    // The first nine fraction digits, as nanoseconds.
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|d| d.is_ascii_digit()) {
        return None;
    }
    let frac_ns = format!("{digits:0<9}").parse::<i128>().ok()?;
    let days = days_from_civil(y, m, day);
    let whole = i128::from(days * 86_400 + h * 3600 + min * 60 + sec);
    Some(whole * 1_000_000_000 + frac_ns)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Splits a CSV record; double-quoted cells may hold commas and `""`.
fn cells(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

fn csv(path: &Path, text: &str, layout: &CsvLayout) -> Result<Vec<Timed>, TraceError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let header: Vec<String> = cells(header.trim_start_matches('\u{feff}'));
    let col = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            TraceError(format!(
                "{}:1: no '{name}' column in the header of this {} trace (columns: {})",
                path.display(),
                layout.format.as_str(),
                header.join(", ")
            ))
        })
    };
    let (ti, ii, oi) = (
        col(layout.timestamp)?,
        col(layout.input)?,
        col(layout.output)?,
    );
    let mi = layout.model.map(col).transpose()?;
    let mut out = Vec::new();
    for (i, line) in lines {
        let n = i + 1;
        let c = cells(line);
        let cell = |idx: usize, name: &str| {
            c.get(idx)
                .map(String::as_str)
                .ok_or_else(|| TraceError::at(path, n, name, "missing (too few columns)"))
        };
        let ts = cell(ti, layout.timestamp)?;
        let t = (layout.time)(ts).ok_or_else(|| {
            TraceError::at(
                path,
                n,
                layout.timestamp,
                format!("'{ts}' is not a timestamp"),
            )
        })?;
        let tokens = |idx: usize, name: &str| -> Result<u32, TraceError> {
            let s = cell(idx, name)?;
            s.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0 && x.fract() == 0.0)
                .map(|x| x.min(f64::from(u32::MAX)) as u32)
                .ok_or_else(|| TraceError::at(path, n, name, format!("'{s}' is not a token count")))
        };
        out.push((
            t,
            TraceRequest {
                input_tokens: tokens(ii, layout.input)?,
                output_tokens: tokens(oi, layout.output)?,
                model: mi.and_then(|m| c.get(m).cloned()),
                line: n,
                ..Default::default()
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_timestamps_parse_to_unix_seconds() {
        let t = azure_time("2023-11-16 18:15:46.6805900").unwrap();
        // 2023-11-16T18:15:46Z is 1700158546.
        assert_eq!(t, 1_700_158_546_680_590_000);
        assert_eq!(
            azure_time("2023-11-16 18:15:46").unwrap() % 1_000_000_000,
            0
        );
        assert!(azure_time("2024-05-10 00:00:00.0099300+00:00").is_some());
        assert!(azure_time("yesterday").is_none());
    }

    #[test]
    fn csv_cells_handle_quotes() {
        assert_eq!(cells(r#"a, "b,c" ,"d""e""#), vec!["a", "b,c", "d\"e"]);
    }
}
