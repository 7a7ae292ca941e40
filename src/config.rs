//! Settings: the compiled-in `config/default.toml`, then `--config FILE`, then `BATON_…`
//! environment variables (`BATON_SERVER__ADDR=…`), each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;
use serde::Deserialize;

/// The defaults, compiled into the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// All of baton's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub actors: ActorSettings,
    pub auth: AuthSettings,
    pub webhooks: WebhookSettings,
    pub log: LogSettings,
}

/// The HTTP server.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub addr: SocketAddr,
    pub workers: usize,
    pub handle_body_limit_bytes: usize,
    pub body_limit_bytes: usize,
    pub client_request_timeout_ms: u64,
    pub shutdown_timeout_secs: u64,
}

/// The sled store.
#[derive(Debug, Clone, Deserialize)]
pub struct StorageSettings {
    pub data_dir: PathBuf,
    pub cache_capacity_bytes: u64,
    pub fsync: bool,
    pub dedupe_retention_secs: u64,
}

/// Conversation actors.
#[derive(Debug, Clone, Deserialize)]
pub struct ActorSettings {
    pub arbiters: usize,
    pub mailbox_capacity: usize,
    pub idle_passivate_secs: u64,
}

/// Authentication.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub jwt_secret: SecretString,
}

/// Outbound webhooks.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    pub allow_private_networks: bool,
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
    pub retry_schedule_secs: Vec<u64>,
    pub max_in_flight: usize,
    pub shutdown_grace_secs: u64,
}

impl WebhookSettings {
    /// The webhook actor's configuration.
    pub fn actor_config(&self) -> baton_actors::webhook::WebhookConfig {
        baton_actors::webhook::WebhookConfig {
            allow_private_networks: self.allow_private_networks,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms.max(1)),
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
            retry_schedule: self.retry_schedule_secs.iter().map(|&s| Duration::from_secs(s)).collect(),
            max_in_flight: self.max_in_flight.max(1),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub level: String,
}

impl Settings {
    /// Loads the defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(DEFAULT_CONFIG, config::FileFormat::Toml));
        if let Some(file) = file {
            anyhow::ensure!(file.exists(), "config file {} does not exist", file.display());
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("BATON").prefix_separator("_").separator("__").try_parsing(true),
        );
        let settings: Settings = builder.build()?.try_deserialize().context("invalid configuration")?;
        Ok(settings)
    }

    /// The defaults alone (tests start from these).
    pub fn defaults() -> Self {
        config::Config::builder()
            .add_source(config::File::from_str(DEFAULT_CONFIG, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("the compiled-in config/default.toml is valid")
    }

    /// `idle_passivate_secs` as a duration.
    pub fn idle_passivate(&self) -> Duration {
        Duration::from_secs(self.actors.idle_passivate_secs.max(1))
    }
}
