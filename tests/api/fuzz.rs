//! Random and malformed input on every route: whatever a client sends, the server answers
//! with a status it means (never a 5xx other than 503, never a dropped connection), errors
//! are JSON naming the problem, and a request answered 4xx changes nothing stored.
//!
//! Every native operation comes from the served `/openapi.json`; the compatibility routes of
//! the seeds are listed here. Bodies are generated with proptest: arbitrary JSON, objects
//! built from the operation's declared property names with arbitrary values, and raw bytes
//! that are not JSON at all. Path ids are real objects of a fixture or junk. The runner is
//! deterministic, so a failure reproduces; `FUZZ_CASES` raises the number of cases.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRng, TestRunner};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::helpers::{body, spawn_app, TestApp};

/// Cases per operation (override with `FUZZ_CASES`).
fn cases() -> usize {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
}

/// Routes of the seed surfaces, which `/openapi.json` does not list.
const COMPAT: [(&str, &str); 24] = [
    ("POST", "/functions/v1/bot-control"),
    ("GET", "/functions/v1/rest-api-proxy/conversations"),
    ("GET", "/api/v1/conversations"),
    ("GET", "/api/v1/conversations/{id}"),
    ("GET", "/api/v1/conversations/{id}/messages"),
    ("PUT", "/api/v1/conversations/{id}/status"),
    ("POST", "/api/v1/conversations/{id}/ai-draft"),
    ("POST", "/api/v1/conversations/{id}/autoreply"),
    ("GET", "/api/chatbot/settings"),
    ("PUT", "/api/chatbot/settings"),
    ("GET", "/api/chatbot/keywords"),
    ("POST", "/api/chatbot/keywords"),
    ("PUT", "/api/chatbot/keywords/{id}"),
    ("DELETE", "/api/chatbot/keywords/{id}"),
    ("POST", "/api/chatbot/ai-contexts"),
    ("PUT", "/api/chatbot/ai-contexts/{id}"),
    ("POST", "/api/chatbot/flows"),
    ("GET", "/api/chatbot/transfers"),
    ("POST", "/api/chatbot/transfers"),
    ("POST", "/api/chatbot/transfers/pickup"),
    ("PUT", "/api/chatbot/transfers/{id}/assign"),
    ("PUT", "/api/chatbot/transfers/{id}/resume"),
    ("GET", "/api/chatbot/sessions/{id}"),
    ("PATCH", "/api/v2/instance/{instance}/typebot-integration/session/{session}"),
];

/// Property names the compat bodies use, so generated objects reach their validation.
const COMPAT_FIELDS: [&str; 22] = [
    "action",
    "conversation_id",
    "phone",
    "status",
    "message",
    "text",
    "keyword",
    "keywords",
    "response",
    "match_type",
    "priority",
    "name",
    "content",
    "trigger_keywords",
    "steps",
    "team_id",
    "agent_id",
    "contact_id",
    "notes",
    "enabled",
    "greeting_message",
    "fallback_message",
];

/// Path values that name nothing or are not ids at all.
const JUNK_IDS: [&str; 7] = [
    "0190f0f0-0000-7000-8000-000000000000",
    "not-an-id",
    "0",
    "%FF%FE",
    "..%2F..%2Fetc%2Fpasswd",
    "%00",
    "ffffffff-ffff-ffff-ffff-ffffffffffffffff",
];

/// Real objects for path parameters.
struct Fixture {
    bot: String,
    conversation: String,
    rule: String,
    flow: String,
    context: String,
    team: String,
    agent: String,
    transfer: String,
    session: String,
    key: String,
}

impl Fixture {
    async fn build(app: &TestApp) -> Fixture {
        let key = &app.admin_key;
        let bot = app.create_chatbot(key, "Fuzz").await;
        let rule = app
            .create_rule(key, &bot, &json!({"keywords": ["hours"], "match_type": "contains", "response": "9 to 5"}))
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let created = |response: Value| response["id"].as_str().expect("an id").to_string();
        let flow = json!({
            "name": "Order", "trigger_keywords": ["order"],
            "steps": [{"step_name": "ask", "step_order": 1, "message": "Number?", "message_type": "text",
                       "input_type": "text", "store_as": "order"}],
        });
        let flow = created(body(app.post(&format!("/v1/chatbots/{bot}/flows"), key, &flow).await).await);
        let context = json!({"name": "Shipping", "trigger_keywords": ["ship"], "content": "Worldwide."});
        let context = created(body(app.post(&format!("/v1/chatbots/{bot}/ai-contexts"), key, &context).await).await);
        let team = created(body(app.post("/v1/teams", key, &json!({"name": "Billing"})).await).await);
        let agent = json!({"name": "Ana", "email": "ana@example.com", "team_ids": [team]});
        let agent = created(body(app.post("/v1/agents", key, &agent).await).await);
        let first = app.handle_ok(key, &bot, "+4917000", "order").await;
        let conversation = first["conversation_id"].as_str().unwrap().to_string();
        let sessions = body(app.get("/v1/sessions", key).await).await;
        let session = sessions["items"][0]["id"].as_str().expect("a session").to_string();
        let other = app.handle_ok(key, &bot, "+4917001", "hello").await;
        let transfer = json!({"conversation_id": other["conversation_id"], "team_id": team});
        let transfer = created(body(app.post("/v1/transfers", key, &transfer).await).await);
        let spare = json!({"name": "spare", "scopes": ["conversations:read"]});
        let key = created(body(app.post("/v1/api-keys", key, &spare).await).await);
        Fixture { bot, conversation, rule, flow, context, team, agent, transfer, session, key }
    }

    /// The real object a path parameter names, from the parameter and the segment before it.
    fn real(&self, parameter: &str, before: &str) -> String {
        match (parameter, before) {
            ("bot", _) => self.bot.clone(),
            ("channel", _) => "wa-main".into(),
            ("instance", _) => self.bot.clone(),
            ("session", _) | (_, "sessions") => self.session.clone(),
            (_, "conversations") => self.conversation.clone(),
            (_, "keywords") => self.rule.clone(),
            (_, "flows") => self.flow.clone(),
            (_, "ai-contexts") => self.context.clone(),
            (_, "teams") => self.team.clone(),
            (_, "agents") => self.agent.clone(),
            (_, "transfers") => self.transfer.clone(),
            (_, "api-keys") => self.key.clone(),
            _ => JUNK_IDS[0].into(),
        }
    }
}

/// A request to send, for the failure message.
#[derive(Debug, Clone)]
enum Payload {
    None,
    Json(Value),
    Raw { content_type: &'static str, bytes: Vec<u8> },
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,12}",
        ".{0,40}",
        Just(String::new()),
        Just("   ".to_string()),
        Just("{{name}}".to_string()),
        Just("\u{0}\u{202e}\u{fffd}".to_string()),
        Just("x".repeat(5_000)),
        Just("0190f0f0-0000-7000-8000-000000000000".to_string()),
        Just("event:checkout".to_string()),
        Just("http://127.0.0.1:1/hook".to_string()),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1)),
    ]
}

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf =
        prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), number(), text().prop_map(Value::String)];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects whose keys are `fields` (a random subset) with arbitrary values.
fn shaped(fields: Vec<String>) -> impl Strategy<Value = Value> {
    let count = fields.len();
    prop::sample::subsequence(fields, 0..=count)
        .prop_flat_map(|names| {
            let values = prop::collection::vec(any_json(), names.len());
            (Just(names), values)
        })
        .prop_map(|(names, values)| Value::Object(names.into_iter().zip(values).collect::<Map<_, _>>()))
}

/// Bytes that are not a JSON document the route can take.
fn raw() -> impl Strategy<Value = Payload> {
    let broken = prop_oneof![
        Just(b"{".to_vec()),
        Just(b"{\"a\":".to_vec()),
        Just(b"[1,2".to_vec()),
        Just(b"".to_vec()),
        Just(b"null".to_vec()),
        Just(b"1e400".to_vec()),
        Just(b"\"\\ud800\"".to_vec()),
        Just(b"{\"a\":1,\"a\":2}".to_vec()),
        Just([b"[".repeat(10_000), b"]".repeat(10_000)].concat()),
        Just(vec![0xff, 0xfe, 0x00, 0x7b]),
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    let content_type = prop_oneof![
        Just("application/json"),
        Just("text/plain"),
        Just("application/x-www-form-urlencoded"),
        Just("application/json; charset=latin1"),
    ];
    (content_type, broken).prop_map(|(content_type, bytes)| Payload::Raw { content_type, bytes })
}

fn payload(fields: Vec<String>) -> impl Strategy<Value = Payload> {
    prop_oneof![
        3 => shaped(fields).prop_map(Payload::Json),
        2 => any_json().prop_map(Payload::Json),
        2 => raw(),
        1 => Just(Payload::None),
    ]
}

/// A query string of the declared parameters with arbitrary values.
fn query(names: Vec<String>) -> impl Strategy<Value = String> {
    let count = names.len();
    prop::sample::subsequence(names, 0..=count)
        .prop_flat_map(|names| {
            let values = prop::collection::vec(
                prop_oneof![text(), any::<i64>().prop_map(|n| n.to_string()), Just("%ZZ".to_string())],
                names.len(),
            );
            (Just(names), values)
        })
        .prop_map(|(names, values)| {
            names
                .iter()
                .zip(values)
                .map(|(n, v)| format!("{n}={}", if v == "%ZZ" { v } else { urlencoding(&v) }))
                .collect::<Vec<_>>()
                .join("&")
        })
}

fn urlencoding(value: &str) -> String {
    value
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Property names anywhere in a request schema, `$ref`s resolved.
fn property_names(schema: &Value, doc: &Value, out: &mut BTreeSet<String>, depth: usize) {
    if depth > 6 {
        return;
    }
    match schema {
        Value::Object(object) => {
            if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
                if let Some(name) = reference.strip_prefix("#/components/schemas/") {
                    property_names(&doc["components"]["schemas"][name], doc, out, depth + 1);
                }
            }
            if let Some(Value::Object(properties)) = object.get("properties") {
                out.extend(properties.keys().cloned());
            }
            object.values().for_each(|child| property_names(child, doc, out, depth + 1));
        }
        Value::Array(items) => items.iter().for_each(|item| property_names(item, doc, out, depth + 1)),
        _ => {}
    }
}

/// One operation to fuzz.
struct Operation {
    method: Method,
    template: String,
    fields: Vec<String>,
    query: Vec<String>,
    takes_body: bool,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let Ok(method) = method.to_uppercase().parse::<Method>() else { continue };
            let mut fields = BTreeSet::new();
            property_names(&operation["requestBody"], doc, &mut fields, 0);
            let query = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().expect("a name").to_string())
                .collect();
            let takes_body = operation.get("requestBody").is_some();
            out.push(Operation {
                method,
                template: template.clone(),
                fields: fields.into_iter().collect(),
                query,
                takes_body,
            });
        }
    }
    for (method, template) in COMPAT {
        let takes_body = method != "GET" && method != "DELETE";
        out.push(Operation {
            method: method.parse().expect("a method"),
            template: template.to_string(),
            fields: COMPAT_FIELDS.iter().map(|f| f.to_string()).collect(),
            query: vec!["conversation_id".into(), "status".into(), "limit".into(), "offset".into(), "select".into()],
            takes_body,
        });
    }
    out
}

/// `template` with its parameters filled: real objects, or junk when `junk` is set.
fn fill(template: &str, fixture: &Fixture, junk: Option<&str>) -> String {
    let mut out = Vec::new();
    let mut before = "";
    for segment in template.split('/') {
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(parameter) => out.push(junk.map(str::to_string).unwrap_or_else(|| fixture.real(parameter, before))),
            None => out.push(segment.to_string()),
        }
        before = segment;
    }
    out.join("/")
}

/// Sends one request; returns the status and the body text.
async fn send(app: &TestApp, method: &Method, path: &str, payload: &Payload) -> (u16, String, Option<String>) {
    let mut request = app
        .client
        .request(method.clone(), app.url(path))
        .header("X-API-Key", &app.admin_key)
        .header("x-chatcaptain-key", &app.admin_key)
        .header("apikey", &app.admin_key);
    request = match payload {
        Payload::None => request,
        Payload::Json(value) => request.json(value),
        Payload::Raw { content_type, bytes } => request.header("Content-Type", *content_type).body(bytes.clone()),
    };
    let response =
        request.send().await.unwrap_or_else(|e| panic!("{method} {path} with {payload:?}: the connection failed: {e}"));
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, response.text().await.unwrap_or_default(), content_type)
}

#[tokio::test]
async fn random_and_malformed_input_on_every_route_never_fails_the_server_or_changes_data_on_a_4xx() {
    // Arrange
    let app = spawn_app().await;
    let fixture = Fixture::build(&app).await;
    let doc = body(app.client.get(app.url("/openapi.json")).send().await.expect("the document")).await;
    let operations = operations(&doc);
    assert!(operations.len() > 100, "native and compat operations: {}", operations.len());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let mut statuses = BTreeSet::new();
    let mut rejected = 0usize;

    for operation in &operations {
        let is_delete = operation.method == Method::DELETE;
        let bodies = payload(operation.fields.clone());
        let queries = query(operation.query.clone());
        for case in 0..cases() {
            // Deletes only meet junk ids, so the fixture lives through the run.
            let junk = (is_delete || case % 3 == 0).then(|| JUNK_IDS[case % JUNK_IDS.len()]);
            let mut path = fill(&operation.template, &fixture, junk);
            let q = queries.new_tree(&mut runner).expect("a query").current();
            if !q.is_empty() {
                path = format!("{path}?{q}");
            }
            let payload = if operation.takes_body {
                bodies.new_tree(&mut runner).expect("a body").current()
            } else {
                Payload::None
            };
            let before = app.store.checksum().expect("checksum");

            // Act
            let (status, text, content_type) = send(&app, &operation.method, &path, &payload).await;

            // Assert
            let method = &operation.method;
            statuses.insert(status);
            assert!(status < 500 || status == 503, "{method} {path} answered {status} to {payload:?}: {text}");
            if (400..500).contains(&status) {
                rejected += 1;
                let after = app.store.checksum().expect("checksum");
                assert_eq!(
                    before, after,
                    "{method} {path} answered {status} but changed stored data; body {payload:?}"
                );
                if status != 404 || operation.template.starts_with("/v1/") {
                    let json = content_type.as_deref().is_some_and(|c| c.contains("json"));
                    assert!(json, "{method} {path} {status}: the error is not JSON: {content_type:?} {text}");
                    let error: Value = serde_json::from_str(&text)
                        .unwrap_or_else(|_| panic!("{method} {path} {status}: the error is not JSON: {text}"));
                    let named = error.get("error").or_else(|| error.get("message")).or_else(|| error.get("msg"));
                    assert!(named.is_some(), "{method} {path} {status}: the error names no problem: {text}");
                }
            }
        }
    }

    // Assert: the run reached validation, not only the router.
    assert!(rejected > operations.len(), "{rejected} rejections over {} operations", operations.len());
    assert!(statuses.iter().any(|s| (200..300).contains(s)), "some generated requests succeed: {statuses:?}");
    let health = app.client.get(app.url("/healthz")).send().await.expect("health");
    assert_eq!(health.status(), 200, "the server still serves after the run");
}

#[tokio::test]
async fn a_method_a_route_does_not_take_answers_405_naming_the_methods_it_does() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Allow").await;

    for (method, path, allow) in [
        (Method::PUT, "/healthz".to_string(), "GET"),
        (Method::POST, format!("/v1/chatbots/{bot}"), "GET, DELETE, PATCH"),
        (Method::DELETE, format!("/v1/chatbots/{bot}/settings"), "GET, PUT"),
        (Method::GET, "/api/chatbot/transfers/pickup".to_string(), "POST"),
    ] {
        // Act
        let response = app.request(method.clone(), &path, &app.admin_key).send().await.expect("request");

        // Assert
        assert_eq!(response.status(), 405, "{method} {path}");
        let header = response.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
        let mut listed: Vec<String> = header.unwrap_or_default().split(", ").map(str::to_string).collect();
        let mut expected: Vec<String> = allow.split(", ").map(str::to_string).collect();
        listed.sort();
        expected.sort();
        assert_eq!(listed, expected, "Allow of {method} {path}");
        let error = body(response).await;
        assert_eq!(error["code"], "method_not_allowed");
    }
}
