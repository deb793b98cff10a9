//! The OpenAPI document and the server agree on every input constraint: the test walks the
//! document served at `/openapi.json` and probes each request body field, query parameter and
//! header the API takes, one at a time, on a body that is otherwise valid.
//!
//! - Documented means enforced: a value just outside a documented bound (type, length, pattern,
//!   range, item count, a required field left out, an unknown field) is refused with a 4xx.
//! - Enforced means documented: a value no bound is documented for (a very long string, an
//!   empty one, a negative or huge number, many or no items, an optional field left out) may be
//!   refused only if the document says why.
//!
//! No probe may ever answer a 5xx.

use std::collections::BTreeMap;

use chimera_tests::swarm::{Swarm, SwarmOptions};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::hitl::operator;

const SOUL: &str = include_str!("../../examples/agents/nova/SOUL.md");
const AGENTS: &str = include_str!("../../examples/agents/nova/AGENTS.md");

/// One request the probes start from: valid, so that a refusal is the probed field's.
struct Endpoint {
    method: Method,
    /// The path as the document names it, and as called.
    template: &'static str,
    path: String,
    body: Option<Value>,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    token: String,
}

/// What a probe expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Outside a documented bound: refused.
    Refused,
    /// Not outside any documented bound: accepted, or refused for another reason than input
    /// validation (a 404, a 409).
    NotRefused,
}

#[derive(Debug)]
struct Probe {
    what: String,
    expect: Expect,
    mutate: Mutation,
}

#[derive(Debug, Clone)]
enum Mutation {
    Body(String, Option<Value>),
    Extra,
    Query(String, Option<String>),
    Header(String, String),
}

/// Refused as invalid input (nothing stored): what a documented constraint answers.
fn refused(status: u16) -> bool {
    matches!(status, 400 | 413 | 414 | 422)
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => resolve(
            doc,
            doc.pointer(&r.replace("#/", "/")).unwrap_or(&Value::Null),
        ),
        None => schema,
    }
}

fn types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// A value of the wrong JSON type for `schema`.
fn wrong_type(schema: &Value) -> Value {
    let t = types(schema);
    if t.contains(&"string") {
        json!(12345)
    } else {
        json!("not the documented type")
    }
}

fn n(schema: &Value, key: &str) -> Option<i64> {
    schema[key].as_i64()
}

/// A value that does not match `pattern`.
fn off_pattern(pattern: &str) -> Value {
    let re = regex::Regex::new(pattern).expect("a documented pattern compiles");
    ["NOT of the pattern!", "", " ", "0", "zzz", "a b"]
        .into_iter()
        .find(|c| !re.is_match(c))
        .map(|c| json!(c))
        .unwrap_or_else(|| panic!("no probe value breaks {pattern}"))
}

/// A string no documented bound allows for refusing: long, but inside the URI limit (8 KiB)
/// when it goes in a query string.
const LONG: usize = 5000;

/// The probes for one property of a body, or one query parameter or header.
fn field_probes(
    name: &str,
    schema: &Value,
    required: bool,
    base: Option<&Value>,
) -> Vec<(String, Expect, Option<Value>)> {
    let mut probes = Vec::new();
    let mut add = |what: String, expect, value| probes.push((what, expect, value));
    let t = types(schema);
    let has = |k: &str| !schema[k].is_null();
    let constrained_text = has("pattern") || has("enum") || has("format");
    add(
        format!("{name} of the wrong type"),
        Expect::Refused,
        Some(wrong_type(schema)),
    );
    if required {
        add(format!("{name} left out (required)"), Expect::Refused, None);
    } else {
        add(
            format!("{name} left out (optional)"),
            Expect::NotRefused,
            None,
        );
    }
    if t.contains(&"string") {
        match n(schema, "maxLength") {
            Some(max) => add(
                format!("{name} longer than {max}"),
                Expect::Refused,
                Some(json!("a".repeat(max as usize + 1))),
            ),
            None if !constrained_text => add(
                format!("{name} of {LONG} characters"),
                Expect::NotRefused,
                Some(json!("a".repeat(LONG))),
            ),
            None => {}
        }
        match n(schema, "minLength") {
            Some(min) if min >= 1 => add(
                format!("{name} shorter than {min}"),
                Expect::Refused,
                Some(json!("a".repeat(min as usize - 1))),
            ),
            _ if !constrained_text => {
                add(format!("{name} empty"), Expect::NotRefused, Some(json!("")))
            }
            _ => {}
        }
        if let Some(pattern) = schema["pattern"].as_str() {
            add(
                format!("{name} not of its pattern"),
                Expect::Refused,
                Some(off_pattern(pattern)),
            );
        } else if schema["format"] == "uuid" || schema["format"] == "date-time" {
            add(
                format!("{name} not of its format"),
                Expect::Refused,
                Some(json!("NOT of the format")),
            );
        }
    }
    if t.contains(&"integer") || t.contains(&"number") {
        match n(schema, "minimum") {
            Some(min) => add(
                format!("{name} below {min}"),
                Expect::Refused,
                Some(json!(min - 1)),
            ),
            None => add(
                format!("{name} negative"),
                Expect::NotRefused,
                Some(json!(-1)),
            ),
        }
        match n(schema, "maximum") {
            Some(max) => add(
                format!("{name} above {max}"),
                Expect::Refused,
                Some(json!(max + 1)),
            ),
            None => add(
                format!("{name} huge"),
                Expect::NotRefused,
                Some(json!(1_000_000_000_000i64)),
            ),
        }
    }
    if t.contains(&"array") {
        let item = base.and_then(|b| b.get(0)).cloned().unwrap_or(json!("x"));
        match n(schema, "maxItems") {
            Some(max) => add(
                format!("{name} with {} items", max + 1),
                Expect::Refused,
                Some(json!(vec![item.clone(); max as usize + 1])),
            ),
            None => add(
                format!("{name} with 50 items"),
                Expect::NotRefused,
                Some(json!(vec![item.clone(); 50])),
            ),
        }
        match n(schema, "minItems") {
            Some(min) if min >= 1 => add(
                format!("{name} with {} items", min - 1),
                Expect::Refused,
                Some(json!(vec![item; min as usize - 1])),
            ),
            _ => add(
                format!("{name} with no items"),
                Expect::NotRefused,
                Some(json!([])),
            ),
        }
    }
    probes
}

fn probes(doc: &Value, endpoint: &Endpoint) -> Vec<Probe> {
    let op = &doc["paths"][endpoint.template][endpoint.method.as_str().to_lowercase()];
    assert!(
        op.is_object(),
        "{} {} is documented",
        endpoint.method,
        endpoint.template
    );
    let mut out = Vec::new();
    if let Some(body) = &endpoint.body {
        let schema = resolve(
            doc,
            &op["requestBody"]["content"]["application/json"]["schema"],
        );
        assert!(
            schema.is_object(),
            "{} {}: the body is documented",
            endpoint.method,
            endpoint.template
        );
        let required: Vec<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
            let prop = resolve(doc, prop);
            for (what, expect, value) in field_probes(
                name,
                prop,
                required.contains(&name.as_str()),
                body.get(name),
            ) {
                out.push(Probe {
                    what,
                    expect,
                    mutate: Mutation::Body(name.clone(), value),
                });
            }
        }
        let closed = schema["additionalProperties"] == false;
        out.push(Probe {
            what: "an unknown field".into(),
            expect: if closed {
                Expect::Refused
            } else {
                Expect::NotRefused
            },
            mutate: Mutation::Extra,
        });
    }
    for param in op["parameters"].as_array().into_iter().flatten() {
        let name = param["name"].as_str().unwrap().to_owned();
        let schema = resolve(doc, &param["schema"]);
        match param["in"].as_str() {
            Some("query") => {
                // Of parameters of which exactly one must be given (the description says so),
                // the one given may not be left out.
                let one_of = param["description"]
                    .as_str()
                    .is_some_and(|d| d.contains("exactly one of"))
                    && endpoint.query.contains_key(&name);
                for (what, expect, value) in
                    field_probes(&name, schema, param["required"] == true || one_of, None)
                {
                    // A query string has no types: text is text.
                    if what.contains("wrong type") && types(schema).contains(&"string") {
                        continue;
                    }
                    let text = value.map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    });
                    out.push(Probe {
                        what,
                        expect,
                        mutate: Mutation::Query(name.clone(), text),
                    });
                }
            }
            Some("header") if endpoint.headers.contains_key(&name) => {
                let (what, value, expect) = match n(schema, "maxLength") {
                    Some(max) => (
                        format!("{name} longer than {max}"),
                        "k".repeat(max as usize + 1),
                        Expect::Refused,
                    ),
                    None => (
                        format!("{name} of 250 characters"),
                        "k".repeat(250),
                        Expect::NotRefused,
                    ),
                };
                out.push(Probe {
                    what,
                    expect,
                    mutate: Mutation::Header(name.clone(), value),
                });
                let expect = if schema["pattern"].is_null() {
                    Expect::NotRefused
                } else {
                    Expect::Refused
                };
                out.push(Probe {
                    what: format!("{name} with a space"),
                    expect,
                    mutate: Mutation::Header(name.clone(), "with space".into()),
                });
            }
            _ => {}
        }
    }
    out
}

async fn send(swarm: &Swarm, endpoint: &Endpoint, mutation: &Mutation) -> (u16, String) {
    let mut body = endpoint.body.clone();
    let mut query = endpoint.query.clone();
    let mut headers = endpoint.headers.clone();
    match mutation {
        Mutation::Body(name, value) => {
            let object: &mut Map<String, Value> =
                body.as_mut().and_then(Value::as_object_mut).unwrap();
            match value {
                Some(v) => object.insert(name.clone(), v.clone()),
                None => object.remove(name),
            };
        }
        Mutation::Extra => {
            body.as_mut()
                .and_then(Value::as_object_mut)
                .unwrap()
                .insert("zz_unknown".into(), json!(1));
        }
        Mutation::Query(name, value) => {
            match value {
                Some(v) => query.insert(name.clone(), v.clone()),
                None => query.remove(name),
            };
        }
        Mutation::Header(name, value) => {
            headers.insert(name.clone(), value.clone());
        }
    }
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let url = if query.is_empty() {
        format!("{}{}", swarm.api(), endpoint.path)
    } else {
        format!("{}{}?{}", swarm.api(), endpoint.path, query.join("&"))
    };
    let mut request = reqwest::Client::new()
        .request(endpoint.method.clone(), url)
        .bearer_auth(&endpoint.token);
    for (k, v) in &headers {
        request = request.header(k, v);
    }
    if let Some(body) = &body {
        request = request.json(body);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// A unique value for a probe's request (a handle, a name, a key).
fn fresh(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_documented_constraint_is_enforced_and_every_enforced_one_documented() {
    let mut swarm = Swarm::new(SwarmOptions::default()).await;
    swarm.run().await;
    let op = operator(&swarm);
    let rev = swarm.token("rita", &["reviewer"]);
    let admin = swarm.token("ada", &["admin"]);
    let platform = swarm.token("pat", &["platform_admin"]);
    let (_, doc) = crate::hitl::call(&swarm, Method::GET, "/openapi.json", None, None).await;
    let agent = swarm.agents[0].0.to_string();
    // A held reply: what the review endpoints decide on (each probe that passes validation
    // meets an item decided by an earlier one, a 409, which is not an input refusal).
    let goal = swarm
        .submit(
            0,
            "reply",
            "thanks for the kind words",
            json!({"platforms": ["x"], "in_reply_to": "post-oa", "simulated_quality": 0.80}),
        )
        .await;
    swarm
        .settle(&[goal], std::time::Duration::from_secs(90))
        .await;
    let (_, page) = crate::hitl::call(
        &swarm,
        Method::GET,
        &format!("/reviews?goal={}", goal.0),
        Some(&op),
        None,
    )
    .await;
    let item = page["items"][0].clone();
    let review = item["id"].as_str().unwrap().to_owned();
    let seen =
        json!({"artifact_hash": item["artifact_hash"], "policy_version": item["policy_version"]});
    let with = |extra: Value| {
        let mut body = seen.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let q = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>()
    };
    let endpoint =
        |method: Method, template: &'static str, path: String, body: Option<Value>, token: &str| {
            Endpoint {
                method,
                template,
                path,
                body,
                query: BTreeMap::new(),
                headers: BTreeMap::new(),
                token: token.to_owned(),
            }
        };
    let mut endpoints = vec![
        endpoint(
            Method::POST,
            "/tenants",
            "/tenants".into(),
            Some(json!({"name": fresh("t-")})),
            &platform,
        ),
        endpoint(
            Method::POST,
            "/agents",
            "/agents".into(),
            Some(
                json!({"handle": fresh("h_"), "display_name": "Probe", "platforms": ["x"], "soul_md": SOUL, "agents_md": AGENTS}),
            ),
            &op,
        ),
        endpoint(
            Method::PUT,
            "/agents/{id}/persona",
            format!("/agents/{agent}/persona"),
            Some(json!({"document": SOUL, "base_version": 1})),
            &op,
        ),
        endpoint(
            Method::PUT,
            "/agents/{id}/policy",
            format!("/agents/{agent}/policy"),
            Some(json!({"document": AGENTS, "base_version": 1})),
            &op,
        ),
        endpoint(
            Method::PUT,
            "/agents/{id}/budget",
            format!("/agents/{agent}/budget"),
            Some(json!({"currency": "USD", "balance_cents": 100})),
            &admin,
        ),
        endpoint(
            Method::POST,
            "/goals",
            "/goals".into(),
            Some(
                json!({"agent_id": agent, "kind": "campaign", "text": "spring lanterns", "constraints": {"platforms": ["x"]}}),
            ),
            &op,
        ),
        endpoint(
            Method::POST,
            "/reviews/{id}/approve",
            format!("/reviews/{review}/approve"),
            Some(seen.clone()),
            &rev,
        ),
        endpoint(
            Method::POST,
            "/reviews/{id}/reject",
            format!("/reviews/{review}/reject"),
            Some(with(json!({"reason": "off brand"}))),
            &rev,
        ),
        endpoint(
            Method::POST,
            "/reviews/{id}/edit",
            format!("/reviews/{review}/edit"),
            Some(with(json!({"arguments": {"text": "Thank you!"}}))),
            &rev,
        ),
        endpoint(
            Method::POST,
            "/reviews/bulk-approve",
            "/reviews/bulk-approve".into(),
            Some(json!({"items": [with(json!({"id": review}))], "dry_run": true})),
            &rev,
        ),
        endpoint(Method::GET, "/agents", "/agents".into(), None, &op),
        endpoint(Method::GET, "/goals", "/goals".into(), None, &op),
        endpoint(Method::GET, "/reviews", "/reviews".into(), None, &op),
        endpoint(Method::GET, "/audit", "/audit".into(), None, &op),
        endpoint(Method::GET, "/tenants", "/tenants".into(), None, &platform),
        endpoint(
            Method::GET,
            "/agents/{id}/ledger",
            format!("/agents/{agent}/ledger"),
            None,
            &op,
        ),
    ];
    let mut top_up = endpoint(
        Method::POST,
        "/agents/{id}/budget/top-ups",
        format!("/agents/{agent}/budget/top-ups"),
        Some(json!({"amount_cents": 1, "memo": "probe"})),
        &admin,
    );
    top_up
        .headers
        .insert("Idempotency-Key".into(), "probe-key".into());
    endpoints.push(top_up);
    for e in &mut endpoints {
        match e.template {
            "/goals" if e.method == Method::POST => {
                e.headers
                    .insert("Idempotency-Key".into(), "probe-goal".into());
            }
            // The audit trail needs a goal or a review to read.
            "/audit" => e.query = q(&[("goal", &goal.0.to_string())]),
            _ => {}
        }
    }

    let mut wrong = Vec::new();
    let mut count = 0;
    for endpoint in &endpoints {
        for probe in probes(&doc, endpoint) {
            count += 1;
            let (status, answer) = send(&swarm, endpoint, &probe.mutate).await;
            let ok = status < 500
                && match probe.expect {
                    Expect::Refused => refused(status),
                    Expect::NotRefused => !refused(status),
                };
            if !ok {
                let short: String = answer.chars().take(200).collect();
                wrong.push(format!(
                    "{} {}: {} expected {:?}, got {status} {short}",
                    endpoint.method, endpoint.template, probe.what, probe.expect
                ));
            }
        }
    }
    assert!(count > 150, "{count} probes");
    assert!(
        wrong.is_empty(),
        "{} of {count} probes disagree with the document:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    swarm.stop().await;
}
