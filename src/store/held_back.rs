//! Which origins are known to have nothing stored above their contiguous position.
//!
//! An event from another node that arrives ahead of a gap is stored but held back (see
//! [`super::writer`]); the writer then walks the log after the origin's position to find what
//! became contiguous. For an origin known to hold nothing above its position, an event with
//! the next seq is contiguous by itself: the writer advances the position in memory and hands
//! the event on as it came, with no read of the log. That is the steady state of replication
//! (events pushed by their origin, in order), so a replica's apply costs its inserts and
//! nothing more.
//!
//! What is known is only ever "clean": an origin is marked clean after a walk that found no
//! gap, and forgotten (walked again at its next event) whenever something may have stored
//! events above a position without the writer's bookkeeping seeing them in order: an event
//! out of order, a snapshot merge, a retirement or revival. At start nothing is known, so
//! every origin is walked once.

use std::collections::HashSet;

use crate::event::NodeId;

#[derive(Debug, Default)]
pub(super) struct HeldBack {
    clean: HashSet<NodeId>,
}

impl HeldBack {
    /// Whether `origin` is known to hold nothing above its position.
    pub(super) fn is_clean(&self, origin: &NodeId) -> bool {
        self.clean.contains(origin)
    }

    /// Books what a walk of `origin`'s log found: no gap left (clean) or events held back.
    pub(super) fn walked(&mut self, origin: &NodeId, gap_left: bool) {
        if gap_left {
            self.clean.remove(origin);
        } else if !self.clean.contains(origin) {
            self.clean.insert(origin.clone());
        }
    }

    /// Anything may now hold events above its position.
    pub(super) fn forget_all(&mut self) {
        self.clean.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_clean_only_after_a_walk_without_a_gap() {
        let origin = NodeId::new("n1").unwrap();
        let mut held = HeldBack::default();
        assert!(!held.is_clean(&origin), "nothing is known at start");
        held.walked(&origin, true);
        assert!(!held.is_clean(&origin));
        held.walked(&origin, false);
        assert!(held.is_clean(&origin));
        held.walked(&origin, true);
        assert!(
            !held.is_clean(&origin),
            "a walk that left a gap makes it unknown again"
        );
        held.walked(&origin, false);
        held.forget_all();
        assert!(!held.is_clean(&origin));
    }
}
