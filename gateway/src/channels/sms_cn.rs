//! Chinese SMS uplinks (PROTOCOLS.md §2.5): Aliyun's batched `SmsUp` push and Tencent's reply callback at
//! `/channels/sms/{provider}/{account}/{path_token}`. Neither provider signs its requests, so the secret path
//! token (compared in constant time) and the optional peer allowlist are the only authentication; a wrong
//! token or peer answers 403 before the body is read.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use omnigate_config::{ExposeSecret, SecretString, SmsProvider, SmsUplink};
use omnigate_connectors::model::Channel;
use omnigate_connectors::sms_cn::{normalize, wire};
use omnigate_connectors::InboundError;
use subtle::ConstantTimeEq;

use super::{ChannelHub, WebhookError};
use crate::clock::unix_ms;

/// One configured uplink.
#[derive(Debug)]
pub struct UplinkEndpoint {
    provider: SmsProvider,
    path_token: SecretString,
    allowed_ips: Vec<IpAddr>,
    queue: Option<String>,
    max_body_bytes: usize,
}

/// The endpoint of one configured uplink.
pub fn endpoint(config: &SmsUplink) -> UplinkEndpoint {
    UplinkEndpoint {
        provider: config.provider,
        path_token: config.path_token.clone(),
        allowed_ips: config.allowed_ips.clone(),
        queue: Some(config.queue.clone()).filter(|q| !q.is_empty()),
        max_body_bytes: config.max_body_bytes,
    }
}

fn provider_name(provider: SmsProvider) -> &'static str {
    match provider {
        SmsProvider::Aliyun => "aliyun",
        SmsProvider::Tencent => "tencent",
    }
}

fn channel(provider: SmsProvider) -> Channel {
    match provider {
        SmsProvider::Aliyun => Channel::SmsAliyun,
        SmsProvider::Tencent => Channel::SmsTencent,
    }
}

/// `POST /channels/sms/{provider}/{account}/{token}`.
pub(super) async fn uplink(
    State(hub): State<Arc<ChannelHub>>,
    Path((provider, account, token)): Path<(String, String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Response, WebhookError> {
    let endpoint = hub
        .sms_uplinks
        .get(&account)
        .filter(|e| provider_name(e.provider) == provider)
        .ok_or(WebhookError::UnknownAccount)?;
    let channel = channel(endpoint.provider);
    let expected = endpoint.path_token.expose_secret().as_bytes();
    let token_ok: bool = expected.ct_eq(token.as_bytes()).into();
    if !token_ok {
        return Err(WebhookError::forbidden(channel, "wrong path token"));
    }
    if !endpoint.allowed_ips.is_empty() && !endpoint.allowed_ips.contains(&peer.ip()) {
        return Err(WebhookError::forbidden(channel, "peer address not allowed"));
    }
    let refused = |e: InboundError| WebhookError::refused(channel, e);
    let now = unix_ms();
    let (messages, success) = match endpoint.provider {
        SmsProvider::Aliyun => {
            let items = wire::parse_aliyun(&body, endpoint.max_body_bytes).map_err(refused)?;
            let batch = normalize::aliyun_batch(&account, &items, now);
            for (index, error) in &batch.refused {
                // Answer success anyway: Aliyun would retry the whole batch for an item that can never pass.
                tracing::warn!(index, %error, "aliyun uplink item refused");
            }
            (batch.messages, wire::ALIYUN_SUCCESS_BODY)
        }
        SmsProvider::Tencent => {
            let reply = wire::parse_tencent_reply(&body, endpoint.max_body_bytes).map_err(refused)?;
            let raw = String::from_utf8_lossy(&body);
            let message = normalize::tencent_to_inbound(&account, &reply, &raw, now).map_err(refused)?;
            (vec![message], wire::TENCENT_SUCCESS_BODY)
        }
    };
    for message in messages {
        hub.ingest(&account, endpoint.queue.clone(), message).await?;
    }
    Ok(([(CONTENT_TYPE, "application/json; charset=utf-8")], success).into_response())
}
