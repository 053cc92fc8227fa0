//! Interest routing on the mesh: ephemeral events (typing indicators) go only to peers that
//! have a local subscriber of their channel.
//!
//! It owns what each linked peer announced about its interest (the receiving side), the task
//! that announces this node's own interest (`crate::hub::interest`) to its peers (the sending
//! side), and the choice of peers in `ship_ephemeral`.
//!
//! The protocol ([`crate::mesh::InterestMessage`]), per link:
//! - When a link comes up (the mesh numbers every link: a new connection to the same peer is a
//!   new link), the sender sends a snapshot: frames numbered from 0, the first with `reset`.
//!   Then every change is a delta numbered after the last frame: the keys that appeared, and
//!   the keys that disappeared, looked up at most every [`COALESCE`] after a change.
//! - A receiver keeps one announcement per peer, tagged with the link it arrived on and the
//!   peer's generation. A delta that does not follow (a gap in the numbers, another link,
//!   another generation) makes the peer's interest unknown; so does the link going away.
//! - A peer whose interest is unknown gets every ephemeral event (fail open: routing never
//!   loses one), and after [`RESYNC_AFTER`] is asked for a snapshot (`Resync`), at most every
//!   [`RESYNC_EVERY`]. A frame that cannot be queued within [`SEND_TIMEOUT`] makes its peer
//!   due a fresh snapshot at the next look.
//! - Bounds: at most [`MAX_INTEREST_KEYS`] keys per frame (checked on receipt in
//!   `mesh_validate`); at most [`MAX_PEER_KEYS`] kept per peer, beyond which that peer counts as
//!   wanting everything; a node with more local keys than that announces `everything`.
//!
//! What is not promised: a subscriber that appeared a moment ago (before its node's delta
//! reached the sender, a few milliseconds) may miss an ephemeral event; ephemeral events are
//! best effort anyway, and committed events never go through here.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::mesh_validate::MAX_INTEREST_KEYS;
use crate::event::{ChannelName, NodeId, SharedEvent};
use crate::hub::Hub;
use crate::hub::interest::{InterestChanges, InterestKey, InterestSnapshot, MAX_ANNOUNCED_KEYS};
use crate::mesh::{Frame, InterestMessage, Mesh, frame};

/// How often the links are looked at: a new link gets a snapshot, a peer that asked gets one.
pub const POLL: Duration = Duration::from_millis(100);
/// Changes arriving together wait this long to share frames.
pub const COALESCE: Duration = Duration::from_millis(5);
/// How long an interest frame may wait for room in a peer's queue.
pub const SEND_TIMEOUT: Duration = Duration::from_millis(500);
/// A linked peer whose interest is unknown for this long is asked for a snapshot...
pub const RESYNC_AFTER: Duration = Duration::from_secs(1);
/// ...and asked again at most this often.
pub const RESYNC_EVERY: Duration = Duration::from_secs(2);
/// Most keys kept for one peer; beyond, that peer counts as wanting every channel.
pub const MAX_PEER_KEYS: usize = MAX_ANNOUNCED_KEYS;

/// What one peer announced, on one of its links.
#[derive(Debug)]
struct Announced {
    generation: u64,
    /// The link the snapshot arrived on, as the mesh numbered it when it was read.
    link: Option<usize>,
    next_seq: u64,
    everything: bool,
    channels: HashSet<ChannelName>,
    prefixes: Vec<ChannelName>,
}

impl Announced {
    fn is_for(&self, link: usize, generation: u64) -> bool {
        self.link == Some(link) && self.generation == generation
    }

    fn wants(&self, channel: &ChannelName) -> bool {
        self.everything
            || self.channels.contains(channel)
            || self
                .prefixes
                .iter()
                .any(|prefix| channel.as_str().starts_with(prefix.as_str()))
    }

    fn apply(&mut self, add: Vec<InterestKey>, remove: Vec<InterestKey>) {
        if self.everything {
            return;
        }
        for key in remove {
            match key {
                InterestKey::Channel(channel) => {
                    self.channels.remove(&channel);
                }
                InterestKey::Prefix(prefix) => self.prefixes.retain(|p| p != &prefix),
            }
        }
        for key in add {
            match key {
                InterestKey::Channel(channel) => {
                    self.channels.insert(channel);
                }
                InterestKey::Prefix(prefix) => {
                    if !self.prefixes.contains(&prefix) {
                        self.prefixes.push(prefix);
                    }
                }
            }
        }
        if self.channels.len() + self.prefixes.len() > MAX_PEER_KEYS {
            metrics::counter!("herald_mesh_interest_overflows_total").increment(1);
            self.everything = true;
            self.channels = HashSet::new();
            self.prefixes = Vec::new();
        }
    }
}

/// The sending side's state for one linked peer.
struct Synced {
    link: usize,
    next_seq: u64,
}

/// A linked peer whose interest this node does not know.
struct Missing {
    since: Instant,
    asked: Option<Instant>,
}

/// Peers' interest and the announcing of this node's; see the module docs.
#[derive(Default)]
pub struct PeerInterest {
    peers: Mutex<HashMap<NodeId, Announced>>,
    /// Peers that asked for a snapshot.
    resync: Mutex<HashSet<NodeId>>,
    wake: Notify,
}

impl PeerInterest {
    /// Takes in an interest frame from `from`, read while the mesh's link to it was `link`.
    pub fn on_message(&self, from: &NodeId, link: Option<usize>, message: InterestMessage) {
        let InterestMessage::Update {
            generation,
            seq,
            reset,
            everything,
            add,
            remove,
        } = message
        else {
            lock(&self.resync).insert(from.clone());
            self.wake.notify_one();
            return;
        };
        let mut peers = lock(&self.peers);
        if reset {
            let mut announced = Announced {
                generation,
                link,
                next_seq: seq.saturating_add(1),
                everything,
                channels: HashSet::new(),
                prefixes: Vec::new(),
            };
            announced.apply(add, remove);
            peers.insert(from.clone(), announced);
            return;
        }
        match peers.get_mut(from) {
            Some(announced)
                if announced.generation == generation
                    && announced.link == link
                    && announced.next_seq == seq =>
            {
                announced.next_seq = seq.saturating_add(1);
                announced.everything |= everything;
                announced.apply(add, remove);
            }
            Some(_) => {
                // A gap: forget it (fail open) until the next snapshot.
                metrics::counter!("herald_mesh_interest_lost_total").increment(1);
                tracing::debug!(peer = %from, seq, "interest delta out of order; asking for a snapshot");
                peers.remove(from);
            }
            None => {}
        }
    }

    /// Whether an ephemeral event on `channel` should go to `peer` on its link `link` (the
    /// peer's generation `generation`): when it announced a subscriber, or nothing usable.
    pub fn wants(
        &self,
        peer: &NodeId,
        link: usize,
        generation: u64,
        channel: &ChannelName,
    ) -> bool {
        match lock(&self.peers).get(peer) {
            Some(announced) if announced.is_for(link, generation) => announced.wants(channel),
            _ => true,
        }
    }

    /// Whether this node knows what `peer` wants on its link `link`.
    pub fn knows(&self, peer: &NodeId, link: usize, generation: u64) -> bool {
        lock(&self.peers)
            .get(peer)
            .is_some_and(|announced| announced.is_for(link, generation))
    }

    /// Sends ephemeral events to the linked peers that want them.
    pub(super) fn ship(&self, mesh: &Mesh, events: &[SharedEvent]) {
        if events.is_empty() {
            return;
        }
        let links = mesh.link_identities();
        let plan: Vec<(NodeId, Vec<SharedEvent>)> = links
            .into_iter()
            .map(|(peer, link, generation)| {
                let wanted: Vec<SharedEvent> = events
                    .iter()
                    .filter(|event| self.wants(&peer, link, generation, &event.channel))
                    .cloned()
                    .collect();
                (peer, wanted)
            })
            .collect();
        let mut whole: Option<Arc<[u8]>> = None;
        for (peer, wanted) in plan {
            let skipped = events.len() - wanted.len();
            if skipped > 0 {
                metrics::counter!("herald_mesh_ephemeral_filtered_total").increment(skipped as u64);
            }
            if wanted.is_empty() {
                continue;
            }
            let bytes = if wanted.len() == events.len() {
                match &whole {
                    Some(bytes) => Arc::clone(bytes),
                    None => match encode_ephemeral(wanted.clone()) {
                        Some(bytes) => Arc::clone(whole.insert(bytes)),
                        None => continue,
                    },
                }
            } else {
                match encode_ephemeral(wanted.clone()) {
                    Some(bytes) => bytes,
                    None => continue,
                }
            };
            if mesh.push_to(&peer, &bytes).is_ok() {
                metrics::counter!("herald_mesh_ephemeral_sent_total", "peer" => peer.to_string())
                    .increment(wanted.len() as u64);
            }
        }
    }

    /// Announces this node's interest to every linked peer until `stop` fires: a snapshot on
    /// each new link or when asked, deltas after that; and asks peers whose interest is
    /// unknown for theirs.
    pub(super) async fn announce(
        self: Arc<Self>,
        mesh: Arc<Mesh>,
        hub: Arc<Hub>,
        mut stop: watch::Receiver<bool>,
    ) {
        let generation = mesh.local().generation;
        let mut synced: HashMap<NodeId, Synced> = HashMap::new();
        let mut missing: HashMap<NodeId, Missing> = HashMap::new();
        let mut ticker = tokio::time::interval(POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let changed = tokio::select! {
                _ = ticker.tick() => false,
                _ = hub.interest().changed() => true,
                _ = self.wake.notified() => false,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            if changed {
                tokio::time::sleep(COALESCE).await;
            }
            let links = mesh.link_identities();
            synced.retain(|peer, state| {
                links
                    .iter()
                    .any(|(linked, link, _)| linked == peer && *link == state.link)
            });
            let changes = hub.interest().take_changes();
            let asked: HashSet<NodeId> = std::mem::take(&mut *lock(&self.resync));
            let mut snapshot: Option<InterestSnapshot> = None;
            for (peer, link, _) in &links {
                let due = changes == InterestChanges::Reset
                    || asked.contains(peer)
                    || !synced.contains_key(peer);
                if due {
                    let snapshot = snapshot.get_or_insert_with(|| hub.interest().snapshot());
                    let frames = snapshot_frames(generation, snapshot);
                    let next_seq = frames.len() as u64;
                    synced.remove(peer);
                    if send_frames(&mesh, peer, frames).await {
                        metrics::counter!("herald_mesh_interest_snapshots_sent_total").increment(1);
                        synced.insert(
                            peer.clone(),
                            Synced {
                                link: *link,
                                next_seq,
                            },
                        );
                    }
                } else if let (InterestChanges::Delta { added, removed }, Some(state)) =
                    (&changes, synced.get_mut(peer))
                {
                    if added.is_empty() && removed.is_empty() {
                        continue;
                    }
                    let frames = delta_frames(generation, state.next_seq, added, removed);
                    state.next_seq += frames.len() as u64;
                    if !send_frames(&mesh, peer, frames).await {
                        synced.remove(peer);
                    }
                }
            }
            self.ask_for_missing(&mesh, &links, &mut missing);
        }
    }

    /// Forgets peers no longer linked, and asks linked peers whose interest has been unknown
    /// for [`RESYNC_AFTER`] for a snapshot.
    fn ask_for_missing(
        &self,
        mesh: &Mesh,
        links: &[(NodeId, usize, u64)],
        missing: &mut HashMap<NodeId, Missing>,
    ) {
        let now = Instant::now();
        let mut ask = Vec::new();
        let mut known = 0usize;
        {
            let mut peers = lock(&self.peers);
            peers.retain(|peer, _| links.iter().any(|(linked, ..)| linked == peer));
            for (peer, link, generation) in links {
                if peers
                    .get(peer)
                    .is_some_and(|announced| announced.is_for(*link, *generation))
                {
                    known += 1;
                    missing.remove(peer);
                    continue;
                }
                let state = missing.entry(peer.clone()).or_insert(Missing {
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
        }
        missing.retain(|peer, _| links.iter().any(|(linked, ..)| linked == peer));
        metrics::gauge!("herald_mesh_interest_known_peers").set(known as f64);
        if ask.is_empty() {
            return;
        }
        let Ok(bytes) = frame::encode(&Frame::Interest(InterestMessage::Resync)) else {
            return;
        };
        let bytes: Arc<[u8]> = Arc::from(bytes);
        for peer in ask {
            if mesh.push_to(&peer, &bytes).is_ok() {
                metrics::counter!("herald_mesh_interest_resyncs_requested_total").increment(1);
            }
        }
    }
}

fn encode_ephemeral(events: Vec<SharedEvent>) -> Option<Arc<[u8]>> {
    match frame::encode(&Frame::Ephemeral { events }) {
        Ok(bytes) => Some(Arc::from(bytes)),
        Err(error) => {
            tracing::warn!(%error, "cannot encode ephemeral events for peers");
            None
        }
    }
}

/// A snapshot in frames of at most [`MAX_INTEREST_KEYS`] keys, numbered from 0, the first
/// with `reset`.
fn snapshot_frames(generation: u64, snapshot: &InterestSnapshot) -> Vec<InterestMessage> {
    let mut chunks: Vec<&[InterestKey]> = snapshot.keys.chunks(MAX_INTEREST_KEYS).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, keys)| InterestMessage::Update {
            generation,
            seq: index as u64,
            reset: index == 0,
            everything: snapshot.everything,
            add: keys.to_vec(),
            remove: Vec::new(),
        })
        .collect()
}

/// A delta in frames of at most [`MAX_INTEREST_KEYS`] keys, numbered from `first_seq`.
fn delta_frames(
    generation: u64,
    first_seq: u64,
    added: &[InterestKey],
    removed: &[InterestKey],
) -> Vec<InterestMessage> {
    let adds = added
        .chunks(MAX_INTEREST_KEYS)
        .map(|keys| (keys.to_vec(), Vec::new()));
    let removes = removed
        .chunks(MAX_INTEREST_KEYS)
        .map(|keys| (Vec::new(), keys.to_vec()));
    adds.chain(removes)
        .enumerate()
        .map(|(index, (add, remove))| InterestMessage::Update {
            generation,
            seq: first_seq + index as u64,
            reset: false,
            everything: false,
            add,
            remove,
        })
        .collect()
}

/// Queues `frames` for `peer`, each waiting at most [`SEND_TIMEOUT`]; answers whether all were.
async fn send_frames(mesh: &Mesh, peer: &NodeId, frames: Vec<InterestMessage>) -> bool {
    let frames = frames.into_iter().map(Frame::Interest);
    mesh.send_frames_within(peer, frames, SEND_TIMEOUT)
        .await
        .is_some()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn name(channel: &str) -> ChannelName {
        ChannelName::new(channel).unwrap()
    }

    fn key(channel: &str) -> InterestKey {
        InterestKey::Channel(name(channel))
    }

    fn update(
        seq: u64,
        reset: bool,
        add: &[InterestKey],
        remove: &[InterestKey],
    ) -> InterestMessage {
        InterestMessage::Update {
            generation: 7,
            seq,
            reset,
            everything: false,
            add: add.to_vec(),
            remove: remove.to_vec(),
        }
    }

    const LINK: Option<usize> = Some(3);

    #[test]
    fn unknown_peers_get_everything() {
        let interest = PeerInterest::default();
        assert!(interest.wants(&node("b"), 3, 7, &name("track:1")));
        assert!(!interest.knows(&node("b"), 3, 7));
    }

    #[test]
    fn a_snapshot_then_deltas_route_by_channel_and_prefix() {
        let interest = PeerInterest::default();
        let b = node("b");
        interest.on_message(
            &b,
            LINK,
            update(
                0,
                true,
                &[key("track:1"), InterestKey::Prefix(name("forum:thread:"))],
                &[],
            ),
        );
        assert!(interest.knows(&b, 3, 7));
        assert!(interest.wants(&b, 3, 7, &name("track:1")));
        assert!(interest.wants(&b, 3, 7, &name("forum:thread:9")));
        assert!(!interest.wants(&b, 3, 7, &name("track:2")));
        interest.on_message(
            &b,
            LINK,
            update(1, false, &[key("track:2")], &[key("track:1")]),
        );
        assert!(interest.wants(&b, 3, 7, &name("track:2")));
        assert!(!interest.wants(&b, 3, 7, &name("track:1")));
        // Another link, or another generation (the peer restarted): unknown, so everything.
        assert!(interest.wants(&b, 4, 7, &name("track:1")));
        assert!(interest.wants(&b, 3, 8, &name("track:1")));
    }

    #[test]
    fn a_gap_or_a_delta_from_another_link_forgets_the_peer() {
        let interest = PeerInterest::default();
        let b = node("b");
        interest.on_message(&b, LINK, update(0, true, &[], &[]));
        assert!(!interest.wants(&b, 3, 7, &name("x")));
        interest.on_message(&b, LINK, update(2, false, &[], &[]));
        assert!(!interest.knows(&b, 3, 7), "seq 1 is missing");
        assert!(interest.wants(&b, 3, 7, &name("x")));
        interest.on_message(&b, LINK, update(0, true, &[], &[]));
        interest.on_message(&b, Some(4), update(1, false, &[], &[]));
        assert!(!interest.knows(&b, 3, 7), "a delta read on another link");
        // A delta before any snapshot is ignored.
        interest.on_message(&b, LINK, update(5, false, &[key("x")], &[]));
        assert!(!interest.knows(&b, 3, 7));
    }

    #[test]
    fn everything_and_overflow_mean_every_channel() {
        let interest = PeerInterest::default();
        let b = node("b");
        interest.on_message(
            &b,
            LINK,
            InterestMessage::Update {
                generation: 7,
                seq: 0,
                reset: true,
                everything: true,
                add: Vec::new(),
                remove: Vec::new(),
            },
        );
        assert!(interest.wants(&b, 3, 7, &name("anything")));
        let c = node("c");
        interest.on_message(&c, LINK, update(0, true, &[], &[]));
        let many: Vec<InterestKey> = (0..MAX_INTEREST_KEYS)
            .map(|n| key(&format!("c{n}")))
            .collect();
        let parts = MAX_PEER_KEYS / MAX_INTEREST_KEYS + 1;
        for part in 0..parts {
            let keys: Vec<InterestKey> = many
                .iter()
                .map(|k| match k {
                    InterestKey::Channel(c) => key(&format!("{}-{part}", c.as_str())),
                    other => other.clone(),
                })
                .collect();
            interest.on_message(&c, LINK, update(part as u64 + 1, false, &keys, &[]));
        }
        assert!(interest.knows(&c, 3, 7));
        assert!(
            interest.wants(&c, 3, 7, &name("never-announced")),
            "overflowed"
        );
    }

    #[test]
    fn a_resync_request_is_remembered() {
        let interest = PeerInterest::default();
        interest.on_message(&node("b"), LINK, InterestMessage::Resync);
        assert!(lock(&interest.resync).contains(&node("b")));
    }

    #[test]
    fn snapshots_and_deltas_are_split_and_numbered() {
        let keys: Vec<InterestKey> = (0..MAX_INTEREST_KEYS + 1)
            .map(|n| key(&format!("c{n}")))
            .collect();
        let frames = snapshot_frames(
            7,
            &InterestSnapshot {
                everything: false,
                keys: keys.clone(),
            },
        );
        assert_eq!(frames.len(), 2);
        assert!(matches!(
            frames[0],
            InterestMessage::Update {
                seq: 0,
                reset: true,
                ..
            }
        ));
        assert!(matches!(
            frames[1],
            InterestMessage::Update {
                seq: 1,
                reset: false,
                ..
            }
        ));
        let empty = snapshot_frames(
            7,
            &InterestSnapshot {
                everything: false,
                keys: Vec::new(),
            },
        );
        assert_eq!(empty.len(), 1, "an empty interest is still announced");
        let delta = delta_frames(7, 5, &keys, &[key("gone")]);
        assert_eq!(delta.len(), 3);
        assert!(
            matches!(delta[2], InterestMessage::Update { seq: 7, reset: false, ref remove, .. } if remove.len() == 1)
        );
        // Every frame passes the receiver's bound.
        for message in frames.into_iter().chain(delta) {
            let InterestMessage::Update { add, remove, .. } = message else {
                unreachable!()
            };
            assert!(add.len() + remove.len() <= MAX_INTEREST_KEYS);
        }
    }
}
