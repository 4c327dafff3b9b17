//! The bus's side of customers across channels: linking a new conversation to the customer's open one,
//! answering whose customer a conversation is, and forgetting an erased customer.

use omnigate_connectors::model::{ConversationId, CustomerId};
use omnigate_router::{Event, TaskId};

use super::actor::BusActor;
use super::{BusError, Outbound};
use crate::protocol;
use crate::store::{Actor, ConversationStatus, EventKind};

/// The disposition of conversations closed because their customer was erased.
pub(crate) const ERASED_DISPOSITION: &str = "erased";

impl BusActor {
    /// The agent a conversation's linked conversation is with (assigned, or holding its offer).
    pub(super) fn linked_agent(&self, id: &ConversationId) -> Option<String> {
        let linked = self.conversations.get(id)?.linked.as_ref()?;
        let other = self.conversations.get(linked)?;
        if !other.is_open() {
            return None;
        }
        other
            .record
            .agent
            .clone()
            .or_else(|| other.offer.as_ref().map(|(agent, _)| agent.clone()))
    }

    /// Links a new conversation to the customer's most recent other open one on another channel, with a
    /// `conversation.linked` event in both logs.
    pub(super) async fn link_to_open(&mut self, customer: &CustomerId, id: &ConversationId) {
        let Some(channel) = self.conversations.get(id).map(|c| c.record.channel) else {
            return;
        };
        let open = self.customers.get(customer).and_then(|entry| {
            entry.conversations.iter().rev().find(|other| {
                *other != id
                    && self
                        .conversations
                        .get(*other)
                        .is_some_and(|c| c.is_open() && c.record.channel != channel)
            })
        });
        let Some(open) = open.cloned() else { return };
        let open_channel = self.conversations.get(&open).map(|c| c.record.channel);
        if let Some(conv) = self.conversations.get_mut(id) {
            conv.linked = Some(open.clone());
        }
        for (log, other, other_channel) in [(id, &open, open_channel), (&open, id, Some(channel))] {
            let Some(other_channel) = other_channel else {
                continue;
            };
            let kind = EventKind::Linked {
                linked_conversation_id: other.clone(),
                channel: other_channel,
            };
            if let Err(error) = self.append(log, Actor::System, kind, None).await {
                tracing::warn!(conversation_id = %log, %error, "conversation link not logged");
            }
        }
        tracing::debug!(conversation_id = %id, linked = %open, "conversation linked to the customer's open one");
    }

    /// The customer of a conversation the agent is offered or assigned.
    pub(super) fn customer_of(&self, agent: &str, id: &ConversationId) -> Result<CustomerId, BusError> {
        let conv = self.conversations.get(id).ok_or(BusError::NotFound)?;
        let offered = conv.offer.as_ref().is_some_and(|(a, _)| a == agent);
        if offered || conv.assigned_to(agent) {
            Ok(conv.record.customer.clone())
        } else {
            Err(BusError::NotAllowed(
                "the conversation is not offered or assigned to you".to_owned(),
            ))
        }
    }

    /// Closes the open ones of `conversations` (an erased customer's), then forgets them and the customers
    /// they belong to (`customer` included), closing those customers' sockets. Returns how many were open.
    pub(super) async fn forget(
        &mut self,
        customer: CustomerId,
        mut conversations: Vec<ConversationId>,
    ) -> usize {
        let mut closed = 0;
        let mut customers = vec![customer];
        for id in &conversations {
            if let Some(conv) = self.conversations.get(id) {
                customers.push(conv.record.customer.clone());
            }
        }
        // Conversations the customer started after the caller read the store's index are forgotten too.
        for c in &customers {
            if let Some(entry) = self.customers.get(c) {
                conversations.extend(entry.conversations.iter().cloned());
            }
        }
        conversations.sort();
        conversations.dedup();
        for id in &conversations {
            let Some(conv) = self.conversations.get(id) else {
                continue;
            };
            if !conv.is_open() {
                continue;
            }
            let status = conv.record.status;
            let agent = conv.record.agent.clone().filter(|a| conv.assigned_to(a));
            let offered = conv.offer.as_ref().map(|(a, _)| a.clone());
            closed += 1;
            let event = EventKind::Closed {
                disposition: ERASED_DISPOSITION.to_owned(),
            };
            if let Err(error) = self.append(id, Actor::System, event, None).await {
                tracing::warn!(conversation_id = %id, %error, "erasure close not logged");
            }
            if let Some(agent) = offered {
                self.withdraw_offer(id, &agent, "cancelled").await;
            }
            let task = TaskId(id.to_string());
            match (agent, status) {
                (Some(agent), _) => {
                    self.release_agent(&agent, id, Some(ERASED_DISPOSITION));
                    self.route(Event::TaskCompleted(task)).await;
                    self.route(Event::WrapUpEnded(TaskId(id.to_string()))).await;
                }
                (None, ConversationStatus::New) => {}
                (None, _) => self.route(Event::TaskCancelled(task)).await,
            }
            self.open_conversation_closed();
        }
        for id in &conversations {
            self.conversations.remove(id);
            self.queued.remove(id);
            for agent in self.agents.values_mut() {
                agent.offers.remove(id);
                agent.assigned.remove(id);
            }
        }
        for customer in customers {
            if let Some(entry) = self.customers.remove(&customer) {
                for c in &entry.conns {
                    c.push(Outbound::Close(protocol::close::ERASED, "customer erased"));
                }
            }
        }
        closed
    }
}
