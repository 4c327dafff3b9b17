//! [`IdempotencyIndex`]: the embedded store's idempotency keys of one conversation, each with the `seq` of the
//! event it first appended.
//!
//! A `HashMap<String, u64>` hashes every key again whenever it grows, reading each key's bytes from wherever
//! they lie; for a conversation of thousands of keys, those rehashes were a third of an append under webhook
//! ingest (`docs/performance.md`). Here each entry keeps its hash, so growing reads only the table. Keys are
//! chosen by clients and providers, so the hash stays std's keyed SipHash, seeded per index.

use std::hash::{BuildHasher, RandomState};

use hashbrown::hash_table::Entry as Slot;
use hashbrown::HashTable;

/// Idempotency key → `seq` of the event appended with it.
#[derive(Debug, Default)]
pub(super) struct IdempotencyIndex {
    hasher: RandomState,
    entries: HashTable<Entry>,
}

#[derive(Debug)]
struct Entry {
    hash: u64,
    key: Box<str>,
    seq: u64,
}

/// A key's hash in one index, computed once for a lookup and the insert after it.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyHash(u64);

impl IdempotencyIndex {
    /// `key`'s hash in this index.
    pub(super) fn hash(&self, key: &str) -> KeyHash {
        KeyHash(self.hasher.hash_one(key))
    }

    /// The `seq` recorded for `key`.
    pub(super) fn get(&self, hash: KeyHash, key: &str) -> Option<u64> {
        self.entries
            .find(hash.0, |e| e.hash == hash.0 && *e.key == *key)
            .map(|e| e.seq)
    }

    /// Records `seq` for `key`, replacing what it had.
    pub(super) fn insert(&mut self, hash: KeyHash, key: String, seq: u64) {
        match self
            .entries
            .entry(hash.0, |e| e.hash == hash.0 && *e.key == *key, |e| e.hash)
        {
            Slot::Occupied(mut slot) => slot.get_mut().seq = seq,
            Slot::Vacant(slot) => {
                slot.insert(Entry {
                    hash: hash.0,
                    key: key.into_boxed_str(),
                    seq,
                });
            }
        }
    }

    /// Whether it holds no key.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets every key and frees the table.
    pub(super) fn clear(&mut self) {
        self.entries = HashTable::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(index: &mut IdempotencyIndex, key: &str, seq: u64) {
        index.insert(index.hash(key), key.to_owned(), seq);
    }

    fn get(index: &IdempotencyIndex, key: &str) -> Option<u64> {
        index.get(index.hash(key), key)
    }

    #[test]
    fn finds_every_key_after_growing_and_nothing_else() {
        let mut index = IdempotencyIndex::default();
        for n in 0..5_000u64 {
            insert(&mut index, &format!("msg-{n}"), n + 1);
        }
        for n in 0..5_000u64 {
            assert_eq!(get(&index, &format!("msg-{n}")), Some(n + 1), "msg-{n}");
        }
        assert_eq!(get(&index, "msg-5000"), None);
        assert_eq!(get(&index, "msg-"), None);
        assert_eq!(get(&index, ""), None);
    }

    #[test]
    fn a_key_inserted_again_keeps_one_entry_with_the_new_seq() {
        let mut index = IdempotencyIndex::default();
        insert(&mut index, "a", 1);
        insert(&mut index, "a", 7);
        assert_eq!(get(&index, "a"), Some(7));
        assert_eq!(index.entries.len(), 1);
    }

    #[test]
    fn clear_forgets_every_key() {
        let mut index = IdempotencyIndex::default();
        assert!(index.is_empty());
        insert(&mut index, "a", 1);
        assert!(!index.is_empty());
        index.clear();
        assert!(index.is_empty());
        assert_eq!(get(&index, "a"), None);
    }
}
