//! The command line: `baton serve` and `baton keys create`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::app::{open_store, Application};
use crate::auth::{issue_key, Scope};
use crate::config::Settings;

/// baton: a conversation runtime for chatbots on messaging channels.
#[derive(Debug, Parser)]
#[command(name = "baton", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do (default: serve).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Manage API keys (with the server stopped).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// `baton serve`.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// A TOML file overriding the compiled-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen address, HOST:PORT.
    #[arg(long)]
    pub addr: Option<std::net::SocketAddr>,
    /// Data directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `baton keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key (and its tenant if new); prints the key alone on the last line.
    Create(KeysCreateArgs),
}

/// `baton keys create`.
#[derive(Debug, Args)]
pub struct KeysCreateArgs {
    /// Data directory of the (stopped) server.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A TOML file overriding the compiled-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Tenant name; created if new.
    #[arg(long)]
    pub tenant: String,
    /// Comma-separated scopes, e.g. `admin` or `messages:handle,conversations:read`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<String>,
    /// A name to tell the key apart.
    #[arg(long, default_value = "cli")]
    pub name: String,
}

/// Runs the command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(args),
        Command::Keys { command: KeysCommand::Create(args) } => create_key(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut settings = Settings::load(args.config.as_deref())?;
    if let Some(addr) = args.addr {
        settings.server.addr = addr;
    }
    if let Some(dir) = args.data_dir {
        settings.storage.data_dir = dir;
    }
    crate::telemetry::init(&settings.log.level);
    actix_rt::System::new().block_on(async move {
        let app = Application::build(settings.clone()).await?;
        if let Some(key) = app.bootstrap_key() {
            println!("First start: created tenant \"default\" with an admin API key (also written to {}):", settings.storage.data_dir.join("admin.key").display());
            println!("{key}");
        }
        tracing::info!(addr = %settings.server.addr, port = app.port(), data_dir = %settings.storage.data_dir.display(), "baton is serving");
        app.run_until(shutdown_signal()).await
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn create_key(args: KeysCreateArgs) -> anyhow::Result<()> {
    let mut settings = Settings::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        settings.storage.data_dir = dir;
    }
    let tenant_name = args.tenant.trim();
    anyhow::ensure!(!tenant_name.is_empty(), "--tenant must not be empty");
    let scopes = args
        .scopes
        .iter()
        .map(|s| Scope::parse(s.trim()).with_context(|| format!("unknown scope {s:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let store = open_store(&settings)?;
    let (tenant, tenant_ticket) = store.ensure_tenant(tenant_name)?;
    let (key, secret, ticket) = issue_key(&store, tenant.id, &args.name, &scopes)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(store.durable(ticket.max(tenant_ticket)))?;
    store.close()?;
    println!(
        "created key {} ({}) for tenant {} ({}) with scopes {}",
        key.id,
        key.name,
        tenant.name,
        tenant.id,
        key.scopes.join(",")
    );
    println!("{secret}");
    Ok(())
}
