//! Channel connectors of omnigate and the normalized message model they share.
//!
//! Role: turn each provider's wire format into one [`model::InboundMessage`] and an agent's reply into the
//! provider's outbound call. Verification (signatures, AES) and normalization are pure functions tested with
//! `shared/protocols/vectors.json`; IO lives in each channel's `io.rs`.
//!
//! Must never depend on `omnigate-router` or `omnigate-gateway`.
//!
//! Layout:
//! - `model.rs`: IDs, channels, identities, inbound and outbound messages
//! - `error.rs`: `ConnectorError` and friends

pub mod error;
pub mod model;

pub use error::ConnectorError;
