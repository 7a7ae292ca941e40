//! Conversation routes: listing and lookup under a chatbot, and every per-conversation route
//! on both the nested `/v1/chatbots/{bot}/conversations/{id}` and flat `/v1/conversations/{id}` paths,
//! plus what survives passivation and a restart.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_error, body, call, spawn_app, spawn_app_on, spawn_app_with, tick, TestApp};

const GREETING: &str = "Hello! Welcome. How can I help you?";
const FALLBACK: &str = "Sorry, I didn't understand that. Please try again.";

/// Both paths of one conversation: nested under its chatbot, and flat.
fn prefixes(bot: &str, conversation: &str) -> [String; 2] {
    [format!("/v1/chatbots/{bot}/conversations/{conversation}"), format!("/v1/conversations/{conversation}")]
}

/// GETs `path` with the admin key; returns status and JSON body.
async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.get(path, &app.admin_key).await;
    let status = response.status().as_u16();
    (status, body(response).await)
}

/// GETs `path`, asserting 200.
async fn get_ok(app: &TestApp, path: &str) -> Value {
    let (status, value) = get(app, path).await;
    assert_eq!(status, 200, "GET {path} answered {value}");
    value
}

/// Handles a text message from `provider_id` on `channel_id`; asserts 200.
async fn handle_on(app: &TestApp, bot: &str, channel_id: &str, provider_id: &str, text: &str) -> Value {
    let payload =
        json!({ "channelId": channel_id, "providerId": provider_id, "message": { "type": "text", "text": text } });
    let (status, value) = call(app, Method::POST, &format!("/v1/chatbots/{bot}/conversations/handle"), &payload).await;
    assert_eq!(status, 200, "handle answered {value}");
    value
}

/// Starts a conversation with one message from `provider_id` and returns its id.
async fn start_conversation(app: &TestApp, bot: &str, provider_id: &str) -> String {
    id_of(&app.handle_ok(&app.admin_key, bot, provider_id, "hi").await, "conversation_id")
}

async fn put_settings(app: &TestApp, bot: &str, settings: &Value) {
    let (status, value) = call(app, Method::PUT, &format!("/v1/chatbots/{bot}/settings"), settings).await;
    assert_eq!(status, 200, "put settings answered {value}");
}

fn id_of(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or_else(|| panic!("no {field} in {value}")).to_string()
}

fn ids(items: &Value) -> Vec<String> {
    items["items"].as_array().expect("items").iter().map(|c| id_of(c, "id")).collect()
}

fn seqs(messages: &Value) -> Vec<u64> {
    messages["items"].as_array().expect("items").iter().map(|m| m["seq"].as_u64().expect("seq")).collect()
}

#[tokio::test]
async fn conversations_are_listed_newest_first_and_filtered() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let a = handle_on(&app, &bot, "wa-main", "p-1", "hi").await;
    tick().await;
    let b = handle_on(&app, &bot, "wa-main", "p-2", "hi").await;
    tick().await;
    let c = handle_on(&app, &bot, "tg-main", "p-1", "hi").await;
    let (a, b, c, contact_1) = (
        id_of(&a, "conversation_id"),
        id_of(&b, "conversation_id"),
        id_of(&c, "conversation_id"),
        id_of(&a, "contact_id"),
    );
    let (a, b, c) = (a.as_str(), b.as_str(), c.as_str());
    let (status, _) =
        call(&app, Method::POST, &format!("/v1/conversations/{b}/bot-control"), &json!({ "action": "pause" })).await;
    assert_eq!(status, 200);
    let (status, _) =
        call(&app, Method::PUT, &format!("/v1/conversations/{c}/status"), &json!({ "status": "completed" })).await;
    assert_eq!(status, 200);
    let list = |query: &str| format!("/v1/chatbots/{bot}/conversations{query}");

    // Act + Assert
    assert_eq!(ids(&get_ok(&app, &list("")).await), [c, b, a]);
    assert_eq!(ids(&get_ok(&app, &list("?channelId=tg-main")).await), [c]);
    assert_eq!(ids(&get_ok(&app, &list("?channelId=wa-main")).await), [b, a]);
    assert_eq!(ids(&get_ok(&app, &list(&format!("?contactId={contact_1}"))).await), [c, a]);
    assert_eq!(ids(&get_ok(&app, &list("?status=completed")).await), [c]);
    assert_eq!(ids(&get_ok(&app, &list("?status=active")).await), [b, a]);
    assert_eq!(ids(&get_ok(&app, &list("?bot_active=false")).await), [b]);
    assert_eq!(ids(&get_ok(&app, &list("?bot_active=true&channelId=wa-main")).await), [a]);
    assert!(ids(&get_ok(&app, &list("?channelId=nowhere")).await).is_empty());

    let (status, value) = get(&app, &list("?status=open")).await;
    assert_eq!((status, &value["field"]), (400, &json!("status")), "{value}");
    let (status, value) = get(&app, &list("?contactId=not-a-uuid")).await;
    assert_eq!((status, &value["field"]), (400, &json!("contactId")), "{value}");
}

#[tokio::test]
async fn cursor_paging_visits_every_conversation_exactly_once() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(start_conversation(&app, &bot, &format!("p-{i}")).await);
        tick().await;
    }
    created.reverse();

    // Act
    let mut visited = Vec::new();
    let mut page_sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".to_string(),
        };
        let page = get_ok(&app, &format!("/v1/chatbots/{bot}/conversations{query}")).await;
        let page_ids = ids(&page);
        page_sizes.push(page_ids.len());
        visited.extend(page_ids);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => {
                assert!(page["next_cursor"].is_null(), "next_cursor is a string or null: {page}");
                break;
            }
        }
        assert!(page_sizes.len() <= 5, "paging does not end");
    }

    // Assert
    assert_eq!(visited, created, "each once, newest first");
    assert_eq!(page_sizes, [2, 2, 1]);
}

#[tokio::test]
async fn a_bad_list_limit_or_cursor_answers_400() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    start_conversation(&app, &bot, "p-1").await;

    // Act + Assert
    for limit in ["0", "500", "x", "-1"] {
        let response = app.get(&format!("/v1/chatbots/{bot}/conversations?limit={limit}"), &app.admin_key).await;
        let value = assert_error(response, 400, "limit").await;
        assert_eq!(value["field"], "limit");
    }
    for cursor in ["garbage", "123_not-a-uuid", "x_6f1c0c47-7c57-4d2b-9b47-0d6a4e7b3c21"] {
        let response = app.get(&format!("/v1/chatbots/{bot}/conversations?cursor={cursor}"), &app.admin_key).await;
        let value = assert_error(response, 400, "cursor").await;
        assert_eq!(value["field"], "cursor");
    }
    let response = app.get(&format!("/v1/chatbots/{bot}/conversations?limit=200"), &app.admin_key).await;
    assert_eq!(response.status(), 200, "200 is the largest page");
}

#[tokio::test]
async fn creating_a_conversation_is_idempotent_and_it_can_be_found() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let collection = format!("/v1/chatbots/{bot}/conversations");
    let payload = json!({
        "channelId": "wa-main",
        "channelName": "WhatsApp",
        "providerId": "5511999990001",
        "contact": { "first_name": "Ana", "last_name": "Silva", "phones": ["5511999990001"], "emails": [] },
    });

    // Act
    let (created_status, created) = call(&app, Method::POST, &collection, &payload).await;
    let (again_status, again) = call(&app, Method::POST, &collection, &payload).await;
    let found = get_ok(&app, &format!("{collection}/find?channelId=wa-main&providerId=5511999990001")).await;
    let (unknown_status, unknown) = get(&app, &format!("{collection}/find?channelId=wa-main&providerId=nobody")).await;
    let (no_provider_status, no_provider) = get(&app, &format!("{collection}/find?channelId=wa-main")).await;

    // Assert
    assert_eq!(created_status, 201, "{created}");
    assert_eq!(again_status, 200, "{again}");
    assert_eq!(again["id"], created["id"]);
    assert_eq!(created["chatbot_id"], json!(bot));
    assert_eq!(created["channel_id"], "wa-main");
    assert_eq!(created["channel_name"], "WhatsApp");
    assert_eq!(created["provider_id"], "5511999990001");
    assert_eq!(created["status"], "active");
    assert_eq!(created["bot_active"], true);
    assert_eq!(created["message_count"], 0);
    assert!(created["contact_id"].is_string());
    assert_eq!(found["id"], created["id"]);
    assert_eq!(unknown_status, 404, "{unknown}");
    assert_eq!(no_provider_status, 400, "{no_provider}");
    assert_eq!(no_provider["field"], "providerId");

    // The first message into an opened conversation is still its first: greeted at seq 1.
    let handled = handle_on(&app, &bot, "wa-main", "5511999990001", "hi").await;
    assert_eq!(handled["conversation_id"], created["id"]);
    assert_eq!(handled["contact_id"], created["contact_id"]);
    assert_eq!(handled["replies"][0]["text"], GREETING);
    assert_eq!(seqs(&get_ok(&app, &format!("/v1/conversations/{}/messages", id_of(&created, "id"))).await), [1, 2]);
}

#[tokio::test]
async fn a_conversation_is_read_and_patched_on_both_paths() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    for i in 0..2 {
        // Arrange
        let id = start_conversation(&app, &bot, &format!("p-{i}")).await;
        let path = prefixes(&bot, &id)[i].clone();

        // Act
        let read = get_ok(&app, &path).await;
        let (status, first) = call(
            &app,
            Method::PATCH,
            &path,
            &json!({ "status": "escalated", "variables": { "name": "Ana", "plan": "basic" } }),
        )
        .await;
        assert_eq!(status, 200, "{first}");
        let (status, second) = call(
            &app,
            Method::PATCH,
            &path,
            &json!({ "variables": { "plan": "pro", "order": 42 }, "metadata": { "crm_id": "c-1" } }),
        )
        .await;
        assert_eq!(status, 200, "{second}");

        // Assert
        assert_eq!(read["id"], json!(id));
        for field in [
            "chatbot_id",
            "channel_id",
            "channel_name",
            "contact_id",
            "provider_id",
            "status",
            "bot_active",
            "created_at",
            "updated_at",
        ] {
            assert!(!read[field].is_null(), "{field} in {read}");
        }
        assert_eq!(read["message_count"], 2);
        assert_eq!(first["status"], "escalated");
        let stored = get_ok(&app, &path).await;
        assert_eq!(stored["status"], "escalated", "a PATCH without status keeps it");
        assert_eq!(stored["variables"], json!({ "name": "Ana", "plan": "pro", "order": 42 }), "variables are merged");
        assert_eq!(stored["metadata"], json!({ "crm_id": "c-1" }));
        assert_eq!(stored, second, "the PATCH answers the stored conversation");
    }
}

#[tokio::test]
async fn a_bad_patch_answers_400_and_changes_nothing() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    for i in 0..2 {
        // Arrange
        let id = start_conversation(&app, &bot, &format!("p-{i}")).await;
        let path = prefixes(&bot, &id)[i].clone();
        let (status, _) = call(&app, Method::PATCH, &path, &json!({ "variables": { "name": "Ana" } })).await;
        assert_eq!(status, 200);
        let before = get_ok(&app, &path).await;

        // Act
        let unknown = app
            .send_json(Method::PATCH, &path, &app.admin_key, &json!({ "status": "completed", "colour": "red" }))
            .await;
        let bad_metadata = app.send_json(Method::PATCH, &path, &app.admin_key, &json!({ "metadata": "str" })).await;
        let bad_status = app
            .send_json(Method::PATCH, &path, &app.admin_key, &json!({ "status": "open", "variables": { "x": 1 } }))
            .await;

        // Assert
        let value = assert_error(unknown, 400, "colour").await;
        assert_eq!(value["field"], "colour");
        let value = assert_error(bad_metadata, 400, "metadata").await;
        assert_eq!(value["field"], "metadata");
        let value = assert_error(bad_status, 400, "status").await;
        assert_eq!(value["field"], "status");
        assert_eq!(get_ok(&app, &path).await, before, "nothing changed");
    }
}

#[tokio::test]
async fn the_status_is_set_with_put_and_an_invalid_one_is_refused() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    for i in 0..2 {
        // Arrange
        let id = start_conversation(&app, &bot, &format!("p-{i}")).await;
        let path = prefixes(&bot, &id)[i].clone();

        // Act
        let (status, completed) =
            call(&app, Method::PUT, &format!("{path}/status"), &json!({ "status": "completed" })).await;
        let invalid =
            app.send_json(Method::PUT, &format!("{path}/status"), &app.admin_key, &json!({ "status": "closed" })).await;
        let missing = app.send_json(Method::PUT, &format!("{path}/status"), &app.admin_key, &json!({})).await;

        // Assert
        assert_eq!(status, 200, "{completed}");
        assert_eq!(completed["status"], "completed");
        assert_eq!(completed["id"], json!(id));
        let value = assert_error(invalid, 400, "status").await;
        assert_eq!(value["field"], "status");
        let value = assert_error(missing, 400, "status").await;
        assert_eq!(value["field"], "status");
        assert_eq!(get_ok(&app, &path).await["status"], "completed");
    }
}

#[tokio::test]
async fn autoreply_off_silences_the_bot_and_on_brings_it_back() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    for i in 0..2 {
        // Arrange
        let provider = format!("p-{i}");
        let id = start_conversation(&app, &bot, &provider).await;
        let path = prefixes(&bot, &id)[i].clone();

        // Act
        let (status, off) = call(&app, Method::POST, &format!("{path}/autoreply"), &json!({ "enabled": false })).await;
        let while_off = app.handle_ok(&app.admin_key, &bot, &provider, "hello?").await;
        let (on_status, on) = call(&app, Method::POST, &format!("{path}/autoreply"), &json!({ "enabled": true })).await;
        let while_on = app.handle_ok(&app.admin_key, &bot, &provider, "hello again").await;

        // Assert
        assert_eq!(status, 200, "{off}");
        assert_eq!(off["bot_active"], false);
        assert_eq!(off["ai_autoreply_enabled"], false);
        assert_eq!(off["id"], json!(id));
        assert_eq!(while_off["replies"], json!([]));
        assert_eq!(on_status, 200, "{on}");
        assert_eq!((&on["bot_active"], &on["ai_autoreply_enabled"]), (&json!(true), &json!(true)));
        assert_eq!(while_on["replies"][0]["text"], FALLBACK);
    }
}

#[tokio::test]
async fn bot_control_pauses_and_resumes_with_the_documented_shape() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    for i in 0..2 {
        // Arrange
        let provider = format!("p-{i}");
        let id = start_conversation(&app, &bot, &provider).await;
        let control = format!("{}/bot-control", prefixes(&bot, &id)[i]);

        // Act
        let (pause_status, paused) =
            call(&app, Method::POST, &control, &json!({ "action": "pause", "agent_id": "agent-7" })).await;
        let stored_paused = get_ok(&app, &prefixes(&bot, &id)[i]).await;
        let while_paused = app.handle_ok(&app.admin_key, &bot, &provider, "hello?").await;
        let (resume_status, resumed) = call(&app, Method::POST, &control, &json!({ "action": "resume" })).await;
        let after_resume = app.handle_ok(&app.admin_key, &bot, &provider, "hello again").await;

        // Assert
        assert_eq!(pause_status, 200, "{paused}");
        assert_eq!(paused, json!({ "success": true, "conversation_id": id, "bot_active": false, "action": "pause" }));
        assert_eq!(stored_paused["bot_active"], false);
        assert_eq!(while_paused["replies"], json!([]));
        assert_eq!(resume_status, 200, "{resumed}");
        assert_eq!(resumed, json!({ "success": true, "conversation_id": id, "bot_active": true, "action": "resume" }));
        assert_eq!(after_resume["replies"][0]["text"], FALLBACK);
    }
}

#[tokio::test]
async fn bad_bot_control_requests_are_refused() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let id = start_conversation(&app, &bot, "p-1").await;
    let unknown = uuid::Uuid::new_v4().to_string();

    for i in 0..2 {
        let control = format!("{}/bot-control", prefixes(&bot, &id)[i]);

        // Act + Assert
        let missing = app.post(&control, &app.admin_key, &json!({})).await;
        let value = assert_error(missing, 400, "action is required").await;
        assert_eq!(value["field"], "action");
        let stop = app.post(&control, &app.admin_key, &json!({ "action": "stop" })).await;
        let value = assert_error(stop, 400, "pause").await;
        assert!(value["error"].as_str().unwrap().contains("resume"), "{value}");
        for other in [&unknown, &"not-a-uuid".to_string()] {
            let path = format!("{}/bot-control", prefixes(&bot, other)[i]);
            let response = app.post(&path, &app.admin_key, &json!({ "action": "pause" })).await;
            assert_error(response, 404, "not found").await;
        }
    }
    assert_eq!(get_ok(&app, &format!("/v1/conversations/{id}")).await["bot_active"], true, "nothing changed");
}

#[tokio::test]
async fn a_conversation_is_not_reachable_through_another_chatbot_or_tenant() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let other_bot = app.create_chatbot(&app.admin_key, "Sales").await;
    let id = start_conversation(&app, &bot, "p-1").await;
    let stranger = app.key_for_new_tenant(&["admin"]);

    // Act
    let under_other_bot = get(&app, &format!("/v1/chatbots/{other_bot}/conversations/{id}")).await;
    let foreign = app.get(&format!("/v1/conversations/{id}"), &stranger).await;
    let foreign_pause =
        app.post(&format!("/v1/conversations/{id}/bot-control"), &stranger, &json!({ "action": "pause" })).await;

    // Assert
    assert_eq!(under_other_bot.0, 404, "{}", under_other_bot.1);
    assert_error(foreign, 404, "not found").await;
    assert_error(foreign_pause, 404, "not found").await;
    assert_eq!(get_ok(&app, &format!("/v1/conversations/{id}")).await["bot_active"], true);
}

#[tokio::test]
async fn an_agent_message_is_stored_and_pauses_the_bot() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    for i in 0..2 {
        // Arrange
        let provider = format!("p-{i}");
        let id = start_conversation(&app, &bot, &provider).await;
        let path = prefixes(&bot, &id)[i].clone();

        // Act
        let (status, posted) = call(
            &app,
            Method::POST,
            &format!("{path}/messages"),
            &json!({ "content": "Hi, I'm Maria.", "agent_id": "agent-7" }),
        )
        .await;
        let conversation = get_ok(&app, &path).await;
        let next = app.handle_ok(&app.admin_key, &bot, &provider, "thanks").await;

        // Assert
        assert_eq!(status, 201, "{posted}");
        assert_eq!(posted["role"], "agent");
        assert_eq!(posted["agent_id"], "agent-7");
        assert_eq!(posted["content"], "Hi, I'm Maria.");
        assert_eq!(posted["seq"], 3);
        assert_eq!(posted["conversation_id"], json!(id));
        assert_eq!(conversation["bot_active"], false);
        assert_eq!(next["replies"], json!([]));
        let messages = get_ok(&app, &format!("{path}/messages")).await;
        assert_eq!(seqs(&messages), [1, 2, 3, 4]);
        assert_eq!(messages["items"][2]["id"], posted["id"]);
    }
}

#[tokio::test]
async fn with_auto_pause_off_an_agent_message_keeps_the_bot_active() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    put_settings(&app, &bot, &json!({ "auto_pause_on_agent_message": false })).await;
    let id = start_conversation(&app, &bot, "p-1").await;

    // Act
    let (status, posted) =
        call(&app, Method::POST, &format!("/v1/conversations/{id}/messages"), &json!({ "content": "FYI" })).await;
    let next = app.handle_ok(&app.admin_key, &bot, "p-1", "ok").await;

    // Assert
    assert_eq!(status, 201, "{posted}");
    assert_eq!(posted["role"], "agent");
    assert_eq!(get_ok(&app, &format!("/v1/conversations/{id}")).await["bot_active"], true);
    assert_eq!(next["replies"][0]["text"], FALLBACK);
}

#[tokio::test]
async fn an_empty_agent_message_is_refused() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let id = start_conversation(&app, &bot, "p-1").await;

    for prefix in prefixes(&bot, &id) {
        // Act
        let empty = app.post(&format!("{prefix}/messages"), &app.admin_key, &json!({ "content": "  " })).await;
        let missing = app.post(&format!("{prefix}/messages"), &app.admin_key, &json!({ "agent_id": "a" })).await;

        // Assert
        let value = assert_error(empty, 400, "content").await;
        assert_eq!(value["field"], "content");
        let value = assert_error(missing, 400, "content").await;
        assert_eq!(value["field"], "content");
    }
    let conversation = get_ok(&app, &format!("/v1/conversations/{id}")).await;
    assert_eq!(conversation["message_count"], 2);
    assert_eq!(conversation["bot_active"], true);
}

#[tokio::test]
async fn messages_are_paged_with_after_seq_and_limit() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let id = start_conversation(&app, &bot, "p-1").await;
    for text in ["one", "two"] {
        app.handle_ok(&app.admin_key, &bot, "p-1", text).await;
    }

    for prefix in prefixes(&bot, &id) {
        // Act
        let all = get_ok(&app, &format!("{prefix}/messages")).await;
        let first = get_ok(&app, &format!("{prefix}/messages?limit=4")).await;
        let after = first["next_after_seq"].as_u64().expect("next_after_seq after a full page");
        let second = get_ok(&app, &format!("{prefix}/messages?after_seq={after}&limit=4")).await;
        let past_end = get_ok(&app, &format!("{prefix}/messages?after_seq=6")).await;
        let zero = app.get(&format!("{prefix}/messages?limit=0"), &app.admin_key).await;
        let negative = app.get(&format!("{prefix}/messages?after_seq=-1"), &app.admin_key).await;

        // Assert
        assert_eq!(seqs(&all), [1, 2, 3, 4, 5, 6]);
        assert!(all["next_after_seq"].is_null(), "{all}");
        assert_eq!(seqs(&first), [1, 2, 3, 4]);
        assert_eq!(after, 4);
        assert_eq!(seqs(&second), [5, 6]);
        assert!(second["next_after_seq"].is_null(), "{second}");
        assert!(seqs(&past_end).is_empty());
        let value = assert_error(zero, 400, "limit").await;
        assert_eq!(value["field"], "limit");
        let value = assert_error(negative, 400, "after_seq").await;
        assert_eq!(value["field"], "after_seq");
    }
}

#[tokio::test]
async fn a_deleted_conversation_is_gone_and_a_new_message_starts_afresh() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    for i in 0..2 {
        // Arrange
        let provider = format!("p-{i}");
        let id = start_conversation(&app, &bot, &provider).await;
        app.handle_ok(&app.admin_key, &bot, &provider, "more").await;
        let path = prefixes(&bot, &id)[i].clone();

        // Act
        let (status, deleted) = call(&app, Method::DELETE, &path, &json!({})).await;

        // Assert: gone
        assert_eq!(status, 200, "{deleted}");
        assert_eq!(deleted, json!({ "deleted": true }));
        for any_prefix in prefixes(&bot, &id) {
            assert_eq!(get(&app, &any_prefix).await.0, 404);
            assert_eq!(get(&app, &format!("{any_prefix}/messages")).await.0, 404);
        }
        let listed = ids(&get_ok(&app, &format!("/v1/chatbots/{bot}/conversations")).await);
        assert!(!listed.contains(&id), "deleted conversation still listed: {listed:?}");
        let (status, _) =
            get(&app, &format!("/v1/chatbots/{bot}/conversations/find?channelId=wa-main&providerId={provider}")).await;
        assert_eq!(status, 404);
        let (status, _) = call(&app, Method::DELETE, &path, &json!({})).await;
        assert_eq!(status, 404, "deleting twice");

        // Act: the same person writes again
        let fresh = app.handle_ok(&app.admin_key, &bot, &provider, "hi again").await;

        // Assert: a fresh conversation
        assert_eq!(fresh["replies"][0]["text"], GREETING);
        assert_eq!(fresh["bot_active"], true);
        let fresh_id = id_of(&fresh, "conversation_id");
        let messages = get_ok(&app, &format!("/v1/conversations/{fresh_id}/messages")).await;
        assert_eq!(seqs(&messages), [1, 2]);
        assert_eq!(messages["items"][0]["content"], "hi again");
        assert_eq!(get_ok(&app, &format!("/v1/conversations/{fresh_id}")).await["message_count"], 2);
    }
}

#[tokio::test]
async fn a_passivated_conversation_continues_where_it_left_off() {
    // Arrange
    let app = spawn_app_with(|s| s.actors.idle_passivate_secs = 1).await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let id = start_conversation(&app, &bot, "p-1").await;
    let (status, _) =
        call(&app, Method::PATCH, &format!("/v1/conversations/{id}"), &json!({ "variables": { "name": "Ana" } })).await;
    assert_eq!(status, 200);
    let (status, _) =
        call(&app, Method::POST, &format!("/v1/conversations/{id}/bot-control"), &json!({ "action": "pause" })).await;
    assert_eq!(status, 200);

    // Act: idle long enough for the actor to be passivated
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let while_paused = app.handle_ok(&app.admin_key, &bot, "p-1", "still there?").await;
    let (status, _) =
        call(&app, Method::POST, &format!("/v1/conversations/{id}/bot-control"), &json!({ "action": "resume" })).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let resumed = app.handle_ok(&app.admin_key, &bot, "p-1", "hello?").await;

    // Assert
    assert_eq!(while_paused["conversation_id"], json!(id));
    assert_eq!(while_paused["replies"], json!([]), "the paused state survives passivation");
    assert_eq!(resumed["replies"][0]["text"], FALLBACK, "not greeted again: the conversation continues");
    let messages = get_ok(&app, &format!("/v1/conversations/{id}/messages")).await;
    assert_eq!(seqs(&messages), [1, 2, 3, 4, 5]);
    let conversation = get_ok(&app, &format!("/v1/conversations/{id}")).await;
    assert_eq!(conversation["variables"], json!({ "name": "Ana" }));
    assert_eq!(conversation["message_count"], 5);
}

#[tokio::test]
async fn conversations_survive_a_restart() {
    // Arrange
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_app_on(dir.path().to_path_buf(), |_| {}).await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let paused = start_conversation(&app, &bot, "p-paused").await;
    let retried = app.handle(&app.admin_key, &bot, "p-paused", "more", Some("wamid-before-restart")).await;
    let answered = body(retried).await;
    let (status, _) =
        call(&app, Method::POST, &format!("/v1/conversations/{paused}/bot-control"), &json!({ "action": "pause" }))
            .await;
    assert_eq!(status, 200);
    let active = start_conversation(&app, &bot, "p-active").await;
    let (status, _) =
        call(&app, Method::PATCH, &format!("/v1/conversations/{active}"), &json!({ "variables": { "plan": "pro" } }))
            .await;
    assert_eq!(status, 200);
    let messages_before = get_ok(&app, &format!("/v1/conversations/{paused}/messages")).await;

    // Act
    app.stop();
    let app = spawn_app_on(dir.path().to_path_buf(), |_| {}).await;

    // Assert: everything is still there
    assert_eq!(get_ok(&app, &format!("/v1/conversations/{paused}/messages")).await, messages_before);
    let conversation = get_ok(&app, &format!("/v1/conversations/{paused}")).await;
    assert_eq!(conversation["bot_active"], false);
    assert_eq!(conversation["message_count"], 4);
    assert_eq!(get_ok(&app, &format!("/v1/conversations/{active}")).await["variables"], json!({ "plan": "pro" }));
    let listed: HashSet<String> =
        ids(&get_ok(&app, &format!("/v1/chatbots/{bot}/conversations")).await).into_iter().collect();
    assert_eq!(listed, HashSet::from([paused.clone(), active.clone()]));

    // Act + Assert: a provider retry of a message from before the restart is still a duplicate
    let retry = app.handle(&app.admin_key, &bot, "p-paused", "more", Some("wamid-before-restart")).await;
    let retry = body(retry).await;
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(retry["message_id"], answered["message_id"]);
    assert_eq!(retry["replies"], answered["replies"]);

    // Act + Assert: new messages continue at the next seq, with the state as it was
    let while_paused = app.handle_ok(&app.admin_key, &bot, "p-paused", "after restart").await;
    assert_eq!(while_paused["replies"], json!([]));
    assert_eq!(seqs(&get_ok(&app, &format!("/v1/conversations/{paused}/messages")).await), [1, 2, 3, 4, 5]);
    let continuing = app.handle_ok(&app.admin_key, &bot, "p-active", "after restart").await;
    assert_eq!(continuing["replies"][0]["text"], FALLBACK, "not greeted twice");
    assert_eq!(seqs(&get_ok(&app, &format!("/v1/conversations/{active}/messages")).await), [1, 2, 3, 4]);
}
