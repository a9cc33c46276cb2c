//! The "simple JSONPath" that CRD printer columns and selectable fields use:
//! `.spec.owner`, `.items[0]`, `.gpus[*].uuid`, `['a.b']`, `.a\.b/c` (escaped dot),
//! `.status.conditions[?(@.type=="Ready")].status`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    /// `[?(@.a.b == "v")]` (or `!=`); the value compared as JSON.
    Filter {
        path: Vec<String>,
        negate: bool,
        value: Value,
    },
}

/// A parsed path, evaluated with [`JsonPath::find`].
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

impl JsonPath {
    pub fn parse(src: &str) -> Result<JsonPath, String> {
        let mut s = src.trim();
        if let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            s = inner.trim();
        }
        s = s.strip_prefix('$').unwrap_or(s);
        let chars: Vec<char> = s.chars().collect();
        let mut i = 0;
        let mut steps = Vec::new();
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    i += 1;
                    // `\.` is a literal dot in a field name, as in Kubernetes'
                    // JSONPath: `.metadata.annotations.medforge\.dev/owner-email`.
                    let mut name = String::new();
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        if chars[i] == '\\' && i + 1 < chars.len() {
                            i += 1;
                        }
                        name.push(chars[i]);
                        i += 1;
                    }
                    if name.is_empty() {
                        return Err(format!("empty field name in {src:?}"));
                    }
                    if name == "*" {
                        steps.push(Step::All);
                    } else {
                        steps.push(Step::Field(name));
                    }
                }
                '[' => {
                    let close =
                        find_close(&chars, i).ok_or_else(|| format!("unclosed [ in {src:?}"))?;
                    let inner: String = chars[i + 1..close].iter().collect();
                    steps.push(parse_bracket(inner.trim(), src)?);
                    i = close + 1;
                }
                c => return Err(format!("unexpected {c:?} in {src:?}")),
            }
        }
        Ok(JsonPath { steps })
    }

    /// Every value the path reaches in `root`.
    pub fn find<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut cur = vec![root];
        for step in &self.steps {
            let mut next = Vec::new();
            for v in cur {
                match step {
                    Step::Field(name) => {
                        if let Some(x) = v.get(name.as_str()) {
                            next.push(x);
                        }
                    }
                    Step::Index(n) => {
                        if let Some(a) = v.as_array() {
                            let idx = if *n < 0 { a.len() as i64 + n } else { *n };
                            if idx >= 0
                                && let Some(x) = a.get(idx as usize)
                            {
                                next.push(x);
                            }
                        }
                    }
                    Step::All => match v {
                        Value::Array(a) => next.extend(a.iter()),
                        Value::Object(m) => next.extend(m.values()),
                        _ => {}
                    },
                    Step::Filter {
                        path,
                        negate,
                        value,
                    } => {
                        if let Some(a) = v.as_array() {
                            for item in a {
                                let mut x = Some(item);
                                for p in path {
                                    x = x.and_then(|x| x.get(p.as_str()));
                                }
                                let eq = x == Some(value);
                                if eq != *negate && x.is_some() {
                                    next.push(item);
                                }
                            }
                        }
                    }
                }
            }
            cur = next;
        }
        cur
    }

    /// The values the path reaches, printed as `kubectl` prints JSONPath
    /// results: strings bare, everything else as JSON, joined by spaces.
    pub fn find_text(&self, root: &Value) -> Option<String> {
        let found = self.find(root);
        if found.is_empty() {
            return None;
        }
        Some(
            found
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" "),
        )
    }
}

fn find_close(chars: &[char], open: usize) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut depth = 0;
    for (j, &c) in chars.iter().enumerate().skip(open) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(j);
                    }
                }
                _ => {}
            },
        }
    }
    None
}

fn parse_bracket(inner: &str, src: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::All);
    }
    if let Some(q) = inner
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
    {
        return Ok(Step::Field(q.to_string()));
    }
    if let Ok(n) = inner.parse::<i64>() {
        return Ok(Step::Index(n));
    }
    if let Some(f) = inner.strip_prefix('?') {
        let f = f.trim();
        let f = f
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or(f)
            .trim();
        let (lhs, rhs, negate) = if let Some((l, r)) = f.split_once("!=") {
            (l, r, true)
        } else if let Some((l, r)) = f.split_once("==") {
            (l, r, false)
        } else {
            return Err(format!("unsupported filter {inner:?} in {src:?}"));
        };
        let lhs = lhs.trim();
        let rhs = rhs.trim();
        let path = lhs
            .strip_prefix("@.")
            .ok_or_else(|| format!("filter must start with @. in {src:?}"))?
            .split('.')
            .map(str::to_string)
            .collect();
        let value = if let Some(s) = rhs
            .strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .or_else(|| rhs.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
        {
            Value::String(s.to_string())
        } else {
            serde_json::from_str(rhs).map_err(|_| format!("bad filter value {rhs:?} in {src:?}"))?
        };
        return Ok(Step::Filter {
            path,
            negate,
            value,
        });
    }
    Err(format!("unsupported subscript [{inner}] in {src:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn simple_paths_and_filters() {
        let v = json!({"spec": {"owner": "u1", "gpus": 2},
            "status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}],
                       "gpus": [{"uuid": "GPU-1"}, {"uuid": "GPU-2"}]},
            "metadata": {"labels": {"a.b/c": "x"}}});
        let p = |s: &str| JsonPath::parse(s).unwrap();
        assert_eq!(p(".spec.gpus").find(&v), vec![&json!(2)]);
        for (path, text) in [
            (".spec.owner", Some("u1")),
            (
                ".status.conditions[?(@.type==\"Ready\")].status",
                Some("True"),
            ),
            (".status.gpus[*].uuid", Some("GPU-1 GPU-2")),
            (".status.gpus[-1].uuid", Some("GPU-2")),
            (".metadata.labels['a.b/c']", Some("x")),
            (".metadata.labels.a.b/c", None),
            (".spec.missing", None),
        ] {
            assert_eq!(p(path).find_text(&v).as_deref(), text, "{path}");
        }
        assert_eq!(
            p(".metadata.labels.a\\.b/c").find_text(&v).as_deref(),
            Some("x"),
            "an escaped dot is part of the field name"
        );
        assert!(JsonPath::parse(".a[").is_err());
    }
}
