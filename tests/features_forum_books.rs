//! Forum and book requests, published by the backend through `POST /api/publish`, on one node
//! and on three: thread events reach the thread's sockets and v2 (with `thread_id`), global
//! events reach global and v2, notifications reach their user only, book-request updates reach
//! the requesting user and the admins, and a non-admin cannot open the admin socket.

mod cluster_support;

use std::time::Duration;

use cluster_support::client::{Socket, connect, open, recv_until, send_json};
use cluster_support::{API_KEY, TestCluster};
use futures_util::StreamExt;
use herald::auth::Role;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

/// Publishes `data` on `channel` through node `node`, then a `marker` on the same channel.
async fn publish(
    cluster: &TestCluster,
    node: usize,
    channel: &str,
    data: Value,
    users: Option<Value>,
) {
    let mut body = json!({"channel": channel, "data": data});
    if let Some(users) = users {
        body["users"] = users;
    }
    let (status, answer) = cluster.post(node, "/api/publish", API_KEY, body).await;
    assert_eq!(status, 200, "{answer}");
}

fn sorted(mut types: Vec<String>) -> Vec<String> {
    types.sort();
    types
}

/// Publishes a `marker` on each channel from every node: each origin's events arrive in order,
/// so once a socket has a marker from every node it has everything published before them.
async fn publish_markers(cluster: &TestCluster, count: usize, channels: &[&str]) {
    for channel in channels {
        for node in 0..count {
            publish(cluster, node, channel, json!({"type": "marker"}), None).await;
        }
    }
}

/// The types a socket receives before `count` markers have arrived.
async fn types_until_markers(socket: &mut Socket, count: usize) -> Vec<String> {
    let mut types = Vec::new();
    let mut markers = 0;
    recv_until(socket, WAIT, |m| {
        let kind = m["type"].as_str().unwrap_or_default().to_string();
        if kind == "marker" {
            markers += 1;
            return markers == count;
        }
        types.push(kind);
        false
    })
    .await;
    types
}

async fn forum_routing(count: usize) {
    let cluster = TestCluster::start_linked(count).await;
    let node = |i: usize| i % count;
    let (u1, u2) = (cluster.token("1", &[]), cluster.token("2", &[]));
    // Routing only: the sockets do not announce their users (presence has its own tests,
    // and its joins would race the events here across nodes).
    let mut thread5 = open(
        &cluster,
        node(0),
        "/api/forum/ws/thread/5?presence=false",
        &u1,
    )
    .await;
    let mut thread6 = open(
        &cluster,
        node(1),
        "/api/forum/ws/thread/6?presence=false",
        &u2,
    )
    .await;
    let mut global = open(
        &cluster,
        node(2),
        "/api/forum/ws/global?presence=false",
        &u2,
    )
    .await;
    let mut v2 = open(&cluster, node(1), "/api/forum/ws/v2?presence=false", &u1).await;

    publish(
        &cluster,
        node(2),
        "forum:thread:5",
        json!({"type": "new_message", "message": {"id": 1}}),
        None,
    )
    .await;
    publish(
        &cluster,
        node(0),
        "forum:thread:5",
        json!({"type": "message_liked", "message_id": 1, "like_count": 1}),
        None,
    )
    .await;
    publish(
        &cluster,
        node(1),
        "forum",
        json!({"type": "new_thread_created", "thread": {"id": 7}}),
        None,
    )
    .await;
    publish(
        &cluster,
        node(0),
        "forum",
        json!({"type": "everyone_mention_disabled", "message": "disabled"}),
        None,
    )
    .await;
    publish(
        &cluster,
        node(1),
        "user:1",
        json!({"type": "forum_notification", "notification": {"id": 3}}),
        None,
    )
    .await;
    publish(
        &cluster,
        node(2),
        "user:1",
        json!({"type": "forum_notification_count", "count": 4}),
        None,
    )
    .await;
    publish_markers(
        &cluster,
        count,
        &["forum:thread:5", "forum:thread:6", "forum"],
    )
    .await;

    // Events from different nodes may interleave; compare as sorted lists.
    assert_eq!(
        sorted(types_until_markers(&mut thread5, count).await),
        vec![
            "forum_notification",
            "forum_notification_count",
            "message_liked",
            "new_message"
        ],
        "thread 5 gets its events and user 1's notifications"
    );
    assert_eq!(
        sorted(types_until_markers(&mut thread6, count).await),
        Vec::<String>::new(),
        "thread 6 sees nothing of thread 5, nor user 1's notifications"
    );
    assert_eq!(
        sorted(types_until_markers(&mut global, count).await),
        vec!["everyone_mention_disabled", "new_thread_created"]
    );

    // v2: thread events carry thread_id, global events too, and user 1's notifications.
    let mut seen: Vec<(String, Value)> = Vec::new();
    let mut markers = 0;
    recv_until(&mut v2, WAIT, |m| {
        if m["type"] == "marker" {
            markers += 1;
        } else {
            seen.push((
                m["type"].as_str().unwrap().to_string(),
                m["thread_id"].clone(),
            ));
        }
        markers == 3 * count
    })
    .await;
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    for expected in [
        "new_message",
        "message_liked",
        "new_thread_created",
        "everyone_mention_disabled",
        "forum_notification",
        "forum_notification_count",
    ] {
        assert!(kinds.contains(&expected), "v2 missed {expected}: {kinds:?}");
    }
    let new_message = seen.iter().find(|(k, _)| k == "new_message").unwrap();
    assert_eq!(new_message.1, 5, "thread events carry thread_id");

    // Typing on a thread socket reaches the thread's other sockets.
    // Typing is best effort: until the new socket's node has announced its interest in the
    // thread to the typist's node (a few ms), an indicator may be routed past it, so type
    // again (at most every 250 ms, the server's limit) until it is heard.
    let mut thread5_other = open(&cluster, node(2), "/api/forum/ws/thread/5", &u2).await;
    let deadline = std::time::Instant::now() + WAIT;
    let typing = loop {
        send_json(&mut thread5, &json!({"type": "typing", "is_typing": true})).await;
        let heard = tokio::time::timeout(
            Duration::from_secs(1),
            recv_until(&mut thread5_other, WAIT, |m| m["type"] == "user_typing"),
        )
        .await;
        if let Ok(typing) = heard {
            break typing;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "typing not heard on another node"
        );
    };
    assert_eq!(typing["thread_id"], 5);
    assert_eq!(typing["user_id"], "1");

    // Heartbeat style and JSON ping on forum sockets.
    send_json(&mut global, &json!({"type": "ping"})).await;
    recv_until(&mut global, WAIT, |m| m["type"] == "pong").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forum_routing_on_one_node() {
    forum_routing(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forum_routing_across_three_nodes() {
    forum_routing(3).await;
}

async fn book_request_routing(count: usize) {
    let cluster = TestCluster::start_linked(count).await;
    let node = |i: usize| i % count;
    let (u1, u2) = (cluster.token("1", &[]), cluster.token("2", &[]));
    let creator = cluster.token("c", &[Role::Creator]);
    let mut user1 = open(&cluster, node(0), "/ws/book-requests", &u1).await;
    let mut user2 = open(&cluster, node(1), "/ws/book-requests", &u2).await;
    let mut admin = open(&cluster, node(2), "/ws/book-requests/admin", &creator).await;

    publish(
        &cluster,
        node(1),
        "book_requests:user:1",
        json!({"type": "request_created", "request": {"id": 10}}),
        None,
    )
    .await;
    publish(
        &cluster,
        node(2),
        "book_requests:admin",
        json!({"type": "new_request", "request": {"id": 10}}),
        None,
    )
    .await;
    publish(
        &cluster,
        node(0),
        "book_requests:user:1",
        json!({"type": "status_updated", "status": "approved"}),
        None,
    )
    .await;
    publish(
        &cluster,
        node(0),
        "book_requests:admin",
        json!({"type": "request_updated", "request": {"id": 10}}),
        None,
    )
    .await;
    publish_markers(
        &cluster,
        count,
        &[
            "book_requests:user:1",
            "book_requests:user:2",
            "book_requests:admin",
        ],
    )
    .await;
    assert_eq!(
        sorted(types_until_markers(&mut user1, count).await),
        vec!["request_created", "status_updated"]
    );
    assert!(
        types_until_markers(&mut user2, count).await.is_empty(),
        "user 2 never sees user 1's requests"
    );
    assert_eq!(
        sorted(types_until_markers(&mut admin, count).await),
        vec!["new_request", "request_updated"]
    );

    // A plain user cannot open the admin socket: accepted, then closed with 1008.
    let mut refused =
        connect(&cluster.ws_url(node(0), &format!("/ws/book-requests/admin?token={u1}"))).await;
    let close = tokio::time::timeout(WAIT, refused.next()).await.unwrap();
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected a 1008 close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_request_routing_on_one_node() {
    book_request_routing(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_request_routing_across_three_nodes() {
    book_request_routing(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publish_and_channel_input_is_refused_clearly() {
    let cluster = TestCluster::start_linked(1).await;
    let cases = vec![
        (
            json!({"channel": "forum", "data": {"text": "no type"}}),
            400,
        ),
        (
            json!({"channel": "bad channel", "data": {"type": "x"}}),
            400,
        ),
        (json!({"channel": "", "data": {"type": "x"}}), 400),
        (json!({"channel": "forum", "data": "not an object"}), 400),
        (
            json!({"channel": "forum", "data": {"type": "x"}, "users": []}),
            400,
        ),
        (
            json!({"channel": "herald:acks", "data": {"type": "x"}}),
            403,
        ),
        (
            json!({"channel": "forum", "data": {"type": "x", "blob": "y".repeat(70_000)}}),
            413,
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = cluster.post(0, "/api/publish", API_KEY, body.clone()).await;
        assert_eq!(status, expected, "{body}: {answer}");
        assert_eq!(answer["status"], "error");
    }
    let (status, _) = cluster
        .post(
            0,
            "/api/publish",
            "wrong-key",
            json!({"channel": "forum", "data": {"type": "x"}}),
        )
        .await;
    assert_eq!(status, 401);
    // A user may read the history of a channel they may open, not another user's.
    let u1 = cluster.token("1", &[]);
    let forbidden = reqwest::Client::new()
        .get(format!(
            "http://{}/api/channels/user:2/history",
            cluster.http(0)
        ))
        .bearer_auth(&u1)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status().as_u16(), 403);
    let allowed = reqwest::Client::new()
        .get(format!(
            "http://{}/api/channels/user:1/history",
            cluster.http(0)
        ))
        .bearer_auth(&u1)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status().as_u16(), 200);
}
