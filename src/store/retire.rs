//! Retired origins: an origin that no live member publishes under any more (a node whose disk
//! was wiped got a new one; a node that left for good) and of which no event is retained here
//! is dropped from the log positions, so from version vectors, gossip, the Redis registry and
//! every cursor issued afterwards. Without this, every wipe would add an entry to every cursor
//! for ever.
//!
//! The store remembers the seq it retired each origin at: an event at or below it (a peer that
//! has not retired the origin yet re-sends it) is ignored, and one above it (the origin's node
//! came back after all) brings the origin back from there. A cursor that still names a retired
//! origin is accepted. What is remembered is forgotten after [`RETIRED_KEPT`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;
use crate::event::{NodeId, VersionVector};

/// How long a retired origin (and its channel floors) is remembered.
pub const RETIRED_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Retired origins and the seq each was retired at, shared with readers (the backplane skips
/// pulls for them, sessions drop them from cursors).
#[derive(Default)]
pub struct RetiredOrigins(Mutex<HashMap<NodeId, u64>>);

impl RetiredOrigins {
    pub(super) fn load(connection: &Connection) -> Result<Arc<Self>, StoreError> {
        let mut statement = connection.prepare("SELECT origin, seq FROM retired_origins")?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        let mut retired = HashMap::new();
        for row in rows {
            let (origin, seq) = row?;
            if let Ok(origin) = NodeId::new(&origin) {
                retired.insert(origin, seq as u64);
            }
        }
        Ok(Arc::new(Self(Mutex::new(retired))))
    }

    /// The seq `origin` was retired at, if it was.
    pub fn retired_at(&self, origin: &NodeId) -> Option<u64> {
        self.lock().get(origin).copied()
    }

    /// `vector` without the retired origins it still names.
    pub fn strip(&self, vector: &VersionVector) -> VersionVector {
        let retired = self.lock();
        vector
            .iter()
            .filter(|(origin, _)| !retired.contains_key(*origin))
            .map(|(origin, seq)| (origin.clone(), seq))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A live member as the backplane sees it: its node id and the origin it says it publishes
/// under (`None` until it said).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveMember {
    pub node_id: String,
    pub origin: Option<NodeId>,
}

/// The live members (`None`: not known yet, retire nothing).
#[derive(Default)]
pub struct LiveOrigins(Mutex<Option<Vec<LiveMember>>>);

impl LiveOrigins {
    pub fn set(&self, live: Option<Vec<LiveMember>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = live;
    }

    fn get(&self) -> Option<Vec<LiveMember>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// An origin's node name, whether that name was cut short (a long node id), and its database
/// creation time: `<name>.<base 36 millis>`, 64 characters at most.
fn parts(origin: &NodeId) -> Option<(&str, bool, u64)> {
    let (name, epoch) = origin.as_str().rsplit_once('.')?;
    let cut = name.len() + 1 + epoch.len() == 64;
    Some((name, cut, u64::from_str_radix(epoch, 36).ok()?))
}

/// True when no live member publishes under `origin` nor may yet: its node is not alive, or
/// it is and says it publishes under a newer origin (its database was made again). A member
/// whose origin is not known yet, or older, keeps it (gossip may lag behind the events).
fn no_longer_published(origin: &NodeId, live: &[LiveMember]) -> bool {
    let Some((name, cut, epoch)) = parts(origin) else {
        return false;
    };
    let same_node = |node_id: &str| node_id == name || (cut && node_id.starts_with(name));
    for member in live.iter().filter(|m| same_node(&m.node_id)) {
        let newer = member
            .origin
            .as_ref()
            .and_then(parts)
            .is_some_and(|(theirs, _, their_epoch)| theirs == name && their_epoch > epoch);
        if !newer {
            return false;
        }
    }
    true
}

/// What a retirement step changed, applied to [`RetiredOrigins`] once its transaction commits.
#[derive(Default)]
pub(super) struct Retirement {
    pub retired: Vec<(NodeId, u64)>,
    /// Retired here, but a live member says it publishes under it (this node retired it
    /// while gossip lagged): back at the seq it was retired at.
    pub revived: Vec<(NodeId, u64)>,
    pub forgotten: Vec<NodeId>,
}

impl RetiredOrigins {
    pub(super) fn apply(&self, retirement: &Retirement) {
        let mut retired = self.lock();
        for (origin, seq) in &retirement.retired {
            retired.insert(origin.clone(), *seq);
        }
        for origin in retirement
            .forgotten
            .iter()
            .chain(retirement.revived.iter().map(|(o, _)| o))
        {
            retired.remove(origin);
        }
    }

    /// Forgets that `origin` was retired (it published again).
    pub(super) fn revived(&self, origin: &NodeId) {
        self.lock().remove(origin);
    }
}

/// Retires every origin in the log positions that is not `own`, not live, and has no event
/// left here; forgets retirements older than [`RETIRED_KEPT`].
pub(super) fn retire_idle(
    connection: &Connection,
    own: &NodeId,
    live: &LiveOrigins,
    now_ms: u64,
) -> Result<Retirement, StoreError> {
    let mut retirement = Retirement::default();
    let Some(live) = live.get() else {
        return Ok(retirement);
    };
    let candidates: Vec<(String, i64)> = {
        let mut statement = connection.prepare_cached(
            "SELECT origin, contiguous FROM log_positions lp
             WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.origin = lp.origin)",
        )?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (origin, seq) in candidates {
        let Ok(id) = NodeId::new(&origin) else {
            continue;
        };
        if &id == own || !no_longer_published(&id, &live) {
            continue;
        }
        connection
            .prepare_cached(
                "INSERT INTO retired_origins (origin, seq, retired_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (origin) DO UPDATE SET seq = max(seq, excluded.seq)",
            )?
            .execute(rusqlite::params![origin, seq, now_ms as i64])?;
        connection
            .prepare_cached("DELETE FROM log_positions WHERE origin = ?1")?
            .execute([&origin])?;
        retirement.retired.push((id, seq as u64));
    }
    for member in &live {
        let Some(origin) = &member.origin else {
            continue;
        };
        let at: Option<i64> = connection
            .prepare_cached("SELECT seq FROM retired_origins WHERE origin = ?1")?
            .query_row([origin.as_str()], |row| row.get(0))
            .optional()?;
        if let Some(at) = at {
            revive(connection, origin, at as u64)?;
            retirement.revived.push((origin.clone(), at as u64));
        }
    }
    let forget_before = now_ms.saturating_sub(RETIRED_KEPT.as_millis() as u64) as i64;
    let forgotten: Vec<String> = {
        let mut statement = connection
            .prepare_cached("SELECT origin FROM retired_origins WHERE retired_ms < ?1")?;
        let rows = statement.query_map([forget_before], |row| row.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for origin in forgotten {
        connection
            .prepare_cached("DELETE FROM retired_origins WHERE origin = ?1")?
            .execute([&origin])?;
        connection
            .prepare_cached("DELETE FROM channel_floors WHERE origin = ?1")?
            .execute([&origin])?;
        if let Ok(id) = NodeId::new(&origin) {
            retirement.forgotten.push(id);
        }
    }
    Ok(retirement)
}

/// Brings back a retired origin whose event above its retired seq arrived: its position
/// resumes at that seq. (The caller forgets the retirement once the transaction commits.)
pub(super) fn revive(connection: &Connection, origin: &NodeId, seq: u64) -> Result<(), StoreError> {
    connection
        .prepare_cached("DELETE FROM retired_origins WHERE origin = ?1")?
        .execute([origin.as_str()])?;
    connection
        .prepare_cached(
            "INSERT INTO log_positions (origin, contiguous) VALUES (?1, ?2)
             ON CONFLICT (origin) DO UPDATE SET contiguous = max(contiguous, excluded.contiguous)",
        )?
        .execute(rusqlite::params![origin.as_str(), seq as i64])?;
    tracing::info!(%origin, seq, "a retired origin published again: it is back");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node_id: &str, origin: Option<&str>) -> LiveMember {
        LiveMember {
            node_id: node_id.into(),
            origin: origin.map(|o| NodeId::new(o).unwrap()),
        }
    }

    #[test]
    fn an_origin_goes_once_its_node_is_gone_or_publishes_under_a_newer_one() {
        let old = NodeId::new("n3.abc").unwrap();
        let newer = "n3.abd";
        assert!(no_longer_published(&old, &[member("n1", Some("n1.zz"))]));
        assert!(no_longer_published(&old, &[member("n3", Some(newer))]));
        assert!(!no_longer_published(&old, &[member("n3", Some("n3.abc"))]));
        // Gossip behind the events: the member still shows an older origin, or none yet.
        assert!(!no_longer_published(&old, &[member("n3", Some("n3.abb"))]));
        assert!(!no_longer_published(&old, &[member("n3", None)]));
        // Another node whose name starts the same way says nothing about it.
        assert!(no_longer_published(&old, &[member("n30", Some("n30.zzz"))]));
        let dotted = NodeId::new("node.a.abc").unwrap();
        assert!(!no_longer_published(&dotted, &[member("node.a", None)]));
    }
}
