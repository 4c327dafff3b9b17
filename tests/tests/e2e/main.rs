//! omnigate end to end, over real sockets on loopback. One test binary (see meilisearch's
#![allow(clippy::disallowed_methods)] // tests spawn clients freely; the gateway itself uses its shutdown tree
//! `tests/integration.rs` for why): the modules below share the harness in `omnigate_tests`.

mod admin;
mod app;
mod bad_input;
mod conversation;
mod cross_channel;
mod cti;
mod customers;
mod delivery;
mod parallel;
mod profiles;
mod redis;
mod reply_via;
mod routing;
mod sms_uplink;
mod store_conformance;
mod twilio;
mod wechat;
mod wecom;
