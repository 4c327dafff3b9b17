//! The bus's side of offline push: app conversations' agent and system messages, and customers' acks, go to
//! the push worker (`crate::app::push`) without waiting.

use omnigate_connectors::model::{Channel, Content, ConversationId};

use super::actor::BusActor;
use crate::app::PushSignal;
use crate::store::{Actor, EventKind, StoredEvent};

/// Characters of a message's text a push may preview.
const PUSH_PREVIEW_CHARS: usize = 100;

impl BusActor {
    /// Tells the push worker of a customer-visible agent or system message in an app conversation.
    pub(super) fn request_push(&self, id: &ConversationId, event: &StoredEvent) {
        let Some(push) = &self.settings.push else {
            return;
        };
        let (Some(seq), Some(conv)) = (event.customer_seq, self.conversations.get(id)) else {
            return;
        };
        if conv.record.channel != Channel::App || matches!(event.actor, Actor::Customer { .. }) {
            return;
        }
        let EventKind::Message { content, .. } = &event.kind else {
            return;
        };
        let preview = match content {
            Content::Text { text } => text.chars().take(PUSH_PREVIEW_CHARS).collect(),
            _ => String::new(),
        };
        let live = self
            .customers
            .get(&conv.record.customer)
            .is_some_and(|entry| !entry.conns.is_empty());
        push.signal(PushSignal::Message {
            customer: conv.record.customer.clone(),
            conversation: id.clone(),
            seq,
            preview,
            live,
        });
    }

    /// Tells the push worker the customer has every event up to `seq` (their view) of the conversation.
    pub(super) fn push_acked(&self, id: &ConversationId, seq: u64) {
        let Some(push) = &self.settings.push else {
            return;
        };
        let is_app = self
            .conversations
            .get(id)
            .is_some_and(|c| c.record.channel == Channel::App);
        if is_app && seq > 0 {
            push.signal(PushSignal::Acked {
                conversation: id.clone(),
                seq,
            });
        }
    }
}
