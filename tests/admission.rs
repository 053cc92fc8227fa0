//! Admission control on one node: the node-wide semaphore (`max_connections`), the per-user and
//! per-address limits, the message rate of a socket, the dead client found by protocol pings,
//! and the bounds of every HTTP request (a body limit and a timeout that spares sockets).
//!
//! Every socket endpoint goes through the same admission path: the tests mix them.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{BROADCAST_WS, Frame, TIMEOUT, TestNode, WsClient, wait_until};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Sockets of different features, all of which count against the same limits.
const ENDPOINTS: [&str; 5] = [
    BROADCAST_WS,
    "/ws?channel=news",
    "/api/ws/track/1",
    "/api/forum/ws/global",
    "/ws/book-requests",
];

/// Opens `path` and waits for its `connected` message.
async fn connected(node: &TestNode, path: &str, token: &str) -> WsClient {
    let mut socket = node.ws(path, Some(token)).await;
    socket.recv_type("connected", TIMEOUT).await;
    socket
}

async fn sockets_held(node: &TestNode, count: usize) {
    wait_until("the node holds the expected sockets", TIMEOUT, || async {
        node.hub_counts().connections == count
    })
    .await;
}

// ---- the node ----

#[tokio::test]
async fn the_node_admits_max_connections_refuses_the_next_with_1013_and_frees_a_place_on_close() {
    let node = TestNode::start_with(|config| config.limits.max_connections = 3).await;
    let mut held = Vec::new();
    for (n, path) in ENDPOINTS[..3].iter().enumerate() {
        let token = node.token(&n.to_string(), &format!("user{n}"), &[]);
        held.push(connected(&node, path, &token).await);
    }
    let admission = &node.server().state().admission;
    assert_eq!(admission.available(), 0);

    for path in ENDPOINTS {
        let mut refused = node.ws(path, Some(&node.token("9", "late", &[]))).await;
        let reason = refused.expect_close(1013, TIMEOUT).await;
        assert_eq!(reason, "server at connection capacity");
    }

    held.pop().expect("a socket").close().await;
    wait_until(
        "the closed socket gave its permit back",
        TIMEOUT,
        || async { admission.available() == 1 },
    )
    .await;
    let again = connected(&node, ENDPOINTS[4], &node.token("9", "late", &[])).await;
    held.push(again);
    assert_eq!(admission.available(), 0);

    for socket in held {
        socket.close().await;
    }
    wait_until("every permit is back", TIMEOUT, || async {
        admission.available() == 3
    })
    .await;
}

#[tokio::test]
async fn a_refused_token_gives_its_node_place_back() {
    let node = TestNode::start_with(|config| config.limits.max_connections = 1).await;
    for _ in 0..3 {
        let mut socket = node.ws(BROADCAST_WS, Some("not-a-token")).await;
        socket.expect_close(1008, TIMEOUT).await;
    }
    let admission = &node.server().state().admission;
    wait_until(
        "the refused sockets gave their permits back",
        TIMEOUT,
        || async { admission.available() == 1 },
    )
    .await;
    connected(&node, BROADCAST_WS, &node.token("1", "alice", &[])).await;
}

// ---- per user ----

#[tokio::test]
async fn the_connection_after_max_connections_per_user_is_closed_with_1008_too_many_connections() {
    let node = TestNode::start_with(|config| config.limits.max_connections_per_user = 3).await;
    let alice = node.token("1", "alice", &[]);
    let mut held = Vec::new();
    for path in &ENDPOINTS[..3] {
        held.push(connected(&node, path, &alice).await);
    }
    for path in ENDPOINTS {
        let mut fourth = node.ws(path, Some(&alice)).await;
        let reason = fourth.expect_close(1008, TIMEOUT).await;
        assert_eq!(reason, "too many connections", "{path}");
    }
    // Another user is not affected; alice has a place again once one of hers closes.
    held.push(connected(&node, ENDPOINTS[3], &node.token("2", "bob", &[])).await);
    held.swap_remove(0).close().await;
    wait_until("alice's closed socket is gone", TIMEOUT, || async {
        node.server().state().admission.user_connections("1") == 2
    })
    .await;
    held.push(connected(&node, ENDPOINTS[4], &alice).await);
    assert_eq!(node.server().state().admission.user_connections("1"), 3);
}

#[tokio::test]
async fn with_the_defaults_the_101st_connection_of_one_user_is_refused() {
    let node = TestNode::start().await;
    assert_eq!(
        node.server().state().config.limits.max_connections_per_user,
        100
    );
    let alice = node.token("1", "alice", &[]);
    let held = futures_util::future::join_all(
        (0..100).map(|n| connected(&node, ENDPOINTS[n % ENDPOINTS.len()], &alice)),
    )
    .await;
    let mut extra = node.ws(ENDPOINTS[0], Some(&alice)).await;
    let reason = extra.expect_close(1008, TIMEOUT).await;
    assert_eq!(reason, "too many connections");
    assert_eq!(node.server().state().admission.user_connections("1"), 100);
    drop(held);
}

// ---- per address ----

/// A WebSocket client whose TCP connection leaves from `local` (any 127.x.y.z is loopback).
async fn from_address(node: &TestNode, local: [u8; 4], path: &str, token: &str) -> WsClient {
    let socket = TcpSocket::new_v4().expect("tcp socket");
    socket
        .bind(SocketAddr::from((local, 0)))
        .expect("bind a loopback address");
    let tcp = socket
        .connect(node.http_addr())
        .await
        .expect("connect to the node");
    let separator = if path.contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}token={token}", node.ws_url(path));
    WsClient::connect_over(tcp, url.into_client_request().expect("ws request")).await
}

#[tokio::test]
async fn the_connection_after_max_connections_per_ip_is_closed_with_1008() {
    let node = TestNode::start_with(|config| config.limits.max_connections_per_ip = 2).await;
    let mut held = Vec::new();
    for (n, path) in ENDPOINTS[..2].iter().enumerate() {
        let token = node.token(&n.to_string(), &format!("user{n}"), &[]);
        let mut socket = from_address(&node, [127, 0, 0, 1], path, &token).await;
        socket.recv_type("connected", TIMEOUT).await;
        held.push(socket);
    }
    let stranger = node.token("7", "stranger", &[]);
    let mut third = from_address(&node, [127, 0, 0, 1], ENDPOINTS[2], &stranger).await;
    let reason = third.expect_close(1008, TIMEOUT).await;
    assert_eq!(reason, "too many connections from this address");

    // The same user from another address is admitted.
    let mut elsewhere = from_address(&node, [127, 0, 0, 2], ENDPOINTS[2], &stranger).await;
    elsewhere.recv_type("connected", TIMEOUT).await;
    // And the first address has room again once one of its sockets closes.
    held.pop().expect("a socket").close().await;
    sockets_held(&node, 2).await;
    let mut again = from_address(&node, [127, 0, 0, 1], ENDPOINTS[3], &stranger).await;
    again.recv_type("connected", TIMEOUT).await;
}

#[tokio::test]
async fn without_a_per_ip_limit_one_address_holds_many_users() {
    let node = TestNode::start().await;
    assert_eq!(
        node.server().state().config.limits.max_connections_per_ip,
        0
    );
    let mut held = Vec::new();
    for n in 0..20 {
        let token = node.token(&n.to_string(), &format!("user{n}"), &[]);
        held.push(connected(&node, "/ws?channel=news", &token).await);
    }
    sockets_held(&node, 20).await;
}

// ---- message rate ----

#[tokio::test]
async fn messages_over_the_rate_get_an_error_and_persistent_excess_closes_with_1008() {
    // A burst of 10, then one message a second: the test's messages all come within the burst
    // or well over the rate.
    let node = TestNode::start_with(|config| {
        config.limits.client_messages_per_s = 1;
        config.limits.client_messages_burst = 10;
    })
    .await;
    let mut socket = connected(&node, "/ws?channel=news", &node.token("1", "alice", &[])).await;
    for _ in 0..10 {
        socket.send_json(&json!({ "type": "ping" })).await;
    }
    for _ in 0..10 {
        assert_eq!(socket.recv_json(TIMEOUT).await, json!({ "type": "pong" }));
    }
    socket.send_json(&json!({ "type": "ping" })).await;
    let refused = socket.recv_json(TIMEOUT).await;
    assert_eq!(refused["type"], "error", "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(message.contains("too many messages"), "{message}");

    // Still over the rate, message after message: closed once as many were refused as the
    // burst.
    for _ in 0..40 {
        if !socket.try_send_text(r#"{"type":"ping"}"#).await {
            break;
        }
    }
    let reason = socket.expect_close(1008, TIMEOUT).await;
    assert_eq!(reason, "too many messages");
    sockets_held(&node, 0).await;
}

#[tokio::test]
async fn a_client_within_the_rate_is_never_refused() {
    let node = TestNode::start_with(|config| {
        config.limits.client_messages_per_s = 100;
        config.limits.client_messages_burst = 2;
    })
    .await;
    let mut socket = connected(&node, BROADCAST_WS, &node.token("1", "alice", &[])).await;
    // Paced at 50 a second, half the rate: the bucket never runs dry.
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..50 {
        pace.tick().await;
        socket.send_text("ping").await;
        assert_eq!(socket.recv_text(TIMEOUT).await, "pong");
    }
}

// ---- dead clients ----

const HEARTBEAT: Duration = Duration::from_millis(200);

/// Completes a WebSocket handshake on a raw TCP connection, then never reads or writes again:
/// a client whose network went away (nothing answers the server's pings).
async fn dead_client(node: &TestNode, path: &str, token: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(node.http_addr()).await.expect("connect");
    let request = format!(
        "GET {path}?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        node.http_addr()
    );
    tcp.write_all(request.as_bytes())
        .await
        .expect("send handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(TIMEOUT, tcp.read(&mut byte))
            .await
            .expect("handshake answer in time")
            .expect("read handshake answer");
        assert_eq!(read, 1, "connection closed during the handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

#[tokio::test]
async fn a_client_that_answers_nothing_is_closed_after_two_heartbeats_and_frees_its_place() {
    let node = TestNode::start_with(|config| {
        config.limits.heartbeat = HEARTBEAT;
        config.limits.max_connections = 1;
    })
    .await;
    let token = node.token("1", "alice", &[]);
    let dead = dead_client(&node, "/api/ws/track/1", &token).await;
    let since = Instant::now();
    sockets_held(&node, 1).await;
    // While it holds the node's only place, nobody else gets in.
    let mut refused = node.ws(BROADCAST_WS, Some(&token)).await;
    refused.expect_close(1013, TIMEOUT).await;

    sockets_held(&node, 0).await;
    let silent = since.elapsed();
    assert!(
        silent >= 2 * HEARTBEAT,
        "closed after {silent:?}, before two heartbeat intervals"
    );
    let admission = &node.server().state().admission;
    wait_until("the dead client's permit is back", TIMEOUT, || async {
        admission.available() == 1
    })
    .await;
    connected(&node, BROADCAST_WS, &token).await;
    drop(dead);
}

#[tokio::test]
async fn a_client_that_answers_protocol_pings_stays_connected() {
    let node = TestNode::start_with(|config| config.limits.heartbeat = HEARTBEAT).await;
    let mut socket = connected(&node, "/ws?channel=news", &node.token("1", "alice", &[])).await;
    // The client sends nothing of its own; reading answers the server's pings (as browsers
    // do). Five heartbeats in a row span more than two intervals.
    for _ in 0..5 {
        assert_eq!(
            socket.recv_json(TIMEOUT).await,
            json!({ "type": "heartbeat" })
        );
    }
    socket.send_json(&json!({ "type": "ping" })).await;
    assert_eq!(
        socket
            .recv_json_until(|m| m["type"] == "pong", TIMEOUT)
            .await,
        json!({ "type": "pong" })
    );
}

#[tokio::test]
async fn a_client_that_sends_but_never_reads_is_closed_once_its_replies_back_up() {
    let node = TestNode::start_with(|config| {
        config.limits.heartbeat = HEARTBEAT;
        config.limits.client_messages_per_s = 0;
    })
    .await;
    let admin = node.admin_token("100");
    node.create_broadcast(&admin, &"m".repeat(280), "info")
        .await;
    let mut socket = connected(&node, BROADCAST_WS, &node.token("1", "alice", &[])).await;
    // Each request is answered with the active broadcast, several times its size: the replies
    // fill the socket's buffers, the writer blocks, and the reader's hand-off times out.
    let deadline = Instant::now() + TIMEOUT;
    let mut sent = 0u64;
    while node.hub_counts().connections > 0 {
        assert!(
            Instant::now() < deadline,
            "still connected after {sent} requests"
        );
        if !socket
            .try_send_text(r#"{"type":"get_active_broadcast"}"#)
            .await
        {
            break;
        }
        sent += 1;
        if sent % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    sockets_held(&node, 0).await;
    let admission = &node.server().state().admission;
    wait_until("its permit is back", TIMEOUT, || async {
        admission.available() == node.server().state().config.limits.max_connections
    })
    .await;
}

// ---- HTTP requests ----

#[tokio::test]
async fn a_body_over_the_limit_gets_413_on_every_route() {
    let node = TestNode::start_with(|config| config.limits.max_request_body_bytes = 1024).await;
    let big = json!({ "channel": "news", "data": { "type": "x", "pad": "p".repeat(2000) } });
    let message = node
        .post("/api/publish", Some(node.api_key()), &big)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.contains("too large"), "{message}");
    let token = node.token("1", "alice", &[]);
    let comment = json!({ "content": "c".repeat(1500), "timestamp": 1 });
    node.post("/api/tracks/1/comments", Some(&token), &comment)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE);
    // A route that reads no body at all still refuses one announced over the limit.
    node.post_raw(
        "/api/creator/broadcast/clear",
        &[("content-type", "application/json")],
        vec![b' '; 4096],
    )
    .await
    .expect_error(StatusCode::PAYLOAD_TOO_LARGE);

    let small = json!({ "channel": "news", "data": { "type": "x" } });
    node.post("/api/publish", Some(node.api_key()), &small)
        .await
        .expect_status(StatusCode::OK);
}

#[tokio::test]
async fn a_body_over_the_limit_without_a_length_gets_413() {
    let node = TestNode::start_with(|config| config.limits.max_request_body_bytes = 1024).await;
    let mut tcp = TcpStream::connect(node.http_addr()).await.expect("connect");
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        node.http_addr(),
        node.api_key()
    );
    tcp.write_all(head.as_bytes()).await.expect("send head");
    let chunk = vec![b' '; 512];
    for _ in 0..4 {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        if tcp.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let answer = read_answer(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""status":"error""#), "{answer}");
}

/// Reads an HTTP answer until the server has sent its head and some body, or closed.
async fn read_answer(tcp: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(read)) => {
                answer.extend_from_slice(&buffer[..read]);
                let text = String::from_utf8_lossy(&answer);
                if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
                    break;
                }
            }
            Err(_) => panic!(
                "no answer in time; so far: {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_slow_body_gets_408_after_the_request_timeout_and_sockets_outlive_it() {
    let timeout = Duration::from_millis(300);
    let node = TestNode::start_with(move |config| {
        config.limits.http_request_timeout = timeout;
        config.limits.heartbeat = HEARTBEAT;
    })
    .await;
    let mut socket = connected(&node, "/ws?channel=news", &node.token("1", "alice", &[])).await;

    let mut tcp = TcpStream::connect(node.http_addr()).await.expect("connect");
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"channel\":",
        node.http_addr(),
        node.api_key()
    );
    let sent = Instant::now();
    tcp.write_all(head.as_bytes()).await.expect("send a part");
    // ... and never the rest of the body.
    let answer = read_answer(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""status":"error""#), "{answer}");
    assert!(
        sent.elapsed() >= timeout,
        "answered after {:?}",
        sent.elapsed()
    );

    // The socket opened before is still served, well past the request timeout: heartbeats
    // keep coming, and it answers.
    for _ in 0..3 {
        match socket.next_frame(TIMEOUT).await {
            Some(Frame::Text(text)) => assert_eq!(text, r#"{"type":"heartbeat"}"#),
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
    assert!(sent.elapsed() > timeout);
    socket.send_text("ping").await;
    loop {
        match socket.next_frame(TIMEOUT).await {
            Some(Frame::Text(text)) if text == "pong" => break,
            Some(Frame::Text(_heartbeat)) => continue,
            other => panic!("expected pong, got {other:?}"),
        }
    }
}
