//! The snapshot baton's copy of sled writes at a clean shutdown (`actors/vendor/sled/PATCHES.md`).
//!
//! A clean close records the page table, so the next start replays one segment of the log
//! instead of everything written since the previous start. These tests check what a user of
//! the store would notice if that snapshot were wrong: data missing or changed after a
//! restart, or lost later when sled reuses a log segment it wrongly believed empty. A copy
//! of the directory taken before each clean close (a crash image, which has no shutdown
//! snapshot) must recover the same data by replaying the log, as sled always did.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use common::copy_dir;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TREES: [&str; 3] = ["__sled__default", "messages", "conversations"];

/// One test at a time: one of them counts the bytes this process writes.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes this process has passed to write calls so far (`wchar` in `/proc/self/io`).
fn bytes_written() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines().find_map(|line| line.strip_prefix("wchar: ")).unwrap().trim().parse().unwrap()
}

/// What every tree should hold.
type Model = BTreeMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>>;

fn open(path: &Path) -> sled::Db {
    config(path).open().unwrap()
}

/// Opens without the periodic flusher, whose segment cleaning writes on its own schedule.
fn open_without_flusher(path: &Path) -> sled::Db {
    config(path).flush_every_ms(None).open().unwrap()
}

fn config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        // A small cache, so pages are written out and read back while the workload runs.
        .cache_capacity(1 << 20)
        .flush_every_ms(Some(20))
}

/// Inserts, overwrites and removals over a few thousand keys per tree, so leaves split and
/// merge, pages are freed and reused, and the log rolls over many segments.
fn workload(db: &sled::Db, model: &mut Model, rng: &mut StdRng, ops: usize) {
    for _ in 0..ops {
        let name = TREES[rng.gen_range(0..TREES.len())];
        let tree = db.open_tree(name).unwrap();
        let expected = model.entry(name).or_default();
        let key = rng.gen_range(0u32..6_000).to_be_bytes().to_vec();
        match rng.gen_range(0..10) {
            0..=6 => {
                let len = rng.gen_range(8..600);
                let value: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                tree.insert(&key, value.clone()).unwrap();
                expected.insert(key, value);
            }
            7..=8 => {
                tree.remove(&key).unwrap();
                expected.remove(&key);
            }
            _ => {
                // A run of neighbours goes at once: whole leaves empty out and merge.
                let start = u32::from_be_bytes(key.try_into().unwrap());
                for k in start..start.saturating_add(200).min(6_000) {
                    let k = k.to_be_bytes();
                    tree.remove(k).unwrap();
                    expected.remove(&k[..]);
                }
            }
        }
    }
}

fn verify(db: &sled::Db, model: &Model, what: &str) {
    for name in TREES {
        let stored: BTreeMap<Vec<u8>, Vec<u8>> = db
            .open_tree(name)
            .unwrap()
            .iter()
            .map(|entry| entry.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect();
        let empty = BTreeMap::new();
        let expected = model.get(name).unwrap_or(&empty);
        assert_eq!(stored.len(), expected.len(), "{what}: number of keys in {name}");
        for (key, value) in expected {
            assert_eq!(stored.get(key), Some(value), "{what}: key {key:?} of {name}");
        }
    }
}

/// A new store that took `ops` operations of the workload and was closed cleanly: its
/// directory (removed on drop), the store's path and what it holds.
fn closed_store(seed: u64, ops: usize) -> (tempfile::TempDir, PathBuf, Model) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::new();
    let db = open(&path);
    workload(&db, &mut model, &mut rng, ops);
    drop(db);
    (dir, path, model)
}

/// The stable lsn in the name of the directory's snapshot file (`snap.<hex lsn>`).
fn snapshot_lsn(path: &Path) -> Option<i64> {
    std::fs::read_dir(path)
        .unwrap()
        .filter_map(|entry| entry.unwrap().file_name().into_string().ok())
        .filter_map(|name| name.strip_prefix("snap.").and_then(|hex| i64::from_str_radix(hex, 16).ok()))
        .max()
}

#[test]
fn a_clean_close_writes_a_snapshot_that_restarts_with_every_key() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("db");
    let mut rng = StdRng::seed_from_u64(7);
    let mut model = Model::new();

    for round in 0..4 {
        let db = open(&path);
        verify(&db, &model, &format!("start of round {round}"));
        let before = snapshot_lsn(&path);
        workload(&db, &mut model, &mut rng, 40_000);
        db.flush().unwrap();
        let crash_image = dir.path().join(format!("crash-image-{round}"));
        copy_dir(&path, &crash_image);
        let segments_in_use = std::fs::metadata(path.join("db")).unwrap().len() / (512 * 1024);
        drop(db);

        let after = snapshot_lsn(&path);
        assert!(after > before, "round {round}: a clean close writes a newer snapshot ({before:?} -> {after:?})");
        assert_eq!(snapshot_lsn(&crash_image), before, "the crash image has only the snapshot of the last start");

        let replayed = open(&crash_image);
        verify(&replayed, &model, &format!("crash image of round {round}, replayed from the log"));
        drop(replayed);
        std::fs::remove_dir_all(&crash_image).unwrap();
        assert!(segments_in_use > 8, "round {round}: the workload spans many log segments ({segments_in_use})");
    }

    let db = open(&path);
    verify(&db, &model, "after the last clean close");
}

#[test]
fn a_close_without_writes_keeps_the_snapshot_of_the_start() {
    let _serial = serial();
    let (_dir, path, model) = closed_store(11, 5_000);

    // Without the periodic flusher: its segment cleaning moves pages on its own schedule, and
    // a close after such a write rightly records a new snapshot. Here nothing writes at all.
    let db = open_without_flusher(&path);
    let started_from = snapshot_lsn(&path);
    drop(db);
    assert_eq!(snapshot_lsn(&path), started_from, "nothing written, no new snapshot");
    verify(&open(&path), &model, "after a close without writes");
}

#[test]
fn a_snapshot_left_half_written_is_ignored() {
    let _serial = serial();
    // Arrange: a store closed cleanly, then the remains of a snapshot write that stopped
    // before its rename (a crash while closing), numbered above the real one.
    let (_dir, path, model) = closed_store(13, 5_000);
    std::fs::write(path.join(format!("snap.{:016X}.generating", i64::MAX / 2)), b"half a snapshot").unwrap();

    // Act + Assert: it opens from the complete snapshot with every key.
    verify(&open(&path), &model, "with a half-written snapshot beside the complete one");
}

#[test]
fn a_start_does_not_overwrite_free_segments_again() {
    let _serial = serial();
    // Arrange: a log that rewrote much more than it keeps, so sled freed segments, and one
    // start since, which cleared the freed segments' headers. Both starts here run without
    // the periodic flusher: it starts inside `open` and cleans segments on its own schedule,
    // so it could free one more segment (whose header the next start rightly clears) or
    // write while the start is measured. Neither is the start's own writing.
    let (_dir, path, model) = closed_store(17, 60_000);
    drop(open_without_flusher(&path));

    // Act
    let before = bytes_written();
    let db = open_without_flusher(&path);
    let written = bytes_written() - before;

    // Assert: not a segment's worth (512 KiB) written; sled used to overwrite every free
    // segment at every start.
    assert!(written < 512 * 1024, "a start wrote {written} bytes");
    verify(&db, &model, "after starts that left the free segments alone");
}
