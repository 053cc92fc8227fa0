//! Correctness accounting for one client: which events arrived, once, in order.
//!
//! Every bench event carries `c` (the channel's index), `p` (the publisher) and `n` (that
//! publisher's sequence on that channel, from 1, gap-free among the publishes it sent). A
//! publisher has at most one publish in flight per channel, so the server must deliver each
//! `(c, p)` stream in `n` order. A [`ClientTracker`] keeps, per stream, the highest contiguous
//! `n` seen and the few `n` seen above a gap, and counts:
//!
//! - a **duplicate**: an `n` already seen;
//! - **out of order**: an `n` below the highest seen that had not been seen (it arrived after a
//!   later one);
//! - **missing** (at the end, against the [`AckLedger`]): a publish the server acknowledged that
//!   never arrived. Publishes that failed (no answer, an error) may or may not have been committed:
//!   they are expected by nobody, and count neither way when they arrive.
//!
//! Memory: a few words per stream while it is in order; while a gap stays open, one set entry
//! per event received above it, so at worst the events of one run (a lost first event is then
//! noticed, and costs memory, until the end).

use std::collections::{BTreeSet, HashMap};

/// The stream of one publisher on one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub channel: u32,
    pub publisher: u32,
}

#[derive(Debug, Default)]
struct StreamState {
    /// Every `n` in `1..=contiguous` has arrived.
    contiguous: u64,
    /// Seen above `contiguous + 1` (only while a gap is open).
    above: BTreeSet<u64>,
}

impl StreamState {
    fn max_seen(&self) -> u64 {
        self.above.last().copied().unwrap_or(self.contiguous)
    }

    fn has(&self, n: u64) -> bool {
        n <= self.contiguous || self.above.contains(&n)
    }

    fn distinct(&self) -> u64 {
        self.contiguous + self.above.len() as u64
    }
}

/// What happened to one received event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    Duplicate,
    OutOfOrder,
}

/// The events one client received, per stream.
#[derive(Debug, Default)]
pub struct ClientTracker {
    streams: HashMap<StreamKey, StreamState>,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl ClientTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records event `n` of stream `key`.
    pub fn record(&mut self, key: StreamKey, n: u64) -> Arrival {
        let state = self.streams.entry(key).or_default();
        if n == 0 || state.has(n) {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        let arrival = if n < state.max_seen() {
            self.out_of_order += 1;
            Arrival::OutOfOrder
        } else {
            Arrival::InOrder
        };
        if n == state.contiguous + 1 {
            state.contiguous = n;
            while state.above.first() == Some(&(state.contiguous + 1)) {
                state.above.pop_first();
                state.contiguous += 1;
            }
        } else {
            state.above.insert(n);
        }
        arrival
    }

    /// Acknowledged publishes on `channels` that this client never received.
    pub fn missing(&self, ledger: &AckLedger, channels: &[u32]) -> u64 {
        let mut missing = 0;
        for (key, acks) in ledger.streams.iter() {
            if !channels.contains(&key.channel) {
                continue;
            }
            let received_acked = match self.streams.get(key) {
                None => 0,
                Some(state) => {
                    let received_failed =
                        acks.failed.iter().filter(|&&n| state.has(n)).count() as u64;
                    state.distinct() - received_failed
                }
            };
            missing += acks.acked.saturating_sub(received_acked);
        }
        missing
    }
}

/// Per stream: how many publishes the server acknowledged, and which sequence numbers failed.
#[derive(Debug, Default, Clone)]
pub struct StreamAcks {
    pub acked: u64,
    pub failed: Vec<u64>,
}

/// Every publisher's outcome, merged: what each client must have received.
#[derive(Debug, Default, Clone)]
pub struct AckLedger {
    streams: HashMap<StreamKey, StreamAcks>,
}

impl AckLedger {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn acked(&mut self, key: StreamKey) {
        self.streams.entry(key).or_default().acked += 1;
    }

    pub fn failed(&mut self, key: StreamKey, n: u64) {
        self.streams.entry(key).or_default().failed.push(n);
    }

    pub fn merge(&mut self, other: AckLedger) {
        for (key, acks) in other.streams {
            let entry = self.streams.entry(key).or_default();
            entry.acked += acks.acked;
            entry.failed.extend(acks.failed);
        }
    }

    /// Every stream with its acknowledgements (to hand the ledger to a worker process).
    pub fn streams(&self) -> impl Iterator<Item = (&StreamKey, &StreamAcks)> {
        self.streams.iter()
    }

    /// Sets a stream's acknowledgements (a ledger rebuilt in a worker process).
    pub fn insert(&mut self, key: StreamKey, acks: StreamAcks) {
        self.streams.insert(key, acks);
    }

    /// Acknowledged publishes on `channel`.
    pub fn acked_on(&self, channel: u32) -> u64 {
        self.streams
            .iter()
            .filter(|(key, _)| key.channel == channel)
            .map(|(_, acks)| acks.acked)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: StreamKey = StreamKey {
        channel: 0,
        publisher: 0,
    };
    const B: StreamKey = StreamKey {
        channel: 0,
        publisher: 1,
    };

    fn ledger(acked: &[(StreamKey, u64)], failed: &[(StreamKey, u64)]) -> AckLedger {
        let mut ledger = AckLedger::new();
        for &(key, count) in acked {
            for _ in 0..count {
                ledger.acked(key);
            }
        }
        for &(key, n) in failed {
            ledger.failed(key, n);
        }
        ledger
    }

    #[test]
    fn a_clean_stream_counts_nothing() {
        let mut tracker = ClientTracker::new();
        for n in 1..=100 {
            assert_eq!(tracker.record(A, n), Arrival::InOrder);
            assert_eq!(tracker.record(B, n), Arrival::InOrder);
        }
        assert_eq!((tracker.duplicates, tracker.out_of_order), (0, 0));
        assert_eq!(
            tracker.missing(&ledger(&[(A, 100), (B, 100)], &[]), &[0]),
            0
        );
    }

    #[test]
    fn counts_duplicates_including_repeats_above_a_gap() {
        let mut tracker = ClientTracker::new();
        for n in [1, 2, 2, 1, 4, 4, 3] {
            tracker.record(A, n);
        }
        assert_eq!(tracker.duplicates, 3);
        assert_eq!(tracker.out_of_order, 1, "3 arrived after 4");
        assert_eq!(tracker.missing(&ledger(&[(A, 4)], &[]), &[0]), 0);
    }

    #[test]
    fn counts_missing_events_at_the_end_and_in_gaps() {
        let mut tracker = ClientTracker::new();
        for n in [1, 2, 5, 6] {
            assert_eq!(tracker.record(A, n), Arrival::InOrder);
        }
        // 3 and 4 never came, nor 7 and 8; B sent 3 and none arrived.
        assert_eq!(tracker.missing(&ledger(&[(A, 8), (B, 3)], &[]), &[0]), 7);
        // Another channel's streams are not expected by this client.
        let other = StreamKey {
            channel: 9,
            publisher: 0,
        };
        assert_eq!(
            tracker.missing(&ledger(&[(A, 6), (other, 5)], &[]), &[0]),
            2
        );
    }

    #[test]
    fn late_arrivals_fill_gaps_and_count_as_out_of_order() {
        let mut tracker = ClientTracker::new();
        for n in [1, 4, 2, 3, 5] {
            tracker.record(A, n);
        }
        assert_eq!(tracker.out_of_order, 2);
        assert_eq!(tracker.duplicates, 0);
        assert_eq!(tracker.missing(&ledger(&[(A, 5)], &[]), &[0]), 0);
    }

    #[test]
    fn failed_publishes_are_expected_by_nobody() {
        // Publish 3 failed (maybe committed, maybe not): 1..=5 sent, 4 acknowledged.
        let acks = ledger(&[(A, 4)], &[(A, 3)]);
        let mut without = ClientTracker::new();
        for n in [1, 2, 4, 5] {
            without.record(A, n);
        }
        assert_eq!(without.missing(&acks, &[0]), 0);
        assert_eq!(without.out_of_order, 0);
        let mut with = ClientTracker::new();
        for n in 1..=5 {
            with.record(A, n);
        }
        assert_eq!(with.missing(&acks, &[0]), 0);
        let mut short = ClientTracker::new();
        for n in [1, 3, 5] {
            short.record(A, n);
        }
        assert_eq!(short.missing(&acks, &[0]), 2, "2 and 4 were acknowledged");
    }
}
