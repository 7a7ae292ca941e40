//! Group commit: one thread makes writes durable for every writer at once.
//!
//! A writer applies its change to sled (in memory and the log buffer), takes a ticket, and
//! awaits [`GroupCommit::durable`]. The committer thread takes the newest ticket issued,
//! flushes sled and then `fsync`s the database file (sled 0.34's `flush` ends in
//! `sync_file_range`, which does not persist metadata), and wakes every writer whose ticket
//! that round covered. Durability costs one flush per batch, not per write, and no actix
//! worker ever blocks on a disk.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

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

#[derive(Debug)]
struct Shared {
    /// The newest ticket handed out.
    issued: AtomicU64,
    /// Guards the wake-up condition; `true` once shutdown was requested.
    wake: Mutex<bool>,
    signal: Condvar,
    durable: watch::Sender<u64>,
    stats: CommitStats,
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
        let (durable, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            issued: AtomicU64::new(0),
            wake: Mutex::new(false),
            signal: Condvar::new(),
            durable,
            stats: CommitStats::default(),
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
        if self.fsync {
            // Taking the lock orders this notify after the committer's check of `issued`.
            drop(self.shared.wake.lock().unwrap_or_else(|e| e.into_inner()));
            self.shared.signal.notify_one();
        }
        CommitTicket(ticket)
    }

    /// Resolves once `ticket` is on disk.
    pub async fn durable(&self, ticket: CommitTicket) -> Result<(), StoreError> {
        if !self.fsync || ticket.0 <= *self.shared.durable.borrow() {
            return Ok(());
        }
        let mut rx = self.shared.durable.subscribe();
        rx.wait_for(|&done| done >= ticket.0).await.map(|_| ()).map_err(|_| StoreError::Closed)
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
            while shared.issued.load(Ordering::SeqCst) <= covered && !*stopping {
                stopping = shared.signal.wait(stopping).unwrap_or_else(|e| e.into_inner());
            }
            if *stopping && shared.issued.load(Ordering::SeqCst) <= covered {
                return;
            }
        }
        // Every write with a ticket up to `target` was applied before its ticket was taken,
        // so this flush covers it.
        let target = shared.issued.load(Ordering::SeqCst);
        let started = Instant::now();
        let result = db.flush().map_err(StoreError::from).and_then(|_| db_file.sync_all().map_err(StoreError::Io));
        match result {
            Ok(()) => {
                let stats = &shared.stats;
                stats.rounds.fetch_add(1, Ordering::Relaxed);
                stats.tickets.fetch_add(target - covered, Ordering::Relaxed);
                stats.micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                covered = target;
                shared.durable.send_replace(covered);
            }
            Err(error) => {
                shared.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "store flush failed; retrying");
                std::thread::sleep(RETRY_AFTER_FAILURE);
            }
        }
    }
}
