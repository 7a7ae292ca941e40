//! Hand-overs to humans through `/v1/transfers`: transfer keywords, manual transfers, queues and
//! their counts, pickup (oldest first, never twice), assignment, resuming the bot; teams and
//! agents; scopes and tenants; and business hours read against the real clock.

use std::collections::HashSet;

use chrono::{Datelike, Timelike, Utc};
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_error, body, call, get_ok, spawn_app, TestApp};

const FALLBACK: &str = "Sorry, I didn't understand that. Please try again.";
const TRANSFER_MESSAGE: &str = "Connecting you with a member of our team. Please wait a moment.";

fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or_else(|| panic!("no {field} in {value}"))
}

fn texts(handled: &Value) -> Vec<String> {
    handled["replies"]
        .as_array()
        .unwrap_or_else(|| panic!("no replies in {handled}"))
        .iter()
        .map(|r| r["text"].as_str().expect("text").to_string())
        .collect()
}

/// Sends a text from `user` (contact Jane Roe, phone +4915100000001); asserts 200.
async fn say(app: &TestApp, bot: &str, user: &str, text: &str) -> Value {
    let payload = json!({
        "channelId": "wa-main",
        "channelName": "WhatsApp",
        "providerId": user,
        "message": { "type": "text", "text": text },
        "contact": { "first_name": "Jane", "last_name": "Roe", "phones": ["+4915100000001"] },
    });
    let (status, value) = call(app, Method::POST, &format!("/v1/chatbots/{bot}/conversations/handle"), &payload).await;
    assert_eq!(status, 200, "handle answered {value}");
    value
}

/// Opens a conversation for `user` with a first message; returns its id.
async fn open_conversation(app: &TestApp, bot: &str, user: &str) -> String {
    str_of(&say(app, bot, user, "hi").await, "conversation_id").to_string()
}

async fn put_settings(app: &TestApp, bot: &str, settings: &Value) {
    let (status, value) = call(app, Method::PUT, &format!("/v1/chatbots/{bot}/settings"), settings).await;
    assert_eq!(status, 200, "put settings answered {value}");
}

async fn create_team(app: &TestApp, name: &str) -> String {
    let (status, value) = call(app, Method::POST, "/v1/teams", &json!({ "name": name })).await;
    assert_eq!(status, 201, "create team answered {value}");
    str_of(&value, "id").to_string()
}

async fn create_agent(app: &TestApp, name: &str, teams: &[&str]) -> String {
    let payload = json!({ "name": name, "email": format!("{}@example.com", name.to_lowercase()), "team_ids": teams });
    let (status, value) = call(app, Method::POST, "/v1/agents", &payload).await;
    assert_eq!(status, 201, "create agent answered {value}");
    str_of(&value, "id").to_string()
}

/// Opens a transfer by hand with `payload`, asserting 201.
async fn open_transfer(app: &TestApp, payload: &Value) -> Value {
    let (status, value) = call(app, Method::POST, "/v1/transfers", payload).await;
    assert_eq!(status, 201, "create transfer answered {value}");
    value
}

/// The transfer list for `query`.
async fn transfers(app: &TestApp, query: &str) -> Value {
    get_ok(app, &format!("/v1/transfers{query}")).await
}

fn transfer_ids(listed: &Value) -> Vec<String> {
    listed["transfers"].as_array().expect("transfers").iter().map(|t| str_of(t, "id").to_string()).collect()
}

/// POSTs a pickup; returns status and body.
async fn pickup(app: &TestApp, query: &str) -> (u16, Value) {
    call(app, Method::POST, &format!("/v1/transfers/pickup{query}"), &json!({})).await
}

async fn conversation(app: &TestApp, id: &str) -> Value {
    get_ok(app, &format!("/v1/conversations/{id}")).await
}

// --- opening transfers ------------------------------------------------------------------------

#[tokio::test]
async fn a_transfer_keyword_opens_a_general_queue_transfer_and_pauses_the_bot() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    put_settings(&app, &bot, &json!({ "transfer_keywords": ["agent", "human"] })).await;
    let conversation_id = open_conversation(&app, &bot, "u1").await;

    // Act
    let handled = say(&app, &bot, "u1", "I want to talk to a human please").await;

    // Assert
    assert_eq!(texts(&handled), [TRANSFER_MESSAGE]);
    assert_eq!(handled["bot_active"], false);
    let listed = transfers(&app, "").await;
    assert_eq!(listed["general_queue_count"], 1);
    assert_eq!(listed["team_queue_counts"], json!({}));
    let transfer = &listed["transfers"][0];
    assert_eq!(listed["transfers"].as_array().unwrap().len(), 1);
    assert_eq!(transfer["source"], "keyword");
    assert_eq!(transfer["status"], "active");
    assert_eq!(transfer["team_id"], Value::Null);
    assert_eq!(transfer["team_name"], Value::Null);
    assert_eq!(transfer["agent_id"], Value::Null);
    assert_eq!(transfer["agent_name"], Value::Null);
    assert_eq!(transfer["conversation_id"], conversation_id.as_str());
    assert_eq!(transfer["chatbot_id"], bot.as_str());
    assert_eq!(transfer["contact_name"], "Jane Roe");
    assert_eq!(transfer["phone_number"], "+4915100000001");
    assert!(transfer["transferred_at"].is_string());
    let served = conversation(&app, &conversation_id).await;
    assert_eq!(served["bot_active"], false);
    assert_eq!(served["status"], "escalated");
    assert_eq!(texts(&say(&app, &bot, "u1", "hello?").await), Vec::<String>::new(), "the bot is silent");
    assert_eq!(transfers(&app, "").await["general_queue_count"], 1, "one transfer, not one per message");
}

#[tokio::test]
async fn a_transfer_keyword_only_matches_a_whole_word() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    put_settings(&app, &bot, &json!({ "transfer_keywords": ["agent"] })).await;
    open_conversation(&app, &bot, "u1").await;

    let handled = say(&app, &bot, "u1", "my travel agency booked this").await;

    assert_eq!(texts(&handled), [FALLBACK]);
    assert_eq!(handled["bot_active"], true);
    assert_eq!(transfers(&app, "").await["transfers"], json!([]));
}

#[tokio::test]
async fn a_transfer_can_be_opened_by_hand_by_contact_or_by_conversation() {
    // Arrange
    let app = spawn_app().await;
    let team = create_team(&app, "Billing").await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let first = say(&app, &bot, "u1", "hi").await;
    let second = open_conversation(&app, &bot, "u2").await;

    // Act
    let by_contact =
        open_transfer(&app, &json!({ "contact_id": first["contact_id"], "notes": "Customer requested human support" }))
            .await;
    let by_conversation = open_transfer(&app, &json!({ "conversation_id": second, "team_id": team })).await;

    // Assert
    assert_eq!(by_contact["source"], "manual");
    assert_eq!(by_contact["status"], "active");
    assert_eq!(by_contact["conversation_id"], first["conversation_id"]);
    assert_eq!(by_contact["contact_id"], first["contact_id"]);
    assert_eq!(by_contact["notes"], "Customer requested human support");
    assert_eq!(by_contact["team_id"], Value::Null);
    assert_eq!(by_contact["contact_name"], "Jane Roe");
    assert_eq!(by_conversation["team_id"], team.as_str());
    assert_eq!(by_conversation["team_name"], "Billing");
    assert_eq!(by_conversation["conversation_id"], second.as_str());
    for id in [str_of(&first, "conversation_id"), second.as_str()] {
        let served = conversation(&app, id).await;
        assert_eq!(served["bot_active"], false, "{served}");
    }
    assert_eq!(texts(&say(&app, &bot, "u1", "still there?").await), Vec::<String>::new());
    let listed = transfers(&app, "").await;
    assert_eq!(listed["general_queue_count"], 1);
    assert_eq!(listed["team_queue_counts"], json!({ team.clone(): 1 }));
    let one = get_ok(&app, &format!("/v1/transfers/{}", str_of(&by_conversation, "id"))).await;
    assert_eq!(one, by_conversation);
}

#[tokio::test]
async fn a_manual_transfer_with_bad_input_is_refused_and_changes_nothing() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let conversation_id = open_conversation(&app, &bot, "u1").await;

    // Act + assert
    let neither =
        assert_error(app.post("/v1/transfers", &app.admin_key, &json!({ "notes": "x" })).await, 400, "").await;
    assert_eq!(neither["field"], "contact_id");
    let unknown_team = json!({ "conversation_id": conversation_id, "team_id": uuid::Uuid::new_v4().to_string() });
    let error = assert_error(app.post("/v1/transfers", &app.admin_key, &unknown_team).await, 422, "").await;
    assert_eq!(error["field"], "team_id");
    let unknown_field = json!({ "conversation_id": conversation_id, "priority": "high" });
    assert_error(app.post("/v1/transfers", &app.admin_key, &unknown_field).await, 400, "priority").await;
    let too_long = json!({ "conversation_id": conversation_id, "notes": "n".repeat(4001) });
    let response = app.post("/v1/transfers", &app.admin_key, &too_long).await;
    let status = response.status().as_u16();
    let error = body(response).await;
    assert!(status == 400 || status == 422, "{status}: {error}");
    assert_eq!(error["field"], "notes");
    for missing in [
        json!({ "conversation_id": uuid::Uuid::new_v4().to_string() }),
        json!({ "contact_id": uuid::Uuid::new_v4().to_string() }),
        json!({ "conversation_id": "not-a-uuid" }),
    ] {
        assert_error(app.post("/v1/transfers", &app.admin_key, &missing).await, 404, "").await;
    }

    // Nothing changed.
    assert_eq!(transfers(&app, "").await["transfers"], json!([]));
    let served = conversation(&app, &conversation_id).await;
    assert_eq!(served["bot_active"], true);
    assert_eq!(served["status"], "active");
    assert_eq!(texts(&say(&app, &bot, "u1", "hello").await), [FALLBACK]);
}

// --- listing and queues -----------------------------------------------------------------------

#[tokio::test]
async fn transfers_are_listed_with_status_and_team_filters() {
    // Arrange: one transfer in the general queue, one per team, one of them resumed.
    let app = spawn_app().await;
    let sales = create_team(&app, "Sales").await;
    let billing = create_team(&app, "Billing").await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let mut opened = Vec::new();
    for (user, team) in [("u1", None), ("u2", Some(&sales)), ("u3", Some(&billing)), ("u4", Some(&sales))] {
        let conversation_id = open_conversation(&app, &bot, user).await;
        let transfer = open_transfer(&app, &json!({ "conversation_id": conversation_id, "team_id": team })).await;
        opened.push(str_of(&transfer, "id").to_string());
    }
    let (status, _) = call(&app, Method::PUT, &format!("/v1/transfers/{}/resume", opened[3]), &json!({})).await;
    assert_eq!(status, 200);

    // Act
    let all = transfers(&app, "").await;
    let active = transfers(&app, "?status=active").await;
    let resumed = transfers(&app, "?status=resumed").await;
    let general = transfers(&app, "?team_id=general").await;
    let of_sales = transfers(&app, &format!("?team_id={sales}")).await;
    let active_sales = transfers(&app, &format!("?team_id={sales}&status=active")).await;

    // Assert
    let set = |ids: Vec<String>| ids.into_iter().collect::<HashSet<_>>();
    assert_eq!(set(transfer_ids(&all)), set(opened.clone()));
    assert_eq!(set(transfer_ids(&active)), set(opened[..3].to_vec()));
    assert_eq!(transfer_ids(&resumed), [opened[3].as_str()]);
    assert_eq!(transfer_ids(&general), [opened[0].as_str()]);
    assert_eq!(set(transfer_ids(&of_sales)), set(vec![opened[1].clone(), opened[3].clone()]));
    assert_eq!(transfer_ids(&active_sales), [opened[1].as_str()]);
    // Counts are waiting transfers, whatever the filter.
    for listed in [&all, &resumed, &general] {
        assert_eq!(listed["general_queue_count"], 1);
        assert_eq!(listed["team_queue_counts"], json!({ sales.clone(): 1, billing.clone(): 1 }));
    }
    let error = assert_error(app.get("/v1/transfers?status=open", &app.admin_key).await, 400, "").await;
    assert_eq!(error["field"], "status");
}

#[tokio::test]
async fn pickup_takes_the_oldest_waiting_transfer_first() {
    // Arrange
    let app = spawn_app().await;
    let team = create_team(&app, "Sales").await;
    let agent = create_agent(&app, "Maria", &[&team]).await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let mut opened = Vec::new();
    for user in ["u1", "u2", "u3"] {
        let conversation_id = open_conversation(&app, &bot, user).await;
        let transfer = open_transfer(&app, &json!({ "conversation_id": conversation_id })).await;
        opened.push(str_of(&transfer, "id").to_string());
    }
    let team_conversation = open_conversation(&app, &bot, "u4").await;
    let team_transfer = open_transfer(&app, &json!({ "conversation_id": team_conversation, "team_id": team })).await;

    // Act
    let mut picked = Vec::new();
    for _ in 0..3 {
        let (status, transfer) = pickup(&app, &format!("?team_id=general&agent_id={agent}")).await;
        assert_eq!(status, 200, "{transfer}");
        assert_eq!(transfer["agent_id"], agent.as_str());
        assert_eq!(transfer["agent_name"], "Maria");
        assert!(transfer["assigned_at"].is_string());
        picked.push(str_of(&transfer, "id").to_string());
    }
    let (empty_status, empty) = pickup(&app, "?team_id=general").await;
    let listed = transfers(&app, "").await;
    let (team_status, from_team) = pickup(&app, &format!("?team_id={team}")).await;
    let (none_status, _) = pickup(&app, "").await;

    // Assert
    assert_eq!(picked, opened, "oldest first");
    assert_eq!(empty_status, 404);
    assert_eq!(empty["error"], "No transfer is waiting in this queue");
    assert_eq!(listed["general_queue_count"], 0);
    assert_eq!(listed["team_queue_counts"], json!({ team.clone(): 1 }));
    assert_eq!(team_status, 200, "{from_team}");
    assert_eq!(from_team["id"], team_transfer["id"]);
    assert_eq!(from_team["agent_id"], Value::Null, "picked without an agent");
    assert_eq!(none_status, 404, "every queue is empty now");
    assert_eq!(transfers(&app, "").await["team_queue_counts"], json!({}));
    // Picking up does not give the conversation back to the bot.
    assert_eq!(conversation(&app, &team_conversation).await["bot_active"], false);
}

#[tokio::test]
async fn pickup_without_a_queue_takes_the_oldest_of_any_queue() {
    let app = spawn_app().await;
    let team = create_team(&app, "Sales").await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let first = open_conversation(&app, &bot, "u1").await;
    let second = open_conversation(&app, &bot, "u2").await;
    let team_first = open_transfer(&app, &json!({ "conversation_id": first, "team_id": team })).await;
    let general_second = open_transfer(&app, &json!({ "conversation_id": second })).await;

    let (_, one) = pickup(&app, "").await;
    let (_, two) = pickup(&app, "").await;

    assert_eq!(one["id"], team_first["id"]);
    assert_eq!(two["id"], general_second["id"]);
}

#[tokio::test]
async fn a_pickup_naming_an_unknown_agent_is_refused_and_takes_nothing() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let conversation_id = open_conversation(&app, &bot, "u1").await;
    let transfer = open_transfer(&app, &json!({ "conversation_id": conversation_id })).await;

    // Act
    let (status, error) = pickup(&app, &format!("?agent_id={}", uuid::Uuid::new_v4())).await;
    let (team_status, _) = pickup(&app, &format!("?team_id={}", uuid::Uuid::new_v4())).await;

    // Assert: like assign, an unknown agent is invalid input, not an empty queue.
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "agent_id");
    assert!(team_status == 404 || team_status == 422, "unknown team queue: {team_status}");
    let waiting = get_ok(&app, &format!("/v1/transfers/{}", str_of(&transfer, "id"))).await;
    assert_eq!(waiting, transfer, "still waiting, unassigned");
    assert_eq!(transfers(&app, "").await["general_queue_count"], 1);
}

#[tokio::test]
async fn a_conversation_already_waiting_for_a_human_is_not_queued_twice() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let conversation_id = open_conversation(&app, &bot, "u1").await;
    let first = open_transfer(&app, &json!({ "conversation_id": conversation_id })).await;

    // Act
    let (status, second) =
        call(&app, Method::POST, "/v1/transfers", &json!({ "conversation_id": conversation_id })).await;

    // Assert: two waiting transfers would let two agents pick up the same customer.
    assert_eq!(status, 409, "{second}");
    let listed = transfers(&app, "").await;
    assert_eq!(transfer_ids(&listed), [str_of(&first, "id").to_string()]);
    assert_eq!(listed["general_queue_count"], 1);
}

#[tokio::test]
async fn concurrent_pickups_never_take_the_same_transfer() {
    // Arrange: 20 waiting transfers in the general queue.
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let mut opened = HashSet::new();
    for n in 0..20 {
        let conversation_id = open_conversation(&app, &bot, &format!("user-{n}")).await;
        let transfer = open_transfer(&app, &json!({ "conversation_id": conversation_id })).await;
        opened.insert(str_of(&transfer, "id").to_string());
    }

    // Act: 30 agents pick up at once.
    let results = join_all((0..30).map(|_| pickup(&app, "?team_id=general"))).await;

    // Assert
    let taken: Vec<String> =
        results.iter().filter(|(status, _)| *status == 200).map(|(_, t)| str_of(t, "id").to_string()).collect();
    let empty = results.iter().filter(|(status, _)| *status == 404).count();
    assert_eq!(taken.len(), 20, "results: {results:?}");
    assert_eq!(empty, 10);
    let distinct: HashSet<String> = taken.into_iter().collect();
    assert_eq!(distinct, opened, "each transfer taken exactly once");
    assert_eq!(transfers(&app, "").await["general_queue_count"], 0);
}

// --- assign and resume ------------------------------------------------------------------------

#[tokio::test]
async fn assigning_a_transfer_sets_its_agent_and_takes_it_out_of_the_queue() {
    // Arrange
    let app = spawn_app().await;
    let team = create_team(&app, "Sales").await;
    let agent = create_agent(&app, "Omar", &[&team]).await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let conversation_id = open_conversation(&app, &bot, "u1").await;
    let transfer = open_transfer(&app, &json!({ "conversation_id": conversation_id, "team_id": team })).await;
    let id = str_of(&transfer, "id").to_string();
    let assign = format!("/v1/transfers/{id}/assign");

    // Act
    let (bad_status, bad) = call(&app, Method::PUT, &assign, &json!({ "agent_id": uuid::Uuid::new_v4() })).await;
    let (missing_status, missing) = call(&app, Method::PUT, &assign, &json!({})).await;
    let (status, assigned) = call(&app, Method::PUT, &assign, &json!({ "agent_id": agent })).await;

    // Assert
    assert_eq!(bad_status, 422, "{bad}");
    assert_eq!(bad["field"], "agent_id");
    assert_eq!(missing_status, 400, "{missing}");
    assert_eq!(missing["field"], "agent_id");
    assert_eq!(status, 200, "{assigned}");
    assert_eq!(assigned["agent_id"], agent.as_str());
    assert_eq!(assigned["agent_name"], "Omar");
    assert_eq!(assigned["team_name"], "Sales");
    assert_eq!(assigned["status"], "active");
    assert!(assigned["assigned_at"].is_string());
    assert_eq!(get_ok(&app, &format!("/v1/transfers/{id}")).await, assigned);
    assert_eq!(transfers(&app, "").await["team_queue_counts"], json!({}));
    assert_eq!(pickup(&app, &format!("?team_id={team}")).await.0, 404, "an assigned transfer is not picked up");
}

#[tokio::test]
async fn resuming_a_transfer_hands_the_conversation_back_to_the_bot() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    put_settings(&app, &bot, &json!({ "transfer_keywords": ["agent"] })).await;
    let conversation_id = open_conversation(&app, &bot, "u1").await;
    say(&app, &bot, "u1", "agent").await;
    let id = transfer_ids(&transfers(&app, "").await)[0].clone();

    // Act
    let (status, resumed) = call(&app, Method::PUT, &format!("/v1/transfers/{id}/resume"), &json!({})).await;
    let next = say(&app, &bot, "u1", "are you back?").await;

    // Assert
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["status"], "resumed");
    assert!(resumed["resumed_at"].is_string());
    let served = conversation(&app, &conversation_id).await;
    assert_eq!(served["bot_active"], true);
    assert_eq!(served["status"], "active");
    assert_eq!(texts(&next), [FALLBACK]);
    assert_eq!(next["bot_active"], true);
    let listed = transfers(&app, "").await;
    assert_eq!(listed["general_queue_count"], 0, "a resumed transfer no longer waits");
    assert_eq!(transfer_ids(&transfers(&app, "?status=resumed").await), [id.as_str()]);
    assert_eq!(pickup(&app, "").await.0, 404);
    // A resumed transfer cannot be assigned any more.
    let agent = create_agent(&app, "Late", &[]).await;
    let (assign_status, _) =
        call(&app, Method::PUT, &format!("/v1/transfers/{id}/assign"), &json!({ "agent_id": agent })).await;
    assert_eq!(assign_status, 409);
    // The transfer keyword opens a new transfer later on.
    say(&app, &bot, "u1", "agent again please").await;
    assert_eq!(transfers(&app, "?status=active").await["transfers"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_picked_up_transfer_can_be_resumed() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let conversation_id = open_conversation(&app, &bot, "u1").await;
    let transfer = open_transfer(&app, &json!({ "conversation_id": conversation_id })).await;
    assert_eq!(pickup(&app, "").await.0, 200);

    let (status, resumed) =
        call(&app, Method::PUT, &format!("/v1/transfers/{}/resume", str_of(&transfer, "id")), &json!({})).await;

    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["status"], "resumed");
    assert_eq!(conversation(&app, &conversation_id).await["bot_active"], true);
    assert_eq!(texts(&say(&app, &bot, "u1", "hello").await), [FALLBACK]);
}

#[tokio::test]
async fn deleting_a_conversation_takes_its_waiting_transfer_out_of_the_queue() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let conversation_id = open_conversation(&app, &bot, "u1").await;
    let transfer = open_transfer(&app, &json!({ "conversation_id": conversation_id })).await;

    // Act
    let (status, _) = call(&app, Method::DELETE, &format!("/v1/conversations/{conversation_id}"), &json!({})).await;

    // Assert: no agent is sent to a conversation that no longer exists.
    assert_eq!(status, 200);
    let listed = transfers(&app, "").await;
    assert_eq!(listed["general_queue_count"], 0, "{listed}");
    assert_eq!(pickup(&app, "").await.0, 404);
    let still_listed = listed["transfers"].as_array().unwrap().iter().find(|t| t["id"] == transfer["id"]);
    assert!(still_listed.is_none_or(|t| t["status"] != "active"), "{listed}");
}

#[tokio::test]
async fn deleting_a_chatbot_takes_its_waiting_transfers_out_of_the_queues() {
    // Arrange
    let app = spawn_app().await;
    let team = create_team(&app, "Sales").await;
    let bot = app.create_chatbot(&app.admin_key, "Old bot").await;
    let first = open_conversation(&app, &bot, "u1").await;
    let second = open_conversation(&app, &bot, "u2").await;
    open_transfer(&app, &json!({ "conversation_id": first })).await;
    open_transfer(&app, &json!({ "conversation_id": second, "team_id": team })).await;

    // Act
    let (status, _) = call(&app, Method::DELETE, &format!("/v1/chatbots/{bot}"), &json!({})).await;

    // Assert
    assert_eq!(status, 200);
    let listed = transfers(&app, "").await;
    assert_eq!(listed["general_queue_count"], 0, "{listed}");
    assert_eq!(listed["team_queue_counts"], json!({}), "{listed}");
    assert_eq!(pickup(&app, "").await.0, 404);
}

// --- teams and agents -------------------------------------------------------------------------

#[tokio::test]
async fn teams_and_agents_can_be_created_listed_and_read() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let (status, team) = call(&app, Method::POST, "/v1/teams", &json!({ "name": "Sales Team" })).await;
    let team_id = str_of(&team, "id").to_string();
    let (agent_status, agent) = call(
        &app,
        Method::POST,
        "/v1/agents",
        &json!({ "name": "Maria", "email": "maria@example.com", "team_ids": [team_id] }),
    )
    .await;

    // Assert
    assert_eq!(status, 201, "{team}");
    assert_eq!(team["name"], "Sales Team");
    assert!(team["created_at"].is_string());
    assert_eq!(agent_status, 201, "{agent}");
    assert_eq!(agent["name"], "Maria");
    assert_eq!(agent["email"], "maria@example.com");
    assert_eq!(agent["team_ids"], json!([team_id]));
    let teams = get_ok(&app, "/v1/teams").await;
    assert_eq!(teams["items"], json!([team]));
    assert_eq!(get_ok(&app, &format!("/v1/teams/{team_id}")).await, team);
    let agents = get_ok(&app, "/v1/agents").await;
    assert_eq!(agents["items"], json!([agent]));
    assert_eq!(get_ok(&app, &format!("/v1/agents/{}", str_of(&agent, "id"))).await, agent);
    // A key for queue work can read them.
    let worker = app.key_with_scopes(&["transfers"]);
    assert_eq!(app.get("/v1/teams", &worker).await.status(), 200);
    assert_eq!(app.get("/v1/agents", &worker).await.status(), 200);
}

#[tokio::test]
async fn bad_teams_and_agents_are_refused_and_nothing_is_stored() {
    // Arrange
    let app = spawn_app().await;
    let team = create_team(&app, "Sales").await;
    let stranger = app.key_for_new_tenant(&["admin"]);
    let foreign_team =
        str_of(&body(app.post("/v1/teams", &stranger, &json!({ "name": "Theirs" })).await).await, "id").to_string();

    // Act + assert
    let blank = assert_error(app.post("/v1/teams", &app.admin_key, &json!({ "name": "  " })).await, 400, "").await;
    assert_eq!(blank["field"], "name");
    assert_error(app.post("/v1/teams", &app.admin_key, &json!({})).await, 400, "name").await;
    let unknown = json!({ "name": "Omar", "email": "omar@example.com", "team_ids": [team, uuid::Uuid::new_v4()] });
    let error = assert_error(app.post("/v1/agents", &app.admin_key, &unknown).await, 422, "").await;
    assert_eq!(error["field"], "team_ids[1]");
    let foreign = json!({ "name": "Omar", "email": "omar@example.com", "team_ids": [foreign_team] });
    let error = assert_error(app.post("/v1/agents", &app.admin_key, &foreign).await, 422, "").await;
    assert_eq!(error["field"], "team_ids[0]");
    let bad_email = json!({ "name": "Omar", "email": "not-an-email", "team_ids": [] });
    let error = assert_error(app.post("/v1/agents", &app.admin_key, &bad_email).await, 400, "").await;
    assert_eq!(error["field"], "email");
    let nameless = assert_error(app.post("/v1/agents", &app.admin_key, &json!({ "name": "" })).await, 400, "").await;
    assert_eq!(nameless["field"], "name");

    assert_eq!(get_ok(&app, "/v1/teams").await["items"].as_array().unwrap().len(), 1);
    assert_eq!(get_ok(&app, "/v1/agents").await["items"], json!([]));
    assert_error(app.get(&format!("/v1/teams/{foreign_team}"), &app.admin_key).await, 404, "").await;
    assert_error(app.get(&format!("/v1/agents/{}", uuid::Uuid::new_v4()), &app.admin_key).await, 404, "").await;
}

#[tokio::test]
async fn only_admins_create_teams_and_agents() {
    let app = spawn_app().await;
    let worker = app.key_with_scopes(&["transfers", "chatbot:config"]);

    assert_error(app.post("/v1/teams", &worker, &json!({ "name": "Sales" })).await, 403, "admin").await;
    assert_error(app.post("/v1/agents", &worker, &json!({ "name": "Maria" })).await, 403, "admin").await;
    assert_eq!(get_ok(&app, "/v1/teams").await["items"], json!([]));
}

// --- scopes and tenants -----------------------------------------------------------------------

#[tokio::test]
async fn a_key_without_the_transfers_scope_is_refused() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let conversation_id = open_conversation(&app, &bot, "u1").await;
    let transfer = open_transfer(&app, &json!({ "conversation_id": conversation_id })).await;
    let id = str_of(&transfer, "id");
    let key = app.key_with_scopes(&["conversations:read", "conversations:write", "chatbot:config", "messages:handle"]);

    // Act + assert
    assert_error(app.get("/v1/transfers", &key).await, 403, "transfers").await;
    assert_error(app.get(&format!("/v1/transfers/{id}"), &key).await, 403, "transfers").await;
    let create = app.post("/v1/transfers", &key, &json!({ "conversation_id": conversation_id })).await;
    assert_error(create, 403, "transfers").await;
    assert_error(app.post("/v1/transfers/pickup", &key, &json!({})).await, 403, "transfers").await;
    let resume = app.send_json(Method::PUT, &format!("/v1/transfers/{id}/resume"), &key, &json!({})).await;
    assert_error(resume, 403, "transfers").await;
    assert_eq!(transfers(&app, "").await["general_queue_count"], 1, "still waiting");
    assert_eq!(conversation(&app, &conversation_id).await["bot_active"], false);
}

#[tokio::test]
async fn another_tenants_transfers_are_not_found() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let conversation_id = open_conversation(&app, &bot, "u1").await;
    let transfer = open_transfer(&app, &json!({ "conversation_id": conversation_id })).await;
    let id = str_of(&transfer, "id");
    let stranger = app.key_for_new_tenant(&["admin"]);
    let their_agent = str_of(
        &body(app.post("/v1/agents", &stranger, &json!({ "name": "Spy", "email": "spy@example.com" })).await).await,
        "id",
    )
    .to_string();

    // Act + assert
    assert_error(app.get(&format!("/v1/transfers/{id}"), &stranger).await, 404, "").await;
    let assign = app
        .send_json(Method::PUT, &format!("/v1/transfers/{id}/assign"), &stranger, &json!({ "agent_id": their_agent }))
        .await;
    assert_error(assign, 404, "").await;
    let resume = app.send_json(Method::PUT, &format!("/v1/transfers/{id}/resume"), &stranger, &json!({})).await;
    assert_error(resume, 404, "").await;
    assert_error(app.post("/v1/transfers/pickup", &stranger, &json!({})).await, 404, "").await;
    let theirs = body(app.get("/v1/transfers", &stranger).await).await;
    assert_eq!(theirs["transfers"], json!([]));
    assert_eq!(theirs["general_queue_count"], 0);
    let create = app.post("/v1/transfers", &stranger, &json!({ "conversation_id": conversation_id })).await;
    assert_error(create, 404, "").await;
    // My own agent cannot be assigned someone else's transfer; theirs cannot take mine.
    let (status, _) =
        call(&app, Method::PUT, &format!("/v1/transfers/{id}/assign"), &json!({ "agent_id": their_agent })).await;
    assert_eq!(status, 422);

    let mine = get_ok(&app, &format!("/v1/transfers/{id}")).await;
    assert_eq!(mine, transfer, "nothing changed");
    assert_eq!(conversation(&app, &conversation_id).await["bot_active"], false);
}

// --- business hours ---------------------------------------------------------------------------

const CLOSED_MESSAGE: &str = "We're closed. We'll be back tomorrow at 8.";

/// An `Etc/GMT±N` zone in which it is now around midday, and today's local day key.
///
/// `Etc/GMT` signs are inverted: `Etc/GMT-2` is UTC+2.
fn midday_zone() -> (String, &'static str, &'static str) {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let now = Utc::now();
    let offset = 12 - now.hour() as i64; // -11 ..= 12: local time is 12:xx
    let zone = match offset {
        0 => "Etc/GMT".to_string(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    };
    let local = now + chrono::Duration::hours(offset);
    let today = local.weekday().num_days_from_monday() as usize;
    (zone, DAYS[today], DAYS[(today + 1) % 7])
}

/// Business hours open 08:00–16:00 on `open_day` only, in `zone`.
fn hours_settings(zone: &str, open_day: &str) -> Value {
    json!({
        "transfer_keywords": ["agent"],
        "business_hours_enabled": true,
        "business_hours": {
            "timezone": zone,
            "weekly": { open_day: [["08:00", "16:00"]] },
            "closed_message": CLOSED_MESSAGE,
        }
    })
}

#[tokio::test]
async fn outside_business_hours_a_message_gets_the_closed_message() {
    // Arrange: open tomorrow (local) only.
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    app.create_rule(
        &app.admin_key,
        &bot,
        &json!({ "keywords": ["price"], "match_type": "contains", "response": "It costs 5." }),
    )
    .await;
    let (zone, _, tomorrow) = midday_zone();
    put_settings(&app, &bot, &hours_settings(&zone, tomorrow)).await;

    // Act
    let first = say(&app, &bot, "u1", "what is the price?").await;
    let second = say(&app, &bot, "u1", "hello").await;

    // Assert
    assert_eq!(texts(&first), [CLOSED_MESSAGE], "zone {zone}");
    assert_eq!(texts(&second), [CLOSED_MESSAGE]);
    assert_eq!(second["bot_active"], true);
}

#[tokio::test]
async fn a_transfer_keyword_still_works_outside_business_hours() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let (zone, _, tomorrow) = midday_zone();
    put_settings(&app, &bot, &hours_settings(&zone, tomorrow)).await;

    // Act
    let handled = say(&app, &bot, "u1", "agent please").await;

    // Assert
    assert_eq!(texts(&handled), [TRANSFER_MESSAGE], "zone {zone}");
    assert_eq!(handled["bot_active"], false);
    let listed = transfers(&app, "").await;
    assert_eq!(listed["general_queue_count"], 1);
    assert_eq!(listed["transfers"][0]["source"], "keyword");
}

#[tokio::test]
async fn inside_business_hours_the_bot_answers_normally() {
    // Arrange: open today (local) 08:00–16:00; it is about 12:00 there.
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    app.create_rule(
        &app.admin_key,
        &bot,
        &json!({ "keywords": ["price"], "match_type": "contains", "response": "It costs 5." }),
    )
    .await;
    let (zone, today, _) = midday_zone();
    put_settings(&app, &bot, &hours_settings(&zone, today)).await;

    // Act
    let greeted = say(&app, &bot, "u1", "hello").await;
    let answered = say(&app, &bot, "u1", "what is the price?").await;

    // Assert
    assert_eq!(texts(&greeted), ["Hello! Welcome. How can I help you?"], "zone {zone}, open on {today}");
    assert_eq!(texts(&answered), ["It costs 5."]);
}

#[tokio::test]
async fn business_hours_off_ignore_the_schedule() {
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let (zone, _, tomorrow) = midday_zone();
    let mut settings = hours_settings(&zone, tomorrow);
    settings["business_hours_enabled"] = json!(false);
    put_settings(&app, &bot, &settings).await;

    assert_eq!(texts(&say(&app, &bot, "u1", "hello").await), ["Hello! Welcome. How can I help you?"]);
}

#[tokio::test]
async fn invalid_business_hours_are_refused_naming_the_field() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Support").await;
    let path = format!("/v1/chatbots/{bot}/settings");
    let before = get_ok(&app, &path).await;
    let with_hours = |hours: Value| json!({ "business_hours_enabled": true, "business_hours": hours });

    // Act + assert
    for (hours, field) in [
        (json!({ "timezone": "Mars/Olympus", "weekly": { "mon": [["09:00", "18:00"]] } }), "business_hours.timezone"),
        (
            json!({ "timezone": "Europe/Berlin", "weekly": { "monday": [["09:00", "18:00"]] } }),
            "business_hours.weekly.monday",
        ),
        (
            json!({ "timezone": "Europe/Berlin", "weekly": { "mon": [["18:00", "09:00"]] } }),
            "business_hours.weekly.mon[0]",
        ),
        (
            json!({ "timezone": "Europe/Berlin", "weekly": { "mon": [["9am", "18:00"]] } }),
            "business_hours.weekly.mon[0]",
        ),
    ] {
        let response = app.send_json(Method::PUT, &path, &app.admin_key, &with_hours(hours)).await;
        let error = assert_error(response, 422, "").await;
        assert_eq!(error["field"], field, "{error}");
    }
    assert_eq!(get_ok(&app, &path).await, before, "nothing changed");
}
