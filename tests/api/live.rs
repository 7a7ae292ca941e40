//! Live events over WebSocket (`/v1/ws?token=` and `/ws/conversations?token=`): what a handled
//! message, a pause and resume, a transfer and a flow publish; tenant isolation; refusal without
//! a token; and a client that never reads being dropped without slowing the server.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{body, spawn_app, TestApp};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for an event before giving up.
const WAIT: Duration = Duration::from_secs(10);

/// `ws://` URL of `path` with `?token=key`.
fn ws_url(app: &TestApp, path: &str, key: &str) -> String {
    let host = app.address.strip_prefix("http://").expect("http address");
    format!("ws://{host}{path}?token={key}")
}

/// Opens a live-event socket on `path` with `key`.
async fn connect(app: &TestApp, path: &str, key: &str) -> Socket {
    let (socket, response) = tokio_tungstenite::connect_async(ws_url(app, path, key)).await.expect("WebSocket opens");
    assert_eq!(response.status(), 101);
    socket
}

/// The next event (heartbeats and control frames skipped); panics after [`WAIT`].
async fn next_event(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("an event within 10 s")
            .expect("the socket is open")
            .expect("a frame");
        match frame {
            WsMessage::Text(text) => {
                let event: Value = serde_json::from_str(&text).expect("a JSON event");
                if event["type"] != "heartbeat" {
                    return event;
                }
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Reads events until one satisfies `done`; returns all of them, that one last.
async fn events_until(socket: &mut Socket, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let event = next_event(socket).await;
        let finished = done(&event);
        events.push(event);
        if finished {
            return events;
        }
    }
}

/// The conversation an event is about.
fn conversation_of(event: &Value) -> Option<&str> {
    let data = &event["data"];
    data["conversation_id"]
        .as_str()
        .or_else(|| (event["type"] == "conversation.updated").then(|| data["id"].as_str()).flatten())
        .or_else(|| data["transfer"]["conversation_id"].as_str())
        .or_else(|| data["session"]["conversation_id"].as_str())
}

fn is(event: &Value, kind: &str, conversation: &str) -> bool {
    event["type"] == kind && conversation_of(event) == Some(conversation)
}

async fn call(app: &TestApp, key: &str, method: Method, path: &str, payload: &Value) -> (u16, Value) {
    let response = app.send_json(method, path, key, payload).await;
    let status = response.status().as_u16();
    (status, body(response).await)
}

/// A synchronous handle in `bot` with `key`; asserts 200 and returns the body.
async fn say(app: &TestApp, key: &str, bot: &str, user: &str, text: &str) -> Value {
    let response = app.handle(key, bot, user, text, None).await;
    assert_eq!(response.status(), 200, "handle");
    body(response).await
}

fn id_of(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or_else(|| panic!("no {field} in {value}")).to_string()
}

#[tokio::test]
async fn a_handled_message_shows_up_as_message_and_conversation_events() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Live").await;
    let mut socket = connect(&app, "/v1/ws", &app.admin_key).await;

    // Act
    let handled = say(&app, &app.admin_key, &bot, "u-live", "hello").await;

    // Assert
    let conversation = id_of(&handled, "conversation_id");
    let events = events_until(&mut socket, |e| is(e, "conversation.updated", &conversation)).await;
    let created: Vec<&Value> = events.iter().filter(|e| is(e, "message.created", &conversation)).collect();
    assert_eq!(created.len(), 2, "the user's message and the reply: {events:?}");
    let user = &created[0]["data"]["message"];
    assert_eq!(user["role"], "user");
    assert_eq!(user["content"], "hello");
    assert_eq!(user["id"], handled["message_id"]);
    let reply = &created[1]["data"]["message"];
    assert_eq!(reply["role"], "assistant");
    assert_eq!(reply["content"], handled["replies"][0]["text"]);
    assert!(created.iter().all(|e| e["at"].is_string()), "every event has `at`");
    let updated = &events.last().expect("an event")["data"];
    assert_eq!(updated["id"], conversation.as_str());
    assert_eq!(updated["chatbot_id"], bot.as_str());
    assert_eq!(updated["channel_id"], "wa-main");
    assert_eq!(updated["provider_id"], "u-live");
    assert_eq!(updated["contact_id"], handled["contact_id"]);
    assert_eq!(updated["status"], "active");
    assert_eq!(updated["bot_active"], true);
    assert!(updated["last_message_at"].is_string() && updated["updated_at"].is_string());
}

#[tokio::test]
async fn pausing_and_resuming_the_bot_show_up_as_bot_events() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Live").await;
    let conversation = id_of(&say(&app, &app.admin_key, &bot, "u-pause", "hi").await, "conversation_id");
    let mut socket = connect(&app, "/v1/ws", &app.admin_key).await;
    let control = format!("/v1/conversations/{conversation}/bot-control");

    // Act
    let (status, _) =
        call(&app, &app.admin_key, Method::POST, &control, &json!({ "action": "pause", "agent_id": "agent-7" })).await;
    assert_eq!(status, 200);
    let (status, _) = call(&app, &app.admin_key, Method::POST, &control, &json!({ "action": "resume" })).await;
    assert_eq!(status, 200);

    // Assert
    let events = events_until(&mut socket, |e| is(e, "bot.resumed", &conversation)).await;
    let paused = events.iter().find(|e| is(e, "bot.paused", &conversation)).expect("a bot.paused event");
    assert_eq!(paused["data"]["agent_id"], "agent-7");
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().expect("type")).collect();
    let paused_at = kinds.iter().position(|k| *k == "bot.paused").expect("paused");
    assert!(paused_at < kinds.len() - 1, "bot.paused comes before bot.resumed: {kinds:?}");
    let updates: Vec<&Value> = events.iter().filter(|e| is(e, "conversation.updated", &conversation)).collect();
    assert_eq!(updates.first().expect("an update after the pause")["data"]["bot_active"], false);
}

#[tokio::test]
async fn a_transfer_keyword_shows_up_as_a_transfer_created_event() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Live").await;
    let (status, _) = call(
        &app,
        &app.admin_key,
        Method::PUT,
        &format!("/v1/chatbots/{bot}/settings"),
        &json!({ "transfer_keywords": ["agent"] }),
    )
    .await;
    assert_eq!(status, 200);
    let mut socket = connect(&app, "/v1/ws", &app.admin_key).await;

    // Act
    let handled = say(&app, &app.admin_key, &bot, "u-transfer", "agent").await;

    // Assert
    let conversation = id_of(&handled, "conversation_id");
    let events = events_until(&mut socket, |e| is(e, "conversation.updated", &conversation)).await;
    let transfer = events.iter().find(|e| is(e, "transfer.created", &conversation)).expect("a transfer.created event");
    assert_eq!(transfer["data"]["transfer"]["status"], "active");
    assert_eq!(transfer["data"]["transfer"]["source"], "keyword");
    assert!(events.iter().any(|e| is(e, "bot.paused", &conversation)), "the bot paused: {events:?}");
    assert_eq!(events.last().expect("event")["data"]["bot_active"], false);
}

#[tokio::test]
async fn starting_a_flow_shows_up_as_a_session_updated_event() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Live").await;
    let flow = json!({
        "name": "Signup",
        "trigger_keywords": ["signup"],
        "initial_message": "Let's start.",
        "completion_message": "Thanks {{name}}!",
        "steps": [{ "step_name": "name", "step_order": 1, "message": "What is your name?", "message_type": "text",
                    "input_type": "text", "store_as": "name" }],
    });
    let (status, created) = call(&app, &app.admin_key, Method::POST, &format!("/v1/chatbots/{bot}/flows"), &flow).await;
    assert_eq!(status, 201, "create flow answered {created}");
    let mut socket = connect(&app, "/v1/ws", &app.admin_key).await;

    // Act
    let handled = say(&app, &app.admin_key, &bot, "u-flow", "signup").await;

    // Assert
    let conversation = id_of(&handled, "conversation_id");
    let events = events_until(&mut socket, |e| is(e, "conversation.updated", &conversation)).await;
    let session =
        &events.iter().find(|e| is(e, "session.updated", &conversation)).expect("session.updated")["data"]["session"];
    assert_eq!(session["status"], "open");
    assert_eq!(session["current_flow_id"], created["id"]);
    assert_eq!(session["current_step"], "name");
}

#[tokio::test]
async fn a_socket_only_gets_its_own_tenants_events() {
    // Arrange
    let app = spawn_app().await;
    let key_a = app.admin_key.clone();
    let key_b = app.key_for_new_tenant(&["admin"]);
    let bot_a = app.create_chatbot(&key_a, "Tenant A").await;
    let bot_b = app.create_chatbot(&key_b, "Tenant B").await;
    let mut socket_a = connect(&app, "/v1/ws", &key_a).await;
    let mut socket_b = connect(&app, "/v1/ws", &key_b).await;

    // Act
    let conv_a = id_of(&say(&app, &key_a, &bot_a, "u-a", "hello from a").await, "conversation_id");
    let conv_b = id_of(&say(&app, &key_b, &bot_b, "u-b", "hello from b").await, "conversation_id");
    say(&app, &key_a, &bot_a, "u-a", "a again").await;

    // Assert
    let seen_b = events_until(&mut socket_b, |e| is(e, "conversation.updated", &conv_b)).await;
    assert!(seen_b.iter().all(|e| conversation_of(e) == Some(conv_b.as_str())), "B saw another tenant's: {seen_b:?}");
    assert_eq!(seen_b.iter().filter(|e| e["type"] == "message.created").count(), 2);
    let mut updates_a = 0;
    let seen_a = events_until(&mut socket_a, |e| {
        if is(e, "conversation.updated", &conv_a) {
            updates_a += 1;
        }
        updates_a == 2
    })
    .await;
    assert!(seen_a.iter().all(|e| conversation_of(e) == Some(conv_a.as_str())), "A saw another tenant's: {seen_a:?}");
    assert_eq!(seen_a.iter().filter(|e| e["type"] == "message.created").count(), 4);
}

#[tokio::test]
async fn the_seed_path_ws_conversations_streams_the_same_events() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Live").await;
    let reader = app.key_with_scopes(&["conversations:read"]);
    let mut socket = connect(&app, "/ws/conversations", &reader).await;

    // Act
    let handled = say(&app, &app.admin_key, &bot, "u-seed", "hello").await;

    // Assert
    let conversation = id_of(&handled, "conversation_id");
    let events = events_until(&mut socket, |e| is(e, "conversation.updated", &conversation)).await;
    assert_eq!(events.iter().filter(|e| is(e, "message.created", &conversation)).count(), 2);
}

/// The HTTP status a refused WebSocket upgrade answered.
async fn refused_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("the socket opened"),
    }
}

#[tokio::test]
async fn a_socket_without_a_valid_token_is_refused() {
    // Arrange
    let app = spawn_app().await;
    let host = app.address.strip_prefix("http://").expect("http address");
    let no_read = app.key_with_scopes(&["messages:handle"]);

    // Act / Assert
    assert_eq!(refused_status(&format!("ws://{host}/v1/ws")).await, 401);
    assert_eq!(refused_status(&format!("ws://{host}/ws/conversations")).await, 401);
    assert_eq!(refused_status(&ws_url(&app, "/v1/ws", "bt_not_a_real_key")).await, 401);
    assert_eq!(refused_status(&ws_url(&app, "/v1/ws", &no_read)).await, 403);
}

/// A flow whose trigger runs `steps` text steps at once: one message makes `steps + 2` replies,
/// so a few dozen messages publish thousands of events.
fn chatty_flow(steps: usize, chars: usize) -> Value {
    let steps: Vec<Value> = (0..steps)
        .map(|i| {
            json!({ "step_name": format!("s{i}"), "step_order": i, "message": format!("{i} {}", "x".repeat(chars)),
                    "message_type": "text", "input_type": "none" })
        })
        .collect();
    json!({ "name": "Chatty", "trigger_keywords": ["chatty"], "initial_message": "Here we go.",
            "completion_message": "Done.", "steps": steps })
}

/// How a socket's stream ended.
#[derive(Debug)]
enum Ending {
    Closed(Option<CloseFrame<'static>>),
    Broken,
    Silent,
}

/// Reads `socket` to its end; returns the text frames read and how it ended.
async fn drain(socket: &mut Socket) -> (usize, Ending) {
    let mut texts = 0;
    loop {
        let Ok(next) = tokio::time::timeout(WAIT, socket.next()).await else { return (texts, Ending::Silent) };
        match next {
            Some(Ok(WsMessage::Text(_))) => texts += 1,
            Some(Ok(WsMessage::Close(frame))) => return (texts, Ending::Closed(frame)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (texts, Ending::Broken),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_while_others_keep_up() {
    // Arrange: each "chatty" message runs 50 steps of 2000 characters: 53 messages, 55 events
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Busy").await;
    let (status, created) =
        call(&app, &app.admin_key, Method::POST, &format!("/v1/chatbots/{bot}/flows"), &chatty_flow(50, 2000)).await;
    assert_eq!(status, 201, "create flow answered {created}");
    let mut slow = connect(&app, "/v1/ws", &app.admin_key).await;
    let mut fast = connect(&app, "/v1/ws", &app.admin_key).await;
    let fast_reader = tokio::spawn(async move {
        let mut messages = 0usize;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(WAIT, fast.next()).await {
            if let WsMessage::Text(text) = frame {
                if text.contains("\"message.created\"") {
                    messages += 1;
                }
                if text.contains("END-OF-TEST") {
                    return (messages, true);
                }
            }
        }
        (messages, false)
    });

    // Act: about 16,500 events (some 30 MB), far past the 4096-event buffer plus socket buffers
    let rounds = 300;
    for round in 0..rounds {
        let handled = say(&app, &app.admin_key, &bot, &format!("u-busy-{}", round % 4), "chatty").await;
        assert_eq!(handled["replies"].as_array().expect("replies").len(), 52, "the flow ran: {handled}");
    }
    say(&app, &app.admin_key, &bot, "u-busy-end", "END-OF-TEST").await;

    // Assert
    let (fast_messages, fast_saw_end) = fast_reader.await.expect("fast reader");
    assert!(fast_saw_end, "the reading client kept up to the end ({fast_messages} messages)");
    assert_eq!(fast_messages, rounds * 53 + 1, "the reading client got every message.created");
    let (slow_texts, ending) = drain(&mut slow).await;
    match &ending {
        Ending::Closed(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Policy, "closed as a policy violation: {frame:?}");
            assert!(frame.reason.contains("too slow"), "reason {:?}", frame.reason);
        }
        Ending::Closed(None) | Ending::Broken => {}
        Ending::Silent => panic!("the slow client was never cut off (read {slow_texts} events, then nothing)"),
    }
    assert!(slow_texts < rounds * 55, "the slow client missed events ({slow_texts})");
}

#[tokio::test]
async fn picking_up_and_assigning_a_transfer_show_up_as_transfer_assigned_events() {
    // Arrange: a transfer waiting in the general queue, an agent, a socket.
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Live").await;
    let (status, _) = call(
        &app,
        &app.admin_key,
        Method::PUT,
        &format!("/v1/chatbots/{bot}/settings"),
        &json!({ "transfer_keywords": ["agent"] }),
    )
    .await;
    assert_eq!(status, 200);
    let handled = say(&app, &app.admin_key, &bot, "u-assign", "agent").await;
    let conversation = id_of(&handled, "conversation_id");
    let (status, agent) =
        call(&app, &app.admin_key, Method::POST, "/v1/agents", &json!({ "name": "Ana", "email": "ana@example.com" }))
            .await;
    assert_eq!(status, 201);
    let agent = agent["id"].as_str().expect("agent id").to_string();
    let mut socket = connect(&app, "/v1/ws", &app.admin_key).await;

    // Act
    let (status, picked) =
        call(&app, &app.admin_key, Method::POST, &format!("/v1/transfers/pickup?agent_id={agent}"), &json!({})).await;

    // Assert
    assert_eq!(status, 200, "{picked}");
    let events = events_until(&mut socket, |e| e["type"] == "transfer.assigned").await;
    let assigned = events.last().expect("an event");
    assert_eq!(assigned["data"]["transfer"]["conversation_id"], conversation);
    assert_eq!(assigned["data"]["transfer"]["agent_id"], agent);

    // Assigning it again (to the same agent) is announced too.
    let transfer = picked["id"].as_str().expect("transfer id").to_string();
    let (status, _) = call(
        &app,
        &app.admin_key,
        Method::PUT,
        &format!("/v1/transfers/{transfer}/assign"),
        &json!({ "agent_id": agent }),
    )
    .await;
    assert_eq!(status, 200);
    let again = events_until(&mut socket, |e| e["type"] == "transfer.assigned").await;
    assert_eq!(again.last().expect("an event")["data"]["transfer"]["id"], transfer);
}
