//! Channel connectors' IO: the providers' webhooks mounted on the public listener, the outbound outbox and the
//! provider clients. The protocols themselves (signatures, crypto, wire types, normalization) are
//! `omnigate-connectors`; this module only moves bytes and state.
//!
//! Inbound: verify → normalize → resolve the customer → the bus stores the message and its raw payload
//! (idempotent on the provider's dedupe key) → only then answer 2xx. A store failure answers 503 so the
//! provider retries: nothing acknowledged is lost, and a retry makes no second message.
//!
//! Layout:
//! - `connector.rs`: the [`Connector`] trait every sender implements
//! - `http_client.rs`: the shared rustls HTTP client
//! - `address.rs`: where to answer each conversation (account, identity, reply window)
//! - `route.rs`: the channel an agent picks for a reply (`via`), resolved from the customer's identities
//! - `outbox.rs`: retries with backoff and jitter, per-account pace, dead letters, jobs kept across restarts
//! - `media.rs`: agents' image uploads (`POST /agent/v1/media`) in a bounded store, sent by the connectors
//! - `token.rs`: the WeChat access_token owner
//! - `wechat.rs`: WeChat Official Account routes and sender
//! - `wecom.rs`: WeChat Customer Service (WeCom kf): doorbell, `sync_msg` pull from a durable cursor, `send_msg`
//! - `twilio.rs`: Twilio SMS webhook, status callbacks and sender
//! - `sms_cn.rs`: Aliyun and Tencent SMS uplinks behind a secret path token and a peer allowlist
//! - `cti.rs`: the signed CTI webhook (calls as voice conversations, kept before the 2xx) and the connect-agent
//!   instruction

pub mod address;
pub mod connector;
pub mod cti;
pub mod http_client;
pub mod media;
pub mod outbox;
pub mod route;
pub mod sms_cn;
pub mod token;
pub mod twilio;
pub mod wechat;
pub mod wecom;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::header::CONTENT_TYPE;
use http::StatusCode;
use omnigate_config::Channels as ChannelsConfig;
use omnigate_connectors::model::{Channel, InboundMessage};
use omnigate_connectors::InboundError;

use crate::bus::{Bus, BusError, ChannelInbound, SendAck};
use crate::clock::unix_ms;
use crate::shutdown::Shutdown;
use crate::store::ContextStore;
use crate::telemetry::metrics;

pub use address::{Address, AddressBook};
pub use connector::{Connector, Receipt};
pub use outbox::{outbox, Outbox, OutboxHandle, OutboxParts, SentRecord};
pub use route::{PickError, RoutePicker, ViaRequest};

/// Why a webhook was not accepted. Becomes the response; logged once here, inside the request's span (which
/// carries the request id).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No connector is configured under this path.
    #[error("unknown channel account")]
    UnknownAccount,
    /// The provider request failed verification or parsing; nothing of it was processed.
    #[error("{channel}: {error}")]
    Refused {
        /// Which channel refused it.
        channel: &'static str,
        /// Why.
        error: InboundError,
    },
    /// The caller is not allowed (wrong path token, peer outside the allowlist); nothing was processed.
    #[error("{channel}: {reason}")]
    Forbidden {
        /// Which channel refused it.
        channel: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The message could not be stored in time: the provider should retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl WebhookError {
    fn refused(channel: Channel, error: InboundError) -> WebhookError {
        WebhookError::Refused {
            channel: channel.as_str(),
            error,
        }
    }

    fn forbidden(channel: Channel, reason: &'static str) -> WebhookError {
        WebhookError::Forbidden {
            channel: channel.as_str(),
            reason,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            WebhookError::Forbidden { .. } => StatusCode::FORBIDDEN,
            WebhookError::UnknownAccount => StatusCode::NOT_FOUND,
            WebhookError::Refused { error, .. } => {
                StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            WebhookError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            WebhookError::Refused { channel, error } => {
                metrics::channel_inbound(channel, "refused");
                tracing::warn!(channel, status = status.as_u16(), %error, "channel webhook refused");
            }
            WebhookError::Unavailable(error) => {
                tracing::error!(status = status.as_u16(), %error, "channel message not stored; provider will retry");
            }
            WebhookError::Forbidden { channel, reason } => {
                metrics::channel_inbound(channel, "refused");
                tracing::warn!(channel, reason, "channel webhook refused");
            }
            WebhookError::UnknownAccount => {}
        }
        let body = match &self {
            // Never echo a refused request's details back to an unauthenticated caller.
            WebhookError::Refused { .. } | WebhookError::Forbidden { .. } => {
                status.canonical_reason().unwrap_or("refused").to_owned()
            }
            other => other.to_string(),
        };
        (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    }
}

impl From<BusError> for WebhookError {
    fn from(error: BusError) -> WebhookError {
        WebhookError::Unavailable(error.to_string())
    }
}

/// What the channel routes share.
#[derive(Debug)]
pub struct ChannelHub {
    bus: Bus,
    store: Arc<dyn ContextStore>,
    addresses: Arc<AddressBook>,
    ingest_deadline: Duration,
    wechat: HashMap<String, wechat::WechatEndpoint>,
    twilio: HashMap<String, twilio::TwilioEndpoint>,
    /// Provider ids of sent messages, for status callbacks.
    sent: Arc<dashmap::DashMap<String, SentRecord>>,
    /// The furthest Twilio status seen per message (callbacks arrive out of order).
    twilio_status: dashmap::DashMap<String, omnigate_connectors::twilio::wire::MessageStatus>,
    cti: Option<cti::CtiEndpoint>,
    sms_uplinks: HashMap<String, sms_cn::UplinkEndpoint>,
    wecom: HashMap<String, wecom::WecomEndpoint>,
    wechat_senders: HashMap<String, Arc<wechat::WechatConnector>>,
    tokens: crate::auth::TokenAuthority,
    shutdown: Shutdown,
    /// Agents' image uploads, sent by the connectors.
    media: Arc<media::MediaStore>,
    /// `channels.media_max_bytes`.
    media_max_bytes: usize,
    /// Resolves the channel an agent picks for a reply.
    picker: RoutePicker,
}

impl ChannelHub {
    /// The route of an agent's reply to `customer` through the channel the agent picked.
    ///
    /// # Errors
    /// [`PickError`] when that channel cannot reach the customer.
    pub async fn pick_route(
        &self,
        customer: &omnigate_connectors::model::CustomerId,
        via: &ViaRequest,
    ) -> Result<crate::bus::Route, PickError> {
        self.picker.pick(customer, via).await
    }

    /// Stores one verified inbound message, within the ingest deadline, and learns where to answer.
    async fn ingest(
        &self,
        account: &str,
        queue: Option<String>,
        message: InboundMessage,
    ) -> Result<SendAck, WebhookError> {
        self.ingest_with(account, queue, message, BTreeMap::new(), true)
            .await
    }

    /// [`Self::ingest`] with routing attributes, and `route: false` to store without routing yet.
    async fn ingest_with(
        &self,
        account: &str,
        queue: Option<String>,
        message: InboundMessage,
        attributes: BTreeMap<String, String>,
        route: bool,
    ) -> Result<SendAck, WebhookError> {
        let channel = message.channel;
        let work = async {
            // Identities the provider proved together are linked (a UnionID first, so the customer that
            // holds it across the bank's accounts survives a merge); anything else only resolves.
            let resolved = if message.from.verified && !message.proven_with.is_empty() {
                let mut together = message.proven_with.clone();
                together.push(message.from.clone());
                self.store.resolve_verified(&together).await
            } else {
                self.store.resolve_customer(&message.from).await
            };
            let customer = resolved.map_err(|e| WebhookError::Unavailable(e.to_string()))?;
            let address = Address {
                channel,
                account: account.to_owned(),
                channel_account: message.channel_account.clone(),
                to: message.from.clone(),
                capability: message.reply_capability.clone(),
            };
            let ack = self
                .bus
                .channel_inbound(ChannelInbound {
                    customer,
                    account: account.to_owned(),
                    queue,
                    message,
                    attributes,
                    route,
                })
                .await?;
            self.addresses.learn(&ack.conversation, address, unix_ms());
            Ok::<_, WebhookError>(ack)
        };
        let ack = tokio::time::timeout(self.ingest_deadline, work)
            .await
            .map_err(|_| WebhookError::Unavailable("ingest deadline passed".to_owned()))??;
        metrics::channel_inbound(
            channel.as_str(),
            if ack.duplicate { "duplicate" } else { "stored" },
        );
        Ok(ack)
    }
}

/// The configured channels, built and started.
#[derive(Debug)]
pub struct Channels {
    /// The routes' shared state.
    pub hub: Arc<ChannelHub>,
}

/// Everything [`build`] needs.
#[derive(Debug)]
pub struct ChannelParts<'a> {
    /// Channel configuration.
    pub config: &'a ChannelsConfig,
    /// The session bus (already started with the outbox handle).
    pub bus: Bus,
    /// The context store.
    pub store: Arc<dyn ContextStore>,
    /// The outbox receiver to start.
    pub outbox: Outbox,
    /// The shutdown tree.
    pub shutdown: &'a Shutdown,
    /// The external base URL providers call (signed webhook URLs are rebuilt from it).
    pub public_base_url: String,
    /// Verifies agents' tokens on the media download.
    pub tokens: crate::auth::TokenAuthority,
}

/// Builds every configured connector and starts the outbox and the token owners.
///
/// # Errors
/// A configuration the connectors refuse (a malformed key) or a TLS backend that cannot start.
pub fn build(mut parts: ChannelParts<'_>) -> anyhow::Result<Channels> {
    let config = parts.config;
    let assignments = parts.outbox.take_assignments();
    let cti_endpoint = config.cti.as_ref().map(cti::endpoint).transpose()?;
    let client = http_client::build(Duration::from_millis(config.outbox.request_timeout_ms))?;
    let addresses = Arc::new(AddressBook::default());
    let mut connectors: Vec<Arc<dyn Connector>> = Vec::new();
    let mut wechat_endpoints = HashMap::new();
    let mut wechat_senders = HashMap::new();
    let media = Arc::new(media::MediaStore::default());
    for account in &config.wechat {
        let endpoint = wechat::endpoint(account)
            .map_err(|e| anyhow::anyhow!("channels.wechat {:?}: {e}", account.id))?;
        wechat_endpoints.insert(account.id.clone(), endpoint);
        let sender = Arc::new(wechat::WechatConnector::start(
            account,
            client.clone(),
            Arc::clone(&media),
            parts.shutdown,
        ));
        wechat_senders.insert(account.id.clone(), Arc::clone(&sender));
        connectors.push(sender);
    }
    let mut wecom_endpoints = HashMap::new();
    for account in &config.wecom {
        let (endpoint, connector) =
            wecom::start(account, client.clone(), Arc::clone(&media), parts.shutdown)?;
        wecom_endpoints.insert(account.id.clone(), endpoint);
        connectors.push(Arc::new(connector));
    }
    let mut twilio_endpoints = HashMap::new();
    for account in &config.twilio {
        twilio_endpoints.insert(
            account.id.clone(),
            twilio::endpoint(account, &parts.public_base_url),
        );
        connectors.push(Arc::new(twilio::TwilioConnector::new(
            account,
            client.clone(),
            &parts.public_base_url,
        )));
    }
    let sent = Arc::new(dashmap::DashMap::new());
    let picker = RoutePicker::new(
        Arc::clone(&parts.store),
        Arc::clone(&addresses),
        connectors.iter().map(|c| (c.channel(), c.account().to_owned())),
    );
    parts.outbox.start(
        OutboxParts {
            bus: parts.bus.clone(),
            store: Arc::clone(&parts.store),
            addresses: Arc::clone(&addresses),
            connectors,
            sent: Arc::clone(&sent),
            config: config.outbox.clone(),
        },
        parts.shutdown,
    );
    let hub = Arc::new(ChannelHub {
        bus: parts.bus,
        store: parts.store,
        addresses,
        ingest_deadline: Duration::from_millis(config.ingest_deadline_ms),
        wechat: wechat_endpoints,
        twilio: twilio_endpoints,
        sent,
        twilio_status: dashmap::DashMap::new(),
        cti: cti_endpoint,
        sms_uplinks: config
            .sms_uplinks
            .iter()
            .map(|u| (u.id.clone(), sms_cn::endpoint(u)))
            .collect(),
        wecom: wecom_endpoints,
        wechat_senders,
        tokens: parts.tokens,
        shutdown: parts.shutdown.clone(),
        media,
        media_max_bytes: config.media_max_bytes,
        picker,
    });
    if let (Some(_), Some(assignments)) = (&hub.cti, assignments) {
        cti::start(&hub, assignments, client, config.outbox.clone(), parts.shutdown);
    }
    Ok(Channels { hub })
}

/// `POST /agent/v1/media`, agents' image uploads, under its own body limit (`channels.media_max_bytes`) rather
/// than the public listener's: merge it after the listener's body limit layer.
pub fn media_routes(hub: Arc<ChannelHub>) -> Router {
    let limit = hub.media_max_bytes.saturating_add(1);
    Router::new()
        .route("/agent/v1/media", post(media::upload))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limit))
        .with_state(hub)
}

/// The channel webhook routes, to merge into the public app.
pub fn routes(hub: Arc<ChannelHub>) -> Router {
    Router::new()
        .route(
            "/channels/wechat/{account}",
            get(wechat::verify_url).post(wechat::push),
        )
        .route("/channels/wechat/{account}/media/{media_id}", get(wechat::media))
        .route("/channels/twilio/{account}/sms", post(twilio::inbound_sms))
        .route("/channels/twilio/{account}/status", post(twilio::status))
        .route("/channels/cti/v1/events", post(cti::events))
        .route(
            "/channels/wecom/{account}",
            get(wecom::verify_url).post(wecom::doorbell),
        )
        .route("/channels/sms/{provider}/{account}/{token}", post(sms_cn::uplink))
        .with_state(hub)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use async_trait::async_trait;
    use axum::body::Body;
    use omnigate_connectors::model::{ConversationId, CustomerId, Identity};
    use omnigate_connectors::wechat::signature;
    use omnigate_router::Router as RoutingEngine;
    use tower::ServiceExt;

    use super::*;
    use crate::bus::BusSettings;
    use crate::store::{
        Appended, AuditEntry, ConversationHistory, ConversationRecord, CustomerProfile, ErasureReport,
        EventPage, GraphChange, Held, Inbox, LinkRecord, MemoryStore, NewEvent, StoreError, View,
    };

    /// Resolves customers, then refuses every write: the store went down mid-request.
    #[derive(Debug, Default)]
    struct WritesFail(MemoryStore);

    #[async_trait]
    impl ContextStore for WritesFail {
        async fn append(&self, _: &ConversationId, _: NewEvent) -> Result<Appended, StoreError> {
            Err(StoreError::Unavailable("connection refused".to_owned()))
        }
        async fn events_after(
            &self,
            c: &ConversationId,
            v: View,
            a: u64,
            l: usize,
        ) -> Result<EventPage, StoreError> {
            self.0.events_after(c, v, a, l).await
        }
        async fn customer_position(&self, c: &ConversationId, s: u64) -> Result<u64, StoreError> {
            self.0.customer_position(c, s).await
        }
        async fn agent_position(&self, c: &ConversationId, s: u64) -> Result<Option<u64>, StoreError> {
            self.0.agent_position(c, s).await
        }
        async fn save_conversation(&self, _: &ConversationRecord) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("connection refused".to_owned()))
        }
        async fn load_conversation(
            &self,
            id: &ConversationId,
        ) -> Result<Option<ConversationRecord>, StoreError> {
            self.0.load_conversation(id).await
        }
        async fn resolve_customer(&self, identity: &Identity) -> Result<CustomerId, StoreError> {
            self.0.resolve_customer(identity).await
        }
        async fn register_device(&self, _: &CustomerId, _: &crate::store::Device) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("connection refused".to_owned()))
        }
        async fn unregister_device(
            &self,
            _: &CustomerId,
            _: crate::store::PushPlatform,
            _: &str,
        ) -> Result<bool, StoreError> {
            Err(StoreError::Unavailable("connection refused".to_owned()))
        }
        async fn devices(&self, c: &CustomerId) -> Result<Vec<crate::store::Device>, StoreError> {
            self.0.devices(c).await
        }
        async fn save_profile(&self, _: &CustomerId, _: &CustomerProfile) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("connection refused".to_owned()))
        }
        async fn load_profile(&self, c: &CustomerId) -> Result<Option<CustomerProfile>, StoreError> {
            self.0.load_profile(c).await
        }
        async fn delete_profile(&self, _: &CustomerId) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("connection refused".to_owned()))
        }

        async fn resolve_verified(&self, identities: &[Identity]) -> Result<CustomerId, StoreError> {
            self.0.resolve_verified(identities).await
        }
        async fn canonical_customer(&self, c: &CustomerId) -> Result<CustomerId, StoreError> {
            self.0.canonical_customer(c).await
        }
        async fn link_identity(
            &self,
            c: &CustomerId,
            i: &Identity,
            g: &GraphChange,
        ) -> Result<CustomerId, StoreError> {
            self.0.link_identity(c, i, g).await
        }
        async fn unlink_identity(
            &self,
            i: &Identity,
            g: &GraphChange,
        ) -> Result<Option<CustomerId>, StoreError> {
            self.0.unlink_identity(i, g).await
        }
        async fn identities_of(&self, c: &CustomerId) -> Result<Vec<Identity>, StoreError> {
            self.0.identities_of(c).await
        }
        async fn link_history(&self, c: &CustomerId) -> Result<Vec<LinkRecord>, StoreError> {
            self.0.link_history(c).await
        }
        async fn customer_conversations(
            &self,
            c: &CustomerId,
        ) -> Result<Vec<ConversationRecord>, StoreError> {
            self.0.customer_conversations(c).await
        }
        async fn customer_history(
            &self,
            c: &CustomerId,
            n: usize,
            m: usize,
        ) -> Result<Vec<ConversationHistory>, StoreError> {
            self.0.customer_history(c, n, m).await
        }
        async fn erase_customer(&self, c: &CustomerId) -> Result<ErasureReport, StoreError> {
            self.0.erase_customer(c).await
        }
        async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
            self.0.append_audit(e).await
        }
        async fn audit_entries(&self, l: usize) -> Result<Vec<AuditEntry>, StoreError> {
            self.0.audit_entries(l).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
        async fn hold(&self, _: Inbox, _: &str, _: &str) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("connection refused".to_owned()))
        }
        async fn release(&self, _: Inbox, _: &str) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("connection refused".to_owned()))
        }
        async fn held(&self, inbox: Inbox) -> Result<Vec<Held>, StoreError> {
            self.0.held(inbox).await
        }
    }

    /// Keeps held records and resolves customers, but refuses conversation writes until healed: the store
    /// failed between keeping a CTI event and storing it in its conversation.
    #[derive(Debug, Default)]
    struct LogsDown {
        inner: MemoryStore,
        healed: std::sync::atomic::AtomicBool,
    }

    impl LogsDown {
        fn check(&self) -> Result<(), StoreError> {
            if self.healed.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                Err(StoreError::Unavailable("connection refused".to_owned()))
            }
        }
    }

    #[async_trait]
    impl ContextStore for LogsDown {
        async fn append(&self, c: &ConversationId, e: NewEvent) -> Result<Appended, StoreError> {
            self.check()?;
            self.inner.append(c, e).await
        }
        async fn events_after(
            &self,
            c: &ConversationId,
            v: View,
            a: u64,
            l: usize,
        ) -> Result<EventPage, StoreError> {
            self.inner.events_after(c, v, a, l).await
        }
        async fn customer_position(&self, c: &ConversationId, s: u64) -> Result<u64, StoreError> {
            self.inner.customer_position(c, s).await
        }
        async fn agent_position(&self, c: &ConversationId, s: u64) -> Result<Option<u64>, StoreError> {
            self.inner.agent_position(c, s).await
        }
        async fn save_conversation(&self, r: &ConversationRecord) -> Result<(), StoreError> {
            self.check()?;
            self.inner.save_conversation(r).await
        }
        async fn load_conversation(
            &self,
            id: &ConversationId,
        ) -> Result<Option<ConversationRecord>, StoreError> {
            self.inner.load_conversation(id).await
        }
        async fn resolve_customer(&self, identity: &Identity) -> Result<CustomerId, StoreError> {
            self.inner.resolve_customer(identity).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
        async fn register_device(&self, c: &CustomerId, d: &crate::store::Device) -> Result<(), StoreError> {
            self.inner.register_device(c, d).await
        }
        async fn unregister_device(
            &self,
            c: &CustomerId,
            p: crate::store::PushPlatform,
            t: &str,
        ) -> Result<bool, StoreError> {
            self.inner.unregister_device(c, p, t).await
        }
        async fn devices(&self, c: &CustomerId) -> Result<Vec<crate::store::Device>, StoreError> {
            self.inner.devices(c).await
        }
        async fn save_profile(&self, c: &CustomerId, p: &CustomerProfile) -> Result<(), StoreError> {
            self.inner.save_profile(c, p).await
        }
        async fn load_profile(&self, c: &CustomerId) -> Result<Option<CustomerProfile>, StoreError> {
            self.inner.load_profile(c).await
        }
        async fn delete_profile(&self, c: &CustomerId) -> Result<(), StoreError> {
            self.inner.delete_profile(c).await
        }
        async fn resolve_verified(&self, identities: &[Identity]) -> Result<CustomerId, StoreError> {
            self.inner.resolve_verified(identities).await
        }
        async fn canonical_customer(&self, c: &CustomerId) -> Result<CustomerId, StoreError> {
            self.inner.canonical_customer(c).await
        }
        async fn link_identity(
            &self,
            c: &CustomerId,
            i: &Identity,
            g: &GraphChange,
        ) -> Result<CustomerId, StoreError> {
            self.inner.link_identity(c, i, g).await
        }
        async fn unlink_identity(
            &self,
            i: &Identity,
            g: &GraphChange,
        ) -> Result<Option<CustomerId>, StoreError> {
            self.inner.unlink_identity(i, g).await
        }
        async fn identities_of(&self, c: &CustomerId) -> Result<Vec<Identity>, StoreError> {
            self.inner.identities_of(c).await
        }
        async fn link_history(&self, c: &CustomerId) -> Result<Vec<LinkRecord>, StoreError> {
            self.inner.link_history(c).await
        }
        async fn customer_conversations(
            &self,
            c: &CustomerId,
        ) -> Result<Vec<ConversationRecord>, StoreError> {
            self.inner.customer_conversations(c).await
        }
        async fn customer_history(
            &self,
            c: &CustomerId,
            n: usize,
            m: usize,
        ) -> Result<Vec<ConversationHistory>, StoreError> {
            self.inner.customer_history(c, n, m).await
        }
        async fn erase_customer(&self, c: &CustomerId) -> Result<ErasureReport, StoreError> {
            self.inner.erase_customer(c).await
        }
        async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
            self.inner.append_audit(e).await
        }
        async fn audit_entries(&self, l: usize) -> Result<Vec<AuditEntry>, StoreError> {
            self.inner.audit_entries(l).await
        }
        async fn hold(&self, inbox: Inbox, key: &str, value: &str) -> Result<(), StoreError> {
            self.inner.hold(inbox, key, value).await
        }
        async fn release(&self, inbox: Inbox, key: &str) -> Result<(), StoreError> {
            self.inner.release(inbox, key).await
        }
        async fn held(&self, inbox: Inbox) -> Result<Vec<Held>, StoreError> {
            self.inner.held(inbox).await
        }
    }

    /// The demo channels with `change` applied, built on `store` (no agents, no outbound).
    fn build_on(
        store: Arc<dyn ContextStore>,
        shutdown: &Shutdown,
        change: impl FnOnce(&mut ChannelsConfig),
    ) -> Channels {
        let config =
            omnigate_config::load_from_str(Some(omnigate_config::DEFAULT_CONFIG_TOML), &BTreeMap::new())
                .unwrap();
        let settings = BusSettings {
            reopen_window_ms: 1_000,
            default_queue: config.routing.default_queue.clone(),
            agents: Vec::new(),
            outbound: None,
            push: None,
            position_message_thresholds: Vec::new(),
            position_message: String::new(),
            profiles: Arc::default(),
            evict_after_ms: 1_000,
            linked_preferred_agent_ms: 0,
        };
        let bus = Bus::start(
            settings,
            RoutingEngine::new(&config.routing).unwrap(),
            Arc::clone(&store),
            shutdown,
        );
        let (_, outbox) = outbox(Arc::clone(&store));
        let mut channels = config.channels.clone();
        change(&mut channels);
        build(ChannelParts {
            config: &channels,
            bus,
            store,
            outbox,
            shutdown,
            public_base_url: "http://127.0.0.1".to_owned(),
            tokens: crate::auth::TokenAuthority::new(&omnigate_config::SecretString::from("k".repeat(32))),
        })
        .unwrap()
    }

    fn cti_request(id: &str, kind: &str, seq: u64, fields: &str) -> http::Request<Body> {
        use omnigate_connectors::cti::signature::{sign_headers, WebhookSecret};
        let mut body: serde_json::Value = serde_json::from_str(fields).unwrap();
        let envelope = serde_json::json!({
            "specversion": "cti-webhook/1", "id": id, "type": kind, "tenant": "acme", "source": "unit",
            "call_id": "call_1", "seq": seq, "occurred_at": "2026-11-23T10:00:00.000Z",
        });
        if let (Some(object), serde_json::Value::Object(env)) = (body.as_object_mut(), envelope) {
            object.extend(env);
        }
        let body = body.to_string();
        let secret = WebhookSecret::parse(CTI_TEST_SECRET).unwrap();
        let now = (crate::clock::unix_ms() / 1000) as i64;
        let mut request =
            http::Request::post("/channels/cti/v1/events").header("content-type", "application/json");
        for (name, value) in sign_headers(&[secret], id, now, body.as_bytes()) {
            request = request.header(name, value);
        }
        request.body(Body::from(body)).unwrap()
    }

    const CTI_TEST_SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[tokio::test]
    async fn a_cti_event_kept_before_its_conversation_write_failed_is_stored_in_order_once_the_store_heals() {
        let shutdown = Shutdown::new();
        let store = Arc::new(LogsDown::default());
        let built = build_on(
            Arc::clone(&store) as Arc<dyn ContextStore>,
            &shutdown,
            |channels| {
                channels.cti = Some(omnigate_config::Cti {
                    secret: omnigate_config::SecretString::from(CTI_TEST_SECRET.to_owned()),
                    previous_secret: None,
                    tenant: "acme".to_owned(),
                    connect_url: "http://127.0.0.1:9/connect".to_owned(),
                    queue: String::new(),
                    reorder_gap_ms: 3_000,
                    max_body_bytes: 65_536,
                });
            },
        );
        let app = routes(Arc::clone(&built.hub));
        let offered = r#"{"direction":"inbound","from":"+8613800138000","to":"+864000000000"}"#;
        let ivr = r#"{"menu":"main","digits":"2"}"#;
        for (id, kind, seq, fields) in [
            ("evt_1", "call.offered", 1, offered),
            ("evt_2", "call.ivr_input", 2, ivr),
        ] {
            let response = app
                .clone()
                .oneshot(cti_request(id, kind, seq, fields))
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::NO_CONTENT,
                "{id}: kept, so accepted"
            );
        }
        assert_eq!(store.held(Inbox::Cti).await.unwrap().len(), 2);
        store.healed.store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !store.held(Inbox::Cti).await.unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the kept events were never stored"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let caller = Identity {
            kind: omnigate_connectors::model::IdentityKind::Phone,
            value: "+8613800138000".to_owned(),
            verified: false,
        };
        let customer = store.resolve_customer(&caller).await.unwrap();
        let conversations = built
            .hub
            .bus
            .conversations(crate::bus::Participant::Customer(customer))
            .await
            .unwrap();
        assert_eq!(conversations.len(), 1);
        let page = store
            .events_after(&conversations[0].id, View::Agent, 0, 100)
            .await
            .unwrap();
        let names: Vec<String> = page
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                crate::store::EventKind::Message { content, .. } => serde_json::to_value(content).unwrap()
                    ["name"]
                    .as_str()
                    .map(str::to_owned),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["call.offered", "call.ivr_input"]);
        shutdown.root().cancel();
    }

    #[tokio::test]
    async fn a_push_the_store_cannot_take_is_answered_503_so_wechat_retries() {
        let config =
            omnigate_config::load_from_str(Some(omnigate_config::DEFAULT_CONFIG_TOML), &BTreeMap::new())
                .unwrap();
        let shutdown = Shutdown::new();
        let store: Arc<dyn ContextStore> = Arc::new(WritesFail::default());
        let settings = BusSettings {
            reopen_window_ms: 1_000,
            default_queue: config.routing.default_queue.clone(),
            agents: Vec::new(),
            outbound: None,
            push: None,
            position_message_thresholds: Vec::new(),
            position_message: String::new(),
            profiles: Arc::default(),
            evict_after_ms: 1_000,
            linked_preferred_agent_ms: 0,
        };
        let bus = Bus::start(
            settings,
            RoutingEngine::new(&config.routing).unwrap(),
            Arc::clone(&store),
            &shutdown,
        );
        let (_, outbox) = outbox(Arc::clone(&store));
        let mut channels = config.channels.clone();
        channels.wechat.push(omnigate_config::WechatAccount {
            id: "main".to_owned(),
            appid: "wx1".to_owned(),
            app_secret: omnigate_config::SecretString::from("s".to_owned()),
            token: omnigate_config::SecretString::from("gatewaytoken".to_owned()),
            encoding_aes_keys: Vec::new(),
            original_id: String::new(),
            queue: String::new(),
            api_base_url: "http://127.0.0.1:9".to_owned(),
            message_quota: 5,
            message_window_secs: 60,
            max_body_bytes: 65_536,
            rate_per_second: 1,
        });
        let built = build(ChannelParts {
            config: &channels,
            bus,
            store,
            outbox,
            shutdown: &shutdown,
            public_base_url: "http://127.0.0.1".to_owned(),
            tokens: crate::auth::TokenAuthority::new(&omnigate_config::SecretString::from("k".repeat(32))),
        })
        .unwrap();
        let sig = signature::signature("gatewaytoken", "1700000000", "n");
        let body = "<xml><ToUserName>gh_1</ToUserName><FromUserName>oUser</FromUserName><CreateTime>1700000000</CreateTime>\
                    <MsgType>text</MsgType><Content>hi</Content><MsgId>1</MsgId></xml>";
        let request = http::Request::post(format!(
            "/channels/wechat/main?signature={sig}&timestamp=1700000000&nonce=n"
        ))
        .body(Body::from(body))
        .unwrap();
        let response = routes(built.hub).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        shutdown.root().cancel();
    }
}
