//! The context store: customers and their identities, conversations and their ordered event logs.
//!
//! Every backend assigns each appended event a gapless `seq` per conversation (the agents' view of the log)
//! and, when the customer may see it, a gapless `customer_seq` (the customer's view). Idempotency keys make
//! a retried append return the original event instead of a second one.
//!
//! Layout:
//! - `event.rs`: the immutable event record
//! - `device.rs`: app devices registered for push
//! - `memory.rs`: the embedded backend (default)
//! - `profile.rs`: the customer profile record
//! - `retention.rs`: TTLs per kind of data and the embedded backend's sweeper
//! - `redis.rs`: the Redis backend, shared by several gateway processes (`docs/redis.md`)
//! - `testsuite.rs`: the conformance suite every backend passes (behind the `test-util` feature)

mod device;
mod event;
mod memory;
mod profile;
mod redis;
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

use async_trait::async_trait;
use omnigate_connectors::model::{Channel, ConversationId, CustomerId, Identity};
use serde::{Deserialize, Serialize};

pub use self::redis::{RedisSettings, RedisStore};
pub use device::{Device, PushPlatform};
pub use event::{Actor, EventKind, NewEvent, OfferExplanation, StoredEvent};
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

    /// Checks the backend answers.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn ping(&self) -> Result<(), StoreError>;
}
