//! The mesh: one QUIC endpoint per node, mutually authenticated with the cluster secret, and
//! one link per peer pair carrying versioned frames.
//!
//! It owns the endpoint, the links (one per peer node id; a newer connection from the same
//! node replaces the older one), each link's bounded outbound queue, and the decoding of
//! incoming frames, which it hands to one bounded inbound queue. It does not know what frames
//! mean: the mesh backplane (`crate::backplane::mesh`) does.
//!
//! Overflow policy: a live push to a peer whose queue is full is dropped and counted; the peer
//! finds the gap (the next push skips a seq, or a `Position` frame is ahead) and pulls the
//! range. Replies to pulls wait for queue space instead.
//!
//! Cut detection: QUIC sends a keep-alive every [`KEEP_ALIVE`] on an otherwise quiet link (and
//! positions go every 200 ms anyway), and the peer acknowledges within its 25 ms `max_ack_delay`
//! (or at once after `ACK_ELICITING_THRESHOLD` packets). A
//! watchdog closes a link whose peer acknowledged nothing new for [`ACK_SILENCE`] (checked
//! every [`ACK_CHECK`]; "new" is read from the RTT estimate, which quinn updates only when an
//! ACK newly covers one of our packets): that is a cut in either direction, also a one-way cut
//! where this node still hears the peer (its packets reset the idle timer and repeat old
//! acknowledgements, but acknowledge nothing new). A link that hears nothing at all also ends
//! with the [`IDLE_TIMEOUT`], and a closed connection stops counting as a link at once. So a
//! link is dropped within about 1.35 s of a cut.

pub mod frame;
mod link;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use frame::{Frame, FrameError, InterestMessage, PresenceMessage};
use link::Link;
pub use link::LinkInfo;
use tls::{ClusterIdentity, TlsError};

use crate::event::NodeId;

/// Packets a peer may receive before it must acknowledge (QUIC's ACK frequency extension;
/// otherwise within its `max_ack_delay`, 25 ms): at QUIC's default of 1 every other live push
/// cost the receiver an ACK packet, a third of the mesh's packets. Lost packets are still
/// acknowledged at once (out of order), and the [`ACK_SILENCE`] watchdog waits fifty times the
/// longest delay.
const ACK_ELICITING_THRESHOLD: u32 = 16;
/// Frames queued per peer link.
pub const LINK_QUEUE_FRAMES: usize = 1024;
/// Frames received from all peers waiting to be handled.
pub const INBOUND_QUEUE_FRAMES: usize = 256;
/// Keep-alive on idle links, and the idle timeout after which a silent peer's link closes (a
/// restarted peer is noticed at once through a stateless reset, a dead one by gossip or the
/// [`ACK_SILENCE`] watchdog). Six keep-alives fit in the timeout, so a peer starved of CPU for
/// a second keeps its link.
pub const KEEP_ALIVE: Duration = Duration::from_millis(250);
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
/// A link whose peer acknowledged nothing new for this long is closed (five keep-alives).
pub const ACK_SILENCE: Duration = Duration::from_millis(1250);
/// How often the acknowledgement watchdog looks at the links.
pub const ACK_CHECK: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot bind the mesh endpoint on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect: {0}")]
    Connect(String),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("no link to {0}")]
    NoLink(NodeId),
}

/// A frame from a peer.
#[derive(Debug)]
pub struct Inbound {
    pub from: NodeId,
    pub frame: Frame,
}

/// Who this node is on the mesh.
#[derive(Clone, Debug)]
pub struct LocalIdentity {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub generation: u64,
}

pub struct Mesh {
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    local: LocalIdentity,
    links: Mutex<HashMap<NodeId, Link>>,
    dialing: Mutex<HashSet<NodeId>>,
    inbound: mpsc::Sender<Inbound>,
    /// Set by [`Mesh::close`]; ends the acknowledgement watchdog.
    closed: AtomicBool,
}

impl Mesh {
    /// Binds the endpoint and starts accepting peers. Frames from peers arrive on the returned
    /// receiver.
    pub fn start(
        bind: SocketAddr,
        local: LocalIdentity,
        cluster_secret: &str,
    ) -> Result<(Arc<Self>, mpsc::Receiver<Inbound>), MeshError> {
        let identity = ClusterIdentity::derive(cluster_secret, &local.cluster_id)?;
        let mut transport = quinn::TransportConfig::default();
        let mut acks = quinn::AckFrequencyConfig::default();
        acks.ack_eliciting_threshold(ACK_ELICITING_THRESHOLD.into());
        transport
            .ack_frequency_config(Some(acks))
            .keep_alive_interval(Some(KEEP_ALIVE))
            .max_idle_timeout(Some(
                IDLE_TIMEOUT
                    .try_into()
                    .map_err(|_| MeshError::Connect("idle timeout".into()))?,
            ));
        let transport = Arc::new(transport);
        let mut server_config = identity.server_config()?;
        server_config.transport_config(Arc::clone(&transport));
        let mut client_config = identity.client_config()?;
        client_config.transport_config(transport);
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, identity.reset_key());
        let endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
        let socket = std::net::UdpSocket::bind(bind)
            .map_err(|source| MeshError::Bind { addr: bind, source })?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| MeshError::Connect("no async runtime".into()))?;
        let endpoint = quinn::Endpoint::new(endpoint_config, Some(server_config), socket, runtime)
            .map_err(|source| MeshError::Bind { addr: bind, source })?;
        let (inbound, inbound_queue) = mpsc::channel(INBOUND_QUEUE_FRAMES);
        let mesh = Arc::new(Self {
            endpoint,
            client_config,
            local,
            links: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashSet::new()),
            inbound,
            closed: AtomicBool::new(false),
        });
        tokio::spawn(Arc::clone(&mesh).accept_loop());
        tokio::spawn(ack_watchdog(Arc::downgrade(&mesh)));
        Ok((mesh, inbound_queue))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    pub fn local(&self) -> &LocalIdentity {
        &self.local
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let mesh = Arc::clone(&self);
            tokio::spawn(async move {
                match incoming.await {
                    Ok(connection) => {
                        if let Err(error) = mesh.establish(connection, None).await {
                            tracing::warn!(%error, "inbound mesh link refused");
                        }
                    }
                    Err(error) => {
                        metrics::counter!("herald_mesh_handshake_failures_total").increment(1);
                        tracing::warn!(%error, "inbound mesh handshake failed");
                    }
                }
            });
        }
    }

    /// Dials `peer` at `addr` unless a link exists or a dial is under way.
    pub fn ensure_link(self: &Arc<Self>, peer: &NodeId, addr: SocketAddr) {
        if self.is_linked(peer) {
            return;
        }
        if !self.lock_dialing().insert(peer.clone()) {
            return;
        }
        let mesh = Arc::clone(self);
        let peer = peer.clone();
        tokio::spawn(async move {
            let result = mesh.dial(&peer, addr).await;
            mesh.lock_dialing().remove(&peer);
            if let Err(error) = result {
                metrics::counter!("herald_mesh_dial_failures_total").increment(1);
                tracing::debug!(%peer, %addr, %error, "mesh dial failed");
            }
        });
    }

    async fn dial(self: &Arc<Self>, peer: &NodeId, addr: SocketAddr) -> Result<(), MeshError> {
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), addr, tls::SERVER_NAME)
            .map_err(|e| MeshError::Connect(e.to_string()))?;
        let connection = tokio::time::timeout(Duration::from_secs(3), connecting)
            .await
            .map_err(|_| MeshError::Connect("timed out".into()))?
            .map_err(|e| MeshError::Connect(e.to_string()))?;
        self.establish(connection, Some(peer)).await
    }

    /// Exchanges `Hello` frames and registers the link.
    async fn establish(
        self: &Arc<Self>,
        connection: quinn::Connection,
        expected: Option<&NodeId>,
    ) -> Result<(), MeshError> {
        let (link, hello) = link::open(
            connection,
            &self.local,
            self.inbound.clone(),
            Arc::downgrade(self),
        )
        .await?;
        if let Some(expected) = expected {
            if &hello.node_id != expected {
                link.close("unexpected node id");
                return Err(MeshError::Handshake(format!(
                    "dialed {expected}, reached {}",
                    hello.node_id
                )));
            }
        }
        if hello.node_id == self.local.node_id {
            link.close("connected to self");
            return Err(MeshError::Handshake("connected to self".into()));
        }
        tracing::info!(peer = %hello.node_id, generation = hello.generation, remote = %link.remote_addr(), "mesh link up");
        metrics::counter!("herald_mesh_links_established_total").increment(1);
        let replaced = self.lock_links().insert(hello.node_id.clone(), link);
        if let Some(old) = replaced {
            old.close("replaced by a newer link");
        }
        Ok(())
    }

    /// Called by a link's tasks when its connection ends.
    pub(crate) fn link_closed(&self, peer: &NodeId, connection_id: usize) {
        let mut links = self.lock_links();
        if links
            .get(peer)
            .is_some_and(|link| link.connection_id() == connection_id)
        {
            links.remove(peer);
            tracing::info!(%peer, "mesh link down");
        }
    }

    /// Closes the link to `peer` if nothing arrived on it for `window`. Gossip saying a peer
    /// is dead or gone is a reason to look, not proof: a link that still hears its peer (every
    /// live peer sends keep-alives and positions) stays up. Answers whether it was closed.
    pub async fn drop_link_if_silent(&self, peer: &NodeId, window: Duration, reason: &str) -> bool {
        let heard = |links: &HashMap<NodeId, Link>| {
            links
                .get(peer)
                .map(|link| (link.connection_id(), link.datagrams_received()))
        };
        let Some(before) = heard(&self.lock_links()) else {
            return false;
        };
        tokio::time::sleep(window).await;
        let after = heard(&self.lock_links());
        if after != Some(before) {
            if after.is_some_and(|(id, _)| id == before.0) {
                tracing::info!(%peer, reason, "keeping a mesh link that still hears its peer");
            }
            return false;
        }
        self.drop_link(peer, reason);
        true
    }

    /// Closes the link to a peer that broke the protocol (application code 4), counting and
    /// logging why.
    pub fn refuse_peer(&self, peer: &NodeId, label: &'static str, reason: &str) {
        metrics::counter!("herald_mesh_peer_violations_total", "reason" => label).increment(1);
        tracing::warn!(%peer, reason, "peer broke the mesh protocol; closing its link");
        let removed = self.lock_links().remove(peer);
        if let Some(link) = removed {
            link.close_with(4, "protocol violation");
        }
    }

    /// Closes the link to `peer`, if any.
    pub fn drop_link(&self, peer: &NodeId, reason: &str) {
        let removed = self.lock_links().remove(peer);
        if let Some(link) = removed {
            link.close(reason);
            tracing::info!(%peer, reason, "mesh link closed");
        }
    }

    /// Whether `peer` has an open link.
    pub fn is_linked(&self, peer: &NodeId) -> bool {
        self.lock_links().get(peer).is_some_and(Link::is_open)
    }

    /// The peers with an open link.
    pub fn linked_peers(&self) -> Vec<NodeId> {
        self.lock_links()
            .iter()
            .filter(|(_, link)| link.is_open())
            .map(|(peer, _)| peer.clone())
            .collect()
    }

    /// Each linked peer with its link's number (unique for the life of the process: a new
    /// connection to the same peer has another) and the generation its `Hello` said.
    pub fn link_identities(&self) -> Vec<(NodeId, usize, u64)> {
        self.lock_links()
            .iter()
            .map(|(peer, link)| (peer.clone(), link.connection_id(), link.generation()))
            .collect()
    }

    /// The number of the link to `peer` right now, if any (see [`Self::link_identities`]).
    pub fn link_number(&self, peer: &NodeId) -> Option<usize> {
        self.lock_links().get(peer).map(|link| link.connection_id())
    }

    pub fn links(&self) -> Vec<LinkInfo> {
        self.lock_links().values().map(Link::info).collect()
    }

    /// Queues an encoded frame for every linked peer; a full queue drops it (see module docs).
    pub fn push_to_all(&self, bytes: &Arc<[u8]>) {
        for link in self.lock_links().values() {
            link.try_send(bytes);
        }
    }

    /// Queues an encoded frame for one peer; a full queue drops it.
    pub fn push_to(&self, peer: &NodeId, bytes: &Arc<[u8]>) -> Result<(), MeshError> {
        let links = self.lock_links();
        let link = links
            .get(peer)
            .ok_or_else(|| MeshError::NoLink(peer.clone()))?;
        link.try_send(bytes);
        Ok(())
    }

    /// Queues an encoded frame for one peer, waiting for queue space.
    pub async fn send_to(&self, peer: &NodeId, bytes: Arc<[u8]>) -> Result<(), MeshError> {
        let sender = {
            let links = self.lock_links();
            links
                .get(peer)
                .ok_or_else(|| MeshError::NoLink(peer.clone()))?
                .sender()
        };
        sender
            .send(bytes)
            .await
            .map_err(|_| MeshError::NoLink(peer.clone()))
    }

    /// Encodes `frames` and queues them for `peer` in order, each waiting at most `timeout` for
    /// queue space; answers the bytes queued, or `None` as soon as one could not be (no link,
    /// full for too long, or a frame that does not encode).
    pub async fn send_frames_within(
        &self,
        peer: &NodeId,
        frames: impl IntoIterator<Item = Frame>,
        timeout: std::time::Duration,
    ) -> Option<usize> {
        let mut sent = 0;
        for frame in frames {
            let bytes = frame::encode(&frame).ok()?;
            let length = bytes.len();
            match tokio::time::timeout(timeout, self.send_to(peer, Arc::from(bytes))).await {
                Ok(Ok(())) => sent += length,
                _ => return None,
            }
        }
        Some(sent)
    }

    /// Closes the links whose peer acknowledged nothing new for [`ACK_SILENCE`]. `seen` is the
    /// watchdog's memory: per link number, the last RTT mark and when it last moved; it keeps
    /// only links that exist.
    fn close_unacknowledged(&self, seen: &mut HashMap<usize, (u128, Instant)>) {
        let now = Instant::now();
        let counts: Vec<(NodeId, usize, u128)> = self
            .lock_links()
            .iter()
            .map(|(peer, link)| {
                (
                    peer.clone(),
                    link.connection_id(),
                    link.heard_by_peer_mark(),
                )
            })
            .collect();
        seen.retain(|id, _| counts.iter().any(|(_, link, _)| link == id));
        for (peer, link, acks) in counts {
            let entry = seen.entry(link).or_insert((acks, now));
            if entry.0 != acks {
                *entry = (acks, now);
            } else if now.duration_since(entry.1) >= ACK_SILENCE {
                seen.remove(&link);
                let removed = {
                    let mut links = self.lock_links();
                    match links.get(&peer) {
                        Some(current) if current.connection_id() == link => links.remove(&peer),
                        _ => None,
                    }
                };
                if let Some(removed) = removed {
                    metrics::counter!("herald_mesh_links_unacknowledged_total").increment(1);
                    removed.close("no acknowledgement");
                    tracing::info!(%peer, silence_ms = ACK_SILENCE.as_millis() as u64, "mesh link closed: the peer acknowledged nothing");
                }
            }
        }
    }

    /// Closes every link and the endpoint; peers see the links end at once.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let links: Vec<Link> = self.lock_links().drain().map(|(_, link)| link).collect();
        for link in links {
            link.close("node shutting down");
        }
        self.endpoint.close(0u32.into(), b"shutdown");
    }

    fn lock_links(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_dialing(&self) -> std::sync::MutexGuard<'_, HashSet<NodeId>> {
        self.dialing.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs [`Mesh::close_unacknowledged`] every [`ACK_CHECK`] until the mesh is dropped or closed.
async fn ack_watchdog(mesh: std::sync::Weak<Mesh>) {
    let mut seen = HashMap::new();
    let mut ticker = tokio::time::interval(ACK_CHECK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(mesh) = mesh.upgrade() else {
            return;
        };
        if mesh.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        mesh.close_unacknowledged(&mut seen);
    }
}
