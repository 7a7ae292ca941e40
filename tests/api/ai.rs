//! AI replies end to end, with wiremock standing in for both model providers (OpenAI-compatible
//! and Anthropic), for `api` AI context endpoints and for the reply webhook: the request the
//! model gets, what is stored and answered, failures and timeouts answered with the fallback,
//! answers dropped when a human or a newer message took over, debounce, drafts and retries.

use std::future::Future;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{assert_error, body, call, spawn_app_with, TestApp};

const OPENAI_KEY: &str = "sk-test";
const ANTHROPIC_KEY: &str = "ak-test";
const OPENAI_PATH: &str = "/chat/completions";
const ANTHROPIC_PATH: &str = "/v1/messages";
const CHANNEL: &str = "wa-main";
const FALLBACK: &str = "Sorry, our assistant is unavailable right now.";
/// How long a "slow" model takes to answer.
const SLOW: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// Waiting (bounded polls; sleeps only to let something that must NOT happen have its chance)
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

async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await;
}

// ---------------------------------------------------------------------------------------------
// Model mocks
// ---------------------------------------------------------------------------------------------

/// The content of the last `user` turn of a provider request (both providers name it alike).
fn last_user_text(request: &Request) -> String {
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    body["messages"]
        .as_array()
        .and_then(|turns| turns.iter().rev().find(|t| t["role"] == "user"))
        .and_then(|t| t["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The text every mock model answers to `user_text`.
fn echo(user_text: &str) -> String {
    format!("Echo: {user_text}")
}

/// Answers like OpenAI's chat completions: "Echo: {last user turn}", 42 tokens in all.
struct OpenAiEcho {
    delay: Duration,
}

impl Respond for OpenAiEcho {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": "gpt-4o-mini",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": echo(&last_user_text(request))},
                    "finish_reason": "stop",
                }],
                "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42},
            }))
            .set_delay(self.delay)
    }
}

/// Answers like Anthropic's messages API: "Echo: {last user turn}", 30 + 12 tokens.
struct AnthropicEcho;

impl Respond for AnthropicEcho {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-3-5-haiku-latest",
            "content": [{"type": "text", "text": echo(&last_user_text(request))}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 30, "output_tokens": 12},
        }))
    }
}

/// A model server whose OpenAI endpoint answers with `responder`.
async fn openai_model(responder: impl Respond + 'static) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(OPENAI_PATH)).respond_with(responder).mount(&server).await;
    server
}

/// A model server whose OpenAI endpoint echoes after `delay`.
async fn openai_echo(delay: Duration) -> MockServer {
    openai_model(OpenAiEcho { delay }).await
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

fn json_of(request: &Request) -> Value {
    serde_json::from_slice(&request.body).expect("a JSON request body")
}

fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).map(|v| v.to_str().expect("ASCII header"))
}

// ---------------------------------------------------------------------------------------------
// Server and chatbot
// ---------------------------------------------------------------------------------------------

/// A server whose providers are both `model` (with keys), changed further by `configure`.
async fn app_with_model(model: &MockServer, configure: impl FnOnce(&mut baton::Settings)) -> TestApp {
    let uri = model.uri();
    spawn_app_with(move |s| {
        s.ai.openai.base_url = uri.clone();
        s.ai.openai.api_key = OPENAI_KEY.to_string().into();
        s.ai.anthropic.base_url = uri;
        s.ai.anthropic.api_key = ANTHROPIC_KEY.to_string().into();
        configure(s);
    })
    .await
}

async fn put_settings(app: &TestApp, bot: &str, settings: Value) {
    let (status, value) = call(app, reqwest::Method::PUT, &format!("/v1/chatbots/{bot}/settings"), &settings).await;
    assert_eq!(status, 200, "PUT settings answered {value}");
}

/// A chatbot answered by OpenAI's gpt-4o-mini ("You are Baton."), with `extra` settings.
async fn openai_bot(app: &TestApp, extra: Value) -> String {
    let bot = app.create_chatbot(&app.admin_key, "AI bot").await;
    let mut settings = json!({
        "ai_enabled": true,
        "ai_provider": "openai",
        "ai_model": "gpt-4o-mini",
        "ai_temperature": 0.2,
        "ai_max_tokens": 150,
        "system_prompt": "You are Baton.",
        "fallback_message": FALLBACK,
    });
    for (name, value) in extra.as_object().expect("extra settings object") {
        settings[name] = value.clone();
    }
    put_settings(app, &bot, settings).await;
    bot
}

async fn create_context(app: &TestApp, bot: &str, context: Value) -> Value {
    let (status, value) = call(app, reqwest::Method::POST, &format!("/v1/chatbots/{bot}/ai-contexts"), &context).await;
    assert_eq!(status, 201, "create AI context answered {value}");
    value
}

/// Sends reply-webhook calls of channel wa-main to `server`'s /reply.
async fn reply_webhook_to(app: &TestApp, bot: &str, server: &MockServer) {
    Mock::given(path("/reply")).respond_with(ResponseTemplate::new(200)).mount(server).await;
    let config = json!({ "name": "WhatsApp", "reply_webhook": { "url": format!("{}/reply", server.uri()) } });
    let (status, value) =
        call(app, reqwest::Method::PUT, &format!("/v1/chatbots/{bot}/channels/{CHANNEL}"), &config).await;
    assert_eq!(status, 200, "PUT channel answered {value}");
}

/// Opens the conversation of `user` on wa-main without a message; returns its id.
async fn open_conversation(app: &TestApp, bot: &str, user: &str) -> String {
    let payload = json!({ "channelId": CHANNEL, "channelName": "WhatsApp", "providerId": user });
    let (status, value) =
        call(app, reqwest::Method::POST, &format!("/v1/chatbots/{bot}/conversations"), &payload).await;
    assert_eq!(status, 201, "create conversation answered {value}");
    value["id"].as_str().expect("id").to_string()
}

/// A sync handle of `text` from `user`; asserts 200 and returns the body.
async fn say(app: &TestApp, bot: &str, user: &str, text: &str) -> Value {
    let response = app.handle(&app.admin_key, bot, user, text, None).await;
    let status = response.status();
    let value = body(response).await;
    assert_eq!(status, 200, "handle answered {value}");
    value
}

/// An async handle of `text` from `user`; asserts 202.
async fn say_async(app: &TestApp, bot: &str, user: &str, text: &str) {
    let payload = json!({
        "channelId": CHANNEL,
        "channelName": "WhatsApp",
        "providerId": user,
        "async": true,
        "message": { "type": "text", "text": text },
    });
    let (status, value) =
        call(app, reqwest::Method::POST, &format!("/v1/chatbots/{bot}/conversations/handle"), &payload).await;
    assert_eq!(status, 202, "async handle answered {value}");
}

/// The reply texts of a handle answer.
fn reply_texts(answer: &Value) -> Vec<String> {
    answer["replies"]
        .as_array()
        .unwrap_or_else(|| panic!("no replies in {answer}"))
        .iter()
        .map(|r| r["text"].as_str().expect("reply text").to_string())
        .collect()
}

async fn messages(app: &TestApp, conversation: &str) -> Vec<Value> {
    let (status, value) =
        call(app, reqwest::Method::GET, &format!("/v1/conversations/{conversation}/messages?limit=200"), &json!({}))
            .await;
    assert_eq!(status, 200, "GET messages answered {value}");
    value["items"].as_array().expect("items").clone()
}

/// The (role, content) pairs of a conversation's messages, in order.
async fn transcript(app: &TestApp, conversation: &str) -> Vec<(String, String)> {
    messages(app, conversation)
        .await
        .iter()
        .map(|m| (m["role"].as_str().expect("role").to_string(), m["content"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn turn(role: &str, content: &str) -> (String, String) {
    (role.to_string(), content.to_string())
}

/// `baton_ai_failures_total` from /metrics.
async fn ai_failures(app: &TestApp) -> u64 {
    let text = app.client.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .find(|line| line.starts_with("baton_ai_failures_total ") || line.starts_with("baton_ai_failures_total{"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no baton_ai_failures_total in /metrics:\n{text}")) as u64
}

// ---------------------------------------------------------------------------------------------
// The request each provider gets
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn openai_gets_the_model_key_system_prompt_with_matching_contexts_and_history() {
    // Arrange
    let model = openai_echo(Duration::ZERO).await;
    let app = app_with_model(&model, |_| {}).await;
    let bot = openai_bot(&app, json!({})).await;
    app.create_rule(
        &app.admin_key,
        &bot,
        &json!({ "keywords": ["hours"], "match_type": "contains", "response": "We are open 9 to 5." }),
    )
    .await;
    // Created before the higher-priority one, so order must come from priority.
    create_context(
        &app,
        &bot,
        json!({ "name": "Delivery areas", "trigger_keywords": ["delivery"], "content": "We deliver across the EU.",
                "priority": 1 }),
    )
    .await;
    create_context(
        &app,
        &bot,
        json!({ "name": "Shipping", "trigger_keywords": ["shipping"], "content": "Standard shipping takes 3 days.",
                "priority": 10 }),
    )
    .await;
    create_context(
        &app,
        &bot,
        json!({ "name": "Refunds", "trigger_keywords": ["refund"], "content": "Refunds within 14 days.",
                "priority": 50 }),
    )
    .await;
    let first = say(&app, &bot, "+100", "what are your hours").await;
    let second = say(&app, &bot, "+100", "do you sell gift cards").await;

    // Act
    let third = say(&app, &bot, "+100", "how much is shipping and delivery?").await;

    // Assert: the rule answered the first message, the model the others
    assert_eq!(reply_texts(&first), ["We are open 9 to 5."]);
    assert_eq!(reply_texts(&second), [echo("do you sell gift cards")]);
    assert_eq!(reply_texts(&third), [echo("how much is shipping and delivery?")]);
    assert_eq!(third["replies"][0]["type"], "text");
    let requests = requests_to(&model, OPENAI_PATH).await;
    assert_eq!(requests.len(), 2, "one model call per message no rule answered");
    let request = &requests[1];
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(header(request, "authorization"), Some("Bearer sk-test"));
    let sent = json_of(request);
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(sent["temperature"], json!(0.2));
    assert_eq!(sent["max_tokens"], 150);
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content":
                "You are Baton.\n\n## Shipping\nStandard shipping takes 3 days.\n\n## Delivery areas\nWe deliver across the EU."},
            {"role": "user", "content": "what are your hours"},
            {"role": "assistant", "content": "We are open 9 to 5."},
            {"role": "user", "content": "do you sell gift cards"},
            {"role": "assistant", "content": echo("do you sell gift cards")},
            {"role": "user", "content": "how much is shipping and delivery?"},
        ])
    );
    // No context matched the second message: the bare system prompt.
    assert_eq!(json_of(&requests[0])["messages"][0], json!({"role": "system", "content": "You are Baton."}));
    let conversation = third["conversation_id"].as_str().expect("conversation_id");
    let stored = messages(&app, conversation).await;
    assert_eq!(stored.len(), 6);
    let answer = stored.last().expect("the AI answer");
    assert_eq!(
        (&answer["role"], &answer["content"], &answer["tokens_used"]),
        (&json!("assistant"), &json!(echo("how much is shipping and delivery?")), &json!(42))
    );
}

#[tokio::test]
async fn anthropic_gets_its_headers_and_a_separate_system_prompt_and_tokens_add_up() {
    // Arrange
    let model = MockServer::start().await;
    Mock::given(method("POST")).and(path(ANTHROPIC_PATH)).respond_with(AnthropicEcho).mount(&model).await;
    let app = app_with_model(&model, |_| {}).await;
    let bot = openai_bot(
        &app,
        json!({ "ai_provider": "anthropic", "ai_model": "claude-3-5-haiku-latest", "ai_temperature": 0.4,
                "ai_max_tokens": 300 }),
    )
    .await;
    app.create_rule(
        &app.admin_key,
        &bot,
        &json!({ "keywords": ["hours"], "match_type": "contains", "response": "We are open 9 to 5." }),
    )
    .await;
    create_context(
        &app,
        &bot,
        json!({ "name": "Shipping", "trigger_keywords": ["shipping"], "content": "Standard shipping takes 3 days." }),
    )
    .await;
    create_context(
        &app,
        &bot,
        json!({ "name": "Refunds", "trigger_keywords": ["refund"], "content": "Refunds within 14 days." }),
    )
    .await;
    say(&app, &bot, "+200", "what are your hours").await;

    // Act
    let answer = say(&app, &bot, "+200", "how long does shipping take?").await;

    // Assert
    assert_eq!(reply_texts(&answer), [echo("how long does shipping take?")]);
    let requests = requests_to(&model, ANTHROPIC_PATH).await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(header(request, "x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(header(request, "anthropic-version"), Some("2023-06-01"));
    assert_eq!(header(request, "authorization"), None, "the OpenAI key must not be sent to Anthropic");
    let sent = json_of(request);
    assert_eq!(sent["model"], "claude-3-5-haiku-latest");
    assert_eq!(sent["max_tokens"], 300);
    assert_eq!(sent["temperature"], json!(0.4));
    assert_eq!(sent["system"], "You are Baton.\n\n## Shipping\nStandard shipping takes 3 days.");
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "what are your hours"},
            {"role": "assistant", "content": "We are open 9 to 5."},
            {"role": "user", "content": "how long does shipping take?"},
        ])
    );
    assert!(requests_to(&model, OPENAI_PATH).await.is_empty());
    let stored = messages(&app, answer["conversation_id"].as_str().expect("conversation_id")).await;
    let last = stored.last().expect("the AI answer");
    assert_eq!(
        (&last["role"], &last["content"], &last["tokens_used"]),
        (&json!("assistant"), &json!(echo("how long does shipping take?")), &json!(42))
    );
}

#[tokio::test]
async fn an_api_context_is_fetched_into_the_prompt_once_within_its_ttl() {
    // Arrange
    let model = openai_echo(Duration::ZERO).await;
    let knowledge = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/kb/hours"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "data": { "text": "We open at 9." } })))
        .mount(&knowledge)
        .await;
    let app = app_with_model(&model, |_| {}).await;
    let bot = openai_bot(&app, json!({})).await;
    create_context(
        &app,
        &bot,
        json!({
            "name": "Opening hours",
            "trigger_keywords": ["open"],
            "context_type": "api",
            "api_config": {
                "url": format!("{}/kb/hours", knowledge.uri()),
                "headers": { "X-Kb-Token": "kb-1" },
                "cache_ttl_secs": 300,
                "content_pointer": "/data/text",
            },
        }),
    )
    .await;

    // Act
    say(&app, &bot, "+300", "when do you open?").await;
    let second = say(&app, &bot, "+300", "are you open on sunday?").await;

    // Assert
    assert_eq!(reply_texts(&second), [echo("are you open on sunday?")]);
    let calls = requests_to(&model, OPENAI_PATH).await;
    assert_eq!(calls.len(), 2);
    for call in &calls {
        assert_eq!(
            json_of(call)["messages"][0]["content"],
            "You are Baton.\n\n## Opening hours\nWe open at 9.",
            "the fetched content is in the system prompt"
        );
    }
    let fetches = requests_to(&knowledge, "/kb/hours").await;
    assert_eq!(fetches.len(), 1, "the context is fetched once within its TTL");
    assert_eq!(header(&fetches[0], "x-kb-token"), Some("kb-1"));
}

// ---------------------------------------------------------------------------------------------
// Where the AI sits in the bot's order
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rules_answer_before_the_model_and_the_model_answers_even_a_first_message() {
    // Arrange
    let model = openai_echo(Duration::ZERO).await;
    let app = app_with_model(&model, |_| {}).await;
    let bot = openai_bot(&app, json!({})).await;
    app.create_rule(
        &app.admin_key,
        &bot,
        &json!({ "keywords": ["hours"], "match_type": "contains", "response": "We are open 9 to 5." }),
    )
    .await;

    // Act
    let first = say(&app, &bot, "+400", "hello").await;
    let ruled = say(&app, &bot, "+400", "what are your hours?").await;

    // Assert
    assert_eq!(reply_texts(&first), [echo("hello")], "the AI answers instead of the greeting");
    assert_eq!(reply_texts(&ruled), ["We are open 9 to 5."]);
    assert_eq!(requests_to(&model, OPENAI_PATH).await.len(), 1, "no model call for a message a rule answers");
}

// ---------------------------------------------------------------------------------------------
// Failures answer with the fallback
// ---------------------------------------------------------------------------------------------

/// Sends one message to a bot whose model calls fail somehow; asserts the fallback reply, that
/// it is stored, and that `baton_ai_failures_total` went up by one.
async fn assert_fallback_for_one_message(app: &TestApp, bot: &str) {
    let before = ai_failures(app).await;

    let answer = say(app, bot, "+500", "can you help me?").await;

    assert_eq!(reply_texts(&answer), [FALLBACK]);
    assert_eq!(answer["bot_active"], true);
    let conversation = answer["conversation_id"].as_str().expect("conversation_id");
    assert_eq!(transcript(app, conversation).await, [turn("user", "can you help me?"), turn("assistant", FALLBACK)]);
    assert_eq!(ai_failures(app).await, before + 1, "baton_ai_failures_total counts the failure");
}

#[tokio::test]
async fn a_model_server_error_answers_with_the_fallback_message() {
    let model = openai_model(ResponseTemplate::new(500).set_body_string("upstream exploded")).await;
    let app = app_with_model(&model, |_| {}).await;
    let bot = openai_bot(&app, json!({})).await;

    assert_fallback_for_one_message(&app, &bot).await;

    assert_eq!(requests_to(&model, OPENAI_PATH).await.len(), 1);
}

#[tokio::test]
async fn a_malformed_model_answer_answers_with_the_fallback_message() {
    let model = openai_model(ResponseTemplate::new(200).set_body_json(json!({}))).await;
    let app = app_with_model(&model, |_| {}).await;
    let bot = openai_bot(&app, json!({})).await;

    assert_fallback_for_one_message(&app, &bot).await;
}

#[tokio::test]
async fn a_provider_without_an_api_key_answers_with_the_fallback_and_sends_nothing() {
    // Arrange: only OpenAI has a key; the bot asks Anthropic
    let model = MockServer::start().await;
    Mock::given(method("POST")).and(path(ANTHROPIC_PATH)).respond_with(AnthropicEcho).mount(&model).await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .respond_with(OpenAiEcho { delay: Duration::ZERO })
        .mount(&model)
        .await;
    let app = app_with_model(&model, |s| s.ai.anthropic.api_key = String::new().into()).await;
    let bot = openai_bot(&app, json!({ "ai_provider": "anthropic", "ai_model": "claude-3-5-haiku-latest" })).await;

    // Act + Assert
    assert_fallback_for_one_message(&app, &bot).await;
    assert!(
        model.received_requests().await.expect("recording").is_empty(),
        "nothing is sent without a key (and never another provider's key)"
    );
}

#[tokio::test]
async fn a_model_slower_than_the_timeout_answers_with_the_fallback_message() {
    let model = openai_echo(Duration::from_secs(2)).await;
    let app = app_with_model(&model, |s| s.ai.timeout_ms = 300).await;
    let bot = openai_bot(&app, json!({})).await;

    assert_fallback_for_one_message(&app, &bot).await;
}

// ---------------------------------------------------------------------------------------------
// Answers that arrive too late are dropped
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_pause_during_a_slow_model_call_drops_its_answer() {
    // Arrange
    let model = openai_echo(SLOW).await;
    let app = app_with_model(&model, |_| {}).await;
    let bot = openai_bot(&app, json!({})).await;
    let conversation = open_conversation(&app, &bot, "+600").await;

    // Act: pause while the model is still thinking
    let (answer, paused) = tokio::join!(say(&app, &bot, "+600", "is anyone there?"), async {
        wait_requests(&model, OPENAI_PATH, 1).await;
        call(
            &app,
            reqwest::Method::POST,
            &format!("/v1/conversations/{conversation}/bot-control"),
            &json!({
            "action": "pause" }),
        )
        .await
    });

    // Assert
    assert_eq!(paused.0, 200, "pause answered {}", paused.1);
    assert_eq!(answer["replies"], json!([]), "the superseded request gets no reply");
    sleep(SLOW + Duration::from_millis(700)).await;
    assert_eq!(transcript(&app, &conversation).await, [turn("user", "is anyone there?")], "no late AI answer");
    // The response is sent after the pause: it must not claim the bot is still active.
    assert_eq!(answer["bot_active"], false, "bot_active in the response answered after the pause");
}

#[tokio::test]
async fn a_pause_during_a_slow_model_call_sends_nothing_to_the_reply_webhook() {
    // Arrange
    let model = openai_echo(SLOW).await;
    let hooks = MockServer::start().await;
    let app = app_with_model(&model, |_| {}).await;
    let bot = openai_bot(&app, json!({})).await;
    reply_webhook_to(&app, &bot, &hooks).await;
    let conversation = open_conversation(&app, &bot, "+601").await;

    // Act: an async message, paused while the model thinks
    say_async(&app, &bot, "+601", "first question").await;
    wait_requests(&model, OPENAI_PATH, 1).await;
    let (status, value) = call(
        &app,
        reqwest::Method::POST,
        &format!("/v1/conversations/{conversation}/bot-control"),
        &json!({
            "action": "pause" }),
    )
    .await;
    assert_eq!(status, 200, "pause answered {value}");
    sleep(SLOW + Duration::from_millis(700)).await;
    // Control: once resumed, the next answer does reach the webhook.
    let (status, value) = call(
        &app,
        reqwest::Method::POST,
        &format!("/v1/conversations/{conversation}/bot-control"),
        &json!({
            "action": "resume" }),
    )
    .await;
    assert_eq!(status, 200, "resume answered {value}");
    say_async(&app, &bot, "+601", "second question").await;
    wait_requests(&hooks, "/reply", 1).await;
    sleep(Duration::from_millis(700)).await;

    // Assert
    let delivered = requests_to(&hooks, "/reply").await;
    let texts: Vec<Value> = delivered.iter().map(|r| json_of(r)["message"]["text"].clone()).collect();
    assert_eq!(texts, [json!(echo("second question"))], "only the answer made after the resume is delivered");
    let transcript = transcript(&app, &conversation).await;
    assert!(
        !transcript.contains(&turn("assistant", &echo("first question"))),
        "the dropped answer is not stored: {transcript:?}"
    );
}

#[tokio::test]
async fn a_newer_message_supersedes_the_answer_still_being_computed() {
    // Arrange
    let model = openai_echo(SLOW).await;
    let app = app_with_model(&model, |_| {}).await;
    let bot = openai_bot(&app, json!({})).await;
    let conversation = open_conversation(&app, &bot, "+700").await;

    // Act: B arrives while A's answer is being computed
    let (a, b) = tokio::join!(say(&app, &bot, "+700", "message A"), async {
        wait_requests(&model, OPENAI_PATH, 1).await;
        say(&app, &bot, "+700", "message B").await
    });

    // Assert
    assert_eq!(a["replies"], json!([]), "A's answer was superseded");
    assert_eq!(reply_texts(&b), [echo("message B")]);
    sleep(Duration::from_millis(500)).await;
    assert_eq!(
        transcript(&app, &conversation).await,
        [turn("user", "message A"), turn("user", "message B"), turn("assistant", &echo("message B"))]
    );
}

// ---------------------------------------------------------------------------------------------
// Debounce
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_burst_within_the_debounce_window_gets_one_model_call() {
    // Arrange (a window wider than the burst, with room for a slow CI machine)
    let model = openai_echo(Duration::ZERO).await;
    let app = app_with_model(&model, |_| {}).await;
    let bot = openai_bot(&app, json!({ "ai_debounce_ms": 600 })).await;
    let conversation = open_conversation(&app, &bot, "+800").await;

    // Act: three messages 50 ms apart
    let (one, two, three) = tokio::join!(
        say(&app, &bot, "+800", "hi"),
        async {
            sleep(Duration::from_millis(50)).await;
            say(&app, &bot, "+800", "I ordered shoes").await
        },
        async {
            sleep(Duration::from_millis(100)).await;
            say(&app, &bot, "+800", "where are they?").await
        },
    );
    sleep(Duration::from_millis(1200)).await;

    // Assert
    assert_eq!(one["replies"], json!([]));
    assert_eq!(two["replies"], json!([]));
    assert_eq!(reply_texts(&three), [echo("where are they?")]);
    let calls = requests_to(&model, OPENAI_PATH).await;
    assert_eq!(calls.len(), 1, "one model call for the burst");
    let turns = json_of(&calls[0])["messages"].clone();
    assert_eq!(
        turns,
        json!([
            {"role": "system", "content": "You are Baton."},
            {"role": "user", "content": "hi"},
            {"role": "user", "content": "I ordered shoes"},
            {"role": "user", "content": "where are they?"},
        ])
    );
    assert_eq!(
        transcript(&app, &conversation).await,
        [
            turn("user", "hi"),
            turn("user", "I ordered shoes"),
            turn("user", "where are they?"),
            turn("assistant", &echo("where are they?")),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_retried_message_answered_by_the_model_returns_the_same_ai_reply() {
    // Arrange
    let model = openai_echo(Duration::ZERO).await;
    let app = app_with_model(&model, |_| {}).await;
    let bot = openai_bot(&app, json!({})).await;
    let response = app.handle(&app.admin_key, &bot, "+900", "do you ship abroad?", Some("wamid-1")).await;
    assert_eq!(response.status(), 200);
    let first = body(response).await;

    // Act
    let response = app.handle(&app.admin_key, &bot, "+900", "do you ship abroad?", Some("wamid-1")).await;
    assert_eq!(response.status(), 200);
    let retry = body(response).await;

    // Assert
    assert_eq!(first["duplicate"], false);
    assert_eq!(reply_texts(&first), [echo("do you ship abroad?")]);
    assert_eq!(retry["duplicate"], true);
    assert_eq!(retry["replies"], first["replies"], "the retry gets the AI reply it missed");
    assert_eq!(retry["message_id"], first["message_id"]);
    assert_eq!(requests_to(&model, OPENAI_PATH).await.len(), 1, "no second model call");
    let conversation = first["conversation_id"].as_str().expect("conversation_id");
    assert_eq!(
        transcript(&app, conversation).await,
        [turn("user", "do you ship abroad?"), turn("assistant", &echo("do you ship abroad?"))]
    );
}

// ---------------------------------------------------------------------------------------------
// Drafts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_draft_is_the_model_answer_and_is_neither_stored_nor_sent() {
    // Arrange: a conversation the bot answered with a rule, a reply webhook
    let model = openai_echo(Duration::ZERO).await;
    let hooks = MockServer::start().await;
    let app = app_with_model(&model, |_| {}).await;
    let bot = openai_bot(&app, json!({})).await;
    reply_webhook_to(&app, &bot, &hooks).await;
    app.create_rule(
        &app.admin_key,
        &bot,
        &json!({ "keywords": ["refund"], "match_type": "contains", "response": "Let me check that." }),
    )
    .await;
    let answer = say(&app, &bot, "+1000", "I want a refund").await;
    let conversation = answer["conversation_id"].as_str().expect("conversation_id").to_string();
    let before = transcript(&app, &conversation).await;

    // Act
    let (status, draft) =
        call(&app, reqwest::Method::POST, &format!("/v1/conversations/{conversation}/ai-draft"), &json!({})).await;
    let (nested_status, nested) = call(
        &app,
        reqwest::Method::POST,
        &format!("/v1/chatbots/{bot}/conversations/{conversation}/ai-draft"),
        &json!({}),
    )
    .await;

    // Assert
    assert_eq!(status, 200, "draft answered {draft}");
    assert_eq!(draft, json!({ "draft": echo("I want a refund") }));
    assert_eq!((nested_status, nested), (200, draft.clone()));
    let calls = requests_to(&model, OPENAI_PATH).await;
    assert_eq!(calls.len(), 2);
    assert_eq!(
        json_of(&calls[0])["messages"],
        json!([
            {"role": "system", "content": "You are Baton."},
            {"role": "user", "content": "I want a refund"},
            {"role": "assistant", "content": "Let me check that."},
            {"role": "user", "content": "I want a refund"},
        ]),
        "the draft answers the last user message with the history before it"
    );
    assert_eq!(transcript(&app, &conversation).await, before, "nothing stored");
    let (_, got) = call(&app, reqwest::Method::GET, &format!("/v1/conversations/{conversation}"), &json!({})).await;
    assert_eq!(got["message_count"], 2);
    sleep(Duration::from_millis(700)).await;
    assert!(requests_to(&hooks, "/reply").await.is_empty(), "nothing sent to the reply webhook");
}

#[tokio::test]
async fn a_draft_needs_a_user_message_and_a_working_model() {
    // Arrange
    let model = openai_model(ResponseTemplate::new(500)).await;
    let app = app_with_model(&model, |_| {}).await;
    let bot = openai_bot(&app, json!({})).await;
    app.create_rule(
        &app.admin_key,
        &bot,
        &json!({ "keywords": ["hi"], "match_type": "contains", "response": "Hello!" }),
    )
    .await;
    let empty = open_conversation(&app, &bot, "+1100").await;
    let answered = say(&app, &bot, "+1101", "hi").await;
    let answered = answered["conversation_id"].as_str().expect("conversation_id");

    // Act
    let no_user_message = app.post(&format!("/v1/conversations/{empty}/ai-draft"), &app.admin_key, &json!({})).await;
    let model_down = app.post(&format!("/v1/conversations/{answered}/ai-draft"), &app.admin_key, &json!({})).await;

    // Assert
    assert_eq!(no_user_message.status(), 409);
    assert!(body(no_user_message).await["code"].is_string());
    let error = assert_error(model_down, 502, "").await;
    assert_eq!(error["code"], "ai_unavailable");
    assert_eq!(requests_to(&model, OPENAI_PATH).await.len(), 1, "only the second draft reached the model");
}

#[tokio::test]
async fn a_draft_needs_conversations_write_and_stays_in_its_tenant() {
    // Arrange
    let model = openai_echo(Duration::ZERO).await;
    let app = app_with_model(&model, |_| {}).await;
    let bot = openai_bot(&app, json!({})).await;
    let answer = say(&app, &bot, "+1200", "hello").await;
    let conversation = answer["conversation_id"].as_str().expect("conversation_id");
    let reader = app.key_with_scopes(&["conversations:read"]);
    let writer = app.key_with_scopes(&["conversations:write"]);
    let stranger = app.key_for_new_tenant(&["conversations:write"]);
    let draft_path = format!("/v1/conversations/{conversation}/ai-draft");

    // Act
    let forbidden = app.post(&draft_path, &reader, &json!({})).await;
    let foreign = app.post(&draft_path, &stranger, &json!({})).await;
    let allowed = app.post(&draft_path, &writer, &json!({})).await;

    // Assert
    assert_error(forbidden, 403, "conversations:write").await;
    assert_error(foreign, 404, "").await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(body(allowed).await["draft"], echo("hello"));
}
