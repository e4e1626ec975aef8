//! PPL's value matchers: string matchers (`is`, `starts_with`, `ends_with`, `contains`, `in`,
//! `not_in`, `not`; a bare scalar means `is`) and string-list matchers (`has`, `is`, `exclude`;
//! a bare scalar means `has`).

use super::parse::{Ctx, ParseError};
use serde_yaml_ng::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum StringMatcher {
    Is(String),
    StartsWith(String),
    EndsWith(String),
    Contains(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Not(Box<StringMatcher>),
    /// Several keys in one matcher object: all must hold.
    All(Vec<StringMatcher>),
}

impl StringMatcher {
    pub fn matches(&self, v: &str) -> bool {
        match self {
            StringMatcher::Is(s) => v == s,
            StringMatcher::StartsWith(s) => v.starts_with(s.as_str()),
            StringMatcher::EndsWith(s) => v.ends_with(s.as_str()),
            StringMatcher::Contains(s) => v.contains(s.as_str()),
            StringMatcher::In(l) => l.iter().any(|s| s == v),
            StringMatcher::NotIn(l) => !l.iter().any(|s| s == v),
            StringMatcher::Not(m) => !m.matches(v),
            StringMatcher::All(ms) => ms.iter().all(|m| m.matches(v)),
        }
    }

    /// The same matcher with every operand lower-cased (for emails and domains).
    pub fn lowercase(self) -> StringMatcher {
        let l = |s: String| s.to_ascii_lowercase();
        match self {
            StringMatcher::Is(s) => StringMatcher::Is(l(s)),
            StringMatcher::StartsWith(s) => StringMatcher::StartsWith(l(s)),
            StringMatcher::EndsWith(s) => StringMatcher::EndsWith(l(s)),
            StringMatcher::Contains(s) => StringMatcher::Contains(l(s)),
            StringMatcher::In(v) => StringMatcher::In(v.into_iter().map(l).collect()),
            StringMatcher::NotIn(v) => StringMatcher::NotIn(v.into_iter().map(l).collect()),
            StringMatcher::Not(m) => StringMatcher::Not(Box::new(m.lowercase())),
            StringMatcher::All(ms) => {
                StringMatcher::All(ms.into_iter().map(StringMatcher::lowercase).collect())
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ListMatcher {
    /// The list contains the value.
    Has(String),
    /// The list is exactly these values (order ignored).
    Is(Vec<String>),
    /// The list does not contain the value.
    Exclude(String),
    All(Vec<ListMatcher>),
}

impl ListMatcher {
    /// The values the matcher names.
    pub fn values(&self, out: &mut std::collections::BTreeSet<String>) {
        match self {
            ListMatcher::Has(v) | ListMatcher::Exclude(v) => {
                out.insert(v.clone());
            }
            ListMatcher::Is(vs) => out.extend(vs.iter().cloned()),
            ListMatcher::All(ms) => ms.iter().for_each(|m| m.values(out)),
        }
    }

    pub fn matches<S: AsRef<str>>(&self, list: &[S]) -> bool {
        let has = |v: &str| list.iter().any(|x| x.as_ref() == v);
        match self {
            ListMatcher::Has(v) => has(v),
            ListMatcher::Is(want) => list.len() == want.len() && want.iter().all(|w| has(w)),
            ListMatcher::Exclude(v) => !has(v),
            ListMatcher::All(ms) => ms.iter().all(|m| m.matches(list)),
        }
    }
}

/// A YAML scalar as text (`port: 8080` and `port: "8080"` mean the same to a matcher).
pub fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_list(v: &Value, cx: &Ctx, path: &str) -> Result<Vec<String>, ParseError> {
    match v {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, it)| {
                scalar(it).ok_or_else(|| cx.err(&format!("{path}[{i}]"), "expected a string"))
            })
            .collect(),
        other => scalar(other)
            .map(|s| vec![s])
            .ok_or_else(|| cx.err(path, "expected a string or a list of strings")),
    }
}

pub fn parse_string_matcher(v: &Value, cx: &Ctx, path: &str) -> Result<StringMatcher, ParseError> {
    if let Some(s) = scalar(v) {
        return Ok(StringMatcher::Is(s));
    }
    let Value::Mapping(m) = v else {
        return Err(cx.err(
            path,
            "expected a string or a matcher such as {is: …}, {starts_with: …}, {in: […]}",
        ));
    };
    let mut all = Vec::new();
    for (k, val) in m {
        let key = scalar(k).unwrap_or_default();
        let p = format!("{path}.{key}");
        let one = |cx: &Ctx| scalar(val).ok_or_else(|| cx.err(&p, "expected a string"));
        all.push(match key.as_str() {
            "is" => StringMatcher::Is(one(cx)?),
            "starts_with" => StringMatcher::StartsWith(one(cx)?),
            "ends_with" => StringMatcher::EndsWith(one(cx)?),
            "contains" => StringMatcher::Contains(one(cx)?),
            "in" => StringMatcher::In(string_list(val, cx, &p)?),
            "not_in" => StringMatcher::NotIn(string_list(val, cx, &p)?),
            "not" => StringMatcher::Not(Box::new(parse_string_matcher(val, cx, &p)?)),
            other => {
                return Err(cx.err(
                    &p,
                    &format!("unknown string matcher '{other}' (is, starts_with, ends_with, contains, in, not_in, not)"),
                ))
            }
        });
    }
    match all.len() {
        0 => Err(cx.err(path, "empty matcher")),
        1 => Ok(all.remove(0)),
        _ => Ok(StringMatcher::All(all)),
    }
}

pub fn parse_list_matcher(v: &Value, cx: &Ctx, path: &str) -> Result<ListMatcher, ParseError> {
    if let Some(s) = scalar(v) {
        return Ok(ListMatcher::Has(s));
    }
    let Value::Mapping(m) = v else {
        return Err(cx.err(
            path,
            "expected a string or a matcher such as {has: …}, {is: …}, {exclude: …}",
        ));
    };
    let mut all = Vec::new();
    for (k, val) in m {
        let key = scalar(k).unwrap_or_default();
        let p = format!("{path}.{key}");
        all.push(match key.as_str() {
            "has" => ListMatcher::Has(scalar(val).ok_or_else(|| cx.err(&p, "expected a string"))?),
            "exclude" => {
                ListMatcher::Exclude(scalar(val).ok_or_else(|| cx.err(&p, "expected a string"))?)
            }
            "is" => ListMatcher::Is(string_list(val, cx, &p)?),
            other => {
                return Err(cx.err(
                    &p,
                    &format!("unknown list matcher '{other}' (has, is, exclude)"),
                ))
            }
        });
    }
    match all.len() {
        0 => Err(cx.err(path, "empty matcher")),
        1 => Ok(all.remove(0)),
        _ => Ok(ListMatcher::All(all)),
    }
}
