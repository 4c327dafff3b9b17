//! Twilio SMS IO (PROTOCOLS.md §2.1–§2.4): the inbound message webhook and the status callback at
//! `/channels/twilio/{account}/sms` and `/channels/twilio/{account}/status`, both checked with
//! `X-Twilio-Signature` over the configured public URL, and the Messages API sender. The protocol itself is
//! `omnigate_connectors::twilio`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Uri};
use omnigate_config::{ExposeSecret, SecretString, TwilioAccount};
use omnigate_connectors::model::{Channel, Content, OutboundMessage};
use omnigate_connectors::twilio::signature::{SETTINGS_HEADER, SIGNATURE_HEADER};
use omnigate_connectors::twilio::wire::{self, MessageStatus, SendRequest, Sender};
use omnigate_connectors::twilio::{SignedRequest, TwilioWebhook, EMPTY_TWIML};
use omnigate_connectors::{ConnectorError, FailureReason, SendFailure};

use super::connector::{Connector, Receipt};
use super::http_client::transport_failure;
use super::outbox::reason_name;
use super::{ChannelHub, WebhookError};
use crate::bus::DeliveryUpdate;
use crate::clock::unix_ms;
use crate::telemetry::metrics;

/// One account's webhook side.
#[derive(Debug)]
pub struct TwilioEndpoint {
    /// Signature settings over the public base URL.
    pub webhook: TwilioWebhook,
    /// Queue of new conversations.
    pub queue: Option<String>,
}

/// The webhook settings of an account; `public_base_url` is the URL Twilio calls, not the one we bind.
pub fn endpoint(config: &TwilioAccount, public_base_url: &str) -> TwilioEndpoint {
    let mut webhook = TwilioWebhook::new(public_base_url, config.auth_token.expose_secret());
    if let Some(secondary) = &config.secondary_auth_token {
        webhook.auth_tokens.push(secondary.expose_secret().to_owned());
    }
    webhook.account_sid = Some(config.account_sid.clone());
    webhook.max_body_bytes = config.max_body_bytes;
    TwilioEndpoint {
        webhook,
        queue: Some(config.queue.clone()).filter(|q| !q.is_empty()),
    }
}

/// The status callback URL given on every send.
pub fn status_callback_url(public_base_url: &str, account: &str) -> String {
    format!(
        "{}/channels/twilio/{account}/status",
        public_base_url.trim_end_matches('/')
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn signed<'a>(uri: &'a Uri, headers: &'a HeaderMap, body: &'a [u8]) -> SignedRequest<'a> {
    SignedRequest {
        path: uri.path(),
        raw_query: uri.query(),
        body,
        signature: header(headers, SIGNATURE_HEADER),
        signature_settings: header(headers, SETTINGS_HEADER),
    }
}

/// `POST /channels/twilio/{account}/sms`: verify, store every part durably (deduplicated on `MessageSid`), then
/// the empty TwiML answer.
pub(super) async fn inbound_sms(
    State(hub): State<Arc<ChannelHub>>,
    Path(account): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebhookError> {
    let endpoint = hub.twilio.get(&account).ok_or(WebhookError::UnknownAccount)?;
    let (_, messages) = endpoint
        .webhook
        .receive_sms(&signed(&uri, &headers, &body), unix_ms())
        .map_err(|e| WebhookError::refused(Channel::SmsTwilio, e))?;
    for message in messages {
        hub.ingest(&account, endpoint.queue.clone(), message).await?;
    }
    Ok(([(CONTENT_TYPE, "text/xml")], EMPTY_TWIML).into_response())
}

/// `POST /channels/twilio/{account}/status`: moves a sent message's delivery state forward (callbacks come out
/// of order; regressions and repeats are ignored).
pub(super) async fn status(
    State(hub): State<Arc<ChannelHub>>,
    Path(account): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebhookError> {
    let endpoint = hub.twilio.get(&account).ok_or(WebhookError::UnknownAccount)?;
    let callback = endpoint
        .webhook
        .receive_status(&signed(&uri, &headers, &body))
        .map_err(|e| WebhookError::refused(Channel::SmsTwilio, e))?;
    let Some(record) = hub.sent.get(&callback.message_sid).map(|r| r.clone()) else {
        // Not one of ours (or sent before a restart): acknowledge so Twilio stops.
        tracing::info!(message_sid = %callback.message_sid, "status callback for an unknown message");
        return Ok(http::StatusCode::NO_CONTENT.into_response());
    };
    let advanced = {
        let mut last = hub
            .twilio_status
            .entry(callback.message_sid.clone())
            .or_insert(MessageStatus::Queued);
        if last.advances_to(&callback.status) {
            *last = callback.status.clone();
            true
        } else {
            false
        }
    };
    let state = match &callback.status {
        s if s.is_failure() => "failed",
        MessageStatus::Delivered | MessageStatus::Read | MessageStatus::PartiallyDelivered => "delivered",
        _ => return Ok(http::StatusCode::NO_CONTENT.into_response()),
    };
    if !advanced {
        return Ok(http::StatusCode::NO_CONTENT.into_response());
    }
    let (reason, detail) = if state == "failed" {
        (
            Some(reason_name(FailureReason::InvalidRecipient).to_owned()),
            format!(
                "the carrier did not deliver the message (twilio {:?}, error {})",
                callback.status,
                callback
                    .error_code
                    .map_or_else(|| "none".to_owned(), |c| c.to_string())
            ),
        )
    } else {
        (None, String::new())
    };
    let update = DeliveryUpdate {
        message_id: record.message_id.clone(),
        channel: record.channel,
        state: state.to_owned(),
        attempt: 0,
        reason,
        detail,
        provider_message_id: Some(callback.message_sid.clone()),
        segments: None,
    };
    metrics::channel_delivery(record.channel.as_str(), state);
    hub.bus
        .delivery_updated(record.conversation.clone(), update)
        .await?;
    Ok(http::StatusCode::NO_CONTENT.into_response())
}

/// The Messages API takes no idempotency key (PROTOCOLS.md §2.4): a request that never reached Twilio is
/// retried, but one that may have (a timeout after sending) is not, so the customer never gets it twice; the
/// agent sees it dead-lettered and decides.
fn outcome_unknown_or_retry(error: &reqwest::Error) -> SendFailure {
    if error.is_connect() {
        return transport_failure(error);
    }
    SendFailure {
        error: ConnectorError::Rejected {
            code: "outcome_unknown".to_owned(),
            message: format!("no answer from twilio ({error}); the message may have been sent"),
        },
        reason: FailureReason::ProviderUnavailable,
    }
}

/// Sends agents' replies through the Messages API.
#[derive(Debug)]
pub struct TwilioConnector {
    id: String,
    client: reqwest::Client,
    url: String,
    account_sid: String,
    auth_token: SecretString,
    sender: Sender,
    status_callback: String,
    min_interval: Duration,
}

impl TwilioConnector {
    /// The sender of one account.
    pub fn new(config: &TwilioAccount, client: reqwest::Client, public_base_url: &str) -> TwilioConnector {
        let sender = if config.messaging_service_sid.is_empty() {
            Sender::From(config.from.clone())
        } else {
            Sender::MessagingService(config.messaging_service_sid.clone())
        };
        TwilioConnector {
            id: config.id.clone(),
            client,
            url: format!(
                "{}{}",
                config.api_base_url.trim_end_matches('/'),
                SendRequest::path(&config.account_sid)
            ),
            account_sid: config.account_sid.clone(),
            auth_token: config.auth_token.clone(),
            sender,
            status_callback: status_callback_url(public_base_url, &config.id),
            min_interval: Duration::from_secs(1) / config.rate_per_second.max(1),
        }
    }
}

#[async_trait]
impl Connector for TwilioConnector {
    fn channel(&self) -> Channel {
        Channel::SmsTwilio
    }

    fn account(&self) -> &str {
        &self.id
    }

    fn min_interval(&self) -> Duration {
        self.min_interval
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, SendFailure> {
        let (body, media_urls) = match &message.content {
            Content::Text { text } => (text.clone(), Vec::new()),
            Content::Media { provider_ref, .. } if provider_ref.starts_with("https://") => {
                (String::new(), vec![provider_ref.clone()])
            }
            other => {
                return Err(SendFailure {
                    error: ConnectorError::Rejected {
                        code: "unsupported_content".to_owned(),
                        message: format!("cannot send {other:?} as an SMS"),
                    },
                    reason: FailureReason::ContentRejected,
                })
            }
        };
        let request = SendRequest {
            to: message.to.value.clone(),
            sender: self.sender.clone(),
            body,
            media_urls,
            status_callback: Some(self.status_callback.clone()),
        };
        let response = self
            .client
            .post(&self.url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose_secret()))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(request.to_form())
            .send()
            .await
            .map_err(|e| outcome_unknown_or_retry(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.map_err(|e| transport_failure(&e))?;
        let sent = wire::parse_send_response(status, &bytes, retry_after.as_deref())?;
        Ok(Receipt {
            provider_message_id: Some(sent.sid),
        })
    }
}
