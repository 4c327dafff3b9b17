//! Time as the gateway uses it: wall-clock unix milliseconds for records, a monotonic clock for routing.

use std::time::{SystemTime, UNIX_EPOCH};

use omnigate_router::Millis;
use tokio::time::Instant;

/// Wall-clock now in unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T10:00:00.123Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    omnigate_connectors::time::rfc3339_ms(unix_ms)
}

/// The monotonic clock handed to the router: milliseconds since the gateway started. Follows
/// `tokio::time::pause` in tests.
#[derive(Debug, Clone, Copy)]
pub struct RouterClock {
    start: Instant,
}

impl RouterClock {
    /// Starts counting now.
    pub fn start() -> RouterClock {
        RouterClock {
            start: Instant::now(),
        }
    }

    /// Now on the router's clock.
    pub fn now(&self) -> Millis {
        Millis(self.start.elapsed().as_millis() as u64)
    }

    /// The tokio instant of a router time.
    pub fn instant(&self, at: Millis) -> Instant {
        self.start + std::time::Duration::from_millis(at.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_millisecond_precision() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
