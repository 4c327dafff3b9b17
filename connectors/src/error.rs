use std::time::Duration;

/// Why an outbound send failed, phrased as what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// The provider refused the message for good (bad recipient, window closed, content refused).
    #[error("rejected by provider: {code}: {message}")]
    Rejected {
        /// The provider's error code.
        code: String,
        /// The provider's message.
        message: String,
    },
    /// The provider asked us to slow down.
    #[error("rate limited by provider, retry after {retry_after:?}")]
    RateLimited {
        /// When to try again.
        retry_after: Duration,
    },
    /// The provider could not be reached or failed (timeout, 5xx).
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider answered something we cannot read.
    #[error("malformed provider response: {0}")]
    Malformed(String),
}

impl ConnectorError {
    /// Whether sending the same message again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Unavailable(_))
    }
}
