//! Atomic writes over several trees without sled transactions.
//!
//! sled 0.34 makes a multi-tree transaction (and `apply_batch`) recoverable as a unit by
//! rolling its log buffer twice per transaction (`PageCache::pin_log`): each roll is a buffer
//! write plus a `sync_file_range` on sled's I/O threads. With one transaction per message
//! that was two disk submissions per message, about a third of the server's CPU (see
//! BENCHMARKS.md, "Where the time goes").
//!
//! A [`Batch`] is made atomic with a one-slot redo journal instead:
//!
//! 1. the whole batch, encoded, is inserted under one key of the `journal` tree (one insert
//!    is atomic in sled);
//! 2. every change of the batch is applied with plain inserts and removals;
//! 3. the journal key is removed.
//!
//! All three steps run on one thread under the store's writer lock, so they enter sled's log
//! in that order, and no other batch interleaves. sled recovers a prefix of its log: after a
//! crash, either the journal removal was recovered (and with it every change before it), or
//! the journal entry is still there and [`replay`] applies it again when the store opens —
//! puts and removals of whole values, so applying a batch twice is the same as once. Either
//! way the batch is all there or not at all. The cost is one extra insert and removal per
//! batch on a tree of one key, instead of two log-buffer writes.

use sled::{Db, Tree};

use super::StoreError;

/// The journal's single key.
const SLOT: &[u8] = b"pending";

/// A change to one key.
#[derive(Debug)]
enum Change {
    Put(Vec<u8>),
    Remove,
}

/// Changes to several trees, applied all together or not at all (see the module docs).
#[derive(Debug, Default)]
pub struct Batch<'t> {
    changes: Vec<(&'t Tree, Vec<u8>, Change)>,
}

impl<'t> Batch<'t> {
    /// Sets `key` of `tree` to `value`.
    pub fn put(&mut self, tree: &'t Tree, key: Vec<u8>, value: Vec<u8>) {
        self.changes.push((tree, key, Change::Put(value)));
    }

    /// Removes `key` from `tree`.
    pub fn remove(&mut self, tree: &'t Tree, key: Vec<u8>) {
        self.changes.push((tree, key, Change::Remove));
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The journal entry: per change, a tag byte (1 put, 0 remove), the tree name, the key
    /// and the value, each length-prefixed.
    fn encode(&self) -> Vec<u8> {
        let size = self
            .changes
            .iter()
            .map(|(_, key, change)| {
                16 + key.len()
                    + match change {
                        Change::Put(value) => value.len(),
                        Change::Remove => 0,
                    }
            })
            .sum();
        let mut out = Vec::with_capacity(size);
        for (tree, key, change) in &self.changes {
            let name = tree.name();
            out.push(matches!(change, Change::Put(_)) as u8);
            put_bytes(&mut out, &name);
            put_bytes(&mut out, key);
            if let Change::Put(value) = change {
                put_bytes(&mut out, value);
            }
        }
        out
    }

    /// Writes the journal entry and stops, as a crash right after it would (tests of
    /// [`replay`]).
    #[cfg(test)]
    pub(super) fn journal_only(&self, journal: &Tree) -> Result<(), StoreError> {
        journal.insert(SLOT, self.encode())?;
        Ok(())
    }

    /// Journals and applies the batch. The caller holds the store's writer lock.
    pub(super) fn apply(self, journal: &Tree) -> Result<(), StoreError> {
        if self.changes.is_empty() {
            return Ok(());
        }
        journal.insert(SLOT, self.encode())?;
        for (tree, key, change) in self.changes {
            match change {
                Change::Put(value) => {
                    tree.insert(key, value)?;
                }
                Change::Remove => {
                    tree.remove(key)?;
                }
            }
        }
        journal.remove(SLOT)?;
        Ok(())
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads a length-prefixed part at `*at`, advancing it.
fn take<'a>(entry: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(entry.get(*at..*at + 4)?.try_into().ok()?) as usize;
    let part = entry.get(*at + 4..*at + 4 + len)?;
    *at += 4 + len;
    Some(part)
}

/// Completes the batch a crash interrupted, if any; returns how many changes it applied.
/// Called when the store opens, before anything reads it.
pub(super) fn replay(db: &Db, journal: &Tree) -> Result<usize, StoreError> {
    let Some(entry) = journal.get(SLOT)? else {
        return Ok(0);
    };
    let corrupt = || StoreError::Corrupt { tree: "journal", message: "truncated entry".into() };
    // Decoded whole first, so a damaged entry applies nothing.
    let mut changes = Vec::new();
    let mut at = 0;
    while at < entry.len() {
        let tag = entry[at];
        at += 1;
        let name = take(&entry, &mut at).ok_or_else(corrupt)?;
        let key = take(&entry, &mut at).ok_or_else(corrupt)?;
        let value = match tag {
            1 => Some(take(&entry, &mut at).ok_or_else(corrupt)?),
            0 => None,
            other => {
                return Err(StoreError::Corrupt { tree: "journal", message: format!("unknown change tag {other}") })
            }
        };
        changes.push((name, key, value));
    }
    for (name, key, value) in &changes {
        let tree = db.open_tree(name)?;
        match value {
            Some(value) => tree.insert(key, *value).map(drop)?,
            None => tree.remove(key).map(drop)?,
        }
    }
    journal.remove(SLOT)?;
    db.flush()?;
    Ok(changes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> (Db, Tree, Tree, Tree) {
        let db = crate::store::tests::until_unlocked(|| sled::Config::new().path(dir).open());
        let journal = db.open_tree("journal").expect("tree");
        let a = db.open_tree("a").expect("tree");
        let b = db.open_tree("b").expect("tree");
        (db, journal, a, b)
    }

    #[test]
    fn a_batch_cut_short_after_its_journal_entry_is_completed_when_the_store_opens_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let (db, journal, a, b) = open(dir.path());
            a.insert("stale", "gone soon").expect("insert");
            let mut batch = Batch::default();
            batch.put(&a, b"k1".to_vec(), b"v1".to_vec());
            batch.put(&b, b"k2".to_vec(), b"v2".to_vec());
            batch.remove(&a, b"stale".to_vec());
            batch.journal_only(&journal).expect("journal written");
            assert_eq!(a.get("k1").expect("read"), None, "nothing applied yet: the crash came first");
            db.flush().expect("flush");
        }
        let (db, journal, a, b) = open(dir.path());
        assert_eq!(replay(&db, &journal).expect("replays"), 3);
        assert_eq!(a.get("k1").expect("read").as_deref(), Some(&b"v1"[..]));
        assert_eq!(b.get("k2").expect("read").as_deref(), Some(&b"v2"[..]));
        assert_eq!(a.get("stale").expect("read"), None, "the removal was applied too");
        assert!(journal.is_empty(), "the journal is cleared once the batch is whole");
        assert_eq!(replay(&db, &journal).expect("nothing left"), 0);
    }

    #[test]
    fn an_applied_batch_leaves_no_journal_entry_and_a_damaged_entry_applies_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, journal, a, b) = open(dir.path());
        let mut batch = Batch::default();
        batch.put(&a, b"k1".to_vec(), b"v1".to_vec());
        batch.put(&b, b"k2".to_vec(), b"v2".to_vec());
        batch.apply(&journal).expect("applies");
        assert!(journal.is_empty());
        assert_eq!(b.get("k2").expect("read").as_deref(), Some(&b"v2"[..]));

        let mut damaged = Batch::default();
        damaged.put(&a, b"k3".to_vec(), b"v3".to_vec());
        damaged.put(&b, b"k4".to_vec(), b"v4".to_vec());
        let mut entry = damaged.encode();
        entry.truncate(entry.len() - 1);
        journal.insert(SLOT, entry).expect("insert");
        let error = replay(&db, &journal).expect_err("a truncated entry is an error");
        assert!(error.to_string().contains("journal"), "{error}");
        assert_eq!(a.get("k3").expect("read"), None, "not even the first change of a damaged entry");
    }
}
