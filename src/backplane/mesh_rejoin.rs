//! Rejoining after a stall: a node that was stopped (SIGSTOP, a VM paused for migration, a
//! host that froze) for longer than [`STALL`] wakes up with state its peers have moved past.
//! Until it has caught up it must not pass that state off as current, so it is unready
//! meanwhile: `/readyz` answers 503 and a load balancer keeps new clients on nodes that are
//! current. It keeps serving the clients it has (what it delivers is late, never wrong: every
//! origin's events still come in seq order, and the gap is pulled from the peers).
//!
//! The node notices its own stall from its mesh tick: the time since the previous tick is more
//! than [`STALL`] (ticks are 200 ms apart). Readiness asks too, so that a request answered on
//! waking, before the tick has run again, already sees the stall.
//!
//! On waking nothing it already knows about its peers can be trusted: positions they sent
//! during the stall wait in its socket buffers and arrive first, and its failure detector has
//! heard no heartbeat for as long as it slept, so gossip calls every peer dead for a moment.
//! So [`Rejoin`] asks: every tick while it gathers, each linked peer is sent
//! `AskPosition { nonce }` with a nonce of this wake's own, and only `PositionAnswer`s
//! carrying that nonce count, which peers sent after the wake. The **target** is fixed, as
//! the pointwise maximum of the answers, once every peer that is alive by gossip or linked
//! has answered, or [`GATHER_LIMIT`] after the wake with whatever answers came; the node is
//! current again once its delivered position covers the target. A node that heard no answer
//! within [`GATHER_LIMIT`] while no peer is alive or linked has nothing to catch up with and
//! is current; one that knows of no peer at all is current at once.
//!
//! State: the answers of one wake (one vector per peer) or one target vector.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::event::{NodeId, VersionVector};

/// A gap between two mesh ticks longer than this is a stall.
pub const STALL: Duration = Duration::from_secs(1);
/// How long after a wake the answers of the peers that gave none are waited for. Gossip
/// relearns who is alive, and links are dialed again, within a few 200 ms ticks.
pub const GATHER_LIMIT: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
enum State {
    #[default]
    Current,
    /// Stalled for `stalled`, woke at `woke`; asking the peers with `nonce`.
    Gathering {
        stalled: Duration,
        woke: Instant,
        nonce: u64,
        answers: HashMap<NodeId, VersionVector>,
    },
    /// Catching up to `target`.
    CatchingUp {
        stalled: Duration,
        target: VersionVector,
    },
}

/// The peers as the mesh tick sees them.
#[derive(Debug, Default)]
pub struct PeersSeen {
    /// Peers alive by gossip or linked on the mesh.
    pub reachable: Vec<NodeId>,
    /// Whether gossip knows of any peer at all, alive or not.
    pub any_known: bool,
}

/// Whether this node is catching up after a stall; see the module docs.
#[derive(Debug)]
pub struct Rejoin {
    state: Mutex<State>,
    last_tick: Mutex<Instant>,
    /// Stalls noticed so far: the nonce of each wake's asks.
    wakes: std::sync::atomic::AtomicU64,
}

impl Default for Rejoin {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            last_tick: Mutex::new(Instant::now()),
            wakes: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Rejoin {
    /// At every mesh tick, with this node's delivered `position` and its `peers`. Answers the
    /// nonce to ask every linked peer's position with, while gathering.
    pub fn on_tick(&self, position: &VersionVector, peers: &PeersSeen) -> Option<u64> {
        self.tick_at(Instant::now(), position, peers)
    }

    fn tick_at(&self, now: Instant, position: &VersionVector, peers: &PeersSeen) -> Option<u64> {
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
                woke: now,
                nonce: self
                    .wakes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                answers: HashMap::new(),
            };
        }
        let next = match std::mem::take(&mut *state) {
            State::Current => State::Current,
            _ if !peers.any_known => State::Current,
            State::Gathering {
                stalled,
                woke,
                nonce,
                answers,
            } => {
                let all_answered = !answers.is_empty()
                    && peers
                        .reachable
                        .iter()
                        .all(|peer| answers.contains_key(peer));
                let waited = now.saturating_duration_since(woke) >= GATHER_LIMIT;
                if all_answered || (waited && !answers.is_empty()) {
                    let mut target = VersionVector::new();
                    for answer in answers.values() {
                        target.merge(answer);
                    }
                    tracing::info!(
                        answers = answers.len(),
                        "fixed the position to catch up to after a stall"
                    );
                    State::CatchingUp { stalled, target }
                } else if waited && peers.reachable.is_empty() {
                    tracing::info!("no peer answered after a stall and none is reachable");
                    State::Current
                } else {
                    State::Gathering {
                        stalled,
                        woke,
                        nonce,
                        answers,
                    }
                }
            }
            catching_up @ State::CatchingUp { .. } => catching_up,
        };
        let next = match next {
            State::CatchingUp { stalled, target } if covers(position, &target) => {
                tracing::info!(
                    stalled_ms = stalled.as_millis() as u64,
                    "caught up after a stall"
                );
                State::Current
            }
            other => other,
        };
        let nonce = match &next {
            State::Gathering { nonce, .. } => Some(*nonce),
            _ => None,
        };
        *state = next;
        nonce
    }

    /// `peer` answered `AskPosition { nonce }` with `vector`; answers to another wake's nonce
    /// are ignored.
    pub fn on_answer(&self, peer: &NodeId, nonce: u64, vector: &VersionVector) {
        if let State::Gathering {
            nonce: asked,
            answers,
            ..
        } = &mut *self.lock()
        {
            if *asked == nonce {
                answers.insert(peer.clone(), vector.clone());
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

    const TICK: Duration = Duration::from_millis(200);

    fn vector(entries: &[(&str, u64)]) -> VersionVector {
        let mut vector = VersionVector::new();
        for &(origin, seq) in entries {
            vector.advance(&NodeId::new(origin).unwrap(), seq);
        }
        vector
    }

    fn peer(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    fn seen(reachable: &[&str]) -> PeersSeen {
        PeersSeen {
            reachable: reachable.iter().map(|name| peer(name)).collect(),
            any_known: true,
        }
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

        fn tick_after(
            &mut self,
            gap: Duration,
            position: &VersionVector,
            peers: &PeersSeen,
        ) -> Option<u64> {
            self.now += gap;
            self.rejoin.tick_at(self.now, position, peers)
        }

        /// Ticks on time until `span` has passed.
        fn tick_for(&mut self, span: Duration, position: &VersionVector, peers: &PeersSeen) {
            let until = self.now + span;
            while self.now < until {
                self.tick_after(TICK, position, peers);
            }
        }

        fn catching_up(&self) -> Option<Duration> {
            self.rejoin.catching_up_at(self.now)
        }
    }

    #[test]
    fn ticks_on_time_keep_a_node_current_and_ask_nothing() {
        let mut clock = Clock::new();
        for _ in 0..5 {
            assert_eq!(clock.tick_after(TICK, &vector(&[]), &seen(&["b"])), None);
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
    fn after_a_stall_the_node_is_unready_until_it_covers_what_every_peer_answered() {
        let mut clock = Clock::new();
        let peers = seen(&["b", "c"]);
        let nonce = clock
            .tick_after(Duration::from_secs(5), &vector(&[("a", 10)]), &peers)
            .expect("a woken node asks its peers");
        assert_eq!(clock.catching_up(), Some(Duration::from_secs(5)));
        // One of two answered: it asks again, and is still gathering.
        clock
            .rejoin
            .on_answer(&peer("b"), nonce, &vector(&[("a", 50), ("b", 7)]));
        assert_eq!(
            clock.tick_after(TICK, &vector(&[("a", 10)]), &peers),
            Some(nonce)
        );
        assert!(clock.catching_up().is_some());
        clock
            .rejoin
            .on_answer(&peer("c"), nonce, &vector(&[("a", 40), ("c", 3)]));
        assert_eq!(clock.tick_after(TICK, &vector(&[("a", 10)]), &peers), None);
        // Answers after the target was fixed do not move it.
        clock
            .rejoin
            .on_answer(&peer("b"), nonce, &vector(&[("a", 90)]));
        clock.tick_after(TICK, &vector(&[("a", 50), ("b", 7)]), &peers);
        assert!(clock.catching_up().is_some(), "c:3 is still missing");
        clock.tick_after(TICK, &vector(&[("a", 60), ("b", 7), ("c", 3)]), &peers);
        assert_eq!(clock.catching_up(), None);
    }

    #[test]
    fn answers_to_an_earlier_wake_do_not_count() {
        let mut clock = Clock::new();
        let peers = seen(&["b"]);
        let first = clock
            .tick_after(Duration::from_secs(2), &vector(&[]), &peers)
            .unwrap();
        let second = clock
            .tick_after(Duration::from_secs(2), &vector(&[]), &peers)
            .unwrap();
        assert_ne!(first, second);
        // A late answer to the first wake's ask, sent before the second stall.
        clock
            .rejoin
            .on_answer(&peer("b"), first, &vector(&[("b", 3)]));
        clock.tick_after(TICK, &vector(&[]), &peers);
        assert!(clock.catching_up().is_some(), "a stale answer was taken");
        clock
            .rejoin
            .on_answer(&peer("b"), second, &vector(&[("b", 9)]));
        clock.tick_after(TICK, &vector(&[("b", 3)]), &peers);
        assert!(clock.catching_up().is_some(), "b:9 is still missing");
        clock.tick_after(TICK, &vector(&[("b", 9)]), &peers);
        assert_eq!(clock.catching_up(), None);
    }

    #[test]
    fn a_woken_node_whose_failure_detector_calls_every_peer_dead_waits_for_answers() {
        // On waking, gossip has heard nothing for the whole stall and no link is up yet:
        // nobody looks reachable, which is the stall's doing, not the peers'.
        let mut clock = Clock::new();
        let nonce = clock
            .tick_after(Duration::from_secs(5), &vector(&[]), &seen(&[]))
            .unwrap();
        clock.tick_after(TICK, &vector(&[]), &seen(&[]));
        assert!(clock.catching_up().is_some(), "current on a blind view");
        // Gossip and the links come back; the peer answers.
        clock.tick_after(TICK, &vector(&[]), &seen(&["b"]));
        clock
            .rejoin
            .on_answer(&peer("b"), nonce, &vector(&[("b", 4)]));
        clock.tick_after(TICK, &vector(&[]), &seen(&["b"]));
        assert!(clock.catching_up().is_some(), "b:4 is still missing");
        clock.tick_after(TICK, &vector(&[("b", 4)]), &seen(&["b"]));
        assert_eq!(clock.catching_up(), None);
    }

    #[test]
    fn a_peer_that_never_answers_is_waited_for_only_until_the_gather_limit() {
        let mut clock = Clock::new();
        let peers = seen(&["b", "c"]);
        let nonce = clock
            .tick_after(Duration::from_secs(5), &vector(&[]), &peers)
            .unwrap();
        clock
            .rejoin
            .on_answer(&peer("b"), nonce, &vector(&[("b", 2)]));
        clock.tick_after(TICK, &vector(&[("b", 2)]), &peers);
        assert!(clock.catching_up().is_some(), "c has not answered");
        clock.tick_for(GATHER_LIMIT, &vector(&[("b", 2)]), &peers);
        assert_eq!(clock.catching_up(), None);
    }

    #[test]
    fn a_node_with_no_reachable_peer_and_no_answer_is_current_after_the_gather_limit() {
        let mut clock = Clock::new();
        clock.tick_after(Duration::from_secs(3), &vector(&[]), &seen(&[]));
        clock.tick_after(TICK, &vector(&[]), &seen(&[]));
        assert!(clock.catching_up().is_some());
        clock.tick_for(GATHER_LIMIT, &vector(&[]), &seen(&[]));
        assert_eq!(clock.catching_up(), None);
    }

    #[test]
    fn a_node_that_knows_of_no_peer_has_nothing_to_catch_up_with() {
        let mut clock = Clock::new();
        let alone = PeersSeen::default();
        clock.tick_after(Duration::from_secs(3), &vector(&[]), &alone);
        assert_eq!(clock.catching_up(), None);
    }

    #[test]
    fn a_reachable_peer_that_never_answers_keeps_the_node_unready() {
        // Linked or alive, yet silent for the whole limit: nothing says this node is current.
        let mut clock = Clock::new();
        let peers = seen(&["b"]);
        clock.tick_after(Duration::from_secs(3), &vector(&[]), &peers);
        clock.tick_for(GATHER_LIMIT * 2, &vector(&[]), &peers);
        assert!(clock.catching_up().is_some());
    }
}
