//! Group commit: one thread makes writes durable for every writer at once.
//!
//! A writer applies its change to sled (in memory and the log buffer), takes a ticket, and
//! awaits [`GroupCommit::durable`]. The committer thread takes the newest ticket issued,
//! flushes sled and then `fdatasync`s the database file, and wakes every writer whose ticket
//! that round covered. Durability costs one flush per batch, not per write, and no actix
//! worker ever blocks on a disk.
//!
//! sled 0.34's `flush` ends in `sync_file_range`, which neither flushes the disk's write
//! cache nor persists a grown file's size; `fdatasync` does both, and skips the journal
//! commit a full `fsync` would make for the file's modification time.
//!
//! Both ways of waiting are one mechanism: [`GroupCommit::durable`] registers a callback with
//! [`GroupCommit::when_durable`] and awaits it. A writer that cannot await (an actor answering
//! a request) registers its own: the committer runs it after the round, so the answer goes to
//! the waiting request from the committer, which wakes that request's thread once per round,
//! instead of from the actor's thread first and the committer's again.
//!
//! A round that fails is retried, but the writers it was to cover are not left waiting for a
//! disk that may never come back: they get the error at once (their request answers 503),
//! and what they wrote becomes durable with the first round that succeeds.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::StoreError;

/// Proof that a write was applied; durable once the committer has covered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a write is acknowledged only after `Store::durable(ticket)`"]
pub struct CommitTicket(pub(crate) u64);

impl CommitTicket {
    /// A ticket that is always durable (nothing was written).
    pub const NONE: CommitTicket = CommitTicket(0);

    /// The later of two tickets.
    pub fn max(self, other: CommitTicket) -> CommitTicket {
        std::cmp::max(self, other)
    }
}

/// How long the committer waits before retrying after a failed flush.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(100);

/// Counters the committer keeps, for `/metrics`.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Flush rounds completed.
    pub rounds: AtomicU64,
    /// Tickets covered by all rounds (divide by `rounds` for the mean batch size).
    pub tickets: AtomicU64,
    /// Total microseconds spent in flush + fsync.
    pub micros: AtomicU64,
    /// Flush rounds that failed.
    pub failures: AtomicU64,
}

/// Where the committer stands, as writers see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    /// Every ticket up to this one is on disk.
    durable: u64,
    /// The newest ticket the last round was to cover, when that round failed; 0 after a success.
    failed: u64,
}

/// What [`GroupCommit::when_durable`] runs: with `Ok` once the ticket is on disk, or with the
/// error of the round that was to cover it.
pub type OnDurable = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The callbacks waiting for a round, and where the rounds stand, under one lock: a callback
/// registered after the round that covers it sees that round's progress and runs at once.
#[derive(Default)]
struct Callbacks {
    progress: Progress,
    /// The committer has stopped: nothing will be covered any more.
    closed: bool,
    waiting: Vec<(u64, OnDurable)>,
}

impl Callbacks {
    /// What a ticket's writer learns now, if anything.
    fn outcome(&self, ticket: u64) -> Option<Result<(), StoreError>> {
        if ticket <= self.progress.durable {
            Some(Ok(()))
        } else if ticket <= self.progress.failed {
            Some(Err(flush_failed()))
        } else if self.closed {
            Some(Err(StoreError::Closed))
        } else {
            None
        }
    }
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("progress", &self.progress)
            .field("closed", &self.closed)
            .field("waiting", &self.waiting.len())
            .finish()
    }
}

impl Drop for Callbacks {
    /// No callback is left uncalled: a dropped one would leave its request waiting forever.
    fn drop(&mut self) {
        for (_, callback) in self.waiting.drain(..) {
            callback(Err(StoreError::Closed));
        }
    }
}

fn flush_failed() -> StoreError {
    StoreError::Io(std::io::Error::other("the write could not be made durable: flushing the store failed"))
}

#[derive(Debug)]
struct Shared {
    /// The newest ticket handed out.
    issued: AtomicU64,
    /// Guards the wake-up condition; `true` once shutdown was requested.
    wake: Mutex<bool>,
    signal: Condvar,
    /// Whether the committer is (about to be) waiting on `signal`: a writer wakes it only
    /// then, and clears it, so the writers of a busy round and those that come while it wakes
    /// up cost no `futex` call each.
    idle: AtomicBool,
    callbacks: Mutex<Callbacks>,
    stats: CommitStats,
    /// Injected fault: every flush fails while set (tests).
    failing: AtomicBool,
}

/// The group committer: a thread plus the tickets writers wait on.
#[derive(Debug)]
pub struct GroupCommit {
    shared: Arc<Shared>,
    fsync: bool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommit {
    /// Starts the committer thread for `db`, whose main file is `db_file`.
    /// With `fsync = false` writes count as durable at once (benchmarks of the cost only).
    pub fn start(db: sled::Db, db_file: File, fsync: bool) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            issued: AtomicU64::new(0),
            wake: Mutex::new(false),
            signal: Condvar::new(),
            idle: AtomicBool::new(false),
            callbacks: Mutex::default(),
            stats: CommitStats::default(),
            failing: AtomicBool::new(false),
        });
        let thread = if fsync {
            let shared = Arc::clone(&shared);
            Some(
                std::thread::Builder::new()
                    .name("baton-committer".into())
                    .spawn(move || run_committer(&shared, &db, &db_file))
                    .map_err(StoreError::Io)?,
            )
        } else {
            None
        };
        Ok(Self { shared, fsync, thread: Mutex::new(thread) })
    }

    /// Takes a ticket for everything applied so far and asks the committer to cover it.
    pub fn ticket(&self) -> CommitTicket {
        let ticket = self.shared.issued.fetch_add(1, Ordering::SeqCst) + 1;
        // The committer marks itself idle before it checks `issued` (both SeqCst), so either
        // it sees this ticket or this sees it idle. Taking the lock orders the notify after
        // its check. Only the first writer to see it idle wakes it: the writers that come
        // before it runs would each cost a `futex` call, and the wake-up of another core.
        if self.fsync && self.shared.idle.swap(false, Ordering::SeqCst) {
            drop(self.shared.wake.lock().unwrap_or_else(|e| e.into_inner()));
            self.shared.signal.notify_one();
        }
        CommitTicket(ticket)
    }

    /// Resolves once `ticket` is on disk, or with the error of the flush round that was to
    /// cover it and failed (the write stays applied and is retried with the next round).
    pub async fn durable(&self, ticket: CommitTicket) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.when_durable(
            ticket,
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        );
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `callback` once `ticket` is on disk, or with the error of the flush round that was
    /// to cover it: at once if that is known now, else on the committer's thread after the
    /// round. It must be quick (it holds up the round's other writers), like sending on a
    /// channel.
    pub fn when_durable(&self, ticket: CommitTicket, callback: OnDurable) {
        if !self.fsync || ticket == CommitTicket::NONE {
            return callback(Ok(()));
        }
        let mut callbacks = self.shared.callbacks.lock().unwrap_or_else(|e| e.into_inner());
        match callbacks.outcome(ticket.0) {
            Some(outcome) => {
                drop(callbacks);
                callback(outcome);
            }
            None => callbacks.waiting.push((ticket.0, callback)),
        }
    }

    /// Makes every flush fail while `on` (fault injection for tests).
    pub(crate) fn fail_flushes(&self, on: bool) {
        self.shared.failing.store(on, Ordering::SeqCst);
    }

    /// The committer's counters.
    pub fn stats(&self) -> &CommitStats {
        &self.shared.stats
    }

    /// Covers every ticket issued so far, then stops the thread.
    pub fn shutdown(&self) {
        *self.shared.wake.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.signal.notify_one();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

fn run_committer(shared: &Shared, db: &sled::Db, db_file: &File) {
    let mut covered = 0u64;
    loop {
        {
            let mut stopping = shared.wake.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                // Again after every wake-up: a writer that woke it cleared the flag.
                shared.idle.store(true, Ordering::SeqCst);
                if shared.issued.load(Ordering::SeqCst) > covered || *stopping {
                    break;
                }
                stopping = shared.signal.wait(stopping).unwrap_or_else(|e| e.into_inner());
            }
            shared.idle.store(false, Ordering::SeqCst);
            if *stopping && shared.issued.load(Ordering::SeqCst) <= covered {
                drop(stopping);
                return settle(shared, None);
            }
        }
        // Every write with a ticket up to `target` was applied before its ticket was taken,
        // so this flush covers it.
        let target = shared.issued.load(Ordering::SeqCst);
        let started = Instant::now();
        let result = if shared.failing.load(Ordering::SeqCst) {
            Err(StoreError::Io(std::io::Error::other("injected fault: the flush failed")))
        } else {
            db.flush().map_err(StoreError::from).and_then(|_| db_file.sync_data().map_err(StoreError::Io))
        };
        match result {
            Ok(()) => {
                let stats = &shared.stats;
                stats.rounds.fetch_add(1, Ordering::Relaxed);
                stats.tickets.fetch_add(target - covered, Ordering::Relaxed);
                stats.micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                covered = target;
                settle(shared, Some(Progress { durable: covered, failed: 0 }));
            }
            Err(error) => {
                shared.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "store flush failed; retrying");
                // The writers this round was for learn now; the retry still covers their writes.
                settle(shared, Some(Progress { durable: covered, failed: target }));
                if *shared.wake.lock().unwrap_or_else(|e| e.into_inner()) {
                    // Shutting down: `Store::close` makes the last attempt and reports it.
                    return settle(shared, None);
                }
                std::thread::sleep(RETRY_AFTER_FAILURE);
            }
        }
    }
}

/// Records where the rounds stand (`None`: the committer stopped) and runs every callback
/// that now knows its outcome, outside the lock.
fn settle(shared: &Shared, progress: Option<Progress>) {
    let mut ready = Vec::new();
    {
        let mut callbacks = shared.callbacks.lock().unwrap_or_else(|e| e.into_inner());
        match progress {
            Some(progress) => callbacks.progress = progress,
            None => callbacks.closed = true,
        }
        let mut index = 0;
        while index < callbacks.waiting.len() {
            match callbacks.outcome(callbacks.waiting[index].0) {
                Some(outcome) => ready.push((callbacks.waiting.swap_remove(index).1, outcome)),
                None => index += 1,
            }
        }
    }
    for (callback, outcome) in ready {
        callback(outcome);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::store::{Store, StoreConfig};

    fn open(dir: &std::path::Path) -> Store {
        Store::open(&StoreConfig { fsync: true, ..StoreConfig::for_tests(dir) }).expect("store opens")
    }

    #[tokio::test]
    async fn a_failed_flush_fails_its_writers_at_once_and_a_later_round_covers_their_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        store.faults().fail_durability(true);

        let (_, written) = store.ensure_tenant("acme").expect("applied in memory");
        let waited = tokio::time::timeout(Duration::from_secs(5), store.durable(written)).await;

        assert!(matches!(waited, Ok(Err(_))), "the writer is told, not left waiting: {waited:?}");
        assert!(store.commit_stats().failures.load(std::sync::atomic::Ordering::Relaxed) >= 1);

        store.faults().clear();
        let later = store.ticket_for_all();
        tokio::time::timeout(Duration::from_secs(5), store.durable(later))
            .await
            .expect("no hang")
            .expect("durable once flushes work again");
        store.durable(written).await.expect("the earlier write is covered too");
        assert!(store.tenant_by_name("acme").expect("read").is_some(), "the write was kept, not lost");
        store.close().expect("closes");
    }

    #[test]
    fn injected_write_faults_apply_nothing_and_run_out_after_the_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        store.faults().fail_next_writes(2);

        let first = store.ensure_tenant("a");
        let second = store.ensure_tenant("b");
        let third = store.ensure_tenant("c");

        assert!(matches!(first, Err(crate::store::StoreError::Io(_))), "{first:?}");
        assert!(matches!(second, Err(crate::store::StoreError::Io(_))), "{second:?}");
        assert!(third.is_ok(), "the fault ran out: {third:?}");
        assert!(store.tenant_by_name("a").expect("read").is_none(), "a failed write applied nothing");
        assert!(store.tenant_by_name("b").expect("read").is_none());

        store.faults().fail_all_writes();
        assert!(store.ensure_tenant("d").is_err() && store.ensure_tenant("e").is_err(), "all writes fail");
        assert!(store.ensure_tenant("c").is_ok(), "reads (the tenant exists) still work");
        store.faults().clear();
        assert!(store.ensure_tenant("d").is_ok());
        store.close().expect("closes");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_writer_is_covered_whether_the_committer_was_busy_or_idle_when_it_came() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        // Writers in bursts and alone, so tickets meet the committer mid-round and just as it
        // goes idle: one that neither woke it nor was seen by its check would hang here.
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..300 {
                        let (_, ticket) = store.ensure_tenant(&format!("t{w}-{i}")).expect("applied");
                        tokio::time::timeout(Duration::from_secs(10), store.durable(ticket))
                            .await
                            .expect("the committer covered this ticket")
                            .expect("durable");
                        if i % 50 == 0 {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.expect("writer finished");
        }
        let stats = store.commit_stats();
        assert_eq!(stats.tickets.load(std::sync::atomic::Ordering::Relaxed), 1_200, "each ticket covered once");
        assert!(stats.rounds.load(std::sync::atomic::Ordering::Relaxed) < 1_200, "rounds covered several writes");
        store.close().expect("closes");
    }

    /// Registers a callback for `ticket` and returns what it is called with.
    fn when_durable(store: &Store, ticket: super::CommitTicket) -> std::sync::mpsc::Receiver<Result<(), String>> {
        let (tx, rx) = std::sync::mpsc::channel();
        store.when_durable(ticket, move |outcome| {
            let _ = tx.send(outcome.map_err(|e| e.to_string()));
        });
        rx
    }

    #[test]
    fn a_callback_runs_once_its_write_is_durable_whether_registered_before_or_after_the_round() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let (_, first) = store.ensure_tenant("first").expect("applied");
        let before = when_durable(&store, first);
        assert_eq!(before.recv_timeout(Duration::from_secs(5)), Ok(Ok(())), "the committer ran it after the round");
        assert!(store.commit_stats().rounds.load(std::sync::atomic::Ordering::Relaxed) >= 1);

        // Covered already: it runs at once, on this thread.
        let after = when_durable(&store, first);
        assert_eq!(after.try_recv(), Ok(Ok(())));
        store.close().expect("closes");
    }

    #[test]
    fn every_callback_of_many_writers_runs_exactly_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let (tx, rx) = std::sync::mpsc::channel();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (store, tx) = (store.clone(), tx.clone());
                std::thread::spawn(move || {
                    for i in 0..300 {
                        let (_, ticket) = store.ensure_tenant(&format!("t{w}-{i}")).expect("applied");
                        let tx = tx.clone();
                        store.when_durable(ticket, move |outcome| tx.send((w, i, outcome.is_ok())).expect("open"));
                    }
                })
            })
            .collect();
        drop(tx);
        for writer in writers {
            writer.join().expect("writer finished");
        }
        let mut seen: Vec<_> = rx.iter().take(1_200).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 1_200, "each callback ran, once");
        assert!(seen.iter().all(|(_, _, ok)| *ok), "all durable");
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "none ran twice");
        store.close().expect("closes");
    }

    #[test]
    fn a_failed_round_fails_its_callbacks_and_a_closed_store_fails_new_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        store.faults().fail_durability(true);
        let (_, written) = store.ensure_tenant("acme").expect("applied in memory");
        let failed = when_durable(&store, written);
        let outcome = failed.recv_timeout(Duration::from_secs(5)).expect("told, not left waiting");
        assert!(outcome.as_ref().is_err_and(|e| e.contains("flushing the store failed")), "{outcome:?}");

        store.faults().clear();
        let later = store.ticket_for_all();
        assert_eq!(when_durable(&store, later).recv_timeout(Duration::from_secs(5)), Ok(Ok(())));
        assert_eq!(when_durable(&store, written).try_recv(), Ok(Ok(())), "the earlier write is covered too");

        let handle = store.clone();
        store.close().expect("closes");
        let (_, unflushed) = handle.ensure_tenant("after").expect("applied in memory");
        let closed = when_durable(&handle, unflushed);
        assert!(closed.try_recv().is_ok_and(|o| o.is_err()), "a stopped committer fails it at once, not never");
    }

    #[tokio::test]
    async fn shutdown_does_not_hang_on_a_disk_that_keeps_failing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        store.faults().fail_durability(true);
        let _ = store.ensure_tenant("acme").expect("applied in memory");

        let closing = std::thread::spawn(move || {
            let _ = store.close();
        });

        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !closing.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(closing.is_finished(), "close returned while flushes kept failing");
    }
}
