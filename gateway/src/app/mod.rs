//! The mobile app channel: app credentials, the bank-signed end-user identity, and offline push.
//!
//! Layout:
//! - `identity.rs`: verification of the bank's identity JWT (HS256 / RS256)
//! - `registry.rs`: the configured apps (credential check in constant time, queue, verifier)
//! - `push.rs`: the push worker (`push.requested` to the bank's push service, signed)
//!
//! The REST endpoints (`POST /chat/v1/sessions` with app credentials, `/chat/v1/devices`) are in
//! `http/app.rs`.

pub mod identity;
pub mod push;
pub mod registry;

pub use identity::{IdentityError, IdentityVerifier, VerifiedIdentity};
pub use push::{PushHandle, PushSignal};
pub use registry::{AppEntry, AppRegistry};
