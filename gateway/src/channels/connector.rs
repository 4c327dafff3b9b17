//! The seam between the outbox and each provider: [`Connector`], used as `Arc<dyn Connector>`.

use async_trait::async_trait;
use omnigate_connectors::model::{Channel, OutboundMessage};
use omnigate_connectors::SendFailure;

/// What a provider answered to an accepted send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Receipt {
    /// The provider's id of the message, when it gives one (Twilio `SM…`).
    pub provider_message_id: Option<String>,
}

/// One configured provider account that can send agents' messages.
#[async_trait]
pub trait Connector: Send + Sync + std::fmt::Debug + 'static {
    /// The channel it serves.
    fn channel(&self) -> Channel;

    /// Our account id on that channel (the configured connector id).
    fn account(&self) -> &str;

    /// Sends one message. Must be safe to call again for the same message after a retryable failure.
    ///
    /// # Errors
    /// A [`SendFailure`]: its `error` says whether to retry, its `reason` what to tell the agent.
    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, SendFailure>;

    /// The least time between two sends through this account (its rate limit).
    fn min_interval(&self) -> std::time::Duration;
}
