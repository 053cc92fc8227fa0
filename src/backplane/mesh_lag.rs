//! Replication lag per peer, from the positions peers report (every mesh tick, and at once as
//! the ack of a `replication = 2` push): how long the oldest of this node's own committed
//! events that the peer has not reported holding has been committed, 0 when it holds them all.
//!
//! This node keeps, for its own commits, when each was handed to the backplane (one entry per
//! commit batch, not per event), and each peer's last reported seq of its own origin. A peer
//! whose link is down keeps its last report, so its lag grows until it comes back (or gossip
//! forgets it). Positions come every 200 ms, so a healthy peer under load shows up to about
//! that much. The history is bounded ([`MAX_COMMITS`]): past it the two oldest entries are
//! merged into one with the older time, so a long-gone peer's lag goes on growing (slightly
//! overstated, never understated). Events committed before this process started count as
//! committed at its start.
//!
//! Cost: one uncontended lock and a push per commit batch of own events; the lag is computed
//! at scrape time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use crate::event::NodeId;
use crate::telemetry::catalog::{MESH_LINK_UP, REPLICATION_LAG};

/// Commit batches remembered at most.
const MAX_COMMITS: usize = 4096;

#[derive(Default)]
pub(super) struct ReplicationLag {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// `(last seq of a commit batch, when it was handed on)`, oldest first.
    commits: VecDeque<(u64, Instant)>,
    /// Each peer's last reported seq of this node's origin.
    peers: HashMap<NodeId, u64>,
    /// Peers whose link state was shown, so that one gossip forgot is shown down once.
    shown: HashSet<NodeId>,
}

impl ReplicationLag {
    /// Events up to `seq` were committed before this node started.
    pub(super) fn started(&self, seq: u64) {
        let mut state = self.lock();
        if state.commits.is_empty() && seq > 0 {
            state.commits.push_back((seq, Instant::now()));
        }
    }

    /// Own events up to `seq` were just committed.
    pub(super) fn committed(&self, seq: u64) {
        let now = Instant::now();
        let mut state = self.lock();
        if state.commits.back().is_some_and(|(last, _)| *last >= seq) {
            return;
        }
        state.commits.push_back((seq, now));
        if state.commits.len() > MAX_COMMITS {
            if let Some((_, oldest)) = state.commits.pop_front() {
                if let Some(front) = state.commits.front_mut() {
                    front.1 = oldest;
                }
            }
        }
    }

    /// `peer` reported holding this node's events up to `seq`.
    pub(super) fn reported(&self, peer: &NodeId, seq: u64) {
        let mut state = self.lock();
        match state.peers.get_mut(peer) {
            Some(held) => *held = seq,
            None => {
                state.peers.insert(peer.clone(), seq);
            }
        }
        // What every peer holds is no longer needed.
        let least = state.peers.values().copied().min().unwrap_or(0);
        while state.commits.len() > 1 && state.commits.front().is_some_and(|(s, _)| *s <= least) {
            state.commits.pop_front();
        }
    }

    /// The lag of a peer that holds this node's events up to `held`, in seconds.
    fn lag_of(state: &State, held: u64, now: Instant) -> f64 {
        state
            .commits
            .iter()
            .find(|(seq, _)| *seq > held)
            .map_or(0.0, |(_, at)| now.duration_since(*at).as_secs_f64())
    }

    /// Sets `herald_replication_lag_seconds{peer}` and `herald_mesh_link_up{peer}` for the
    /// peers gossip knows (`members`), given the linked ones; forgets the others (shown 0 and
    /// down once).
    pub(super) fn record(&self, members: &[NodeId], linked: &[NodeId]) {
        let now = Instant::now();
        let mut state = self.lock();
        state.peers.retain(|peer, _| members.contains(peer));
        let gone: Vec<NodeId> = state
            .shown
            .iter()
            .filter(|peer| !members.contains(peer))
            .cloned()
            .collect();
        for peer in gone {
            metrics::gauge!(MESH_LINK_UP, "peer" => peer.to_string()).set(0.0);
            metrics::gauge!(REPLICATION_LAG, "peer" => peer.to_string()).set(0.0);
            state.shown.remove(&peer);
        }
        for peer in members {
            let up = linked.contains(peer);
            metrics::gauge!(MESH_LINK_UP, "peer" => peer.to_string()).set(f64::from(u8::from(up)));
            if let Some(&held) = state.peers.get(peer) {
                let lag = Self::lag_of(&state, held, now);
                metrics::gauge!(REPLICATION_LAG, "peer" => peer.to_string()).set(lag);
            }
            state.shown.insert(peer.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn peer(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    #[test]
    fn the_lag_is_the_age_of_the_oldest_commit_a_peer_lacks() {
        let lag = ReplicationLag::default();
        let t0 = Instant::now();
        lag.committed(5);
        std::thread::sleep(Duration::from_millis(20));
        lag.committed(9);
        lag.reported(&peer("b"), 3);
        lag.reported(&peer("a"), 9);
        let state = lag.lock();
        let now = Instant::now();
        assert_eq!(ReplicationLag::lag_of(&state, 9, now), 0.0);
        let behind = ReplicationLag::lag_of(&state, 3, now);
        assert!(behind >= 0.02 && behind <= now.duration_since(t0).as_secs_f64());
        // Between the two commits: the second one's age, younger.
        assert!(ReplicationLag::lag_of(&state, 5, now) < behind);
    }

    #[test]
    fn history_every_peer_holds_is_dropped_and_the_bound_keeps_the_oldest_time() {
        let lag = ReplicationLag::default();
        lag.started(10);
        for seq in 11..=20 {
            lag.committed(seq);
        }
        lag.reported(&peer("a"), 15);
        assert_eq!(lag.lock().commits.front().unwrap().0, 16);

        let bounded = ReplicationLag::default();
        bounded.committed(1);
        let first = bounded.lock().commits.front().unwrap().1;
        for seq in 2..=(MAX_COMMITS as u64 + 10) {
            bounded.committed(seq);
        }
        let state = bounded.lock();
        assert_eq!(state.commits.len(), MAX_COMMITS);
        assert_eq!(state.commits.front().unwrap().1, first);
    }
}
