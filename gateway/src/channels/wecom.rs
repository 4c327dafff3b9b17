//! WeChat Customer Service (WeCom kf) IO (PROTOCOLS.md §1.9): the callback at `/channels/wecom/{account}` is a
//! doorbell; the messages are pulled with `kf/sync_msg` from a cursor kept durably (a `channel.cursor` event in a
//! log of its own), and replies go out through `kf/send_msg` with our message id as its `msgid`.
//!
//! The cursor only moves after a page's messages are in their conversations' logs, so a crash re-pulls the
//! page and the dedupe keys (`msgid`) make it one message each.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use http::header::CONTENT_TYPE;
use omnigate_config::{ExposeSecret, WecomAccount};
use omnigate_connectors::model::{Channel, Content, ConversationId, OutboundMessage};
use omnigate_connectors::wechat::window::WindowPolicy;
use omnigate_connectors::wecom::wire::{self, SyncMsgRequest};
use omnigate_connectors::wecom::{normalize, Callback, Doorbell, KfCallback};
use omnigate_connectors::{ConnectorError, FailureReason, SendFailure};
use tokio::sync::Mutex;

use super::connector::{Connector, Receipt};
use super::http_client::{post_json_with_token, transport_failure};
use super::media::{MediaStore, MediaUploader};
use super::token::{TokenManager, TokenSource};
use super::{ChannelHub, WebhookError};
use crate::clock::unix_ms;
use crate::shutdown::Shutdown;
use crate::store::{Actor, ContextStore, EventKind, NewEvent, StoreError, View};

/// Events read per page when loading a cursor.
const PAGE: usize = 500;

/// One application's callback and pull side.
#[derive(Debug)]
pub struct WecomEndpoint {
    callback: KfCallback,
    queue: Option<String>,
    window: WindowPolicy,
    client: reqwest::Client,
    sync_url: String,
    tokens: TokenManager,
    /// Per `open_kfid`: the cursor once loaded; the lock also makes pulls of one `open_kfid` take turns.
    cursors: DashMap<String, Arc<Mutex<Option<Option<String>>>>>,
}

/// The callback side and the sender of one application, sharing one token owner.
///
/// # Errors
/// A malformed EncodingAESKey.
pub fn start(
    config: &WecomAccount,
    client: reqwest::Client,
    media: Arc<MediaStore>,
    shutdown: &Shutdown,
) -> anyhow::Result<(WecomEndpoint, WecomConnector)> {
    let mut callback = KfCallback::new(
        config.token.expose_secret(),
        config.corp_id.clone(),
        config.encoding_aes_key.expose_secret(),
    )
    .map_err(|e| anyhow::anyhow!("channels.wecom {:?}: {e}", config.id))?;
    callback.max_body_bytes = config.max_body_bytes;
    let base = config.api_base_url.trim_end_matches('/');
    let tokens = TokenManager::start(
        client.clone(),
        base,
        TokenSource::Wecom {
            corp_id: config.corp_id.clone(),
            secret: config.secret.clone(),
        },
        "wechat_kf",
        shutdown,
    );
    let endpoint = WecomEndpoint {
        callback,
        queue: Some(config.queue.clone()).filter(|q| !q.is_empty()),
        window: WindowPolicy {
            message_quota: config.message_quota,
            ..WindowPolicy::default()
        },
        client: client.clone(),
        sync_url: format!("{base}{}", wire::SYNC_MSG_PATH),
        tokens: tokens.clone(),
        cursors: DashMap::new(),
    };
    let connector = WecomConnector {
        uploader: MediaUploader::new(
            client.clone(),
            format!("{base}{}", omnigate_connectors::wechat::api::MEDIA_UPLOAD_PATH),
            "wechat_kf",
            media,
        ),
        id: config.id.clone(),
        client,
        send_url: format!("{base}{}", wire::SEND_MSG_PATH),
        tokens,
        min_interval: Duration::from_secs(1) / config.rate_per_second.max(1),
    };
    Ok((endpoint, connector))
}

/// The log that holds one `open_kfid`'s cursor: a stable id derived from the key (FNV-1a, so it does not
/// change between builds).
fn cursor_log(key: &str) -> ConversationId {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    // 12 + 16 characters of [a-z0-9_]: always a valid id.
    ConversationId::parse(&format!("c_kfcursor_{hash:016x}")).unwrap_or_else(|_| ConversationId::generate())
}

async fn load_cursor(store: &Arc<dyn ContextStore>, key: &str) -> Result<Option<String>, StoreError> {
    let log = cursor_log(key);
    let mut after = 0;
    let mut cursor = None;
    loop {
        let page = store.events_after(&log, View::Agent, after, PAGE).await?;
        for event in &page.events {
            after = event.seq;
            if let EventKind::ChannelCursor { key: k, cursor: c } = &event.kind {
                if k == key {
                    cursor = Some(c.clone());
                }
            }
        }
        if page.events.is_empty() || after >= page.last {
            return Ok(cursor);
        }
    }
}

async fn save_cursor(store: &Arc<dyn ContextStore>, key: &str, cursor: &str) -> Result<(), StoreError> {
    let event = NewEvent {
        at_ms: unix_ms(),
        actor: Actor::System,
        kind: EventKind::ChannelCursor {
            key: key.to_owned(),
            cursor: cursor.to_owned(),
        },
        idempotency_key: Some(format!("cursor:{key}:{cursor}")),
    };
    store.append(&cursor_log(key), event).await.map(drop)
}

fn success() -> Response {
    ([(CONTENT_TYPE, "text/plain")], "success").into_response()
}

/// `GET /channels/wecom/{account}`: decrypts the encrypted `echostr` and answers its plaintext.
pub(super) async fn verify_url(
    State(hub): State<Arc<ChannelHub>>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, WebhookError> {
    let endpoint = hub.wecom.get(&account).ok_or(WebhookError::UnknownAccount)?;
    let echo = endpoint
        .callback
        .verify_url(query.as_deref().unwrap_or_default())
        .map_err(|e| WebhookError::refused(Channel::WechatKf, e))?;
    Ok(([(CONTENT_TYPE, "text/plain")], echo).into_response())
}

/// `POST /channels/wecom/{account}`: a verified doorbell starts a pull; answered at once.
pub(super) async fn doorbell(
    State(hub): State<Arc<ChannelHub>>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, WebhookError> {
    let endpoint = hub.wecom.get(&account).ok_or(WebhookError::UnknownAccount)?;
    let callback = endpoint
        .callback
        .receive(query.as_deref().unwrap_or_default(), &body)
        .map_err(|e| WebhookError::refused(Channel::WechatKf, e))?;
    if let Callback::KfMsgOrEvent(bell) = callback {
        let hub = Arc::clone(&hub);
        let stop = hub.shutdown.root().clone();
        hub.shutdown.clone().spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = pull(&hub, &account, bell) => {}
            }
        });
    }
    Ok(success())
}

/// Pulls every page after the stored cursor, storing each message before moving the cursor.
async fn pull(hub: &ChannelHub, account: &str, bell: Doorbell) {
    let Some(endpoint) = hub.wecom.get(account) else {
        return;
    };
    let key = format!("{account}:{}", bell.open_kf_id);
    let slot = Arc::clone(&endpoint.cursors.entry(bell.open_kf_id.clone()).or_default());
    let mut cursor = slot.lock().await;
    if cursor.is_none() {
        match load_cursor(&hub.store, &key).await {
            Ok(loaded) => *cursor = Some(loaded),
            Err(error) => {
                tracing::error!(%error, "wecom cursor not readable; pull postponed to the next doorbell");
                return;
            }
        }
    }
    let mut request = SyncMsgRequest::after_doorbell(cursor.clone().flatten(), &bell.token, &bell.open_kf_id);
    loop {
        let page = match endpoint.sync(&request).await {
            Ok(page) => page,
            Err(failure) => {
                tracing::warn!(error = %failure.error, "wecom sync_msg failed; the next doorbell pulls again");
                return;
            }
        };
        for message in &page.msg_list {
            let Some(inbound) = normalize::to_inbound(message, unix_ms(), &endpoint.window) else {
                continue;
            };
            if let Err(error) = hub.ingest(account, endpoint.queue.clone(), inbound).await {
                tracing::error!(%error, "wecom message not stored; the cursor stays for the next pull");
                return;
            }
        }
        if !page.next_cursor.is_empty() {
            if let Err(error) = save_cursor(&hub.store, &key, &page.next_cursor).await {
                tracing::error!(%error, "wecom cursor not saved; the page will be pulled again");
                return;
            }
            *cursor = Some(Some(page.next_cursor.clone()));
        }
        match request.next(&page) {
            Some(next) => request = next,
            None => return,
        }
    }
}

impl WecomEndpoint {
    async fn sync(&self, request: &SyncMsgRequest) -> Result<wire::SyncMsgResponse, SendFailure> {
        let token = self.tokens.get().await?;
        match self.sync_with(&token, request).await {
            // A refused token is refreshed once and the pull retried once.
            Err(failure) if failure.reason.refresh_token_and_retry() => {
                let token = self.tokens.refused(token).await?;
                self.sync_with(&token, request).await
            }
            other => other,
        }
    }

    async fn sync_with(
        &self,
        token: &str,
        request: &SyncMsgRequest,
    ) -> Result<wire::SyncMsgResponse, SendFailure> {
        let url = format!(
            "{}?{}",
            self.sync_url,
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("access_token", token)
                .finish()
        );
        let response = self
            .client
            .post(url)
            .json(&request.to_json())
            .send()
            .await
            .map_err(|e| transport_failure(&e))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| transport_failure(&e))?;
        wire::parse_sync_response(status, &bytes)
    }
}

/// Sends agents' replies through `kf/send_msg`.
#[derive(Debug)]
pub struct WecomConnector {
    id: String,
    client: reqwest::Client,
    send_url: String,
    tokens: TokenManager,
    min_interval: Duration,
    /// Agents' uploads, as this application's temporary material (WeCom's `media/upload`).
    uploader: MediaUploader,
}

impl WecomConnector {
    async fn post(&self, token: &str, body: &serde_json::Value) -> Result<String, SendFailure> {
        let (status, bytes) = post_json_with_token(&self.client, &self.send_url, token, body).await?;
        wire::parse_send_response(status, &bytes)
    }
}

#[async_trait]
impl Connector for WecomConnector {
    fn channel(&self) -> Channel {
        Channel::WechatKf
    }

    fn account(&self) -> &str {
        &self.id
    }

    fn min_interval(&self) -> Duration {
        self.min_interval
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, SendFailure> {
        // `msgid` is echoed and deduplicated by WeCom: our message id without its prefix (32 hex characters).
        let msgid = message.message_id.as_str().trim_start_matches("m_");
        let msgid = Some(msgid).filter(|m| m.len() <= 32);
        let (to, kf) = (&message.to.value, &message.channel_account);
        let body = match &message.content {
            Content::Text { text } => wire::send_text(to, kf, msgid, text),
            Content::Media {
                kind, provider_ref, ..
            } if kind == "image" => {
                let media_id = self.uploader.media_id(&self.tokens, provider_ref).await?;
                wire::send_image(to, kf, msgid, &media_id)
            }
            other => {
                return Err(SendFailure {
                    error: ConnectorError::Rejected {
                        code: "unsupported_content".to_owned(),
                        message: format!("cannot send {other:?} through kf/send_msg"),
                    },
                    reason: FailureReason::ContentRejected,
                })
            }
        }
        .map_err(|e| SendFailure {
            error: ConnectorError::Rejected {
                code: "invalid_message".to_owned(),
                message: e.to_string(),
            },
            reason: FailureReason::ContentRejected,
        })?;
        let mut token = self.tokens.get().await?;
        let msgid = match self.post(&token, &body).await {
            Err(failure) if failure.reason.refresh_token_and_retry() => {
                token = self.tokens.refused(token).await?;
                self.post(&token, &body).await?
            }
            other => other?,
        };
        Ok(Receipt {
            provider_message_id: Some(msgid).filter(|m| !m.is_empty()),
        })
    }
}
