//! The omnigate gateway: listeners, the session bus, the context store and the websockets.
//!
//! Role: the only crate with IO. It turns conversations into routing tasks for `omnigate-router`, turns the
//! router's decisions into frames, keeps every conversation's ordered event log in the [`store`], and serves
//! chat protocol v1 to customers and the agent protocol to agents.
//!
//! Depends on `omnigate-config`, `omnigate-router`, `omnigate-connectors`; nothing depends on it but `tests`.
//!
//! Layout:
//! - `startup.rs`: [`Gateway`]: build (binds), run until stopped
//! - `shutdown.rs`: the one shutdown tree
//! - `bus/`: the session bus actor
//! - `app/`: the mobile app channel: app credentials, the bank-signed identity, offline push
//! - `customers/`: customers across channels: history on accept, identity links, erasure
//! - `channels/`: channel connectors' IO: webhooks, provider clients, the outbound outbox
//! - `store/`: the context store trait and backends
//! - `customers/`: customer profiles for routing: config rules, tiers, the CRM lookup
//! - `protocol/`: frames of chat protocol v1 and the agent protocol
//! - `ws/`: websocket sessions with their limits
//! - `http/`: REST endpoints, the admin listener, `ApiError`
//! - `auth.rs`: tokens; `clock.rs`: time; `telemetry/`: logs and metrics; `id_map.rs`: maps keyed by our own ids

pub mod app;
pub mod auth;
pub mod bus;
pub mod channels;
pub mod cli;
pub mod clock;
pub mod customers;
pub mod http;
mod id_map;
pub mod protocol;
pub mod shutdown;
mod startup;
pub mod store;
pub mod telemetry;
pub mod ws;

pub use startup::{mint_agent_token, mint_agent_tokens, Gateway};
