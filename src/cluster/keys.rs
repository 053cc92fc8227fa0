//! The gossip keys a node publishes about itself. Values stay small: addresses, counters, and
//! the log position as `origin:seq,...`.

use crate::event::{NodeId, VersionVector};

pub const MESH_ADDR: &str = "mesh_addr";
pub const HTTP_ADDR: &str = "http_addr";
pub const VERSION: &str = "version";
pub const CONNECTIONS: &str = "connections";
pub const USERS: &str = "users";
/// Distinct users on the broadcast socket, for cluster-wide broadcast stats.
pub const BROADCAST_USERS: &str = "broadcast_users";
pub const LOG_POSITION: &str = "log_position";
/// The node's store origin (node id plus database creation time): which origin is live.
pub const ORIGIN: &str = "origin";
pub const LEAVING: &str = "leaving";
/// The node's `replication` setting: a node with 2 waits for a peer's acknowledgement before
/// it answers a publish, so its peers acknowledge what it pushes at once.
pub const REPLICATION: &str = "replication";

pub fn encode_vector(vector: &VersionVector) -> String {
    vector
        .iter()
        .map(|(origin, seq)| format!("{origin}:{seq}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn decode_vector(text: &str) -> VersionVector {
    text.split(',')
        .filter_map(|entry| {
            let (origin, seq) = entry.split_once(':')?;
            Some((NodeId::new(origin).ok()?, seq.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip() {
        let vector: VersionVector = [
            (NodeId::new("a.1").unwrap(), 3),
            (NodeId::new("b.2").unwrap(), 9),
        ]
        .into_iter()
        .collect();
        assert_eq!(decode_vector(&encode_vector(&vector)), vector);
        assert_eq!(decode_vector(""), VersionVector::new());
    }
}
