//! AI contexts end to end: CRUD of `/v1/chatbots/{bot}/ai-contexts` (seed `001` bodies),
//! validation naming the field at fault, tenant isolation, scopes, and nothing stored when a
//! request is refused.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_error, body, call, spawn_app, spawn_app_on, spawn_app_with, TestApp};

/// The "Create Context" request body of seed `001`, character for character.
const SEED_CONTEXT: &str = r#"{ "name": "Shipping Policy", "trigger_keywords": ["shipping", "delivery", "track"], "context_type": "static", "content": "We offer free shipping on orders over $50. Standard delivery takes 3-5 business days...", "priority": 5, "enabled": true}"#;

fn seed_context() -> Value {
    serde_json::from_str(SEED_CONTEXT).expect("seed context is JSON")
}

fn contexts_path(bot: &str) -> String {
    format!("/v1/chatbots/{bot}/ai-contexts")
}

fn context_path(bot: &str, id: &str) -> String {
    format!("/v1/chatbots/{bot}/ai-contexts/{id}")
}

/// An `api` context reading the catalog summary out of a JSON answer.
fn api_context() -> Value {
    json!({
        "name": "Product Catalog",
        "trigger_keywords": ["product", "price"],
        "context_type": "api",
        "api_config": {
            "url": "https://catalog.example.com/summary",
            "headers": { "Authorization": "Bearer catalog-token" },
            "cache_ttl_secs": 600,
            "max_bytes": 4096,
            "timeout_ms": 2000,
            "content_pointer": "/data/summary",
        },
        "priority": 10,
    })
}

/// Creates a context with the admin key, asserting 201; returns it as served.
async fn create_context(app: &TestApp, bot: &str, context: &Value) -> Value {
    let (status, value) = call(app, Method::POST, &contexts_path(bot), context).await;
    assert_eq!(status, 201, "create context answered {value}");
    value
}

/// The chatbot's contexts as listed.
async fn list_contexts(app: &TestApp, bot: &str) -> Vec<Value> {
    let response = app.get(&contexts_path(bot), &app.admin_key).await;
    assert_eq!(response.status(), 200, "list contexts");
    body(response).await["items"].as_array().expect("items").clone()
}

/// One context as served.
async fn get_context(app: &TestApp, bot: &str, id: &str) -> Value {
    let response = app.get(&context_path(bot, id), &app.admin_key).await;
    assert_eq!(response.status(), 200, "get context");
    body(response).await
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("id").to_string()
}

/// Posts `context` and asserts it is refused with `status` naming `field`, and that nothing was stored.
async fn assert_create_refused(app: &TestApp, bot: &str, context: &Value, status: u16, field: &str) {
    let response = app.post(&contexts_path(bot), &app.admin_key, context).await;
    let error = assert_error(response, status, "").await;
    assert_eq!(error["field"], field, "error {error} for {context}");
    assert!(list_contexts(app, bot).await.is_empty(), "a refused context is not stored: {context}");
}

/// `seed_context()` with `field` set to `value`.
fn seed_with(field: &str, value: Value) -> Value {
    let mut context = seed_context();
    context[field] = value;
    context
}

/// `api_context()` with `api_config.field` set to `value`.
fn api_with(field: &str, value: Value) -> Value {
    let mut context = api_context();
    context["api_config"][field] = value;
    context
}

#[tokio::test]
async fn the_seed_context_is_created_verbatim_and_served_back() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;

    // Act
    let created = create_context(&app, &bot, &seed_context()).await;

    // Assert
    assert!(created["id"].as_str().is_some_and(|id| id.parse::<uuid::Uuid>().is_ok()), "{created}");
    assert_eq!(created["chatbot_id"], bot.as_str());
    assert_eq!(created["name"], "Shipping Policy");
    assert_eq!(created["trigger_keywords"], json!(["shipping", "delivery", "track"]));
    assert_eq!(created["context_type"], "static");
    assert_eq!(created["content"], seed_context()["content"]);
    assert_eq!(created["priority"], 5);
    assert_eq!(created["enabled"], true);
    assert!(created["created_at"].is_string() && created["updated_at"].is_string(), "{created}");
    assert_eq!(get_context(&app, &bot, &id_of(&created)).await, created);
    assert_eq!(list_contexts(&app, &bot).await, vec![created]);
}

#[tokio::test]
async fn priority_enabled_and_context_type_have_defaults() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;

    // Act
    let created = create_context(
        &app,
        &bot,
        &json!({ "name": "Returns", "trigger_keywords": ["refund"], "content": "Refunds within 30 days." }),
    )
    .await;

    // Assert
    assert_eq!(created["priority"], 0);
    assert_eq!(created["enabled"], true);
    assert_eq!(created["context_type"], "static");
}

#[tokio::test]
async fn an_api_context_keeps_its_fetch_settings_and_gets_defaults_for_the_rest() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let minimal = json!({
        "name": "Stock",
        "trigger_keywords": ["stock"],
        "context_type": "api",
        "api_config": { "url": "https://stock.example.com/today" },
    });

    // Act
    let full = create_context(&app, &bot, &api_context()).await;
    let defaults = create_context(&app, &bot, &minimal).await;

    // Assert
    assert_eq!(full["context_type"], "api");
    assert_eq!(full["api_config"], api_context()["api_config"]);
    assert_eq!(
        defaults["api_config"],
        json!({
            "url": "https://stock.example.com/today",
            "headers": {},
            "cache_ttl_secs": 300,
            "max_bytes": 16384,
            "timeout_ms": 5000,
            "content_pointer": "",
        })
    );
    assert_eq!(defaults["content"], "");
}

#[tokio::test]
async fn contexts_are_listed_highest_priority_first_and_oldest_first_on_ties() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let mut names = Vec::new();
    for (name, priority) in [("low", 1), ("high-older", 9), ("middle", 5), ("high-newer", 9)] {
        let context = json!({ "name": name, "trigger_keywords": ["x"], "content": "c", "priority": priority });
        create_context(&app, &bot, &context).await;
        names.push(name);
    }

    // Act
    let listed = list_contexts(&app, &bot).await;

    // Assert
    let order: Vec<&str> = listed.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(order, ["high-older", "high-newer", "middle", "low"]);
}

#[tokio::test]
async fn put_and_patch_change_only_the_fields_given() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let created = create_context(&app, &bot, &seed_context()).await;
    let path = context_path(&bot, &id_of(&created));

    // Act
    let (status, patched) = call(&app, Method::PATCH, &path, &json!({ "priority": 50, "enabled": false })).await;
    let (put_status, put) = call(&app, Method::PUT, &path, &json!({ "trigger_keywords": [" parcel "] })).await;

    // Assert
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["priority"], 50);
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["content"], created["content"]);
    assert_eq!(patched["created_at"], created["created_at"]);
    assert_eq!(put_status, 200, "{put}");
    assert_eq!(put["trigger_keywords"], json!(["parcel"]), "keywords are trimmed");
    assert_eq!(put["priority"], 50);
    assert_eq!(put["name"], "Shipping Policy");
    assert_eq!(get_context(&app, &bot, &id_of(&created)).await, put);
}

#[tokio::test]
async fn a_static_context_can_be_turned_into_an_api_context_and_its_settings_merged() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let created = create_context(&app, &bot, &seed_context()).await;
    let path = context_path(&bot, &id_of(&created));

    // Act
    let (status, turned) = call(
        &app,
        Method::PATCH,
        &path,
        &json!({ "context_type": "api", "api_config": { "url": "https://ship.example.com/policy" } }),
    )
    .await;
    let (merged_status, merged) =
        call(&app, Method::PATCH, &path, &json!({ "api_config": { "timeout_ms": 1500 } })).await;

    // Assert
    assert_eq!(status, 200, "{turned}");
    assert_eq!(turned["context_type"], "api");
    assert_eq!(turned["api_config"]["url"], "https://ship.example.com/policy");
    assert_eq!(merged_status, 200, "{merged}");
    assert_eq!(merged["api_config"]["timeout_ms"], 1500);
    assert_eq!(merged["api_config"]["url"], "https://ship.example.com/policy", "nested fields merge");
}

#[tokio::test]
async fn a_deleted_context_is_gone() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let created = create_context(&app, &bot, &seed_context()).await;
    let path = context_path(&bot, &id_of(&created));

    // Act
    let (status, answer) = call(&app, Method::DELETE, &path, &json!({})).await;

    // Assert
    assert_eq!(status, 200);
    assert_eq!(answer, json!({ "deleted": true }));
    assert_error(app.get(&path, &app.admin_key).await, 404, "not found").await;
    assert!(list_contexts(&app, &bot).await.is_empty());
    let (again, _) = call(&app, Method::DELETE, &path, &json!({})).await;
    assert_eq!(again, 404, "deleting twice");
}

#[tokio::test]
async fn unknown_or_malformed_context_ids_are_not_found() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let unknown = context_path(&bot, &uuid::Uuid::new_v4().to_string());
    let malformed = context_path(&bot, "not-a-uuid");

    // Act + assert
    for path in [&unknown, &malformed] {
        assert_error(app.get(path, &app.admin_key).await, 404, "AI context not found").await;
        let (status, _) = call(&app, Method::PATCH, path, &json!({ "priority": 1 })).await;
        assert_eq!(status, 404, "PATCH {path}");
        let (status, _) = call(&app, Method::DELETE, path, &json!({})).await;
        assert_eq!(status, 404, "DELETE {path}");
    }
    let (status, _) = call(&app, Method::GET, &contexts_path(&uuid::Uuid::new_v4().to_string()), &json!({})).await;
    assert_eq!(status, 404, "unknown chatbot");
}

#[tokio::test]
async fn missing_fields_and_wrong_types_are_refused_with_400_naming_the_field() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let mut no_name = seed_context();
    no_name.as_object_mut().unwrap().remove("name");
    let mut no_keywords = seed_context();
    no_keywords.as_object_mut().unwrap().remove("trigger_keywords");
    let mut no_content = seed_context();
    no_content.as_object_mut().unwrap().remove("content");
    let mut no_url = api_context();
    no_url["api_config"].as_object_mut().unwrap().remove("url");
    let mut no_api_config = api_context();
    no_api_config.as_object_mut().unwrap().remove("api_config");

    // Act + assert
    let cases = [
        (no_name, "name"),
        (seed_with("name", json!("   ")), "name"),
        (no_keywords, "trigger_keywords"),
        (seed_with("trigger_keywords", json!("shipping")), "trigger_keywords"),
        (seed_with("trigger_keywords", json!(["shipping", 7])), "trigger_keywords[1]"),
        (seed_with("context_type", json!("dynamic")), "context_type"),
        (no_content, "content"),
        (seed_with("content", json!("  ")), "content"),
        (seed_with("priority", json!("high")), "priority"),
        (seed_with("enabled", json!("yes")), "enabled"),
        (seed_with("colour", json!("blue")), "colour"),
        (no_api_config, "api_config"),
        (no_url, "api_config.url"),
        (api_with("cache_ttl_secs", json!(-1)), "api_config.cache_ttl_secs"),
        (api_with("headers", json!(["x"])), "api_config.headers"),
    ];
    for (context, field) in cases {
        assert_create_refused(&app, &bot, &context, 400, field).await;
    }
}

#[tokio::test]
async fn malformed_json_and_a_non_json_body_are_refused() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let request = |content_type: &str, payload: &str| {
        app.request(Method::POST, &contexts_path(&bot), &app.admin_key)
            .header("content-type", content_type)
            .body(payload.to_string())
    };

    // Act
    let malformed = request("application/json", "{\"name\": ").send().await.expect("request");
    let text = request("text/plain", SEED_CONTEXT).send().await.expect("request");

    // Assert
    assert_error(malformed, 400, "malformed JSON").await;
    assert_eq!(text.status(), 415);
    assert!(list_contexts(&app, &bot).await.is_empty());
}

#[tokio::test]
async fn unusable_values_are_refused_with_422_naming_the_field() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;

    // Act + assert
    let cases = [
        (seed_with("trigger_keywords", json!(["shipping", "  "])), "trigger_keywords[1]"),
        (seed_with("trigger_keywords", json!([])), "trigger_keywords"),
        (seed_with("trigger_keywords", json!(["ok", "k".repeat(201)])), "trigger_keywords[1]"),
        (seed_with("trigger_keywords", json!(vec!["kw"; 101])), "trigger_keywords"),
        (seed_with("content", json!("a".repeat(32_769))), "content"),
        (api_with("url", json!("not a url")), "api_config.url"),
        (api_with("url", json!("ftp://files.example.com/catalog")), "api_config.url"),
        (api_with("url", json!("file:///etc/passwd")), "api_config.url"),
        (api_with("cache_ttl_secs", json!(86_401)), "api_config.cache_ttl_secs"),
        (api_with("max_bytes", json!(0)), "api_config.max_bytes"),
        (api_with("max_bytes", json!(1_048_577)), "api_config.max_bytes"),
        (api_with("timeout_ms", json!(0)), "api_config.timeout_ms"),
        (api_with("timeout_ms", json!(30_001)), "api_config.timeout_ms"),
        (api_with("content_pointer", json!("data/summary")), "api_config.content_pointer"),
        (api_with("headers", json!({ "bad header": "x" })), "api_config.headers.bad header"),
    ];
    for (context, field) in cases {
        assert_create_refused(&app, &bot, &context, 422, field).await;
    }
}

#[tokio::test]
async fn values_at_the_limits_are_accepted() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let cases = [
        seed_with("content", json!("é".repeat(32_768))),
        api_with("cache_ttl_secs", json!(0)),
        api_with("cache_ttl_secs", json!(86_400)),
        api_with("max_bytes", json!(1)),
        api_with("max_bytes", json!(1_048_576)),
        api_with("timeout_ms", json!(1)),
        api_with("timeout_ms", json!(30_000)),
        api_with("content_pointer", json!("")),
        api_with("url", json!("http://catalog.example.com/plain")),
    ];

    // Act + assert
    for context in &cases {
        create_context(&app, &bot, context).await;
    }
    assert_eq!(list_contexts(&app, &bot).await.len(), cases.len());
}

#[tokio::test]
async fn a_refused_update_leaves_the_context_unchanged() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let static_context = create_context(&app, &bot, &seed_context()).await;
    let api = create_context(&app, &bot, &api_context()).await;
    let static_path = context_path(&bot, &id_of(&static_context));
    let api_path = context_path(&bot, &id_of(&api));

    // Act + assert
    let refusals = [
        (&static_path, json!({ "trigger_keywords": ["ok", ""] }), 422, "trigger_keywords[1]"),
        (&static_path, json!({ "content": "a".repeat(32_769) }), 422, "content"),
        (&static_path, json!({ "content": "" }), 400, "content"),
        (&static_path, json!({ "context_type": "api" }), 400, "api_config"),
        (&static_path, json!({ "priority": "high" }), 400, "priority"),
        (&static_path, json!({ "colour": "blue" }), 400, "colour"),
        (&static_path, json!({ "id": uuid::Uuid::new_v4() }), 400, "id"),
        (&static_path, json!({ "chatbot_id": uuid::Uuid::new_v4() }), 400, "chatbot_id"),
        (&api_path, json!({ "api_config": { "url": "gopher://x" } }), 422, "api_config.url"),
        (&api_path, json!({ "api_config": { "timeout_ms": 30_001 } }), 422, "api_config.timeout_ms"),
        (&api_path, json!({ "api_config": null }), 400, "api_config"),
    ];
    for (path, patch, status, field) in refusals {
        let response = app.send_json(Method::PATCH, path, &app.admin_key, &patch).await;
        let error = assert_error(response, status, "").await;
        assert_eq!(error["field"], field, "error {error} for {patch}");
    }
    assert_eq!(get_context(&app, &bot, &id_of(&static_context)).await, static_context);
    assert_eq!(get_context(&app, &bot, &id_of(&api)).await, api);
}

#[tokio::test]
async fn a_private_context_url_is_refused_unless_private_networks_are_allowed() {
    // Arrange
    let strict = spawn_app_with(|settings| settings.webhooks.allow_private_networks = false).await;
    let strict_bot = strict.create_chatbot(&strict.admin_key, "Shop").await;
    let lenient = spawn_app().await;
    let lenient_bot = lenient.create_chatbot(&lenient.admin_key, "Shop").await;
    let internal = api_with("url", json!("http://127.0.0.1:8080/internal"));

    // Act + assert
    for url in ["http://127.0.0.1:8080/internal", "http://localhost/x", "http://169.254.169.254/latest/meta-data"] {
        assert_create_refused(&strict, &strict_bot, &api_with("url", json!(url)), 422, "api_config.url").await;
    }
    create_context(&lenient, &lenient_bot, &internal).await;
}

#[tokio::test]
async fn another_tenants_contexts_are_not_found() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let context = create_context(&app, &bot, &seed_context()).await;
    let path = context_path(&bot, &id_of(&context));
    let stranger = app.key_for_new_tenant(&["chatbot:config"]);
    let strangers_bot = app.create_chatbot(&stranger, "Theirs").await;

    // Act + assert: through the owner's chatbot id
    assert_error(app.get(&contexts_path(&bot), &stranger).await, 404, "not found").await;
    assert_error(app.post(&contexts_path(&bot), &stranger, &seed_context()).await, 404, "not found").await;
    assert_error(app.get(&path, &stranger).await, 404, "not found").await;
    let patch = app.send_json(Method::PATCH, &path, &stranger, &json!({ "priority": 99 })).await;
    assert_error(patch, 404, "not found").await;
    let delete = app.send_json(Method::DELETE, &path, &stranger, &json!({})).await;
    assert_error(delete, 404, "not found").await;

    // … and through their own chatbot id
    let borrowed = context_path(&strangers_bot, &id_of(&context));
    assert_error(app.get(&borrowed, &stranger).await, 404, "not found").await;
    let response = app.get(&contexts_path(&strangers_bot), &stranger).await;
    assert_eq!(body(response).await["items"], json!([]));

    // Nothing changed.
    assert_eq!(get_context(&app, &bot, &id_of(&context)).await, context);
    assert_eq!(list_contexts(&app, &bot).await.len(), 1);
}

#[tokio::test]
async fn a_key_without_the_config_scope_is_forbidden() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let context = create_context(&app, &bot, &seed_context()).await;
    let path = context_path(&bot, &id_of(&context));
    let reader = app.key_with_scopes(&["conversations:read", "conversations:write", "messages:handle"]);

    // Act + assert
    assert_error(app.get(&contexts_path(&bot), &reader).await, 403, "chatbot:config").await;
    assert_error(app.post(&contexts_path(&bot), &reader, &seed_context()).await, 403, "chatbot:config").await;
    assert_error(app.get(&path, &reader).await, 403, "chatbot:config").await;
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        let response = app.send_json(method, &path, &reader, &json!({ "priority": 99 })).await;
        assert_error(response, 403, "chatbot:config").await;
    }
    let anonymous = app.client.get(app.url(&contexts_path(&bot))).send().await.expect("request");
    assert_error(anonymous, 401, "Missing authentication").await;

    // Nothing changed.
    assert_eq!(list_contexts(&app, &bot).await, vec![context]);
}

#[tokio::test]
async fn a_key_with_the_config_scope_manages_contexts() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let config_key = app.key_with_scopes(&["chatbot:config"]);

    // Act
    let response = app.post(&contexts_path(&bot), &config_key, &seed_context()).await;

    // Assert
    assert_eq!(response.status(), 201);
    let listed = body(app.get(&contexts_path(&bot), &config_key).await).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn contexts_survive_a_restart() {
    // Arrange
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_app_on(dir.path().to_path_buf(), |_| {}).await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let static_context = create_context(&app, &bot, &seed_context()).await;
    let api = create_context(&app, &bot, &api_context()).await;

    // Act
    app.stop();
    let app = spawn_app_on(dir.path().to_path_buf(), |_| {}).await;

    // Assert
    assert_eq!(list_contexts(&app, &bot).await, vec![api, static_context]);
}
