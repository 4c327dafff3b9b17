//! Limits on connections and frames. Each breach is answered with the documented frame or close code.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A token bucket: `rate` frames per second sustained, `burst` at once.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts events per key in fixed one-minute windows (sessions per widget key per minute).
#[derive(Debug, Default)]
pub struct WindowCounter {
    windows: DashMap<String, (u64, u32)>,
}

impl WindowCounter {
    /// Counts one event for `key` in the minute containing `unix_ms`; `false` when `limit` is already reached.
    pub fn allow(&self, key: &str, unix_ms: u64, limit: u32) -> bool {
        let minute = unix_ms / 60_000;
        let mut entry = self.windows.entry(key.to_owned()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= limit {
            return false;
        }
        entry.1 += 1;
        true
    }
}

/// Caps on open sockets: in total and per client IP.
#[derive(Debug)]
pub struct ConnectionLimits {
    total: Arc<Semaphore>,
    per_ip: Arc<DashMap<IpAddr, usize>>,
    max_per_ip: usize,
}

/// A socket's place under the caps; dropping it frees the place.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    per_ip: Arc<DashMap<IpAddr, usize>>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.per_ip.remove_if_mut(&self.ip, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

impl ConnectionLimits {
    /// Caps of `max_total` sockets and `max_per_ip` per address.
    pub fn new(max_total: usize, max_per_ip: usize) -> ConnectionLimits {
        ConnectionLimits {
            total: Arc::new(Semaphore::new(max_total)),
            per_ip: Arc::new(DashMap::new()),
            max_per_ip,
        }
    }

    /// Admits one more socket from `ip`, or `None` when a cap is reached.
    pub fn admit(&self, ip: IpAddr) -> Option<Admission> {
        let permit = Arc::clone(&self.total).try_acquire_owned().ok()?;
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return None;
        }
        *count += 1;
        drop(count);
        Some(Admission {
            _permit: permit,
            ip,
            per_ip: Arc::clone(&self.per_ip),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_burst_then_the_sustained_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        assert!((0..3).all(|_| bucket.allow(start)));
        assert!(!bucket.allow(start));
        assert!(bucket.allow(start + Duration::from_millis(100)));
        assert!(!bucket.allow(start + Duration::from_millis(100)));
    }

    #[test]
    fn window_counter_resets_each_minute() {
        let counter = WindowCounter::default();
        assert!(counter.allow("k", 0, 2));
        assert!(counter.allow("k", 1, 2));
        assert!(!counter.allow("k", 59_999, 2));
        assert!(counter.allow("other", 59_999, 2));
        assert!(counter.allow("k", 60_000, 2));
    }

    #[test]
    fn admissions_are_capped_per_ip_and_freed_on_drop() {
        let limits = ConnectionLimits::new(10, 2);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let a = limits.admit(ip).unwrap();
        let _b = limits.admit(ip).unwrap();
        assert!(limits.admit(ip).is_none());
        assert!(limits.admit([127, 0, 0, 2].into()).is_some());
        drop(a);
        assert!(limits.admit(ip).is_some());
    }
}
