//! Flow sessions through `/v1/sessions`: listing and filters, pause/resume/close and what the bot
//! does after each, idle expiry, and the other ways a session ends (bot-control pause, an agent
//! answering from the phone) or changes (conversation variables).

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_error, body, call, get_ok, spawn_app, tick, TestApp};

const FALLBACK: &str = "Sorry, I didn't understand that. Please try again.";

/// A flow with a rating step (buttons) then a comment step, triggered by "feedback".
fn feedback_flow() -> Value {
    json!({
        "name": "Feedback",
        "trigger_keywords": ["feedback"],
        "initial_message": "Hi! I'd like to collect your feedback.",
        "completion_message": "Thank you, {{name}}!",
        "steps": [
            { "step_name": "rating", "step_order": 1, "message": "How would you rate your experience?",
              "message_type": "buttons", "store_as": "rating",
              "buttons": [{ "id": "excellent", "title": "Excellent" }, { "id": "good", "title": "Good" },
                          { "id": "poor", "title": "Poor" }] },
            { "step_name": "comment", "step_order": 2, "message": "Any comments, {{name}}?", "message_type": "text",
              "input_type": "text", "store_as": "comment" }
        ]
    })
}

/// A chatbot with the feedback flow; returns its id.
async fn bot_with_feedback_flow(app: &TestApp, name: &str) -> String {
    let bot = app.create_chatbot(&app.admin_key, name).await;
    let (status, value) = call(app, Method::POST, &format!("/v1/chatbots/{bot}/flows"), &feedback_flow()).await;
    assert_eq!(status, 201, "create flow answered {value}");
    bot
}

/// Sends a text from `user`; asserts 200.
async fn say(app: &TestApp, bot: &str, user: &str, text: &str) -> Value {
    app.handle_ok(&app.admin_key, bot, user, text).await
}

fn texts(handled: &Value) -> Vec<String> {
    handled["replies"]
        .as_array()
        .unwrap_or_else(|| panic!("no replies in {handled}"))
        .iter()
        .map(|r| r["text"].as_str().expect("text").to_string())
        .collect()
}

fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or_else(|| panic!("no {field} in {value}"))
}

/// Starts the feedback flow for `user` (a first message, then the trigger); returns the
/// conversation id and the session as listed.
async fn start_feedback(app: &TestApp, bot: &str, user: &str) -> (String, Value) {
    tick().await;
    say(app, bot, user, "hi").await;
    let started = say(app, bot, user, "feedback").await;
    assert_eq!(texts(&started), ["Hi! I'd like to collect your feedback.", "How would you rate your experience?"]);
    let conversation = str_of(&started, "conversation_id").to_string();
    let session = session_of(app, bot, &conversation).await;
    (conversation, session)
}

/// Lists sessions with a query string.
async fn list(app: &TestApp, query: &str) -> Vec<Value> {
    get_ok(app, &format!("/v1/sessions{query}")).await["items"].as_array().expect("items").clone()
}

/// The newest session of a conversation.
async fn session_of(app: &TestApp, bot: &str, conversation: &str) -> Value {
    list(app, &format!("?chatbot_id={bot}"))
        .await
        .into_iter()
        .find(|s| s["conversation_id"] == conversation)
        .unwrap_or_else(|| panic!("no session for conversation {conversation}"))
}

async fn get_session(app: &TestApp, id: &str) -> Value {
    get_ok(app, &format!("/v1/sessions/{id}")).await
}

/// PATCHes a session's status, asserting 200; returns the session.
async fn set_status(app: &TestApp, id: &str, status: &str) -> Value {
    let (code, value) = call(app, Method::PATCH, &format!("/v1/sessions/{id}"), &json!({ "status": status })).await;
    assert_eq!(code, 200, "PATCH session {status} answered {value}");
    value
}

async fn conversation(app: &TestApp, id: &str) -> Value {
    get_ok(app, &format!("/v1/conversations/{id}")).await
}

fn ids(sessions: &[Value]) -> Vec<&str> {
    sessions.iter().map(|s| str_of(s, "id")).collect()
}

#[tokio::test]
async fn sessions_are_listed_newest_first_and_filtered_by_chatbot_and_status() {
    // Arrange: two conversations on one chatbot, one on another; one session closed.
    let app = spawn_app().await;
    let shop = bot_with_feedback_flow(&app, "Shop").await;
    let other = bot_with_feedback_flow(&app, "Other").await;
    let (first_conversation, first) = start_feedback(&app, &shop, "u1").await;
    let (_, second) = start_feedback(&app, &shop, "u2").await;
    let (_, elsewhere) = start_feedback(&app, &other, "u3").await;
    set_status(&app, str_of(&first, "id"), "close").await;

    // Act
    let of_shop = list(&app, &format!("?chatbot_id={shop}")).await;
    let all = list(&app, "").await;
    let closed = list(&app, "?status=closed").await;
    let open_in_shop = list(&app, &format!("?chatbot_id={shop}&status=open")).await;
    let paused = list(&app, "?status=paused").await;
    let limited = list(&app, "?limit=1").await;

    // Assert
    assert_eq!(ids(&of_shop), [str_of(&second, "id"), str_of(&first, "id")], "newest first");
    assert_eq!(ids(&all), [str_of(&elsewhere, "id"), str_of(&second, "id"), str_of(&first, "id")]);
    assert_eq!(ids(&closed), [str_of(&first, "id")]);
    assert_eq!(ids(&open_in_shop), [str_of(&second, "id")]);
    assert!(paused.is_empty());
    assert_eq!(ids(&limited), [str_of(&elsewhere, "id")]);

    // One session in full.
    let session = get_session(&app, str_of(&second, "id")).await;
    assert_eq!(session, second);
    assert_eq!(session["chatbot_id"], shop.as_str());
    assert_eq!(session["status"], "open");
    assert_eq!(session["current_step"], "rating");
    assert!(session["current_flow_id"].is_string());
    assert!(session["contact_id"].is_string());
    assert!(session["tenant_id"].is_string());
    assert!(session["started_at"].is_string());
    assert!(session["last_activity"].is_string());
    assert_eq!(session["closed_at"], Value::Null);
    let closed_one = get_session(&app, str_of(&first, "id")).await;
    assert_eq!(closed_one["conversation_id"], first_conversation.as_str());
    assert!(closed_one["closed_at"].is_string());
}

#[tokio::test]
async fn bad_session_list_filters_are_refused() {
    let app = spawn_app().await;

    for (query, field) in [
        ("?status=sleeping", "status"),
        ("?chatbot_id=not-a-uuid", "chatbot_id"),
        ("?limit=0", "limit"),
        ("?limit=many", "limit"),
    ] {
        let error = assert_error(app.get(&format!("/v1/sessions{query}"), &app.admin_key).await, 400, "").await;
        assert_eq!(error["field"], field, "{query}: {error}");
    }
}

#[tokio::test]
async fn a_paused_session_silences_the_bot_and_keeps_its_step() {
    // Arrange
    let app = spawn_app().await;
    let bot = bot_with_feedback_flow(&app, "Shop").await;
    let (conversation_id, session) = start_feedback(&app, &bot, "u1").await;
    let id = str_of(&session, "id").to_string();

    // Act
    let paused = set_status(&app, &id, "pause").await;
    let while_paused = say(&app, &bot, "u1", "good").await;

    // Assert
    assert_eq!(paused["status"], "paused");
    assert_eq!(paused["current_step"], "rating");
    assert_eq!(texts(&while_paused), Vec::<String>::new(), "the bot is silent");
    let still = get_session(&app, &id).await;
    assert_eq!(still["status"], "paused");
    assert_eq!(still["current_step"], "rating");
    assert!(still["variables"].get("rating").is_none(), "the answer was not taken: {still}");
    assert_eq!(conversation(&app, &conversation_id).await["session"]["status"], "paused");
    // Not even the trigger word restarts it while paused.
    assert_eq!(texts(&say(&app, &bot, "u1", "feedback").await), Vec::<String>::new());
}

#[tokio::test]
async fn a_resumed_session_takes_the_next_answer_at_the_same_step() {
    // Arrange
    let app = spawn_app().await;
    let bot = bot_with_feedback_flow(&app, "Shop").await;
    let (_, session) = start_feedback(&app, &bot, "u1").await;
    let id = str_of(&session, "id").to_string();
    set_status(&app, &id, "pause").await;
    say(&app, &bot, "u1", "poor").await;

    // Act
    let resumed = set_status(&app, &id, "resume").await;
    let answered = say(&app, &bot, "u1", "Good").await;

    // Assert
    assert_eq!(resumed["status"], "open");
    assert_eq!(resumed["current_step"], "rating");
    assert_eq!(texts(&answered), ["Any comments, ?"]);
    let session = get_session(&app, &id).await;
    assert_eq!(session["variables"]["rating"], "good", "the answer after resuming counts, not the one while paused");
    assert_eq!(session["current_step"], "comment");
}

#[tokio::test]
async fn open_is_accepted_like_resume() {
    let app = spawn_app().await;
    let bot = bot_with_feedback_flow(&app, "Shop").await;
    let (_, session) = start_feedback(&app, &bot, "u1").await;
    let id = str_of(&session, "id").to_string();
    set_status(&app, &id, "pause").await;

    assert_eq!(set_status(&app, &id, "open").await["status"], "open");

    assert_eq!(texts(&say(&app, &bot, "u1", "excellent").await), ["Any comments, ?"]);
}

#[tokio::test]
async fn a_closed_session_makes_the_next_message_start_over() {
    // Arrange
    let app = spawn_app().await;
    let bot = bot_with_feedback_flow(&app, "Shop").await;
    let (conversation_id, session) = start_feedback(&app, &bot, "u1").await;
    let id = str_of(&session, "id").to_string();

    // Act
    let closed = set_status(&app, &id, "close").await;
    let after = say(&app, &bot, "u1", "good").await;
    let restarted = say(&app, &bot, "u1", "feedback").await;

    // Assert
    assert_eq!(closed["status"], "closed");
    assert!(closed["closed_at"].is_string());
    assert_eq!(texts(&after), [FALLBACK], "the closed flow no longer takes answers");
    assert_eq!(texts(&restarted), ["Hi! I'd like to collect your feedback.", "How would you rate your experience?"]);
    let fresh = session_of(&app, &bot, &conversation_id).await;
    assert_ne!(fresh["id"], id.as_str(), "a new session");
    assert_eq!(fresh["status"], "open");
    assert_eq!(get_session(&app, &id).await["status"], "closed", "the old one stays closed");
    // Closing is idempotent.
    assert_eq!(set_status(&app, &id, "close").await["status"], "closed");
}

#[tokio::test]
async fn a_bad_session_patch_is_refused_and_changes_nothing() {
    // Arrange
    let app = spawn_app().await;
    let bot = bot_with_feedback_flow(&app, "Shop").await;
    let (_, session) = start_feedback(&app, &bot, "u1").await;
    let id = str_of(&session, "id").to_string();
    let path = format!("/v1/sessions/{id}");

    // Act + assert
    for patch in [json!({ "status": "sleeping" }), json!({}), json!({ "status": 3 })] {
        let response = app.send_json(Method::PATCH, &path, &app.admin_key, &patch).await;
        let error = assert_error(response, 400, "").await;
        assert_eq!(error["field"], "status", "{patch}: {error}");
    }
    let response = app.send_json(Method::PATCH, &path, &app.admin_key, &json!({ "status": "pause", "x": 1 })).await;
    assert_error(response, 400, "").await;

    let unchanged = get_session(&app, &id).await;
    assert_eq!(unchanged["status"], "open");
    assert_eq!(unchanged["current_step"], "rating");
    assert_eq!(texts(&say(&app, &bot, "u1", "good").await), ["Any comments, ?"], "the flow still runs");
}

#[tokio::test]
async fn another_tenants_session_is_not_found() {
    // Arrange
    let app = spawn_app().await;
    let bot = bot_with_feedback_flow(&app, "Shop").await;
    let (_, session) = start_feedback(&app, &bot, "u1").await;
    let id = str_of(&session, "id").to_string();
    let stranger = app.key_for_new_tenant(&["admin"]);

    // Act + assert
    assert_error(app.get(&format!("/v1/sessions/{id}"), &stranger).await, 404, "").await;
    let response =
        app.send_json(Method::PATCH, &format!("/v1/sessions/{id}"), &stranger, &json!({ "status": "close" })).await;
    assert_error(response, 404, "").await;
    let theirs = app.get("/v1/sessions", &stranger).await;
    assert_eq!(theirs.status(), 200);
    assert_eq!(body(theirs).await["items"], json!([]));
    let unknown = uuid::Uuid::new_v4();
    assert_error(app.get(&format!("/v1/sessions/{unknown}"), &app.admin_key).await, 404, "").await;
    assert_error(app.get("/v1/sessions/not-a-uuid", &app.admin_key).await, 404, "").await;

    assert_eq!(get_session(&app, &id).await["status"], "open", "nothing changed");
}

#[tokio::test]
async fn sessions_need_conversation_scopes() {
    let app = spawn_app().await;
    let bot = bot_with_feedback_flow(&app, "Shop").await;
    let (_, session) = start_feedback(&app, &bot, "u1").await;
    let id = str_of(&session, "id").to_string();
    let reader = app.key_with_scopes(&["conversations:read"]);
    let outsider = app.key_with_scopes(&["messages:handle"]);

    assert_error(app.get("/v1/sessions", &outsider).await, 403, "conversations:read").await;
    assert_eq!(app.get(&format!("/v1/sessions/{id}"), &reader).await.status(), 200);
    let response =
        app.send_json(Method::PATCH, &format!("/v1/sessions/{id}"), &reader, &json!({ "status": "close" })).await;
    assert_error(response, 403, "conversations:write").await;
    assert_eq!(get_session(&app, &id).await["status"], "open");
}

#[tokio::test]
async fn an_idle_session_expires_and_the_next_message_starts_fresh() {
    // Arrange: sessions time out after 1.2 s of silence.
    let app = spawn_app().await;
    let bot = bot_with_feedback_flow(&app, "Shop").await;
    let (status, value) =
        call(&app, Method::PUT, &format!("/v1/chatbots/{bot}/settings"), &json!({ "session_timeout_minutes": 0.02 }))
            .await;
    assert_eq!(status, 200, "{value}");
    let (conversation_id, session) = start_feedback(&app, &bot, "u1").await;
    let id = str_of(&session, "id").to_string();
    tokio::time::sleep(Duration::from_millis(2000)).await;

    // Act: a valid answer to the step, days (here: seconds) too late.
    let late = say(&app, &bot, "u1", "good").await;

    // Assert
    assert_eq!(texts(&late), [FALLBACK], "the stale flow does not answer");
    let old = get_session(&app, &id).await;
    assert_eq!(old["status"], "closed");
    assert!(old["closed_at"].is_string());
    assert!(old["variables"].get("rating").is_none(), "{old}");
    let closed = list(&app, &format!("?chatbot_id={bot}&status=closed")).await;
    assert_eq!(ids(&closed), [id.as_str()]);
    assert_eq!(conversation(&app, &conversation_id).await["session"], Value::Null);
    // The trigger starts the flow afresh.
    let restarted = say(&app, &bot, "u1", "feedback").await;
    assert_eq!(texts(&restarted)[0], "Hi! I'd like to collect your feedback.");
}

#[tokio::test]
async fn a_session_answered_in_time_does_not_expire() {
    // Arrange: a generous timeout of one minute.
    let app = spawn_app().await;
    let bot = bot_with_feedback_flow(&app, "Shop").await;
    let (status, _) =
        call(&app, Method::PUT, &format!("/v1/chatbots/{bot}/settings"), &json!({ "session_timeout_minutes": 1 }))
            .await;
    assert_eq!(status, 200);
    start_feedback(&app, &bot, "u1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act + assert
    assert_eq!(texts(&say(&app, &bot, "u1", "good").await), ["Any comments, ?"]);
}

#[tokio::test]
async fn a_bad_session_timeout_is_refused() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let path = format!("/v1/chatbots/{bot}/settings");

    for timeout in [json!(0), json!(-5), json!(600_000)] {
        let response =
            app.send_json(Method::PUT, &path, &app.admin_key, &json!({ "session_timeout_minutes": timeout })).await;
        let status = response.status().as_u16();
        let error = body(response).await;
        assert!(status == 400 || status == 422, "{timeout}: {status} {error}");
        assert_eq!(error["field"], "session_timeout_minutes", "{error}");
    }
    assert_eq!(get_ok(&app, &path).await["session_timeout_minutes"], 30.0);
}

#[tokio::test]
async fn pausing_the_bot_ends_the_active_session() {
    // Arrange
    let app = spawn_app().await;
    let bot = bot_with_feedback_flow(&app, "Shop").await;
    let (conversation_id, session) = start_feedback(&app, &bot, "u1").await;
    let id = str_of(&session, "id").to_string();
    let control = format!("/v1/conversations/{conversation_id}/bot-control");

    // Act
    let (status, paused) = call(&app, Method::POST, &control, &json!({ "action": "pause" })).await;
    let (resume_status, _) = call(&app, Method::POST, &control, &json!({ "action": "resume" })).await;
    let after = say(&app, &bot, "u1", "good").await;

    // Assert
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["bot_active"], false);
    assert_eq!(resume_status, 200);
    assert_eq!(get_session(&app, &id).await["status"], "closed");
    assert_eq!(texts(&after), [FALLBACK], "after the bot is back, the old step does not take answers");
}

#[tokio::test]
async fn an_agent_answering_from_the_phone_pauses_the_bot_and_ends_the_session() {
    // Arrange
    let app = spawn_app().await;
    let bot = bot_with_feedback_flow(&app, "Shop").await;
    let (conversation_id, session) = start_feedback(&app, &bot, "u1").await;
    let echo = json!({
        "channelId": "wa-main", "providerId": "u1",
        "message": { "type": "text", "text": "Hi, Maria here, let me help you.", "from_me": true },
    });

    // Act
    let (status, handled) = call(&app, Method::POST, &format!("/v1/chatbots/{bot}/conversations/handle"), &echo).await;
    let answer = say(&app, &bot, "u1", "good").await;

    // Assert
    assert_eq!(status, 200, "{handled}");
    assert_eq!(texts(&handled), Vec::<String>::new());
    assert_eq!(handled["bot_active"], false);
    assert_eq!(texts(&answer), Vec::<String>::new(), "the bot stays out of a human's conversation");
    assert_eq!(get_session(&app, str_of(&session, "id")).await["status"], "closed");
    let served = conversation(&app, &conversation_id).await;
    assert_eq!(served["bot_active"], false);
    assert_eq!(served["session"], Value::Null);
}

#[tokio::test]
async fn deleting_a_conversation_deletes_its_sessions() {
    // Arrange
    let app = spawn_app().await;
    let bot = bot_with_feedback_flow(&app, "Shop").await;
    let (conversation_id, session) = start_feedback(&app, &bot, "u1").await;
    let id = str_of(&session, "id").to_string();

    // Act
    let (status, deleted) =
        call(&app, Method::DELETE, &format!("/v1/conversations/{conversation_id}"), &json!({})).await;

    // Assert
    assert_eq!(status, 200, "{deleted}");
    assert_error(app.get(&format!("/v1/sessions/{id}"), &app.admin_key).await, 404, "").await;
    assert!(list(&app, &format!("?chatbot_id={bot}")).await.is_empty());
    // The same user writing again starts from scratch.
    assert_eq!(texts(&say(&app, &bot, "u1", "good").await), ["Hello! Welcome. How can I help you?"]);
}

#[tokio::test]
async fn variables_set_on_the_conversation_before_a_flow_starts_are_visible_in_it() {
    // Arrange
    let app = spawn_app().await;
    let bot = bot_with_feedback_flow(&app, "Shop").await;
    let conversation_id = str_of(&say(&app, &bot, "u1", "hi").await, "conversation_id").to_string();
    let (status, _) = call(
        &app,
        Method::PATCH,
        &format!("/v1/conversations/{conversation_id}"),
        &json!({ "variables": { "name": "Grace" } }),
    )
    .await;
    assert_eq!(status, 200);

    // Act
    say(&app, &bot, "u1", "feedback").await;
    let asked = say(&app, &bot, "u1", "poor").await;

    // Assert
    assert_eq!(texts(&asked), ["Any comments, Grace?"]);
}

#[tokio::test]
async fn patched_conversation_variables_merge_into_the_open_session() {
    // Arrange
    let app = spawn_app().await;
    let bot = bot_with_feedback_flow(&app, "Shop").await;
    let (conversation_id, session) = start_feedback(&app, &bot, "u1").await;
    let id = str_of(&session, "id").to_string();
    say(&app, &bot, "u1", "excellent").await;

    // Act
    let (status, patched) = call(
        &app,
        Method::PATCH,
        &format!("/v1/conversations/{conversation_id}"),
        &json!({ "variables": { "name": "Ada", "plan": "pro" } }),
    )
    .await;
    let finished = say(&app, &bot, "u1", "All good").await;

    // Assert
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["session"]["variables"]["name"], "Ada");
    assert_eq!(patched["session"]["variables"]["rating"], "excellent", "merged, not replaced");
    assert_eq!(texts(&finished), ["Thank you, Ada!"]);
    let session = get_session(&app, &id).await;
    assert_eq!(
        session["variables"],
        json!({ "rating": "excellent", "name": "Ada", "plan": "pro", "comment": "All good" })
    );
}
