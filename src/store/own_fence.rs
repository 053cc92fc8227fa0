//! The own-seq fence: this node numbers its own events only past every seq of its origin that
//! a reachable peer holds.
//!
//! A database can be behind what the cluster holds of its own origin: an older backup
//! restored into a running cluster, a disk restored from a snapshot, or an OS crash under
//! `--store-sync normal` that lost the last commits after peers had them. Numbering new events
//! from that stale position would reuse seqs that peers hold for other events, and each side
//! would keep its own event under the same `(origin, seq)`: silent divergence. So the writer
//! numbers this node's events only while the fence is *clear*:
//!
//! - **open**: a database that existed before this start is closed until the backplane has
//!   heard what its peers hold ([`OwnSeqFence::open`]), or until [`START_WAIT`] has passed (a
//!   node whose peers are all down must still serve; what it then numbers can collide only
//!   with events that no reachable peer held, and a collision is logged and counted where it
//!   shows, in the writer's apply of peers' events). A database created by this start is open
//!   at once: no peer can hold events of an origin made now.
//! - **caught up**: the *floor*, the highest seq of this origin that a reachable peer reports
//!   ([`OwnSeqFence::set_floor`], from the backplane), is at most what this node holds
//!   contiguously (`held`, set by the writer after every commit). The backplane's catch-up
//!   (mesh pulls, the Redis streams) brings the missing events back and raises `held`.
//!
//! A floor that is not reached is not waited for forever: when what this node holds of its
//! origin has not grown for [`STALL`] while the floor is above it (a peer that reports events
//! it cannot serve: pruned past a snapshot's reach, lost with Redis's data, or a peer that
//! lies), the fence waives that floor, logs a warning and counts it; only a higher report
//! closes it again.
//!
//! [`Store::append`](super::Store::append) waits up to [`APPEND_WAIT`] for the fence to clear,
//! then answers [`StoreError::CatchingUp`](super::StoreError::CatchingUp); the writer checks
//! again right before it numbers, and that check is the one that counts.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How long a database that existed before this start waits, at most, for the backplane to say
/// what its peers hold.
pub const START_WAIT: Duration = Duration::from_secs(3);

/// How long a publish waits for the fence to clear before it is refused (longer than
/// [`START_WAIT`], so that a publish at start is never refused only for the start wait).
pub const APPEND_WAIT: Duration = Duration::from_secs(5);

/// How long the fence waits for what this node holds of its origin to grow towards the floor
/// before it waives the floor.
pub const STALL: Duration = Duration::from_secs(10);

/// What the fence knows; this node may number its next event when [`FenceState::clear`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceState {
    /// The backplane has heard from its peers (or the database is new).
    pub open: bool,
    /// When a fence the backplane has not opened opens by itself.
    pub opens_at: Instant,
    /// The highest seq of this origin a reachable peer reports holding.
    pub floor: u64,
    /// The highest contiguous seq of this origin held here.
    pub held: u64,
    /// A floor given up on (see [`STALL`]): floors up to it do not hold the fence closed.
    pub waived: u64,
    /// Since when `held` is below the floor without growing (`None`: not behind).
    pub behind_since: Option<Instant>,
}

impl FenceState {
    /// True when this node may number its next own event.
    pub fn clear(&self) -> bool {
        self.opened() && !self.behind()
    }

    /// Below a floor that is not waived.
    fn behind(&self) -> bool {
        self.floor > self.held && self.floor > self.waived
    }

    /// Notes a change of `floor` or `held`: starts, restarts or ends the stall clock, and
    /// waives a floor it has run out on (true when it did now).
    fn track_progress(&mut self, held_grew: bool) -> bool {
        if !self.behind() {
            self.behind_since = None;
            return false;
        }
        let now = Instant::now();
        match self.behind_since {
            Some(since) if !held_grew && now.duration_since(since) >= STALL => {
                self.waived = self.floor;
                self.behind_since = None;
                true
            }
            Some(_) if !held_grew => false,
            _ => {
                self.behind_since = Some(now);
                false
            }
        }
    }

    /// Opened by the backplane, or by the start wait running out.
    pub fn opened(&self) -> bool {
        self.open || Instant::now() >= self.opens_at
    }
}

/// Why the fence refuses to number: what a caller is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fenced {
    /// False while waiting to hear from peers at start.
    pub opened: bool,
    pub held: u64,
    pub floor: u64,
}

impl std::fmt::Display for Fenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.opened {
            write!(
                f,
                "this node is pulling its own events back from its peers (it holds seq {} of {}); retry shortly or on another node",
                self.held, self.floor
            )
        } else {
            f.write_str(
                "this node is starting and has not heard from its peers yet; retry shortly or on another node",
            )
        }
    }
}

/// The fence, shared by the store's handle (waits), the writer (checks, sets `held`) and the
/// backplane (opens it, sets the floor).
#[derive(Debug)]
pub struct OwnSeqFence {
    state: watch::Sender<FenceState>,
}

impl OwnSeqFence {
    /// A fence for a database that holds `held` of its own origin; a new database is open.
    pub fn new(held: u64, new_database: bool) -> Self {
        Self {
            state: watch::channel(FenceState {
                open: new_database,
                opens_at: Instant::now() + START_WAIT,
                floor: 0,
                held,
                waived: 0,
                behind_since: None,
            })
            .0,
        }
    }

    /// What the fence knows now.
    pub fn state(&self) -> FenceState {
        *self.state.borrow()
    }

    /// `Ok` when this node may number its next own event.
    pub fn check(&self) -> Result<(), Fenced> {
        let state = self.state();
        if state.clear() {
            return Ok(());
        }
        Err(Fenced {
            opened: state.opened(),
            held: state.held,
            floor: state.floor,
        })
    }

    /// Waits up to `wait` for the fence to clear.
    pub async fn wait_clear(&self, wait: Duration) -> Result<(), Fenced> {
        if self.check().is_ok() {
            return Ok(());
        }
        // Subscribed before the next look, so that no change between the two is missed.
        let mut changes = self.state.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.check().is_ok() {
                return Ok(());
            }
            // A closed fence opens by itself at `opens_at`, with no change to wake on.
            let state = self.state();
            let wake = if state.opened() {
                deadline
            } else {
                tokio::time::Instant::from_std(state.opens_at).min(deadline)
            };
            match tokio::time::timeout_at(wake, changes.changed()).await {
                Ok(Ok(())) => {}
                Err(_) if tokio::time::Instant::now() < deadline => {}
                Ok(Err(_)) | Err(_) => return self.check(),
            }
        }
    }

    /// The backplane has heard what its peers hold.
    pub fn open(&self) {
        self.state
            .send_if_modified(|state| !std::mem::replace(&mut state.open, true));
    }

    /// The highest seq of this origin that a reachable peer reports holding (it may go down:
    /// a peer that is gone no longer counts).
    ///
    /// Called often (the mesh: every tick), it is also what notices a stalled catch-up.
    pub fn set_floor(&self, floor: u64) {
        let mut waived = None;
        self.state.send_if_modified(|state| {
            let changed = std::mem::replace(&mut state.floor, floor) != floor;
            if state.track_progress(false) {
                waived = Some(*state);
                return true;
            }
            changed
        });
        if let Some(state) = waived {
            metrics::counter!("herald_store_own_fence_waived_total").increment(1);
            tracing::warn!(
                held = state.held,
                floor = state.floor,
                stalled_secs = STALL.as_secs(),
                "a peer reports events of this node's origin that did not come back; numbering own events past what is held"
            );
        }
    }

    /// What this node holds of its own origin, after a commit.
    pub(super) fn set_held(&self, held: u64) {
        self.state.send_if_modified(|state| {
            let grew = held > state.held;
            let changed = std::mem::replace(&mut state.held, held) != held;
            state.track_progress(grew);
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_is_clear_at_once() {
        let fence = OwnSeqFence::new(0, true);
        assert!(fence.check().is_ok());
    }

    #[test]
    fn an_existing_database_waits_to_hear_from_peers() {
        let fence = OwnSeqFence::new(10, false);
        let refused = fence.check().unwrap_err();
        assert!(!refused.opened);
        assert!(refused.to_string().contains("has not heard from its peers"));
        fence.open();
        assert!(fence.check().is_ok());
    }

    #[test]
    fn a_floor_above_what_is_held_refuses_until_it_is_pulled_back() {
        let fence = OwnSeqFence::new(10, true);
        fence.set_floor(15);
        let refused = fence.check().unwrap_err();
        assert_eq!((refused.held, refused.floor), (10, 15));
        assert!(refused.to_string().contains("holds seq 10 of 15"));
        fence.set_held(14);
        assert!(fence.check().is_err());
        fence.set_held(15);
        assert!(fence.check().is_ok());
        // A floor that goes down (the peer that reported it is gone) clears it too.
        fence.set_floor(20);
        assert!(fence.check().is_err());
        fence.set_floor(15);
        assert!(fence.check().is_ok());
    }

    #[test]
    fn a_floor_that_is_not_reached_is_waived_after_the_stall() {
        let fence = OwnSeqFence::new(10, true);
        fence.set_floor(15);
        assert!(fence.check().is_err());
        // Progress restarts the clock; ten seconds without it waive the floor.
        fence.set_held(12);
        let started = fence.state().behind_since.expect("behind");
        fence
            .state
            .send_modify(|state| state.behind_since = Some(started - STALL));
        fence.set_floor(15);
        assert!(fence.check().is_ok(), "{:?}", fence.state());
        assert_eq!(fence.state().waived, 15);
        // Numbering past it goes on; only a higher report closes the fence again.
        fence.set_held(13);
        fence.set_floor(15);
        assert!(fence.check().is_ok());
        fence.set_floor(16);
        assert!(fence.check().is_err());
    }

    #[tokio::test]
    async fn a_waiter_is_let_through_when_the_events_are_back() {
        let fence = std::sync::Arc::new(OwnSeqFence::new(3, true));
        fence.set_floor(5);
        let waiter = {
            let fence = std::sync::Arc::clone(&fence);
            tokio::spawn(async move { fence.wait_clear(Duration::from_secs(10)).await })
        };
        fence.set_held(5);
        let answered = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter is woken")
            .expect("the waiter does not panic");
        assert_eq!(answered, Ok(()));
    }

    #[tokio::test]
    async fn a_waiter_is_refused_after_its_wait() {
        let fence = OwnSeqFence::new(3, true);
        fence.set_floor(5);
        let started = Instant::now();
        let refused = fence.wait_clear(Duration::from_millis(50)).await;
        assert_eq!(
            refused,
            Err(Fenced {
                opened: true,
                held: 3,
                floor: 5
            })
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_closed_fence_opens_by_itself_after_the_start_wait() {
        let fence = OwnSeqFence::new(3, false);
        fence.state.send_modify(|state| {
            state.opens_at = Instant::now() + Duration::from_millis(50);
        });
        assert!(fence.check().is_err());
        assert_eq!(fence.wait_clear(Duration::from_secs(10)).await, Ok(()));
    }
}
