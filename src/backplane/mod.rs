//! The backplane: how committed events leave this node for the others.
//!
//! [`Backplane`] is the one interface the rest of herald sees: `local` (a single node), `mesh`
//! (gossip membership and QUIC links) and `redis` (Redis Streams with an outbox driven by the
//! event log; behind the `redis` cargo feature). The backplane is fed by the dispatcher task
//! (see [`crate::dispatcher`]) after each commit and must never block it: implementations hand
//! events to bounded queues with a written overflow policy, or (redis) only wake a task that
//! reads the log.

mod local;
pub mod mesh;
pub mod mesh_fence;
pub mod mesh_interest;
mod mesh_lag;
pub mod mesh_presence;
pub mod mesh_quorum;
mod mesh_rejoin;
mod mesh_serving;
mod mesh_snapshot;
pub mod mesh_validate;
pub mod peer_snapshot;
#[cfg(feature = "redis")]
pub mod redis;

use serde::Serialize;

use crate::cluster::MemberState;
use crate::event::{SharedEvent, VersionVector};
use std::sync::Arc;

pub use local::LocalBackplane;
pub use mesh::MeshBackplane;
#[cfg(feature = "redis")]
pub use redis::{RedisBackplane, RedisOptions};

/// Another node as this backplane knows it: for `/api/cluster` and cluster-wide counts.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PeerSummary {
    pub node_id: String,
    pub state: MemberState,
    pub http_addr: Option<String>,
    pub connections: u64,
    pub users: u64,
    /// Distinct users connected to the broadcast socket there.
    pub broadcast_users: u64,
    pub log_position: VersionVector,
    /// True when this node can ship to it right now.
    pub linked: bool,
}

/// What `/readyz` and `/api/cluster` say about the backplane.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BackplaneHealth {
    pub kind: &'static str,
    /// True when this node can deliver across the cluster (for the mesh: it reaches a quorum,
    /// see [`mesh_quorum`], and is not catching up from a snapshot or after a stall).
    pub healthy: bool,
    pub detail: String,
    /// The quorum and the peers this node cannot reach, when the backplane has the notion;
    /// `/readyz` and `/api/cluster` show it at their top level.
    #[serde(skip)]
    pub partition: Option<mesh_quorum::QuorumView>,
}

pub trait Backplane: Send + Sync + 'static {
    /// Hands committed events, in log order, to the other nodes. Never blocks.
    fn ship(&self, events: &[SharedEvent]);

    /// Hands ephemeral events (typing indicators) to the other nodes, best effort.
    fn ship_ephemeral(&self, _events: &[SharedEvent]) {}

    fn health(&self) -> BackplaneHealth;

    /// Peers this node can ship to right now.
    fn linked_peers(&self) -> usize {
        0
    }

    /// The highest seq of this node's own events that another node reported storing.
    fn replication_watch(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Peer links, for `/api/cluster`.
    fn links(&self) -> Vec<crate::mesh::LinkInfo> {
        Vec::new()
    }

    /// Stops shipping: closes links and leaves gossip without announcing anything.
    fn close(&self) {}

    /// Gossip membership, when this backplane has one.
    fn cluster(&self) -> Option<Arc<crate::cluster::Cluster>> {
        None
    }

    /// The other nodes this backplane knows of, live or not (not this node).
    fn peers(&self) -> Vec<PeerSummary> {
        Vec::new()
    }

    /// Sets the gauges sampled at scrape time (the mesh: link state and replication lag per
    /// peer; see `mesh_lag`).
    fn record_metrics(&self) {}
}
