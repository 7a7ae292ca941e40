//! The registry: which actor owns which conversation.
//!
//! Conversations are spread over the arbiters (by default half the cores, see
//! [`threads_per_role`]) by a hash of their id, so one conversation always runs on the same
//! thread. Each conversation's
//! mailbox is bounded by counting requests in flight: a full one answers
//! [`ConversationError::Overloaded`] at once instead of queueing without limit.
//!
//! An actor that stopped (passivated, or restarted after a failed turn) or whose task died
//! leaves a closed mailbox behind: a message meeting it is sent again to a fresh actor,
//! rebuilt from the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use futures_util::StreamExt as _;

use crate::botconfig::{BotConfig, BotConfigs};
use crate::conversation::{ConversationActor, ConversationError, Drain, HandleDurably, HandleIncoming, Handled};
use crate::events::EventBus;
use crate::model::{ChatbotId, ConversationId};
use crate::store::Store;

/// Number of independently locked parts of the actor map.
const SHARDS: usize = 64;
/// How often a message is re-sent when it met an actor that was just passivated.
const SEND_ATTEMPTS: usize = 4;
/// Actors asked to finish their mailbox at once when the registry drains.
const DRAIN_CONCURRENCY: usize = 1024;

/// Threads for each of the two busy roles, HTTP workers and arbiters, unless configured: half
/// the cores, at least one. The two roles then have a core per thread between them; with a
/// thread per core for each, twice as many threads took turns on the cores, and on 2 cores
/// every handled message cost about a sixth more CPU (BENCHMARKS.md, "Session 14").
pub fn threads_per_role() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// A configured thread count (`server.workers`, `actors.arbiters`): 0 means [`threads_per_role`].
pub fn threads_or_default(configured: usize) -> usize {
    if configured == 0 {
        threads_per_role()
    } else {
        configured
    }
}

/// Registry settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Arbiter threads; 0 means [`threads_per_role`].
    pub arbiters: usize,
    /// Requests that may wait for one conversation before it answers "overloaded".
    pub mailbox_capacity: usize,
    /// Idle time after which an actor stops; it is rebuilt from the store on next use.
    pub idle_passivate: Duration,
}

#[derive(Debug, Clone)]
struct Entry {
    addr: Addr<ConversationActor>,
    in_flight: Arc<AtomicUsize>,
    generation: u64,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct RegistryStats {
    pub live_actors: AtomicI64,
    pub passivations: AtomicU64,
    pub mailbox_full: AtomicU64,
    /// Time of AI model calls.
    pub ai_latency: crate::histogram::Histogram,
    /// AI calls that failed (answered with the fallback).
    pub ai_failures: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    shards: Vec<Mutex<HashMap<ConversationId, Entry>>>,
    arbiters: Vec<ArbiterHandle>,
    /// Kept so the arbiter threads can be stopped and joined at shutdown.
    owned_arbiters: Mutex<Vec<Arbiter>>,
    next_generation: AtomicU64,
    config: RegistryConfig,
    stats: RegistryStats,
    /// Test-only fault injection: a turn writing a message with exactly this text panics.
    panic_on_text: Option<Arc<str>>,
}

/// Handle to the registry; cheap to clone. Needs a running actix System to be created.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
    store: Store,
    configs: BotConfigs,
    http: reqwest::Client,
    events: EventBus,
    /// Wakes the webhook actor when deliveries were queued.
    outbox: Arc<tokio::sync::Notify>,
    ai: Option<crate::ai::Ai>,
}

/// What the actors share besides the store.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// The chatbot configuration cache the actors read.
    pub configs: BotConfigs,
    /// Makes flows' `api_fetch` calls.
    pub http: reqwest::Client,
    /// Live events.
    pub events: EventBus,
    /// Notified when deliveries were queued in the outbox.
    pub outbox: Arc<tokio::sync::Notify>,
    /// The AI model clients.
    pub ai: Option<crate::ai::Ai>,
    /// Fault injection for baton's own tests, never for production: a turn that would store a
    /// message with exactly this text panics before writing anything.
    pub panic_on_text: Option<String>,
}

/// Decrements a conversation's in-flight count however the request ends (also if dropped).
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Registry {
    /// Starts the arbiters.
    pub fn start(store: Store, config: RegistryConfig, services: Services) -> Self {
        let Services { configs, http, events, outbox, ai, panic_on_text } = services;
        if let Some(text) = &panic_on_text {
            tracing::warn!(text = %text, "test fault injection is on: messages with this text panic");
        }
        let count = threads_or_default(config.arbiters);
        let owned: Vec<Arbiter> = (0..count).map(|_| Arbiter::new()).collect();
        let arbiters = owned.iter().map(|a| a.handle()).collect();
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        let inner = Inner {
            shards,
            arbiters,
            owned_arbiters: Mutex::new(owned),
            next_generation: AtomicU64::new(1),
            config,
            stats: RegistryStats::default(),
            panic_on_text: panic_on_text.map(Arc::from),
        };
        Self { inner: Arc::new(inner), store, configs, http, events, outbox, ai }
    }

    /// The live event bus.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The AI model clients, if configured.
    pub fn ai(&self) -> Option<&crate::ai::Ai> {
        self.ai.as_ref()
    }

    /// Records one AI call.
    pub(crate) fn record_ai(&self, took: Duration, ok: bool) {
        self.inner.stats.ai_latency.observe(took);
        if !ok {
            self.inner.stats.ai_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tells the webhook actor that deliveries were queued.
    pub(crate) fn wake_outbox(&self) {
        self.outbox.notify_one();
    }

    /// The text that makes a turn panic, when the test fault injection is on.
    pub(crate) fn panic_on_text(&self) -> Option<&str> {
        self.inner.panic_on_text.as_deref()
    }

    /// The HTTP client of flows' `api_fetch` steps.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Idle time after which an actor stops.
    pub(crate) fn idle_passivate(&self) -> Duration {
        self.inner.config.idle_passivate
    }

    /// Requests an actor's mailbox holds.
    pub(crate) fn mailbox_capacity(&self) -> usize {
        self.inner.config.mailbox_capacity
    }

    /// The chatbot configuration cache.
    pub fn configs(&self) -> &BotConfigs {
        &self.configs
    }

    /// A chatbot's configuration, for messages that do not carry it.
    pub(crate) fn bot_config(&self, id: ChatbotId) -> Result<Arc<BotConfig>, ConversationError> {
        self.configs.get(&self.store, id)?.ok_or(ConversationError::Missing("chatbot"))
    }

    fn hash(id: ConversationId) -> u64 {
        let bytes = id.as_bytes();
        u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default())
            ^ u64::from_le_bytes(bytes[0..8].try_into().unwrap_or_default())
    }

    fn shard(&self, id: ConversationId) -> &Mutex<HashMap<ConversationId, Entry>> {
        &self.inner.shards[(Self::hash(id) % SHARDS as u64) as usize]
    }

    /// The live actor of `id`, started on its arbiter if there is none.
    fn entry(&self, id: ConversationId) -> Entry {
        let mut shard = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = shard.get(&id) {
            return entry.clone();
        }
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let arbiter =
            &self.inner.arbiters[(Self::hash(id).rotate_left(17) % self.inner.arbiters.len() as u64) as usize];
        let (store, registry) = (self.store.clone(), self.clone());
        let addr = ConversationActor::start_in_arbiter(arbiter, move |_| {
            ConversationActor::load(id, store, registry, generation)
        });
        let entry = Entry { addr, in_flight: Arc::new(AtomicUsize::new(0)), generation };
        shard.insert(id, entry.clone());
        entry
    }

    /// Removes `id`'s entry if it is still the one of `generation`.
    pub(crate) fn forget(&self, id: ConversationId, generation: u64) {
        let mut shard = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
        if shard.get(&id).is_some_and(|e| e.generation == generation) {
            shard.remove(&id);
        }
    }

    /// Counts a request into the conversation's mailbox, or answers that it is full.
    fn admit(&self, entry: &Entry) -> Result<InFlight, ConversationError> {
        if entry.in_flight.fetch_add(1, Ordering::AcqRel) >= self.inner.config.mailbox_capacity {
            entry.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.inner.stats.mailbox_full.fetch_add(1, Ordering::Relaxed);
            return Err(ConversationError::Overloaded);
        }
        Ok(InFlight(Arc::clone(&entry.in_flight)))
    }

    /// Sends `msg` to the conversation's actor and waits for its answer.
    pub async fn send<M, T>(&self, id: ConversationId, msg: M) -> Result<T, ConversationError>
    where
        M: Message<Result = Result<T, ConversationError>> + Clone + Send + 'static,
        T: Send + 'static,
        ConversationActor: Handler<M>,
        <ConversationActor as Actor>::Context: ToEnvelope<ConversationActor, M>,
    {
        for _ in 0..SEND_ATTEMPTS {
            let entry = self.entry(id);
            let _in_flight = self.admit(&entry)?;
            match entry.addr.send(msg.clone()).await {
                Ok(Err(ConversationError::Passivated)) | Err(MailboxError::Closed) => {
                    self.forget(id, entry.generation);
                }
                Ok(result) => return result,
                Err(MailboxError::Timeout) => return Err(ConversationError::Unavailable),
            }
        }
        Err(ConversationError::Unavailable)
    }

    /// Hands a provider's message to its conversation and waits for the answer, which comes
    /// only once what the turn wrote is on disk: the group committer delivers it after its
    /// round (see [`Store::when_durable`]). The request's thread is woken once, by the
    /// committer, where [`Registry::send`] and then [`Store::durable`] wake it twice.
    pub async fn handle_durably(&self, id: ConversationId, msg: HandleIncoming) -> Result<Handled, ConversationError> {
        for _ in 0..SEND_ATTEMPTS {
            let entry = self.entry(id);
            let in_flight = self.admit(&entry)?;
            let (reply, answer) = tokio::sync::oneshot::channel();
            // Bounded by `in_flight` above; a closed mailbox drops the message and its `reply`.
            entry.addr.do_send(HandleDurably { incoming: msg.clone(), reply, in_flight });
            match answer.await {
                Ok(Err(ConversationError::Passivated)) | Err(_) => self.forget(id, entry.generation),
                Ok(result) => return result,
            }
        }
        Err(ConversationError::Unavailable)
    }

    /// Finishes every live actor's mailbox and stops the arbiters.
    pub async fn drain(&self) {
        let entries: Vec<Entry> = self
            .inner
            .shards
            .iter()
            .flat_map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect::<Vec<_>>())
            .collect();
        // Many at a time: one after the other, a million live actors took 35 s to drain.
        futures_util::stream::iter(entries)
            .for_each_concurrent(DRAIN_CONCURRENCY, |entry| async move {
                let _ = entry.addr.send(Drain).await;
            })
            .await;
        for arbiter in self.inner.owned_arbiters.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            arbiter.stop();
            let _ = arbiter.join();
        }
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> &RegistryStats {
        &self.inner.stats
    }

    pub(crate) fn actor_started(&self) {
        self.inner.stats.live_actors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn actor_stopped(&self) {
        self.inner.stats.live_actors.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn count_passivation(&self) {
        self.inner.stats.passivations.fetch_add(1, Ordering::Relaxed);
    }
}
