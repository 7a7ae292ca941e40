//! Seed `002` (ChatCaptain conversation management): the native
//! `/v1/chatbots/{chatbotId}/conversations…` routes called exactly as documented — the key in
//! `x-chatcaptain-key`, the documented bodies (with `chatbotId`, `callee`, `async`,
//! `eventPayload` as a JSON string), the seed permission names as scopes, and an `error`
//! field on every failure.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{body, spawn_app, TestApp};

/// `method` `path` with `x-chatcaptain-key: key` and an optional JSON body; status and body.
async fn captain(app: &TestApp, key: &str, method: Method, path: &str, payload: Option<&Value>) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path)).header("x-chatcaptain-key", key);
    if let Some(payload) = payload {
        request = request.json(payload);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, body(response).await)
}

/// Asserts a failure with `status` that carries an `error` message.
fn assert_failure(status: u16, value: &Value, expected: u16) {
    assert_eq!(status, expected, "answered {value}");
    assert!(value["error"].as_str().is_some_and(|e| !e.is_empty()), "no error in {value}");
}

/// The documented handle body for `bot`, with a text message.
fn handle_body(bot: &str, provider_id: &str, text: &str, asynchronous: bool) -> Value {
    json!({
        "chatbotId": bot,
        "channelId": "channel_def456",
        "channelName": "WhatsApp Business",
        "providerId": provider_id,
        "callee": "+4930123456",
        "async": asynchronous,
        "message": { "type": "text", "text": text },
    })
}

/// Handles one message as documented and returns the conversation id.
async fn start(app: &TestApp, bot: &str, provider_id: &str) -> String {
    let path = format!("/v1/chatbots/{bot}/conversations/handle");
    let (status, value) =
        captain(app, &app.admin_key, Method::POST, &path, Some(&handle_body(bot, provider_id, "hi", false))).await;
    assert_eq!(status, 200, "handle answered {value}");
    value["conversation_id"].as_str().expect("conversation_id").to_string()
}

#[tokio::test]
async fn handle_with_the_documented_body_answers_replies_and_async_answers_202() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let path = format!("/v1/chatbots/{bot}/conversations/handle");

    // Act
    let (status, handled) =
        captain(&app, &app.admin_key, Method::POST, &path, Some(&handle_body(&bot, "49123456789", "hi", false))).await;
    let (async_status, queued) =
        captain(&app, &app.admin_key, Method::POST, &path, Some(&handle_body(&bot, "49123456789", "more", true))).await;

    // Assert
    assert_eq!(status, 200, "{handled}");
    assert_eq!(handled["replies"][0]["text"], "Hello! Welcome. How can I help you?");
    assert_eq!(async_status, 202, "{queued}");
    assert_eq!(queued["conversation_id"], handled["conversation_id"]);
}

#[tokio::test]
async fn a_chatbot_id_in_the_body_that_differs_from_the_path_is_a_400_error() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let other = app.create_chatbot(&app.admin_key, "Other").await;

    // Act
    let (status, value) = captain(
        &app,
        &app.admin_key,
        Method::POST,
        &format!("/v1/chatbots/{bot}/conversations/handle"),
        Some(&handle_body(&other, "49123456789", "hi", false)),
    )
    .await;

    // Assert
    assert_failure(status, &value, 400);
}

#[tokio::test]
async fn list_find_get_update_and_delete_a_conversation() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let key = &app.admin_key;
    let base = format!("/v1/chatbots/{bot}/conversations");
    let created =
        json!({ "channelId": "channel_def456", "channelName": "WhatsApp Business", "providerId": "49123456789" });

    // Act: create, then the same again
    let (created_status, conversation) = captain(&app, key, Method::POST, &base, Some(&created)).await;
    let (again_status, again) = captain(&app, key, Method::POST, &base, Some(&created)).await;

    // Assert
    assert_eq!(created_status, 201, "{conversation}");
    assert_eq!(again_status, 200);
    let id = conversation["id"].as_str().unwrap().to_string();
    assert_eq!(again["id"], id.as_str());

    // Act: list with the documented filters, find, get
    let contact = conversation["contact_id"].as_str().unwrap();
    let (_, listed) =
        captain(&app, key, Method::GET, &format!("{base}?contactId={contact}&channelId=channel_def456"), None).await;
    let (_, elsewhere) = captain(&app, key, Method::GET, &format!("{base}?channelId=another"), None).await;
    let (find_status, found) =
        captain(&app, key, Method::GET, &format!("{base}/find?channelId=channel_def456&providerId=49123456789"), None)
            .await;
    let (get_status, got) = captain(&app, key, Method::GET, &format!("{base}/{id}"), None).await;

    // Assert
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert_eq!(elsewhere["items"], json!([]));
    assert_eq!(find_status, 200);
    assert_eq!(found["id"], id.as_str());
    assert_eq!(get_status, 200);
    assert_eq!(got["provider_id"], "49123456789");

    // Act: update, delete
    let (patch_status, patched) =
        captain(&app, key, Method::PATCH, &format!("{base}/{id}"), Some(&json!({ "metadata": { "crm": "42" } }))).await;
    let (delete_status, deleted) = captain(&app, key, Method::DELETE, &format!("{base}/{id}"), None).await;
    let (gone_status, gone) = captain(&app, key, Method::GET, &format!("{base}/{id}"), None).await;

    // Assert
    assert_eq!(patch_status, 200);
    assert_eq!(patched["metadata"], json!({ "crm": "42" }));
    assert_eq!(delete_status, 200);
    assert_eq!(deleted, json!({ "deleted": true }));
    assert_failure(gone_status, &gone, 404);
}

#[tokio::test]
async fn find_without_the_required_ids_or_for_an_unknown_pair_answers_an_error() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let base = format!("/v1/chatbots/{bot}/conversations/find");

    // Act
    let (missing_status, missing) = captain(&app, &app.admin_key, Method::GET, &base, None).await;
    let (unknown_status, unknown) =
        captain(&app, &app.admin_key, Method::GET, &format!("{base}?channelId=c&providerId=p"), None).await;

    // Assert
    assert_failure(missing_status, &missing, 400);
    assert_failure(unknown_status, &unknown, 404);
}

#[tokio::test]
async fn the_documented_user_seen_event_marks_the_conversation_seen() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let id = start(&app, &bot, "49123456789").await;
    let event = json!({
        "chatbotId": bot, "channelId": "channel_def456", "channelName": "WhatsApp Business",
        "providerId": "49123456789", "event": "user_seen_message", "callee": "+4930123456", "async": false,
    });

    // Act
    let (status, value) =
        captain(&app, &app.admin_key, Method::POST, &format!("/v1/chatbots/{bot}/conversations/event"), Some(&event))
            .await;

    // Assert
    assert_eq!(status, 200, "{value}");
    let (_, conversation) =
        captain(&app, &app.admin_key, Method::GET, &format!("/v1/chatbots/{bot}/conversations/{id}"), None).await;
    assert!(conversation["last_seen_at"].is_string(), "{conversation}");
}

/// A flow triggered by `event:order_completed` asking one question stored as `answer`.
async fn order_flow(app: &TestApp, bot: &str) -> Value {
    let flow = json!({
        "name": "Order completed",
        "trigger_keywords": ["event:order_completed"],
        "initial_message": "Thanks for your order {{orderId}}!",
        "completion_message": "Done.",
        "steps": [{ "step_name": "ask", "step_order": 1, "message": "Rate it?", "message_type": "text",
                    "input_type": "text", "store_as": "answer" }],
    });
    let (status, value) =
        captain(app, &app.admin_key, Method::POST, &format!("/v1/chatbots/{bot}/flows"), Some(&flow)).await;
    assert_eq!(status, 201, "create flow answered {value}");
    value
}

#[tokio::test]
async fn the_documented_custom_event_starts_the_flow_it_triggers() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    order_flow(&app, &bot).await;
    let id = start(&app, &bot, "49123456789").await;
    let custom = json!({ "chatbotId": bot, "conversationId": id, "event": "order_completed" });

    // Act
    let (status, value) = captain(
        &app,
        &app.admin_key,
        Method::POST,
        &format!("/v1/chatbots/{bot}/conversations/custom-event"),
        Some(&custom),
    )
    .await;

    // Assert
    assert_eq!(status, 200, "{value}");
    let texts: Vec<&str> = value["replies"].as_array().unwrap().iter().map(|r| r["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["Thanks for your order !", "Rate it?"]);
}

#[tokio::test]
async fn the_documented_step_payload_with_a_json_string_payload_enters_the_flow() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let flow = order_flow(&app, &bot).await;
    let id = start(&app, &bot, "49123456789").await;
    let payload = json!({
        "chatbotId": bot, "conversationId": id, "flowId": flow["id"], "stepId": "ask",
        "eventPayload": "{\"orderId\": \"12345\"}", "async": false, "isDebug": false,
    });

    // Act
    let (status, value) = captain(
        &app,
        &app.admin_key,
        Method::POST,
        &format!("/v1/chatbots/{bot}/conversations/payload"),
        Some(&payload),
    )
    .await;

    // Assert
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["replies"].as_array().unwrap().last().unwrap()["text"], "Rate it?");
    let (_, conversation) = captain(&app, &app.admin_key, Method::GET, &format!("/v1/conversations/{id}"), None).await;
    assert_eq!(conversation["session"]["variables"]["orderId"], "12345");
}

#[tokio::test]
async fn a_key_with_the_seed_permissions_may_list_but_not_create_without_them() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let lister = app.key_with_scopes(&["chatbots.conversations.list", "chatbots.conversations.get"]);
    let base = format!("/v1/chatbots/{bot}/conversations");

    // Act
    let (list_status, _) = captain(&app, &lister, Method::GET, &base, None).await;
    let created = json!({ "channelId": "c", "channelName": "WhatsApp Business", "providerId": "p" });
    let (create_status, refused) = captain(&app, &lister, Method::POST, &base, Some(&created)).await;
    let (handle_status, not_handled) =
        captain(&app, &lister, Method::POST, &format!("{base}/handle"), Some(&handle_body(&bot, "p", "hi", false)))
            .await;

    // Assert
    assert_eq!(list_status, 200);
    assert_failure(create_status, &refused, 403);
    assert_failure(handle_status, &not_handled, 403);
}

#[tokio::test]
async fn missing_or_wrong_keys_and_unknown_chatbots_answer_an_error() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let base = format!("/v1/chatbots/{bot}/conversations");

    // Act
    let response = app.client.get(app.url(&base)).send().await.expect("request");
    let missing_status = response.status().as_u16();
    let missing = body(response).await;
    let (wrong_status, wrong) = captain(&app, "bt_not-a-real-key", Method::GET, &base, None).await;
    let unknown_bot = format!("/v1/chatbots/{}/conversations", uuid::Uuid::new_v4());
    let (unknown_status, unknown) = captain(&app, &app.admin_key, Method::GET, &unknown_bot, None).await;

    // Assert
    assert_failure(missing_status, &missing, 401);
    assert_failure(wrong_status, &wrong, 401);
    assert_failure(unknown_status, &unknown, 404);
}
