//! Bad input, a test per row of DESIGN.md section 8 (tokens and roles are in `auth.rs`, the
//! client that never reads in `slow_client.rs`): broadcast bodies, socket frames, unknown ids,
//! channel names, publish bodies and cursors. Every refusal is a 4xx with
//! `{"status":"error","message":...}` or a close code, and refused input publishes nothing.

mod common;

use common::{BROADCAST_WS, TIMEOUT, TestNode, channels_path};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

// ---- broadcast bodies ----

#[tokio::test]
async fn empty_and_blank_broadcasts_are_refused() {
    let node = TestNode::start().await;
    let admin = node.admin_token("100");
    let mut socket = node.broadcast_socket(&admin).await;
    for body in [
        json!({ "message": "", "type": "info" }),
        json!({ "message": "   \n\t ", "type": "info" }),
        json!({ "type": "info" }),
        json!({ "message": null, "type": "info" }),
    ] {
        let message = node
            .post("/api/creator/broadcast", Some(&admin), &body)
            .await
            .expect_error(StatusCode::BAD_REQUEST);
        assert!(message.contains("empty"), "{body}: {message}");
    }
    assert_refused_broadcasts_published_nothing(&node, &admin, &mut socket).await;
}

#[tokio::test]
async fn broadcasts_longer_than_280_characters_are_refused() {
    let node = TestNode::start().await;
    let admin = node.admin_token("100");
    let mut socket = node.broadcast_socket(&admin).await;
    for text in [
        "a".repeat(281),
        "é".repeat(281),
        "🎉".repeat(281),
        "x".repeat(10_000),
    ] {
        let body = json!({ "message": text, "type": "info" });
        let message = node
            .post("/api/creator/broadcast", Some(&admin), &body)
            .await
            .expect_error(StatusCode::BAD_REQUEST);
        assert!(message.contains("too long"), "{message}");
    }
    assert_refused_broadcasts_published_nothing(&node, &admin, &mut socket).await;
}

#[tokio::test]
async fn exactly_280_characters_are_accepted_counting_unicode_scalar_values() {
    let node = TestNode::start().await;
    let admin = node.admin_token("100");
    let mut socket = node.broadcast_socket(&admin).await;
    // 280 characters, 1,120 bytes in UTF-8; then a mix of one- to four-byte characters.
    let mixed: String = "aé€🎉".repeat(70);
    for text in ["a".repeat(280), "🎉".repeat(280), mixed] {
        assert_eq!(text.chars().count(), 280);
        let created = node.create_broadcast(&admin, &text, "info").await;
        assert_eq!(created["character_count"], 280, "{} bytes", text.len());
        let received = socket.recv_type("new_broadcast", TIMEOUT).await;
        assert_eq!(received["broadcast"]["message"], text.as_str());
    }
}

#[tokio::test]
async fn unknown_broadcast_types_and_malformed_bodies_are_refused() {
    let node = TestNode::start().await;
    let admin = node.admin_token("100");
    let mut socket = node.broadcast_socket(&admin).await;
    for body in [
        json!({ "message": "hi", "type": "urgent" }),
        json!({ "message": "hi", "type": "" }),
        json!({ "message": "hi", "type": 3 }),
        json!({ "message": 42, "type": "info" }),
        json!({ "message": ["hi"], "type": "info" }),
        // Not an object, though serde would read it field by field into the body struct.
        json!(["hi"]),
        json!(["hi", "info"]),
    ] {
        node.post("/api/creator/broadcast", Some(&admin), &body)
            .await
            .expect_error(StatusCode::BAD_REQUEST);
    }
    let bearer = format!("Bearer {admin}");
    for (content_type, body) in [
        ("application/json", &b"{not json"[..]),
        ("application/json", &b""[..]),
        ("text/plain", &br#"{"message":"hi","type":"info"}"#[..]),
    ] {
        node.post_raw(
            "/api/creator/broadcast",
            &[("authorization", &bearer), ("content-type", content_type)],
            body.to_vec(),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    }
    assert_refused_broadcasts_published_nothing(&node, &admin, &mut socket).await;
}

/// No refused broadcast reached the log: nothing is active, and the next message on the
/// socket is the next valid broadcast.
async fn assert_refused_broadcasts_published_nothing(
    node: &TestNode,
    admin: &str,
    socket: &mut common::WsClient,
) {
    assert_eq!(node.active_broadcast(admin).await, Value::Null);
    let valid = node.create_broadcast(admin, "valid", "info").await;
    let next = socket.recv_json(TIMEOUT).await;
    assert_eq!(next["type"], "new_broadcast", "{next}");
    assert_eq!(next["broadcast"]["id"], valid["id"]);
}

// ---- unknown ids ----

#[tokio::test]
async fn acknowledging_an_unknown_broadcast_is_404_over_rest() {
    let node = TestNode::start().await;
    let alice = node.token("1", "alice", &[]);
    for id in [
        "no-such-id",
        "00000000-0000-0000-0000-000000000000",
        &"x".repeat(500),
    ] {
        let message = node
            .post(
                "/api/creator/broadcast/acknowledge",
                Some(&alice),
                &json!({ "broadcast_id": id }),
            )
            .await
            .expect_error(StatusCode::NOT_FOUND);
        assert_eq!(message, "Broadcast not found");
    }
    for body in [
        json!({}),
        json!({ "broadcast_id": "" }),
        json!({ "broadcast_id": 7 }),
        json!(["no-such-id"]),
    ] {
        node.post("/api/creator/broadcast/acknowledge", Some(&alice), &body)
            .await
            .expect_error(StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn acknowledging_an_unknown_broadcast_is_an_error_message_over_the_socket() {
    let node = TestNode::start().await;
    let mut socket = node.broadcast_socket(&node.token("1", "alice", &[])).await;
    socket
        .send_json(&json!({ "type": "acknowledge_broadcast", "broadcast_id": "no-such-id" }))
        .await;
    let reply = socket.recv_json(TIMEOUT).await;
    assert_eq!(
        reply,
        json!({ "type": "error", "message": "Broadcast not found" })
    );
    socket
        .send_json(&json!({ "type": "acknowledge_broadcast" }))
        .await;
    let reply = socket.recv_json(TIMEOUT).await;
    assert_eq!(reply["type"], "error");
    socket
        .send_json(&json!({ "type": "no_such_message" }))
        .await;
    assert_eq!(socket.recv_json(TIMEOUT).await["type"], "error");
    // Still open and answering.
    socket.send_text("ping").await;
    assert_eq!(socket.recv_text(TIMEOUT).await, "pong");
}

// ---- socket frames ----

#[tokio::test]
async fn invalid_json_frames_get_an_error_and_the_socket_stays_open() {
    let node = TestNode::start().await;
    let token = node.token("1", "alice", &[]);
    let mut broadcast = node.broadcast_socket(&token).await;
    let mut generic = node.channel_socket(&["forum"], &token).await;
    for socket in [&mut broadcast, &mut generic] {
        for text in ["{not json", "{\"type\":", "pong?", ""] {
            socket.send_text(text).await;
            let reply = socket.recv_json(TIMEOUT).await;
            assert_eq!(
                reply,
                json!({ "type": "error", "message": "invalid JSON" }),
                "after {text:?}"
            );
        }
        for text in ["[1,2]", "\"text\"", "42", "{\"no_type\":true}"] {
            socket.send_text(text).await;
            let reply = socket.recv_json(TIMEOUT).await;
            assert_eq!(reply["type"], "error", "after {text:?}: {reply}");
        }
        socket.send_json(&json!({ "type": "ping" })).await;
        assert_eq!(socket.recv_json(TIMEOUT).await, json!({ "type": "pong" }));
    }
    // Still subscribed, too.
    node.publish("forum", json!({ "type": "new_message" }))
        .await;
    assert_eq!(generic.recv_json(TIMEOUT).await["type"], "new_message");
}

#[tokio::test]
async fn binary_frames_close_the_socket_with_1003() {
    let node = TestNode::start().await;
    let token = node.token("1", "alice", &[]);
    for path in [BROADCAST_WS.to_string(), channels_path(&["forum"], None)] {
        let mut socket = node.ws(&path, Some(&token)).await;
        socket.recv_type("connected", TIMEOUT).await;
        socket.send_binary(b"{\"type\":\"ping\"}".to_vec()).await;
        socket.expect_close(1003, TIMEOUT).await;
    }
    common::wait_until("closed sockets leave the hub", TIMEOUT, || async {
        node.hub_counts().connections == 0
    })
    .await;
}

#[tokio::test]
async fn oversized_frames_close_the_socket_with_1009() {
    const LIMIT: usize = 1024;
    let node = TestNode::start_with(|config| config.limits.max_client_message_bytes = LIMIT).await;
    let token = node.token("1", "alice", &[]);
    for path in [BROADCAST_WS.to_string(), channels_path(&["forum"], None)] {
        let mut socket = node.ws(&path, Some(&token)).await;
        socket.recv_type("connected", TIMEOUT).await;

        // At the limit: answered.
        let padding = "p".repeat(LIMIT - r#"{"type":"ping","pad":""}"#.len());
        let at_limit = json!({ "type": "ping", "pad": padding }).to_string();
        assert_eq!(at_limit.len(), LIMIT);
        socket.send_text(&at_limit).await;
        assert_eq!(socket.recv_json(TIMEOUT).await, json!({ "type": "pong" }));

        // One byte over: closed.
        let over = json!({ "type": "ping", "pad": format!("{padding}p") }).to_string();
        socket.send_text(&over).await;
        socket.expect_close(1009, TIMEOUT).await;
    }

    // The limit is on the whole message: frames each under it do not add up to more.
    let mut socket = node.channel_socket(&["forum"], &token).await;
    let half = vec![b' '; LIMIT / 2 + 1];
    socket
        .send(Message::Frame(WsFrame::message(
            half.clone(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await;
    socket
        .send(Message::Frame(WsFrame::message(
            half,
            OpCode::Data(Data::Continue),
            true,
        )))
        .await;
    socket.expect_close(1009, TIMEOUT).await;
}

#[tokio::test]
async fn text_frames_that_are_not_utf8_close_the_socket_with_1007() {
    let node = TestNode::start().await;
    let mut socket = node
        .channel_socket(&["forum"], &node.token("1", "alice", &[]))
        .await;
    let invalid = vec![b'{', 0xff, 0xfe, b'}'];
    socket
        .send(Message::Frame(WsFrame::message(
            invalid,
            OpCode::Data(Data::Text),
            true,
        )))
        .await;
    socket.expect_close(1007, TIMEOUT).await;
}

#[tokio::test]
async fn connections_beyond_max_connections_are_refused_with_1013() {
    let node = TestNode::start_with(|config| config.limits.max_connections = 2).await;
    let token = node.token("1", "alice", &[]);
    let first = node.broadcast_socket(&token).await;
    let _second = node.channel_socket(&["forum"], &token).await;

    let mut third = node.ws(BROADCAST_WS, Some(&token)).await;
    let reason = third.expect_close(1013, TIMEOUT).await;
    assert!(reason.contains("capacity"), "{reason}");

    // Room again once a client leaves.
    first.close().await;
    common::wait_until("the first client is gone", TIMEOUT, || async {
        node.hub_counts().connections == 1
    })
    .await;
    let mut again = node.ws(BROADCAST_WS, Some(&token)).await;
    assert_eq!(again.recv_json(TIMEOUT).await["type"], "connected");
}

// ---- channel names ----

#[tokio::test]
async fn invalid_channel_names_are_refused_by_publish_sockets_and_history() {
    let node = TestNode::start().await;
    let token = node.token("1", "alice", &[]);
    let invalid = [
        "has space",
        "",
        "slash/no",
        "ümlaut",
        &"c".repeat(129),
        "a?b",
    ];
    for name in invalid {
        let body = json!({ "channel": name, "data": { "type": "new_message" } });
        node.post("/api/publish", Some(node.api_key()), &body)
            .await
            .expect_error(StatusCode::BAD_REQUEST);
        let mut socket = node.ws(&channels_path(&[name], None), Some(&token)).await;
        let reason = socket.expect_close(1008, TIMEOUT).await;
        assert_eq!(reason, "invalid channel name", "{name:?}");
    }
    for name in ["has%20space", "%C3%BCmlaut", &"c".repeat(129)] {
        node.get(
            &format!("/api/channels/{name}/history"),
            Some(node.api_key()),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    }
    // The longest valid name works.
    let longest = "c".repeat(128);
    node.publish(&longest, json!({ "type": "new_message" }))
        .await;

    // At most 64 channels on one socket.
    let many: Vec<String> = (0..65).map(|n| format!("c{n}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let mut socket = node.ws(&channels_path(&many, None), Some(&token)).await;
    assert_eq!(
        socket.expect_close(1008, TIMEOUT).await,
        "too many channels"
    );
    let mut socket = node
        .ws(&channels_path(&many[..64], None), Some(&token))
        .await;
    assert_eq!(socket.recv_json(TIMEOUT).await["type"], "connected");

    // A generic socket must name at least one channel.
    let mut socket = node.ws("/ws", Some(&token)).await;
    let reason = socket.expect_close(1008, TIMEOUT).await;
    assert!(reason.contains("channel"), "{reason}");
}

#[tokio::test]
async fn publishing_to_an_internal_channel_is_forbidden() {
    let node = TestNode::start().await;
    for channel in ["herald:acks", "herald:anything"] {
        let body = json!({ "channel": channel, "data": { "type": "broadcast_acknowledged" } });
        node.post("/api/publish", Some(node.api_key()), &body)
            .await
            .expect_error(StatusCode::FORBIDDEN);
    }
}

// ---- publish bodies ----

#[tokio::test]
async fn malformed_publish_bodies_are_refused_with_400() {
    let node = TestNode::start().await;
    let mut listener = node
        .channel_socket(&["forum"], &node.token("1", "alice", &[]))
        .await;
    for body in [
        json!({ "data": { "type": "new_message" } }),
        json!({ "channel": 5, "data": { "type": "new_message" } }),
        json!({ "channel": "forum" }),
        json!({ "channel": "forum", "data": null }),
        json!({ "channel": "forum", "data": "text" }),
        json!({ "channel": "forum", "data": [1, 2] }),
        json!({ "channel": "forum", "data": {} }),
        json!({ "channel": "forum", "data": { "text": "no type" } }),
        json!({ "channel": "forum", "data": { "type": "" } }),
        json!({ "channel": "forum", "data": { "type": 7 } }),
        json!({ "channel": "forum", "data": { "type": "x".repeat(129) } }),
        json!({ "channel": "forum", "data": { "type": "t" }, "users": [] }),
        json!({ "channel": "forum", "data": { "type": "t" }, "users": "1" }),
        json!({ "channel": "forum", "data": { "type": "t" }, "users": [true] }),
        json!({ "channel": "forum", "data": { "type": "t" }, "users": [""] }),
        // Not an object, though serde would read it field by field into the body struct.
        json!(["forum", { "type": "new_message" }]),
    ] {
        let reply = node.post("/api/publish", Some(node.api_key()), &body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.body
        );
        reply.expect_error(StatusCode::BAD_REQUEST);
    }
    let bearer = format!("Bearer {}", node.api_key());
    node.post_raw(
        "/api/publish",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        b"{\"channel\":".to_vec(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST);

    // None of them reached the channel: the next event is the valid one.
    node.publish("forum", json!({ "type": "valid" })).await;
    assert_eq!(listener.recv_json(TIMEOUT).await["type"], "valid");
}

#[tokio::test]
async fn oversized_publish_payloads_are_refused_with_413() {
    let node = TestNode::start_with(|config| config.limits.max_payload_bytes = 4096).await;
    let mut listener = node
        .channel_socket(&["forum"], &node.token("1", "alice", &[]))
        .await;

    let over_limit =
        json!({ "channel": "forum", "data": { "type": "big", "blob": "b".repeat(5000) } });
    let message = node
        .post("/api/publish", Some(node.api_key()), &over_limit)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.contains("4096"), "{message}");

    // A body beyond the request limit (1 MiB) is refused before it is parsed.
    let huge =
        json!({ "channel": "forum", "data": { "type": "big", "blob": "b".repeat(2 << 20) } });
    node.post("/api/publish", Some(node.api_key()), &huge)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE);

    // Just under the limit is fine, and is the next thing the listener sees.
    let fits = json!({ "type": "big", "blob": "b".repeat(4000) });
    node.publish("forum", fits).await;
    assert_eq!(listener.recv_json(TIMEOUT).await["type"], "big");
}

// ---- cursors ----

#[tokio::test]
async fn invalid_cursors_are_refused() {
    let node = TestNode::start().await;
    let token = node.token("1", "alice", &[]);
    let garbage = [
        "garbage!",
        "aDJ8bjE6MQ",        // "h2|n1:1": an unknown version
        "aDF8bjE",           // "h1|n1": no seq
        "aDF8bjE6eA",        // "h1|n1:x": a seq that is not a number
        &"a".repeat(10_000), // too long
    ];
    for cursor in garbage {
        for path in [
            format!("{BROADCAST_WS}?since={cursor}"),
            channels_path(&["forum"], Some(cursor)),
        ] {
            let mut socket = node.ws(&path, Some(&token)).await;
            let reason = socket.expect_close(1008, TIMEOUT).await;
            assert_eq!(reason, "invalid cursor", "{cursor:?}");
        }
        node.get(
            &format!("/api/channels/forum/history?since={cursor}"),
            Some(node.api_key()),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    }
    for limit in ["0", "-1", "abc", "1001"] {
        node.get(
            &format!("/api/channels/forum/history?limit={limit}"),
            Some(node.api_key()),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    }
}
