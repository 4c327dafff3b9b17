//! Retention: how long each kind of data is kept (`[retention]`), and the embedded store's sweeper.
//!
//! Redis expires keys by itself (the TTLs are set by the store's scripts, `docs/redis.md`); the embedded
//! store has no clock of its own, so a task on the shutdown tree sweeps it now and then.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::MemoryStore;
use crate::clock::unix_ms;

/// The `[retention]` TTLs in the store's terms; `0` keeps the data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// A closed conversation's log and summary live this long after the close.
    pub closed_conversation_secs: u64,
    /// A closed conversation's idempotency keys live this long after the close (0: as long as the log).
    pub idempotency_after_close_secs: u64,
    /// A profile lives this long after its last save.
    pub profile_secs: u64,
}

impl Retention {
    /// The TTLs of the `[retention]` section.
    pub fn from_config(config: &omnigate_config::Retention) -> Retention {
        Retention {
            closed_conversation_secs: config.closed_conversation_secs,
            idempotency_after_close_secs: config.idempotency_after_close_secs,
            profile_secs: config.profile_secs,
        }
    }
}

/// Sweeps `store` every `every` until `stop` is cancelled. Spawn it on the shutdown tree.
pub async fn sweep_until_stopped(store: Arc<MemoryStore>, every: Duration, stop: CancellationToken) {
    crate::shutdown::every_until_stopped(every, stop, || {
        let swept = store.sweep(unix_ms());
        if swept.any() {
            tracing::debug!(
                conversations = swept.conversations,
                idempotency_keys = swept.idempotency_keys,
                profiles = swept.profiles,
                "retention sweep removed expired data"
            );
        }
        crate::telemetry::metrics::retention_swept(&swept);
    })
    .await;
}

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Closed conversations (log and summary).
    pub conversations: usize,
    /// Conversations whose idempotency keys were dropped.
    pub idempotency_keys: usize,
    /// Profiles.
    pub profiles: usize,
}

impl Swept {
    /// Whether anything was removed.
    pub fn any(&self) -> bool {
        self.conversations + self.idempotency_keys + self.profiles > 0
    }
}
