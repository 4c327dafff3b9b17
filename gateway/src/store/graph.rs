//! The identity graph's records: who linked, unlinked or merged what and why, the audit log, the erasure
//! report and a customer's recent history.
//!
//! Rules every backend keeps (checked by the conformance suite):
//! - a verified identity observed together with other verified identities (`resolve_verified`) puts them all
//!   on one customer, merging the customers they pointed at; a merged customer id keeps resolving to its
//!   survivor (a redirect);
//! - an identity that some customer holds only unverified is moved by a verified observation (it is
//!   *claimed*), never used to merge that customer;
//! - an unverified identity only ever resolves to the customer of an equal identity or creates a customer.

use omnigate_connectors::model::{CustomerId, Identity};
use serde::{Deserialize, Serialize};

use super::{ConversationRecord, StoredEvent};

/// Who changes the graph by hand, why and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphChange {
    /// Who: `agent:<id>`, `admin:<name>` or `system`.
    pub actor: String,
    /// The stated reason (required for agents).
    pub reason: String,
    /// Unix ms.
    pub at_ms: u64,
}

/// What happened to a customer's identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkAction {
    /// An identity was linked to this customer by hand.
    Linked,
    /// An identity was unlinked from this customer by hand (it got a fresh customer).
    Unlinked,
    /// Another customer was merged into this one (`other` is the merged id).
    MergedFrom,
    /// This customer was merged into `other` (the survivor).
    MergedInto,
    /// A verified observation took an identity this customer held unverified.
    Claimed,
}

/// One entry of a customer's link history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// What happened.
    pub action: LinkAction,
    /// The identity concerned (none for merges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// The other customer involved (the previous owner of a linked identity, the fresh customer of an
    /// unlinked one, the other side of a merge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<CustomerId>,
    /// Who, why and when.
    pub change: GraphChange,
}

/// One entry of the audit log, which survives the erasures it records. It never holds erased content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unix ms.
    pub at_ms: u64,
    /// Who asked.
    pub actor: String,
    /// What was done, e.g. `customer.erased`.
    pub action: String,
    /// The customer it was done to.
    pub customer: CustomerId,
    /// Why, as the actor stated it.
    pub reason: String,
    /// What was removed, by kind.
    pub counts: ErasureReport,
}

/// What an erasure removed, one count per kind of customer data.
///
/// This is the one list of "every kind of customer data": a new kind (e.g. a profile) gets a field here and
/// each backend's `erase_customer` fills it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureReport {
    /// Identities (identity keys and their graph entries).
    pub identities: u64,
    /// Link history entries.
    pub link_records: u64,
    /// Conversations (summaries, logs and their indexes).
    pub conversations: u64,
    /// Events in those conversations' logs (transcripts).
    pub events: u64,
    /// Merged customer ids that redirected to the customer.
    pub merged_ids: u64,
    /// The customer profile (tier, tags, relationship manager, risk flags, the CRM's cached answer): 0 or 1.
    #[serde(default)]
    pub profiles: u64,
    /// App devices registered for push.
    #[serde(default)]
    pub devices: u64,
}

/// One conversation of a customer's recent history.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationHistory {
    /// Its summary.
    pub record: ConversationRecord,
    /// Its last messages (`message.created` events), oldest first.
    pub messages: Vec<StoredEvent>,
    /// The disposition of its last close, if it was ever closed.
    pub disposition: Option<String>,
    /// The agent it was last assigned to (the summary forgets the agent at close).
    pub agent: Option<String>,
}

/// How far back history reads scan each log for messages and the last close.
pub const HISTORY_SCAN_EVENTS: usize = 500;
