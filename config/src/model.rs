use std::collections::BTreeMap;
use std::net::SocketAddr;

use secrecy::SecretString;
use serde::Deserialize;

use crate::channels::Channels;
use crate::customers::{Customers, Retention};
use crate::routing::{AgentConfig, Routing};

/// The whole configuration of one gateway process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `development` prints how to connect and allows the demo secret; `production` does not.
    pub mode: Mode,
    /// Listeners, timeouts and shutdown.
    pub server: Server,
    /// Where conversations, customers and agent state live.
    pub store: Store,
    /// Token signing and lifetimes.
    pub auth: Auth,
    /// Limits on every input.
    pub limits: Limits,
    /// Conversation lifecycle.
    pub conversations: Conversations,
    /// Web chat widgets (chat protocol v1).
    pub webchat: WebChat,
    /// Agents known to the gateway.
    pub agents: Vec<AgentConfig>,
    /// Queues, skills and routing policy.
    pub routing: Routing,
    /// Log output.
    pub log: Log,
    /// Channel connectors (WeChat, SMS) and the outbound outbox.
    pub channels: Channels,
    /// Customer profiles: rules, tiers and the CRM lookup.
    pub customers: Customers,
    /// How long data is kept, per kind.
    pub retention: Retention,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Production,
            server: Server::default(),
            store: Store::default(),
            auth: Auth::default(),
            limits: Limits::default(),
            conversations: Conversations::default(),
            webchat: WebChat::default(),
            agents: Vec::new(),
            routing: Routing::default(),
            log: Log::default(),
            channels: Channels::default(),
            customers: Customers::default(),
            retention: Retention::default(),
        }
    }
}

/// Deployment mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Local demo: friendly logs and connection hints at startup.
    Development,
    /// Real deployment: strict checks on secrets.
    Production,
}

/// Listeners and lifecycle.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// Public listener: chat, agent websockets, channel webhooks.
    pub public_addr: SocketAddr,
    /// Admin listener: `/healthz`, `/readyz`, `/metrics`.
    pub admin_addr: SocketAddr,
    /// The externally visible base URL (`https://chat.bank.example`), used to build `ws_url` and to
    /// reconstruct signed webhook URLs behind a proxy. Derived from `public_addr` when empty.
    pub public_base_url: String,
    /// Longest time an HTTP request may take before it is answered with 408.
    pub request_timeout_ms: u64,
    /// How long shutdown waits for in-flight work after closing sockets.
    pub shutdown_grace_ms: u64,
    /// Largest accepted HTTP request body.
    pub max_body_bytes: usize,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            public_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            public_base_url: String::new(),
            request_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            max_body_bytes: 256 * 1024,
        }
    }
}

/// Which context store backs the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    /// `memory` (embedded, the default) or `redis`.
    pub backend: StoreBackend,
    /// Redis URL when `backend = "redis"`.
    pub redis_url: String,
    /// Prefix of every Redis key, so several deployments (or tests) can share one server.
    pub key_prefix: String,
    /// How long `Gateway::build` and each reconnection attempt wait for Redis to accept a connection.
    pub connect_timeout_ms: u64,
    /// The longest any one Redis command may take before the store reports itself unavailable; it bounds
    /// how long a dead Redis can stall the session bus.
    pub command_timeout_ms: u64,
    /// Conversation keys (log, indexes, summary) expire this long after their last write; 0 keeps them.
    pub conversation_ttl_secs: u64,
    /// Identity keys expire this long after their last resolution; 0 keeps them.
    pub identity_ttl_secs: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            redis_url: "redis://127.0.0.1:6379/0".to_owned(),
            key_prefix: "og:".to_owned(),
            connect_timeout_ms: 2_000,
            command_timeout_ms: 1_000,
            conversation_ttl_secs: 90 * 24 * 3600,
            identity_ttl_secs: 0,
        }
    }
}

/// Context store backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// In-process store; the binary runs alone.
    Memory,
    /// Shared Redis.
    Redis,
}

/// Token signing.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// HS256 secret for customer and agent tokens (at least 32 bytes in production).
    pub jwt_secret: SecretString,
    /// Lifetime of a customer's chat token (chat protocol v1 caps it at 15 minutes).
    pub customer_token_ttl_secs: u64,
    /// How long after expiry a customer token may still be exchanged for a new one (`refresh_token`).
    pub customer_refresh_window_secs: u64,
    /// Lifetime of an agent token minted by `omnigate token`.
    pub agent_token_ttl_secs: u64,
    /// Bearer token of the admin API on the admin listener (`/admin/v1/…`: customer erasure, audit log);
    /// empty disables the admin API (every call answers 401). At least 32 bytes in production.
    pub admin_token: SecretString,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            jwt_secret: SecretString::from(String::new()),
            customer_token_ttl_secs: 900,
            customer_refresh_window_secs: 86_400,
            agent_token_ttl_secs: 12 * 3600,
            admin_token: SecretString::from(String::new()),
        }
    }
}

/// Limits on every input. Each breach gets a documented error frame or close code.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest websocket message accepted (bytes); larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Longest message text (characters); longer gets an `error` frame `too_long`.
    pub max_message_chars: usize,
    /// Sustained frames per second per connection.
    pub frames_per_second: u32,
    /// Burst of frames above the sustained rate.
    pub frame_burst: u32,
    /// Rate-limit breaches tolerated before the connection is closed with 4008.
    pub rate_limit_strikes: u32,
    /// Open websockets per client IP.
    pub connections_per_ip: usize,
    /// Open websockets in total.
    pub max_connections: usize,
    /// New chat sessions per widget key per minute.
    pub sessions_per_widget_key_per_minute: u32,
    /// Websocket read buffer per connection (bytes).
    pub ws_read_buffer_bytes: usize,
    /// Websocket write buffer per connection (bytes).
    pub ws_write_buffer_bytes: usize,
    /// Frames queued for one slow connection before it is closed (it resumes from its cursor).
    pub outbound_queue_frames: usize,
    /// Heartbeat interval announced in `ready`; the server closes after two intervals of silence.
    pub heartbeat_ms: u64,
    /// Time a new socket has to send `hello`.
    pub hello_timeout_ms: u64,
    /// Most events replayed per conversation on resume; beyond it the client gets `resync_required`.
    pub replay_max_events: usize,
    /// Most events one REST page returns.
    pub events_page_max: usize,
    /// Longest `client_msg_id`.
    pub max_client_msg_id_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_message_chars: 4000,
            frames_per_second: 20,
            frame_burst: 40,
            rate_limit_strikes: 20,
            connections_per_ip: 200,
            max_connections: 20_000,
            sessions_per_widget_key_per_minute: 600,
            ws_read_buffer_bytes: 4096,
            ws_write_buffer_bytes: 4096,
            outbound_queue_frames: 1024,
            heartbeat_ms: 25_000,
            hello_timeout_ms: 10_000,
            replay_max_events: 500,
            events_page_max: 200,
            max_client_msg_id_len: 64,
        }
    }
}

/// Conversation lifecycle.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Conversations {
    /// A customer message within this many seconds of a close reopens the conversation.
    pub reopen_window_secs: u64,
    /// How many of the customer's most recent conversations (all channels) the `customer.context` frame
    /// brings an agent who accepts a conversation; 0 sends no history.
    pub history_conversations: usize,
    /// How many of the last messages of each of those conversations it brings.
    pub history_messages: usize,
    /// Dispositions that mark a complaint: a conversation closed with one (or reopened after) is listed
    /// among the customer's open complaints.
    pub complaint_dispositions: Vec<String>,
    /// A new conversation of a customer who has another one open (on another channel) is linked to it
    /// and offered first to that conversation's agent for this long before anyone else.
    pub linked_preferred_agent_secs: u64,
}

impl Default for Conversations {
    fn default() -> Self {
        Self {
            reopen_window_secs: 600,
            history_conversations: 5,
            history_messages: 10,
            complaint_dispositions: vec!["complaint".to_owned()],
            linked_preferred_agent_secs: 60,
        }
    }
}

/// Web chat channel.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebChat {
    /// Widgets, each with its public key.
    pub widgets: Vec<Widget>,
}

/// One embeddable chat widget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Widget {
    /// The public key the widget sends to `POST /chat/v1/sessions`.
    pub key: String,
    /// Display name, e.g. the site.
    #[serde(default)]
    pub name: String,
    /// Queue that new conversations from this widget enter; the routing default when empty.
    #[serde(default)]
    pub queue: String,
    /// Attributes copied onto every conversation from this widget (e.g. `language = "en"`).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `pretty` (development) or `json` (production); empty picks by mode.
    pub format: String,
    /// `tracing` filter, e.g. `info,omnigate_gateway=debug`; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: String::new(),
            filter: "info".to_owned(),
        }
    }
}
