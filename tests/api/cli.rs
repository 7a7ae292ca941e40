//! The `baton` binary as an operator runs it: first start and its admin key, offline
//! `keys create`, graceful SIGTERM, `--config` files and `BATON_…` variables, `--help`.
//!
//! Also home of [`ServerProcess`], a real `baton serve` child process (used by `crash.rs`).

use std::io::{BufRead as _, BufReader, Read as _, Seek as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{assert_error, body};

/// How long a child gets to become ready or to exit.
const PROCESS_DEADLINE: Duration = Duration::from_secs(10);

/// A `baton …` command with small logs and no `BATON_…` settings inherited from the test's environment.
pub(crate) fn baton() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BATON_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "warn");
    command
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// `baton serve --addr 127.0.0.1:PORT --data-dir DATA_DIR` on a free port, and that port.
pub(crate) fn serve_command(data_dir: &Path) -> (Command, u16) {
    let port = free_port();
    let mut command = baton();
    command.arg("serve").arg("--addr").arg(format!("127.0.0.1:{port}")).arg("--data-dir").arg(data_dir);
    (command, port)
}

/// The admin key a first start wrote to `data_dir/admin.key`.
pub(crate) fn admin_key_file(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin.key")).expect("admin.key").trim().to_string()
}

/// A running `baton serve` child process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// The child's stderr, kept to show it when something goes wrong.
    log: std::fs::File,
    pub(crate) address: String,
    pub(crate) client: reqwest::Client,
}

impl ServerProcess {
    /// `baton serve --addr 127.0.0.1:PORT --data-dir DATA_DIR`, ready to answer.
    pub(crate) async fn start(data_dir: &Path) -> Self {
        let (command, port) = serve_command(data_dir);
        Self::launch(command, port).await
    }

    /// Runs `command` (a `serve` invocation listening on `port`) and waits until `/healthz` answers.
    pub(crate) async fn launch(mut command: Command, port: u16) -> Self {
        let log = tempfile::tempfile().expect("log file");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().expect("log handle"))
            .spawn()
            .expect("spawn baton");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut server = ServerProcess {
            child,
            stdout,
            log,
            address: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client"),
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("baton exited with {status} before it was ready; stderr:\n{}", self.stderr());
            }
            let probe = self.client.get(self.url("/healthz")).timeout(Duration::from_millis(500)).send().await;
            if matches!(probe, Ok(ref r) if r.status() == 200) {
                return;
            }
            assert!(
                started.elapsed() < PROCESS_DEADLINE,
                "baton not ready after {PROCESS_DEADLINE:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `address` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Everything the child wrote to stderr so far.
    pub(crate) fn stderr(&mut self) -> String {
        let mut text = String::new();
        let _ = self.log.rewind();
        let _ = self.log.read_to_string(&mut text);
        text
    }

    /// The next stdout line (blocking; the server prints its lines before it answers `/healthz`).
    pub(crate) fn stdout_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read stdout");
        line
    }

    /// The admin key a first start prints: the second stdout line, alone.
    pub(crate) fn printed_key(&mut self) -> String {
        let first = self.stdout_line();
        assert!(!first.trim().is_empty(), "a first start prints a line before the key");
        self.stdout_line().trim().to_string()
    }

    /// The rest of stdout; only ends once the process has exited.
    pub(crate) fn remaining_stdout(&mut self) -> String {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("read stdout");
        rest
    }

    /// Kills the process with SIGKILL and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub(crate) async fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        self.wait_exit().await
    }

    /// Waits up to [`PROCESS_DEADLINE`] for the process to exit.
    pub(crate) async fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < PROCESS_DEADLINE,
                "baton still running {PROCESS_DEADLINE:?} after SIGTERM; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET `path` with `key`.
    pub(crate) async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.client.get(self.url(path)).header("X-API-Key", key).send().await.expect("request")
    }

    /// POST `path` with a JSON body and `key`.
    pub(crate) async fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).header("X-API-Key", key).json(body).send().await.expect("request")
    }

    /// Creates a chatbot named `name` and returns its id.
    pub(crate) async fn create_chatbot(&self, key: &str, name: &str) -> String {
        let response = self.post("/v1/chatbots", key, &json!({ "name": name })).await;
        assert_eq!(response.status(), 201, "create chatbot");
        body(response).await["id"].as_str().expect("chatbot id").to_string()
    }

    /// Posts a text message from `provider_id` to `handle`.
    pub(crate) async fn handle(
        &self,
        key: &str,
        bot: &str,
        provider_id: &str,
        text: &str,
        message_id: &str,
    ) -> reqwest::Response {
        let payload = json!({
            "channelId": "wa-main",
            "channelName": "WhatsApp",
            "providerId": provider_id,
            "message": { "id": message_id, "type": "text", "text": text },
        });
        self.post(&format!("/v1/chatbots/{bot}/conversations/handle"), key, &payload).await
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a short-lived `baton` command to completion (bounded) and returns its output.
async fn run_to_end(mut command: Command) -> Output {
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn baton");
    let started = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > PROCESS_DEADLINE {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "baton did not finish within {PROCESS_DEADLINE:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.wait_with_output().expect("output")
}

/// `baton keys create --data-dir DIR --tenant TENANT --scopes SCOPES --name NAME`.
async fn keys_create(data_dir: &Path, tenant: &str, scopes: &str, name: &str) -> Output {
    let mut command = baton();
    command
        .args(["keys", "create", "--data-dir"])
        .arg(data_dir)
        .args(["--tenant", tenant, "--scopes", scopes, "--name", name]);
    run_to_end(command).await
}

/// The key `keys create` printed: its last stdout line, checked to be a key alone.
fn created_key(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "keys create failed: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let key = stdout.lines().last().expect("a line on stdout").trim().to_string();
    assert!(key.starts_with("bt_") && !key.contains(' '), "last stdout line should be the key alone, got {key:?}");
    key
}

#[tokio::test]
async fn a_first_start_prints_the_admin_key_and_writes_it_to_a_private_file() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");

    // Act
    let mut server = ServerProcess::start(&data_dir).await;
    let printed = server.printed_key();

    // Assert
    assert!(printed.starts_with("bt_"), "printed key {printed:?}");
    assert_eq!(printed, admin_key_file(&data_dir), "stdout key and admin.key differ");
    let mode = {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(data_dir.join("admin.key")).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600, "admin.key mode is {mode:o}");
    assert_eq!(server.get("/v1/api-keys", &printed).await.status(), 200, "the printed key works");
}

#[tokio::test]
async fn a_second_start_prints_no_key_and_the_first_key_still_works() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut first = ServerProcess::start(&data_dir).await;
    let key = first.printed_key();
    assert!(first.terminate().await.success());
    drop(first);

    // Act
    let mut second = ServerProcess::start(&data_dir).await;
    let works = second.get("/v1/api-keys", &key).await.status();
    let status = second.terminate().await;
    let stdout = second.remaining_stdout();

    // Assert
    assert_eq!(works, 200, "the first start's key works after a restart");
    assert!(status.success(), "exit status {status}");
    assert!(!stdout.contains("bt_"), "a second start printed a key: {stdout:?}");
    assert_eq!(admin_key_file(&data_dir), key, "admin.key was rewritten");
}

#[tokio::test]
async fn keys_create_makes_a_key_limited_to_its_tenant_and_scopes() {
    // Arrange: a default-tenant chatbot, then the server stopped.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = ServerProcess::start(&data_dir).await;
    let admin = server.printed_key();
    let default_bot = server.create_chatbot(&admin, "default-bot").await;
    assert!(server.terminate().await.success());
    drop(server);

    // Act
    let provider = keys_create(&data_dir, "acme", "messages:handle,conversations:read", "provider").await;
    let config = keys_create(&data_dir, "acme", "chatbot:config", "config").await;

    // Assert
    let provider = created_key(&provider);
    let config = created_key(&config);
    let server = ServerProcess::start(&data_dir).await;
    let acme_bot = server.create_chatbot(&config, "acme-bot").await;
    let handled = server.handle(&provider, &acme_bot, "+15550001", "hello", "acme-1").await;
    assert_eq!(handled.status(), 200, "the provider key handles for its tenant's chatbot");
    let conversation = body(handled).await["conversation_id"].as_str().expect("conversation_id").to_string();
    let messages = server.get(&format!("/v1/conversations/{conversation}/messages"), &provider).await;
    assert_eq!(messages.status(), 200, "conversations:read lets it read messages");
    assert_eq!(body(messages).await["items"][0]["content"], "hello");
    let create = server.post("/v1/chatbots", &provider, &json!({ "name": "nope" })).await;
    assert_error(create, 403, "chatbot:config").await;
    assert_error(server.get(&format!("/v1/chatbots/{default_bot}"), &provider).await, 404, "").await;
    let foreign = server.handle(&provider, &default_bot, "+15550001", "hello", "acme-2").await;
    assert_error(foreign, 404, "").await;
}

#[tokio::test]
async fn keys_create_refuses_an_unknown_scope() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();

    // Act
    let output = keys_create(&dir.path().join("data"), "acme", "conversations:read,teleport:everyone", "bad").await;

    // Assert
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "unknown scope accepted; stdout: {}", String::from_utf8_lossy(&output.stdout));
    assert!(stderr.contains("teleport:everyone"), "stderr should name the scope: {stderr:?}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("bt_"), "a key was printed anyway");
}

#[tokio::test]
async fn keys_create_fails_clearly_while_the_server_runs_on_the_same_dir() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = ServerProcess::start(&data_dir).await;
    let _admin = server.printed_key();

    // Act
    let output = keys_create(&data_dir, "acme", "admin", "while-running").await;

    // Assert
    assert!(!output.status.success(), "keys create succeeded on a locked data dir");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("lock"), "stderr should say the data dir is locked: {stderr:?}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("bt_"), "a key was printed anyway");
    assert_eq!(server.get("/healthz", "").await.status(), 200, "the running server is unharmed");
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly_and_keeps_its_data() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = ServerProcess::start(&data_dir).await;
    let admin = server.printed_key();
    let bot = server.create_chatbot(&admin, "survivor").await;
    let handled = server.handle(&admin, &bot, "+15550002", "before the restart", "term-1").await;
    assert_eq!(handled.status(), 200);
    let conversation = body(handled).await["conversation_id"].as_str().expect("conversation_id").to_string();

    // Act
    let status = server.terminate().await;
    drop(server);

    // Assert
    assert!(status.success(), "SIGTERM exit status {status}");
    // The store's last handle was dropped: sled wrote its page table at the close (a start
    // on a new directory writes none), so the next start replays no log.
    let snapshots = std::fs::read_dir(data_dir.join("db"))
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().file_name().to_string_lossy().starts_with("snap."))
        .count();
    assert_eq!(snapshots, 1, "one snapshot written at the close");
    let server = ServerProcess::start(&data_dir).await;
    assert_eq!(server.get(&format!("/v1/chatbots/{bot}"), &admin).await.status(), 200, "chatbot survived");
    let messages = body(server.get(&format!("/v1/conversations/{conversation}/messages"), &admin).await).await;
    assert_eq!(messages["items"][0]["content"], "before the restart", "message survived: {messages}");
    assert_eq!(messages["items"][0]["seq"], 1);
}

#[tokio::test]
async fn a_config_file_and_baton_environment_variables_are_honoured() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("from-env");
    let port = free_port();
    let config = dir.path().join("baton.toml");
    std::fs::write(&config, format!("[server]\naddr = \"127.0.0.1:{port}\"\n")).unwrap();
    let mut command = baton();
    command.arg("serve").arg("--config").arg(&config).env("BATON_STORAGE__DATA_DIR", &data_dir);

    // Act
    let mut server = ServerProcess::launch(command, port).await;
    let key = server.printed_key();

    // Assert
    assert!(data_dir.join("admin.key").exists(), "data did not land in BATON_STORAGE__DATA_DIR");
    assert_eq!(admin_key_file(&data_dir), key);
    assert_eq!(server.get("/v1/api-keys", &key).await.status(), 200, "answers on the configured port");
}

/// The `THP_enabled` line of the process's `/proc/PID/status`: "1" when the kernel may back its
/// memory with transparent huge pages, "0" when the process turned them off.
#[cfg(target_os = "linux")]
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("THP_enabled:")).expect("a THP_enabled line");
    line["THP_enabled:".len()..].trim().to_string()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_server_keeps_transparent_huge_pages_off_unless_configured_on() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let (mut on, on_port) = serve_command(&dir.path().join("on"));
    on.env("BATON_SERVER__TRANSPARENT_HUGE_PAGES", "true");

    // Act
    let default = ServerProcess::start(&dir.path().join("default")).await;
    let configured_on = ServerProcess::launch(on, on_port).await;

    // Assert
    assert_eq!(thp_enabled(default.pid()), "0", "the default turns them off for the process");
    assert_eq!(thp_enabled(configured_on.pid()), "1", "server.transparent_huge_pages = true leaves them on");
}

/// Each thread of process `pid`, by name, with its scheduling policy (field 41 of
/// `/proc/PID/task/TID/stat`: 0 `SCHED_OTHER`, 3 `SCHED_BATCH`).
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/PID/task");
    tasks
        .map(|task| {
            let stat = std::fs::read_to_string(task.expect("a task").path().join("stat")).expect("read its stat");
            // The name is in parentheses and may hold spaces: fields are counted after it.
            let (head, rest) = stat.rsplit_once(") ").expect("a stat line");
            let name = head.split_once(" (").expect("a name").1.to_string();
            let policy = rest.split_whitespace().nth(41 - 3).expect("a policy field").parse().expect("a number");
            (name, policy)
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_server_runs_its_threads_under_sched_batch_unless_configured_off() {
    // Arrange
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    let dir = tempfile::tempdir().unwrap();
    let (mut off, off_port) = serve_command(&dir.path().join("off"));
    off.env("BATON_SERVER__BATCH_SCHEDULING", "false");

    // Act
    let default = ServerProcess::start(&dir.path().join("default")).await;
    let configured_off = ServerProcess::launch(off, off_port).await;
    let (batch, normal) = (thread_policies(default.pid()), thread_policies(configured_off.pid()));

    // Assert
    for role in ["baton-committer", "actix-rt|system", "actix-server"] {
        assert!(batch.iter().any(|(name, _)| name.starts_with(role)), "a {role} thread among {batch:?}");
    }
    assert!(batch.iter().all(|(_, policy)| *policy == SCHED_BATCH), "every thread batch by default: {batch:?}");
    assert!(
        normal.iter().all(|(_, policy)| *policy == SCHED_OTHER),
        "server.batch_scheduling = false leaves the policy the server was started with: {normal:?}"
    );
    assert_eq!(default.get("/healthz", "").await.status(), 200, "it serves under SCHED_BATCH");
}

#[tokio::test]
async fn help_is_available_for_the_binary_and_serve() {
    // Arrange
    let mut top = baton();
    top.arg("--help");
    let mut serve = baton();
    serve.args(["serve", "--help"]);

    // Act
    let top = run_to_end(top).await;
    let serve = run_to_end(serve).await;

    // Assert
    assert!(top.status.success(), "baton --help: {}", top.status);
    assert!(String::from_utf8_lossy(&top.stdout).contains("serve"), "baton --help lists serve");
    assert!(serve.status.success(), "baton serve --help: {}", serve.status);
    assert!(String::from_utf8_lossy(&serve.stdout).contains("--data-dir"), "serve --help lists --data-dir");
}

/// `baton load --json` with `args` against `server`, run to its end: its JSON summary.
fn load_summary(server: &ServerProcess, key: &str, args: &[&str]) -> Value {
    let output = baton()
        .args(["load", "--url", &server.address, "--key", key, "--json"])
        .args(args)
        .output()
        .expect("run baton load");
    assert!(output.status.success(), "baton load failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim().lines().last().unwrap_or("")).expect("a JSON summary")
}

#[tokio::test]
async fn baton_load_drives_a_server_and_reports_what_it_measured() {
    // Arrange: a server with its admin key; no chatbot yet (the load command makes one).
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = ServerProcess::start(dir.path()).await;
    let key = server.printed_key();

    // Act
    let report = load_summary(&server, &key, &["--messages", "200", "--connections", "4", "--conversations", "20"]);

    // Assert: the JSON summary counts every message as answered, and the server stored them.
    assert_eq!(report["sent"], 200, "{report}");
    assert_eq!(report["ok"], 200, "{report}");
    assert!(report["throughput"].as_f64().unwrap_or(0.0) > 0.0, "{report}");
    assert!(report["p99_ms"].as_f64().is_some(), "{report}");
    // A fresh client: the harness's pooled connection may have idled out during the run.
    let client = reqwest::Client::new();
    let bots: Value =
        body(client.get(server.url("/v1/chatbots")).header("x-api-key", &key).send().await.unwrap()).await;
    let bot = bots["items"][0]["id"].as_str().expect("the chatbot made for the run").to_string();
    let listed = client
        .get(server.url(&format!("/v1/chatbots/{bot}/conversations?limit=200")))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    let listed = body(listed).await;
    let conversations = listed["items"].as_array().expect("items");
    assert_eq!(conversations.len(), 20, "messages were spread over 20 conversations");
    let stored: u64 = conversations.iter().map(|c| c["message_count"].as_u64().unwrap_or(0)).sum();
    assert_eq!(stored, 400, "each of the 200 messages and its rule answer are stored");
}

#[tokio::test]
async fn baton_load_at_a_fixed_rate_sends_the_schedule_of_its_duration() {
    // Arrange
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = ServerProcess::start(dir.path()).await;
    let key = server.printed_key();

    // Act: open loop, 300 messages a second for one second.
    let args = ["--rate", "300", "--duration", "1", "--connections", "4", "--conversations", "10"];
    let report = load_summary(&server, &key, &args);

    // Assert: exactly the requests due within the second were sent, and all were answered.
    assert_eq!(report["sent"], 300, "{report}");
    assert_eq!(report["ok"], 300, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
}

#[tokio::test]
async fn baton_load_ends_when_its_duration_ends_not_at_the_next_progress_line() {
    // Arrange: a server; off a terminal, `baton load` prints progress every 5 s.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = ServerProcess::start(dir.path()).await;
    let key = server.printed_key();

    // Act: a one-second run.
    let started = std::time::Instant::now();
    let output = baton()
        .args(["load", "--url", &server.address, "--key", &key, "--duration", "1", "--connections", "2"])
        .args(["--conversations", "5"])
        .output()
        .expect("run baton load");
    let took = started.elapsed();

    // Assert: it reports as soon as the run is over, well before a 5-s progress tick.
    assert!(output.status.success(), "baton load failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("messages/s"), "a summary: {stdout}");
    assert!(took < std::time::Duration::from_secs(4), "a 1-s run took {took:?}");
}

// ---------------------------------------------------------------- data directories that cannot be used

/// `baton serve` on `data_dir` (a free port), run to its end.
async fn serve_to_end(data_dir: &Path) -> Output {
    let (command, _) = serve_command(data_dir);
    run_to_end(command).await
}

/// Asserts a start-up refused with one clear line: a failure exit, exactly one line on
/// stderr saying `what` about `data_dir`, no panic or backtrace, no key printed.
fn assert_refused_in_one_line(output: &Output, what: &str, data_dir: &Path) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!output.status.success(), "baton started anyway; stderr: {stderr}");
    assert_eq!(output.status.code(), Some(1), "a plain failure exit, not a crash: {}", output.status);
    assert_eq!(lines.len(), 1, "exactly one line on stderr, got:\n{stderr}");
    let line = lines[0];
    assert!(line.contains(what), "the line should say {what:?}: {line:?}");
    assert!(line.contains(&data_dir.display().to_string()), "the line should name {}: {line:?}", data_dir.display());
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "a panic: {stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("bt_"), "a key was printed anyway");
}

/// Starts and stops a server on `data_dir` so it holds a tenant and its admin key.
async fn set_up_data_dir(data_dir: &Path) -> String {
    let mut server = ServerProcess::start(data_dir).await;
    let key = server.printed_key();
    assert!(server.terminate().await.success());
    key
}

/// Overwrites `file` with as many random bytes as it holds (at least 64).
fn overwrite_with_garbage(file: &Path) {
    use rand::RngCore as _;
    let length = std::fs::metadata(file).map(|m| m.len() as usize).unwrap_or(0).max(64);
    let mut garbage = vec![0u8; length];
    rand::thread_rng().fill_bytes(&mut garbage);
    std::fs::write(file, garbage).expect("write garbage");
}

#[tokio::test]
async fn serve_refuses_a_data_dir_locked_by_another_running_baton_in_one_line() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut running = ServerProcess::start(&data_dir).await;
    let key = running.printed_key();

    // Act
    let second = serve_to_end(&data_dir).await;

    // Assert
    assert_refused_in_one_line(&second, "locked", &data_dir);
    assert_eq!(running.get("/v1/api-keys", &key).await.status(), 200, "the running server is unharmed");
}

#[tokio::test]
async fn serve_refuses_a_corrupted_data_dir_in_one_line() {
    // Arrange: every file of the store overwritten with garbage.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let key = set_up_data_dir(&data_dir).await;
    for entry in std::fs::read_dir(data_dir.join("db")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            overwrite_with_garbage(&path);
        }
    }

    // Act
    let output = serve_to_end(&data_dir).await;

    // Assert
    assert_refused_in_one_line(&output, "corrupted", &data_dir);
    assert_eq!(admin_key_file(&data_dir), key, "admin.key was left alone");
}

#[tokio::test]
async fn serve_refuses_a_data_dir_whose_log_is_garbage_instead_of_starting_empty() {
    // Arrange: the log overwritten with garbage, its configuration intact (sled would recover
    // that as an empty store and a first start would hand out a new admin key).
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let key = set_up_data_dir(&data_dir).await;
    overwrite_with_garbage(&data_dir.join("db").join("db"));

    // Act
    let output = serve_to_end(&data_dir).await;

    // Assert
    assert_refused_in_one_line(&output, "corrupted", &data_dir);
    assert_eq!(admin_key_file(&data_dir), key, "admin.key was not replaced by a new key");
}

#[tokio::test]
async fn serve_refuses_a_data_dir_it_cannot_create_in_one_line() {
    // Arrange: a path below a regular file (chmod would not stop root, which runs the tests).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, "a file").unwrap();
    let data_dir = file.join("data");

    // Act
    let output = serve_to_end(&data_dir).await;

    // Assert
    assert_refused_in_one_line(&output, "cannot be created", &data_dir);
}

#[tokio::test]
async fn keys_create_refuses_a_corrupted_data_dir_in_one_line() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    set_up_data_dir(&data_dir).await;
    overwrite_with_garbage(&data_dir.join("db").join("conf"));

    // Act
    let output = keys_create(&data_dir, "acme", "admin", "on-garbage").await;

    // Assert
    assert_refused_in_one_line(&output, "corrupted", &data_dir);
}

// ---------------------------------------------------------------- secrets stay out of the logs

#[tokio::test]
async fn secrets_never_reach_the_logs_even_at_trace_level() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    // Arrange: an AI key and a JWT secret from the environment, a model and a webhook receiver.
    let unique = || uuid::Uuid::new_v4().simple().to_string();
    let ai_key = format!("sk-ai-{}", unique());
    let jwt_secret = format!("jwt-secret-{}", unique());
    let webhook_secret = format!("whsec-{}", unique());
    let header_secret = format!("hdr-token-{}", unique());
    let model = MockServer::start().await;
    let answer = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": "From the model." }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6 },
    });
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&model)
        .await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut command, port) = serve_command(&dir.path().join("data"));
    command
        .env("RUST_LOG", "trace")
        .env("BATON_LOG__LEVEL", "trace")
        .env("BATON_AI__OPENAI__API_KEY", &ai_key)
        .env("BATON_AI__OPENAI__BASE_URL", model.uri())
        .env("BATON_AUTH__JWT_SECRET", &jwt_secret)
        .env("BATON_WEBHOOKS__ALLOW_PRIVATE_NETWORKS", "true");
    let mut server = ServerProcess::launch(command, port).await;
    let first_line = server.stdout_line();
    let admin_line = server.stdout_line();
    let admin = admin_line.trim().to_string();
    assert!(admin.starts_with("bt_"), "the admin key line: {admin_line:?} after {first_line:?}");

    // Act: a new key, an AI chatbot, a channel with webhook secrets, messages that call the
    // model and the webhook, and requests with right and wrong credentials every way they go.
    let created = server.post("/v1/api-keys", &admin, &json!({ "name": "ops", "scopes": ["admin"] })).await;
    assert_eq!(created.status(), 201);
    let created_key = body(created).await["key"].as_str().expect("key").to_string();
    let bot = server.create_chatbot(&created_key, "Secret keeper").await;
    let settings = json!({ "ai_enabled": true, "ai_provider": "openai", "ai_model": "gpt-4o-mini" });
    let put = server.client.put(server.url(&format!("/v1/chatbots/{bot}/settings")));
    assert_eq!(put.header("X-API-Key", &admin).json(&settings).send().await.unwrap().status(), 200);
    let channel = json!({
        "name": "WhatsApp",
        "reply_webhook": {
            "url": format!("{}/reply", receiver.uri()), "secret": webhook_secret,
            "headers": { "Authorization": format!("Bearer {header_secret}") },
        },
        "human_takeover_webhook": {
            "url": format!("{}/takeover", receiver.uri()), "headers": { "X-Token": header_secret },
        },
    });
    let put = server.client.put(server.url(&format!("/v1/chatbots/{bot}/channels/wa-main")));
    let configured = put.header("X-API-Key", &admin).json(&channel).send().await.unwrap();
    assert_eq!(configured.status(), 200, "channel configured");
    let shown = server.get(&format!("/v1/chatbots/{bot}/channels/wa-main"), &admin).await;
    assert!(!body(shown).await.to_string().contains(&webhook_secret), "the webhook secret is masked in GET");
    let handled = server.handle(&admin, &bot, "+15550100", "hello model", "secret-1").await;
    assert_eq!(handled.status(), 200);
    let conversation = body(handled).await["conversation_id"].as_str().expect("conversation_id").to_string();
    let payload = json!({
        "channelId": "wa-main", "providerId": "+15550101", "async": true,
        "message": { "id": "secret-2", "type": "text", "text": "reply by webhook" },
    });
    assert_eq!(
        server.post(&format!("/v1/chatbots/{bot}/conversations/handle"), &created_key, &payload).await.status(),
        202
    );
    let pause = json!({ "action": "pause" });
    let paused = server.post(&format!("/v1/conversations/{conversation}/bot-control"), &admin, &pause).await;
    assert_eq!(paused.status(), 200);
    let delivered = Instant::now();
    while receiver.received_requests().await.unwrap_or_default().len() < 2 {
        assert!(delivered.elapsed() < PROCESS_DEADLINE, "webhooks were not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "ops", "tenant": "default", "scopes": ["admin"], "exp": chrono::Utc::now().timestamp() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(jwt_secret.as_bytes()),
    )
    .expect("JWT");
    let wrong_key = format!("bt_{}", "x".repeat(40));
    let http = &server.client;
    let chatbots = server.url("/v1/chatbots");
    let mut statuses = Vec::new();
    for (name, value) in [
        ("X-API-Key", created_key.clone()),
        ("x-chatcaptain-key", created_key.clone()),
        ("Authorization", format!("Bearer {created_key}")),
        ("Authorization", format!("Bearer {jwt}")),
        ("X-API-Key", wrong_key.clone()),
        ("Authorization", format!("Bearer {wrong_key}")),
        ("Authorization", format!("Bearer {jwt_secret}")),
    ] {
        statuses.push(http.get(&chatbots).header(name, value).send().await.unwrap().status().as_u16());
    }
    for query in [format!("token={created_key}"), format!("api_key={created_key}"), format!("token={wrong_key}")] {
        for route in ["/v1/ws", "/v1/chatbots"] {
            let _ = http.get(server.url(&format!("{route}?{query}"))).send().await.unwrap();
        }
    }
    let status = server.terminate().await;

    // Assert
    assert_eq!(statuses, [200, 200, 200, 200, 401, 401, 401], "the credentials worked as expected");
    assert!(status.success(), "exit status {status}");
    let stdout = format!("{first_line}{admin_line}{}", server.remaining_stdout());
    let logs = format!("{stdout}\n{}", server.stderr());
    assert!(logs.lines().count() > 50, "trace logging was on: {} lines", logs.lines().count());
    assert_eq!(logs.matches(&admin).count(), 1, "the admin key shows once, on its printed line");
    for (what, secret) in [
        ("the created API key", &created_key),
        ("the AI provider key", &ai_key),
        ("the JWT secret", &jwt_secret),
        ("a JWT", &jwt),
        ("the webhook secret", &webhook_secret),
        ("a webhook header's token", &header_secret),
        ("a mistyped key", &wrong_key),
    ] {
        let leak = logs.lines().find(|line| line.contains(secret.as_str()));
        assert!(leak.is_none(), "{what} is in the logs: {leak:?}");
    }
}

#[tokio::test]
async fn shutdown_keeps_its_deadline_with_a_webhook_hanging_and_leaves_the_rest_queued() {
    // Arrange: a receiver that holds every call for a minute.
    let receiver = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/reply"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
        .mount(&receiver)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let start = |data_dir: &Path| {
        let (mut command, port) = serve_command(data_dir);
        command
            .env("BATON_WEBHOOKS__ALLOW_PRIVATE_NETWORKS", "true")
            .env("BATON_WEBHOOKS__TIMEOUT_MS", "120000")
            .env("BATON_WEBHOOKS__SHUTDOWN_GRACE_SECS", "1")
            .env("BATON_SERVER__SHUTDOWN_TIMEOUT_SECS", "1");
        ServerProcess::launch(command, port)
    };
    let mut server = start(&data_dir).await;
    let admin = server.printed_key();
    let bot = server.create_chatbot(&admin, "hooked").await;
    let channel = json!({"name": "WhatsApp", "reply_webhook": {"url": format!("{}/reply", receiver.uri())}});
    let configured = server
        .client
        .put(server.url(&format!("/v1/chatbots/{bot}/channels/wa-main")))
        .header("X-API-Key", &admin)
        .json(&channel)
        .send()
        .await
        .expect("request");
    assert_eq!(configured.status(), 200, "channel configured");
    for n in 0..3 {
        let payload = json!({
            "channelId": "wa-main", "channelName": "WhatsApp", "providerId": format!("+1555000{n}"), "async": true,
            "message": {"id": format!("late-{n}"), "type": "text", "text": "anyone there?"},
        });
        let path = format!("/v1/chatbots/{bot}/conversations/handle");
        assert_eq!(server.post(&path, &admin, &payload).await.status(), 202, "async handle accepted");
    }
    let deadline = Instant::now() + PROCESS_DEADLINE;
    while receiver.received_requests().await.unwrap_or_default().is_empty() {
        assert!(Instant::now() < deadline, "no delivery reached the receiver");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Act
    let asked = Instant::now();
    let status = server.terminate().await;
    let took = asked.elapsed();
    drop(server);

    // Assert: it kept its deadlines (1 s for requests, 1 s for webhooks) despite the hanging
    // call, and every reply is still queued for the next start.
    assert!(status.success(), "SIGTERM exit status {status}");
    assert!(took < Duration::from_secs(6), "shutdown took {took:?} with 2 s of deadlines");
    receiver.reset().await;
    wiremock::Mock::given(wiremock::matchers::path("/reply"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let server = start(&data_dir).await;
    let deadline = Instant::now() + PROCESS_DEADLINE;
    loop {
        let page = body(server.get("/v1/webhook-deliveries?status=delivered", &admin).await).await;
        if page["items"].as_array().map(Vec::len) == Some(3) {
            break;
        }
        assert!(Instant::now() < deadline, "the queued replies were not delivered after the restart: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pending = body(server.get("/v1/webhook-deliveries?status=pending", &admin).await).await;
    assert_eq!(pending["items"], json!([]), "nothing left pending");
}
