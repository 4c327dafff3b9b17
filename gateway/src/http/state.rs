use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use omnigate_config::{Config, ExposeSecret, Limits, SecretString};

use crate::auth::TokenAuthority;
use crate::bus::Bus;
use crate::customers::HistorySettings;
use crate::shutdown::Shutdown;
use crate::store::ContextStore;
use crate::ws::{ConnectionLimits, WindowCounter};

/// Configuration the handlers read, fixed at build.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Input limits.
    pub limits: Limits,
    /// Widget key → its queue (empty: the routing default) and the routing attributes of its conversations.
    pub widgets: HashMap<String, (String, BTreeMap<String, String>)>,
    /// Customer token lifetime.
    pub customer_token_ttl_secs: u64,
    /// How long after expiry a customer token may be refreshed.
    pub customer_refresh_window_secs: u64,
    /// `ws://host:port` or `wss://…` prefix for `ws_url`.
    pub public_ws_base: String,
    /// Request timeout.
    pub request_timeout_ms: u64,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// What the `customer.context` frame carries.
    pub history: HistorySettings,
    /// The admin API's bearer token; `None` disables the admin API.
    pub admin_token: Option<SecretString>,
}

impl Settings {
    /// Extracts what handlers need; `public_base_url` is the resolved external base URL.
    pub fn from_config(config: &Config, public_base_url: &str) -> Settings {
        let public_ws_base = if let Some(rest) = public_base_url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = public_base_url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            public_base_url.to_owned()
        };
        Settings {
            limits: config.limits.clone(),
            widgets: config
                .webchat
                .widgets
                .iter()
                .map(|w| (w.key.clone(), (w.queue.clone(), w.attributes.clone())))
                .collect(),
            customer_token_ttl_secs: config.auth.customer_token_ttl_secs,
            customer_refresh_window_secs: config.auth.customer_refresh_window_secs,
            public_ws_base: public_ws_base.trim_end_matches('/').to_owned(),
            request_timeout_ms: config.server.request_timeout_ms,
            max_body_bytes: config.server.max_body_bytes,
            history: HistorySettings {
                conversations: config.conversations.history_conversations,
                messages: config.conversations.history_messages,
                complaint_dispositions: config.conversations.complaint_dispositions.clone(),
            },
            admin_token: Some(config.auth.admin_token.clone()).filter(|t| !t.expose_secret().is_empty()),
        }
    }

    /// The queue a widget routes to, if it names one.
    pub fn widget_queue(&self, key: &str) -> Option<String> {
        self.widgets
            .get(key)
            .map(|(queue, _)| queue)
            .filter(|q| !q.is_empty())
            .cloned()
    }

    /// The routing attributes a widget gives its conversations.
    pub fn widget_attributes(&self, key: &str) -> BTreeMap<String, String> {
        self.widgets
            .get(key)
            .map(|(_, attributes)| attributes.clone())
            .unwrap_or_default()
    }
}

/// Everything handlers and sockets share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The session bus.
    pub bus: Bus,
    /// The context store (replays and REST reads go straight to it).
    pub store: Arc<dyn ContextStore>,
    /// Token signing.
    pub tokens: TokenAuthority,
    /// Fixed settings.
    pub settings: Arc<Settings>,
    /// Socket caps.
    pub connection_limits: Arc<ConnectionLimits>,
    /// Sessions per widget key per minute.
    pub session_rate: Arc<WindowCounter>,
    /// The shutdown tree.
    pub shutdown: Shutdown,
    /// The channel connectors' webhooks, when any is configured.
    pub channels: Option<Arc<crate::channels::ChannelHub>>,
    /// The mobile apps allowed to open sessions (`[[channels.app]]`).
    pub apps: Arc<crate::app::AppRegistry>,
    connection_ids: Arc<AtomicU64>,
}

impl AppState {
    /// Assembles the state.
    pub fn new(
        bus: Bus,
        store: Arc<dyn ContextStore>,
        tokens: TokenAuthority,
        settings: Settings,
        shutdown: Shutdown,
    ) -> AppState {
        let connection_limits = Arc::new(ConnectionLimits::new(
            settings.limits.max_connections,
            settings.limits.connections_per_ip,
        ));
        AppState {
            bus,
            store,
            tokens,
            settings: Arc::new(settings),
            connection_limits,
            session_rate: Arc::new(WindowCounter::default()),
            shutdown,
            channels: None,
            apps: Arc::default(),
            connection_ids: Arc::new(AtomicU64::new(1)),
        }
    }

    /// A process-unique connection id.
    pub fn next_connection_id(&self) -> u64 {
        self.connection_ids.fetch_add(1, Ordering::Relaxed)
    }
}
