//! Argument templates and result mappings: how a profile turns Chimera's values into a tool's
//! arguments, and a tool's answer back into Chimera's fields.
//!
//! A template is JSON in which a string `"{{name}}"` stands for the value `name` (of whatever
//! JSON type), `"{{name?}}"` for the value or nothing (the key or element is left out), and
//! `{{name}}` inside a longer string for the value as text. Names are dotted (`parent.cid`,
//! `account.did`).
//!
//! A mapping reads an answer with JSON pointers (RFC 6901): a pointer (`"/result/post_uri"`,
//! `""` for the whole answer), a list of pointers (the first that holds a value), an object of
//! mappings, or `{"each": pointer, "map": mapping}` for every element of an array.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The values a template is filled with, by dotted name.
pub type Vars = BTreeMap<String, Value>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("no value for {{{{{0}}}}}")]
    Missing(String),
    #[error("{{{{{0}}}}} is used inside a text but its value is not text or a number")]
    NotText(String),
    #[error("unterminated placeholder in {0:?}")]
    Unterminated(String),
}

/// One placeholder of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub name: String,
    pub optional: bool,
}

/// The placeholder a whole string is, if it is one.
fn whole(text: &str) -> Option<Placeholder> {
    let inner = text.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") {
        return None;
    }
    let inner = inner.trim();
    Some(match inner.strip_suffix('?') {
        Some(name) => Placeholder {
            name: name.trim().to_owned(),
            optional: true,
        },
        None => Placeholder {
            name: inner.to_owned(),
            optional: false,
        },
    })
}

/// The placeholders inside a longer text, in order.
fn embedded(text: &str) -> Result<Vec<Placeholder>, TemplateError> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unterminated(text.to_owned()))?;
        found.push(Placeholder {
            name: after[..end].trim().to_owned(),
            optional: false,
        });
        rest = &after[end + 2..];
    }
    Ok(found)
}

/// Every placeholder of `template`.
pub fn placeholders(template: &Value) -> Result<Vec<Placeholder>, TemplateError> {
    let mut found = Vec::new();
    collect(template, &mut found)?;
    Ok(found)
}

fn collect(value: &Value, found: &mut Vec<Placeholder>) -> Result<(), TemplateError> {
    match value {
        Value::String(text) => match whole(text) {
            Some(p) => found.push(p),
            None => found.extend(embedded(text)?),
        },
        Value::Array(items) => {
            for item in items {
                collect(item, found)?;
            }
        }
        Value::Object(fields) => {
            for item in fields.values() {
                collect(item, found)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `template` with its placeholders replaced by `vars`.
pub fn fill(template: &Value, vars: &Vars) -> Result<Value, TemplateError> {
    Ok(fill_value(template, vars)?.unwrap_or(Value::Null))
}

/// `None`: an optional placeholder without a value (left out by the caller).
fn fill_value(template: &Value, vars: &Vars) -> Result<Option<Value>, TemplateError> {
    match template {
        Value::String(text) => {
            if let Some(p) = whole(text) {
                return match vars.get(&p.name) {
                    Some(Value::Null) | None if p.optional => Ok(None),
                    Some(value) => Ok(Some(value.clone())),
                    None => Err(TemplateError::Missing(p.name)),
                };
            }
            interpolate(text, vars).map(|t| Some(Value::String(t)))
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if let Some(v) = fill_value(item, vars)? {
                    out.push(v);
                }
            }
            Ok(Some(Value::Array(out)))
        }
        Value::Object(fields) => {
            let mut out = Map::new();
            for (key, item) in fields {
                if let Some(v) = fill_value(item, vars)? {
                    out.insert(key.clone(), v);
                }
            }
            Ok(Some(Value::Object(out)))
        }
        other => Ok(Some(other.clone())),
    }
}

fn interpolate(text: &str, vars: &Vars) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unterminated(text.to_owned()))?;
        let name = after[..end].trim();
        match vars.get(name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Number(n)) => out.push_str(&n.to_string()),
            Some(_) => return Err(TemplateError::NotText(name.to_owned())),
            None => return Err(TemplateError::Missing(name.to_owned())),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// How an answer is read back.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Mapping {
    Pointer(String),
    FirstOf(Vec<String>),
    Each(Each),
    Object(BTreeMap<String, Mapping>),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Each {
    pub each: String,
    pub map: Box<Mapping>,
}

impl Mapping {
    /// The whole answer, as it is.
    pub fn whole() -> Self {
        Self::Pointer(String::new())
    }

    /// What this mapping reads from `answer`; `null` where a pointer finds nothing.
    pub fn apply(&self, answer: &Value) -> Value {
        match self {
            Self::Pointer(p) => at(answer, p),
            Self::FirstOf(pointers) => pointers
                .iter()
                .map(|p| at(answer, p))
                .find(|v| !v.is_null())
                .unwrap_or(Value::Null),
            Self::Each(each) => match answer.pointer(&each.each) {
                Some(Value::Array(items)) => {
                    Value::Array(items.iter().map(|item| each.map.apply(item)).collect())
                }
                _ => Value::Array(Vec::new()),
            },
            Self::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, m)| (k.clone(), m.apply(answer)))
                    .collect(),
            ),
        }
    }

    /// The pointers that are not RFC 6901 pointers (each must be empty or start with `/`).
    pub fn bad_pointers(&self) -> Vec<String> {
        let bad = |p: &String| !(p.is_empty() || p.starts_with('/'));
        match self {
            Self::Pointer(p) => [p].into_iter().filter(|p| bad(p)).cloned().collect(),
            Self::FirstOf(ps) => ps.iter().filter(|p| bad(p)).cloned().collect(),
            Self::Each(each) => {
                let mut out: Vec<String> = [&each.each]
                    .into_iter()
                    .filter(|p| bad(p))
                    .cloned()
                    .collect();
                out.extend(each.map.bad_pointers());
                out
            }
            Self::Object(fields) => fields.values().flat_map(Mapping::bad_pointers).collect(),
        }
    }
}

fn at(answer: &Value, pointer: &str) -> Value {
    if pointer.is_empty() || pointer == "/" {
        return answer.clone();
    }
    answer.pointer(pointer).cloned().unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(value: Value) -> Vars {
        value
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn fills_whole_optional_and_embedded_placeholders() {
        let template = json!({
            "text": "{{text}}",
            "limit": "{{limit}}",
            "reply_to": {"parent": {"uri": "{{parent.uri}}"}},
            "media": "{{media?}}",
            "tags": ["{{tag?}}", "fixed"],
            "note": "by {{account.handle}} ({{limit}})",
        });
        let filled = fill(
            &template,
            &vars(json!({"text": "hi", "limit": 5, "parent.uri": "at://p",
                         "account.handle": "nova.test"})),
        )
        .unwrap();
        assert_eq!(
            filled,
            json!({"text": "hi", "limit": 5, "reply_to": {"parent": {"uri": "at://p"}},
                   "tags": ["fixed"], "note": "by nova.test (5)"})
        );
        assert_eq!(
            fill(&template, &vars(json!({"text": "hi"}))),
            Err(TemplateError::Missing("limit".into()))
        );
        let names: Vec<_> = placeholders(&template)
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.optional))
            .collect();
        assert!(names.contains(&("media".into(), true)));
        assert!(names.contains(&("account.handle".into(), false)));
        assert!(placeholders(&json!("a {{b")).is_err());
    }

    #[test]
    fn maps_pointers_lists_and_arrays() {
        let answer = json!({"result": {"status": "success", "post_uri": "at://x",
            "feed": [{"post": {"uri": "at://1", "record": {"text": "a"}}},
                     {"post": {"uri": "at://2", "record": {"text": "b", "reply": {"root": {"uri": "at://r"}}}}}]}});
        let mapping: Mapping = serde_json::from_value(json!({
            "post_id": "/result/post_uri",
            "missing": "/result/nope",
            "items": {"each": "/result/feed", "map": {
                "id": "/post/uri",
                "root": ["/post/record/reply/root/uri", "/post/uri"]}},
        }))
        .unwrap();
        assert_eq!(
            mapping.apply(&answer),
            json!({"post_id": "at://x", "missing": null, "items": [
                {"id": "at://1", "root": "at://1"}, {"id": "at://2", "root": "at://r"}]})
        );
        assert_eq!(Mapping::whole().apply(&answer), answer);
        let bad: Mapping = serde_json::from_value(json!({"a": "result/x"})).unwrap();
        assert_eq!(bad.bad_pointers(), vec!["result/x".to_owned()]);
    }
}
