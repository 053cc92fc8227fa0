//! Version vectors: `{origin -> highest contiguous seq held}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::NodeId;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<NodeId, u64>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest contiguous seq held for `origin` (0 when none).
    pub fn get(&self, origin: &NodeId) -> u64 {
        self.0.get(origin).copied().unwrap_or(0)
    }

    /// True when the event `(origin, seq)` is covered by this vector.
    pub fn covers(&self, origin: &NodeId, seq: u64) -> bool {
        seq <= self.get(origin)
    }

    /// Raises `origin`'s position to `seq` if that is higher.
    pub fn advance(&mut self, origin: &NodeId, seq: u64) {
        if seq == 0 {
            return;
        }
        match self.0.get_mut(origin) {
            Some(current) if *current >= seq => {}
            Some(current) => *current = seq,
            None => {
                self.0.insert(origin.clone(), seq);
            }
        }
    }

    /// Pointwise maximum with `other`.
    pub fn merge(&mut self, other: &VersionVector) {
        for (origin, &seq) in &other.0 {
            self.advance(origin, seq);
        }
    }

    /// Drops `origin` (a retired origin): it reads as 0 afterwards.
    pub fn remove(&mut self, origin: &NodeId) {
        self.0.remove(origin);
    }

    /// Pointwise minimum with `other` (an origin missing from either is at 0, so dropped).
    pub fn meet(&self, other: &VersionVector) -> VersionVector {
        self.0
            .iter()
            .filter_map(|(origin, &seq)| {
                let least = seq.min(other.get(origin));
                (least > 0).then(|| (origin.clone(), least))
            })
            .collect()
    }

    /// Pointwise minimum over the origins both name; an origin only one names keeps its
    /// position there. (What several peers hold of the origins each knows about.)
    pub fn meet_known(&self, other: &VersionVector) -> VersionVector {
        let mut least = other.clone();
        for (origin, &seq) in &self.0 {
            let value = match other.0.get(origin) {
                Some(&theirs) => seq.min(theirs),
                None => seq,
            };
            least.0.insert(origin.clone(), value);
        }
        least
    }

    /// True when every position of `other` is covered by `self`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(origin, &seq)| self.get(origin) >= seq)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, u64)> {
        self.0.iter().map(|(origin, &seq)| (origin, seq))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sum of all positions: a single number for "how much of the log is here".
    pub fn total(&self) -> u64 {
        self.0
            .values()
            .fold(0u64, |sum, seq| sum.saturating_add(*seq))
    }
}

impl FromIterator<(NodeId, u64)> for VersionVector {
    fn from_iter<T: IntoIterator<Item = (NodeId, u64)>>(iter: T) -> Self {
        let mut vector = Self::new();
        for (origin, seq) in iter {
            vector.advance(&origin, seq);
        }
        vector
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn advances_only_forward_and_merges_pointwise() {
        let mut a = VersionVector::new();
        a.advance(&id("n1"), 5);
        a.advance(&id("n1"), 3);
        assert_eq!(a.get(&id("n1")), 5);
        assert!(a.covers(&id("n1"), 5));
        assert!(!a.covers(&id("n1"), 6));
        assert!(!a.covers(&id("n2"), 1));

        let b: VersionVector = [(id("n2"), 4), (id("n1"), 2)].into_iter().collect();
        a.merge(&b);
        assert_eq!(a.get(&id("n2")), 4);
        assert_eq!(a.get(&id("n1")), 5);
        assert!(a.dominates(&b));
        assert!(!b.dominates(&a));
        let c: VersionVector = [(id("n1"), 3), (id("n3"), 1)].into_iter().collect();
        let least = a.meet(&c);
        assert_eq!(least.get(&id("n1")), 3);
        assert_eq!(least.get(&id("n2")), 0);
        assert_eq!(least.get(&id("n3")), 0);
        let known = a.meet_known(&c);
        assert_eq!(known.get(&id("n1")), 3);
        assert_eq!(known.get(&id("n2")), 4);
        assert_eq!(known.get(&id("n3")), 1);
        assert_eq!(a.total(), 9);
    }
}
