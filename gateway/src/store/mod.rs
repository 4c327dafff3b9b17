//! The context store: customers and their identities, conversations and their ordered event logs.
//!
//! Every backend assigns each appended event a gapless `seq` per conversation (the agents' view of the log)
//! and, when the customer may see it, a gapless `customer_seq` (the customer's view). Idempotency keys make
//! a retried append return the original event instead of a second one.
//!
//! Layout:
//! - `event.rs`: the immutable event record
//! - `memory.rs`: the embedded backend (default)
//! - `redis.rs`: the Redis backend, shared by several gateway processes (`docs/redis.md`)
//! - `testsuite.rs`: the conformance suite every backend passes (behind the `test-util` feature)

mod event;
mod memory;
mod redis;
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

use async_trait::async_trait;
use omnigate_connectors::model::{Channel, ConversationId, CustomerId, Identity};
use serde::{Deserialize, Serialize};

pub use self::redis::{RedisSettings, RedisStore};
pub use event::{Actor, EventKind, NewEvent, OfferExplanation, StoredEvent};
pub use memory::MemoryStore;

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

/// The result of an append.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// The event was new and is now in the log.
    New(StoredEvent),
    /// An event with the same idempotency key was appended before; this is it.
    Duplicate(StoredEvent),
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

    /// Saves a conversation's summary.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn save_conversation(&self, record: &ConversationRecord) -> Result<(), StoreError>;

    /// Loads a conversation's summary.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn load_conversation(&self, id: &ConversationId) -> Result<Option<ConversationRecord>, StoreError>;

    /// The customer an identity belongs to, creating a new customer for an identity never seen.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn resolve_customer(&self, identity: &Identity) -> Result<CustomerId, StoreError>;

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
