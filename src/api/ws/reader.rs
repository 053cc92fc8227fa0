//! The reading half of a session: answers pings (and takes a text `pong` as the answer to a
//! heartbeat), hands JSON messages to the endpoint, refuses binary, non-UTF-8 and oversized
//! frames, holds the client to its message rate (see [`super::rate`]), and keeps the
//! connection alive or finds it dead.
//!
//! Liveness: after a heartbeat interval of client silence the server sends the seeds' text
//! heartbeat and a WebSocket protocol ping (which browsers answer by themselves). Any frame
//! from the client counts as an answer. A client that sent nothing for two intervals is taken
//! for dead (its TCP connection is gone, or it stopped reading and writing): the writer is told
//! to close, which drops the connection's queue and gives back its admission permit. So is a
//! client whose writer accepts none of the reader's replies for an interval (it sends but does
//! not read).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use tokio::sync::mpsc;

use super::rate::{MessageRate, Verdict};
use super::{Heartbeat, SessionInfo, SocketEndpoint, close_code, error_message};
use crate::api::AppState;
use crate::hub::{CloseReason, CloseSignal};

/// Silent heartbeat intervals after which a client is taken for dead.
const SILENT_INTERVALS_BEFORE_CLOSE: u32 = 2;

/// What the reader asks the writer to send.
pub(super) enum Outgoing {
    Text(String),
    /// A WebSocket protocol ping.
    Ping,
    Close(u16, &'static str),
}

pub(super) async fn read_client<E: SocketEndpoint>(
    state: AppState,
    mut stream: SplitStream<WebSocket>,
    info: Arc<SessionInfo>,
    endpoint: Arc<E>,
    writer: mpsc::Sender<Box<Outgoing>>,
    close_signal: Arc<CloseSignal>,
) {
    let limits = &state.config.limits;
    let heartbeat_every = limits.heartbeat;
    let heartbeat = match endpoint.heartbeat() {
        Heartbeat::TextPing => "ping",
        Heartbeat::JsonHeartbeat => r#"{"type":"heartbeat"}"#,
    };
    let mut rate = MessageRate::new(
        limits.client_messages_per_s,
        limits.client_messages_burst,
        Instant::now(),
    );
    let mut silent_intervals = 0u32;
    loop {
        let frame = match tokio::time::timeout(heartbeat_every, stream.next()).await {
            Err(_silence) => {
                silent_intervals += 1;
                if silent_intervals >= SILENT_INTERVALS_BEFORE_CLOSE {
                    metrics::counter!("herald_unresponsive_disconnects_total").increment(1);
                    close_signal.raise(CloseReason::Unresponsive);
                    return;
                }
                let sent = hand_to_writer(
                    &writer,
                    Outgoing::Text(heartbeat.to_string()),
                    heartbeat_every,
                )
                .await
                    && hand_to_writer(&writer, Outgoing::Ping, heartbeat_every).await;
                if !sent {
                    close_signal.raise(CloseReason::Unresponsive);
                    return;
                }
                continue;
            }
            Ok(None) => return,
            Ok(Some(Err(error))) => {
                ask_to_close(
                    &writer,
                    &close_signal,
                    close_for_read_error(&error),
                    heartbeat_every,
                )
                .await;
                return;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        silent_intervals = 0;
        let replies = match frame {
            Message::Text(text) => match rate.check(Instant::now()) {
                // Boxed: the endpoint's answer is a large future that would otherwise sit in
                // every idle connection's task.
                Verdict::Admit => {
                    Box::pin(answer_text(&state, &info, endpoint.as_ref(), text.as_str())).await
                }
                Verdict::Refuse => {
                    metrics::counter!("herald_client_messages_refused_total").increment(1);
                    vec![error_message(&format!(
                        "too many messages: at most {} per second",
                        rate.per_second()
                    ))]
                }
                Verdict::Close => {
                    metrics::counter!("herald_rate_limit_disconnects_total").increment(1);
                    let close = Outgoing::Close(close_code::POLICY_VIOLATION, "too many messages");
                    ask_to_close(&writer, &close_signal, close, heartbeat_every).await;
                    drain_until_closed(&mut stream).await;
                    return;
                }
            },
            Message::Binary(_) => {
                let close = Outgoing::Close(
                    close_code::UNSUPPORTED_DATA,
                    "binary frames are not supported",
                );
                ask_to_close(&writer, &close_signal, close, heartbeat_every).await;
                drain_until_closed(&mut stream).await;
                return;
            }
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) => Vec::new(),
        };
        for reply in replies {
            if !hand_to_writer(&writer, Outgoing::Text(reply), heartbeat_every).await {
                close_signal.raise(CloseReason::Unresponsive);
                return;
            }
        }
    }
}

/// Longest wait for a client to answer our close frame.
pub(super) const CLOSING_HANDSHAKE: Duration = Duration::from_secs(2);

/// Reads and drops what the client still sends until it answers our close (or ends, or the
/// wait runs out). A socket dropped with unread data is answered with a reset by the kernel,
/// and a reset loses the close frame still on its way to the client.
async fn drain_until_closed(stream: &mut SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(CLOSING_HANDSHAKE, async {
        while let Some(Ok(frame)) = stream.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Asks the writer to send the close frame `close`; a writer stuck on a client that does not
/// read is made to give up instead.
async fn ask_to_close(
    writer: &mpsc::Sender<Box<Outgoing>>,
    close_signal: &CloseSignal,
    close: Outgoing,
    patience: Duration,
) {
    if !hand_to_writer(writer, close, patience).await {
        close_signal.raise(CloseReason::Unresponsive);
    }
}

/// Queues `outgoing` for the writer. False when the writer has ended, or when it took no
/// message for a heartbeat interval: it is stuck writing to a client that does not read, which
/// is as unresponsive as one that answers nothing (and the reader must not stop reading, or
/// the client's silence would go unnoticed).
async fn hand_to_writer(
    writer: &mpsc::Sender<Box<Outgoing>>,
    outgoing: Outgoing,
    patience: Duration,
) -> bool {
    writer
        .send_timeout(Box::new(outgoing), patience)
        .await
        .is_ok()
}

async fn answer_text<E: SocketEndpoint>(
    state: &AppState,
    info: &SessionInfo,
    endpoint: &E,
    text: &str,
) -> Vec<String> {
    if text == "ping" {
        return vec!["pong".to_string()];
    }
    if text == "pong" {
        // A client answering the broadcast socket's heartbeat (the seeds' clients do).
        return Vec::new();
    }
    let message: serde_json::Value = match serde_json::from_str(text) {
        Ok(value @ serde_json::Value::Object(_)) => value,
        Ok(_) => return vec![error_message("messages must be JSON objects")],
        Err(_) => return vec![error_message("invalid JSON")],
    };
    match message.get("type").and_then(|t| t.as_str()) {
        Some("ping") => vec![r#"{"type":"pong"}"#.to_string()],
        Some(_) => endpoint.on_client_message(state, info, message).await,
        None => vec![error_message("message has no type")],
    }
}

fn close_for_read_error(error: &axum::Error) -> Outgoing {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let source = std::error::Error::source(error).and_then(|e| e.downcast_ref::<WsError>());
    let too_big = matches!(source, Some(WsError::Capacity(_)));
    if too_big
        || error.to_string().contains("too long")
        || error.to_string().contains("Space limit")
    {
        Outgoing::Close(close_code::MESSAGE_TOO_BIG, "message too big")
    } else if matches!(source, Some(WsError::Utf8(_))) {
        Outgoing::Close(close_code::INVALID_PAYLOAD, "text is not valid UTF-8")
    } else {
        Outgoing::Close(close_code::PROTOCOL_ERROR, "protocol error")
    }
}
