//! The embedded store: everything in process memory, so the binary runs alone.

use std::collections::HashMap;

use async_trait::async_trait;
use dashmap::DashMap;
use omnigate_connectors::model::{ConversationId, CustomerId, Identity};
use tokio::sync::Mutex;

use super::memory_graph::Graph;
use super::{
    Appended, AuditEntry, ContextStore, ConversationHistory, ConversationRecord, ErasureReport, EventKind,
    EventPage, GraphChange, LinkRecord, NewEvent, StoreError, StoredEvent, View, HISTORY_SCAN_EVENTS,
};

/// In-memory [`ContextStore`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    logs: DashMap<ConversationId, Log>,
    conversations: DashMap<ConversationId, ConversationRecord>,
    /// Identities, customers, merges and the audit log, changed under one lock.
    graph: Mutex<Graph>,
}

/// `system` changes (automatic merges and claims) are recorded at this time.
fn system_change() -> GraphChange {
    GraphChange {
        actor: "system".to_owned(),
        reason: "verified identities observed together".to_owned(),
        at_ms: crate::clock::unix_ms(),
    }
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
        self.graph
            .lock()
            .await
            .add_conversation(&record.customer, record.created_at_ms, &record.id);
        self.conversations.insert(record.id.clone(), record.clone());
        Ok(())
    }

    async fn load_conversation(&self, id: &ConversationId) -> Result<Option<ConversationRecord>, StoreError> {
        Ok(self.conversations.get(id).map(|r| r.clone()))
    }

    async fn resolve_customer(&self, identity: &Identity) -> Result<CustomerId, StoreError> {
        Ok(self.graph.lock().await.resolve(identity))
    }

    async fn resolve_verified(&self, identities: &[Identity]) -> Result<CustomerId, StoreError> {
        self.graph
            .lock()
            .await
            .resolve_verified(identities, &system_change())
            .ok_or_else(|| StoreError::Corrupt("resolve_verified needs at least one identity".to_owned()))
    }

    async fn canonical_customer(&self, customer: &CustomerId) -> Result<CustomerId, StoreError> {
        Ok(self.graph.lock().await.canonical(customer))
    }

    async fn link_identity(
        &self,
        customer: &CustomerId,
        identity: &Identity,
        change: &GraphChange,
    ) -> Result<CustomerId, StoreError> {
        Ok(self.graph.lock().await.link(customer, identity, change))
    }

    async fn unlink_identity(
        &self,
        identity: &Identity,
        change: &GraphChange,
    ) -> Result<Option<CustomerId>, StoreError> {
        Ok(self.graph.lock().await.unlink(identity, change))
    }

    async fn identities_of(&self, customer: &CustomerId) -> Result<Vec<Identity>, StoreError> {
        Ok(self.graph.lock().await.identities_of(customer))
    }

    async fn link_history(&self, customer: &CustomerId) -> Result<Vec<LinkRecord>, StoreError> {
        Ok(self.graph.lock().await.link_history(customer))
    }

    async fn customer_conversations(
        &self,
        customer: &CustomerId,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let ids = self.graph.lock().await.conversations_of(customer);
        Ok(ids
            .iter()
            .filter_map(|id| self.conversations.get(id).map(|r| r.clone()))
            .collect())
    }

    async fn customer_history(
        &self,
        customer: &CustomerId,
        conversations: usize,
        messages: usize,
    ) -> Result<Vec<ConversationHistory>, StoreError> {
        let ids = self.graph.lock().await.conversations_of(customer);
        let mut history = Vec::new();
        for id in ids {
            if history.len() >= conversations {
                break;
            }
            let Some(record) = self.conversations.get(&id).map(|r| r.clone()) else {
                continue;
            };
            let mut tail = Vec::new();
            let mut disposition = None;
            let mut agent = None;
            if let Some(log) = self.logs.get(&id) {
                for event in log.events.iter().rev().take(HISTORY_SCAN_EVENTS) {
                    match &event.kind {
                        EventKind::Message { .. } if tail.len() < messages => tail.push(event.clone()),
                        EventKind::Closed { disposition: d } if disposition.is_none() => {
                            disposition = Some(d.clone());
                        }
                        EventKind::Assigned { agent_id, .. } if agent.is_none() => {
                            agent = Some(agent_id.clone())
                        }
                        _ => {}
                    }
                }
            }
            tail.reverse();
            history.push(ConversationHistory {
                record,
                messages: tail,
                disposition,
                agent,
            });
        }
        Ok(history)
    }

    async fn erase_customer(&self, customer: &CustomerId) -> Result<ErasureReport, StoreError> {
        let erased = self.graph.lock().await.erase(customer);
        let mut events = 0;
        for id in &erased.conversations {
            if let Some((_, log)) = self.logs.remove(id) {
                events += log.events.len() as u64;
            }
            self.conversations.remove(id);
        }
        Ok(ErasureReport {
            identities: erased.identities,
            link_records: erased.link_records,
            conversations: erased.conversations.len() as u64,
            events,
            merged_ids: erased.merged_ids,
        })
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.graph.lock().await.append_audit(entry);
        Ok(())
    }

    async fn audit_entries(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self.graph.lock().await.audit_entries(limit))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_passes_the_conformance_suite() {
        super::super::testsuite::run(std::sync::Arc::new(super::MemoryStore::new())).await;
    }
}
