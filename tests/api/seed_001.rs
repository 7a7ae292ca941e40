//! Seed `001` (Chatbot API): every `/api/chatbot/…` request the document shows, replayed with
//! its bodies verbatim (real ids substituted), answered in the `{"status": "success", "data": …}`
//! envelope on the tenant's default chatbot (or `X-Chatbot-Id`), errors as
//! `{"status": "error", "message": …}` with the native status.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{body, spawn_app, TestApp};

/// Sends `method` `path` with the admin key and an optional JSON body; returns status and body.
async fn call(app: &TestApp, method: Method, path: &str, payload: Option<&Value>) -> (u16, Value) {
    let mut request = app.request(method, path, &app.admin_key);
    if let Some(payload) = payload {
        request = request.json(payload);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, body(response).await)
}

/// The `data` of a success envelope answered with `status`.
async fn data(app: &TestApp, method: Method, path: &str, payload: Option<&Value>, status: u16) -> Value {
    let (got, value) = call(app, method.clone(), path, payload).await;
    assert_eq!(got, status, "{method} {path} answered {value}");
    assert_eq!(keys(&value), set(&["status", "data"]), "envelope of {value}");
    assert_eq!(value["status"], "success");
    value["data"].clone()
}

/// Asserts an error envelope with `status` whose message mentions `mentions`.
fn assert_envelope_error(status: u16, value: &Value, expected_status: u16, mentions: &str) {
    assert_eq!(status, expected_status, "answered {value}");
    assert_eq!(keys(value), set(&["status", "message"]), "error envelope of {value}");
    assert_eq!(value["status"], "error");
    let message = value["message"].as_str().expect("message");
    assert!(message.contains(mentions), "message {message:?} should mention {mentions:?}");
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap_or_else(|| panic!("not an object: {value}")).keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_else(|| panic!("no string {key} in {value}"))
}

/// Sends a text from `provider_id` to `bot`; returns the handle answer.
async fn say(app: &TestApp, bot: &str, provider_id: &str, text: &str) -> Value {
    let payload = json!({
        "channelId": "wa-main", "providerId": provider_id, "message": { "type": "text", "text": text },
        "contact": { "first_name": "John", "last_name": "Doe", "phones": ["1234567890"], "emails": [] },
    });
    let response = app.post(&format!("/v1/chatbots/{bot}/conversations/handle"), &app.admin_key, &payload).await;
    assert_eq!(response.status(), 200, "handle");
    body(response).await
}

fn reply_texts(handled: &Value) -> Vec<String> {
    handled["replies"].as_array().expect("replies").iter().map(|r| str_of(r, "text").to_string()).collect()
}

async fn create_team(app: &TestApp, name: &str) -> String {
    let (status, value) = call(app, Method::POST, "/v1/teams", Some(&json!({ "name": name }))).await;
    assert_eq!(status, 201, "create team answered {value}");
    str_of(&value, "id").to_string()
}

async fn create_agent(app: &TestApp, name: &str, teams: &[&str]) -> String {
    let payload = json!({ "name": name, "email": "jane@company.com", "team_ids": teams });
    let (status, value) = call(app, Method::POST, "/v1/agents", Some(&payload)).await;
    assert_eq!(status, 201, "create agent answered {value}");
    str_of(&value, "id").to_string()
}

/// The seed's "Feedback Collection" flow, its transfer step aimed at `team`.
fn feedback_flow(team: &str) -> Value {
    json!({ "name": "Feedback Collection", "trigger_keywords": ["feedback", "review"], "initial_message": "Hi! I'd like to collect your feedback.", "completion_message": "Thank you for your feedback!", "enabled": true, "panel_config": { "sections": [ { "id": "customer", "label": "Customer Info", "columns": 1, "collapsible": true, "default_collapsed": false, "order": 1, "fields": [ {"key": "rating", "label": "Rating", "order": 1}, {"key": "comment", "label": "Comment", "order": 2} ] } ] }, "steps": [ { "step_name": "rating", "step_order": 1, "message": "How would you rate your experience?", "message_type": "buttons", "input_type": "select", "buttons": [ {"id": "excellent", "title": "Excellent"}, {"id": "good", "title": "Good"}, {"id": "poor", "title": "Poor"} ], "store_as": "rating" }, { "step_name": "comment", "step_order": 2, "message": "Any additional comments?", "message_type": "text", "input_type": "text", "store_as": "comment" }, { "step_name": "transfer", "step_order": 3, "message": "Connecting you with our team...", "message_type": "transfer", "transfer_config": { "team_id": team, "notes": "Rating: {{rating}}" } } ]})
}

// --- settings ----------------------------------------------------------------------------------

#[tokio::test]
async fn get_settings_answers_the_default_chatbots_settings_in_the_envelope() {
    // Arrange
    let app = spawn_app().await;
    let first = app.create_chatbot(&app.admin_key, "First").await;
    app.create_chatbot(&app.admin_key, "Second").await;

    // Act
    let settings = data(&app, Method::GET, "/api/chatbot/settings", None, 200).await;

    // Assert
    assert_eq!(settings["id"], first.as_str());
    assert!(settings["account_id"].is_string());
    for key in [
        "chatbot_enabled",
        "ai_enabled",
        "ai_provider",
        "ai_model",
        "ai_temperature",
        "ai_max_tokens",
        "system_prompt",
        "greeting_message",
        "greeting_buttons",
        "fallback_message",
        "fallback_buttons",
        "transfer_keywords",
        "business_hours_enabled",
    ] {
        assert!(settings.get(key).is_some(), "{key} missing from {settings}");
    }
    assert_eq!(settings["greeting_message"], "Hello! Welcome. How can I help you?");
}

#[tokio::test]
async fn put_settings_with_the_seed_body_updates_the_default_chatbot() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Store").await;
    let seed_body = json!({ "chatbot_enabled": true, "ai_enabled": true, "ai_provider": "anthropic", "ai_model": "claude-3-5-sonnet-latest", "ai_temperature": 0.7, "system_prompt": "You are a helpful assistant for our e-commerce store...", "greeting_message": "Welcome! How can I assist you today?", "greeting_buttons": [ {"title": "My Orders"}, {"title": "Get Support"} ], "fallback_message": "I'm not sure I understand. Please choose an option:", "fallback_buttons": [ {"title": "Main Menu"} ]});

    // Act
    let updated = data(&app, Method::PUT, "/api/chatbot/settings", Some(&seed_body), 200).await;

    // Assert
    assert_eq!(updated["ai_provider"], "anthropic");
    assert_eq!(updated["greeting_message"], "Welcome! How can I assist you today?");
    assert_eq!(
        updated["greeting_buttons"],
        json!([{ "id": "my_orders", "title": "My Orders" }, { "id": "get_support", "title": "Get Support" }])
    );
    let native = body(app.get(&format!("/v1/chatbots/{bot}/settings"), &app.admin_key).await).await;
    assert_eq!(native["fallback_message"], "I'm not sure I understand. Please choose an option:");
    assert_eq!(native["system_prompt"], "You are a helpful assistant for our e-commerce store...");
    assert_eq!(native["fallback_buttons"], json!([{ "id": "main_menu", "title": "Main Menu" }]));
}

#[tokio::test]
async fn the_x_chatbot_id_header_picks_another_chatbot_of_the_tenant() {
    // Arrange
    let app = spawn_app().await;
    app.create_chatbot(&app.admin_key, "First").await;
    let second = app.create_chatbot(&app.admin_key, "Second").await;

    // Act
    let response = app
        .request(Method::PUT, "/api/chatbot/settings", &app.admin_key)
        .header("X-Chatbot-Id", &second)
        .json(&json!({ "greeting_message": "Second says hi" }))
        .send()
        .await
        .expect("request");

    // Assert
    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await["data"]["id"], second.as_str());
    let default = data(&app, Method::GET, "/api/chatbot/settings", None, 200).await;
    assert_eq!(default["greeting_message"], "Hello! Welcome. How can I help you?");
}

#[tokio::test]
async fn a_tenant_without_chatbots_or_a_foreign_chatbot_header_gets_a_404_envelope() {
    // Arrange
    let app = spawn_app().await;
    let stranger = app.key_for_new_tenant(&["admin"]);
    let theirs = app.create_chatbot(&stranger, "Theirs").await;

    // Act
    let (none_status, none) = call(&app, Method::GET, "/api/chatbot/settings", None).await;
    let response = app
        .request(Method::GET, "/api/chatbot/settings", &app.admin_key)
        .header("X-Chatbot-Id", &theirs)
        .send()
        .await
        .expect("request");
    let foreign_status = response.status().as_u16();
    let foreign = body(response).await;

    // Assert
    assert_envelope_error(none_status, &none, 404, "chatbot");
    assert_envelope_error(foreign_status, &foreign, 404, "Chatbot not found");
}

#[tokio::test]
async fn missing_credentials_and_invalid_settings_answer_error_envelopes() {
    // Arrange
    let app = spawn_app().await;
    app.create_chatbot(&app.admin_key, "Support").await;

    // Act
    let response = app.client.get(app.url("/api/chatbot/settings")).send().await.expect("request");
    let unauthenticated_status = response.status().as_u16();
    let unauthenticated = body(response).await;
    let too_long = json!({ "greeting_buttons": [{ "title": "A title that is far too long" }] });
    let (invalid_status, invalid) = call(&app, Method::PUT, "/api/chatbot/settings", Some(&too_long)).await;

    // Assert
    assert_eq!(unauthenticated_status, 401);
    assert_eq!(unauthenticated, json!({ "status": "error", "message": "Missing authentication" }));
    assert_envelope_error(invalid_status, &invalid, 422, "greeting_buttons[0].title");
}

// --- keyword rules -----------------------------------------------------------------------------

#[tokio::test]
async fn creating_the_seed_rule_answers_it_and_the_list_shows_it_in_items() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let seed_rule = json!({ "name": "Business Hours", "keywords": ["hours", "open", "when"], "match_type": "contains", "response_type": "text", "response": "We're open Monday-Friday, 9 AM to 6 PM EST.", "priority": 5, "enabled": true});

    // Act
    let created = data(&app, Method::POST, "/api/chatbot/keywords", Some(&seed_rule), 201).await;
    let listed = data(&app, Method::GET, "/api/chatbot/keywords", None, 200).await;

    // Assert
    assert_eq!(keys(&listed), set(&["items"]));
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], created["id"]);
    for key in ["name", "keywords", "match_type", "response_type", "response", "priority", "enabled"] {
        assert_eq!(items[0][key], seed_rule[key], "{key}");
    }
    let handled = say(&app, &bot, "u1", "when are you open?").await;
    assert_eq!(reply_texts(&handled), ["We're open Monday-Friday, 9 AM to 6 PM EST."]);
}

#[tokio::test]
async fn updating_and_deleting_a_rule_by_id() {
    // Arrange
    let app = spawn_app().await;
    app.create_chatbot(&app.admin_key, "Support").await;
    let rule = json!({ "name": "Hi", "keywords": ["hello"], "match_type": "contains", "response": "Hello!" });
    let created = data(&app, Method::POST, "/api/chatbot/keywords", Some(&rule), 201).await;
    let path = format!("/api/chatbot/keywords/{}", str_of(&created, "id"));

    // Act
    let updated = data(&app, Method::PUT, &path, Some(&json!({ "priority": 10, "response": "Hey!" })), 200).await;
    let deleted = data(&app, Method::DELETE, &path, None, 200).await;
    let (again_status, again) = call(&app, Method::DELETE, &path, None).await;

    // Assert
    assert_eq!(updated["priority"], 10);
    assert_eq!(updated["response"], "Hey!");
    assert_eq!(deleted, json!({ "deleted": true }));
    assert_envelope_error(again_status, &again, 404, "not found");
    assert_eq!(data(&app, Method::GET, "/api/chatbot/keywords", None, 200).await, json!({ "items": [] }));
}

#[tokio::test]
async fn a_rule_with_a_broken_regex_is_a_422_envelope_naming_the_keyword() {
    // Arrange
    let app = spawn_app().await;
    app.create_chatbot(&app.admin_key, "Support").await;
    let rule = json!({ "keywords": ["(unclosed"], "match_type": "regex", "response": "x" });

    // Act
    let (status, value) = call(&app, Method::POST, "/api/chatbot/keywords", Some(&rule)).await;

    // Assert
    assert_envelope_error(status, &value, 422, "keywords[0]");
}

// --- AI contexts -------------------------------------------------------------------------------

#[tokio::test]
async fn the_seed_ai_context_is_created_listed_updated_and_deleted() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let seed_context = json!({ "name": "Shipping Policy", "trigger_keywords": ["shipping", "delivery", "track"], "context_type": "static", "content": "We offer free shipping on orders over $50. Standard delivery takes 3-5 business days...", "priority": 5, "enabled": true});

    // Act
    let created = data(&app, Method::POST, "/api/chatbot/ai-contexts", Some(&seed_context), 201).await;
    let listed = data(&app, Method::GET, "/api/chatbot/ai-contexts", None, 200).await;
    let path = format!("/api/chatbot/ai-contexts/{}", str_of(&created, "id"));
    let updated = data(&app, Method::PUT, &path, Some(&json!({ "priority": 10 })), 200).await;
    let deleted = data(&app, Method::DELETE, &path, None, 200).await;

    // Assert
    assert_eq!(keys(&listed), set(&["items"]));
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    for key in ["name", "trigger_keywords", "context_type", "content", "priority", "enabled"] {
        assert_eq!(items[0][key], seed_context[key], "{key}");
    }
    assert_eq!(updated["priority"], 10);
    assert_eq!(deleted, json!({ "deleted": true }));
    let native = body(app.get(&format!("/v1/chatbots/{bot}/ai-contexts"), &app.admin_key).await).await;
    assert_eq!(native["items"], json!([]));
}

#[tokio::test]
async fn an_ai_context_without_keywords_is_an_error_envelope() {
    // Arrange
    let app = spawn_app().await;
    app.create_chatbot(&app.admin_key, "Support").await;
    let context = json!({ "name": "Empty", "trigger_keywords": [], "content": "x" });

    // Act
    let (status, value) = call(&app, Method::POST, "/api/chatbot/ai-contexts", Some(&context)).await;

    // Assert
    assert_envelope_error(status, &value, 422, "trigger_keywords");
}

// --- flows -------------------------------------------------------------------------------------

#[tokio::test]
async fn creating_the_seed_flow_answers_it_and_the_list_shows_it() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let team = create_team(&app, "Sales Team").await;

    // Act
    let created = data(&app, Method::POST, "/api/chatbot/flows", Some(&feedback_flow(&team)), 201).await;
    let listed = data(&app, Method::GET, "/api/chatbot/flows", None, 200).await;

    // Assert
    assert_eq!(created["name"], "Feedback Collection");
    assert_eq!(created["steps"].as_array().unwrap().len(), 3);
    assert_eq!(created["steps"][2]["transfer_config"]["team_id"], team.as_str());
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["id"], created["id"]);
    let handled = say(&app, &bot, "u1", "I have feedback").await;
    assert_eq!(
        reply_texts(&handled),
        ["Hi! I'd like to collect your feedback.", "How would you rate your experience?"]
    );
}

#[tokio::test]
async fn an_invalid_flow_is_an_error_envelope_naming_the_step() {
    // Arrange
    let app = spawn_app().await;
    app.create_chatbot(&app.admin_key, "Support").await;
    let team = create_team(&app, "Sales Team").await;
    let mut flow = feedback_flow(&team);
    flow["steps"][0]["buttons"][0]["title"] = json!("A title that is far too long");

    // Act
    let (status, value) = call(&app, Method::POST, "/api/chatbot/flows", Some(&flow)).await;

    // Assert
    assert_envelope_error(status, &value, 422, "steps[0].buttons[0].title");
}

// --- transfers ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_transfer_goes_from_create_through_pickup_and_assign_to_resume() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let team = create_team(&app, "Sales Team").await;
    let agent = create_agent(&app, "Jane Smith", &[&team]).await;
    let contact = say(&app, &bot, "1234567890", "hi").await["contact_id"].as_str().unwrap().to_string();
    let seed_transfer = json!({ "contact_id": contact, "team_id": team, "notes": "Customer requested human support"});

    // Act: create
    let created = data(&app, Method::POST, "/api/chatbot/transfers", Some(&seed_transfer), 201).await;

    // Assert
    assert_eq!(created["status"], "active");
    assert_eq!(created["team_name"], "Sales Team");
    assert_eq!(say(&app, &bot, "1234567890", "hello?").await["replies"], json!([]));

    // Act: list
    let listed =
        data(&app, Method::GET, &format!("/api/chatbot/transfers?status=active&team_id={team}"), None, 200).await;

    // Assert
    assert_eq!(keys(&listed), set(&["transfers", "general_queue_count", "team_queue_counts"]));
    assert_eq!(listed["general_queue_count"], 0);
    assert_eq!(listed["team_queue_counts"], json!({ team.clone(): 1 }));
    let listed_transfer = &listed["transfers"][0];
    for key in [
        "id",
        "contact_id",
        "contact_name",
        "phone_number",
        "status",
        "source",
        "agent_id",
        "agent_name",
        "team_id",
        "team_name",
        "notes",
        "transferred_at",
    ] {
        assert!(listed_transfer.get(key).is_some(), "{key} missing from {listed_transfer}");
    }
    assert_eq!(listed_transfer["contact_name"], "John Doe");
    assert_eq!(listed_transfer["notes"], "Customer requested human support");
    assert_eq!(listed_transfer["source"], "manual");

    // Act: pick up, assign, resume
    let picked = data(&app, Method::POST, &format!("/api/chatbot/transfers/pickup?team_id={team}"), None, 200).await;
    let id = str_of(&picked, "id").to_string();
    let assigned = data(
        &app,
        Method::PUT,
        &format!("/api/chatbot/transfers/{id}/assign"),
        Some(&json!({ "agent_id": agent })),
        200,
    )
    .await;
    let resumed = data(&app, Method::PUT, &format!("/api/chatbot/transfers/{id}/resume"), None, 200).await;

    // Assert
    assert_eq!(picked["id"], created["id"]);
    assert_eq!(assigned["agent_id"], agent.as_str());
    assert_eq!(assigned["agent_name"], "Jane Smith");
    assert_eq!(resumed["status"], "resumed");
    assert_eq!(say(&app, &bot, "1234567890", "back?").await["replies"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn picking_up_from_an_empty_queue_is_a_404_envelope() {
    // Arrange
    let app = spawn_app().await;
    app.create_chatbot(&app.admin_key, "Support").await;

    // Act
    let (status, value) = call(&app, Method::POST, "/api/chatbot/transfers/pickup?team_id=general", None).await;

    // Assert
    assert_envelope_error(status, &value, 404, "No transfer is waiting in this queue");
}

#[tokio::test]
async fn a_key_without_the_transfers_scope_gets_a_403_envelope() {
    // Arrange
    let app = spawn_app().await;
    let reader = app.key_with_scopes(&["conversations:read"]);

    // Act
    let response = app.get("/api/chatbot/transfers", &reader).await;
    let status = response.status().as_u16();
    let value = body(response).await;

    // Assert
    assert_envelope_error(status, &value, 403, "transfers");
}

// --- sessions ----------------------------------------------------------------------------------

#[tokio::test]
async fn sessions_list_and_get_show_where_a_flow_stands() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let other = app.create_chatbot(&app.admin_key, "Other").await;
    let team = create_team(&app, "Sales Team").await;
    let flow = data(&app, Method::POST, "/api/chatbot/flows", Some(&feedback_flow(&team)), 201).await;
    let response = app
        .request(Method::POST, "/api/chatbot/flows", &app.admin_key)
        .header("X-Chatbot-Id", &other)
        .json(&feedback_flow(&team))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201);
    let contact = say(&app, &bot, "u1", "feedback").await["contact_id"].clone();
    say(&app, &other, "u2", "feedback").await;

    // Act
    let listed = data(&app, Method::GET, "/api/chatbot/sessions", None, 200).await;
    let items = listed["items"].as_array().unwrap();
    let one = data(&app, Method::GET, &format!("/api/chatbot/sessions/{}", str_of(&items[0], "id")), None, 200).await;

    // Assert
    assert_eq!(items.len(), 1, "only the default chatbot's sessions: {listed}");
    for key in ["id", "contact_id", "current_flow_id", "current_step", "variables", "started_at", "last_activity"] {
        assert!(one.get(key).is_some(), "{key} missing from {one}");
    }
    assert_eq!(one["contact_id"], contact);
    assert_eq!(one["current_flow_id"], flow["id"]);
    assert_eq!(one["current_step"], "rating");
    let (status, value) =
        call(&app, Method::GET, &format!("/api/chatbot/sessions/{}", uuid::Uuid::new_v4()), None).await;
    assert_envelope_error(status, &value, 404, "Session not found");
}
