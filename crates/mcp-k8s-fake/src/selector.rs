//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`, `>`/`<`) and field selectors,
//! parsed and matched with the apiserver's semantics.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::kind::ResourceKind;
use crate::names;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A parsed label selector: every requirement must hold (logical AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter; the error is the apiserver's message.
    pub(crate) fn parse(input: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(input) {
            let part = part.trim();
            if part.is_empty() {
                if input.trim().is_empty() {
                    continue;
                }
                return Err(format!(
                    "unable to parse requirement: found '', expected: identifier in \"{input}\""
                ));
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self { requirements })
    }

    /// `true` when the selector has no requirement (matches everything).
    pub(crate) fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object with these labels is selected.
    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|req| match req {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|have| vs.contains(have)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|have| !vs.contains(have)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
            Requirement::GreaterThan(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Requirement::LessThan(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        })
    }

    /// Matches the labels of a stored object.
    pub(crate) fn matches_object(&self, object: &Value) -> bool {
        self.is_empty() || self.matches(&object_labels(object))
    }
}

/// The labels of a stored object.
pub(crate) fn object_labels(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Splits on commas that are not inside a parenthesised value set.
fn split_top_level(input: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0_i32;
    let mut start = 0;
    for (index, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&input[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts
}

fn check_key(key: &str) -> Result<String, String> {
    names::qualified_name(key)
        .map(|()| key.to_owned())
        .map_err(|e| format!("unable to parse requirement: key: Invalid value: \"{key}\": {e}"))
}

fn check_value(value: &str) -> Result<String, String> {
    names::label_value(value)
        .map(|()| value.to_owned())
        .map_err(|e| {
            format!("unable to parse requirement: values[0]: Invalid value: \"{value}\": {e}")
        })
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(check_key(key.trim())?));
    }
    for (op, build) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((key, value)) = part.split_once(op) {
            return Ok(build(check_key(key.trim())?, check_value(value.trim())?));
        }
    }
    for (op, greater) in [(">", true), ("<", false)] {
        if let Some((key, value)) = part.split_once(op) {
            let key = check_key(key.trim())?;
            let number = value.trim().parse::<i64>().map_err(|_| {
                format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: \"{}\"", value.trim())
            })?;
            return Ok(if greater {
                Requirement::GreaterThan(key, number)
            } else {
                Requirement::LessThan(key, number)
            });
        }
    }
    if let Some(open) = part.find('(') {
        let head = part[..open].trim();
        let Some(body) = part[open + 1..].trim_end().strip_suffix(')') else {
            return Err(format!(
                "unable to parse requirement: found '{part}', expected: ')'"
            ));
        };
        let (key, op) = head.rsplit_once(char::is_whitespace).ok_or_else(|| {
            format!("unable to parse requirement: found '{head}', expected: in, notin")
        })?;
        let values = body
            .split(',')
            .map(|v| check_value(v.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let key = check_key(key.trim())?;
        return match op.trim() {
            "in" => Ok(Requirement::In(key, values)),
            "notin" => Ok(Requirement::NotIn(key, values)),
            other => Err(format!(
                "unable to parse requirement: found '{other}', expected: in, notin, =, ==, !=, gt, lt"
            )),
        };
    }
    if part.contains(char::is_whitespace) {
        return Err(format!(
            "unable to parse requirement: found '{part}', expected: in, notin, =, ==, !=, gt, lt"
        ));
    }
    Ok(Requirement::Exists(check_key(part)?))
}

/// One `field=value` or `field!=value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    value: String,
    negated: bool,
}

/// A parsed field selector (AND of terms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses `fieldSelector` and checks that every field is supported for `kind`.
    pub(crate) fn parse(input: &str, kind: ResourceKind) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in input.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if !kind.selectable_fields().contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push(FieldTerm {
                field: field.to_owned(),
                value: value.trim().to_owned(),
                negated,
            });
        }
        Ok(Self { terms })
    }

    /// `true` when the selector has no term.
    pub(crate) fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether the object is selected.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|term| {
            let have = field_value(object, &term.field);
            (have == term.value) != term.negated
        })
    }
}

/// The string value of a selectable field (missing fields read as "").
fn field_value(object: &Value, field: &str) -> String {
    let mut current = object;
    for segment in field.split('.') {
        current = &current[segment];
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_operator_matches_like_the_apiserver() {
        let web = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let db = labels(&[("app", "db")]);
        let cases = [
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("tier!=back", true, true),
            ("app in (web, cache)", true, false),
            ("app notin (web)", false, true),
            ("tier notin (back)", true, true),
            ("tier", true, false),
            ("!tier", false, true),
            ("app=web,tier=front", true, false),
            ("app in (web,db),!tier", false, true),
            ("n>4", true, false),
            ("n<5", false, false),
            ("", true, true),
        ];
        for (selector, on_web, on_db) in cases {
            let parsed = LabelSelector::parse(selector).unwrap();
            assert_eq!(parsed.matches(&web), on_web, "{selector} on web");
            assert_eq!(parsed.matches(&db), on_db, "{selector} on db");
        }
    }

    #[test]
    fn malformed_selectors_are_rejected() {
        for bad in [
            "app in (web",
            "Bad Key=x",
            "app=bad value",
            "app foo (x)",
            "a,,b",
            "n>x",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let pod =
            json!({"metadata": {"name": "a", "namespace": "ns"}, "status": {"phase": "Running"}});
        let sel = FieldSelector::parse("metadata.name=a,status.phase!=Failed", ResourceKind::Pod)
            .unwrap();
        assert!(sel.matches(&pod));
        let sel = FieldSelector::parse("metadata.name==b", ResourceKind::Pod).unwrap();
        assert!(!sel.matches(&pod));
        assert!(FieldSelector::parse("spec.foo=x", ResourceKind::Pod).is_err());
        assert!(FieldSelector::parse("status.phase=x", ResourceKind::Service).is_err());
    }
}
