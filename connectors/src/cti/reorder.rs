//! Per-call ordering of CTI events by `seq` (PROTOCOLS.md §3.6): apply in order, hold back events after a gap
//! until the gap fills or its deadline passes, and treat a `seq` at or below the last applied one as a duplicate.
//! Pure: the caller passes the time in and calls [`ReorderBuffer::expire`] when [`ReorderBuffer::next_deadline`]
//! is reached.

use std::collections::{BTreeMap, HashMap};

/// What happened to an offered event.
#[derive(Debug, Clone, PartialEq)]
pub enum Offer<T> {
    /// Already applied (a retry or a late event): answer 200 and do nothing.
    Duplicate,
    /// Already waiting in the buffer under this `seq`: answer 200 and do nothing.
    AlreadyBuffered,
    /// Apply these, in this order (the offered event, then any buffered ones it unblocked).
    Apply(Vec<T>),
    /// Held back until `seq` `waiting_for` arrives or `deadline_ms` passes.
    Buffered {
        /// The missing `seq`.
        waiting_for: u64,
        /// When the gap is given up on.
        deadline_ms: u64,
    },
}

/// The ordering state of one call.
///
/// The gap deadline is set when the first event is held back and is not pushed out by later ones, so it bounds
/// how long the oldest held event waits; after a release, events still held behind a new gap get a fresh one.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSequencer<T> {
    last_applied: u64,
    pending: BTreeMap<u64, T>,
    gap_deadline_ms: Option<u64>,
    gap_ms: u64,
}

impl<T> CallSequencer<T> {
    /// A call with nothing applied yet (`seq` starts at 1); gaps wait `gap_ms`.
    pub fn new(gap_ms: u64) -> Self {
        Self {
            last_applied: 0,
            pending: BTreeMap::new(),
            gap_deadline_ms: None,
            gap_ms,
        }
    }

    /// A call whose events up to `last_applied` were applied before (by a previous process).
    pub fn resumed(gap_ms: u64, last_applied: u64) -> Self {
        Self {
            last_applied,
            ..Self::new(gap_ms)
        }
    }

    /// The highest `seq` applied so far.
    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    /// How many events wait behind a gap.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// When the current gap is given up on, if there is one.
    pub fn deadline(&self) -> Option<u64> {
        self.gap_deadline_ms
    }

    /// Offers event `seq` at `now_ms`.
    pub fn offer(&mut self, seq: u64, item: T, now_ms: u64) -> Offer<T> {
        if seq <= self.last_applied {
            return Offer::Duplicate;
        }
        if self.pending.contains_key(&seq) {
            return Offer::AlreadyBuffered;
        }
        if seq == self.last_applied + 1 {
            let mut out = vec![item];
            self.last_applied = seq;
            self.drain_ready(&mut out);
            self.rearm(now_ms);
            return Offer::Apply(out);
        }
        self.pending.insert(seq, item);
        let deadline_ms = *self
            .gap_deadline_ms
            .get_or_insert(now_ms.saturating_add(self.gap_ms));
        Offer::Buffered {
            waiting_for: self.last_applied + 1,
            deadline_ms,
        }
    }

    /// At or after the deadline: gives up on the missing events, releases the buffered ones up to the next gap
    /// (in order), and starts a new deadline if events still wait. Before the deadline it releases nothing.
    pub fn expire(&mut self, now_ms: u64) -> Vec<T> {
        let mut out = Vec::new();
        match self.gap_deadline_ms {
            Some(deadline) if now_ms >= deadline => {}
            _ => return out,
        }
        if let Some((seq, item)) = self.pending.pop_first() {
            self.last_applied = seq;
            out.push(item);
            self.drain_ready(&mut out);
        }
        self.gap_deadline_ms = None;
        self.rearm(now_ms);
        out
    }

    fn drain_ready(&mut self, out: &mut Vec<T>) {
        while let Some(item) = self.pending.remove(&(self.last_applied + 1)) {
            self.last_applied += 1;
            out.push(item);
        }
    }

    fn rearm(&mut self, now_ms: u64) {
        if self.pending.is_empty() {
            self.gap_deadline_ms = None;
        } else if self.gap_deadline_ms.is_none() {
            self.gap_deadline_ms = Some(now_ms.saturating_add(self.gap_ms));
        }
    }
}

/// Sequencers for every live call, keyed by `call_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReorderBuffer<T> {
    calls: HashMap<String, CallSequencer<T>>,
    gap_ms: u64,
}

impl<T> ReorderBuffer<T> {
    /// An empty buffer whose gaps wait `gap_ms` (a few seconds).
    pub fn new(gap_ms: u64) -> Self {
        Self {
            calls: HashMap::new(),
            gap_ms,
        }
    }

    /// Offers event `seq` of `call_id` at `now_ms`.
    pub fn offer(&mut self, call_id: &str, seq: u64, item: T, now_ms: u64) -> Offer<T> {
        let gap_ms = self.gap_ms;
        self.calls
            .entry(call_id.to_owned())
            .or_insert_with(|| CallSequencer::new(gap_ms))
            .offer(seq, item, now_ms)
    }

    /// Restores a call known to have applied every `seq` up to `last_applied` (kept state of a previous
    /// process), unless the call is already known here.
    pub fn resume(&mut self, call_id: &str, last_applied: u64) {
        let gap_ms = self.gap_ms;
        self.calls
            .entry(call_id.to_owned())
            .or_insert_with(|| CallSequencer::resumed(gap_ms, last_applied));
    }

    /// The earliest gap deadline across calls: when to call [`Self::expire`] next.
    pub fn next_deadline(&self) -> Option<u64> {
        self.calls.values().filter_map(CallSequencer::deadline).min()
    }

    /// Releases what every call whose deadline passed can apply, as `(call_id, events in order)`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(String, Vec<T>)> {
        let mut out: Vec<(String, Vec<T>)> = self
            .calls
            .iter_mut()
            .filter_map(|(id, call)| {
                let released = call.expire(now_ms);
                (!released.is_empty()).then(|| (id.clone(), released))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Drops a finished call's state (after `call.ended` and its recording, once nothing is buffered).
    pub fn forget(&mut self, call_id: &str) -> Option<CallSequencer<T>> {
        self.calls.remove(call_id)
    }

    /// The state of one call.
    pub fn call(&self, call_id: &str) -> Option<&CallSequencer<T>> {
        self.calls.get(call_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_events_apply_at_once() {
        let mut s = CallSequencer::new(3_000);
        assert_eq!(s.offer(1, "a", 0), Offer::Apply(vec!["a"]));
        assert_eq!(s.offer(2, "b", 0), Offer::Apply(vec!["b"]));
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn seq_3_before_2_is_applied_in_order() {
        let mut s = CallSequencer::new(3_000);
        s.offer(1, "offered", 0);
        assert_eq!(
            s.offer(3, "queued", 100),
            Offer::Buffered {
                waiting_for: 2,
                deadline_ms: 3_100
            }
        );
        assert_eq!(s.offer(3, "queued", 200), Offer::AlreadyBuffered);
        assert_eq!(s.offer(2, "ivr", 300), Offer::Apply(vec!["ivr", "queued"]));
        assert_eq!(s.deadline(), None);
        assert_eq!(s.offer(2, "ivr", 400), Offer::Duplicate);
        assert_eq!(s.offer(1, "offered", 400), Offer::Duplicate);
    }

    #[test]
    fn a_gap_that_never_fills_is_released_at_the_deadline() {
        let mut s = CallSequencer::new(3_000);
        s.offer(1, 1, 0);
        s.offer(3, 3, 1_000);
        s.offer(4, 4, 1_500);
        s.offer(6, 6, 2_000);
        assert_eq!(s.expire(3_999), Vec::<i32>::new(), "nothing before the deadline");
        assert_eq!(s.expire(4_000), vec![3, 4]);
        assert_eq!(s.last_applied(), 4);
        assert_eq!(s.deadline(), Some(7_000), "a new deadline for the gap before 6");
        assert_eq!(
            s.offer(2, 2, 4_100),
            Offer::Duplicate,
            "late events after a release are duplicates"
        );
        assert_eq!(s.offer(5, 5, 4_200), Offer::Apply(vec![5, 6]));
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn first_event_seen_late_waits_for_the_earlier_ones() {
        let mut b = ReorderBuffer::new(2_000);
        assert!(matches!(
            b.offer("c1", 2, "x", 10),
            Offer::Buffered { waiting_for: 1, .. }
        ));
        assert_eq!(b.offer("c2", 1, "y", 10), Offer::Apply(vec!["y"]));
        assert_eq!(b.next_deadline(), Some(2_010));
        assert_eq!(b.expire(2_010), vec![("c1".to_owned(), vec!["x"])]);
        assert_eq!(b.next_deadline(), None);
        assert!(b.forget("c1").is_some());
        assert!(b.call("c1").is_none());
        assert_eq!(b.call("c2").map(CallSequencer::last_applied), Some(1));
    }

    #[test]
    fn a_resumed_call_continues_after_what_was_applied() {
        let mut b = ReorderBuffer::new(2_000);
        b.resume("c1", 2);
        assert_eq!(b.offer("c1", 2, "again", 0), Offer::Duplicate);
        assert!(matches!(
            b.offer("c1", 4, "d", 0),
            Offer::Buffered { waiting_for: 3, .. }
        ));
        b.resume("c1", 0);
        assert_eq!(
            b.offer("c1", 3, "c", 10),
            Offer::Apply(vec!["c", "d"]),
            "a known call is not reset"
        );
    }

    proptest! {
        #[test]
        fn any_arrival_order_with_retries_applies_each_seq_once_in_order(
            order in Just((1u64..=12).collect::<Vec<_>>()).prop_shuffle(),
            retries in proptest::collection::vec(1u64..=12, 0..6),
        ) {
            let mut s = CallSequencer::new(1_000);
            let mut applied = Vec::new();
            for (t, seq) in order.iter().chain(retries.iter()).enumerate() {
                if let Offer::Apply(items) = s.offer(*seq, *seq, t as u64) {
                    applied.extend(items);
                }
            }
            applied.extend(s.expire(u64::MAX));
            prop_assert_eq!(applied, (1u64..=12).collect::<Vec<_>>());
        }

        #[test]
        fn with_losses_released_events_stay_increasing(
            present in proptest::collection::btree_set(1u64..=20, 1..20),
        ) {
            let mut s = CallSequencer::new(1_000);
            let mut applied = Vec::new();
            for seq in present.iter().rev() {
                if let Offer::Apply(items) = s.offer(*seq, *seq, 0) {
                    applied.extend(items);
                }
            }
            let mut now = 0;
            while let Some(d) = s.deadline() {
                now = d.max(now);
                applied.extend(s.expire(now));
            }
            prop_assert_eq!(applied, present.into_iter().collect::<Vec<_>>());
        }
    }
}
