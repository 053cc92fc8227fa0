//! Rejoining after a stall: a node that was stopped (SIGSTOP, a VM paused for migration, a
//! host that froze) for longer than [`STALL`] wakes up with state its peers have moved past.
//! Until it has caught up it must not pass that state off as current, so it is unready
//! meanwhile: `/readyz` answers 503 and a load balancer keeps new clients on nodes that are
//! current. It keeps serving the clients it has (what it delivers is late, never wrong: every
//! origin's events still come in seq order, and the gap is pulled from the peers).
//!
//! The node notices its own stall in the mesh tick: the time since the previous tick is more
//! than [`STALL`] (ticks are 200 ms apart). From then on [`Rejoin`] gathers the positions its
//! peers report (each sends one every tick); at the first tick after one arrived it fixes the
//! **target**, the pointwise maximum of those reports, and the node is current again once its
//! delivered position covers the target. A node with no live peer has nothing to catch up
//! with and is current at once.
//!
//! State: one optional target vector, bounded by the number of origins.

use std::sync::Mutex;
use std::time::Duration;

use crate::event::VersionVector;

/// A gap between two mesh ticks longer than this is a stall.
pub const STALL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
enum State {
    #[default]
    Current,
    /// Stalled for `stalled`; gathering the peers' positions reported since.
    Gathering {
        stalled: Duration,
        reported: Option<VersionVector>,
    },
    /// Catching up to `target`.
    CatchingUp {
        stalled: Duration,
        target: VersionVector,
    },
}

/// Whether this node is catching up after a stall; see the module docs.
#[derive(Debug, Default)]
pub struct Rejoin {
    state: Mutex<State>,
}

impl Rejoin {
    /// At every mesh tick: `gap` since the previous one, this node's delivered `position`,
    /// and whether any peer is alive.
    pub fn on_tick(&self, gap: Duration, position: &VersionVector, peers_alive: bool) {
        let mut state = self.lock();
        if gap > STALL {
            tracing::warn!(
                stalled_ms = gap.as_millis() as u64,
                "this node was stalled; unready until it has caught up with its peers"
            );
            *state = State::Gathering {
                stalled: gap,
                reported: None,
            };
            return;
        }
        let next = match std::mem::take(&mut *state) {
            State::Current => State::Current,
            _ if !peers_alive => State::Current,
            State::Gathering {
                stalled,
                reported: Some(target),
            } => State::CatchingUp { stalled, target },
            gathering @ State::Gathering { reported: None, .. } => gathering,
            State::CatchingUp { stalled, target } => {
                if covers(position, &target) {
                    tracing::info!(
                        stalled_ms = stalled.as_millis() as u64,
                        "caught up after a stall"
                    );
                    State::Current
                } else {
                    State::CatchingUp { stalled, target }
                }
            }
        };
        *state = next;
    }

    /// A peer reported its position.
    pub fn on_position(&self, vector: &VersionVector) {
        if let State::Gathering { reported, .. } = &mut *self.lock() {
            match reported {
                Some(gathered) => gathered.merge(vector),
                None => *reported = Some(vector.clone()),
            }
        }
    }

    /// How long the stall this node is still catching up from lasted, if it is.
    pub fn catching_up(&self) -> Option<Duration> {
        match &*self.lock() {
            State::Current => None,
            State::Gathering { stalled, .. } | State::CatchingUp { stalled, .. } => Some(*stalled),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `position` holds at least what `target` holds, origin by origin.
fn covers(position: &VersionVector, target: &VersionVector) -> bool {
    target
        .iter()
        .all(|(origin, seq)| position.get(origin) >= seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NodeId;

    const TICK: Duration = Duration::from_millis(200);

    fn vector(entries: &[(&str, u64)]) -> VersionVector {
        let mut vector = VersionVector::new();
        for &(origin, seq) in entries {
            vector.advance(&NodeId::new(origin).unwrap(), seq);
        }
        vector
    }

    #[test]
    fn ticks_on_time_keep_a_node_current() {
        let rejoin = Rejoin::default();
        for _ in 0..5 {
            rejoin.on_tick(TICK, &vector(&[]), true);
        }
        assert_eq!(rejoin.catching_up(), None);
    }

    #[test]
    fn after_a_stall_the_node_is_unready_until_it_covers_what_peers_reported() {
        let rejoin = Rejoin::default();
        rejoin.on_tick(Duration::from_secs(5), &vector(&[("a", 10)]), true);
        assert_eq!(rejoin.catching_up(), Some(Duration::from_secs(5)));
        // No report yet: still gathering.
        rejoin.on_tick(TICK, &vector(&[("a", 10)]), true);
        assert!(rejoin.catching_up().is_some());
        rejoin.on_position(&vector(&[("a", 50), ("b", 7)]));
        rejoin.on_position(&vector(&[("a", 40), ("c", 3)]));
        rejoin.on_tick(TICK, &vector(&[("a", 10)]), true);
        // Later reports do not move the target.
        rejoin.on_position(&vector(&[("a", 90)]));
        rejoin.on_tick(TICK, &vector(&[("a", 50), ("b", 7)]), true);
        assert!(rejoin.catching_up().is_some(), "c:3 is still missing");
        rejoin.on_tick(TICK, &vector(&[("a", 60), ("b", 7), ("c", 3)]), true);
        assert_eq!(rejoin.catching_up(), None);
    }

    #[test]
    fn a_node_without_live_peers_has_nothing_to_catch_up_with() {
        let rejoin = Rejoin::default();
        rejoin.on_tick(Duration::from_secs(3), &vector(&[]), false);
        rejoin.on_tick(TICK, &vector(&[]), false);
        assert_eq!(rejoin.catching_up(), None);
    }
}
