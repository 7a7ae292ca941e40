//! The HTTP load bench: starts baton in-process (durable: fsync on) and drives `handle` over
//! HTTP with many concurrent clients across 10,000 conversations, next to a bare actix-web
//! handler that parses the same JSON, measured in the same run with the same load. The ratio
//! of the two throughputs is the figure: what baton's routing, actors, rules and durable store
//! cost over parsing the request and answering.
//!
//! `cargo bench --bench load`; environment: `LOAD_SECS` (default 10, per target),
//! `LOAD_CONNECTIONS` (64), `LOAD_CONVERSATIONS` (10000), `LOAD_RATE` (open loop, msgs/s;
//! unset = closed loop), `LOAD_FSYNC=0` (measure without durability), `LOAD_CLEANING_MS`
//! (`storage.segment_cleaning_ms`; 0 = sled's segment cleaning off), `LOAD_CACHE_MIB`
//! (`storage.cache_capacity_bytes` in MiB), `LOAD_WORKERS` and `LOAD_ARBITERS` (baton's
//! threads; default its own), `LOAD_BARE_WORKERS` (the bare handler's; default actix's own, one
//! per core), `LOAD_BATCH=0` (baton's threads without `SCHED_BATCH`, `server.batch_scheduling`).
//! `cargo bench --bench load -- --test` runs a tiny version as a smoke test.
//! `benches/curves.sh` runs it across connections, conversations and open-loop rates.
//!
//! Prints a table, then the same figures as JSON on the last line of stdout.

#[path = "common/baton_server.rs"]
mod baton_server;
#[path = "common/env.rs"]
mod env;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context as _;
use baton::load::{self, LoadConfig, LoadReport, MESSAGE_TEXT};
use baton::Settings;
use baton_actors::store::Store;
use baton_server::BatonServer;
use serde::Deserialize;
use serde_json::{json, Value};

/// The answer of the keyword rule every load message triggers.
const RULE_REPLY: &str = "Hello from the load bench!";
/// Name of the client runtime's threads, so their CPU time can be told apart from the servers'.
const CLIENT_THREAD: &str = "load-client";
/// Linux reports CPU times in /proc in units of USER_HZ, which is 100 on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// What to run, from the environment (or tiny under `--test`).
#[derive(Debug, Clone)]
struct Options {
    secs: f64,
    connections: usize,
    conversations: usize,
    rate: Option<f64>,
    fsync: bool,
    /// baton's HTTP workers and arbiters (`LOAD_WORKERS`, `LOAD_ARBITERS`; default baton's own,
    /// half the cores each).
    server_workers: Option<usize>,
    arbiters: Option<usize>,
    /// The bare handler's HTTP workers (`LOAD_BARE_WORKERS`; default actix's, one per core).
    bare_workers: Option<usize>,
    /// `storage.segment_cleaning_ms` (`LOAD_CLEANING_MS`; default baton's, 0 = off).
    cleaning_ms: Option<u64>,
    /// sled's cache, MiB (`LOAD_CACHE_MIB`; default baton's).
    cache_mib: Option<u64>,
    /// `server.batch_scheduling` (`LOAD_BATCH=0` turns it off; default baton's).
    batch_scheduling: Option<bool>,
    /// `--test`: a smoke run of a fraction of a second.
    smoke: bool,
}

impl Options {
    fn from_env() -> anyhow::Result<Self> {
        let smoke = std::env::args().any(|a| a == "--test");
        use env::{number as parse, optional, var};
        let (secs, connections, conversations) = if smoke { (0.3, 4.0, 50.0) } else { (10.0, 64.0, 10_000.0) };
        Ok(Self {
            secs: parse("LOAD_SECS", secs)?,
            connections: parse("LOAD_CONNECTIONS", connections)? as usize,
            conversations: parse("LOAD_CONVERSATIONS", conversations)? as usize,
            rate: optional("LOAD_RATE")?,
            fsync: var("LOAD_FSYNC").is_none_or(|v| v.trim() != "0"),
            server_workers: optional("LOAD_WORKERS")?.map(|n| n as usize),
            arbiters: optional("LOAD_ARBITERS")?.map(|n| n as usize),
            bare_workers: optional("LOAD_BARE_WORKERS")?.map(|n| n as usize),
            cleaning_ms: optional("LOAD_CLEANING_MS")?.map(|n| n as u64),
            cache_mib: optional("LOAD_CACHE_MIB")?.map(|n| n as u64),
            batch_scheduling: var("LOAD_BATCH").map(|v| v.trim() != "0"),
            smoke,
        })
    }

    fn load(&self, url: String) -> LoadConfig {
        LoadConfig {
            url,
            conversations: self.conversations.max(1),
            connections: self.connections.max(1),
            duration: Some(Duration::from_secs_f64(self.secs.max(0.01))),
            messages: None,
            rate: self.rate,
            ..LoadConfig::default()
        }
    }
}

fn main() -> anyhow::Result<()> {
    let options = Options::from_env()?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let data_dir = tempfile::tempdir().context("temp dir")?;

    let mut settings = Settings::defaults();
    settings.server.addr = "127.0.0.1:0".parse()?;
    let threads_or_default = baton_actors::registry::threads_or_default;
    let (baton_workers, baton_arbiters) =
        (threads_or_default(options.server_workers.unwrap_or(0)), threads_or_default(options.arbiters.unwrap_or(0)));
    settings.server.workers = baton_workers;
    settings.actors.arbiters = baton_arbiters;
    settings.storage.data_dir = data_dir.path().to_path_buf();
    settings.storage.fsync = options.fsync;
    if let Some(ms) = options.cleaning_ms {
        settings.storage.segment_cleaning_ms = ms;
    }
    if let Some(mib) = options.cache_mib {
        settings.storage.cache_capacity_bytes = mib << 20;
    }
    if let Some(batch) = options.batch_scheduling {
        settings.server.batch_scheduling = batch;
    }
    // The logging `baton serve` installs, at its level: spans and events cost what they cost there.
    baton::telemetry::init(&settings.log.level);
    let baton = BatonServer::start(settings)?;
    let bare_workers = options.bare_workers.unwrap_or(workers);
    let bare = BareServer::start(bare_workers)?;

    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()?;
    let measured = client.block_on(measure(&options, &baton, &bare));
    bare.stop(&client);
    let commit = CommitFigures::of(&baton.store);
    baton.stop();
    let (baton_run, bare_run) = measured?;

    let threads = Threads { baton_workers, baton_arbiters, bare_workers };
    print_results(&options, &threads, &baton_run, &bare_run, &commit);
    Ok(())
}

/// One target's figures.
#[derive(Debug)]
struct Measured {
    report: LoadReport,
    usage: UsagePerMessage,
}

/// Sets baton up, warms both targets, then measures baton and the bare handler in turn.
async fn measure(options: &Options, baton: &BatonServer, bare: &BareServer) -> anyhow::Result<(Measured, Measured)> {
    let bot = create_answering_chatbot(&baton.address, &baton.admin_key).await?;
    let baton_load =
        LoadConfig { key: Some(baton.admin_key.clone()), chatbot: bot, ..options.load(baton.address.clone()) };
    let bare_load = LoadConfig { path: Some("/bare".into()), ..options.load(bare.address.clone()) };

    // Warm up: one message to every conversation (so the measured run is steady state, each
    // conversation existing with a live actor), and a moment of the bare handler.
    let warm_cap = Duration::from_secs(if options.smoke { 5 } else { 30 });
    let warm_baton = LoadConfig {
        duration: Some(warm_cap),
        messages: Some(options.conversations as u64),
        rate: None,
        ..baton_load.clone()
    };
    let warmed = load::run(&warm_baton).await?;
    eprintln!("warm-up baton: {warmed}");
    let warm_bare = LoadConfig { duration: Some(Duration::from_secs_f64(options.secs.min(1.0))), ..bare_load.clone() };
    let warmed = load::run(&warm_bare).await?;
    eprintln!("warm-up bare: {warmed}");

    let baton_run = measure_one(&baton_load).await?;
    eprintln!("baton: {}", baton_run.report);
    let bare_run = measure_one(&bare_load).await?;
    eprintln!("bare: {}", bare_run.report);
    Ok((baton_run, bare_run))
}

async fn measure_one(config: &LoadConfig) -> anyhow::Result<Measured> {
    let before = Usage::now();
    let report = load::run(config).await?;
    let usage = Usage::now().since(&before).per_message(report.ok);
    Ok(Measured { report, usage })
}

/// Creates a chatbot with a keyword rule answering [`MESSAGE_TEXT`], and checks it answers.
async fn create_answering_chatbot(address: &str, key: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::new();
    let post =
        |path: &str, body: Value| client.post(format!("{address}{path}")).header("X-API-Key", key).json(&body).send();
    let created: Value =
        post("/v1/chatbots", json!({ "name": "load bench" })).await?.error_for_status()?.json().await?;
    let bot = created["id"].as_str().context("chatbot without id")?.to_string();
    post(
        &format!("/v1/chatbots/{bot}/keywords"),
        json!({ "name": "greeting", "keywords": [MESSAGE_TEXT], "match_type": "exact", "response": RULE_REPLY }),
    )
    .await?
    .error_for_status()?;
    let probe =
        json!({ "channelId": "load", "providerId": "probe", "message": { "type": "text", "text": MESSAGE_TEXT } });
    let answer: Value =
        post(&format!("/v1/chatbots/{bot}/conversations/handle"), probe).await?.error_for_status()?.json().await?;
    anyhow::ensure!(answer["replies"][0]["text"] == RULE_REPLY, "the rule did not answer the probe: {answer}");
    Ok(bot)
}

/// The baseline: a bare actix-web server whose one route parses the same JSON as `handle`.
#[derive(Debug)]
struct BareServer {
    address: String,
    handle: actix_web::dev::ServerHandle,
    thread: JoinHandle<()>,
}

/// The `handle` request body, field for field (parsed, then dropped).
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BareRequest {
    #[serde(default)]
    chatbot_id: Option<String>,
    channel_id: String,
    #[serde(default)]
    channel_name: Option<String>,
    provider_id: String,
    #[serde(default, rename = "async")]
    asynchronous: bool,
    message: BareMessage,
    #[serde(default)]
    contact: Option<Value>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
struct BareMessage {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    button_id: Option<String>,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    from_me: bool,
}

async fn bare_handle(body: web::Json<BareRequest>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "provider_id": body.provider_id,
        "message_id": body.message.id,
        "replies": [{ "type": "text", "text": RULE_REPLY }],
        "duplicate": false,
    }))
}

impl BareServer {
    fn start(workers: usize) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = format!("http://{}", listener.local_addr()?);
        let (handle, thread) = baton_server::serve_on_own_thread("bare server", listener, move |listener| {
            Ok(HttpServer::new(|| App::new().route("/bare", web::post().to(bare_handle)))
                .workers(workers)
                .disable_signals()
                .listen(listener)?
                .run())
        })?;
        Ok(Self { address, handle, thread })
    }

    /// Stops the server gracefully (on `runtime`, any tokio runtime) and waits for its thread.
    fn stop(self, runtime: &tokio::runtime::Runtime) {
        runtime.block_on(self.handle.stop(true));
        let _ = self.thread.join();
    }
}

/// CPU seconds used by the whole process and by its live threads grouped by name, and bytes
/// the process had written to storage.
#[derive(Debug, Clone, Default)]
struct Usage {
    process: f64,
    /// Thread name with trailing digits dropped (`actix-rt|system:0|arbiter:3` → one group) → seconds.
    threads: BTreeMap<String, f64>,
    /// `write_bytes` of `/proc/self/io`: what reached the block layer (fsync'd or written back).
    disk_bytes: u64,
}

impl Usage {
    /// Reads `/proc` (zeros where it cannot be read).
    fn now() -> Self {
        let seconds = |ticks: u64| ticks as f64 / TICKS_PER_SECOND;
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
        let disk_bytes = io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok());
        let mut usage = Self {
            process: cpu_ticks(&stat).map_or(0.0, |(_, t)| seconds(t)),
            threads: BTreeMap::new(),
            disk_bytes: disk_bytes.unwrap_or(0),
        };
        for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
            if let Some((name, ticks)) = cpu_ticks(&stat) {
                let group = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ' || c == ':' || c == '-');
                *usage.threads.entry(group.to_string()).or_default() += seconds(ticks);
            }
        }
        usage
    }

    fn since(&self, before: &Usage) -> Usage {
        let threads = self
            .threads
            .iter()
            .map(|(name, secs)| (name.clone(), secs - before.threads.get(name).copied().unwrap_or(0.0)))
            .filter(|(_, secs)| *secs > 0.0)
            .collect();
        Usage { process: self.process - before.process, threads, disk_bytes: self.disk_bytes - before.disk_bytes }
    }

    fn per_message(&self, messages: u64) -> UsagePerMessage {
        let per = |secs: f64| if messages == 0 { 0.0 } else { secs * 1e6 / messages as f64 };
        let client: f64 = self.threads.iter().filter(|(name, _)| name.starts_with(CLIENT_THREAD)).map(|(_, s)| s).sum();
        UsagePerMessage {
            all_us: per(self.process),
            server_us: per(self.process - client),
            by_thread_us: self.threads.iter().map(|(name, secs)| (name.clone(), per(*secs))).collect(),
            disk_bytes: if messages == 0 { 0.0 } else { self.disk_bytes as f64 / messages as f64 },
        }
    }
}

/// The thread's name and its utime + stime in ticks, from a `/proc/…/stat` line.
fn cpu_ticks(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = &stat[open + 1..close];
    // After the name: state, ppid, … utime is field 14 and stime 15 of the whole line.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// Per successful message: CPU microseconds of the whole process, without the client threads
/// and by thread group; bytes written to storage.
#[derive(Debug, Clone)]
struct UsagePerMessage {
    all_us: f64,
    server_us: f64,
    by_thread_us: BTreeMap<String, f64>,
    /// Bytes written to storage per message.
    disk_bytes: f64,
}

/// How the group committer batched during the whole run (warm-up included).
#[derive(Debug)]
struct CommitFigures {
    rounds: u64,
    tickets: u64,
    mean_flush_ms: f64,
}

impl CommitFigures {
    fn of(store: &Store) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = store.commit_stats();
        let rounds = stats.rounds.load(Relaxed);
        let micros = stats.micros.load(Relaxed);
        Self {
            rounds,
            tickets: stats.tickets.load(Relaxed),
            mean_flush_ms: if rounds == 0 { 0.0 } else { micros as f64 / rounds as f64 / 1e3 },
        }
    }
}

/// The servers' thread counts, as run.
struct Threads {
    baton_workers: usize,
    baton_arbiters: usize,
    bare_workers: usize,
}

fn print_results(options: &Options, threads: &Threads, baton: &Measured, bare: &Measured, commit: &CommitFigures) {
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    let ratio = if bare.report.throughput > 0.0 { baton.report.throughput / bare.report.throughput } else { 0.0 };
    let mode = match options.rate {
        Some(rate) => format!("open loop at {rate} msgs/s"),
        None => "closed loop".into(),
    };
    println!();
    println!(
        "HTTP load: {} connections, {} conversations, {:.1} s per target, {mode}, fsync {}; baton {} HTTP workers \
         and {} arbiters, the bare handler {} HTTP workers",
        options.connections,
        options.conversations,
        options.secs,
        if options.fsync { "on" } else { "off" },
        threads.baton_workers,
        threads.baton_arbiters,
        threads.bare_workers,
    );
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10} {:>7} {:>11} {:>18} {:>12}",
        "target", "msgs/s", "p50", "p90", "p99", "errors", "CPU µs/msg", "server CPU µs/msg", "disk B/msg"
    );
    for (name, m) in [("baton", baton), ("bare", bare)] {
        println!(
            "{:<8} {:>10.0} {:>10} {:>10} {:>10} {:>7} {:>11.1} {:>18.1} {:>12.0}",
            name,
            m.report.throughput,
            ms(m.report.p50),
            ms(m.report.p90),
            ms(m.report.p99),
            m.report.error_count(),
            m.usage.all_us,
            m.usage.server_us,
            m.usage.disk_bytes,
        );
    }
    println!(
        "ratio baton/bare throughput: {ratio:.3} (bare handles {:.1}x as many messages/s)",
        if ratio > 0.0 { 1.0 / ratio } else { 0.0 }
    );
    for (name, m) in [("baton", baton), ("bare", bare)] {
        if !m.report.errors.is_empty() {
            println!("{name} errors: {:?}", m.report.errors);
        }
    }
    if options.fsync {
        println!(
            "group commit (whole run): {} flush rounds for {} writes, {:.1} writes per round, {:.2} ms per flush+fsync",
            commit.rounds,
            commit.tickets,
            if commit.rounds == 0 { 0.0 } else { commit.tickets as f64 / commit.rounds as f64 },
            commit.mean_flush_ms,
        );
    }
    for (name, m) in [("baton", baton), ("bare", bare)] {
        let mut threads: Vec<_> = m.usage.by_thread_us.iter().filter(|(_, us)| **us >= 0.5).collect();
        threads.sort_by(|a, b| b.1.total_cmp(a.1));
        let threads: Vec<String> = threads.iter().map(|(name, us)| format!("{name} {us:.0}")).collect();
        println!("{name} CPU µs/msg by thread: {}", threads.join(", "));
    }
    println!(
        "CPU µs/msg is the whole process: client and servers share it. Server CPU leaves out the client's threads;"
    );
    println!(
        "by thread: names as the kernel keeps them (15 chars, so `actix-rt|system` is HTTP workers and arbiters)."
    );
    let summary = json!({
        "bench": "load",
        "connections": options.connections,
        "conversations": options.conversations,
        "secs": options.secs,
        "rate": options.rate,
        "fsync": options.fsync,
        "threads": {
            "baton_workers": threads.baton_workers,
            "baton_arbiters": threads.baton_arbiters,
            "bare_workers": threads.bare_workers,
        },
        "baton": with_usage(&baton.report, &baton.usage),
        "bare": with_usage(&bare.report, &bare.usage),
        "ratio": (ratio * 1e4).round() / 1e4,
        "commit": { "rounds": commit.rounds, "writes": commit.tickets, "mean_flush_ms": (commit.mean_flush_ms * 1e3).round() / 1e3 },
    });
    println!("{summary}");
}

fn with_usage(report: &LoadReport, usage: &UsagePerMessage) -> Value {
    let mut value = report.to_json();
    value["cpu_us_per_msg"] = json!((usage.all_us * 10.0).round() / 10.0);
    value["server_cpu_us_per_msg"] = json!((usage.server_us * 10.0).round() / 10.0);
    value["disk_bytes_per_msg"] = json!(usage.disk_bytes.round());
    let by_thread: BTreeMap<&str, f64> =
        usage.by_thread_us.iter().map(|(name, us)| (name.as_str(), (us * 10.0).round() / 10.0)).collect();
    value["cpu_us_per_msg_by_thread"] = json!(by_thread);
    value
}
