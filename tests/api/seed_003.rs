//! Seed `003` (CallMissed conversations): `/api/v1/conversations…` with
//! `Authorization: Bearer KEY` — the list and its filters, one conversation, its messages,
//! status changes, the auto-reply toggle, and the AI draft that is not built yet.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{body, spawn_app, tick, TestApp};

/// `method` `path` with `Authorization: Bearer key` and an optional JSON body; status and body.
async fn bearer(app: &TestApp, key: &str, method: Method, path: &str, payload: Option<&Value>) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(payload) = payload {
        request = request.json(payload);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, body(response).await)
}

/// GET `path` with the admin key as a bearer token, asserting 200.
async fn get_ok(app: &TestApp, path: &str) -> Value {
    let (status, value) = bearer(app, &app.admin_key, Method::GET, path, None).await;
    assert_eq!(status, 200, "GET {path} answered {value}");
    value
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap_or_else(|| panic!("not an object: {value}")).keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const CONVERSATION_KEYS: [&str; 12] = [
    "id",
    "tenant_id",
    "bot_id",
    "channel",
    "external_id",
    "status",
    "duration_seconds",
    "metadata",
    "ai_autoreply_enabled",
    "created_at",
    "updated_at",
    "bot_name",
];

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect()
}

/// Sends a text from `provider_id` on `channel_id`; returns the handle answer.
async fn say(app: &TestApp, bot: &str, channel_id: &str, provider_id: &str, text: &str) -> Value {
    let payload =
        json!({ "channelId": channel_id, "providerId": provider_id, "message": { "type": "text", "text": text } });
    let response = app.post(&format!("/v1/chatbots/{bot}/conversations/handle"), &app.admin_key, &payload).await;
    assert_eq!(response.status(), 200, "handle");
    body(response).await
}

async fn start(app: &TestApp, bot: &str, channel_id: &str, provider_id: &str) -> String {
    tick().await;
    say(app, bot, channel_id, provider_id, "Where is my order?").await["conversation_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn listing_whatsapp_conversations_that_are_active_answers_the_documented_objects() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support Bot").await;
    let id = start(&app, &bot, "wa-main", "+919876543210").await;

    // Act
    let listed = get_ok(&app, "/api/v1/conversations?channel=whatsapp&status=active").await;

    // Assert
    assert_eq!(ids(&listed), [id.as_str()]);
    let conversation = &listed[0];
    assert_eq!(keys(conversation), set(&CONVERSATION_KEYS));
    assert_eq!(conversation["bot_id"], bot.as_str());
    assert!(conversation["tenant_id"].is_string());
    assert_eq!(conversation["channel"], "whatsapp");
    assert_eq!(conversation["external_id"], "+919876543210");
    assert_eq!(conversation["status"], "active");
    assert_eq!(conversation["duration_seconds"], Value::Null);
    assert_eq!(conversation["metadata"], Value::Null);
    assert_eq!(conversation["ai_autoreply_enabled"], true);
    assert_eq!(conversation["bot_name"], "Support Bot");
    assert_eq!(get_ok(&app, &format!("/api/v1/conversations/{id}")).await, *conversation);
}

#[tokio::test]
async fn the_channel_status_and_bot_filters_narrow_the_list() {
    // Arrange
    let app = spawn_app().await;
    let sales = app.create_chatbot(&app.admin_key, "Sales").await;
    let support = app.create_chatbot(&app.admin_key, "Support").await;
    let on_whatsapp = start(&app, &sales, "wa-main", "a").await;
    let on_voice = start(&app, &sales, "phone-line", "b").await;
    let response = app
        .send_json(
            Method::PATCH,
            &format!("/v1/chatbots/{sales}/channels/phone-line"),
            &app.admin_key,
            &json!({ "provider": "voice" }),
        )
        .await;
    assert_eq!(response.status(), 200, "set the channel's provider");
    let other_bot = start(&app, &support, "wa-main", "c").await;
    let finished = start(&app, &support, "wa-main", "d").await;
    let (status, _) = bearer(
        &app,
        &app.admin_key,
        Method::PUT,
        &format!("/api/v1/conversations/{finished}/status"),
        Some(&json!({ "status": "completed" })),
    )
    .await;
    assert_eq!(status, 200);

    // Act
    let voice = get_ok(&app, "/api/v1/conversations?channel=voice").await;
    let whatsapp_active = get_ok(&app, "/api/v1/conversations?channel=whatsapp&status=active").await;
    let of_sales = get_ok(&app, &format!("/api/v1/conversations?bot_id={sales}")).await;
    let completed = get_ok(&app, "/api/v1/conversations?status=completed").await;
    let everything = get_ok(&app, "/api/v1/conversations").await;

    // Assert
    assert_eq!(ids(&voice), [on_voice.as_str()]);
    assert_eq!(voice[0]["channel"], "voice");
    assert_eq!(ids(&whatsapp_active), [other_bot.clone(), on_whatsapp.clone()]);
    assert_eq!(ids(&of_sales), [on_voice.clone(), on_whatsapp.clone()]);
    assert_eq!(ids(&completed), [finished.as_str()]);
    assert_eq!(ids(&everything), [finished, other_bot, on_voice, on_whatsapp]);
}

#[tokio::test]
async fn an_unknown_status_filter_is_a_400_error() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let (status, value) = bearer(&app, &app.admin_key, Method::GET, "/api/v1/conversations?status=lost", None).await;

    // Assert
    assert_eq!(status, 400);
    assert!(value["error"].as_str().unwrap().contains("status"), "{value}");
}

#[tokio::test]
async fn messages_are_the_thread_in_order_as_a_bare_array() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let id = start(&app, &bot, "wa-main", "u1").await;
    say(&app, &bot, "wa-main", "u1", "hello?").await;

    // Act
    let thread = get_ok(&app, &format!("/api/v1/conversations/{id}/messages")).await;

    // Assert
    let thread = thread.as_array().expect("a bare array");
    let roles: Vec<&str> = thread.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(thread[0]["content"], "Where is my order?");
    assert_eq!(thread[2]["content"], "hello?");
    for message in thread {
        assert_eq!(
            keys(message),
            set(&["id", "conversation_id", "role", "content", "message_type", "tokens_used", "created_at"])
        );
        assert_eq!(message["conversation_id"], id.as_str());
        assert_eq!(message["message_type"], "text");
    }
}

#[tokio::test]
async fn putting_a_status_moves_the_thread_and_gives_it_a_duration() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let id = start(&app, &bot, "wa-main", "u1").await;

    // Act
    let (status, moved) = bearer(
        &app,
        &app.admin_key,
        Method::PUT,
        &format!("/api/v1/conversations/{id}/status"),
        Some(&json!({ "status": "escalated" })),
    )
    .await;

    // Assert
    assert_eq!(status, 200, "{moved}");
    assert_eq!(keys(&moved), set(&CONVERSATION_KEYS));
    assert_eq!(moved["status"], "escalated");
    assert!(moved["duration_seconds"].as_i64().is_some_and(|s| s >= 0), "{moved}");
    let native = body(app.get(&format!("/v1/conversations/{id}"), &app.admin_key).await).await;
    assert_eq!(native["status"], "escalated");
}

#[tokio::test]
async fn an_unknown_status_value_is_a_400_and_changes_nothing() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let id = start(&app, &bot, "wa-main", "u1").await;

    // Act
    let (status, value) = bearer(
        &app,
        &app.admin_key,
        Method::PUT,
        &format!("/api/v1/conversations/{id}/status"),
        Some(&json!({ "status": "archived" })),
    )
    .await;

    // Assert
    assert_eq!(status, 400);
    assert!(value["error"].is_string(), "{value}");
    assert_eq!(get_ok(&app, &format!("/api/v1/conversations/{id}")).await["status"], "active");
}

#[tokio::test]
async fn turning_autoreply_off_lets_a_human_take_over_and_on_brings_the_bot_back() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let id = start(&app, &bot, "wa-main", "u1").await;
    let path = format!("/api/v1/conversations/{id}/autoreply");

    // Act
    let (off_status, off) = bearer(&app, &app.admin_key, Method::POST, &path, Some(&json!({ "enabled": false }))).await;
    let silent = say(&app, &bot, "wa-main", "u1", "anyone?").await;
    let (on_status, on) = bearer(&app, &app.admin_key, Method::POST, &path, Some(&json!({ "enabled": true }))).await;
    let answered = say(&app, &bot, "wa-main", "u1", "hello again").await;

    // Assert
    assert_eq!(off_status, 200, "{off}");
    assert_eq!(off["ai_autoreply_enabled"], false);
    assert_eq!(keys(&off), set(&CONVERSATION_KEYS));
    assert_eq!(silent["replies"], json!([]));
    assert_eq!(on_status, 200);
    assert_eq!(on["ai_autoreply_enabled"], true);
    assert_eq!(answered["replies"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_ai_draft_returns_the_models_suggestion_and_stores_nothing() {
    // Arrange: an OpenAI-compatible model on loopback.
    let model = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/v1/chat/completions"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "choices": [{ "message": { "role": "assistant", "content": "Your order ships tomorrow." } }],
            "usage": { "total_tokens": 42 }
        })))
        .mount(&model)
        .await;
    let base = format!("{}/v1", model.uri());
    let app = crate::helpers::spawn_app_with(|s| {
        s.ai.openai.base_url = base;
        s.ai.openai.api_key = "sk-test".to_string().into();
    })
    .await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let id = start(&app, &bot, "wa-main", "u1").await;
    let before = app.get(&format!("/v1/conversations/{id}/messages"), &app.admin_key).await;
    let before = crate::helpers::body(before).await["items"].as_array().map(Vec::len);

    // Act
    let (status, value) =
        bearer(&app, &app.admin_key, Method::POST, &format!("/api/v1/conversations/{id}/ai-draft"), None).await;

    // Assert
    assert_eq!(status, 200, "{value}");
    assert_eq!(value, serde_json::json!({ "draft": "Your order ships tomorrow." }));
    let after = app.get(&format!("/v1/conversations/{id}/messages"), &app.admin_key).await;
    assert_eq!(crate::helpers::body(after).await["items"].as_array().map(Vec::len), before, "a draft stores nothing");
}

#[tokio::test]
async fn no_key_is_a_401_and_another_tenants_conversation_a_404() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let id = start(&app, &bot, "wa-main", "u1").await;
    let stranger = app.key_for_new_tenant(&["admin"]);

    // Act
    let response = app.client.get(app.url("/api/v1/conversations")).send().await.expect("request");
    let anonymous_status = response.status().as_u16();
    let anonymous = body(response).await;
    let (foreign_status, foreign) =
        bearer(&app, &stranger, Method::GET, &format!("/api/v1/conversations/{id}"), None).await;
    let (_, their_list) = bearer(&app, &stranger, Method::GET, "/api/v1/conversations", None).await;
    let (toggle_status, _) = bearer(
        &app,
        &stranger,
        Method::POST,
        &format!("/api/v1/conversations/{id}/autoreply"),
        Some(&json!({ "enabled": false })),
    )
    .await;

    // Assert
    assert_eq!(anonymous_status, 401);
    assert_eq!(anonymous["error"], "Missing authentication");
    assert_eq!(foreign_status, 404);
    assert!(foreign["error"].is_string());
    assert_eq!(their_list, json!([]));
    assert_eq!(toggle_status, 404);
    assert_eq!(get_ok(&app, &format!("/api/v1/conversations/{id}")).await["ai_autoreply_enabled"], true);
}

#[tokio::test]
async fn a_read_only_key_may_read_but_not_change_status() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let id = start(&app, &bot, "wa-main", "u1").await;
    let reader = app.key_with_scopes(&["conversations:read"]);

    // Act
    let (read_status, _) =
        bearer(&app, &reader, Method::GET, &format!("/api/v1/conversations/{id}/messages"), None).await;
    let (write_status, refused) = bearer(
        &app,
        &reader,
        Method::PUT,
        &format!("/api/v1/conversations/{id}/status"),
        Some(&json!({ "status": "completed" })),
    )
    .await;

    // Assert
    assert_eq!(read_status, 200);
    assert_eq!(write_status, 403);
    assert!(refused["error"].as_str().unwrap().contains("conversations:write"), "{refused}");
}
