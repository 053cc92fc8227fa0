//! The Redis backplane: replication through Redis Streams, with an outbox driven by the event
//! log so that nothing committed is lost while Redis is away.
//!
//! # Why streams, and why an outbox
//!
//! The seeds' design fanned out with Redis pub/sub and "fell back to local mode" when Redis was
//! down, which silently dropped every cross-replica message of the outage: pub/sub keeps
//! nothing for a subscriber that is not connected at that instant. Here Redis is only a
//! transport; the truth stays in each node's SQLite log, and every piece of state in Redis can
//! be rebuilt from the nodes:
//!
//! - **Outbox.** A publish commits to the local log and is delivered to local clients whether
//!   or not Redis answers. The node remembers "shipped up to seq N of my origin"; a shipper task
//!   reads its own origin's events after N from the store ([`crate::store::state::log_range`])
//!   and `XADD`s them. [`Backplane::ship`] only wakes the shipper, so it never blocks the store's
//!   writer, and the outbox needs no queue of its own: the log is the queue, bounded by the disk.
//!   While Redis is unreachable the shipper backs off and retries; when Redis returns it ships
//!   the backlog in order. N survives restarts in the `shipped` hash.
//! - **One stream per origin** (`herald:{cluster}:log:{origin}`, one entry per event,
//!   `MAXLEN ~ 100000` so Redis memory is bounded). Unlike pub/sub a stream keeps entries for
//!   readers that are behind or reconnecting; one stream per origin keeps each origin's events
//!   in seq order and lets a reader skip what it holds by the `seq` field without decoding. Every node reads every known origin's stream with one blocking `XREAD` from its
//!   last-read ids, on a connection of its own (a blocking read would stall the commands that
//!   share its connection). Received events go through [`Store::apply_remote`], which is
//!   idempotent on `(origin, seq)`, holds an event back behind a gap, and hands the hub only
//!   what became contiguous: per-origin order and exactly-once come from the store, not from
//!   Redis.
//! - **Registry** (`herald:{cluster}:nodes`): every [`TICK`] each node writes its id -> a small
//!   JSON record (log position, connection counts, http address, a heartbeat counter). A record
//!   whose heartbeat has not moved for [`DEAD_AFTER`] belongs to a dead node. The registry is
//!   how nodes discover origins (the keys of everyone's positions), how `/api/cluster` lists
//!   members, how broadcast stats count cluster-wide listeners, and how `replication = 2`
//!   publishes are acknowledged (the highest seq of this node's origin that another live node's
//!   position shows; while a publish waits, the registry is polled every [`ACK_POLL`], and
//!   receivers rewrite their record right after storing).
//! - **Repair.** Streams are trimmed, and a Redis restart can lose everything. Every tick, for
//!   each origin, the live node holding the highest position (ties: lowest node id) looks for
//!   live nodes whose position for that origin is behind its own and has not moved for
//!   a second, and re-ships the missing range (a bounded window per tick) into the
//!   origin's stream; receivers dedupe. This also covers the events of a dead origin, as long as
//!   one live node holds them.
//! - **Epoch.** `herald:{cluster}:epoch` holds a random value set with `SET NX`. A different or
//!   missing value means Redis lost its data: read offsets go back to 0, the registry is
//!   rewritten at once, and the shipper rewinds to what every previously live peer was known to
//!   hold, so that what was shipped but not yet read is shipped again without waiting for repair.
//! - **Probe.** A reader that silently stopped delivering (a half-open connection, a stuck
//!   client) is caught by a probe: every [`PROBE_EVERY`] the node `XADD`s a nonce to its own
//!   probe stream, which its reader also reads; when the nonce is not back within
//!   [`PROBE_DEADLINE`] while Redis answers, the reader and its connection are rebuilt
//!   (`herald_redis_reader_repairs_total`).
//! - **Presence** (`presence`): each node writes its whole presence snapshot to
//!   `herald:{cluster}:presence:{node}` (expiring unless refreshed) when it changed, at most
//!   every 100 ms, and then names its version in its registry record (`presence_version`);
//!   every node reads the snapshots of live peers whose version changed and replaces what it
//!   held of them. A peer the registry calls dead loses its users at the next tick (within
//!   [`DEAD_AFTER`] and a tick of its last heartbeat); a node that cannot reach Redis for
//!   [`DEAD_AFTER`] drops every peer's presence until it can.
//!
//! Connections use fred's explicit reconnect policy (its default never reconnects): exponential
//! back-off from 100 ms to 500 ms, forever, with connection and command timeouts, and `connect()`
//! without waiting, so a node whose Redis is unreachable at start-up still starts, serves local
//! clients, reports not ready, and joins when Redis appears.
//!
//! Trust: anyone who can write to this Redis can inject events; protect it with a password or
//! an ACL user in the URL (`redis://user:password@host:6379`), and with TLS (`rediss://`,
//! checked against the system's roots or, with `--redis-ca FILE`, against a private CA only).
//! The password is used to build the client and nowhere else: the URL is a [`RedisUrl`], shown
//! without it, health details name only `host:port/db`, and error texts from the client
//! (command errors, and the connection errors fred reports, which say why a command timed out:
//! authentication, TLS) pass through [`RedisUrl::redact`] before they are logged or shown. The
//! cluster secret guards the mesh only.

mod catchup;
mod client;
mod keys;
mod presence;
mod reader;
mod registry;
mod repair;
mod shipper;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Config as FredConfig, HashesInterface, Value};
use fred::types::ConnectHandle;
use tokio::sync::{Notify, mpsc, watch};

use super::{Backplane, BackplaneHealth, PeerSummary};
use crate::cluster::MemberState;
use crate::config::RedisUrl;
use crate::event::{Event, NodeId, SharedEvent};
use crate::hub::Hub;
use crate::presence::Presence;
use crate::store::Store;
use client::{Backoff, QUIT_TIMEOUT, disconnect, new_client, unless_stopped};
use keys::{Keys, NodeRecord};

/// How often the registry is written and read, repairs planned and probes checked.
pub const TICK: Duration = Duration::from_millis(200);
/// A registry record whose heartbeat has not changed for this long belongs to a dead node.
pub const DEAD_AFTER: Duration = Duration::from_secs(2);
/// How often the registry is read while a `replication = 2` publish waits for its ack.
pub const ACK_POLL: Duration = Duration::from_millis(10);
/// How often the reader is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe not back within this long means the reader has stopped delivering.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(3);
/// Without a successful registry round trip (one every [`TICK`]) for this long, Redis counts
/// as unreachable and `/readyz` fails: a node cut from Redis turns unready within 2 s
/// (`herald chaos --backplane redis` measured 2.04 s with 2 s here; 1.5 s leaves room).
const CONTACT_STALE: Duration = Duration::from_millis(1500);
/// Ephemeral events (typing indicators) waiting for Redis; more are dropped and counted.
const EPHEMERAL_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum RedisBackplaneError {
    #[error("invalid redis url: {0}")]
    Url(String),
    #[error("redis TLS: {0}")]
    Tls(String),
}

/// What the node tells the backplane about itself.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// Shown without its password.
    pub url: RedisUrl,
    /// The CA a `rediss://` server's certificate must chain to (default: the system's roots).
    pub ca: Option<std::path::PathBuf>,
    pub cluster_id: String,
    pub node_id: NodeId,
    pub http_addr: SocketAddr,
    /// True when `http_addr` serves HTTPS (told to peers in the registry record).
    pub https: bool,
    /// Proves the cluster secret to peers serving snapshots.
    pub snapshot_token: String,
    /// Fetches snapshots from peers, over HTTPS from those that serve it
    /// (`crate::backplane::peer_snapshot::client`).
    pub snapshot_http: reqwest::Client,
}

/// Another node, as last read from the registry.
struct Peer {
    record: NodeRecord,
    /// When its heartbeat was last seen to change (or, on first sight, when it was written).
    beat_changed: Option<Instant>,
}

impl Peer {
    fn alive_at(&self, at: Instant) -> bool {
        !self.record.left
            && self
                .beat_changed
                .is_some_and(|changed| at.saturating_duration_since(changed) < DEAD_AFTER)
    }
}

/// State shared by the backplane's tasks. Held only for in-memory work, never across `.await`.
#[derive(Default)]
struct Shared {
    peers: BTreeMap<String, Peer>,
    /// Every origin any node's position mentions: the streams to read.
    origins: BTreeSet<NodeId>,
    /// Stream key -> the last entry id read.
    offsets: HashMap<String, String>,
    /// Grows whenever `offsets` is reset, so that a read begun before the reset does not store
    /// its ids after it.
    offsets_generation: u64,
    epoch: Option<String>,
    last_contact: Option<Instant>,
    last_error: Option<String>,
    /// The last error of the command connection itself (refused, TLS, authentication), which a
    /// timed-out command does not say.
    connection_error: Option<String>,
    /// The probe nonce in flight and when it was sent.
    probe: Option<(String, Instant)>,
    /// True once the shipper knows where shipping stopped last time.
    shipper_ready: bool,
    /// This node's prune points, as last written to its record.
    own_pruned: crate::event::VersionVector,
    /// This node's last registry record (rewritten with `left` on close).
    own_record: Option<NodeRecord>,
    /// Whether the last registry round trip succeeded (for logging the transitions).
    registry_answered: bool,
    /// The version of this node's presence snapshot in Redis, for its record (written only
    /// once the snapshot itself is).
    presence_version: u64,
}

pub struct RedisBackplane {
    node_id: NodeId,
    keys: Keys,
    /// The Redis address without credentials, for health details.
    server: String,
    /// Hides the password in error texts.
    url: RedisUrl,
    http_addr: SocketAddr,
    https: bool,
    fred_config: FredConfig,
    /// Commands: shipping, the registry, probes, repairs.
    commands: fred::prelude::Client,
    commands_connection: Mutex<Option<ConnectHandle>>,
    /// The blocking reader's own connection (replaced when the reader is rebuilt).
    reader_client: Mutex<Option<(fred::prelude::Client, ConnectHandle)>>,
    origin: OnceLock<NodeId>,
    wake_shipper: Notify,
    nudge_registry: Notify,
    /// A registry read brought a peer's new presence version.
    presence_wake: Notify,
    /// The highest seq of this node's origin written to its stream.
    shipped: AtomicU64,
    /// The highest seq of this node's origin that another live node holds.
    replicated: watch::Sender<u64>,
    shared: Mutex<Shared>,
    ephemeral: mpsc::Sender<Event>,
    ephemeral_queue: Mutex<Option<mpsc::Receiver<Event>>>,
    /// Since when a snapshot is being fetched from a peer.
    snapshot_fetch: Mutex<Option<Instant>>,
    /// At the last registry read, this node's history was below what a live peer keeps: it
    /// needs a snapshot (fetched or not), so it is not ready.
    needs_snapshot: std::sync::atomic::AtomicBool,
    snapshot_token: String,
    snapshot_http: reqwest::Client,
}

impl RedisBackplane {
    /// Builds the backplane and starts connecting in the background: it does not wait for
    /// Redis, which may well be unreachable now and appear later.
    pub fn connect(options: RedisOptions) -> Result<Arc<Self>, RedisBackplaneError> {
        let mut fred_config = client::fred_config(&options.url, options.ca.as_deref())?;
        // Run the reconnect policy for the first connection too, instead of failing.
        fred_config.fail_fast = false;
        let commands = new_client(&fred_config);
        let connection = commands.connect();
        let (ephemeral, ephemeral_queue) = mpsc::channel(EPHEMERAL_QUEUE);
        Ok(Arc::new(Self {
            keys: Keys::new(&options.cluster_id),
            node_id: options.node_id,
            server: options.url.server(),
            url: options.url,
            http_addr: options.http_addr,
            https: options.https,
            fred_config,
            commands,
            commands_connection: Mutex::new(Some(connection)),
            reader_client: Mutex::new(None),
            origin: OnceLock::new(),
            wake_shipper: Notify::new(),
            nudge_registry: Notify::new(),
            presence_wake: Notify::new(),
            shipped: AtomicU64::new(0),
            replicated: watch::channel(0).0,
            shared: Mutex::new(Shared::default()),
            ephemeral,
            ephemeral_queue: Mutex::new(Some(ephemeral_queue)),
            snapshot_fetch: Mutex::new(None),
            needs_snapshot: std::sync::atomic::AtomicBool::new(false),
            snapshot_token: options.snapshot_token,
            snapshot_http: options.snapshot_http,
        }))
    }

    /// Starts the shipper, the registry (which runs the reader), the ephemeral sender and
    /// presence; all end when `stop` fires. Call before the node accepts publishes.
    pub fn run(
        self: &Arc<Self>,
        store: Store,
        hub: Arc<Hub>,
        presence: Arc<Presence>,
        stop: watch::Receiver<bool>,
    ) {
        let _ = self.origin.set(store.origin().clone());
        let committed_at_start = hub.delivered().get(store.origin());
        tokio::spawn(shipper::run(
            Arc::clone(self),
            store.clone(),
            Arc::clone(&hub),
            committed_at_start,
            stop.clone(),
        ));
        if let Some(queue) = lock(&self.ephemeral_queue).take() {
            tokio::spawn(shipper::run_ephemeral(
                Arc::clone(self),
                queue,
                stop.clone(),
            ));
        }
        tokio::spawn(watch_connection_errors(Arc::downgrade(self), stop.clone()));
        tokio::spawn(presence::run(Arc::clone(self), presence, stop.clone()));
        tokio::spawn(registry::run(Arc::clone(self), store, hub, stop));
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    fn own_origin(&self) -> Option<&NodeId> {
        self.origin.get()
    }

    /// Notes a failed Redis command for the health detail.
    fn note_error(&self, what: &str, error: &fred::error::Error) {
        let detail = self.url.redact(&format!("{what}: {error}"));
        let mut shared = self.shared();
        if shared.last_error.as_deref() != Some(detail.as_str()) {
            tracing::debug!(error = %detail, "redis command failed");
            shared.last_error = Some(detail);
        }
    }

    /// Notes the outcome of a registry round trip; logs when Redis goes away or comes back.
    fn note_registry(&self, answered: Result<(), &fred::error::Error>) {
        let mut shared = self.shared();
        let was = std::mem::replace(&mut shared.registry_answered, answered.is_ok());
        drop(shared);
        match answered {
            Ok(()) if !was => {
                tracing::info!(redis = %self.server, "redis reachable: replicating through it");
            }
            Err(error) => {
                if was {
                    tracing::warn!(
                        redis = %self.server,
                        error = %self.url.redact(&error.to_string()),
                        "redis unreachable: publishes are committed and delivered locally, \
                         and shipped when it returns"
                    );
                }
                self.note_error("registry", error);
            }
            Ok(()) => {}
        }
    }

    fn redis_reachable(&self, shared: &Shared) -> bool {
        self.commands.is_connected()
            && shared
                .last_contact
                .is_some_and(|at| at.elapsed() < CONTACT_STALE)
    }

    fn live_peer_count(&self) -> usize {
        let now = Instant::now();
        let shared = self.shared();
        if !self.redis_reachable(&shared) {
            return 0;
        }
        shared.peers.values().filter(|p| p.alive_at(now)).count()
    }
}

impl Backplane for RedisBackplane {
    fn ship(&self, events: &[SharedEvent]) {
        let Some(origin) = self.own_origin() else {
            return;
        };
        // Events of other origins also pass through here (after they were applied): those are
        // their origin's to ship. Notify stores a permit, so a wake-up is never lost.
        if events.iter().any(|event| &event.origin == origin) {
            self.wake_shipper.notify_one();
        }
    }

    fn ship_ephemeral(&self, events: &[SharedEvent]) {
        for event in events {
            if self.ephemeral.try_send(Event::clone(event)).is_err() {
                metrics::counter!("herald_redis_ephemeral_dropped_total").increment(1);
            }
        }
    }

    fn health(&self) -> BackplaneHealth {
        let now = Instant::now();
        let shared = self.shared();
        let reachable = self.redis_reachable(&shared);
        let probe_late = shared
            .probe
            .as_ref()
            .is_some_and(|(_, sent)| now.saturating_duration_since(*sent) > PROBE_DEADLINE);
        let live = shared.peers.values().filter(|p| p.alive_at(now)).count();
        let shipped = self.shipped.load(Ordering::Relaxed);
        let committed = match (&shared.own_record, self.own_origin()) {
            (Some(record), Some(origin)) => record.vector.get(origin).max(shipped),
            _ => shipped,
        };
        let error = match (&shared.last_error, &shared.connection_error) {
            (Some(error), Some(connection)) => format!("{error} (connection: {connection})"),
            (None, Some(connection)) => format!("connection: {connection}"),
            (Some(error), None) => error.clone(),
            (None, None) => "no answer yet".to_string(),
        };
        let (healthy, detail) = if !reachable {
            let since = match shared.last_contact {
                Some(at) => format!("for {:.1}s", at.elapsed().as_secs_f64()),
                None => "since start-up".to_string(),
            };
            (
                false,
                format!("redis at {} unreachable {since}: {error}", self.server),
            )
        } else if shared.epoch.is_none() || !shared.shipper_ready {
            (false, format!("redis at {} reached; joining", self.server))
        } else if self.fetching_snapshot() || self.needs_snapshot.load(Ordering::Relaxed) {
            (
                false,
                "catching up from a peer's snapshot: history below what peers keep".to_string(),
            )
        } else if probe_late {
            (
                false,
                format!(
                    "reader stalled: its probe did not come back within {}s; rebuilding it",
                    PROBE_DEADLINE.as_secs()
                ),
            )
        } else {
            (
                true,
                format!(
                    "connected to redis at {}; {live} live peers; shipped {shipped} of {committed} own events",
                    self.server
                ),
            )
        };
        BackplaneHealth {
            kind: "redis",
            healthy,
            detail,
            partition: None,
        }
    }

    fn linked_peers(&self) -> usize {
        self.live_peer_count()
    }

    fn replication_watch(&self) -> Option<watch::Receiver<u64>> {
        Some(self.replicated.subscribe())
    }

    fn peers(&self) -> Vec<PeerSummary> {
        let now = Instant::now();
        let shared = self.shared();
        let reachable = self.redis_reachable(&shared);
        shared
            .peers
            .iter()
            .map(|(node_id, peer)| {
                let alive = peer.alive_at(now);
                let state = if peer.record.left {
                    MemberState::Left
                } else if alive {
                    MemberState::Alive
                } else {
                    MemberState::Dead
                };
                PeerSummary {
                    node_id: node_id.clone(),
                    state,
                    http_addr: peer.record.http.clone(),
                    connections: peer.record.connections,
                    users: peer.record.users,
                    broadcast_users: peer.record.broadcast_users,
                    log_position: peer.record.vector.clone(),
                    linked: alive && reachable,
                }
            })
            .collect()
    }

    fn close(&self) {
        let left = self.shared().own_record.clone().map(|mut record| {
            record.left = true;
            record.beat += 1;
            record
        });
        let reader = lock(&self.reader_client).take();
        let commands = lock(&self.commands_connection)
            .take()
            .map(|connection| (self.commands.clone(), connection));
        let (nodes, node_id) = (self.keys.nodes(), self.node_id.to_string());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Some(reader) = reader {
                disconnect(reader).await;
            }
            let Some((client, connection)) = commands else {
                return;
            };
            if let Some(record) = left {
                // Tell the others at once rather than after DEAD_AFTER.
                let said: Result<Value, _> = tokio::time::timeout(
                    QUIT_TIMEOUT,
                    client.hset(nodes, (node_id, record.to_json())),
                )
                .await
                .unwrap_or_else(|_| Ok(Value::Null));
                if let Err(error) = said {
                    tracing::debug!(%error, "could not mark this node as left in redis");
                }
            }
            disconnect((client, connection)).await;
        });
    }
}

/// Keeps the last error fred reports for the command connection (refused, TLS handshake,
/// authentication: a command only says it timed out) for the health detail, redacted; until
/// `stop`, or until the backplane is gone.
async fn watch_connection_errors(
    backplane: std::sync::Weak<RedisBackplane>,
    mut stop: watch::Receiver<bool>,
) {
    use fred::prelude::EventInterface;
    let Some(mut errors) = backplane.upgrade().map(|b| b.commands.error_rx()) else {
        return;
    };
    loop {
        let received = tokio::select! {
            received = errors.recv() => received,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let error = match received {
            Ok((error, _)) => error,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(backplane) = backplane.upgrade() else {
            return;
        };
        let detail = backplane.url.redact(&error.to_string());
        let mut shared = backplane.shared();
        if shared.connection_error.as_deref() != Some(detail.as_str()) {
            tracing::debug!(error = %detail, "redis connection error");
            shared.connection_error = Some(detail);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_dead_once_their_heartbeat_stops() {
        let now = Instant::now();
        let fresh = Peer {
            record: NodeRecord::default(),
            beat_changed: Some(now),
        };
        assert!(fresh.alive_at(now));
        assert!(!fresh.alive_at(now + DEAD_AFTER));
        let never = Peer {
            record: NodeRecord::default(),
            beat_changed: None,
        };
        assert!(!never.alive_at(now));
        let left = Peer {
            record: NodeRecord {
                left: true,
                ..NodeRecord::default()
            },
            beat_changed: Some(now),
        };
        assert!(!left.alive_at(now));
    }
}
