//! Field sets as structured-merge-diff keeps them (sigs.k8s.io/structured-merge-diff
//! fieldpath: element.go, set.go, serialize.go): path elements `f:` (a struct field or map key),
//! `k:` (an item of an associative list, by its keys), `v:` (an item of a set list), `i:` (an
//! index); a set is a tree of members (owned leaves or nodes) and children, ordered as SMD
//! orders path elements, and serialized as FieldsV1 JSON (`.` for a node that is itself a
//! member and has children).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::admission::field::go_quote;

/// A JSON value ordered as SMD's `value.Compare` orders values: numbers, strings, booleans,
/// lists, maps, null.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Json(pub Value);

impl Eq for Json {}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Number(_) => 0,
        Value::String(_) => 1,
        Value::Bool(_) => 2,
        Value::Array(_) => 3,
        Value::Object(_) => 4,
        Value::Null => 5,
    }
}

pub(crate) fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                x.partial_cmp(&y).unwrap_or(Ordering::Equal)
            }
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (l, r) in x.iter().zip(y) {
                let c = compare_values(l, r);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            for ((lk, lv), (rk, rv)) in x.iter().zip(y) {
                let c = lk.cmp(rk).then_with(|| compare_values(lv, rv));
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

impl Ord for Json {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_values(&self.0, &other.0)
    }
}

impl PartialOrd for Json {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One step of a path; the derived order (by variant, then content) is SMD's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Pe {
    Field(String),
    /// Key fields sorted by name.
    Key(Vec<(String, Json)>),
    Value(Json),
    Index(usize),
}

impl Pe {
    /// `.name`, `[k="v",n=1]`, `[=v]`, `[3]`: `PathElement.String`.
    pub fn display(&self) -> String {
        match self {
            Pe::Field(name) => format!(".{name}"),
            Pe::Key(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| format!("{name}={}", to_string(&value.0)))
                    .collect();
                format!("[{}]", parts.join(","))
            }
            Pe::Value(value) => format!("[={}]", to_string(&value.0)),
            Pe::Index(i) => format!("[{i}]"),
        }
    }

    /// `f:name`, `k:{"name":"c"}`, `v:"x"`, `i:0`: the FieldsV1 key.
    pub fn serialize(&self) -> String {
        match self {
            Pe::Field(name) => format!("f:{name}"),
            Pe::Key(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| format!("{}:{}", Value::from(name.as_str()), value.0))
                    .collect();
                format!("k:{{{}}}", parts.join(","))
            }
            Pe::Value(value) => format!("v:{}", value.0),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    pub fn parse(text: &str) -> Option<Pe> {
        let (kind, rest) = text.split_once(':')?;
        match kind {
            "f" => Some(Pe::Field(rest.to_string())),
            "k" => match serde_json::from_str::<Value>(rest).ok()? {
                Value::Object(map) => Some(Pe::Key(map.into_iter().map(|(k, v)| (k, Json(v))).collect())),
                _ => None,
            },
            "v" => serde_json::from_str(rest).ok().map(|v| Pe::Value(Json(v))),
            "i" => rest.parse().ok().map(Pe::Index),
            _ => None,
        }
    }
}

/// SMD's `value.ToString`: strings quoted as Go's `%q`.
fn to_string(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::String(s) => go_quote(s),
        Value::Array(items) => format!("[{}]", items.iter().map(to_string).collect::<Vec<_>>().join(",")),
        Value::Object(map) => map.iter().map(|(k, v)| format!("{k}={}", to_string(v))).collect(),
        other => other.to_string(),
    }
}

/// A path from the root.
pub(crate) type Path = Vec<Pe>;

pub(crate) fn path_string(path: &[Pe]) -> String {
    path.iter().map(Pe::display).collect()
}

/// A set of paths as a tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Set {
    pub members: BTreeSet<Pe>,
    pub children: BTreeMap<Pe, Set>,
}

impl Set {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    /// Adds `path` (the empty path is no member of anything, as in SMD).
    pub fn insert(&mut self, path: &[Pe]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    #[cfg(test)]
    pub fn has(&self, path: &[Pe]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    pub fn child(&self, pe: &Pe) -> Option<&Set> {
        self.children.get(pe)
    }

    pub fn union(&self, other: &Set) -> Set {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, child) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    pub fn difference(&self, other: &Set) -> Set {
        let mut out = Set {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            let rest = match other.children.get(pe) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(pe.clone(), rest);
            }
        }
        out
    }

    pub fn intersection(&self, other: &Set) -> Set {
        let mut out = Set {
            members: self.members.intersection(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            if let Some(theirs) = other.children.get(pe) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    out.children.insert(pe.clone(), both);
                }
            }
        }
        out
    }

    /// Every path, members of a node before its children (`Set.Iterate`).
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for pe in &self.members {
            let mut path = prefix.clone();
            path.push(pe.clone());
            out.push(path);
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The set with every field that has children also a member (SMD's
    /// `EnsureNamedFieldsAreMembers`, for every field: map keys with children are members
    /// already wherever SMD makes them so).
    pub fn with_named_fields(&self) -> Set {
        let mut out = Set {
            members: self.members.clone(),
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            if matches!(pe, Pe::Field(_)) {
                out.members.insert(pe.clone());
            }
            out.children.insert(pe.clone(), child.with_named_fields());
        }
        out
    }

    /// FieldsV1 JSON (`Set.ToJSON`).
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.emit(false))
    }

    fn emit(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self && !self.is_empty() {
            out.insert(".".into(), Value::Object(Map::new()));
        }
        for pe in &self.members {
            if !self.children.contains_key(pe) {
                out.insert(pe.serialize(), Value::Object(Map::new()));
            }
        }
        for (pe, child) in &self.children {
            let member = self.members.contains(pe);
            out.insert(pe.serialize(), Value::Object(child.emit(member)));
        }
        out
    }

    /// Parses FieldsV1 JSON; None when it is not a valid set.
    pub fn from_fields_v1(value: &Value) -> Option<Set> {
        let mut set = Set::default();
        for (key, child) in value.as_object()? {
            if key == "." {
                continue;
            }
            let pe = Pe::parse(key)?;
            let map = child.as_object()?;
            if map.is_empty() {
                set.members.insert(pe);
                continue;
            }
            if map.contains_key(".") {
                set.members.insert(pe.clone());
            }
            let inner = Set::from_fields_v1(child)?;
            if !inner.is_empty() {
                set.children.insert(pe, inner);
            }
        }
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> Pe {
        Pe::Field(name.into())
    }

    #[test]
    fn fields_v1_round_trips_with_dot_for_owned_nodes() {
        let key = Pe::Key(vec![("name".into(), Json(json!("c")))]);
        let mut set = Set::default();
        set.insert(&[f("data"), f("a")]);
        set.insert(&[f("data")]);
        set.insert(&[f("spec"), f("containers"), key.clone()]);
        set.insert(&[f("spec"), f("containers"), key.clone(), f("image")]);
        let v = set.to_fields_v1();
        assert_eq!(
            v,
            json!({"f:data": {".": {}, "f:a": {}},
                "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}}}}})
        );
        assert_eq!(Set::from_fields_v1(&v).unwrap(), set);
        assert_eq!(
            path_string(&[f("spec"), f("containers"), key, f("image")]),
            r#".spec.containers[name="c"].image"#
        );
    }

    #[test]
    fn set_algebra() {
        let mut a = Set::default();
        a.insert(&[f("x"), f("y")]);
        a.insert(&[f("z")]);
        let mut b = Set::default();
        b.insert(&[f("x"), f("y")]);
        assert_eq!(a.difference(&b).paths(), vec![vec![f("z")]]);
        assert_eq!(a.intersection(&b), b);
        assert_eq!(a.union(&b), a);
        assert!(a.with_named_fields().has(&[f("x")]));
        assert!(Pe::Field("a".into()) < Pe::Key(vec![]) && Pe::Key(vec![]) < Pe::Value(Json(json!(1))));
    }
}
