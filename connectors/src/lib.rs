//! Channel connectors of omnigate and the normalized message model they share.
//!
//! Role: the pure protocol layer of every channel. Each module turns a provider's raw request (bytes, query,
//! headers) into a verified, typed value and one [`model::InboundMessage`], and an agent's reply into the
//! provider's request body; it classifies provider responses into [`ConnectorError`] plus a [`FailureReason`] the
//! agent can be shown. No sockets, no runtime, no clock: time comes in as unix seconds or milliseconds. Every
//! function is tested byte for byte against `shared/protocols/vectors.json`. The IO side (routes, HTTP clients,
//! the access-token owner, the outbox) is built on top of these functions in the gateway.
//!
//! Must never depend on `omnigate-router` or `omnigate-gateway`, nor on tokio, hyper or any HTTP client.
//!
//! Layout:
//! - `model.rs`: IDs, channels, identities, inbound and outbound messages
//! - `error.rs`: `ConnectorError`, `InboundError` (with the HTTP status to answer), `FailureReason`, `SendFailure`
//! - `xml.rs`: the hardened flat XML reader (no DOCTYPE, no entities, size limit)
//! - `wechat/`: Official Account: `signature.rs`, `crypto.rs` (AES-256-CBC, 32-byte PKCS#7, lenient key base64),
//!   `wire.rs`, `normalize.rs`, `window.rs` (48 h window and quota), `api.rs` (customer-service send, tokens)
//! - `wecom/`: WeChat Customer Service (WeCom kf): URL check, doorbell, `sync_msg` and `send_msg`
//! - `twilio/`: `signature.rs` (`X-Twilio-Signature`), `wire.rs` (forms, status callbacks, Messages API),
//!   `normalize.rs`
//! - `sms_cn/`: Aliyun and Tencent SMS uplinks: `wire.rs`, `normalize.rs`
//! - `cti/`: the signed `cti-webhook/1`: `signature.rs` (Standard Webhooks), `wire.rs` (typed events and the
//!   outbound "connect agent" body), `reorder.rs` (per-call seq buffer), `dedupe.rs` (`webhook-id`),
//!   `normalize.rs`
//! - `sms_segments.rs`: GSM-7 / UCS-2 segment counting
//! - `time.rs`: RFC 3339 formatting shared by the channels and the gateway
//! - `vectors_coverage.rs` (tests only): fails when a vector group of `vectors.json` has no test
//!
//! Choices where PROTOCOLS.md leaves room or the vectors differ from its tables:
//! - signature failures answer 403 for WeChat, WeCom and Twilio (as the gateway vector says) and 401 for the CTI
//!   webhook (§3.6); see [`InboundError::http_status`];
//! - `call.answered` accepts a missing `answered_by` (the signed vector has none) and reads it as `agent` when an
//!   `agent_id` is present;
//! - an MMS becomes one message per part (text, then each media item, keys `…:media:<i>`), since the model holds
//!   one content per message;
//! - SMS senders are not marked `verified` (sender ids can be spoofed); WeChat OpenIDs and WeCom external ids are;
//! - the Tencent dedupe key is the hex SHA-256 of `mobile \n time \n text`; an Aliyun batch with some
//!   unparseable numbers is still accepted, the refused items reported apart so the whole batch is not retried.

#![warn(missing_docs)]

pub mod cti;
pub mod error;
pub mod model;
pub mod sms_cn;
pub mod sms_segments;
pub mod time;
pub mod twilio;
mod util;
#[cfg(test)]
mod vectors_coverage;
pub mod wechat;
pub mod wecom;
pub mod xml;

pub use error::{ConnectorError, FailureReason, InboundError, SendFailure, SignatureScheme};
