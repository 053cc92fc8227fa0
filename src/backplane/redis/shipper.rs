//! The outbox: ships this node's own events from its log into its origin's stream, in seq
//! order, from where shipping last stopped; and sends ephemeral events best effort.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use fred::prelude::{Client, HashesInterface, StreamsInterface, Value};
use tokio::sync::{mpsc, watch};

use super::keys::{
    self, EPHEMERAL_STREAM_CAP, FIELD_AT_MS, FIELD_EVENT, FIELD_SEQ, LOG_STREAM_CAP,
};
use super::{Backoff, RedisBackplane, unless_stopped};
use crate::event::{Event, NodeId};
use crate::hub::Hub;
use crate::store::Store;

/// Events read from the log and written to Redis in one pipeline.
pub(super) const SHIP_PAGE: usize = 512;
/// With nothing to wake it, the shipper still looks at the log this often.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Ships from where shipping stopped last time. `committed_at_start` is this origin's position
/// before the node accepted any publish: what was committed before it may or may not have been
/// shipped, what is committed after it has not.
pub(super) async fn run(
    backplane: Arc<RedisBackplane>,
    store: Store,
    hub: Arc<Hub>,
    committed_at_start: u64,
    mut stop: watch::Receiver<bool>,
) {
    let origin = store.origin().clone();
    let mut backoff = Backoff::new();
    let mark = loop {
        let read = backplane
            .commands
            .hget::<Option<u64>, _, _>(backplane.keys.shipped(), origin.as_str());
        let Some(read) = unless_stopped(&mut stop, read).await else {
            return;
        };
        match read {
            Ok(mark) => break mark,
            Err(error) => {
                backplane.note_error("reading the shipped mark", &error);
                if !backoff.wait(&mut stop).await {
                    return;
                }
            }
        }
    };
    // Without a mark (a new cluster, or Redis lost its data) the older events are left to
    // repair, which re-ships whatever a live node lacks.
    let start = mark.unwrap_or(committed_at_start).min(committed_at_start);
    backplane.shipped.store(start, Ordering::SeqCst);
    backplane.shared().shipper_ready = true;
    tracing::info!(
        %origin,
        shipped = start,
        committed = committed_at_start,
        "redis shipper started"
    );
    backoff.reset();

    let stream = backplane.keys.log(&origin);
    loop {
        let from = backplane.shipped.load(Ordering::SeqCst);
        let committed = hub.delivered().get(&origin);
        metrics::gauge!("herald_redis_ship_backlog").set(committed.saturating_sub(from) as f64);
        if from >= committed {
            tokio::select! {
                _ = backplane.wake_shipper.notified() => {}
                _ = tokio::time::sleep(IDLE_CHECK) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            continue;
        }
        let page = {
            let origin = origin.clone();
            store
                .read(move |c| {
                    crate::store::state::log_range_scanned(c, &origin, from, committed, SHIP_PAGE)
                })
                .await
        };
        let (events, scanned) = match page {
            Ok((events, scanned)) if !events.is_empty() => (events, scanned),
            Ok((_, scanned)) if scanned > from => {
                // Only undecodable rows (logged and counted by the store): nothing to ship.
                let _ = backplane.shipped.compare_exchange(
                    from,
                    scanned,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                continue;
            }
            Ok(_) => {
                tracing::error!(%origin, from, committed, "own events missing from the log");
                if !backoff.wait(&mut stop).await {
                    return;
                }
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "reading events to ship failed");
                if !backoff.wait(&mut stop).await {
                    return;
                }
                continue;
            }
        };
        // Past undecodable rows at the end of the page too.
        let last = events.last().map(|e| e.seq).unwrap_or(from).max(scanned);
        let appended = append_events(
            &backplane.commands,
            &stream,
            &events,
            Some((&backplane, &origin)),
        );
        let Some(appended) = unless_stopped(&mut stop, appended).await else {
            return;
        };
        match appended {
            Ok(()) => {
                backoff.reset();
                // A rewind (Redis lost its data) while this page was in flight wins.
                let _ = backplane.shipped.compare_exchange(
                    from,
                    last,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                metrics::counter!("herald_redis_events_shipped_total")
                    .increment(events.len() as u64);
            }
            Err(error) => {
                backplane.note_error("shipping events", &error);
                metrics::counter!("herald_redis_ship_errors_total").increment(1);
                if !backoff.wait(&mut stop).await {
                    return;
                }
            }
        }
    }
}

/// `XADD`s `events` (all of one origin, in seq order) to `stream` in one pipeline; with
/// `mark`, also records the last one as shipped.
pub(super) async fn append_events(
    client: &Client,
    stream: &str,
    events: &[Event],
    mark: Option<(&RedisBackplane, &NodeId)>,
) -> Result<(), fred::error::Error> {
    let pipeline = client.pipeline();
    for event in events {
        let bytes = match keys::encode_event(event) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(
                    origin = %event.origin,
                    seq = event.seq,
                    %error,
                    "cannot encode an event for redis"
                );
                continue;
            }
        };
        let fields: Vec<(&str, Value)> = vec![
            (FIELD_SEQ, Value::Integer(event.seq as i64)),
            (FIELD_EVENT, Value::Bytes(bytes.into())),
        ];
        let _: () = pipeline
            .xadd(
                stream,
                false,
                ("MAXLEN", "~", LOG_STREAM_CAP as i64),
                "*",
                fields,
            )
            .await?;
    }
    if let (Some((backplane, origin)), Some(last)) = (mark, events.last()) {
        let _: () = pipeline
            .hset(backplane.keys.shipped(), (origin.as_str(), last.seq as i64))
            .await?;
    }
    let _: Value = pipeline.all().await?;
    Ok(())
}

/// Sends typing indicators to the shared ephemeral stream; on failure they are dropped.
pub(super) async fn run_ephemeral(
    backplane: Arc<RedisBackplane>,
    mut queue: mpsc::Receiver<Event>,
    mut stop: watch::Receiver<bool>,
) {
    let stream = backplane.keys.ephemeral();
    loop {
        let event = tokio::select! {
            event = queue.recv() => match event { Some(event) => event, None => return },
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let Ok(bytes) = keys::encode_event(&event) else {
            continue;
        };
        let fields: Vec<(&str, Value)> = vec![
            (FIELD_AT_MS, Value::Integer(keys::now_ms() as i64)),
            (FIELD_EVENT, Value::Bytes(bytes.into())),
        ];
        let sent = backplane.commands.xadd::<Value, _, _, _, _>(
            &stream,
            false,
            ("MAXLEN", "~", EPHEMERAL_STREAM_CAP as i64),
            "*",
            fields,
        );
        let Some(sent) = unless_stopped(&mut stop, sent).await else {
            return;
        };
        if sent.is_err() {
            metrics::counter!("herald_redis_ephemeral_dropped_total").increment(1);
        }
    }
}
