//! The registry loop: every tick it writes this node's record and reads everyone's (in one
//! pipeline with the epoch check), and from what it read keeps membership, the origins to
//! read, replication acks, repairs and the reader's probe. It also owns the reader task and
//! rebuilds it when the probe says it stopped delivering.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::{
    ClientLike, HashesInterface, KeysInterface, SetOptions, StreamsInterface, Value,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::keys::{self, FIELD_NONCE, NodeRecord, PROBE_STREAM_CAP};
use super::repair::{self, RepairPlanner};
use super::{
    ACK_POLL, DEAD_AFTER, PROBE_DEADLINE, PROBE_EVERY, Peer, RedisBackplane, TICK, lock,
    new_client, reader, unless_stopped,
};
use crate::event::VersionVector;
use crate::hub::Hub;
use crate::store::Store;
use crate::store::state::kinds;

/// Records not rewritten for this long are removed from the registry.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How often forgotten records are looked for.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// What one registry round trip changed.
#[derive(Default)]
struct Absorbed {
    epoch_changed: bool,
    new_origins: bool,
    /// A peer's record names a presence version this node had not seen in it.
    presence_changed: bool,
}

pub(super) async fn run(
    backplane: Arc<RedisBackplane>,
    store: Store,
    hub: Arc<Hub>,
    mut stop: watch::Receiver<bool>,
) {
    let mut reader = backplane.spawn_reader(&store, &hub, &stop);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut planner = RepairPlanner::default();
    let repairing = Arc::new(AtomicBool::new(false));
    let mut beat = 0u64;
    let mut last_exchange = Instant::now();
    let mut last_probe = Instant::now();
    let mut last_forget = Instant::now();
    loop {
        // Someone waits for a replication ack: read the registry often.
        let acks_awaited = backplane.replicated.receiver_count() > 0;
        let full = tokio::select! {
            _ = ticker.tick() => true,
            _ = backplane.nudge_registry.notified() => false,
            _ = tokio::time::sleep(ACK_POLL), if acks_awaited => false,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        if !full {
            let since = last_exchange.elapsed();
            if since < ACK_POLL {
                tokio::select! {
                    _ = tokio::time::sleep(ACK_POLL - since) => {}
                    _ = stop.wait_for(|stop| *stop) => break,
                }
            }
        }
        beat += 1;
        last_exchange = Instant::now();
        let Some(exchanged) =
            unless_stopped(&mut stop, backplane.exchange(&store, &hub, beat)).await
        else {
            break;
        };
        let absorbed = match exchanged {
            Ok(absorbed) => {
                backplane.note_registry(Ok(()));
                absorbed
            }
            Err(error) => {
                backplane.note_registry(Err(&error));
                continue;
            }
        };
        if absorbed.presence_changed {
            backplane.presence_wake.notify_one();
        }
        if absorbed.epoch_changed || absorbed.new_origins {
            // The reader re-plans its streams when its blocking read returns: wake it.
            if unless_stopped(&mut stop, backplane.wake_reader())
                .await
                .is_none()
            {
                break;
            }
        }
        if !full {
            continue;
        }
        store.set_prune_horizon(backplane.prune_horizon());
        store.set_live_origins(backplane.live_origins());
        if beat % 5 == 0 {
            backplane.trim_own_stream().await;
        }
        let source = backplane.snapshot_source(&hub.delivered());
        backplane.note_snapshot_needed(source.is_some());
        if let Some(source) = source {
            backplane.start_snapshot(&store, source);
        }
        let Some(probed) = unless_stopped(&mut stop, backplane.probe_step(&mut last_probe)).await
        else {
            break;
        };
        if let Some(rebuild) = probed {
            if rebuild {
                metrics::counter!("herald_redis_reader_repairs_total").increment(1);
                tracing::warn!(
                    deadline = ?PROBE_DEADLINE,
                    "redis reader stopped delivering its probe; rebuilding it"
                );
                reader.abort();
                reader = backplane.spawn_reader(&store, &hub, &stop);
            }
        }
        if !repairing.load(Ordering::SeqCst) {
            let repairs = backplane.plan_repairs(&mut planner, &hub);
            if !repairs.is_empty() {
                repairing.store(true, Ordering::SeqCst);
                let (backplane, store, repairing) = (
                    Arc::clone(&backplane),
                    store.clone(),
                    Arc::clone(&repairing),
                );
                tokio::spawn(async move {
                    for range in repairs {
                        repair::reship(&backplane, &store, range).await;
                    }
                    repairing.store(false, Ordering::SeqCst);
                });
            }
        }
        if last_forget.elapsed() >= FORGET_EVERY {
            last_forget = Instant::now();
            if unless_stopped(&mut stop, backplane.forget_old_records())
                .await
                .is_none()
            {
                break;
            }
        }
    }
    reader.abort();
}

impl RedisBackplane {
    /// Starts a reader on a fresh connection, replacing (and closing) the previous one.
    fn spawn_reader(
        self: &Arc<Self>,
        store: &Store,
        hub: &Arc<Hub>,
        stop: &watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let client = new_client(&self.fred_config);
        let connection = client.connect();
        let previous = lock(&self.reader_client).replace((client.clone(), connection));
        if let Some(previous) = previous {
            tokio::spawn(super::disconnect(previous));
        }
        tokio::spawn(reader::run(
            Arc::clone(self),
            client,
            store.clone(),
            Arc::clone(hub),
            stop.clone(),
        ))
    }

    /// One registry round trip: claim or read the epoch, write this node's record, read all.
    async fn exchange(
        &self,
        store: &Store,
        hub: &Hub,
        beat: u64,
    ) -> Result<Absorbed, fred::error::Error> {
        let counts = hub.counts();
        let pruned = store
            .read(crate::store::state::pruned_positions)
            .await
            .unwrap_or_default();
        let presence_version = {
            let mut shared = self.shared();
            shared.own_pruned = pruned.clone();
            shared.presence_version
        };
        let record = NodeRecord {
            pruned,
            origin: Some(store.origin().clone()),
            vector: hub.delivered(),
            connections: counts.connections as u64,
            users: counts.users as u64,
            broadcast_users: hub.channel_users(kinds::BROADCASTS_CHANNEL) as u64,
            http: Some(self.http_addr.to_string()),
            https: self.https,
            at_ms: keys::now_ms(),
            beat,
            left: false,
            presence_version,
        };
        let epoch_key = self.keys.epoch();
        let nodes_key = self.keys.nodes();
        // A fresh candidate every time: after Redis loses its data, whoever writes first sets
        // a value nobody has seen, so every node notices.
        let candidate = uuid::Uuid::new_v4().to_string();
        let pipeline = self.commands.pipeline();
        let _: () = pipeline
            .set(&epoch_key, candidate, None, Some(SetOptions::NX), false)
            .await?;
        let _: () = pipeline.get(&epoch_key).await?;
        let _: () = pipeline
            .hset(&nodes_key, (self.node_id.as_str(), record.to_json()))
            .await?;
        let _: () = pipeline.hgetall(&nodes_key).await?;
        let (_, epoch, _, entries): (Value, Option<String>, Value, HashMap<String, String>) =
            pipeline.all().await?;
        self.shared().own_record = Some(record);
        Ok(self.absorb(epoch, entries, store))
    }

    /// Updates membership, origins, the epoch and the replication ack from a registry read.
    fn absorb(
        &self,
        epoch: Option<String>,
        entries: HashMap<String, String>,
        store: &Store,
    ) -> Absorbed {
        let now = Instant::now();
        let now_ms = keys::now_ms();
        let own_origin = store.origin();
        let mut absorbed = Absorbed::default();
        let mut shared = self.shared();
        let previous_contact = shared.last_contact;
        shared.last_contact = Some(now);
        shared.last_error = None;
        shared.connection_error = None;

        // (No value at all cannot follow SET NX; it says nothing either way.)
        let changed = epoch.is_some() && shared.epoch.is_some() && shared.epoch != epoch;
        if changed {
            absorbed.epoch_changed = true;
            // What every peer that was alive before the loss held of this origin is safe;
            // everything shipped after it may be gone with Redis's data: ship it again.
            let before = previous_contact.unwrap_or(now);
            let safe = shared
                .peers
                .values()
                .filter(|peer| peer.alive_at(before))
                .map(|peer| peer.record.vector.get(own_origin))
                .min();
            if let Some(safe) = safe {
                self.shipped.fetch_min(safe, Ordering::SeqCst);
                self.wake_shipper.notify_one();
            }
            shared.offsets.clear();
            shared.offsets_generation += 1;
            metrics::counter!("herald_redis_epoch_changes_total").increment(1);
            tracing::warn!(
                old = ?shared.epoch,
                new = ?epoch,
                rewind_to = ?safe,
                "redis lost its data (new epoch): re-reading streams from the start and re-shipping"
            );
        }
        if epoch.is_some() {
            shared.epoch = epoch;
        }

        let mut seen = Vec::with_capacity(entries.len());
        for (node_id, text) in entries {
            if node_id == self.node_id.as_str() {
                continue;
            }
            let Some(record) = NodeRecord::from_json(&text) else {
                continue;
            };
            for (origin, _) in record.vector.iter() {
                absorbed.new_origins |= shared.origins.insert(origin.clone());
            }
            if let Some(origin) = &record.origin {
                absorbed.new_origins |= shared.origins.insert(origin.clone());
            }
            match shared.peers.get_mut(&node_id) {
                Some(peer) => {
                    if peer.record.beat != record.beat {
                        peer.beat_changed = Some(now);
                    }
                    absorbed.presence_changed |=
                        peer.record.presence_version != record.presence_version;
                    peer.record = record;
                }
                None => {
                    absorbed.presence_changed |= record.presence_version != 0;
                    let age = Duration::from_millis(now_ms.saturating_sub(record.at_ms));
                    let beat_changed = (age < DEAD_AFTER).then(|| now.checked_sub(age)).flatten();
                    shared.peers.insert(
                        node_id.clone(),
                        Peer {
                            record,
                            beat_changed,
                        },
                    );
                }
            }
            seen.push(node_id);
        }
        shared.peers.retain(|node_id, _| seen.contains(node_id));

        let acked = shared
            .peers
            .values()
            .filter(|peer| peer.alive_at(now))
            .map(|peer| peer.record.vector.get(own_origin))
            .max()
            .unwrap_or(0);
        drop(shared);
        // Every live peer's record was in this read: the own-seq fence has heard them all.
        let fence = store.own_fence();
        fence.set_floor(acked);
        fence.open();
        self.replicated.send_if_modified(|current| {
            if acked > *current {
                *current = acked;
                true
            } else {
                false
            }
        });
        absorbed
    }

    /// Sends a probe when due; answers `Some(true)` when the reader must be rebuilt.
    async fn probe_step(&self, last_probe: &mut Instant) -> Option<bool> {
        let now = Instant::now();
        let nonce = {
            let mut shared = self.shared();
            match &shared.probe {
                Some((_, sent)) if now.saturating_duration_since(*sent) > PROBE_DEADLINE => {
                    shared.probe = None;
                    // Only a reader that misses its probe while Redis answers is broken.
                    let answering = shared
                        .last_contact
                        .is_some_and(|at| now.saturating_duration_since(at) < TICK * 2);
                    return Some(answering && self.commands.is_connected());
                }
                Some(_) => return None,
                None if last_probe.elapsed() < PROBE_EVERY => return None,
                None => {
                    let nonce = uuid::Uuid::new_v4().to_string();
                    // Set before sending: the reader may see it before XADD answers.
                    shared.probe = Some((nonce.clone(), now));
                    nonce
                }
            }
        };
        *last_probe = now;
        if let Err(error) = self.send_probe(&nonce).await {
            self.note_error("probe", &error);
            let mut shared = self.shared();
            if shared.probe.as_ref().is_some_and(|(n, _)| *n == nonce) {
                shared.probe = None;
            }
        }
        Some(false)
    }

    async fn send_probe(&self, nonce: &str) -> Result<(), fred::error::Error> {
        let _: Value = self
            .commands
            .xadd(
                self.keys.probe(&self.node_id),
                false,
                ("MAXLEN", "~", PROBE_STREAM_CAP as i64),
                "*",
                vec![(FIELD_NONCE, nonce)],
            )
            .await?;
        Ok(())
    }

    /// An entry in the probe stream returns the reader's blocking read at once.
    async fn wake_reader(&self) {
        if let Err(error) = self.send_probe("wake").await {
            self.note_error("waking the reader", &error);
        }
    }

    fn plan_repairs(&self, planner: &mut RepairPlanner, hub: &Hub) -> Vec<repair::Repair> {
        let now = Instant::now();
        let mine = hub.delivered();
        let shared = self.shared();
        let fresh = shared
            .last_contact
            .is_some_and(|at| now.saturating_duration_since(at) < TICK * 2);
        if !fresh {
            return Vec::new();
        }
        let live: Vec<(&str, &VersionVector)> = shared
            .peers
            .iter()
            .filter(|(_, peer)| peer.alive_at(now))
            .map(|(id, peer)| (id.as_str(), &peer.record.vector))
            .collect();
        let mut repairs = planner.plan(self.node_id.as_str(), &mine, &live, now);
        // Below this node's prune point the log has holes: nodes there take a snapshot.
        for repair in &mut repairs {
            repair.after = repair.after.max(shared.own_pruned.get(&repair.origin));
        }
        repairs.retain(|repair| repair.after < repair.upto);
        repairs
    }

    /// Removes registry records nobody has rewritten for [`FORGET_AFTER`].
    async fn forget_old_records(&self) {
        let now_ms = keys::now_ms();
        let forgotten: Vec<String> = self
            .shared()
            .peers
            .iter()
            .filter(|(_, peer)| {
                now_ms.saturating_sub(peer.record.at_ms) > FORGET_AFTER.as_millis() as u64
            })
            .map(|(id, _)| id.clone())
            .collect();
        if forgotten.is_empty() {
            return;
        }
        let removed: Result<Value, _> = self.commands.hdel(self.keys.nodes(), forgotten).await;
        if let Err(error) = removed {
            self.note_error("forgetting old records", &error);
        }
    }
}
