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

/// The clock handed to the router: unix milliseconds (business hours and holidays are read from it), advanced
/// by the monotonic clock from a wall-clock base taken at start, so a wall-clock step never reorders routing
/// timers. Follows `tokio::time::pause` in tests.
#[derive(Debug, Clone, Copy)]
pub struct RouterClock {
    start: Instant,
    base_unix_ms: u64,
}

impl RouterClock {
    /// Starts counting now.
    pub fn start() -> RouterClock {
        RouterClock {
            start: Instant::now(),
            base_unix_ms: unix_ms(),
        }
    }

    /// Now on the router's clock.
    pub fn now(&self) -> Millis {
        Millis(self.base_unix_ms + self.start.elapsed().as_millis() as u64)
    }

    /// The tokio instant of a router time.
    pub fn instant(&self, at: Millis) -> Instant {
        self.start + std::time::Duration::from_millis(at.0.saturating_sub(self.base_unix_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_time_is_unix_milliseconds_and_maps_back_to_instants() {
        let clock = RouterClock::start();
        let now = clock.now();
        assert!(
            now.0.abs_diff(unix_ms()) < 60_000,
            "router time is wall-clock based"
        );
        let later = now.plus_ms(1500);
        assert_eq!(
            clock.instant(later).duration_since(clock.start).as_millis() as u64,
            later.0 - clock.base_unix_ms
        );
    }

    #[test]
    fn rfc3339_has_millisecond_precision() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
