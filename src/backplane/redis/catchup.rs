//! Below the floor on the Redis backplane: a node whose position for some origin is below what
//! the live node holding the most of that origin still keeps (it was away longer than the
//! retention window, or the stream was trimmed past it) cannot be repaired from the log. It
//! fetches a snapshot from that node over HTTP instead (`super::super::peer_snapshot`), one at
//! a time, and reports itself not ready meanwhile: over HTTPS, verifying the peer's
//! certificate, when the peer's record says it serves HTTPS. Repairs never re-ship a range below the
//! holder's own prune point (it would have holes).
//!
//! Pruning keeps what some live peer still lacks: the prune horizon is the pointwise minimum
//! of the live peers' positions, as the registry shows them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::StreamsInterface;

use super::{RedisBackplane, lock};
use crate::backplane::peer_snapshot::{self, PeerAddress};
use crate::event::VersionVector;
use crate::store::Store;

/// A fetch that has not ended after this long no longer blocks a new one.
const SNAPSHOT_STALE: Duration = Duration::from_secs(120);

impl RedisBackplane {
    /// What every live peer holds (none: no restriction).
    pub(super) fn prune_horizon(&self) -> Option<VersionVector> {
        let now = Instant::now();
        let shared = self.shared();
        shared
            .peers
            .values()
            .filter(|peer| peer.alive_at(now))
            .map(|peer| &peer.record.vector)
            .fold(None, |least: Option<VersionVector>, vector| {
                Some(match least {
                    Some(least) => least.meet_known(vector),
                    None => vector.clone(),
                })
            })
    }

    /// The live nodes and the origin each publishes under.
    pub(super) fn live_origins(&self) -> Option<Vec<crate::store::LiveMember>> {
        let now = Instant::now();
        let shared = self.shared();
        Some(
            shared
                .peers
                .iter()
                .filter(|(_, peer)| peer.alive_at(now))
                .map(|(node_id, peer)| crate::store::LiveMember {
                    node_id: node_id.clone(),
                    origin: peer.record.origin.clone(),
                })
                .collect(),
        )
    }

    /// Where a live peer this node must take a snapshot from serves it: for some origin it
    /// holds the most of, it pruned past this node's position. A peer whose record has no
    /// valid `ip:port` http address is never dialed.
    pub(super) fn snapshot_source(&self, mine: &VersionVector) -> Option<PeerAddress> {
        let now = Instant::now();
        let shared = self.shared();
        let live: Vec<_> = shared
            .peers
            .iter()
            .filter(|(_, peer)| peer.alive_at(now))
            .collect();
        for (_, candidate) in &live {
            let Some(address) = candidate
                .record
                .http
                .as_deref()
                .and_then(|http| PeerAddress::from_record(http, candidate.record.https))
            else {
                continue;
            };
            for (origin, theirs) in candidate.record.vector.iter() {
                let have = mine.get(origin);
                let holds_most = live
                    .iter()
                    .all(|(_, other)| other.record.vector.get(origin) <= theirs);
                if theirs > have && holds_most && candidate.record.pruned.get(origin) > have {
                    return Some(address);
                }
            }
        }
        None
    }

    /// Whether the last registry read found this node below what a live peer keeps (it stays
    /// not ready while so, between failed fetches too).
    pub(super) fn note_snapshot_needed(&self, needed: bool) {
        self.needs_snapshot
            .store(needed, std::sync::atomic::Ordering::Relaxed);
    }

    /// True while a snapshot is being fetched.
    pub(super) fn fetching_snapshot(&self) -> bool {
        lock(&self.snapshot_fetch).is_some_and(|since| since.elapsed() < SNAPSHOT_STALE)
    }

    /// Fetches a snapshot from `peer` in the background unless one is under way.
    pub(super) fn start_snapshot(self: &Arc<Self>, store: &Store, peer: PeerAddress) {
        {
            let mut fetch = lock(&self.snapshot_fetch);
            if fetch.is_some_and(|since| since.elapsed() < SNAPSHOT_STALE) {
                return;
            }
            *fetch = Some(Instant::now());
        }
        tracing::info!(%peer, "history below what peers keep: fetching a snapshot");
        let (backplane, store) = (Arc::clone(self), store.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let fetched = peer_snapshot::fetch(
                &backplane.snapshot_http,
                &peer,
                &backplane.snapshot_token,
                &store,
            )
            .await;
            match fetched {
                Ok(parts) => tracing::info!(%peer, parts,
                    took_ms = started.elapsed().as_millis() as u64, "caught up from a snapshot"),
                Err(error) => {
                    tracing::warn!(%peer, %error, "fetching a snapshot failed; will ask again")
                }
            }
            *lock(&backplane.snapshot_fetch) = None;
        });
    }
}

/// Entries looked at per trim.
const TRIM_PAGE: u64 = 512;

impl RedisBackplane {
    /// Trims this node's own stream past its prune point: an entry at or below it can only
    /// serve a node that needs a snapshot anyway. Oldest entries first; one page per call.
    pub(super) async fn trim_own_stream(&self) {
        let Some(origin) = self.own_origin() else {
            return;
        };
        let pruned = self.shared().own_pruned.get(origin);
        if pruned == 0 {
            return;
        }
        let stream = self.keys.log(origin);
        let entries: Vec<(
            String,
            std::collections::HashMap<String, fred::prelude::Value>,
        )> = match self
            .commands
            .xrange_values(&stream, "-", "+", Some(TRIM_PAGE))
            .await
        {
            Ok(entries) => entries,
            Err(error) => {
                self.note_error("reading the stream to trim it", &error);
                return;
            }
        };
        let seq_of = |fields: &std::collections::HashMap<String, fred::prelude::Value>| {
            fields
                .get(super::keys::FIELD_SEQ)
                .and_then(fred::prelude::Value::as_u64)
        };
        // The first entry above the prune point: everything before it goes.
        let keep_from = entries
            .iter()
            .find(|(_, fields)| seq_of(fields).is_none_or(|seq| seq > pruned))
            .map(|(id, _)| id.clone());
        let min_id = match keep_from {
            Some(id) if Some(&id) == entries.first().map(|(first, _)| first) => return,
            Some(id) => id,
            None => match entries.last() {
                // The whole page is at or below the prune point.
                Some((last, _)) => next_id(last),
                None => return,
            },
        };
        let trimmed: Result<u64, _> = self
            .commands
            .xtrim(&stream, ("MINID", "=", min_id.as_str()))
            .await;
        match trimmed {
            Ok(count) if count > 0 => {
                metrics::counter!("herald_redis_stream_trimmed_total").increment(count);
            }
            Ok(_) => {}
            Err(error) => self.note_error("trimming the stream", &error),
        }
    }
}

/// The stream id right after `id` (`ms-seq`).
fn next_id(id: &str) -> String {
    match id.split_once('-') {
        Some((ms, seq)) => match seq.parse::<u64>() {
            Ok(seq) => format!("{ms}-{}", seq + 1),
            Err(_) => id.to_string(),
        },
        None => id.to_string(),
    }
}
