//! WeChat Official Account IO (PROTOCOLS.md §1): the callback routes at `/channels/wechat/{account}` and the
//! customer-service API sender with its access-token owner. The protocol itself (signatures, AES, XML, window)
//! is `omnigate_connectors::wechat`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use omnigate_config::{ExposeSecret, WechatAccount};
use omnigate_connectors::model::{Channel, Content, OutboundMessage, ReplyCapability};
use omnigate_connectors::wechat::api;
use omnigate_connectors::wechat::window::WindowPolicy;
use omnigate_connectors::wechat::wire::{PushKind, WechatEvent, ACK_BODY, PLAIN_CONTENT_TYPE};
use omnigate_connectors::wechat::OfficialAccount;
use omnigate_connectors::{ConnectorError, FailureReason, SendFailure};

use super::connector::{Connector, Receipt};
use super::http_client::{post_json_with_token, transport_failure};
use super::media::{MediaStore, MediaUploader};
use super::token::{TokenManager, TokenSource};
use super::{ChannelHub, WebhookError};
use crate::clock::unix_ms;
use crate::shutdown::Shutdown;
use crate::telemetry::metrics;

/// One account's callback side: the verified protocol settings and where its conversations go.
#[derive(Debug)]
pub struct WechatEndpoint {
    /// Signatures, keys, limits, window policy.
    pub account: OfficialAccount,
    /// Queue of new conversations.
    pub queue: Option<String>,
}

/// Builds the protocol settings of an account from configuration.
///
/// # Errors
/// A malformed EncodingAESKey.
pub fn endpoint(
    config: &WechatAccount,
) -> Result<WechatEndpoint, omnigate_connectors::wechat::crypto::KeyError> {
    let mut account = OfficialAccount::new(config.token.expose_secret(), config.appid.clone());
    for key in &config.encoding_aes_keys {
        account = account.with_key(key.expose_secret())?;
    }
    if !config.original_id.is_empty() {
        account = account.with_original_id(config.original_id.clone());
    }
    account.max_body_bytes = config.max_body_bytes;
    account.window = WindowPolicy {
        message_window_secs: config.message_window_secs,
        message_quota: config.message_quota,
        ..WindowPolicy::default()
    };
    Ok(WechatEndpoint {
        account,
        queue: Some(config.queue.clone()).filter(|q| !q.is_empty()),
    })
}

fn plain(status: http::StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, PLAIN_CONTENT_TYPE)], body).into_response()
}

/// `GET /channels/wechat/{account}`: the console's URL check; answers the raw `echostr`.
pub(super) async fn verify_url(
    State(hub): State<Arc<ChannelHub>>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, WebhookError> {
    let endpoint = hub.wechat.get(&account).ok_or(WebhookError::UnknownAccount)?;
    let echo = endpoint
        .account
        .verify_url(query.as_deref().unwrap_or_default())
        .map_err(|e| WebhookError::refused(Channel::WechatOa, e))?;
    Ok(plain(http::StatusCode::OK, echo))
}

/// `POST /channels/wechat/{account}`: verify, decrypt, store durably (deduplicated), then `success`.
pub(super) async fn push(
    State(hub): State<Arc<ChannelHub>>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, WebhookError> {
    let endpoint = hub.wechat.get(&account).ok_or(WebhookError::UnknownAccount)?;
    let received = endpoint
        .account
        .receive(query.as_deref().unwrap_or_default(), &body, unix_ms())
        .map_err(|e| WebhookError::refused(Channel::WechatOa, e))?;
    let unsubscribed = matches!(received.message.kind, PushKind::Event(WechatEvent::Unsubscribe));
    let ack = hub
        .ingest(&account, endpoint.queue.clone(), received.inbound)
        .await?;
    if unsubscribed {
        // No later message can reach this user (45015): the agent's next reply is refused up front.
        hub.addresses.set_capability(
            &ack.conversation,
            ReplyCapability::Window {
                expires_at_ms: 0,
                remaining: 0,
            },
        );
    }
    // `success` needs no encryption, even in safe mode (PROTOCOLS.md §1.5).
    Ok(plain(http::StatusCode::OK, ACK_BODY.to_owned()))
}

/// `GET /channels/wechat/{account}/media/{media_id}` (agents only, `Authorization: Bearer <agent token>`): fetches
/// an inbound image, voice or video from WeChat on demand (media ids live 3 days).
pub(super) async fn media(
    State(hub): State<Arc<ChannelHub>>,
    Path((account, media_id)): Path<(String, String)>,
    headers: http::HeaderMap,
) -> Response {
    if super::media::agent_of(&hub, &headers).is_none() {
        return (http::StatusCode::UNAUTHORIZED, "an agent token is required").into_response();
    }
    let Some(sender) = hub.wechat_senders.get(&account) else {
        return http::StatusCode::NOT_FOUND.into_response();
    };
    match sender.fetch_media(&media_id).await {
        Ok((content_type, bytes)) => ([(CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(failure) => {
            tracing::warn!(error = %failure.error, "wechat media not fetched");
            let status = match failure.reason {
                FailureReason::ContentRejected => http::StatusCode::NOT_FOUND,
                _ => http::StatusCode::BAD_GATEWAY,
            };
            (status, failure.reason.agent_message()).into_response()
        }
    }
}

/// Sends agents' replies through the customer-service API.
#[derive(Debug)]
pub struct WechatConnector {
    id: String,
    client: reqwest::Client,
    media_url: String,
    send_url: String,
    tokens: TokenManager,
    min_interval: Duration,
    /// Agents' uploads, as this account's temporary material.
    uploader: MediaUploader,
}

impl WechatConnector {
    /// The sender of one account, with its token owner started on the shutdown tree.
    pub fn start(
        config: &WechatAccount,
        client: reqwest::Client,
        media: Arc<MediaStore>,
        shutdown: &Shutdown,
    ) -> WechatConnector {
        let base = config.api_base_url.trim_end_matches('/');
        let tokens = TokenManager::start(
            client.clone(),
            base,
            TokenSource::WechatStable {
                appid: config.appid.clone(),
                secret: config.app_secret.clone(),
            },
            "wechat_oa",
            shutdown,
        );
        let uploader = MediaUploader::new(
            client.clone(),
            format!("{base}{}", api::MEDIA_UPLOAD_PATH),
            "wechat_oa",
            media,
        );
        WechatConnector {
            id: config.id.clone(),
            client,
            send_url: format!("{base}{}", api::CUSTOM_SEND_PATH),
            media_url: format!("{base}{}", api::MEDIA_GET_PATH),
            tokens,
            min_interval: Duration::from_secs(1) / config.rate_per_second.max(1),
            uploader,
        }
    }

    /// Downloads a temporary media by id (refreshing a refused token once); answers its content type and bytes.
    ///
    /// # Errors
    /// The classified failure (an unknown or expired media id is [`FailureReason::ContentRejected`]).
    pub async fn fetch_media(&self, media_id: &str) -> Result<(String, Bytes), SendFailure> {
        let token = self.tokens.get().await?;
        match self.get_media(&token, media_id).await {
            Err(failure) if failure.reason.refresh_token_and_retry() => {
                let token = self.tokens.refused(token).await?;
                self.get_media(&token, media_id).await
            }
            other => other,
        }
    }

    async fn get_media(&self, token: &str, media_id: &str) -> Result<(String, Bytes), SendFailure> {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("access_token", token)
            .finish();
        let response = self
            .client
            .get(format!(
                "{}?{query}&{}",
                self.media_url,
                api::media_get_query(media_id)
            ))
            .send()
            .await
            .map_err(|e| transport_failure(&e))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let bytes = response.bytes().await.map_err(|e| transport_failure(&e))?;
        api::parse_media_response(status, &content_type, &bytes)?;
        Ok((content_type, bytes))
    }

    async fn post(&self, token: &str, body: &serde_json::Value) -> Result<(), SendFailure> {
        let (status, bytes) = post_json_with_token(&self.client, &self.send_url, token, body).await?;
        api::parse_send_response(status, &bytes)
    }
}

#[async_trait]
impl Connector for WechatConnector {
    fn channel(&self) -> Channel {
        Channel::WechatOa
    }

    fn account(&self) -> &str {
        &self.id
    }

    fn min_interval(&self) -> Duration {
        self.min_interval
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, SendFailure> {
        let to = &message.to.value;
        let body = match &message.content {
            Content::Text { text } => api::custom_text(to, text, None),
            Content::Media {
                kind, provider_ref, ..
            } if kind == "image" => {
                api::custom_image(to, &self.uploader.media_id(&self.tokens, provider_ref).await?)
            }
            other => {
                return Err(SendFailure {
                    error: ConnectorError::Rejected {
                        code: "unsupported_content".to_owned(),
                        message: format!("cannot send {other:?} through the customer-service API"),
                    },
                    reason: FailureReason::ContentRejected,
                })
            }
        };
        let mut token = self.tokens.get().await?;
        match self.post(&token, &body).await {
            Err(failure) if failure.reason.refresh_token_and_retry() => {
                // 40001/42001: refresh once and retry once; a second refusal goes back to the outbox.
                metrics::channel_token_refused("wechat_oa");
                token = self.tokens.refused(token).await?;
                self.post(&token, &body).await?;
            }
            other => other?,
        }
        Ok(Receipt::default())
    }
}
