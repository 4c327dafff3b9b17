//! The bus's in-memory summary of one conversation.

use std::collections::BTreeMap;

use omnigate_connectors::model::{ConversationId, Identity};
use omnigate_router::Millis;

use crate::store::{ConversationRecord, ConversationStatus, CustomerProfile};

/// Where the customer profile of a conversation about to be routed stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProfileState {
    /// Not looked at since the conversation last entered routing.
    Unknown,
    /// A CRM lookup runs; routing waits for it (at most the CRM timeout).
    Pending,
    /// `profile` is what routing uses.
    Ready,
}

/// What the bus keeps about a conversation between events.
#[derive(Debug, Clone)]
pub(super) struct Conversation {
    /// The persisted summary.
    pub(super) record: ConversationRecord,
    /// Last `seq` appended (agents' view).
    pub(super) last_seq: u64,
    /// Last `customer_seq` appended.
    pub(super) last_customer_seq: u64,
    /// The agent holding a pending offer, and when it lapses.
    pub(super) offer: Option<(String, Millis)>,
    /// The agent who last had it (sticky routing after a reopen).
    pub(super) last_agent: Option<String>,
    /// Read watermarks, in `seq`.
    pub(super) customer_read: u64,
    pub(super) agent_read: u64,
    /// Delivery acks, in each side's own numbering.
    pub(super) customer_delivered: u64,
    pub(super) agent_delivered: u64,
    /// The start of the last customer message, for offers.
    pub(super) preview: String,
    /// The queue position and estimated wait last told to the customer.
    pub(super) told_position: Option<(usize, Option<u64>)>,
    /// The smallest position threshold a channel customer was messaged about in this wait.
    pub(super) position_message_at: Option<u32>,
    /// Routing attributes gathered before routing (a call's IVR digits and intent), shown in the offer.
    pub(super) attributes: BTreeMap<String, String>,
    /// The identity the customer wrote from, when the channel gives one (profile rules, CRM lookup).
    pub(super) identity: Option<Identity>,
    /// The customer's profile as routing used it (rules and stored/CRM data), shown in offers.
    pub(super) profile: CustomerProfile,
    /// Whether `profile` is ready for routing.
    pub(super) profile_state: ProfileState,
    /// The customer's conversation that was open when this one started (its agent is preferred).
    pub(super) linked: Option<ConversationId>,
    /// Its appends sent to the store and not yet answered (`pipeline.rs`: at most one).
    pub(super) appends_in_flight: u32,
}

impl Conversation {
    pub(super) fn new(record: ConversationRecord) -> Conversation {
        Conversation {
            record,
            last_seq: 0,
            last_customer_seq: 0,
            offer: None,
            last_agent: None,
            customer_read: 0,
            agent_read: 0,
            customer_delivered: 0,
            agent_delivered: 0,
            preview: String::new(),
            told_position: None,
            position_message_at: None,
            attributes: BTreeMap::new(),
            identity: None,
            profile: CustomerProfile::default(),
            profile_state: ProfileState::Unknown,
            linked: None,
            appends_in_flight: 0,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.record.status != ConversationStatus::Closed
    }

    pub(super) fn assigned_to(&self, agent: &str) -> bool {
        self.record.status == ConversationStatus::Assigned && self.record.agent.as_deref() == Some(agent)
    }
}
