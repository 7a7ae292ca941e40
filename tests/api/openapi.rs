//! The OpenAPI document (`GET /openapi.json`): served without authentication as OpenAPI 3.1,
//! it lists every native route the server registers, and every route's real answers — a
//! success and its errors — validate against the schemas it declares.
//!
//! Validation is strict: every object schema of the document is closed for the test
//! (`unevaluatedProperties: false`), so a field a handler answers but the document does not
//! declare fails as surely as a missing or mistyped one. Request bodies the test sends are
//! validated against the declared request schemas the same way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use regex::Regex;
use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{body, spawn_app, spawn_app_with, TestApp};

/// Operations of the native API: (METHOD, path) pairs.
type Operations = BTreeSet<(String, String)>;

/// How many operations the native routes in `src/routes/*.rs` and `src/openapi.rs` register.
const NATIVE_OPERATIONS: usize = 88;

/// Statuses every authenticated operation may answer, whatever it does.
const GENERIC_STATUSES: [&str; 7] = ["401", "403", "408", "413", "415", "429", "503"];

// ---------------------------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------------------------

/// The served document, and a copy whose object schemas are closed, for validation.
struct Spec {
    served: Value,
    strict: Value,
}

impl Spec {
    async fn fetch(app: &TestApp) -> Spec {
        let response = app.client.get(app.url("/openapi.json")).send().await.expect("request");
        assert_eq!(response.status(), 200, "GET /openapi.json");
        let served = body(response).await;
        let strict = closed(&served);
        Spec { served, strict }
    }

    /// Every operation the document lists.
    fn operations(&self) -> Operations {
        let paths = self.served["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("path item")
                    .keys()
                    .filter(|m| ["get", "put", "post", "delete", "patch"].contains(&m.as_str()))
                    .map(move |m| (m.to_uppercase(), path.clone()))
            })
            .collect()
    }

    fn operation(&self, method: &str, template: &str) -> &Value {
        let operation = &self.strict["paths"][template][method.to_lowercase()];
        assert!(operation.is_object(), "{method} {template} is not in the document");
        operation
    }

    /// The response `operation` declares for `status`, with a `$ref` resolved.
    fn response(&self, method: &str, template: &str, status: u16) -> Option<&Value> {
        let declared = self.operation(method, template)["responses"].get(status.to_string())?;
        Some(match declared.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.strip_prefix("#/components/responses/").expect("a response reference");
                &self.strict["components"]["responses"][name]
            }
            None => declared,
        })
    }

    /// Validates `instance` against `schema`, whose `$ref`s point into this document.
    fn validate(&self, schema: &Value, instance: &Value) -> Result<(), String> {
        let mut root = schema.clone();
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        root["components"] = self.strict["components"].clone();
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| format!("the schema does not compile: {e}"))?;
        let errors: Vec<String> =
            validator.iter_errors(instance).map(|e| format!("{e} (at \"{}\")", e.instance_path)).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// `doc` with every component object schema closed. Components that other schemas compose with
/// `allOf` stay open there (the composition is closed instead) and get a closed copy,
/// `NAME.closed`, for every other use.
fn closed(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let mut composed = BTreeSet::new();
    composed_components(&doc, &mut composed);
    let schemas = doc["components"]["schemas"].as_object().expect("component schemas").clone();
    let mut out = serde_json::Map::new();
    for (name, schema) in schemas {
        if composed.contains(&name) {
            out.insert(format!("{name}.closed"), close(schema.clone()));
            out.insert(name, schema);
        } else {
            out.insert(name, close(schema));
        }
    }
    doc["components"]["schemas"] = Value::Object(out);
    point_at_closed_copies(&mut doc, &composed, false);
    doc
}

fn close(mut schema: Value) -> Value {
    let object = schema.as_object_mut().expect("schema object");
    let composite = object.contains_key("properties") || object.contains_key("allOf");
    if composite && !object.contains_key("additionalProperties") {
        object.insert("unevaluatedProperties".into(), Value::Bool(false));
    }
    schema
}

/// Names of the components referenced directly from an `allOf`.
fn composed_components(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                if key == "allOf" {
                    for part in child.as_array().into_iter().flatten() {
                        if let Some(name) = part["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/"))
                        {
                            found.insert(name.to_string());
                        }
                    }
                }
                composed_components(child, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| composed_components(item, found)),
        _ => {}
    }
}

fn point_at_closed_copies(value: &mut Value, composed: &BTreeSet<String>, in_all_of: bool) {
    match value {
        Value::Object(object) => {
            if !in_all_of {
                if let Some(Value::String(reference)) = object.get_mut("$ref") {
                    let name = reference.strip_prefix("#/components/schemas/").unwrap_or("").to_string();
                    if composed.contains(&name) {
                        *reference = format!("#/components/schemas/{name}.closed");
                    }
                }
            }
            for (key, child) in object.iter_mut() {
                match (key.as_str(), child) {
                    ("allOf", Value::Array(parts)) => {
                        parts.iter_mut().for_each(|part| point_at_closed_copies(part, composed, true))
                    }
                    (_, child) => point_at_closed_copies(child, composed, false),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| point_at_closed_copies(item, composed, false)),
        _ => {}
    }
}

/// The operations `src/routes/*.rs` and `src/openapi.rs` register: each `resource(…)` with the
/// `web::METHOD()` routes that follow it, paths bound by `for NAME in [...]` loops expanded.
fn operations_in_source() -> Operations {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<_> = std::fs::read_dir(src.join("routes"))
        .expect("src/routes")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.push(src.join("openapi.rs"));
    let loops = Regex::new(r"for (\w+) in \[([^\]]*)\]").unwrap();
    let literal = Regex::new(r#""([^"]*)""#).unwrap();
    let tokens =
        Regex::new(r#"resource\((?:&format!\("([^"]*)"\)|"([^"]*)"|(\w+))\)|web::(get|put|post|patch|delete)\(\)"#)
            .unwrap();
    let mut found = Operations::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("route file");
        let bound: HashMap<String, Vec<String>> = loops
            .captures_iter(&text)
            .map(|c| (c[1].to_string(), literal.captures_iter(&c[2]).map(|l| l[1].to_string()).collect()))
            .collect();
        let mut paths: Vec<String> = Vec::new();
        for token in tokens.captures_iter(&text) {
            if let Some(method) = token.get(4) {
                for path in &paths {
                    found.insert((method.as_str().to_uppercase(), path.clone()));
                }
            } else if let Some(template) = token.get(1) {
                let (name, values) = bound
                    .iter()
                    .find(|(name, _)| template.as_str().contains(&format!("{{{name}}}")))
                    .unwrap_or_else(|| panic!("{}: no loop binds {}", file.display(), template.as_str()));
                paths = values.iter().map(|v| template.as_str().replace(&format!("{{{name}}}"), v)).collect();
            } else if let Some(path) = token.get(2) {
                paths = vec![path.as_str().to_string()];
            } else {
                let name = &token[3];
                paths = bound.get(name).unwrap_or_else(|| panic!("{}: no loop binds {name}", file.display())).clone();
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Driving the server
// ---------------------------------------------------------------------------------------------

/// Sends requests, checks each answer against the document, and remembers what it saw.
struct Probe<'a> {
    app: &'a TestApp,
    spec: &'a Spec,
    /// Statuses answered, per operation.
    seen: BTreeMap<(String, String), BTreeSet<u16>>,
    /// One successful request per operation (path and body), replayed to provoke 401 and 403.
    successes: BTreeMap<(String, String), (String, Option<Value>)>,
    /// Keys holding a single scope, by scope.
    keys: HashMap<&'static str, String>,
}

impl<'a> Probe<'a> {
    fn new(app: &'a TestApp, spec: &'a Spec) -> Self {
        Self { app, spec, seen: BTreeMap::new(), successes: BTreeMap::new(), keys: HashMap::new() }
    }

    /// `method` `path` (an instance of `template`) with the admin key; asserts `expect`.
    async fn call(&mut self, method: &str, template: &str, path: &str, body: Option<Value>, expect: u16) -> Value {
        let key = self.app.admin_key.clone();
        self.call_as(Some(&key), method, template, path, body.as_ref(), expect).await
    }

    async fn call_as(
        &mut self,
        key: Option<&str>,
        method: &str,
        template: &str,
        path: &str,
        body: Option<&Value>,
        expect: u16,
    ) -> Value {
        let mut request = self.app.client.request(Method::from_bytes(method.as_bytes()).unwrap(), self.app.url(path));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let text = response.text().await.expect("body");
        assert_eq!(status, expect, "{method} {path} answered {status}: {text}");
        let answer = self.check_response(method, template, status, &content_type, &text);
        if (200..300).contains(&status) {
            if let Some(body) = body {
                self.check_request(method, template, body);
            }
            self.successes
                .entry((method.to_string(), template.to_string()))
                .or_insert_with(|| (path.to_string(), body.cloned()));
        }
        self.seen.entry((method.to_string(), template.to_string())).or_default().insert(status);
        answer
    }

    /// Checks an answer against the response the document declares; returns its body.
    fn check_response(&self, method: &str, template: &str, status: u16, content_type: &str, text: &str) -> Value {
        let declared = self
            .spec
            .response(method, template, status)
            .unwrap_or_else(|| panic!("{method} {template} answered {status}, which the document does not declare"));
        let Some(content) = declared.get("content") else {
            assert!(text.is_empty(), "{method} {template} {status} declares no body but answered {text}");
            return Value::Null;
        };
        let media = content_type.split(';').next().unwrap_or("").trim();
        let media_type = content.get(media).unwrap_or_else(|| {
            panic!("{method} {template} {status} answered {media}; the document declares {content}")
        });
        let answer = if media == "application/json" {
            serde_json::from_str(text).unwrap_or_else(|_| panic!("{method} {template} answered bad JSON: {text}"))
        } else {
            Value::String(text.to_string())
        };
        if let Some(schema) = media_type.get("schema") {
            if let Err(errors) = self.spec.validate(schema, &answer) {
                panic!("{method} {template} {status} does not match the document: {errors}\nanswer: {text}");
            }
        }
        answer
    }

    /// Checks a request body the server accepted against the declared request body.
    fn check_request(&self, method: &str, template: &str, body: &Value) {
        let schema = &self.spec.operation(method, template)["requestBody"]["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{method} {template} took a JSON body the document does not declare");
        if let Err(errors) = self.spec.validate(schema, body) {
            panic!("the request body of {method} {template} does not match the document: {errors}\nbody: {body}");
        }
    }

    /// Records a WebSocket upgrade of `template` (answered 101 with no body).
    fn upgraded(&mut self, template: &str, path: &str) {
        self.check_response("GET", template, 101, "", "");
        self.seen.entry(("GET".into(), template.into())).or_default().insert(101);
        self.successes.entry(("GET".into(), template.into())).or_insert_with(|| (path.to_string(), None));
    }

    /// Replays each successful request without credentials (401) and with a key that lacks
    /// the scopes the document lists for it (403).
    async fn probe_credentials(&mut self) {
        for ((method, template), (path, body)) in self.successes.clone() {
            let Some(security) = self.spec.operation(&method, &template).get("security").cloned() else { continue };
            let accepted: BTreeSet<String> = security
                .as_array()
                .expect("security requirements")
                .iter()
                .flat_map(|requirement| requirement.as_object().expect("requirement").values())
                .flat_map(|scopes| scopes.as_array().expect("scopes").iter())
                .map(|scope| scope.as_str().expect("scope").to_string())
                .collect();
            assert!(!accepted.is_empty(), "{method} {template} names no scope");
            self.call_as(None, &method, &template, &path, body.as_ref(), 401).await;
            let lacking = ["transfers", "messages:handle", "chatbot:config", "conversations:read"]
                .into_iter()
                .find(|scope| !accepted.contains(*scope))
                .expect("a scope the operation does not accept");
            let app = self.app;
            let key = self.keys.entry(lacking).or_insert_with(|| app.key_with_scopes(&[lacking])).clone();
            self.call_as(Some(&key), &method, &template, &path, body.as_ref(), 403).await;
        }
    }
}

/// Polls `probe` every 50 ms for up to 10 s.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn id(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value}")).to_string()
}

/// A well-formed id that names nothing.
const NO_SUCH_ID: &str = "0190f0f0-0000-7000-8000-000000000000";

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_openapi_document_is_served_without_credentials_as_openapi_3_1() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = app.client.get(app.url("/openapi.json")).send().await.expect("request");

    // Assert
    assert_eq!(response.status(), 200);
    let content_type = response.headers()[CONTENT_TYPE].to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/json"), "content type {content_type}");
    let doc = body(response).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "baton");
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["chatcaptain_key"]["name"], "x-chatcaptain-key");
    let error = &doc["components"]["schemas"]["ApiErrorBody"];
    assert_eq!(error["required"], json!(["error", "code"]));
    assert!(error["properties"]["field"].is_object());
}

#[tokio::test]
async fn the_docs_page_renders_the_served_document() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = app.client.get(app.url("/docs")).send().await.expect("request");

    // Assert
    assert_eq!(response.status(), 200);
    assert!(response.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let page = response.text().await.expect("page");
    assert!(page.contains("/openapi.json"), "the page loads the document: {page}");
    assert!(page.contains("<script"), "the page renders with a script: {page}");
}

#[tokio::test]
async fn the_document_lists_every_route_the_server_registers_and_no_other() {
    // Arrange
    let app = spawn_app().await;
    let spec = Spec::fetch(&app).await;

    // Act
    let documented = spec.operations();
    let registered = operations_in_source();

    // Assert
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unregistered: Vec<_> = documented.difference(&registered).collect();
    assert!(undocumented.is_empty(), "registered but not in /openapi.json: {undocumented:?}");
    assert!(unregistered.is_empty(), "in /openapi.json but not registered: {unregistered:?}");
    assert_eq!(registered.len(), NATIVE_OPERATIONS, "native operations");
    let compat = ["/api/", "/functions/"];
    assert!(documented.iter().all(|(_, path)| !compat.iter().any(|c| path.starts_with(c))), "no compat routes");
    let ids: Vec<&str> = documented
        .iter()
        .map(|(m, p)| spec.operation(m, p)["operationId"].as_str().expect("an operation id"))
        .collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "operation ids are unique: {ids:?}");
}

#[tokio::test]
async fn every_native_route_answers_as_the_openapi_document_declares() {
    // Arrange: a model for drafts, and a channel whose reply webhook refuses (deliveries fail)
    // while its takeover webhook accepts (deliveries succeed).
    let model = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Your order ships today."}}],
            "usage": {"total_tokens": 9},
        })))
        .mount(&model)
        .await;
    let hooks = MockServer::start().await;
    Mock::given(path("/reply")).respond_with(ResponseTemplate::new(400)).mount(&hooks).await;
    Mock::given(path("/takeover")).respond_with(ResponseTemplate::new(200)).mount(&hooks).await;
    let model_uri = model.uri();
    let app = spawn_app_with(move |s| {
        s.ai.openai.base_url = model_uri;
        s.ai.openai.api_key = "sk-test".to_string().into();
    })
    .await;
    let spec = Spec::fetch(&app).await;
    let mut p = Probe::new(&app, &spec);

    // Act and assert: every call checks its status and validates its answer.
    operations(&mut p).await;
    api_keys(&mut p).await;
    let bot = chatbots(&mut p).await;
    keywords(&mut p, &bot).await;
    ai_contexts(&mut p, &bot).await;
    let (team, agent) = teams(&mut p).await;
    let flow = flows(&mut p, &bot).await;
    channels(&mut p, &bot, &hooks.uri()).await;
    let conversation = ingestion(&mut p, &bot, &flow).await;
    sessions(&mut p).await;
    conversations(&mut p, &bot, &conversation, &agent).await;
    contacts(&mut p, &bot).await;
    transfers(&mut p, &conversation, &team, &agent).await;
    deliveries(&mut p).await;
    live(&mut p).await;
    p.probe_credentials().await;

    // Assert: every operation answered a success, and an error of its own where it has one.
    for (method, template) in spec.operations() {
        let seen = p.seen.get(&(method.clone(), template.clone())).cloned().unwrap_or_default();
        assert!(
            seen.iter().any(|s| (100..300).contains(s)),
            "{method} {template} was never answered with a success (saw {seen:?})"
        );
        let operation = spec.operation(&method, &template);
        let declared: BTreeSet<u16> = operation["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .filter(|s| !GENERIC_STATUSES.contains(&s.as_str()))
            .map(|s| s.parse().expect("a status"))
            .filter(|s| *s >= 400)
            .collect();
        if operation.get("security").is_some() {
            assert!(seen.contains(&401) && seen.contains(&403), "{method} {template}: 401 and 403 (saw {seen:?})");
        }
        if !declared.is_empty() {
            assert!(
                !declared.is_disjoint(&seen),
                "{method} {template} declares {declared:?} but answered none of them (saw {seen:?})"
            );
        }
    }
}

async fn operations(p: &mut Probe<'_>) {
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"] {
        p.call_as(None, "GET", path, path, None, 200).await;
    }
}

async fn api_keys(p: &mut Probe<'_>) {
    let key =
        p.call("POST", "/v1/api-keys", "/v1/api-keys", Some(json!({"name": "ops", "scopes": ["admin"]})), 201).await;
    assert!(key["key"].as_str().unwrap().starts_with("bt_"));
    p.call("POST", "/v1/api-keys", "/v1/api-keys", Some(json!({"name": "ops", "scopes": ["everything"]})), 400).await;
    p.call("GET", "/v1/api-keys", "/v1/api-keys", None, 200).await;
    let path = format!("/v1/api-keys/{}", id(&key));
    p.call("DELETE", "/v1/api-keys/{id}", &path, None, 200).await;
    p.call("DELETE", "/v1/api-keys/{id}", &path, None, 404).await;
}

async fn chatbots(p: &mut Probe<'_>) -> String {
    let (list, one, settings) = ("/v1/chatbots", "/v1/chatbots/{bot}", "/v1/chatbots/{bot}/settings");
    let created = json!({"name": "Support", "description": "Front desk", "settings": {"greeting_message": "Hi!"}});
    let bot = id(&p.call("POST", list, list, Some(created), 201).await);
    let long_title = json!({"name": "x", "settings": {"greeting_buttons": [{"title": "A title over twenty chars"}]}});
    p.call("POST", list, list, Some(long_title), 422).await;
    p.call("GET", list, list, None, 200).await;
    let path = format!("/v1/chatbots/{bot}");
    p.call("GET", one, &path, None, 200).await;
    p.call("GET", one, &format!("/v1/chatbots/{NO_SUCH_ID}"), None, 404).await;
    p.call("PATCH", one, &path, Some(json!({"description": "Front desk, 24/7"})), 200).await;
    p.call("PATCH", one, &path, Some(json!({"colour": "blue"})), 400).await;
    let path = format!("/v1/chatbots/{bot}/settings");
    p.call("GET", settings, &path, None, 200).await;
    p.call("GET", settings, &format!("/v1/chatbots/{NO_SUCH_ID}/settings"), None, 404).await;
    let changed = json!({"transfer_keywords": ["human"], "greeting_buttons": [{"title": "Track Order"}]});
    p.call("PUT", settings, &path, Some(changed), 200).await;
    p.call("PUT", settings, &path, Some(json!({"ai_temperature": 5.0})), 422).await;
    let doomed = id(&p.call("POST", list, list, Some(json!({"name": "Doomed"})), 201).await);
    p.call("DELETE", one, &format!("/v1/chatbots/{doomed}"), None, 200).await;
    p.call("DELETE", one, &format!("/v1/chatbots/{doomed}"), None, 404).await;
    bot
}

/// Create, list, get, PUT, PATCH and delete of a chatbot's sub-resource at `base`.
async fn sub_resource(p: &mut Probe<'_>, bot: &str, base: &str, valid: Value, invalid: Value, change: Value) -> String {
    let (list, one) = (format!("/v1/chatbots/{{bot}}/{base}"), format!("/v1/chatbots/{{bot}}/{base}/{{id}}"));
    let path = format!("/v1/chatbots/{bot}/{base}");
    let created = id(&p.call("POST", &list, &path, Some(valid.clone()), 201).await);
    p.call("POST", &list, &path, Some(invalid), 422).await;
    p.call("GET", &list, &path, None, 200).await;
    p.call("GET", &list, &format!("/v1/chatbots/{NO_SUCH_ID}/{base}"), None, 404).await;
    let item = format!("{path}/{created}");
    let missing = format!("{path}/{NO_SUCH_ID}");
    p.call("GET", &one, &item, None, 200).await;
    p.call("GET", &one, &missing, None, 404).await;
    for method in ["PUT", "PATCH"] {
        p.call(method, &one, &item, Some(change.clone()), 200).await;
        p.call(method, &one, &missing, Some(change.clone()), 404).await;
    }
    let doomed = id(&p.call("POST", &list, &path, Some(valid), 201).await);
    p.call("DELETE", &one, &format!("{path}/{doomed}"), None, 200).await;
    p.call("DELETE", &one, &format!("{path}/{doomed}"), None, 404).await;
    created
}

async fn keywords(p: &mut Probe<'_>, bot: &str) {
    let valid = json!({
        "name": "Hours", "keywords": ["hours"], "match_type": "contains", "response": "We open at 9.",
        "buttons": [{"title": "Book a visit"}], "priority": 5,
    });
    let invalid = json!({"keywords": ["(unclosed"], "match_type": "regex", "response": "never"});
    sub_resource(p, bot, "keywords", valid, invalid, json!({"priority": 7})).await;
}

async fn ai_contexts(p: &mut Probe<'_>, bot: &str) {
    let valid = json!({"name": "Shipping", "trigger_keywords": ["ship"], "content": "We ship worldwide."});
    let invalid = json!({"name": "Empty", "trigger_keywords": [], "content": "No keywords."});
    sub_resource(p, bot, "ai-contexts", valid, invalid, json!({"priority": 2})).await;
}

async fn flows(p: &mut Probe<'_>, bot: &str) -> String {
    let valid = json!({
        "name": "Order status",
        "trigger_keywords": ["order", "event:checkout"],
        "initial_message": "Let's find your order.",
        "completion_message": "Thanks!",
        "steps": [{
            "step_name": "ask", "step_order": 1, "message": "Your order number?",
            "message_type": "text", "input_type": "text", "store_as": "order",
        }],
    });
    let invalid = json!({
        "name": "Bad",
        "steps": [{"step_name": "pick", "message": "Pick", "message_type": "buttons",
                   "buttons": [{"title": "A title over twenty chars"}]}],
    });
    sub_resource(p, bot, "flows", valid, invalid, json!({"completion_message": "Thank you!"})).await
}

async fn teams(p: &mut Probe<'_>) -> (String, String) {
    let team = id(&p.call("POST", "/v1/teams", "/v1/teams", Some(json!({"name": "Billing"})), 201).await);
    p.call("POST", "/v1/teams", "/v1/teams", Some(json!({"name": "  "})), 400).await;
    p.call("GET", "/v1/teams", "/v1/teams", None, 200).await;
    p.call("GET", "/v1/teams/{id}", &format!("/v1/teams/{team}"), None, 200).await;
    p.call("GET", "/v1/teams/{id}", &format!("/v1/teams/{NO_SUCH_ID}"), None, 404).await;
    let new_agent = json!({"name": "Ana", "email": "ana@example.com", "team_ids": [team]});
    let agent = id(&p.call("POST", "/v1/agents", "/v1/agents", Some(new_agent), 201).await);
    let unknown_team = json!({"name": "Bo", "team_ids": [NO_SUCH_ID]});
    p.call("POST", "/v1/agents", "/v1/agents", Some(unknown_team), 422).await;
    p.call("GET", "/v1/agents", "/v1/agents", None, 200).await;
    p.call("GET", "/v1/agents/{id}", &format!("/v1/agents/{agent}"), None, 200).await;
    p.call("GET", "/v1/agents/{id}", &format!("/v1/agents/{NO_SUCH_ID}"), None, 404).await;
    (team, agent)
}

async fn channels(p: &mut Probe<'_>, bot: &str, hooks: &str) {
    let (list, one) = ("/v1/chatbots/{bot}/channels", "/v1/chatbots/{bot}/channels/{channel}");
    let path = format!("/v1/chatbots/{bot}/channels/wa-main");
    let config = json!({
        "name": "WhatsApp",
        "reply_webhook": {"url": format!("{hooks}/reply"), "secret": "whsec_c2VjcmV0"},
        "human_takeover_webhook": {"url": format!("{hooks}/takeover"), "method": "POST", "body": {"source": "baton"}},
    });
    let channel = p.call("PUT", one, &path, Some(config), 200).await;
    assert_eq!(channel["reply_webhook"]["secret"], "********");
    p.call("PUT", one, &path, Some(json!({"reply_webhook": {"url": "not a url"}})), 422).await;
    p.call("GET", list, &format!("/v1/chatbots/{bot}/channels"), None, 200).await;
    p.call("GET", list, &format!("/v1/chatbots/{NO_SUCH_ID}/channels"), None, 404).await;
    p.call("GET", one, &path, None, 200).await;
    p.call("GET", one, &format!("/v1/chatbots/{bot}/channels/unknown"), None, 404).await;
    p.call("PATCH", one, &path, Some(json!({"name": "WhatsApp Business"})), 200).await;
    p.call("PATCH", one, &format!("/v1/chatbots/{bot}/channels/unknown"), Some(json!({"name": "x"})), 404).await;
}

/// Handle, event, payload and custom-event; returns the conversation they made.
async fn ingestion(p: &mut Probe<'_>, bot: &str, flow: &str) -> String {
    let handle = "/v1/chatbots/{bot}/conversations/handle";
    let path = format!("/v1/chatbots/{bot}/conversations/handle");
    let message = |id: &str, text: &str| {
        json!({
            "channelId": "wa-main", "channelName": "WhatsApp", "providerId": "+4917000",
            "message": {"id": id, "type": "text", "text": text},
            "contact": {"first_name": "Ada", "last_name": "Lovelace", "phones": ["+4917000"], "emails": []},
        })
    };
    let first = p.call("POST", handle, &path, Some(message("wamid.1", "hello")), 200).await;
    let conversation = first["conversation_id"].as_str().unwrap().to_string();
    let buttons = p.call("POST", handle, &path, Some(message("wamid.2", "opening hours?")), 200).await;
    assert_eq!(buttons["replies"][0]["type"], "buttons");
    let mut later = message("wamid.3", "hours again");
    later["async"] = json!(true);
    p.call("POST", handle, &path, Some(later), 202).await;
    p.call("POST", handle, &path, Some(message("wamid.4", "   ")), 400).await;
    let elsewhere = format!("/v1/chatbots/{NO_SUCH_ID}/conversations/handle");
    p.call("POST", handle, &elsewhere, Some(message("wamid.5", "hi")), 404).await;

    let event = "/v1/chatbots/{bot}/conversations/event";
    let path = format!("/v1/chatbots/{bot}/conversations/event");
    let seen = json!({
        "channelId": "wa-main", "channelName": "WhatsApp", "providerId": "+4917000", "event": "user_seen_message",
    });
    p.call("POST", event, &path, Some(seen.clone()), 200).await;
    let mut typing = seen.clone();
    typing["event"] = json!("typing");
    typing["async"] = json!(true);
    p.call("POST", event, &path, Some(typing), 202).await;
    let mut blank = seen;
    blank["event"] = json!(" ");
    p.call("POST", event, &path, Some(blank), 400).await;

    let payload = "/v1/chatbots/{bot}/conversations/payload";
    let path = format!("/v1/chatbots/{bot}/conversations/payload");
    let no_flow = json!({"conversationId": conversation, "stepId": "ask"});
    p.call("POST", payload, &path, Some(no_flow), 409).await;
    let jump = json!({"conversationId": conversation, "flowId": flow, "isDebug": true});
    let traced = p.call("POST", payload, &path, Some(jump), 200).await;
    assert!(traced["trace"].is_array());
    p.call("POST", payload, &path, Some(json!({"conversationId": conversation})), 400).await;
    p.call("POST", payload, &path, Some(json!({"conversationId": NO_SUCH_ID, "event": "x"})), 404).await;

    let custom = "/v1/chatbots/{bot}/conversations/custom-event";
    let path = format!("/v1/chatbots/{bot}/conversations/custom-event");
    p.call("POST", custom, &path, Some(json!({"conversationId": conversation, "event": "checkout"})), 200).await;
    p.call("POST", custom, &path, Some(json!({"conversationId": NO_SUCH_ID, "event": "checkout"})), 404).await;
    conversation
}

async fn sessions(p: &mut Probe<'_>) {
    let list = p.call("GET", "/v1/sessions", "/v1/sessions?status=open", None, 200).await;
    let session = id(&list["items"][0]);
    p.call("GET", "/v1/sessions", "/v1/sessions?status=sleeping", None, 400).await;
    let path = format!("/v1/sessions/{session}");
    p.call("GET", "/v1/sessions/{id}", &path, None, 200).await;
    p.call("GET", "/v1/sessions/{id}", &format!("/v1/sessions/{NO_SUCH_ID}"), None, 404).await;
    p.call("PATCH", "/v1/sessions/{id}", &path, Some(json!({"status": "pause"})), 200).await;
    p.call("PATCH", "/v1/sessions/{id}", &path, Some(json!({"status": "resume"})), 200).await;
    p.call("PATCH", "/v1/sessions/{id}", &path, Some(json!({"status": "sleep"})), 400).await;
    p.call("PATCH", "/v1/sessions/{id}", &path, Some(json!({"status": "close"})), 200).await;
    p.call("PATCH", "/v1/sessions/{id}", &path, Some(json!({"status": "pause"})), 409).await;
}

/// Every conversation route, under both prefixes.
async fn conversations(p: &mut Probe<'_>, bot: &str, conversation: &str, agent: &str) {
    let (list, find) = ("/v1/chatbots/{bot}/conversations", "/v1/chatbots/{bot}/conversations/find");
    let path = format!("/v1/chatbots/{bot}/conversations");
    let open = json!({"channelId": "wa-main", "providerId": "+4918000", "contact": {"first_name": "Bo"}});
    let quiet = id(&p.call("POST", list, &path, Some(open.clone()), 201).await);
    p.call("POST", list, &path, Some(open), 200).await;
    p.call("POST", list, &path, Some(json!({"channelId": " ", "providerId": "+1"})), 400).await;
    let page = p.call("GET", list, &format!("{path}?limit=1&status=active"), None, 200).await;
    assert!(page["next_cursor"].is_string());
    p.call("GET", list, &format!("{path}?limit=0"), None, 400).await;
    p.call("GET", find, &format!("{path}/find?channelId=wa-main&providerId=%2B4917000"), None, 200).await;
    p.call("GET", find, &format!("{path}/find?channelId=wa-main"), None, 400).await;
    p.call("GET", find, &format!("{path}/find?channelId=wa-main&providerId=nobody"), None, 404).await;

    for prefix in ["/v1/chatbots/{bot}/conversations/{id}", "/v1/conversations/{id}"] {
        let at = |id: &str| prefix.replace("{bot}", bot).replace("{id}", id);
        let (it, missing) = (at(conversation), at(NO_SUCH_ID));
        let route = |suffix: &str| format!("{prefix}{suffix}");
        p.call("GET", prefix, &it, None, 200).await;
        p.call("GET", prefix, &missing, None, 404).await;
        let patch = json!({"variables": {"tier": "gold"}, "metadata": {"crm": "42"}});
        p.call("PATCH", prefix, &it, Some(patch), 200).await;
        p.call("PATCH", prefix, &it, Some(json!({"colour": "blue"})), 400).await;
        p.call("GET", &route("/messages"), &format!("{it}/messages?limit=2"), None, 200).await;
        p.call("GET", &route("/messages"), &format!("{it}/messages?limit=0"), None, 400).await;
        let reply = json!({"content": "An agent here.", "agent_id": agent});
        p.call("POST", &route("/messages"), &format!("{it}/messages"), Some(reply), 201).await;
        p.call("POST", &route("/messages"), &format!("{it}/messages"), Some(json!({"content": " "})), 400).await;
        let control = route("/bot-control");
        p.call("POST", &control, &format!("{it}/bot-control"), Some(json!({"action": "resume"})), 200).await;
        let pause = json!({"action": "pause", "agent_id": agent});
        p.call("POST", &control, &format!("{it}/bot-control"), Some(pause), 200).await;
        p.call("POST", &control, &format!("{it}/bot-control"), Some(json!({})), 400).await;
        let status = route("/status");
        p.call("PUT", &status, &format!("{it}/status"), Some(json!({"status": "escalated"})), 200).await;
        p.call("PUT", &status, &format!("{it}/status"), Some(json!({"status": "lost"})), 400).await;
        let autoreply = route("/autoreply");
        p.call("POST", &autoreply, &format!("{it}/autoreply"), Some(json!({"enabled": true})), 200).await;
        p.call("POST", &autoreply, &format!("{missing}/autoreply"), Some(json!({"enabled": true})), 404).await;
        let draft = route("/ai-draft");
        let answer = p.call("POST", &draft, &format!("{it}/ai-draft"), None, 200).await;
        assert_eq!(answer["draft"], "Your order ships today.");
        p.call("POST", &draft, &format!("{}/ai-draft", at(&quiet)), None, 409).await;
        p.call("POST", &draft, &format!("{missing}/ai-draft"), None, 404).await;
        let export = route("/export");
        let exported = p.call("GET", &export, &format!("{it}/export"), None, 200).await;
        assert_eq!(exported["conversation"]["id"], conversation);
        p.call("GET", &export, &format!("{missing}/export"), None, 404).await;
    }
    let doomed = json!({"channelId": "wa-main", "providerId": "+4919000"});
    for prefix in ["/v1/chatbots/{bot}/conversations/{id}", "/v1/conversations/{id}"] {
        let at = |id: &str| prefix.replace("{bot}", bot).replace("{id}", id);
        let victim = id(&p.call("POST", list, &path, Some(doomed.clone()), 201).await);
        p.call("DELETE", prefix, &at(&victim), None, 200).await;
        p.call("DELETE", prefix, &at(&victim), None, 404).await;
    }
}

async fn contacts(p: &mut Probe<'_>, bot: &str) {
    let one = "/v1/contacts/{id}";
    let handle = "/v1/chatbots/{bot}/conversations/handle";
    let message = json!({
        "channelId": "wa-main", "providerId": "+4920000", "message": {"type": "text", "text": "forget me"},
        "contact": {"first_name": "Cy", "phones": ["+4920000"]},
    });
    let handled = p.call("POST", handle, &format!("/v1/chatbots/{bot}/conversations/handle"), Some(message), 200).await;
    let (it, missing) =
        (format!("/v1/contacts/{}", handled["contact_id"].as_str().unwrap()), format!("/v1/contacts/{NO_SUCH_ID}"));
    let contact = p.call("GET", one, &it, None, 200).await;
    assert_eq!(contact["conversation_ids"], json!([handled["conversation_id"]]));
    p.call("GET", one, &missing, None, 404).await;
    p.call("DELETE", one, &it, None, 204).await;
    p.call("DELETE", one, &it, None, 404).await;
    p.call("GET", one, &it, None, 404).await;
}

async fn transfers(p: &mut Probe<'_>, conversation: &str, team: &str, agent: &str) {
    let (list, pickup, one) = ("/v1/transfers", "/v1/transfers/pickup", "/v1/transfers/{id}");
    let (assign, resume) = ("/v1/transfers/{id}/assign", "/v1/transfers/{id}/resume");
    let request = json!({"conversation_id": conversation, "team_id": team, "notes": "VIP"});
    let transfer = id(&p.call("POST", list, list, Some(request), 201).await);
    let again = json!({"conversation_id": conversation});
    p.call("POST", list, list, Some(again), 409).await;
    p.call("POST", list, list, Some(json!({})), 400).await;
    p.call("POST", list, list, Some(json!({"conversation_id": NO_SUCH_ID})), 404).await;
    p.call("POST", list, list, Some(json!({"conversation_id": conversation, "team_id": NO_SUCH_ID})), 422).await;
    p.call("GET", list, &format!("/v1/transfers?status=active&team_id={team}"), None, 200).await;
    p.call("GET", list, "/v1/transfers?status=lost", None, 400).await;
    let picked =
        p.call("POST", pickup, &format!("/v1/transfers/pickup?team_id={team}&agent_id={agent}"), None, 200).await;
    assert_eq!(picked["agent_name"], "Ana");
    p.call("POST", pickup, &format!("/v1/transfers/pickup?team_id={team}"), None, 404).await;
    p.call("POST", pickup, &format!("/v1/transfers/pickup?agent_id={NO_SUCH_ID}"), None, 422).await;
    let (it, missing) = (format!("/v1/transfers/{transfer}"), format!("/v1/transfers/{NO_SUCH_ID}"));
    p.call("GET", one, &it, None, 200).await;
    p.call("GET", one, &missing, None, 404).await;
    for method in ["PUT", "POST"] {
        p.call(method, assign, &format!("{it}/assign"), Some(json!({"agent_id": agent})), 200).await;
        p.call(method, assign, &format!("{missing}/assign"), Some(json!({"agent_id": agent})), 404).await;
        p.call(method, assign, &format!("{it}/assign"), Some(json!({"agent_id": NO_SUCH_ID})), 422).await;
    }
    for method in ["PUT", "POST"] {
        p.call(method, resume, &format!("{it}/resume"), None, 200).await;
        p.call(method, resume, &format!("{missing}/resume"), None, 404).await;
    }
    p.call("PUT", assign, &format!("{it}/assign"), Some(json!({"agent_id": agent})), 409).await;
}

async fn deliveries(p: &mut Probe<'_>) {
    let (list, one, retry) =
        ("/v1/webhook-deliveries", "/v1/webhook-deliveries/{id}", "/v1/webhook-deliveries/{id}/retry");
    let (app, admin) = (p.app, p.app.admin_key.clone());
    let first_with = |status: &'static str| {
        let admin = admin.clone();
        move || {
            let admin = admin.clone();
            async move {
                let page = body(app.get(&format!("/v1/webhook-deliveries?status={status}"), &admin).await).await;
                page["items"].as_array().and_then(|items| items.first()).map(id)
            }
        }
    };
    let failed = eventually("a failed reply delivery", first_with("failed")).await;
    let delivered = eventually("a delivered takeover call", first_with("delivered")).await;
    p.call("GET", list, "/v1/webhook-deliveries?status=failed&limit=10", None, 200).await;
    p.call("GET", list, "/v1/webhook-deliveries?status=lost", None, 400).await;
    p.call("GET", one, &format!("/v1/webhook-deliveries/{failed}"), None, 200).await;
    p.call("GET", one, &format!("/v1/webhook-deliveries/{NO_SUCH_ID}"), None, 404).await;
    p.call("POST", retry, &format!("/v1/webhook-deliveries/{failed}/retry"), None, 202).await;
    p.call("POST", retry, &format!("/v1/webhook-deliveries/{delivered}/retry"), None, 409).await;
    p.call("POST", retry, &format!("/v1/webhook-deliveries/{NO_SUCH_ID}/retry"), None, 404).await;
}

async fn live(p: &mut Probe<'_>) {
    for path in ["/v1/ws", "/ws/conversations"] {
        let url = format!("{}{path}?token={}", p.app.address.replacen("http", "ws", 1), p.app.admin_key);
        let (socket, response) = tokio_tungstenite::connect_async(url).await.expect("WebSocket opens");
        assert_eq!(response.status().as_u16(), 101);
        drop(socket);
        p.upgraded(path, path);
        p.call("GET", path, path, None, 400).await;
    }
}
