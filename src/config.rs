//! Settings: the compiled-in `config/default.toml`, then `--config FILE`, then `BATON_…`
//! environment variables (`BATON_SERVER__ADDR=…`), each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
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
    pub ai: AiSettings,
    pub limits: LimitSettings,
    /// Fault injection for baton's own tests; absent from `config/default.toml`, off unless set.
    #[serde(default)]
    pub testing: TestingSettings,
}

/// Fault injection for baton's own tests. Not a feature: nothing here is documented for users,
/// and everything is off by default.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TestingSettings {
    /// A conversation turn that would store a message with exactly this text panics.
    #[serde(default)]
    pub panic_on_text: Option<String>,
}

/// The HTTP server.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub addr: SocketAddr,
    pub workers: usize,
    pub handle_body_limit_bytes: usize,
    pub body_limit_bytes: usize,
    /// Time a client has to send its request head.
    pub client_request_timeout_ms: u64,
    /// Time a client has to send a whole request body once its head arrived.
    pub body_read_timeout_ms: u64,
    /// Idle time after which a keep-alive connection is closed; 0 turns keep-alive off.
    pub keep_alive_secs: u64,
    /// Time a client has to acknowledge the end of a connection before it is dropped.
    pub client_disconnect_timeout_ms: u64,
    pub shutdown_timeout_secs: u64,
    /// Whether the kernel may back the process's heap with transparent huge pages (Linux).
    pub transparent_huge_pages: bool,
    /// Whether the server's threads run under `SCHED_BATCH` (Linux): woken, they wait for the
    /// running thread's turn to end instead of preempting it.
    pub batch_scheduling: bool,
}

impl ServerSettings {
    /// `body_read_timeout_ms` as a duration (at least 1 ms).
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms.max(1))
    }
}

/// Rate limits (a rate of 0 turns that limit off).
#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    /// Requests per second one API key (or one JWT subject) may make, sustained.
    pub per_key_per_second: u32,
    /// Requests one key may make at once on top of its sustained rate.
    pub per_key_burst: u32,
    /// Requests per second addressing one conversation, sustained.
    pub per_conversation_per_second: u32,
    /// Requests addressing one conversation that may arrive at once.
    pub per_conversation_burst: u32,
}

/// The sled store.
#[derive(Debug, Clone, Deserialize)]
pub struct StorageSettings {
    pub data_dir: PathBuf,
    pub cache_capacity_bytes: u64,
    pub fsync: bool,
    /// How often sled moves the pages still live in mostly-dead log segments elsewhere, so
    /// the segments are reused; 0 turns it off (the data directory then keeps growing).
    pub segment_cleaning_ms: u64,
    pub dedupe_retention_secs: u64,
    /// Messages older than this many days are deleted by the retention sweep (fractions
    /// allowed); 0 keeps them forever.
    pub message_retention_days: f64,
    /// Deliveries settled more than this many days ago are deleted by the retention sweep
    /// (fractions allowed); 0 keeps them forever. Pending ones always stay.
    pub delivery_retention_days: f64,
    /// How often the retention sweeps run.
    pub retention_sweep_secs: u64,
}

impl StorageSettings {
    /// What the store is opened with.
    pub fn store_config(&self) -> baton_actors::store::StoreConfig {
        baton_actors::store::StoreConfig {
            data_dir: self.data_dir.clone(),
            cache_capacity_bytes: self.cache_capacity_bytes,
            fsync: self.fsync,
            segment_cleaning_ms: self.segment_cleaning_ms,
        }
    }

    /// How long messages are kept; `None` when forever (`message_retention_days` is 0).
    pub fn message_retention(&self) -> Option<chrono::Duration> {
        retention(self.message_retention_days)
    }

    /// How long settled deliveries are kept; `None` when forever (`delivery_retention_days` is 0).
    pub fn delivery_retention(&self) -> Option<chrono::Duration> {
        retention(self.delivery_retention_days)
    }

    /// `retention_sweep_secs` as a duration (at least a second).
    pub fn retention_sweep_every(&self) -> Duration {
        Duration::from_secs(self.retention_sweep_secs.max(1))
    }
}

/// A retention of `days` (fractions allowed); `None` for 0, a negative or a non-finite number.
fn retention(days: f64) -> Option<chrono::Duration> {
    (days.is_finite() && days > 0.0).then(|| chrono::Duration::milliseconds((days * 86_400_000.0) as i64))
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

/// AI replies: provider endpoints and keys, timeouts, prompt bounds.
#[derive(Debug, Clone, Deserialize)]
pub struct AiSettings {
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
    pub history_messages: usize,
    pub history_max_chars: usize,
    pub context_budget_chars: usize,
    pub openai: AiProviderSettings,
    pub anthropic: AiProviderSettings,
}

/// One AI provider's endpoint and key.
#[derive(Debug, Clone, Deserialize)]
pub struct AiProviderSettings {
    pub base_url: String,
    /// Empty when the provider is not configured.
    pub api_key: SecretString,
}

impl AiProviderSettings {
    fn key(&self) -> Option<String> {
        let key = self.api_key.expose_secret().trim();
        (!key.is_empty()).then(|| key.to_string())
    }
}

impl AiSettings {
    /// The AI service's configuration (an empty key is no key).
    pub fn client_config(&self) -> baton_actors::ai::AiConfig {
        baton_actors::ai::AiConfig {
            openai_base_url: self.openai.base_url.trim().to_string(),
            openai_api_key: self.openai.key(),
            anthropic_base_url: self.anthropic.base_url.trim().to_string(),
            anthropic_api_key: self.anthropic.key(),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms.max(1)),
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
            history_messages: self.history_messages,
            history_max_chars: self.history_max_chars,
            context_budget_chars: self.context_budget_chars,
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
        builder = builder.add_source(environment());
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

/// The `BATON_SECTION__KEY` environment source (`BATON_AI__OPENAI__API_KEY` names `ai.openai.api_key`).
fn environment() -> config::Environment {
    config::Environment::with_prefix("BATON").prefix_separator("_").separator("__").try_parsing(true)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret as _;

    use super::*;

    /// The defaults overridden by `vars` as if they were the process environment.
    fn with_env(vars: &[(&str, &str)]) -> Settings {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        config::Config::builder()
            .add_source(config::File::from_str(DEFAULT_CONFIG, config::FileFormat::Toml))
            .add_source(environment().source(Some(vars)))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("valid settings")
    }

    #[test]
    fn the_ai_defaults_have_no_keys_and_the_public_endpoints() {
        let ai = Settings::defaults().ai.client_config();

        assert_eq!(ai.openai_base_url, "https://api.openai.com/v1");
        assert_eq!(ai.anthropic_base_url, "https://api.anthropic.com");
        assert_eq!((ai.openai_api_key, ai.anthropic_api_key), (None, None));
        assert_eq!((ai.connect_timeout, ai.timeout), (Duration::from_secs(5), Duration::from_secs(30)));
        assert_eq!((ai.history_messages, ai.history_max_chars, ai.context_budget_chars), (20, 8000, 6000));
    }

    #[test]
    fn nested_ai_settings_come_from_double_underscore_environment_variables() {
        let settings = with_env(&[
            ("BATON_AI__OPENAI__BASE_URL", "http://127.0.0.1:9999/v1"),
            ("BATON_AI__OPENAI__API_KEY", "sk-from-env"),
            ("BATON_AI__ANTHROPIC__BASE_URL", "http://127.0.0.1:9998"),
            ("BATON_AI__ANTHROPIC__API_KEY", "sk-ant-from-env"),
            ("BATON_AI__TIMEOUT_MS", "1500"),
        ]);

        assert_eq!(settings.ai.openai.api_key.expose_secret(), "sk-from-env");
        let ai = settings.ai.client_config();
        assert_eq!(ai.openai_base_url, "http://127.0.0.1:9999/v1");
        assert_eq!(ai.openai_api_key.as_deref(), Some("sk-from-env"));
        assert_eq!(ai.anthropic_base_url, "http://127.0.0.1:9998");
        assert_eq!(ai.anthropic_api_key.as_deref(), Some("sk-ant-from-env"));
        assert_eq!(ai.timeout, Duration::from_millis(1500));
    }

    #[test]
    fn the_ai_settings_never_show_their_keys() {
        let settings = with_env(&[("BATON_AI__OPENAI__API_KEY", "sk-very-secret")]);

        assert!(!format!("{:?}", settings.ai).contains("sk-very-secret"));
    }
}
