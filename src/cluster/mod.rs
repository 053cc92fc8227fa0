//! Cluster membership over chitchat gossip (UDP).
//!
//! Owns this node's gossip identity (node id, a generation that grows on every restart, the
//! gossip address), the gossip keys it publishes about itself (see [`keys`]), the failure
//! detector's tuning, and a typed view of the members: the newest generation of each node id,
//! live or dead, refreshed a few times a second and published on a watch channel. Changes
//! (added, updated, removed) are derived from successive views.
//!
//! Every gossip datagram is sealed with a key derived from the cluster secret
//! ([`sealed_transport`], [`seal`]): a node with another secret is never a member, and forged,
//! corrupted or replayed datagrams are dropped and counted before chitchat sees them.

pub mod keys;
mod member;
pub mod seal;
pub mod sealed_transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, spawn_chitchat};
use tokio::sync::watch;

pub use member::{Member, MemberState, MembershipChange, diff_members};

use crate::event::NodeId;

/// Gossip round interval. With the failure detector below (phi 8, a prior interval equal to
/// the gossip interval rather than chitchat's 5 s default) a SIGKILLed node is marked dead by
/// both its peers in 0.5 to 0.8 s on loopback (`herald bench failover`), and a node cut off by
/// a partition in 0.4 to 0.7 s while three nodes publish 200 events/s
/// (`tests/partition_health.rs`). A one-way cut leaves the deaf side believing its peers
/// alive (their digests still reach it); the mesh link watchdog covers that (`crate::mesh`).
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(100);
const PHI_THRESHOLD: f64 = 8.0;
/// How often the member view is rebuilt from chitchat's state.
const VIEW_REFRESH: Duration = Duration::from_millis(100);
/// How long a dead node stays listed.
const DEAD_NODE_GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("gossip: {0}")]
    Gossip(String),
}

/// What this node says about itself on start.
#[derive(Clone, Debug)]
pub struct SelfDescription {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub generation: u64,
    /// Where gossip listens.
    pub gossip_addr: SocketAddr,
    /// Where peers send gossip to (the listen address unless advertised otherwise).
    pub gossip_advertise_addr: SocketAddr,
    pub seeds: Vec<String>,
    pub initial_keys: Vec<(String, String)>,
}

/// Handle to membership: read the member view, publish this node's keys, leave.
pub struct Cluster {
    handle: ChitchatHandle,
    self_id: ChitchatId,
    members: watch::Receiver<Arc<Vec<Member>>>,
    view_task: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// Starts gossip on `transport` (a [`sealed_transport::SealedUdpTransport`] in a node).
    pub async fn join(
        description: SelfDescription,
        transport: &dyn chitchat::transport::Transport,
    ) -> Result<Arc<Self>, ClusterError> {
        let self_id = ChitchatId::new(
            description.node_id.as_str().to_string(),
            description.generation,
            description.gossip_advertise_addr,
        );
        let failure_detector_config = FailureDetectorConfig {
            phi_threshold: PHI_THRESHOLD,
            sampling_window_size: 200,
            max_interval: Duration::from_secs(2),
            initial_interval: GOSSIP_INTERVAL,
            dead_node_grace_period: DEAD_NODE_GRACE,
        };
        let config = ChitchatConfig {
            chitchat_id: self_id.clone(),
            cluster_id: description.cluster_id.clone(),
            gossip_interval: GOSSIP_INTERVAL,
            listen_addr: description.gossip_addr,
            seed_nodes: description.seeds.clone(),
            failure_detector_config,
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let handle = spawn_chitchat(config, description.initial_keys.clone(), transport)
            .await
            .map_err(|e| ClusterError::Gossip(format!("{e:#}")))?;
        let (publish, members) = watch::channel(Arc::new(Vec::new()));
        let chitchat = handle.chitchat();
        let own_id = self_id.clone();
        let view_task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(VIEW_REFRESH);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let view = {
                    let chitchat = chitchat.lock().await;
                    member::build_view(&chitchat, &own_id)
                };
                if **publish.borrow() != view {
                    let _ = publish.send(Arc::new(view));
                }
                if publish.is_closed() {
                    return;
                }
            }
        });
        Ok(Arc::new(Self {
            handle,
            self_id,
            members,
            view_task,
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.self_id.node_id
    }

    pub fn generation(&self) -> u64 {
        self.self_id.generation_id
    }

    /// The current member view (this node included).
    pub fn members(&self) -> Arc<Vec<Member>> {
        Arc::clone(&self.members.borrow())
    }

    /// A receiver that changes whenever the member view does.
    pub fn watch_members(&self) -> watch::Receiver<Arc<Vec<Member>>> {
        self.members.clone()
    }

    /// Membership changes (added, updated, removed), by node id: a new generation of a node
    /// is an update of that node, never a second member.
    pub fn changes(&self) -> ChangeStream {
        let mut members = self.members.clone();
        let last = Arc::clone(&members.borrow_and_update());
        ChangeStream { members, last }
    }

    /// Live members other than this node.
    pub fn live_peers(&self) -> Vec<Member> {
        self.members()
            .iter()
            .filter(|m| m.state == MemberState::Alive && !m.is_self)
            .cloned()
            .collect()
    }

    /// Sets gossip keys about this node.
    pub async fn publish(&self, entries: Vec<(&'static str, String)>) {
        self.handle
            .with_chitchat(|chitchat| {
                let state = chitchat.self_node_state();
                for (key, value) in &entries {
                    if state.get(key) != Some(value.as_str()) {
                        state.set(*key, value);
                    }
                }
            })
            .await;
    }

    /// Announces a graceful leave, lets it spread for a few gossip rounds, and stops gossip.
    pub async fn leave(&self) {
        self.publish(vec![(keys::LEAVING, "1".into())]).await;
        tokio::time::sleep(GOSSIP_INTERVAL * 5).await;
        let _ = self.handle.initiate_shutdown();
    }

    /// Stops gossip without announcing anything.
    pub fn stop(&self) {
        let _ = self.handle.initiate_shutdown();
        self.view_task.abort();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.view_task.abort();
        let _ = self.handle.initiate_shutdown();
    }
}

/// Successive membership changes; see [`Cluster::changes`].
pub struct ChangeStream {
    members: watch::Receiver<Arc<Vec<Member>>>,
    last: Arc<Vec<Member>>,
}

impl ChangeStream {
    /// Waits for the member view to change and answers what changed; `None` once membership
    /// has stopped.
    pub async fn next(&mut self) -> Option<Vec<MembershipChange>> {
        loop {
            self.members.changed().await.ok()?;
            let current = Arc::clone(&self.members.borrow_and_update());
            let changes = diff_members(&self.last, &current);
            self.last = current;
            if !changes.is_empty() {
                return Some(changes);
            }
        }
    }
}

/// Binds and releases a UDP port to find a free gossip port when the configured one is 0.
pub fn resolve_gossip_addr(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.local_addr()
}
