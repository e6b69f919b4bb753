//! Label and field selectors, parsed from the `labelSelector` / `fieldSelector` query parameters.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector {
    requirements: Vec<(String, LabelOp)>,
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_label_term(term)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.requirements.iter().all(|(key, op)| {
            let value = labels.get(key).and_then(Value::as_str);
            match op {
                LabelOp::Eq(v) => value == Some(v.as_str()),
                LabelOp::NotEq(v) => value != Some(v.as_str()),
                LabelOp::In(set) => value.is_some_and(|x| set.iter().any(|s| s == x)),
                LabelOp::NotIn(set) => value.is_none_or(|x| !set.iter().any(|s| s == x)),
                LabelOp::Exists => value.is_some(),
                LabelOp::NotExists => value.is_none(),
            }
        })
    }
}

/// Splits on commas that are not inside parentheses (`in (a,b)` sets).
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_label_term(term: &str) -> Result<(String, LabelOp), String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok((checked_key(key)?, LabelOp::NotExists));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok((checked_key(key)?, LabelOp::NotEq(value.trim().to_string())));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok((checked_key(key)?, LabelOp::Eq(value.trim().to_string())));
    }
    let mut words = term.splitn(2, char::is_whitespace);
    let key = checked_key(words.next().unwrap_or_default())?;
    let Some(rest) = words.next().map(str::trim) else {
        return Ok((key, LabelOp::Exists));
    };
    let (op, set) = if let Some(set) = rest.strip_prefix("notin") {
        (false, set)
    } else if let Some(set) = rest.strip_prefix("in") {
        (true, set)
    } else {
        return Err(format!("unable to parse requirement: {term:?}"));
    };
    let set = set.trim();
    let inner = set
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: {term:?}: expected a (set)"))?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    Ok((
        key,
        if op {
            LabelOp::In(values)
        } else {
            LabelOp::NotIn(values)
        },
    ))
}

fn checked_key(key: &str) -> Result<String, String> {
    let key = key.trim();
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_string())
    } else {
        Err(format!("invalid label key {key:?}"))
    }
}

/// A parsed field selector: `path=value`, `path==value`, `path!=value`, comma-separated; paths are
/// dotted JSON paths (`metadata.name`, `spec.nodeName`, `involvedObject.name`, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector {
    requirements: Vec<(Vec<String>, bool, String)>,
}

impl FieldSelector {
    /// Parses a field selector.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, equal, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (p, true, v)
            } else {
                return Err(format!("invalid selector: {term:?}; can't understand {term:?}"));
            };
            let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(format!("invalid field path in selector {term:?}"));
            }
            requirements.push((path, equal, value.trim().to_string()));
        }
        Ok(FieldSelector { requirements })
    }

    /// The value `path` must equal, if the selector has such a requirement (`metadata.name=x`).
    pub fn equals(&self, path: &str) -> Option<String> {
        self.requirements
            .iter()
            .find(|(p, equal, _)| *equal && p.join(".") == path)
            .map(|(_, _, value)| value.clone())
    }

    /// Whether the object satisfies every requirement. A missing field reads as "", as Kubernetes
    /// field labels do.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(path, equal, want)| {
            let mut current = object;
            for part in path {
                current = current.get(part).unwrap_or(&Value::Null);
            }
            let actual = match current {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (actual == *want) == *equal
        })
    }
}

/// The label and field selectors of one request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    /// Whether the object matches both selectors.
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "prod", "labels": {"app": "web", "tier": "front"}},
            "spec": {"nodeName": "node-1", "replicas": 3},
            "status": {"phase": "Running"}
        })
    }

    #[test]
    fn label_selector_operators() {
        let o = object();
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web,api)", true),
            ("app in (api)", false),
            ("app notin (api)", true),
            ("missing notin (api)", true),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier in (front, back),!missing", true),
            ("app=web,tier=back", false),
        ];
        for (selector, expected) in cases {
            assert_eq!(
                LabelSelector::parse(selector).unwrap().matches(&o),
                expected,
                "{selector}"
            );
        }
        assert!(LabelSelector::parse("app in web").is_err());
    }

    #[test]
    fn field_selector_paths() {
        let o = object();
        let cases = [
            ("metadata.name=web", true),
            ("metadata.namespace==prod", true),
            ("metadata.name!=web", false),
            ("spec.nodeName=node-1,status.phase=Running", true),
            ("spec.nodeName=", false),
            ("spec.missing=", true),
            ("spec.replicas=3", true),
        ];
        for (selector, expected) in cases {
            assert_eq!(
                FieldSelector::parse(selector).unwrap().matches(&o),
                expected,
                "{selector}"
            );
        }
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
