//! Flows end to end: CRUD and validation of `/v1/chatbots/{bot}/flows`, the seed `001`
//! "Feedback Collection" flow run verbatim, `api_fetch` steps against a loopback server,
//! `whatsapp_flow` steps, flows edited or deleted mid-conversation, and driving flows from
//! outside with `custom-event` and `payload`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{assert_error, body, call, get_ok, spawn_app, TestApp};

const FALLBACK: &str = "Sorry, I didn't understand that. Please try again.";

/// The "Create Flow" request body of seed `001`, character for character.
const SEED_FEEDBACK_FLOW: &str = r#"{ "name": "Feedback Collection", "trigger_keywords": ["feedback", "review"], "initial_message": "Hi! I'd like to collect your feedback.", "completion_message": "Thank you for your feedback!", "enabled": true, "panel_config": { "sections": [ { "id": "customer", "label": "Customer Info", "columns": 1, "collapsible": true, "default_collapsed": false, "order": 1, "fields": [ {"key": "rating", "label": "Rating", "order": 1}, {"key": "comment", "label": "Comment", "order": 2} ] } ] }, "steps": [ { "step_name": "rating", "step_order": 1, "message": "How would you rate your experience?", "message_type": "buttons", "input_type": "select", "buttons": [ {"id": "excellent", "title": "Excellent"}, {"id": "good", "title": "Good"}, {"id": "poor", "title": "Poor"} ], "store_as": "rating" }, { "step_name": "comment", "step_order": 2, "message": "Any additional comments?", "message_type": "text", "input_type": "text", "store_as": "comment" }, { "step_name": "transfer", "step_order": 3, "message": "Connecting you with our team...", "message_type": "transfer", "transfer_config": { "team_id": "uuid", "notes": "Rating: {{rating}}" } } ]}"#;

/// The seed flow with its placeholder team id replaced by `team_id`.
fn seed_flow(team_id: &str) -> Value {
    let text = SEED_FEEDBACK_FLOW.replace(r#""team_id": "uuid""#, &format!(r#""team_id": "{team_id}""#));
    serde_json::from_str(&text).expect("seed flow is JSON")
}

fn flows_path(bot: &str) -> String {
    format!("/v1/chatbots/{bot}/flows")
}

fn flow_path(bot: &str, flow: &str) -> String {
    format!("/v1/chatbots/{bot}/flows/{flow}")
}

/// Creates a flow, asserting 201; returns it as served.
async fn create_flow(app: &TestApp, bot: &str, flow: &Value) -> Value {
    let (status, value) = call(app, Method::POST, &flows_path(bot), flow).await;
    assert_eq!(status, 201, "create flow answered {value}");
    value
}

/// The chatbot's flows.
async fn list_flows(app: &TestApp, bot: &str) -> Vec<Value> {
    get_ok(app, &flows_path(bot)).await["items"].as_array().expect("items").clone()
}

/// A chatbot of its own and a one-step text flow `name` triggered by `trigger`.
fn text_flow(name: &str, trigger: &str) -> Value {
    json!({
        "name": name,
        "trigger_keywords": [trigger],
        "initial_message": "Let's start.",
        "completion_message": "Thanks {{name}}!",
        "steps": [
            { "step_name": "name", "step_order": 1, "message": "What is your name?", "message_type": "text",
              "input_type": "text", "store_as": "name" }
        ]
    })
}

/// A flow with a rating step (buttons) then a comment step, triggered by "survey".
fn survey_flow() -> Value {
    json!({
        "name": "Survey",
        "trigger_keywords": ["survey"],
        "initial_message": "Quick survey!",
        "completion_message": "Done, thanks!",
        "steps": [
            { "step_name": "rating", "step_order": 1, "message": "How was it?", "message_type": "buttons",
              "buttons": [{ "id": "good", "title": "Good" }, { "id": "bad", "title": "Bad" }], "store_as": "rating" },
            { "step_name": "comment", "step_order": 2, "message": "Any comment?", "message_type": "text",
              "input_type": "text", "store_as": "comment" }
        ]
    })
}

/// Sends a text from `provider_id` as John Doe with phone 1234567890; asserts 200.
async fn say_as_john(app: &TestApp, bot: &str, provider_id: &str, text: &str) -> Value {
    let payload = json!({
        "channelId": "wa-main",
        "channelName": "WhatsApp",
        "providerId": provider_id,
        "message": { "type": "text", "text": text },
        "contact": { "first_name": "John", "last_name": "Doe", "phones": ["1234567890"], "emails": [] },
    });
    let (status, value) = call(app, Method::POST, &format!("/v1/chatbots/{bot}/conversations/handle"), &payload).await;
    assert_eq!(status, 200, "handle answered {value}");
    value
}

/// Sends a text from `provider_id`; asserts 200.
async fn say(app: &TestApp, bot: &str, provider_id: &str, text: &str) -> Value {
    app.handle_ok(&app.admin_key, bot, provider_id, text).await
}

fn texts(handled: &Value) -> Vec<String> {
    handled["replies"]
        .as_array()
        .unwrap_or_else(|| panic!("no replies in {handled}"))
        .iter()
        .map(|r| r["text"].as_str().expect("text").to_string())
        .collect()
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value}")).to_string()
}

/// The sessions of a chatbot, newest first.
async fn sessions_of(app: &TestApp, bot: &str) -> Vec<Value> {
    get_ok(app, &format!("/v1/sessions?chatbot_id={bot}")).await["items"].as_array().expect("items").clone()
}

/// The only session of a chatbot.
async fn only_session(app: &TestApp, bot: &str) -> Value {
    let sessions = sessions_of(app, bot).await;
    assert_eq!(sessions.len(), 1, "sessions: {sessions:?}");
    sessions[0].clone()
}

async fn create_team(app: &TestApp, name: &str) -> String {
    let (status, value) = call(app, Method::POST, "/v1/teams", &json!({ "name": name })).await;
    assert_eq!(status, 201, "create team answered {value}");
    id_of(&value)
}

/// Posts to `…/conversations/{route}` (payload, custom-event) with the admin key.
async fn post_conversation_route(app: &TestApp, bot: &str, route: &str, payload: &Value) -> (u16, Value) {
    call(app, Method::POST, &format!("/v1/chatbots/{bot}/conversations/{route}"), payload).await
}

// --- the seed flow ---------------------------------------------------------------------------

#[tokio::test]
async fn the_seed_feedback_flow_runs_verbatim_from_trigger_to_team_transfer() {
    // Arrange
    let app = spawn_app().await;
    let team = create_team(&app, "Sales Team").await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let flow = create_flow(&app, &bot, &seed_flow(&team)).await;
    assert_eq!(flow["name"], "Feedback Collection");
    assert_eq!(flow["steps"][2]["transfer_config"]["team_id"], team.as_str());
    assert_eq!(flow["panel_config"]["sections"][0]["fields"][1]["key"], "comment");

    // Act + assert: the trigger word starts the flow with its initial message and the buttons.
    let started = say_as_john(&app, &bot, "4915112345678", "I have some feedback").await;
    assert_eq!(texts(&started), ["Hi! I'd like to collect your feedback.", "How would you rate your experience?"]);
    let question = &started["replies"][1];
    assert_eq!(question["type"], "buttons");
    let ids: Vec<&str> = question["buttons"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["excellent", "good", "poor"]);
    let conversation = started["conversation_id"].as_str().unwrap().to_string();

    // An answer that is not a button re-asks the step.
    let reasked = say_as_john(&app, &bot, "4915112345678", "meh").await;
    assert_eq!(texts(&reasked), ["How would you rate your experience?"]);
    assert_eq!(reasked["replies"][0]["type"], "buttons");
    assert_eq!(only_session(&app, &bot).await["current_step"], "rating");

    // A button title in any case is accepted and stored as the button id.
    let rated = say_as_john(&app, &bot, "4915112345678", "GOOD").await;
    assert_eq!(texts(&rated), ["Any additional comments?"]);
    let session = only_session(&app, &bot).await;
    assert_eq!(session["status"], "open");
    assert_eq!(session["current_step"], "comment");
    assert_eq!(session["current_flow_id"], flow["id"]);
    assert_eq!(session["variables"]["rating"], "good");

    // The comment is stored, then the transfer step hands over to the team.
    let transferred = say_as_john(&app, &bot, "4915112345678", "Fast delivery, friendly staff").await;
    assert_eq!(texts(&transferred), ["Connecting you with our team..."], "no completion message after a transfer");
    assert_eq!(transferred["bot_active"], false);

    let listed = get_ok(&app, "/v1/transfers").await;
    let transfers = listed["transfers"].as_array().expect("transfers");
    assert_eq!(transfers.len(), 1, "{listed}");
    let transfer = &transfers[0];
    assert_eq!(transfer["notes"], "Rating: good");
    assert_eq!(transfer["team_id"], team.as_str());
    assert_eq!(transfer["team_name"], "Sales Team");
    assert_eq!(transfer["contact_name"], "John Doe");
    assert_eq!(transfer["phone_number"], "1234567890");
    assert_eq!(transfer["source"], "flow");
    assert_eq!(transfer["status"], "active");
    assert_eq!(transfer["conversation_id"], conversation.as_str());
    assert_eq!(listed["team_queue_counts"][&team], 1);
    assert_eq!(listed["general_queue_count"], 0);

    let session = get_ok(&app, &format!("/v1/sessions/{}", session["id"].as_str().unwrap())).await;
    assert_eq!(session["variables"], json!({ "rating": "good", "comment": "Fast delivery, friendly staff" }));
    assert_eq!(session["status"], "closed", "the transfer ends the flow");

    let served = get_ok(&app, &format!("/v1/conversations/{conversation}")).await;
    assert_eq!(served["bot_active"], false);
    assert_eq!(served["status"], "escalated");
    assert_eq!(served["session"], Value::Null);

    // While a human has it, the bot stays silent.
    let later = say_as_john(&app, &bot, "4915112345678", "hello?").await;
    assert_eq!(texts(&later), Vec::<String>::new());
}

#[tokio::test]
async fn a_flow_that_runs_to_its_end_sends_the_completion_message_and_closes_its_session() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    create_flow(&app, &bot, &text_flow("Name", "register")).await;
    let started = say(&app, &bot, "u1", "register").await;
    assert_eq!(texts(&started), ["Let's start.", "What is your name?"]);

    // Act
    let finished = say(&app, &bot, "u1", "Ada").await;

    // Assert
    assert_eq!(texts(&finished), ["Thanks Ada!"]);
    assert_eq!(finished["bot_active"], true);
    let session = only_session(&app, &bot).await;
    assert_eq!(session["status"], "closed");
    assert_eq!(session["variables"]["name"], "Ada");
    let conversation =
        get_ok(&app, &format!("/v1/conversations/{}", finished["conversation_id"].as_str().unwrap())).await;
    assert_eq!(conversation["session"], Value::Null);
    // The next message is no longer taken by the flow.
    assert_eq!(texts(&say(&app, &bot, "u1", "Grace").await), [FALLBACK]);
}

// --- CRUD and validation -------------------------------------------------------------------

#[tokio::test]
async fn flows_can_be_listed_read_updated_and_deleted() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let flow = create_flow(&app, &bot, &survey_flow()).await;
    let id = id_of(&flow);
    assert_eq!(flow["enabled"], true, "enabled defaults to true");
    assert_eq!(flow["chatbot_id"], bot.as_str());
    assert_eq!(flow["steps"][0]["input_type"], "select", "a buttons step waits for a selection");
    assert!(flow["steps"][0]["id"].as_str().is_some_and(|s| !s.is_empty()), "step ids are generated");

    // Act + assert: list and get.
    let listed = list_flows(&app, &bot).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(get_ok(&app, &flow_path(&bot, &id)).await, flow);

    // PUT is partial: only the name changes.
    let (status, renamed) = call(&app, Method::PUT, &flow_path(&bot, &id), &json!({ "name": "Survey v2" })).await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["name"], "Survey v2");
    assert_eq!(renamed["steps"], flow["steps"]);
    assert_eq!(renamed["trigger_keywords"], json!(["survey"]));

    // Steps are replaced whole; PATCH works the same way.
    let one_step = json!({ "steps": [
        { "step_name": "only", "message": "Just one question?", "message_type": "text", "input_type": "text" }
    ] });
    let (status, replaced) = call(&app, Method::PATCH, &flow_path(&bot, &id), &one_step).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["steps"].as_array().unwrap().len(), 1);
    assert_eq!(replaced["steps"][0]["step_name"], "only");
    assert_eq!(replaced["name"], "Survey v2");
    assert_eq!(get_ok(&app, &flow_path(&bot, &id)).await, replaced);

    // The updated flow is what the bot runs.
    assert_eq!(texts(&say(&app, &bot, "u1", "survey").await), ["Quick survey!", "Just one question?"]);

    // Delete.
    let (status, deleted) = call(&app, Method::DELETE, &flow_path(&bot, &id), &json!({})).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted, json!({ "deleted": true }));
    assert_error(app.get(&flow_path(&bot, &id), &app.admin_key).await, 404, "").await;
    assert!(list_flows(&app, &bot).await.is_empty());
    let (status, _) = call(&app, Method::DELETE, &flow_path(&bot, &id), &json!({})).await;
    assert_eq!(status, 404, "deleting twice");
}

/// Posts `flow` and asserts it is refused with `status` naming `field`; nothing is stored.
async fn assert_refused(app: &TestApp, bot: &str, flow: &Value, status: u16, field: &str) {
    let response = app.post(&flows_path(bot), &app.admin_key, flow).await;
    let error = assert_error(response, status, "").await;
    assert_eq!(error["field"], field, "error {error}");
    assert!(list_flows(app, bot).await.is_empty(), "a refused flow is not stored");
}

#[tokio::test]
async fn duplicate_step_names_are_refused_naming_the_second_step() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let mut flow = survey_flow();
    flow["steps"][1]["step_name"] = json!("rating");

    assert_refused(&app, &bot, &flow, 422, "steps[1].step_name").await;
}

#[tokio::test]
async fn a_buttons_step_with_eleven_buttons_is_refused() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let mut flow = survey_flow();
    let buttons: Vec<Value> = (1..=11).map(|i| json!({ "title": format!("Option {i}") })).collect();
    flow["steps"][0]["buttons"] = json!(buttons);

    assert_refused(&app, &bot, &flow, 422, "steps[0].buttons").await;
}

#[tokio::test]
async fn a_button_title_over_twenty_characters_is_refused_naming_it() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let mut flow = survey_flow();
    flow["steps"][0]["buttons"][1]["title"] = json!("This title is far too long");

    assert_refused(&app, &bot, &flow, 422, "steps[0].buttons[1].title").await;
}

#[tokio::test]
async fn a_panel_section_with_three_columns_is_refused() {
    let app = spawn_app().await;
    let team = create_team(&app, "Sales Team").await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let mut flow = seed_flow(&team);
    flow["panel_config"]["sections"][0]["columns"] = json!(3);

    assert_refused(&app, &bot, &flow, 422, "panel_config.sections[0].columns").await;
}

#[tokio::test]
async fn an_unknown_message_type_is_a_bad_request_naming_the_field() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let mut flow = survey_flow();
    flow["steps"][1]["message_type"] = json!("carousel");

    assert_refused(&app, &bot, &flow, 400, "steps[1].message_type").await;
}

#[tokio::test]
async fn an_api_fetch_step_without_a_url_is_refused() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let fetch_step = |api_config: Value| {
        json!({
            "name": "Orders", "trigger_keywords": ["order"],
            "steps": [{ "step_name": "lookup", "message": "Status: {{status}}", "message_type": "api_fetch",
                        "api_config": api_config }]
        })
    };

    // No api_config at all, and a blank url: semantically invalid.
    let mut no_config = fetch_step(Value::Null);
    no_config["steps"][0].as_object_mut().unwrap().remove("api_config");
    assert_refused(&app, &bot, &no_config, 422, "steps[0].api_config").await;
    assert_refused(&app, &bot, &fetch_step(json!({ "url": "  " })), 422, "steps[0].api_config.url").await;
    assert_refused(&app, &bot, &fetch_step(json!({ "url": "ftp://example.com/x" })), 422, "steps[0].api_config.url")
        .await;
    assert_refused(
        &app,
        &bot,
        &fetch_step(json!({ "url": "https://example.com/x", "timeout_ms": 0 })),
        422,
        "steps[0].api_config.timeout_ms",
    )
    .await;

    // The url key missing altogether: refused naming it (a shape error, 400, or 422).
    let response = app.post(&flows_path(&bot), &app.admin_key, &fetch_step(json!({ "method": "GET" }))).await;
    let status = response.status().as_u16();
    let error = body(response).await;
    assert!(status == 400 || status == 422, "status {status}: {error}");
    assert_eq!(error["field"], "steps[0].api_config.url", "{error}");
    assert!(list_flows(&app, &bot).await.is_empty());
}

#[tokio::test]
async fn other_malformed_flows_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;

    let mut no_steps = survey_flow();
    no_steps["steps"] = json!([]);
    assert_refused(&app, &bot, &no_steps, 422, "steps").await;

    let mut blank_name = survey_flow();
    blank_name["name"] = json!("   ");
    assert_refused(&app, &bot, &blank_name, 422, "name").await;

    let mut unknown_field = survey_flow();
    unknown_field["colour"] = json!("blue");
    let response = app.post(&flows_path(&bot), &app.admin_key, &unknown_field).await;
    assert_error(response, 400, "colour").await;

    let mut bad_store_as = survey_flow();
    bad_store_as["steps"][1]["store_as"] = json!("1st comment");
    assert_refused(&app, &bot, &bad_store_as, 422, "steps[1].store_as").await;

    let mut nameless_event = survey_flow();
    nameless_event["trigger_keywords"] = json!(["survey", "event:"]);
    assert_refused(&app, &bot, &nameless_event, 422, "trigger_keywords[1]").await;

    let mut bad_team = survey_flow();
    bad_team["steps"][1] = json!({ "step_name": "handover", "message_type": "transfer",
                                    "transfer_config": { "team_id": "not-a-uuid" } });
    let response = app.post(&flows_path(&bot), &app.admin_key, &bad_team).await;
    let status = response.status().as_u16();
    let error = body(response).await;
    assert!(status == 400 || status == 422, "status {status}: {error}");
    assert!(error["field"].as_str().is_some_and(|f| f.starts_with("steps[1].transfer_config")), "{error}");
    assert!(list_flows(&app, &bot).await.is_empty());
}

#[tokio::test]
async fn a_transfer_step_to_a_team_that_does_not_exist_is_refused() {
    // Arrange: a team id that is unknown, and one of another tenant.
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let stranger = app.key_for_new_tenant(&["admin"]);
    let response = app.post("/v1/teams", &stranger, &json!({ "name": "Their Team" })).await;
    assert_eq!(response.status(), 201);
    let foreign_team = id_of(&body(response).await);

    for team in [uuid::Uuid::new_v4().to_string(), foreign_team] {
        // Act + assert
        assert_refused(&app, &bot, &seed_flow(&team), 422, "steps[2].transfer_config.team_id").await;
    }
}

#[tokio::test]
async fn a_refused_update_leaves_the_flow_as_it_was() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let flow = create_flow(&app, &bot, &survey_flow()).await;
    let id = id_of(&flow);
    let duplicate_names = json!({ "name": "Renamed", "steps": [
        { "step_name": "a", "message": "One", "message_type": "text" },
        { "step_name": "a", "message": "Two", "message_type": "text" }
    ] });

    // Act
    let response = app.send_json(Method::PUT, &flow_path(&bot, &id), &app.admin_key, &duplicate_names).await;
    let error = assert_error(response, 422, "").await;
    let response =
        app.send_json(Method::PATCH, &flow_path(&bot, &id), &app.admin_key, &json!({ "enabled": "yes" })).await;
    let type_error = assert_error(response, 400, "").await;

    // Assert
    assert_eq!(error["field"], "steps[1].step_name");
    assert_eq!(type_error["field"], "enabled");
    assert_eq!(get_ok(&app, &flow_path(&bot, &id)).await, flow);
}

#[tokio::test]
async fn another_tenants_flows_are_not_found() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let flow = create_flow(&app, &bot, &survey_flow()).await;
    let id = id_of(&flow);
    let stranger = app.key_for_new_tenant(&["admin"]);

    // Act + assert
    assert_error(app.get(&flows_path(&bot), &stranger).await, 404, "").await;
    assert_error(app.get(&flow_path(&bot, &id), &stranger).await, 404, "").await;
    let response = app.send_json(Method::PUT, &flow_path(&bot, &id), &stranger, &json!({ "name": "Mine" })).await;
    assert_error(response, 404, "").await;
    let response = app.send_json(Method::DELETE, &flow_path(&bot, &id), &stranger, &json!({})).await;
    assert_error(response, 404, "").await;
    assert_error(app.post(&flows_path(&bot), &stranger, &survey_flow()).await, 404, "").await;
    // A flow id under the stranger's own chatbot is not found either.
    let own_bot = app.create_chatbot(&stranger, "Theirs").await;
    assert_error(app.get(&flow_path(&own_bot, &id), &stranger).await, 404, "").await;

    assert_eq!(get_ok(&app, &flow_path(&bot, &id)).await, flow, "nothing changed");
    assert_eq!(list_flows(&app, &bot).await.len(), 1);
}

#[tokio::test]
async fn flows_need_the_chatbot_config_scope() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let reader = app.key_with_scopes(&["conversations:read", "messages:handle"]);

    assert_error(app.get(&flows_path(&bot), &reader).await, 403, "chatbot:config").await;
    assert_error(app.post(&flows_path(&bot), &reader, &survey_flow()).await, 403, "chatbot:config").await;
    assert!(list_flows(&app, &bot).await.is_empty());
}

// --- api_fetch ------------------------------------------------------------------------------

/// A flow asking for an order number, then looking the order up at `url`.
fn order_flow(url: &str, timeout_ms: u64) -> Value {
    json!({
        "name": "Order status",
        "trigger_keywords": ["track"],
        "completion_message": "Anything else?",
        "steps": [
            { "step_name": "number", "step_order": 1, "message": "Your order number?", "message_type": "text",
              "input_type": "text", "store_as": "order_id" },
            { "step_name": "lookup", "step_order": 2, "message": "Order {{order_id}} is {{status}}, arriving {{eta}}.",
              "message_type": "api_fetch",
              "api_config": { "url": url, "method": "GET", "headers": { "X-Order": "{{order_id}}" },
                              "mapping": { "status": "/order/status", "eta": "/order/eta" },
                              "timeout_ms": timeout_ms, "on_error": "Sorry, order lookup is unavailable." } }
        ]
    })
}

#[tokio::test]
async fn an_api_fetch_step_maps_the_answer_into_variables_used_in_its_message() {
    // Arrange
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/orders/42"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "order": { "status": "shipped", "eta": "Friday" } })),
        )
        .expect(1)
        .mount(&server)
        .await;
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    create_flow(&app, &bot, &order_flow(&format!("{}/orders/{{{{order_id}}}}", server.uri()), 5000)).await;
    assert_eq!(texts(&say(&app, &bot, "u1", "track my order").await), ["Your order number?"]);

    // Act
    let answered = say(&app, &bot, "u1", "42").await;

    // Assert
    assert_eq!(texts(&answered), ["Order 42 is shipped, arriving Friday.", "Anything else?"]);
    let requests = server.received_requests().await.expect("recording");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].headers.get("x-order").map(|v| v.to_str().unwrap()), Some("42"));
    let session = only_session(&app, &bot).await;
    assert_eq!(session["variables"]["status"], "shipped");
    assert_eq!(session["variables"]["eta"], "Friday");
    assert_eq!(session["status"], "closed");
}

#[tokio::test]
async fn a_variable_in_an_api_fetch_url_is_percent_encoded() {
    // Arrange
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex("^/orders/.*$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "order": { "status": "packed" } })))
        .mount(&server)
        .await;
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let url = format!("{}/orders/{{{{order_id}}}}?src=bot", server.uri());
    create_flow(&app, &bot, &order_flow(&url, 5000)).await;
    say(&app, &bot, "u1", "track").await;

    // Act
    let answered = say(&app, &bot, "u1", "A 1/2?x=y&z").await;

    // Assert: the value stays one path segment; no extra path or query parameter appears.
    assert_eq!(texts(&answered)[0], "Order A 1/2?x=y&z is packed, arriving .");
    let requests = server.received_requests().await.expect("recording");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].url.path(), "/orders/A%201%2F2%3Fx%3Dy%26z");
    assert_eq!(requests[0].url.query(), Some("src=bot"));
}

#[tokio::test]
async fn a_slow_api_answer_sends_on_error_and_ends_the_flow() {
    // Arrange
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/orders/7"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "order": { "status": "late" } }))
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&server)
        .await;
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    create_flow(&app, &bot, &order_flow(&format!("{}/orders/{{{{order_id}}}}", server.uri()), 300)).await;
    say(&app, &bot, "u1", "track").await;

    // Act
    let answered = say(&app, &bot, "u1", "7").await;

    // Assert
    assert_eq!(texts(&answered), ["Sorry, order lookup is unavailable."]);
    assert_eq!(only_session(&app, &bot).await["status"], "closed");
    // The conversation is not stuck at the step: the next message gets a normal answer.
    assert_eq!(texts(&say(&app, &bot, "u1", "8").await), [FALLBACK]);
}

#[tokio::test]
async fn an_api_answer_that_is_not_json_or_an_error_status_sends_on_error() {
    // Arrange
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/orders/1"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html>maintenance</html>", "text/html"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/orders/2"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({ "order": { "status": "broken" } })))
        .mount(&server)
        .await;
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    create_flow(&app, &bot, &order_flow(&format!("{}/orders/{{{{order_id}}}}", server.uri()), 5000)).await;

    for (user, number) in [("u1", "1"), ("u2", "2")] {
        say(&app, &bot, user, "track").await;

        // Act
        let answered = say(&app, &bot, user, number).await;

        // Assert
        assert_eq!(texts(&answered), ["Sorry, order lookup is unavailable."], "order {number}");
        assert_eq!(texts(&say(&app, &bot, user, "hello").await), [FALLBACK], "order {number}: flow ended");
    }
}

#[tokio::test]
async fn a_failed_api_call_without_on_error_sends_the_fallback_message() {
    // Arrange: nothing listens on the mock's port once it is dropped.
    let server = MockServer::start().await;
    let url = format!("{}/orders/{{{{order_id}}}}", server.uri());
    drop(server);
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    let mut flow = order_flow(&url, 2000);
    flow["steps"][1]["api_config"]["on_error"] = json!("");
    create_flow(&app, &bot, &flow).await;
    say(&app, &bot, "u1", "track").await;

    // Act
    let answered = say(&app, &bot, "u1", "3").await;

    // Assert
    assert_eq!(texts(&answered), [FALLBACK]);
    assert_eq!(only_session(&app, &bot).await["status"], "closed");
}

// --- whatsapp_flow ----------------------------------------------------------------------------

#[tokio::test]
async fn a_whatsapp_flow_step_replies_with_the_native_flow_to_render() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    create_flow(
        &app,
        &bot,
        &json!({
            "name": "Signup",
            "trigger_keywords": ["signup"],
            "steps": [
                { "step_name": "name", "step_order": 1, "message": "Your name?", "message_type": "text",
                  "input_type": "text", "store_as": "name" },
                { "step_name": "form", "step_order": 2, "message": "Please fill in the form, {{name}}.",
                  "message_type": "whatsapp_flow",
                  "whatsapp_flow": { "flow_id": "1234567890", "parameters": { "prefill": "{{name}}", "screen": "WELCOME" } } }
            ]
        }),
    )
    .await;
    say(&app, &bot, "u1", "signup").await;

    // Act
    let answered = say(&app, &bot, "u1", "Ada").await;

    // Assert
    let reply = &answered["replies"][0];
    assert_eq!(reply["type"], "whatsapp_flow");
    assert_eq!(reply["text"], "Please fill in the form, Ada.");
    assert_eq!(
        reply["whatsapp_flow"],
        json!({ "flow_id": "1234567890", "parameters": { "prefill": "Ada", "screen": "WELCOME" } })
    );
}

// --- flows changed mid-conversation ------------------------------------------------------------

/// Starts the survey flow for `user`; returns the flow id.
async fn survey_waiting_at_rating(app: &TestApp, bot: &str, user: &str) -> String {
    let flow = create_flow(app, bot, &survey_flow()).await;
    assert_eq!(texts(&say(app, bot, user, "survey").await), ["Quick survey!", "How was it?"]);
    id_of(&flow)
}

#[tokio::test]
async fn removing_the_step_a_session_waits_at_closes_the_session_and_the_message_gets_a_normal_answer() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let flow = survey_waiting_at_rating(&app, &bot, "u1").await;
    let without_rating = json!({ "steps": [
        { "step_name": "comment", "message": "Any comment?", "message_type": "text", "input_type": "text" }
    ] });
    let (status, value) = call(&app, Method::PUT, &flow_path(&bot, &flow), &without_rating).await;
    assert_eq!(status, 200, "{value}");

    // Act
    let answered = say(&app, &bot, "u1", "Good").await;

    // Assert
    assert_eq!(texts(&answered), [FALLBACK]);
    let session = only_session(&app, &bot).await;
    assert_eq!(session["status"], "closed");
    // The edited flow still starts fresh.
    assert_eq!(texts(&say(&app, &bot, "u1", "survey").await), ["Quick survey!", "Any comment?"]);
}

#[tokio::test]
async fn editing_a_flow_but_keeping_the_waiting_step_continues_there() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let flow = survey_waiting_at_rating(&app, &bot, "u1").await;
    let mut edited = survey_flow();
    edited["steps"][1]["message"] = json!("Tell us more, please.");
    let (status, value) = call(&app, Method::PUT, &flow_path(&bot, &flow), &json!({ "steps": edited["steps"] })).await;
    assert_eq!(status, 200, "{value}");

    // Act
    let answered = say(&app, &bot, "u1", "Good").await;

    // Assert
    assert_eq!(texts(&answered), ["Tell us more, please."], "the edited flow goes on from the same step");
    let session = only_session(&app, &bot).await;
    assert_eq!(session["status"], "open");
    assert_eq!(session["current_step"], "comment");
}

#[tokio::test]
async fn a_button_press_answers_a_buttons_step() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    survey_waiting_at_rating(&app, &bot, "u1").await;
    let press = json!({
        "channelId": "wa-main", "providerId": "u1",
        "message": { "type": "button", "button_id": "bad" },
    });

    // Act
    let (status, answered) =
        call(&app, Method::POST, &format!("/v1/chatbots/{bot}/conversations/handle"), &press).await;

    // Assert
    assert_eq!(status, 200, "{answered}");
    assert_eq!(texts(&answered), ["Any comment?"]);
    assert_eq!(only_session(&app, &bot).await["variables"]["rating"], "bad");
}

#[tokio::test]
async fn a_session_never_points_at_a_step_that_no_longer_exists() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let flow = survey_waiting_at_rating(&app, &bot, "u1").await;
    let without_rating = json!({ "steps": [
        { "step_name": "comment", "message": "Any comment?", "message_type": "text", "input_type": "text" }
    ] });

    // Act: the step the session waits at is edited away, then the flow is deleted; no message arrives.
    let (status, edited) = call(&app, Method::PUT, &flow_path(&bot, &flow), &without_rating).await;
    assert_eq!(status, 200, "{edited}");
    let after_edit = only_session(&app, &bot).await;
    let (status, _) = call(&app, Method::DELETE, &flow_path(&bot, &flow), &json!({})).await;
    assert_eq!(status, 200);
    let after_delete = only_session(&app, &bot).await;

    // Assert: what agents see (session list, contact panel) is never a step that does not exist.
    let names: Vec<&str> =
        edited["steps"].as_array().unwrap().iter().map(|s| s["step_name"].as_str().unwrap()).collect();
    let points_at_existing_step = after_edit["current_step"].as_str().is_some_and(|step| names.contains(&step));
    assert!(after_edit["status"] == "closed" || points_at_existing_step, "after the edit: {after_edit}");
    assert_eq!(after_delete["status"], "closed", "after the delete: {after_delete}");
}

#[tokio::test]
async fn deleting_the_flow_mid_conversation_closes_the_session_and_the_message_gets_a_normal_answer() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    app.create_rule(
        &app.admin_key,
        &bot,
        &json!({ "keywords": ["good"], "match_type": "contains", "response": "Glad you liked it!" }),
    )
    .await;
    let flow = survey_waiting_at_rating(&app, &bot, "u1").await;
    let (status, _) = call(&app, Method::DELETE, &flow_path(&bot, &flow), &json!({})).await;
    assert_eq!(status, 200);

    // Act
    let answered = say(&app, &bot, "u1", "Good").await;

    // Assert
    assert_eq!(texts(&answered), ["Glad you liked it!"]);
    assert_eq!(only_session(&app, &bot).await["status"], "closed");
    let conversation =
        get_ok(&app, &format!("/v1/conversations/{}", answered["conversation_id"].as_str().unwrap())).await;
    assert_eq!(conversation["session"], Value::Null);
}

#[tokio::test]
async fn disabling_the_flow_mid_conversation_stops_it_taking_answers() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let flow = survey_waiting_at_rating(&app, &bot, "u1").await;
    let (status, _) = call(&app, Method::PATCH, &flow_path(&bot, &flow), &json!({ "enabled": false })).await;
    assert_eq!(status, 200);

    // Act
    let answered = say(&app, &bot, "u1", "Good").await;
    let retriggered = say(&app, &bot, "u1", "survey").await;

    // Assert
    assert_eq!(texts(&answered), [FALLBACK]);
    assert_eq!(texts(&retriggered), [FALLBACK], "a disabled flow does not start");
    assert_eq!(only_session(&app, &bot).await["status"], "closed");
}

// --- custom events and payloads ---------------------------------------------------------------

/// A flow started by the custom event `order_completed`.
fn order_completed_flow() -> Value {
    json!({
        "name": "Post-purchase",
        "trigger_keywords": ["event:order_completed"],
        "initial_message": "Thanks for order {{orderId}}!",
        "completion_message": "See you soon.",
        "steps": [
            { "step_name": "rate", "step_order": 1, "message": "Rate your purchase?", "message_type": "buttons",
              "buttons": [{ "title": "Great" }, { "title": "Okay" }], "store_as": "rate" },
            { "step_name": "tip", "step_order": 2, "message": "Any tip for us, {{name}}?", "message_type": "text",
              "input_type": "text", "store_as": "tip" }
        ]
    })
}

/// A conversation of `bot` opened by a first message; returns its id.
async fn open_conversation(app: &TestApp, bot: &str, user: &str) -> String {
    say(app, bot, user, "hi").await["conversation_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_custom_event_starts_the_flow_listening_to_it() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    create_flow(&app, &bot, &order_completed_flow()).await;
    let conversation = open_conversation(&app, &bot, "u1").await;
    assert_eq!(texts(&say(&app, &bot, "u1", "order_completed").await), [FALLBACK], "event triggers are not words");

    // Act
    let (status, started) = post_conversation_route(
        &app,
        &bot,
        "custom-event",
        &json!({ "conversationId": conversation, "event": "order_completed" }),
    )
    .await;

    // Assert
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["conversation_id"], conversation.as_str());
    assert_eq!(texts(&started), ["Thanks for order !", "Rate your purchase?"]);
    assert_eq!(started["replies"][1]["type"], "buttons");
    assert_eq!(started["bot_active"], true);
    assert!(started.get("trace").is_none(), "no trace unless asked: {started}");
    // The flow now takes the user's answer.
    assert_eq!(texts(&say(&app, &bot, "u1", "great").await), ["Any tip for us, ?"]);
    assert_eq!(only_session(&app, &bot).await["variables"]["rate"], "great");
}

#[tokio::test]
async fn a_custom_event_nobody_listens_to_starts_nothing() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    create_flow(&app, &bot, &order_completed_flow()).await;
    let conversation = open_conversation(&app, &bot, "u1").await;

    let (status, answered) = post_conversation_route(
        &app,
        &bot,
        "custom-event",
        &json!({ "conversationId": conversation, "event": "order_refunded" }),
    )
    .await;

    assert_eq!(status, 200, "{answered}");
    assert_eq!(texts(&answered), Vec::<String>::new());
    assert_eq!(texts(&say(&app, &bot, "u1", "great").await), [FALLBACK]);
}

#[tokio::test]
async fn a_custom_event_with_bad_input_is_refused() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    create_flow(&app, &bot, &order_completed_flow()).await;
    let conversation = open_conversation(&app, &bot, "u1").await;
    let path = format!("/v1/chatbots/{bot}/conversations/custom-event");

    let blank = assert_error(
        app.post(&path, &app.admin_key, &json!({ "conversationId": conversation, "event": " " })).await,
        400,
        "",
    )
    .await;
    assert_eq!(blank["field"], "event");
    let missing =
        assert_error(app.post(&path, &app.admin_key, &json!({ "conversationId": conversation })).await, 400, "").await;
    assert_eq!(missing["field"], "event");
    let unknown = json!({ "conversationId": uuid::Uuid::new_v4().to_string(), "event": "order_completed" });
    assert_error(app.post(&path, &app.admin_key, &unknown).await, 404, "").await;
    // Nothing started.
    assert!(sessions_of(&app, &bot).await.is_empty());
}

/// A flow with three text steps, all waiting for input.
fn three_step_flow() -> Value {
    json!({
        "name": "Three",
        "trigger_keywords": ["three"],
        "initial_message": "Welcome to three.",
        "completion_message": "All done, {{first}}/{{second}}/{{third}}.",
        "steps": [
            { "step_name": "first", "step_order": 1, "message": "First?", "message_type": "text",
              "input_type": "text", "store_as": "first" },
            { "step_name": "second", "step_order": 2, "message": "Second, {{customer}}?", "message_type": "text",
              "input_type": "text", "store_as": "second" },
            { "step_name": "third", "step_order": 3, "message": "Third?", "message_type": "text",
              "input_type": "text", "store_as": "third" }
        ]
    })
}

#[tokio::test]
async fn a_payload_with_flow_and_step_jumps_to_that_step() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let flow = create_flow(&app, &bot, &three_step_flow()).await;
    let conversation = open_conversation(&app, &bot, "u1").await;

    // Act
    let (status, jumped) = post_conversation_route(
        &app,
        &bot,
        "payload",
        &json!({ "conversationId": conversation, "flowId": flow["id"], "stepId": "second" }),
    )
    .await;

    // Assert
    assert_eq!(status, 200, "{jumped}");
    assert_eq!(texts(&jumped), ["Second, ?"], "no initial message when jumping to a step");
    assert_eq!(only_session(&app, &bot).await["current_step"], "second");
    assert_eq!(texts(&say(&app, &bot, "u1", "two").await), ["Third?"]);

    // A step can be named by its generated id too, and without flowId within the running flow.
    let third_id = flow["steps"][2]["id"].as_str().unwrap();
    let (status, again) =
        post_conversation_route(&app, &bot, "payload", &json!({ "conversationId": conversation, "stepId": third_id }))
            .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(texts(&again), ["Third?"]);
    assert_eq!(texts(&say(&app, &bot, "u1", "three!").await), ["All done, /two/three!."]);
}

#[tokio::test]
async fn an_event_payload_merges_variables_visible_in_templated_messages() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Shop").await;
    create_flow(&app, &bot, &order_completed_flow()).await;
    let three = create_flow(&app, &bot, &three_step_flow()).await;
    let first = open_conversation(&app, &bot, "u1").await;
    let second = open_conversation(&app, &bot, "u2").await;

    // Act: the seed's string form, with an event.
    let (status, from_string) = post_conversation_route(
        &app,
        &bot,
        "payload",
        &json!({ "conversationId": first, "event": "order_completed", "eventPayload": "{\"orderId\": \"12345\"}" }),
    )
    .await;
    // An object, with a flow and step.
    let (status_object, from_object) = post_conversation_route(
        &app,
        &bot,
        "payload",
        &json!({ "conversationId": second, "flowId": three["id"], "stepId": "second",
                 "eventPayload": { "customer": "Ada", "tier": 3 } }),
    )
    .await;

    // Assert
    assert_eq!(status, 200, "{from_string}");
    assert_eq!(texts(&from_string), ["Thanks for order 12345!", "Rate your purchase?"]);
    assert_eq!(status_object, 200, "{from_object}");
    assert_eq!(texts(&from_object), ["Second, Ada?"]);
    let sessions = sessions_of(&app, &bot).await;
    let of = |conversation: &str| {
        sessions.iter().find(|s| s["conversation_id"] == conversation).cloned().expect("session of conversation")
    };
    assert_eq!(of(&first)["variables"]["orderId"], "12345");
    assert_eq!(of(&second)["variables"]["customer"], "Ada");
    assert_eq!(of(&second)["variables"]["tier"], 3);
}

#[tokio::test]
async fn a_debug_payload_returns_the_trace() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let flow = create_flow(&app, &bot, &three_step_flow()).await;
    let conversation = open_conversation(&app, &bot, "u1").await;

    // Act
    let (status, debugged) = post_conversation_route(
        &app,
        &bot,
        "payload",
        &json!({ "conversationId": conversation, "flowId": flow["id"], "isDebug": true }),
    )
    .await;

    // Assert
    assert_eq!(status, 200, "{debugged}");
    assert_eq!(texts(&debugged), ["Welcome to three.", "First?"]);
    let trace = debugged["trace"].as_array().unwrap_or_else(|| panic!("no trace in {debugged}"));
    assert!(!trace.is_empty());
    assert!(trace.iter().all(|line| line.as_str().is_some_and(|l| !l.is_empty())), "{trace:?}");
    // The flow engine's own decisions are in it, not only the turn's.
    for line in ["started flow Three", "step first: waiting for input"] {
        assert!(trace.iter().any(|l| l == line), "no {line:?} in {trace:?}");
    }
}

#[tokio::test]
async fn a_payload_naming_an_unknown_flow_or_step_is_not_found_and_changes_nothing() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    let flow = create_flow(&app, &bot, &three_step_flow()).await;
    let conversation = open_conversation(&app, &bot, "u1").await;
    let path = format!("/v1/chatbots/{bot}/conversations/payload");
    let other_bot = app.create_chatbot(&app.admin_key, "Other").await;
    let foreign_flow = create_flow(&app, &other_bot, &three_step_flow()).await;

    // Act + assert
    for payload in [
        json!({ "conversationId": conversation, "flowId": uuid::Uuid::new_v4().to_string() }),
        json!({ "conversationId": conversation, "flowId": "not-a-flow" }),
        json!({ "conversationId": conversation, "flowId": foreign_flow["id"] }),
        json!({ "conversationId": conversation, "flowId": flow["id"], "stepId": "fourth" }),
        json!({ "conversationId": uuid::Uuid::new_v4().to_string(), "flowId": flow["id"] }),
    ] {
        assert_error(app.post(&path, &app.admin_key, &payload).await, 404, "").await;
    }
    assert!(sessions_of(&app, &bot).await.is_empty(), "no session was started");
    assert_eq!(texts(&say(&app, &bot, "u1", "hello").await), [FALLBACK]);
}

#[tokio::test]
async fn a_payload_with_nothing_to_do_or_a_broken_event_payload_is_a_bad_request() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Bot").await;
    create_flow(&app, &bot, &order_completed_flow()).await;
    let conversation = open_conversation(&app, &bot, "u1").await;
    let path = format!("/v1/chatbots/{bot}/conversations/payload");

    // Act + assert
    let empty =
        assert_error(app.post(&path, &app.admin_key, &json!({ "conversationId": conversation })).await, 400, "").await;
    assert!(empty["field"].is_string(), "{empty}");
    let broken = json!({ "conversationId": conversation, "event": "order_completed", "eventPayload": "{orderId: 1" });
    let broken = assert_error(app.post(&path, &app.admin_key, &broken).await, 400, "").await;
    assert_eq!(broken["field"], "eventPayload");
    let no_conversation = assert_error(app.post(&path, &app.admin_key, &json!({ "event": "x" })).await, 400, "").await;
    assert_eq!(no_conversation["field"], "conversationId");

    // Nothing started, nothing merged.
    assert!(sessions_of(&app, &bot).await.is_empty());
    assert_eq!(texts(&say(&app, &bot, "u1", "great").await), [FALLBACK]);
}
