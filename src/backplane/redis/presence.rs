//! Presence through Redis: this node's whole presence snapshot in a key of its own, its
//! registry record saying which version of it is there, and every live peer's snapshot taken
//! in when its version changes. Snapshots only, never deltas: simple, and coalesced.
//!
//! What it owns:
//! - **Writing.** When the local presence changed ([`Presence::local_changed`]) and at least
//!   [`WRITE_GAP`] after the previous write, the node writes [`Presence::local_snapshot`],
//!   encoded by [`encode`], with `SET PX` [`KEY_TTL`] to `herald:{cluster}:presence:{node}`,
//!   and only once Redis answered OK puts the new version in its registry record
//!   (`presence_version`) and nudges the registry to rewrite the record at once. The data is
//!   therefore always written before the record that names its version, so a reader that sees
//!   a version finds (at least) that data. Versions are `max(previous + 1, wall-clock ms)`, so
//!   a restarted node's versions differ from its previous incarnation's. Every [`TICK`] the
//!   key's expiry is refreshed (`PEXPIRE`); when the key is gone (it expired while this node
//!   was cut off, or Redis lost its data) the snapshot is written again under a new version.
//!   A dead node's key expires by itself. The local pending-change set is drained on each
//!   write ([`Presence::take_local_changes`]): only snapshots go through Redis.
//! - **Reading.** Every [`TICK`], and at once when a registry read brings a peer's new
//!   `presence_version`, each peer the registry considers alive whose version is not 0 and not
//!   the one last applied for it is read (one `MGET` for all of them), decoded and checked by
//!   [`decode`] (bad data is refused, logged and counted, `herald_redis_presence_refused_total`,
//!   never a panic; that version is not read again), and replaces the peer's presence
//!   ([`Presence::replace_peer`]: only the differences come out as joins and leaves). A key
//!   missing for a live peer leaves what the peer said before until a later tick.
//! - **Removal.** A peer whose presence this node holds and whom the registry no longer
//!   considers alive (heartbeat still for `DEAD_AFTER`, marked as left, or gone from the
//!   registry) is removed at the next tick ([`Presence::remove_peer`]: a `presence_leave` for
//!   each of its users nobody else holds) and its applied version forgotten, so that if it
//!   comes back its snapshot is applied again. The look is in-memory and happens every tick
//!   even while a Redis command of this task waits: a SIGKILLed peer's users are gone
//!   everywhere within [`DEAD_AFTER`] and two ticks of its last heartbeat.
//! - **This node cut off from Redis.** While its registry round trips fail, this node keeps
//!   the presence of peers as last read (a short Redis blip changes nothing anyone sees); once
//!   it has had no successful round trip for [`DEAD_AFTER`] (as long as the others take to call
//!   it dead), it removes every peer's presence: it cannot know who is there, and the others
//!   are removing its users at the same time. Its own sockets stay in its own view. When
//!   contact returns, every live peer's snapshot is read and applied again, and its own key,
//!   if it expired meanwhile or Redis lost its data, is found gone by the next expiry refresh
//!   and rewritten under a new version.
//!
//! Cost: a burst of changes rewrites the whole snapshot (at most once per [`WRITE_GAP`]) and
//! every other node reads it once: fine for thousands of users per node; the mesh sends
//! deltas instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::{Expiration, KeysInterface, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{DEAD_AFTER, RedisBackplane, TICK, keys, lock, unless_stopped};
use crate::event::NodeId;
use crate::presence::wire::{self, MAX_CHANGES_PER_MESSAGE};
use crate::presence::{Presence, PresenceChange, PresenceMessage, SourceTable};

/// Writes of the snapshot are at least this far apart (changes meanwhile are coalesced).
pub const WRITE_GAP: Duration = Duration::from_millis(100);
/// A presence key lives this long unless refreshed: a few seconds longer than it takes the
/// registry to call its node dead, so it is never gone while its node is alive and reachable.
pub const KEY_TTL: Duration = DEAD_AFTER.saturating_add(Duration::from_secs(3));
/// The first byte of a stored snapshot; anything else is refused.
pub const FORMAT: u8 = 1;
/// The largest stored snapshot written or read.
pub const MAX_SNAPSHOT_BYTES: usize = 256 * 1024 * 1024;

/// A stored snapshot: the version its writer gave it, and every change of the snapshot.
#[derive(Serialize)]
struct StoredRef<'a> {
    version: u64,
    changes: &'a [PresenceChange],
}

#[derive(Deserialize)]
struct Stored {
    version: u64,
    changes: Vec<PresenceChange>,
}

fn codec() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_SNAPSHOT_BYTES>,
> {
    bincode::config::standard().with_limit::<MAX_SNAPSHOT_BYTES>()
}

/// A snapshot as stored in a presence key: [`FORMAT`], then `{version, changes}` in bincode 2
/// (standard configuration, serde).
pub fn encode(version: u64, changes: &[PresenceChange]) -> Result<Vec<u8>, String> {
    let mut bytes = vec![FORMAT];
    let body = bincode::serde::encode_to_vec(StoredRef { version, changes }, codec())
        .map_err(|error| error.to_string())?;
    if body.len() > MAX_SNAPSHOT_BYTES {
        return Err(format!(
            "presence snapshot of {} bytes (at most {MAX_SNAPSHOT_BYTES})",
            body.len()
        ));
    }
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// A stored snapshot's version and changes, or why it is refused: another format, bytes
/// that do not decode (or trail), more than [`SourceTable::MAX_ENTRIES`] changes, or changes
/// that [`wire::invalid`] refuses (checked in parts of [`MAX_CHANGES_PER_MESSAGE`], as the mesh
/// receives them). Never panics.
pub fn decode(bytes: &[u8]) -> Result<(u64, Vec<PresenceChange>), String> {
    let (&format, body) = bytes.split_first().ok_or("empty presence snapshot")?;
    if format != FORMAT {
        return Err(format!(
            "presence snapshot format {format} (expected {FORMAT})"
        ));
    }
    if body.len() > MAX_SNAPSHOT_BYTES {
        return Err(format!("presence snapshot of {} bytes", body.len()));
    }
    let (stored, read) = bincode::serde::decode_from_slice::<Stored, _>(body, codec())
        .map_err(|error| format!("presence snapshot does not decode: {error}"))?;
    if read != body.len() {
        return Err("presence snapshot has trailing bytes".into());
    }
    if stored.changes.len() > SourceTable::MAX_ENTRIES {
        return Err(format!(
            "{} presence changes (at most {})",
            stored.changes.len(),
            SourceTable::MAX_ENTRIES
        ));
    }
    let mut checked = Vec::with_capacity(stored.changes.len());
    let mut rest = stored.changes.into_iter();
    loop {
        let part: Vec<PresenceChange> = rest.by_ref().take(MAX_CHANGES_PER_MESSAGE).collect();
        if part.is_empty() {
            break;
        }
        let message = PresenceMessage::Update {
            generation: stored.version,
            seq: 0,
            reset: true,
            complete: true,
            changes: part,
        };
        if let Some(why) = wire::invalid(&message) {
            return Err(why);
        }
        if let PresenceMessage::Update { changes, .. } = message {
            checked.extend(changes);
        }
    }
    Ok((stored.version, checked))
}

/// The writing side's state.
struct Writer {
    /// The version last written (0: none yet).
    written: u64,
    /// The local presence changed since it was last written (true at start: the first
    /// snapshot, even empty, replaces whatever a previous incarnation of this node wrote).
    dirty: bool,
    last_write: Option<Instant>,
    last_refresh: Option<Instant>,
}

impl Writer {
    fn new() -> Self {
        Self {
            written: 0,
            dirty: true,
            last_write: None,
            last_refresh: None,
        }
    }

    /// How long a due write must still wait to keep [`WRITE_GAP`] after the previous one.
    fn wait_before_write(&self, now: Instant) -> Option<Duration> {
        if !self.dirty {
            return None;
        }
        let since = now.saturating_duration_since(self.last_write?);
        Some(WRITE_GAP.saturating_sub(since)).filter(|wait| !wait.is_zero())
    }

    /// The version of the next write: above the last one, and above a previous incarnation's
    /// (those were wall-clock milliseconds at most, unless the clock went back).
    fn next_version(&self, now_ms: u64) -> u64 {
        self.written.saturating_add(1).max(now_ms)
    }

    fn refresh_due(&self, now: Instant) -> bool {
        !self.dirty
            && self.written != 0
            && self
                .last_refresh
                .is_none_or(|at| now.saturating_duration_since(at) >= TICK)
    }
}

/// What the registry says right now, as far as presence is concerned.
struct View {
    /// No successful registry round trip for [`DEAD_AFTER`] (or none yet).
    cut_off: bool,
    /// The live peers and the presence version in each one's record.
    live: Vec<(NodeId, u64)>,
}

/// What one step does.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    remove: Vec<NodeId>,
    fetch: Vec<(NodeId, u64)>,
}

/// The reading side's state: which version of each peer's snapshot is applied.
#[derive(Default)]
struct Applied {
    versions: HashMap<NodeId, u64>,
    /// Versions refused as bad data: not read again.
    refused: HashMap<NodeId, u64>,
    /// Whether this node was cut off at the last step (for logging the transitions).
    cut_off: bool,
}

impl Applied {
    /// Which peers' presence to remove (`held` is who this node holds presence of) and which
    /// snapshots to read; forgets the versions of peers that are not alive.
    fn plan(&mut self, view: &View, held: &[NodeId]) -> Plan {
        if view.cut_off {
            self.versions.clear();
            self.refused.clear();
            return Plan {
                remove: held.to_vec(),
                fetch: Vec::new(),
            };
        }
        let live = |peer: &NodeId| view.live.iter().any(|(id, _)| id == peer);
        self.versions.retain(|peer, _| live(peer));
        self.refused.retain(|peer, _| live(peer));
        let remove = held.iter().filter(|peer| !live(peer)).cloned().collect();
        let fetch = view
            .live
            .iter()
            .filter(|(peer, version)| {
                *version != 0
                    && self.versions.get(peer) != Some(version)
                    && self.refused.get(peer) != Some(version)
            })
            .cloned()
            .collect();
        Plan { remove, fetch }
    }

    /// `peer`'s snapshot of `version` is applied.
    fn applied(&mut self, peer: NodeId, version: u64) {
        self.refused.remove(&peer);
        self.versions.insert(peer, version);
    }

    fn refuse(&mut self, peer: NodeId, version: u64) {
        self.refused.insert(peer, version);
    }
}

/// Writes this node's presence and takes in the peers', until `stop` fires.
///
/// Removing gone peers is in-memory work, done every [`TICK`] even while a Redis command
/// waits (for up to its timeout while Redis is away): the removal runs between the polls of
/// the step's commands, in this one task, so it never interleaves with applying a snapshot.
pub(super) async fn run(
    backplane: Arc<RedisBackplane>,
    presence: Arc<Presence>,
    mut stop: watch::Receiver<bool>,
) {
    let key = backplane.keys.presence(&backplane.node_id);
    let mut writer = Writer::new();
    let applied = Mutex::new(Applied::default());
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut upkeep = tokio::time::interval(TICK);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = presence.local_changed() => writer.dirty = true,
            _ = backplane.presence_wake.notified() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        if let Some(wait) = writer.wait_before_write(Instant::now()) {
            if unless_stopped(&mut stop, tokio::time::sleep(wait))
                .await
                .is_none()
            {
                return;
            }
        }
        let step = async {
            backplane.write_presence(&presence, &key, &mut writer).await;
            backplane.read_presence(&presence, &applied).await;
        };
        tokio::pin!(step);
        loop {
            tokio::select! {
                _ = &mut step => break,
                _ = upkeep.tick() => {
                    backplane.remove_gone(&presence, &mut lock(&applied));
                }
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }
}

impl RedisBackplane {
    /// Writes the local snapshot when it changed, else refreshes the key's expiry when due
    /// (and rewrites the snapshot when the key is gone).
    async fn write_presence(&self, presence: &Presence, key: &str, writer: &mut Writer) {
        let now = Instant::now();
        if writer.refresh_due(now) {
            let kept: Result<i64, _> = self
                .commands
                .pexpire(key, KEY_TTL.as_millis() as i64, None)
                .await;
            match kept {
                Ok(1) => writer.last_refresh = Some(now),
                Ok(_) => {
                    tracing::debug!(
                        "presence key gone (expired or lost with redis's data); rewriting it"
                    );
                    writer.dirty = true;
                }
                Err(error) => {
                    self.note_error("refreshing presence", &error);
                    return;
                }
            }
        }
        if !writer.dirty {
            return;
        }
        // Before the snapshot: a change after this is in the snapshot, and signals again.
        let _ = presence.take_local_changes();
        let snapshot = presence.local_snapshot();
        let version = writer.next_version(keys::now_ms());
        writer.dirty = false;
        writer.last_write = Some(now);
        let bytes = match encode(version, &snapshot) {
            Ok(bytes) => bytes,
            Err(why) => {
                tracing::error!(%why, "presence snapshot not written: peers keep the previous one");
                return;
            }
        };
        let length = bytes.len() as u64;
        let written: Result<Value, _> = self
            .commands
            .set(
                key,
                Value::Bytes(bytes.into()),
                Some(Expiration::PX(KEY_TTL.as_millis() as i64)),
                None,
                false,
            )
            .await;
        match written {
            Ok(_) => {
                writer.written = version;
                writer.last_refresh = Some(now);
                // Only now may the record name this version.
                self.shared().presence_version = version;
                self.nudge_registry.notify_one();
                metrics::counter!("herald_redis_presence_writes_total").increment(1);
                metrics::counter!("herald_redis_presence_bytes_written_total").increment(length);
            }
            Err(error) => {
                writer.dirty = true;
                self.note_error("writing presence", &error);
            }
        }
    }

    /// Removes the presence of peers that are not alive (every peer's when cut off); answers
    /// the snapshots to read.
    fn remove_gone(&self, presence: &Presence, applied: &mut Applied) -> Vec<(NodeId, u64)> {
        let view = self.presence_view();
        if view.cut_off != applied.cut_off {
            applied.cut_off = view.cut_off;
            let held = presence.peers();
            if view.cut_off && !held.is_empty() {
                tracing::warn!(
                    peers = held.len(),
                    after = ?DEAD_AFTER,
                    "redis unreachable: removing every peer's presence until it answers again"
                );
            } else if !view.cut_off {
                tracing::debug!("redis reachable: reading peers' presence");
            }
        }
        let plan = applied.plan(&view, &presence.peers());
        let why = if view.cut_off { "cut_off" } else { "registry" };
        for peer in &plan.remove {
            tracing::debug!(peer = %peer, why, "removing the peer's presence");
            metrics::counter!("herald_presence_peers_removed_total", "why" => why).increment(1);
            presence.remove_peer(peer);
        }
        plan.fetch
    }

    /// Removes gone peers' presence, then reads and applies the snapshots whose version
    /// changed. `applied` is never locked across the read.
    async fn read_presence(&self, presence: &Presence, applied: &Mutex<Applied>) {
        let fetch = self.remove_gone(presence, &mut lock(applied));
        if fetch.is_empty() {
            return;
        }
        let keys: Vec<String> = fetch
            .iter()
            .map(|(peer, _)| self.keys.presence(peer))
            .collect();
        let values: Vec<Value> = match self.commands.mget(keys).await {
            Ok(values) => values,
            Err(error) => {
                self.note_error("reading presence", &error);
                return;
            }
        };
        // The registry may have changed its mind during the read.
        let view = self.presence_view();
        let mut applied = lock(applied);
        for ((peer, version), value) in fetch.into_iter().zip(values) {
            let Some(bytes) = value.as_bytes() else {
                // Not there (yet, or any more): what the peer said before stands.
                continue;
            };
            if view.cut_off || !view.live.iter().any(|(id, _)| id == &peer) {
                continue;
            }
            metrics::counter!("herald_redis_presence_reads_total").increment(1);
            match decode(bytes) {
                Ok((stored, changes)) => {
                    presence.replace_peer(&peer, changes);
                    applied.applied(peer, stored);
                }
                Err(why) => {
                    metrics::counter!("herald_redis_presence_refused_total").increment(1);
                    tracing::warn!(peer = %peer, version, %why, "refusing a peer's presence snapshot");
                    applied.refuse(peer, version);
                }
            }
        }
    }

    fn presence_view(&self) -> View {
        let now = Instant::now();
        let shared = self.shared();
        let cut_off = shared
            .last_contact
            .is_none_or(|at| now.saturating_duration_since(at) >= DEAD_AFTER);
        let live = shared
            .peers
            .iter()
            .filter(|(_, peer)| peer.alive_at(now))
            .filter_map(|(id, peer)| Some((NodeId::new(id).ok()?, peer.record.presence_version)))
            .collect();
        View { cut_off, live }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ChannelName;

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn user(user_id: &str, name: &str) -> PresenceChange {
        PresenceChange::User {
            channel: ChannelName::new("track:1").unwrap(),
            user_id: user_id.into(),
            name: name.into(),
            connections: 1,
        }
    }

    fn live(peers: &[(&str, u64)]) -> View {
        View {
            cut_off: false,
            live: peers.iter().map(|(id, v)| (node(id), *v)).collect(),
        }
    }

    #[test]
    fn snapshots_round_trip() {
        let changes = vec![
            user("u1", "Ann"),
            PresenceChange::Unlisted {
                channel: ChannelName::new("track:1").unwrap(),
                users: 4,
            },
        ];
        let bytes = encode(42, &changes).unwrap();
        assert_eq!(bytes[0], FORMAT);
        assert_eq!(decode(&bytes), Ok((42, changes)));
        assert_eq!(decode(&encode(7, &[]).unwrap()), Ok((7, Vec::new())));
        // Longer than one mesh message: checked in parts, kept whole.
        let many: Vec<PresenceChange> = (0..MAX_CHANGES_PER_MESSAGE * 2 + 1)
            .map(|n| user(&format!("u{n}"), "x"))
            .collect();
        assert_eq!(decode(&encode(1, &many).unwrap()).unwrap().1, many);
    }

    #[test]
    fn bad_snapshots_are_refused_without_panicking() {
        let good = encode(3, &[user("u1", "Ann")]).unwrap();
        assert!(decode(&[]).is_err());
        assert!(decode(b"\x02rest").is_err(), "another format");
        assert!(decode(&good[..good.len() - 1]).is_err(), "truncated");
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err(), "trailing bytes");
        for bad in [user("", "Ann"), user(&"u".repeat(129), "Ann")] {
            assert!(decode(&encode(3, &[bad]).unwrap()).is_err());
        }
        assert!(decode(&encode(3, &[user("u1", &"n".repeat(129))]).unwrap()).is_err());
        // A bad channel name does not decode at all.
        let mut renamed = encode(3, &[user("u1", "Ann")]).unwrap();
        let at = renamed.windows(7).position(|w| w == b"track:1").unwrap();
        renamed[at..at + 7].copy_from_slice(b"trac \x00 ");
        assert!(decode(&renamed).is_err());
        // Garbage of every length: an error, never a panic or a huge allocation.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for length in 0..300 {
            let mut bytes = vec![FORMAT];
            for _ in 0..length {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(state as u8);
            }
            let _ = decode(&bytes);
        }
        // A length prefix claiming far more changes than there are bytes.
        let mut huge = vec![FORMAT, 1, 0xFD];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
    }

    #[test]
    fn versions_grow_past_a_previous_incarnation() {
        let mut writer = Writer::new();
        assert!(writer.dirty, "the first snapshot is always written");
        assert_eq!(writer.next_version(1_000), 1_000);
        writer.written = 1_000;
        assert_eq!(
            writer.next_version(1_000),
            1_001,
            "two writes in one millisecond"
        );
        assert_eq!(writer.next_version(900), 1_001, "the clock went back");
        assert_eq!(writer.next_version(5_000), 5_000);
    }

    #[test]
    fn writes_keep_their_gap_and_refreshes_wait_for_a_write() {
        let now = Instant::now();
        let mut writer = Writer::new();
        assert_eq!(
            writer.wait_before_write(now),
            None,
            "never written: at once"
        );
        assert!(!writer.refresh_due(now), "nothing to refresh yet");
        writer.last_write = Some(now);
        let wait = writer
            .wait_before_write(now + Duration::from_millis(30))
            .unwrap();
        assert_eq!(wait, WRITE_GAP - Duration::from_millis(30));
        assert_eq!(writer.wait_before_write(now + WRITE_GAP), None);
        writer.dirty = false;
        writer.written = 5;
        writer.last_refresh = Some(now);
        assert_eq!(writer.wait_before_write(now), None, "not dirty");
        assert!(!writer.refresh_due(now + TICK / 2));
        assert!(writer.refresh_due(now + TICK));
    }

    #[test]
    fn changed_versions_are_read_once() {
        let mut applied = Applied::default();
        let plan = applied.plan(&live(&[("b", 5), ("c", 0)]), &[]);
        assert_eq!(plan.fetch, vec![(node("b"), 5)], "version 0 says nothing");
        assert!(plan.remove.is_empty());
        applied.applied(node("b"), 5);
        assert!(
            applied
                .plan(&live(&[("b", 5)]), &[node("b")])
                .fetch
                .is_empty()
        );
        let plan = applied.plan(&live(&[("b", 6)]), &[node("b")]);
        assert_eq!(plan.fetch, vec![(node("b"), 6)]);
        // The data was newer than the record: read again until the record catches up.
        applied.applied(node("b"), 7);
        assert_eq!(
            applied.plan(&live(&[("b", 6)]), &[node("b")]).fetch,
            vec![(node("b"), 6)]
        );
        assert!(
            applied
                .plan(&live(&[("b", 7)]), &[node("b")])
                .fetch
                .is_empty()
        );
        // A refused version is not read again; the next one is.
        applied.refuse(node("b"), 8);
        assert!(
            applied
                .plan(&live(&[("b", 8)]), &[node("b")])
                .fetch
                .is_empty()
        );
        assert_eq!(
            applied.plan(&live(&[("b", 9)]), &[node("b")]).fetch,
            vec![(node("b"), 9)]
        );
    }

    #[test]
    fn dead_peers_are_removed_and_read_again_when_back() {
        let mut applied = Applied::default();
        applied.applied(node("b"), 5);
        applied.applied(node("c"), 3);
        let plan = applied.plan(&live(&[("c", 3)]), &[node("b"), node("c")]);
        assert_eq!(plan.remove, vec![node("b")]);
        assert!(plan.fetch.is_empty());
        let plan = applied.plan(&live(&[("b", 5), ("c", 3)]), &[node("c")]);
        assert_eq!(
            plan.fetch,
            vec![(node("b"), 5)],
            "back with the same version"
        );
    }

    #[test]
    fn cut_off_removes_every_peer_and_reads_all_again_after() {
        let mut applied = Applied::default();
        applied.applied(node("b"), 5);
        applied.applied(node("c"), 3);
        let cut_off = View {
            cut_off: true,
            live: vec![(node("b"), 5), (node("c"), 3)],
        };
        let plan = applied.plan(&cut_off, &[node("b"), node("c")]);
        assert_eq!(plan.remove, vec![node("b"), node("c")]);
        assert!(plan.fetch.is_empty());
        let plan = applied.plan(&live(&[("b", 5), ("c", 3)]), &[]);
        assert_eq!(plan.fetch.len(), 2);
    }
}
