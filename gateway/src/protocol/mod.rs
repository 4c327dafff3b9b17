//! Chat protocol v1 (PROTOCOLS.md §4.2) and its agent variant (docs/agent-protocol.md): the frames, parsed and
//! built without IO.
//!
//! Layout:
//! - `inbound.rs`: client frames → typed [`ClientOp`]s, with the documented error codes
//! - `outbound.rs`: typed server frames → JSON text
//! - `json_object.rs`: the JSON writer of the frames on every relayed message

mod inbound;
mod json_object;
mod outbound;

pub use inbound::{parse_frame, ClientFrame, ClientOp, FrameError, Resume, TransferTo};
pub use outbound::*;

/// Close codes of chat protocol v1 and the agent protocol.
pub mod close {
    /// Server restarting or shutting down: reconnect now, with jitter.
    pub const RESTART: u16 = 1012;
    /// Server going away (same meaning as 1012 for clients).
    pub const GOING_AWAY: u16 = 1001;
    /// A frame larger than `limits.max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// The connection fell too far behind; reconnect and resume from the cursor.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Protocol error: no `hello` in time, `hello` twice, heartbeat missed, or a binary frame.
    pub const PROTOCOL: u16 = 4000;
    /// Bad token.
    pub const BAD_TOKEN: u16 = 4001;
    /// Token expired: refresh, then reconnect.
    pub const TOKEN_EXPIRED: u16 = 4002;
    /// Rate limited (frames per second, connections per IP, total connections).
    pub const RATE_LIMITED: u16 = 4008;
    /// Session replaced by a newer connection that resumed it.
    pub const REPLACED: u16 = 4009;
    /// The customer was erased (admin API): do not reconnect with this token.
    pub const ERASED: u16 = 4010;
}
