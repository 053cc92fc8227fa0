//! The typed member view built from chitchat's state, and changes between views.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use chitchat::{Chitchat, ChitchatId, NodeState};
use serde::Serialize;

use super::keys;
use crate::event::VersionVector;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    /// Announced a graceful leave.
    Left,
    Dead,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    pub node_id: String,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    pub mesh_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub version: Option<String>,
    pub state: MemberState,
    pub connections: u64,
    pub users: u64,
    pub broadcast_users: u64,
    pub log_position: VersionVector,
    /// The node's `replication` setting (0: not announced).
    pub replication: u8,
    /// The store origin it publishes under, once it said.
    pub origin: Option<String>,
    pub is_self: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    Added(Member),
    Updated(Member),
    Removed(String),
}

/// One entry per node id: the newest generation, live or dead.
pub(super) fn build_view(chitchat: &Chitchat, self_id: &ChitchatId) -> Vec<Member> {
    let live: Vec<&ChitchatId> = chitchat.live_nodes().collect();
    let mut newest: BTreeMap<&str, Member> = BTreeMap::new();
    for (id, node_state) in chitchat.node_states() {
        if id.node_id == self_id.node_id && id != self_id {
            // A node is the only authority on itself: another generation of its id, whoever
            // gossips it, never replaces its own row.
            continue;
        }
        let state = if live.contains(&id) {
            if node_state.get(keys::LEAVING).is_some() {
                MemberState::Left
            } else {
                MemberState::Alive
            }
        } else if node_state.get(keys::LEAVING).is_some() {
            MemberState::Left
        } else {
            MemberState::Dead
        };
        let member = to_member(id, node_state, state, id == self_id);
        match newest.get(&*id.node_id) {
            Some(existing) if existing.generation >= member.generation => {}
            _ => {
                newest.insert(&id.node_id, member);
            }
        }
    }
    newest.into_values().collect()
}

fn to_member(id: &ChitchatId, node_state: &NodeState, state: MemberState, is_self: bool) -> Member {
    let number = |key: &str| {
        node_state
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let address = |key: &str| node_state.get(key).and_then(|v| v.parse().ok());
    Member {
        node_id: id.node_id.to_string(),
        generation: id.generation_id,
        gossip_addr: id.gossip_advertise_addr,
        mesh_addr: address(keys::MESH_ADDR),
        http_addr: address(keys::HTTP_ADDR),
        version: node_state.get(keys::VERSION).map(str::to_string),
        state: if is_self { MemberState::Alive } else { state },
        connections: number(keys::CONNECTIONS),
        users: number(keys::USERS),
        broadcast_users: number(keys::BROADCAST_USERS),
        log_position: node_state
            .get(keys::LOG_POSITION)
            .map(keys::decode_vector)
            .unwrap_or_default(),
        origin: node_state.get(keys::ORIGIN).map(str::to_string),
        replication: number(keys::REPLICATION).min(u64::from(u8::MAX)) as u8,
        is_self,
    }
}

/// What changed from `old` to `new`, by node id (a new generation is an update).
pub fn diff_members(old: &[Member], new: &[Member]) -> Vec<MembershipChange> {
    let mut changes = Vec::new();
    for member in new {
        match old.iter().find(|m| m.node_id == member.node_id) {
            None => changes.push(MembershipChange::Added(member.clone())),
            Some(previous) if previous != member => {
                changes.push(MembershipChange::Updated(member.clone()))
            }
            Some(_) => {}
        }
    }
    for member in old {
        if !new.iter().any(|m| m.node_id == member.node_id) {
            changes.push(MembershipChange::Removed(member.node_id.clone()));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, generation: u64, state: MemberState) -> Member {
        Member {
            node_id: id.into(),
            generation,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            mesh_addr: None,
            http_addr: None,
            version: None,
            state,
            connections: 0,
            users: 0,
            broadcast_users: 0,
            log_position: VersionVector::new(),
            origin: None,
            replication: 1,
            is_self: false,
        }
    }

    #[test]
    fn diffs_by_node_id() {
        let old = vec![
            member("a", 1, MemberState::Alive),
            member("b", 1, MemberState::Alive),
        ];
        let new = vec![
            member("a", 2, MemberState::Alive),
            member("c", 1, MemberState::Alive),
        ];
        let changes = diff_members(&old, &new);
        assert!(changes.contains(&MembershipChange::Updated(member(
            "a",
            2,
            MemberState::Alive
        ))));
        assert!(changes.contains(&MembershipChange::Added(member("c", 1, MemberState::Alive))));
        assert!(changes.contains(&MembershipChange::Removed("b".into())));
        assert_eq!(changes.len(), 3);
    }
}
