//! The durable store: sled 0.34, one tree per kind of record, MessagePack records.
//!
//! Writes return a [`CommitTicket`]; a change is acknowledged to a client only after
//! [`Store::durable`] resolves for its ticket (see [`commit`]). Everything a conversation
//! actor changes in one turn is written as one journaled batch (see [`journal`]), or, for the
//! common turn of a message and its replies, as two ordered inserts that need no journal (see
//! [`Store::write_conversation`]); either way a crash leaves all of a turn or none of it.

pub mod commit;
pub mod journal;
pub mod keys;
pub mod recent;
mod turns;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{LeafHint, Transactional, Tree};

pub use commit::{CommitStats, CommitTicket, GroupCommit};
use keys::{join, millis, u64_be};
use turns::TURN;

use crate::model::MessageId;
use crate::model::{
    Agent, AgentId, ApiKey, Channel, Chatbot, ChatbotId, Contact, ContactId, Conversation, ConversationId, Delivery,
    DeliveryId, DeliveryKind, DeliveryStatus, Flow, FlowId, KeyId, KeywordRule, Message, Reply, RuleId, Session,
    SessionId, StoredKey, Team, TeamId, Tenant, TenantId, Transfer, TransferId, TransferStatus,
};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(sled::Error),
    #[error("i/o error: {0}")]
    Io(std::io::Error),
    #[error("corrupt record in {tree}: {message}")]
    Corrupt { tree: &'static str, message: String },
    #[error("could not encode a record: {0}")]
    Encode(String),
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// Whether a read ran past the end of a file: in sled's log, a record whose length
    /// points beyond the data, which a truncated or overwritten log has.
    pub fn is_unexpected_eof(&self) -> bool {
        matches!(self, StoreError::Sled(sled::Error::Io(e)) | StoreError::Io(e)
            if e.kind() == std::io::ErrorKind::UnexpectedEof)
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e)
    }
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// Make every acknowledged write durable (group commit). Off only to measure its cost.
    pub fsync: bool,
    /// How often sled's background thread moves live pages out of mostly-dead log segments
    /// so the segments are reused (sled's `flush_every_ms`); 0 = never.
    pub segment_cleaning_ms: u64,
}

impl StoreConfig {
    /// A small store in `data_dir` for tests and tools: 1 MiB of cache, no fsync, no
    /// segment cleaning. Change a field with `StoreConfig { fsync: true, ..for_tests(dir) }`.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        Self { data_dir: data_dir.into(), cache_capacity_bytes: 1 << 20, fsync: false, segment_cleaning_ms: 0 }
    }
}

/// The bytes in the files under `dir` (a data directory's size, as `du --apparent-size`
/// counts it); what cannot be read counts 0.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The first answer to a provider message id, replayed to retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandleOutcome {
    pub conversation_id: ConversationId,
    pub contact_id: ContactId,
    pub message_id: MessageId,
    pub bot_active: bool,
    pub replies: Vec<Reply>,
}

/// The live contents of one tree (see [`Store::tree_sizes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeSize {
    pub name: String,
    pub keys: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
}

/// Everything one turn of a conversation actor writes, applied atomically.
#[derive(Debug, Default)]
pub struct ConversationWrite<'a> {
    /// The conversation record, when the turn changed more than what follows from its
    /// messages (`next_seq`, `last_message_at`, `updated_at`: see `Store::conversation`).
    pub conversation: Option<&'a Conversation>,
    /// Set when the conversation is new: its index entries are written too.
    pub created: bool,
    pub contact: Option<&'a Contact>,
    pub messages: &'a [Message],
    /// The provider message id and the answer to replay for it. When the turn is that whole
    /// answer and changes nothing else, the turn alone keeps it: the actor's window of recent
    /// provider ids ([`recent`]) finds it.
    pub dedupe: Option<(&'a str, &'a HandleOutcome)>,
    /// The seq of a turn of this conversation (of this contact) that leaves the actor's window
    /// with this turn ([`recent::RecentProviderIds::leaving`]): its provider id gets a record,
    /// if it has none, before this turn is written.
    pub leaving_window: Option<(u64, ContactId)>,
    /// The conversation's session, when it changed.
    pub session: Option<&'a Session>,
    /// A transfer opened or changed in this turn.
    pub transfer: Option<&'a Transfer>,
    /// Outbound calls this turn causes, queued in the outbox atomically with it.
    pub deliveries: &'a [Delivery],
    /// Where this conversation's last message went in sled's message tree: a turn that writes
    /// only its messages starts there instead of descending from the root.
    pub leaf_hint: Option<&'a Cell<LeafHint>>,
}

#[derive(Debug)]
struct Trees {
    meta: Tree,
    tenants: Tree,
    tenant_names: Tree,
    /// key hash → StoredKey
    api_keys: Tree,
    /// tenant ++ key id → key hash
    api_key_ids: Tree,
    chatbots: Tree,
    /// tenant ++ created ++ chatbot → ()
    chatbots_by_tenant: Tree,
    /// chatbot ++ rule → KeywordRule
    rules: Tree,
    /// chatbot ++ channel id → Channel
    channels: Tree,
    contacts: Tree,
    conversations: Tree,
    /// chatbot ++ created ++ conversation → ()
    conv_by_bot: Tree,
    /// contact ++ conversation → ()
    conv_by_contact: Tree,
    /// conversation ++ seq of a turn's first message → the turn's messages (`turns`)
    messages: Tree,
    /// conversation ++ provider message id → created ++ either the first answer (HandleOutcome,
    /// `dedupe_record`) or TURN ++ turn seq ++ bot_active ++ contact id (`dedupe_pointer`).
    /// An id whose answer is its turn ([`turns::encode_answer`]) has no record while it is in
    /// its actor's window ([`recent`]).
    dedupe: Tree,
    /// chatbot ++ flow → Flow
    flows: Tree,
    /// session → Session
    sessions: Tree,
    /// tenant ++ started ++ session → ()
    sessions_by_tenant: Tree,
    /// tenant ++ team → Team
    teams: Tree,
    /// tenant ++ agent → Agent
    agents: Tree,
    /// transfer → Transfer
    transfers: Tree,
    /// tenant ++ transferred ++ transfer → ()
    transfers_by_tenant: Tree,
    /// tenant ++ queue (team id, or zeros for the general queue) ++ transferred ++ transfer → (),
    /// for active transfers nobody has picked up yet
    transfer_queue: Tree,
    /// delivery → Delivery
    outbox: Tree,
    /// due ++ delivery → (), for pending deliveries
    outbox_due: Tree,
    /// conversation ++ seq ++ delivery → (), for pending deliveries to the reply webhook,
    /// which go out in conversation order
    outbox_conv: Tree,
    /// tenant ++ delivery → ()
    outbox_by_tenant: Tree,
    /// chatbot ++ context → AiContext
    ai_contexts: Tree,
    /// conversation ++ session → ()
    sessions_by_conversation: Tree,
    /// conversation ++ transfer → ()
    transfers_by_conversation: Tree,
    /// The batch being applied, while it is (see [`journal`]).
    journal: Tree,
}

#[derive(Debug)]
struct Inner {
    db: sled::Db,
    trees: Trees,
    commit: GroupCommit,
    path: PathBuf,
    /// Writes still to fail with an injected I/O error ([`StoreFaults`]); `u64::MAX` = all.
    failing_writes: AtomicU64,
    /// Held while a journaled batch is applied, and by the writes that must not see half of
    /// one (see [`journal`]).
    writer: Mutex<()>,
    /// API keys by hash, as read: every request looks its key up.
    keys: Mutex<KeyCache>,
}

/// API keys already read from the store, so authenticating a request is a hash-map lookup.
/// Keys are only created and deleted (never changed); a deletion empties the cache and bumps
/// `generation`, so a lookup that read the store before it cannot put the key back.
#[derive(Debug, Default)]
struct KeyCache {
    generation: u64,
    by_hash: std::collections::HashMap<Vec<u8>, StoredKey>,
}

/// Keys kept in [`KeyCache`]; lookups of others read the store.
const KEY_CACHE_CAPACITY: usize = 10_000;

/// The store handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Fault injection, for tests of how baton behaves when its disk fails: writes or the
/// durability step answer an I/O error on demand. Inert unless switched on (one atomic load
/// per write); nothing in configuration reaches it.
#[derive(Debug, Clone, Copy)]
pub struct StoreFaults<'a> {
    store: &'a Store,
}

impl StoreFaults<'_> {
    /// The next `n` writes fail (each write entry point counts once), without applying anything.
    pub fn fail_next_writes(&self, n: u64) {
        self.store.inner.failing_writes.store(n.min(u64::MAX - 1), Ordering::SeqCst);
    }

    /// Every write fails until [`StoreFaults::clear`].
    pub fn fail_all_writes(&self) {
        self.store.inner.failing_writes.store(u64::MAX, Ordering::SeqCst);
    }

    /// Flushes fail while `on`: writers waiting for durability get an I/O error, and what they
    /// wrote becomes durable with the first flush after the switch is off.
    pub fn fail_durability(&self, on: bool) {
        self.store.inner.commit.fail_flushes(on);
    }

    /// Back to normal.
    pub fn clear(&self) {
        self.store.inner.failing_writes.store(0, Ordering::SeqCst);
        self.fail_durability(false);
    }
}

/// A `dedupe` record with the whole answer: its time (so the expiry sweep reads 8 bytes), then
/// the answer (see [`Store::write_conversation`] for when).
fn dedupe_record(outcome: &HandleOutcome) -> Result<Vec<u8>, StoreError> {
    let mut record = u64_be(millis(crate::model::now())).to_vec();
    record.extend_from_slice(&encode(outcome)?);
    Ok(record)
}

/// A `dedupe` record pointing at its turn: its time, `TURN`, the turn's seq, `bot_active` and
/// the contact id (34 bytes). The rest of the answer is the turn itself: its first message
/// and the replies in it ([`answer_of_turn`]).
fn dedupe_pointer(seq: u64, bot_active: bool, contact: ContactId) -> Vec<u8> {
    let mut record = u64_be(millis(crate::model::now())).to_vec();
    record.push(TURN);
    record.extend_from_slice(&u64_be(seq));
    record.push(u8::from(bot_active));
    record.extend_from_slice(contact.as_bytes());
    record
}

/// The answer `turn` (messages of `conversation`, of `contact`) gives when it starts with the
/// message `provider_message_id` names and left the bot active or not; `None` for a turn
/// that starts otherwise (another turn took the seq, or a hash of the id collided).
fn answer_from_turn(
    conversation: ConversationId,
    contact: ContactId,
    provider_message_id: &str,
    bot_active: bool,
    turn: &[Message],
) -> Option<HandleOutcome> {
    let first = turn.first().filter(|m| m.provider_message_id.as_deref() == Some(provider_message_id))?;
    Some(HandleOutcome {
        conversation_id: conversation,
        contact_id: contact,
        message_id: first.id,
        bot_active,
        replies: Message::replies_among(turn),
    })
}

/// The answer a pointer record (what follows its `TURN` byte) and its turn make.
fn answer_of_turn(
    conversation: ConversationId,
    provider_message_id: &str,
    pointer: &[u8],
    turn: &[Message],
) -> Option<HandleOutcome> {
    let contact = ContactId::from_slice(pointer.get(9..25)?)?;
    answer_from_turn(conversation, contact, provider_message_id, *pointer.get(8)? == 1, turn)
}

/// Whether a pointer record rebuilds `outcome` from `messages`: they start with the message
/// the provider id names, and the answer's replies are the replies among them.
fn answer_follows_from(messages: &[Message], provider_message_id: &str, outcome: &HandleOutcome) -> bool {
    let Some(first) = messages.first() else { return false };
    first.id == outcome.message_id
        && first.conversation_id == outcome.conversation_id
        && first.provider_message_id.as_deref() == Some(provider_message_id)
        && Message::replies_among(messages) == outcome.replies
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(value).map_err(|e| StoreError::Encode(e.to_string()))
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt { tree, message: e.to_string() })
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir` and starts its committer.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&config.data_dir).map_err(StoreError::Io)?;
        let path = config.data_dir.join("db");
        // sled's periodic flusher is what cleans segments; its flushes and fsyncs are redundant
        // with the group committer's but cheap at this interval (see BENCHMARKS.md, "Why
        // memory grows").
        let cleaning = (config.segment_cleaning_ms > 0).then_some(config.segment_cleaning_ms);
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(config.cache_capacity_bytes)
            .flush_every_ms(cleaning)
            .open()?;
        let tree = |name: &str| db.open_tree(name);
        let trees = Trees {
            meta: tree("meta")?,
            tenants: tree("tenants")?,
            tenant_names: tree("tenant_names")?,
            api_keys: tree("api_keys")?,
            api_key_ids: tree("api_key_ids")?,
            chatbots: tree("chatbots")?,
            chatbots_by_tenant: tree("chatbots_by_tenant")?,
            rules: tree("rules")?,
            channels: tree("channels")?,
            contacts: tree("contacts")?,
            conversations: tree("conversations")?,
            conv_by_bot: tree("conv_by_bot")?,
            conv_by_contact: tree("conv_by_contact")?,
            messages: tree("messages")?,
            dedupe: tree("dedupe")?,
            flows: tree("flows")?,
            sessions: tree("sessions")?,
            sessions_by_tenant: tree("sessions_by_tenant")?,
            teams: tree("teams")?,
            agents: tree("agents")?,
            transfers: tree("transfers")?,
            transfers_by_tenant: tree("transfers_by_tenant")?,
            transfer_queue: tree("transfer_queue")?,
            outbox: tree("outbox")?,
            outbox_due: tree("outbox_due")?,
            outbox_conv: tree("outbox_conv")?,
            outbox_by_tenant: tree("outbox_by_tenant")?,
            ai_contexts: tree("ai_contexts")?,
            sessions_by_conversation: tree("sessions_by_conversation")?,
            transfers_by_conversation: tree("transfers_by_conversation")?,
            journal: tree("journal")?,
        };
        let replayed = journal::replay(&db, &trees.journal)?;
        if replayed > 0 {
            tracing::warn!(changes = replayed, "completed a write interrupted by a crash");
        }
        let db_file = std::fs::File::open(path.join("db")).map_err(StoreError::Io)?;
        let commit = GroupCommit::start(db.clone(), db_file, config.fsync)?;
        let store = Self {
            inner: Arc::new(Inner {
                db,
                trees,
                commit,
                path,
                failing_writes: AtomicU64::new(0),
                writer: Mutex::new(()),
                keys: Mutex::default(),
            }),
        };
        store.inner.trees.meta.insert("schema_version", &1u32.to_be_bytes())?;
        Ok(store)
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn trees(&self) -> &Trees {
        &self.inner.trees
    }

    fn ticket(&self) -> CommitTicket {
        self.inner.commit.ticket()
    }

    /// The writer lock: journaled batches and the transactions over the same trees take it,
    /// so none of them sees half of another.
    fn exclusive(&self) -> MutexGuard<'_, ()> {
        self.inner.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `batch` atomically (see [`journal`]).
    fn apply(&self, batch: journal::Batch<'_>) -> Result<CommitTicket, StoreError> {
        if batch.is_empty() {
            return Ok(CommitTicket::NONE);
        }
        {
            let _writer = self.exclusive();
            batch.apply(&self.trees().journal)?;
        }
        Ok(self.ticket())
    }

    /// Resolves once `ticket` is on disk.
    pub async fn durable(&self, ticket: CommitTicket) -> Result<(), StoreError> {
        self.inner.commit.durable(ticket).await
    }

    /// Runs `callback` once `ticket` is on disk (see [`GroupCommit::when_durable`]).
    pub fn when_durable(&self, ticket: CommitTicket, callback: impl FnOnce(Result<(), StoreError>) + Send + 'static) {
        self.inner.commit.when_durable(ticket, Box::new(callback));
    }

    /// A ticket covering everything applied so far.
    pub fn ticket_for_all(&self) -> CommitTicket {
        self.ticket()
    }

    /// How many handles to this store exist (the data directory stays locked until the
    /// last is dropped).
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// The committer's counters.
    pub fn commit_stats(&self) -> &CommitStats {
        self.inner.commit.stats()
    }

    /// Switches for injected storage failures (tests).
    pub fn faults(&self) -> StoreFaults<'_> {
        StoreFaults { store: self }
    }

    /// Fails with an injected I/O error when [`StoreFaults`] says this write must; called first
    /// thing by every write, so a failed write applies nothing.
    fn check_write(&self) -> Result<(), StoreError> {
        let failing = &self.inner.failing_writes;
        if failing.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let take = failing.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            0 => None,
            u64::MAX => Some(n),
            n => Some(n - 1),
        });
        match take {
            Ok(_) => Err(StoreError::Io(std::io::Error::other("injected fault: the write failed"))),
            Err(_) => Ok(()),
        }
    }

    /// A CRC32 over every key and value of every tree: equal before and after means nothing
    /// stored changed (tests use it to prove a rejected request wrote nothing). O(N).
    pub fn checksum(&self) -> Result<u32, StoreError> {
        Ok(self.inner.db.checksum()?)
    }

    /// Every tree's name with its number of keys and the bytes of its keys and values: the
    /// live data, to compare with the size of the data directory. Reads everything.
    pub fn tree_sizes(&self) -> Result<Vec<TreeSize>, StoreError> {
        let mut sizes = Vec::new();
        for name in self.inner.db.tree_names() {
            let tree = self.inner.db.open_tree(&name)?;
            let mut size = TreeSize { name: String::from_utf8_lossy(&name).into_owned(), ..TreeSize::default() };
            for entry in tree.iter() {
                let (key, value) = entry?;
                size.keys += 1;
                size.key_bytes += key.len() as u64;
                size.value_bytes += value.len() as u64;
            }
            sizes.push(size);
        }
        Ok(sizes)
    }

    /// Flushes everything and stops the committer.
    pub fn close(&self) -> Result<(), StoreError> {
        self.inner.commit.shutdown();
        self.inner.db.flush()?;
        Ok(())
    }

    fn get<T: DeserializeOwned>(&self, tree: &Tree, name: &'static str, key: &[u8]) -> Result<Option<T>, StoreError> {
        tree.get(key)?.map(|bytes| decode(name, &bytes)).transpose()
    }

    fn put<T: Serialize>(&self, tree: &Tree, key: &[u8], value: &T) -> Result<CommitTicket, StoreError> {
        self.check_write()?;
        tree.insert(key, encode(value)?)?;
        Ok(self.ticket())
    }

    fn scan<T: DeserializeOwned>(&self, tree: &Tree, name: &'static str, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        tree.scan_prefix(prefix).values().map(|v| decode(name, &v?)).collect()
    }

    // --- tenants and keys -------------------------------------------------------------

    /// The tenant called `name`, created if new.
    pub fn ensure_tenant(&self, name: &str) -> Result<(Tenant, CommitTicket), StoreError> {
        if let Some(id) = self.trees().tenant_names.get(name)? {
            let id = TenantId::from_slice(&id)
                .ok_or(StoreError::Corrupt { tree: "tenant_names", message: "bad id".into() })?;
            if let Some(tenant) = self.tenant(id)? {
                return Ok((tenant, CommitTicket::NONE));
            }
        }
        self.check_write()?;
        let tenant = Tenant { id: TenantId::new_random(), name: name.to_string(), created_at: crate::model::now() };
        let t = self.trees();
        let record = encode(&tenant)?;
        [&t.tenants, &t.tenant_names].as_slice().transaction(|tx| {
            tx[0].insert(tenant.id.as_bytes().as_slice(), record.as_slice())?;
            tx[1].insert(name.as_bytes(), tenant.id.as_bytes().as_slice())?;
            Ok(())
        })?;
        Ok((tenant, self.ticket()))
    }

    /// A tenant by id.
    pub fn tenant(&self, id: TenantId) -> Result<Option<Tenant>, StoreError> {
        self.get(&self.trees().tenants, "tenants", id.as_bytes())
    }

    /// A tenant by name.
    pub fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        match self.trees().tenant_names.get(name)? {
            Some(id) => match TenantId::from_slice(&id) {
                Some(id) => self.tenant(id),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// Whether any API key exists at all (first start creates one when not).
    pub fn has_any_key(&self) -> Result<bool, StoreError> {
        Ok(!self.trees().api_keys.is_empty())
    }

    /// Stores a new key.
    pub fn insert_key(&self, stored: &StoredKey) -> Result<CommitTicket, StoreError> {
        self.check_write()?;
        let t = self.trees();
        let record = encode(stored)?;
        let id_key = join(&[stored.key.tenant_id.as_bytes(), stored.key.id.as_bytes()]);
        [&t.api_keys, &t.api_key_ids].as_slice().transaction(|tx| {
            tx[0].insert(stored.hash.as_slice(), record.as_slice())?;
            tx[1].insert(id_key.as_slice(), stored.hash.as_slice())?;
            Ok(())
        })?;
        Ok(self.ticket())
    }

    fn key_cache(&self) -> MutexGuard<'_, KeyCache> {
        self.inner.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key whose SHA-256 hash is `hash`.
    pub fn key_by_hash(&self, hash: &[u8]) -> Result<Option<StoredKey>, StoreError> {
        let generation = {
            let cached = self.key_cache();
            if let Some(stored) = cached.by_hash.get(hash) {
                return Ok(Some(stored.clone()));
            }
            cached.generation
        };
        let stored: Option<StoredKey> = self.get(&self.trees().api_keys, "api_keys", hash)?;
        if let Some(stored) = &stored {
            let mut cached = self.key_cache();
            if cached.generation == generation && cached.by_hash.len() < KEY_CACHE_CAPACITY {
                cached.by_hash.insert(hash.to_vec(), stored.clone());
            }
        }
        Ok(stored)
    }

    /// The tenant's keys, oldest first.
    pub fn keys_of(&self, tenant: TenantId) -> Result<Vec<ApiKey>, StoreError> {
        let t = self.trees();
        let mut keys = Vec::new();
        for hash in t.api_key_ids.scan_prefix(tenant.as_bytes()).values() {
            if let Some(stored) = self.key_by_hash(&hash?)? {
                keys.push(stored.key);
            }
        }
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    /// Deletes (revokes) a key; `None` when the tenant has no such key.
    pub fn delete_key(&self, tenant: TenantId, id: KeyId) -> Result<Option<CommitTicket>, StoreError> {
        self.check_write()?;
        let t = self.trees();
        let id_key = join(&[tenant.as_bytes(), id.as_bytes()]);
        let Some(hash) = t.api_key_ids.get(&id_key)? else { return Ok(None) };
        [&t.api_keys, &t.api_key_ids].as_slice().transaction(|tx| {
            tx[0].remove(&hash)?;
            tx[1].remove(id_key.as_slice())?;
            Ok(())
        })?;
        let mut cached = self.key_cache();
        cached.generation += 1;
        cached.by_hash.clear();
        Ok(Some(self.ticket()))
    }

    // --- chatbots, rules, channels -----------------------------------------------------

    /// Inserts or replaces a chatbot.
    pub fn put_chatbot(&self, bot: &Chatbot) -> Result<CommitTicket, StoreError> {
        self.check_write()?;
        let t = self.trees();
        let record = encode(bot)?;
        let index = join(&[bot.tenant_id.as_bytes(), &u64_be(millis(bot.created_at)), bot.id.as_bytes()]);
        [&t.chatbots, &t.chatbots_by_tenant].as_slice().transaction(|tx| {
            tx[0].insert(bot.id.as_bytes().as_slice(), record.as_slice())?;
            tx[1].insert(index.as_slice(), &[])?;
            Ok(())
        })?;
        Ok(self.ticket())
    }

    /// A chatbot by id.
    pub fn chatbot(&self, id: ChatbotId) -> Result<Option<Chatbot>, StoreError> {
        self.get(&self.trees().chatbots, "chatbots", id.as_bytes())
    }

    /// The tenant's chatbots, oldest first.
    pub fn chatbots_of(&self, tenant: TenantId) -> Result<Vec<Chatbot>, StoreError> {
        let mut bots = Vec::new();
        for key in self.trees().chatbots_by_tenant.scan_prefix(tenant.as_bytes()).keys() {
            let key = key?;
            if let Some(bot) = ChatbotId::from_slice(&key[24..]).map(|id| self.chatbot(id)).transpose()?.flatten() {
                bots.push(bot);
            }
        }
        Ok(bots)
    }

    /// Deletes a chatbot with its rules and channels. Its conversations become unreachable
    /// (every conversation route resolves the chatbot first).
    pub fn delete_chatbot(&self, bot: &Chatbot) -> Result<CommitTicket, StoreError> {
        self.check_write()?;
        let t = self.trees();
        let index = join(&[bot.tenant_id.as_bytes(), &u64_be(millis(bot.created_at)), bot.id.as_bytes()]);
        let mut dependents = sled::Batch::default();
        for key in t.rules.scan_prefix(bot.id.as_bytes()).keys() {
            dependents.remove(key?);
        }
        t.rules.apply_batch(dependents)?;
        let mut channels = sled::Batch::default();
        for key in t.channels.scan_prefix(bot.id.as_bytes()).keys() {
            channels.remove(key?);
        }
        t.channels.apply_batch(channels)?;
        [&t.chatbots, &t.chatbots_by_tenant].as_slice().transaction(|tx| {
            tx[0].remove(bot.id.as_bytes().as_slice())?;
            tx[1].remove(index.as_slice())?;
            Ok(())
        })?;
        Ok(self.ticket())
    }

    /// Inserts or replaces a keyword rule.
    pub fn put_rule(&self, rule: &KeywordRule) -> Result<CommitTicket, StoreError> {
        self.put(&self.trees().rules, &join(&[rule.chatbot_id.as_bytes(), rule.id.as_bytes()]), rule)
    }

    /// A keyword rule of a chatbot.
    pub fn rule(&self, bot: ChatbotId, id: RuleId) -> Result<Option<KeywordRule>, StoreError> {
        self.get(&self.trees().rules, "rules", &join(&[bot.as_bytes(), id.as_bytes()]))
    }

    /// All rules of a chatbot (unordered).
    pub fn rules_of(&self, bot: ChatbotId) -> Result<Vec<KeywordRule>, StoreError> {
        self.scan(&self.trees().rules, "rules", bot.as_bytes())
    }

    /// Deletes a rule; `None` when there was none.
    pub fn delete_rule(&self, bot: ChatbotId, id: RuleId) -> Result<Option<CommitTicket>, StoreError> {
        self.check_write()?;
        let removed = self.trees().rules.remove(join(&[bot.as_bytes(), id.as_bytes()]))?;
        Ok(removed.map(|_| self.ticket()))
    }

    fn channel_key(bot: ChatbotId, channel_id: &str) -> Vec<u8> {
        join(&[bot.as_bytes(), channel_id.as_bytes()])
    }

    /// A channel of a chatbot by the provider's channel id.
    pub fn channel(&self, bot: ChatbotId, channel_id: &str) -> Result<Option<Channel>, StoreError> {
        self.get(&self.trees().channels, "channels", &Self::channel_key(bot, channel_id))
    }

    /// The chatbot's channels.
    pub fn channels_of(&self, bot: ChatbotId) -> Result<Vec<Channel>, StoreError> {
        let mut channels: Vec<Channel> = self.scan(&self.trees().channels, "channels", bot.as_bytes())?;
        channels.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(channels)
    }

    /// Inserts or replaces a channel.
    pub fn put_channel(&self, channel: &Channel) -> Result<CommitTicket, StoreError> {
        self.put(&self.trees().channels, &Self::channel_key(channel.chatbot_id, &channel.id), channel)
    }

    /// Stores `channel` unless the chatbot already has one with its id; returns the one stored.
    /// Safe under concurrent first messages on different conversations of one channel.
    pub fn insert_channel_if_absent(&self, channel: &Channel) -> Result<(Channel, CommitTicket), StoreError> {
        self.check_write()?;
        let key = Self::channel_key(channel.chatbot_id, &channel.id);
        let tree = &self.trees().channels;
        match tree.compare_and_swap(&key, None as Option<&[u8]>, Some(encode(channel)?))? {
            Ok(()) => Ok((channel.clone(), self.ticket())),
            Err(current) => match current.current {
                Some(bytes) => Ok((decode("channels", &bytes)?, CommitTicket::NONE)),
                None => self.insert_channel_if_absent(channel),
            },
        }
    }

    // --- contacts and conversations ------------------------------------------------------

    /// A contact by id.
    pub fn contact(&self, id: ContactId) -> Result<Option<Contact>, StoreError> {
        self.get(&self.trees().contacts, "contacts", id.as_bytes())
    }

    /// A conversation by id.
    pub fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>, StoreError> {
        self.get::<Conversation>(&self.trees().conversations, "conversations", id.as_bytes())?
            .map(|c| self.with_newest_message(c))
            .transpose()
    }

    /// `c` with `next_seq`, `last_message_at` and `updated_at` brought up to its newest stored
    /// message. A turn that only appends messages does not rewrite the conversation record
    /// (see [`ConversationWrite::conversation`]): those three fields follow from the messages.
    fn with_newest_message(&self, mut c: Conversation) -> Result<Conversation, StoreError> {
        let Some(Message { seq, created_at, .. }) = self.newest_message(c.id)? else { return Ok(c) };
        if seq >= c.next_seq {
            c.next_seq = seq + 1;
            c.last_message_at = Some(c.last_message_at.map_or(created_at, |at| at.max(created_at)));
            c.updated_at = c.updated_at.max(created_at);
        }
        Ok(c)
    }

    /// Applies one actor turn atomically.
    ///
    /// A turn that is the whole answer to its provider id (it starts with that message and
    /// holds the replies) keeps the answer itself ([`turns::encode_answer`]) and writes no
    /// provider-id record: the actor's window of recent ids finds it ([`recent`]). The common
    /// turn, a message with its replies and nothing else, is then one insert with no journal.
    /// Any other turn (one that changes more) is one journaled batch; one that answers a
    /// message stored by an earlier turn, as a late AI reply does, writes the whole answer in
    /// the provider-id record. First, when a turn leaves the actor's window, its id gets a
    /// record ([`ConversationWrite::leaving_window`]).
    pub fn write_conversation(&self, write: &ConversationWrite<'_>) -> Result<CommitTicket, StoreError> {
        self.check_write()?;
        let t = self.trees();
        let dedupe_key = |provider_id: &str, outcome: &HandleOutcome| {
            join(&[outcome.conversation_id.as_bytes(), provider_id.as_bytes()])
        };
        // The turn is the whole answer to its provider id: it keeps it, and no record is written.
        let answered_by_turn = write
            .dedupe
            .is_some_and(|(provider_id, outcome)| answer_follows_from(write.messages, provider_id, outcome));
        let only_messages = !write.created
            && write.conversation.is_none()
            && write.contact.is_none()
            && write.session.is_none()
            && write.transfer.is_none()
            && write.deliveries.is_empty()
            && (write.dedupe.is_none() || answered_by_turn);
        let turn = match write.messages.first() {
            Some(first) => {
                let record = match write.dedupe {
                    Some((_, outcome)) if answered_by_turn => turns::encode_answer(write.messages, outcome.bot_active)?,
                    _ => turns::encode(write.messages)?,
                };
                Some((join(&[first.conversation_id.as_bytes(), &u64_be(first.seq)]), record))
            }
            None => None,
        };
        if let (Some((seq, contact)), Some(first)) = (write.leaving_window, write.messages.first()) {
            // Before the turn that pushes it out: sled recovers a prefix of its log, so the
            // record is on disk whenever the turn is.
            self.keep_answer_leaving_window(first.conversation_id, contact, seq)?;
        }
        if let (true, Some((key, record))) = (only_messages, &turn) {
            let _writer = self.exclusive();
            let mut leaf = write.leaf_hint.map_or_else(LeafHint::default, Cell::get);
            t.messages.insert_hinted(key.as_slice(), record.as_slice(), &mut leaf)?;
            if let Some(hint) = write.leaf_hint {
                hint.set(leaf);
            }
            return Ok(self.ticket());
        }
        let conversation = write.conversation.map(|c| encode(c).map(|bytes| (c, bytes))).transpose()?;
        let contact = write.contact.map(|c| encode(c).map(|bytes| (c.id, bytes))).transpose()?;
        let dedupe = write
            .dedupe
            .filter(|_| !answered_by_turn)
            .map(|(provider_id, outcome)| {
                dedupe_record(outcome).map(|record| (dedupe_key(provider_id, outcome), record))
            })
            .transpose()?;
        let mut batch = journal::Batch::default();
        if let Some((c, bytes)) = conversation {
            if write.created {
                batch.put(
                    &t.conv_by_bot,
                    join(&[c.chatbot_id.as_bytes(), &u64_be(millis(c.created_at)), c.id.as_bytes()]),
                    Vec::new(),
                );
                batch.put(&t.conv_by_contact, join(&[c.contact_id.as_bytes(), c.id.as_bytes()]), Vec::new());
            }
            batch.put(&t.conversations, c.id.as_bytes().to_vec(), bytes);
        }
        if let Some((id, bytes)) = contact {
            batch.put(&t.contacts, id.as_bytes().to_vec(), bytes);
        }
        if let Some((key, record)) = turn {
            batch.put(&t.messages, key, record);
        }
        if let Some((key, record)) = dedupe {
            batch.put(&t.dedupe, key, record);
        }
        if let Some(session) = write.session {
            batch.put(&t.sessions, session.id.as_bytes().to_vec(), encode(session)?);
            batch.put(&t.sessions_by_tenant, session_index(session), Vec::new());
            batch.put(
                &t.sessions_by_conversation,
                join(&[session.conversation_id.as_bytes(), session.id.as_bytes()]),
                Vec::new(),
            );
        }
        for delivery in write.deliveries {
            batch.put(&t.outbox, delivery.id.as_bytes().to_vec(), encode(delivery)?);
            batch.put(&t.outbox_by_tenant, join(&[delivery.tenant_id.as_bytes(), delivery.id.as_bytes()]), Vec::new());
            batch.put(&t.outbox_due, due_key(delivery), Vec::new());
            if let Some(key) = order_key(delivery) {
                batch.put(&t.outbox_conv, key, Vec::new());
            }
        }
        if let Some(transfer) = write.transfer {
            batch.put(&t.transfers, transfer.id.as_bytes().to_vec(), encode(transfer)?);
            batch.put(&t.transfers_by_tenant, transfer_index(transfer), Vec::new());
            batch.put(
                &t.transfers_by_conversation,
                join(&[transfer.conversation_id.as_bytes(), transfer.id.as_bytes()]),
                Vec::new(),
            );
            if transfer.status == TransferStatus::Active && transfer.assigned_at.is_none() {
                batch.put(&t.transfer_queue, queue_key(transfer), Vec::new());
            } else {
                batch.remove(&t.transfer_queue, queue_key(transfer));
            }
        }
        self.apply(batch)
    }

    /// The answer first given to `provider_message_id` in a conversation (of `contact`), if
    /// still kept: in its provider-id record, or in the turn at `in_turn` when that turn is
    /// the answer to it (the actor's window names the turn: see [`recent`]).
    pub fn dedupe(
        &self,
        conversation: ConversationId,
        contact: ContactId,
        provider_message_id: &str,
        in_turn: Option<u64>,
    ) -> Result<Option<HandleOutcome>, StoreError> {
        let key = join(&[conversation.as_bytes(), provider_message_id.as_bytes()]);
        let Some(record) = self.trees().dedupe.get(key)? else {
            let Some(seq) = in_turn else { return Ok(None) };
            let Some(turn) = self.trees().messages.get(join(&[conversation.as_bytes(), &u64_be(seq)]))? else {
                return Ok(None);
            };
            // A turn that is the answer itself ([`turns::encode_answer`]).
            let Some(bot_active) = turns::answer_bot_active(&turn) else { return Ok(None) };
            let messages = turns::decode(conversation, &turn)?;
            return Ok(answer_from_turn(conversation, contact, provider_message_id, bot_active, &messages));
        };
        let short = || StoreError::Corrupt { tree: "dedupe", message: "short record".into() };
        match record.get(8..).ok_or_else(short)?.split_first().ok_or_else(short)? {
            (&TURN, pointer) => {
                // Written apart from its turn: it counts only if the turn made it to the store
                // too. A crash between the two inserts leaves no turn at the seq, or a later
                // turn that took it. (Retention rewrites the record before deleting the turn.)
                let seq = keys::read_u64_be(pointer, 0).ok_or_else(short)?;
                let Some(turn) = self.trees().messages.get(join(&[conversation.as_bytes(), &u64_be(seq)]))? else {
                    return Ok(None);
                };
                Ok(answer_of_turn(conversation, provider_message_id, pointer, &turns::decode(conversation, &turn)?))
            }
            _ => Ok(Some(decode("dedupe", &record[8..])?)),
        }
    }

    /// Forgets provider message ids recorded before `cutoff`; returns how many.
    ///
    /// A background sweep over the whole tree (each record starts with its time), so the hot
    /// path writes one provider-id record per message and no time index.
    pub fn expire_dedupe(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<usize, StoreError> {
        self.check_write()?;
        let t = self.trees();
        let cutoff = millis(cutoff);
        let mut expired = 0;
        for entry in t.dedupe.iter() {
            let (key, value) = entry?;
            if keys::read_u64_be(&value, 0).is_some_and(|created| created < cutoff) {
                t.dedupe.remove(key)?;
                expired += 1;
            }
        }
        Ok(expired)
    }

    /// Messages of a conversation with `seq > after_seq`, in order, at most `limit`.
    pub fn messages(
        &self,
        conversation: ConversationId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let tree = &self.trees().messages;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let wanted = join(&[conversation.as_bytes(), &u64_be(after_seq.saturating_add(1))]);
        // The turn holding the first wanted message starts at it or before it.
        let start = match tree.range(join(&[conversation.as_bytes(), &u64_be(0)])..=wanted.clone()).keys().next_back() {
            Some(key) => key?.to_vec(),
            None => wanted,
        };
        let end = join(&[conversation.as_bytes(), &u64_be(u64::MAX)]);
        for value in tree.range(start..=end).values() {
            for message in turns::decode(conversation, &value?)? {
                if message.seq > after_seq {
                    out.push(message);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The window of a conversation's newest turns and their provider ids, for its actor
    /// ([`recent`]); `next_seq` is the conversation's, which tells a conversation without
    /// turns yet from one whose turns were all deleted.
    pub fn recent_provider_ids(
        &self,
        conversation: ConversationId,
        next_seq: u64,
    ) -> Result<recent::RecentProviderIds, StoreError> {
        let mut newest = Vec::new();
        let mut more = false;
        for value in self.trees().messages.scan_prefix(conversation.as_bytes()).values().rev() {
            if newest.len() == recent::WINDOW {
                more = true;
                break;
            }
            let turn = turns::decode(conversation, &value?)?;
            if let Some(first) = turn.into_iter().next() {
                newest.push((first.provider_message_id, first.seq));
            }
        }
        // Every turn back to the first: no provider id of this conversation is elsewhere.
        let complete = !more && newest.last().map_or(next_seq <= 1, |&(_, seq)| seq == 1);
        Ok(recent::RecentProviderIds::rebuilt(newest.iter().rev().map(|(id, seq)| (id.as_deref(), *seq)), complete))
    }

    /// The turn at `seq` leaves its actor's window: when it is the answer to its provider id
    /// and that id has no record, it gets a pointer record ([`dedupe_pointer`]).
    fn keep_answer_leaving_window(
        &self,
        conversation: ConversationId,
        contact: ContactId,
        seq: u64,
    ) -> Result<(), StoreError> {
        let t = self.trees();
        let Some(record) = t.messages.get(join(&[conversation.as_bytes(), &u64_be(seq)]))? else { return Ok(()) };
        let Some(bot_active) = turns::answer_bot_active(&record) else { return Ok(()) };
        let turn = turns::decode(conversation, &record)?;
        let Some(first) = turn.first() else { return Ok(()) };
        let Some(provider_message_id) = first.provider_message_id.as_deref() else { return Ok(()) };
        // A record already there (a late AI reply's, say) has the fuller answer: keep it.
        let _ = t.dedupe.compare_and_swap(
            join(&[conversation.as_bytes(), provider_message_id.as_bytes()]),
            None as Option<&[u8]>,
            Some(dedupe_pointer(seq, bot_active, contact)),
        )?;
        Ok(())
    }

    /// The highest stored `seq` of a conversation (0 when it has none).
    pub fn last_seq(&self, conversation: ConversationId) -> Result<u64, StoreError> {
        Ok(self.newest_message(conversation)?.map_or(0, |m| m.seq))
    }

    /// A conversation's newest stored message: the last of its last turn (one reverse seek).
    fn newest_message(&self, conversation: ConversationId) -> Result<Option<Message>, StoreError> {
        match self.trees().messages.scan_prefix(conversation.as_bytes()).values().next_back() {
            Some(value) => Ok(turns::decode(conversation, &value?)?.pop()),
            None => Ok(None),
        }
    }

    /// A page of a chatbot's conversations, newest first, starting after `cursor`.
    /// Returns the page and the cursor for the next one.
    pub fn conversations_of(
        &self,
        bot: ChatbotId,
        cursor: Option<&ConversationCursor>,
        limit: usize,
        mut keep: impl FnMut(&Conversation) -> bool,
    ) -> Result<(Vec<Conversation>, Option<ConversationCursor>), StoreError> {
        let t = self.trees();
        let start = bot.as_bytes().to_vec();
        let end = match cursor {
            Some(c) => join(&[bot.as_bytes(), &u64_be(c.created_ms), c.id.as_bytes()]),
            None => join(&[bot.as_bytes(), &[0xff; 24]]),
        };
        let mut page = Vec::new();
        let mut last = None;
        for key in t.conv_by_bot.range(start..end).keys().rev() {
            let key = key?;
            let (Some(created_ms), Some(id)) = (keys::read_u64_be(&key, 16), ConversationId::from_slice(&key[24..]))
            else {
                continue;
            };
            last = Some(ConversationCursor { created_ms, id });
            if let Some(c) = self.conversation(id)? {
                if keep(&c) {
                    page.push(c);
                    if page.len() == limit {
                        break;
                    }
                }
            }
        }
        let next = if page.len() == limit { last } else { None };
        Ok((page, next))
    }

    /// The conversations of a contact.
    pub fn conversations_of_contact(&self, contact: ContactId) -> Result<Vec<Conversation>, StoreError> {
        let mut out = Vec::new();
        for key in self.trees().conv_by_contact.scan_prefix(contact.as_bytes()).keys() {
            if let Some(c) =
                ConversationId::from_slice(&key?[16..]).map(|id| self.conversation(id)).transpose()?.flatten()
            {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Deletes a conversation with everything in it: messages, provider ids, sessions and
    /// transfers (waiting ones leave their queue).
    pub fn delete_conversation(&self, c: &Conversation) -> Result<CommitTicket, StoreError> {
        self.check_write()?;
        let t = self.trees();
        let by_bot = join(&[c.chatbot_id.as_bytes(), &u64_be(millis(c.created_at)), c.id.as_bytes()]);
        let by_contact = join(&[c.contact_id.as_bytes(), c.id.as_bytes()]);
        // The record and its index entries go first and together: once they are gone the
        // conversation is unreachable, so a crash before the rest leaves only invisible rows.
        let _writer = self.exclusive();
        [&t.conversations, &t.conv_by_bot, &t.conv_by_contact].as_slice().transaction(|tx| {
            tx[0].remove(c.id.as_bytes().as_slice())?;
            tx[1].remove(by_bot.as_slice())?;
            tx[2].remove(by_contact.as_slice())?;
            Ok::<(), ConflictableTransactionError<StoreError>>(())
        })?;
        for key in t.sessions_by_conversation.scan_prefix(c.id.as_bytes()).keys() {
            let key = key?;
            if let Some(session) = SessionId::from_slice(&key[16..]).map(|id| self.session(id)).transpose()?.flatten() {
                t.sessions_by_tenant.remove(session_index(&session))?;
                t.sessions.remove(session.id.as_bytes())?;
            }
            t.sessions_by_conversation.remove(key)?;
        }
        for key in t.transfers_by_conversation.scan_prefix(c.id.as_bytes()).keys() {
            let key = key?;
            if let Some(transfer) =
                TransferId::from_slice(&key[16..]).map(|id| self.transfer(id)).transpose()?.flatten()
            {
                t.transfer_queue.remove(queue_key(&transfer))?;
                t.transfers_by_tenant.remove(transfer_index(&transfer))?;
                t.transfers.remove(transfer.id.as_bytes())?;
            }
            t.transfers_by_conversation.remove(key)?;
        }
        for tree in [&t.messages, &t.dedupe] {
            let mut batch = sled::Batch::default();
            for key in tree.scan_prefix(c.id.as_bytes()).keys() {
                batch.remove(key?);
            }
            tree.apply_batch(batch)?;
        }
        Ok(self.ticket())
    }

    /// The ids of a chatbot's conversations.
    pub fn conversation_ids_of(&self, bot: ChatbotId) -> Result<Vec<ConversationId>, StoreError> {
        let mut ids = Vec::new();
        for key in self.trees().conv_by_bot.scan_prefix(bot.as_bytes()).keys() {
            if let Some(id) = ConversationId::from_slice(&key?[24..]) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// The conversations whose open or paused session runs `flow` (to reconcile after the
    /// flow changed).
    pub fn sessions_in_flow(&self, tenant: TenantId, flow: FlowId) -> Result<Vec<Session>, StoreError> {
        self.sessions_of(tenant, usize::MAX, |s| {
            s.current_flow_id == Some(flow) && s.status != crate::model::SessionStatus::Closed
        })
    }
}

impl Store {
    // --- flows ----------------------------------------------------------------------------

    /// Inserts or replaces a flow.
    pub fn put_flow(&self, flow: &Flow) -> Result<CommitTicket, StoreError> {
        self.put(&self.trees().flows, &join(&[flow.chatbot_id.as_bytes(), flow.id.as_bytes()]), flow)
    }

    /// A flow of a chatbot.
    pub fn flow(&self, bot: ChatbotId, id: FlowId) -> Result<Option<Flow>, StoreError> {
        self.get(&self.trees().flows, "flows", &join(&[bot.as_bytes(), id.as_bytes()]))
    }

    /// A chatbot's flows, oldest first.
    pub fn flows_of(&self, bot: ChatbotId) -> Result<Vec<Flow>, StoreError> {
        let mut flows: Vec<Flow> = self.scan(&self.trees().flows, "flows", bot.as_bytes())?;
        flows.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(flows)
    }

    /// Deletes a flow; `None` when there was none.
    pub fn delete_flow(&self, bot: ChatbotId, id: FlowId) -> Result<Option<CommitTicket>, StoreError> {
        self.check_write()?;
        let removed = self.trees().flows.remove(join(&[bot.as_bytes(), id.as_bytes()]))?;
        Ok(removed.map(|_| self.ticket()))
    }

    // --- sessions -------------------------------------------------------------------------

    /// A session by id.
    pub fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        self.get(&self.trees().sessions, "sessions", id.as_bytes())
    }

    /// The tenant's sessions, newest first, that `keep` accepts, at most `limit`.
    pub fn sessions_of(
        &self,
        tenant: TenantId,
        limit: usize,
        mut keep: impl FnMut(&Session) -> bool,
    ) -> Result<Vec<Session>, StoreError> {
        let mut out = Vec::new();
        for key in self.trees().sessions_by_tenant.scan_prefix(tenant.as_bytes()).keys().rev() {
            let key = key?;
            if let Some(session) = SessionId::from_slice(&key[24..]).map(|id| self.session(id)).transpose()?.flatten() {
                if keep(&session) {
                    out.push(session);
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    // --- teams and agents -----------------------------------------------------------------

    /// Inserts or replaces a team.
    pub fn put_team(&self, team: &Team) -> Result<CommitTicket, StoreError> {
        self.put(&self.trees().teams, &join(&[team.tenant_id.as_bytes(), team.id.as_bytes()]), team)
    }

    /// A team of a tenant.
    pub fn team(&self, tenant: TenantId, id: TeamId) -> Result<Option<Team>, StoreError> {
        self.get(&self.trees().teams, "teams", &join(&[tenant.as_bytes(), id.as_bytes()]))
    }

    /// The tenant's teams, oldest first.
    pub fn teams_of(&self, tenant: TenantId) -> Result<Vec<Team>, StoreError> {
        let mut teams: Vec<Team> = self.scan(&self.trees().teams, "teams", tenant.as_bytes())?;
        teams.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(teams)
    }

    /// Inserts or replaces an agent.
    pub fn put_agent(&self, agent: &Agent) -> Result<CommitTicket, StoreError> {
        self.put(&self.trees().agents, &join(&[agent.tenant_id.as_bytes(), agent.id.as_bytes()]), agent)
    }

    /// An agent of a tenant.
    pub fn agent(&self, tenant: TenantId, id: AgentId) -> Result<Option<Agent>, StoreError> {
        self.get(&self.trees().agents, "agents", &join(&[tenant.as_bytes(), id.as_bytes()]))
    }

    /// The tenant's agents, oldest first.
    pub fn agents_of(&self, tenant: TenantId) -> Result<Vec<Agent>, StoreError> {
        let mut agents: Vec<Agent> = self.scan(&self.trees().agents, "agents", tenant.as_bytes())?;
        agents.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(agents)
    }

    // --- transfers ------------------------------------------------------------------------

    /// A transfer by id.
    pub fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        self.get(&self.trees().transfers, "transfers", id.as_bytes())
    }

    /// The tenant's transfers, oldest first.
    pub fn transfers_of(&self, tenant: TenantId) -> Result<Vec<Transfer>, StoreError> {
        let mut out = Vec::new();
        for key in self.trees().transfers_by_tenant.scan_prefix(tenant.as_bytes()).keys() {
            if let Some(t) = TransferId::from_slice(&key?[24..]).map(|id| self.transfer(id)).transpose()?.flatten() {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// Gives the oldest unassigned active transfer of `queue` to `agent` (or just takes it
    /// out of the queue when no agent is named). Two concurrent pickups never get the same transfer: the claim
    /// is a serializable transaction over the transfer and its queue entry.
    pub fn pick_up(
        &self,
        tenant: TenantId,
        queue: Queue,
        agent: Option<AgentId>,
    ) -> Result<Option<(Transfer, CommitTicket)>, StoreError> {
        self.check_write()?;
        let t = self.trees();
        loop {
            let oldest = match queue {
                Queue::General => {
                    t.transfer_queue.scan_prefix(join(&[tenant.as_bytes(), &queue_id(None)])).keys().next()
                }
                Queue::Team(team) => {
                    t.transfer_queue.scan_prefix(join(&[tenant.as_bytes(), &queue_id(Some(team))])).keys().next()
                }
                // Each queue is ordered by time, then id; the oldest overall is the least time
                // among them, then the least id (ids are time-ordered within the millisecond), so
                // transfers opened in the same millisecond leave in the order they came.
                Queue::Any => t.transfer_queue.scan_prefix(tenant.as_bytes()).keys().min_by_key(|k| match k {
                    Ok(k) => (keys::read_u64_be(k, 32).unwrap_or(u64::MAX), k[k.len().saturating_sub(16)..].to_vec()),
                    Err(_) => (0, Vec::new()),
                }),
            };
            let Some(key) = oldest.transpose()? else { return Ok(None) };
            let Some(id) = TransferId::from_slice(&key[key.len() - 16..]) else { return Ok(None) };
            let _writer = self.exclusive();
            let claimed = [&t.transfers, &t.transfer_queue].as_slice().transaction(|tx| {
                if tx[1].get(&key)?.is_none() {
                    return Ok(None); // somebody else took it; look again
                }
                tx[1].remove(&key)?;
                let Some(bytes) = tx[0].get(id.as_bytes())? else { return Ok(None) };
                let mut transfer: Transfer =
                    decode("transfers", &bytes).map_err(ConflictableTransactionError::Abort)?;
                if transfer.status != TransferStatus::Active || transfer.assigned_at.is_some() {
                    return Ok(None);
                }
                let at = crate::model::now();
                transfer.agent_id = agent;
                transfer.assigned_at = Some(at);
                transfer.updated_at = at;
                let bytes = encode(&transfer).map_err(ConflictableTransactionError::Abort)?;
                tx[0].insert(id.as_bytes().as_slice(), bytes)?;
                Ok(Some(transfer))
            })?;
            if let Some(transfer) = claimed {
                return Ok(Some((transfer, self.ticket())));
            }
        }
    }

    /// Assigns a transfer to `agent` (taking it out of its queue).
    pub fn assign_transfer(
        &self,
        id: TransferId,
        agent: AgentId,
    ) -> Result<Option<(Transfer, CommitTicket)>, StoreError> {
        self.check_write()?;
        let t = self.trees();
        let _writer = self.exclusive();
        let result = [&t.transfers, &t.transfer_queue].as_slice().transaction(|tx| {
            let Some(bytes) = tx[0].get(id.as_bytes())? else { return Ok(None) };
            let mut transfer: Transfer = decode("transfers", &bytes).map_err(ConflictableTransactionError::Abort)?;
            tx[1].remove(queue_key(&transfer))?;
            let at = crate::model::now();
            transfer.agent_id = Some(agent);
            transfer.assigned_at = Some(at);
            transfer.updated_at = at;
            let bytes = encode(&transfer).map_err(ConflictableTransactionError::Abort)?;
            tx[0].insert(id.as_bytes().as_slice(), bytes)?;
            Ok(Some(transfer))
        })?;
        Ok(result.map(|t| (t, self.ticket())))
    }
}

/// Which transfer queue a pickup takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// Every queue of the tenant.
    Any,
    /// Transfers without a team.
    General,
    /// One team's transfers.
    Team(TeamId),
}

/// Counts of transfers waiting for an agent: the general queue and each team's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub general: u64,
    pub teams: std::collections::BTreeMap<TeamId, u64>,
}

impl Store {
    /// How many transfers wait in each queue of the tenant.
    pub fn queue_counts(&self, tenant: TenantId) -> Result<QueueCounts, StoreError> {
        let mut counts = QueueCounts::default();
        for key in self.trees().transfer_queue.scan_prefix(tenant.as_bytes()).keys() {
            let key = key?;
            match TeamId::from_slice(&key[16..32]) {
                Some(team) if team.0.as_bytes() != &[0; 16] => *counts.teams.entry(team).or_default() += 1,
                _ => counts.general += 1,
            }
        }
        Ok(counts)
    }
}

/// The outbox due-index key of a delivery.
fn due_key(d: &Delivery) -> Vec<u8> {
    join(&[&u64_be(millis(d.next_attempt_at)), d.id.as_bytes()])
}

/// Adds to `batch` the removal of delivery `d` with its index entries.
fn remove_delivery<'t>(t: &'t Trees, batch: &mut journal::Batch<'t>, d: &Delivery) {
    batch.remove(&t.outbox, d.id.as_bytes().to_vec());
    batch.remove(&t.outbox_due, due_key(d));
    if let Some(key) = order_key(d) {
        batch.remove(&t.outbox_conv, key);
    }
    batch.remove(&t.outbox_by_tenant, join(&[d.tenant_id.as_bytes(), d.id.as_bytes()]));
}

/// The per-conversation order key of a delivery to the reply webhook.
fn order_key(d: &Delivery) -> Option<Vec<u8>> {
    match d.kind {
        DeliveryKind::BotReply | DeliveryKind::AgentMessage => {
            Some(join(&[d.conversation_id.as_bytes(), &u64_be(d.seq), d.id.as_bytes()]))
        }
        DeliveryKind::HumanTakeover => None,
    }
}

impl Store {
    /// A delivery by id.
    pub fn delivery(&self, id: DeliveryId) -> Result<Option<Delivery>, StoreError> {
        self.get(&self.trees().outbox, "outbox", id.as_bytes())
    }

    /// Pending deliveries due at or before `now`, oldest due first, at most `limit`.
    pub fn due_deliveries(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let end = u64_be(millis(now).saturating_add(1));
        let mut out = Vec::new();
        for key in self.trees().outbox_due.range(..end.as_slice()).keys().take(limit) {
            if let Some(d) = DeliveryId::from_slice(&key?[8..]).map(|id| self.delivery(id)).transpose()?.flatten() {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// When the next pending delivery is due, if any.
    pub fn next_due(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        Ok(match self.trees().outbox_due.first()? {
            Some((key, _)) => {
                keys::read_u64_be(&key, 0).and_then(|ms| chrono::DateTime::from_timestamp_millis(ms as i64))
            }
            None => None,
        })
    }

    /// Whether `d` is the earliest pending reply-webhook delivery of its conversation (so it
    /// may go out without overtaking an earlier one). Takeover calls are never held back.
    pub fn is_next_in_order(&self, d: &Delivery) -> Result<bool, StoreError> {
        let Some(mine) = order_key(d) else { return Ok(true) };
        Ok(match self.trees().outbox_conv.scan_prefix(d.conversation_id.as_bytes()).keys().next() {
            Some(first) => first?.as_ref() == mine.as_slice(),
            None => true,
        })
    }

    /// The earliest pending reply-webhook delivery of a conversation (the one the others wait for).
    pub fn head_in_order(&self, conversation: ConversationId) -> Result<Option<Delivery>, StoreError> {
        match self.trees().outbox_conv.scan_prefix(conversation.as_bytes()).keys().next() {
            Some(key) => {
                let key = key?;
                match DeliveryId::from_slice(&key[key.len() - 16..]) {
                    Some(id) => self.delivery(id),
                    None => Ok(None),
                }
            }
            None => Ok(None),
        }
    }

    /// Stores a delivery's new state and moves its index entries: due while pending, out of
    /// the conversation order once settled.
    pub fn update_delivery(&self, d: &Delivery) -> Result<CommitTicket, StoreError> {
        self.check_write()?;
        let t = self.trees();
        let record = encode(d)?;
        let writer = self.exclusive();
        // A delivery deleted meanwhile (its contact was erased) is not brought back.
        let Some(old) = t.outbox.get(d.id.as_bytes())? else { return Ok(CommitTicket::NONE) };
        let old: Delivery = decode("outbox", &old)?;
        let mut batch = journal::Batch::default();
        batch.remove(&t.outbox_due, due_key(&old));
        batch.put(&t.outbox, d.id.as_bytes().to_vec(), record);
        if d.status == DeliveryStatus::Pending {
            batch.put(&t.outbox_due, due_key(d), Vec::new());
            if let Some(key) = order_key(d) {
                batch.put(&t.outbox_conv, key, Vec::new());
            }
        } else if let Some(key) = order_key(d) {
            batch.remove(&t.outbox_conv, key);
        }
        batch.apply(&t.journal)?;
        drop(writer);
        Ok(self.ticket())
    }

    /// The tenant's deliveries, newest first, that `keep` accepts, at most `limit`.
    pub fn deliveries_of(
        &self,
        tenant: TenantId,
        limit: usize,
        mut keep: impl FnMut(&Delivery) -> bool,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut out = Vec::new();
        for key in self.trees().outbox_by_tenant.scan_prefix(tenant.as_bytes()).keys().rev() {
            if let Some(d) = DeliveryId::from_slice(&key?[16..]).map(|id| self.delivery(id)).transpose()?.flatten() {
                if keep(&d) {
                    out.push(d);
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// How many deliveries are pending (for `/metrics` and shutdown).
    pub fn pending_deliveries(&self) -> usize {
        self.trees().outbox_due.len()
    }

    /// Deletes the deliveries settled (delivered, failed or cancelled) before `cutoff`, with
    /// their index entries; returns how many. Pending ones stay whatever their age. Delivery
    /// ids are time-ordered, so the sweep reads from the oldest and stops at the first made
    /// after `cutoff` (one made later was settled later too).
    pub fn expire_deliveries(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<usize, StoreError> {
        self.check_write()?;
        let t = self.trees();
        let settled_before_cutoff = |d: &Delivery| d.status != DeliveryStatus::Pending && d.updated_at < cutoff;
        let mut expired = 0;
        for entry in t.outbox.iter() {
            let (key, value) = entry?;
            let d: Delivery = decode("outbox", &value)?;
            if d.created_at >= cutoff {
                break;
            }
            if !settled_before_cutoff(&d) {
                continue;
            }
            let _writer = self.exclusive();
            // Read again under the writer lock: a retry may have made it pending meanwhile.
            let Some(now) = t.outbox.get(&key)? else { continue };
            let now: Delivery = decode("outbox", &now)?;
            if !settled_before_cutoff(&now) {
                continue;
            }
            let mut batch = journal::Batch::default();
            remove_delivery(t, &mut batch, &now);
            batch.apply(&t.journal)?;
            expired += 1;
        }
        Ok(expired)
    }
}

fn session_index(session: &Session) -> Vec<u8> {
    join(&[session.tenant_id.as_bytes(), &u64_be(millis(session.started_at)), session.id.as_bytes()])
}

fn transfer_index(transfer: &Transfer) -> Vec<u8> {
    join(&[transfer.tenant_id.as_bytes(), &u64_be(millis(transfer.transferred_at)), transfer.id.as_bytes()])
}

/// The queue part of a transfer-queue key: the team's id, or zeros for the general queue.
fn queue_id(team: Option<TeamId>) -> [u8; 16] {
    team.map_or([0; 16], |t| *t.as_bytes())
}

fn queue_key(transfer: &Transfer) -> Vec<u8> {
    join(&[
        transfer.tenant_id.as_bytes(),
        &queue_id(transfer.team_id),
        &u64_be(millis(transfer.transferred_at)),
        transfer.id.as_bytes(),
    ])
}

/// Where a page of conversations ended; opaque to clients as `"{created_ms}_{id}"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationCursor {
    pub created_ms: u64,
    pub id: ConversationId,
}

impl std::fmt::Display for ConversationCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.created_ms, self.id)
    }
}

impl std::str::FromStr for ConversationCursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, id) = s.split_once('_').ok_or(())?;
        Ok(Self { created_ms: ms.parse().map_err(|_| ())?, id: id.parse().map_err(|_| ())? })
    }
}

impl Store {
    /// Inserts or replaces an AI context.
    pub fn put_ai_context(&self, context: &crate::model::AiContext) -> Result<CommitTicket, StoreError> {
        self.put(&self.trees().ai_contexts, &join(&[context.chatbot_id.as_bytes(), context.id.as_bytes()]), context)
    }

    /// An AI context of a chatbot.
    pub fn ai_context(
        &self,
        bot: ChatbotId,
        id: crate::model::AiContextId,
    ) -> Result<Option<crate::model::AiContext>, StoreError> {
        self.get(&self.trees().ai_contexts, "ai_contexts", &join(&[bot.as_bytes(), id.as_bytes()]))
    }

    /// A chatbot's AI contexts, highest priority first (ties: oldest first).
    pub fn ai_contexts_of(&self, bot: ChatbotId) -> Result<Vec<crate::model::AiContext>, StoreError> {
        let mut contexts: Vec<crate::model::AiContext> =
            self.scan(&self.trees().ai_contexts, "ai_contexts", bot.as_bytes())?;
        contexts
            .sort_by(|a, b| b.priority.cmp(&a.priority).then(a.created_at.cmp(&b.created_at)).then(a.id.cmp(&b.id)));
        Ok(contexts)
    }

    /// Deletes an AI context; `None` when there was none.
    pub fn delete_ai_context(
        &self,
        bot: ChatbotId,
        id: crate::model::AiContextId,
    ) -> Result<Option<CommitTicket>, StoreError> {
        self.check_write()?;
        let removed = self.trees().ai_contexts.remove(join(&[bot.as_bytes(), id.as_bytes()]))?;
        Ok(removed.map(|_| self.ticket()))
    }

    /// The last `limit` messages of a conversation, in order.
    pub fn recent_messages(&self, conversation: ConversationId, limit: usize) -> Result<Vec<Message>, StoreError> {
        let mut out: Vec<Message> = Vec::with_capacity(limit);
        for value in self.trees().messages.scan_prefix(conversation.as_bytes()).values().rev() {
            if out.len() >= limit {
                break;
            }
            let turn = turns::decode(conversation, &value?)?;
            out.extend(turn.into_iter().rev().take(limit - out.len()));
        }
        out.reverse();
        Ok(out)
    }
}

impl Store {
    // --- data lifecycle: erasure, export, retention ------------------------------------------

    /// The ids of a contact's conversations (one per channel it wrote on).
    pub fn conversation_ids_of_contact(&self, contact: ContactId) -> Result<Vec<ConversationId>, StoreError> {
        let mut ids = Vec::new();
        for key in self.trees().conv_by_contact.scan_prefix(contact.as_bytes()).keys() {
            if let Some(id) = ConversationId::from_slice(&key?[16..]) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Every session a conversation has had, oldest first.
    pub fn sessions_of_conversation(&self, conversation: ConversationId) -> Result<Vec<Session>, StoreError> {
        let mut out = Vec::new();
        for key in self.trees().sessions_by_conversation.scan_prefix(conversation.as_bytes()).keys() {
            if let Some(s) = SessionId::from_slice(&key?[16..]).map(|id| self.session(id)).transpose()?.flatten() {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Every transfer a conversation has had, oldest first.
    pub fn transfers_of_conversation(&self, conversation: ConversationId) -> Result<Vec<Transfer>, StoreError> {
        let mut out = Vec::new();
        for key in self.trees().transfers_by_conversation.scan_prefix(conversation.as_bytes()).keys() {
            if let Some(t) = TransferId::from_slice(&key?[16..]).map(|id| self.transfer(id)).transpose()?.flatten() {
                out.push(t);
            }
        }
        out.sort_by(|a, b| a.transferred_at.cmp(&b.transferred_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Deletes every outbox delivery of the tenant that belongs to one of `conversations`,
    /// whatever its status (a settled one still holds the message it carried), with its index
    /// entries. Returns how many. Scans the tenant's outbox: erasure is rare, the outbox has no
    /// per-conversation index of settled deliveries.
    pub fn delete_deliveries_of(
        &self,
        tenant: TenantId,
        conversations: &[ConversationId],
    ) -> Result<(usize, CommitTicket), StoreError> {
        self.check_write()?;
        let t = self.trees();
        let mut doomed = Vec::new();
        for key in t.outbox_by_tenant.scan_prefix(tenant.as_bytes()).keys() {
            let key = key?;
            if let Some(d) = DeliveryId::from_slice(&key[16..]).map(|id| self.delivery(id)).transpose()?.flatten() {
                if conversations.contains(&d.conversation_id) {
                    doomed.push(d);
                }
            }
        }
        for d in doomed.iter() {
            let mut batch = journal::Batch::default();
            remove_delivery(t, &mut batch, d);
            let _writer = self.exclusive();
            batch.apply(&t.journal)?;
        }
        // Order entries left behind by a record rewritten since (defensive: they name the conversation).
        for conversation in conversations {
            let mut batch = sled::Batch::default();
            for key in t.outbox_conv.scan_prefix(conversation.as_bytes()).keys() {
                batch.remove(key?);
            }
            t.outbox_conv.apply_batch(batch)?;
        }
        Ok((doomed.len(), self.ticket()))
    }

    /// Deletes a contact's record and the index entries that still name it. Its conversations
    /// must be deleted first (through their actors); an entry whose conversation still exists
    /// is kept, so a conversation is never left without its index.
    pub fn delete_contact(&self, contact: ContactId) -> Result<CommitTicket, StoreError> {
        self.check_write()?;
        let t = self.trees();
        for key in t.conv_by_contact.scan_prefix(contact.as_bytes()).keys() {
            let key = key?;
            let gone = match ConversationId::from_slice(&key[16..]) {
                Some(id) => !t.conversations.contains_key(id.as_bytes())?,
                None => true,
            };
            if gone {
                t.conv_by_contact.remove(key)?;
            }
        }
        t.contacts.remove(contact.as_bytes())?;
        Ok(self.ticket())
    }

    /// Deletes messages created before `cutoff`; returns how many. Later messages keep their
    /// `seq` and new ones continue the numbering: when a conversation's newest message goes, its
    /// record is rewritten with what followed from that message, in the same batch. Each conversation is read from its oldest message and left at the first
    /// one that is young enough (messages are stored in creation order), so a sweep costs the
    /// expired messages plus one read per conversation.
    pub fn expire_messages(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<usize, StoreError> {
        self.check_write()?;
        let t = self.trees();
        let tree = &t.messages;
        let mut expired = 0;
        let mut from: Vec<u8> = Vec::new();
        while let Some(first) = tree.range(from.as_slice()..).keys().next() {
            let first = first?;
            let Some(id) = ConversationId::from_slice(&first) else {
                from = join(&[&first, &[0]]);
                continue;
            };
            let conversation = id.as_bytes().to_vec();
            // Its contact, read once when an answer turn without a record needs one.
            let mut contact = None;
            let mut batch = journal::Batch::default();
            let mut all = true;
            for entry in tree.scan_prefix(&conversation) {
                let (key, value) = entry?;
                let messages = turns::decode(id, &value)?;
                let old = messages.iter().take_while(|m| m.created_at < cutoff).count();
                if old == 0 {
                    all = false;
                    break;
                }
                batch.remove(tree, key.to_vec());
                self.keep_answer_of_turn(&key, &value, &messages, &mut contact, &mut batch)?;
                expired += old;
                if let Some(kept) = messages.get(old..).filter(|kept| !kept.is_empty()) {
                    // The turn's younger messages stay, keyed by the first of them.
                    batch.put(tree, join(&[&conversation, &u64_be(kept[0].seq)]), turns::encode(kept)?);
                    all = false;
                    break;
                }
            }
            let _writer = self.exclusive();
            if all {
                // The newest message goes too: the record takes over what followed from it
                // (`with_newest_message`), so numbering continues where it was.
                if let Some(c) = self.conversation(id)? {
                    batch.put(&t.conversations, c.id.as_bytes().to_vec(), encode(&c)?);
                }
            }
            batch.apply(&t.journal)?;
            // Past every key of this conversation (conversation ++ 8-byte seq).
            from = join(&[&conversation, &[0xff; 9]]);
        }
        Ok(expired)
    }

    /// Before the turn stored under `key` (`record`, holding `messages`) is deleted or moved:
    /// a provider-id record pointing at it ([`dedupe_pointer`]), or the turn itself when it is
    /// the answer and has no record ([`turns::encode_answer`]), gives the whole answer to a
    /// record of its own, so a retry is still answered as the duplicate it is for as long as
    /// provider ids are kept. `contact` caches the conversation's contact (read when needed).
    fn keep_answer_of_turn<'t>(
        &'t self,
        key: &[u8],
        record: &[u8],
        messages: &[Message],
        contact: &mut Option<Option<ContactId>>,
        batch: &mut journal::Batch<'t>,
    ) -> Result<(), StoreError> {
        let t = self.trees();
        let (Some(conversation), Some(seq)) =
            (key.get(..16).and_then(ConversationId::from_slice), keys::read_u64_be(key, 16))
        else {
            return Ok(());
        };
        let Some(provider_message_id) = messages.first().and_then(|m| m.provider_message_id.as_deref()) else {
            return Ok(());
        };
        let dedupe_key = join(&[conversation.as_bytes(), provider_message_id.as_bytes()]);
        let Some(kept) = t.dedupe.get(&dedupe_key)? else {
            let Some(bot_active) = turns::answer_bot_active(record) else { return Ok(()) };
            if contact.is_none() {
                *contact = Some(self.conversation(conversation)?.map(|c| c.contact_id));
            }
            let Some(contact) = contact.flatten() else { return Ok(()) };
            if let Some(outcome) = answer_from_turn(conversation, contact, provider_message_id, bot_active, messages) {
                let mut full = u64_be(millis(messages[0].created_at)).to_vec();
                full.extend_from_slice(&encode(&outcome)?);
                batch.put(&t.dedupe, dedupe_key, full);
            }
            return Ok(());
        };
        let Some((&TURN, pointer)) = kept.get(8..).and_then(<[u8]>::split_first) else { return Ok(()) };
        if keys::read_u64_be(pointer, 0) != Some(seq) {
            return Ok(());
        }
        if let Some(outcome) = answer_of_turn(conversation, provider_message_id, pointer, messages) {
            let mut full = kept[..8].to_vec();
            full.extend_from_slice(&encode(&outcome)?);
            batch.put(&t.dedupe, dedupe_key, full);
        }
        Ok(())
    }

    /// How many entries of each tree mention any of `needles` in their key or value; trees
    /// without one are left out. For audits and tests of erasure (reads the whole store).
    pub fn entries_mentioning(&self, needles: &[&[u8]]) -> Result<Vec<(String, usize)>, StoreError> {
        let contains =
            |haystack: &[u8]| needles.iter().any(|n| !n.is_empty() && haystack.windows(n.len()).any(|w| w == *n));
        let mut found = Vec::new();
        for name in self.inner.db.tree_names() {
            let tree = self.inner.db.open_tree(&name)?;
            let mut count = 0;
            for entry in tree.iter() {
                let (key, value) = entry?;
                if contains(&key) || contains(&value) {
                    count += 1;
                }
            }
            if count > 0 {
                found.push((String::from_utf8_lossy(&name).into_owned(), count));
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{now, ContactId, Conversation, ConversationStatus};

    fn open(dir: &Path) -> Store {
        let config = StoreConfig::for_tests(dir);
        until_unlocked(|| Store::open(&config))
    }

    /// Runs `open` until it succeeds, while it fails only because the directory is still
    /// locked: sled's I/O threads can hold a just-dropped database for a moment (seen on a
    /// loaded machine), so a test that reopens its directory waits for them (up to 5 s).
    pub(super) fn until_unlocked<T, E: std::fmt::Display>(mut open: impl FnMut() -> Result<T, E>) -> T {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match open() {
                Ok(opened) => return opened,
                Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("the store does not open: {e}"),
            }
        }
    }

    fn conversation() -> Conversation {
        let at = now();
        Conversation {
            id: ConversationId::new_random(),
            tenant_id: TenantId::new_random(),
            chatbot_id: ChatbotId::new_random(),
            channel_id: "c".into(),
            channel_name: "c".into(),
            contact_id: ContactId::new_random(),
            provider_id: "p".into(),
            status: ConversationStatus::Active,
            bot_active: true,
            next_seq: 1,
            variables: Default::default(),
            metadata: serde_json::Value::Null,
            last_message_at: None,
            last_seen_at: None,
            session_id: None,
            active_transfer: None,
            epoch: 0,
            created_at: at,
            updated_at: at,
        }
    }

    /// The bytes under `dir`, recursively.
    /// Writes what a busy store writes: records rewritten again and again (conversations,
    /// the outbox) next to records written once and never again (messages). Returns the
    /// data directory's size and the live keys and values, in bytes.
    fn churn(segment_cleaning_ms: u64) -> (u64, u64) {
        let dir = tempfile::tempdir().expect("temp dir");
        let config =
            StoreConfig { cache_capacity_bytes: 8 << 20, segment_cleaning_ms, ..StoreConfig::for_tests(dir.path()) };
        let store = Store::open(&config).expect("store opens");
        let tree = store.inner.db.open_tree("churn").expect("tree");
        // Each round appends 100 records over 5,000 "conversations" and rewrites 100; the
        // rounds write about 100 MB of log, well past the age at which sled drains a segment.
        let (rounds, once, again, spread) = (1_200u32, 100u32, 100u32, 5_000u64);
        let value = vec![7u8; 200];
        let mut seed = 1u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for round in 0..rounds {
            for _ in 0..once {
                let conversation = next(spread);
                tree.insert(format!("once {conversation:05} {round:05}"), value.clone()).expect("insert");
            }
            for _ in 0..again {
                let conversation = next(spread);
                tree.insert(format!("again {conversation:05}"), value.clone()).expect("insert");
            }
            if segment_cleaning_ms > 0 && round % 10 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(5 * segment_cleaning_ms));
            }
        }
        store.inner.db.flush().expect("flush");
        let live = store.tree_sizes().expect("sizes").iter().map(|t| t.key_bytes + t.value_bytes).sum();
        let size = dir_bytes(dir.path());
        store.close().expect("close");
        (size, live)
    }

    #[test]
    fn segment_cleaning_lets_sled_reuse_its_log_so_the_directory_stays_near_the_live_data() {
        let (cleaned, live) = churn(10);
        let (uncleaned, _) = churn(0);
        eprintln!("live {live} B, data dir {cleaned} B with cleaning, {uncleaned} B without");
        assert!(live > 20_000_000, "the churn keeps about 27 MB of records: {live}");
        // Measured: 1.54 times the live data with cleaning, 3.5 times without.
        assert!(
            cleaned < live + live * 4 / 5 + (2 << 20),
            "with cleaning the directory stays near the live data: {cleaned} B for {live} B"
        );
        assert!(uncleaned > cleaned, "without cleaning sled's log grows more: {uncleaned} B against {cleaned} B");
    }

    #[test]
    fn provider_ids_are_remembered_until_the_sweep_passes_their_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let c = conversation();
        let outcome = HandleOutcome {
            conversation_id: c.id,
            contact_id: c.contact_id,
            message_id: MessageId::new_random(),
            bot_active: true,
            replies: Vec::new(),
        };
        let _ = store
            .write_conversation(&ConversationWrite {
                conversation: Some(&c),
                created: true,
                dedupe: Some(("wamid.1", &outcome)),
                ..ConversationWrite::default()
            })
            .expect("written");

        let kept = store.expire_dedupe(now() - chrono::Duration::days(7)).expect("sweep");
        assert_eq!(kept, 0, "a record younger than the cutoff stays");
        assert_eq!(store.dedupe(c.id, c.contact_id, "wamid.1", None).expect("read"), Some(outcome));

        let expired = store.expire_dedupe(now() + chrono::Duration::seconds(1)).expect("sweep");
        assert_eq!(expired, 1);
        assert_eq!(
            store.dedupe(c.id, c.contact_id, "wamid.1", None).expect("read"),
            None,
            "an expired id is forgotten"
        );
    }

    fn message(conversation: ConversationId, seq: u64, created_at: chrono::DateTime<chrono::Utc>) -> Message {
        Message::new(conversation, seq, crate::model::Role::User, format!("message {seq}"), "text", created_at)
    }

    #[test]
    fn a_record_not_rewritten_by_appending_turns_reads_with_the_numbering_and_time_of_its_newest_message() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let c = conversation();
        let write = |conversation, created, messages: &[Message]| {
            let _ = store
                .write_conversation(&ConversationWrite {
                    conversation,
                    created,
                    messages,
                    ..ConversationWrite::default()
                })
                .expect("written");
        };
        write(Some(&c), true, &[]);
        let at = c.created_at + chrono::Duration::seconds(5);
        write(None, false, &[message(c.id, 1, at), message(c.id, 2, at)]);
        let later = at + chrono::Duration::seconds(5);
        write(None, false, &[message(c.id, 3, later)]);

        let read = store.conversation(c.id).expect("read").expect("there");
        assert_eq!((read.next_seq, read.last_message_at, read.updated_at), (4, Some(later), later));

        // Every message expires: the record takes the numbering over, so it continues at 4.
        assert_eq!(store.expire_messages(later + chrono::Duration::seconds(1)).expect("sweep"), 3);
        let store = {
            store.close().expect("closes");
            drop(store);
            open(dir.path())
        };
        let read = store.conversation(c.id).expect("read").expect("there");
        assert_eq!((read.next_seq, read.last_message_at), (4, Some(later)), "numbering survives the sweep");
        assert!(store.messages(c.id, 0, 10).expect("read").is_empty());
    }

    #[test]
    fn the_retention_sweep_deletes_only_messages_older_than_the_cutoff_in_every_conversation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let cutoff = now() - chrono::Duration::days(30);
        let (old, new) = (cutoff - chrono::Duration::days(1), cutoff + chrono::Duration::days(1));
        let (a, b, c) = (conversation(), conversation(), conversation());
        let history = [
            (&a, vec![message(a.id, 1, old), message(a.id, 2, old), message(a.id, 3, new)]),
            (&b, vec![message(b.id, 1, new), message(b.id, 2, new)]),
            (&c, vec![message(c.id, 1, old)]),
        ];
        for (conversation, messages) in &history {
            let _ = store
                .write_conversation(&ConversationWrite {
                    conversation: Some(conversation),
                    created: true,
                    messages,
                    ..ConversationWrite::default()
                })
                .expect("written");
        }

        let deleted = store.expire_messages(cutoff).expect("sweep");

        assert_eq!(deleted, 3);
        let seqs = |id| store.messages(id, 0, 100).expect("read").iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(seqs(a.id), [3], "the newer message keeps its seq");
        assert_eq!(seqs(b.id), [1, 2], "a conversation with only newer messages is untouched");
        assert_eq!(seqs(c.id), Vec::<u64>::new());
        assert!(store.conversation(c.id).expect("read").is_some(), "the conversation itself stays");
        assert_eq!(store.expire_messages(cutoff).expect("sweep"), 0, "a second sweep finds nothing");
    }

    /// Writes `messages` as one turn of `c`: the first turn creates the conversation
    /// (journaled), later ones take the two-insert path.
    fn write_turn(store: &Store, c: &Conversation, messages: &[Message], dedupe: Option<(&str, &HandleOutcome)>) {
        let first = messages.first().is_some_and(|m| m.seq == 1);
        let _ = store
            .write_conversation(&ConversationWrite {
                conversation: first.then_some(c),
                created: first,
                messages,
                dedupe,
                ..ConversationWrite::default()
            })
            .expect("written");
    }

    fn outcome_for(c: &Conversation, message: &Message) -> HandleOutcome {
        HandleOutcome {
            conversation_id: c.id,
            contact_id: c.contact_id,
            message_id: message.id,
            bot_active: true,
            replies: Vec::new(),
        }
    }

    #[test]
    fn messages_stored_a_turn_at_a_time_read_from_any_seq() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let c = conversation();
        let at = now();
        for turn in [&[1, 2][..], &[3], &[4, 5, 6]] {
            let messages: Vec<Message> = turn.iter().map(|&seq| message(c.id, seq, at)).collect();
            write_turn(&store, &c, &messages, None);
        }
        let seqs = |messages: Vec<Message>| messages.iter().map(|m| m.seq).collect::<Vec<_>>();

        assert_eq!(seqs(store.messages(c.id, 0, 100).expect("read")), [1, 2, 3, 4, 5, 6]);
        assert_eq!(seqs(store.messages(c.id, 1, 2).expect("read")), [2, 3], "from inside a turn, across turns");
        assert_eq!(seqs(store.messages(c.id, 4, 10).expect("read")), [5, 6]);
        assert_eq!(seqs(store.messages(c.id, 6, 10).expect("read")), Vec::<u64>::new());
        assert_eq!(seqs(store.recent_messages(c.id, 4).expect("read")), [3, 4, 5, 6]);
        assert_eq!(store.last_seq(c.id).expect("read"), 6);
        assert_eq!(store.conversation(c.id).expect("read").expect("there").next_seq, 7);
        let contents: Vec<String> = store.messages(c.id, 3, 1).expect("read").into_iter().map(|m| m.content).collect();
        assert_eq!(contents, ["message 4"]);
    }

    #[test]
    fn an_answer_turn_keeps_its_answer_and_retention_gives_it_a_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let c = conversation();
        let long_ago = now() - chrono::Duration::days(3);
        write_turn(&store, &c, &[message(c.id, 1, long_ago), message(c.id, 2, long_ago)], None);
        let answered = [from_provider(message(c.id, 3, long_ago), "wamid.answered"), reply(message(c.id, 4, long_ago))];
        let outcome = HandleOutcome { replies: vec![answered[1].as_reply()], ..outcome_for(&c, &answered[0]) };
        write_turn(&store, &c, &answered, Some(("wamid.answered", &outcome)));

        let record = store.trees().dedupe.get(join(&[c.id.as_bytes(), b"wamid.answered"])).expect("read");
        assert_eq!(record, None, "the turn alone keeps the answer");
        let dedupe = |id, in_turn| store.dedupe(c.id, c.contact_id, id, in_turn).expect("read");
        assert_eq!(dedupe("wamid.answered", Some(3)), Some(outcome.clone()), "found through the turn");
        assert_eq!(dedupe("wamid.other", Some(3)), None, "a turn answering another id is no answer");
        assert_eq!(dedupe("wamid.answered", Some(1)), None, "a turn that is no answer");

        // Retention deleting an answered turn does not make its provider id new again.
        write_turn(&store, &c, &[message(c.id, 5, now())], None);
        assert_eq!(store.expire_messages(now() - chrono::Duration::days(1)).expect("sweep"), 4);
        assert!(store.messages(c.id, 0, 10).expect("read").iter().all(|m| m.seq == 5));
        assert_eq!(dedupe("wamid.answered", None), Some(outcome), "its record answers now");
    }

    #[test]
    fn a_provider_id_record_pointing_at_its_turn_counts_only_once_the_turn_is_stored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let c = conversation();
        write_turn(&store, &c, &[message(c.id, 1, now())], None);
        let dedupe = |id| store.dedupe(c.id, c.contact_id, id, None).expect("read");

        // A crash between a turn leaving the window and the turn pushing it out cannot do
        // this, but a record naming a turn that never landed must not count, and neither
        // once another message has taken its seq.
        let key = join(&[c.id.as_bytes(), b"wamid.lost"]);
        store.trees().dedupe.insert(key, dedupe_pointer(2, true, c.contact_id)).expect("inserted");
        assert_eq!(dedupe("wamid.lost"), None);
        write_turn(&store, &c, &[message(c.id, 2, now())], None);
        assert_eq!(dedupe("wamid.lost"), None);
    }

    #[test]
    fn a_turn_leaving_the_window_gets_a_pointer_record_before_the_next_is_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let c = conversation();
        write_turn(&store, &c, &[message(c.id, 1, now())], None);
        let asked = from_provider(message(c.id, 2, now()), "wamid.2");
        let answered = [asked.clone(), reply(message(c.id, 3, now()))];
        let outcome = HandleOutcome { replies: vec![answered[1].as_reply()], ..outcome_for(&c, &asked) };
        write_turn(&store, &c, &answered, Some(("wamid.2", &outcome)));

        let _ = store
            .write_conversation(&ConversationWrite {
                messages: &[message(c.id, 4, now())],
                leaving_window: Some((2, c.contact_id)),
                ..ConversationWrite::default()
            })
            .expect("written");

        let record = store.trees().dedupe.get(join(&[c.id.as_bytes(), b"wamid.2"])).expect("read");
        assert_eq!(record.map(|r| r.len()), Some(34), "the record points at the turn");
        assert_eq!(store.dedupe(c.id, c.contact_id, "wamid.2", None).expect("read"), Some(outcome));
    }

    #[test]
    fn the_window_is_rebuilt_from_the_newest_turns_and_complete_only_back_to_the_first() {
        use super::recent::{Earlier, WINDOW};
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let c = conversation();
        assert_eq!(store.recent_provider_ids(c.id, 1).expect("read").earlier("wamid.1"), Earlier::None);
        assert_eq!(
            store.recent_provider_ids(c.id, 9).expect("read").earlier("wamid.1"),
            Earlier::Look(None),
            "no turns left of a conversation that had some"
        );
        let long_ago = now() - chrono::Duration::days(3);
        write_turn(&store, &c, &[from_provider(message(c.id, 1, long_ago), "wamid.1")], None);
        write_turn(&store, &c, &[message(c.id, 2, now()), message(c.id, 3, now())], None);
        write_turn(&store, &c, &[from_provider(message(c.id, 4, now()), "wamid.4")], None);

        let window = store.recent_provider_ids(c.id, 5).expect("read");
        assert_eq!(window.earlier("wamid.1"), Earlier::Look(Some(1)));
        assert_eq!(window.earlier("wamid.4"), Earlier::Look(Some(4)));
        assert_eq!(window.earlier("wamid.new"), Earlier::None, "every turn back to seq 1 was read");

        assert_eq!(store.expire_messages(now() - chrono::Duration::days(1)).expect("sweep"), 1);
        let window = store.recent_provider_ids(c.id, 5).expect("read");
        assert_eq!(window.earlier("wamid.new"), Earlier::Look(None), "turn 1 is gone: its id is in a record");

        for seq in 5..5 + WINDOW as u64 {
            write_turn(&store, &c, &[from_provider(message(c.id, seq, now()), &format!("wamid.{seq}"))], None);
        }
        let window = store.recent_provider_ids(c.id, 5 + WINDOW as u64).expect("read");
        assert_eq!(window.earlier("wamid.4"), Earlier::Look(None), "older than the window");
        assert_eq!(window.earlier("wamid.5"), Earlier::Look(Some(5)));
        assert_eq!(window.leaving(), Some(5));
    }

    fn from_provider(message: Message, provider_message_id: &str) -> Message {
        Message { provider_message_id: Some(provider_message_id.into()), ..message }
    }

    fn reply(message: Message) -> Message {
        Message { role: crate::model::Role::Assistant, ..message }
    }

    #[test]
    fn a_late_reply_to_a_message_of_an_earlier_turn_updates_its_provider_id_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let c = conversation();
        let asked = from_provider(message(c.id, 1, now()), "wamid.1");
        let waiting = outcome_for(&c, &asked);
        write_turn(&store, &c, std::slice::from_ref(&asked), Some(("wamid.1", &waiting)));
        let record = |id: &[u8]| store.trees().dedupe.get(join(&[c.id.as_bytes(), id])).expect("read");
        assert_eq!(record(b"wamid.1"), None, "a journaled turn (it created the conversation) keeps its answer too");
        assert_eq!(store.dedupe(c.id, c.contact_id, "wamid.1", Some(1)).expect("read"), Some(waiting.clone()));

        // The model's answer comes in a turn of its own, starting with the reply.
        let answer = message(c.id, 2, now());
        let answered = HandleOutcome {
            replies: vec![Reply {
                id: answer.id,
                kind: crate::model::ReplyKind::Text,
                text: answer.content.clone(),
                buttons: Vec::new(),
                whatsapp_flow: None,
            }],
            ..waiting
        };
        write_turn(&store, &c, std::slice::from_ref(&answer), Some(("wamid.1", &answered)));

        assert_eq!(store.dedupe(c.id, c.contact_id, "wamid.1", None).expect("read"), Some(answered));
    }
}
