//! Checks a JSON value against a JSON Schema: the subset structured answers use (`type`, and
//! for objects `properties`, `required`, `additionalProperties: false`; for arrays `items`,
//! `minItems`, `maxItems`; for strings `minLength`, `maxLength`; for numbers `minimum`,
//! `maximum`; `enum` for any). A keyword outside the subset is an error of the schema, not a
//! pass: what cannot be checked is not trusted.

use serde_json::{Map, Value};

/// Why a value does not fit its schema, with where (`$.tasks[2].kind`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct Mismatch {
    pub path: String,
    pub reason: String,
}

/// `Ok` when `value` fits `schema`.
pub fn validate(schema: &Value, value: &Value) -> Result<(), Mismatch> {
    check(schema, value, "$")
}

fn mismatch(path: &str, reason: impl Into<String>) -> Mismatch {
    Mismatch {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

const KNOWN: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "enum",
    "description",
    "title",
];

fn check(schema: &Value, value: &Value, path: &str) -> Result<(), Mismatch> {
    let Some(schema) = schema.as_object() else {
        return Err(mismatch(path, "the schema is not an object"));
    };
    if let Some(unknown) = schema.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(mismatch(
            path,
            format!("the schema keyword {unknown} is not supported"),
        ));
    }
    if let Some(types) = schema.get("type") {
        let names: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return Err(mismatch(path, "type must be a string or a list")),
        };
        if !names.iter().any(|t| is_type(value, t)) {
            return Err(mismatch(path, format!("expected {}", names.join(" or "))));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(mismatch(
            path,
            format!("{value} is not one of {}", Value::Array(allowed.clone())),
        ));
    }
    match value {
        Value::Object(fields) => check_object(schema, fields, path),
        Value::Array(items) => check_array(schema, items, path),
        Value::String(s) => {
            let length = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && length < min
            {
                return Err(mismatch(path, format!("shorter than {min} characters")));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && length > max
            {
                return Err(mismatch(path, format!("longer than {max} characters")));
            }
            Ok(())
        }
        Value::Number(n) => {
            // serde_json numbers are finite.
            let n = n.as_f64().unwrap_or_default();
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                return Err(mismatch(path, format!("below the minimum {min}")));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                return Err(mismatch(path, format!("above the maximum {max}")));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}

fn check_object(
    schema: &Map<String, Value>,
    fields: &Map<String, Value>,
    path: &str,
) -> Result<(), Mismatch> {
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                return Err(mismatch(path, format!("{name} is missing")));
            }
        }
    }
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    for (name, field) in fields {
        let at = format!("{path}.{name}");
        match properties.and_then(|p| p.get(name)) {
            Some(sub) => check(sub, field, &at)?,
            None if closed => return Err(mismatch(&at, "is not an allowed field")),
            None => {}
        }
    }
    Ok(())
}

fn check_array(schema: &Map<String, Value>, items: &[Value], path: &str) -> Result<(), Mismatch> {
    let count = items.len() as u64;
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && count < min
    {
        return Err(mismatch(path, format!("fewer than {min} items")));
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && count > max
    {
        return Err(mismatch(path, format!("more than {max} items")));
    }
    if let Some(item) = schema.get("items") {
        for (i, value) in items.iter().enumerate() {
            check(item, value, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan_schema() -> Value {
        json!({"type": "object", "additionalProperties": false, "required": ["tasks"],
               "properties": {"tasks": {"type": "array", "minItems": 1, "maxItems": 3,
                   "items": {"type": "object", "required": ["kind", "brief"], "additionalProperties": false,
                             "properties": {"kind": {"enum": ["draft", "publish"]},
                                            "brief": {"type": "string", "minLength": 1, "maxLength": 20},
                                            "score": {"type": "number", "minimum": 0, "maximum": 1}}}}}})
    }

    #[test]
    fn a_value_of_the_schema_passes() {
        let ok = json!({"tasks": [{"kind": "draft", "brief": "spring", "score": 0.5}]});
        assert_eq!(validate(&plan_schema(), &ok), Ok(()));
    }

    #[test]
    fn each_kind_of_mismatch_names_where() {
        let cases = [
            (json!({}), "$", "tasks is missing"),
            (json!({"tasks": []}), "$.tasks", "fewer than 1 items"),
            (
                json!({"tasks": [{"kind": "wire", "brief": "x"}]}),
                "$.tasks[0].kind",
                "is not one of",
            ),
            (
                json!({"tasks": [{"kind": "draft", "brief": ""}]}),
                "$.tasks[0].brief",
                "shorter",
            ),
            (
                json!({"tasks": [{"kind": "draft", "brief": "x", "score": 2}]}),
                "$.tasks[0].score",
                "above",
            ),
            (
                json!({"tasks": [{"kind": "draft", "brief": "x", "do": "rm"}]}),
                "$.tasks[0].do",
                "not an allowed",
            ),
            (json!({"tasks": "all"}), "$.tasks", "expected array"),
        ];
        for (value, path, reason) in cases {
            let err = validate(&plan_schema(), &value).unwrap_err();
            assert_eq!(err.path, path, "{value}");
            assert!(err.reason.contains(reason), "{value}: {err}");
        }
    }

    #[test]
    fn a_keyword_that_cannot_be_checked_is_refused() {
        let schema = json!({"type": "string", "pattern": "^a"});
        assert!(
            validate(&schema, &json!("abc"))
                .unwrap_err()
                .reason
                .contains("pattern")
        );
    }
}
