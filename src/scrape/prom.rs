//! A complete parser of the Prometheus text exposition format (0.0.4), also
//! accepting the OpenMetrics subset servers emit (`# EOF`, `# UNIT`).
//!
//! Handles `# HELP` / `# TYPE` (with their escapes), every metric type
//! (counter, gauge, histogram, summary, untyped, and OpenMetrics' info /
//! stateset / gaugehistogram as gauges), labels with `\\`, `\"` and `\n`
//! escapes, `NaN` / `+Inf` / `-Inf`, optional millisecond timestamps, and the
//! `_created` series of prometheus_client, kept as their own samples of the
//! family they belong to.

use std::collections::HashMap;

/// The declared type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Cumulative histogram (`_bucket{le}`, `_sum`, `_count`).
    Histogram,
    /// Summary (`{quantile}`, `_sum`, `_count`).
    Summary,
    /// No `# TYPE` line, or `untyped`.
    Untyped,
}

impl MetricKind {
    fn parse(s: &str) -> Self {
        match s {
            "counter" => Self::Counter,
            "gauge" | "info" | "stateset" | "gaugehistogram" => Self::Gauge,
            "histogram" => Self::Histogram,
            "summary" => Self::Summary,
            _ => Self::Untyped,
        }
    }

    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Self::Counter => &["_total", "_created"],
            Self::Histogram => &["_bucket", "_sum", "_count", "_created"],
            Self::Summary => &["_sum", "_count", "_created"],
            Self::Gauge | Self::Untyped => &[],
        }
    }
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Full series name as written (e.g. `x_bucket`).
    pub name: String,
    /// Labels in the order written, unescaped.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
    /// Optional timestamp (ms since the epoch).
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A metric family: its type, help and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Family name (without `_bucket`, `_sum`, ... suffixes).
    pub name: String,
    /// Declared type.
    pub kind: MetricKind,
    /// Unescaped help text.
    pub help: Option<String>,
    /// Samples in input order.
    pub samples: Vec<Sample>,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// Families in order of first appearance.
    pub families: Vec<Family>,
    index: HashMap<String, usize>,
}

/// A line that is not valid exposition text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl Exposition {
    /// The family called `name`.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.index.get(name).map(|&i| &self.families[i])
    }

    /// Every sample of series `name` (exact series name, e.g. `x_bucket`).
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.families
            .iter()
            .flat_map(|f| f.samples.iter())
            .filter(move |s| s.name == name)
    }

    /// Sum of every sample of series `name` across label sets; `None` if absent.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let mut it = self.series(name).peekable();
        it.peek()?;
        Some(it.map(|s| s.value).sum())
    }

    fn family_mut(&mut self, name: &str, kind: MetricKind) -> &mut Family {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.families.push(Family {
                    name: name.to_owned(),
                    kind,
                    help: None,
                    samples: Vec::new(),
                });
                self.index.insert(name.to_owned(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    /// The family a sample series belongs to: a declared family whose type
    /// allows the suffix, else a family of its own.
    fn owner_of(&self, series: &str) -> String {
        if let Some(f) = self.family(series) {
            if f.kind != MetricKind::Histogram && f.kind != MetricKind::Summary {
                return series.to_owned();
            }
        }
        for i in series
            .char_indices()
            .rev()
            .filter(|&(_, c)| c == '_')
            .map(|(i, _)| i)
        {
            let (base, suffix) = series.split_at(i);
            if let Some(f) = self.family(base) {
                if f.kind.suffixes().contains(&suffix) {
                    return base.to_owned();
                }
            }
        }
        series.to_owned()
    }
}

/// Parses a whole exposition body.
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    let mut exp = Exposition::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r').trim_start();
        let err = |reason: String| ParseError {
            line: i + 1,
            reason,
        };
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            if rest.trim() == "EOF" {
                break;
            }
            parse_comment(&mut exp, rest).map_err(err)?;
            continue;
        }
        let sample = parse_sample(line).map_err(err)?;
        let owner = exp.owner_of(&sample.name);
        exp.family_mut(&owner, MetricKind::Untyped)
            .samples
            .push(sample);
    }
    Ok(exp)
}

fn parse_comment(exp: &mut Exposition, rest: &str) -> Result<(), String> {
    let rest = rest.trim_start();
    let (keyword, tail) = split_word(rest);
    match keyword {
        "HELP" => {
            let (name, help) = split_word(tail);
            let help = unescape(help, false)?;
            exp.family_mut(name, MetricKind::Untyped).help = Some(help);
        }
        "TYPE" => {
            let (name, kind) = split_word(tail);
            if name.is_empty() {
                return Err("# TYPE without a metric name".into());
            }
            exp.family_mut(name, MetricKind::Untyped).kind = MetricKind::parse(kind.trim());
        }
        _ => {} // free comment, # UNIT
    }
    Ok(())
}

fn split_word(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i + 1..].trim_start_matches([' ', '\t'])),
        None => (s, ""),
    }
}

/// Parses `name{labels} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("'{name}' is not a valid metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        let (parsed, after) = parse_labels(&rest[1..])?;
        labels = parsed;
        rest = after;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("'{name}' has no value"))?;
    let value = parse_value(value)?;
    let timestamp_ms = match fields.next() {
        Some(t) => Some(parse_timestamp(t)?),
        None => None,
    };
    if let Some(extra) = fields.next() {
        if extra != "#" {
            return Err(format!("unexpected '{extra}' after the value of '{name}'"));
        }
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
        timestamp_ms,
    })
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Label pairs in written order.
type Labels = Vec<(String, String)>;

/// Parses labels after `{` up to the matching `}`; returns them and the rest.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        if !valid_name(key) || key.contains(':') {
            return Err(format!("'{key}' is not a valid label name"));
        }
        let after = s[eq + 1..].trim_start();
        let body = after
            .strip_prefix('"')
            .ok_or_else(|| format!("value of label '{key}' is not quoted"))?;
        let (value, rest) = take_quoted(body)?;
        labels.push((key.to_owned(), value));
        s = rest.trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

/// Reads a quoted label value (after the opening quote), unescaping it.
fn take_quoted(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated label value".into())
}

/// Unescapes help text (`\\` and `\n`; `\"` too when `quotes`).
fn unescape(s: &str, quotes: bool) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') if quotes => out.push('"'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    Ok(out)
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" | "nan" => Ok(f64::NAN),
        _ => s
            .parse::<f64>()
            .map_err(|_| format!("'{s}' is not a number")),
    }
}

fn parse_timestamp(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    // OpenMetrics writes seconds with a fraction.
    s.parse::<f64>()
        .map(|secs| (secs * 1000.0).round() as i64)
        .map_err(|_| format!("'{s}' is not a timestamp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_escapes_and_timestamps() {
        let text = "# HELP m A \\\\ help\\nline\n# TYPE m gauge\nm{a=\"x\\\"y\",b=\"1\\\\2\\n\",} 1.5e3 1700000000000\n";
        let e = parse(text).unwrap();
        let f = e.family("m").unwrap();
        assert_eq!(f.kind, MetricKind::Gauge);
        assert_eq!(f.help.as_deref(), Some("A \\ help\nline"));
        let s = &f.samples[0];
        assert_eq!(s.label("a"), Some("x\"y"));
        assert_eq!(s.label("b"), Some("1\\2\n"));
        assert_eq!(s.value, 1500.0);
        assert_eq!(s.timestamp_ms, Some(1_700_000_000_000));
    }

    #[test]
    fn groups_histogram_summary_and_created_series() {
        let text = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\nh_created 17.0\n\
                    # TYPE s summary\ns{quantile=\"0.5\"} NaN\ns_sum 0\ns_count 0\n# TYPE c counter\nc_total 4\nc_created 1.7e9\nu 7\n";
        let e = parse(text).unwrap();
        assert_eq!(e.family("h").unwrap().samples.len(), 5);
        let s = e.family("s").unwrap();
        assert_eq!(s.kind, MetricKind::Summary);
        assert!(s.samples[0].value.is_nan());
        assert_eq!(e.family("c").unwrap().samples.len(), 2);
        assert_eq!(e.family("u").unwrap().kind, MetricKind::Untyped);
        assert_eq!(e.series("h_bucket").last().unwrap().value, 2.0);
        assert!(e.series("h_bucket").next().unwrap().label("le") == Some("1"));
    }

    #[test]
    fn infinities_and_eof() {
        let e = parse("a +Inf\nb -Inf\n# EOF\nc 1\n").unwrap();
        assert_eq!(e.sum("a"), Some(f64::INFINITY));
        assert_eq!(e.sum("b"), Some(f64::NEG_INFINITY));
        assert!(e.family("c").is_none());
    }

    /// Every captured fixture parses, and every histogram is consistent:
    /// buckets cumulative, `+Inf` bucket == `_count`, per label set.
    #[test]
    fn fixtures_parse_with_consistent_histograms() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/metrics");
        let mut histograms = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let e = parse(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            assert!(!e.families.is_empty());
            for f in e
                .families
                .iter()
                .filter(|f| f.kind == MetricKind::Histogram)
            {
                histograms += 1;
                let key = |s: &Sample| {
                    let mut l: Vec<_> = s
                        .labels
                        .iter()
                        .filter(|(k, _)| k != "le")
                        .cloned()
                        .collect();
                    l.sort();
                    l
                };
                let bucket = format!("{}_bucket", f.name);
                let count = format!("{}_count", f.name);
                for c in f.samples.iter().filter(|s| s.name == count) {
                    let buckets: Vec<&Sample> = f
                        .samples
                        .iter()
                        .filter(|s| s.name == bucket && key(s) == key(c))
                        .collect();
                    assert!(
                        buckets.windows(2).all(|w| w[0].value <= w[1].value),
                        "{} not cumulative",
                        f.name
                    );
                    let inf = buckets
                        .iter()
                        .find(|s| s.label("le") == Some("+Inf"))
                        .unwrap();
                    assert_eq!(inf.value, c.value, "{} in {}", f.name, path.display());
                }
            }
        }
        assert!(histograms > 20, "{histograms}");
    }

    #[test]
    fn tgi_bucket_layout_and_vllm_created_series() {
        let tgi = parse(include_str!("../../tests/fixtures/metrics/tgi.prom")).unwrap();
        let f = tgi.family("tgi_request_duration").unwrap();
        assert_eq!(f.kind, MetricKind::Histogram);
        assert!(f.help.is_none(), "TGI writes no # HELP");
        let v1 = parse(include_str!("../../tests/fixtures/metrics/vllm_v1.prom")).unwrap();
        let created = v1.family("vllm:prompt_tokens_created").unwrap();
        assert_eq!(created.kind, MetricKind::Gauge);
        assert!(created.samples[0].value > 1.7e9);
        let ttft = v1.family("vllm:time_to_first_token_seconds").unwrap();
        assert_eq!(
            ttft.help.as_deref(),
            Some("Histogram of time to first token in seconds.")
        );
        assert_eq!(
            ttft.samples[0].label("model_name"),
            Some("meta-llama/Llama-3.1-8B-Instruct")
        );
    }

    #[test]
    fn bad_lines_are_errors_with_line_numbers() {
        assert_eq!(parse("ok 1\nbad{a=1} 2\n").unwrap_err().line, 2);
        assert!(parse("x{a=\"unterminated} 1").is_err());
        assert!(parse("x notanumber").is_err());
        assert!(parse("9x 1").is_err());
        assert!(parse("x").is_err());
    }
}
