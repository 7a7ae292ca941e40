//! Seed `004` (Evolution API, Typebot session status):
//! `PATCH /api/v2/instance/{instanceId}/typebot-integration/session/{sessionId}` with each
//! documented status, and the NestJS-shaped 400, 401, 403 and 404 errors.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{body, spawn_app, TestApp};

/// A bot with a two-question flow, and one contact inside it.
struct Fixture {
    app: TestApp,
    bot: String,
    flow: String,
    session: String,
    provider_id: String,
}

/// Sends `text` from `provider_id` to `bot`; returns the handle answer.
async fn say(app: &TestApp, bot: &str, provider_id: &str, text: &str) -> Value {
    let payload =
        json!({ "channelId": "wa-main", "providerId": provider_id, "message": { "type": "text", "text": text } });
    let response = app.post(&format!("/v1/chatbots/{bot}/conversations/handle"), &app.admin_key, &payload).await;
    assert_eq!(response.status(), 200, "handle");
    body(response).await
}

fn texts(handled: &Value) -> Vec<String> {
    handled["replies"].as_array().expect("replies").iter().map(|r| r["text"].as_str().unwrap().to_string()).collect()
}

/// Creates the survey flow on `bot` and returns its id.
async fn survey_flow(app: &TestApp, bot: &str) -> String {
    let flow = json!({
        "name": "Survey",
        "trigger_keywords": ["survey"],
        "initial_message": "Two questions.",
        "completion_message": "Thanks!",
        "steps": [
            { "step_name": "name", "step_order": 1, "message": "Your name?", "message_type": "text",
              "input_type": "text", "store_as": "name" },
            { "step_name": "city", "step_order": 2, "message": "Your city, {{name}}?", "message_type": "text",
              "input_type": "text", "store_as": "city" },
        ],
    });
    let response = app.post(&format!("/v1/chatbots/{bot}/flows"), &app.admin_key, &flow).await;
    assert_eq!(response.status(), 201, "create flow");
    body(response).await["id"].as_str().unwrap().to_string()
}

/// The id of `bot`'s newest session.
async fn newest_session(app: &TestApp, bot: &str) -> String {
    let listed = body(app.get(&format!("/v1/sessions?chatbot_id={bot}"), &app.admin_key).await).await;
    listed["items"][0]["id"].as_str().unwrap_or_else(|| panic!("no session in {listed}")).to_string()
}

async fn fixture() -> Fixture {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Instance").await;
    let flow = survey_flow(&app, &bot).await;
    let provider_id = "5511999999999".to_string();
    say(&app, &bot, &provider_id, "survey").await;
    let session = newest_session(&app, &bot).await;
    Fixture { app, bot, flow, session, provider_id }
}

impl Fixture {
    fn path(&self) -> String {
        format!("/api/v2/instance/{}/typebot-integration/session/{}", self.bot, self.session)
    }

    /// PATCHes `payload` to `path` with `X-API-Key: key`; status and body.
    async fn patch_as(&self, key: &str, path: &str, payload: &Value) -> (u16, Value) {
        let response = self.app.send_json(Method::PATCH, path, key, payload).await;
        let status = response.status().as_u16();
        (status, body(response).await)
    }

    async fn patch(&self, status: &str) -> (u16, Value) {
        self.patch_as(&self.app.admin_key, &self.path(), &json!({ "status": status })).await
    }
}

/// Asserts a NestJS error body.
fn assert_nest_error(status: u16, value: &Value, expected: u16, reason: &str) {
    assert_eq!(status, expected, "answered {value}");
    assert_eq!(value["statusCode"], expected, "{value}");
    assert_eq!(value["error"], reason, "{value}");
    let messages = value["message"].as_array().unwrap_or_else(|| panic!("message is not an array: {value}"));
    assert!(!messages.is_empty() && messages.iter().all(Value::is_string), "{value}");
    assert_eq!(value.as_object().unwrap().len(), 3, "only message, error, statusCode: {value}");
}

// --- each status -------------------------------------------------------------------------------

#[tokio::test]
async fn pausing_a_session_answers_the_documented_body_and_silences_the_flow() {
    // Arrange
    let f = fixture().await;

    // Act
    let (status, value) = f.patch("pause").await;

    // Assert
    assert_eq!(status, 200, "{value}");
    assert_eq!(
        value,
        json!({
            "sessionId": f.session,
            "keyRemoteJid": f.provider_id,
            "status": "paused",
            "typebotIntegrationId": f.flow,
        })
    );
    assert_eq!(texts(&say(&f.app, &f.bot, &f.provider_id, "Ana").await), Vec::<String>::new());
}

#[tokio::test]
async fn resuming_a_paused_session_continues_at_the_same_step() {
    // Arrange
    let f = fixture().await;
    f.patch("pause").await;

    // Act
    let (status, value) = f.patch("resume").await;

    // Assert
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["status"], "open");
    assert_eq!(value["typebotIntegrationId"], f.flow.as_str());
    assert_eq!(texts(&say(&f.app, &f.bot, &f.provider_id, "Ana").await), ["Your city, Ana?"]);
}

#[tokio::test]
async fn opening_a_paused_session_reopens_it() {
    // Arrange
    let f = fixture().await;
    f.patch("pause").await;

    // Act
    let (status, value) = f.patch("open").await;

    // Assert
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["sessionId"], f.session.as_str());
    assert_eq!(value["status"], "open");
}

#[tokio::test]
async fn closing_a_session_ends_it() {
    // Arrange
    let f = fixture().await;

    // Act
    let (status, value) = f.patch("close").await;

    // Assert
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["status"], "closed");
    assert_eq!(value["keyRemoteJid"], f.provider_id.as_str());
    let session = body(f.app.get(&format!("/v1/sessions/{}", f.session), &f.app.admin_key).await).await;
    assert_eq!(session["status"], "closed");
}

#[tokio::test]
async fn evolutions_apikey_header_is_accepted() {
    // Arrange
    let f = fixture().await;

    // Act
    let response = f
        .app
        .client
        .patch(f.app.url(&f.path()))
        .header("apikey", &f.app.admin_key)
        .json(&json!({ "status": "pause" }))
        .send()
        .await
        .expect("request");

    // Assert
    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await["status"], "paused");
}

// --- errors ------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unknown_or_missing_status_is_a_400_bad_request() {
    // Arrange
    let f = fixture().await;

    for payload in [json!({ "status": "stop" }), json!({})] {
        // Act
        let (status, value) = f.patch_as(&f.app.admin_key, &f.path(), &payload).await;

        // Assert
        assert_nest_error(status, &value, 400, "Bad Request");
        assert!(value["message"][0].as_str().unwrap().contains("status"), "{value}");
    }
}

#[tokio::test]
async fn malformed_json_is_a_400_bad_request() {
    // Arrange
    let f = fixture().await;

    // Act
    let response = f
        .app
        .request(Method::PATCH, &f.path(), &f.app.admin_key)
        .header("Content-Type", "application/json")
        .body("{\"status\": ")
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();

    // Assert
    assert_nest_error(status, &body(response).await, 400, "Bad Request");
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_a_401_unauthorized() {
    // Arrange
    let f = fixture().await;

    // Act
    let response = f.app.client.patch(f.app.url(&f.path())).json(&json!({ "status": "pause" })).send().await;
    let response = response.expect("request");
    let missing_status = response.status().as_u16();
    let missing = body(response).await;
    let (wrong_status, wrong) = f.patch_as("bt_not-a-real-key", &f.path(), &json!({ "status": "pause" })).await;

    // Assert
    assert_nest_error(missing_status, &missing, 401, "Unauthorized");
    assert_eq!(missing["message"], json!(["Missing authentication"]));
    assert_nest_error(wrong_status, &wrong, 401, "Unauthorized");
}

#[tokio::test]
async fn a_key_that_may_only_read_is_a_403_forbidden() {
    // Arrange
    let f = fixture().await;
    let reader = f.app.key_with_scopes(&["conversations:read"]);

    // Act
    let (status, value) = f.patch_as(&reader, &f.path(), &json!({ "status": "pause" })).await;

    // Assert
    assert_nest_error(status, &value, 403, "Forbidden");
}

#[tokio::test]
async fn unknown_sessions_instances_and_other_tenants_are_404_not_found() {
    // Arrange
    let f = fixture().await;
    let other_bot = f.app.create_chatbot(&f.app.admin_key, "Other").await;
    let stranger = f.app.key_for_new_tenant(&["admin"]);
    let pause = json!({ "status": "pause" });
    let paths = [
        format!("/api/v2/instance/{}/typebot-integration/session/{}", f.bot, uuid::Uuid::new_v4()),
        format!("/api/v2/instance/{}/typebot-integration/session/{}", uuid::Uuid::new_v4(), f.session),
        format!("/api/v2/instance/{other_bot}/typebot-integration/session/{}", f.session),
    ];

    for path in &paths {
        // Act
        let (status, value) = f.patch_as(&f.app.admin_key, path, &pause).await;

        // Assert
        assert_nest_error(status, &value, 404, "Not Found");
    }
    let (status, value) = f.patch_as(&stranger, &f.path(), &pause).await;
    assert_nest_error(status, &value, 404, "Not Found");
    let session = body(f.app.get(&format!("/v1/sessions/{}", f.session), &f.app.admin_key).await).await;
    assert_eq!(session["status"], "open");
}

#[tokio::test]
async fn another_method_is_a_json_405() {
    // Arrange
    let f = fixture().await;

    // Act
    let response = f.app.get(&f.path(), &f.app.admin_key).await;

    // Assert
    assert_eq!(response.status(), 405);
    assert!(body(response).await.is_object());
}
