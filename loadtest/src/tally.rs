//! What each load connection counts, merged at the end of a run: latency, deliveries and every correctness
//! violation.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Microseconds since the unix epoch (shared by every loader process on the machine).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A latency histogram in microseconds, 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

/// Counts from one connection (or, merged, from a whole run).
#[derive(Debug, Clone)]
pub struct Tally {
    /// One-way latency (scheduled send → receipt) of messages sent inside the measured window, µs.
    pub latency: Histogram<u64>,
    /// Messages received inside the measured window (both directions).
    pub delivered_in_window: u64,
    /// Distinct messages sent (customers, and agents' replies).
    pub sent: u64,
    /// Messages sent again after a reconnect (same `client_msg_id`).
    pub resent: u64,
    /// Messages received (both directions, first copies only).
    pub received: u64,
    /// Messages sent that never arrived.
    pub lost: u64,
    /// Messages that arrived more than once.
    pub duplicated: u64,
    /// Messages that arrived after a later message of the same conversation.
    pub reordered: u64,
    /// Event `seq` jumps (a gap in the log as delivered).
    pub seq_gaps: u64,
    /// Event `seq` repeats or steps back.
    pub seq_repeats: u64,
    /// Times an agent held more conversations than its capacity.
    pub over_capacity: u64,
    /// Times a conversation was assigned to two agents at once.
    pub double_assigned: u64,
    /// Error frames and unexpected closes, by code.
    pub errors: BTreeMap<String, u64>,
    /// Offers that were gone when accepted (a legal race, not an error).
    pub accept_refused: u64,
    /// Reconnections (drops asked for by a churn scenario, or closes with 1013).
    pub reconnects: u64,
    /// Connections that could not be set up.
    pub setup_failures: u64,
    /// Largest lateness of the loader against its open-loop schedule, µs.
    pub max_send_lag_us: u64,
    /// Lateness of each open-loop send against its schedule, µs.
    pub send_lags: Histogram<u64>,
    /// Webhooks: time from posting to the server's answer, of webhooks posted in the measured window, µs.
    pub answer_latency: Histogram<u64>,
    /// Webhooks: answers (2xx) received inside the measured window.
    pub answered_in_window: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            latency: histogram(),
            delivered_in_window: 0,
            sent: 0,
            resent: 0,
            received: 0,
            lost: 0,
            duplicated: 0,
            reordered: 0,
            seq_gaps: 0,
            seq_repeats: 0,
            over_capacity: 0,
            double_assigned: 0,
            errors: BTreeMap::new(),
            accept_refused: 0,
            reconnects: 0,
            setup_failures: 0,
            max_send_lag_us: 0,
            send_lags: histogram(),
            answer_latency: histogram(),
            answered_in_window: 0,
        }
    }
}

impl Tally {
    /// Adds another tally.
    pub fn merge(&mut self, other: &Tally) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.delivered_in_window += other.delivered_in_window;
        self.sent += other.sent;
        self.resent += other.resent;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.seq_gaps += other.seq_gaps;
        self.seq_repeats += other.seq_repeats;
        self.over_capacity += other.over_capacity;
        self.double_assigned += other.double_assigned;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        self.accept_refused += other.accept_refused;
        self.reconnects += other.reconnects;
        self.setup_failures += other.setup_failures;
        self.max_send_lag_us = self.max_send_lag_us.max(other.max_send_lag_us);
        let _ = self.send_lags.add(&other.send_lags);
        let _ = self.answer_latency.add(&other.answer_latency);
        self.answered_in_window += other.answered_in_window;
    }

    /// Records how late an open-loop send left.
    pub fn send_lag(&mut self, lag_us: u64) {
        self.max_send_lag_us = self.max_send_lag_us.max(lag_us);
        self.send_lags.saturating_record(lag_us.max(1));
    }

    /// Counts one error by code.
    pub fn error(&mut self, code: impl Into<String>) {
        *self.errors.entry(code.into()).or_default() += 1;
    }

    /// Every violation of the run's correctness rules, as text; empty when the run is correct.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, n) in [
            ("messages lost", self.lost),
            ("messages duplicated", self.duplicated),
            ("messages reordered", self.reordered),
            ("event seq gaps", self.seq_gaps),
            ("event seq repeats", self.seq_repeats),
            ("agents over capacity", self.over_capacity),
            ("conversations assigned twice", self.double_assigned),
            ("connections not set up", self.setup_failures),
        ] {
            if n > 0 {
                out.push(format!("{name}: {n}"));
            }
        }
        for (code, n) in &self.errors {
            out.push(format!("error {code}: {n}"));
        }
        out
    }
}

/// Tracks which numbered messages of one stream arrived: duplicates, reordering and, at the end, losses.
#[derive(Debug, Clone, Default)]
pub struct Arrivals {
    seen: Vec<bool>,
    highest: Option<u64>,
    distinct: u64,
}

/// How one arrival compares with the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The first copy, in order.
    InOrder,
    /// The first copy, but a later message already arrived.
    Reordered,
    /// Already received.
    Duplicate,
}

impl Arrivals {
    /// Records message `k`.
    pub fn record(&mut self, k: u64) -> Arrival {
        let index = k as usize;
        if index >= self.seen.len() {
            self.seen.resize(index + 1, false);
        }
        if self.seen[index] {
            return Arrival::Duplicate;
        }
        self.seen[index] = true;
        self.distinct += 1;
        let reordered = self.highest.is_some_and(|h| k < h);
        self.highest = Some(self.highest.map_or(k, |h| h.max(k)));
        if reordered {
            Arrival::Reordered
        } else {
            Arrival::InOrder
        }
    }

    /// Distinct messages received.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    /// Whether message `k` arrived.
    pub fn has(&self, k: u64) -> bool {
        self.seen.get(k as usize).copied().unwrap_or(false)
    }
}

/// Checks a gapless per-conversation `seq`: returns the new cursor and counts gaps and repeats.
pub fn check_seq(cursor: u64, seq: u64, tally: &mut Tally) -> u64 {
    if seq == cursor + 1 {
        seq
    } else if seq <= cursor {
        tally.seq_repeats += 1;
        cursor
    } else {
        tally.seq_gaps += 1;
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_classify_duplicates_and_reordering() {
        let mut a = Arrivals::default();
        assert_eq!(a.record(0), Arrival::InOrder);
        assert_eq!(a.record(2), Arrival::InOrder);
        assert_eq!(a.record(1), Arrival::Reordered);
        assert_eq!(a.record(2), Arrival::Duplicate);
        assert_eq!(a.distinct(), 3);
        assert!(a.has(1) && !a.has(3));
    }

    #[test]
    fn seq_check_counts_gaps_and_repeats() {
        let mut t = Tally::default();
        assert_eq!(check_seq(0, 1, &mut t), 1);
        assert_eq!(check_seq(1, 1, &mut t), 1);
        assert_eq!(check_seq(1, 3, &mut t), 3);
        assert_eq!((t.seq_repeats, t.seq_gaps), (1, 1));
        assert_eq!(t.violations().len(), 2);
    }

    #[test]
    fn merging_adds_counts_and_histograms() {
        let mut a = Tally::default();
        a.latency.record(100).unwrap();
        a.error("rate_limited");
        let mut b = Tally::default();
        b.latency.record(300).unwrap();
        b.error("rate_limited");
        b.max_send_lag_us = 7;
        a.merge(&b);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.errors["rate_limited"], 2);
        assert_eq!(a.max_send_lag_us, 7);
    }
}
