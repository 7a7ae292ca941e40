//! Fault isolation: a panic in one conversation's turn, a panic in an HTTP handler, a store
//! that fails its writes or its durability step. The request that met the fault fails (500 or
//! 503, with a request id); nothing of it is stored; everyone else carries on.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{body, spawn_app_with, TestApp};

/// The text that makes a turn panic in these tests (`testing.panic_on_text`).
const PANIC_TEXT: &str = "please panic now";
const GREETING: &str = "Hello! Welcome. How can I help you?";
const FALLBACK: &str = "Sorry, I didn't understand that. Please try again.";

/// A server whose conversations all run on one arbiter thread, with the panic trigger set.
async fn spawn_one_arbiter_app() -> TestApp {
    spawn_app_with(|settings| {
        settings.actors.arbiters = 1;
        settings.testing.panic_on_text = Some(PANIC_TEXT.into());
    })
    .await
}

/// Posts a text message with provider message id `message_id` and returns the response.
async fn post_text(app: &TestApp, bot: &str, provider: &str, text: &str, message_id: &str) -> reqwest::Response {
    app.handle(&app.admin_key, bot, provider, text, Some(message_id)).await
}

/// Posts a text message, asserting 200; the body.
async fn post_text_ok(app: &TestApp, bot: &str, provider: &str, text: &str, message_id: &str) -> Value {
    let response = post_text(app, bot, provider, text, message_id).await;
    let status = response.status();
    let value = body(response).await;
    assert_eq!(status, 200, "handle answered {value}");
    value
}

/// Every stored message of a conversation, in order.
async fn messages(app: &TestApp, conversation: &str) -> Vec<Value> {
    let response = app.get(&format!("/v1/conversations/{conversation}/messages?limit=1000"), &app.admin_key).await;
    assert_eq!(response.status(), 200, "get messages");
    body(response).await["items"].as_array().expect("items").clone()
}

/// The conversations of a chatbot.
async fn conversations(app: &TestApp, bot: &str) -> Vec<Value> {
    let response = app.get(&format!("/v1/chatbots/{bot}/conversations"), &app.admin_key).await;
    assert_eq!(response.status(), 200, "list conversations");
    body(response).await["items"].as_array().expect("items").clone()
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages.iter().map(|m| m["seq"].as_u64().expect("seq")).collect()
}

fn contents(messages: &[Value]) -> Vec<&str> {
    messages.iter().map(|m| m["content"].as_str().expect("content")).collect()
}

fn reply_texts(handled: &Value) -> Vec<&str> {
    handled["replies"].as_array().expect("replies").iter().map(|r| r["text"].as_str().expect("text")).collect()
}

fn id_of(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or_else(|| panic!("no {field} in {value}")).to_string()
}

/// Asserts a server error with API.md's shape plus a request id that matches the
/// `X-Request-Id` header; returns the body.
async fn assert_server_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let header = response
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on a {status}"))
        .to_str()
        .expect("ascii")
        .to_string();
    let value = body(response).await;
    assert_eq!(value["code"], code, "code in {value}");
    assert!(value["error"].as_str().is_some_and(|e| !e.is_empty()), "no error message in {value}");
    assert_eq!(value["request_id"], json!(header), "the body names the request id of the header");
    value
}

#[tokio::test]
async fn a_turn_that_panics_answers_500_with_a_request_id_and_stores_nothing_of_it() {
    // Arrange
    let app = spawn_one_arbiter_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let first = post_text_ok(&app, &bot, "p-victim", "hello", "m-1").await;
    let conversation = id_of(&first, "conversation_id");

    // Act
    let response = app
        .request(reqwest::Method::POST, &format!("/v1/chatbots/{bot}/conversations/handle"), &app.admin_key)
        .header("X-Request-Id", "trace-4711")
        .json(&json!({
            "channelId": "wa-main",
            "channelName": "WhatsApp",
            "providerId": "p-victim",
            "message": { "id": "m-boom", "type": "text", "text": PANIC_TEXT },
        }))
        .send()
        .await
        .expect("the connection survives the panic");

    // Assert
    let error = assert_server_error(response, 500, "internal").await;
    assert_eq!(error["request_id"], "trace-4711", "the client's own request id is kept");
    assert!(!error.to_string().contains("panic_on_text"), "the panic's message stays in the logs: {error}");
    let stored = messages(&app, &conversation).await;
    assert_eq!(seqs(&stored), [1, 2], "nothing of the panicking turn was stored");
    assert!(!contents(&stored).contains(&PANIC_TEXT));
}

#[tokio::test]
async fn after_a_panic_the_same_conversation_answers_its_next_message_from_its_stored_state() {
    // Arrange
    let app = spawn_one_arbiter_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let first = post_text_ok(&app, &bot, "p-victim", "hello", "m-1").await;
    let conversation = id_of(&first, "conversation_id");
    let boom = post_text(&app, &bot, "p-victim", PANIC_TEXT, "m-boom").await;
    assert_server_error(boom, 500, "internal").await;

    // Act: the next message, then a retry of the panicking message's id with a harmless text
    let next = post_text_ok(&app, &bot, "p-victim", "are you there?", "m-2").await;
    let retried = post_text_ok(&app, &bot, "p-victim", "sorry, typo", "m-boom").await;

    // Assert
    assert_eq!(next["duplicate"], false);
    assert_eq!(reply_texts(&next), [FALLBACK], "a later message, not a first one: state came back from the store");
    assert_eq!(retried["duplicate"], false, "the panicking message's id was never recorded");
    let stored = messages(&app, &conversation).await;
    assert_eq!(seqs(&stored), [1, 2, 3, 4, 5, 6], "contiguous, no gap where the panic was");
    assert_eq!(contents(&stored), ["hello", GREETING, "are you there?", FALLBACK, "sorry, typo", FALLBACK]);
}

#[tokio::test]
async fn a_panic_in_one_conversation_leaves_the_others_on_the_same_arbiter_untouched() {
    // Arrange: one arbiter thread, so every conversation shares it with the one that panics
    let app = spawn_one_arbiter_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let bystanders = ["p-1", "p-2", "p-3"];
    let mut before = Vec::new();
    for provider in bystanders {
        before.push(post_text_ok(&app, &bot, provider, "hello", &format!("{provider}-1")).await);
    }
    let victim = post_text_ok(&app, &bot, "p-victim", "hello", "v-1").await;

    // Act: the panic, with the bystanders' next messages in flight at the same moment
    let boom = post_text(&app, &bot, "p-victim", PANIC_TEXT, "v-boom");
    let ids: Vec<String> = bystanders.iter().map(|provider| format!("{provider}-2")).collect();
    let during = futures_util::future::join_all(
        bystanders.iter().zip(&ids).map(|(provider, id)| post_text(&app, &bot, provider, "still there?", id)),
    );
    let (boom, during) = tokio::join!(boom, during);
    let mut after = Vec::new();
    for provider in bystanders {
        after.push(post_text_ok(&app, &bot, provider, "and now?", &format!("{provider}-3")).await);
    }

    // Assert
    assert_server_error(boom, 500, "internal").await;
    for response in during {
        let status = response.status();
        let value = body(response).await;
        assert_eq!(status, 200, "a bystander's message during the panic: {value}");
        assert_eq!(reply_texts(&value), [FALLBACK]);
    }
    for (first, last) in before.iter().zip(&after) {
        assert_eq!(first["conversation_id"], last["conversation_id"]);
        let stored = messages(&app, &id_of(first, "conversation_id")).await;
        assert_eq!(seqs(&stored), [1, 2, 3, 4, 5, 6]);
        assert_eq!(contents(&stored), ["hello", GREETING, "still there?", FALLBACK, "and now?", FALLBACK]);
    }
    let stored = messages(&app, &id_of(&victim, "conversation_id")).await;
    assert_eq!(seqs(&stored), [1, 2]);
}

#[tokio::test]
async fn an_agent_reply_that_panics_changes_nothing_and_the_next_one_is_stored() {
    // Arrange
    let app = spawn_one_arbiter_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let first = post_text_ok(&app, &bot, "p-1", "hello", "m-1").await;
    let conversation = id_of(&first, "conversation_id");
    let path = format!("/v1/conversations/{conversation}/messages");

    // Act
    let boom = app.post(&path, &app.admin_key, &json!({ "content": PANIC_TEXT })).await;
    let bot_active_after_boom = body(app.get(&format!("/v1/conversations/{conversation}"), &app.admin_key).await).await;
    let next = app.post(&path, &app.admin_key, &json!({ "content": "I can help" })).await;

    // Assert
    assert_server_error(boom, 500, "internal").await;
    assert_eq!(bot_active_after_boom["bot_active"], true, "the panicking reply did not pause the bot");
    assert_eq!(next.status(), 201, "{}", body(next).await);
    let stored = messages(&app, &conversation).await;
    assert_eq!(seqs(&stored), [1, 2, 3]);
    assert_eq!(contents(&stored), ["hello", GREETING, "I can help"]);
}

#[tokio::test]
async fn every_response_carries_a_request_id_the_clients_own_when_it_is_sane() {
    // Arrange
    let app = spawn_one_arbiter_app().await;
    let get_with = |id: Option<&'static str>| {
        let mut request = app.client.get(app.url("/v1/chatbots")).header("X-API-Key", &app.admin_key);
        if let Some(id) = id {
            request = request.header("X-Request-Id", id);
        }
        request.send()
    };

    // Act
    let own = get_with(Some("client-req.42")).await.expect("request");
    let fresh = [get_with(None).await.expect("request"), get_with(None).await.expect("request")];
    let insane = get_with(Some("<script> and spaces")).await.expect("request");
    let not_found = app.get("/no/such/route", &app.admin_key).await;
    let unauthorized = app.client.get(app.url("/v1/chatbots")).send().await.expect("request");

    // Assert
    let id = |r: &reqwest::Response| {
        r.headers().get("x-request-id").map(|v| v.to_str().expect("ascii").to_string()).expect("X-Request-Id")
    };
    assert_eq!(own.status(), 200);
    assert_eq!(id(&own), "client-req.42");
    let generated: HashSet<String> = fresh.iter().map(id).collect();
    assert_eq!(generated.len(), 2, "each request gets its own id");
    assert!(generated.iter().all(|g| uuid::Uuid::parse_str(g).is_ok()), "generated ids are UUIDs: {generated:?}");
    assert_ne!(id(&insane), "<script> and spaces", "an id unsafe to repeat is replaced");
    assert!(uuid::Uuid::parse_str(&id(&insane)).is_ok());
    assert_eq!(not_found.status(), 404);
    assert!(not_found.headers().contains_key("x-request-id"));
    assert_eq!(unauthorized.status(), 401);
    assert!(unauthorized.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn a_failed_store_write_answers_503_and_the_same_request_succeeds_once_the_disk_is_back() {
    // Arrange
    let app = spawn_one_arbiter_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let first = post_text_ok(&app, &bot, "p-1", "hello", "m-1").await;
    let conversation = id_of(&first, "conversation_id");

    // Act
    app.store.faults().fail_all_writes();
    let failed = post_text(&app, &bot, "p-1", "my order?", "m-2").await;
    let retry_after = failed.headers().get("retry-after").map(|v| v.to_str().expect("ascii").to_string());
    let error = assert_server_error(failed, 503, "storage_unavailable").await;
    let during = messages(&app, &conversation).await;
    app.store.faults().clear();
    let retried = post_text_ok(&app, &bot, "p-1", "my order?", "m-2").await;

    // Assert
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|secs| secs > 0)), "503 with Retry-After");
    assert!(!error.to_string().contains("injected"), "the cause stays in the logs: {error}");
    assert_eq!(seqs(&during), [1, 2], "nothing of the failed turn was stored");
    assert_eq!(retried["duplicate"], false, "the failed attempt left no dedupe record");
    assert_eq!(reply_texts(&retried), [FALLBACK]);
    let stored = messages(&app, &conversation).await;
    assert_eq!(seqs(&stored), [1, 2, 3, 4]);
    assert_eq!(contents(&stored), ["hello", GREETING, "my order?", FALLBACK]);
    assert_eq!(stored[2]["id"], retried["message_id"]);
}

#[tokio::test]
async fn after_a_single_failed_write_the_conversation_continues_from_what_is_stored() {
    // Arrange
    let app = spawn_one_arbiter_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let first = post_text_ok(&app, &bot, "p-1", "hello", "m-1").await;
    let conversation = id_of(&first, "conversation_id");
    app.store.faults().fail_next_writes(1);

    // Act: the fault is spent by the first attempt; the following ones go through
    let failed = post_text(&app, &bot, "p-1", "one", "m-2").await;
    let next = post_text_ok(&app, &bot, "p-1", "two", "m-3").await;
    let retried = post_text_ok(&app, &bot, "p-1", "one", "m-2").await;

    // Assert
    assert_server_error(failed, 503, "storage_unavailable").await;
    assert_eq!((next["duplicate"].clone(), retried["duplicate"].clone()), (json!(false), json!(false)));
    let stored = messages(&app, &conversation).await;
    assert_eq!(seqs(&stored), [1, 2, 3, 4, 5, 6], "no gap where the failed write was");
    assert_eq!(contents(&stored), ["hello", GREETING, "two", FALLBACK, "one", FALLBACK]);
}

#[tokio::test]
async fn a_first_message_that_cannot_be_written_leaves_no_conversation_behind() {
    // Arrange
    let app = spawn_one_arbiter_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;

    // Act
    app.store.faults().fail_all_writes();
    let failed = post_text(&app, &bot, "p-new", "hello", "m-1").await;
    let during = conversations(&app, &bot).await;
    app.store.faults().clear();
    let retried = post_text_ok(&app, &bot, "p-new", "hello", "m-1").await;

    // Assert
    assert_server_error(failed, 503, "storage_unavailable").await;
    assert!(during.is_empty(), "no conversation was opened: {during:?}");
    assert_eq!(retried["duplicate"], false);
    assert_eq!(reply_texts(&retried), [GREETING], "still the conversation's first message");
    let stored = messages(&app, &id_of(&retried, "conversation_id")).await;
    assert_eq!(seqs(&stored), [1, 2]);
}

#[tokio::test]
async fn a_failed_durability_step_answers_503_and_the_retry_is_answered_from_the_one_stored_copy() {
    // Arrange
    let app = spawn_one_arbiter_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let first = post_text_ok(&app, &bot, "p-1", "hello", "m-1").await;
    let conversation = id_of(&first, "conversation_id");

    // Act: the write is applied but never confirmed on disk while the fault lasts
    app.store.faults().fail_durability(true);
    let failed = tokio::time::timeout(Duration::from_secs(10), post_text(&app, &bot, "p-1", "my order?", "m-2"))
        .await
        .expect("the writer is told at once, not left waiting for the disk");
    let retry_after = failed.headers().get("retry-after").cloned();
    app.store.faults().clear();
    let retried = post_text_ok(&app, &bot, "p-1", "my order?", "m-2").await;
    let later = post_text_ok(&app, &bot, "p-1", "thanks", "m-3").await;

    // Assert: the provider's retry gets the one answer, the message is there exactly once
    assert_server_error(failed, 503, "storage_unavailable").await;
    assert!(retry_after.is_some(), "503 with Retry-After");
    assert_eq!(retried["duplicate"], true, "the first attempt was applied and reached the disk once it recovered");
    assert_eq!(reply_texts(&retried), [FALLBACK], "the retry replays the first attempt's answer");
    assert_eq!(later["duplicate"], false);
    let stored = messages(&app, &conversation).await;
    assert_eq!(seqs(&stored), [1, 2, 3, 4, 5, 6]);
    assert_eq!(contents(&stored), ["hello", GREETING, "my order?", FALLBACK, "thanks", FALLBACK]);
    assert_eq!(stored[2]["id"], retried["message_id"], "the retry names the stored message");
}

#[tokio::test]
async fn a_panic_in_an_http_handler_answers_a_json_500_and_the_connection_keeps_serving() {
    // Arrange: a server with baton's middleware and a handler that panics
    let (address_tx, address_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            use actix_web::{web, App, HttpResponse, HttpServer};
            async fn boom() -> HttpResponse {
                panic!("a handler bug")
            }
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let address = listener.local_addr().expect("address");
            let server = HttpServer::new(|| {
                App::new()
                    .wrap(actix_web::middleware::from_fn(baton::middleware::request_id_and_panics))
                    .route("/boom", web::get().to(boom))
                    .route("/fine", web::get().to(|| async { HttpResponse::Ok().body("fine") }))
            })
            .listen(listener)
            .expect("listen")
            .workers(1)
            .disable_signals()
            .run();
            let handle = server.handle();
            let _ = address_tx.send(address);
            tokio::select! {
                _ = server => {}
                _ = stop_rx => handle.stop(true).await,
            }
        });
    });
    let address = address_rx.await.expect("server started");
    let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client");

    // Act: two panics and a normal request, over one kept-alive connection where possible
    let mut answers = Vec::new();
    for path in ["/boom", "/boom", "/fine"] {
        answers.push(
            client.get(format!("http://{address}{path}")).send().await.expect("an answer, not a dropped connection"),
        );
    }

    // Assert
    let mut answers = answers.into_iter();
    let mut ids = HashSet::new();
    for _ in 0..2 {
        let error = assert_server_error(answers.next().expect("answer"), 500, "internal").await;
        assert!(!error.to_string().contains("a handler bug"), "the panic stays in the logs: {error}");
        ids.insert(error["request_id"].to_string());
    }
    assert_eq!(ids.len(), 2, "each failure has its own request id");
    let fine = answers.next().expect("answer");
    assert_eq!(fine.status(), 200, "the worker still serves");
    assert!(fine.headers().contains_key("x-request-id"));
    let _ = stop_tx.send(());
    server.join().expect("server thread ends");
}
