//! What the mesh tells the store's own-seq fence (`crate::store::own_fence`): the highest seq of
//! this node's origin that a linked peer holds, and whether every live peer has said.
//!
//! The rule ([`assess`], a pure function):
//!
//! - the **floor** is the highest seq of this node's origin in the positions linked peers
//!   reported over their links and in what gossip carries for them; a peer that is not linked
//!   does not count (this node could not pull from it, and a peer that is gone must not keep
//!   this node from publishing);
//! - the fence may **open** once gossip knows at least one live peer and every live peer has
//!   reported its position over a link. Gossip learns the whole membership from the first seed
//!   that answers, so this is what the cluster holds, not what the first peer to link holds.
//!   Before that, the store's start wait bounds how long a node alone waits.

use std::collections::HashMap;

use crate::cluster::{Member, MemberState};
use crate::event::{NodeId, VersionVector};

/// What the mesh knows of this node's own origin among its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnOriginView {
    /// The highest seq of this node's origin a linked peer holds.
    pub floor: u64,
    /// Every live peer reported over a link (and there is at least one).
    pub heard_from_all: bool,
}

/// The rule above: `reported` holds the positions linked peers sent over their links.
pub fn assess(
    own: &NodeId,
    members: &[Member],
    reported: &HashMap<NodeId, VersionVector>,
) -> OwnOriginView {
    let gossiped = members
        .iter()
        .filter(|member| reported.keys().any(|peer| peer.as_str() == member.node_id))
        .map(|member| member.log_position.get(own));
    let floor = reported
        .values()
        .map(|vector| vector.get(own))
        .chain(gossiped)
        .max()
        .unwrap_or(0);
    let mut live = members
        .iter()
        .filter(|member| !member.is_self && member.state == MemberState::Alive)
        .peekable();
    let any_live = live.peek().is_some();
    let heard_from_all =
        any_live && live.all(|member| reported.keys().any(|peer| peer.as_str() == member.node_id));
    OwnOriginView {
        floor,
        heard_from_all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::new(id).expect("a valid node id")
    }

    fn member(id: &str, state: MemberState, own_seq: u64) -> Member {
        let mut log_position = VersionVector::new();
        log_position.advance(&node("me.1"), own_seq);
        Member {
            node_id: id.into(),
            generation: 1,
            gossip_addr: "127.0.0.1:1".parse().expect("an address"),
            mesh_addr: None,
            http_addr: None,
            version: None,
            state,
            connections: 0,
            users: 0,
            broadcast_users: 0,
            log_position,
            replication: 1,
            origin: None,
            is_self: false,
        }
    }

    fn reported(entries: &[(&str, u64)]) -> HashMap<NodeId, VersionVector> {
        entries
            .iter()
            .map(|(peer, seq)| {
                let mut vector = VersionVector::new();
                vector.advance(&node("me.1"), *seq);
                (node(peer), vector)
            })
            .collect()
    }

    #[test]
    fn nobody_known_is_not_heard_from() {
        let view = assess(&node("me.1"), &[], &HashMap::new());
        assert_eq!(
            view,
            OwnOriginView {
                floor: 0,
                heard_from_all: false
            }
        );
    }

    #[test]
    fn every_live_peer_must_report_before_the_fence_opens() {
        let members = [
            member("a", MemberState::Alive, 0),
            member("b", MemberState::Alive, 0),
            member("c", MemberState::Dead, 90),
        ];
        let own = node("me.1");
        let one = assess(&own, &members, &reported(&[("a", 40)]));
        assert!(!one.heard_from_all);
        assert_eq!(one.floor, 40);
        // The dead peer neither holds the fence closed nor raises the floor.
        let both = assess(&own, &members, &reported(&[("a", 40), ("b", 55)]));
        assert_eq!(
            both,
            OwnOriginView {
                floor: 55,
                heard_from_all: true
            }
        );
    }

    #[test]
    fn gossip_counts_for_linked_peers_only() {
        let members = [
            member("a", MemberState::Alive, 70),
            member("b", MemberState::Alive, 99),
        ];
        let view = assess(&node("me.1"), &members, &reported(&[("a", 60)]));
        assert_eq!(view.floor, 70, "b is not linked: its 99 cannot be pulled");
    }
}
