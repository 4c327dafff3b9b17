//! Errors of the connectors, phrased as what the caller should do: [`InboundError`] says which HTTP status to
//! answer a provider, [`ConnectorError`] plus [`FailureReason`] say whether and why a send failed.

use std::fmt;
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

/// Which authenticity check an inbound request failed; it decides the HTTP status to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// WeChat `signature` (SHA-1 of token, timestamp, nonce).
    WechatSignature,
    /// WeChat / WeCom `msg_signature` (SHA-1 of token, timestamp, nonce, Encrypt).
    WechatMsgSignature,
    /// `X-Twilio-Signature` (HMAC-SHA1 or the SharedKey HMAC-SHA256 variant).
    Twilio,
    /// Twilio's `bodySHA256` query parameter for non-form bodies.
    TwilioBodyHash,
    /// Standard Webhooks `webhook-signature` (CTI webhook).
    StandardWebhooks,
}

impl SignatureScheme {
    /// The name used in error messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WechatSignature => "wechat signature",
            Self::WechatMsgSignature => "wechat msg_signature",
            Self::Twilio => "x-twilio-signature",
            Self::TwilioBodyHash => "twilio bodySHA256",
            Self::StandardWebhooks => "webhook-signature",
        }
    }

    /// WeChat and Twilio get `403` (what the vectors and the providers' samples use); the Standard Webhooks
    /// receiver contract of PROTOCOLS.md §3.6 asks for `401`.
    fn http_status(self) -> u16 {
        match self {
            Self::StandardWebhooks => 401,
            Self::WechatSignature | Self::WechatMsgSignature | Self::Twilio | Self::TwilioBodyHash => 403,
        }
    }
}

/// Why an inbound provider request was refused; [`InboundError::http_status`] is what to answer.
///
/// Nothing of a refused request may be processed: the caller answers the status and stops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// The signature is absent.
    #[error("missing {}", .0.as_str())]
    MissingSignature(SignatureScheme),
    /// The signature does not match.
    #[error("{} mismatch", .0.as_str())]
    BadSignature(SignatureScheme),
    /// The signed timestamp is outside the replay window.
    #[error("timestamp {timestamp} outside the {window_secs} s replay window (now {now})")]
    Stale {
        /// The timestamp the sender signed (unix seconds).
        timestamp: i64,
        /// Our clock (unix seconds).
        now: i64,
        /// Allowed skew in seconds.
        window_secs: i64,
    },
    /// The request is authentic but meant for another account (AppID, CorpID, ToUserName, AccountSid).
    #[error("addressed to {got:?}, expected {expected:?}")]
    WrongRecipient {
        /// Our configured id.
        expected: String,
        /// The id in the request.
        got: String,
    },
    /// The body exceeds the size limit.
    #[error("body of {len} bytes exceeds the {limit} byte limit")]
    TooLarge {
        /// Body size.
        len: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The XML uses a construct we refuse (DOCTYPE, entity declarations, processing instructions).
    #[error("refused xml construct: {0}")]
    UnsafeXml(&'static str),
    /// The request cannot be parsed or misses a required field.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The ciphertext is authentic (its signature matched) but does not decrypt to a valid payload.
    #[error("cannot decrypt payload: {0}")]
    Decrypt(String),
}

impl InboundError {
    /// The HTTP status to answer: bad or missing signature → 401/403, stale → 401, wrong recipient → 403,
    /// too large → 413, everything malformed → 400.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::MissingSignature(scheme) | Self::BadSignature(scheme) => scheme.http_status(),
            Self::Stale { .. } => 401,
            Self::WrongRecipient { .. } => 403,
            Self::TooLarge { .. } => 413,
            Self::UnsafeXml(_) | Self::Malformed(_) | Self::Decrypt(_) => 400,
        }
    }

    pub(crate) fn malformed(what: impl fmt::Display) -> Self {
        Self::Malformed(what.to_string())
    }
}

/// Why a send failed, in terms an agent can be shown and the outbox can act on.
///
/// Returned next to a [`ConnectorError`] (see [`SendFailure`]): the error says whether to retry, the reason says
/// what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The access token is stale or was replaced: refresh it and retry once.
    AccessTokenInvalid,
    /// The customer-service window is closed (or the user unfollowed): wait for the customer to write again.
    WindowClosed,
    /// The per-window message quota is used up: wait for the customer to write again.
    QuotaExhausted,
    /// The provider throttled us: retry later.
    RateLimited,
    /// The provider failed or is busy: retry with backoff.
    ProviderUnavailable,
    /// The recipient address is invalid or cannot receive this channel.
    InvalidRecipient,
    /// The recipient opted out (e.g. replied STOP).
    RecipientOptedOut,
    /// The provider refused the content (too long, wrong media, bad parameters).
    ContentRejected,
    /// Our credentials or account setup are wrong: an operator must act.
    Misconfigured,
    /// Any other permanent refusal.
    Other,
}

impl FailureReason {
    /// A short sentence for the agent's view.
    pub fn agent_message(self) -> &'static str {
        match self {
            Self::AccessTokenInvalid => "the channel credentials are being refreshed; the message will be retried",
            Self::WindowClosed => {
                "the reply window is closed: the customer must write again before you can answer on this channel"
            }
            Self::QuotaExhausted => {
                "the message quota for this window is used up: wait until the customer writes again"
            }
            Self::RateLimited => "the provider is throttling; the message will be retried",
            Self::ProviderUnavailable => "the provider is unavailable; the message will be retried",
            Self::InvalidRecipient => "the recipient address is invalid for this channel",
            Self::RecipientOptedOut => "the customer has opted out of messages on this channel",
            Self::ContentRejected => "the provider refused the content of this message",
            Self::Misconfigured => "the channel is misconfigured; contact an administrator",
            Self::Other => "the provider refused this message",
        }
    }

    /// Whether the caller should refresh its access token and retry exactly once.
    pub fn refresh_token_and_retry(self) -> bool {
        matches!(self, Self::AccessTokenInvalid)
    }
}

/// A failed provider call: what to do ([`ConnectorError`]) and why ([`FailureReason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct SendFailure {
    /// Retry semantics for the outbox.
    pub error: ConnectorError,
    /// What happened, for the agent and for metrics.
    pub reason: FailureReason,
}

impl SendFailure {
    /// A retryable failure after which the token must be refreshed first.
    pub(crate) fn token(code: i64, message: &str) -> Self {
        Self {
            error: ConnectorError::Unavailable(format!("access token refused ({code}): {message}")),
            reason: FailureReason::AccessTokenInvalid,
        }
    }

    /// A permanent refusal.
    pub(crate) fn rejected(code: impl fmt::Display, message: &str, reason: FailureReason) -> Self {
        Self {
            error: ConnectorError::Rejected {
                code: code.to_string(),
                message: message.to_owned(),
            },
            reason,
        }
    }

    /// A transient provider failure.
    pub(crate) fn unavailable(detail: impl fmt::Display) -> Self {
        Self {
            error: ConnectorError::Unavailable(detail.to_string()),
            reason: FailureReason::ProviderUnavailable,
        }
    }

    /// The provider throttled us.
    pub(crate) fn rate_limited(retry_after: Duration) -> Self {
        Self {
            error: ConnectorError::RateLimited { retry_after },
            reason: FailureReason::RateLimited,
        }
    }

    /// The provider answered something unreadable.
    pub(crate) fn malformed(detail: impl fmt::Display) -> Self {
        Self {
            error: ConnectorError::Malformed(detail.to_string()),
            reason: FailureReason::Other,
        }
    }
}
