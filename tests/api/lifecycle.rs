//! Data lifecycle: erasing a contact with everything of theirs (checked through the API and by
//! reading every tree of the store), exporting a conversation as one JSON document, and the
//! retention sweeps of old messages and settled webhook deliveries.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{assert_error, body, call, get_ok, spawn_app, spawn_app_with, TestApp};

const GREETING: &str = "Hello! Welcome. How can I help you?";
const FALLBACK: &str = "Sorry, I didn't understand that. Please try again.";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// GETs `path` with the admin key; returns the status.
async fn status_of(app: &TestApp, path: &str) -> u16 {
    app.get(path, &app.admin_key).await.status().as_u16()
}

/// DELETEs `path` with `key`.
async fn delete(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    app.request(Method::DELETE, path, key).send().await.expect("request")
}

fn str_of(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or_else(|| panic!("no {field} in {value}")).to_string()
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages.iter().map(|m| m["seq"].as_u64().expect("seq")).collect()
}

fn reply_texts(handled: &Value) -> Vec<String> {
    handled["replies"].as_array().expect("replies").iter().map(|r| str_of(r, "text")).collect()
}

/// Polls `probe` every 50 ms for up to 10 s.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Someone writing to the chatbot: who they are and where.
#[derive(Debug, Clone)]
struct Person {
    provider_id: &'static str,
    first_name: &'static str,
    last_name: &'static str,
    email: &'static str,
}

const ADA: Person =
    Person { provider_id: "+4915550001", first_name: "Ada", last_name: "Lovelace", email: "ada@example.com" };
const GRACE: Person =
    Person { provider_id: "+4915550002", first_name: "Grace", last_name: "Hopper", email: "grace@example.com" };

impl Person {
    /// A handle request from this person on `channel`.
    fn says(&self, channel: &str, message_id: &str, text: &str, asynchronous: bool) -> Value {
        json!({
            "channelId": channel,
            "channelName": channel,
            "providerId": self.provider_id,
            "async": asynchronous,
            "message": { "id": message_id, "type": "text", "text": text },
            "contact": {
                "first_name": self.first_name,
                "last_name": self.last_name,
                "phones": [self.provider_id],
                "emails": [self.email],
            },
        })
    }
}

/// Sends `text` from `person` on `channel`; asserts 200 (202 when async) and returns the answer.
async fn say(
    app: &TestApp,
    bot: &str,
    person: &Person,
    channel: &str,
    id: &str,
    text: &str,
    asynchronous: bool,
) -> Value {
    let path = format!("/v1/chatbots/{bot}/conversations/handle");
    let (status, value) = call(app, Method::POST, &path, &person.says(channel, id, text, asynchronous)).await;
    assert_eq!(status, if asynchronous { 202 } else { 200 }, "handle answered {value}");
    value
}

/// A one-step flow triggered by `order` that waits for an order number.
fn order_flow() -> Value {
    json!({
        "name": "Order status",
        "trigger_keywords": ["order"],
        "initial_message": "Let's find your order.",
        "completion_message": "Thanks!",
        "steps": [{
            "step_name": "ask", "step_order": 1, "message": "Your order number?",
            "message_type": "text", "input_type": "text", "store_as": "order",
        }],
    })
}

/// A chatbot with transfer keyword `human` and the order flow, whose channels `wa-main` and
/// `wa-backup` send replies to `hooks`/reply and takeovers to `hooks`/takeover.
async fn chatbot(app: &TestApp, hooks: &MockServer) -> String {
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let (status, value) =
        call(app, Method::PUT, &format!("/v1/chatbots/{bot}/settings"), &json!({ "transfer_keywords": ["human"] }))
            .await;
    assert_eq!(status, 200, "settings answered {value}");
    let (status, value) = call(app, Method::POST, &format!("/v1/chatbots/{bot}/flows"), &order_flow()).await;
    assert_eq!(status, 201, "flow answered {value}");
    for channel in ["wa-main", "wa-backup"] {
        let config = json!({
            "name": channel,
            "reply_webhook": { "url": format!("{}/reply", hooks.uri()) },
            "human_takeover_webhook": { "url": format!("{}/takeover", hooks.uri()) },
        });
        let (status, value) = call(app, Method::PUT, &format!("/v1/chatbots/{bot}/channels/{channel}"), &config).await;
        assert_eq!(status, 200, "channel answered {value}");
    }
    bot
}

/// A webhook receiver that refuses replies (they stay pending for a retry) and accepts takeovers.
async fn receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/reply")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    Mock::given(path("/takeover")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    server
}

/// What one person has after [`converse`]: ids of everything stored for them.
#[derive(Debug)]
struct Footprint {
    contact: String,
    /// On wa-main (with an open flow session), on wa-backup (transferred to a human) and on
    /// wa-extra (more turns than an actor keeps provider ids of).
    conversations: [String; 3],
    session: String,
    transfer: String,
    deliveries: Vec<String>,
}

impl Footprint {
    /// Every id, plus what identifies the person, as the bytes a store record could hold.
    fn needles(&self, person: &Person) -> Vec<Vec<u8>> {
        let mut ids = vec![self.contact.clone(), self.session.clone(), self.transfer.clone()];
        ids.extend(self.conversations.iter().cloned());
        ids.extend(self.deliveries.iter().cloned());
        let mut needles: Vec<Vec<u8>> = Vec::new();
        for id in ids {
            needles.push(uuid::Uuid::parse_str(&id).expect("a UUID").as_bytes().to_vec());
            needles.push(id.into_bytes());
        }
        for text in [person.provider_id, person.last_name, person.email] {
            needles.push(text.as_bytes().to_vec());
        }
        needles
    }
}

/// `person` writes on two channels: an async hello (its reply delivery stays pending), a flow
/// left waiting at its step, and a transfer to a human (the takeover call is delivered).
async fn converse(app: &TestApp, bot: &str, person: &Person) -> Footprint {
    let tag = person.first_name.to_lowercase();
    let hello = say(app, bot, person, "wa-main", &format!("wamid.{tag}.1"), "hi", true).await;
    let main = str_of(&hello, "conversation_id");
    let flow = say(app, bot, person, "wa-main", &format!("wamid.{tag}.2"), "order", false).await;
    assert_eq!(reply_texts(&flow), ["Let's find your order.", "Your order number?"]);
    let human = say(app, bot, person, "wa-backup", &format!("wamid.{tag}.3"), "human", false).await;
    let backup = str_of(&human, "conversation_id");
    let contact = str_of(&human, "contact_id");
    assert_eq!(str_of(&flow, "contact_id"), contact, "one contact on both channels");

    let session = str_of(&get_ok(app, &format!("/v1/conversations/{main}")).await["session"], "id");
    let transfers = get_ok(app, "/v1/transfers").await;
    let transfer = transfers["transfers"]
        .as_array()
        .expect("transfers")
        .iter()
        .find(|t| t["conversation_id"] == backup.as_str())
        .map(|t| str_of(t, "id"))
        .expect("a transfer of the wa-backup conversation");
    // The reply was tried once and waits for its retry; the takeover call went through.
    let conversations = [main, backup];
    let deliveries = eventually("the deliveries to be attempted", || async {
        let all = get_ok(app, "/v1/webhook-deliveries?limit=500").await;
        let mine: Vec<&Value> = all["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|d| conversations.iter().any(|c| d["conversation_id"] == c.as_str()))
            .collect();
        let tried = |kind: &str, status: &str| {
            mine.iter().any(|d| d["kind"] == kind && d["status"] == status && d["attempts"].as_u64() >= Some(1))
        };
        (tried("bot_reply", "pending") && tried("human_takeover", "delivered"))
            .then(|| mine.iter().map(|d| str_of(d, "id")).collect::<Vec<_>>())
    })
    .await;
    // More turns than an actor keeps provider ids of (64), in a conversation of their own: the
    // oldest id leaves the window and gets a record in `dedupe` (the others keep their answers
    // in their turns).
    let mut extra = String::new();
    for n in 0..=64 {
        let said = say(app, bot, person, "wa-extra", &format!("wamid.{tag}.extra.{n}"), "thanks", false).await;
        extra = str_of(&said, "conversation_id");
    }
    let [main, backup] = conversations;
    Footprint { contact, conversations: [main, backup, extra], session, transfer, deliveries }
}

/// The store's trees holding an entry that mentions any of `needles`, with how many.
fn mentions(app: &TestApp, needles: &[Vec<u8>]) -> BTreeMap<String, usize> {
    let needles: Vec<&[u8]> = needles.iter().map(Vec::as_slice).collect();
    app.store.entries_mentioning(&needles).expect("store scan").into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// Erasure
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn erasing_a_contact_leaves_no_trace_of_them_and_everyone_else_untouched() {
    // Arrange: two people with conversations, sessions, transfers and deliveries each.
    let hooks = receiver().await;
    let app = spawn_app_with(|s| s.webhooks.retry_schedule_secs = vec![3600]).await;
    let bot = chatbot(&app, &hooks).await;
    let ada = converse(&app, &bot, &ADA).await;
    let grace = converse(&app, &bot, &GRACE).await;
    let before = mentions(&app, &ada.needles(&ADA));
    for tree in [
        "contacts",
        "conversations",
        "conv_by_bot",
        "conv_by_contact",
        "messages",
        "dedupe",
        "sessions",
        "sessions_by_conversation",
        "transfers",
        "transfers_by_conversation",
        "transfer_queue",
        "outbox",
        "outbox_conv",
        "outbox_by_tenant",
    ] {
        assert!(before.contains_key(tree), "the scan sees Ada in {tree} before the erasure: {before:?}");
    }
    let grace_before = mentions(&app, &grace.needles(&GRACE));
    let grace_messages: Vec<Value> = {
        let mut all = Vec::new();
        for c in &grace.conversations {
            all.push(get_ok(&app, &format!("/v1/conversations/{c}/messages")).await);
        }
        all
    };

    // Act
    let response = delete(&app, &format!("/v1/contacts/{}", ada.contact), &app.admin_key).await;

    // Assert: 204, and nothing of Ada answers any more.
    assert_eq!(response.status(), 204);
    assert!(response.text().await.expect("body").is_empty(), "204 has no body");
    assert_eq!(status_of(&app, &format!("/v1/contacts/{}", ada.contact)).await, 404);
    for c in &ada.conversations {
        for path in [
            format!("/v1/conversations/{c}"),
            format!("/v1/chatbots/{bot}/conversations/{c}"),
            format!("/v1/conversations/{c}/messages"),
            format!("/v1/conversations/{c}/export"),
        ] {
            assert_eq!(status_of(&app, &path).await, 404, "GET {path}");
        }
    }
    assert_eq!(status_of(&app, &format!("/v1/sessions/{}", ada.session)).await, 404);
    assert_eq!(status_of(&app, &format!("/v1/transfers/{}", ada.transfer)).await, 404);
    for d in &ada.deliveries {
        assert_eq!(status_of(&app, &format!("/v1/webhook-deliveries/{d}")).await, 404);
    }
    let listed = get_ok(&app, &format!("/v1/chatbots/{bot}/conversations?contactId={}", ada.contact)).await;
    assert_eq!(listed["items"], json!([]));
    let transfers = get_ok(&app, "/v1/transfers").await;
    assert_eq!(transfers["general_queue_count"], 1, "only Grace waits in the queue: {transfers}");
    assert!(transfers["transfers"].as_array().unwrap().iter().all(|t| t["contact_id"] == grace.contact.as_str()));
    let sessions = get_ok(&app, "/v1/sessions").await;
    assert!(sessions["items"].as_array().unwrap().iter().all(|s| s["contact_id"] == grace.contact.as_str()));

    // Assert: no tree of the store mentions Ada, also a moment later (nothing rewrote her).
    assert_eq!(mentions(&app, &ada.needles(&ADA)), BTreeMap::new(), "entries still mentioning Ada");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mentions(&app, &ada.needles(&ADA)), BTreeMap::new(), "entries mentioning Ada came back");

    // Assert: Grace keeps everything.
    assert_eq!(mentions(&app, &grace.needles(&GRACE)), grace_before, "Grace's entries");
    let contact = get_ok(&app, &format!("/v1/contacts/{}", grace.contact)).await;
    assert_eq!(contact["last_name"], "Hopper");
    let mut ids: Vec<String> =
        contact["conversation_ids"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    ids.sort();
    let mut expected = grace.conversations.to_vec();
    expected.sort();
    assert_eq!(ids, expected);
    for (c, messages) in grace.conversations.iter().zip(&grace_messages) {
        assert_eq!(&get_ok(&app, &format!("/v1/conversations/{c}/messages")).await, messages);
    }
    get_ok(&app, &format!("/v1/sessions/{}", grace.session)).await;
    get_ok(&app, &format!("/v1/transfers/{}", grace.transfer)).await;
    for d in &grace.deliveries {
        get_ok(&app, &format!("/v1/webhook-deliveries/{d}")).await;
    }
}

#[tokio::test]
async fn a_message_after_the_erasure_starts_a_fresh_conversation() {
    // Arrange
    let hooks = receiver().await;
    let app = spawn_app().await;
    let bot = chatbot(&app, &hooks).await;
    let first = say(&app, &bot, &ADA, "wa-main", "wamid.1", "hi", false).await;
    assert_eq!(reply_texts(&first), [GREETING]);
    let later = say(&app, &bot, &ADA, "wa-main", "wamid.2", "anything", false).await;
    assert_eq!(reply_texts(&later), [FALLBACK]);
    let contact = str_of(&first, "contact_id");
    let response = delete(&app, &format!("/v1/contacts/{contact}"), &app.admin_key).await;
    assert_eq!(response.status(), 204);

    // Act: the same person, the same provider message id as before.
    let again = say(&app, &bot, &ADA, "wa-main", "wamid.1", "hi", false).await;

    // Assert: a first message again (greeting, not a duplicate), with only the new messages.
    assert_eq!(again["duplicate"], false, "the provider message id was forgotten");
    assert_eq!(reply_texts(&again), [GREETING]);
    let conversation = str_of(&again, "conversation_id");
    let messages = get_ok(&app, &format!("/v1/conversations/{conversation}/messages")).await;
    let items = messages["items"].as_array().unwrap();
    assert_eq!(seqs(items), [1, 2]);
    assert_eq!(items[0]["content"], "hi");
    let view = get_ok(&app, &format!("/v1/conversations/{conversation}")).await;
    assert_eq!(view["message_count"], 2);
    let contact = get_ok(&app, &format!("/v1/contacts/{}", str_of(&again, "contact_id"))).await;
    assert_eq!(contact["conversation_ids"], json!([conversation]));
    assert_eq!(contact["first_name"], "Ada");
}

#[tokio::test]
async fn a_contact_is_erased_only_by_its_own_tenant_with_the_write_scope() {
    // Arrange
    let hooks = receiver().await;
    let app = spawn_app().await;
    let bot = chatbot(&app, &hooks).await;
    let handled = say(&app, &bot, &ADA, "wa-main", "wamid.1", "hi", false).await;
    let contact = str_of(&handled, "contact_id");
    let conversation = str_of(&handled, "conversation_id");
    let path = format!("/v1/contacts/{contact}");
    let stranger = app.key_for_new_tenant(&["admin"]);
    let reader = app.key_with_scopes(&["conversations:read"]);

    // Act and assert: another tenant sees nothing; a reader may look but not erase.
    assert_error(app.get(&path, &stranger).await, 404, "Contact not found").await;
    assert_error(delete(&app, &path, &stranger).await, 404, "Contact not found").await;
    assert_error(delete(&app, &path, &reader).await, 403, "conversations:write").await;
    assert_error(app.request(Method::DELETE, &path, "").send().await.expect("request"), 401, "").await;
    for missing in ["/v1/contacts/0190f0f0-0000-7000-8000-000000000000", "/v1/contacts/not-a-uuid"] {
        assert_error(delete(&app, missing, &app.admin_key).await, 404, "Contact not found").await;
    }
    let seen = body(app.get(&path, &reader).await).await;

    // Assert: the contact and its conversation are all still there.
    assert_eq!(seen["id"], contact.as_str());
    assert_eq!(seen["provider_id"], ADA.provider_id);
    assert_eq!(seen["phones"], json!([ADA.provider_id]));
    assert_eq!(seen["emails"], json!([ADA.email]));
    assert_eq!(seen["conversation_ids"], json!([conversation]));
    let messages = get_ok(&app, &format!("/v1/conversations/{conversation}/messages")).await;
    assert_eq!(seqs(messages["items"].as_array().unwrap()), [1, 2]);
}

// ---------------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_export_holds_the_conversation_its_contact_and_every_message_in_seq_order() {
    // Arrange: a flow run to its end, a long chat (more messages than one export chunk), a transfer.
    let hooks = receiver().await;
    let app = spawn_app().await;
    let bot = chatbot(&app, &hooks).await;
    let first = say(&app, &bot, &ADA, "wa-main", "wamid.0", "order", false).await;
    say(&app, &bot, &ADA, "wa-main", "wamid.1", "A-42", false).await;
    for i in 2..150 {
        say(&app, &bot, &ADA, "wa-main", &format!("wamid.{i}"), &format!("message {i}"), false).await;
    }
    say(&app, &bot, &ADA, "wa-main", "wamid.150", "human", false).await;
    let conversation = str_of(&first, "conversation_id");
    let stored = get_ok(&app, &format!("/v1/conversations/{conversation}/messages?limit=1000")).await;
    let stored = stored["items"].as_array().unwrap().clone();
    assert!(stored.len() > 300, "a long conversation: {} messages", stored.len());

    // Act
    let response = app.get(&format!("/v1/chatbots/{bot}/conversations/{conversation}/export"), &app.admin_key).await;

    // Assert: a JSON attachment.
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(
        headers["content-disposition"].to_str().unwrap(),
        format!("attachment; filename=\"conversation-{conversation}.json\"")
    );
    let export = body(response).await;
    // Assert: every message, in order, as the messages route serves them.
    let messages = export["messages"].as_array().expect("messages");
    assert_eq!(seqs(messages), (1..=stored.len() as u64).collect::<Vec<_>>());
    assert_eq!(messages, &stored);
    // Assert: the conversation, its contact, its session (finished) and its transfer.
    assert_eq!(export["conversation"]["id"], conversation.as_str());
    assert_eq!(export["conversation"]["message_count"], stored.len());
    assert_eq!(export["contact"]["id"], first["contact_id"]);
    assert_eq!(export["contact"]["last_name"], "Lovelace");
    assert_eq!(export["contact"]["emails"], json!([ADA.email]));
    let sessions = export["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["variables"]["order"], "A-42");
    assert_eq!(sessions[0]["status"], "closed");
    let transfers = export["transfers"].as_array().expect("transfers");
    assert_eq!(transfers.len(), 1);
    assert_eq!(transfers[0]["conversation_id"], conversation.as_str());
    assert_eq!(transfers[0]["status"], "active");
    let exported_at = export["exported_at"].as_str().expect("exported_at");
    chrono::DateTime::parse_from_rfc3339(exported_at).expect("exported_at is RFC 3339");

    // Assert: the flat path exports the same; readers may, others may not.
    let reader = app.key_with_scopes(&["conversations:read"]);
    let flat = format!("/v1/conversations/{conversation}/export");
    let mut again = body(app.get(&flat, &reader).await).await;
    again["exported_at"] = export["exported_at"].clone();
    assert_eq!(again, export);
    assert_error(app.get(&flat, &app.key_with_scopes(&["messages:handle"])).await, 403, "conversations:read").await;
    assert_error(app.get(&flat, &app.key_for_new_tenant(&["admin"])).await, 404, "Conversation not found").await;
}

#[tokio::test]
async fn an_export_of_a_conversation_without_messages_is_a_complete_document() {
    // Arrange: a conversation opened without a message.
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Quiet").await;
    let opened = json!({ "channelId": "wa-main", "providerId": "+1555", "contact": { "first_name": "Bo" } });
    let (status, conversation) = call(&app, Method::POST, &format!("/v1/chatbots/{bot}/conversations"), &opened).await;
    assert_eq!(status, 201);

    // Act
    let export = get_ok(&app, &format!("/v1/conversations/{}/export", str_of(&conversation, "id"))).await;

    // Assert
    assert_eq!(export["messages"], json!([]));
    assert_eq!(export["sessions"], json!([]));
    assert_eq!(export["transfers"], json!([]));
    assert_eq!(export["contact"]["first_name"], "Bo");
    assert_eq!(export["conversation"]["id"], conversation["id"]);
}

// ---------------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn messages_past_their_retention_are_swept_and_the_seq_continues() {
    // Arrange: messages are kept 8.64 s, swept every second.
    let app = spawn_app_with(|s| {
        s.storage.message_retention_days = 0.0001;
        s.storage.retention_sweep_secs = 1;
    })
    .await;
    let bot = app.create_chatbot(&app.admin_key, "Forgetful").await;
    let first = app.handle_ok(&app.admin_key, &bot, "+1555", "hi").await;
    app.handle_ok(&app.admin_key, &bot, "+1555", "hello").await;
    let conversation = str_of(&first, "conversation_id");
    let messages_path = format!("/v1/conversations/{conversation}/messages");
    let all = get_ok(&app, &messages_path).await;
    assert_eq!(seqs(all["items"].as_array().unwrap()), [1, 2, 3, 4]);
    tokio::time::sleep(Duration::from_millis(9200)).await;

    // Act: a new exchange once the first ones are past their retention.
    let newer = app.handle_ok(&app.admin_key, &bot, "+1555", "again").await;

    // Assert: the old messages go at the next sweep; the newer ones stay.
    let left = eventually("the sweep", || async {
        let page = get_ok(&app, &messages_path).await;
        let left = seqs(page["items"].as_array().unwrap());
        (!left.contains(&1)).then_some(left)
    })
    .await;
    assert_eq!(left, [5, 6], "the old messages are gone, the newer remain");
    assert_eq!(reply_texts(&newer), [FALLBACK], "not mistaken for a first message");

    // Assert: the conversation stays and its numbering continues.
    let later = app.handle_ok(&app.admin_key, &bot, "+1555", "and again").await;
    assert_eq!(reply_texts(&later), [FALLBACK]);
    let page = get_ok(&app, &messages_path).await;
    assert_eq!(seqs(page["items"].as_array().unwrap()), [5, 6, 7, 8]);
    let view = get_ok(&app, &format!("/v1/conversations/{conversation}")).await;
    assert_eq!(view["id"], conversation.as_str());
}

#[tokio::test]
async fn deliveries_settled_past_their_retention_are_swept_and_pending_ones_stay() {
    // Arrange: settled deliveries are kept about 2.6 s, swept every second; replies are refused
    // (each waits an hour for its retry), takeovers accepted.
    let app = spawn_app_with(|s| {
        s.storage.delivery_retention_days = 0.00003;
        s.storage.retention_sweep_secs = 1;
        s.webhooks.retry_schedule_secs = vec![3600];
    })
    .await;
    let hooks = receiver().await;
    let bot = chatbot(&app, &hooks).await;
    let hello = say(&app, &bot, &ADA, "wa-main", "wamid.ada.1", "hi", true).await;
    say(&app, &bot, &ADA, "wa-backup", "wamid.ada.2", "human", false).await;
    let (pending, delivered) = eventually("the deliveries to be attempted", || async {
        let all = get_ok(&app, "/v1/webhook-deliveries?limit=500").await;
        let items = all["items"].as_array().expect("items").clone();
        let tried = |kind: &str, status: &str| {
            items
                .iter()
                .find(|d| d["kind"] == kind && d["status"] == status && d["attempts"].as_u64() >= Some(1))
                .map(|d| str_of(d, "id"))
        };
        tried("bot_reply", "pending").zip(tried("human_takeover", "delivered"))
    })
    .await;

    // Act: the sweep after the delivered one's retention has passed.
    eventually("the sweep", || async {
        (status_of(&app, &format!("/v1/webhook-deliveries/{delivered}")).await == 404).then_some(())
    })
    .await;

    // Assert: the delivered one is gone from the list and from every tree of the store.
    let all = get_ok(&app, "/v1/webhook-deliveries?limit=500").await;
    let ids: Vec<String> = all["items"].as_array().expect("items").iter().map(|d| str_of(d, "id")).collect();
    assert_eq!(ids, [pending.as_str()], "only the pending delivery is listed");
    let id = uuid::Uuid::parse_str(&delivered).expect("a UUID");
    let needles = [id.as_bytes().to_vec(), delivered.clone().into_bytes()];
    assert_eq!(mentions(&app, &needles), BTreeMap::new(), "no record names the swept delivery");

    // Assert: the pending one, older than the retention too, stays.
    let kept = get_ok(&app, &format!("/v1/webhook-deliveries/{pending}")).await;
    assert_eq!(kept["status"], "pending");
    assert_eq!(kept["conversation_id"], hello["conversation_id"]);

    // Assert: a delivery settled since is younger than the retention and outlives a sweep.
    say(&app, &bot, &GRACE, "wa-backup", "wamid.grace.1", "human", false).await;
    let young = eventually("the new takeover call", || async {
        let all = get_ok(&app, "/v1/webhook-deliveries?status=delivered").await;
        all["items"].as_array().expect("items").first().map(|d| str_of(d, "id"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status_of(&app, &format!("/v1/webhook-deliveries/{young}")).await, 200, "kept until its retention");
}
