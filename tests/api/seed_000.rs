//! Seed `000` (Bot Control API): every request the document shows, replayed verbatim with
//! real ids — the PostgREST-style conversation reads through the REST API proxy, pause and
//! resume through `bot-control`, and the four documented errors.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{body, spawn_app, tick, TestApp};

const PROXY: &str = "/functions/v1/rest-api-proxy/conversations";
const BOT_CONTROL: &str = "/functions/v1/bot-control";

/// Sends a text from `provider_id` on `channel_id`; returns the handle answer.
async fn message(app: &TestApp, bot: &str, channel_id: &str, provider_id: &str, text: &str) -> Value {
    tick().await;
    let payload = json!({
        "channelId": channel_id, "channelName": "WhatsApp", "providerId": provider_id,
        "message": { "type": "text", "text": text },
    });
    let response = app.post(&format!("/v1/chatbots/{bot}/conversations/handle"), &app.admin_key, &payload).await;
    assert_eq!(response.status(), 200, "handle");
    body(response).await
}

/// GETs `path_and_query` with `X-API-Key`, as in the seed's cURL example; returns status and body.
async fn proxy(app: &TestApp, path_and_query: &str) -> (u16, Value) {
    let response =
        app.client.get(app.url(path_and_query)).header("X-API-Key", &app.admin_key).send().await.expect("request");
    let status = response.status().as_u16();
    (status, body(response).await)
}

/// The rows of a 200 proxy answer.
async fn rows(app: &TestApp, path_and_query: &str) -> Vec<Value> {
    let (status, value) = proxy(app, path_and_query).await;
    assert_eq!(status, 200, "GET {path_and_query} answered {value}");
    value.as_array().unwrap_or_else(|| panic!("not an array: {value}")).clone()
}

fn keys(row: &Value) -> BTreeSet<String> {
    row.as_object().expect("row is an object").keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter().map(|r| r["id"].as_str().expect("id").to_string()).collect()
}

/// POSTs `payload` to bot-control with the seed's headers; returns status and body.
async fn bot_control(app: &TestApp, payload: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(BOT_CONTROL))
        .header("Content-Type", "application/json")
        .header("X-API-Key", &app.admin_key)
        .body(payload.to_string())
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, body(response).await)
}

// --- 1. Check bot status -----------------------------------------------------------------------

#[tokio::test]
async fn getting_a_single_conversation_answers_exactly_the_selected_columns() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let handled = message(&app, &bot, "wa-main", "+4915100000001", "hi").await;
    let conversation = handled["conversation_id"].as_str().unwrap();

    // Act
    let found = rows(
        &app,
        &format!("{PROXY}?id={conversation}&select=id,ai_agent_active,status,contact_id,channel_account_id"),
    )
    .await;

    // Assert
    assert_eq!(
        found,
        [json!({
            "id": conversation,
            "ai_agent_active": true,
            "status": "open",
            "contact_id": handled["contact_id"],
            "channel_account_id": "wa-main",
        })]
    );
}

#[tokio::test]
async fn the_curl_status_check_answers_id_bot_flag_and_status_only() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let conversation = message(&app, &bot, "wa-main", "u1", "hi").await["conversation_id"].clone();

    // Act
    let found =
        rows(&app, &format!("{PROXY}?id={}&select=id,ai_agent_active,status", conversation.as_str().unwrap())).await;

    // Assert
    assert_eq!(found, [json!({ "id": conversation, "ai_agent_active": true, "status": "open" })]);
}

#[tokio::test]
async fn listing_the_bot_active_conversations_of_a_channel_orders_them_by_last_message() {
    // Arrange: a, b, c on wa-main and d elsewhere; b paused; a written to last.
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let a = message(&app, &bot, "wa-main", "a", "hi").await["conversation_id"].as_str().unwrap().to_string();
    let b = message(&app, &bot, "wa-main", "b", "hi").await["conversation_id"].as_str().unwrap().to_string();
    let c = message(&app, &bot, "wa-main", "c", "hi").await["conversation_id"].as_str().unwrap().to_string();
    message(&app, &bot, "wa-other", "d", "hi").await;
    let (status, _) = bot_control(&app, &json!({ "conversation_id": b, "action": "pause" })).await;
    assert_eq!(status, 200);
    message(&app, &bot, "wa-main", "a", "still there?").await;

    // Act
    let found = rows(
        &app,
        &format!(
            "{PROXY}?channel_account_id=wa-main&ai_agent_active=true\
             &select=id,ai_agent_active,contact_id,status,last_message_at&order=last_message_at.desc&limit=100"
        ),
    )
    .await;

    // Assert
    assert_eq!(ids(&found), [a, c]);
    for row in &found {
        assert_eq!(keys(row), set(&["id", "ai_agent_active", "contact_id", "status", "last_message_at"]));
        assert_eq!(row["ai_agent_active"], true);
        assert!(row["last_message_at"].is_string(), "last_message_at in {row}");
    }
}

#[tokio::test]
async fn filtering_by_status_open_leaves_out_finished_and_paused_conversations() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let open = message(&app, &bot, "wa-main", "open", "hi").await["conversation_id"].as_str().unwrap().to_string();
    let done = message(&app, &bot, "wa-main", "done", "hi").await["conversation_id"].as_str().unwrap().to_string();
    let paused = message(&app, &bot, "wa-main", "paused", "hi").await["conversation_id"].as_str().unwrap().to_string();
    let response = app
        .send_json(
            Method::PUT,
            &format!("/v1/conversations/{done}/status"),
            &app.admin_key,
            &json!({ "status": "completed" }),
        )
        .await;
    assert_eq!(response.status(), 200);
    bot_control(&app, &json!({ "conversation_id": paused, "action": "pause" })).await;

    // Act
    let plain =
        rows(&app, &format!("{PROXY}?status=open&ai_agent_active=true&select=id,ai_agent_active,contact_id")).await;
    let with_eq =
        rows(&app, &format!("{PROXY}?status=eq.open&ai_agent_active=eq.true&select=id,ai_agent_active,contact_id"))
            .await;
    let completed = rows(&app, &format!("{PROXY}?status=completed&select=id,status")).await;

    // Assert
    assert_eq!(ids(&plain), [open.as_str()]);
    assert_eq!(keys(&plain[0]), set(&["id", "ai_agent_active", "contact_id"]));
    assert_eq!(plain, with_eq);
    assert_eq!(completed, [json!({ "id": done, "status": "completed" })]);
}

#[tokio::test]
async fn the_proxy_lists_every_chatbot_of_the_tenant_and_no_other_tenant() {
    // Arrange
    let app = spawn_app().await;
    let first = app.create_chatbot(&app.admin_key, "Sales").await;
    let second = app.create_chatbot(&app.admin_key, "Support").await;
    let x = message(&app, &first, "wa-main", "x", "hi").await["conversation_id"].as_str().unwrap().to_string();
    let y = message(&app, &second, "wa-main", "y", "hi").await["conversation_id"].as_str().unwrap().to_string();
    let stranger = app.key_for_new_tenant(&["admin"]);
    let theirs = app.create_chatbot(&stranger, "Theirs").await;
    let response = app
        .post(
            &format!("/v1/chatbots/{theirs}/conversations/handle"),
            &stranger,
            &json!({ "channelId": "wa-main", "providerId": "z", "message": { "text": "hi" } }),
        )
        .await;
    let z = body(response).await["conversation_id"].as_str().unwrap().to_string();

    // Act
    let mine = rows(&app, &format!("{PROXY}?select=id&order=created_at.asc")).await;
    let by_their_id = rows(&app, &format!("{PROXY}?id={z}")).await;
    let limited = rows(&app, &format!("{PROXY}?select=id&order=created_at.asc&limit=1")).await;

    // Assert
    assert_eq!(ids(&mine), [x.clone(), y]);
    assert!(by_their_id.is_empty(), "another tenant's conversation leaked: {by_their_id:?}");
    assert_eq!(ids(&limited), [x]);
}

#[tokio::test]
async fn without_select_a_row_has_every_column() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    message(&app, &bot, "wa-main", "u1", "hi").await;

    // Act
    let found = rows(&app, PROXY).await;

    // Assert
    assert_eq!(found.len(), 1);
    assert_eq!(
        keys(&found[0]),
        set(&[
            "id",
            "ai_agent_active",
            "status",
            "contact_id",
            "channel_account_id",
            "last_message_at",
            "created_at",
            "updated_at"
        ])
    );
}

#[tokio::test]
async fn an_unknown_column_or_operator_is_a_400_with_an_error() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let (column_status, column) = proxy(&app, &format!("{PROXY}?select=id,secret")).await;
    let (operator_status, operator) = proxy(&app, &format!("{PROXY}?status=neq.open")).await;

    // Assert
    assert_eq!(column_status, 400);
    assert_eq!(column, json!({ "error": "column conversations.secret does not exist" }));
    assert_eq!(operator_status, 400);
    assert!(operator["error"].as_str().unwrap().contains("neq"), "{operator}");
}

#[tokio::test]
async fn the_proxy_without_credentials_is_a_401() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = app.client.get(app.url(&format!("{PROXY}?status=open"))).send().await.expect("request");

    // Assert
    assert_eq!(response.status(), 401);
    assert_eq!(body(response).await, json!({ "error": "Missing authentication" }));
}

// --- 2. Pause and 3. Resume --------------------------------------------------------------------

#[tokio::test]
async fn pausing_answers_the_documented_body_and_the_bot_stops_replying() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let conversation = message(&app, &bot, "wa-main", "u1", "hi").await["conversation_id"].clone();

    // Act
    let (status, answer) = bot_control(&app, &json!({ "conversation_id": conversation, "action": "pause" })).await;

    // Assert
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({ "success": true, "conversation_id": conversation, "bot_active": false, "action": "pause" })
    );
    let handled = message(&app, &bot, "wa-main", "u1", "anyone?").await;
    assert_eq!(handled["replies"], json!([]));
    let found =
        rows(&app, &format!("{PROXY}?id={}&select=id,ai_agent_active,status", conversation.as_str().unwrap())).await;
    assert_eq!(found[0]["ai_agent_active"], false);
}

#[tokio::test]
async fn resuming_answers_the_documented_body_and_the_bot_replies_again() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let conversation = message(&app, &bot, "wa-main", "u1", "hi").await["conversation_id"].clone();
    bot_control(&app, &json!({ "conversation_id": conversation, "action": "pause" })).await;

    // Act
    let (status, answer) = bot_control(&app, &json!({ "conversation_id": conversation, "action": "resume" })).await;

    // Assert
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({ "success": true, "conversation_id": conversation, "bot_active": true, "action": "resume" })
    );
    let handled = message(&app, &bot, "wa-main", "u1", "hello again").await;
    assert_eq!(handled["replies"].as_array().unwrap().len(), 1, "{handled}");
}

#[tokio::test]
async fn bot_control_accepts_a_bearer_token_too() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let conversation = message(&app, &bot, "wa-main", "u1", "hi").await["conversation_id"].clone();

    // Act
    let response = app
        .client
        .post(app.url(BOT_CONTROL))
        .bearer_auth(&app.admin_key)
        .json(&json!({ "conversation_id": conversation, "action": "pause" }))
        .send()
        .await
        .expect("request");

    // Assert
    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await["bot_active"], false);
}

// --- Error responses ---------------------------------------------------------------------------

#[tokio::test]
async fn missing_fields_answer_400_required_conversation_id_and_action() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let conversation = message(&app, &bot, "wa-main", "u1", "hi").await["conversation_id"].clone();

    for payload in [json!({}), json!({ "conversation_id": conversation }), json!({ "action": "pause" })] {
        // Act
        let (status, answer) = bot_control(&app, &payload).await;

        // Assert
        assert_eq!(status, 400, "for {payload}");
        assert_eq!(answer, json!({ "error": "Required: conversation_id, action" }), "for {payload}");
    }
}

#[tokio::test]
async fn an_unknown_action_answers_400_action_must_be_pause_or_resume() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let conversation = message(&app, &bot, "wa-main", "u1", "hi").await["conversation_id"].clone();

    // Act
    let (status, answer) = bot_control(&app, &json!({ "conversation_id": conversation, "action": "stop" })).await;

    // Assert
    assert_eq!(status, 400);
    assert_eq!(answer, json!({ "error": "action must be \"pause\" or \"resume\"" }));
}

#[tokio::test]
async fn no_credentials_answer_401_missing_authentication() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = app
        .client
        .post(app.url(BOT_CONTROL))
        .json(&json!({ "conversation_id": "CONV_ID", "action": "pause" }))
        .send()
        .await
        .expect("request");

    // Assert
    assert_eq!(response.status(), 401);
    assert_eq!(body(response).await, json!({ "error": "Missing authentication" }));
}

#[tokio::test]
async fn an_unknown_or_foreign_conversation_answers_404_conversation_not_found() {
    // Arrange
    let app = spawn_app().await;
    let stranger = app.key_for_new_tenant(&["admin"]);
    let theirs = app.create_chatbot(&stranger, "Theirs").await;
    let response = app
        .post(
            &format!("/v1/chatbots/{theirs}/conversations/handle"),
            &stranger,
            &json!({ "channelId": "wa-main", "providerId": "z", "message": { "text": "hi" } }),
        )
        .await;
    let foreign = body(response).await["conversation_id"].clone();

    for id in [json!("CONV_ID"), json!(uuid::Uuid::new_v4().to_string()), foreign.clone()] {
        // Act
        let (status, answer) = bot_control(&app, &json!({ "conversation_id": id, "action": "pause" })).await;

        // Assert
        assert_eq!(status, 404, "for {id}");
        assert_eq!(answer, json!({ "error": "Conversation not found" }), "for {id}");
    }
    let untouched = app.get(&format!("/v1/conversations/{}", foreign.as_str().unwrap()), &stranger).await;
    assert_eq!(body(untouched).await["bot_active"], true);
}
