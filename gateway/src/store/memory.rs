//! The embedded store: everything in process memory, so the binary runs alone.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use omnigate_connectors::model::{ConversationId, CustomerId, Identity};
use tokio::sync::Mutex;

use super::chunked::ChunkedLog;
use super::idempotency::IdempotencyIndex;
use super::memory_graph::Graph;
use super::{
    Appended, AuditEntry, ContextStore, ConversationHistory, ConversationRecord, ConversationStatus,
    CustomerProfile, Device, ErasureReport, EventKind, EventPage, GraphChange, Held, Inbox, LinkRecord,
    NewEvent, PushPlatform, Retention, StoreError, StoredEvent, Swept, View, HISTORY_SCAN_EVENTS,
};
use crate::clock::unix_ms;
use crate::id_map::IdDashMap;

/// In-memory [`ContextStore`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    logs: IdDashMap<ConversationId, Log>,
    conversations: IdDashMap<ConversationId, ConversationRecord>,
    /// Identities, customers, merges and the audit log, changed under one lock.
    graph: Mutex<Graph>,
    /// Devices by owner, and each device's owner; both change under the `devices` lock.
    devices: Mutex<Devices>,
    /// Profiles with the unix ms of their last save.
    profiles: IdDashMap<CustomerId, (CustomerProfile, u64)>,
    retention: Retention,
    /// Unfinished channel work (kept CTI events, outbox jobs) by inbox and key.
    held: DashMap<(Inbox, String), String>,
}

#[derive(Debug, Default)]
struct Devices {
    by_customer: HashMap<CustomerId, BTreeSet<Device>>,
    owner: HashMap<(PushPlatform, String), CustomerId>,
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
    events: ChunkedLog<Arc<StoredEvent>>,
    /// `seq` of each customer-visible event, in order: entry `i` has `customer_seq = i + 1`.
    customer_index: Vec<u64>,
    idempotency: IdempotencyIndex,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// An empty store whose [`MemoryStore::sweep`] applies `retention`.
    pub fn with_retention(retention: Retention) -> MemoryStore {
        MemoryStore {
            retention,
            ..MemoryStore::default()
        }
    }

    /// Removes what has outlived its retention at `now_ms` (unix ms): closed conversations (log and summary),
    /// closed conversations' idempotency keys, profiles. A reopened conversation is not closed, so it stays.
    pub fn sweep(&self, now_ms: u64) -> Swept {
        let mut swept = Swept::default();
        let ttl_ms = self.retention.closed_conversation_secs.saturating_mul(1000);
        let idem_ms = self.retention.idempotency_after_close_secs.saturating_mul(1000);
        let closed: Vec<(ConversationId, u64)> = self
            .conversations
            .iter()
            .filter(|r| r.status == ConversationStatus::Closed)
            .filter_map(|r| Some((r.id.clone(), r.closed_at_ms?)))
            .collect();
        for (id, closed_at) in closed {
            let age = now_ms.saturating_sub(closed_at);
            if ttl_ms > 0 && age >= ttl_ms {
                // Removed only if still closed: a reopen between the scan and here keeps it.
                if self
                    .conversations
                    .remove_if(&id, |_, r| r.status == ConversationStatus::Closed)
                    .is_some()
                {
                    self.logs.remove(&id);
                    swept.conversations += 1;
                }
            } else if idem_ms > 0 && age >= idem_ms {
                if let Some(mut log) = self.logs.get_mut(&id) {
                    if !log.idempotency.is_empty() {
                        log.idempotency.clear();
                        swept.idempotency_keys += 1;
                    }
                }
            }
        }
        let profile_ms = self.retention.profile_secs.saturating_mul(1000);
        if profile_ms > 0 {
            let before = self.profiles.len();
            self.profiles
                .retain(|_, (_, saved)| now_ms.saturating_sub(*saved) < profile_ms);
            swept.profiles = before - self.profiles.len();
        }
        swept
    }
}

#[async_trait]
impl ContextStore for MemoryStore {
    async fn append(&self, conversation: &ConversationId, event: NewEvent) -> Result<Appended, StoreError> {
        // The id is cloned only for a conversation's first event.
        let mut log = match self.logs.get_mut(conversation) {
            Some(log) => log,
            None => self.logs.entry(conversation.clone()).or_default(),
        };
        // The key is hashed once, for the lookup and the insert.
        let keyed = event.idempotency_key.map(|key| (log.idempotency.hash(&key), key));
        if let Some((hash, key)) = &keyed {
            if let Some(original) = log
                .idempotency
                .get(*hash, key)
                .and_then(|seq| log.events.get(seq as usize - 1))
            {
                return Ok(Appended::Duplicate(Arc::clone(original)));
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
        if let Some((hash, key)) = keyed {
            log.idempotency.insert(hash, key, seq);
        }
        let stored = Arc::new(StoredEvent {
            seq,
            customer_seq,
            at_ms: event.at_ms,
            actor: event.actor,
            kind: event.kind,
        });
        log.events.push(Arc::clone(&stored));
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
                    .iter_from(usize::try_from(after).unwrap_or(usize::MAX))
                    .take(limit)
                    .map(|event| StoredEvent::clone(event))
                    .collect(),
                last: log.events.len() as u64,
            },
            View::Customer => EventPage {
                events: log
                    .customer_index
                    .iter()
                    .skip(after as usize)
                    .take(limit)
                    .filter_map(|seq| {
                        log.events
                            .get(*seq as usize - 1)
                            .map(|event| StoredEvent::clone(event))
                    })
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
                for event in log.events.iter_from(0).rev().take(HISTORY_SCAN_EVENTS) {
                    match &event.kind {
                        EventKind::Message { .. } if tail.len() < messages => {
                            tail.push(StoredEvent::clone(event))
                        }
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
        let (customer, erased) = {
            let mut graph = self.graph.lock().await;
            let survivor = graph.canonical(customer);
            let erased = graph.erase(&survivor);
            (survivor, erased)
        };
        let customer = &customer;
        let mut events = 0;
        for id in &erased.conversations {
            if let Some((_, log)) = self.logs.remove(id) {
                events += log.events.len() as u64;
            }
            self.conversations.remove(id);
        }
        let profiles = u64::from(self.profiles.remove(customer).is_some());
        let devices = {
            let mut devices = self.devices.lock().await;
            let mine = devices.by_customer.remove(customer).unwrap_or_default();
            for d in &mine {
                let key = (d.platform, d.token.clone());
                if devices.owner.get(&key) == Some(customer) {
                    devices.owner.remove(&key);
                }
            }
            mine.len() as u64
        };
        Ok(ErasureReport {
            identities: erased.identities,
            link_records: erased.link_records,
            conversations: erased.conversations.len() as u64,
            events,
            merged_ids: erased.merged_ids,
            profiles,
            devices,
        })
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.graph.lock().await.append_audit(entry);
        Ok(())
    }

    async fn audit_entries(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self.graph.lock().await.audit_entries(limit))
    }

    async fn register_device(&self, customer: &CustomerId, device: &Device) -> Result<(), StoreError> {
        let mut devices = self.devices.lock().await;
        let key = (device.platform, device.token.clone());
        if let Some(previous) = devices.owner.insert(key, customer.clone()) {
            if let Some(theirs) = devices.by_customer.get_mut(&previous) {
                theirs.retain(|d| !(d.platform == device.platform && d.token == device.token));
            }
        }
        devices
            .by_customer
            .entry(customer.clone())
            .or_default()
            .insert(device.clone());
        Ok(())
    }

    async fn unregister_device(
        &self,
        customer: &CustomerId,
        platform: PushPlatform,
        token: &str,
    ) -> Result<bool, StoreError> {
        let mut devices = self.devices.lock().await;
        let key = (platform, token.to_owned());
        if devices.owner.get(&key) != Some(customer) {
            return Ok(false);
        }
        devices.owner.remove(&key);
        if let Some(mine) = devices.by_customer.get_mut(customer) {
            mine.retain(|d| !(d.platform == platform && d.token == token));
        }
        Ok(true)
    }

    async fn devices(&self, customer: &CustomerId) -> Result<Vec<Device>, StoreError> {
        let devices = self.devices.lock().await;
        Ok(devices
            .by_customer
            .get(customer)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn save_profile(&self, customer: &CustomerId, profile: &CustomerProfile) -> Result<(), StoreError> {
        self.profiles
            .insert(customer.clone(), (profile.clone(), unix_ms()));
        Ok(())
    }

    async fn load_profile(&self, customer: &CustomerId) -> Result<Option<CustomerProfile>, StoreError> {
        Ok(self.profiles.get(customer).map(|p| p.0.clone()))
    }

    async fn delete_profile(&self, customer: &CustomerId) -> Result<(), StoreError> {
        self.profiles.remove(customer);
        Ok(())
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
    use omnigate_connectors::model::{Channel, Content, MessageId};

    use super::*;
    use crate::store::{Actor, EventKind};

    fn record(status: ConversationStatus, closed_at_ms: Option<u64>) -> ConversationRecord {
        ConversationRecord {
            id: ConversationId::generate(),
            customer: CustomerId::generate(),
            channel: Channel::Web,
            queue: "general".into(),
            status,
            agent: None,
            created_at_ms: 0,
            closed_at_ms,
        }
    }

    fn keyed(key: &str) -> NewEvent {
        NewEvent {
            at_ms: 1,
            actor: Actor::System,
            kind: EventKind::Message {
                message_id: MessageId::generate(),
                client_msg_id: key.to_owned(),
                content: Content::Text { text: "hi".into() },
                via: None,
            },
            idempotency_key: Some(key.to_owned()),
        }
    }

    #[tokio::test]
    async fn the_sweep_removes_what_outlived_its_retention_and_nothing_else() {
        let store = MemoryStore::with_retention(Retention {
            closed_conversation_secs: 100,
            idempotency_after_close_secs: 10,
            profile_secs: 50,
        });
        let old = record(ConversationStatus::Closed, Some(1_000));
        let recent = record(ConversationStatus::Closed, Some(95_000));
        let open = record(ConversationStatus::Assigned, None);
        for r in [&old, &recent, &open] {
            store.save_conversation(r).await.unwrap();
            store.append(&r.id, keyed("k")).await.unwrap();
        }
        store
            .save_profile(&old.customer, &CustomerProfile::default())
            .await
            .unwrap();
        let saved_at = store.profiles.get(&old.customer).unwrap().1;

        // 101 s after the old close, 6 s after the recent one.
        let swept = store.sweep(101_000);
        assert_eq!((swept.conversations, swept.idempotency_keys), (1, 0));
        assert_eq!(store.load_conversation(&old.id).await.unwrap(), None);
        assert_eq!(
            store.events_after(&old.id, View::Agent, 0, 5).await.unwrap().last,
            0
        );
        assert!(store.load_conversation(&recent.id).await.unwrap().is_some());
        assert!(store.load_conversation(&open.id).await.unwrap().is_some());

        // 11 s after the recent close: its idempotency keys go, its log stays.
        let swept = store.sweep(106_000);
        assert_eq!((swept.conversations, swept.idempotency_keys), (0, 1));
        assert!(matches!(
            store.append(&recent.id, keyed("k")).await.unwrap(),
            Appended::New(_)
        ));
        assert!(matches!(
            store.append(&open.id, keyed("k")).await.unwrap(),
            Appended::Duplicate(_)
        ));

        assert_eq!(store.sweep(saved_at + 49_000).profiles, 0);
        assert_eq!(store.sweep(saved_at + 50_000).profiles, 1);
        assert_eq!(store.load_profile(&old.customer).await.unwrap(), None);
    }

    #[tokio::test]
    async fn zero_retention_keeps_everything() {
        let store = MemoryStore::new();
        let old = record(ConversationStatus::Closed, Some(0));
        store.save_conversation(&old).await.unwrap();
        assert!(!store.sweep(u64::MAX).any());
        assert!(store.load_conversation(&old.id).await.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_passes_the_conformance_suite() {
        super::super::testsuite::run(std::sync::Arc::new(super::MemoryStore::new())).await;
    }
}
