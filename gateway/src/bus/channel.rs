//! Channel connectors on the bus: a provider's inbound message becomes a customer message (plus its audit
//! record), an agent's message on a connector channel is handed to the outbound path, and the outbox's
//! delivery states are logged where the agent sees them.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use omnigate_connectors::model::{
    Channel, Content, ConversationId, CustomerId, Identity, InboundMessage, MessageId,
};
use serde::{Deserialize, Serialize};

use super::actor::BusActor;
use super::{BusError, SendAck};
use crate::store::{Actor, EventKind, NewEvent, ReceivedRecord, Via};

/// An agent's message that must leave through a channel connector.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundJob {
    /// The conversation.
    pub conversation: ConversationId,
    /// The agent's `message.created`.
    pub message_id: MessageId,
    /// The channel it goes out through: the conversation's own, or the one the agent picked.
    pub channel: Channel,
    /// What the agent said.
    pub content: Content,
    /// The route the agent picked (`message.send` `via`); `None` answers through the conversation's address.
    pub route: Option<Route>,
}

/// A reply's route picked by the agent: the connector and the customer's identity on its channel, resolved
/// from the customer's identities before the message was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The channel and connector.
    pub via: Via,
    /// The customer's identity on that channel (a phone number, an OpenID).
    pub to: Identity,
}

/// Where agents' messages on connector channels go. The bus awaits [`ChannelOutbound::submit`] inside its
/// loop, so it must only queue the job (a bounded queue whose consumer never waits on the bus).
#[async_trait]
pub trait ChannelOutbound: Send + Sync + fmt::Debug + 'static {
    /// Whether messages on `channel` are delivered by a connector rather than over the customer's socket.
    fn handles(&self, channel: Channel) -> bool;

    /// SMS segments `content` takes on `channel`, shown to the agent in the `pending` delivery state.
    fn segments(&self, channel: Channel, content: &Content) -> Option<u32>;

    /// Keeps the job (so a restart resumes it) and queues it for delivery. Nothing acknowledged to the agent may
    /// be dropped: wait for room.
    async fn submit(&self, job: OutboundJob);

    /// An agent took a conversation on `channel` (a call must be connected to the agent's phone). Only queues.
    async fn assigned(&self, conversation: ConversationId, channel: Channel, agent: String);
}

/// A verified inbound channel message for the bus.
#[derive(Debug, Clone)]
pub struct ChannelInbound {
    /// The customer its sender's identity resolved to.
    pub customer: CustomerId,
    /// Our connector id (the configured account id).
    pub account: String,
    /// The queue for a new conversation (the routing default when `None`).
    pub queue: Option<String>,
    /// The normalized message (dedupe key, content, raw payload).
    pub message: InboundMessage,
    /// Routing attributes this message adds to its conversation (a call's IVR input).
    pub attributes: BTreeMap<String, String>,
    /// Whether a new conversation enters routing now; `false` keeps it unrouted until a later message says so
    /// (a call in the IVR).
    pub route: bool,
}

/// The `channel.received` audit record of an inbound message stored as `message_id` (its raw payload and
/// the provider's ids), keyed so a provider's retry stores it once.
pub(super) fn received_event(
    customer: CustomerId,
    account: String,
    message: InboundMessage,
    message_id: MessageId,
) -> NewEvent {
    let key = format!("received:{}", message.dedupe_key);
    NewEvent::now(
        Actor::Customer { id: customer },
        EventKind::ChannelReceived(Box::new(ReceivedRecord {
            message_id,
            channel: message.channel,
            account,
            channel_account: message.channel_account,
            from: message.from,
            external_message_id: message.external_message_id,
            dedupe_key: message.dedupe_key,
            reply_capability: message.reply_capability,
            raw: message.raw,
        })),
        Some(key),
    )
}

/// A change of an outbound message's delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryUpdate {
    /// The agent's message.
    pub message_id: MessageId,
    /// The channel.
    pub channel: Channel,
    /// `pending`, `retrying`, `sent`, `delivered` or `failed`.
    pub state: String,
    /// Provider attempts so far.
    pub attempt: u32,
    /// Machine-readable reason of a failure or retry.
    pub reason: Option<String>,
    /// A sentence for the agent, or the provider's error.
    pub detail: String,
    /// The provider's id of the sent message.
    pub provider_message_id: Option<String>,
    /// SMS segments.
    pub segments: Option<u32>,
}

impl DeliveryUpdate {
    /// The idempotency key: one logged event per message, state and attempt, so a retried report is not
    /// logged twice.
    pub fn key(&self) -> String {
        format!("delivery:{}:{}:{}", self.message_id, self.state, self.attempt)
    }

    fn into_event(self) -> EventKind {
        EventKind::DeliveryUpdated {
            message_id: self.message_id,
            channel: self.channel,
            state: self.state,
            attempt: self.attempt,
            reason: self.reason,
            detail: self.detail,
            provider_message_id: self.provider_message_id,
            segments: self.segments,
        }
    }
}

impl BusActor {
    /// Stores a channel message as the customer's (idempotent on its dedupe key, so a provider's retries make
    /// one message), then its audit record with the raw payload. Both are in the log before the answer.
    pub(super) async fn channel_inbound(&mut self, inbound: ChannelInbound) -> Result<SendAck, BusError> {
        let ChannelInbound {
            customer,
            account,
            queue,
            message,
            attributes,
            route,
        } = inbound;
        // Stored without routing first, so the message's attributes are on the conversation before it enters a
        // queue. A retry also routes a conversation an earlier attempt stored but did not route.
        let ack = self
            .customer_send(
                customer.clone(),
                message.channel,
                queue,
                None,
                message.dedupe_key.clone(),
                message.content.clone(),
                false,
            )
            .await?;
        if let Some(conv) = self.conversations.get_mut(&ack.conversation) {
            conv.identity.get_or_insert_with(|| message.from.clone());
        }
        self.add_attributes_and_route(&ack.conversation, attributes, route)
            .await;
        let message_id = MessageId::parse(&ack.message_id)
            .map_err(|e| BusError::Unavailable(format!("stored message has no id: {e}")))?;
        self.append_event(
            &ack.conversation,
            received_event(customer, account, message, message_id),
        )
        .await?;
        Ok(ack)
    }

    /// Logs a delivery state change of an agent's message.
    pub(super) async fn delivery_updated(
        &mut self,
        conversation: ConversationId,
        update: DeliveryUpdate,
    ) -> Result<(), BusError> {
        let key = update.key();
        self.append(&conversation, Actor::System, update.into_event(), Some(key))
            .await?;
        Ok(())
    }

    /// After a conversation was assigned: tell its channel (a voice call is connected to the agent).
    pub(super) async fn channel_assigned(&mut self, conversation: &ConversationId, agent: &str) {
        let Some(outbound) = self.settings.outbound.clone() else {
            return;
        };
        let Some(channel) = self.conversations.get(conversation).map(|c| c.record.channel) else {
            return;
        };
        if channel == Channel::Voice {
            outbound
                .assigned(conversation.clone(), channel, agent.to_owned())
                .await;
        }
    }

    /// After an agent's message was stored: on a connector channel (or the route the agent picked), log it as `pending` and queue it for the
    /// provider. The message is already acknowledged to the agent, so the job is queued even when the
    /// `pending` record cannot be written.
    pub(super) async fn hand_to_channel(
        &mut self,
        conversation: &ConversationId,
        message_id: MessageId,
        content: Content,
        route: Option<Route>,
    ) {
        let Some(outbound) = self.settings.outbound.clone() else {
            return;
        };
        let channel = match &route {
            Some(route) => route.via.channel,
            None => match self.conversations.get(conversation).map(|c| c.record.channel) {
                Some(channel) => channel,
                None => return,
            },
        };
        if !outbound.handles(channel) {
            return;
        }
        let pending = DeliveryUpdate {
            message_id: message_id.clone(),
            channel,
            state: "pending".to_owned(),
            attempt: 0,
            reason: None,
            detail: String::new(),
            provider_message_id: None,
            segments: outbound.segments(channel, &content),
        };
        let job = OutboundJob {
            conversation: conversation.clone(),
            message_id,
            channel,
            content,
            route,
        };
        // Concurrently, so the `pending` state and the outbox's record of the job cost one round trip of
        // latency; the job's states are logged through the bus, so `pending` still comes first.
        let (logged, ()) = tokio::join!(
            self.delivery_updated(conversation.clone(), pending),
            outbound.submit(job)
        );
        if let Err(error) = logged {
            tracing::warn!(conversation_id = %conversation, %error, "pending delivery state not logged");
        }
    }
}
