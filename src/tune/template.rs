//! The `--launch` template: a shell command with placeholders.
//!
//! - `{port}`: the port picked for the trial (required).
//! - `{knob}`: the knob's value (shell-quoted when it needs quoting).
//! - `{knob?TEXT}`: TEXT when the boolean knob is true, nothing when false
//!   (e.g. `{enable_prefix_caching?--enable-prefix-caching}`).
//! - `{{` and `}}`: literal braces.

use super::space::{Candidate, Space, Value};
use super::TuneError;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Port,
    Knob(String),
    Flag(String, String),
}

/// A parsed, validated template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `src` and checks it against `space`: every placeholder names a
    /// knob, every knob is used, `{port}` is present, `{x?…}` is boolean.
    pub fn parse(src: &str, space: &Space) -> Result<Self, TuneError> {
        let parts = split(src).map_err(|e| TuneError::Template(format!("--launch: {e}")))?;
        let t = Template {
            source: src.to_owned(),
            parts,
        };
        t.check(space).map_err(TuneError::Template)?;
        Ok(t)
    }

    /// The template as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn check(&self, space: &Space) -> Result<(), String> {
        let names: Vec<&str> = space.knobs.iter().map(|k| k.name.as_str()).collect();
        if !self.parts.contains(&Part::Port) {
            return Err("--launch has no {port}: the engine must listen on the port Throtl picks for each trial, e.g. '... --port {port}'".into());
        }
        for p in &self.parts {
            let (Part::Knob(n) | Part::Flag(n, _)) = p else {
                continue;
            };
            let Some(k) = space.knob(n) else {
                return Err(format!(
                    "--launch uses {{{n}}}, but the space has no knob '{n}' (knobs: {})",
                    names.join(", ")
                ));
            };
            if matches!(p, Part::Flag(..)) && !k.is_bool {
                return Err(format!(
                    "--launch uses {{{n}?…}}, which needs a boolean knob, but '{n}' takes other values; write {{{n}}}"
                ));
            }
        }
        for n in names {
            let used = self
                .parts
                .iter()
                .any(|p| matches!(p, Part::Knob(k) | Part::Flag(k, _) if k == n));
            if !used {
                return Err(format!(
                    "knob '{n}' is not used by --launch, so it would change nothing: add {{{n}}} (or {{{n}?--flag}} for a boolean) to the template, or remove it from the space"
                ));
            }
        }
        Ok(())
    }

    /// The command for `c` on `port`.
    pub fn render(&self, c: &Candidate, port: u16) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Port => out.push_str(&port.to_string()),
                Part::Knob(k) => {
                    out.push_str(&quote(&c.get(k).map(Value::to_string).unwrap_or_default()))
                }
                Part::Flag(k, text) => {
                    if matches!(c.get(k), Some(Value::Bool(true))) {
                        out.push_str(text);
                    }
                }
            }
        }
        // A false flag leaves a double space; cosmetic only.
        out.split(' ')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Quotes a value for `sh` unless it is plainly safe.
pub fn quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,+@%".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn split(src: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = src;
    while let Some(i) = rest.find(['{', '}']) {
        text.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            text.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(format!(
                "a '}}' without its '{{' at '{}' (write '}}}}' for a literal brace)",
                short(tail)
            ));
        }
        let end = tail
            .find('}')
            .ok_or_else(|| format!("a '{{' without its '}}' at '{}'", short(tail)))?;
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(placeholder(&tail[1..end])?);
        rest = &tail[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

fn short(s: &str) -> String {
    s.chars().take(24).collect()
}

fn placeholder(inner: &str) -> Result<Part, String> {
    let (name, flag) = match inner.split_once('?') {
        Some((n, t)) => (n.trim(), Some(t.to_owned())),
        None => (inner.trim(), None),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "'{{{inner}}}' is not a placeholder: write {{port}}, {{knob}} or {{knob?--flag}}"
        ));
    }
    Ok(match (name, flag) {
        ("port", None) => Part::Port,
        ("port", Some(_)) => return Err("{port?…} makes no sense: {port} is always set".into()),
        (n, None) => Part::Knob(n.to_owned()),
        (n, Some(t)) => Part::Flag(n.to_owned(), t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> Space {
        Space::parse(
            "knobs:\n  max_num_seqs: {values: [8, 64], default: 8}\n  prefix: {type: bool}\n  name: {values: ['a b'], default: 'a b'}\n",
        )
        .unwrap()
    }

    #[test]
    fn renders_values_flags_port_and_quotes() {
        let t = Template::parse(
            "serve --port {port} --max-num-seqs {max_num_seqs} {prefix?--enable-prefix-caching} --served-model-name {name} --json '{{}}'",
            &space(),
        )
        .unwrap();
        let mut c = space().defaults();
        assert_eq!(
            t.render(&c, 8123),
            "serve --port 8123 --max-num-seqs 8 --served-model-name 'a b' --json '{}'"
        );
        c.insert("prefix".into(), Value::Bool(true));
        assert!(t
            .render(&c, 1)
            .contains("--max-num-seqs 8 --enable-prefix-caching --served"));
    }

    #[test]
    fn issue13_template_errors_name_the_problem() {
        let err = |src: &str| Template::parse(src, &space()).unwrap_err().to_string();
        let e = err("serve --port {port} {max_num_seqs} {prefix?-p} {name} --tp {tensor_parallel}");
        assert!(
            e.contains("no knob 'tensor_parallel'") && e.contains("knobs: max_num_seqs"),
            "{e}"
        );
        let e = err("serve --port {port} {max_num_seqs} {name}");
        assert!(e.contains("knob 'prefix' is not used by --launch"), "{e}");
        let e = err("serve {max_num_seqs} {prefix?-p} {name}");
        assert!(e.contains("no {port}"), "{e}");
        let e = err("serve {port} {max_num_seqs?-x} {prefix?-p} {name}");
        assert!(e.contains("needs a boolean knob"), "{e}");
        let e = err("serve {port {max_num_seqs}");
        assert!(e.contains("not a placeholder"), "{e}");
        let e = err("serve {port} {max_num_seqs");
        assert!(e.contains("without its '}'"), "{e}");
    }
}
