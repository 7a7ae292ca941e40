//! The provider ids of a conversation's newest turns, held by its actor so that the common
//! message costs no provider-id record and no read to find one.
//!
//! A turn that is the whole answer to its message ([`super::turns::encode_answer`]) holds
//! everything a retry must get back, and its key is found from the seq this window keeps.
//!
//! The window is the conversation's newest [`WINDOW`] turns, with or without a provider id,
//! so it is rebuilt from the newest turn records whenever an actor starts and never holds
//! anything the store does not. A turn leaving it gets a provider-id record of its own (if
//! it has none), written just before the turn that pushes it out, so an id is always found
//! by the window or by its record.
//!
//! The window is *complete* when it holds every provider id the conversation ever had: it
//! was rebuilt from every turn back to seq 1 and nothing left it since. Then an id it does not
//! hold is new without a read; otherwise the provider-id records are read as well.

use std::hash::{Hash, Hasher};

/// Turns whose provider ids an actor remembers; older ones have provider-id records.
pub const WINDOW: usize = 64;

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentProviderIds {
    /// (hash of the provider id of the turn's first message or [`NO_ID`], the turn's seq),
    /// oldest first: 16 bytes a turn, allocated exactly (most conversations are a few turns
    /// and 100,000 of them may be live).
    turns: Vec<(u64, u64)>,
    complete: bool,
}

/// Where an earlier answer to a provider id may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Earlier {
    /// Nowhere: the id is new.
    None,
    /// In its provider-id record, or in the turn at this seq, which the window names.
    Look(Option<u64>),
}

impl RecentProviderIds {
    /// The window of a conversation without turns: complete and empty.
    pub fn new_conversation() -> Self {
        Self { turns: Vec::new(), complete: true }
    }

    /// A window of `turns` (provider id and seq, oldest first; the newest [`WINDOW`] are
    /// kept), complete if they are every turn the conversation ever had.
    pub(super) fn rebuilt<'p>(turns: impl IntoIterator<Item = (Option<&'p str>, u64)>, complete: bool) -> Self {
        let mut window = Self { turns: Vec::new(), complete };
        for (provider_message_id, seq) in turns {
            window.remember(provider_message_id, seq);
        }
        window
    }

    /// Where to look for an earlier answer to `provider_message_id`.
    pub fn earlier(&self, provider_message_id: &str) -> Earlier {
        let hash = hash(provider_message_id);
        match self.turns.iter().rev().find(|(h, _)| *h == hash) {
            Some(&(_, seq)) => Earlier::Look(Some(seq)),
            None if self.complete => Earlier::None,
            None => Earlier::Look(None),
        }
    }

    /// The seq of the turn with a provider id that the next [`Self::remember`] pushes out, if
    /// the window is full.
    pub fn leaving(&self) -> Option<u64> {
        match self.turns.first() {
            Some(&(hash, seq)) if hash != NO_ID && self.turns.len() >= WINDOW => Some(seq),
            _ => None,
        }
    }

    /// Remembers the turn starting at `seq` and the provider id of its first message; the
    /// oldest turn leaves when the window is full.
    pub fn remember(&mut self, provider_message_id: Option<&str>, seq: u64) {
        if self.turns.len() >= WINDOW {
            if self.turns.remove(0).0 != NO_ID {
                self.complete = false;
            }
        } else {
            self.turns.reserve_exact(1);
        }
        self.turns.push((provider_message_id.map_or(NO_ID, hash), seq));
    }
}

/// The hash place of a turn without a provider id; no id hashes to it.
const NO_ID: u64 = 0;

/// A stable 64-bit hash of a provider id, never [`NO_ID`]. A collision costs only a read: the
/// turn or record found is checked against the id itself.
fn hash(provider_message_id: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    provider_message_id.hash(&mut hasher);
    hasher.finish().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_window_knows_new_ids_without_a_read() {
        let mut window = RecentProviderIds::new_conversation();
        window.remember(Some("wamid.1"), 1);
        window.remember(None, 2);
        window.remember(Some("wamid.2"), 3);

        assert_eq!(window.earlier("wamid.2"), Earlier::Look(Some(3)));
        assert_eq!(window.earlier("wamid.1"), Earlier::Look(Some(1)));
        assert_eq!(window.earlier("wamid.3"), Earlier::None);
    }

    #[test]
    fn an_incomplete_window_sends_unknown_ids_to_the_records() {
        let window = RecentProviderIds::rebuilt([(Some("wamid.9"), 9)], false);

        assert_eq!(window.earlier("wamid.9"), Earlier::Look(Some(9)));
        assert_eq!(window.earlier("wamid.1"), Earlier::Look(None));
    }

    #[test]
    fn the_oldest_id_leaves_a_full_window_which_is_then_incomplete() {
        let mut window = RecentProviderIds::new_conversation();
        for seq in 1..=WINDOW as u64 {
            assert_eq!(window.leaving(), None);
            window.remember(Some(&format!("wamid.{seq}")), seq);
        }
        assert_eq!(window.leaving(), Some(1));

        window.remember(Some("wamid.next"), 100);

        assert_eq!(window.leaving(), Some(2));
        assert_eq!(window.earlier("wamid.1"), Earlier::Look(None), "gone from memory: its record answers");
        assert_eq!(window.earlier("wamid.next"), Earlier::Look(Some(100)));
    }

    #[test]
    fn turns_without_a_provider_id_take_a_place_but_leave_without_a_record() {
        let mut window = RecentProviderIds::new_conversation();
        window.remember(None, 1);
        for seq in 2..=WINDOW as u64 {
            window.remember(Some(&format!("wamid.{seq}")), seq);
        }
        assert_eq!(window.leaving(), None, "the oldest turn has no provider id");

        window.remember(Some("wamid.next"), 100);

        assert_eq!(window.earlier("wamid.unknown"), Earlier::None, "no id left, so the window is still complete");
        assert_eq!(window.leaving(), Some(2));
    }

    #[test]
    fn a_rebuilt_window_keeps_the_newest_turns() {
        let ids: Vec<String> = (1..=100).map(|n| format!("wamid.{n}")).collect();
        let window = RecentProviderIds::rebuilt(ids.iter().map(|id| Some(id.as_str())).zip(1..), true);

        assert_eq!(window.leaving(), Some(100 - WINDOW as u64 + 1));
        assert_eq!(window.earlier("wamid.100"), Earlier::Look(Some(100)));
        assert_eq!(window.earlier("wamid.1"), Earlier::Look(None));
    }
}
