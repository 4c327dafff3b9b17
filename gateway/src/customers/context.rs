//! The `customer.context` frame: read from the store in one call (off the session bus), rendered by a pure
//! function.

use omnigate_connectors::model::{ConversationId, CustomerId};
use serde_json::{json, Value};

use crate::clock::rfc3339;
use crate::protocol::{self, FrameText};
use crate::store::{ContextStore, ConversationHistory, StoreError, View};

/// How much history the frame carries (`[conversations]` in the configuration).
#[derive(Debug, Clone, Default)]
pub struct HistorySettings {
    /// Most recent conversations, all channels; 0 sends no frame.
    pub conversations: usize,
    /// Last messages of each.
    pub messages: usize,
    /// Dispositions that mark a complaint.
    pub complaint_dispositions: Vec<String>,
}

/// Renders the frame's `d`: the customer, the conversation just accepted, the recent conversations (newest
/// first) with their last messages in the agents' view, and the complaints among them.
pub fn render_context(
    customer: &CustomerId,
    accepted: &ConversationId,
    history: &[ConversationHistory],
    complaint_dispositions: &[String],
) -> Value {
    let conversations: Vec<Value> = history
        .iter()
        .map(|h| {
            let r = &h.record;
            let messages: Vec<Value> = h
                .messages
                .iter()
                .map(|e| protocol::event_payload(&r.id, e, View::Agent, None))
                .collect();
            json!({
                "conversation_id": r.id,
                "channel": r.channel,
                "queue": r.queue,
                "status": r.status,
                "agent_id": r.agent.clone().or_else(|| h.agent.clone()),
                "disposition": h.disposition,
                "created_at": rfc3339(r.created_at_ms),
                "closed_at": r.closed_at_ms.map(rfc3339),
                "messages": messages,
            })
        })
        .collect();
    let complaints: Vec<Value> = history
        .iter()
        .filter(|h| {
            h.disposition
                .as_ref()
                .is_some_and(|d| complaint_dispositions.contains(d))
        })
        .map(|h| {
            json!({
                "conversation_id": h.record.id,
                "channel": h.record.channel,
                "status": h.record.status,
                "disposition": h.disposition,
            })
        })
        .collect();
    json!({
        "customer_id": customer,
        "conversation_id": accepted,
        "conversations": conversations,
        "open_complaints": complaints,
    })
}

/// Reads the customer's history (one store call) and builds the frame; `None` when history is off.
///
/// # Errors
/// [`StoreError`] from the read.
pub async fn context_frame(
    store: &dyn ContextStore,
    customer: &CustomerId,
    accepted: &ConversationId,
    settings: &HistorySettings,
) -> Result<Option<FrameText>, StoreError> {
    if settings.conversations == 0 {
        return Ok(None);
    }
    let history = store
        .customer_history(customer, settings.conversations, settings.messages)
        .await?;
    let d = render_context(customer, accepted, &history, &settings.complaint_dispositions);
    Ok(Some(protocol::customer_context(d)))
}

#[cfg(test)]
mod tests {
    use omnigate_connectors::model::{Channel, Content, MessageId};

    use super::*;
    use crate::store::{Actor, ConversationRecord, ConversationStatus, EventKind, StoredEvent};

    fn history(disposition: Option<&str>, status: ConversationStatus) -> ConversationHistory {
        let customer = CustomerId::generate();
        ConversationHistory {
            record: ConversationRecord {
                id: ConversationId::generate(),
                customer: customer.clone(),
                channel: Channel::App,
                queue: "cards".to_owned(),
                status,
                agent: None,
                created_at_ms: 1_000,
                closed_at_ms: disposition.map(|_| 2_000),
            },
            messages: vec![StoredEvent {
                seq: 3,
                customer_seq: Some(2),
                at_ms: 1_500,
                actor: Actor::Customer { id: customer },
                kind: EventKind::Message {
                    message_id: MessageId::generate(),
                    client_msg_id: "m1".to_owned(),
                    content: Content::Text {
                        text: "my card is blocked".to_owned(),
                    },
                    via: None,
                },
            }],
            disposition: disposition.map(str::to_owned),
            agent: Some("agent-1".to_owned()),
        }
    }

    #[test]
    fn conversations_carry_their_messages_and_complaints_are_listed() {
        let complaints = vec!["complaint".to_owned()];
        let items = [
            history(Some("complaint"), ConversationStatus::Closed),
            history(Some("resolved"), ConversationStatus::Closed),
            history(None, ConversationStatus::Assigned),
        ];
        let customer = CustomerId::generate();
        let accepted = ConversationId::generate();
        let d = render_context(&customer, &accepted, &items, &complaints);
        assert_eq!(d["conversations"].as_array().map(Vec::len), Some(3));
        let first = &d["conversations"][0];
        assert_eq!(first["channel"], "app");
        assert_eq!(first["agent_id"], "agent-1");
        assert_eq!(first["disposition"], "complaint");
        assert_eq!(
            first["messages"][0]["message"]["content"]["text"],
            "my card is blocked"
        );
        let listed = d["open_complaints"].as_array().expect("complaints");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["conversation_id"], json!(items[0].record.id));
        assert_eq!(d["conversation_id"], json!(accepted));
    }
}
