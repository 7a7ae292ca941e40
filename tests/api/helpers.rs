//! Test harness: a real baton server on a random loopback port with a temporary data
//! directory, plus small HTTP helpers. Logs stay silent unless `TEST_LOG=1`.

use std::path::PathBuf;
use std::thread::JoinHandle;

use baton::auth::{issue_key, Scope};
use baton::{Application, Settings};
use baton_actors::store::Store;
use serde_json::{json, Value};

/// A running server.
#[derive(Debug)]
pub struct TestApp {
    pub address: String,
    /// The admin key of tenant `default`, created on first start.
    pub admin_key: String,
    pub client: reqwest::Client,
    pub store: Store,
    /// Kept so the directory lives as long as the app (None when the caller owns it).
    _temp: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Settings for tests: loopback, port 0, a temp dir, private webhooks allowed.
pub fn test_settings(data_dir: PathBuf) -> Settings {
    let mut settings = Settings::defaults();
    settings.server.addr = "127.0.0.1:0".parse().unwrap();
    settings.server.workers = 2;
    settings.storage.data_dir = data_dir;
    settings.storage.cache_capacity_bytes = 16 << 20;
    settings.actors.arbiters = 2;
    settings.webhooks.allow_private_networks = true;
    settings
}

/// Starts a server with the test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server with the test defaults changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(temp.path().to_path_buf());
    configure(&mut settings);
    start(settings, Some(temp)).await
}

/// Starts a server on an existing data directory (restart tests).
pub async fn spawn_app_on(data_dir: PathBuf, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings(data_dir);
    configure(&mut settings);
    start(settings, None).await
}

async fn start(settings: Settings, temp: Option<tempfile::TempDir>) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        baton::telemetry::init("info");
    }
    let data_dir = settings.storage.data_dir.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let app = Application::build(settings).await.expect("app builds");
            let store = app.store();
            let admin_key = app.bootstrap_key().map(str::to_string);
            let _ = ready_tx.send((app.port(), admin_key, store));
            app.run_until(async {
                let _ = shutdown_rx.await;
            })
            .await
            .expect("app runs");
        });
    });
    let (port, admin_key, store) = ready_rx.await.expect("app started");
    let admin_key = match admin_key {
        Some(key) => key,
        None => std::fs::read_to_string(data_dir.join("admin.key"))
            .expect("admin.key of an earlier start")
            .trim()
            .to_string(),
    };
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        admin_key,
        client: reqwest::Client::new(),
        store,
        _temp: temp,
        shutdown: Some(shutdown_tx),
        thread: Some(thread),
    }
}

impl TestApp {
    /// `address` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A key in tenant `default` (the admin's) with `scopes`.
    pub fn key_with_scopes(&self, scopes: &[&str]) -> String {
        self.key_in_tenant("default", scopes)
    }

    /// A key in a new tenant of its own with `scopes`.
    pub fn key_for_new_tenant(&self, scopes: &[&str]) -> String {
        self.key_in_tenant(&format!("tenant-{}", uuid::Uuid::new_v4()), scopes)
    }

    /// A key in tenant `tenant` (created if new) with `scopes`.
    pub fn key_in_tenant(&self, tenant: &str, scopes: &[&str]) -> String {
        let (tenant, _) = self.store.ensure_tenant(tenant).expect("tenant");
        let scopes: Vec<Scope> = scopes.iter().map(|s| Scope::parse(s).expect("known scope")).collect();
        let (_, key, _) = issue_key(&self.store, tenant.id, "test", &scopes).expect("key");
        key
    }

    /// A request with `key` in `X-API-Key`.
    pub fn request(&self, method: reqwest::Method, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).header("X-API-Key", key)
    }

    /// GET `path` with `key`.
    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path, key).send().await.expect("request")
    }

    /// `method` `path` with a JSON body and `key`.
    pub async fn send_json(&self, method: reqwest::Method, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.request(method, path, key).json(body).send().await.expect("request")
    }

    /// POST `path` with a JSON body and `key`.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.send_json(reqwest::Method::POST, path, key, body).await
    }

    /// Creates a chatbot named `name` and returns its id.
    pub async fn create_chatbot(&self, key: &str, name: &str) -> String {
        let response = self.post("/v1/chatbots", key, &json!({ "name": name })).await;
        assert_eq!(response.status(), 201, "create chatbot");
        body(response).await["id"].as_str().expect("id").to_string()
    }

    /// Creates a keyword rule and returns it.
    pub async fn create_rule(&self, key: &str, bot: &str, rule: &Value) -> Value {
        let response = self.post(&format!("/v1/chatbots/{bot}/keywords"), key, rule).await;
        assert_eq!(response.status(), 201, "create rule");
        body(response).await
    }

    /// Posts a text message to `handle` and returns the response.
    pub async fn handle(
        &self,
        key: &str,
        bot: &str,
        provider_id: &str,
        text: &str,
        message_id: Option<&str>,
    ) -> reqwest::Response {
        let mut message = json!({ "type": "text", "text": text });
        if let Some(id) = message_id {
            message["id"] = json!(id);
        }
        let payload =
            json!({ "channelId": "wa-main", "channelName": "WhatsApp", "providerId": provider_id, "message": message });
        self.post(&format!("/v1/chatbots/{bot}/conversations/handle"), key, &payload).await
    }

    /// Like [`TestApp::handle`], asserting 200 and returning the body.
    pub async fn handle_ok(&self, key: &str, bot: &str, provider_id: &str, text: &str) -> Value {
        let response = self.handle(key, bot, provider_id, text, None).await;
        assert_eq!(response.status(), 200, "handle");
        body(response).await
    }

    /// Stops the server gracefully and waits for it.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// A pause between creations so that "newest first" is well defined: stored times are in
/// milliseconds, and a few requests on loopback can all fall within one.
pub async fn tick() {
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
}

/// Sends `method` `path` with a JSON body and the admin key; returns status and body.
pub async fn call(app: &TestApp, method: reqwest::Method, path: &str, payload: &Value) -> (u16, Value) {
    let response = app.send_json(method, path, &app.admin_key, payload).await;
    let status = response.status().as_u16();
    (status, body(response).await)
}

/// GETs `path` with the admin key, asserting 200; returns the body.
pub async fn get_ok(app: &TestApp, path: &str) -> Value {
    let response = app.get(path, &app.admin_key).await;
    let status = response.status();
    let value = body(response).await;
    assert_eq!(status, 200, "GET {path} answered {value}");
    value
}

/// The JSON body of a response.
pub async fn body(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// Asserts an error response: `status`, JSON `{error, code}`, and the message mentioning `mentions`.
pub async fn assert_error(response: reqwest::Response, status: u16, mentions: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let value = body(response).await;
    let error = value["error"].as_str().unwrap_or_else(|| panic!("no error field in {value}"));
    assert!(error.contains(mentions), "error {error:?} should mention {mentions:?}");
    assert!(value["code"].is_string(), "no code in {value}");
    value
}
