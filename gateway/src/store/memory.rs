//! The embedded store: everything in process memory, so the binary runs alone.

use std::collections::HashMap;

use async_trait::async_trait;
use dashmap::DashMap;
use omnigate_connectors::model::{ConversationId, CustomerId, Identity, IdentityKind};

use super::{
    Appended, ContextStore, ConversationRecord, EventPage, Held, Inbox, NewEvent, StoreError, StoredEvent,
    View,
};

/// In-memory [`ContextStore`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    logs: DashMap<ConversationId, Log>,
    conversations: DashMap<ConversationId, ConversationRecord>,
    identities: DashMap<(IdentityKind, String), CustomerId>,
    held: DashMap<(Inbox, String), String>,
}

#[derive(Debug, Default)]
struct Log {
    events: Vec<StoredEvent>,
    /// `seq` of each customer-visible event, in order: entry `i` has `customer_seq = i + 1`.
    customer_index: Vec<u64>,
    idempotency: HashMap<String, u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

#[async_trait]
impl ContextStore for MemoryStore {
    async fn append(&self, conversation: &ConversationId, event: NewEvent) -> Result<Appended, StoreError> {
        let mut log = self.logs.entry(conversation.clone()).or_default();
        if let Some(key) = &event.idempotency_key {
            if let Some(seq) = log.idempotency.get(key) {
                let original = log.events[(*seq - 1) as usize].clone();
                return Ok(Appended::Duplicate(original));
            }
        }
        let seq = log.events.len() as u64 + 1;
        let customer_seq = event
            .kind
            .customer_visible()
            .then(|| log.customer_index.len() as u64 + 1);
        if customer_seq.is_some() {
            log.customer_index.push(seq);
        }
        if let Some(key) = event.idempotency_key {
            log.idempotency.insert(key, seq);
        }
        let stored = StoredEvent {
            seq,
            customer_seq,
            at_ms: event.at_ms,
            actor: event.actor,
            kind: event.kind,
        };
        log.events.push(stored.clone());
        Ok(Appended::New(stored))
    }

    async fn events_after(
        &self,
        conversation: &ConversationId,
        view: View,
        after: u64,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        let Some(log) = self.logs.get(conversation) else {
            return Ok(EventPage {
                events: Vec::new(),
                last: 0,
            });
        };
        let page = match view {
            View::Agent => EventPage {
                events: log
                    .events
                    .iter()
                    .skip(after as usize)
                    .take(limit)
                    .cloned()
                    .collect(),
                last: log.events.len() as u64,
            },
            View::Customer => EventPage {
                events: log
                    .customer_index
                    .iter()
                    .skip(after as usize)
                    .take(limit)
                    .map(|seq| log.events[(*seq - 1) as usize].clone())
                    .collect(),
                last: log.customer_index.len() as u64,
            },
        };
        Ok(page)
    }

    async fn customer_position(&self, conversation: &ConversationId, seq: u64) -> Result<u64, StoreError> {
        Ok(self
            .logs
            .get(conversation)
            .map_or(0, |log| log.customer_index.partition_point(|s| *s <= seq) as u64))
    }

    async fn agent_position(
        &self,
        conversation: &ConversationId,
        customer_seq: u64,
    ) -> Result<Option<u64>, StoreError> {
        if customer_seq == 0 {
            return Ok(None);
        }
        Ok(self
            .logs
            .get(conversation)
            .and_then(|log| log.customer_index.get(customer_seq as usize - 1).copied()))
    }

    async fn save_conversation(&self, record: &ConversationRecord) -> Result<(), StoreError> {
        self.conversations.insert(record.id.clone(), record.clone());
        Ok(())
    }

    async fn load_conversation(&self, id: &ConversationId) -> Result<Option<ConversationRecord>, StoreError> {
        Ok(self.conversations.get(id).map(|r| r.clone()))
    }

    async fn resolve_customer(&self, identity: &Identity) -> Result<CustomerId, StoreError> {
        let key = (identity.kind, identity.value.clone());
        Ok(self
            .identities
            .entry(key)
            .or_insert_with(CustomerId::generate)
            .clone())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn hold(&self, inbox: Inbox, key: &str, value: &str) -> Result<(), StoreError> {
        self.held.insert((inbox, key.to_owned()), value.to_owned());
        Ok(())
    }

    async fn release(&self, inbox: Inbox, key: &str) -> Result<(), StoreError> {
        self.held.remove(&(inbox, key.to_owned()));
        Ok(())
    }

    async fn held(&self, inbox: Inbox) -> Result<Vec<Held>, StoreError> {
        let mut held: Vec<Held> = self
            .held
            .iter()
            .filter(|e| e.key().0 == inbox)
            .map(|e| Held {
                key: e.key().1.clone(),
                value: e.value().clone(),
            })
            .collect();
        held.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_passes_the_conformance_suite() {
        super::super::testsuite::run(std::sync::Arc::new(super::MemoryStore::new())).await;
    }
}
