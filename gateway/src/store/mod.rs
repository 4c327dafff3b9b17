//! The context store: customers and their identities, conversations and their ordered event logs.
//!
//! Every backend assigns each appended event a gapless `seq` per conversation (the agents' view of the log)
//! and, when the customer may see it, a gapless `customer_seq` (the customer's view). Idempotency keys make
//! a retried append return the original event instead of a second one.
//!
//! Layout:
//! - `event.rs`: the immutable event record
//! - `device.rs`: app devices registered for push
//! - `graph.rs`: the identity graph's records (links, merges, audit, erasure report, history)
//! - `memory.rs`: the embedded backend (default)
//! - `idempotency.rs`: the embedded backend's idempotency index of a conversation
//! - `profile.rs`: the customer profile record
//! - `retention.rs`: TTLs per kind of data and the embedded backend's sweeper
//! - `redis.rs`: the Redis backend, shared by several gateway processes (`docs/redis.md`)
//! - `redis_graph.rs`: the Redis backend's identity graph, history and erasure scripts
//! - `testsuite.rs`: the conformance suite every backend passes (behind the `test-util` feature)

mod chunked;
mod device;
mod event;
mod graph;
mod idempotency;
mod memory;
mod memory_graph;
mod profile;
mod redis;
mod redis_graph;
mod retention;
#[cfg(any(test, feature = "test-util"))]
pub mod testsuite;

/// The Redis backend's Lua scripts, so a benchmark can run the same commands on a bare client.
#[cfg(feature = "test-util")]
pub mod redis_scripts {
    /// The append script (see `docs/redis.md`).
    pub const APPEND_LUA: &str = super::redis::APPEND_LUA;
    /// The page script (see `docs/redis.md`).
    pub const PAGE_LUA: &str = super::redis::PAGE_LUA;
}

use std::sync::Arc;

use async_trait::async_trait;
use omnigate_connectors::model::{Channel, ConversationId, CustomerId, Identity};
use serde::{Deserialize, Serialize};

pub use self::redis::{RedisSettings, RedisStore};
pub use device::{Device, PushPlatform};
pub use event::{Actor, EventKind, NewEvent, OfferExplanation, ReceivedRecord, StoredEvent, Via};
pub use graph::{
    AuditEntry, ConversationHistory, ErasureReport, GraphChange, LinkAction, LinkRecord, HISTORY_SCAN_EVENTS,
};
pub use memory::MemoryStore;
pub use profile::CustomerProfile;
pub use retention::{sweep_until_stopped, Retention, Swept};

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached now; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The stored data is not what this version expects.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// The backend's configuration is unusable (e.g. a malformed URL); fix the configuration.
    #[error("store is misconfigured: {0}")]
    Misconfigured(String),
}

/// Which side's view of a conversation log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// Every event, numbered by `seq`.
    Agent,
    /// The events the customer may see, numbered by `customer_seq`.
    Customer,
}

/// The result of an append. The event is shared with the log that holds it (the embedded store keeps the same
/// allocation), so answering an append copies no text.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// The event was new and is now in the log.
    New(Arc<StoredEvent>),
    /// An event with the same idempotency key was appended before; this is it.
    Duplicate(Arc<StoredEvent>),
}

impl Appended {
    /// The stored event either way.
    pub fn event(&self) -> &StoredEvent {
        match self {
            Appended::New(e) | Appended::Duplicate(e) => e,
        }
    }
}

/// A page of events in one view.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// Events after the requested position, in order, at most the requested number.
    pub events: Vec<StoredEvent>,
    /// The last position in this view (`seq` or `customer_seq`) at the time of the read.
    pub last: u64,
}

/// Lifecycle of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationStatus {
    /// Created, not yet routed.
    New,
    /// Waiting for an agent.
    Queued,
    /// Offered to an agent.
    Offered,
    /// An agent has it.
    Assigned,
    /// Closed.
    Closed,
}

/// A conversation's current state (the log is the history; this is the summary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    /// The conversation.
    pub id: ConversationId,
    /// Its customer.
    pub customer: CustomerId,
    /// The channel it runs on.
    pub channel: Channel,
    /// The queue it is routed through.
    pub queue: String,
    /// Where it is in its lifecycle.
    pub status: ConversationStatus,
    /// The agent it is assigned to.
    pub agent: Option<String>,
    /// Unix ms of creation.
    pub created_at_ms: u64,
    /// Unix ms of the last close.
    pub closed_at_ms: Option<u64>,
}

/// Customers, identities, conversations and their logs.
#[async_trait]
pub trait ContextStore: Send + Sync + std::fmt::Debug + 'static {
    /// Appends an event to a conversation's log, numbering it. With an idempotency key already used in this
    /// conversation, returns the original event and appends nothing.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the backend cannot be reached.
    async fn append(&self, conversation: &ConversationId, event: NewEvent) -> Result<Appended, StoreError>;

    /// Events after position `after` in `view`, at most `limit`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn events_after(
        &self,
        conversation: &ConversationId,
        view: View,
        after: u64,
        limit: usize,
    ) -> Result<EventPage, StoreError>;

    /// The number of customer-visible events with `seq <= seq` (the customer's position at that agent position).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn customer_position(&self, conversation: &ConversationId, seq: u64) -> Result<u64, StoreError>;

    /// The `seq` of the customer-visible event number `customer_seq`, if it exists.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn agent_position(
        &self,
        conversation: &ConversationId,
        customer_seq: u64,
    ) -> Result<Option<u64>, StoreError>;

    /// Saves a conversation's summary and adds the conversation to its customer's conversation index (the
    /// survivor's, when the record names a merged customer).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn save_conversation(&self, record: &ConversationRecord) -> Result<(), StoreError>;

    /// Loads a conversation's summary.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn load_conversation(&self, id: &ConversationId) -> Result<Option<ConversationRecord>, StoreError>;

    /// The customer an identity belongs to (the survivor, when it was merged), creating a new customer for an
    /// identity never seen. Never merges anything, whether `identity.verified` or not.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn resolve_customer(&self, identity: &Identity) -> Result<CustomerId, StoreError>;

    /// Registers a device for `customer`. Registering the same device again changes nothing; a device
    /// registered by another customer moves to this one (atomically: it is never listed for both).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn register_device(&self, customer: &CustomerId, device: &Device) -> Result<(), StoreError>;

    /// Removes `customer`'s device `(platform, token)`; returns whether it was registered to them.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn unregister_device(
        &self,
        customer: &CustomerId,
        platform: PushPlatform,
        token: &str,
    ) -> Result<bool, StoreError>;

    /// The devices registered to `customer`, sorted.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn devices(&self, customer: &CustomerId) -> Result<Vec<Device>, StoreError>;

    /// Saves a customer's profile (replacing the one stored). It expires `profile_secs` after the save.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn save_profile(&self, customer: &CustomerId, profile: &CustomerProfile) -> Result<(), StoreError>;

    /// Loads a customer's profile, `None` when none is stored (or it expired).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn load_profile(&self, customer: &CustomerId) -> Result<Option<CustomerProfile>, StoreError>;

    /// Deletes a customer's profile (erasure); deleting a missing profile succeeds.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn delete_profile(&self, customer: &CustomerId) -> Result<(), StoreError>;
    /// Resolves identities observed together and proven (an app's signed user id and the verified phone in
    /// its claims; an OpenID and its UnionID) to one customer, atomically: customers that hold any of the
    /// verified identities verified are merged into one survivor (the customer of the first such identity
    /// in `identities`); identities held only unverified by another customer are claimed. Entries with
    /// `verified: false` are ignored; with no verified entry this is [`ContextStore::resolve_customer`] of
    /// the first one.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; [`StoreError::Corrupt`] for an empty slice.
    async fn resolve_verified(&self, identities: &[Identity]) -> Result<CustomerId, StoreError>;

    /// The customer `customer` stands for now: itself, or the survivor of the merges it went through.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn canonical_customer(&self, customer: &CustomerId) -> Result<CustomerId, StoreError>;

    /// Links an identity to a customer by hand (an agent or supervisor decided), moving it from the
    /// customer that held it; both customers' histories record the change. Returns the customer it is
    /// linked to now (the survivor of `customer`).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn link_identity(
        &self,
        customer: &CustomerId,
        identity: &Identity,
        change: &GraphChange,
    ) -> Result<CustomerId, StoreError>;

    /// Unlinks an identity from its customer by hand: it gets a fresh customer, returned; both histories
    /// record the change. `None` when nobody holds the identity.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn unlink_identity(
        &self,
        identity: &Identity,
        change: &GraphChange,
    ) -> Result<Option<CustomerId>, StoreError>;

    /// The identities a customer (or its survivor) holds, sorted.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn identities_of(&self, customer: &CustomerId) -> Result<Vec<Identity>, StoreError>;

    /// A customer's link history (links, unlinks, claims and merges), oldest first.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn link_history(&self, customer: &CustomerId) -> Result<Vec<LinkRecord>, StoreError>;

    /// The summaries of a customer's conversations on every channel (merged customers' included), newest
    /// first.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn customer_conversations(
        &self,
        customer: &CustomerId,
    ) -> Result<Vec<ConversationRecord>, StoreError>;

    /// A customer's `conversations` most recent conversations, each with its last `messages` messages and
    /// the disposition of its last close (looked for in the last [`HISTORY_SCAN_EVENTS`] events), in one
    /// call.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn customer_history(
        &self,
        customer: &CustomerId,
        conversations: usize,
        messages: usize,
    ) -> Result<Vec<ConversationHistory>, StoreError>;

    /// Erases every kind of data held about a customer (see [`ErasureReport`]): its identities, link
    /// history, conversations' logs and summaries, conversation index and the redirects of merged ids.
    /// The audit log is kept.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn erase_customer(&self, customer: &CustomerId) -> Result<ErasureReport, StoreError>;

    /// Appends an entry to the audit log (never expires, never erased).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// The last `limit` audit entries, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn audit_entries(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// Checks the backend answers.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn ping(&self) -> Result<(), StoreError>;

    /// Keeps `value` under `key` in `inbox` (replacing what was there): work a channel accepted and has not
    /// finished, so a restarted gateway resumes it (CTI events held behind a `seq` gap, outbox jobs). One
    /// atomic write; once it returns, the record survives as long as the store's data does.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]: nothing may be acknowledged on the strength of this record.
    async fn hold(&self, inbox: Inbox, key: &str, value: &str) -> Result<(), StoreError>;

    /// Drops the record under `key` in `inbox` (finished work); releasing a missing key is not an error.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn release(&self, inbox: Inbox, key: &str) -> Result<(), StoreError>;

    /// Every record in `inbox`, sorted by key.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn held(&self, inbox: Inbox) -> Result<Vec<Held>, StoreError>;
}

/// The owners of held records ([`ContextStore::hold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Inbox {
    /// CTI call events accepted (answered 2xx) and not yet applied to their call's conversation.
    Cti,
    /// Agents' messages acknowledged and not yet delivered or dead-lettered by the outbox.
    Outbox,
    /// Used by the conformance suite only.
    Test,
}

impl Inbox {
    /// The inbox's name in storage keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Inbox::Cti => "cti",
            Inbox::Outbox => "outbox",
            Inbox::Test => "test",
        }
    }
}

/// One held record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its key, unique in its inbox.
    pub key: String,
    /// What was held.
    pub value: String,
}
