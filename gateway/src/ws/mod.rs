//! Websocket sessions: customers on `/chat/v1/ws`, agents on `/agent/v1/ws`.
//!
//! Layout:
//! - `limits.rs`: token bucket per connection, connections per IP, sessions per widget key
//! - `session.rs`: one socket's life: hello, ready, replay, live loop, close
//! - `ops.rs`: what each client op does

mod limits;
mod ops;
mod session;

pub use limits::{Admission, ConnectionLimits, TokenBucket, WindowCounter};
pub use session::{run, Role};
