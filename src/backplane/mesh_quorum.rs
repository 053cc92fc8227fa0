//! Quorum for readiness under partition: whether this mesh node reaches a majority of the
//! members it knows.
//!
//! The rule ([`assess`], a pure function): a node is ready only while
//! `reachable * 2 > known`, where
//!
//! - `reachable` is this node plus the peers that gossip says are alive *and* that have a live
//!   QUIC link to it;
//! - `known` is this node plus the members that have not left gracefully and that gossip said
//!   were alive at some point within the last [`QUORUM_MEMORY`]. A member dead or cut off for
//!   longer stops counting, so the lone survivor of a cluster whose other nodes crashed is
//!   ready again after [`QUORUM_MEMORY`].
//!
//! A tie (`reachable * 2 == known`: a 2-2 split, or 1-1 in a cluster of two) is broken so that
//! the two sides are never both unready: the side that reaches the smallest node id among the
//! known members is ready. A node that knows no peer is ready.
//!
//! Timings: a cut makes a peer unreachable within 2 s (gossip's failure detector, typically
//! 0.4 to 0.7 s, or the mesh link watchdog, 1.25 s without a new acknowledgement; see
//! `crate::mesh`), so the minority side turns unready within 2 s while the majority stays
//! ready. Both sides keep accepting publishes and delivering to their own clients; after the
//! partition heals, anti-entropy converges them.
//!
//! [`QuorumMemory`] owns the one piece of state the rule needs: when each member was last seen
//! alive, one entry per member of the current gossip view (so bounded by the member count).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{Member, MemberState};
use crate::event::NodeId;

/// How long a member that is no longer alive still counts in `known`.
pub const QUORUM_MEMORY: Duration = Duration::from_secs(60);

/// One peer as the rule sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSeen<'a> {
    pub node_id: &'a str,
    /// Announced a graceful leave: never counted.
    pub left: bool,
    /// Alive by gossip and linked by the mesh right now.
    pub reachable: bool,
    /// How long ago gossip last said it was alive (`None`: never, as far as this node knows).
    pub since_alive: Option<Duration>,
}

/// The `quorum` object of `/readyz` and `/api/cluster`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Quorum {
    pub reachable: usize,
    pub known: usize,
    pub ready: bool,
}

/// The quorum and the known peers this node cannot reach (sorted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumView {
    pub quorum: Quorum,
    pub unreachable: Vec<String>,
}

impl QuorumView {
    /// A node with no peers: ready.
    pub fn alone() -> Self {
        assess("", &[])
    }
}

/// The rule of the module docs, for this node (`self_id`) and its peers.
pub fn assess(self_id: &str, peers: &[PeerSeen<'_>]) -> QuorumView {
    let known_peers: Vec<&PeerSeen<'_>> = peers
        .iter()
        .filter(|peer| peer.node_id != self_id && !peer.left)
        .filter(|peer| peer.reachable || peer.since_alive.is_some_and(|d| d <= QUORUM_MEMORY))
        .collect();
    let reachable = 1 + known_peers.iter().filter(|peer| peer.reachable).count();
    let known = 1 + known_peers.len();
    let ready = match (reachable * 2).cmp(&known) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => known_peers
            .iter()
            .filter(|peer| peer.node_id < self_id)
            .min_by_key(|peer| peer.node_id)
            .is_none_or(|smallest| smallest.reachable),
    };
    let mut unreachable: Vec<String> = known_peers
        .iter()
        .filter(|peer| !peer.reachable)
        .map(|peer| peer.node_id.to_string())
        .collect();
    unreachable.sort();
    QuorumView {
        quorum: Quorum {
            reachable,
            known,
            ready,
        },
        unreachable,
    }
}

/// When each member was last seen alive; see the module docs.
#[derive(Default)]
pub struct QuorumMemory {
    last_alive: Mutex<HashMap<String, Instant>>,
}

impl QuorumMemory {
    /// Notes which of `members` are alive now, forgets members no longer in the view, and
    /// assesses the quorum with `linked` the peers that have a live link.
    pub fn assess(&self, members: &[Member], linked: &[NodeId]) -> QuorumView {
        let now = Instant::now();
        let self_id = members
            .iter()
            .find(|m| m.is_self)
            .map(|m| m.node_id.as_str())
            .unwrap_or_default();
        let since: Vec<Option<Duration>> = {
            let mut last_alive = self.last_alive.lock().unwrap_or_else(|e| e.into_inner());
            last_alive.retain(|id, _| members.iter().any(|m| &m.node_id == id));
            members
                .iter()
                .map(|member| {
                    if member.state == MemberState::Alive {
                        last_alive.insert(member.node_id.clone(), now);
                    }
                    last_alive
                        .get(&member.node_id)
                        .map(|at| now.saturating_duration_since(*at))
                })
                .collect()
        };
        let peers: Vec<PeerSeen<'_>> = members
            .iter()
            .zip(since)
            .filter(|(member, _)| !member.is_self)
            .map(|(member, since_alive)| PeerSeen {
                node_id: &member.node_id,
                left: member.state == MemberState::Left,
                reachable: member.state == MemberState::Alive
                    && linked.iter().any(|peer| peer.as_str() == member.node_id),
                since_alive,
            })
            .collect();
        assess(self_id, &peers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Option<Duration> = Some(Duration::ZERO);

    fn peer(node_id: &str, reachable: bool, since_alive: Option<Duration>) -> PeerSeen<'_> {
        PeerSeen {
            node_id,
            left: false,
            reachable,
            since_alive,
        }
    }

    fn quorum(reachable: usize, known: usize, ready: bool) -> Quorum {
        Quorum {
            reachable,
            known,
            ready,
        }
    }

    #[test]
    fn a_single_node_is_ready() {
        let view = assess("n1", &[]);
        assert_eq!(view.quorum, quorum(1, 1, true));
        assert!(view.unreachable.is_empty());
        assert_eq!(QuorumView::alone().quorum, quorum(1, 1, true));
    }

    #[test]
    fn the_majority_is_ready_and_the_minority_is_not() {
        let majority = assess("n1", &[peer("n2", true, NOW), peer("n3", false, NOW)]);
        assert_eq!(majority.quorum, quorum(2, 3, true));
        assert_eq!(majority.unreachable, ["n3"]);
        let minority = assess("n3", &[peer("n1", false, NOW), peer("n2", false, NOW)]);
        assert_eq!(minority.quorum, quorum(1, 3, false));
        assert_eq!(minority.unreachable, ["n1", "n2"]);
    }

    #[test]
    fn a_tie_is_won_by_the_side_that_reaches_the_smallest_id() {
        // 2-2: {n1, n2} | {n3, n4}.
        let with_n1 = assess(
            "n2",
            &[
                peer("n1", true, NOW),
                peer("n3", false, NOW),
                peer("n4", false, NOW),
            ],
        );
        assert_eq!(with_n1.quorum, quorum(2, 4, true));
        let without = assess(
            "n3",
            &[
                peer("n1", false, NOW),
                peer("n2", false, NOW),
                peer("n4", true, NOW),
            ],
        );
        assert_eq!(without.quorum, quorum(2, 4, false));
        // 1-1 in a cluster of two: the smallest id is ready, the other is not.
        assert!(assess("n1", &[peer("n2", false, NOW)]).quorum.ready);
        assert!(!assess("n2", &[peer("n1", false, NOW)]).quorum.ready);
    }

    #[test]
    fn a_member_gone_longer_than_the_memory_stops_counting() {
        let long_ago = Some(QUORUM_MEMORY + Duration::from_secs(1));
        let lone = assess(
            "n2",
            &[peer("n1", false, long_ago), peer("n3", false, long_ago)],
        );
        assert_eq!(lone.quorum, quorum(1, 1, true));
        assert!(lone.unreachable.is_empty());
        let recent = Some(QUORUM_MEMORY - Duration::from_secs(1));
        let still = assess(
            "n2",
            &[peer("n1", false, recent), peer("n3", false, long_ago)],
        );
        assert_eq!(still.quorum, quorum(1, 2, false));
        // Never seen alive: not known.
        assert_eq!(
            assess("n1", &[peer("n2", false, None)]).quorum,
            quorum(1, 1, true)
        );
    }

    #[test]
    fn members_that_left_are_not_counted() {
        let mut left = peer("n2", false, NOW);
        left.left = true;
        let view = assess("n1", &[left, peer("n3", true, NOW)]);
        assert_eq!(view.quorum, quorum(2, 2, true));
        assert!(view.unreachable.is_empty());
    }
}
