//! Kubernetes label selectors (`a=b,c!=d,e in (x,y),f notin (z),g,!h`): parsing, matching, printing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::names::{check_label_key, check_label_value};

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value` (also matches objects without the key, as in Kubernetes).
    NotEquals(String, String),
    /// `key in (v1,v2)`.
    In(String, BTreeSet<String>),
    /// `key notin (v1,v2)` (also matches objects without the key).
    NotIn(String, BTreeSet<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

impl Requirement {
    /// The label key this requirement tests.
    pub fn key(&self) -> &str {
        match self {
            Self::Equals(k, _)
            | Self::NotEquals(k, _)
            | Self::In(k, _)
            | Self::NotIn(k, _)
            | Self::Exists(k)
            | Self::DoesNotExist(k) => k,
        }
    }

    /// Whether a label set satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let got = labels.get(self.key());
        match self {
            Self::Equals(_, v) => got == Some(v),
            Self::NotEquals(_, v) => got != Some(v),
            Self::In(_, vs) => got.is_some_and(|g| vs.contains(g)),
            Self::NotIn(_, vs) => got.is_none_or(|g| !vs.contains(g)),
            Self::Exists(_) => got.is_some(),
            Self::DoesNotExist(_) => got.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |vs: &BTreeSet<String>| vs.iter().cloned().collect::<Vec<_>>().join(",");
        match self {
            Self::Equals(k, v) => write!(f, "{k}={v}"),
            Self::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Self::In(k, vs) => write!(f, "{k} in ({})", set(vs)),
            Self::NotIn(k, vs) => write!(f, "{k} notin ({})", set(vs)),
            Self::Exists(k) => write!(f, "{k}"),
            Self::DoesNotExist(k) => write!(f, "!{k}"),
        }
    }
}

/// A conjunction of label requirements. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// A selector string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {input:?}: {reason}")]
pub struct SelectorError {
    /// The selector text.
    pub input: String,
    /// What is wrong.
    pub reason: String,
}

impl LabelSelector {
    /// A selector with the given requirements.
    pub fn new(requirements: Vec<Requirement>) -> Self {
        Self { requirements }
    }

    /// A selector requiring `key=value` for every entry.
    pub fn from_equalities<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self::new(
            pairs
                .into_iter()
                .map(|(k, v)| Requirement::Equals(k.into(), v.into()))
                .collect(),
        )
    }

    /// Adds a requirement.
    pub fn and(mut self, r: Requirement) -> Self {
        self.requirements.push(r);
        self
    }

    /// The requirements, in order.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether a label set satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses the Kubernetes selector syntax.
    ///
    /// # Errors
    /// Returns a [`SelectorError`] saying what is wrong and where.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let err = |reason: String| SelectorError {
            input: input.to_owned(),
            reason,
        };
        let mut requirements = Vec::new();
        for term in split_terms(input).map_err(err)? {
            let term = term.trim();
            if term.is_empty() {
                return Err(err("empty requirement".into()));
            }
            let req = parse_term(term).map_err(err)?;
            check_requirement(&req).map_err(err)?;
            requirements.push(req);
        }
        Ok(Self { requirements })
    }

    /// Checks a selector built in code (not parsed) by the rules [`LabelSelector::parse`]
    /// applies: valid label keys and values, and a non-empty set for `in` / `notin`.
    ///
    /// # Errors
    /// A [`SelectorError`] naming the selector and the first bad requirement.
    pub fn check(&self) -> Result<(), SelectorError> {
        self.requirements.iter().try_for_each(|req| {
            check_requirement(req).map_err(|reason| SelectorError {
                input: self.to_string(),
                reason,
            })
        })
    }
}

fn check_requirement(req: &Requirement) -> Result<(), String> {
    check_label_key(req.key())?;
    match req {
        Requirement::Equals(_, v) | Requirement::NotEquals(_, v) => check_label_value(v),
        Requirement::In(k, vs) | Requirement::NotIn(k, vs) => {
            if vs.is_empty() {
                return Err(format!("{k:?}: a set of values must not be empty"));
            }
            vs.iter().try_for_each(|v| check_label_value(v))
        }
        Requirement::Exists(_) | Requirement::DoesNotExist(_) => Ok(()),
    }
}

/// Splits on commas that are not inside parentheses.
fn split_terms(input: &str) -> Result<Vec<&str>, String> {
    if input.trim().is_empty() {
        return Ok(Vec::new());
    }
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'".into());
                }
            }
            ',' if depth == 0 => {
                out.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    out.push(&input[start..]);
    Ok(out)
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key.trim().to_owned()));
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(k.trim().into(), v.trim().into()));
    }
    if let Some(open) = term.find('(') {
        let head = term[..open].trim();
        let values = term[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| format!("{term:?}: expected ')' at the end"))?;
        let values: BTreeSet<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
        let (key, op) = head
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| format!("{term:?}: expected 'in' or 'notin'"))?;
        return match op {
            "in" => Ok(Requirement::In(key.trim().into(), values)),
            "notin" => Ok(Requirement::NotIn(key.trim().into(), values)),
            other => Err(format!(
                "{term:?}: unknown operator {other:?}, expected 'in' or 'notin'"
            )),
        };
    }
    if term.contains(char::is_whitespace) {
        return Err(format!("{term:?}: unexpected space"));
    }
    Ok(Requirement::Exists(term.to_owned()))
}

impl FromStr for LabelSelector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl Serialize for LabelSelector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LabelSelector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn check_refuses_selectors_built_in_code_that_parse_would_refuse() {
        assert!(
            LabelSelector::parse("app=web,tier in (a,b)")
                .unwrap()
                .check()
                .is_ok()
        );
        let bad_key = LabelSelector::from_equalities([("bad key!", "x")]);
        let err = bad_key.check().unwrap_err();
        assert!(err.to_string().contains("bad key!"), "{err}");
        let empty_set = LabelSelector::new(vec![Requirement::In("app".into(), BTreeSet::new())]);
        assert!(empty_set.check().unwrap_err().reason.contains("empty"));
        let bad_value = LabelSelector::from_equalities([("app", "-x-")]);
        assert!(bad_value.check().is_err());
    }

    #[rstest]
    #[case("app=web", true)]
    #[case("app==web", true)]
    #[case("app!=web", false)]
    #[case("app!=db", true)]
    #[case("missing!=x", true)]
    #[case("tier in (front, back)", true)]
    #[case("tier notin (front)", false)]
    #[case("missing notin (front)", true)]
    #[case("app", true)]
    #[case("!app", false)]
    #[case("!missing", true)]
    #[case("app=web,tier in (front),!missing", true)]
    #[case("", true)]
    fn matching(#[case] sel: &str, #[case] expected: bool) {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert_eq!(
            LabelSelector::parse(sel).unwrap().matches(&l),
            expected,
            "{sel}"
        );
    }

    #[rstest]
    #[case("app=")]
    #[case("a b")]
    #[case("tier in (x")]
    #[case("tier within (x)")]
    #[case("a=b,,c=d")]
    #[case("bad key=1")]
    fn parse_errors(#[case] sel: &str) {
        if sel == "app=" {
            // An empty value is valid in Kubernetes.
            assert!(LabelSelector::parse(sel).is_ok());
        } else {
            assert!(LabelSelector::parse(sel).is_err(), "{sel}");
        }
    }

    #[test]
    fn display_round_trips() {
        let text = "a=b,c!=d,e in (x,y),f notin (z),g,!h";
        let s = LabelSelector::parse(text).unwrap();
        assert_eq!(s.to_string(), text);
        assert_eq!(LabelSelector::parse(&s.to_string()).unwrap(), s);
    }
}
