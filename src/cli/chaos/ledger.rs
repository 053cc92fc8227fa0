//! What was promised and what arrived: the checks behind the chaos verdict.
//!
//! Every chaos event is `(c, p, n)`: channel `c`, publisher `p` (which publishes only through
//! node `p`, so `p` is also the event's origin), and `n`, that publisher's sequence on that
//! channel. A publisher has one publish in flight at a time. Its [`Acks`] split what it sent
//! into **acknowledged** (the node answered success: the event must be on every node and reach
//! every subscriber) and **failed** (a timeout or an error: it may or may not have been
//! committed, so it is expected by nobody, and a late commit of it may land after a later
//! publish).
//!
//! The checks, per subscriber ([`check_client`]) and per node's log ([`check_logs`]):
//! - **missing**: acknowledged, but never delivered to a subscriber of its channel, or absent
//!   from a live node's log;
//! - **duplicate**: delivered to one subscriber more than once;
//! - **out of order**: an acknowledged event delivered after a later acknowledged event of the
//!   same publisher and channel (the acknowledgement of `n` came before `n + 1` was sent, so
//!   the server must keep that order). Failed publishes are left out of order checks.
//!
//! Arrivals are kept whole (three words per event received) so that these checks can run at
//! the end, once it is known which publishes failed.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

/// One chaos event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EventKey {
    pub channel: u32,
    pub publisher: u32,
    pub n: u64,
}

/// The events one subscriber received, in arrival order.
#[derive(Debug, Default)]
pub struct Arrivals {
    order: Vec<EventKey>,
}

impl Arrivals {
    pub fn record(&mut self, key: EventKey) {
        self.order.push(key);
    }

    /// Events received (duplicates included).
    pub fn count(&self) -> usize {
        self.order.len()
    }
}

/// What the publishers sent, by outcome.
#[derive(Debug, Default, Clone)]
pub struct Acks {
    pub acked: BTreeSet<EventKey>,
    pub failed: BTreeSet<EventKey>,
}

impl Acks {
    pub fn merge(&mut self, other: Acks) {
        self.acked.extend(other.acked);
        self.failed.extend(other.failed);
    }
}

/// What one subscriber got wrong.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientFindings {
    pub missing: Vec<EventKey>,
    pub duplicates: u64,
    pub out_of_order: u64,
}

/// Checks one subscriber of `channels` against what was acknowledged.
pub fn check_client(arrivals: &Arrivals, channels: &[u32], acks: &Acks) -> ClientFindings {
    let mut findings = ClientFindings::default();
    let mut seen: HashSet<EventKey> = HashSet::with_capacity(arrivals.count());
    let mut newest_acked: HashMap<(u32, u32), u64> = HashMap::new();
    for &key in &arrivals.order {
        if !seen.insert(key) {
            findings.duplicates += 1;
            continue;
        }
        if !acks.acked.contains(&key) {
            continue;
        }
        let newest = newest_acked
            .entry((key.channel, key.publisher))
            .or_insert(0);
        if key.n < *newest {
            findings.out_of_order += 1;
        } else {
            *newest = key.n;
        }
    }
    findings.missing = acks
        .acked
        .iter()
        .filter(|key| channels.contains(&key.channel) && !seen.contains(key))
        .copied()
        .collect();
    findings
}

/// What the nodes' logs got wrong.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogFindings {
    /// Per node: acknowledged events absent from its log.
    pub missing: Vec<Vec<EventKey>>,
    /// Every node holds the same chaos events.
    pub identical: bool,
}

/// Checks every node's log (the chaos events it holds) against what was acknowledged.
pub fn check_logs(logs: &[BTreeSet<EventKey>], acks: &Acks) -> LogFindings {
    LogFindings {
        missing: logs
            .iter()
            .map(|log| acks.acked.difference(log).copied().collect())
            .collect(),
        identical: logs.windows(2).all(|pair| pair[0] == pair[1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(publisher: u32, n: u64) -> EventKey {
        EventKey {
            channel: 0,
            publisher,
            n,
        }
    }

    fn arrivals(keys: &[EventKey]) -> Arrivals {
        let mut arrivals = Arrivals::default();
        for &key in keys {
            arrivals.record(key);
        }
        arrivals
    }

    fn acks(acked: &[EventKey], failed: &[EventKey]) -> Acks {
        Acks {
            acked: acked.iter().copied().collect(),
            failed: failed.iter().copied().collect(),
        }
    }

    #[test]
    fn a_clean_run_finds_nothing() {
        let sent = [key(0, 1), key(1, 1), key(0, 2), key(1, 2)];
        let found = check_client(&arrivals(&sent), &[0], &acks(&sent, &[]));
        assert_eq!(found, ClientFindings::default());
    }

    #[test]
    fn finds_missing_duplicated_and_reordered_events() {
        let acked = [key(0, 1), key(0, 2), key(0, 3), key(0, 4)];
        let got = arrivals(&[key(0, 1), key(0, 3), key(0, 2), key(0, 3)]);
        let found = check_client(&got, &[0], &acks(&acked, &[]));
        assert_eq!(found.missing, vec![key(0, 4)]);
        assert_eq!(found.duplicates, 1);
        assert_eq!(found.out_of_order, 1, "2 came after 3");
    }

    #[test]
    fn failed_publishes_are_neither_expected_nor_held_to_order() {
        // 2 timed out and was committed late, after 3.
        let got = arrivals(&[key(0, 1), key(0, 3), key(0, 2)]);
        let found = check_client(&got, &[0], &acks(&[key(0, 1), key(0, 3)], &[key(0, 2)]));
        assert_eq!(found, ClientFindings::default());
        let without = arrivals(&[key(0, 1), key(0, 3)]);
        let found = check_client(&without, &[0], &acks(&[key(0, 1), key(0, 3)], &[key(0, 2)]));
        assert_eq!(found, ClientFindings::default());
    }

    #[test]
    fn other_channels_are_not_expected() {
        let other = EventKey {
            channel: 5,
            publisher: 0,
            n: 1,
        };
        let found = check_client(&arrivals(&[]), &[0], &acks(&[other], &[]));
        assert!(found.missing.is_empty());
    }

    #[test]
    fn logs_must_hold_every_acknowledged_event_and_agree() {
        let acked = acks(&[key(0, 1), key(1, 1)], &[key(0, 2)]);
        let full: BTreeSet<EventKey> = [key(0, 1), key(1, 1), key(0, 2)].into();
        let short: BTreeSet<EventKey> = [key(0, 1)].into();
        let found = check_logs(&[full.clone(), short], &acked);
        assert_eq!(found.missing, vec![vec![], vec![key(1, 1)]]);
        assert!(!found.identical);
        assert!(check_logs(&[full.clone(), full], &acked).identical);
    }
}
