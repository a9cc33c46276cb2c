//! `labelSelector` and `fieldSelector` query parameters, parsed with the
//! grammar and error messages of Kubernetes' `labels.Parse` and `fields.ParseSelector`.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq,
    NotEq,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Eq,
    DoubleEq,
    NotEq,
    Not,
    In,
    NotIn,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Eq => "'='".into(),
        Tok::DoubleEq => "'=='".into(),
        Tok::NotEq => "'!='".into(),
        Tok::Not => "'!'".into(),
        Tok::In => "'in'".into(),
        Tok::NotIn => "'notin'".into(),
        Tok::Gt => "'>'".into(),
        Tok::Lt => "'<'".into(),
        Tok::Open => "'('".into(),
        Tok::Close => "')'".into(),
        Tok::Comma => "','".into(),
    }
}

fn lex(s: &str) -> Vec<Tok> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let next_is_eq = chars.get(i + 1) == Some(&'=');
        // A token of one or two characters, and its length.
        let punct = match chars[i] {
            ' ' | '\t' | '\n' => {
                i += 1;
                continue;
            }
            '(' => Some((Tok::Open, 1)),
            ')' => Some((Tok::Close, 1)),
            ',' => Some((Tok::Comma, 1)),
            '>' => Some((Tok::Gt, 1)),
            '<' => Some((Tok::Lt, 1)),
            '=' if next_is_eq => Some((Tok::DoubleEq, 2)),
            '=' => Some((Tok::Eq, 1)),
            '!' if next_is_eq => Some((Tok::NotEq, 2)),
            '!' => Some((Tok::Not, 1)),
            _ => None,
        };
        if let Some((tok, len)) = punct {
            out.push(tok);
            i += len;
            continue;
        }
        let start = i;
        while i < chars.len() && !" \t\n()!=,<>".contains(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        out.push(match word.as_str() {
            "in" => Tok::In,
            "notin" => Tok::NotIn,
            _ => Tok::Ident(word),
        });
    }
    out
}

const NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Non-empty, alphanumeric at both ends, and every byte `allowed`.
fn well_formed(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| allowed(*c))
}

fn dns_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
}

fn is_name_part(s: &str) -> bool {
    s.len() <= 63
        && well_formed(s, |c| {
            c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.'
        })
}

/// Whether `s` is a valid DNS-1123 subdomain (lowercase, dots, at most 253 characters).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| well_formed(l, dns_char))
}

/// Whether `s` is a valid DNS-1123 label (at most 63 characters, no dots).
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && well_formed(s, dns_char)
}

/// Checks a label (or annotation, finalizer) key: `[prefix/]name`.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Err("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into());
    }
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".into());
    }
    if !is_name_part(name) {
        return Err(NAME_MSG.into());
    }
    Ok(())
}

/// Checks a label value: empty, or a name part of at most 63 characters.
pub fn check_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    if v.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !is_name_part(v) {
        return Err(VALUE_MSG.into());
    }
    Ok(())
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let toks = lex(s);
        let mut i = 0;
        let mut reqs = Vec::new();
        if toks.is_empty() {
            return Ok(LabelSelector::default());
        }
        let ident_expected = |t: Option<&Tok>| match t {
            Some(t) => format!("found {}, expected: identifier", describe(t)),
            None => "found '', expected: identifier".to_string(),
        };
        loop {
            let mut negated = false;
            if toks.get(i) == Some(&Tok::Not) {
                negated = true;
                i += 1;
            }
            let key = match toks.get(i) {
                Some(Tok::Ident(k)) => k.clone(),
                t => {
                    return Err(format!(
                        "unable to parse requirement: {}",
                        ident_expected(t)
                    ));
                }
            };
            check_qualified_name(&key).map_err(|m| {
                format!("unable to parse requirement: <nil>: Invalid value: {key:?}: {m}")
            })?;
            i += 1;
            if negated {
                reqs.push(Requirement {
                    key,
                    op: Op::DoesNotExist,
                    values: vec![],
                });
            } else {
                match toks.get(i) {
                    None | Some(Tok::Comma) => reqs.push(Requirement {
                        key,
                        op: Op::Exists,
                        values: vec![],
                    }),
                    Some(op @ (Tok::Eq | Tok::DoubleEq | Tok::NotEq | Tok::Gt | Tok::Lt)) => {
                        let op = match op {
                            Tok::NotEq => Op::NotEq,
                            Tok::Gt => Op::Gt,
                            Tok::Lt => Op::Lt,
                            _ => Op::Eq,
                        };
                        i += 1;
                        let value = match toks.get(i) {
                            Some(Tok::Ident(v)) => {
                                i += 1;
                                v.clone()
                            }
                            None | Some(Tok::Comma) if matches!(op, Op::Eq | Op::NotEq) => {
                                String::new()
                            }
                            t => {
                                return Err(format!(
                                    "unable to parse requirement: {}",
                                    ident_expected(t)
                                ));
                            }
                        };
                        if matches!(op, Op::Gt | Op::Lt) {
                            value.parse::<i64>().map_err(|_| {
                                format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {value:?}")
                            })?;
                        } else {
                            check_label_value(&value).map_err(|m| {
                                format!("unable to parse requirement: <nil>: Invalid value: {value:?}: {m}")
                            })?;
                        }
                        reqs.push(Requirement {
                            key,
                            op,
                            values: vec![value],
                        });
                    }
                    Some(op @ (Tok::In | Tok::NotIn)) => {
                        let op = if *op == Tok::In { Op::In } else { Op::NotIn };
                        i += 1;
                        if toks.get(i) != Some(&Tok::Open) {
                            return Err(format!(
                                "unable to parse requirement: found {}, expected:'('",
                                toks.get(i).map(describe).unwrap_or_else(|| "''".into())
                            ));
                        }
                        i += 1;
                        let mut values = Vec::new();
                        loop {
                            match toks.get(i) {
                                Some(Tok::Ident(v)) => {
                                    check_label_value(v).map_err(|m| {
                                        format!("unable to parse requirement: <nil>: Invalid value: {v:?}: {m}")
                                    })?;
                                    values.push(v.clone());
                                    i += 1;
                                }
                                Some(Tok::Comma) if values.is_empty() => {
                                    values.push(String::new());
                                }
                                _ => {}
                            }
                            match toks.get(i) {
                                Some(Tok::Comma) => i += 1,
                                Some(Tok::Close) => {
                                    i += 1;
                                    break;
                                }
                                t => {
                                    return Err(format!(
                                        "unable to parse requirement: found {}, expected: ',' or ')'",
                                        t.map(describe).unwrap_or_else(|| "''".into())
                                    ));
                                }
                            }
                        }
                        reqs.push(Requirement { key, op, values });
                    }
                    Some(t) => {
                        return Err(format!(
                            "unable to parse requirement: found {}, expected: in, notin, =, ==, !=, gt, lt",
                            describe(t)
                        ));
                    }
                }
            }
            match toks.get(i) {
                None => break,
                Some(Tok::Comma) => {
                    i += 1;
                    if i >= toks.len() {
                        return Err(format!(
                            "unable to parse requirement: {}",
                            ident_expected(None)
                        ));
                    }
                }
                Some(t) => {
                    return Err(format!(
                        "found {}, expected: ',' or 'end of string'",
                        describe(t)
                    ));
                }
            }
        }
        Ok(LabelSelector { reqs })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|r| {
            let v = labels.get(&r.key);
            match r.op {
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::Eq | Op::In => v.is_some_and(|v| r.values.contains(v)),
                Op::NotEq | Op::NotIn => v.is_none_or(|v| !r.values.contains(v)),
                Op::Gt | Op::Lt => {
                    let Some(have) = v.and_then(|v| v.parse::<i64>().ok()) else {
                        return false;
                    };
                    let want: i64 = r.values[0].parse().unwrap_or(0);
                    if r.op == Op::Gt {
                        have > want
                    } else {
                        have < want
                    }
                }
            }
        })
    }
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRequirement {
    pub field: String,
    pub negate: bool,
    pub value: String,
}

/// A parsed field selector: terms joined by commas, all of which must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    pub reqs: Vec<FieldRequirement>,
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{e}"
                    ));
                }
                None => return Err("invalid field selector: unterminated escape sequence".into()),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        for term in split_unescaped(s, ',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, negate, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, false, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            reqs.push(FieldRequirement {
                field: field.trim().to_string(),
                negate,
                value: unescape(v_trim(value))?,
            });
        }
        Ok(FieldSelector { reqs })
    }

    pub fn matches(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        self.reqs.iter().all(|r| {
            let have = lookup(&r.field).unwrap_or_default();
            (have == r.value) != r.negate
        })
    }
}

fn v_trim(v: &str) -> &str {
    v.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_grammar() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&l);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web)"));
        assert!(m("!missing"));
        assert!(!m("missing"));
        assert!(m("n>3,n<6"));
        assert!(m("example.com/x!=y"));
        for bad in ["a b", "=x", "a=b,", "a in (b", "a=b=c", "a,,b", "-a=b"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn field_selector_grammar() {
        let f = FieldSelector::parse("metadata.name=a\\,b,spec.owner!=u2").unwrap();
        assert_eq!(f.reqs[0].value, "a,b");
        assert!(f.matches(|k| match k {
            "metadata.name" => Some("a,b".into()),
            "spec.owner" => Some("u1".into()),
            _ => None,
        }));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
