//! The soak run of issue 8: ten minutes of mixed load against baton in-process (durable:
//! fsync on), with a webhook receiver that answers 500 to every third call. It checks that
//! memory stays flat and that nothing acknowledged is lost.
//!
//! The conversations first get a history (`SOAK_HISTORY` sync messages each, closed loop), so
//! the ten minutes run on a store that is already bigger than sled's cache, as on a server that
//! has been up a while: a cache that is still filling is growth by design, not a leak.
//! `SOAK_HISTORY=1` starts from an almost empty store instead.
//!
//! Load is open loop at a fixed rate, spread over thousands of conversations. Each
//! conversation goes through a fixed cycle of operations (see [`CYCLE`]): sync `handle`s
//! answered by a keyword rule, async `handle`s whose replies go out through the webhook
//! outbox, reads of its messages, an agent message (which pauses the bot), pauses and resumes.
//! The receiver runs in the same process on loopback and counts calls by `webhook-id`.
//!
//! Every 10 s a line shows throughput, errors by status, latency, the process's resident
//! memory and the outbox's pending count. baton, the load client and the receiver share one
//! process, so RSS covers all three; the harness's own bookkeeping (a bit per operation and a
//! map entry per webhook call) is allocated before the run and is a few MB at most.
//!
//! At the end the load stops, the outbox drains (bounded wait), and every acknowledged
//! message is looked up in the store: present exactly once, seqs contiguous, every async reply
//! and agent message delivered (or in a terminal state, reported). baton is then stopped, the
//! data directory reopened and the same check repeated. The exit status is non-zero when
//! anything acknowledged is missing or duplicated, a conversation's seqs have gaps, a reply
//! was neither delivered nor settled, or memory was not flat (RSS grew by more than
//! [`FLAT_SHARE`] of its mid-run value over the second half of a run of 2 minutes or more).
//!
//! `cargo bench --bench soak`; environment: `SOAK_SECS` (default 600), `SOAK_RATE` (operations
//! per second, default 1000), `SOAK_CONVERSATIONS` (5000), `SOAK_HISTORY` (300). Variants
//! for memory studies: `SOAK_CACHE_MIB` (sled's cache; default baton's), `SOAK_CLEANING_MS`
//! (`storage.segment_cleaning_ms`; default baton's, 0 = off), `SOAK_PASSIVATE_SECS`
//! (`actors.idle_passivate_secs`), `SOAK_FAIL_EVERY` (the receiver's failing call, 3; 0 = none),
//! `SOAK_IDLE_SECS` (RSS sampled this long with no load after draining), `SOAK_KEEP_DIR=path`
//! (the data directory is there and kept). `SOAK_OPEN_DIR=path` runs no load: it opens a kept
//! data directory in this fresh process and prints RSS before, once open and after reading
//! everything back (sled alone, no baton). `cargo bench --bench soak -- --test`
//! runs a smoke version of a few seconds, as does running it without `--bench` (which
//! `cargo bench` passes; `cargo test --benches` does not). Prints a summary, then a JSON line
//! last on stdout.

#[path = "common/baton_server.rs"]
mod baton_server;
#[path = "common/env.rs"]
mod env;

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context as _;
use baton::load::{self, Histogram, LoadConfig, MESSAGE_TEXT, REQUEST_TIMEOUT};
use baton::Settings;
use baton_actors::model::{ChatbotId, ConversationId, DeliveryKind, DeliveryStatus, Message, Role};
use baton_actors::store::{dir_bytes, Store, StoreConfig};
use baton_server::BatonServer;
use serde_json::{json, Value};
use uuid::Uuid;

/// The channel every message arrives on: the one `baton::load` (the warm-up) sends on.
const CHANNEL: &str = "load";
/// The answer of the keyword rule every message triggers.
const RULE_REPLY: &str = "Hello from the soak run!";
/// Waits before each webhook retry, seconds. Nine attempts in all: with a third of the calls
/// failing, a delivery fails every one of them about once in 20,000.
const RETRY_SCHEDULE_SECS: [u64; 8] = [1, 1, 2, 2, 4, 4, 8, 8];
/// Concurrent requests at most (the open loop's connection pool).
const CONNECTIONS: usize = 64;
/// The receiver answers 500 to every this-many-th call (`SOAK_FAIL_EVERY`; 0: never).
const FAIL_EVERY: u64 = 3;
/// The memory baseline is taken this long into the run, once caches and pools have grown.
const WARM_UP: Duration = Duration::from_secs(60);
/// The wait after stopping baton before RSS is read again (not counted in the restart time).
const STOP_SETTLE: Duration = Duration::from_secs(3);
/// Memory counts as flat when RSS grew by at most this share of its mid-run value over the
/// second half of the load: room for the allocator's and sled's ups and downs, not for a leak.
const FLAT_SHARE: f64 = 0.05;
/// Runs shorter than this (smoke runs) are too short to judge memory by.
const FLAT_MIN_SECS: f64 = 120.0;
/// How often a progress line is printed.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// Most problems listed by name in the summary (all are counted).
const MAX_EXAMPLES: usize = 10;
/// Sync messages each conversation gets before the mixed load (`SOAK_HISTORY`): 1,500,000 in
/// all with 5,000 conversations (about 470 MiB of data directory), so that the soak starts where
/// a server that has been serving a while is, its store holding history and sled's 128-MiB
/// cache full, rather than on an empty store whose cache fills during the run.
const HISTORY: u64 = 300;
/// The agent named on agent messages and pauses.
const AGENT: &str = "soak-agent";

/// What one operation does to its conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    /// `handle`, answered in the response by the keyword rule (none while the bot is paused).
    Handle,
    /// `handle` with `async: true`: 202, the reply goes to the reply webhook.
    AsyncHandle,
    /// `GET /v1/conversations/{id}/messages`.
    ReadMessages,
    /// `POST /v1/conversations/{id}/messages`: delivered to the reply webhook; pauses the bot.
    AgentMessage,
    /// `bot-control` pause (a human takes over; the takeover webhook is called).
    Pause,
    /// `bot-control` resume.
    Resume,
}

impl Op {
    const ALL: [Op; 6] = [Op::Handle, Op::AsyncHandle, Op::ReadMessages, Op::AgentMessage, Op::Pause, Op::Resume];

    fn name(self) -> &'static str {
        match self {
            Op::Handle => "handle",
            Op::AsyncHandle => "async_handle",
            Op::ReadMessages => "read_messages",
            Op::AgentMessage => "agent_message",
            Op::Pause => "pause",
            Op::Resume => "resume",
        }
    }
}

/// The operations each conversation goes through, in order, one every
/// `conversations / rate` seconds: 50% sync handles, 20% async, 10% reads, 5% agent
/// messages, 5% pauses, 10% resumes. Conversations start at different points of the cycle,
/// so the mix is the same at every moment.
const CYCLE: [Op; 20] = {
    use Op::*;
    [
        Handle,
        Handle,
        AsyncHandle,
        Handle,
        ReadMessages,
        Handle,
        AgentMessage,
        Handle,
        Resume,
        Handle,
        Handle,
        AsyncHandle,
        Handle,
        Pause,
        AsyncHandle,
        Resume,
        Handle,
        ReadMessages,
        Handle,
        AsyncHandle,
    ]
};

/// What to run, from the environment (or tiny under `--test`).
#[derive(Debug, Clone)]
struct Options {
    secs: f64,
    rate: f64,
    conversations: usize,
    /// `--test`, or not run by `cargo bench`: a smoke run of a few seconds.
    smoke: bool,
    /// sled's cache, MiB (`SOAK_CACHE_MIB`; default: baton's default).
    cache_mib: Option<u64>,
    /// `storage.segment_cleaning_ms` (`SOAK_CLEANING_MS`; default: baton's default).
    cleaning_ms: Option<u64>,
    /// `actors.idle_passivate_secs` (`SOAK_PASSIVATE_SECS`; default: baton's default).
    passivate_secs: Option<u64>,
    /// The receiver answers 500 to every this-many-th call (`SOAK_FAIL_EVERY`; 0: never).
    fail_every: u64,
    /// Seconds RSS is still sampled once the outbox drained, with no load (`SOAK_IDLE_SECS`).
    idle_secs: u64,
    /// Sync messages each conversation gets before the mixed load (`SOAK_HISTORY`, at least 1):
    /// its history. 1 is a bare warm-up, the soak then starting on an almost empty store.
    history: u64,
}

impl Options {
    fn from_env() -> anyhow::Result<Self> {
        // `cargo bench` passes `--bench`; without it (`cargo test --benches`) this is a smoke
        // run, as criterion does, so a test run never starts a 10-minute soak.
        let smoke = std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
        use env::{number as parse, optional};
        let (secs, rate, conversations) = if smoke { (4.0, 100.0, 50.0) } else { (600.0, 1000.0, 5000.0) };
        let options = Self {
            secs: parse("SOAK_SECS", secs)?,
            rate: parse("SOAK_RATE", rate)?,
            conversations: parse("SOAK_CONVERSATIONS", conversations)? as usize,
            smoke,
            cache_mib: optional("SOAK_CACHE_MIB")?.map(|v| v as u64),
            cleaning_ms: optional("SOAK_CLEANING_MS")?.map(|v| v as u64),
            passivate_secs: optional("SOAK_PASSIVATE_SECS")?.map(|v| v as u64),
            fail_every: parse("SOAK_FAIL_EVERY", FAIL_EVERY as f64)? as u64,
            idle_secs: parse("SOAK_IDLE_SECS", 0.0)? as u64,
            history: parse("SOAK_HISTORY", if smoke { 3.0 } else { HISTORY as f64 })? as u64,
        };
        anyhow::ensure!(options.secs > 0.0 && options.rate > 0.0, "SOAK_SECS and SOAK_RATE must be positive");
        anyhow::ensure!(options.conversations > 0, "SOAK_CONVERSATIONS must be at least 1");
        anyhow::ensure!(options.history > 0, "SOAK_HISTORY must be at least 1");
        Ok(options)
    }

    /// How many operations the run sends.
    fn operations(&self) -> u64 {
        (self.secs * self.rate).ceil() as u64
    }

    fn warm_up(&self) -> Duration {
        if self.smoke {
            Duration::from_secs(1)
        } else {
            WARM_UP.min(Duration::from_secs_f64(self.secs / 2.0))
        }
    }

    fn report_every(&self) -> Duration {
        if self.smoke {
            Duration::from_secs(1)
        } else {
            REPORT_EVERY
        }
    }

    /// The longest wait for the outbox to drain once the load stopped: every retry at its
    /// longest jitter, plus a margin for deliveries held behind their conversation's head.
    fn drain_limit(&self) -> Duration {
        let retries: u64 = RETRY_SCHEDULE_SECS.iter().sum();
        Duration::from_secs(retries * 6 / 5 + if self.smoke { 30 } else { 90 })
    }
}

fn main() -> anyhow::Result<()> {
    let options = Options::from_env()?;
    if let Some(dir) = std::env::var_os("SOAK_OPEN_DIR") {
        return measure_open(
            Path::new(&dir),
            options.cache_mib.unwrap_or(Settings::defaults().storage.cache_capacity_bytes >> 20),
        );
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    // `SOAK_KEEP_DIR=path`: the data directory is there and kept, for `SOAK_OPEN_DIR`.
    let (_temp_dir, data_dir) = match std::env::var_os("SOAK_KEEP_DIR") {
        Some(dir) => {
            std::fs::create_dir_all(&dir).context("SOAK_KEEP_DIR")?;
            (None, std::path::PathBuf::from(dir))
        }
        None => {
            let temp = tempfile::tempdir().context("temp dir")?;
            let path = temp.path().to_path_buf();
            (Some(temp), path)
        }
    };
    let data_dir = DataDir(data_dir);

    let mut settings = Settings::defaults();
    settings.server.addr = "127.0.0.1:0".parse()?;
    settings.storage.data_dir = data_dir.path().to_path_buf();
    settings.storage.fsync = true;
    settings.webhooks.allow_private_networks = true;
    settings.webhooks.retry_schedule_secs = RETRY_SCHEDULE_SECS.to_vec();
    if let Some(mib) = options.cache_mib {
        settings.storage.cache_capacity_bytes = mib << 20;
    }
    if let Some(ms) = options.cleaning_ms {
        settings.storage.segment_cleaning_ms = ms;
    }
    if let Some(secs) = options.passivate_secs {
        settings.actors.idle_passivate_secs = secs;
    }
    let store_config = StoreConfig { fsync: false, ..settings.storage.store_config() };
    let cache_mib = settings.storage.cache_capacity_bytes >> 20;

    let expected_calls = (options.operations() as f64 * 0.6) as usize;
    let receiver = Receiver::start(expected_calls, options.fail_every)?;
    let baton = BatonServer::start(settings)?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("soak-client")
        .enable_all()
        .build()?;

    let outcome = client.block_on(soak(&options, &baton, &receiver, data_dir.path()));
    let Outcome { run, verified_live } = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            baton.stop();
            drop(receiver.stop(&client));
            return Err(error);
        }
    };

    // Stop baton, reopen its data directory and check again: what was acknowledged is on disk.
    let stopped = Instant::now();
    let rss_running = rss_kib();
    baton.stop();
    // A moment for the allocator to hand baton's freed memory back (mimalloc purges after 1 s).
    std::thread::sleep(STOP_SETTLE);
    let rss_stopped = rss_kib();
    let reopened = reopen(&store_config)?;
    let rss_reopened = rss_kib();
    let verified_after_restart = verify(&reopened, &run, &receiver.state, options.history);
    let rss_verified = rss_kib();
    eprintln!(
        "RSS: {:.1} MiB with baton running, {:.1} MiB 3 s after it stopped, {:.1} MiB after reopening the data \
         directory, {:.1} MiB after reading it all back",
        rss_running as f64 / 1024.0,
        rss_stopped as f64 / 1024.0,
        rss_reopened as f64 / 1024.0,
        rss_verified as f64 / 1024.0,
    );
    reopened.close().context("closing the reopened store")?;
    drop(reopened);
    let restart_secs = (stopped.elapsed() - STOP_SETTLE).as_secs_f64();
    let received = receiver.stop(&client);
    let disk_mib = dir_bytes(data_dir.path()) as f64 / (1 << 20) as f64;

    let passed = verified_live.passed() && verified_after_restart.passed() && run.memory_flat() != Some(false);
    print_results(
        &options,
        baton_actors::registry::threads_per_role(),
        cache_mib,
        disk_mib,
        restart_secs,
        &run,
        &received,
        &verified_live,
        &verified_after_restart,
        passed,
    );
    if !passed {
        eprintln!("soak FAILED: see the verification and memory lines above");
        std::process::exit(1);
    }
    Ok(())
}

/// What the run measured, and the live store's verification.
#[derive(Debug)]
struct Outcome {
    run: Run,
    verified_live: Verification,
}

/// What is known once the load stopped and the outbox drained.
#[derive(Debug)]
struct Run {
    chatbot: ChatbotId,
    tenant: baton_actors::model::TenantId,
    conversations: Vec<ConversationId>,
    operations: u64,
    /// One bit per operation: answered 2xx.
    acknowledged: Vec<u64>,
    warm_up_ok: u64,
    stats: Stats,
    samples: Vec<Sample>,
    load_secs: f64,
    latency: Histogram,
    drain_secs: f64,
    pending_after_drain: usize,
    rss_after_drain_kib: u64,
}

impl Run {
    fn op(&self, n: u64) -> Op {
        op_of(n, self.conversations.len())
    }

    fn acknowledged(&self, n: u64) -> bool {
        self.acknowledged[(n / 64) as usize] & (1 << (n % 64)) != 0
    }

    /// Whether memory stayed flat: RSS grew by at most [`FLAT_SHARE`] of its mid-run value over
    /// the second half of the load. `None` for runs shorter than [`FLAT_MIN_SECS`].
    fn memory_flat(&self) -> Option<bool> {
        let mid = self.mid_sample()?;
        let (growth, _) = self.second_half_growth();
        (self.load_secs >= FLAT_MIN_SECS).then(|| growth <= mid.rss_kib as f64 / 1024.0 * FLAT_SHARE)
    }

    /// The first sample from the middle of the load on.
    fn mid_sample(&self) -> Option<&Sample> {
        self.samples.iter().find(|s| s.secs >= self.load_secs / 2.0 - 0.5)
    }

    /// RSS and data-directory growth (MiB) from the middle of the load to its end.
    fn second_half_growth(&self) -> (f64, f64) {
        match (self.mid_sample(), self.samples.last()) {
            (Some(mid), Some(end)) => (
                (end.rss_kib as f64 - mid.rss_kib as f64) / 1024.0,
                (end.disk as f64 - mid.disk as f64) / (1 << 20) as f64,
            ),
            _ => (0.0, 0.0),
        }
    }

    /// Resident memory at the end of the warm-up and at the end of the load.
    fn rss_baseline_and_end(&self, warm_up: Duration) -> (u64, u64) {
        let baseline = self.samples.iter().find(|s| s.secs >= warm_up.as_secs_f64() - 0.5).or(self.samples.first());
        (baseline.map_or(0, |s| s.rss_kib), self.samples.last().map_or(0, |s| s.rss_kib))
    }
}

/// Conversation of operation `n`, and which of its cycle's operations it is.
fn op_of(n: u64, conversations: usize) -> Op {
    let conversations = conversations as u64;
    let (conversation, round) = (n % conversations, n / conversations);
    CYCLE[((round + conversation) % CYCLE.len() as u64) as usize]
}

/// Sets up the chatbot and channel, warms up, runs the load, drains the outbox and verifies.
async fn soak(options: &Options, baton: &BatonServer, receiver: &Receiver, data_dir: &Path) -> anyhow::Result<Outcome> {
    let api = Api::new(&baton.address, &baton.admin_key)?;
    let chatbot = api.create_answering_chatbot().await?;
    api.configure_channel(&chatbot, &receiver.address).await?;
    let tenant = baton.store.chatbot(chatbot)?.context("the chatbot just created is not in the store")?.tenant_id;
    let conversations: Vec<ConversationId> =
        (0..options.conversations).map(|c| ConversationId::derive(chatbot, CHANNEL, &format!("p{c}"))).collect();

    // Warm-up and history: `history` sync messages to each conversation (the provider ids
    // `baton::load` uses, in turn), closed loop. Every conversation then exists with a live actor
    // before the mixed load addresses it by id, and the store holds their history.
    let history = options.conversations as u64 * options.history;
    let warm_up = LoadConfig {
        url: baton.address.clone(),
        key: Some(baton.admin_key.clone()),
        chatbot: chatbot.to_string(),
        conversations: options.conversations,
        connections: CONNECTIONS,
        duration: Some(Duration::from_secs(120).max(Duration::from_millis(history / 2))),
        messages: Some(history),
        ..LoadConfig::default()
    };
    let warmed = load::run(&warm_up).await?;
    eprintln!(
        "warm-up and history ({} sync messages per conversation): {warmed}; RSS {:.1} MiB, data dir {:.0} MiB",
        options.history,
        rss_kib() as f64 / 1024.0,
        dir_bytes(data_dir) as f64 / (1 << 20) as f64
    );

    let plan = Arc::new(Plan::new(options, api, chatbot, &conversations));
    eprintln!(
        "soak: {} operations at {} ops/s over {} conversations ({:.0} s), {CONNECTIONS} connections",
        plan.operations, options.rate, options.conversations, options.secs
    );
    let drivers: Vec<_> = (0..CONNECTIONS).map(|_| tokio::spawn(drive(Arc::clone(&plan)))).collect();
    let done = Arc::new(tokio::sync::Notify::new());
    let reporter = tokio::spawn(report_progress(
        Arc::clone(&plan),
        baton.store.clone(),
        Arc::clone(&receiver.state),
        Arc::clone(&done),
        options.report_every(),
        data_dir.to_path_buf(),
    ));
    for driver in drivers {
        driver.await.context("a load task panicked")?;
    }
    let load_secs = plan.start.elapsed().as_secs_f64();
    done.notify_one();
    let samples = reporter.await.context("the progress task panicked")?;

    // Drain: no more load; wait until every delivery has settled (bounded).
    let drain_start = Instant::now();
    let limit = options.drain_limit();
    let mut pending = baton.store.pending_deliveries();
    while pending > 0 && drain_start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(250)).await;
        pending = baton.store.pending_deliveries();
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();
    eprintln!("outbox: {pending} pending after {drain_secs:.1} s of draining (limit {:.0} s)", limit.as_secs_f64());
    // Optionally stay idle a while: RSS without load shows what the allocator gives back.
    for tick in 1..=options.idle_secs / 10 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        eprintln!("[idle {:>4} s] RSS {:.1} MiB", tick * 10, rss_kib() as f64 / 1024.0);
    }

    let plan = Arc::into_inner(plan).context("a load task still holds the plan")?;
    let latency = plan.stats.latency.lock().expect("latency lock").clone();
    let run = Run {
        chatbot,
        tenant,
        conversations,
        operations: plan.operations,
        acknowledged: plan.acknowledged.iter().map(|word| word.load(Relaxed)).collect(),
        warm_up_ok: warmed.ok,
        stats: plan.stats,
        samples,
        load_secs,
        latency,
        drain_secs,
        pending_after_drain: pending,
        rss_after_drain_kib: rss_kib(),
    };
    let verified_live = verify(&baton.store, &run, &receiver.state, options.history);
    Ok(Outcome { run, verified_live })
}

/// The HTTP client with the admin key, and the few setup calls.
#[derive(Debug, Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-api-key", reqwest::header::HeaderValue::from_str(key).context("API key header")?);
        let client = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(CONNECTIONS)
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .default_headers(headers)
            .build()
            .context("could not build the HTTP client")?;
        Ok(Self { client, base: base.trim_end_matches('/').to_string() })
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self.client.request(method.clone(), format!("{}{path}", self.base)).json(&body).send().await?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{method} {path} answered {status}: {value}");
        Ok(value)
    }

    /// A chatbot with a keyword rule answering [`MESSAGE_TEXT`], checked with one message.
    async fn create_answering_chatbot(&self) -> anyhow::Result<ChatbotId> {
        let created = self.send(reqwest::Method::POST, "/v1/chatbots", json!({ "name": "soak" })).await?;
        let bot = created["id"].as_str().context("chatbot without id")?.to_string();
        let rule =
            json!({ "name": "greeting", "keywords": [MESSAGE_TEXT], "match_type": "exact", "response": RULE_REPLY });
        self.send(reqwest::Method::POST, &format!("/v1/chatbots/{bot}/keywords"), rule).await?;
        let probe =
            json!({ "channelId": CHANNEL, "providerId": "probe", "message": { "type": "text", "text": MESSAGE_TEXT } });
        let answer =
            self.send(reqwest::Method::POST, &format!("/v1/chatbots/{bot}/conversations/handle"), probe).await?;
        anyhow::ensure!(answer["replies"][0]["text"] == RULE_REPLY, "the rule did not answer the probe: {answer}");
        bot.parse().context("chatbot id is not a UUID")
    }

    /// Sends the channel's replies (signed) and takeover calls to the receiver.
    async fn configure_channel(&self, bot: &ChatbotId, receiver: &str) -> anyhow::Result<()> {
        let config = json!({
            "name": "Soak",
            "reply_webhook": { "url": format!("{receiver}/reply"), "secret": "soak-signing-secret" },
            "human_takeover_webhook": { "url": format!("{receiver}/takeover") },
        });
        self.send(reqwest::Method::PUT, &format!("/v1/chatbots/{bot}/channels/{CHANNEL}"), config).await?;
        Ok(())
    }
}

/// What the load tasks share: the client, the schedule, the next operation's number, and
/// what came back.
#[derive(Debug)]
struct Plan {
    api: Api,
    chatbot: String,
    /// Conversation ids as served, by conversation number.
    conversation_ids: Vec<String>,
    operations: u64,
    rate: f64,
    start: Instant,
    /// The number of the next operation; each is taken once.
    next: AtomicU64,
    /// One bit per operation: answered 2xx.
    acknowledged: Vec<AtomicU64>,
    stats: Stats,
}

impl Plan {
    fn new(options: &Options, api: Api, chatbot: ChatbotId, conversations: &[ConversationId]) -> Self {
        let operations = options.operations();
        Self {
            api,
            chatbot: chatbot.to_string(),
            conversation_ids: conversations.iter().map(ToString::to_string).collect(),
            operations,
            rate: options.rate,
            start: Instant::now(),
            next: AtomicU64::new(0),
            acknowledged: (0..operations.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            stats: Stats::default(),
        }
    }

    /// Sends operation `n`; its status, or the kind of failure.
    async fn send(&self, n: u64, op: Op) -> Result<reqwest::StatusCode, String> {
        let conversation = (n % self.conversation_ids.len() as u64) as usize;
        let id = &self.conversation_ids[conversation];
        let base = &self.api.base;
        let client = &self.api.client;
        let request = match op {
            Op::Handle | Op::AsyncHandle => client
                .post(format!("{base}/v1/chatbots/{}/conversations/handle", self.chatbot))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(handle_body(n, conversation, op == Op::AsyncHandle)),
            Op::ReadMessages => client.get(format!("{base}/v1/conversations/{id}/messages?limit=20")),
            Op::AgentMessage => client
                .post(format!("{base}/v1/conversations/{id}/messages"))
                .json(&json!({ "content": agent_text(n), "agent_id": AGENT })),
            Op::Pause | Op::Resume => client
                .post(format!("{base}/v1/conversations/{id}/bot-control"))
                .json(&json!({ "action": if op == Op::Pause { "pause" } else { "resume" }, "agent_id": AGENT })),
        };
        let response = request.send().await.map_err(|e| error_kind(&e, "request"))?;
        let status = response.status();
        response.bytes().await.map_err(|e| error_kind(&e, "body"))?;
        Ok(status)
    }
}

/// The provider message id of operation `n`.
fn message_id(n: u64) -> String {
    format!("s{n}")
}

/// The content of agent message `n`.
fn agent_text(n: u64) -> String {
    format!("agent message s{n}")
}

/// The body of handle operation `n` on conversation `conversation` (provider id `p…`, as
/// `baton::load` names them).
fn handle_body(n: u64, conversation: usize, asynchronous: bool) -> String {
    json!({
        "channelId": CHANNEL,
        "channelName": "Soak",
        "providerId": format!("p{conversation}"),
        "async": asynchronous,
        "message": { "id": message_id(n), "type": "text", "text": MESSAGE_TEXT },
    })
    .to_string()
}

/// A failed request's kind: `timeout`, `connect`, or `otherwise` with the innermost cause
/// (e.g. `request: connection closed before message completed`).
fn error_kind(error: &reqwest::Error, otherwise: &str) -> String {
    if error.is_timeout() {
        return "timeout".into();
    }
    if error.is_connect() {
        return "connect".into();
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    format!("{otherwise}: {cause}")
}

/// Counts of the run so far.
#[derive(Debug, Default)]
struct Stats {
    sent: [AtomicU64; 6],
    ok: [AtomicU64; 6],
    /// Failed operations by kind (`http 503`, `timeout`, …).
    errors: Mutex<BTreeMap<String, u64>>,
    /// Latency from the scheduled send time, since the last progress line.
    interval: Mutex<Histogram>,
    /// Latency of every successful operation.
    latency: Mutex<Histogram>,
}

impl Stats {
    fn total(counts: &[AtomicU64; 6]) -> u64 {
        counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().expect("errors lock").clone()
    }
}

/// One load task: take the next operation, wait for its time, send it, record the outcome.
async fn drive(plan: Arc<Plan>) {
    loop {
        let n = plan.next.fetch_add(1, Relaxed);
        if n >= plan.operations {
            break;
        }
        let due = plan.start + Duration::from_secs_f64(n as f64 / plan.rate);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        let op = op_of(n, plan.conversation_ids.len());
        let kind = op as usize;
        plan.stats.sent[kind].fetch_add(1, Relaxed);
        match plan.send(n, op).await {
            Ok(status) if status.is_success() => {
                let latency = due.elapsed();
                plan.stats.interval.lock().expect("latency lock").record(latency);
                plan.stats.latency.lock().expect("latency lock").record(latency);
                plan.acknowledged[(n / 64) as usize].fetch_or(1 << (n % 64), Relaxed);
                plan.stats.ok[kind].fetch_add(1, Relaxed);
            }
            outcome => {
                let kind = outcome.map_or_else(|kind| kind, |status| format!("http {}", status.as_u16()));
                *plan.stats.errors.lock().expect("errors lock").entry(kind).or_default() += 1;
            }
        }
    }
}

/// One progress line's figures.
#[derive(Debug, Clone)]
struct Sample {
    secs: f64,
    ok: u64,
    rss_kib: u64,
    pending: usize,
    /// Bytes in the data directory.
    disk: u64,
}

/// Prints a progress line every `every`, and a last one when `done` is notified; returns the
/// samples.
async fn report_progress(
    plan: Arc<Plan>,
    store: Store,
    receiver: Arc<ReceiverState>,
    done: Arc<tokio::sync::Notify>,
    every: Duration,
    data_dir: std::path::PathBuf,
) -> Vec<Sample> {
    let mut samples = vec![Sample {
        secs: 0.0,
        ok: 0,
        rss_kib: rss_kib(),
        pending: store.pending_deliveries(),
        disk: dir_bytes(&data_dir),
    }];
    let mut calls_before = (0, 0);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::from_std(plan.start) + every, every);
    loop {
        let finished = tokio::select! {
            _ = ticks.tick() => false,
            () = done.notified() => true,
        };
        let secs = plan.start.elapsed().as_secs_f64();
        let ok = Stats::total(&plan.stats.ok);
        let sent = Stats::total(&plan.stats.sent);
        let interval = std::mem::take(&mut *plan.stats.interval.lock().expect("latency lock"));
        let sample =
            Sample { secs, ok, rss_kib: rss_kib(), pending: store.pending_deliveries(), disk: dir_bytes(&data_dir) };
        let previous = samples.last().expect("at least the first sample");
        let rate = (ok - previous.ok) as f64 / (secs - previous.secs).max(1e-3);
        let calls = (receiver.calls.load(Relaxed), receiver.failed.load(Relaxed));
        eprintln!(
            "[{secs:>5.0} s] {rate:>6.0} ops/s ok (sent {sent}, ok {ok}), errors {:?}, p50 {:.1} ms p99 {:.1} ms, \
             RSS {:.1} MiB, data dir {:.0} MiB, outbox pending {}, receiver +{} calls ({} answered 500)",
            plan.stats.errors(),
            interval.percentile(0.50).as_secs_f64() * 1e3,
            interval.percentile(0.99).as_secs_f64() * 1e3,
            sample.rss_kib as f64 / 1024.0,
            sample.disk as f64 / (1 << 20) as f64,
            sample.pending,
            calls.0 - calls_before.0,
            calls.1 - calls_before.1,
        );
        calls_before = calls;
        samples.push(sample);
        if finished {
            return samples;
        }
    }
}

/// The process's resident memory in KiB (`VmRSS` of `/proc/self/status`; 0 where unreadable).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What the check of the store found.
#[derive(Debug, Default)]
struct Verification {
    /// Messages stored in the soak's conversations.
    messages: u64,
    /// Acknowledged handles and agent messages: each must be stored exactly once.
    acknowledged: u64,
    found: u64,
    missing: u64,
    /// Acknowledged or not, stored more than once.
    duplicated: u64,
    /// Failed requests whose message was stored anyway (allowed: the answer was lost, not the write).
    unacknowledged_stored: u64,
    /// Conversations whose seqs are not 1, 2, 3, … without gaps.
    seq_gaps: u64,
    /// Conversations without exactly `SOAK_HISTORY` warm-up (history) messages.
    warm_up_wrong: u64,
    /// Acknowledged async handles the bot answered (it was not paused).
    async_replies: u64,
    /// Acknowledged async handles without a reply because the bot was paused.
    async_unanswered: u64,
    /// Agent messages and async replies by where their delivery ended.
    delivered: u64,
    failed: u64,
    cancelled: u64,
    pending: u64,
    /// Replies no delivery was made for.
    without_delivery: u64,
    /// Deliveries the store marks delivered that the receiver never answered 2xx.
    lost: u64,
    /// All deliveries of the tenant by kind and status, as the store has them.
    deliveries: BTreeMap<String, u64>,
    examples: Vec<String>,
}

impl Verification {
    fn passed(&self) -> bool {
        self.missing == 0
            && self.duplicated == 0
            && self.seq_gaps == 0
            && self.warm_up_wrong == 0
            && self.pending == 0
            && self.without_delivery == 0
            && self.lost == 0
    }

    fn problem(&mut self, what: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(what);
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "passed": self.passed(),
            "messages": self.messages,
            "acknowledged": self.acknowledged,
            "found": self.found,
            "missing": self.missing,
            "duplicated": self.duplicated,
            "unacknowledged_stored": self.unacknowledged_stored,
            "seq_gaps": self.seq_gaps,
            "warm_up_wrong": self.warm_up_wrong,
            "async_replies": self.async_replies,
            "async_unanswered_paused": self.async_unanswered,
            "replies": {
                "delivered": self.delivered,
                "failed": self.failed,
                "cancelled": self.cancelled,
                "pending": self.pending,
                "without_delivery": self.without_delivery,
                "lost": self.lost,
            },
            "deliveries": self.deliveries,
            "examples": self.examples,
        })
    }
}

/// Where a reply's delivery ended.
#[derive(Debug, Clone, Copy)]
struct Delivered {
    webhook_id: Uuid,
    status: DeliveryStatus,
}

/// Checks every conversation of the run in `store` against what was acknowledged and what the
/// receiver got.
fn verify(store: &Store, run: &Run, receiver: &ReceiverState, history: u64) -> Verification {
    let mut v = Verification::default();
    // Reply deliveries by the id of the message they carry.
    let mut by_message: HashMap<Uuid, Delivered> = HashMap::new();
    let listed = store.deliveries_of(run.tenant, usize::MAX, |d| {
        let kind = match d.kind {
            DeliveryKind::BotReply => "bot_reply",
            DeliveryKind::AgentMessage => "agent_message",
            DeliveryKind::HumanTakeover => "human_takeover",
        };
        *v.deliveries.entry(format!("{kind} {}", d.status.as_str())).or_default() += 1;
        let message = d.body.pointer("/message/id").and_then(Value::as_str).and_then(|id| id.parse().ok());
        if let Some(message) = message {
            by_message.insert(message, Delivered { webhook_id: d.id.0, status: d.status });
        }
        false
    });
    if let Err(error) = listed {
        v.problem(format!("could not list deliveries: {error}"));
        v.lost += 1;
    }
    let answered = receiver.by_webhook_id.lock().expect("receiver lock");
    let settle = |v: &mut Verification, what: &str, message: &Message| match by_message.get(&message.id.0) {
        None => {
            v.without_delivery += 1;
            v.problem(format!("{what}: reply {} has no delivery", message.id));
        }
        Some(d) => match d.status {
            DeliveryStatus::Delivered if answered.get(&d.webhook_id).is_some_and(|c| c.ok > 0) => v.delivered += 1,
            DeliveryStatus::Delivered => {
                v.lost += 1;
                v.problem(format!("{what}: delivery {} is marked delivered but never reached 2xx", d.webhook_id));
            }
            DeliveryStatus::Failed => v.failed += 1,
            DeliveryStatus::Cancelled => v.cancelled += 1,
            DeliveryStatus::Pending => {
                v.pending += 1;
                v.problem(format!("{what}: delivery {} still pending", d.webhook_id));
            }
        },
    };

    let count = run.conversations.len() as u64;
    for (c, id) in run.conversations.iter().enumerate() {
        let messages = match store.messages(*id, 0, usize::MAX) {
            Ok(messages) => messages,
            Err(error) => {
                v.missing += 1;
                v.problem(format!("conversation p{c}: {error}"));
                continue;
            }
        };
        v.messages += messages.len() as u64;
        if messages.iter().enumerate().any(|(i, m)| m.seq != i as u64 + 1) {
            v.seq_gaps += 1;
            v.problem(format!("conversation p{c}: seqs are not contiguous from 1"));
        }
        // Index of each user message by provider id, of each agent message by content.
        let mut users: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut agents: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut warm_ups = 0;
        for (i, m) in messages.iter().enumerate() {
            match (m.role, m.provider_message_id.as_deref()) {
                (Role::User, Some(pid)) if pid.starts_with('s') => users.entry(pid).or_default().push(i),
                (Role::User, _) => warm_ups += 1,
                (Role::Agent, _) => agents.entry(m.content.as_str()).or_default().push(i),
                _ => {}
            }
        }
        if warm_ups != history {
            v.warm_up_wrong += 1;
            v.problem(format!("conversation p{c}: {warm_ups} warm-up messages"));
        }
        let mut n = c as u64;
        while n < run.operations {
            let op = run.op(n);
            let (key, index) = match op {
                Op::Handle | Op::AsyncHandle => (message_id(n), &users),
                Op::AgentMessage => (agent_text(n), &agents),
                Op::ReadMessages | Op::Pause | Op::Resume => {
                    n += count;
                    continue;
                }
            };
            let stored = index.get(key.as_str()).map_or(&[][..], Vec::as_slice);
            if stored.len() > 1 {
                v.duplicated += 1;
                v.problem(format!("p{c} {key}: stored {} times", stored.len()));
            }
            if !run.acknowledged(n) {
                v.unacknowledged_stored += u64::from(!stored.is_empty());
                n += count;
                continue;
            }
            v.acknowledged += 1;
            let Some(&at) = stored.first() else {
                v.missing += 1;
                v.problem(format!("p{c} {key}: acknowledged ({}) but not stored", op.name()));
                n += count;
                continue;
            };
            v.found += 1;
            match op {
                Op::AsyncHandle => {
                    let replies: Vec<&Message> =
                        messages[at + 1..].iter().take_while(|m| m.role == Role::Assistant).collect();
                    if replies.is_empty() {
                        v.async_unanswered += 1;
                    }
                    for reply in replies {
                        v.async_replies += 1;
                        settle(&mut v, &key, reply);
                    }
                }
                Op::AgentMessage => settle(&mut v, &key, &messages[at]),
                _ => {}
            }
            n += count;
        }
    }
    v
}

/// The run's data directory.
#[derive(Debug)]
struct DataDir(std::path::PathBuf);

impl DataDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

/// `SOAK_OPEN_DIR=path`: what a kept data directory costs in memory in a fresh process, with
/// nothing else running: RSS before opening it, after opening it (sled's recovery builds its
/// page table and segment bookkeeping), and after reading every key and value twice (the
/// cache fills up to its capacity).
fn measure_open(dir: &Path, cache_mib: u64) -> anyhow::Result<()> {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let before = rss_kib();
    let started = Instant::now();
    let config = StoreConfig { cache_capacity_bytes: cache_mib << 20, ..StoreConfig::for_tests(dir) };
    let store = Store::open(&config)?;
    let opened = rss_kib();
    let open_secs = started.elapsed().as_secs_f64();
    store.checksum()?;
    let read_once = rss_kib();
    store.checksum()?;
    let read_twice = rss_kib();
    println!(
        "open {}: data dir {:.0} MiB, sled cache {cache_mib} MiB; RSS {:.1} MiB before opening, {:.1} MiB once \
         open ({open_secs:.1} s), {:.1} MiB after reading everything, {:.1} MiB after reading it again",
        dir.display(),
        dir_bytes(dir) as f64 / (1 << 20) as f64,
        mib(before),
        mib(opened),
        mib(read_once),
        mib(read_twice),
    );
    let sizes = store.tree_sizes()?;
    let live: u64 = sizes.iter().map(|t| t.key_bytes + t.value_bytes).sum();
    println!("live data {:.1} MiB (keys and values):", live as f64 / (1 << 20) as f64);
    for tree in sizes.iter().filter(|t| t.keys > 0) {
        println!(
            "  {:<22} {:>9} keys {:>8.1} MiB",
            tree.name,
            tree.keys,
            (tree.key_bytes + tree.value_bytes) as f64 / (1 << 20) as f64
        );
    }
    store.close()?;
    Ok(())
}

/// Opens the data directory again once baton let go of it (bounded wait).
fn reopen(config: &StoreConfig) -> anyhow::Result<Store> {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(config) {
            Ok(store) => return Ok(store),
            Err(error) if Instant::now() >= give_up => {
                return Err(error).context("could not reopen the data directory after stopping baton")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Webhook calls by `webhook-id`.
#[derive(Debug, Default, Clone, Copy)]
struct Calls {
    attempts: u32,
    ok: u32,
}

/// What the receiver saw.
#[derive(Debug, Default)]
struct ReceiverState {
    calls: AtomicU64,
    /// Calls answered 500 (every `fail_every`th).
    failed: AtomicU64,
    /// Every this-many-th call fails; 0: none.
    fail_every: u64,
    takeover_calls: AtomicU64,
    by_webhook_id: Mutex<HashMap<Uuid, Calls>>,
}

/// The webhook receiver: an actix-web server on loopback answering 500 to every third call
/// (on either path) and 200 to the others.
#[derive(Debug)]
struct Receiver {
    address: String,
    state: Arc<ReceiverState>,
    handle: actix_web::dev::ServerHandle,
    thread: JoinHandle<()>,
}

async fn receive(request: HttpRequest, state: web::Data<ReceiverState>) -> HttpResponse {
    let call = state.calls.fetch_add(1, Relaxed);
    if request.path() == "/takeover" {
        state.takeover_calls.fetch_add(1, Relaxed);
    }
    let every = state.fail_every;
    let fail = every > 0 && call % every == every - 1;
    let webhook_id = request.headers().get("webhook-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if let Some(id) = webhook_id {
        let mut seen = state.by_webhook_id.lock().expect("receiver lock");
        let calls = seen.entry(id).or_default();
        calls.attempts += 1;
        calls.ok += u32::from(!fail);
    }
    if fail {
        state.failed.fetch_add(1, Relaxed);
        HttpResponse::InternalServerError().finish()
    } else {
        HttpResponse::Ok().finish()
    }
}

impl Receiver {
    /// Starts the receiver with room for `expected_calls` webhook ids reserved up front.
    fn start(expected_calls: usize, fail_every: u64) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(ReceiverState {
            by_webhook_id: Mutex::new(HashMap::with_capacity(expected_calls)),
            fail_every,
            ..ReceiverState::default()
        });
        let data = web::Data::from(Arc::clone(&state));
        let (handle, thread) = baton_server::serve_on_own_thread("receiver", listener, move |listener| {
            Ok(HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::post().to(receive)))
                .workers(1)
                .disable_signals()
                .listen(listener)?
                .run())
        })?;
        Ok(Self { address, state, handle, thread })
    }

    /// Stops the server (on `runtime`, any tokio runtime), waits for its thread and hands
    /// back what it saw.
    fn stop(self, runtime: &tokio::runtime::Runtime) -> Arc<ReceiverState> {
        runtime.block_on(self.handle.stop(true));
        let _ = self.thread.join();
        self.state
    }
}

#[allow(clippy::too_many_arguments)]
fn print_results(
    options: &Options,
    workers: usize,
    cache_mib: u64,
    disk_mib: f64,
    restart_secs: f64,
    run: &Run,
    receiver: &ReceiverState,
    live: &Verification,
    restarted: &Verification,
    passed: bool,
) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let sent = Stats::total(&run.stats.sent);
    let ok = Stats::total(&run.stats.ok);
    let errors = run.stats.errors();
    let throughput = ok as f64 / run.load_secs.max(1e-3);
    let (baseline, end) = run.rss_baseline_and_end(options.warm_up());
    let growth = end as i64 - baseline as i64;
    let calls = receiver.calls.load(Relaxed);
    let failed = receiver.failed.load(Relaxed);
    let (ids, retried, repeated) = {
        let seen = receiver.by_webhook_id.lock().expect("receiver lock");
        (seen.len(), seen.values().filter(|c| c.attempts > 1).count(), seen.values().filter(|c| c.ok > 1).count())
    };
    let by_op: BTreeMap<&str, Value> = Op::ALL
        .iter()
        .map(|&op| {
            let i = op as usize;
            (op.name(), json!({ "sent": run.stats.sent[i].load(Relaxed), "ok": run.stats.ok[i].load(Relaxed) }))
        })
        .collect();
    // Resident memory at whole minutes (the sample closest to each), for the table.
    let minutes: Vec<(f64, u64)> = (1..=((run.load_secs + 5.0) / 60.0) as u64)
        .filter_map(|minute| {
            let at = minute as f64 * 60.0;
            run.samples
                .iter()
                .min_by(|a, b| (a.secs - at).abs().total_cmp(&(b.secs - at).abs()))
                .map(|s| (s.secs, s.rss_kib))
        })
        .collect();

    println!();
    println!(
        "soak: {:.0} s at {} ops/s open loop over {} conversations with {} messages of history each, fsync on, \
         {workers} HTTP workers, sled cache {cache_mib} MiB; webhook receiver answers 500 to every {}-th call \
         (0: none), retries after {RETRY_SCHEDULE_SECS:?} s",
        run.load_secs, options.rate, options.conversations, options.history, options.fail_every
    );
    println!(
        "operations: {sent} sent, {ok} ok = {throughput:.0} ops/s; errors {errors:?}; latency p50 {:.2} ms, \
         p99 {:.2} ms, max {:.2} ms",
        ms(run.latency.percentile(0.5)),
        ms(run.latency.percentile(0.99)),
        ms(run.latency.max()),
    );
    for (name, counts) in &by_op {
        println!("  {name:<14} sent {:>8}  ok {:>8}", counts["sent"], counts["ok"]);
    }
    println!(
        "RSS (baton + client + receiver, one process): {:.1} MiB after warm-up ({:.0} s), {:.1} MiB at the end, \
         growth {:+.1} MiB; {:.1} MiB after draining",
        mib(baseline),
        options.warm_up().as_secs_f64(),
        mib(end),
        growth as f64 / 1024.0,
        mib(run.rss_after_drain_kib),
    );
    for (secs, kib) in &minutes {
        println!("  at {secs:>5.0} s: {:.1} MiB", mib(*kib));
    }
    // Growth over the second half of the load, per minute and per GiB the data directory grew:
    // sled's bookkeeping grows with the database, so the second figure is the one to compare.
    let (half_rss, half_disk) = run.second_half_growth();
    println!(
        "RSS over the second half of the load: {:+.1} MiB ({:+.1} MiB/min) while the data directory grew \
         {:.0} MiB ({:+.1} MiB of RSS per GiB)",
        half_rss,
        half_rss / (run.load_secs / 120.0).max(1e-3),
        half_disk,
        if half_disk > 0.0 { half_rss / half_disk * 1024.0 } else { 0.0 },
    );
    let flat = run.memory_flat();
    println!(
        "memory: {} (flat: at most {:.0}% of the mid-run RSS gained over the second half)",
        match flat {
            Some(true) => "flat",
            Some(false) => "NOT flat",
            None => "not judged (a run under 2 minutes)",
        },
        FLAT_SHARE * 100.0,
    );
    println!(
        "outbox: {} pending after {:.1} s of draining; receiver: {calls} calls, {failed} answered 500, \
         {ids} webhook ids, {retried} retried, {repeated} answered 2xx more than once",
        run.pending_after_drain, run.drain_secs,
    );
    println!("deliveries in the store: {:?}", live.deliveries);
    for (name, v) in [("live store", live), ("after restart", restarted)] {
        println!(
            "verified ({name}): {} acknowledged messages, {} found, {} missing, {} duplicated, {} conversations with \
             seq gaps, {} warm-up problems, {} stored though not acknowledged; {} messages in all",
            v.acknowledged,
            v.found,
            v.missing,
            v.duplicated,
            v.seq_gaps,
            v.warm_up_wrong,
            v.unacknowledged_stored,
            v.messages,
        );
        println!(
            "  replies (async + agent): {} delivered, {} failed after all retries, {} cancelled by a takeover, \
             {} pending, {} without delivery, {} lost; {} async handles unanswered (bot paused)",
            v.delivered, v.failed, v.cancelled, v.pending, v.without_delivery, v.lost, v.async_unanswered,
        );
        for example in &v.examples {
            println!("  problem: {example}");
        }
    }
    println!(
        "data dir {disk_mib:.0} MiB; stop + reopen + second check took {restart_secs:.1} s; {}",
        if passed { "PASSED" } else { "FAILED" }
    );
    let summary = json!({
        "bench": "soak",
        "chatbot": run.chatbot,
        "secs": (run.load_secs * 10.0).round() / 10.0,
        "rate": options.rate,
        "conversations": options.conversations,
        "history_per_conversation": options.history,
        "fsync": true,
        "workers": workers,
        "retry_schedule_secs": RETRY_SCHEDULE_SECS,
        "warm_up_ok": run.warm_up_ok,
        "operations": { "sent": sent, "ok": ok, "by_kind": by_op },
        "throughput": (throughput * 10.0).round() / 10.0,
        "errors": errors,
        "latency_ms": {
            "p50": ms(run.latency.percentile(0.5)),
            "p90": ms(run.latency.percentile(0.9)),
            "p99": ms(run.latency.percentile(0.99)),
            "max": ms(run.latency.max()),
        },
        "rss_mib": {
            "after_warm_up": mib(baseline),
            "end": mib(end),
            "growth": growth as f64 / 1024.0,
            "after_drain": mib(run.rss_after_drain_kib),
            "second_half_growth": half_rss,
            "data_dir_second_half_growth_mib": half_disk.round(),
            "by_minute": minutes.iter().map(|(secs, kib)| json!({ "secs": secs.round(), "mib": mib(*kib) })).collect::<Vec<_>>(),
        },
        "outbox": { "pending_after_drain": run.pending_after_drain, "drain_secs": (run.drain_secs * 10.0).round() / 10.0 },
        "receiver": { "calls": calls, "answered_500": failed, "webhook_ids": ids, "retried": retried, "ok_more_than_once": repeated },
        "verified": live.to_json(),
        "verified_after_restart": restarted.to_json(),
        "data_dir_mib": disk_mib.round(),
        "memory_flat": flat,
        "passed": passed,
    });
    println!("{summary}");
}
