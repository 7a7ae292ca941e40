//! Ingestion through `POST /v1/chatbots/{bot}/conversations/handle`: what the bot answers,
//! what gets stored, duplicates, async mode, pausing, concurrency and bad input.

use std::collections::HashSet;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{assert_error, body, spawn_app, spawn_app_on, spawn_app_with, TestApp};

const GREETING: &str = "Hello! Welcome. How can I help you?";
const FALLBACK: &str = "Sorry, I didn't understand that. Please try again.";

fn handle_path(bot: &str) -> String {
    format!("/v1/chatbots/{bot}/conversations/handle")
}

/// A handle payload for a text message on channel `wa-main`.
fn text_payload(provider_id: &str, text: &str, message_id: &str) -> Value {
    json!({
        "channelId": "wa-main",
        "channelName": "WhatsApp",
        "providerId": provider_id,
        "message": { "id": message_id, "type": "text", "text": text },
    })
}

/// Posts `payload` to handle and returns the status with the JSON body.
async fn post_handle(app: &TestApp, bot: &str, payload: &Value) -> (u16, Value) {
    let response = app.post(&handle_path(bot), &app.admin_key, payload).await;
    let status = response.status().as_u16();
    (status, body(response).await)
}

/// Posts `payload` to handle, asserting 200.
async fn handle_payload(app: &TestApp, bot: &str, payload: &Value) -> Value {
    let (status, value) = post_handle(app, bot, payload).await;
    assert_eq!(status, 200, "handle answered {value}");
    value
}

/// Changes the chatbot's settings, asserting 200.
async fn put_settings(app: &TestApp, bot: &str, settings: &Value) {
    let response =
        app.send_json(reqwest::Method::PUT, &format!("/v1/chatbots/{bot}/settings"), &app.admin_key, settings).await;
    assert_eq!(response.status(), 200, "put settings: {}", body(response).await);
}

/// Every stored message of a conversation, in order.
async fn messages(app: &TestApp, conversation: &str) -> Vec<Value> {
    let response = app.get(&format!("/v1/conversations/{conversation}/messages?limit=1000"), &app.admin_key).await;
    assert_eq!(response.status(), 200, "get messages");
    body(response).await["items"].as_array().expect("items").clone()
}

/// The conversation as served.
async fn conversation(app: &TestApp, conversation: &str) -> Value {
    let response = app.get(&format!("/v1/conversations/{conversation}"), &app.admin_key).await;
    assert_eq!(response.status(), 200, "get conversation");
    body(response).await
}

/// The conversations of a chatbot.
async fn conversations(app: &TestApp, bot: &str) -> Vec<Value> {
    let response = app.get(&format!("/v1/chatbots/{bot}/conversations"), &app.admin_key).await;
    assert_eq!(response.status(), 200, "list conversations");
    body(response).await["items"].as_array().expect("items").clone()
}

fn reply_texts(handled: &Value) -> Vec<String> {
    handled["replies"]
        .as_array()
        .expect("replies")
        .iter()
        .map(|r| r["text"].as_str().expect("text").to_string())
        .collect()
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages.iter().map(|m| m["seq"].as_u64().expect("seq")).collect()
}

fn id_of(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or_else(|| panic!("no {field} in {value}")).to_string()
}

#[tokio::test]
async fn the_first_message_gets_the_greeting_and_later_ones_the_fallback() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;

    // Act
    let first = app.handle_ok(&app.admin_key, &bot, "5511999990001", "hi").await;
    let second = app.handle_ok(&app.admin_key, &bot, "5511999990001", "what?").await;
    let third = app.handle_ok(&app.admin_key, &bot, "5511999990001", "hi").await;

    // Assert
    assert_eq!(reply_texts(&first), [GREETING]);
    assert_eq!(first["replies"][0]["type"], "text");
    assert!(first["replies"][0].get("buttons").is_none_or(|b| b.as_array().is_some_and(|b| b.is_empty())));
    assert_eq!(reply_texts(&second), [FALLBACK]);
    assert_eq!(reply_texts(&third), [FALLBACK], "only a conversation's first message is greeted");
}

#[tokio::test]
async fn greeting_buttons_render_as_buttons_up_to_three_and_as_a_list_from_four() {
    // Arrange
    let app = spawn_app().await;
    let three = app.create_chatbot(&app.admin_key, "Three").await;
    let four = app.create_chatbot(&app.admin_key, "Four").await;
    let titles = ["Track Order", "Talk to Sales", "Opening Hours", "Returns"];
    let buttons = |n: usize| titles[..n].iter().map(|t| json!({ "title": t })).collect::<Vec<_>>();
    put_settings(&app, &three, &json!({ "greeting_buttons": buttons(3) })).await;
    put_settings(&app, &four, &json!({ "greeting_buttons": buttons(4) })).await;

    // Act
    let with_three = app.handle_ok(&app.admin_key, &three, "p-1", "hi").await;
    let with_four = app.handle_ok(&app.admin_key, &four, "p-1", "hi").await;

    // Assert
    let reply = &with_three["replies"][0];
    assert_eq!(reply["type"], "buttons");
    assert_eq!(reply["text"], GREETING);
    assert_eq!(
        reply["buttons"],
        json!([
            { "id": "track_order", "title": "Track Order" },
            { "id": "talk_to_sales", "title": "Talk to Sales" },
            { "id": "opening_hours", "title": "Opening Hours" },
        ])
    );
    let reply = &with_four["replies"][0];
    assert_eq!(reply["type"], "list");
    let buttons = reply["buttons"].as_array().expect("buttons");
    assert_eq!(buttons.len(), 4);
    assert_eq!(buttons[3], json!({ "id": "returns", "title": "Returns" }));

    let stored = messages(&app, &id_of(&with_four, "conversation_id")).await;
    assert_eq!(stored[1]["message_type"], "list");
    assert_eq!(stored[1]["buttons"].as_array().map(Vec::len), Some(4), "the reply's buttons are stored");
}

#[tokio::test]
async fn a_matching_rule_answers_the_first_message_instead_of_the_greeting() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    app.create_rule(
        &app.admin_key,
        &bot,
        &json!({ "keywords": ["hours"], "match_type": "contains", "response": "We are open 9 to 5." }),
    )
    .await;

    // Act
    let first = app.handle_ok(&app.admin_key, &bot, "p-1", "What are your hours?").await;

    // Assert
    assert_eq!(reply_texts(&first), ["We are open 9 to 5."]);
    assert_eq!(first["replies"][0]["type"], "text");
}

#[tokio::test]
async fn the_handle_response_and_the_stored_messages_describe_the_exchange() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;

    // Act
    let first = handle_payload(&app, &bot, &text_payload("5511999990001", "hi there", "wamid-1")).await;
    let second = handle_payload(&app, &bot, &text_payload("5511999990001", "anyone?", "wamid-2")).await;

    // Assert: the response
    for field in ["conversation_id", "contact_id", "message_id"] {
        assert!(first[field].is_string(), "{field} in {first}");
    }
    assert_eq!(first["bot_active"], true);
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["replies"].as_array().map(Vec::len), Some(1));
    assert!(first["replies"][0]["id"].is_string());
    assert_eq!(first["conversation_id"], second["conversation_id"]);
    assert_ne!(first["message_id"], second["message_id"]);

    // Assert: the stored messages
    let conversation_id = id_of(&first, "conversation_id");
    let stored = messages(&app, &conversation_id).await;
    assert_eq!(seqs(&stored), [1, 2, 3, 4]);
    let user = &stored[0];
    assert_eq!(user["role"], "user");
    assert_eq!(user["content"], "hi there");
    assert_eq!(user["message_type"], "text");
    assert_eq!(user["provider_message_id"], "wamid-1");
    assert_eq!(user["id"], first["message_id"]);
    assert_eq!(user["conversation_id"], json!(conversation_id));
    let reply = &stored[1];
    assert_eq!(reply["role"], "assistant");
    assert_eq!(reply["content"], GREETING);
    assert_eq!(reply["id"], first["replies"][0]["id"]);
    assert_eq!(stored[2]["provider_message_id"], "wamid-2");
    assert_eq!(stored[3]["content"], FALLBACK);

    let served = conversation(&app, &conversation_id).await;
    assert_eq!(served["message_count"], 4);
    assert_eq!(served["contact_id"], first["contact_id"]);
    assert_eq!(served["provider_id"], "5511999990001");
    assert_eq!(served["channel_id"], "wa-main");
    assert_eq!(served["channel_name"], "WhatsApp");
}

#[tokio::test]
async fn one_provider_id_is_one_contact_across_messages_and_channels() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let mut with_contact = text_payload("5511999990001", "hi", "m-1");
    with_contact["contact"] = json!({
        "first_name": "Ana",
        "last_name": "Silva",
        "phones": ["+55 11 99999-0001"],
        "emails": ["ana@example.com"],
    });

    // Act
    let first = handle_payload(&app, &bot, &with_contact).await;
    let again = handle_payload(&app, &bot, &text_payload("5511999990001", "hello?", "m-2")).await;
    let other_person = handle_payload(&app, &bot, &text_payload("5511999990002", "hi", "m-3")).await;
    let mut other_channel_payload = text_payload("5511999990001", "hi", "m-4");
    other_channel_payload["channelId"] = json!("tg-main");
    other_channel_payload["channelName"] = json!("Telegram");
    let other_channel = handle_payload(&app, &bot, &other_channel_payload).await;

    // Assert
    assert_eq!(again["contact_id"], first["contact_id"]);
    assert_ne!(other_person["contact_id"], first["contact_id"]);
    assert_ne!(other_person["conversation_id"], first["conversation_id"]);
    assert_ne!(other_channel["conversation_id"], first["conversation_id"]);
    assert_eq!(other_channel["contact_id"], first["contact_id"]);
    assert_eq!(reply_texts(&other_channel), [GREETING], "a new channel is a new conversation");

    let by_contact = app
        .get(&format!("/v1/chatbots/{bot}/conversations?contactId={}", id_of(&first, "contact_id")), &app.admin_key)
        .await;
    let items = body(by_contact).await["items"].as_array().expect("items").clone();
    let ids: HashSet<&str> = items.iter().map(|c| c["id"].as_str().expect("id")).collect();
    let expected: HashSet<&str> =
        [first["conversation_id"].as_str().unwrap(), other_channel["conversation_id"].as_str().unwrap()].into();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_retried_message_id_returns_the_first_answer_and_stores_nothing() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let first = handle_payload(&app, &bot, &text_payload("p-1", "hi", "wamid-1")).await;
    let conversation_id = id_of(&first, "conversation_id");

    // Act
    let retry = handle_payload(&app, &bot, &text_payload("p-1", "hi", "wamid-1")).await;
    let retry_other_text = handle_payload(&app, &bot, &text_payload("p-1", "something else", "wamid-1")).await;

    // Assert
    for duplicate in [&retry, &retry_other_text] {
        assert_eq!(duplicate["duplicate"], true);
        assert_eq!(duplicate["message_id"], first["message_id"]);
        assert_eq!(duplicate["conversation_id"], first["conversation_id"]);
        assert_eq!(duplicate["contact_id"], first["contact_id"]);
        assert_eq!(duplicate["replies"], first["replies"], "same reply ids and texts");
    }
    assert_eq!(messages(&app, &conversation_id).await.len(), 2);
    assert_eq!(conversation(&app, &conversation_id).await["message_count"], 2);

    // Act: a new provider message id is a new message
    let next = handle_payload(&app, &bot, &text_payload("p-1", "hi", "wamid-2")).await;

    // Assert
    assert_eq!(next["duplicate"], false);
    assert_ne!(next["message_id"], first["message_id"]);
    assert_eq!(reply_texts(&next), [FALLBACK]);
    assert_eq!(seqs(&messages(&app, &conversation_id).await), [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_retried_message_id_is_a_duplicate_however_many_turns_followed_also_after_a_restart() {
    // Arrange: more turns than a conversation's actor keeps provider ids of in memory (64),
    // agent messages among them, so the oldest answers have left its window.
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_app_on(dir.path().to_path_buf(), |_| {}).await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    put_settings(&app, &bot, &json!({ "auto_pause_on_agent_message": false })).await;
    let mut first_answers = Vec::new();
    for n in 0..80 {
        first_answers.push(handle_payload(&app, &bot, &text_payload("p-1", "hi", &format!("wamid-{n}"))).await);
        if n % 10 == 5 {
            let conversation_id = id_of(&first_answers[0], "conversation_id");
            let path = format!("/v1/conversations/{conversation_id}/messages");
            let posted = app.post(&path, &app.admin_key, &json!({ "content": "FYI" })).await;
            assert_eq!(posted.status(), 201, "agent message");
        }
    }
    let conversation_id = id_of(&first_answers[0], "conversation_id");
    let stored = messages(&app, &conversation_id).await.len();
    let assert_replayed = |retry: &Value, n: usize| {
        let first = &first_answers[n];
        assert_eq!(retry["duplicate"], true, "wamid-{n}: {retry}");
        assert_eq!(retry["message_id"], first["message_id"], "wamid-{n}");
        assert_eq!(retry["replies"], first["replies"], "wamid-{n}");
        assert_eq!(retry["bot_active"], first["bot_active"], "wamid-{n}");
    };

    // Act + Assert: old and recent ids, live
    for n in [0, 1, 6, 7, 40, 79] {
        let retry = handle_payload(&app, &bot, &text_payload("p-1", "hi", &format!("wamid-{n}"))).await;
        assert_replayed(&retry, n);
    }

    // Act + Assert: and after a restart, when the actor rebuilds what it remembers
    app.stop();
    let app = spawn_app_on(dir.path().to_path_buf(), |_| {}).await;
    for n in [0, 1, 6, 7, 16, 40, 78, 79] {
        let retry = handle_payload(&app, &bot, &text_payload("p-1", "hi", &format!("wamid-{n}"))).await;
        assert_replayed(&retry, n);
    }
    assert_eq!(messages(&app, &conversation_id).await.len(), stored, "retries store nothing");
    let next = handle_payload(&app, &bot, &text_payload("p-1", "hi", "wamid-new")).await;
    assert_eq!(next["duplicate"], false);
    assert_eq!(messages(&app, &conversation_id).await.len(), stored + 2);
}

#[tokio::test]
async fn a_retried_message_id_in_async_mode_is_a_duplicate_too() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let mut payload = text_payload("p-1", "hi", "wamid-async");
    payload["async"] = json!(true);
    let (status, first) = post_handle(&app, &bot, &payload).await;
    assert_eq!(status, 202, "{first}");

    // Act
    let (status, retry) = post_handle(&app, &bot, &payload).await;
    let sync_retry = handle_payload(&app, &bot, &text_payload("p-1", "hi", "wamid-async")).await;

    // Assert
    assert_eq!(status, 202, "{retry}");
    assert_eq!(retry["duplicate"], true);
    assert_eq!(retry["message_id"], first["message_id"]);
    assert_eq!(retry["conversation_id"], first["conversation_id"]);
    assert_eq!(sync_retry["duplicate"], true);
    assert_eq!(sync_retry["message_id"], first["message_id"]);
    assert_eq!(reply_texts(&sync_retry), [GREETING], "the first answer is replayed");
    assert_eq!(messages(&app, &id_of(&first, "conversation_id")).await.len(), 2);
}

#[tokio::test]
async fn an_async_message_is_accepted_with_202_and_its_exchange_is_stored() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let mut payload = text_payload("p-1", "hi", "wamid-1");
    payload["async"] = json!(true);

    // Act
    let (status, accepted) = post_handle(&app, &bot, &payload).await;

    // Assert
    assert_eq!(status, 202, "{accepted}");
    assert!(accepted["conversation_id"].is_string(), "{accepted}");
    assert!(accepted["message_id"].is_string(), "{accepted}");
    assert!(accepted.get("replies").is_none(), "replies go to the webhook, not the response: {accepted}");
    let stored = messages(&app, &id_of(&accepted, "conversation_id")).await;
    assert_eq!(seqs(&stored), [1, 2]);
    assert_eq!(stored[0]["role"], "user");
    assert_eq!(stored[0]["id"], accepted["message_id"]);
    assert_eq!(stored[1]["role"], "assistant");
    assert_eq!(stored[1]["content"], GREETING);
}

#[tokio::test]
async fn a_disabled_chatbot_stores_the_message_without_replying() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    put_settings(&app, &bot, &json!({ "chatbot_enabled": false })).await;

    // Act
    let handled = app.handle_ok(&app.admin_key, &bot, "p-1", "hi").await;

    // Assert
    assert_eq!(handled["replies"], json!([]));
    let stored = messages(&app, &id_of(&handled, "conversation_id")).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["role"], "user");
    assert_eq!(stored[0]["content"], "hi");
}

#[tokio::test]
async fn a_paused_conversation_gets_no_bot_reply_until_resumed() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let first = app.handle_ok(&app.admin_key, &bot, "p-1", "hi").await;
    let control = format!("/v1/conversations/{}/bot-control", id_of(&first, "conversation_id"));
    let paused = app.post(&control, &app.admin_key, &json!({ "action": "pause" })).await;
    assert_eq!(paused.status(), 200);

    // Act
    let while_paused = app.handle_ok(&app.admin_key, &bot, "p-1", "hello?").await;
    let resumed = app.post(&control, &app.admin_key, &json!({ "action": "resume" })).await;
    assert_eq!(resumed.status(), 200);
    let after_resume = app.handle_ok(&app.admin_key, &bot, "p-1", "hello again").await;

    // Assert
    assert_eq!(while_paused["replies"], json!([]));
    assert_eq!(while_paused["bot_active"], false);
    assert_eq!(reply_texts(&after_resume), [FALLBACK]);
    assert_eq!(after_resume["bot_active"], true);
    let roles: Vec<Value> =
        messages(&app, &id_of(&first, "conversation_id")).await.iter().map(|m| m["role"].clone()).collect();
    assert_eq!(roles, [json!("user"), json!("assistant"), json!("user"), json!("user"), json!("assistant")]);
}

#[tokio::test]
async fn a_transfer_keyword_hands_over_to_a_human_and_silences_the_bot() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    put_settings(
        &app,
        &bot,
        &json!({ "transfer_keywords": ["agent"], "transfer_message": "A human will take it from here." }),
    )
    .await;
    app.handle_ok(&app.admin_key, &bot, "p-1", "hi").await;

    // Act
    let transfer = app.handle_ok(&app.admin_key, &bot, "p-1", "I want to talk to an agent please").await;
    let afterwards = app.handle_ok(&app.admin_key, &bot, "p-1", "hello?").await;

    // Assert
    assert_eq!(reply_texts(&transfer), ["A human will take it from here."]);
    assert_eq!(transfer["bot_active"], false);
    assert_eq!(afterwards["replies"], json!([]));
    assert_eq!(conversation(&app, &id_of(&transfer, "conversation_id")).await["bot_active"], false);
}

#[tokio::test]
async fn a_message_from_the_business_is_stored_as_agent_and_pauses_the_bot() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    app.handle_ok(&app.admin_key, &bot, "p-1", "hi").await;
    let mut echo = text_payload("p-1", "Hi, this is Maria from the shop.", "wamid-echo");
    echo["message"]["from_me"] = json!(true);

    // Act
    let handled = handle_payload(&app, &bot, &echo).await;
    let next = app.handle_ok(&app.admin_key, &bot, "p-1", "thanks Maria").await;

    // Assert
    assert_eq!(handled["replies"], json!([]));
    assert_eq!(handled["bot_active"], false);
    assert_eq!(next["replies"], json!([]), "the bot stays quiet while a human answers");
    let stored = messages(&app, &id_of(&handled, "conversation_id")).await;
    assert_eq!(seqs(&stored), [1, 2, 3, 4]);
    assert_eq!(stored[2]["role"], "agent");
    assert_eq!(stored[2]["content"], "Hi, this is Maria from the shop.");
    assert_eq!(stored[3]["role"], "user");
}

#[tokio::test]
async fn with_auto_pause_off_a_message_from_the_business_keeps_the_bot_active() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    put_settings(&app, &bot, &json!({ "auto_pause_on_agent_message": false })).await;
    app.handle_ok(&app.admin_key, &bot, "p-1", "hi").await;
    let mut echo = text_payload("p-1", "A human note", "wamid-echo");
    echo["message"]["from_me"] = json!(true);

    // Act
    let handled = handle_payload(&app, &bot, &echo).await;
    let next = app.handle_ok(&app.admin_key, &bot, "p-1", "ok").await;

    // Assert
    assert_eq!(handled["replies"], json!([]), "the bot does not answer the business's own message");
    assert_eq!(handled["bot_active"], true);
    assert_eq!(reply_texts(&next), [FALLBACK]);
    let stored = messages(&app, &id_of(&handled, "conversation_id")).await;
    assert_eq!(stored[2]["role"], "agent");
}

#[tokio::test]
async fn fifty_concurrent_messages_to_one_conversation_get_contiguous_seqs() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let url = app.url(&handle_path(&bot));
    const N: usize = 50;

    // Act
    let tasks = (0..N).map(|i| {
        let client = app.client.clone();
        let url = url.clone();
        let key = app.admin_key.clone();
        tokio::spawn(async move {
            let payload = text_payload("5511999990001", &format!("message {i}"), &format!("wamid-{i}"));
            let response = client.post(url).header("X-API-Key", key).json(&payload).send().await.expect("request");
            (response.status().as_u16(), body(response).await)
        })
    });
    let results: Vec<(u16, Value)> = join_all(tasks).await.into_iter().map(|r| r.expect("task")).collect();

    // Assert
    for (status, value) in &results {
        assert_eq!(*status, 200, "{value}");
        assert_eq!(value["duplicate"], false);
    }
    let conversation_ids: HashSet<&str> = results.iter().map(|(_, v)| v["conversation_id"].as_str().unwrap()).collect();
    assert_eq!(conversation_ids.len(), 1, "one conversation");
    let conversation_id = conversation_ids.into_iter().next().unwrap().to_string();
    let greeted = results.iter().filter(|(_, v)| reply_texts(v) == [GREETING]).count();
    assert_eq!(greeted, 1, "exactly one message is the first");

    let stored = messages(&app, &conversation_id).await;
    assert_eq!(seqs(&stored), (1..=2 * N as u64).collect::<Vec<_>>(), "no gaps, no duplicates");
    let user_ids: Vec<&str> =
        stored.iter().filter(|m| m["role"] == "user").map(|m| m["provider_message_id"].as_str().unwrap()).collect();
    let unique: HashSet<String> = user_ids.iter().map(|id| id.to_string()).collect();
    let expected: HashSet<String> = (0..N).map(|i| format!("wamid-{i}")).collect();
    assert_eq!(user_ids.len(), N, "every user message stored once");
    assert_eq!(unique, expected);
    let stored_ids: HashSet<&str> = stored.iter().map(|m| m["id"].as_str().unwrap()).collect();
    for (_, value) in &results {
        assert!(stored_ids.contains(value["message_id"].as_str().unwrap()));
        assert!(stored_ids.contains(value["replies"][0]["id"].as_str().unwrap()));
    }
}

#[tokio::test]
async fn twenty_first_messages_to_different_conversations_all_succeed_concurrently() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;

    // Act
    let results =
        join_all(
            (0..20).map(|i| {
                let app = &app;
                let bot = &bot;
                async move {
                    post_handle(app, bot, &text_payload(&format!("55119999900{i:02}"), "hi", &format!("m-{i}"))).await
                }
            }),
        )
        .await;

    // Assert
    for (status, value) in &results {
        assert_eq!(*status, 200, "{value}");
        assert_eq!(reply_texts(value), [GREETING]);
    }
    let ids: HashSet<&str> = results.iter().map(|(_, v)| v["conversation_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 20);
    let listed = conversations(&app, &bot).await;
    assert_eq!(listed.len(), 20);
    assert!(listed.iter().all(|c| c["message_count"] == 2));
}

#[tokio::test]
async fn bad_handle_bodies_answer_400_naming_the_field_and_store_nothing() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let existing = handle_payload(&app, &bot, &text_payload("p-1", "hi", "m-1")).await;
    let conversation_id = id_of(&existing, "conversation_id");
    let message = |m: Value| json!({ "channelId": "wa-main", "providerId": "p-1", "message": m });
    let cases = [
        ("channelId", json!({ "providerId": "p-1", "message": { "text": "hi" } })),
        ("channelId", json!({ "channelId": "  ", "providerId": "p-2", "message": { "text": "hi" } })),
        ("providerId", json!({ "channelId": "wa-main", "providerId": "", "message": { "text": "hi" } })),
        ("providerId", json!({ "channelId": "wa-main", "message": { "text": "hi" } })),
        ("providerId", json!({ "channelId": "wa-main", "providerId": "x".repeat(257), "message": { "text": "hi" } })),
        ("message", json!({ "channelId": "wa-main", "providerId": "p-2" })),
        ("message.type", message(json!({ "type": "sticker", "text": "hi" }))),
        ("message.text", message(json!({ "type": "text" }))),
        ("message.text", message(json!({ "type": "text", "text": "   " }))),
        ("message.button_id", message(json!({ "type": "button" }))),
        ("message.id", message(json!({ "id": "", "type": "text", "text": "hi" }))),
        (
            "chatbotId",
            json!({ "chatbotId": uuid::Uuid::new_v4(), "channelId": "wa-main", "providerId": "p-1", "message": { "text": "hi" } }),
        ),
    ];

    // Act + Assert
    for (field, payload) in &cases {
        let (status, value) = post_handle(&app, &bot, payload).await;
        assert_eq!(status, 400, "{payload} answered {value}");
        assert_eq!(value["field"], json!(field), "{payload} answered {value}");
        assert_eq!(value["code"], "bad_request");
        assert!(value["error"].as_str().is_some_and(|e| e.contains(field)), "{value} should name {field}");
    }
    let malformed = app
        .request(reqwest::Method::POST, &handle_path(&bot), &app.admin_key)
        .header("Content-Type", "application/json")
        .body("{\"channelId\": ")
        .send()
        .await
        .expect("request");
    assert_error(malformed, 400, "malformed JSON").await;

    // Nothing was stored.
    let listed = conversations(&app, &bot).await;
    assert_eq!(listed.len(), 1, "no conversation created by bad input: {listed:?}");
    assert_eq!(messages(&app, &conversation_id).await.len(), 2);
}

#[tokio::test]
async fn the_chatbot_id_in_the_body_may_repeat_the_path() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let mut payload = text_payload("p-1", "hi", "m-1");
    payload["chatbotId"] = json!(bot);

    // Act
    let handled = handle_payload(&app, &bot, &payload).await;

    // Assert
    assert_eq!(reply_texts(&handled), [GREETING]);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused_with_415() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let payload = text_payload("p-1", "hi", "m-1").to_string();

    // Act
    let response = app
        .request(reqwest::Method::POST, &handle_path(&bot), &app.admin_key)
        .header("Content-Type", "text/plain")
        .body(payload)
        .send()
        .await
        .expect("request");

    // Assert
    assert_error(response, 415, "application/json").await;
    assert!(conversations(&app, &bot).await.is_empty());
}

#[tokio::test]
async fn a_body_over_the_handle_limit_is_refused_with_413() {
    // Arrange
    let app = spawn_app_with(|s| s.server.handle_body_limit_bytes = 1000).await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;

    // Act
    let (status, value) = post_handle(&app, &bot, &text_payload("p-1", &"a".repeat(2000), "m-1")).await;
    let (small_status, _) = post_handle(&app, &bot, &text_payload("p-1", "hi", "m-2")).await;

    // Assert
    assert_eq!(status, 413, "{value}");
    assert_eq!(value["code"], "payload_too_large");
    assert_eq!(small_status, 200, "a body under the limit is fine");
    assert_eq!(conversations(&app, &bot).await[0]["message_count"], 2, "the big message was not stored");
}

#[tokio::test]
async fn a_three_megabyte_text_is_accepted_under_the_default_handle_limit() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let text = "a".repeat(3 << 20);

    // Act
    let handled = handle_payload(&app, &bot, &text_payload("p-1", &text, "m-big")).await;

    // Assert
    let stored = messages(&app, &id_of(&handled, "conversation_id")).await;
    assert_eq!(stored[0]["content"].as_str().map(str::len), Some(3 << 20));
}

#[tokio::test]
async fn an_unknown_chatbot_answers_404() {
    // Arrange
    let app = spawn_app().await;
    let unknown = uuid::Uuid::new_v4().to_string();

    // Act
    let (status, value) = post_handle(&app, &unknown, &text_payload("p-1", "hi", "m-1")).await;

    // Assert
    assert_eq!(status, 404, "{value}");
    assert_eq!(value["code"], "not_found");
}

#[tokio::test]
async fn a_numeric_provider_id_is_accepted_as_a_string() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let payload = json!({ "channelId": "wa-main", "providerId": 5511999990001_u64, "message": { "text": "hi" } });

    // Act
    let numeric = handle_payload(&app, &bot, &payload).await;
    let textual = app.handle_ok(&app.admin_key, &bot, "5511999990001", "hi again").await;

    // Assert
    assert_eq!(numeric["conversation_id"], textual["conversation_id"], "the number and its string are one provider id");
    assert_eq!(conversation(&app, &id_of(&numeric, "conversation_id")).await["provider_id"], "5511999990001");
}

#[tokio::test]
async fn concurrent_retries_of_one_message_are_answered_once() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    app.handle_ok(&app.admin_key, &bot, "p-1", "hi").await;
    let retry = text_payload("p-1", "retry me", "wamid-retry");

    // Act
    let results = join_all((0..10).map(|_| post_handle(&app, &bot, &retry))).await;

    // Assert
    for (status, value) in &results {
        assert_eq!(*status, 200, "{value}");
    }
    let firsts = results.iter().filter(|(_, v)| v["duplicate"] == false).count();
    assert_eq!(firsts, 1, "exactly one delivery is processed");
    let message_ids: HashSet<&str> = results.iter().map(|(_, v)| v["message_id"].as_str().unwrap()).collect();
    assert_eq!(message_ids.len(), 1);
    assert!(results.iter().all(|(_, v)| v["replies"] == results[0].1["replies"]));
    assert_eq!(seqs(&messages(&app, &id_of(&results[0].1, "conversation_id")).await), [1, 2, 3, 4]);
}

#[tokio::test]
async fn button_replies_and_numeric_message_ids_are_accepted() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let button = json!({
        "channelId": "wa-main",
        "providerId": "p-1",
        "message": { "id": 987654321, "type": "button", "button_id": "track_order" },
    });

    // Act
    let handled = handle_payload(&app, &bot, &button).await;
    let retried = handle_payload(&app, &bot, &button).await;

    // Assert
    assert_eq!(retried["duplicate"], true, "987654321 and its retry are the same message");
    let stored = messages(&app, &id_of(&handled, "conversation_id")).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["message_type"], "button");
    assert_eq!(stored[0]["content"], "track_order");
    assert_eq!(stored[0]["provider_message_id"], "987654321");
}

#[tokio::test]
async fn ids_up_to_256_characters_are_accepted() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let long = "x".repeat(256);
    let mut payload = text_payload(&long, "hi", &long);
    payload["channelId"] = json!(long);

    // Act
    let handled = handle_payload(&app, &bot, &payload).await;

    // Assert
    let served = conversation(&app, &id_of(&handled, "conversation_id")).await;
    assert_eq!(served["provider_id"], json!(long));
    assert_eq!(served["channel_id"], json!(long));
}

#[tokio::test]
async fn another_tenants_chatbot_answers_404() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let stranger = app.key_for_new_tenant(&["messages:handle"]);

    // Act
    let response = app.handle(&stranger, &bot, "p-1", "hi", Some("m-1")).await;

    // Assert
    assert_error(response, 404, "not found").await;
    assert!(conversations(&app, &bot).await.is_empty());
}

#[tokio::test]
async fn a_conversation_whose_mailbox_is_full_answers_503_with_retry_after() {
    // Arrange: one request may wait per conversation, and the actor is kept busy by a flow
    // step calling a slow API (the actor holds its turn while the call runs).
    let slow = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "ok": true }))
                .set_delay(std::time::Duration::from_millis(1500)),
        )
        .mount(&slow)
        .await;
    let app = crate::helpers::spawn_app_with(|s| s.actors.mailbox_capacity = 1).await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let flow = serde_json::json!({
        "name": "Slow", "trigger_keywords": ["slow"],
        "steps": [{ "step_name": "call", "message": "done", "message_type": "api_fetch",
                    "api_config": { "url": format!("{}/x", slow.uri()), "timeout_ms": 5000 } }]
    });
    let created = app.post(&format!("/v1/chatbots/{bot}/flows"), &app.admin_key, &flow).await;
    assert_eq!(created.status(), 201);

    // Act: the first message occupies the actor; then a burst to the same conversation.
    let first = {
        let app_url = app.url(&format!("/v1/chatbots/{bot}/conversations/handle"));
        let (client, key) = (app.client.clone(), app.admin_key.clone());
        tokio::spawn(async move {
            let payload = serde_json::json!({ "channelId": "wa-main", "providerId": "busy", "message": { "type": "text", "text": "slow" } });
            client.post(app_url).header("X-API-Key", key).json(&payload).send().await.map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let texts: Vec<String> = (0..6).map(|i| format!("again {i}")).collect();
    let burst = texts.iter().map(|text| app.handle(&app.admin_key, &bot, "busy", text, None));
    let answers = futures_util::future::join_all(burst).await;

    // Assert: the mailbox bound turns the excess away at once, with Retry-After; nothing hangs.
    let mut refused = 0;
    for answer in answers {
        if answer.status() == 503 {
            refused += 1;
            assert!(answer.headers().get("retry-after").is_some(), "503 without Retry-After");
            let value = crate::helpers::body(answer).await;
            assert!(value["error"].as_str().is_some_and(|e| e.contains("overloaded")), "{value}");
        } else {
            assert_eq!(answer.status(), 200);
        }
    }
    assert!(refused >= 1, "a full mailbox must refuse some of the burst");
    assert_eq!(first.await.expect("task").expect("request"), 200);
}
