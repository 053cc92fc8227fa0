//! The mesh backplane: replication over the QUIC mesh, membership from gossip.
//!
//! - Live push: every commit of this node's own events is encoded once and queued for every
//!   linked peer; events stored from peers are not pushed on (N-1 transfers per event).
//! - Ingest: pushed and pulled events are stored idempotently; the store holds back an event
//!   behind a gap and reports the gap, which is pulled from the peer that sent it.
//! - Anti-entropy: every tick each node sends its log position to every peer; a node that sees
//!   a peer ahead for some origin pulls the missing range (a window at a time) from it. This is
//!   also how a restarted or wiped node catches up, and how events dropped from a full link
//!   queue are recovered.
//! - Replication acks: the position a peer sends after storing a push doubles as the ack that
//!   `replication = 2` publishes wait for.
//! - Below the floor: a pull that reaches below what the serving peer keeps is answered
//!   `Pruned`, and the asker catches up through a snapshot (`backplane/mesh_snapshot.rs`).
//! - Retention: every tick the store learns what every linked peer holds (the pointwise
//!   minimum of their positions), and prunes nothing above it but to stay under `max_disk`.
//! - Dialing: for each live member the node with the lower id dials; one link per pair.
//! - Ephemeral events go only to peers that announced a subscriber of their channel, or whose
//!   interest is unknown (`backplane/mesh_interest.rs`).
//! - Presence (`backplane/mesh_presence.rs`): each node streams its own presence to every
//!   linked peer (a snapshot per link, then deltas), and drops a peer's entries as soon as
//!   gossip says it is gone or its link has been gone for a second.
//! - Links end on authenticated facts: the QUIC connection failing (the peer acknowledged
//!   nothing for `mesh::ACK_SILENCE`, or its idle timeout), or gossip saying the peer is gone
//!   while its link has been silent for `SILENT_LINK`; gossip alone never closes a link that
//!   still hears its peer.
//! - Readiness under partition (`backplane/mesh_quorum.rs`): the node is healthy only while it
//!   reaches a quorum of the members it knows (itself plus peers alive by gossip *and* linked,
//!   more than half of itself plus the members alive within `QUORUM_MEMORY`, ties to the side
//!   of the smallest node id). A cut is noticed within 2 s: gossip marks the peer dead (phi 8
//!   at 100 ms rounds, typically 0.4 to 0.7 s), or the link drops once the peer acknowledged
//!   nothing for 1.25 s (which also catches a one-way cut, where gossip on the deaf side goes
//!   on believing the peer alive). Each side of a partition keeps accepting publishes and
//!   delivering them to its own clients; once it heals, anti-entropy pulls what each side
//!   missed and every node converges.
//! - Replication lag (`backplane/mesh_lag.rs`): how long the oldest own event a peer has not
//!   reported holding has been committed, and the link state per peer, for `/metrics`.
//! - Rejoining after a stall (`backplane/mesh_rejoin.rs`): a node whose ticks stopped for more
//!   than a second (SIGSTOP, a paused VM) is unready until it holds what its peers answered
//!   when it asked them after it woke, so that it never passes stale state off as current.
//! - Own seqs (`backplane/mesh_fence.rs`): the store's own-seq fence learns the highest seq of
//!   this node's origin that a linked peer holds, and opens once every live peer reported; a
//!   node restored from an older copy pulls its own events back (anti-entropy pulls any
//!   origin, its own included) before it numbers new ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::mesh_fence;
use super::mesh_interest::PeerInterest;
use super::mesh_lag::ReplicationLag;
use super::mesh_presence::MeshPresence;
use super::mesh_quorum::{QuorumMemory, QuorumView};
use super::mesh_rejoin::{PeersSeen, Rejoin};
use super::mesh_serving::Serving;
use super::mesh_snapshot::{self, SnapshotCatchUp};
use super::mesh_validate;
use super::{Backplane, BackplaneHealth, PeerSummary};
use crate::cluster::{Cluster, MemberState, MembershipChange, keys};
use crate::event::{NodeId, SharedEvent, VersionVector};
use crate::hub::Hub;
use crate::mesh::{Frame, Inbound, LinkInfo, Mesh, frame};
use crate::presence::Presence;
use crate::store::Store;
use crate::store::own_fence::OwnSeqFence;

/// How often positions are exchanged, gaps looked for, peers dialed and gossip keys refreshed.
pub const TICK: Duration = Duration::from_millis(200);
/// Most events asked for in one pull.
const PULL_WINDOW: u64 = 20_000;
/// Events read per store query when serving a pull.
const PULL_PAGE: usize = 2_000;
/// A pull with no progress for this long is asked again (possibly from another peer).
const PULL_STALE: Duration = Duration::from_secs(2);
/// How long a link must have heard nothing before gossip's word that its peer is gone closes
/// it: twice the keep-alive, during which a live peer also sends several positions.
const SILENT_LINK: Duration = Duration::from_secs(1);
/// Most event frames stored in one transaction.
const INGEST_BATCH_FRAMES: usize = 64;

struct PullInFlight {
    upto: u64,
    asked: Instant,
}

pub struct MeshBackplane {
    mesh: Arc<Mesh>,
    cluster: Arc<Cluster>,
    /// The latest position each linked peer reported.
    peer_positions: Mutex<HashMap<NodeId, VersionVector>>,
    pulls: Mutex<HashMap<NodeId, PullInFlight>>,
    /// The highest seq of this node's own origin that some peer reported holding.
    replicated: watch::Sender<u64>,
    /// This node's store origin, set when it starts running.
    origin: std::sync::OnceLock<NodeId>,
    snapshot: SnapshotCatchUp,
    serving: Serving,
    /// How far ahead of the local clock a peer's stamps may be.
    max_drift: Duration,
    /// Peers' channel interest, for ephemeral events (`mesh_interest`).
    interest: Arc<PeerInterest>,
    /// When each member was last alive, for the quorum (`mesh_quorum`).
    quorum: QuorumMemory,
    /// Catching up after this node was stalled (`mesh_rejoin`).
    rejoin: Rejoin,
    /// Presence to and from peers (`mesh_presence`), set when the backplane starts running.
    presence: std::sync::OnceLock<Arc<MeshPresence>>,
    /// How far behind each peer is on this node's own events (`mesh_lag`).
    lag: ReplicationLag,
    /// The store's own-seq fence, told what peers hold of this node's origin (`mesh_fence`).
    fence: std::sync::OnceLock<Arc<OwnSeqFence>>,
}

impl MeshBackplane {
    pub fn new(mesh: Arc<Mesh>, cluster: Arc<Cluster>, max_drift: Duration) -> Arc<Self> {
        Arc::new(Self {
            mesh,
            cluster,
            peer_positions: Mutex::new(HashMap::new()),
            pulls: Mutex::new(HashMap::new()),
            replicated: watch::channel(0).0,
            origin: std::sync::OnceLock::new(),
            snapshot: SnapshotCatchUp::default(),
            serving: Serving::default(),
            max_drift,
            interest: Arc::default(),
            quorum: QuorumMemory::default(),
            rejoin: Rejoin::default(),
            presence: std::sync::OnceLock::new(),
            lag: ReplicationLag::default(),
            fence: std::sync::OnceLock::new(),
        })
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.mesh
    }

    /// Starts ingest, presence and the periodic tick; all end when `stop` fires.
    pub fn run(
        self: &Arc<Self>,
        store: Store,
        hub: Arc<Hub>,
        presence: Arc<Presence>,
        inbound: mpsc::Receiver<Inbound>,
        stop: watch::Receiver<bool>,
    ) {
        let _ = self.origin.set(store.origin().clone());
        let _ = self.fence.set(Arc::clone(store.own_fence()));
        self.lag.started(hub.delivered().get(store.origin()));
        let presence = MeshPresence::new(presence);
        let _ = self.presence.set(Arc::clone(&presence));
        tokio::spawn(presence.run(
            Arc::clone(&self.mesh),
            Arc::clone(&self.cluster),
            stop.clone(),
        ));
        tokio::spawn(Arc::clone(self).ingest(
            store.clone(),
            Arc::clone(&hub),
            inbound,
            stop.clone(),
        ));
        tokio::spawn(Arc::clone(&self.interest).announce(
            Arc::clone(&self.mesh),
            Arc::clone(&hub),
            stop.clone(),
        ));
        tokio::spawn(Arc::clone(self).tick_loop(store, hub, stop.clone()));
        tokio::spawn(Arc::clone(self).follow_membership(stop));
    }

    /// Logs membership changes and dials a new or restarted peer at once rather than at the
    /// next tick.
    async fn follow_membership(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut changes = self.cluster.changes();
        loop {
            let batch = tokio::select! {
                batch = changes.next() => match batch { Some(batch) => batch, None => return },
                _ = stop.wait_for(|stop| *stop) => return,
            };
            for change in &batch {
                match change {
                    MembershipChange::Added(member) => {
                        tracing::info!(peer = %member.node_id, generation = member.generation, state = ?member.state, "member added");
                    }
                    MembershipChange::Updated(member) => {
                        tracing::debug!(peer = %member.node_id, generation = member.generation, state = ?member.state, "member updated");
                        if member.state != MemberState::Alive {
                            if let Ok(peer) = NodeId::new(&member.node_id) {
                                let mesh = Arc::clone(&self.mesh);
                                tokio::spawn(async move {
                                    mesh.drop_link_if_silent(
                                        &peer,
                                        SILENT_LINK,
                                        "gossip says the peer is gone and its link is silent",
                                    )
                                    .await
                                });
                            }
                        }
                    }
                    MembershipChange::Removed(node_id) => {
                        tracing::info!(peer = %node_id, "member removed")
                    }
                }
            }
            self.dial_peers();
        }
    }

    async fn ingest(
        self: Arc<Self>,
        store: Store,
        hub: Arc<Hub>,
        mut inbound: mpsc::Receiver<Inbound>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut pending: std::collections::VecDeque<Inbound> = std::collections::VecDeque::new();
        loop {
            let Inbound { from, frame } = match pending.pop_front() {
                Some(inbound) => inbound,
                None => tokio::select! {
                    received = inbound.recv() => match received { Some(inbound) => inbound, None => return },
                    _ = stop.wait_for(|stop| *stop) => return,
                },
            };
            if !self.admit(&from, &frame, &hub, &store) {
                continue;
            }
            match frame {
                Frame::Events { events } | Frame::Range { events, .. } => {
                    // Group commit for replication: every event frame already waiting joins
                    // this one in a single store transaction.
                    let mut batch = vec![(from, events)];
                    while pending.is_empty() && batch.len() < INGEST_BATCH_FRAMES {
                        match inbound.try_recv() {
                            Ok(Inbound {
                                from,
                                frame: frame @ (Frame::Events { .. } | Frame::Range { .. }),
                            }) => {
                                if !self.admit(&from, &frame, &hub, &store) {
                                    continue;
                                }
                                if let Frame::Events { events } | Frame::Range { events, .. } =
                                    frame
                                {
                                    batch.push((from, events));
                                }
                            }
                            Ok(other) => pending.push_back(other),
                            Err(_) => break,
                        }
                    }
                    self.store_remote(&store, batch).await;
                }
                Frame::Position { vector } => {
                    self.peer_reported(&from, vector, &hub, store.retired())
                }
                Frame::AskPosition { nonce } => {
                    let answer = Frame::PositionAnswer {
                        nonce,
                        vector: hub.delivered(),
                    };
                    if let Ok(bytes) = frame::encode(&answer) {
                        let _ = self.mesh.push_to(&from, &Arc::from(bytes));
                    }
                }
                Frame::PositionAnswer { nonce, vector } => {
                    self.rejoin.on_answer(&from, nonce, &vector);
                    self.peer_reported(&from, vector, &hub, store.retired())
                }
                Frame::Pull {
                    origin,
                    after,
                    upto,
                } => {
                    let (mesh, store, hub) =
                        (Arc::clone(&self.mesh), store.clone(), Arc::clone(&hub));
                    let peer = from.clone();
                    self.serving.spawn(&from, "pull", async move {
                        serve_pull(&mesh, &store, &hub, &peer, &origin, after, upto).await;
                    });
                }
                Frame::Interest(message) => {
                    let link = self.mesh.link_number(&from);
                    self.interest.on_message(&from, link, message);
                }
                Frame::Presence(message) => {
                    if let Some(presence) = self.presence.get() {
                        let link = self.mesh.link_number(&from);
                        presence.on_message(&from, link, message);
                    }
                }
                Frame::Ephemeral { events } => {
                    metrics::counter!("herald_mesh_ephemeral_received_total")
                        .increment(events.len() as u64);
                    let events: Vec<SharedEvent> =
                        events.into_iter().filter(|e| e.ephemeral).collect();
                    hub.dispatch(&events);
                }
                Frame::Hello { .. } => {
                    tracing::warn!(peer = %from, "unexpected hello on an established link");
                }
                Frame::Pruned { origin, pruned } => {
                    self.snapshot
                        .on_pruned(&self.mesh, &store, &from, &origin, pruned)
                        .await;
                }
                Frame::SnapshotRequest { id, basis } => {
                    let (mesh, store) = (Arc::clone(&self.mesh), store.clone());
                    let peer = from.clone();
                    self.serving.spawn(&from, "snapshot", async move {
                        mesh_snapshot::serve(&mesh, &store, &peer, id, basis).await;
                    });
                }
                Frame::SnapshotPart { id, part } => {
                    self.snapshot.on_part(&store, &from, id, part).await;
                }
                Frame::SnapshotEnd { id, end } => {
                    if self.snapshot.on_end(&store, &from, id, end).await {
                        if let Ok(position) = store.version_vector().await {
                            self.forget_finished_pulls(&position);
                        }
                    }
                }
            }
        }
    }

    /// Checks a frame against what its sender may claim (`mesh_validate`); a lie closes the
    /// sender's link and the frame is dropped.
    fn admit(&self, from: &NodeId, frame: &Frame, hub: &Hub, store: &Store) -> bool {
        if matches!(frame, Frame::Hello { .. }) {
            return true;
        }
        let mut known = hub.delivered();
        for member in self.cluster.members().iter() {
            known.merge(&member.log_position);
        }
        // What gossip says the cluster holds of this node's origin: more than this node holds
        // after an older backup was restored (`store::own_fence`).
        let own_committed = known.get(store.origin());
        if let Some(reported) = lock(&self.peer_positions).get(from) {
            known.merge(reported);
        }
        let lookup = |origin: &NodeId| Some(known.get(origin)).filter(|seq| *seq > 0);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let drift_ms = u64::try_from(self.max_drift.as_millis()).unwrap_or(u64::MAX);
        let bounds = mesh_validate::Bounds {
            own_origin: store.origin(),
            own_committed,
            known: &lookup,
            latest_stamp: crate::event::Hlc::from_parts(now_ms.saturating_add(drift_ms), u16::MAX),
            now_ms,
        };
        match mesh_validate::check(frame, &bounds) {
            Ok(()) => true,
            Err(violation) => {
                self.mesh
                    .refuse_peer(from, violation.label(), &violation.to_string());
                false
            }
        }
    }

    /// Stores events pushed or pulled from peers in one transaction, acks each sender with this
    /// node's position, and pulls what is missing behind a gap from a peer that sent events of
    /// that origin.
    async fn store_remote(&self, store: &Store, batch: Vec<(NodeId, Vec<SharedEvent>)>) {
        let mut senders: Vec<NodeId> = Vec::new();
        let mut sources: HashMap<NodeId, NodeId> = HashMap::new();
        let mut events = Vec::new();
        for (from, frame_events) in batch {
            for event in &frame_events {
                sources
                    .entry(event.origin.clone())
                    .or_insert_with(|| from.clone());
            }
            if !senders.contains(&from) {
                senders.push(from);
            }
            events.extend(frame_events);
        }
        if events.is_empty() {
            return;
        }
        match store.apply_remote(events).await {
            Ok(applied) => {
                // The position doubles as the replication ack: at once for a sender whose
                // publishes wait for it; the others have it with the next tick's position.
                let waiting: Vec<&NodeId> = senders
                    .iter()
                    .filter(|sender| self.waits_for_acks(sender))
                    .collect();
                if !waiting.is_empty() {
                    if let Ok(bytes) = frame::encode(&Frame::Position {
                        vector: applied.position.clone(),
                    }) {
                        let bytes: Arc<[u8]> = Arc::from(bytes);
                        for sender in waiting {
                            if self.mesh.push_to(sender, &bytes).is_ok() {
                                metrics::counter!("herald_mesh_acks_sent_total").increment(1);
                            }
                        }
                    }
                }
                for (origin, first_missing, highest) in applied.gaps {
                    if let Some(source) = sources.get(&origin) {
                        let after = first_missing.saturating_sub(1);
                        self.request_pull(source, &origin, after, highest, true);
                    }
                }
                self.forget_finished_pulls(&applied.position);
            }
            Err(error) => {
                tracing::warn!(?senders, %error, "storing replicated events failed");
            }
        }
    }

    fn peer_reported(
        &self,
        peer: &NodeId,
        vector: VersionVector,
        hub: &Hub,
        retired: &crate::store::RetiredOrigins,
    ) {
        if let Some(origin) = self.origin.get() {
            let theirs = vector.get(origin);
            self.lag.reported(peer, theirs);
            self.replicated.send_if_modified(|acked| {
                if theirs > *acked {
                    *acked = theirs;
                    true
                } else {
                    false
                }
            });
        }
        let mine = hub.delivered();
        for (origin, seq) in vector.iter() {
            let have = mine.get(origin);
            // A peer that has not retired an origin yet still names it: nothing to pull.
            let retired = retired.retired_at(origin).is_some_and(|at| seq <= at);
            if seq > have && !retired {
                self.request_pull(peer, origin, have, seq, false);
            }
        }
        lock(&self.peer_positions).insert(peer.clone(), vector);
        self.guard_own_seqs();
    }

    /// Tells the store's own-seq fence what linked peers hold of this node's origin, and opens
    /// it once every live peer has said (`mesh_fence`).
    fn guard_own_seqs(&self) {
        let (Some(fence), Some(origin)) = (self.fence.get(), self.origin.get()) else {
            return;
        };
        let members = self.cluster.members();
        let view = mesh_fence::assess(origin, &members, &lock(&self.peer_positions));
        fence.set_floor(view.floor);
        if view.heard_from_all {
            fence.open();
        }
    }

    /// Asks `peer` for `origin`'s events in `(after, upto]` unless a fresh pull covers them.
    fn request_pull(&self, peer: &NodeId, origin: &NodeId, after: u64, upto: u64, urgent: bool) {
        let upto = upto.min(after.saturating_add(PULL_WINDOW));
        {
            let mut pulls = lock(&self.pulls);
            if let Some(pull) = pulls.get(origin) {
                let fresh = pull.asked.elapsed() < PULL_STALE;
                if fresh && (pull.upto >= upto || !urgent) {
                    return;
                }
            }
            pulls.insert(
                origin.clone(),
                PullInFlight {
                    upto,
                    asked: Instant::now(),
                },
            );
        }
        let pull = Frame::Pull {
            origin: origin.clone(),
            after,
            upto,
        };
        if let Ok(bytes) = frame::encode(&pull) {
            if self.mesh.push_to(peer, &Arc::from(bytes)).is_ok() {
                metrics::counter!("herald_mesh_pulls_requested_total").increment(1);
                tracing::debug!(%peer, %origin, after, upto, "pulling missing events");
            }
        }
    }

    fn forget_finished_pulls(&self, position: &VersionVector) {
        lock(&self.pulls).retain(|origin, pull| position.get(origin) < pull.upto);
    }

    async fn tick_loop(
        self: Arc<Self>,
        store: Store,
        hub: Arc<Hub>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            self.dial_peers();
            let position = hub.delivered();
            // A stall shows as a long gap between ticks (`mesh_rejoin`).
            if let Some(nonce) = self.rejoin.on_tick(&position, &self.peers_seen()) {
                if let Ok(bytes) = frame::encode(&Frame::AskPosition { nonce }) {
                    self.mesh.push_to_all(&Arc::from(bytes));
                }
            }
            if let Ok(bytes) = frame::encode(&Frame::Position {
                vector: position.clone(),
            }) {
                self.mesh.push_to_all(&Arc::from(bytes));
            }
            let linked = self.mesh.linked_peers();
            let horizon = {
                let mut positions = lock(&self.peer_positions);
                positions.retain(|peer, _| linked.contains(peer));
                positions
                    .values()
                    .fold(None, |least: Option<VersionVector>, vector| {
                        Some(match least {
                            Some(least) => least.meet_known(vector),
                            None => vector.clone(),
                        })
                    })
            };
            store.set_prune_horizon(horizon);
            self.guard_own_seqs();
            let counts = hub.counts();
            self.cluster
                .publish(vec![
                    (keys::CONNECTIONS, counts.connections.to_string()),
                    (keys::USERS, counts.users.to_string()),
                    (
                        keys::BROADCAST_USERS,
                        hub.channel_users("broadcasts").to_string(),
                    ),
                    (keys::LOG_POSITION, keys::encode_vector(&position)),
                    (keys::ORIGIN, store.origin().to_string()),
                ])
                .await;
            store.set_live_origins(self.live_origins());
            // Remembers who is alive even while nobody asks for readiness.
            self.quorum_view();
        }
    }

    /// Whether this node reaches a quorum, and which known peers it cannot reach.
    fn quorum_view(&self) -> QuorumView {
        self.quorum
            .assess(&self.cluster.members(), &self.mesh.linked_peers())
    }

    /// Whether `peer` answers its publishes only once a peer stored them (`replication` 2, as
    /// its gossip says; a peer that did not say, or is not in the view yet, is assumed to).
    fn waits_for_acks(&self, peer: &NodeId) -> bool {
        self.cluster
            .members()
            .iter()
            .find(|member| member.node_id == peer.as_str())
            .is_none_or(|member| member.replication != 1)
    }

    /// The live members and the origin each said it publishes under.
    fn live_origins(&self) -> Option<Vec<crate::store::LiveMember>> {
        Some(
            self.cluster
                .members()
                .iter()
                .filter(|m| !m.is_self && m.state == MemberState::Alive)
                .map(|m| crate::store::LiveMember {
                    node_id: m.node_id.clone(),
                    origin: m.origin.as_deref().and_then(|o| NodeId::new(o).ok()),
                })
                .collect(),
        )
    }

    fn dial_peers(&self) {
        let own = self.mesh.local().node_id.clone();
        for member in self.cluster.live_peers() {
            let (Some(addr), Ok(peer)) = (member.mesh_addr, NodeId::new(&member.node_id)) else {
                continue;
            };
            if own < peer {
                self.mesh.ensure_link(&peer, addr);
            }
        }
    }

    /// The peers alive by gossip or linked, for `mesh_rejoin`.
    fn peers_seen(&self) -> PeersSeen {
        let members = self.cluster.members();
        let mut reachable = self.mesh.linked_peers();
        for member in members.iter() {
            if !member.is_self && member.state == MemberState::Alive {
                if let Ok(peer) = NodeId::new(&member.node_id) {
                    if !reachable.contains(&peer) {
                        reachable.push(peer);
                    }
                }
            }
        }
        PeersSeen {
            reachable,
            any_known: members.iter().any(|member| !member.is_self),
        }
    }

    /// Live members (by gossip) other than this node.
    fn believed_alive(&self) -> usize {
        self.cluster
            .members()
            .iter()
            .filter(|m| !m.is_self && m.state == MemberState::Alive)
            .count()
    }
}

async fn serve_pull(
    mesh: &Mesh,
    store: &Store,
    hub: &Hub,
    peer: &NodeId,
    origin: &NodeId,
    after: u64,
    upto: u64,
) {
    let upto = upto
        .min(hub.delivered().get(origin))
        .min(after.saturating_add(mesh_validate::MAX_PULL));
    match store.read(crate::store::state::pruned_positions).await {
        Ok(pruned) if after < pruned.get(origin) => {
            // The range has holes here: the asker needs a snapshot, not a part of the log.
            let answer = Frame::Pruned {
                origin: origin.clone(),
                pruned: pruned.get(origin),
            };
            if let Ok(bytes) = frame::encode(&answer) {
                let _ = mesh.send_to(peer, Arc::from(bytes)).await;
            }
            return;
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%peer, %origin, %error, "serving a pull failed");
            return;
        }
    }
    let mut after = after;
    while after < upto {
        let origin_for_query = origin.clone();
        let page = store
            .read(move |c| {
                crate::store::state::log_range(c, &origin_for_query, after, upto, PULL_PAGE)
            })
            .await;
        let events = match page {
            Ok(events) if !events.is_empty() => events,
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(%peer, %origin, %error, "serving a pull failed");
                return;
            }
        };
        after = events.last().map(|e| e.seq).unwrap_or(upto);
        let events: Vec<SharedEvent> = events.into_iter().map(Arc::new).collect();
        for chunk in frame::chunk_events(&events) {
            let Ok(bytes) = frame::encode(&Frame::Range {
                origin: origin.clone(),
                events: chunk,
            }) else {
                return;
            };
            if mesh.send_to(peer, Arc::from(bytes)).await.is_err() {
                return;
            }
        }
        metrics::counter!("herald_mesh_events_served_total").increment(events.len() as u64);
    }
}

impl Backplane for MeshBackplane {
    /// Pushes this node's own events to every peer. Events it stored from peers are not sent
    /// on: every origin pushes its own to all, and a peer that missed some (a link was down)
    /// pulls them from whoever reports holding them.
    fn ship(&self, events: &[SharedEvent]) {
        let Some(own) = self.origin.get() else {
            return;
        };
        let own_events: Vec<SharedEvent>;
        let events = if events.iter().all(|e| &e.origin == own) {
            events
        } else {
            own_events = events
                .iter()
                .filter(|e| &e.origin == own)
                .cloned()
                .collect();
            &own_events
        };
        let Some(last) = events.last() else {
            return;
        };
        self.lag.committed(last.seq);
        for chunk in frame::chunk_events(events) {
            match frame::encode(&Frame::Events { events: chunk }) {
                Ok(bytes) => self.mesh.push_to_all(&Arc::from(bytes)),
                Err(error) => tracing::error!(%error, "cannot encode events for peers"),
            }
        }
    }

    /// Sends ephemeral events only to peers with a subscriber of their channel, or whose
    /// interest is not known (`mesh_interest`).
    fn ship_ephemeral(&self, events: &[SharedEvent]) {
        self.interest.ship(&self.mesh, events);
    }

    /// Healthy while this node reaches a quorum (`mesh_quorum`) and is not catching up, from a
    /// snapshot or after a stall (`mesh_rejoin`).
    fn health(&self) -> BackplaneHealth {
        let alive = self.believed_alive();
        let linked = self.mesh.linked_peers().len();
        let partition = self.quorum_view();
        let quorum = partition.quorum;
        let mut detail = format!(
            "linked to {linked} peers; {alive} believed alive; reaches {} of {} known members",
            quorum.reachable, quorum.known
        );
        if !quorum.ready {
            detail.push_str("; no quorum");
        }
        if !partition.unreachable.is_empty() {
            detail.push_str(&format!(
                "; unreachable: {}",
                partition.unreachable.join(", ")
            ));
        }
        let catching_up = self.snapshot.active_peer();
        if let Some(peer) = &catching_up {
            detail.push_str(&format!("; catching up from a snapshot of {peer}"));
        }
        let stalled = self.rejoin.catching_up();
        if let Some(stall) = stalled {
            detail.push_str(&format!(
                "; catching up after a stall of {:.1} s",
                stall.as_secs_f64()
            ));
        }
        BackplaneHealth {
            kind: "mesh",
            healthy: quorum.ready && catching_up.is_none() && stalled.is_none(),
            detail,
            partition: Some(partition),
        }
    }

    fn linked_peers(&self) -> usize {
        self.mesh.linked_peers().len()
    }

    fn replication_watch(&self) -> Option<watch::Receiver<u64>> {
        Some(self.replicated.subscribe())
    }

    fn links(&self) -> Vec<LinkInfo> {
        self.mesh.links()
    }

    fn cluster(&self) -> Option<Arc<Cluster>> {
        Some(Arc::clone(&self.cluster))
    }

    fn peers(&self) -> Vec<PeerSummary> {
        let linked = self.mesh.linked_peers();
        self.cluster
            .members()
            .iter()
            .filter(|member| !member.is_self)
            .map(|member| PeerSummary {
                node_id: member.node_id.clone(),
                state: member.state,
                http_addr: member.http_addr.map(|addr| addr.to_string()),
                connections: member.connections,
                users: member.users,
                broadcast_users: member.broadcast_users,
                log_position: member.log_position.clone(),
                linked: linked.iter().any(|peer| peer.as_str() == member.node_id),
            })
            .collect()
    }

    fn close(&self) {
        self.cluster.stop();
        self.mesh.close();
    }

    fn record_metrics(&self) {
        let members: Vec<NodeId> = self
            .cluster
            .members()
            .iter()
            .filter(|member| !member.is_self)
            .filter_map(|member| NodeId::new(&member.node_id).ok())
            .collect();
        self.lag.record(&members, &self.mesh.linked_peers());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
