//! The reader: one blocking `XREAD` over every known origin's stream, this node's probe stream
//! and the ephemeral stream, on a connection of its own; received events go to the store,
//! which dedupes them and holds back whatever arrives behind a gap. This node's own stream is
//! read only while a peer holds more of its origin than it does (its own-seq fence).

use std::sync::Arc;

use fred::prelude::{Client, StreamsInterface, Value};
use fred::types::streams::XReadResponse;
use tokio::sync::watch;

use super::keys::{self, FIELD_AT_MS, FIELD_EVENT, FIELD_NONCE, FIELD_SEQ};
use super::{Backoff, RedisBackplane};
use crate::event::{NodeId, SharedEvent};
use crate::hub::Hub;
use crate::store::Store;

/// Entries read per stream per `XREAD`.
const READ_COUNT: u64 = 256;
/// How long one `XREAD` blocks when there is nothing to read; the streams to read are
/// recomputed at least this often.
const READ_BLOCK_MS: u64 = 1_000;
/// Older typing indicators are not delivered.
const EPHEMERAL_MAX_AGE_MS: u64 = 5_000;

type Entries = XReadResponse<String, String, String, Value>;

pub(super) async fn run(
    backplane: Arc<RedisBackplane>,
    client: Client,
    store: Store,
    hub: Arc<Hub>,
    mut stop: watch::Receiver<bool>,
) {
    let own_origin = store.origin().clone();
    let mut backoff = Backoff::new();
    loop {
        // This node's own stream is read only to pull back what a peer holds of its origin and
        // it does not (a restored backup: see `crate::store::own_fence`).
        let fence = store.own_fence().state();
        let read_own = fence.floor > fence.held;
        let (streams, ids, generation) = read_plan(&backplane, &own_origin, read_own);
        let read = client.xread_map::<String, String, String, Value, _, _>(
            Some(READ_COUNT),
            Some(READ_BLOCK_MS),
            streams,
            ids,
        );
        let response = tokio::select! {
            response = read => response,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match response {
            Ok(entries) => {
                if ingest(&backplane, &store, &hub, &own_origin, entries, generation).await {
                    backoff.reset();
                } else if !backoff.wait(&mut stop).await {
                    return;
                }
            }
            Err(error) => {
                // While Redis is away this fails every time; the registry's error is the one
                // the health detail shows.
                metrics::counter!("herald_redis_read_errors_total").increment(1);
                tracing::debug!(%error, "reading streams from redis failed");
                if !backoff.wait(&mut stop).await {
                    return;
                }
            }
        }
    }
}

/// The streams to read and the id after which to read each; this node's own stream only with
/// `read_own`.
fn read_plan(
    backplane: &RedisBackplane,
    own_origin: &NodeId,
    read_own: bool,
) -> (Vec<String>, Vec<String>, u64) {
    let shared = backplane.shared();
    let mut streams = vec![
        backplane.keys.probe(&backplane.node_id),
        backplane.keys.ephemeral(),
    ];
    streams.extend(
        shared
            .origins
            .iter()
            .filter(|origin| read_own || *origin != own_origin)
            .map(|origin| backplane.keys.log(origin)),
    );
    let ids = streams
        .iter()
        .map(|stream| {
            shared
                .offsets
                .get(stream)
                .cloned()
                .unwrap_or_else(|| "0".into())
        })
        .collect();
    (streams, ids, shared.offsets_generation)
}

/// Stores what was read, then advances the read offsets. False when storing failed (the same
/// entries are read again).
async fn ingest(
    backplane: &RedisBackplane,
    store: &Store,
    hub: &Hub,
    own_origin: &NodeId,
    entries: Entries,
    generation: u64,
) -> bool {
    let probe_stream = backplane.keys.probe(&backplane.node_id);
    let ephemeral_stream = backplane.keys.ephemeral();
    let held = hub.delivered();
    let mut events: Vec<SharedEvent> = Vec::new();
    let mut ephemeral: Vec<SharedEvent> = Vec::new();
    let mut nonces: Vec<String> = Vec::new();
    let mut offsets: Vec<(String, String)> = Vec::new();
    let mut skipped = 0u64;
    for (stream, records) in entries {
        let Some((last_id, _)) = records.last() else {
            continue;
        };
        offsets.push((stream.clone(), last_id.clone()));
        if stream == probe_stream {
            nonces.extend(
                records
                    .iter()
                    .filter_map(|(_, fields)| fields.get(FIELD_NONCE)?.as_string()),
            );
        } else if stream == ephemeral_stream {
            let now = keys::now_ms();
            for (_, fields) in records {
                let at = fields.get(FIELD_AT_MS).and_then(Value::as_u64).unwrap_or(0);
                if now.saturating_sub(at) > EPHEMERAL_MAX_AGE_MS {
                    continue;
                }
                let event = fields
                    .get(FIELD_EVENT)
                    .and_then(Value::as_bytes)
                    .and_then(keys::decode_event);
                if let Some(event) = event {
                    if event.ephemeral && &event.origin != own_origin {
                        ephemeral.push(event);
                    }
                }
            }
        } else if let Some(origin) = backplane.keys.origin_of(&stream) {
            let held = held.get(&origin);
            for (id, fields) in records {
                // Skip what is held without decoding it: re-shipped ranges pass by every node.
                if fields
                    .get(FIELD_SEQ)
                    .and_then(Value::as_u64)
                    .is_some_and(|seq| seq <= held)
                {
                    skipped += 1;
                    continue;
                }
                let event = fields
                    .get(FIELD_EVENT)
                    .and_then(Value::as_bytes)
                    .and_then(keys::decode_event);
                match event {
                    Some(event) if event.origin == origin && !event.ephemeral && event.seq > 0 => {
                        events.push(event);
                    }
                    _ => {
                        metrics::counter!("herald_redis_malformed_entries_total").increment(1);
                        tracing::warn!(%stream, %id, "ignoring a malformed stream entry");
                    }
                }
            }
        }
    }
    if skipped > 0 {
        metrics::counter!("herald_redis_entries_skipped_total").increment(skipped);
    }
    if !events.is_empty() {
        let received = events.len() as u64;
        match store.apply_remote(events).await {
            Ok(applied) => {
                metrics::counter!("herald_redis_events_received_total").increment(received);
                if applied.inserted > 0 {
                    // Tell the others (and the origins waiting for acks) promptly.
                    backplane.nudge_registry.notify_one();
                }
            }
            Err(error) => {
                // Read again from the same offsets. A full disk is the store's to report (once).
                if error.is_full() {
                    tracing::debug!(%error, "storing events from redis failed");
                } else {
                    tracing::warn!(%error, "storing events from redis failed");
                }
                return false;
            }
        }
    }
    {
        let mut shared = backplane.shared();
        if shared.offsets_generation == generation {
            shared.offsets.extend(offsets);
        }
        if let Some((outstanding, _)) = &shared.probe {
            if nonces.iter().any(|nonce| nonce == outstanding) {
                shared.probe = None;
            }
        }
    }
    if !ephemeral.is_empty() {
        hub.dispatch(&ephemeral);
    }
    true
}
