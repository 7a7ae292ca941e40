//! Outbound delivery end to end, with wiremock receivers on loopback: the human-takeover call
//! (seed `000` payload, custom body, method and headers) and when it fires; bot replies of async
//! handles and agent messages on the reply webhook, signed (checked with a hand-written
//! HMAC-SHA256, independent of the server's code); order per conversation; retries, 410, 4xx,
//! timeouts and manual retries; private addresses refused; a restart resuming a pending retry;
//! and a pause racing a pending reply.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use baton_actors::store::{Store, StoreConfig};
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{assert_error, body, call, get_ok, spawn_app, spawn_app_on, spawn_app_with, TestApp};

const CHANNEL: &str = "wa-main";
const CHANNEL_NAME: &str = "WhatsApp";
const GREETING: &str = "Hello! Welcome. How can I help you?";
const REPLY: &str = "/reply";
const TAKEOVER: &str = "/takeover";

// ---------------------------------------------------------------------------------------------
// Waiting (bounded polls, never fixed sleeps as assertions)
// ---------------------------------------------------------------------------------------------

/// Polls `probe` every 50 ms for up to 10 s and returns its first `Some`; panics naming `what`.
async fn wait_for<T, Fut>(what: &str, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops `app` and waits (up to 5 s) until its data directory can be opened again.
///
/// Works around a shutdown race seen in the server: `stop()` can return while some thread still
/// holds the store, and an immediate restart then fails with "could not acquire lock".
async fn stop_and_release(app: TestApp, dir: &Path) {
    app.stop();
    let config = StoreConfig::for_tests(dir);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(store) = Store::open(&config) {
            store.close().expect("probe store closes");
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the data directory stayed locked after stop()");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Receivers
// ---------------------------------------------------------------------------------------------

/// A receiver answering 200 on both webhook paths.
async fn receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path(REPLY)).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    Mock::given(path(TAKEOVER)).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    server
}

/// A receiver whose reply path answers with `responder` (the takeover path answers 200).
async fn receiver_with(responder: impl Respond + 'static) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path(REPLY)).respond_with(responder).mount(&server).await;
    Mock::given(path(TAKEOVER)).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    server
}

/// From now on the reply path answers 200 (takes precedence over earlier mocks).
async fn fix_receiver(server: &MockServer) {
    Mock::given(path(REPLY)).respond_with(ResponseTemplate::new(200)).with_priority(1).mount(server).await;
}

/// Answers 500 to its first call and 200 to every later one.
#[derive(Debug, Default)]
struct FailFirstCall {
    calls: AtomicUsize,
}

impl Respond for FailFirstCall {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        match self.calls.fetch_add(1, Ordering::SeqCst) {
            0 => ResponseTemplate::new(500),
            _ => ResponseTemplate::new(200),
        }
    }
}

/// Answers 500 to the first call of each `webhook-id` and 200 to any repeat of it.
#[derive(Debug, Default)]
struct FailFirstAttempt {
    seen: Mutex<HashSet<String>>,
}

impl Respond for FailFirstAttempt {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let id = header(request, "webhook-id").to_string();
        if self.seen.lock().expect("lock").insert(id) {
            ResponseTemplate::new(500)
        } else {
            ResponseTemplate::new(200)
        }
    }
}

fn url_of(server: &MockServer, at: &str) -> String {
    format!("{}{at}", server.uri())
}

/// The requests `server` received on `at`, in arrival order.
async fn requests_to(server: &MockServer, at: &str) -> Vec<Request> {
    let all = server.received_requests().await.expect("request recording is on");
    all.into_iter().filter(|r| r.url.path() == at).collect()
}

/// Waits until `server` received at least `n` requests on `at`; returns them all.
async fn wait_requests(server: &MockServer, at: &str, n: usize) -> Vec<Request> {
    wait_for(&format!("{n} request(s) on {at}"), move || async move {
        let got = requests_to(server, at).await;
        (got.len() >= n).then_some(got)
    })
    .await
}

fn header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", request.headers))
        .to_str()
        .expect("ASCII header")
}

fn json_of(request: &Request) -> Value {
    serde_json::from_slice(&request.body).expect("a JSON body")
}

// ---------------------------------------------------------------------------------------------
// Signatures, computed here independently of the server's code
// ---------------------------------------------------------------------------------------------

/// HMAC-SHA256 (RFC 2104) over a 64-byte block.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(&ipad).chain_update(message).finalize();
    Sha256::new().chain_update(&opad).chain_update(inner).finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the Standard Webhooks headers of `request` against `key`; returns the webhook-id.
fn assert_signed(request: &Request, key: &[u8]) -> String {
    let id = header(request, "webhook-id");
    let timestamp = header(request, "webhook-timestamp");
    let seconds: i64 = timestamp.parse().expect("webhook-timestamp is unix seconds");
    let drift = (chrono::Utc::now().timestamp() - seconds).abs();
    assert!(drift < 300, "webhook-timestamp {seconds} is not about now");
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(&request.body);
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(hmac_sha256(key, &signed)));
    let signatures = header(request, "webhook-signature");
    assert!(
        signatures.split(' ').any(|s| s == expected),
        "webhook-signature {signatures:?} does not hold {expected:?}"
    );
    id.to_string()
}

// ---------------------------------------------------------------------------------------------
// API helpers
// ---------------------------------------------------------------------------------------------

/// Replaces channel `wa-main`'s configuration of `bot` (named "WhatsApp").
async fn configure_channel(app: &TestApp, bot: &str, config: Value) -> Value {
    let mut config = config;
    config["name"] = json!(CHANNEL_NAME);
    let (status, value) = call(app, Method::PUT, &format!("/v1/chatbots/{bot}/channels/{CHANNEL}"), &config).await;
    assert_eq!(status, 200, "PUT channel answered {value}");
    value
}

/// A chatbot whose channel sends replies to `server`'s /reply and takeovers to its /takeover.
async fn bot_with_hooks(app: &TestApp, server: &MockServer) -> String {
    let bot = app.create_chatbot(&app.admin_key, "Hooked").await;
    configure_channel(
        app,
        &bot,
        json!({
            "reply_webhook": { "url": url_of(server, REPLY) },
            "human_takeover_webhook": { "url": url_of(server, TAKEOVER) },
        }),
    )
    .await;
    bot
}

/// A handle request from `user` (contact John Doe) on channel wa-main.
fn handle_payload(user: &str, text: &str, asynchronous: bool) -> Value {
    json!({
        "channelId": CHANNEL,
        "channelName": CHANNEL_NAME,
        "providerId": user,
        "async": asynchronous,
        "message": { "type": "text", "text": text },
        "contact": {
            "first_name": "John",
            "last_name": "Doe",
            "phones": ["+1234567890"],
            "emails": ["john@example.com"],
        },
    })
}

/// A synchronous handle; asserts 200.
async fn say(app: &TestApp, bot: &str, user: &str, text: &str) -> Value {
    let payload = handle_payload(user, text, false);
    let (status, value) = call(app, Method::POST, &format!("/v1/chatbots/{bot}/conversations/handle"), &payload).await;
    assert_eq!(status, 200, "handle answered {value}");
    value
}

/// An async handle; asserts 202 and returns the conversation id.
async fn say_async(app: &TestApp, bot: &str, user: &str, text: &str) -> String {
    let payload = handle_payload(user, text, true);
    let (status, value) = call(app, Method::POST, &format!("/v1/chatbots/{bot}/conversations/handle"), &payload).await;
    assert_eq!(status, 202, "async handle answered {value}");
    value["conversation_id"].as_str().expect("conversation_id").to_string()
}

async fn bot_control(app: &TestApp, conversation: &str, action: &str, agent_id: Option<&str>) -> Value {
    let mut payload = json!({ "action": action });
    if let Some(agent) = agent_id {
        payload["agent_id"] = json!(agent);
    }
    let (status, value) =
        call(app, Method::POST, &format!("/v1/conversations/{conversation}/bot-control"), &payload).await;
    assert_eq!(status, 200, "bot-control {action} answered {value}");
    value
}

async fn agent_message(app: &TestApp, conversation: &str, content: &str, agent_id: Option<&str>) -> Value {
    let mut payload = json!({ "content": content });
    if let Some(agent) = agent_id {
        payload["agent_id"] = json!(agent);
    }
    let (status, value) =
        call(app, Method::POST, &format!("/v1/conversations/{conversation}/messages"), &payload).await;
    assert_eq!(status, 201, "agent message answered {value}");
    value
}

async fn create_agent(app: &TestApp, name: &str, email: &str) -> String {
    let payload = json!({ "name": name, "email": email, "team_ids": [] });
    let (status, value) = call(app, Method::POST, "/v1/agents", &payload).await;
    assert_eq!(status, 201, "create agent answered {value}");
    value["id"].as_str().expect("agent id").to_string()
}

/// The tenant's deliveries (newest first), `query` like "?status=failed".
async fn deliveries(app: &TestApp, query: &str) -> Vec<Value> {
    get_ok(app, &format!("/v1/webhook-deliveries{query}")).await["items"].as_array().expect("items").clone()
}

/// The deliveries of `kind` for `conversation`, oldest first.
async fn deliveries_of(app: &TestApp, conversation: &str, kind: &str) -> Vec<Value> {
    let mut items: Vec<Value> = deliveries(app, "?limit=500")
        .await
        .into_iter()
        .filter(|d| d["conversation_id"] == conversation && d["kind"] == kind)
        .collect();
    items.reverse();
    items
}

/// Waits until `conversation` has `n` deliveries of `kind`, none pending; returns them oldest first.
async fn wait_settled(app: &TestApp, conversation: &str, kind: &str, n: usize) -> Vec<Value> {
    let what = format!("{n} settled {kind} deliveries of {conversation}");
    wait_for(&what, move || async move {
        let items = deliveries_of(app, conversation, kind).await;
        (items.len() == n && items.iter().all(|d| d["status"] != "pending")).then_some(items)
    })
    .await
}

/// Asserts a timestamp like "2026-03-14T00:00:00.000Z".
fn assert_millis_utc(value: &Value) {
    let text = value.as_str().unwrap_or_else(|| panic!("timestamp {value} is not a string"));
    assert!(chrono::DateTime::parse_from_rfc3339(text).is_ok(), "timestamp {text:?} is not RFC 3339");
    assert!(text.ends_with('Z') && text.len() == 24, "timestamp {text:?} is not like 2026-03-14T00:00:00.000Z");
}

/// The payload of a takeover call without its timestamp (checked for format).
fn without_timestamp(mut payload: Value) -> Value {
    let timestamp = payload.as_object_mut().expect("object").remove("timestamp").expect("a timestamp");
    assert_millis_utc(&timestamp);
    payload
}

// ---------------------------------------------------------------------------------------------
// Human takeover
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_pause_by_a_known_agent_calls_the_takeover_webhook_with_the_seed_payload() {
    // Arrange
    let app = spawn_app().await;
    let server = receiver().await;
    let bot = bot_with_hooks(&app, &server).await;
    let agent = create_agent(&app, "Jane Smith", "jane@company.com").await;
    let handled = say(&app, &bot, "u-takeover", "hi").await;
    let conversation = handled["conversation_id"].as_str().expect("conversation_id");

    // Act
    bot_control(&app, conversation, "pause", Some(&agent)).await;

    // Assert
    let calls = wait_requests(&server, TAKEOVER, 1).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method.as_str(), "POST");
    assert_eq!(header(&calls[0], "content-type"), "application/json");
    let payload = json_of(&calls[0]);
    let keys: Vec<&str> = payload.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 7, "exactly the seed's keys, got {keys:?}");
    assert_eq!(
        without_timestamp(payload),
        json!({
            "event": "human_takeover",
            "conversation_id": conversation,
            "channel_account_id": CHANNEL,
            "channel_name": CHANNEL_NAME,
            "agent": { "id": agent, "name": "Jane Smith", "email": "jane@company.com" },
            "contact": {
                "id": handled["contact_id"],
                "first_name": "John",
                "last_name": "Doe",
                "phones": ["+1234567890"],
                "emails": ["john@example.com"],
            },
        })
    );
    let settled = wait_settled(&app, conversation, "human_takeover", 1).await;
    assert_eq!(settled[0]["status"], "delivered");
    assert_eq!(settled[0]["attempts"], 1);
}

#[tokio::test]
async fn the_takeover_call_merges_the_custom_body_and_uses_the_configured_method_and_headers() {
    // Arrange
    let app = spawn_app().await;
    let server = receiver().await;
    let bot = app.create_chatbot(&app.admin_key, "Custom").await;
    configure_channel(
        &app,
        &bot,
        json!({
            "human_takeover_webhook": {
                "url": url_of(&server, TAKEOVER),
                "method": "PUT",
                "headers": { "Authorization": "Bearer xxx", "X-Source": "baton-test" },
                "body": { "event": "agent_needed", "team": "support", "priority": 2 },
            },
        }),
    )
    .await;
    let conversation = say(&app, &bot, "u-custom", "hi").await["conversation_id"].as_str().expect("id").to_string();

    // Act
    bot_control(&app, &conversation, "pause", None).await;

    // Assert
    let calls = wait_requests(&server, TAKEOVER, 1).await;
    let call = &calls[0];
    assert_eq!(call.method.as_str(), "PUT");
    assert_eq!(header(call, "authorization"), "Bearer xxx");
    assert_eq!(header(call, "x-source"), "baton-test");
    let payload = json_of(call);
    assert_eq!(payload["event"], "agent_needed", "a custom key wins over a default one");
    assert_eq!(payload["team"], "support");
    assert_eq!(payload["priority"], 2);
    assert_eq!(payload["conversation_id"], conversation.as_str(), "defaults stay");
    assert_eq!(payload["channel_account_id"], CHANNEL);
    assert_eq!(payload["contact"]["first_name"], "John");
    assert_millis_utc(&payload["timestamp"]);
}

#[tokio::test]
async fn an_unknown_agent_id_is_sent_alone_and_no_agent_gives_nulls() {
    // Arrange
    let app = spawn_app().await;
    let server = receiver().await;
    let bot = app.create_chatbot(&app.admin_key, "Agents").await;
    configure_channel(
        &app,
        &bot,
        json!({ "human_takeover_webhook": { "url": url_of(&server, TAKEOVER), "method": "PATCH" } }),
    )
    .await;
    let first = say(&app, &bot, "u-unknown-agent", "hi").await["conversation_id"].as_str().expect("id").to_string();
    let second = say(&app, &bot, "u-no-agent", "hi").await["conversation_id"].as_str().expect("id").to_string();

    // Act
    bot_control(&app, &first, "pause", Some("agent-from-elsewhere")).await;
    bot_control(&app, &second, "pause", None).await;

    // Assert
    let calls = wait_requests(&server, TAKEOVER, 2).await;
    assert!(calls.iter().all(|c| c.method.as_str() == "PATCH"), "the configured method is used");
    let payload_of = |conversation: &str| {
        calls.iter().map(json_of).find(|p| p["conversation_id"] == conversation).expect("a call for the conversation")
    };
    assert_eq!(payload_of(&first)["agent"], json!({ "id": "agent-from-elsewhere", "name": null, "email": null }));
    assert_eq!(payload_of(&second)["agent"], json!({ "id": null, "name": null, "email": null }));
}

#[tokio::test]
async fn every_way_the_bot_goes_quiet_calls_the_takeover_webhook() {
    // Arrange
    let app = spawn_app().await;
    let server = receiver().await;
    let bot = bot_with_hooks(&app, &server).await;
    let (status, settings) =
        call(&app, Method::PUT, &format!("/v1/chatbots/{bot}/settings"), &json!({ "transfer_keywords": ["agent"] }))
            .await;
    assert_eq!(status, 200, "settings answered {settings}");
    let agent = create_agent(&app, "Ada Agent", "ada@company.com").await;
    let mut conversations = Vec::new();
    for user in ["u-autoreply", "u-transfer", "u-agent-message", "u-from-me"] {
        conversations.push(say(&app, &bot, user, "hi").await["conversation_id"].as_str().expect("id").to_string());
    }

    // Act
    let (status, off) = call(
        &app,
        Method::POST,
        &format!("/v1/conversations/{}/autoreply", conversations[0]),
        &json!({ "enabled": false }),
    )
    .await;
    assert_eq!(status, 200, "autoreply answered {off}");
    let transferred = say(&app, &bot, "u-transfer", "agent").await;
    assert_eq!(transferred["bot_active"], false);
    agent_message(&app, &conversations[2], "Hi, Ada here.", Some(&agent)).await;
    let mut echo = handle_payload("u-from-me", "typed on the phone", false);
    echo["message"]["from_me"] = json!(true);
    let (status, value) = call(&app, Method::POST, &format!("/v1/chatbots/{bot}/conversations/handle"), &echo).await;
    assert_eq!(status, 200, "from_me handle answered {value}");

    // Assert
    let calls = wait_requests(&server, TAKEOVER, 4).await;
    let mut called: Vec<String> =
        calls.iter().map(|c| json_of(c)["conversation_id"].as_str().expect("id").to_string()).collect();
    called.sort();
    let mut expected = conversations.clone();
    expected.sort();
    assert_eq!(called, expected, "one takeover call per conversation");
    let by_agent = calls.iter().map(json_of).find(|p| p["conversation_id"] == conversations[2].as_str()).expect("call");
    assert_eq!(by_agent["agent"], json!({ "id": agent, "name": "Ada Agent", "email": "ada@company.com" }));
}

#[tokio::test]
async fn a_second_pause_and_a_resume_do_not_call_the_takeover_webhook() {
    // Arrange
    let app = spawn_app().await;
    let server = receiver().await;
    let bot = bot_with_hooks(&app, &server).await;
    let conversation = say(&app, &bot, "u-twice", "hi").await["conversation_id"].as_str().expect("id").to_string();
    bot_control(&app, &conversation, "pause", None).await;

    // Act
    bot_control(&app, &conversation, "pause", None).await;
    bot_control(&app, &conversation, "resume", None).await;

    // Assert: the outbox is written with the change, so it already shows every call to come
    assert_eq!(deliveries_of(&app, &conversation, "human_takeover").await.len(), 1);
    // and a new pause after the resume is a new takeover
    bot_control(&app, &conversation, "pause", None).await;
    assert_eq!(deliveries_of(&app, &conversation, "human_takeover").await.len(), 2);
    wait_settled(&app, &conversation, "human_takeover", 2).await;
    assert_eq!(requests_to(&server, TAKEOVER).await.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Reply webhook: payload and signature
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_async_reply_reaches_the_reply_webhook_signed_with_a_plain_secret() {
    // Arrange: the hand-written HMAC agrees with RFC 4231 test case 2
    assert_eq!(
        hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let app = spawn_app().await;
    let server = receiver().await;
    let bot = app.create_chatbot(&app.admin_key, "Signed").await;
    configure_channel(
        &app,
        &bot,
        json!({
            "reply_webhook": {
                "url": url_of(&server, REPLY),
                "method": "PUT",
                "headers": { "X-Tenant": "acme" },
                "secret": "my plain secret",
            },
        }),
    )
    .await;

    // Act
    let conversation = say_async(&app, &bot, "u-signed", "hello there").await;

    // Assert
    let calls = wait_requests(&server, REPLY, 1).await;
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method.as_str(), "PUT");
    assert_eq!(header(call, "x-tenant"), "acme");
    assert_eq!(header(call, "content-type"), "application/json");
    let id = assert_signed(call, b"my plain secret");
    let payload = json_of(call);
    assert_eq!(payload["event"], "message");
    assert_eq!(payload["conversation_id"], conversation.as_str());
    assert_eq!(payload["chatbot_id"], bot.as_str());
    assert_eq!(payload["channel_id"], CHANNEL);
    assert_eq!(payload["provider_id"], "u-signed");
    let message = &payload["message"];
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["type"], "text");
    assert_eq!(message["text"], GREETING);
    assert_eq!(message["seq"], 2, "the user's message is seq 1");
    for key in ["id", "buttons", "whatsapp_flow", "agent_id", "created_at"] {
        assert!(message.get(key).is_some(), "message has no {key}: {message}");
    }
    assert!(payload["timestamp"].is_string());
    let stored = get_ok(&app, &format!("/v1/conversations/{conversation}/messages")).await;
    let assistant = stored["items"].as_array().expect("items").iter().find(|m| m["role"] == "assistant").cloned();
    assert_eq!(message["id"], assistant.expect("stored reply")["id"], "the stored reply is the one sent");
    let settled = wait_settled(&app, &conversation, "bot_reply", 1).await;
    assert_eq!(settled[0]["id"], id.as_str(), "webhook-id is the delivery id");
    assert_eq!(settled[0]["status"], "delivered");
    assert_eq!(settled[0]["signed"], true);
    assert_eq!(settled[0]["method"], "PUT");
}

#[tokio::test]
async fn a_whsec_secret_signs_with_its_base64_decoded_key() {
    // Arrange
    let app = spawn_app().await;
    let server = receiver().await;
    let bot = app.create_chatbot(&app.admin_key, "Whsec").await;
    let key: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&key));
    configure_channel(&app, &bot, json!({ "reply_webhook": { "url": url_of(&server, REPLY), "secret": secret } }))
        .await;

    // Act
    say_async(&app, &bot, "u-whsec", "hello").await;

    // Assert
    let calls = wait_requests(&server, REPLY, 1).await;
    assert_eq!(calls[0].method.as_str(), "POST", "POST is the default method");
    assert_signed(&calls[0], &key);
    let channel = get_ok(&app, &format!("/v1/chatbots/{bot}/channels/{CHANNEL}")).await;
    assert_eq!(channel["reply_webhook"]["secret"], "********", "the secret is never served back");
}

#[tokio::test]
async fn a_reply_answered_500_is_retried_with_the_same_webhook_id_and_delivered() {
    // Arrange
    let app = spawn_app_with(|s| s.webhooks.retry_schedule_secs = vec![1]).await;
    let server = receiver_with(FailFirstCall::default()).await;
    let bot = app.create_chatbot(&app.admin_key, "Retry").await;
    configure_channel(&app, &bot, json!({ "reply_webhook": { "url": url_of(&server, REPLY), "secret": "s3cret" } }))
        .await;

    // Act
    let conversation = say_async(&app, &bot, "u-retry", "hello").await;

    // Assert
    let settled = wait_settled(&app, &conversation, "bot_reply", 1).await;
    assert_eq!(settled[0]["status"], "delivered");
    assert_eq!(settled[0]["attempts"], 2);
    assert_eq!(settled[0]["last_status"], 200);
    let calls = requests_to(&server, REPLY).await;
    assert_eq!(calls.len(), 2);
    let ids: Vec<String> = calls.iter().map(|c| assert_signed(c, b"s3cret")).collect();
    assert_eq!(ids[0], ids[1], "webhook-id is stable across retries");
    assert_eq!(ids[0], settled[0]["id"].as_str().expect("id"));
    assert_eq!(calls[0].body, calls[1].body, "a retry sends the same body");
}

#[tokio::test]
async fn sync_handles_send_nothing_to_the_reply_webhook_but_agent_messages_go_out() {
    // Arrange
    let app = spawn_app().await;
    let server = receiver().await;
    let bot = app.create_chatbot(&app.admin_key, "Sync").await;
    configure_channel(&app, &bot, json!({ "reply_webhook": { "url": url_of(&server, REPLY) } })).await;
    let agent = create_agent(&app, "Sam Agent", "sam@company.com").await;

    // Act
    let handled = say(&app, &bot, "u-sync", "hello").await;
    say(&app, &bot, "u-sync", "anything else").await;
    let conversation = handled["conversation_id"].as_str().expect("id");
    let posted = agent_message(&app, conversation, "A human here.", Some(&agent)).await;

    // Assert
    assert!(deliveries_of(&app, conversation, "bot_reply").await.is_empty(), "sync replies are not delivered");
    let settled = wait_settled(&app, conversation, "agent_message", 1).await;
    assert_eq!(settled[0]["status"], "delivered");
    let calls = requests_to(&server, REPLY).await;
    assert_eq!(calls.len(), 1, "only the agent message reached the receiver");
    let payload = json_of(&calls[0]);
    assert_eq!(payload["event"], "message");
    assert_eq!(payload["message"]["role"], "agent");
    assert_eq!(payload["message"]["text"], "A human here.");
    assert_eq!(payload["message"]["agent_id"], agent.as_str());
    assert_eq!(payload["message"]["id"], posted["id"]);
    assert_eq!(payload["message"]["seq"], posted["seq"]);
}

#[tokio::test]
async fn from_me_echoes_are_not_sent_back_to_the_reply_webhook() {
    // Arrange
    let app = spawn_app().await;
    let server = receiver().await;
    let bot = app.create_chatbot(&app.admin_key, "Echo").await;
    configure_channel(&app, &bot, json!({ "reply_webhook": { "url": url_of(&server, REPLY) } })).await;
    let conversation = say(&app, &bot, "u-echo", "hi").await["conversation_id"].as_str().expect("id").to_string();

    // Act
    let mut echo = handle_payload("u-echo", "sent from the business phone", true);
    echo["message"]["from_me"] = json!(true);
    let (status, value) = call(&app, Method::POST, &format!("/v1/chatbots/{bot}/conversations/handle"), &echo).await;
    assert_eq!(status, 202, "from_me handle answered {value}");
    agent_message(&app, &conversation, "from the dashboard", None).await;

    // Assert
    let outbox = deliveries(&app, "").await;
    let kinds: Vec<&str> = outbox
        .iter()
        .filter(|d| d["conversation_id"] == conversation.as_str())
        .map(|d| d["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, vec!["agent_message"], "only the dashboard message is delivered");
    wait_settled(&app, &conversation, "agent_message", 1).await;
    let calls = requests_to(&server, REPLY).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(json_of(&calls[0])["message"]["text"], "from the dashboard");
}

// ---------------------------------------------------------------------------------------------
// Order, retries and failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn replies_of_a_conversation_arrive_in_message_order_even_when_the_first_is_retried() {
    // Arrange
    let app = spawn_app_with(|s| s.webhooks.retry_schedule_secs = vec![1, 1, 1]).await;
    let server = receiver_with(FailFirstCall::default()).await;
    let bot = app.create_chatbot(&app.admin_key, "Order").await;
    configure_channel(&app, &bot, json!({ "reply_webhook": { "url": url_of(&server, REPLY) } })).await;

    // Act
    let mut conversation = String::new();
    for text in ["one", "two", "three"] {
        conversation = say_async(&app, &bot, "u-order", text).await;
    }

    // Assert
    let settled = wait_settled(&app, &conversation, "bot_reply", 3).await;
    assert!(settled.iter().all(|d| d["status"] == "delivered"), "all delivered: {settled:?}");
    let seqs: Vec<u64> =
        requests_to(&server, REPLY).await.iter().map(|c| json_of(c)["message"]["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs.len(), 4, "one failed attempt and three successes: {seqs:?}");
    assert_eq!(seqs[0], seqs[1], "the failed first reply is retried before anything later: {seqs:?}");
    assert!(seqs[1] < seqs[2] && seqs[2] < seqs[3], "successful deliveries in seq order: {seqs:?}");
}

#[tokio::test]
async fn a_410_or_a_400_fails_the_delivery_without_retrying() {
    // Arrange
    let app = spawn_app_with(|s| s.webhooks.retry_schedule_secs = vec![1]).await;
    let server = MockServer::start().await;
    Mock::given(path("/gone")).respond_with(ResponseTemplate::new(410)).mount(&server).await;
    Mock::given(path("/bad")).respond_with(ResponseTemplate::new(400)).mount(&server).await;
    let gone_bot = app.create_chatbot(&app.admin_key, "Gone").await;
    configure_channel(&app, &gone_bot, json!({ "reply_webhook": { "url": url_of(&server, "/gone") } })).await;
    let bad_bot = app.create_chatbot(&app.admin_key, "Bad").await;
    configure_channel(&app, &bad_bot, json!({ "reply_webhook": { "url": url_of(&server, "/bad") } })).await;

    // Act
    let gone = say_async(&app, &gone_bot, "u-gone", "hello").await;
    let bad = say_async(&app, &bad_bot, "u-bad", "hello").await;

    // Assert
    let gone_delivery = wait_settled(&app, &gone, "bot_reply", 1).await.remove(0);
    assert_eq!(gone_delivery["status"], "failed");
    assert_eq!(gone_delivery["last_status"], 410);
    assert_eq!(gone_delivery["attempts"], 1);
    assert_eq!(gone_delivery["next_attempt_at"], Value::Null);
    let bad_delivery = wait_settled(&app, &bad, "bot_reply", 1).await.remove(0);
    assert_eq!(bad_delivery["status"], "failed");
    assert_eq!(bad_delivery["last_status"], 400);
    assert_eq!(bad_delivery["attempts"], 1);
    // a little past when a retry would have come (1 s + 20% jitter): still one call each
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(requests_to(&server, "/gone").await.len(), 1);
    assert_eq!(requests_to(&server, "/bad").await.len(), 1);
    assert_eq!(deliveries_of(&app, &gone, "bot_reply").await[0]["attempts"], 1);
}

#[tokio::test]
async fn a_receiver_that_times_out_is_retried_then_the_delivery_fails() {
    // Arrange
    let app = spawn_app_with(|s| {
        s.webhooks.timeout_ms = 300;
        s.webhooks.retry_schedule_secs = vec![1];
    })
    .await;
    let server = receiver_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2))).await;
    let bot = app.create_chatbot(&app.admin_key, "Slow").await;
    configure_channel(&app, &bot, json!({ "reply_webhook": { "url": url_of(&server, REPLY) } })).await;

    // Act
    let conversation = say_async(&app, &bot, "u-slow", "hello").await;

    // Assert
    let delivery = wait_settled(&app, &conversation, "bot_reply", 1).await.remove(0);
    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["attempts"], 2);
    let error = delivery["last_error"].as_str().unwrap_or_else(|| panic!("no last_error in {delivery}"));
    assert!(error.contains("timed out"), "last_error {error:?} should say it timed out");
    assert_eq!(requests_to(&server, REPLY).await.len(), 2);
}

#[tokio::test]
async fn a_failed_delivery_retried_by_hand_is_delivered_once_the_receiver_is_fixed() {
    // Arrange
    let app = spawn_app().await;
    let server = receiver_with(ResponseTemplate::new(400)).await;
    let bot = app.create_chatbot(&app.admin_key, "Manual").await;
    configure_channel(&app, &bot, json!({ "reply_webhook": { "url": url_of(&server, REPLY) } })).await;
    let conversation = say_async(&app, &bot, "u-manual", "hello").await;
    let failed = wait_settled(&app, &conversation, "bot_reply", 1).await.remove(0);
    assert_eq!(failed["status"], "failed");
    let id = failed["id"].as_str().expect("id").to_string();
    fix_receiver(&server).await;

    // Act
    let (status, retried) = call(&app, Method::POST, &format!("/v1/webhook-deliveries/{id}/retry"), &json!({})).await;

    // Assert
    assert_eq!(status, 202, "retry answered {retried}");
    assert_eq!(retried["status"], "pending");
    assert_eq!(retried["attempts"], 0);
    let delivered = wait_for("the retried delivery to be delivered", || async {
        let d = get_ok(&app, &format!("/v1/webhook-deliveries/{id}")).await;
        (d["status"] != "pending").then_some(d)
    })
    .await;
    assert_eq!(delivered["status"], "delivered");
    assert_eq!(delivered["last_status"], 200);
    assert!(delivered["delivered_at"].is_string());
    let calls = requests_to(&server, REPLY).await;
    assert_eq!(calls.len(), 2);
    assert_eq!(header(&calls[0], "webhook-id"), header(&calls[1], "webhook-id"));
    let response = app
        .request(Method::POST, &format!("/v1/webhook-deliveries/{id}/retry"), &app.admin_key)
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    assert_error(response, 409, "already delivered").await;
    let unknown = format!("/v1/webhook-deliveries/{}/retry", uuid::Uuid::new_v4());
    let response = app.request(Method::POST, &unknown, &app.admin_key).json(&json!({})).send().await.expect("request");
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn deliveries_can_be_listed_by_status() {
    // Arrange
    let app = spawn_app().await;
    let server = MockServer::start().await;
    Mock::given(path("/ok")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    Mock::given(path("/bad")).respond_with(ResponseTemplate::new(422)).mount(&server).await;
    let ok_bot = app.create_chatbot(&app.admin_key, "Ok").await;
    configure_channel(&app, &ok_bot, json!({ "reply_webhook": { "url": url_of(&server, "/ok") } })).await;
    let bad_bot = app.create_chatbot(&app.admin_key, "Bad").await;
    configure_channel(&app, &bad_bot, json!({ "reply_webhook": { "url": url_of(&server, "/bad") } })).await;
    let ok = say_async(&app, &ok_bot, "u-ok", "hello").await;
    let bad = say_async(&app, &bad_bot, "u-bad", "hello").await;
    wait_settled(&app, &ok, "bot_reply", 1).await;
    wait_settled(&app, &bad, "bot_reply", 1).await;

    // Act
    let delivered = deliveries(&app, "?status=delivered").await;
    let failed = deliveries(&app, "?status=failed").await;
    let pending = deliveries(&app, "?status=pending").await;
    let all = deliveries(&app, "").await;

    // Assert
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["conversation_id"], ok.as_str());
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["conversation_id"], bad.as_str());
    assert_eq!(failed[0]["last_status"], 422);
    assert!(pending.is_empty());
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["conversation_id"], bad.as_str(), "newest first");
    let response = app.get("/v1/webhook-deliveries?status=lost", &app.admin_key).await;
    assert_error(response, 400, "status").await;
    let other_tenant = app.key_for_new_tenant(&["admin"]);
    let theirs = body(app.get("/v1/webhook-deliveries", &other_tenant).await).await;
    assert_eq!(theirs["items"], json!([]), "another tenant sees none of them");
    let id = all[0]["id"].as_str().expect("id");
    assert_eq!(app.get(&format!("/v1/webhook-deliveries/{id}"), &other_tenant).await.status(), 404);
}

// ---------------------------------------------------------------------------------------------
// Private addresses
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn private_webhook_addresses_are_refused_when_private_networks_are_not_allowed() {
    // Arrange
    let app = spawn_app_with(|s| s.webhooks.allow_private_networks = false).await;
    let server = receiver().await;
    let port = server.address().port();
    let bot = app.create_chatbot(&app.admin_key, "Private").await;
    let channel = format!("/v1/chatbots/{bot}/channels/{CHANNEL}");

    // Act / Assert
    for url in [
        format!("http://127.0.0.1:{port}/reply"),
        format!("http://localhost:{port}/reply"),
        format!("http://api.localhost:{port}/reply"),
        format!("http://10.1.2.3:{port}/reply"),
        format!("http://[::1]:{port}/reply"),
        format!("http://[::ffff:127.0.0.1]:{port}/reply"),
        format!("http://2130706433:{port}/reply"),
    ] {
        let response =
            app.send_json(Method::PUT, &channel, &app.admin_key, &json!({ "reply_webhook": { "url": url } })).await;
        let error = assert_error(response, 422, "").await;
        assert_eq!(error["field"], "reply_webhook.url", "for {url}: {error}");
    }
    let takeover = json!({ "human_takeover_webhook": { "url": format!("http://192.168.1.20:{port}/takeover") } });
    let error = assert_error(app.send_json(Method::PUT, &channel, &app.admin_key, &takeover).await, 422, "").await;
    assert_eq!(error["field"], "human_takeover_webhook.url");
    let public = json!({ "reply_webhook": { "url": "https://hooks.example.com/baton" } });
    assert_eq!(app.send_json(Method::PUT, &channel, &app.admin_key, &public).await.status(), 200);
    assert!(requests_to(&server, REPLY).await.is_empty());
}

#[tokio::test]
async fn a_stored_loopback_webhook_is_refused_at_delivery_once_private_networks_are_disallowed() {
    // Arrange: configured while allowed, then the server restarts with private networks refused
    let dir = tempfile::tempdir().expect("temp dir");
    let server = receiver().await;
    let app = spawn_app_on(dir.path().to_path_buf(), |_| {}).await;
    let bot = app.create_chatbot(&app.admin_key, "Stale").await;
    configure_channel(&app, &bot, json!({ "reply_webhook": { "url": url_of(&server, REPLY) } })).await;
    stop_and_release(app, dir.path()).await;
    let app = spawn_app_on(dir.path().to_path_buf(), |s| s.webhooks.allow_private_networks = false).await;

    // Act
    let conversation = say_async(&app, &bot, "u-stale", "hello").await;

    // Assert
    let delivery = wait_settled(&app, &conversation, "bot_reply", 1).await.remove(0);
    assert_eq!(delivery["status"], "failed");
    let error = delivery["last_error"].as_str().unwrap_or_else(|| panic!("no last_error in {delivery}"));
    assert!(error.contains("private or loopback"), "last_error {error:?}");
    assert!(requests_to(&server, REPLY).await.is_empty(), "nothing reached the loopback receiver");
}

// ---------------------------------------------------------------------------------------------
// Restart and the pause race
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_delivery_pending_a_retry_resumes_after_a_restart() {
    // Arrange
    let dir = tempfile::tempdir().expect("temp dir");
    let server = receiver_with(ResponseTemplate::new(503)).await;
    let schedule = |s: &mut baton::Settings| s.webhooks.retry_schedule_secs = vec![2, 2];
    let app = spawn_app_on(dir.path().to_path_buf(), schedule).await;
    let bot = app.create_chatbot(&app.admin_key, "Restart").await;
    configure_channel(&app, &bot, json!({ "reply_webhook": { "url": url_of(&server, REPLY), "secret": "k" } })).await;
    let conversation = say_async(&app, &bot, "u-restart", "hello").await;
    wait_for("a first failed attempt", || async {
        let items = deliveries_of(&app, &conversation, "bot_reply").await;
        items.first().filter(|d| d["attempts"] == 1 && d["status"] == "pending").cloned()
    })
    .await;

    // Act
    stop_and_release(app, dir.path()).await;
    fix_receiver(&server).await;
    let app = spawn_app_on(dir.path().to_path_buf(), schedule).await;

    // Assert
    let delivery = wait_settled(&app, &conversation, "bot_reply", 1).await.remove(0);
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempts"], 2);
    let calls = requests_to(&server, REPLY).await;
    assert_eq!(calls.len(), 2, "one failed attempt before the restart, one success after");
    let ids: Vec<String> = calls.iter().map(|c| assert_signed(c, b"k")).collect();
    assert_eq!(ids[0], ids[1], "the same webhook-id after the restart");
}

#[tokio::test]
async fn a_pause_arriving_while_a_reply_is_pending_never_lets_that_reply_out() {
    // Arrange: every delivery's first attempt fails, any repeat of it would succeed
    let app = spawn_app_with(|s| s.webhooks.retry_schedule_secs = vec![1]).await;
    let server = receiver_with(FailFirstAttempt::default()).await;
    let bot = app.create_chatbot(&app.admin_key, "Race").await;
    configure_channel(&app, &bot, json!({ "reply_webhook": { "url": url_of(&server, REPLY) } })).await;

    // Act: five conversations, each an async message then a pause at once
    let conversations = join_all((0..5).map(|i| {
        let (app, bot) = (&app, &bot);
        async move {
            let conversation = say_async(app, bot, &format!("u-race-{i}"), "hello").await;
            let paused = bot_control(app, &conversation, "pause", None).await;
            assert_eq!(paused["bot_active"], false);
            conversation
        }
    }))
    .await;

    // Assert
    for conversation in &conversations {
        let delivery = wait_settled(&app, conversation, "bot_reply", 1).await.remove(0);
        assert_eq!(delivery["status"], "cancelled", "the pending reply is dropped: {delivery}");
        assert!(delivery["delivered_at"].is_null());
    }
    let calls = requests_to(&server, REPLY).await;
    let mut ids = HashSet::new();
    for call in &calls {
        assert!(ids.insert(header(call, "webhook-id").to_string()), "a reply was sent again after the pause");
    }
    assert!(calls.len() <= conversations.len(), "at most the first, failed attempt of each reply");
    let retry = format!(
        "/v1/webhook-deliveries/{}/retry",
        deliveries_of(&app, &conversations[0], "bot_reply").await[0]["id"].as_str().expect("id")
    );
    let response = app.request(Method::POST, &retry, &app.admin_key).json(&json!({})).send().await.expect("request");
    assert_error(response, 409, "took the conversation over").await;
}

#[tokio::test]
async fn a_pause_during_a_retry_wait_cancels_the_reply_and_later_replies_go_out_after_a_resume() {
    // Arrange
    let app = spawn_app_with(|s| s.webhooks.retry_schedule_secs = vec![1]).await;
    let server = receiver_with(FailFirstAttempt::default()).await;
    let bot = app.create_chatbot(&app.admin_key, "Race").await;
    configure_channel(&app, &bot, json!({ "reply_webhook": { "url": url_of(&server, REPLY) } })).await;
    let conversation = say_async(&app, &bot, "u-wait", "hello").await;
    wait_requests(&server, REPLY, 1).await;

    // Act
    bot_control(&app, &conversation, "pause", None).await;

    // Assert
    let dropped = wait_settled(&app, &conversation, "bot_reply", 1).await.remove(0);
    assert_eq!(dropped["status"], "cancelled");
    assert_eq!(dropped["attempts"], 1, "only the failed attempt was made");
    let error = dropped["last_error"].as_str().unwrap_or_else(|| panic!("no last_error in {dropped}"));
    assert!(error.contains("took the conversation over"), "last_error {error:?}");
    bot_control(&app, &conversation, "resume", None).await;
    say_async(&app, &bot, "u-wait", "back again").await;
    let replies = wait_settled(&app, &conversation, "bot_reply", 2).await;
    assert_eq!(replies[1]["status"], "delivered", "a reply made after the resume goes out");
    let calls = requests_to(&server, REPLY).await;
    assert_eq!(calls.len(), 3, "the dropped reply once, the new one twice (500 then 200)");
    assert_ne!(header(&calls[0], "webhook-id"), header(&calls[2], "webhook-id"));
}

#[tokio::test]
async fn an_agent_message_is_delivered_even_when_the_bot_is_paused_and_resumed_meanwhile() {
    // Arrange
    let app = spawn_app_with(|s| s.webhooks.retry_schedule_secs = vec![1]).await;
    let server = receiver_with(FailFirstCall::default()).await;
    let bot = app.create_chatbot(&app.admin_key, "Agent").await;
    configure_channel(&app, &bot, json!({ "reply_webhook": { "url": url_of(&server, REPLY) } })).await;
    let conversation = say(&app, &bot, "u-agent", "hi").await["conversation_id"].as_str().expect("id").to_string();
    agent_message(&app, &conversation, "Hello from a human.", None).await;
    wait_requests(&server, REPLY, 1).await;

    // Act
    bot_control(&app, &conversation, "resume", None).await;
    bot_control(&app, &conversation, "pause", None).await;

    // Assert
    let delivery = wait_settled(&app, &conversation, "agent_message", 1).await.remove(0);
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempts"], 2);
    assert_eq!(requests_to(&server, REPLY).await.len(), 2);
}

#[tokio::test]
async fn a_redirect_from_the_receiver_is_not_followed() {
    // Arrange
    let app = spawn_app().await;
    let server = MockServer::start().await;
    let elsewhere = url_of(&server, "/elsewhere");
    Mock::given(path(REPLY))
        .respond_with(ResponseTemplate::new(307).insert_header("Location", elsewhere.as_str()))
        .mount(&server)
        .await;
    Mock::given(path("/elsewhere")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    let bot = app.create_chatbot(&app.admin_key, "Redirect").await;
    configure_channel(&app, &bot, json!({ "reply_webhook": { "url": url_of(&server, REPLY) } })).await;

    // Act
    let conversation = say_async(&app, &bot, "u-redirect", "hello").await;

    // Assert
    let delivery = wait_settled(&app, &conversation, "bot_reply", 1).await.remove(0);
    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["last_status"], 307);
    assert_eq!(requests_to(&server, REPLY).await.len(), 1);
    assert!(requests_to(&server, "/elsewhere").await.is_empty(), "the redirect was not followed");
}

#[tokio::test]
async fn a_410_stops_the_other_pending_retries_to_that_endpoint() {
    // Arrange: the endpoint fails a first reply with 500 (its retry is far off) …
    let app = spawn_app_with(|s| s.webhooks.retry_schedule_secs = vec![60]).await;
    let server = MockServer::start().await;
    Mock::given(path("/hook")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    let bot = app.create_chatbot(&app.admin_key, "Gone").await;
    configure_channel(&app, &bot, json!({ "reply_webhook": { "url": url_of(&server, "/hook") } })).await;
    let waiting = say_async(&app, &bot, "u-first", "hello").await;
    let first = wait_for("a first attempt answered 500", || async {
        let items = deliveries_of(&app, &waiting, "bot_reply").await;
        items.into_iter().find(|d| d["attempts"] == 1 && d["status"] == "pending")
    })
    .await;

    // Act: … then the endpoint is gone, as a second conversation's reply learns.
    server.reset().await;
    Mock::given(path("/hook")).respond_with(ResponseTemplate::new(410)).mount(&server).await;
    let second = say_async(&app, &bot, "u-second", "hello").await;
    let gone = wait_settled(&app, &second, "bot_reply", 1).await.remove(0);

    // Assert: the waiting retry is given up too, saying why; it is not sent again.
    assert_eq!(gone["last_status"], 410);
    let first = deliveries_of(&app, &waiting, "bot_reply").await.into_iter().find(|d| d["id"] == first["id"]).unwrap();
    assert_eq!(first["status"], "failed", "{first}");
    assert!(first["last_error"].as_str().is_some_and(|e| e.contains("410")), "{first}");
    assert_eq!(first["attempts"], 1);
}

#[tokio::test]
async fn replies_held_behind_a_failing_reply_do_not_starve_other_conversations() {
    // Arrange: few calls in flight, and one conversation whose receiver fails (its retry is
    // far off), so its later replies wait behind the first.
    let app = spawn_app_with(|s| {
        s.webhooks.max_in_flight = 2;
        s.webhooks.retry_schedule_secs = vec![60];
    })
    .await;
    let server = MockServer::start().await;
    Mock::given(path("/down")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    Mock::given(path("/up")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    let stuck_bot = app.create_chatbot(&app.admin_key, "Stuck").await;
    configure_channel(&app, &stuck_bot, json!({ "reply_webhook": { "url": url_of(&server, "/down") } })).await;
    let other_bot = app.create_chatbot(&app.admin_key, "Other").await;
    configure_channel(&app, &other_bot, json!({ "reply_webhook": { "url": url_of(&server, "/up") } })).await;
    let stuck = say_async(&app, &stuck_bot, "u-stuck", "one").await;
    for text in ["two", "three", "four"] {
        say_async(&app, &stuck_bot, "u-stuck", text).await;
    }
    wait_for("the stuck conversation's first attempt", || async {
        let items = deliveries_of(&app, &stuck, "bot_reply").await;
        items.iter().any(|d| d["attempts"] == 1).then_some(())
    })
    .await;

    // Act
    let other = say_async(&app, &other_bot, "u-other", "hello").await;

    // Assert: the other conversation's reply goes out; the stuck ones keep waiting their turn.
    let delivered = wait_settled(&app, &other, "bot_reply", 1).await.remove(0);
    assert_eq!(delivered["status"], "delivered", "{delivered}");
    assert_eq!(requests_to(&server, "/down").await.len(), 1, "held replies are not sent before the first");
    let held = deliveries_of(&app, &stuck, "bot_reply").await;
    assert!(held.iter().all(|d| d["status"] == "pending"), "{held:?}");
}
