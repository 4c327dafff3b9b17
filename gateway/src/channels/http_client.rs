//! The one HTTP client every connector uses towards providers: rustls, per-request timeout, no redirects.

use std::time::Duration;

use omnigate_connectors::{ConnectorError, FailureReason, SendFailure};

/// A provider call that did not produce a response: retryable.
pub(crate) fn transport_failure(error: &reqwest::Error) -> SendFailure {
    SendFailure {
        error: ConnectorError::Unavailable(format!("provider request failed: {error}")),
        reason: FailureReason::ProviderUnavailable,
    }
}

/// Builds the client shared by all connectors.
///
/// # Errors
/// When the TLS backend cannot be initialised.
pub fn build(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("omnigate/", env!("CARGO_PKG_VERSION")))
        .build()
}
