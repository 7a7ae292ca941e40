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
    /// Drive a running server with provider messages and report messages/s and latency.
    Load(LoadArgs),
}

/// `baton load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// An API key with `messages:handle` (and `chatbot:config` when no chatbot is given).
    #[arg(long)]
    pub key: String,
    /// The chatbot to post to; default: the key's first chatbot, or a new one made for the run.
    #[arg(long)]
    pub chatbot: Option<String>,
    /// Conversations the messages are spread over.
    #[arg(long, default_value_t = 10_000)]
    pub conversations: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds to run (default 10 unless --messages is given).
    #[arg(long, conflicts_with = "messages")]
    pub duration: Option<f64>,
    /// Messages to send.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Open loop at this many messages/s (latency counted from when each was due); default closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Print the summary as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
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
        Command::Load(args) => load(args),
    }
}

fn load(args: LoadArgs) -> anyhow::Result<()> {
    use std::io::{IsTerminal as _, Write as _};
    use std::sync::atomic::Ordering::Relaxed;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let url = args.url.trim_end_matches('/').to_string();
        let chatbot = match args.chatbot {
            Some(id) => id,
            None => load_chatbot(&url, &args.key).await?,
        };
        let duration = match (args.duration, args.messages) {
            (Some(secs), _) => Some(std::time::Duration::from_secs_f64(secs.max(0.1))),
            (None, None) => Some(std::time::Duration::from_secs(10)),
            (None, Some(_)) => None,
        };
        let config = crate::load::LoadConfig {
            url,
            key: Some(args.key),
            chatbot,
            conversations: args.conversations.max(1),
            connections: args.connections.max(1),
            duration,
            messages: args.messages,
            rate: args.rate,
            path: None,
        };
        let progress = std::sync::Arc::new(crate::load::Progress::default());
        let mut run = tokio::spawn({
            let progress = std::sync::Arc::clone(&progress);
            async move { crate::load::run_with_progress(&config, progress).await }
        });
        let started = std::time::Instant::now();
        let tty = std::io::stderr().is_terminal() && !args.json;
        let draw = |finished: bool| {
            let (sent, ok, errors) =
                (progress.sent.load(Relaxed), progress.ok.load(Relaxed), progress.errors.load(Relaxed));
            let elapsed = started.elapsed().as_secs_f64();
            let done = match (finished, duration, args.messages) {
                (true, _, _) => 1.0,
                (false, Some(d), _) => (elapsed / d.as_secs_f64()).min(1.0),
                (false, None, Some(m)) => (sent as f64 / m.max(1) as f64).min(1.0),
                _ => 0.0,
            };
            let filled = (done * 30.0) as usize;
            let bar = format!("[{}{}]", "#".repeat(filled), "-".repeat(30 - filled));
            let line = format!(
                "{bar} {:>3.0}%  {elapsed:>6.1}s  sent {sent}  ok {ok}  errors {errors}  {:.0} msgs/s",
                done * 100.0,
                ok as f64 / elapsed.max(0.001)
            );
            if tty {
                eprint!("\r{line}");
                let _ = std::io::stderr().flush();
            } else if !args.json {
                eprintln!("{line}");
            }
        };
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(if tty { 250 } else { 5000 }));
        tick.tick().await;
        // The run ends the wait, not the next tick: a 10-s run takes 10 s.
        let finished = loop {
            tokio::select! {
                finished = &mut run => break finished,
                _ = tick.tick() => draw(false),
            }
        };
        if tty {
            draw(true);
            eprintln!();
        }
        let report = finished??;
        if args.json {
            println!("{}", report.to_json());
        } else {
            println!("messages/s  {:.0}", report.throughput);
            println!("sent        {}  ok {}  errors {}", report.sent, report.ok, report.error_count());
            for (kind, count) in &report.errors {
                println!("  {kind}: {count}");
            }
            println!(
                "latency     p50 {:.2?}  p90 {:.2?}  p99 {:.2?}  max {:.2?}",
                report.p50, report.p90, report.p99, report.max
            );
        }
        Ok(())
    })
}

/// The key's first chatbot, or a new one (with a rule answering the load's message) when it
/// has none.
async fn load_chatbot(url: &str, key: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::new();
    let listed: serde_json::Value = client
        .get(format!("{url}/v1/chatbots"))
        .header("x-api-key", key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if let Some(id) = listed["items"].get(0).and_then(|b| b["id"].as_str()) {
        return Ok(id.to_string());
    }
    let created: serde_json::Value = client
        .post(format!("{url}/v1/chatbots"))
        .header("x-api-key", key)
        .json(&serde_json::json!({ "name": "load test" }))
        .send()
        .await?
        .error_for_status()
        .context("could not create a chatbot for the run (the key needs chatbot:config, or pass --chatbot)")?
        .json()
        .await?;
    let id = created["id"].as_str().context("the server answered a chatbot without an id")?.to_string();
    let rule = serde_json::json!({
        "name": "load", "keywords": [crate::load::MESSAGE_TEXT], "match_type": "exact", "response": "Hi! How can I help?"
    });
    client
        .post(format!("{url}/v1/chatbots/{id}/keywords"))
        .header("x-api-key", key)
        .json(&rule)
        .send()
        .await?
        .error_for_status()?;
    Ok(id)
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
