//! Constraint expressions of a tuning space, e.g.
//! `tensor_parallel_size * pipeline_parallel_size <= 8` or
//! `kv_cache_dtype == 'fp8' || gpu_memory_utilization >= 0.9`.
//!
//! Grammar (lowest precedence first): `||`, `&&`, comparisons
//! (`== != < <= > >=`), `+ -`, `* / %`, unary `- !`, then numbers, quoted
//! strings, knob names, `true`/`false` and parentheses. Booleans are 1 and 0,
//! so `enable_prefix_caching + enable_chunked_prefill <= 1` works.

use std::collections::BTreeMap;

use super::space::Value;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A number literal.
    Num(f64),
    /// A quoted string literal.
    Str(String),
    /// A knob's value.
    Knob(String),
    /// `-x`.
    Neg(Box<Expr>),
    /// `!x`.
    Not(Box<Expr>),
    /// A binary operation.
    Bin(Box<Expr>, Op, Box<Expr>),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `||`
    Or,
    /// `&&`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

/// What an expression evaluates to.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Num(f64),
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Op(&'static str),
    Open,
    Close,
}

const OPS: &[&str] = &[
    "||", "&&", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "!",
];

fn tokenize(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' || c == ')' {
            out.push(if c == '(' { Tok::Open } else { Tok::Close });
            i += 1;
        } else if c == '\'' || c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|&x| x == c)
                .ok_or("an unterminated string")?;
            out.push(Tok::Str(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if c.is_ascii_digit() || c == '.' {
            let len = chars[i..]
                .iter()
                .take_while(|x| x.is_ascii_digit() || **x == '.' || **x == 'e')
                .count();
            let s: String = chars[i..i + len].iter().collect();
            out.push(Tok::Num(
                s.parse().map_err(|_| format!("'{s}' is not a number"))?,
            ));
            i += len;
        } else if c.is_alphabetic() || c == '_' {
            let len = chars[i..]
                .iter()
                .take_while(|x| x.is_alphanumeric() || **x == '_' || **x == '-')
                .count();
            out.push(Tok::Ident(chars[i..i + len].iter().collect()));
            i += len;
        } else {
            let rest: String = chars[i..].iter().take(2).collect();
            let op = OPS
                .iter()
                .find(|o| rest.starts_with(**o))
                .ok_or_else(|| format!("unexpected '{c}'"))?;
            out.push(Tok::Op(op));
            i += op.len();
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

/// Binding power and operator of each binary token, lowest first.
fn binary(op: &str) -> Option<(u8, Op)> {
    Some(match op {
        "||" => (1, Op::Or),
        "&&" => (2, Op::And),
        "==" => (3, Op::Eq),
        "!=" => (3, Op::Ne),
        "<" => (3, Op::Lt),
        "<=" => (3, Op::Le),
        ">" => (3, Op::Gt),
        ">=" => (3, Op::Ge),
        "+" => (4, Op::Add),
        "-" => (4, Op::Sub),
        "*" => (5, Op::Mul),
        "/" => (5, Op::Div),
        "%" => (5, Op::Rem),
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expr(&mut self, min_bp: u8) -> Result<Expr, String> {
        let mut lhs = self.atom()?;
        while let Some(Tok::Op(op)) = self.peek() {
            let Some((bp, op)) = binary(op) else { break };
            if bp < min_bp {
                break;
            }
            self.pos += 1;
            let rhs = self.expr(bp + 1)?;
            lhs = Expr::Bin(Box::new(lhs), op, Box::new(rhs));
        }
        Ok(lhs)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Num(n)) => Ok(Expr::Num(n)),
            Some(Tok::Str(s)) => Ok(Expr::Str(s)),
            Some(Tok::Ident(s)) if s == "true" => Ok(Expr::Num(1.0)),
            Some(Tok::Ident(s)) if s == "false" => Ok(Expr::Num(0.0)),
            Some(Tok::Ident(s)) => Ok(Expr::Knob(s)),
            Some(Tok::Op("-")) => Ok(Expr::Neg(Box::new(self.expr(6)?))),
            Some(Tok::Op("!")) => Ok(Expr::Not(Box::new(self.expr(6)?))),
            Some(Tok::Open) => {
                let e = self.expr(0)?;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    _ => Err("a '(' without its ')'".into()),
                }
            }
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("it ends too early".into()),
        }
    }
}

impl Expr {
    /// Parses `src`; the error says what is wrong.
    pub fn parse(src: &str) -> Result<Self, String> {
        let mut p = Parser {
            toks: tokenize(src)?,
            pos: 0,
        };
        let e = p.expr(0)?;
        if p.pos < p.toks.len() {
            return Err(format!("unexpected {:?}", p.toks[p.pos]));
        }
        Ok(e)
    }

    /// Knob names the expression reads.
    pub fn knobs(&self) -> Vec<&str> {
        match self {
            Expr::Num(_) | Expr::Str(_) => Vec::new(),
            Expr::Knob(k) => vec![k.as_str()],
            Expr::Neg(e) | Expr::Not(e) => e.knobs(),
            Expr::Bin(a, _, b) => {
                let mut v = a.knobs();
                v.extend(b.knobs());
                v
            }
        }
    }

    /// Evaluates to a number (booleans are 1/0); `Err` on a type mismatch.
    pub fn number(&self, knobs: &BTreeMap<String, Value>) -> Result<f64, String> {
        match self.eval(knobs)? {
            Val::Num(n) => Ok(n),
            Val::Str(s) => Err(format!("'{s}' is a string where a number is needed")),
        }
    }

    /// Whether the expression holds (non-zero).
    pub fn holds(&self, knobs: &BTreeMap<String, Value>) -> Result<bool, String> {
        self.number(knobs).map(|n| n != 0.0)
    }

    fn eval(&self, knobs: &BTreeMap<String, Value>) -> Result<Val, String> {
        Ok(match self {
            Expr::Num(n) => Val::Num(*n),
            Expr::Str(s) => Val::Str(s.clone()),
            Expr::Knob(k) => match knobs.get(k) {
                Some(Value::Str(s)) => Val::Str(s.clone()),
                Some(v) => Val::Num(v.as_f64().unwrap_or(0.0)),
                None => return Err(format!("no knob '{k}'")),
            },
            Expr::Neg(e) => Val::Num(-e.number(knobs)?),
            Expr::Not(e) => Val::Num(f64::from(u8::from(!e.holds(knobs)?))),
            Expr::Bin(a, op, b) => apply(*op, a.eval(knobs)?, b.eval(knobs)?)?,
        })
    }
}

fn apply(op: Op, a: Val, b: Val) -> Result<Val, String> {
    let truth = |x: bool| Val::Num(f64::from(u8::from(x)));
    match (op, &a, &b) {
        (Op::Eq, Val::Str(x), Val::Str(y)) => return Ok(truth(x == y)),
        (Op::Ne, Val::Str(x), Val::Str(y)) => return Ok(truth(x != y)),
        _ => {}
    }
    let (Val::Num(x), Val::Num(y)) = (&a, &b) else {
        return Err(format!(
            "{op:?} cannot compare {a:?} with {b:?} (strings only take == and !=)"
        ));
    };
    let (x, y) = (*x, *y);
    Ok(match op {
        Op::Or => truth(x != 0.0 || y != 0.0),
        Op::And => truth(x != 0.0 && y != 0.0),
        Op::Eq => truth(x == y),
        Op::Ne => truth(x != y),
        Op::Lt => truth(x < y),
        Op::Le => truth(x <= y),
        Op::Gt => truth(x > y),
        Op::Ge => truth(x >= y),
        Op::Add => Val::Num(x + y),
        Op::Sub => Val::Num(x - y),
        Op::Mul => Val::Num(x * y),
        Op::Div => Val::Num(x / y),
        Op::Rem => Val::Num(x % y),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn precedence_strings_and_booleans() {
        let k = knobs(&[
            ("tp", Value::Int(2)),
            ("pp", Value::Int(4)),
            ("dtype", Value::Str("fp8".into())),
            ("pc", Value::Bool(true)),
        ]);
        let t = |s: &str| Expr::parse(s).unwrap().holds(&k).unwrap();
        assert!(t("tp * pp <= 8"));
        assert!(!t("tp * pp < 8"));
        assert!(t("1 + 2 * 3 == 7"));
        assert!(t("dtype == 'fp8' && pc"));
        assert!(t("!(tp > 2) || pp == 0"));
        assert!(t("-tp + 3 == 1"));
        assert_eq!(
            Expr::parse("tp * pp <= 8").unwrap().knobs(),
            vec!["tp", "pp"]
        );
        assert!(Expr::parse("tp *").is_err());
        assert!(Expr::parse("(tp").is_err());
        assert!(Expr::parse("tp # 3").is_err());
        assert!(Expr::parse("dtype < 3").unwrap().holds(&k).is_err());
    }
}
