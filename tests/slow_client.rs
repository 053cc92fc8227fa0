//! A client that stops reading: its bounded queue fills, the server drops it (close code 1013,
//! counted in `herald_slow_client_disconnects_total`) instead of buffering without limit, and
//! every other client on the channel keeps receiving everything.
//!
//! One test per binary on purpose: the Prometheus counters are process-wide.

mod common;

use common::{Frame, TIMEOUT, TestNode, channels_path, wait_until};
use futures_util::StreamExt;
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Message;

const QUEUE: usize = 16;
const BLOB_BYTES: usize = 60_000;
/// Far more than kernel socket buffers plus the queue can hold: reaching it means the server
/// kept buffering for the stalled client.
const MAX_PUBLISHES: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_with_1013_and_others_keep_receiving() {
    let node = TestNode::start_with(|config| {
        config.limits.client_queue = QUEUE;
        config.limits.max_payload_bytes = 2 * BLOB_BYTES;
    })
    .await;
    let path = channels_path(&["firehose"], None);

    // A healthy client that reads everything, in its own task.
    let mut healthy = node
        .channel_socket(&["firehose"], &node.token("1", "fast", &[]))
        .await;
    let healthy_reader = tokio::spawn(async move {
        let mut blobs = 0usize;
        loop {
            let message = healthy.recv_json(TIMEOUT).await;
            match message["type"].as_str() {
                Some("blob") => {
                    assert_eq!(message["n"], blobs, "in order, none missing");
                    blobs += 1;
                }
                Some("done") => return blobs,
                _ => panic!("unexpected {message}"),
            }
        }
    });

    // The stalled client: a real WebSocket with a small receive buffer that, once upgraded,
    // is not read again until the server has given up on it.
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let tcp = socket.connect(node.http_addr()).await.expect("connect");
    let token = node.token("2", "stalled", &[]);
    let request = node
        .ws_url(&format!("{path}&token={token}"))
        .into_client_request()
        .expect("request");
    let (mut stalled, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("handshake");
    wait_until("both clients are subscribed", TIMEOUT, || async {
        node.hub_counts().connections == 2
    })
    .await;
    let disconnects_before = node.metric("herald_slow_client_disconnects_total").await;

    // Publish until the server gives up on the stalled client.
    let blob = "b".repeat(BLOB_BYTES);
    let mut published = 0usize;
    while node.metric("herald_slow_client_disconnects_total").await == disconnects_before {
        assert!(
            published < MAX_PUBLISHES,
            "{published} publishes of {BLOB_BYTES} bytes and the stalled client is still held"
        );
        node.publish(
            "firehose",
            json!({ "type": "blob", "n": published, "blob": blob }),
        )
        .await;
        published += 1;
    }

    // When the stalled client reads again, it finds what was in flight and then 1013: it is
    // told why, and the stream ends.
    let mut received = 0usize;
    let ending = loop {
        let next = tokio::time::timeout(TIMEOUT, stalled.next())
            .await
            .expect("the stalled stream ends in time");
        match next {
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(Message::Close(frame))) => {
                break frame.map(|f| Frame::Close(u16::from(f.code), f.reason.to_string()));
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => break Some(Frame::Ended),
        }
    };
    match ending {
        Some(Frame::Close(code, reason)) => {
            assert_eq!(code, 1013, "reason {reason:?}");
        }
        other => panic!("the stalled client's stream ended with {other:?}, not a 1013 close"),
    }
    assert!(
        received < published,
        "the stalled client got {received} of {published}: it was cut off"
    );
    wait_until(
        "the stalled connection is gone from the hub",
        TIMEOUT,
        || async { node.hub_counts().connections == 1 },
    )
    .await;
    let disconnects_after = node.metric("herald_slow_client_disconnects_total").await;
    assert_eq!(disconnects_after - disconnects_before, 1.0, "counted once");

    // The healthy client saw every event.
    node.publish("firehose", json!({ "type": "done" })).await;
    let blobs = healthy_reader.await.expect("healthy reader");
    assert_eq!(blobs, published);
}
