//! Chatbot configuration: chatbots, settings, keyword rules (and how the bot answers with
//! them), channels and their webhooks, and that a refused request never changes stored data.

use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_error, body, get_ok, spawn_app, spawn_app_with, TestApp};

/// The `items` of a list.
async fn items(app: &TestApp, path: &str) -> Vec<Value> {
    get_ok(app, path).await["items"].as_array().expect("items").clone()
}

async fn put(app: &TestApp, path: &str, json: &Value) -> reqwest::Response {
    app.send_json(Method::PUT, path, &app.admin_key, json).await
}

async fn patch(app: &TestApp, path: &str, json: &Value) -> reqwest::Response {
    app.send_json(Method::PATCH, path, &app.admin_key, json).await
}

async fn delete(app: &TestApp, path: &str) -> reqwest::Response {
    app.request(Method::DELETE, path, &app.admin_key).send().await.expect("request")
}

/// A request with a raw body and content type.
async fn send_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: &str,
    raw: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.request(method, path, &app.admin_key)
        .header(CONTENT_TYPE, content_type)
        .body(raw)
        .send()
        .await
        .expect("request")
}

/// The texts of a handle answer's replies.
fn reply_texts(handled: &Value) -> Vec<String> {
    handled["replies"]
        .as_array()
        .expect("replies")
        .iter()
        .map(|r| r["text"].as_str().expect("reply text").to_string())
        .collect()
}

/// A spawned app with one chatbot.
async fn app_with_bot() -> (TestApp, String) {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    (app, bot)
}

fn buttons(titles: &[&str]) -> Value {
    Value::Array(titles.iter().map(|t| json!({ "title": t })).collect())
}

// ---------------------------------------------------------------- chatbots

#[tokio::test]
async fn a_chatbot_can_be_created_listed_fetched_and_renamed() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = app
        .post("/v1/chatbots", &app.admin_key, &json!({ "name": "Sales bot", "description": "Answers pricing" }))
        .await;

    // Assert
    assert_eq!(response.status(), 201);
    let created = body(response).await;
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["name"], "Sales bot");
    assert_eq!(created["description"], "Answers pricing");
    assert!(created["tenant_id"].is_string());
    assert!(created["created_at"].is_string() && created["updated_at"].is_string());
    assert_eq!(created["settings"]["chatbot_enabled"], true);

    let listed = items(&app, "/v1/chatbots").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(get_ok(&app, &format!("/v1/chatbots/{id}")).await, created);

    let renamed = patch(&app, &format!("/v1/chatbots/{id}"), &json!({ "name": "Pricing bot" })).await;
    assert_eq!(renamed.status(), 200);
    let renamed = body(renamed).await;
    assert_eq!(renamed["name"], "Pricing bot");
    assert_eq!(renamed["description"], "Answers pricing", "PATCH leaves other fields alone");
    let fetched = get_ok(&app, &format!("/v1/chatbots/{id}")).await;
    assert_eq!(fetched["name"], "Pricing bot");
    assert_eq!(fetched["description"], "Answers pricing");
    assert_eq!(fetched["created_at"], created["created_at"]);
}

#[tokio::test]
async fn deleting_a_chatbot_makes_it_and_its_configuration_404() {
    // Arrange
    let (app, bot) = app_with_bot().await;
    let rule = app
        .create_rule(&app.admin_key, &bot, &json!({ "keywords": ["hi"], "match_type": "exact", "response": "Hello" }))
        .await;
    let rule_id = rule["id"].as_str().expect("rule id");
    let handled = app.handle_ok(&app.admin_key, &bot, "u1", "hi").await;
    let conversation = handled["conversation_id"].as_str().expect("conversation id");
    let other = app.create_chatbot(&app.admin_key, "Survivor").await;

    // Act
    let response = delete(&app, &format!("/v1/chatbots/{bot}")).await;

    // Assert
    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await, json!({ "deleted": true }));
    for path in [
        format!("/v1/chatbots/{bot}"),
        format!("/v1/chatbots/{bot}/settings"),
        format!("/v1/chatbots/{bot}/keywords"),
        format!("/v1/chatbots/{bot}/keywords/{rule_id}"),
        format!("/v1/chatbots/{bot}/channels"),
        format!("/v1/chatbots/{bot}/conversations"),
        format!("/v1/chatbots/{bot}/conversations/{conversation}"),
        format!("/v1/conversations/{conversation}"),
    ] {
        assert_error(app.get(&path, &app.admin_key).await, 404, "not found").await;
    }
    assert_error(app.handle(&app.admin_key, &bot, "u1", "hi", None).await, 404, "not found").await;
    assert_error(delete(&app, &format!("/v1/chatbots/{bot}")).await, 404, "not found").await;
    let listed = items(&app, "/v1/chatbots").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], other.as_str(), "only the other chatbot is left");
}

#[tokio::test]
async fn creating_a_chatbot_without_a_name_is_400_naming_it() {
    let app = spawn_app().await;

    for payload in [json!({ "name": "" }), json!({ "name": "   " }), json!({ "description": "no name" })] {
        let response = app.post("/v1/chatbots", &app.admin_key, &payload).await;
        let error = assert_error(response, 400, "name").await;
        assert_eq!(error["field"], "name", "{payload}");
    }

    let response = app.post("/v1/chatbots", &app.admin_key, &json!({ "name": 42 })).await;
    let error = assert_error(response, 400, "name").await;
    assert_eq!(error["field"], "name");

    assert!(items(&app, "/v1/chatbots").await.is_empty(), "nothing was created");
}

#[tokio::test]
async fn patching_a_chatbot_with_an_unknown_field_or_an_empty_name_is_400_and_changes_nothing() {
    let (app, bot) = app_with_bot().await;
    let path = format!("/v1/chatbots/{bot}");
    let before = get_ok(&app, &path).await;

    let error =
        assert_error(patch(&app, &path, &json!({ "name": "New", "colour": "blue" })).await, 400, "colour").await;
    assert_eq!(error["field"], "colour");
    let error = assert_error(patch(&app, &path, &json!({ "name": " " })).await, 400, "name").await;
    assert_eq!(error["field"], "name");
    let error = assert_error(patch(&app, &path, &json!({ "name": ["a"] })).await, 400, "name").await;
    assert_eq!(error["field"], "name");

    assert_eq!(get_ok(&app, &path).await, before);
}

#[tokio::test]
async fn an_unknown_chatbot_is_404() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::new_v4();

    for path in [
        format!("/v1/chatbots/{unknown}"),
        "/v1/chatbots/not-a-uuid".to_string(),
        format!("/v1/chatbots/{unknown}/settings"),
    ] {
        assert_error(app.get(&path, &app.admin_key).await, 404, "not found").await;
    }
    assert_error(patch(&app, &format!("/v1/chatbots/{unknown}"), &json!({ "name": "x" })).await, 404, "not found")
        .await;
}

// ---------------------------------------------------------------- settings

#[tokio::test]
async fn a_new_chatbot_has_the_default_settings() {
    let (app, bot) = app_with_bot().await;

    let settings = get_ok(&app, &format!("/v1/chatbots/{bot}/settings")).await;

    assert_eq!(settings["chatbot_id"], bot.as_str());
    assert_eq!(settings["greeting_message"], "Hello! Welcome. How can I help you?");
    assert_eq!(settings["fallback_message"], "Sorry, I didn't understand that. Please try again.");
    assert_eq!(settings["chatbot_enabled"], true);
    assert_eq!(settings["auto_pause_on_agent_message"], true);
    assert_eq!(settings["ai_enabled"], false);
    assert_eq!(settings["greeting_buttons"], json!([]));
    assert_eq!(settings["fallback_buttons"], json!([]));
    assert_eq!(settings["transfer_keywords"], json!([]));
    assert_eq!(settings["business_hours_enabled"], false);
}

#[tokio::test]
async fn putting_settings_changes_only_the_fields_given() {
    // Arrange
    let (app, bot) = app_with_bot().await;
    let path = format!("/v1/chatbots/{bot}/settings");
    let defaults = get_ok(&app, &path).await;

    // Act
    let response = put(&app, &path, &json!({ "greeting_message": "Welcome to Acme!" })).await;

    // Assert
    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await["greeting_message"], "Welcome to Acme!");
    let after_first = get_ok(&app, &path).await;
    let mut expected = defaults.clone();
    expected["greeting_message"] = json!("Welcome to Acme!");
    expected["updated_at"] = after_first["updated_at"].clone();
    assert_eq!(after_first, expected, "only greeting_message changed");

    // A second partial PUT keeps the first one's change.
    let response =
        put(&app, &path, &json!({ "fallback_message": "Pardon?", "transfer_keywords": ["agent", "human"] })).await;
    assert_eq!(response.status(), 200);
    let after_second = get_ok(&app, &path).await;
    expected["fallback_message"] = json!("Pardon?");
    expected["transfer_keywords"] = json!(["agent", "human"]);
    expected["updated_at"] = after_second["updated_at"].clone();
    assert_eq!(after_second, expected);
}

#[tokio::test]
async fn greeting_buttons_get_ids_generated_from_their_titles() {
    let (app, bot) = app_with_bot().await;
    let path = format!("/v1/chatbots/{bot}/settings");

    let response = put(
        &app,
        &path,
        &json!({ "greeting_buttons": [{ "title": "Track Order" }, { "title": "Talk to agent" }, { "id": "my_id", "title": "Prices" }] }),
    )
    .await;

    assert_eq!(response.status(), 200);
    let saved = get_ok(&app, &path).await["greeting_buttons"].clone();
    assert_eq!(
        saved,
        json!([
            { "id": "track_order", "title": "Track Order" },
            { "id": "talk_to_agent", "title": "Talk to agent" },
            { "id": "my_id", "title": "Prices" },
        ])
    );
}

#[tokio::test]
async fn a_button_title_of_exactly_20_characters_is_accepted_in_settings() {
    let (app, bot) = app_with_bot().await;
    let title = "x".repeat(20);

    let response =
        put(&app, &format!("/v1/chatbots/{bot}/settings"), &json!({ "greeting_buttons": [{ "title": title }] })).await;

    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await["greeting_buttons"][0]["title"], title.as_str());
}

#[tokio::test]
async fn invalid_settings_are_refused_naming_the_field_and_change_nothing() {
    // Arrange
    let (app, bot) = app_with_bot().await;
    let path = format!("/v1/chatbots/{bot}/settings");
    let ok = put(&app, &path, &json!({ "greeting_message": "Hi!", "greeting_buttons": buttons(&["Menu"]) })).await;
    assert_eq!(ok.status(), 200);
    let before = get_ok(&app, &path).await;
    let eleven: Vec<String> = (1..=11).map(|i| format!("Option {i}")).collect();
    let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();

    let cases: Vec<(Value, u16, &str)> = vec![
        // A title over 20 characters, on the second button.
        (
            json!({ "greeting_message": "changed", "greeting_buttons": buttons(&["Fine", &"y".repeat(21)]) }),
            422,
            "greeting_buttons[1].title",
        ),
        (json!({ "fallback_buttons": buttons(&[&"z".repeat(21)]) }), 422, "fallback_buttons[0].title"),
        // More than 10 buttons.
        (json!({ "greeting_message": "changed", "greeting_buttons": buttons(&eleven) }), 422, "greeting_buttons"),
        // Wrong types.
        (json!({ "greeting_message": "changed", "chatbot_enabled": "yes" }), 400, "chatbot_enabled"),
        (json!({ "session_timeout_minutes": "thirty" }), 400, "session_timeout_minutes"),
        (json!({ "greeting_buttons": [{ "id": "b" }] }), 400, "greeting_buttons[0].title"),
        // Unknown field.
        (json!({ "greeting_message": "changed", "greeting_colour": "blue" }), 400, "greeting_colour"),
    ];

    for (payload, status, field) in cases {
        // Act
        let response = put(&app, &path, &payload).await;

        // Assert
        let error = assert_error(response, status, field).await;
        assert_eq!(error["field"], field, "{payload}");
        assert_eq!(get_ok(&app, &path).await, before, "settings unchanged after {payload}");
    }
}

#[tokio::test]
async fn an_updated_greeting_is_used_for_the_next_new_conversation() {
    let (app, bot) = app_with_bot().await;
    let first = app.handle_ok(&app.admin_key, &bot, "first", "good morning").await;
    assert_eq!(reply_texts(&first), ["Hello! Welcome. How can I help you?"]);

    let response =
        put(&app, &format!("/v1/chatbots/{bot}/settings"), &json!({ "greeting_message": "Welcome to Acme!" })).await;
    assert_eq!(response.status(), 200);

    let second = app.handle_ok(&app.admin_key, &bot, "second", "good morning").await;
    assert_eq!(reply_texts(&second), ["Welcome to Acme!"]);
}

// ---------------------------------------------------------------- keywords

#[tokio::test]
async fn a_keyword_rule_can_be_created_fetched_updated_and_deleted() {
    // Arrange
    let (app, bot) = app_with_bot().await;

    // Act: create
    let response = app
        .post(
            &format!("/v1/chatbots/{bot}/keywords"),
            &app.admin_key,
            &json!({ "keywords": ["price", "cost"], "match_type": "contains", "response": "From $9" }),
        )
        .await;

    // Assert
    assert_eq!(response.status(), 201);
    let created = body(response).await;
    let id = created["id"].as_str().expect("id").to_string();
    let path = format!("/v1/chatbots/{bot}/keywords/{id}");
    assert_eq!(created["chatbot_id"], bot.as_str());
    assert_eq!(created["keywords"], json!(["price", "cost"]));
    assert_eq!(created["match_type"], "contains");
    assert_eq!(created["response"], "From $9");
    assert_eq!(created["response_type"], "text");
    assert_eq!(created["priority"], 0);
    assert_eq!(created["enabled"], true);
    assert_eq!(get_ok(&app, &path).await, created);
    assert_eq!(items(&app, &format!("/v1/chatbots/{bot}/keywords")).await, vec![created.clone()]);

    // Partial PUT: only the response changes.
    let response = put(&app, &path, &json!({ "response": "From $7" })).await;
    assert_eq!(response.status(), 200);
    let updated = get_ok(&app, &path).await;
    assert_eq!(updated["response"], "From $7");
    assert_eq!(updated["keywords"], created["keywords"]);
    assert_eq!(updated["match_type"], "contains");
    assert_eq!(updated["created_at"], created["created_at"]);

    // Partial PATCH too.
    let response = patch(&app, &path, &json!({ "priority": 7, "enabled": false })).await;
    assert_eq!(response.status(), 200);
    let patched = get_ok(&app, &path).await;
    assert_eq!(patched["priority"], 7);
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["response"], "From $7");

    // Delete.
    let response = delete(&app, &path).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await, json!({ "deleted": true }));
    assert_error(app.get(&path, &app.admin_key).await, 404, "not found").await;
    assert_error(delete(&app, &path).await, 404, "not found").await;
    assert!(items(&app, &format!("/v1/chatbots/{bot}/keywords")).await.is_empty());
}

#[tokio::test]
async fn an_unknown_keyword_rule_is_404() {
    let (app, bot) = app_with_bot().await;
    let unknown = uuid::Uuid::new_v4();

    for path in [format!("/v1/chatbots/{bot}/keywords/{unknown}"), format!("/v1/chatbots/{bot}/keywords/nope")] {
        assert_error(app.get(&path, &app.admin_key).await, 404, "not found").await;
        assert_error(put(&app, &path, &json!({ "response": "x" })).await, 404, "not found").await;
        assert_error(delete(&app, &path).await, 404, "not found").await;
    }
}

#[tokio::test]
async fn an_invalid_regex_is_422_naming_the_keyword_and_nothing_is_stored() {
    // Arrange
    let (app, bot) = app_with_bot().await;
    let list = format!("/v1/chatbots/{bot}/keywords");
    let existing = app
        .create_rule(&app.admin_key, &bot, &json!({ "keywords": ["^ok$"], "match_type": "regex", "response": "OK" }))
        .await;
    let before = items(&app, &list).await;

    // Act / assert: on create.
    let response = app
        .post(&list, &app.admin_key, &json!({ "keywords": ["(unclosed"], "match_type": "regex", "response": "never" }))
        .await;
    let error = assert_error(response, 422, "keywords[0]").await;
    assert_eq!(error["field"], "keywords[0]");
    let response = app
        .post(
            &list,
            &app.admin_key,
            &json!({ "keywords": ["fine", "[z-a]"], "match_type": "regex", "response": "never" }),
        )
        .await;
    let error = assert_error(response, 422, "keywords[1]").await;
    assert_eq!(error["field"], "keywords[1]");
    assert_eq!(items(&app, &list).await, before, "nothing stored");

    // On update.
    let path = format!("{list}/{}", existing["id"].as_str().expect("id"));
    let error = assert_error(put(&app, &path, &json!({ "keywords": ["a(b"] })).await, 422, "keywords[0]").await;
    assert_eq!(error["field"], "keywords[0]");
    assert_eq!(get_ok(&app, &path).await, existing, "the rule is unchanged");
}

#[tokio::test]
async fn rule_button_limits_are_20_characters_and_10_buttons() {
    let (app, bot) = app_with_bot().await;
    let list = format!("/v1/chatbots/{bot}/keywords");
    let rule = |buttons: Value| json!({ "keywords": ["menu"], "match_type": "exact", "response": "Pick one", "buttons": buttons });

    let twenty = "t".repeat(20);
    let response = app.post(&list, &app.admin_key, &rule(buttons(&[&twenty, "Other"]))).await;
    assert_eq!(response.status(), 201, "a 20-character title is fine");
    let created = body(response).await;
    assert_eq!(created["buttons"][0]["title"], twenty.as_str());
    assert_eq!(created["response_type"], "buttons");
    assert_eq!(created["buttons"][1]["id"], "other", "ids are generated");
    let before = items(&app, &list).await;

    let error = assert_error(
        app.post(&list, &app.admin_key, &rule(buttons(&["Ok", &"t".repeat(21)]))).await,
        422,
        "buttons[1].title",
    )
    .await;
    assert_eq!(error["field"], "buttons[1].title");
    let eleven: Vec<String> = (1..=11).map(|i| format!("B{i}")).collect();
    let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
    let error = assert_error(app.post(&list, &app.admin_key, &rule(buttons(&eleven))).await, 422, "buttons").await;
    assert_eq!(error["field"], "buttons");

    assert_eq!(items(&app, &list).await, before, "nothing stored");
}

#[tokio::test]
async fn keyword_rules_are_listed_by_priority_highest_first() {
    let (app, bot) = app_with_bot().await;
    for (priority, word) in [(1, "one"), (5, "five"), (-2, "minus"), (3, "three"), (0, "zero")] {
        app.create_rule(
            &app.admin_key,
            &bot,
            &json!({ "keywords": [word], "match_type": "exact", "response": word, "priority": priority }),
        )
        .await;
    }

    let listed = items(&app, &format!("/v1/chatbots/{bot}/keywords")).await;

    let priorities: Vec<i64> = listed.iter().map(|r| r["priority"].as_i64().expect("priority")).collect();
    assert_eq!(priorities, [5, 3, 1, 0, -2]);
}

#[tokio::test]
async fn invalid_rule_fields_are_400_naming_them() {
    let (app, bot) = app_with_bot().await;
    let list = format!("/v1/chatbots/{bot}/keywords");

    let cases = [
        (json!({ "keywords": [], "match_type": "exact", "response": "x" }), "keywords"),
        (json!({ "keywords": ["ok", "  "], "match_type": "exact", "response": "x" }), "keywords[1]"),
        (json!({ "keywords": ["ok"], "match_type": "fuzzy", "response": "x" }), "match_type"),
        (json!({ "keywords": ["ok"], "match_type": "exact", "response": " " }), "response"),
        (json!({ "keywords": ["ok"], "match_type": "exact" }), "response"),
        (json!({ "keywords": ["ok"], "match_type": "exact", "response": "x", "priority": "high" }), "priority"),
    ];
    for (payload, field) in cases {
        let error = assert_error(app.post(&list, &app.admin_key, &payload).await, 400, field).await;
        assert_eq!(error["field"], field, "{payload}");
    }

    assert!(items(&app, &list).await.is_empty(), "nothing stored");
}

// ---------------------------------------------------------------- keyword behaviour through handle

#[tokio::test]
async fn the_highest_priority_matching_rule_answers() {
    // Arrange: three rules that all match "hello there"; the middle one by priority wins.
    let (app, bot) = app_with_bot().await;
    let key = &app.admin_key;
    app.create_rule(
        key,
        &bot,
        &json!({ "keywords": ["hello"], "match_type": "contains", "response": "low", "priority": 1 }),
    )
    .await;
    app.create_rule(
        key,
        &bot,
        &json!({ "keywords": ["hello"], "match_type": "starts_with", "response": "high", "priority": 10 }),
    )
    .await;
    app.create_rule(key, &bot, &json!({ "keywords": ["hello"], "match_type": "contains", "response": "higher but off", "priority": 20, "enabled": false })).await;

    // Act
    let handled = app.handle_ok(key, &bot, "u1", "hello there").await;

    // Assert
    assert_eq!(reply_texts(&handled), ["high"]);
}

#[tokio::test]
async fn among_rules_of_equal_priority_the_oldest_answers() {
    // Arrange: pairs of equal-priority rules on the same keyword, each created after the
    // previous one was acknowledged. Rules saved within the same millisecond must still
    // answer in creation order, so several pairs are tried.
    let (app, bot) = app_with_bot().await;
    let key = &app.admin_key;
    let pairs = 40;
    for pair in 0..pairs {
        for (which, priority) in [("first", 1), ("second", 1)] {
            let rule = json!({ "keywords": [format!("code{pair}")], "match_type": "exact", "response": format!("{which} {pair}"), "priority": priority });
            app.create_rule(key, &bot, &rule).await;
        }
    }

    for pair in 0..pairs {
        // Act
        let handled = app.handle_ok(key, &bot, "u1", &format!("code{pair}")).await;

        // Assert
        assert_eq!(reply_texts(&handled), [format!("first {pair}")], "pair {pair}");
    }

    // The list shows ties in creation order too.
    let listed = items(&app, &format!("/v1/chatbots/{bot}/keywords")).await;
    let order: Vec<&str> = listed.iter().map(|r| r["response"].as_str().expect("response")).collect();
    let expected: Vec<String> = (0..pairs).flat_map(|p| [format!("first {p}"), format!("second {p}")]).collect();
    assert_eq!(order, expected);
}

#[tokio::test]
async fn the_four_match_types_match_as_documented() {
    // Arrange
    let (app, bot) = app_with_bot().await;
    let key = &app.admin_key;
    app.create_rule(key, &bot, &json!({ "keywords": ["price"], "match_type": "exact", "response": "EXACT" })).await;
    app.create_rule(
        key,
        &bot,
        &json!({ "keywords": ["order status"], "match_type": "starts_with", "response": "STARTS" }),
    )
    .await;
    app.create_rule(
        key,
        &bot,
        &json!({ "keywords": ["hi", "track parcel"], "match_type": "contains", "response": "CONTAINS" }),
    )
    .await;
    app.create_rule(
        key,
        &bot,
        &json!({ "keywords": [r"\b\d{5}\b", "^ref-[a-z]+$"], "match_type": "regex", "response": "REGEX" }),
    )
    .await;

    let cases = [
        // exact: the whole message, ignoring case and surrounding whitespace.
        ("price", Some("EXACT")),
        ("  PRICE \n", Some("EXACT")),
        ("price list", None),
        ("the price", None),
        // starts_with: the start of the message.
        ("Order status for 42", Some("STARTS")),
        ("   order STATUS", Some("STARTS")),
        ("my order status", None),
        // contains: a whole word or phrase.
        ("oh hi there", Some("CONTAINS")),
        ("HI", Some("CONTAINS")),
        ("hi!", Some("CONTAINS")),
        ("this", None),
        ("high five", None),
        ("please Track Parcel now", Some("CONTAINS")),
        ("track parcels", None),
        // regex: searched anywhere, case-insensitively.
        ("my zip is 12345 thanks", Some("REGEX")),
        ("123456", None),
        ("REF-abc", Some("REGEX")),
        ("see ref-abc", None),
    ];

    for (i, (text, expected)) in cases.iter().enumerate() {
        // Act: each message opens its own conversation, so a non-match gets the greeting.
        let handled = app.handle_ok(key, &bot, &format!("user-{i}"), text).await;

        // Assert
        let texts = reply_texts(&handled);
        match expected {
            Some(response) => assert_eq!(texts, [*response], "{text:?}"),
            None => assert_eq!(texts, ["Hello! Welcome. How can I help you?"], "{text:?} should match no rule"),
        }
    }
}

#[tokio::test]
async fn a_disabled_rule_never_answers() {
    let (app, bot) = app_with_bot().await;
    let key = &app.admin_key;
    app.create_rule(key, &bot, &json!({ "keywords": ["refund"], "match_type": "contains", "response": "Refunds take 5 days", "enabled": false })).await;
    let active = app
        .create_rule(key, &bot, &json!({ "keywords": ["hours"], "match_type": "contains", "response": "9 to 5" }))
        .await;

    let first = app.handle_ok(key, &bot, "u1", "refund please").await;
    let later = app.handle_ok(key, &bot, "u1", "refund please").await;
    assert_eq!(reply_texts(&first), ["Hello! Welcome. How can I help you?"]);
    assert_eq!(reply_texts(&later), ["Sorry, I didn't understand that. Please try again."]);

    // Disabling an active rule silences it from the next message on.
    assert_eq!(reply_texts(&app.handle_ok(key, &bot, "u1", "opening hours?").await), ["9 to 5"]);
    let path = format!("/v1/chatbots/{bot}/keywords/{}", active["id"].as_str().expect("id"));
    assert_eq!(patch(&app, &path, &json!({ "enabled": false })).await.status(), 200);
    assert_eq!(
        reply_texts(&app.handle_ok(key, &bot, "u1", "opening hours?").await),
        ["Sorry, I didn't understand that. Please try again."]
    );
}

#[tokio::test]
async fn an_updated_rule_answers_with_its_new_response_on_the_next_message() {
    let (app, bot) = app_with_bot().await;
    let key = &app.admin_key;
    let rule =
        app.create_rule(key, &bot, &json!({ "keywords": ["price"], "match_type": "exact", "response": "$10" })).await;
    assert_eq!(reply_texts(&app.handle_ok(key, &bot, "u1", "price").await), ["$10"]);

    let path = format!("/v1/chatbots/{bot}/keywords/{}", rule["id"].as_str().expect("id"));
    assert_eq!(put(&app, &path, &json!({ "response": "$12" })).await.status(), 200);

    assert_eq!(reply_texts(&app.handle_ok(key, &bot, "u1", "price").await), ["$12"]);
    assert_eq!(reply_texts(&app.handle_ok(key, &bot, "u2", "price").await), ["$12"]);

    // Changing the keywords takes effect as well.
    assert_eq!(put(&app, &path, &json!({ "keywords": ["cost"] })).await.status(), 200);
    assert_eq!(reply_texts(&app.handle_ok(key, &bot, "u1", "cost").await), ["$12"]);
    assert_eq!(
        reply_texts(&app.handle_ok(key, &bot, "u1", "price").await),
        ["Sorry, I didn't understand that. Please try again."]
    );
}

#[tokio::test]
async fn a_deleted_rule_stops_answering() {
    let (app, bot) = app_with_bot().await;
    let key = &app.admin_key;
    let rule = app
        .create_rule(key, &bot, &json!({ "keywords": ["bye"], "match_type": "exact", "response": "Goodbye!" }))
        .await;
    assert_eq!(reply_texts(&app.handle_ok(key, &bot, "u1", "bye").await), ["Goodbye!"]);

    let path = format!("/v1/chatbots/{bot}/keywords/{}", rule["id"].as_str().expect("id"));
    assert_eq!(delete(&app, &path).await.status(), 200);

    assert_eq!(
        reply_texts(&app.handle_ok(key, &bot, "u1", "bye").await),
        ["Sorry, I didn't understand that. Please try again."]
    );
}

#[tokio::test]
async fn a_rule_with_buttons_replies_with_them() {
    let (app, bot) = app_with_bot().await;
    let key = &app.admin_key;
    app.create_rule(key, &bot, &json!({ "keywords": ["menu"], "match_type": "exact", "response": "Pick one", "buttons": buttons(&["Track Order", "Talk to agent"]) }))
        .await;

    let handled = app.handle_ok(key, &bot, "u1", "menu").await;

    let reply = &handled["replies"][0];
    assert_eq!(reply["type"], "buttons");
    assert_eq!(reply["text"], "Pick one");
    assert_eq!(
        reply["buttons"],
        json!([{ "id": "track_order", "title": "Track Order" }, { "id": "talk_to_agent", "title": "Talk to agent" }])
    );
}

// ---------------------------------------------------------------- channels

#[tokio::test]
async fn a_first_message_creates_its_channel() {
    let (app, bot) = app_with_bot().await;
    assert!(items(&app, &format!("/v1/chatbots/{bot}/channels")).await.is_empty());

    app.handle_ok(&app.admin_key, &bot, "u1", "hello").await;

    let channels = items(&app, &format!("/v1/chatbots/{bot}/channels")).await;
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0]["id"], "wa-main");
    assert_eq!(channels[0]["name"], "WhatsApp");
    assert_eq!(channels[0]["provider"], "whatsapp");
    assert_eq!(get_ok(&app, &format!("/v1/chatbots/{bot}/channels/wa-main")).await, channels[0]);
    assert_error(app.get(&format!("/v1/chatbots/{bot}/channels/other"), &app.admin_key).await, 404, "not found").await;
}

fn webhook_config() -> Value {
    json!({
        "name": "WhatsApp",
        "reply_webhook": {
            "url": "https://hooks.example.com/reply",
            "method": "POST",
            "headers": { "X-Token": "abc" },
            "secret": "whsec-very-secret-value"
        },
        "human_takeover_webhook": {
            "url": "https://hooks.example.com/takeover",
            "method": "PUT",
            "headers": {},
            "body": { "source": "baton" }
        }
    })
}

#[tokio::test]
async fn channel_webhooks_are_configured_and_the_secret_is_never_shown() {
    // Arrange
    let (app, bot) = app_with_bot().await;
    app.handle_ok(&app.admin_key, &bot, "u1", "hello").await;
    let path = format!("/v1/chatbots/{bot}/channels/wa-main");

    // Act
    let response = put(&app, &path, &webhook_config()).await;

    // Assert
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    assert!(!text.contains("whsec-very-secret-value"), "PUT answer shows the secret: {text}");
    for path in [path.clone(), format!("/v1/chatbots/{bot}/channels")] {
        let text = app.get(&path, &app.admin_key).await.text().await.expect("body");
        assert!(!text.contains("whsec-very-secret-value"), "GET {path} shows the secret: {text}");
    }
    let channel = get_ok(&app, &path).await;
    assert_eq!(channel["reply_webhook"]["url"], "https://hooks.example.com/reply");
    assert_eq!(channel["reply_webhook"]["method"], "POST");
    assert_eq!(channel["reply_webhook"]["headers"], json!({ "X-Token": "abc" }));
    assert_eq!(channel["reply_webhook"]["secret"], "********");
    assert_eq!(channel["human_takeover_webhook"]["url"], "https://hooks.example.com/takeover");
    assert_eq!(channel["human_takeover_webhook"]["method"], "PUT");
    assert_eq!(channel["human_takeover_webhook"]["body"], json!({ "source": "baton" }));
}

#[tokio::test]
async fn putting_a_channel_back_with_the_masked_secret_keeps_a_secret() {
    let (app, bot) = app_with_bot().await;
    let path = format!("/v1/chatbots/{bot}/channels/wa-main");
    assert_eq!(put(&app, &path, &webhook_config()).await.status(), 200);

    // A client writes back what it read, with one change.
    let mut read_back = get_ok(&app, &path).await;
    for read_only in ["id", "chatbot_id", "tenant_id", "created_at", "updated_at"] {
        read_back.as_object_mut().expect("object").remove(read_only);
    }
    read_back["reply_webhook"]["headers"] = json!({ "X-Token": "def" });
    let response = put(&app, &path, &read_back).await;

    assert_eq!(response.status(), 200);
    let channel = get_ok(&app, &path).await;
    assert_eq!(channel["reply_webhook"]["secret"], "********", "the secret is still set");
    assert_eq!(channel["reply_webhook"]["headers"], json!({ "X-Token": "def" }));
}

#[tokio::test]
async fn patching_a_channel_changes_only_the_fields_given() {
    let (app, bot) = app_with_bot().await;
    let path = format!("/v1/chatbots/{bot}/channels/wa-main");
    assert_eq!(put(&app, &path, &webhook_config()).await.status(), 200);
    let before = get_ok(&app, &path).await;

    let response = patch(&app, &path, &json!({ "name": "WA Support" })).await;

    assert_eq!(response.status(), 200);
    let after = get_ok(&app, &path).await;
    assert_eq!(after["name"], "WA Support");
    assert_eq!(after["reply_webhook"], before["reply_webhook"]);
    assert_eq!(after["human_takeover_webhook"], before["human_takeover_webhook"]);
    assert_eq!(after["provider"], before["provider"]);
    assert_eq!(after["created_at"], before["created_at"]);
}

#[tokio::test]
async fn patching_an_unknown_channel_is_404() {
    let (app, bot) = app_with_bot().await;

    let response = patch(&app, &format!("/v1/chatbots/{bot}/channels/nowhere"), &json!({ "name": "x" })).await;

    assert_error(response, 404, "not found").await;
    assert!(items(&app, &format!("/v1/chatbots/{bot}/channels")).await.is_empty(), "PATCH created nothing");
}

#[tokio::test]
async fn putting_an_unknown_channel_creates_it() {
    let (app, bot) = app_with_bot().await;

    let response =
        put(&app, &format!("/v1/chatbots/{bot}/channels/tg-1"), &json!({ "name": "Telegram", "provider": "telegram" }))
            .await;

    assert_eq!(response.status(), 200);
    let channel = get_ok(&app, &format!("/v1/chatbots/{bot}/channels/tg-1")).await;
    assert_eq!(channel["id"], "tg-1");
    assert_eq!(channel["name"], "Telegram");
    assert_eq!(channel["provider"], "telegram");
}

#[tokio::test]
async fn bad_webhook_urls_are_422_naming_the_field_and_change_nothing() {
    // Arrange
    let (app, bot) = app_with_bot().await;
    let path = format!("/v1/chatbots/{bot}/channels/wa-main");
    assert_eq!(put(&app, &path, &webhook_config()).await.status(), 200);
    let before = get_ok(&app, &path).await;

    for url in ["not a url", "ftp://x", "mailto:ops@example.com", "https://"] {
        for (field, payload) in [
            ("reply_webhook.url", json!({ "reply_webhook": { "url": url } })),
            ("human_takeover_webhook.url", json!({ "human_takeover_webhook": { "url": url } })),
        ] {
            // Act
            let put_response = put(&app, &path, &payload).await;
            let patch_response = patch(&app, &path, &payload).await;

            // Assert
            let error = assert_error(put_response, 422, field).await;
            assert_eq!(error["field"], field, "PUT {url}");
            let error = assert_error(patch_response, 422, field).await;
            assert_eq!(error["field"], field, "PATCH {url}");
        }
    }

    let error = assert_error(
        patch(&app, &path, &json!({ "human_takeover_webhook": { "url": "https://ok.example.com", "method": "GET" } }))
            .await,
        400,
        "method",
    )
    .await;
    assert_eq!(error["field"], "human_takeover_webhook.method");
    assert_eq!(get_ok(&app, &path).await, before, "the channel is unchanged");
}

#[tokio::test]
async fn a_private_webhook_url_is_refused_when_private_networks_are_not_allowed() {
    let app = spawn_app_with(|s| s.webhooks.allow_private_networks = false).await;
    let bot = app.create_chatbot(&app.admin_key, "Strict").await;
    let path = format!("/v1/chatbots/{bot}/channels/wa-main");

    for url in [
        "http://127.0.0.1/x",
        "http://localhost:8080/x",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://[::1]/x",
    ] {
        let response = put(&app, &path, &json!({ "reply_webhook": { "url": url } })).await;
        let error = assert_error(response, 422, "reply_webhook.url").await;
        assert_eq!(error["field"], "reply_webhook.url", "{url}");
        let response = put(&app, &path, &json!({ "human_takeover_webhook": { "url": url } })).await;
        let error = assert_error(response, 422, "human_takeover_webhook.url").await;
        assert_eq!(error["field"], "human_takeover_webhook.url", "{url}");
    }
    assert_error(app.get(&path, &app.admin_key).await, 404, "not found").await;

    let response = put(&app, &path, &json!({ "reply_webhook": { "url": "https://hooks.example.com/reply" } })).await;
    assert_eq!(response.status(), 200, "a public URL is fine");
}

#[tokio::test]
async fn a_private_webhook_url_is_accepted_in_the_test_settings() {
    let (app, bot) = app_with_bot().await;
    let path = format!("/v1/chatbots/{bot}/channels/wa-main");

    let response = put(&app, &path, &json!({ "reply_webhook": { "url": "http://127.0.0.1/x" } })).await;

    assert_eq!(response.status(), 200);
    assert_eq!(get_ok(&app, &path).await["reply_webhook"]["url"], "http://127.0.0.1/x");
}

// ---------------------------------------------------------------- bad input stores nothing

#[tokio::test]
async fn malformed_json_is_400_and_stores_nothing() {
    let (app, bot) = app_with_bot().await;
    let keywords = format!("/v1/chatbots/{bot}/keywords");
    let settings = format!("/v1/chatbots/{bot}/settings");
    let settings_before = get_ok(&app, &settings).await;

    let response = send_raw(
        &app,
        Method::POST,
        &keywords,
        "application/json",
        r#"{"keywords": ["hi"], "match_type": "exact", "response": "#,
    )
    .await;
    let error = assert_error(response, 400, "malformed JSON").await;
    assert_eq!(error["code"], "bad_request");
    let response = send_raw(&app, Method::PUT, &settings, "application/json", r#"{"greeting_message": "x",}"#).await;
    assert_error(response, 400, "malformed JSON").await;
    let response = send_raw(&app, Method::POST, "/v1/chatbots", "application/json", "").await;
    assert_error(response, 400, "").await;

    assert!(items(&app, &keywords).await.is_empty());
    assert_eq!(get_ok(&app, &settings).await, settings_before);
    assert_eq!(items(&app, "/v1/chatbots").await.len(), 1);
}

#[tokio::test]
async fn a_non_json_content_type_is_415_and_stores_nothing() {
    let (app, bot) = app_with_bot().await;
    let keywords = format!("/v1/chatbots/{bot}/keywords");
    let settings = format!("/v1/chatbots/{bot}/settings");
    let settings_before = get_ok(&app, &settings).await;

    let response = send_raw(&app, Method::POST, "/v1/chatbots", "text/plain", r#"{"name": "Plain"}"#).await;
    assert_error(response, 415, "application/json").await;
    let response = send_raw(
        &app,
        Method::POST,
        &keywords,
        "application/x-www-form-urlencoded",
        "keywords=hi&match_type=exact&response=yo",
    )
    .await;
    assert_error(response, 415, "").await;
    let response = send_raw(&app, Method::PUT, &settings, "text/html", r#"{"greeting_message": "x"}"#).await;
    assert_error(response, 415, "").await;

    assert_eq!(items(&app, "/v1/chatbots").await.len(), 1);
    assert!(items(&app, &keywords).await.is_empty());
    assert_eq!(get_ok(&app, &settings).await, settings_before);
}

#[tokio::test]
async fn an_oversized_body_is_413_and_stores_nothing() {
    // Arrange
    let app = spawn_app_with(|s| s.server.body_limit_bytes = 1024).await;
    let bot = app.create_chatbot(&app.admin_key, "Small bodies").await;
    let keywords = format!("/v1/chatbots/{bot}/keywords");
    let settings = format!("/v1/chatbots/{bot}/settings");
    let settings_before = get_ok(&app, &settings).await;
    let long = "x".repeat(4096);

    // Act / assert
    let response = app
        .post(&keywords, &app.admin_key, &json!({ "keywords": ["hi"], "match_type": "exact", "response": long }))
        .await;
    assert_error(response, 413, "").await;
    let response = put(&app, &settings, &json!({ "greeting_message": long })).await;
    assert_error(response, 413, "").await;
    let response = app.post("/v1/chatbots", &app.admin_key, &json!({ "name": "Big", "description": long })).await;
    assert_error(response, 413, "").await;

    assert!(items(&app, &keywords).await.is_empty());
    assert_eq!(get_ok(&app, &settings).await, settings_before);
    assert_eq!(items(&app, "/v1/chatbots").await.len(), 1);

    // A body under the limit is fine.
    let response = app
        .post(&keywords, &app.admin_key, &json!({ "keywords": ["hi"], "match_type": "exact", "response": "short" }))
        .await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn representative_bad_requests_leave_every_list_unchanged() {
    // Arrange: a configured chatbot.
    let (app, bot) = app_with_bot().await;
    let key = &app.admin_key;
    app.create_rule(key, &bot, &json!({ "keywords": ["hi"], "match_type": "contains", "response": "Hello" })).await;
    app.handle_ok(key, &bot, "u1", "hi").await;
    let views = [
        "/v1/chatbots".to_string(),
        format!("/v1/chatbots/{bot}"),
        format!("/v1/chatbots/{bot}/settings"),
        format!("/v1/chatbots/{bot}/keywords"),
        format!("/v1/chatbots/{bot}/channels"),
    ];
    let mut before = Vec::new();
    for view in &views {
        before.push(get_ok(&app, view).await);
    }
    let rule_id = items(&app, &views[3]).await[0]["id"].as_str().expect("id").to_string();

    // Act: bad regex, too-long title, bad settings type, bad URL, unknown field on every kind of object.
    let bad = [
        (Method::POST, views[3].clone(), json!({ "keywords": ["(("], "match_type": "regex", "response": "x" }), 422),
        (
            Method::POST,
            views[3].clone(),
            json!({ "keywords": ["a"], "match_type": "exact", "response": "x", "buttons": buttons(&[&"t".repeat(21)]) }),
            422,
        ),
        (Method::PUT, format!("{}/{rule_id}", views[3]), json!({ "match_type": "regex", "keywords": ["(("] }), 422),
        (Method::PATCH, format!("{}/{rule_id}", views[3]), json!({ "response": "" }), 400),
        (
            Method::PUT,
            views[2].clone(),
            json!({ "greeting_message": "new", "greeting_buttons": buttons(&[&"t".repeat(21)]) }),
            422,
        ),
        (Method::PUT, views[2].clone(), json!({ "ai_temperature": 9.5 }), 422),
        (Method::PUT, views[2].clone(), json!({ "chatbot_enabled": "no" }), 400),
        (
            Method::PUT,
            format!("/v1/chatbots/{bot}/channels/wa-main"),
            json!({ "name": "new", "reply_webhook": { "url": "ftp://x" } }),
            422,
        ),
        (Method::PATCH, format!("/v1/chatbots/{bot}/channels/wa-main"), json!({ "name": "new", "color": "red" }), 400),
        (Method::PATCH, views[1].clone(), json!({ "name": "new", "id": "abc" }), 400),
        (Method::POST, views[0].clone(), json!({ "name": "new", "settings": { "chatbot_enabled": "maybe" } }), 400),
    ];
    for (method, path, payload, status) in bad {
        let response = app.send_json(method.clone(), &path, key, &payload).await;
        assert_eq!(response.status(), status, "{method} {path} {payload}");
    }

    // Assert
    for (view, before) in views.iter().zip(&before) {
        assert_eq!(&get_ok(&app, view).await, before, "{view} unchanged");
    }
    // The bot still answers as before.
    assert_eq!(reply_texts(&app.handle_ok(key, &bot, "u2", "hi").await), ["Hello"]);
}

#[tokio::test]
async fn patching_only_the_reply_webhook_url_keeps_its_secret_and_headers() {
    // Arrange
    let (app, bot) = app_with_bot().await;
    let path = format!("/v1/chatbots/{bot}/channels/wa-main");
    assert_eq!(put(&app, &path, &webhook_config()).await.status(), 200);

    // Act: move the webhook to a new URL, saying nothing about its secret.
    let response =
        patch(&app, &path, &json!({ "reply_webhook": { "url": "https://hooks.example.com/v2/reply" } })).await;

    // Assert: a partial update must not silently drop the signing secret.
    assert_eq!(response.status(), 200);
    let channel = get_ok(&app, &path).await;
    assert_eq!(channel["reply_webhook"]["url"], "https://hooks.example.com/v2/reply");
    assert_eq!(channel["reply_webhook"]["secret"], "********", "the signing secret survives a partial PATCH");
    assert_eq!(channel["reply_webhook"]["headers"], json!({ "X-Token": "abc" }));
}

#[tokio::test]
async fn a_channel_read_back_can_be_put_unchanged() {
    let (app, bot) = app_with_bot().await;
    let path = format!("/v1/chatbots/{bot}/channels/wa-main");
    assert_eq!(put(&app, &path, &webhook_config()).await.status(), 200);
    let read = get_ok(&app, &path).await;

    // A client writes back exactly what it read (id, timestamps and the masked secret included).
    let response = put(&app, &path, &read).await;

    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    let after = get_ok(&app, &path).await;
    assert_eq!(after["reply_webhook"], read["reply_webhook"]);
    assert_eq!(after["created_at"], read["created_at"]);
}

#[tokio::test]
async fn a_keyword_rule_read_back_can_be_put_unchanged() {
    let (app, bot) = app_with_bot().await;
    let rule = app
        .create_rule(&app.admin_key, &bot, &json!({ "keywords": ["hi"], "match_type": "exact", "response": "Hello" }))
        .await;
    let path = format!("/v1/chatbots/{bot}/keywords/{}", rule["id"].as_str().expect("id"));
    let mut read = get_ok(&app, &path).await;
    read["response"] = json!("Hello again");

    let response = put(&app, &path, &read).await;

    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    assert_eq!(get_ok(&app, &path).await["response"], "Hello again");
}

#[tokio::test]
async fn settings_read_back_can_be_put_unchanged() {
    let (app, bot) = app_with_bot().await;
    let path = format!("/v1/chatbots/{bot}/settings");
    let mut read = get_ok(&app, &path).await;
    read["greeting_message"] = json!("Round trip");

    let response = put(&app, &path, &read).await;

    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    assert_eq!(get_ok(&app, &path).await["greeting_message"], "Round trip");
}

#[tokio::test]
async fn a_disabled_chatbot_does_not_answer() {
    let (app, bot) = app_with_bot().await;
    app.create_rule(&app.admin_key, &bot, &json!({ "keywords": ["hi"], "match_type": "exact", "response": "Hello" }))
        .await;
    assert_eq!(reply_texts(&app.handle_ok(&app.admin_key, &bot, "u1", "hi").await), ["Hello"]);

    let response = put(&app, &format!("/v1/chatbots/{bot}/settings"), &json!({ "chatbot_enabled": false })).await;
    assert_eq!(response.status(), 200);

    assert!(reply_texts(&app.handle_ok(&app.admin_key, &bot, "u1", "hi").await).is_empty());
    assert!(reply_texts(&app.handle_ok(&app.admin_key, &bot, "u2", "hi").await).is_empty(), "not even a greeting");
}

#[tokio::test]
async fn button_titles_are_limited_in_characters_not_bytes() {
    let (app, bot) = app_with_bot().await;
    let accented = "é".repeat(20);

    let response =
        put(&app, &format!("/v1/chatbots/{bot}/settings"), &json!({ "greeting_buttons": [{ "title": accented }] }))
            .await;
    assert_eq!(response.status(), 200);
    let rule = app
        .create_rule(&app.admin_key, &bot, &json!({ "keywords": ["menu"], "match_type": "exact", "response": "Pick", "buttons": [{ "title": "Ñandú 🐦 ".repeat(2).trim() }] }))
        .await;
    assert_eq!(rule["buttons"][0]["title"], "Ñandú 🐦 Ñandú 🐦");
}

#[tokio::test]
async fn invalid_business_hours_are_422_naming_the_field_and_change_nothing() {
    let (app, bot) = app_with_bot().await;
    let path = format!("/v1/chatbots/{bot}/settings");
    let before = get_ok(&app, &path).await;

    let cases = [
        (json!({ "business_hours": { "timezone": "Mars/Phobos" } }), "business_hours.timezone"),
        (
            json!({ "business_hours": { "timezone": "UTC", "weekly": { "mon": [["18:00", "09:00"]] } } }),
            "business_hours.weekly.mon[0]",
        ),
        (
            json!({ "business_hours": { "timezone": "UTC", "weekly": { "tue": [["09:00", "25:00"]] } } }),
            "business_hours.weekly.tue[0]",
        ),
        (
            json!({ "business_hours": { "timezone": "UTC", "weekly": { "someday": [["09:00", "17:00"]] } } }),
            "business_hours.weekly.someday",
        ),
    ];
    for (payload, field) in cases {
        let error = assert_error(put(&app, &path, &payload).await, 422, field).await;
        assert_eq!(error["field"], field, "{payload}");
    }

    assert_eq!(get_ok(&app, &path).await, before);
}

#[tokio::test]
async fn putting_part_of_business_hours_keeps_the_rest_of_the_schedule() {
    // Arrange
    let (app, bot) = app_with_bot().await;
    let path = format!("/v1/chatbots/{bot}/settings");
    let schedule =
        json!({ "timezone": "Europe/Paris", "weekly": { "mon": [["09:00", "18:00"]] }, "closed_message": "Closed" });
    assert_eq!(put(&app, &path, &json!({ "business_hours": schedule })).await.status(), 200);

    // Act: change only the closed message.
    let response = put(&app, &path, &json!({ "business_hours": { "closed_message": "Back at 9" } })).await;

    // Assert: the time zone and the weekly schedule were not given, so they stay.
    assert_eq!(response.status(), 200);
    let hours = get_ok(&app, &path).await["business_hours"].clone();
    assert_eq!(hours["closed_message"], "Back at 9");
    assert_eq!(hours["timezone"], "Europe/Paris", "a partial PUT silently reset the time zone");
    assert_eq!(hours["weekly"], schedule["weekly"]);
}
