//! `webhook-id` idempotency: a duplicate delivery is answered 200 without reprocessing (PROTOCOLS.md §3.6).
//! The gateway keeps the durable record; this is the pure policy it applies.

use std::collections::{BTreeSet, HashMap};

/// Ids seen within a retention window (at least 24 h, longer than the sender's retry horizon).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenIds {
    retention_ms: u64,
    expires: HashMap<String, u64>,
    by_expiry: BTreeSet<(u64, String)>,
}

impl SeenIds {
    /// An empty set keeping ids for `retention_ms`.
    pub fn new(retention_ms: u64) -> Self {
        Self {
            retention_ms,
            ..Self::default()
        }
    }

    /// Records `id` at `now_ms`; returns `false` when it was already seen (a duplicate: do nothing).
    pub fn first_time(&mut self, id: &str, now_ms: u64) -> bool {
        self.purge(now_ms);
        if self.expires.contains_key(id) {
            return false;
        }
        let expiry = now_ms.saturating_add(self.retention_ms);
        self.expires.insert(id.to_owned(), expiry);
        self.by_expiry.insert((expiry, id.to_owned()));
        true
    }

    /// Forgets `id`, so its next delivery is processed: the first one was answered with an error (e.g. the
    /// store could not keep it) and the sender retries.
    pub fn forget(&mut self, id: &str) {
        if let Some(expiry) = self.expires.remove(id) {
            self.by_expiry.remove(&(expiry, id.to_owned()));
        }
    }

    /// Forgets ids older than the retention.
    pub fn purge(&mut self, now_ms: u64) {
        while self
            .by_expiry
            .first()
            .is_some_and(|(expiry, _)| *expiry <= now_ms)
        {
            if let Some((_, id)) = self.by_expiry.pop_first() {
                self.expires.remove(&id);
            }
        }
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.expires.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.expires.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    #[test]
    fn a_duplicate_webhook_id_is_a_no_op_until_retention_ends() {
        let mut seen = SeenIds::new(DAY);
        assert!(seen.first_time("evt_01HF0000000000000000000001", 0));
        assert!(!seen.first_time("evt_01HF0000000000000000000001", 5_000));
        assert!(seen.first_time("evt_01HF0000000000000000000002", 5_000));
        assert_eq!(seen.len(), 2);
        seen.purge(DAY);
        assert_eq!(seen.len(), 1);
        assert!(seen.first_time("evt_01HF0000000000000000000001", DAY + 1));
        assert!(!seen.is_empty());
    }

    #[test]
    fn a_forgotten_id_is_processed_again() {
        let mut seen = SeenIds::new(DAY);
        assert!(seen.first_time("evt_1", 0));
        seen.forget("evt_1");
        seen.forget("evt_never_seen");
        assert!(
            seen.first_time("evt_1", 10),
            "the retry of a refused delivery is processed"
        );
        assert_eq!(seen.len(), 1);
        seen.purge(DAY + 10);
        assert!(seen.is_empty());
    }
}
