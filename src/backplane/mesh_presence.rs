//! Presence on the mesh: this node's own presence streamed to every linked peer, peers'
//! presence taken in, and a peer's entries removed when it is gone.
//!
//! The protocol ([`crate::presence::PresenceMessage`]), per link, like interest
//! (`mesh_interest`): when a link comes up (a new connection to the same peer is a new link),
//! or when the peer asks (`Resync`), the sender sends a snapshot: parts numbered from 0, the
//! first with `reset`, the last with `complete`; then every change as a delta numbered after
//! it, each change saying the user's connection count now (so a change that arrives twice is
//! harmless). Changes that come together wait [`COALESCE`] to share frames.
//!
//! The receiver stages a snapshot until its last part and then replaces the peer's table at
//! once, so a reconnect produces only the differences as joins and leaves, never a leave and a
//! join of everyone. A delta that does not follow (another link, another generation, a gap) is
//! dropped, the peer is asked for a snapshot, and what it said before stands until the
//! snapshot arrives.
//!
//! When a peer's entries go ([`Presence::remove_peer`]: a leave for each of its users nobody
//! else holds):
//! - at once when gossip no longer says it is alive (dead by the failure detector, typically
//!   0.4 to 0.7 s after a crash, or left);
//! - when its link has been gone, or replaced without a new snapshot, for [`LINK_GRACE`] (a
//!   one-way cut that gossip does not see: the link watchdog drops it within 1.25 s).
//!
//! A peer removed this way but still linked and alive again (a false suspicion) is asked for a
//! snapshot, and its users come back.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::cluster::{Cluster, MemberState};
use crate::event::NodeId;
use crate::mesh::{Frame, Mesh, frame};
use crate::presence::wire::MAX_CHANGES_PER_MESSAGE;
use crate::presence::{LocalChanges, Presence, PresenceChange, PresenceMessage};

/// How often links and liveness are looked at without another reason to.
pub const POLL: Duration = Duration::from_millis(100);
/// Changes arriving together wait this long to share frames.
pub const COALESCE: Duration = Duration::from_millis(5);
/// How long a presence frame may wait for room in a peer's queue.
pub const SEND_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a peer's entries outlive the link they arrived on.
pub const LINK_GRACE: Duration = Duration::from_secs(1);
/// A linked, live peer without a snapshot is asked for one after this long...
pub const RESYNC_AFTER: Duration = Duration::from_millis(300);
/// ...and again at most this often.
pub const RESYNC_EVERY: Duration = Duration::from_secs(1);

/// What this node heard from one peer, on one of its links.
struct Heard {
    generation: u64,
    link: Option<usize>,
    next_seq: u64,
    /// A snapshot being received (until its `complete` part).
    staging: Option<Vec<PresenceChange>>,
}

/// The sending side's state for one linked peer.
struct Synced {
    link: usize,
    next_seq: u64,
}

/// Presence on the mesh; see the module docs.
pub struct MeshPresence {
    presence: Arc<Presence>,
    heard: Mutex<HashMap<NodeId, Heard>>,
    /// Peers that asked for a snapshot.
    resync: Mutex<HashSet<NodeId>>,
    wake: Notify,
}

impl MeshPresence {
    pub fn new(presence: Arc<Presence>) -> Arc<Self> {
        Arc::new(Self {
            presence,
            heard: Mutex::new(HashMap::new()),
            resync: Mutex::new(HashSet::new()),
            wake: Notify::new(),
        })
    }

    /// Takes in a presence frame from `from`, read while the mesh's link to it was `link`.
    pub fn on_message(&self, from: &NodeId, link: Option<usize>, message: PresenceMessage) {
        let PresenceMessage::Update {
            generation,
            seq,
            reset,
            complete,
            changes,
        } = message
        else {
            lock(&self.resync).insert(from.clone());
            self.wake.notify_one();
            return;
        };
        metrics::counter!("herald_mesh_presence_changes_received_total")
            .increment(changes.len() as u64);
        let mut heard = lock(&self.heard);
        if reset {
            let mut entry = Heard {
                generation,
                link,
                next_seq: seq.saturating_add(1),
                staging: Some(changes),
            };
            if complete {
                if let Some(snapshot) = entry.staging.take() {
                    self.presence.replace_peer(from, snapshot);
                }
            }
            heard.insert(from.clone(), entry);
            return;
        }
        let follows = heard.get(from).is_some_and(|entry| {
            entry.generation == generation && entry.link == link && entry.next_seq == seq
        });
        if !follows {
            if heard.remove(from).is_some() {
                metrics::counter!("herald_mesh_presence_lost_total").increment(1);
                tracing::debug!(peer = %from, seq, "presence delta out of order; asking for a snapshot");
            }
            return;
        }
        let Some(entry) = heard.get_mut(from) else {
            return;
        };
        entry.next_seq = seq.saturating_add(1);
        match &mut entry.staging {
            Some(staging) => {
                if staging.len() + changes.len() > crate::presence::SourceTable::MAX_ENTRIES * 2 {
                    heard.remove(from);
                    return;
                }
                staging.extend(changes);
                if complete {
                    if let Some(snapshot) = entry.staging.take() {
                        self.presence.replace_peer(from, snapshot);
                    }
                }
            }
            None => self.presence.apply_peer(from, changes),
        }
    }

    /// Whether a complete snapshot of `peer` arrived on `link` (and is still in force).
    fn synced_with(&self, peer: &NodeId, link: usize) -> bool {
        lock(&self.heard)
            .get(peer)
            .is_some_and(|entry| entry.link == Some(link) && entry.staging.is_none())
    }

    /// Removes `peer`'s entries and forgets what it said, so that only a new snapshot brings
    /// them back.
    fn forget(&self, peer: &NodeId, why: &'static str) {
        let mut heard = lock(&self.heard);
        heard.remove(peer);
        if self.presence.peers().contains(peer) {
            tracing::debug!(peer = %peer, why, "removing the peer's presence");
            metrics::counter!("herald_presence_peers_removed_total", "why" => why).increment(1);
            self.presence.remove_peer(peer);
        }
    }

    /// Announces this node's presence to every linked peer and keeps peers' presence honest,
    /// until `stop` fires.
    pub async fn run(
        self: Arc<Self>,
        mesh: Arc<Mesh>,
        cluster: Arc<Cluster>,
        mut stop: watch::Receiver<bool>,
    ) {
        let generation = mesh.local().generation;
        let mut members = cluster.watch_members();
        let mut synced: HashMap<NodeId, Synced> = HashMap::new();
        let mut upkeep = Upkeep::default();
        let mut ticker = tokio::time::interval(POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let changed = tokio::select! {
                _ = ticker.tick() => false,
                _ = self.presence.local_changed() => true,
                _ = self.wake.notified() => false,
                _ = members.changed() => false,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            if changed {
                tokio::time::sleep(COALESCE).await;
            }
            let links = mesh.link_identities();
            self.check_peers(&cluster, &links, &mut upkeep);
            self.ask_for_snapshots(&mesh, &cluster, &links, &mut upkeep);
            synced.retain(|peer, state| {
                links
                    .iter()
                    .any(|(linked, link, _)| linked == peer && *link == state.link)
            });
            let changes = self.presence.take_local_changes();
            let asked: HashSet<NodeId> = std::mem::take(&mut *lock(&self.resync));
            let mut snapshot: Option<Vec<PresenceChange>> = None;
            for (peer, link, _) in &links {
                let due = changes == LocalChanges::Reset
                    || asked.contains(peer)
                    || !synced.contains_key(peer);
                if due {
                    let snapshot = snapshot.get_or_insert_with(|| self.presence.local_snapshot());
                    let frames = snapshot_frames(generation, snapshot);
                    let next_seq = frames.len() as u64;
                    synced.remove(peer);
                    if send_frames(&mesh, peer, frames).await {
                        metrics::counter!("herald_mesh_presence_snapshots_sent_total").increment(1);
                        synced.insert(
                            peer.clone(),
                            Synced {
                                link: *link,
                                next_seq,
                            },
                        );
                    }
                } else if let (LocalChanges::Delta(delta), Some(state)) =
                    (&changes, synced.get_mut(peer))
                {
                    if delta.is_empty() {
                        continue;
                    }
                    let frames = delta_frames(generation, state.next_seq, delta);
                    state.next_seq += frames.len() as u64;
                    if !send_frames(&mesh, peer, frames).await {
                        synced.remove(peer);
                    }
                }
            }
        }
    }

    /// Removes the entries of peers gossip no longer says are alive, and of peers whose link
    /// has been gone (or replaced without a snapshot) for [`LINK_GRACE`].
    fn check_peers(&self, cluster: &Cluster, links: &[(NodeId, usize, u64)], upkeep: &mut Upkeep) {
        let members = cluster.members();
        let now = Instant::now();
        let peers = self.presence.peers();
        upkeep.unlinked.retain(|peer, _| peers.contains(peer));
        for peer in peers {
            let alive = members
                .iter()
                .any(|m| !m.is_self && m.node_id == peer.as_str() && m.state == MemberState::Alive);
            if !alive {
                upkeep.unlinked.remove(&peer);
                self.forget(&peer, "gossip");
                continue;
            }
            let current = links
                .iter()
                .find(|(linked, ..)| linked == &peer)
                .is_some_and(|(_, link, _)| self.synced_with(&peer, *link));
            if current {
                upkeep.unlinked.remove(&peer);
                continue;
            }
            let since = *upkeep.unlinked.entry(peer.clone()).or_insert(now);
            if now.duration_since(since) >= LINK_GRACE {
                upkeep.unlinked.remove(&peer);
                self.forget(&peer, "link");
            }
        }
    }

    /// Asks linked, live peers whose presence this node does not hold (on their current link)
    /// for a snapshot, after [`RESYNC_AFTER`] and then at most every [`RESYNC_EVERY`].
    fn ask_for_snapshots(
        &self,
        mesh: &Mesh,
        cluster: &Cluster,
        links: &[(NodeId, usize, u64)],
        upkeep: &mut Upkeep,
    ) {
        let members = cluster.members();
        let now = Instant::now();
        let mut ask = Vec::new();
        for (peer, link, _) in links {
            let alive = members
                .iter()
                .any(|m| m.node_id == peer.as_str() && m.state == MemberState::Alive);
            if !alive || self.synced_with(peer, *link) {
                upkeep.missing.remove(peer);
                continue;
            }
            let state = upkeep.missing.entry(peer.clone()).or_insert(Missing {
                since: now,
                asked: None,
            });
            let waited = now.duration_since(state.since) >= RESYNC_AFTER;
            let quiet = state
                .asked
                .is_none_or(|asked| now.duration_since(asked) >= RESYNC_EVERY);
            if waited && quiet {
                state.asked = Some(now);
                ask.push(peer.clone());
            }
        }
        upkeep
            .missing
            .retain(|peer, _| links.iter().any(|(linked, ..)| linked == peer));
        if ask.is_empty() {
            return;
        }
        let Ok(bytes) = frame::encode(&Frame::Presence(PresenceMessage::Resync)) else {
            return;
        };
        let bytes: Arc<[u8]> = Arc::from(bytes);
        for peer in ask {
            if mesh.push_to(&peer, &bytes).is_ok() {
                metrics::counter!("herald_mesh_presence_resyncs_requested_total").increment(1);
            }
        }
    }
}

/// A linked peer whose presence this node does not hold.
struct Missing {
    since: Instant,
    asked: Option<Instant>,
}

#[derive(Default)]
struct Upkeep {
    /// Peers whose entries are not backed by their current link, since when.
    unlinked: HashMap<NodeId, Instant>,
    missing: HashMap<NodeId, Missing>,
}

/// A snapshot in parts of at most [`MAX_CHANGES_PER_MESSAGE`] changes, numbered from 0, the
/// first with `reset`, the last with `complete`.
fn snapshot_frames(generation: u64, snapshot: &[PresenceChange]) -> Vec<PresenceMessage> {
    let mut chunks: Vec<&[PresenceChange]> = snapshot.chunks(MAX_CHANGES_PER_MESSAGE).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, changes)| PresenceMessage::Update {
            generation,
            seq: index as u64,
            reset: index == 0,
            complete: index == last,
            changes: changes.to_vec(),
        })
        .collect()
}

/// A delta in parts of at most [`MAX_CHANGES_PER_MESSAGE`] changes, numbered from `first_seq`.
fn delta_frames(generation: u64, first_seq: u64, delta: &[PresenceChange]) -> Vec<PresenceMessage> {
    delta
        .chunks(MAX_CHANGES_PER_MESSAGE)
        .enumerate()
        .map(|(index, changes)| PresenceMessage::Update {
            generation,
            seq: first_seq + index as u64,
            reset: false,
            complete: true,
            changes: changes.to_vec(),
        })
        .collect()
}

/// Queues `frames` for `peer`, each waiting at most [`SEND_TIMEOUT`]; answers whether all were.
async fn send_frames(mesh: &Mesh, peer: &NodeId, frames: Vec<PresenceMessage>) -> bool {
    let frames = frames.into_iter().map(Frame::Presence);
    let Some(sent) = mesh.send_frames_within(peer, frames, SEND_TIMEOUT).await else {
        return false;
    };
    metrics::counter!("herald_mesh_presence_bytes_sent_total").increment(sent as u64);
    true
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChannelName, VersionVector};
    use crate::hub::Hub;
    use crate::presence::PresenceConfig;

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn user(user_id: &str, connections: u32) -> PresenceChange {
        PresenceChange::User {
            channel: ChannelName::new("track:1").unwrap(),
            user_id: user_id.into(),
            name: user_id.to_uppercase(),
            connections,
        }
    }

    fn update(
        seq: u64,
        reset: bool,
        complete: bool,
        changes: Vec<PresenceChange>,
    ) -> PresenceMessage {
        PresenceMessage::Update {
            generation: 7,
            seq,
            reset,
            complete,
            changes,
        }
    }

    fn fixture() -> (Arc<Presence>, Arc<MeshPresence>) {
        let hub = Hub::new(VersionVector::new(), 16);
        let presence = Presence::new(PresenceConfig::default(), node("self"), hub);
        (Arc::clone(&presence), MeshPresence::new(presence))
    }

    fn count(presence: &Presence) -> u64 {
        presence.count(&ChannelName::new("track:1").unwrap())
    }

    const LINK: Option<usize> = Some(3);

    #[test]
    fn a_snapshot_counts_only_once_complete_then_deltas_apply() {
        let (presence, mesh) = fixture();
        let b = node("b");
        mesh.on_message(&b, LINK, update(0, true, false, vec![user("u1", 1)]));
        assert_eq!(count(&presence), 0, "staged until complete");
        assert!(!mesh.synced_with(&b, 3));
        mesh.on_message(&b, LINK, update(1, false, true, vec![user("u2", 1)]));
        assert_eq!(count(&presence), 2);
        assert!(mesh.synced_with(&b, 3));
        mesh.on_message(&b, LINK, update(2, false, true, vec![user("u1", 0)]));
        assert_eq!(count(&presence), 1);
    }

    #[test]
    fn a_gap_or_another_link_drops_the_delta_and_keeps_what_was_said() {
        let (presence, mesh) = fixture();
        let b = node("b");
        mesh.on_message(&b, LINK, update(0, true, true, vec![user("u1", 1)]));
        mesh.on_message(&b, LINK, update(2, false, true, vec![user("u2", 1)]));
        assert_eq!(count(&presence), 1, "seq 1 is missing");
        assert!(!mesh.synced_with(&b, 3), "a snapshot is due");
        mesh.on_message(&b, Some(4), update(0, true, true, vec![user("u3", 1)]));
        mesh.on_message(&b, LINK, update(1, false, true, vec![user("u4", 1)]));
        assert_eq!(count(&presence), 1, "a delta read on an old link");
        assert_eq!(
            presence
                .channel(&ChannelName::new("track:1").unwrap())
                .users[0]
                .user_id,
            "u3",
            "the new link's snapshot replaced the old"
        );
    }

    #[test]
    fn forgetting_a_peer_removes_its_users_until_a_new_snapshot() {
        let (presence, mesh) = fixture();
        let b = node("b");
        mesh.on_message(&b, LINK, update(0, true, true, vec![user("u1", 1)]));
        mesh.forget(&b, "gossip");
        assert_eq!(count(&presence), 0);
        mesh.on_message(&b, LINK, update(1, false, true, vec![user("u2", 1)]));
        assert_eq!(count(&presence), 0, "deltas wait for a snapshot");
        mesh.on_message(&b, LINK, update(0, true, true, vec![user("u1", 1)]));
        assert_eq!(count(&presence), 1);
    }

    #[test]
    fn resync_requests_are_remembered() {
        let (_, mesh) = fixture();
        mesh.on_message(&node("b"), LINK, PresenceMessage::Resync);
        assert!(lock(&mesh.resync).contains(&node("b")));
    }

    #[test]
    fn frames_are_split_numbered_and_marked() {
        let many: Vec<PresenceChange> = (0..MAX_CHANGES_PER_MESSAGE + 1)
            .map(|n| user(&format!("u{n}"), 1))
            .collect();
        let frames = snapshot_frames(7, &many);
        assert_eq!(frames.len(), 2);
        assert!(matches!(
            frames[0],
            PresenceMessage::Update {
                seq: 0,
                reset: true,
                complete: false,
                ..
            }
        ));
        assert!(matches!(
            frames[1],
            PresenceMessage::Update {
                seq: 1,
                reset: false,
                complete: true,
                ..
            }
        ));
        let empty = snapshot_frames(7, &[]);
        assert!(matches!(
            empty[..],
            [PresenceMessage::Update {
                reset: true,
                complete: true,
                ..
            }]
        ));
        let delta = delta_frames(7, 5, &many);
        assert!(matches!(
            delta[1],
            PresenceMessage::Update {
                seq: 6,
                complete: true,
                ..
            }
        ));
        for message in frames.iter().chain(&delta) {
            assert_eq!(crate::presence::wire::invalid(message), None);
        }
    }
}
