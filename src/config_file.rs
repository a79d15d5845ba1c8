//! `--config FILE.yaml` and `--preset NAME`: flag values from a file or a
//! built-in set, layered under the command line.
//!
//! Every flag of `bench`/`sweep` is a key (its long name; `_` or `-`). Lists
//! become repeated flags (`slo: [ttft=500ms]`) or comma lists (`concurrency:
//! [1, 2, 4]`); `true` turns a switch on. Layers, lowest first: preset,
//! config file, command line. A flag given on the command line replaces the
//! key of the lower layers (and `--requests`/`--duration`, `--rate`/
//! `--concurrency`/`--users` replace each other). Errors name the file, the
//! line, the key and the fix.

use std::ffi::OsString;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;

/// The commented example written by `throtl init`.
pub const EXAMPLE: &str = r#"# throtl config: every key is a `throtl bench` / `throtl sweep` flag (long name).
# Use it with: throtl bench --config throtl.yaml   (flags on the command line win)

url: http://127.0.0.1:8000        # server base URL (a trailing /v1 is fine)
# model: my-model                 # default: the first model of /v1/models
api: openai-chat                  # or openai-completions

# --- Load: a closed loop ...
concurrency: 8                    # workers; in `throtl sweep` a list: [1, 2, 4, 8, 16]
# users: 20                       # closed-loop users with think time instead
# think-time: 2s:500ms            # pause between a user's requests (mean:jitter)
# --- ... or an open loop
# rate: 5                         # requests/s, sent on schedule whatever the server does
# arrival: poisson                # constant | poisson | gamma
# burstiness: 2                   # gamma only: CV of the gaps (1 = Poisson)
# max-concurrency: 64             # cap on requests in flight (arrivals wait, never dropped)
# ramp-up: 30s                    # ramp users or rate up; requests meanwhile are warmup

requests: 200                     # measured requests (or: duration: 2m)
warmup: 8                         # excluded from statistics
timeout: 60s
# retries: 3                      # resend failed requests (off by default: first-attempt latencies)
# retry-on: 429,5xx,connect       # which failures are retried (+ truncated, timeout)
# retry-max-wait: 30s             # longest backoff, the server's Retry-After included
# max-error-rate: 0.5             # exit 4 when more of the measured requests failed
# cold-connections: true          # measure TCP setup: no connections opened before the load

# --- Data
input-tokens: "512:128"           # 512, 512:128 (normal), uniform:128-1024
output-tokens: 128                # same forms; sent as max_tokens
tokenizer: cl100k_base            # o200k_base, path/to/tokenizer.json, or words
# dataset: jsonl:prompts.jsonl    # or sharegpt:ShareGPT_V3.json
# prefix-tokens: 1024             # shared prefix per group (prefix caching)
# prefix-groups: 8
# turns: 4                        # multi-turn chat: each turn resends the history and the real answers
ignore-eos: true                  # generate exactly max_tokens on vLLM-like servers
seed: 0

# --- SLOs and goodput
slo: [ttft=500ms, tpot=50ms]
slo-percentile: 95

# --- Output
# json: run.json
# records: requests.jsonl
"#;

/// Built-in presets as flag lists.
fn preset_flags(name: &str) -> Option<&'static [(&'static str, &'static str)]> {
    Some(match name {
        "quick" => &[
            ("requests", "50"),
            ("concurrency", "4"),
            ("warmup", "4"),
            ("input-tokens", "256"),
            ("output-tokens", "128"),
        ],
        "standard" => &[
            ("requests", "500"),
            ("concurrency", "16"),
            ("warmup", "16"),
            ("input-tokens", "512:128"),
            ("output-tokens", "256:64"),
        ],
        "stress" => &[
            ("duration", "5m"),
            ("concurrency", "128"),
            ("warmup", "64"),
            ("input-tokens", "uniform:128-2048"),
            ("output-tokens", "uniform:64-512"),
        ],
        _ => return None,
    })
}

/// A bad config file or preset.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigFileError(pub String);

/// One flag with its value(s), from a lower layer.
#[derive(Debug)]
pub(crate) struct Entry {
    key: String,
    values: Vec<String>,
    switch: bool,
}

/// Expands `--preset`/`--config` of a `bench` or `sweep` command line into
/// flags placed before the user's own; other commands pass through.
pub fn expand_args(argv: Vec<OsString>) -> Result<Vec<OsString>, ConfigFileError> {
    let sub = argv
        .get(1)
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_owned();
    if sub != "bench" && sub != "sweep" {
        return Ok(argv);
    }
    let rest: Vec<String> = argv[2..]
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let given = given_keys(&rest);
    let mut layers = Vec::new();
    if let Some(p) = option_value(&rest, "preset") {
        let flags = preset_flags(&p).ok_or_else(|| {
            ConfigFileError(format!("--preset '{p}': use quick, standard or stress"))
        })?;
        layers.extend(flags.iter().map(|(k, v)| Entry {
            key: (*k).into(),
            values: vec![(*v).into()],
            switch: false,
        }));
    }
    if let Some(path) = option_value(&rest, "config") {
        layers.extend(read_file(Path::new(&path), &sub)?);
    }
    let mut out: Vec<OsString> = argv[..2].to_vec();
    for e in layers.iter().filter(|e| !overridden(&e.key, &given)) {
        push_entry(&mut out, e);
    }
    out.extend(rest.into_iter().map(OsString::from));
    Ok(out)
}

fn push_entry(out: &mut Vec<OsString>, e: &Entry) {
    if e.switch {
        out.push(format!("--{}", e.key).into());
        return;
    }
    for v in &e.values {
        out.push(format!("--{}={v}", e.key).into());
    }
}

/// Long names of the flags given on the command line.
fn given_keys(rest: &[String]) -> Vec<String> {
    let shorts = [
        ("-c", "concurrency"),
        ("-n", "requests"),
        ("-d", "duration"),
        ("-m", "model"),
        ("-q", "quiet"),
    ];
    rest.iter()
        .filter_map(|a| {
            if let Some(long) = a.strip_prefix("--") {
                return Some(long.split('=').next().unwrap_or(long).to_owned());
            }
            shorts
                .iter()
                .find(|(s, _)| a.starts_with(s))
                .map(|(_, l)| (*l).to_owned())
        })
        .collect()
}

/// Flags that replace each other: giving one on the command line drops the others from lower layers.
fn overridden(key: &str, given: &[String]) -> bool {
    let groups: [&[&str]; 2] = [&["requests", "duration"], &["rate", "concurrency", "users"]];
    given.iter().any(|g| {
        g == key
            || groups
                .iter()
                .any(|grp| grp.contains(&key) && grp.contains(&g.as_str()))
    })
}

fn option_value(rest: &[String], name: &str) -> Option<String> {
    let flag = format!("--{name}");
    let eq = format!("--{name}=");
    rest.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(&eq) {
            Some(v.to_owned())
        } else if *a == flag {
            rest.get(i + 1).cloned()
        } else {
            None
        }
    })
}

fn read_file(path: &Path, sub: &str) -> Result<Vec<Entry>, ConfigFileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigFileError(format!("--config: cannot read '{}': {e}", path.display())))?;
    parse_config(&path.display().to_string(), &text, sub)
}

/// Parses a config text into flag entries, checking every key and value.
pub(crate) fn parse_config(
    name: &str,
    text: &str,
    sub: &str,
) -> Result<Vec<Entry>, ConfigFileError> {
    let doc: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
        let at = e.location().map_or(String::new(), |l| format!(":{}", l.line()));
        ConfigFileError(format!("{name}{at}: not valid YAML: {e}. Write one 'flag-name: value' per line (see `throtl init`)"))
    })?;
    let map = match doc {
        serde_norway::Value::Mapping(m) => m,
        serde_norway::Value::Null => return Ok(Vec::new()),
        _ => {
            return Err(ConfigFileError(format!(
                "{name}: the file must be a mapping of flag names to values, e.g. 'concurrency: 8'"
            )))
        }
    };
    let known = known_flags(sub);
    let mut out = Vec::new();
    for (k, v) in map {
        let raw = k.as_str().unwrap_or_default().to_owned();
        let key = raw.replace('_', "-");
        let at = format!("{name}:{}", line_of(text, &raw));
        if !known.contains(&key) || key == "config" || key == "preset" {
            return Err(ConfigFileError(format!(
                "{at}: unknown key '{raw}'{}",
                suggest(&key, &known)
            )));
        }
        let entry =
            entry_of(&key, v).map_err(|m| ConfigFileError(format!("{at}: key '{raw}': {m}")))?;
        check_value(sub, &entry).map_err(|m| ConfigFileError(format!("{at}: key '{raw}': {m}")))?;
        out.push(entry);
    }
    Ok(out)
}

fn entry_of(key: &str, v: serde_norway::Value) -> Result<Entry, String> {
    use serde_norway::Value as V;
    let scalar = |v: &V| -> Result<String, String> {
        match v {
            V::String(s) => Ok(s.clone()),
            V::Number(n) => Ok(n.to_string()),
            V::Bool(b) => Ok(b.to_string()),
            _ => Err("expected a single value (text or number)".into()),
        }
    };
    let comma_list = ["concurrency", "rates"].contains(&key);
    match v {
        V::Bool(b) => Ok(Entry {
            key: key.into(),
            values: if b { vec![] } else { vec!["false".into()] },
            switch: b,
        }),
        V::Sequence(items) => {
            let vals = items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?;
            let values = if comma_list {
                vec![vals.join(",")]
            } else {
                vals
            };
            Ok(Entry {
                key: key.into(),
                values,
                switch: false,
            })
        }
        other => Ok(Entry {
            key: key.into(),
            values: vec![scalar(&other)?],
            switch: false,
        }),
    }
}

/// Parses the flag alone with clap, so a bad value fails with clap's message.
fn check_value(sub: &str, e: &Entry) -> Result<(), String> {
    let mut argv: Vec<OsString> = vec!["throtl".into(), sub.into()];
    if e.key != "url" {
        argv.extend(["--url".into(), "http://127.0.0.1:1".into()]);
    }
    if e.values == ["false"] {
        return Ok(());
    }
    push_entry(&mut argv, e);
    Cli::try_parse_from_checked(argv)
}

fn known_flags(sub: &str) -> Vec<String> {
    let cmd = Cli::command();
    cmd.find_subcommand(sub)
        .map(|c| {
            c.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with(':'))
        })
        .map_or(0, |i| i + 1)
}

fn suggest(key: &str, known: &[String]) -> String {
    let best = known
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, k)) if d <= 3 => format!("; did you mean '{k}'?"),
        _ => "; keys are the long flag names of `throtl bench --help`".into(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn example_config_is_valid() {
        let entries = parse_config("throtl.yaml", EXAMPLE, "bench").unwrap();
        assert!(entries
            .iter()
            .any(|e| e.key == "slo" && e.values.len() == 2));
    }

    #[test]
    fn config_errors_name_line_key_and_fix() {
        let e = parse_config("c.yaml", "requests: 10\nconcurrenci: 4\n", "bench")
            .unwrap_err()
            .0;
        assert!(
            e.starts_with("c.yaml:2: unknown key 'concurrenci'")
                && e.contains("did you mean 'concurrency'"),
            "{e}"
        );
        let e = parse_config("c.yaml", "\n\nrate: fast\n", "bench")
            .unwrap_err()
            .0;
        assert!(
            e.starts_with("c.yaml:3: key 'rate'") && e.contains("fast"),
            "{e}"
        );
        let e = parse_config("c.yaml", "slo: [ttft=soon]\n", "bench")
            .unwrap_err()
            .0;
        assert!(e.starts_with("c.yaml:1: key 'slo'"), "{e}");
        let e = parse_config("c.yaml", "a: [1\n", "bench").unwrap_err().0;
        assert!(e.contains("not valid YAML"), "{e}");
    }

    #[test]
    fn flags_override_config_and_preset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "url: http://h:1\nconcurrency: 8\nrequests: 40\nslo: [ttft=1s]\n",
        )
        .unwrap();
        let argv = os(&[
            "throtl",
            "bench",
            "--preset",
            "quick",
            "--config",
            p.to_str().unwrap(),
            "-c",
            "2",
            "--duration",
            "5s",
        ]);
        let out: Vec<String> = expand_args(argv)
            .unwrap()
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert!(out.contains(&"--url=http://h:1".to_owned()));
        assert!(out.contains(&"--slo=ttft=1s".to_owned()));
        assert!(
            !out.iter()
                .any(|a| a.starts_with("--concurrency=") || a.starts_with("--requests=")),
            "{out:?}"
        );
        assert!(
            out.contains(&"--warmup=4".to_owned()),
            "preset applies: {out:?}"
        );
        let cli = Cli::try_parse_from(&out).unwrap();
        let crate::cli::Command::Bench(b) = cli.command else {
            panic!()
        };
        assert_eq!(b.concurrency, vec![2]);
        assert_eq!(b.duration, Some(std::time::Duration::from_secs(5)));
    }
}
