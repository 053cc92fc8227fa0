//! One connection's life: subscribe, greet, replay, then write live deliveries while the
//! reader task answers the client.
//!
//! A resume whose cursor is older than what some subscribed channel still keeps (its floor,
//! see `crate::store::floors`) gets what is retained after the cursor, then
//! `recovered:false` with `channels_lost` naming exactly those channels.
//!
//! Ordering and exactly-once: the subscription is registered before history is read, the
//! replay covers `(since, delivered_before]`, and the queue holds everything after
//! `delivered_before`, so every event of the connection's channels is sent once, each origin in
//! seq order. A cursor from another node may be ahead of this node for some origin: those
//! live events are skipped, and the cursors sent are raised to it until this node catches up.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use serde_json::json;
use tokio::sync::mpsc;

use super::reader::{Outgoing, read_client};
use super::{SessionInfo, SocketEndpoint, close_code, merged};
use crate::api::AppState;
use crate::api::admission::ConnectionPermit;
use crate::event::{Cursor, VersionVector};
use crate::hub::{CloseReason, Delivery, render_event};
use crate::presence::PresenceGuard;
use crate::store::state::channels_lost;
use crate::store::{LogQuery, StoreError};

/// Replies the reader may queue for the writer before it waits (boxed: a queue holds its
/// first 32 slots from the start, so 8 bytes a slot rather than 32).
const CONTROL_QUEUE: usize = 32;
/// Queued deliveries written to the socket before one flush.
const WRITE_BATCH: usize = 64;
/// One write batch in this many (per socket, the first included) samples the delivery lag:
/// a sample per batch was a histogram entry per delivery under fan-out.
const LAG_SAMPLE_EVERY: u32 = 16;
/// How long a close frame may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a client dropped as too slow has to take its close frame (behind what was already
/// buffered for it) before the connection is cut without one.
const SLOW_CLIENT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

type Sink = SplitSink<WebSocket, Message>;

/// What a connection starts from, boxed so that the connection's task keeps a pointer to it
/// rather than every field for its whole life.
struct Start<E> {
    state: AppState,
    socket: WebSocket,
    info: SessionInfo,
    since: Option<VersionVector>,
    endpoint: E,
    permit: ConnectionPermit,
}

/// What the live loop needs once the client is greeted.
struct Live {
    sink: Sink,
    subscription: crate::hub::Subscription,
    control: mpsc::Receiver<Box<Outgoing>>,
    floor: Option<VersionVector>,
    reader: tokio::task::JoinHandle<()>,
    permit: ConnectionPermit,
    /// The socket's presence on its channels, left when the connection ends.
    presence: Option<PresenceGuard>,
}

/// Starts the connection's task. Memory per idle connection (BENCHMARKS.md, connections at
/// scale): the caller (axum's upgrade task, several KiB) must do no I/O on the socket and end
/// at once, or its waker stays registered with the socket and keeps that task allocated for
/// the connection's life; the setup (greeting, replay) is boxed and freed once done, so what
/// stays is the small live loop.
pub(super) fn start<E: SocketEndpoint>(
    state: AppState,
    socket: WebSocket,
    info: SessionInfo,
    since: Option<VersionVector>,
    endpoint: E,
    permit: ConnectionPermit,
) {
    let start = Box::new(Start {
        state,
        socket,
        info,
        since,
        endpoint,
        permit,
    });
    tokio::spawn(async move {
        if let Some(live) = Box::pin(set_up(start)).await {
            run_live(live).await;
        }
    });
}

/// Subscribes, greets and replays; answers what the live loop needs, or `None` when the
/// client went away meanwhile.
async fn set_up<E: SocketEndpoint>(start: Box<Start<E>>) -> Option<Box<Live>> {
    let Start {
        state,
        socket,
        info,
        since,
        endpoint,
        permit,
    } = *start;
    // Entered before subscribing: the socket does not hear its own user's join (it is in the
    // presence snapshot a socket may send after `connected`); everyone else does.
    let presence = if info.announce {
        state
            .presence
            .enter(&info.user.id, &info.user.name, &info.spec.channels)
    } else {
        None
    };
    let subscription = state.hub.subscribe(info.spec.clone());
    let (mut sink, stream) = socket.split();
    metrics::gauge!("herald_connections").increment(1.0);
    let endpoint = Arc::new(endpoint);
    let info = Arc::new(info);

    let greeted = greet(
        &state,
        &mut sink,
        &info,
        endpoint.as_ref(),
        since.as_ref(),
        &subscription.delivered_before,
    )
    .await;
    let replayed = match (&greeted, &since) {
        (Ok(()), Some(since)) => replay(
            &state,
            &mut sink,
            &info,
            since,
            &subscription.delivered_before,
        )
        .await
        .map(Some),
        (Ok(()), None) => Ok(None),
        (Err(()), _) => Err(()),
    };
    let Ok(covered) = replayed else {
        drop(subscription);
        metrics::gauge!("herald_connections").decrement(1.0);
        return None;
    };
    // Live events the replay (or the client, resuming from a node that was ahead) already
    // covered are skipped; nothing needs skipping when the hub was already past them.
    let mut subscription = subscription;
    let floor = covered.filter(|vector| !subscription.delivered_before.dominates(vector));
    // Only the setup needed it; the live loop keeps no copy of the hub's position.
    subscription.delivered_before = VersionVector::new();
    let (control, control_queue) = mpsc::channel(CONTROL_QUEUE);
    let reader = tokio::spawn(read_client(
        state.clone(),
        stream,
        Arc::clone(&info),
        Arc::clone(&endpoint),
        control,
        Arc::clone(&subscription.close_signal),
    ));
    Some(Box::new(Live {
        sink,
        subscription,
        control: control_queue,
        floor,
        reader,
        permit,
        presence,
    }))
}

/// The connection's life after its greeting: writes until it ends, then stops the reader,
/// leaves the hub and gives back the admission permit.
async fn run_live(live: Box<Live>) {
    let Live {
        mut sink,
        mut subscription,
        control,
        floor,
        reader,
        permit,
        presence,
    } = *live;
    write_live(&mut sink, &mut subscription, control, floor).await;
    drop(presence);
    drop(subscription);
    // The closing handshake: the reader goes on until the client answers the close frame, so
    // the socket is not dropped with the client's last messages unread (see the reader).
    let mut reader = reader;
    if tokio::time::timeout(super::reader::CLOSING_HANDSHAKE, &mut reader)
        .await
        .is_err()
    {
        reader.abort();
    }
    metrics::gauge!("herald_connections").decrement(1.0);
    drop(permit);
}

/// Sends `connected` (with the cursor the connection starts from) and the endpoint's
/// on-connect messages.
async fn greet<E: SocketEndpoint>(
    state: &AppState,
    sink: &mut Sink,
    info: &SessionInfo,
    endpoint: &E,
    since: Option<&VersionVector>,
    delivered_before: &VersionVector,
) -> Result<(), ()> {
    let mut connected = serde_json::Map::new();
    connected.insert("type".into(), json!("connected"));
    connected.extend(endpoint.connected_fields(info));
    let start = since.unwrap_or(delivered_before);
    connected.insert("cursor".into(), json!(Cursor::encode(start)));
    // How long this node stays silent at most (it sends a heartbeat after that much client
    // silence): clients take 2.5 of these without a word for a dead server.
    let heartbeat_ms = u64::try_from(state.config.limits.heartbeat.as_millis()).unwrap_or(u64::MAX);
    connected.insert("heartbeat_ms".into(), json!(heartbeat_ms));
    feed(sink, serde_json::Value::Object(connected).to_string()).await?;
    for message in endpoint.on_connect(state, info).await {
        feed(sink, message).await?;
    }
    sink.flush().await.map_err(|_| ())
}

/// Sends the events of the connection's channels after `since` up to everything committed
/// now (at least `delivered_before`), page by page, then `recovered`. Answers the position the
/// replay covered: live deliveries at or below it were sent here and are skipped.
async fn replay(
    state: &AppState,
    sink: &mut Sink,
    info: &SessionInfo,
    since: &VersionVector,
    delivered_before: &VersionVector,
) -> Result<VersionVector, ()> {
    // Read after subscribing: every event committed up to here is either in the store now or
    // in the queue (or both, and then the floor drops the queued copy).
    let mut upto = state
        .store
        .version_vector()
        .await
        .map_err(|error| tracing::warn!(%error, "replay read failed"))?;
    upto.merge(delivered_before);
    let upto = &upto;
    // Retired origins are accepted in a cursor (and count for what was lost), and dropped
    // from every cursor sent back.
    let named = since;
    let since = &state.store.retired().strip(since);
    let mut position = since.clone();
    let mut replayed = 0u64;
    loop {
        let query = LogQuery {
            channels: info.spec.channels.clone(),
            prefixes: info.spec.prefixes.clone(),
            after: position.clone(),
            upto: upto.clone(),
            limit: state.config.limits.replay_page,
        };
        let page = state
            .store
            .read(move |connection| query.run(connection))
            .await
            .map_err(|error: StoreError| tracing::warn!(%error, "replay read failed"))?;
        for event in &page.events {
            position.advance(&event.origin, event.seq);
            if !event.is_for_user(&info.user.id) {
                continue;
            }
            feed(sink, render_event(event, &position)).await?;
            replayed += 1;
        }
        sink.flush().await.map_err(|_| ())?;
        if page.complete {
            break;
        }
    }
    metrics::counter!("herald_replayed_events_total").increment(replayed);
    let lost = {
        let (channels, prefixes, since) = (
            info.spec.channels.clone(),
            info.spec.prefixes.clone(),
            named.clone(),
        );
        state
            .store
            .read(move |c| channels_lost(c, &channels, &prefixes, &since))
            .await
            .map_err(|error| tracing::warn!(%error, "reading channel floors failed"))?
    };
    let mut recovered = json!({
        "type": "recovered",
        "recovered": lost.is_empty(),
        "replayed": replayed,
        "cursor": Cursor::encode(&merged(since, upto)),
    });
    if !lost.is_empty() {
        metrics::counter!("herald_resumes_below_floor_total").increment(1);
        recovered["channels_lost"] = json!(lost);
    }
    feed(sink, recovered.to_string()).await?;
    sink.flush().await.map_err(|_| ())?;
    Ok(merged(since, upto))
}

/// Writes live deliveries (batched: one flush per burst) and the reader's replies until the
/// client goes, the hub asks for a close, or the reader ends.
async fn write_live(
    sink: &mut Sink,
    subscription: &mut crate::hub::Subscription,
    mut control: mpsc::Receiver<Box<Outgoing>>,
    mut floor: Option<VersionVector>,
) {
    let close_signal = Arc::clone(&subscription.close_signal);
    // One wait for the hub's close, kept across the loop (and the writes it races): its waiter
    // is registered once, not again for every delivery.
    let closed = close_signal.raised();
    tokio::pin!(closed);
    // Grown by the first delivery: an idle connection holds no batch buffer.
    let mut batch: Vec<Arc<Delivery>> = Vec::new();
    let mut batches_written = 0u32;
    loop {
        let step = tokio::select! {
            biased;
            reason = &mut closed => Step::Close(reason),
            outgoing = control.recv() => match outgoing.map(|boxed| *boxed) {
                Some(Outgoing::Text(text)) => Step::Text(text),
                Some(Outgoing::Ping) => Step::Ping,
                Some(Outgoing::Close(code, reason)) => Step::CloseWith(code, reason),
                None => return,
            },
            received = subscription.deliveries.recv_many(&mut batch, WRITE_BATCH) => {
                if received == 0 { return; }
                Step::Deliveries
            }
        };
        let written = match step {
            Step::Close(reason) => {
                close_for(sink, reason).await;
                return;
            }
            Step::CloseWith(code, reason) => {
                send_close(sink, code, reason, CLOSE_TIMEOUT).await;
                return;
            }
            Step::Text(text) => {
                let send = sink.send(Message::Text(text.into()));
                race_close(send, closed.as_mut()).await
            }
            Step::Ping => {
                let send = sink.send(Message::Ping(Default::default()));
                race_close(send, closed.as_mut()).await
            }
            Step::Deliveries => {
                let sample_lag = batches_written % LAG_SAMPLE_EVERY == 0;
                batches_written = batches_written.wrapping_add(1);
                let write = write_deliveries(sink, &mut batch, &mut floor, sample_lag);
                race_close(write, closed.as_mut()).await
            }
        };
        batch.clear();
        match written {
            Written::Done => {}
            Written::Failed => return,
            // The hub gave up on the connection while a write waited (a client that stopped
            // reading): the close frame goes out behind what is already buffered, so a client
            // that reads again learns why it was dropped.
            Written::Interrupted(reason) => {
                close_for(sink, reason).await;
                return;
            }
        }
    }
}

/// Sends the close frame for the hub's `reason`.
async fn close_for(sink: &mut Sink, reason: CloseReason) {
    match reason {
        CloseReason::SlowClient => {
            send_close(
                sink,
                close_code::TRY_AGAIN_LATER,
                "client too slow: queue full",
                SLOW_CLIENT_CLOSE_TIMEOUT,
            )
            .await;
        }
        CloseReason::Leaving => {
            send_close(
                sink,
                close_code::SERVICE_RESTART,
                "node leaving the cluster: reconnect elsewhere with your cursor",
                CLOSE_TIMEOUT,
            )
            .await;
        }
        CloseReason::Unresponsive => {
            send_close(
                sink,
                close_code::GOING_AWAY,
                "no answer to heartbeats",
                CLOSE_TIMEOUT,
            )
            .await;
        }
        CloseReason::Resync => {
            send_close(
                sink,
                close_code::SERVICE_RESTART,
                "node caught up from a snapshot: resume with your cursor",
                CLOSE_TIMEOUT,
            )
            .await;
        }
        _ => {
            send_close(
                sink,
                close_code::GOING_AWAY,
                "server shutting down",
                CLOSE_TIMEOUT,
            )
            .await;
        }
    }
}

enum Step {
    Close(CloseReason),
    CloseWith(u16, &'static str),
    Text(String),
    Ping,
    Deliveries,
}

/// How a socket write raced against the hub's close signal ended.
enum Written {
    Done,
    /// The socket failed: the client is gone.
    Failed,
    /// The hub asked for a close before the write completed.
    Interrupted(CloseReason),
}

/// Runs a socket write unless the hub asks for a close first (a write to a client that does
/// not read can wait forever).
async fn race_close<F, E, C>(write: F, closed: std::pin::Pin<&mut C>) -> Written
where
    F: std::future::Future<Output = Result<(), E>>,
    C: std::future::Future<Output = CloseReason>,
{
    tokio::select! {
        result = write => match result {
            Ok(()) => Written::Done,
            Err(_) => Written::Failed,
        },
        reason = closed => Written::Interrupted(reason),
    }
}

async fn write_deliveries(
    sink: &mut Sink,
    batch: &mut [Arc<Delivery>],
    floor: &mut Option<VersionVector>,
    sample_lag: bool,
) -> Result<(), axum::Error> {
    for delivery in batch.iter() {
        let text = match floor {
            None => delivery.text.clone(),
            // Ephemeral events carry no cursor: nothing to skip or raise.
            Some(_) if delivery.seq == 0 => delivery.text.clone(),
            Some(vector) => {
                if vector.covers(&delivery.origin, delivery.seq) {
                    continue;
                }
                if delivery.cursor.dominates(vector) {
                    *floor = None;
                    delivery.text.clone()
                } else {
                    Utf8Bytes::from(with_cursor(
                        &delivery.text,
                        &merged(&delivery.cursor, vector),
                    ))
                }
            }
        };
        sink.feed(Message::Text(text)).await?;
    }
    sink.flush().await?;
    // One sample per sampled write batch (one clock read), from its oldest stamped event.
    if sample_lag {
        if let Some(stamp) = batch.iter().map(|d| d.stamp_ms).find(|&ms| ms > 0) {
            crate::telemetry::catalog::record_delivery_lag(stamp);
        }
    }
    Ok(())
}

/// Replaces the trailing `"cursor":"..."}` of a rendered event.
fn with_cursor(text: &str, cursor: &VersionVector) -> String {
    let cut = text.rfind("\"cursor\":\"").unwrap_or(text.len());
    let mut replaced = String::with_capacity(text.len() + 16);
    replaced.push_str(&text[..cut]);
    replaced.push_str("\"cursor\":\"");
    replaced.push_str(&Cursor::encode(cursor));
    replaced.push_str("\"}");
    replaced
}

async fn feed(sink: &mut Sink, text: String) -> Result<(), ()> {
    sink.feed(Message::Text(text.into())).await.map_err(|_| ())
}

async fn send_close(sink: &mut Sink, code: u16, reason: &'static str, timeout: Duration) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let close = sink.send(Message::Close(Some(frame)));
    let _ = tokio::time::timeout(timeout, close).await;
}
