//! Authentication and tenancy: the three key headers, JWTs, scopes on every native route,
//! tenant isolation (another tenant's object is a 404, never a 403) and `/v1/api-keys`.

use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::helpers::{assert_error, body, spawn_app, spawn_app_with, TestApp};

/// Every non-admin scope; a key "lacking" a route's scope holds all of these but the ones that grant it.
const NON_ADMIN_SCOPES: [&str; 5] =
    ["conversations:read", "conversations:write", "chatbot:config", "messages:handle", "transfers"];

const ADMIN: &[&str] = &["admin"];
const CONFIG: &[&str] = &["chatbot:config"];
/// `GET /v1/chatbots…` accepts configuration or conversation reading (write implies read).
const CONFIG_OR_READ: &[&str] = &["chatbot:config", "conversations:read", "conversations:write"];
/// Conversation reads (write implies read).
const READ: &[&str] = &["conversations:read", "conversations:write"];
const WRITE: &[&str] = &["conversations:write"];
const HANDLE: &[&str] = &["messages:handle"];

/// A world with one of each object, owned by tenant `default`.
struct Fixture {
    app: TestApp,
    bot: String,
    rule: String,
    /// Channel id, auto-created by the first handle.
    channel: String,
    /// A conversation used through the nested routes.
    conversation: String,
    /// Another conversation used through the flat `/v1/conversations/{id}` routes.
    flat: String,
    /// A spare API key's id (not the admin's).
    key_id: String,
}

impl Fixture {
    async fn new() -> Self {
        Self::on(spawn_app().await).await
    }

    async fn on(app: TestApp) -> Self {
        let admin = app.admin_key.clone();
        let bot = app.create_chatbot(&admin, "Support").await;
        let rule = app
            .create_rule(
                &admin,
                &bot,
                &json!({ "keywords": ["hello"], "match_type": "exact", "response": "Hi from the rule" }),
            )
            .await["id"]
            .as_str()
            .expect("rule id")
            .to_string();
        let conversation = app.handle_ok(&admin, &bot, "user-nested", "hello").await["conversation_id"]
            .as_str()
            .expect("conversation id")
            .to_string();
        let flat = app.handle_ok(&admin, &bot, "user-flat", "hello").await["conversation_id"]
            .as_str()
            .expect("conversation id")
            .to_string();
        let response =
            app.post("/v1/api-keys", &admin, &json!({ "name": "spare", "scopes": ["conversations:read"] })).await;
        assert_eq!(response.status(), 201, "create spare key");
        let key_id = body(response).await["id"].as_str().expect("key id").to_string();
        Self { app, bot, rule, channel: "wa-main".to_string(), conversation, flat, key_id }
    }

    /// `template` with its `{placeholders}` filled in; `bot` replaces `{bot}`.
    fn path_with_bot(&self, template: &str, bot: &str) -> String {
        template
            .replace("{bot}", bot)
            .replace("{rule}", &self.rule)
            .replace("{channel}", &self.channel)
            .replace("{conv}", &self.conversation)
            .replace("{flat}", &self.flat)
            .replace("{key}", &self.key_id)
    }

    fn path(&self, template: &str) -> String {
        self.path_with_bot(template, &self.bot)
    }

    async fn send(&self, route: &Route, path: &str, key: &str) -> reqwest::Response {
        match &route.body {
            Some(json) => self.app.send_json(route.method.clone(), path, key, json).await,
            None => self.app.request(route.method.clone(), path, key).send().await.expect("request"),
        }
    }

    /// What the owner sees of every object, to prove a refused request changed nothing.
    async fn snapshot(&self) -> Vec<Value> {
        let admin = &self.app.admin_key;
        let mut views = Vec::new();
        for template in [
            "/v1/chatbots/{bot}",
            "/v1/chatbots/{bot}/settings",
            "/v1/chatbots/{bot}/keywords",
            "/v1/chatbots/{bot}/keywords/{rule}",
            "/v1/chatbots/{bot}/channels",
            "/v1/chatbots/{bot}/channels/{channel}",
            "/v1/chatbots/{bot}/conversations",
            "/v1/conversations/{conv}",
            "/v1/conversations/{conv}/messages",
            "/v1/conversations/{flat}",
            "/v1/conversations/{flat}/messages",
            "/v1/api-keys",
        ] {
            let response = self.app.get(&self.path(template), admin).await;
            assert_eq!(response.status(), 200, "owner GET {template}");
            views.push(body(response).await);
        }
        views
    }
}

/// One native route: method, path template, a valid body, and the scopes (besides admin) that grant it.
struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
    granted_by: &'static [&'static str],
}

fn route(method: Method, path: impl Into<String>, body: Option<Value>, granted_by: &'static [&'static str]) -> Route {
    Route { method, path: path.into(), body, granted_by }
}

/// Every native route, in an order where each one still finds its objects when run after the
/// ones before it (deletions last).
fn native_routes() -> Vec<Route> {
    use Method as M;
    let conversation_routes = |prefix: &str| -> Vec<Route> {
        let p = |suffix: &str| format!("{prefix}{suffix}");
        vec![
            route(M::GET, p(""), None, READ),
            route(M::PATCH, p(""), Some(json!({ "variables": { "plan": "gold" } })), WRITE),
            route(M::GET, p("/messages"), None, READ),
            route(M::POST, p("/messages"), Some(json!({ "content": "An agent here" })), WRITE),
            route(M::POST, p("/bot-control"), Some(json!({ "action": "pause" })), WRITE),
            route(M::PUT, p("/status"), Some(json!({ "status": "active" })), WRITE),
            route(M::POST, p("/autoreply"), Some(json!({ "enabled": true })), WRITE),
        ]
    };
    let mut routes = vec![
        route(M::POST, "/v1/api-keys", Some(json!({ "name": "made", "scopes": ["transfers"] })), ADMIN),
        route(M::GET, "/v1/api-keys", None, ADMIN),
        route(M::POST, "/v1/chatbots", Some(json!({ "name": "Another bot" })), CONFIG),
        route(M::GET, "/v1/chatbots", None, CONFIG_OR_READ),
        route(M::GET, "/v1/chatbots/{bot}", None, CONFIG_OR_READ),
        route(M::PATCH, "/v1/chatbots/{bot}", Some(json!({ "name": "Renamed" })), CONFIG),
        route(M::GET, "/v1/chatbots/{bot}/settings", None, CONFIG),
        route(M::PUT, "/v1/chatbots/{bot}/settings", Some(json!({ "greeting_message": "Hey!" })), CONFIG),
        route(M::GET, "/v1/chatbots/{bot}/keywords", None, CONFIG),
        route(
            M::POST,
            "/v1/chatbots/{bot}/keywords",
            Some(json!({ "keywords": ["bye"], "match_type": "exact", "response": "Bye!" })),
            CONFIG,
        ),
        route(M::GET, "/v1/chatbots/{bot}/keywords/{rule}", None, CONFIG),
        route(M::PUT, "/v1/chatbots/{bot}/keywords/{rule}", Some(json!({ "response": "Hello again" })), CONFIG),
        route(M::PATCH, "/v1/chatbots/{bot}/keywords/{rule}", Some(json!({ "priority": 3 })), CONFIG),
        route(M::GET, "/v1/chatbots/{bot}/channels", None, CONFIG),
        route(M::GET, "/v1/chatbots/{bot}/channels/{channel}", None, CONFIG),
        route(M::PUT, "/v1/chatbots/{bot}/channels/{channel}", Some(json!({ "name": "WhatsApp main" })), CONFIG),
        route(M::PATCH, "/v1/chatbots/{bot}/channels/{channel}", Some(json!({ "provider": "whatsapp" })), CONFIG),
        route(
            M::POST,
            "/v1/chatbots/{bot}/conversations/handle",
            Some(json!({ "channelId": "wa-main", "providerId": "user-scopes", "message": { "text": "hello" } })),
            HANDLE,
        ),
        route(M::GET, "/v1/chatbots/{bot}/conversations", None, READ),
        route(M::GET, "/v1/chatbots/{bot}/conversations/find?channelId=wa-main&providerId=user-nested", None, READ),
        route(
            M::POST,
            "/v1/chatbots/{bot}/conversations",
            Some(json!({ "channelId": "wa-main", "providerId": "user-new" })),
            WRITE,
        ),
    ];
    routes.extend(conversation_routes("/v1/chatbots/{bot}/conversations/{conv}"));
    routes.extend(conversation_routes("/v1/conversations/{flat}"));
    routes.extend([
        route(M::DELETE, "/v1/chatbots/{bot}/keywords/{rule}", None, CONFIG),
        route(M::DELETE, "/v1/chatbots/{bot}/conversations/{conv}", None, WRITE),
        route(M::DELETE, "/v1/conversations/{flat}", None, WRITE),
        route(M::DELETE, "/v1/api-keys/{key}", None, ADMIN),
        route(M::DELETE, "/v1/chatbots/{bot}", None, CONFIG),
    ]);
    routes
}

fn describe(route: &Route) -> String {
    format!("{} {}", route.method, route.path)
}

async fn create_key(app: &TestApp, name: &str, scopes: &[&str]) -> Value {
    let response = app.post("/v1/api-keys", &app.admin_key, &json!({ "name": name, "scopes": scopes })).await;
    assert_eq!(response.status(), 201, "create key {name}");
    body(response).await
}

fn jwt(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode JWT")
}

fn claims(tenant: &str, scopes: &[&str], expires_in_secs: i64) -> Value {
    json!({ "sub": "tester", "tenant": tenant, "scopes": scopes, "exp": chrono::Utc::now().timestamp() + expires_in_secs })
}

async fn bearer_get(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.client.get(app.url(path)).bearer_auth(token).send().await.expect("request")
}

const JWT_SECRET: &str = "test-secret-for-hs256-tokens-0123456789";

async fn spawn_app_with_jwt() -> TestApp {
    spawn_app_with(|s| s.auth.jwt_secret = SecretString::from(JWT_SECRET.to_string())).await
}

// ---------------------------------------------------------------- keys and headers

#[tokio::test]
async fn each_of_the_three_key_headers_authenticates() {
    // Arrange
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Headers").await;

    for header in ["X-API-Key", "Authorization", "x-chatcaptain-key"] {
        // Act
        let value = if header == "Authorization" { format!("Bearer {}", app.admin_key) } else { app.admin_key.clone() };
        let response = app.client.get(app.url("/v1/chatbots")).header(header, value).send().await.expect("request");

        // Assert
        assert_eq!(response.status(), 200, "header {header}");
        let items = body(response).await["items"].as_array().expect("items").clone();
        assert!(items.iter().any(|b| b["id"] == bot.as_str()), "header {header} sees the tenant's chatbot");
    }
}

#[tokio::test]
async fn a_request_without_credentials_is_refused_with_401() {
    let app = spawn_app().await;

    let response = app.client.get(app.url("/v1/chatbots")).send().await.expect("request");
    assert_error(response, 401, "Missing authentication").await;

    let response = app.client.get(app.url("/v1/chatbots")).header("X-API-Key", "").send().await.expect("request");
    assert_error(response, 401, "Missing authentication").await;

    // A non-Bearer Authorization header carries no key.
    let response =
        app.client.get(app.url("/v1/chatbots")).basic_auth("user", Some("pass")).send().await.expect("request");
    assert_error(response, 401, "Missing authentication").await;
}

#[tokio::test]
async fn an_unknown_key_is_refused_with_401() {
    let app = spawn_app().await;
    let forged = format!("bt_{}", "A".repeat(40));

    for key in [forged.as_str(), "not-a-key", "bt_short"] {
        let response = app.get("/v1/chatbots", key).await;
        assert_error(response, 401, "Invalid").await;
        let response = app.client.get(app.url("/v1/chatbots")).bearer_auth(key).send().await.expect("request");
        assert_eq!(response.status(), 401, "bearer {key}");
    }
}

#[tokio::test]
async fn a_revoked_key_is_refused_with_401_afterwards() {
    // Arrange
    let app = spawn_app().await;
    let created = create_key(&app, "to revoke", &["chatbot:config"]).await;
    let key = created["key"].as_str().expect("key").to_string();
    assert_eq!(app.get("/v1/chatbots", &key).await.status(), 200, "works before revocation");

    // Act
    let path = format!("/v1/api-keys/{}", created["id"].as_str().expect("id"));
    let response = app.request(Method::DELETE, &path, &app.admin_key).send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await, json!({ "deleted": true }));

    // Assert
    for header in ["X-API-Key", "x-chatcaptain-key"] {
        let response = app.client.get(app.url("/v1/chatbots")).header(header, &key).send().await.expect("request");
        assert_error(response, 401, "Invalid API key").await;
    }
    let response = app.client.get(app.url("/v1/chatbots")).bearer_auth(&key).send().await.expect("request");
    assert_eq!(response.status(), 401);
    let listed = body(app.get("/v1/api-keys", &app.admin_key).await).await;
    assert!(
        !listed["items"].as_array().expect("items").iter().any(|k| k["id"] == created["id"]),
        "revoked key is not listed"
    );
    let again = app.request(Method::DELETE, &path, &app.admin_key).send().await.expect("request");
    assert_error(again, 404, "not found").await;
}

// ---------------------------------------------------------------- JWT

#[tokio::test]
async fn a_jwt_signed_with_the_configured_secret_is_accepted() {
    // Arrange
    let app = spawn_app_with_jwt().await;
    let bot = app.create_chatbot(&app.admin_key, "Seen through a JWT").await;
    let by_name = jwt(JWT_SECRET, &claims("default", &["admin"], 3600));

    // Act
    let response = bearer_get(&app, "/v1/chatbots", &by_name).await;

    // Assert: the token acts in tenant `default`.
    assert_eq!(response.status(), 200);
    let listed = body(response).await;
    assert!(listed["items"].as_array().expect("items").iter().any(|b| b["id"] == bot.as_str()));

    // The tenant claim may be the tenant's id as well as its name.
    let tenant_id = body(app.get(&format!("/v1/chatbots/{bot}"), &app.admin_key).await).await["tenant_id"]
        .as_str()
        .expect("tenant_id")
        .to_string();
    let by_id = jwt(JWT_SECRET, &claims(&tenant_id, &["admin"], 3600));
    assert_eq!(bearer_get(&app, &format!("/v1/chatbots/{bot}"), &by_id).await.status(), 200);
}

#[tokio::test]
async fn a_jwt_holds_only_the_scopes_it_claims() {
    let app = spawn_app_with_jwt().await;
    let bot = app.create_chatbot(&app.admin_key, "Scoped JWT").await;
    let reader = jwt(JWT_SECRET, &claims("default", &["chatbots.conversations.list"], 3600));

    let listed = bearer_get(&app, &format!("/v1/chatbots/{bot}/conversations"), &reader).await;
    assert_eq!(listed.status(), 200, "the alias grants conversations:read");

    let response = app
        .client
        .post(app.url("/v1/chatbots"))
        .bearer_auth(&reader)
        .json(&json!({ "name": "not allowed" }))
        .send()
        .await
        .expect("request");
    assert_error(response, 403, "chatbot:config").await;
}

#[tokio::test]
async fn a_jwt_signed_with_another_secret_is_refused() {
    let app = spawn_app_with_jwt().await;
    let token = jwt("some-other-secret-entirely-0123456789", &claims("default", &["admin"], 3600));

    let response = bearer_get(&app, "/v1/chatbots", &token).await;

    assert_error(response, 401, "Invalid token").await;
}

#[tokio::test]
async fn an_expired_jwt_is_refused() {
    let app = spawn_app_with_jwt().await;
    let token = jwt(JWT_SECRET, &claims("default", &["admin"], -3600));

    let response = bearer_get(&app, "/v1/chatbots", &token).await;

    assert_error(response, 401, "Invalid token").await;
}

#[tokio::test]
async fn a_jwt_for_an_unknown_tenant_is_refused() {
    let app = spawn_app_with_jwt().await;
    let token = jwt(JWT_SECRET, &claims("no-such-tenant", &["admin"], 3600));

    let response = bearer_get(&app, "/v1/chatbots", &token).await;

    assert_error(response, 401, "Invalid token").await;
}

#[tokio::test]
async fn a_jwt_is_refused_when_no_secret_is_configured() {
    // The default test settings have no JWT secret.
    let app = spawn_app().await;
    let token = jwt(JWT_SECRET, &claims("default", &["admin"], 3600));

    let response = bearer_get(&app, "/v1/chatbots", &token).await;

    assert_error(response, 401, "").await;
}

// ---------------------------------------------------------------- scopes

#[tokio::test]
async fn every_native_route_refuses_a_key_lacking_its_scope_with_403_naming_it() {
    // Arrange
    let fixture = Fixture::new().await;
    let routes: Vec<(Route, Vec<&str>, String)> = native_routes()
        .into_iter()
        .map(|route| {
            let others: Vec<&str> =
                NON_ADMIN_SCOPES.iter().copied().filter(|s| !route.granted_by.contains(s)).collect();
            let key = fixture.app.key_with_scopes(&others);
            (route, others, key)
        })
        .collect();
    let before = fixture.snapshot().await;

    for (route, others, key) in routes {
        // Act
        let response = fixture.send(&route, &fixture.path(&route.path), &key).await;

        // Assert
        let what = describe(&route);
        assert_eq!(response.status(), 403, "{what} with {others:?}");
        let error = body(response).await;
        let message = error["error"].as_str().unwrap_or_default();
        assert!(
            route.granted_by.iter().chain(ADMIN).any(|scope| message.contains(&format!("`{scope}`"))),
            "{what}: 403 {message:?} should name one of {:?}",
            route.granted_by
        );
        assert_eq!(error["code"], "forbidden", "{what}");
    }

    assert_eq!(fixture.snapshot().await, before, "refused requests changed nothing");
}

#[tokio::test]
async fn every_native_route_accepts_each_scope_that_grants_it() {
    let fixture = Fixture::new().await;

    for route in native_routes() {
        for scope in route.granted_by {
            let key = fixture.app.key_with_scopes(&[scope]);
            let response = fixture.send(&route, &fixture.path(&route.path), &key).await;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            assert!(status.is_success(), "{} with only {scope}: {status} {text}", describe(&route));
        }
    }
}

#[tokio::test]
async fn seed_permission_aliases_grant_the_nearest_scope() {
    // Arrange: keys created through the API with the seed permission names.
    let app = spawn_app().await;
    let bot = app.create_chatbot(&app.admin_key, "Aliases").await;
    let handler = create_key(&app, "handler", &["chatbots.messages.handle"]).await;
    let lister = create_key(&app, "lister", &["chatbots.conversations.list"]).await;
    let editor = create_key(&app, "editor", &["chatbots.conversations.edit"]).await;
    let handler = handler["key"].as_str().expect("key");
    let lister = lister["key"].as_str().expect("key");
    let editor = editor["key"].as_str().expect("key");

    // Act / assert: the handle alias may ingest messages…
    let handled = app.handle_ok(handler, &bot, "alias-user", "hello").await;
    let conversation = handled["conversation_id"].as_str().expect("conversation id");
    // …but not read conversations.
    assert_error(app.get(&format!("/v1/chatbots/{bot}/conversations"), handler).await, 403, "conversations:read").await;

    // The list alias may list and read conversations…
    let listed = app.get(&format!("/v1/chatbots/{bot}/conversations"), lister).await;
    assert_eq!(listed.status(), 200);
    assert_eq!(body(listed).await["items"].as_array().expect("items").len(), 1);
    assert_eq!(app.get(&format!("/v1/conversations/{conversation}"), lister).await.status(), 200);
    // …but not control the bot, nor ingest messages.
    let paused =
        app.post(&format!("/v1/conversations/{conversation}/bot-control"), lister, &json!({ "action": "pause" })).await;
    assert_error(paused, 403, "conversations:write").await;
    assert_error(app.handle(lister, &bot, "alias-user", "hello", None).await, 403, "messages:handle").await;

    // The edit alias may control the bot.
    let paused =
        app.post(&format!("/v1/conversations/{conversation}/bot-control"), editor, &json!({ "action": "pause" })).await;
    assert_eq!(paused.status(), 200);
    assert_eq!(body(paused).await["bot_active"], false);
}

// ---------------------------------------------------------------- tenancy

#[tokio::test]
async fn another_tenants_objects_are_404_on_every_route_and_stay_unchanged() {
    // Arrange
    let fixture = Fixture::new().await;
    let before = fixture.snapshot().await;
    let stranger = fixture.app.key_for_new_tenant(&["admin"]);

    for route in native_routes().into_iter().filter(|r| r.path.contains('{')) {
        // Act
        let response = fixture.send(&route, &fixture.path(&route.path), &stranger).await;

        // Assert
        let what = describe(&route);
        assert_eq!(response.status(), 404, "{what} by another tenant");
        let error = body(response).await;
        assert_eq!(error["code"], "not_found", "{what}: {error}");
    }

    assert_eq!(fixture.snapshot().await, before, "another tenant changed nothing");
}

#[tokio::test]
async fn another_tenants_rules_and_conversations_are_404_under_the_callers_own_chatbot() {
    // Arrange: the stranger owns a chatbot and names the owner's rule and conversations under it.
    let fixture = Fixture::new().await;
    let before = fixture.snapshot().await;
    let stranger = fixture.app.key_for_new_tenant(&["admin"]);
    let own_bot = fixture.app.create_chatbot(&stranger, "Stranger's bot").await;

    for route in native_routes()
        .into_iter()
        .filter(|r| r.path.contains("{bot}") && (r.path.contains("{rule}") || r.path.contains("{conv}")))
    {
        // Act
        let response = fixture.send(&route, &fixture.path_with_bot(&route.path, &own_bot), &stranger).await;

        // Assert
        let what = describe(&route);
        assert_eq!(response.status(), 404, "{what} under the stranger's own chatbot");
    }

    assert_eq!(fixture.snapshot().await, before, "another tenant changed nothing");
}

#[tokio::test]
async fn lists_show_only_the_callers_tenant() {
    let fixture = Fixture::new().await;
    let app = &fixture.app;
    let stranger = app.key_for_new_tenant(&["admin"]);

    let bots = body(app.get("/v1/chatbots", &stranger).await).await;
    assert_eq!(bots["items"], json!([]), "the stranger sees no chatbot of tenant default");

    let keys = body(app.get("/v1/api-keys", &stranger).await).await;
    let keys = keys["items"].as_array().expect("items");
    assert!(!keys.iter().any(|k| k["id"] == fixture.key_id.as_str()), "the stranger sees no key of tenant default");
}

#[tokio::test]
async fn another_tenant_cannot_revoke_a_key() {
    let fixture = Fixture::new().await;
    let app = &fixture.app;
    let victim = create_key(app, "victim", &["chatbot:config"]).await;
    let stranger = app.key_for_new_tenant(&["admin"]);

    let path = format!("/v1/api-keys/{}", victim["id"].as_str().expect("id"));
    let response = app.request(Method::DELETE, &path, &stranger).send().await.expect("request");

    assert_error(response, 404, "not found").await;
    assert_eq!(
        app.get("/v1/chatbots", victim["key"].as_str().expect("key")).await.status(),
        200,
        "the key still works"
    );
}

// ---------------------------------------------------------------- /v1/api-keys

#[tokio::test]
async fn creating_a_key_shows_it_once_and_it_works() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = app
        .post(
            "/v1/api-keys",
            &app.admin_key,
            &json!({ "name": "integration", "scopes": ["chatbot:config", "messages:handle"] }),
        )
        .await;

    // Assert
    assert_eq!(response.status(), 201);
    let created = body(response).await;
    let key = created["key"].as_str().expect("key shown on creation");
    assert!(key.starts_with("bt_"), "{key}");
    assert_eq!(key.len(), 43, "{key}");
    assert!(key[3..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "url-safe: {key}");
    assert_eq!(created["name"], "integration");
    assert_eq!(created["scopes"], json!(["chatbot:config", "messages:handle"]));
    assert!(created["id"].is_string());
    assert!(key.starts_with(created["prefix"].as_str().expect("prefix")));

    let bot = app.create_chatbot(key, "Made with the new key").await;
    assert_eq!(app.handle_ok(key, &bot, "u1", "hi").await["replies"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn listing_keys_shows_prefixes_and_never_the_key() {
    let app = spawn_app().await;
    let created = create_key(&app, "listed", &["transfers"]).await;

    let response = app.get("/v1/api-keys", &app.admin_key).await;

    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    assert!(!text.contains(created["key"].as_str().expect("key")), "the key is never shown again");
    assert!(!text.contains(&app.admin_key), "the admin key is never shown");
    let listed: Value = serde_json::from_str(&text).expect("JSON");
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "the admin key and the new one: {items:?}");
    for item in items {
        assert!(item.get("key").is_none(), "no key field: {item}");
        assert!(item.get("hash").is_none(), "no hash field: {item}");
        assert!(item["prefix"].as_str().is_some_and(|p| p.starts_with("bt_")), "prefix shown: {item}");
    }
    let mine = items.iter().find(|k| k["id"] == created["id"]).expect("the new key is listed");
    assert_eq!(mine["name"], "listed");
    assert_eq!(mine["scopes"], json!(["transfers"]));
    assert_eq!(mine["prefix"], created["prefix"]);
}

#[tokio::test]
async fn deleting_an_unknown_key_is_404() {
    let app = spawn_app().await;

    for id in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_string()] {
        let response =
            app.request(Method::DELETE, &format!("/v1/api-keys/{id}"), &app.admin_key).send().await.expect("request");
        assert_error(response, 404, "not found").await;
    }
}

#[tokio::test]
async fn creating_a_key_with_an_unknown_scope_is_400_naming_it() {
    let app = spawn_app().await;

    let response =
        app.post("/v1/api-keys", &app.admin_key, &json!({ "name": "bad", "scopes": ["chatbot:config", "root"] })).await;

    let error = assert_error(response, 400, "root").await;
    assert_eq!(error["field"], "scopes[1]");
    let listed = body(app.get("/v1/api-keys", &app.admin_key).await).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "nothing was created");
}

#[tokio::test]
async fn creating_a_key_with_no_scopes_or_an_empty_name_is_400() {
    let app = spawn_app().await;

    let response = app.post("/v1/api-keys", &app.admin_key, &json!({ "name": "none", "scopes": [] })).await;
    let error = assert_error(response, 400, "scopes").await;
    assert_eq!(error["field"], "scopes");

    for name in ["", "   "] {
        let response = app.post("/v1/api-keys", &app.admin_key, &json!({ "name": name, "scopes": ["admin"] })).await;
        let error = assert_error(response, 400, "name").await;
        assert_eq!(error["field"], "name");
    }

    let response = app.post("/v1/api-keys", &app.admin_key, &json!({ "scopes": ["admin"] })).await;
    let error = assert_error(response, 400, "name").await;
    assert_eq!(error["field"], "name");

    let listed = body(app.get("/v1/api-keys", &app.admin_key).await).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "nothing was created");
}

#[tokio::test]
async fn only_admin_keys_manage_keys() {
    let app = spawn_app().await;
    let everything_but_admin = app.key_with_scopes(&NON_ADMIN_SCOPES);
    let spare = create_key(&app, "spare", &["transfers"]).await;

    let response =
        app.post("/v1/api-keys", &everything_but_admin, &json!({ "name": "escalate", "scopes": ["admin"] })).await;
    assert_error(response, 403, "admin").await;
    assert_error(app.get("/v1/api-keys", &everything_but_admin).await, 403, "admin").await;
    let path = format!("/v1/api-keys/{}", spare["id"].as_str().expect("id"));
    let response = app.request(Method::DELETE, &path, &everything_but_admin).send().await.expect("request");
    assert_error(response, 403, "admin").await;

    let listed = body(app.get("/v1/api-keys", &app.admin_key).await).await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(3),
        "admin, spare and the test key; nothing added or removed"
    );
}
