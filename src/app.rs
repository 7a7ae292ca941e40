//! The application: state shared by the handlers, server construction and shutdown.
//!
//! `Application::build` opens the store, creates the first admin key on a first start,
//! starts the conversation registry and binds its own listener (port 0 picks a free port,
//! which tests use). `run_until` serves until the given shutdown future resolves, then stops
//! in order: HTTP (in-flight requests finish) → conversation mailboxes drained → store flushed.

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor as _, Addr};
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use baton_actors::botconfig::{BotConfig, BotConfigs};
use baton_actors::events::EventBus;
use baton_actors::model::ChatbotId;
use baton_actors::registry::{Registry, RegistryConfig, Services};
use baton_actors::store::Store;
use baton_actors::webhook::{WebhookActor, WebhookStats};
use secrecy::ExposeSecret;

use crate::auth::{issue_key, Principal, Scope};
use crate::config::Settings;
use crate::error::ApiError;

/// The name of the tenant created on a first start.
pub const DEFAULT_TENANT: &str = "default";
/// How often forgotten provider message ids are swept.
const DEDUPE_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// What every handler can reach.
pub struct AppState {
    pub store: Store,
    pub registry: Registry,
    pub configs: BotConfigs,
    pub settings: Arc<Settings>,
    pub jwt: Option<jsonwebtoken::DecodingKey>,
    /// Delivers the outbox.
    pub webhooks: Addr<WebhookActor>,
    /// Counters for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    pub webhook_stats: Arc<WebhookStats>,
    /// Rate limits per API key and per conversation.
    pub limits: crate::ratelimit::Limits,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("store", &self.store).field("jwt", &self.jwt.is_some()).finish_non_exhaustive()
    }
}

impl AppState {
    /// After a write to chatbot `bot`'s configuration: forget its cached configuration (so the
    /// next message sees the change), then wait until the write is durable.
    pub async fn config_written(
        &self,
        bot: ChatbotId,
        ticket: baton_actors::store::CommitTicket,
    ) -> Result<(), ApiError> {
        self.configs.invalidate(bot);
        self.store.durable(ticket).await?;
        Ok(())
    }

    /// The caller's chatbot `id` (a 404 for a malformed id or another tenant's chatbot).
    pub fn chatbot(&self, principal: &Principal, id: &str) -> Result<Arc<BotConfig>, ApiError> {
        let id: ChatbotId = id.parse().map_err(|_| ApiError::not_found("chatbot"))?;
        match self.configs.get(&self.store, id)? {
            Some(config) if config.chatbot.tenant_id == principal.tenant_id => Ok(config),
            _ => Err(ApiError::not_found("chatbot")),
        }
    }
}

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    bootstrap_key: Option<String>,
    /// The webhook actor's thread, stopped last.
    webhook_arbiter: actix::Arbiter,
    /// The task forgetting old provider message ids.
    sweeper: tokio::task::JoinHandle<()>,
    /// The tasks deleting messages past `storage.message_retention_days` and settled
    /// deliveries past `storage.delivery_retention_days`, those that are set.
    retention_sweepers: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Application {
    /// Opens everything and binds the listener. Must run inside an actix System.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        set_transparent_huge_pages(settings.server.transparent_huge_pages);
        if settings.server.batch_scheduling {
            // Before any thread is started: each inherits the policy.
            set_batch_scheduling();
        }
        let data_dir = settings.storage.data_dir.clone();
        let store = open_store(&settings)?;
        let bootstrap_key = bootstrap_admin_key(&store, &data_dir).await?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let configs = BotConfigs::default();
        let outbox = Arc::new(tokio::sync::Notify::new());
        let ai = baton_actors::ai::Ai::new(settings.ai.client_config())?
            .with_private_networks(settings.webhooks.allow_private_networks)?;
        let services = Services {
            configs: configs.clone(),
            http,
            events: EventBus::default(),
            outbox: Arc::clone(&outbox),
            ai: Some(ai),
            panic_on_text: settings.testing.panic_on_text.clone(),
        };
        let registry = Registry::start(
            store.clone(),
            RegistryConfig {
                arbiters: settings.actors.arbiters,
                mailbox_capacity: settings.actors.mailbox_capacity.max(1),
                idle_passivate: settings.idle_passivate(),
            },
            services,
        );
        let webhook_stats = Arc::new(WebhookStats::default());
        let webhook_actor =
            WebhookActor::new(store.clone(), settings.webhooks.actor_config(), Arc::clone(&webhook_stats), outbox)?;
        let webhook_arbiter = actix::Arbiter::new();
        let webhooks = WebhookActor::start_in_arbiter(&webhook_arbiter.handle(), move |_| webhook_actor);
        let secret = settings.auth.jwt_secret.expose_secret();
        let jwt = (!secret.is_empty()).then(|| jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()));
        let listener = TcpListener::bind(settings.server.addr)
            .with_context(|| format!("could not listen on {}", settings.server.addr))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            store,
            registry,
            configs,
            settings: Arc::new(settings.clone()),
            jwt,
            webhooks,
            webhook_stats,
            metrics: crate::metrics::Metrics::default(),
            limits: crate::ratelimit::Limits::new(&settings.limits),
        });
        let server_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(server_state.clone())
                .wrap(actix_web::middleware::from_fn(log_request))
                // Last, so outermost: request ids and panic containment cover every other middleware.
                .wrap(actix_web::middleware::from_fn(crate::middleware::request_id_and_panics))
                .configure(crate::routes::configure)
        })
        .listen(listener)?
        .disable_signals()
        .client_request_timeout(Duration::from_millis(settings.server.client_request_timeout_ms))
        .client_disconnect_timeout(Duration::from_millis(settings.server.client_disconnect_timeout_ms))
        .keep_alive(Duration::from_secs(settings.server.keep_alive_secs))
        .shutdown_timeout(settings.server.shutdown_timeout_secs);
        server = server.workers(baton_actors::registry::threads_or_default(settings.server.workers));
        let sweeper = spawn_dedupe_sweeper(state.store.clone(), settings.storage.dedupe_retention_secs);
        let retention_sweepers = spawn_retention_sweepers(&state.store, &settings.storage);
        Ok(Self { port, server: server.run(), state, bootstrap_key, webhook_arbiter, sweeper, retention_sweepers })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin key created on this first start, if this was one.
    pub fn bootstrap_key(&self) -> Option<&str> {
        self.bootstrap_key.as_deref()
    }

    /// The store (tests and the CLI issue keys through it).
    pub fn store(&self) -> Store {
        self.state.store.clone()
    }

    /// Serves until `shutdown` resolves, then stops gracefully.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = self.server;
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => result?,
            () = shutdown => {
                tracing::info!("shutting down: finishing in-flight requests");
                // The stop command is carried out by the server future, so keep polling it.
                let stop = handle.stop(true);
                let (_, result) = tokio::join!(stop, &mut server);
                result?;
            }
        }
        tracing::info!(
            live = self.state.registry.stats().live_actors.load(std::sync::atomic::Ordering::Relaxed),
            "draining conversation mailboxes"
        );
        let draining = std::time::Instant::now();
        self.state.registry.drain().await;
        tracing::info!(took_ms = draining.elapsed().as_millis() as u64, "conversation mailboxes drained");
        let grace = Duration::from_secs(self.state.settings.webhooks.shutdown_grace_secs);
        let _ = self.state.webhooks.send(baton_actors::webhook::Drain { deadline: grace }).await;
        let pending = self.state.store.pending_deliveries();
        if pending > 0 {
            tracing::info!(pending, "webhook deliveries stay queued for the next start");
        }
        self.webhook_arbiter.stop();
        let _ = self.webhook_arbiter.join();
        // Awaited, so the tasks (and their handles to the store) are gone before the close.
        for sweeper in std::iter::once(self.sweeper).chain(self.retention_sweepers) {
            sweeper.abort();
            let _ = sweeper.await;
        }
        // The data directory stays locked while any handle to the store lives; HTTP worker
        // threads drop their share of the state a moment after the server stopped. Wait for
        // them (bounded), so a caller can reopen the directory as soon as this returns.
        let state = self.state.into_inner();
        let give_up = std::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&state) > 1 && std::time::Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let store = state.store.clone();
        drop(state);
        // Dropping the last handle writes sled's snapshot of its page table, so the next start
        // replays no log. (A sweep still running on a blocking thread, or a caller that kept a
        // clone, holds the store a while longer; the snapshot is written when that one goes.)
        let closing = std::time::Instant::now();
        store.close()?;
        drop(store);
        tracing::info!(took_ms = closing.elapsed().as_millis() as u64, "store flushed; bye");
        Ok(())
    }
}

/// Opens the store. When the data directory cannot be used, the error is one line saying
/// what is wrong and where: locked by another process, corrupted, or not writable.
pub fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let dir = &settings.storage.data_dir;
    let store = Store::open(&settings.storage.store_config())
        .map_err(|error| anyhow::anyhow!(unusable_data_dir(dir, &error)))?;
    // sled recovers a log it cannot read as an empty store; a directory that was set up
    // before (it has admin.key) but holds no key at all has lost its data.
    let admin_key = dir.join("admin.key");
    if admin_key.exists() && !store.has_any_key().map_err(|error| anyhow::anyhow!(unusable_data_dir(dir, &error)))? {
        anyhow::bail!(
            "the data directory {} is corrupted: it holds no API key although {} shows it was set up before \
             (restore it from a backup, or remove the directory to start afresh)",
            dir.display(),
            admin_key.display()
        );
    }
    Ok(store)
}

/// One line explaining why the store in `dir` could not be opened.
fn unusable_data_dir(dir: &Path, error: &baton_actors::store::StoreError) -> String {
    use baton_actors::store::StoreError;
    let dir = dir.display();
    let detail = error.to_string().replace('\n', " ");
    // sled appends an (empty) backtrace to some errors; it is noise on the one line.
    let detail = detail.split(" backtrace").next().unwrap_or_default().trim().to_string();
    let lowercase = detail.to_lowercase();
    // A read that ran past the end of the log: a record's length points beyond the file.
    let truncated = error.is_unexpected_eof();
    if lowercase.contains("could not acquire lock") {
        format!("the data directory {dir} is locked by another process (is another baton running on it?)")
    } else if truncated || ["corrupt", "unsupported", "crc"].iter().any(|word| lowercase.contains(word)) {
        format!("the data directory {dir} is corrupted or not a baton data directory ({detail})")
    } else if matches!(error, StoreError::Io(_)) || detail.contains("IO error") {
        format!("the data directory {dir} cannot be created or written ({detail})")
    } else {
        format!("the data directory {dir} cannot be opened ({detail})")
    }
}

/// On a first start (no key at all) creates tenant `default` with an admin key and writes
/// it to `DIR/admin.key` (mode 0600). Returns the key so the caller can print it once.
async fn bootstrap_admin_key(store: &Store, data_dir: &Path) -> anyhow::Result<Option<String>> {
    if store.has_any_key()? {
        return Ok(None);
    }
    let (tenant, tenant_ticket) = store.ensure_tenant(DEFAULT_TENANT)?;
    let (_, key, ticket) = issue_key(store, tenant.id, "admin", &[Scope::Admin])?;
    store.durable(ticket.max(tenant_ticket)).await?;
    let path = data_dir.join("admin.key");
    write_private_file(&path, &format!("{key}\n")).with_context(|| format!("could not write {}", path.display()))?;
    Ok(Some(key))
}

fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Forgets provider message ids older than `retention_secs`, every hour.
fn spawn_dedupe_sweeper(store: Store, retention_secs: u64) -> tokio::task::JoinHandle<()> {
    let keep = chrono::Duration::seconds(retention_secs as i64);
    spawn_sweeper(store, DEDUPE_SWEEP_EVERY, keep, "forgot old provider message ids", Store::expire_dedupe)
}

/// Every `retention_sweep_secs`, deletes messages older than their retention period and
/// deliveries settled before theirs; no task for what is kept forever.
fn spawn_retention_sweepers(
    store: &Store,
    settings: &crate::config::StorageSettings,
) -> Vec<tokio::task::JoinHandle<()>> {
    let period = settings.retention_sweep_every();
    let messages = settings.message_retention().map(|keep| {
        spawn_sweeper(store.clone(), period, keep, "deleted messages past their retention", Store::expire_messages)
    });
    let deliveries = settings.delivery_retention().map(|keep| {
        let done = "deleted webhook deliveries settled before their retention";
        spawn_sweeper(store.clone(), period, keep, done, Store::expire_deliveries)
    });
    messages.into_iter().chain(deliveries).collect()
}

/// Runs `sweep` (on a blocking thread) every `period` with the cutoff `now - keep`, logging
/// `done` with how many records went. The first sweep comes one period after start, so a
/// start on a large store does not begin with a full scan.
fn spawn_sweeper(
    store: Store,
    period: Duration,
    keep: chrono::Duration,
    done: &'static str,
    sweep: fn(&Store, chrono::DateTime<chrono::Utc>) -> Result<usize, baton_actors::store::StoreError>,
) -> tokio::task::JoinHandle<()> {
    actix_rt::spawn(async move {
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let store = store.clone();
            let cutoff = chrono::Utc::now() - keep;
            match tokio::task::spawn_blocking(move || sweep(&store, cutoff)).await {
                Ok(Ok(n)) if n > 0 => tracing::info!(records = n, "{done}"),
                Ok(Err(error)) => tracing::warn!(%error, "sweep failed: {done}"),
                _ => {}
            }
        }
    })
}

/// Lets the kernel back the process's heap with transparent huge pages, or not
/// (`server.transparent_huge_pages`). mimalloc asks for them on its arenas, and the first touch
/// of each such page zeroes 2 MiB at once: on a virtual machine that held the conversation
/// arbiter for milliseconds, with every request waiting behind it. The flag is the process's,
/// so it also covers whatever else runs in it (the load bench's bare handler).
fn set_transparent_huge_pages(allowed: bool) {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(!allowed) {
        tracing::warn!(%error, allowed, "could not set whether transparent huge pages back the heap");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = allowed;
}

/// Puts the calling thread under `SCHED_BATCH` (`server.batch_scheduling`); the threads it
/// starts afterwards inherit it. A batch thread that is woken does not preempt the running one:
/// it runs when that one blocks or its turn ends. Every hop of a handled message (HTTP worker,
/// arbiter, group committer) wakes the next thread, which would otherwise preempt the thread
/// that woke it just before that one finished its own part.
fn set_batch_scheduling() {
    #[cfg(target_os = "linux")]
    if let Err(error) = uapi::sched_setscheduler(0, uapi::c::SCHED_BATCH, &uapi::c::sched_param { sched_priority: 0 }) {
        tracing::warn!(%error, "could not run baton's threads under SCHED_BATCH");
    }
}

/// Logs each request at debug level (method, path, status, time); free when debug is off.
async fn log_request(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.call(req).await;
    }
    let started = std::time::Instant::now();
    let (method, path) = (req.method().clone(), req.path().to_string());
    let response = next.call(req).await?;
    let status = response.status().as_u16();
    tracing::debug!(target: "baton::http", %method, %path, status, micros = started.elapsed().as_micros() as u64, "request");
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_read_past_its_end_is_reported_as_corruption() {
        // A record whose length points beyond the file: what a log overwritten with garbage
        // gives once sled's snapshot sends it reading there.
        let error = baton_actors::store::StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "failed to fill whole buffer",
        ));

        let line = unusable_data_dir(Path::new("/var/lib/baton"), &error);

        assert!(line.contains("is corrupted"), "{line}");
        assert!(line.contains("/var/lib/baton"), "{line}");
    }
}
