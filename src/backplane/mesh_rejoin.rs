//! Rejoining after a stall: a node that was stopped (SIGSTOP, a VM paused for migration, a
//! host that froze) for longer than [`STALL`] wakes up with state its peers have moved past.
//! Until it has caught up it must not pass that state off as current, so it is unready
//! meanwhile: `/readyz` answers 503 and a load balancer keeps new clients on nodes that are
//! current. It keeps serving the clients it has (what it delivers is late, never wrong: every
//! origin's events still come in seq order, and the gap is pulled from the peers).
//!
//! The node notices its own stall from its mesh tick: the time since the previous tick is more
//! than [`STALL`] (ticks are 200 ms apart). Readiness asks too, so that a request answered on
//! waking, before the tick has run again, already sees the stall. From then on [`Rejoin`] gathers the positions its
//! peers report (each sends one every tick); at the first tick after one arrived it fixes the
//! **target**, the pointwise maximum of those reports, and the node is current again once its
//! delivered position covers the target. A node with no live peer has nothing to catch up
//! with and is current at once.
//!
//! State: one optional target vector, bounded by the number of origins.

use std::sync::Mutex;
use std::time::{Duration, Instant};

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
#[derive(Debug)]
pub struct Rejoin {
    state: Mutex<State>,
    last_tick: Mutex<Instant>,
}

impl Default for Rejoin {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            last_tick: Mutex::new(Instant::now()),
        }
    }
}

impl Rejoin {
    /// At every mesh tick, with this node's delivered `position` and whether any peer is
    /// alive.
    pub fn on_tick(&self, position: &VersionVector, peers_alive: bool) {
        self.tick_at(Instant::now(), position, peers_alive);
    }

    fn tick_at(&self, now: Instant, position: &VersionVector, peers_alive: bool) {
        let gap = {
            let mut last = lock(&self.last_tick);
            let gap = now.saturating_duration_since(*last);
            *last = now;
            gap
        };
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

    /// How long the stall this node is still catching up from lasted, if it is; also while
    /// the stall has not been ticked over yet (the node just woke, or its ticks stopped).
    pub fn catching_up(&self) -> Option<Duration> {
        self.catching_up_at(Instant::now())
    }

    fn catching_up_at(&self, now: Instant) -> Option<Duration> {
        let since_tick = now.saturating_duration_since(*lock(&self.last_tick));
        if since_tick > STALL {
            return Some(since_tick);
        }
        match &*self.lock() {
            State::Current => None,
            State::Gathering { stalled, .. } | State::CatchingUp { stalled, .. } => Some(*stalled),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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

    /// A rejoin and a clock that its ticks advance.
    struct Clock {
        rejoin: Rejoin,
        now: Instant,
    }

    impl Clock {
        fn new() -> Self {
            let rejoin = Rejoin::default();
            let now = *lock(&rejoin.last_tick);
            Self { rejoin, now }
        }

        fn tick_after(&mut self, gap: Duration, position: &VersionVector, peers_alive: bool) {
            self.now += gap;
            self.rejoin.tick_at(self.now, position, peers_alive);
        }

        fn catching_up(&self) -> Option<Duration> {
            self.rejoin.catching_up_at(self.now)
        }
    }

    #[test]
    fn ticks_on_time_keep_a_node_current() {
        let mut clock = Clock::new();
        for _ in 0..5 {
            clock.tick_after(TICK, &vector(&[]), true);
        }
        assert_eq!(clock.catching_up(), None);
    }

    #[test]
    fn a_node_that_just_woke_is_catching_up_before_its_tick_runs() {
        let clock = Clock::new();
        let woke = clock.now + Duration::from_secs(4);
        assert_eq!(
            clock.rejoin.catching_up_at(woke),
            Some(Duration::from_secs(4))
        );
    }

    #[test]
    fn after_a_stall_the_node_is_unready_until_it_covers_what_peers_reported() {
        let mut clock = Clock::new();
        clock.tick_after(Duration::from_secs(5), &vector(&[("a", 10)]), true);
        assert_eq!(clock.catching_up(), Some(Duration::from_secs(5)));
        // No report yet: still gathering.
        clock.tick_after(TICK, &vector(&[("a", 10)]), true);
        assert!(clock.catching_up().is_some());
        clock.rejoin.on_position(&vector(&[("a", 50), ("b", 7)]));
        clock.rejoin.on_position(&vector(&[("a", 40), ("c", 3)]));
        clock.tick_after(TICK, &vector(&[("a", 10)]), true);
        // Later reports do not move the target.
        clock.rejoin.on_position(&vector(&[("a", 90)]));
        clock.tick_after(TICK, &vector(&[("a", 50), ("b", 7)]), true);
        assert!(clock.catching_up().is_some(), "c:3 is still missing");
        clock.tick_after(TICK, &vector(&[("a", 60), ("b", 7), ("c", 3)]), true);
        assert_eq!(clock.catching_up(), None);
    }

    #[test]
    fn a_node_without_live_peers_has_nothing_to_catch_up_with() {
        let mut clock = Clock::new();
        clock.tick_after(Duration::from_secs(3), &vector(&[]), false);
        clock.tick_after(TICK, &vector(&[]), false);
        assert_eq!(clock.catching_up(), None);
    }
}
