//! Abuse limits seen from a client: rate limits per API key and per conversation (429 with
//! `Retry-After`, nothing stored), and slow clients (a stalled request head or body is cut off
//! with 408 while everyone else keeps being served).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{body, spawn_app_with, TestApp};

/// Far beyond any timeout configured below: a test waiting this long has failed.
const GENEROUS: Duration = Duration::from_secs(8);

/// A server whose per-key limit is `per_second` with `burst`, and no per-conversation limit.
async fn app_with_key_limit(per_second: u32, burst: u32) -> TestApp {
    spawn_app_with(|s| {
        s.limits.per_key_per_second = per_second;
        s.limits.per_key_burst = burst;
        s.limits.per_conversation_per_second = 0;
    })
    .await
}

/// A server whose per-conversation limit is `per_second` with `burst`, and no per-key limit.
async fn app_with_conversation_limit(per_second: u32, burst: u32) -> TestApp {
    spawn_app_with(|s| {
        s.limits.per_conversation_per_second = per_second;
        s.limits.per_conversation_burst = burst;
        s.limits.per_key_per_second = 0;
    })
    .await
}

/// Asserts a 429 in the native error shape naming `limit`, and returns its `Retry-After`.
async fn assert_rate_limited(response: reqwest::Response, limit: &str) -> u64 {
    assert_eq!(response.status(), 429, "status");
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("Retry-After in whole seconds");
    let value = body(response).await;
    assert_eq!(value["code"], "rate_limited", "{value}");
    let message = value["error"].as_str().expect("error message");
    assert!(message.contains(limit), "the message should name the {limit} limit: {message:?}");
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    retry_after
}

/// The texts of a conversation's messages.
async fn message_texts(app: &TestApp, conversation: &str) -> Vec<String> {
    let response = app.get(&format!("/v1/conversations/{conversation}/messages"), &app.admin_key).await;
    assert_eq!(response.status(), 200, "list messages");
    body(response).await["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

// ---------------------------------------------------------------- per API key

#[tokio::test]
async fn a_key_past_its_rate_limit_is_answered_429_and_what_it_sent_is_not_stored() {
    // Arrange: 3 requests at once, then one per second.
    let app = app_with_key_limit(1, 3).await;
    let key = app.key_with_scopes(&["admin"]);
    for name in ["one", "two", "three"] {
        let created = app.post("/v1/chatbots", &key, &json!({ "name": name })).await;
        assert_eq!(created.status(), 201, "request within the burst");
    }

    // Act
    let refused = app.post("/v1/chatbots", &key, &json!({ "name": "four" })).await;

    // Assert
    let retry_after = assert_rate_limited(refused, "API key").await;
    assert!(retry_after <= 2, "one request per second: Retry-After {retry_after}");
    let listed = body(app.get("/v1/chatbots", &app.admin_key).await).await;
    let names: Vec<&str> =
        listed["items"].as_array().expect("items").iter().filter_map(|b| b["name"].as_str()).collect();
    assert_eq!(names.len(), 3, "the refused chatbot was not created: {names:?}");
    assert!(!names.contains(&"four"), "{names:?}");
}

#[tokio::test]
async fn other_keys_are_served_while_one_key_is_limited_and_it_is_served_again_after_retry_after() {
    // Arrange
    let app = app_with_key_limit(1, 2).await;
    let busy = app.key_with_scopes(&["admin"]);
    let other = app.key_with_scopes(&["admin"]);
    for _ in 0..2 {
        assert_eq!(app.get("/v1/chatbots", &busy).await.status(), 200);
    }
    let retry_after = assert_rate_limited(app.get("/v1/chatbots", &busy).await, "API key").await;

    // Act
    let other_answer = app.get("/v1/chatbots", &other).await.status();
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let after_waiting = app.get("/v1/chatbots", &busy).await.status();

    // Assert
    assert_eq!(other_answer, 200, "another key has its own limit");
    assert_eq!(after_waiting, 200, "Retry-After was long enough");
}

#[tokio::test]
async fn a_zero_rate_turns_the_key_limit_off() {
    // Arrange
    let app = app_with_key_limit(0, 1).await;

    // Act
    let statuses = futures_util::future::join_all((0..30).map(|_| app.get("/v1/chatbots", &app.admin_key))).await;

    // Assert
    assert!(statuses.iter().all(|r| r.status() == 200), "every request served without a limit");
}

// ---------------------------------------------------------------- per conversation

#[tokio::test]
async fn a_conversation_past_its_rate_limit_is_answered_429_while_other_conversations_are_served() {
    // Arrange: 2 messages at once per conversation, then one per second.
    let app = app_with_conversation_limit(1, 2).await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let first = app.handle_ok(&app.admin_key, &bot, "+1555000001", "first").await;
    app.handle_ok(&app.admin_key, &bot, "+1555000001", "second").await;
    let conversation = first["conversation_id"].as_str().expect("conversation_id").to_string();

    // Act
    let refused = app.handle(&app.admin_key, &bot, "+1555000001", "third, too fast", Some("m-3")).await;
    let elsewhere = app.handle(&app.admin_key, &bot, "+1555000002", "hello", None).await.status();

    // Assert
    let retry_after = assert_rate_limited(refused, "conversation").await;
    assert_eq!(elsewhere, 200, "another conversation is served");
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let texts = message_texts(&app, &conversation).await;
    assert!(texts.contains(&"second".to_string()), "{texts:?}");
    assert!(!texts.iter().any(|t| t.contains("too fast")), "the refused message was stored: {texts:?}");
    // The refused provider message id was not remembered: sent again later, it is handled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let retried = app.handle(&app.admin_key, &bot, "+1555000001", "third, too fast", Some("m-3")).await;
    assert_eq!(retried.status(), 200);
    assert_eq!(body(retried).await["duplicate"], false, "the refused message was never recorded");
}

#[tokio::test]
async fn every_route_addressing_one_conversation_counts_against_its_limit() {
    // Arrange
    let app = app_with_conversation_limit(1, 3).await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let handled = app.handle_ok(&app.admin_key, &bot, "+1555000003", "hi").await;
    let conversation = handled["conversation_id"].as_str().expect("conversation_id").to_string();
    let other = app.handle_ok(&app.admin_key, &bot, "+1555000004", "hi").await;
    let other = other["conversation_id"].as_str().expect("conversation_id").to_string();

    // Act: two more requests through other routes use up the burst of three.
    let read = app.get(&format!("/v1/conversations/{conversation}"), &app.admin_key).await.status().as_u16();
    let nested = app.get(&format!("/v1/chatbots/{bot}/conversations/{conversation}/messages"), &app.admin_key).await;
    let pause = json!({ "action": "pause" });
    let refused = app.post(&format!("/v1/conversations/{conversation}/bot-control"), &app.admin_key, &pause).await;
    let other_read = app.get(&format!("/v1/conversations/{other}"), &app.admin_key).await.status();

    // Assert
    assert_eq!((read, nested.status().as_u16()), (200, 200));
    assert_rate_limited(refused, "conversation").await;
    assert_eq!(other_read, 200, "another conversation is served");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = body(app.get(&format!("/v1/conversations/{conversation}"), &app.admin_key).await).await;
    assert_eq!(now["bot_active"], true, "the refused pause changed nothing: {now}");
}

// ---------------------------------------------------------------- slow clients

/// Reads one HTTP response (head and `Content-Length` body) from `stream`; `None` when the
/// server closed the connection without answering. Panics after [`GENEROUS`].
async fn read_response(stream: &mut TcpStream) -> Option<(u16, Value)> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if raw.len() >= end + 4 + length {
                    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
                    let body = serde_json::from_slice(&raw[end + 4..end + 4 + length]).unwrap_or(Value::Null);
                    return Some((status, body));
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    assert!(raw.is_empty(), "connection closed mid-response: {:?}", String::from_utf8_lossy(&raw));
                    return None;
                }
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(GENEROUS, read).await.expect("the server neither answered nor closed the connection")
}

/// Whether the server closes `stream` (reads reach end of file) within [`GENEROUS`].
async fn closed(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 1024];
    let drained = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(GENEROUS, drained).await.is_ok()
}

/// A connection to `app` that has sent `bytes` and then goes quiet.
async fn stalled(app: &TestApp, bytes: &[u8]) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream.flush().await.expect("flush");
    stream
}

/// A request head for `POST path` announcing a 1000-byte JSON body.
fn head_announcing_1000_bytes(app: &TestApp, path: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
        app.admin_key
    )
}

#[tokio::test]
async fn a_client_that_stalls_in_its_request_head_is_cut_off() {
    // Arrange
    let app = spawn_app_with(|s| s.server.client_request_timeout_ms = 500).await;

    // Act: half a request head, then nothing.
    let mut stream = stalled(&app, b"POST /v1/chatbots HTTP/1.1\r\nHost: localhost\r\nX-API-Ke").await;
    let started = Instant::now();
    let answer = read_response(&mut stream).await;

    // Assert: a 408, or a plain close; either way the connection ends.
    if let Some((status, _)) = answer {
        assert_eq!(status, 408, "a stalled head is answered 408");
        assert!(closed(&mut stream).await, "the connection is closed after the 408");
    }
    assert!(started.elapsed() < GENEROUS);
}

#[tokio::test]
async fn a_client_that_stalls_its_body_gets_a_json_408_and_nothing_is_stored() {
    // Arrange
    let app = spawn_app_with(|s| s.server.body_read_timeout_ms = 500).await;
    let mut request = head_announcing_1000_bytes(&app, "/v1/chatbots").into_bytes();
    request.extend_from_slice(br#"{"name": "#);

    // Act: the head and 10 of the 1000 bytes, then nothing.
    let mut stream = stalled(&app, &request).await;
    let answer = read_response(&mut stream).await;

    // Assert
    let (status, value) = answer.expect("an answer, not a bare close");
    assert_eq!(status, 408, "{value}");
    assert_eq!(value["code"], "request_timeout", "{value}");
    assert!(value["error"].as_str().is_some_and(|e| e.contains("body")), "{value}");
    assert!(closed(&mut stream).await, "the connection is closed after the 408");
    let listed = body(app.get("/v1/chatbots", &app.admin_key).await).await;
    assert_eq!(listed["items"], json!([]), "no chatbot was created");
}

#[tokio::test]
async fn a_body_that_trickles_in_past_the_deadline_gets_a_408() {
    // Arrange
    let app = spawn_app_with(|s| s.server.body_read_timeout_ms = 800).await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let path = format!("/v1/chatbots/{bot}/conversations/handle");
    let mut stream = stalled(&app, head_announcing_1000_bytes(&app, &path).as_bytes()).await;

    // Act: one byte every 100 ms, which would take 100 s for the whole body.
    let trickle = async {
        for _ in 0..1000 {
            if stream.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), trickle).await;
    let answer = read_response(&mut stream).await;

    // Assert
    let (status, value) = answer.expect("an answer, not a bare close");
    assert_eq!((status, value["code"].as_str()), (408, Some("request_timeout")), "{value}");
}

#[tokio::test]
async fn other_clients_are_served_while_slow_clients_stall() {
    // Arrange: timeouts long enough that the stalled connections stay open during the test.
    let app = spawn_app_with(|s| {
        s.server.client_request_timeout_ms = 20_000;
        s.server.body_read_timeout_ms = 20_000;
    })
    .await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let path = format!("/v1/chatbots/{bot}/conversations/handle");
    let mut stalls = Vec::new();
    for _ in 0..16 {
        stalls.push(stalled(&app, b"GET /v1/chatbots HTTP/1.1\r\nHost: local").await);
        let mut half_body = head_announcing_1000_bytes(&app, &path).into_bytes();
        half_body.extend_from_slice(b"{\"channelI");
        stalls.push(stalled(&app, &half_body).await);
    }

    // Act
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    let listed = client.get(app.url("/v1/chatbots")).header("X-API-Key", &app.admin_key).send().await;
    let payload =
        json!({ "channelId": "wa-main", "providerId": "+1555000009", "message": { "type": "text", "text": "hi" } });
    let handled = client.post(app.url(&path)).header("X-API-Key", &app.admin_key).json(&payload).send().await;

    // Assert
    assert_eq!(listed.expect("served while others stall").status(), 200);
    assert_eq!(handled.expect("served while others stall").status(), 200);
    drop(stalls);
}
