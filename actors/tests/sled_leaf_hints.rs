//! `Tree::insert_hinted` in baton's copy of sled (`actors/vendor/sled/PATCHES.md`): an insert
//! that starts at the leaf its conversation's previous insert went to instead of the root.
//!
//! What a user of the store would notice if a hint were trusted when it should not be: a
//! message written into a leaf that is no longer in the tree, so that reading it back (which
//! descends from the root) or iterating the tree misses it, now or after a restart. The
//! workload makes that likely: conversations append their messages while others lose runs of
//! old ones, so leaves split, merge and are freed, and freed page ids are reused by later
//! splits, on two threads at once and with a cache small enough that pages are evicted.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::copy_dir;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sled::LeafHint;

/// Messages keyed as baton's are: conversation id, then the message's seq, both big-endian.
fn key(conversation: u32, seq: u64) -> Vec<u8> {
    let mut key = conversation.to_be_bytes().to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn value(conversation: u32, seq: u64) -> Vec<u8> {
    format!("message {seq} of conversation {conversation}, with some text to fill a record").into_bytes()
}

fn open(path: &Path) -> sled::Db {
    sled::Config::new().path(path).cache_capacity(1 << 20).flush_every_ms(Some(20)).open().unwrap()
}

/// One thread's conversations: each appends with its own hint; now and then the oldest
/// messages of one of them are removed, leaving leaves to merge. Returns what the tree should
/// hold of these conversations.
fn append_and_trim(tree: &sled::Tree, conversations: std::ops::Range<u32>, seed: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let first = conversations.start;
    let count = conversations.len();
    let mut hints = vec![LeafHint::default(); count];
    let mut next_seq = vec![0u64; count];
    let mut oldest = vec![0u64; count];
    let mut model = BTreeMap::new();
    for _ in 0..40_000 {
        let i = rng.gen_range(0..count);
        let conversation = first + i as u32;
        if rng.gen_range(0..100) < 94 {
            let seq = next_seq[i];
            next_seq[i] += 1;
            tree.insert_hinted(key(conversation, seq), value(conversation, seq), &mut hints[i]).unwrap();
            model.insert(key(conversation, seq), value(conversation, seq));
        } else {
            // Remove a run of this conversation's oldest messages (a retention sweep).
            let run = rng.gen_range(1..16);
            let end = (oldest[i] + run).min(next_seq[i]);
            for seq in oldest[i]..end {
                tree.remove(key(conversation, seq)).unwrap();
                model.remove(&key(conversation, seq));
            }
            oldest[i] = end;
        }
    }
    model
}

fn assert_holds(tree: &sled::Tree, expected: &BTreeMap<Vec<u8>, Vec<u8>>, when: &str) {
    for (k, v) in expected {
        assert_eq!(tree.get(k).unwrap().as_deref(), Some(v.as_slice()), "{when}: key {k:?} read back");
    }
    let stored: Vec<(Vec<u8>, Vec<u8>)> =
        tree.iter().map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect::<Result<_, _>>().unwrap();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = expected.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(stored.len(), expected.len(), "{when}: keys in the tree");
    assert!(stored == expected, "{when}: the tree iterates to what was written");
}

#[test]
fn hinted_inserts_land_where_a_descent_finds_them_while_leaves_split_merge_and_are_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let crash_image = dir.path().join("crash");
    let expected = {
        let db = open(&path);
        let tree = Arc::new(db.open_tree("messages").unwrap());
        let threads: Vec<_> = (0..2u32)
            .map(|t| {
                let tree = Arc::clone(&tree);
                std::thread::spawn(move || append_and_trim(&tree, t * 150..t * 150 + 150, 7 + u64::from(t)))
            })
            .collect();
        let mut expected = BTreeMap::new();
        for thread in threads {
            expected.extend(thread.join().unwrap());
        }
        assert!(expected.len() > 10_000, "the workload keeps most messages: {}", expected.len());
        assert!(tree.pages_freed() > 100, "leaves merged and were freed: {}", tree.pages_freed());
        assert_holds(&tree, &expected, "while open");
        db.flush().unwrap();
        copy_dir(&path, &crash_image);
        expected
    };

    let reopened = open(&path);
    assert_holds(&reopened.open_tree("messages").unwrap(), &expected, "after a clean restart");
    drop(reopened);
    let recovered = open(&crash_image);
    assert_holds(&recovered.open_tree("messages").unwrap(), &expected, "in a crash image");
}

#[test]
fn a_hint_from_another_key_range_only_costs_a_descent() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let tree = db.open_tree("messages").unwrap();
    let mut hint = LeafHint::default();
    for seq in 0..5_000 {
        tree.insert_hinted(key(1, seq), value(1, seq), &mut hint).unwrap();
    }
    // The same hint, now for keys far from its leaf and in front of every other key.
    for seq in 0..500 {
        tree.insert_hinted(key(0, seq), value(0, seq), &mut hint).unwrap();
    }
    let expected: BTreeMap<Vec<u8>, Vec<u8>> = (0..5_000)
        .map(|seq| (key(1, seq), value(1, seq)))
        .chain((0..500).map(|seq| (key(0, seq), value(0, seq))))
        .collect();
    assert_holds(&tree, &expected, "after mixing ranges");
}

/// A leaf that appends through hints find due to split is split where the next append goes
/// (`PATCHES.md`), so a conversation's messages fill a leaf before the next one is started;
/// halved, every leaf an append went to was left half empty. What a user would notice: more
/// leaves for the same messages, each costing memory while cached and a rewrite of two leaves
/// and their parent whenever it split.
#[test]
fn appends_through_hints_fill_the_leaves_that_halving_left_half_empty() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let hinted = db.open_tree("hinted").unwrap();
    let plain = db.open_tree("plain").unwrap();
    let conversations = 200u32;
    let mut hints = vec![LeafHint::default(); conversations as usize];
    let mut expected = BTreeMap::new();
    for seq in 0..100 {
        for conversation in 0..conversations {
            let hint = &mut hints[conversation as usize];
            hinted.insert_hinted(key(conversation, seq), value(conversation, seq), hint).unwrap();
            plain.insert(key(conversation, seq), value(conversation, seq)).unwrap();
            expected.insert(key(conversation, seq), value(conversation, seq));
        }
    }
    assert_holds(&hinted, &expected, "appended through hints");
    assert_holds(&plain, &expected, "appended without hints");
    let (hinted_leaves, plain_leaves) = (hinted.leaf_count().unwrap(), plain.leaf_count().unwrap());
    assert!(
        hinted_leaves * 100 <= plain_leaves * 85,
        "appends through hints left fuller leaves: {hinted_leaves} against {plain_leaves} for {} messages",
        expected.len()
    );
}
