//! The immutable record of something that happened in a conversation: what, when, and who did it.

use omnigate_connectors::model::{
    Channel, Content, ConversationId, CustomerId, Identity, MessageId, ReplyCapability,
};
use serde::{Deserialize, Serialize};

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Actor {
    /// The customer.
    Customer {
        /// The customer.
        id: CustomerId,
    },
    /// An agent.
    Agent {
        /// The agent's id.
        id: String,
        /// The agent's display name.
        name: String,
    },
    /// The gateway itself (routing, timeouts).
    System,
}

/// The channel and connector an agent picked for a reply, recorded with the message so the log says how it
/// went out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Via {
    /// The channel it went out through.
    pub channel: Channel,
    /// Our connector id on that channel (the configured account id).
    pub account: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventKind {
    /// The conversation began.
    #[serde(rename = "conversation.created")]
    Created {
        /// Its channel.
        channel: Channel,
        /// Its queue.
        queue: String,
    },
    /// A message from the customer or an agent.
    #[serde(rename = "message.created")]
    Message {
        /// Our id of the message.
        message_id: MessageId,
        /// The sender's idempotency key.
        client_msg_id: String,
        /// The content.
        content: Content,
        /// The channel an agent picked for this reply (`message.send` `via`); absent when it went out through
        /// the conversation's own channel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<Via>,
    },
    /// An internal note between agents; never shown to the customer.
    #[serde(rename = "note.created")]
    Note {
        /// Our id of the note.
        message_id: MessageId,
        /// The sender's idempotency key.
        client_msg_id: String,
        /// The note.
        text: String,
    },
    /// Waiting for an agent in a queue.
    #[serde(rename = "conversation.queued")]
    Queued {
        /// The queue.
        queue: String,
    },
    /// Offered to an agent.
    #[serde(rename = "conversation.offered")]
    Offered {
        /// The agent.
        agent_id: String,
        /// Why this agent: the router's record of the candidates and the rule that chose.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        explanation: Option<OfferExplanation>,
    },
    /// An offer lapsed or was refused.
    #[serde(rename = "conversation.offer_withdrawn")]
    OfferWithdrawn {
        /// The agent.
        agent_id: String,
        /// `rejected`, `timeout`, `cancelled`, `agent_unavailable`.
        reason: String,
    },
    /// An agent took the conversation.
    #[serde(rename = "conversation.assigned")]
    Assigned {
        /// The agent.
        agent_id: String,
        /// The agent's display name.
        agent_name: String,
    },
    /// The conversation left its agent and waits again.
    #[serde(rename = "conversation.requeued")]
    Requeued {
        /// The agent it left.
        agent_id: String,
        /// `transferred`, `agent_disconnected`.
        reason: String,
    },
    /// Handed to another agent or queue by the assigned agent.
    #[serde(rename = "conversation.transferred")]
    Transferred {
        /// The agent it came from.
        from_agent_id: String,
        /// Target agent, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_agent_id: Option<String>,
        /// Target queue, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_queue: Option<String>,
        /// The agent's stated reason.
        #[serde(default)]
        reason: String,
    },
    /// Closed, with the agent's disposition code.
    #[serde(rename = "conversation.closed")]
    Closed {
        /// Disposition code, e.g. `resolved`.
        disposition: String,
    },
    /// Routing ended without an agent (workflow terminal step, maximum wait, full or closed queue); the
    /// customer is offered `outcome`.
    #[serde(rename = "conversation.routing_ended")]
    RoutingEnded {
        /// `callback`, `leave_message`, `out_of_hours` or `expired`.
        outcome: String,
        /// `workflow_step`, `max_wait`, `queue_full` or `queue_closed`.
        reason: String,
    },
    /// A customer message after close reopened it.
    #[serde(rename = "conversation.reopened")]
    Reopened,
    /// The customer started this conversation while another of theirs was open (e.g. a call during an app
    /// chat), or started that one while this was open: the two are linked. Logged in both; agents only.
    #[serde(rename = "conversation.linked")]
    Linked {
        /// The other conversation (not `conversation_id`: event frames carry their own conversation's id).
        linked_conversation_id: ConversationId,
        /// Its channel.
        channel: Channel,
    },
    /// A message arrived through a channel connector (WeChat, SMS): the provider's raw payload, kept for
    /// audit, and where to answer. Appended right after the customer's `message.created`; agents only.
    ///
    /// Boxed: it is the largest kind by far, and unboxed every event in the log would be its size (the
    /// embedded store keeps one per message; see [`ReceivedRecord`]). The JSON is the same either way.
    #[serde(rename = "channel.received")]
    ChannelReceived(Box<ReceivedRecord>),
    /// A channel's pull position (WeCom kf `next_cursor`), kept in a log of its own so it survives restarts.
    #[serde(rename = "channel.cursor")]
    ChannelCursor {
        /// Whose cursor (connector id and `open_kfid`).
        key: String,
        /// The cursor to pull from next.
        cursor: String,
    },
    /// The delivery of an agent's message through a channel moved on: `pending`, `retrying`, `sent`,
    /// `delivered`, or `failed` (dead letter). Agents only.
    #[serde(rename = "delivery.updated")]
    DeliveryUpdated {
        /// The agent's `message.created`.
        message_id: MessageId,
        /// The channel it goes out through.
        channel: Channel,
        /// `pending`, `retrying`, `sent`, `delivered` or `failed`.
        state: String,
        /// Provider attempts made so far.
        attempt: u32,
        /// Why it failed or is retried (`window_closed`, `quota_exhausted`, `provider_unavailable`, ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// A sentence for the agent, or the provider's error.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
        /// The provider's id of the sent message (Twilio `SM…`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider_message_id: Option<String>,
        /// SMS segments the message takes (GSM-7 / UCS-2), for SMS channels.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        segments: Option<u32>,
    },
    /// A read watermark moved.
    #[serde(rename = "read.updated")]
    Read {
        /// `customer` or `agent`.
        reader: String,
        /// Read up to this `seq` (agents' view).
        up_to_seq: u64,
    },
}

impl EventKind {
    /// Whether the customer sees this event.
    pub fn customer_visible(&self) -> bool {
        matches!(
            self,
            EventKind::Created { .. }
                | EventKind::Message { .. }
                | EventKind::Assigned { .. }
                | EventKind::Closed { .. }
                | EventKind::Reopened
                | EventKind::RoutingEnded { .. }
                | EventKind::Read { .. }
        )
    }
}

/// The `channel.received` record of an inbound channel message: the provider's raw payload and where to
/// answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedRecord {
    /// The `message.created` it belongs to.
    pub message_id: MessageId,
    /// The channel.
    pub channel: Channel,
    /// Our account on it (connector id from the configuration).
    pub account: String,
    /// Our account as the provider names it (`gh_…`, our number, `open_kfid`).
    #[serde(default)]
    pub channel_account: String,
    /// The sender's identity on the channel (OpenID, E.164 number).
    pub from: Identity,
    /// The provider's message id.
    pub external_message_id: String,
    /// The channel-scoped key equal across the provider's retries.
    pub dedupe_key: String,
    /// What the customer's action allows us to send back.
    pub reply_capability: ReplyCapability,
    /// The payload exactly as received (decrypted when it came encrypted).
    pub raw: String,
}

/// The router's record of an offer: the candidates it considered and the rule that chose, kept in the log so
/// routing can be audited and replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferExplanation {
    /// The rule that decided, in plain words.
    pub why: String,
    /// The queue at the time.
    pub queue: String,
    /// The task's score (lower goes first).
    pub score: i64,
    /// Whether it was in the emergency tier.
    pub emergency: bool,
    /// The workflow step in force.
    pub step: usize,
    /// Agents looked at.
    pub agents_scanned: u32,
    /// Agents skipped for lack of a skill.
    pub skipped_skills: u32,
    /// Agents skipped for lack of capacity.
    pub skipped_capacity: u32,
    /// Agents skipped because they missed or rejected this task before.
    pub skipped_excluded: u32,
    /// Waiting tasks looked at.
    pub tasks_scanned: u32,
    /// The agents offered the task, best first.
    pub chosen: Vec<String>,
}

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unix ms when it happened.
    pub at_ms: u64,
    /// Who did it.
    pub actor: Actor,
    /// What happened.
    pub kind: EventKind,
    /// A retry with the same key returns the first event (e.g. `customer:<id>:<client_msg_id>`).
    pub idempotency_key: Option<String>,
}

impl NewEvent {
    /// An event happening now.
    pub fn now(actor: Actor, kind: EventKind, idempotency_key: Option<String>) -> NewEvent {
        NewEvent {
            at_ms: crate::clock::unix_ms(),
            actor,
            kind,
            idempotency_key,
        }
    }
}

/// An event in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Position in the agents' view; gapless from 1.
    pub seq: u64,
    /// Position in the customer's view, if the customer sees it; gapless from 1.
    pub customer_seq: Option<u64>,
    /// Unix ms when it happened.
    pub at_ms: u64,
    /// Who did it.
    pub actor: Actor,
    /// What happened.
    pub kind: EventKind,
}

#[cfg(test)]
mod tests {
    use omnigate_connectors::model::IdentityKind;
    use serde_json::json;

    use super::*;

    /// A `channel.received` record as every store has written it, boxed or not: one flat object.
    #[test]
    fn a_channel_received_record_keeps_its_stored_json() {
        let stored = json!({
            "type": "channel.received",
            "message_id": "m_1",
            "channel": "wechat_oa",
            "account": "bank-oa",
            "channel_account": "gh_1",
            "from": {"kind": "wechat_open_id", "value": "o_user", "verified": true},
            "external_message_id": "1234",
            "dedupe_key": "wechat_oa:bank-oa:1234",
            "reply_capability": {"mode": "window", "expires_at_ms": 1_700_000_000_000u64, "remaining": 5},
            "raw": "<xml><Content><![CDATA[hi]]></Content></xml>",
        });
        let kind = EventKind::ChannelReceived(Box::new(ReceivedRecord {
            message_id: MessageId::parse("m_1").unwrap(),
            channel: Channel::WechatOa,
            account: "bank-oa".to_owned(),
            channel_account: "gh_1".to_owned(),
            from: Identity {
                kind: IdentityKind::WechatOpenId,
                value: "o_user".to_owned(),
                verified: true,
            },
            external_message_id: "1234".to_owned(),
            dedupe_key: "wechat_oa:bank-oa:1234".to_owned(),
            reply_capability: ReplyCapability::Window {
                expires_at_ms: 1_700_000_000_000,
                remaining: 5,
            },
            raw: "<xml><Content><![CDATA[hi]]></Content></xml>".to_owned(),
        }));
        assert_eq!(serde_json::to_value(&kind).unwrap(), stored);
        assert_eq!(serde_json::from_value::<EventKind>(stored).unwrap(), kind);
    }

    /// The embedded store keeps one `Arc<StoredEvent>` per event: with its two counters it fits a 256-byte
    /// allocation as long as no kind carries a large record inline (the channel record alone made it 280).
    #[test]
    fn a_stored_event_fits_a_256_byte_allocation() {
        let size = std::mem::size_of::<StoredEvent>();
        assert!(
            size + 16 <= 256,
            "StoredEvent is {size} bytes; box the kind that grew it"
        );
    }
}
