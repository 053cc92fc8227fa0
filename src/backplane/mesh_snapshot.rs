//! Catching up through a snapshot over the mesh, when a peer no longer keeps the events asked
//! for (see `crate::store::snapshot` for what a snapshot holds and why merging it is safe).
//!
//! - A pull that reaches below what the serving peer keeps is answered with
//!   [`Frame::Pruned`] instead of a range with holes in it.
//! - The asker then requests one snapshot at a time ([`Frame::SnapshotRequest`], with what it
//!   holds), from that peer. The peer streams [`Frame::SnapshotPart`]s read from one
//!   transaction, waiting for link queue space (a slow asker slows the reader, nothing piles
//!   up), then [`Frame::SnapshotEnd`].
//! - Parts are merged as they come, each in its own transaction; the end makes the position
//!   jump. A snapshot that stops making progress (its peer died, the link dropped) is given up
//!   after [`SNAPSHOT_STALE`] and asked for again, from whichever peer answers `Pruned` next.
//!   A restart in the middle leaves the position where it was, so the next snapshot covers
//!   everything again; what was merged already merges again to the same state.
//! - While a snapshot is in flight the node reports itself not ready.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::event::NodeId;
use crate::mesh::{Frame, Mesh, frame};
use crate::store::Store;
use crate::store::snapshot::{SnapshotBasis, SnapshotEnd, SnapshotItem, SnapshotPart};

/// A snapshot with no part for this long is given up.
pub const SNAPSHOT_STALE: Duration = Duration::from_secs(10);

struct InFlight {
    peer: NodeId,
    id: u64,
    started: Instant,
    progress: Instant,
    parts: u64,
}

/// The asking side: at most one snapshot in flight.
#[derive(Default)]
pub(super) struct SnapshotCatchUp {
    in_flight: Mutex<Option<InFlight>>,
}

impl SnapshotCatchUp {
    /// The peer a snapshot is being received from, while it makes progress.
    pub(super) fn active_peer(&self) -> Option<NodeId> {
        lock(&self.in_flight)
            .as_ref()
            .filter(|f| f.progress.elapsed() < SNAPSHOT_STALE)
            .map(|f| f.peer.clone())
    }

    /// `peer` cannot answer a pull of `origin`: ask it for a snapshot unless one is coming.
    pub(super) async fn on_pruned(
        &self,
        mesh: &Mesh,
        store: &Store,
        peer: &NodeId,
        origin: &NodeId,
        pruned: u64,
    ) {
        if self.active_peer().is_some() {
            return;
        }
        let basis = match store.snapshot_basis().await {
            Ok(basis) => basis,
            Err(error) => {
                tracing::warn!(%error, "cannot read this node's position for a snapshot");
                return;
            }
        };
        if basis.since.get(origin) >= pruned {
            // Caught up meanwhile (an earlier snapshot, or another peer): nothing to ask.
            return;
        }
        let id = rand_id();
        let Ok(bytes) = frame::encode(&Frame::SnapshotRequest { id, basis }) else {
            return;
        };
        if mesh.push_to(peer, &Arc::from(bytes)).is_err() {
            return;
        }
        tracing::info!(%peer, %origin, pruned, "history below what peers keep: asking for a snapshot");
        let now = Instant::now();
        *lock(&self.in_flight) = Some(InFlight {
            peer: peer.clone(),
            id,
            started: now,
            progress: now,
            parts: 0,
        });
    }

    /// True when `(peer, id)` is the snapshot being received; notes the progress.
    fn expects(&self, peer: &NodeId, id: u64) -> bool {
        let mut in_flight = lock(&self.in_flight);
        match in_flight.as_mut() {
            Some(f) if &f.peer == peer && f.id == id => {
                f.progress = Instant::now();
                f.parts += 1;
                true
            }
            _ => false,
        }
    }

    pub(super) async fn on_part(&self, store: &Store, peer: &NodeId, id: u64, part: SnapshotPart) {
        if !self.expects(peer, id) {
            return;
        }
        if let Err(error) = store.merge_snapshot(part).await {
            tracing::warn!(%peer, %error, "merging a snapshot part failed; the snapshot is given up");
            *lock(&self.in_flight) = None;
        }
    }

    /// Ends the snapshot: answers true when the position jumped.
    pub(super) async fn on_end(
        &self,
        store: &Store,
        peer: &NodeId,
        id: u64,
        end: SnapshotEnd,
    ) -> bool {
        if !self.expects(peer, id) {
            return false;
        }
        let finished = lock(&self.in_flight).take();
        match store.finish_snapshot(end).await {
            Ok(applied) => {
                metrics::counter!("herald_snapshots_received_total").increment(1);
                if let Some(f) = finished {
                    tracing::info!(%peer, parts = f.parts, took_ms = f.started.elapsed().as_millis() as u64,
                        position = ?applied.position, "caught up from a snapshot");
                }
                true
            }
            Err(error) => {
                tracing::warn!(%peer, %error, "finishing a snapshot failed");
                false
            }
        }
    }
}

/// Streams a snapshot for `peer`, as of this node's position now.
pub(super) async fn serve(
    mesh: &Mesh,
    store: &Store,
    peer: &NodeId,
    id: u64,
    basis: SnapshotBasis,
) {
    let started = Instant::now();
    let mut items = store.snapshot(basis);
    let mut parts = 0u64;
    while let Some(item) = items.recv().await {
        let (frame, last) = match item {
            SnapshotItem::Part(part) => (Frame::SnapshotPart { id, part }, false),
            SnapshotItem::End(end) => (Frame::SnapshotEnd { id, end }, true),
        };
        let bytes = match frame::encode(&frame) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%peer, %error, "cannot encode a snapshot part");
                return;
            }
        };
        if mesh.send_to(peer, Arc::from(bytes)).await.is_err() {
            tracing::info!(%peer, parts, "snapshot cut short: the link is gone");
            return;
        }
        parts += 1;
        if last {
            metrics::counter!("herald_snapshots_sent_total").increment(1);
            tracing::info!(%peer, parts, took_ms = started.elapsed().as_millis() as u64, "snapshot sent");
        }
    }
}

fn rand_id() -> u64 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    u64::from_be_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
