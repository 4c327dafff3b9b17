//! Agents' image uploads for channel replies: `POST /agent/v1/media` (agent token, an image body with its
//! content type) answers an upload id, which a `message.send` names as `content: {type: "media", kind: "image",
//! provider_ref: <upload id>}`; the channel's connector then uploads the bytes to the provider (WeChat's
//! temporary material) when it sends.
//!
//! The uploads live in a bounded store in this process's memory: at most [`MAX_UPLOADS`] images and
//! [`MAX_TOTAL_BYTES`] bytes, the oldest dropped first, each kept [`UPLOAD_TTL_MS`] (WeChat keeps the uploaded copy
//! 3 days). A reply whose upload is gone (dropped, or the gateway restarted) is dead-lettered as
//! `content_rejected`, telling the agent to upload it again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use tokio::sync::Mutex;

use omnigate_connectors::wechat::api;
use omnigate_connectors::{ConnectorError, FailureReason, SendFailure};

use super::http_client::post_media_with_token;
use super::token::TokenManager;
use super::ChannelHub;
use crate::clock::unix_ms;
use crate::telemetry::metrics;

/// Uploads kept at most.
pub const MAX_UPLOADS: usize = 256;
/// Bytes kept at most, over all uploads.
pub const MAX_TOTAL_BYTES: usize = 64 * 1024 * 1024;
/// How long an upload can be sent: WeChat's temporary material lives 3 days.
pub const UPLOAD_TTL_MS: u64 = 3 * 24 * 3600 * 1000;
/// The prefix of upload ids (a `provider_ref` without it is the provider's own media id).
pub const UPLOAD_PREFIX: &str = "up_";

/// The image types WeChat's customer-service API sends, with the first bytes each must start with.
const IMAGE_TYPES: [(&str, &[u8], &str); 3] = [
    ("image/jpeg", b"\xff\xd8\xff", "jpg"),
    ("image/png", b"\x89PNG\r\n\x1a\n", "png"),
    ("image/gif", b"GIF8", "gif"),
];

/// An uploaded image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// `image/jpeg`, `image/png` or `image/gif`.
    pub mime: String,
    /// A file name for the provider's multipart upload (`<upload id>.<ext>`).
    pub file_name: String,
    /// The bytes.
    pub bytes: Bytes,
    /// Unix ms of the upload.
    pub uploaded_at_ms: u64,
}

#[derive(Debug, Default)]
struct Uploads {
    by_id: HashMap<String, Upload>,
    order: VecDeque<String>,
    total_bytes: usize,
}

/// The bounded upload store.
#[derive(Debug, Default)]
pub struct MediaStore {
    uploads: Mutex<Uploads>,
}

/// Why an upload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// Not an image type the channels send, or the bytes are not what the type says.
    #[error("unsupported media type: send image/jpeg, image/png or image/gif with matching bytes")]
    UnsupportedType,
    /// An empty body.
    #[error("empty upload")]
    Empty,
}

/// Checks a body against its declared content type; answers the canonical MIME type and a file extension.
///
/// # Errors
/// [`UploadError`] for an empty body, a type the channels do not send, or bytes of another type.
pub fn check_image(content_type: &str, body: &[u8]) -> Result<(&'static str, &'static str), UploadError> {
    if body.is_empty() {
        return Err(UploadError::Empty);
    }
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let essence = if essence == "image/jpg" {
        "image/jpeg".to_owned()
    } else {
        essence
    };
    IMAGE_TYPES
        .iter()
        .find(|(mime, magic, _)| *mime == essence && body.starts_with(magic))
        .map(|(mime, _, ext)| (*mime, *ext))
        .ok_or(UploadError::UnsupportedType)
}

impl MediaStore {
    /// Keeps an image; answers its upload id. Drops expired uploads, then the oldest until it fits.
    pub async fn put(&self, mime: &str, ext: &str, bytes: Bytes, now_ms: u64) -> String {
        let id = format!("{UPLOAD_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let mut uploads = self.uploads.lock().await;
        while let Some(oldest) = uploads.order.front().cloned() {
            let expired = uploads
                .by_id
                .get(&oldest)
                .is_none_or(|u| now_ms.saturating_sub(u.uploaded_at_ms) >= UPLOAD_TTL_MS);
            let full =
                uploads.order.len() >= MAX_UPLOADS || uploads.total_bytes + bytes.len() > MAX_TOTAL_BYTES;
            if !(expired || full) {
                break;
            }
            uploads.order.pop_front();
            if let Some(dropped) = uploads.by_id.remove(&oldest) {
                uploads.total_bytes -= dropped.bytes.len();
            }
        }
        uploads.total_bytes += bytes.len();
        uploads.order.push_back(id.clone());
        uploads.by_id.insert(
            id.clone(),
            Upload {
                mime: mime.to_owned(),
                file_name: format!("{id}.{ext}"),
                bytes,
                uploaded_at_ms: now_ms,
            },
        );
        id
    }

    /// The upload `id`, if it is still kept and not expired.
    pub async fn get(&self, id: &str, now_ms: u64) -> Option<Upload> {
        self.uploads
            .lock()
            .await
            .by_id
            .get(id)
            .filter(|u| now_ms.saturating_sub(u.uploaded_at_ms) < UPLOAD_TTL_MS)
            .cloned()
    }
}

/// How long before the provider's 3-day expiry a cached `media_id` is no longer used.
const MEDIA_ID_MARGIN_MS: u64 = 3600 * 1000;

/// One provider account's side of the uploads: turns an upload id into the account's `media_id`, uploading the
/// bytes as temporary material (`media/upload?type=image`, multipart field `media`; WeChat and WeCom share the
/// shape) the first time and caching the id for the material's 3 days.
#[derive(Debug)]
pub struct MediaUploader {
    client: reqwest::Client,
    upload_url: String,
    channel: &'static str,
    media: Arc<MediaStore>,
    /// Upload id → (this account's `media_id`, unix ms it expires).
    ids: dashmap::DashMap<String, (String, u64)>,
}

impl MediaUploader {
    /// An uploader posting to `upload_url` with `client`; `channel` labels the token-refusal metric.
    pub fn new(
        client: reqwest::Client,
        upload_url: String,
        channel: &'static str,
        media: Arc<MediaStore>,
    ) -> MediaUploader {
        MediaUploader {
            client,
            upload_url,
            channel,
            media,
            ids: dashmap::DashMap::new(),
        }
    }

    /// The `media_id` to send `provider_ref` with. A `provider_ref` that is no upload id is taken as a
    /// `media_id` the provider issued (an inbound image sent back). A refused token (40001/42001) is refreshed
    /// once and the upload retried once.
    ///
    /// # Errors
    /// An upload that is gone ([`FailureReason::ContentRejected`]), or the upload API's classified failure.
    pub async fn media_id(&self, tokens: &TokenManager, provider_ref: &str) -> Result<String, SendFailure> {
        if !provider_ref.starts_with(UPLOAD_PREFIX) {
            return Ok(provider_ref.to_owned());
        }
        let now = unix_ms();
        if let Some(cached) = self.ids.get(provider_ref) {
            if cached.1 > now.saturating_add(MEDIA_ID_MARGIN_MS) {
                return Ok(cached.0.clone());
            }
        }
        let Some(upload) = self.media.get(provider_ref, now).await else {
            return Err(SendFailure {
                error: ConnectorError::Rejected {
                    code: "upload_gone".to_owned(),
                    message: "the uploaded image is no longer kept; upload it again".to_owned(),
                },
                reason: FailureReason::ContentRejected,
            });
        };
        let token = tokens.get().await?;
        let uploaded = match self.upload(&token, &upload).await {
            Err(failure) if failure.reason.refresh_token_and_retry() => {
                metrics::channel_token_refused(self.channel);
                let token = tokens.refused(token).await?;
                self.upload(&token, &upload).await?
            }
            other => other?,
        };
        let created_ms = u64::try_from(uploaded.created_at)
            .ok()
            .filter(|s| *s > 0)
            .map_or(now, |s| s.saturating_mul(1000));
        self.ids.insert(
            provider_ref.to_owned(),
            (
                uploaded.media_id.clone(),
                created_ms.saturating_add(UPLOAD_TTL_MS),
            ),
        );
        Ok(uploaded.media_id)
    }

    async fn upload(&self, token: &str, upload: &Upload) -> Result<api::UploadedMedia, SendFailure> {
        let (status, bytes) = post_media_with_token(
            &self.client,
            &self.upload_url,
            token,
            &api::media_upload_query("image"),
            upload,
        )
        .await?;
        api::parse_upload_response(status, &bytes)
    }
}

/// The agent a request's `Authorization: Bearer <agent token>` names, if valid.
pub(super) fn agent_of(hub: &ChannelHub, headers: &HeaderMap) -> Option<String> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?;
    hub.tokens
        .verify(token, crate::auth::Role::Agent, unix_ms() / 1000, 0)
        .ok()
        .map(|claims| claims.sub)
}

/// `POST /agent/v1/media`: 201 `{upload_id, content_type, size}`; 401 without an agent token, 413 over
/// `channels.media_max_bytes`, 415 for anything but a JPEG, PNG or GIF whose bytes match its content type.
pub(super) async fn upload(State(hub): State<Arc<ChannelHub>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(agent) = agent_of(&hub, &headers) else {
        return (StatusCode::UNAUTHORIZED, "an agent token is required").into_response();
    };
    if body.len() > hub.media_max_bytes {
        tracing::warn!(
            agent,
            size = body.len(),
            limit = hub.media_max_bytes,
            "media upload too large"
        );
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "the image is larger than channels.media_max_bytes",
        )
            .into_response();
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (mime, ext) = match check_image(content_type, &body) {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(agent, content_type, %error, "media upload refused");
            let status = match error {
                UploadError::Empty => StatusCode::BAD_REQUEST,
                UploadError::UnsupportedType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            };
            return (status, error.to_string()).into_response();
        }
    };
    let size = body.len();
    let id = hub.media.put(mime, ext, body, unix_ms()).await;
    tracing::info!(agent, upload_id = id, size, "media uploaded");
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"upload_id": id, "content_type": mime, "size": size})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_checked_by_type_and_first_bytes() {
        assert_eq!(
            check_image("image/jpeg", b"\xff\xd8\xff\xe0x"),
            Ok(("image/jpeg", "jpg"))
        );
        assert_eq!(
            check_image("IMAGE/JPG; q=1", b"\xff\xd8\xff\xe0x"),
            Ok(("image/jpeg", "jpg"))
        );
        assert_eq!(
            check_image("image/png", b"\x89PNG\r\n\x1a\nrest"),
            Ok(("image/png", "png"))
        );
        assert_eq!(
            check_image("image/png", b"\xff\xd8\xff"),
            Err(UploadError::UnsupportedType)
        );
        assert_eq!(
            check_image("text/plain", b"hello"),
            Err(UploadError::UnsupportedType)
        );
        assert_eq!(
            check_image("image/webp", b"RIFF"),
            Err(UploadError::UnsupportedType)
        );
        assert_eq!(check_image("image/jpeg", b""), Err(UploadError::Empty));
    }

    #[tokio::test]
    async fn the_store_is_bounded_and_uploads_expire() {
        let store = MediaStore::default();
        let first = store.put("image/png", "png", Bytes::from_static(b"a"), 0).await;
        assert!(first.starts_with(UPLOAD_PREFIX));
        assert_eq!(
            store.get(&first, 1).await.map(|u| u.file_name),
            Some(format!("{first}.png"))
        );
        assert_eq!(
            store.get(&first, UPLOAD_TTL_MS).await,
            None,
            "expired after 3 days"
        );
        let mut ids = vec![first.clone()];
        for i in 1..=MAX_UPLOADS {
            ids.push(
                store
                    .put("image/png", "png", Bytes::from_static(b"b"), i as u64)
                    .await,
            );
        }
        assert_eq!(store.get(&first, 10).await, None, "the oldest is dropped first");
        assert!(store.get(&ids[1], 10).await.is_some());
        let big = Bytes::from(vec![0u8; MAX_TOTAL_BYTES]);
        let last = store.put("image/png", "png", big, 20).await;
        assert!(store.get(&last, 21).await.is_some());
        assert!(
            store.get(&ids[MAX_UPLOADS], 21).await.is_none(),
            "bytes are bounded too"
        );
    }
}
