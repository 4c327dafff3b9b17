//! Closed conversations leave the bus's memory once nothing can reopen them (their reopen window and the
//! agent's wrap-up have passed), so memory follows open conversations, not every conversation ever held.
//!
//! Nothing is lost: the summary and the log are in the store. A customer message after the window starts a
//! new conversation (as the reopen rules say); a message or a read naming the old conversation reloads its
//! summary from the store first ([`BusActor::reload`]) and is answered as before eviction
//! (`conversation_closed` past the window, the log for a reader).

use omnigate_connectors::model::ConversationId;
use omnigate_router::Millis;

use super::actor::BusActor;
use super::conversation::Conversation;
use super::Held;
use crate::store::{ConversationStatus, View};
use crate::telemetry::metrics;

impl BusActor {
    /// Puts a just-closed conversation on the eviction list, remembering which close this is.
    pub(super) fn schedule_eviction(&mut self, id: &ConversationId) {
        let Some(closed_at) = self.conversations.get(id).and_then(|c| c.record.closed_at_ms) else {
            return;
        };
        let at = self.clock.now().plus_ms(self.settings.evict_after_ms);
        self.evictions.push_back((at, id.clone(), closed_at));
    }

    /// Evicts every conversation due at `now` that is still closed by the close it was listed for (a
    /// reopened one stays; one closed again is listed again, later).
    pub(super) fn evict_due(&mut self, now: Millis) {
        let mut evicted = 0;
        while self.evictions.front().is_some_and(|(at, _, _)| *at <= now) {
            let Some((_, id, closed_at)) = self.evictions.pop_front() else {
                break;
            };
            let evictable = self.conversations.get(&id).is_some_and(|c| {
                !c.is_open() && c.offer.is_none() && c.record.closed_at_ms == Some(closed_at)
            });
            if !evictable {
                continue;
            }
            let Some(conv) = self.conversations.remove(&id) else {
                continue;
            };
            self.queued.remove(&id);
            let customer = conv.record.customer;
            if let Some(entry) = self.customers.get_mut(&customer) {
                entry.conversations.retain(|c| *c != id);
                if entry.conversations.is_empty() && entry.conns.is_empty() {
                    self.customers.remove(&customer);
                }
            }
            evicted += 1;
        }
        if evicted > 0 {
            tracing::debug!(
                evicted,
                held = self.conversations.len(),
                "closed conversations evicted"
            );
            metrics::bus_evicted(evicted);
        }
        metrics::bus_conversations(self.conversations.len());
    }

    /// Brings an evicted conversation back from the store (its summary and log positions), so a message or a
    /// read naming it is answered as before. Does nothing for one held, unknown or unreadable.
    pub(super) async fn reload(&mut self, id: &ConversationId) {
        if self.conversations.contains_key(id) {
            return;
        }
        let record = match self.store.load_conversation(id).await {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(conversation_id = %id, %error, "evicted conversation not reloaded");
                return;
            }
        };
        if record.status != ConversationStatus::Closed {
            // Open elsewhere (another gateway process owns it): not this bus's to route.
            return;
        }
        let (agent, customer) = match (
            self.store.events_after(id, View::Agent, u64::MAX, 0).await,
            self.store.events_after(id, View::Customer, u64::MAX, 0).await,
        ) {
            (Ok(agent), Ok(customer)) => (agent.last, customer.last),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(conversation_id = %id, %error, "evicted conversation not reloaded");
                return;
            }
        };
        let customer_id = record.customer.clone();
        let mut conv = Conversation::new(record);
        conv.last_seq = agent;
        conv.last_customer_seq = customer;
        self.conversations.insert(id.clone(), conv);
        self.customers
            .entry(customer_id)
            .or_default()
            .conversations
            .push(id.clone());
        self.schedule_eviction(id);
        metrics::bus_conversations(self.conversations.len());
    }

    /// What the bus holds in memory.
    pub(super) fn held(&self) -> Held {
        Held {
            conversations: self.conversations.len(),
            customers: self.customers.len(),
        }
    }
}
