//! Repair: the live node holding the most of an origin re-ships, into that origin's stream,
//! the range some live node lacks and is not getting from the stream (trimmed away, or lost
//! with Redis's data). Receivers dedupe, so a needless repair costs bandwidth only.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::RedisBackplane;
use super::shipper::{SHIP_PAGE, append_events};
use crate::event::{NodeId, VersionVector};
use crate::store::Store;

/// A node behind on an origin whose position has not moved for this long is repaired.
pub const STUCK_AFTER: Duration = Duration::from_secs(1);
/// A repaired node still stuck at the same position is repaired again after this long.
const REPAIR_RETRY: Duration = Duration::from_secs(1);
/// Most events of one origin re-shipped per repair.
pub const REPAIR_WINDOW: u64 = 20_000;

/// One range to re-ship: `origin`'s events in `(after, upto]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Repair {
    pub origin: NodeId,
    pub after: u64,
    pub upto: u64,
}

struct Lag {
    position: u64,
    since: Instant,
    repaired: Option<Instant>,
}

/// Remembers, per (peer, origin), since when the peer has been stuck behind this node.
#[derive(Default)]
pub(super) struct RepairPlanner {
    lags: HashMap<(String, NodeId), Lag>,
}

impl RepairPlanner {
    /// The ranges this node should re-ship now, given its own position and the live peers'.
    /// Only origins for which this node is the designated holder (the highest position; ties:
    /// the lowest node id) are considered.
    pub fn plan(
        &mut self,
        me: &str,
        mine: &VersionVector,
        live: &[(&str, &VersionVector)],
        now: Instant,
    ) -> Vec<Repair> {
        let mut touched = HashSet::new();
        let mut repairs = Vec::new();
        for (origin, have) in mine.iter() {
            let holder = live.iter().all(|(peer, vector)| {
                let theirs = vector.get(origin);
                theirs < have || (theirs == have && me < *peer)
            });
            if !holder {
                continue;
            }
            let mut lowest: Option<u64> = None;
            for (peer, vector) in live {
                let theirs = vector.get(origin);
                if theirs >= have {
                    continue;
                }
                let key = (peer.to_string(), origin.clone());
                touched.insert(key.clone());
                let lag = self.lags.entry(key).or_insert(Lag {
                    position: theirs,
                    since: now,
                    repaired: None,
                });
                if lag.position != theirs {
                    *lag = Lag {
                        position: theirs,
                        since: now,
                        repaired: None,
                    };
                }
                let stuck = now.saturating_duration_since(lag.since) >= STUCK_AFTER;
                let due = lag
                    .repaired
                    .is_none_or(|at| now.saturating_duration_since(at) >= REPAIR_RETRY);
                if stuck && due {
                    lag.repaired = Some(now);
                    lowest = Some(lowest.map_or(theirs, |low| low.min(theirs)));
                }
            }
            if let Some(after) = lowest {
                repairs.push(Repair {
                    origin: origin.clone(),
                    after,
                    upto: have.min(after + REPAIR_WINDOW),
                });
            }
        }
        self.lags.retain(|key, _| touched.contains(key));
        repairs
    }
}

/// Re-ships one range from this node's log into the origin's stream.
pub(super) async fn reship(backplane: &RedisBackplane, store: &Store, repair: Repair) {
    let stream = backplane.keys.log(&repair.origin);
    let mut after = repair.after;
    let mut shipped = 0u64;
    while after < repair.upto {
        let page = {
            let origin = repair.origin.clone();
            let upto = repair.upto;
            store
                .read(move |c| crate::store::state::log_range(c, &origin, after, upto, SHIP_PAGE))
                .await
        };
        let events = match page {
            Ok(events) if !events.is_empty() => events,
            Ok(_) => break,
            Err(error) => {
                tracing::warn!(origin = %repair.origin, %error, "reading events to repair failed");
                break;
            }
        };
        if let Err(error) = append_events(&backplane.commands, &stream, &events, None).await {
            backplane.note_error("re-shipping events", &error);
            break;
        }
        after = events.last().map(|e| e.seq).unwrap_or(repair.upto);
        shipped += events.len() as u64;
    }
    if shipped > 0 {
        metrics::counter!("herald_redis_events_repaired_total").increment(shipped);
        tracing::info!(
            origin = %repair.origin,
            after = repair.after,
            upto = after,
            shipped,
            "re-shipped events a live node lacked"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(entries: &[(&str, u64)]) -> VersionVector {
        entries
            .iter()
            .map(|(origin, seq)| (NodeId::new(origin).unwrap(), *seq))
            .collect()
    }

    #[test]
    fn a_peer_that_keeps_up_is_never_repaired() {
        let mut planner = RepairPlanner::default();
        let start = Instant::now();
        let mine = vector(&[("o1", 100)]);
        for step in 0..20u64 {
            let theirs = vector(&[("o1", 50 + step)]);
            let now = start + Duration::from_millis(200 * step);
            assert!(
                planner
                    .plan("n1", &mine, &[("n2", &theirs)], now)
                    .is_empty()
            );
        }
    }

    #[test]
    fn a_stuck_peer_is_repaired_once_per_retry_from_its_position() {
        let mut planner = RepairPlanner::default();
        let start = Instant::now();
        let mine = vector(&[("o1", 100_000)]);
        let theirs = vector(&[("o1", 10)]);
        let slower = vector(&[("o1", 5)]);
        let live = [("n2", &theirs), ("n3", &slower)];
        assert!(planner.plan("n1", &mine, &live, start).is_empty());
        let later = start + STUCK_AFTER;
        let repairs = planner.plan("n1", &mine, &live, later);
        assert_eq!(
            repairs,
            vec![Repair {
                origin: NodeId::new("o1").unwrap(),
                after: 5,
                upto: 5 + REPAIR_WINDOW,
            }]
        );
        let soon = later + Duration::from_millis(200);
        assert!(planner.plan("n1", &mine, &live, soon).is_empty());
        assert_eq!(
            planner.plan("n1", &mine, &live, later + REPAIR_RETRY).len(),
            1
        );
    }

    #[test]
    fn only_the_designated_holder_repairs() {
        let mut planner = RepairPlanner::default();
        let start = Instant::now();
        let later = start + STUCK_AFTER;
        let mine = vector(&[("o1", 100)]);
        let equal = vector(&[("o1", 100)]);
        let ahead = vector(&[("o1", 101)]);
        let behind = vector(&[("o1", 1)]);
        // A peer ahead: it repairs, not us.
        let live = [("n0", &ahead), ("n3", &behind)];
        planner.plan("n1", &mine, &live, start);
        assert!(planner.plan("n1", &mine, &live, later).is_empty());
        // A tie: the lowest id repairs.
        let live = [("n0", &equal), ("n3", &behind)];
        planner.plan("n1", &mine, &live, start);
        assert!(planner.plan("n1", &mine, &live, later).is_empty());
        let live = [("n2", &equal), ("n3", &behind)];
        planner.plan("n1", &mine, &live, start);
        assert_eq!(planner.plan("n1", &mine, &live, later).len(), 1);
    }
}
