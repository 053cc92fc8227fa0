//! Serving peers' requests (pulls, snapshots) off the ingest loop, fairly.
//!
//! Each request runs in a task of its own, so the loop that stores replicated events never
//! waits for one. A peer has at most one request served at a time and at most
//! [`QUEUED_PER_PEER`] waiting (more are dropped and counted; an asker re-asks a pull that
//! made no progress), and at most [`SERVED_AT_ONCE`] are served across all peers. A slow peer
//! therefore holds one of those places, never all of them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::event::NodeId;

/// Requests served at once, across all peers.
pub const SERVED_AT_ONCE: usize = 4;
/// Requests of one peer waiting or being served.
pub const QUEUED_PER_PEER: usize = 8;

struct PeerQueue {
    turn: Semaphore,
    queued: AtomicUsize,
}

pub struct Serving {
    global: Arc<Semaphore>,
    peers: Mutex<HashMap<NodeId, Arc<PeerQueue>>>,
}

impl Default for Serving {
    fn default() -> Self {
        Self {
            global: Arc::new(Semaphore::new(SERVED_AT_ONCE)),
            peers: Mutex::new(HashMap::new()),
        }
    }
}

impl Serving {
    /// Runs `work` for `peer` in its turn; `kind` labels what is dropped when the peer has too
    /// many requests waiting. Answers whether it was accepted.
    pub fn spawn<F>(&self, peer: &NodeId, kind: &'static str, work: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let queue = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(peers.entry(peer.clone()).or_insert_with(|| {
                Arc::new(PeerQueue {
                    turn: Semaphore::new(1),
                    queued: AtomicUsize::new(0),
                })
            }))
        };
        if queue.queued.fetch_add(1, Ordering::AcqRel) >= QUEUED_PER_PEER {
            queue.queued.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("herald_mesh_requests_dropped_total", "kind" => kind).increment(1);
            tracing::debug!(%peer, kind, "too many requests waiting from one peer; dropped");
            return false;
        }
        let global = Arc::clone(&self.global);
        tokio::spawn(async move {
            if let Ok(_turn) = queue.turn.acquire().await {
                if let Ok(_permit) = global.acquire().await {
                    work.await;
                }
            }
            queue.queued.fetch_sub(1, Ordering::AcqRel);
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_stuck_peer_holds_one_place_and_its_excess_is_dropped() {
        let serving = Serving::default();
        let stuck = NodeId::new("slow").unwrap();
        let (_release, held) = tokio::sync::watch::channel(());
        for _ in 0..QUEUED_PER_PEER {
            let mut held = held.clone();
            assert!(serving.spawn(&stuck, "pull", async move {
                let _ = held.changed().await;
            }));
        }
        assert!(!serving.spawn(&stuck, "pull", async {}));
        // Another peer is served at once.
        let (done, finished) = tokio::sync::oneshot::channel();
        assert!(
            serving.spawn(&NodeId::new("fast").unwrap(), "pull", async move {
                let _ = done.send(());
            })
        );
        tokio::time::timeout(Duration::from_secs(5), finished)
            .await
            .expect("the other peer is not stalled")
            .unwrap();
    }
}
