//! Track comments on one node and on three: the seeds' checklist (create, edit, delete,
//! typing, mentions), server-side routing (a track-A client never sees track B), concurrent
//! edit and delete on different nodes converging, and bad input per endpoint.

mod cluster_support;

use std::time::Duration;

use cluster_support::client::{open, recv_until, send_json};
use cluster_support::{API_KEY, TestCluster, wait_until};
use herald::auth::Role;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

async fn comment_checklist(count: usize) {
    let cluster = TestCluster::start_linked(count).await;
    let node = |i: usize| i % count;
    let alice = cluster.token("1", &[]);
    let bob = cluster.token("2", &[]);
    let carol_token = {
        let auth = herald::auth::Authenticator::new(cluster_support::JWT_SECRET, API_KEY);
        auth.mint(
            &herald::auth::User {
                id: "3".into(),
                name: "Carol".into(),
                roles: vec![],
                creator_id: None,
            },
            Duration::from_secs(600),
        )
    };
    let team = cluster.token("9", &[Role::Team]);

    let mut alice_a = open(&cluster, node(0), "/api/ws/track/track-a", &alice).await;
    let mut bob_a = open(&cluster, node(1), "/api/ws/track/track-a", &bob).await;
    let mut bob_b = open(&cluster, node(1), "/api/ws/track/track-b", &bob).await;
    let mut carol_b = open(&cluster, node(2), "/api/ws/track/track-b", &carol_token).await;
    let mut carol_forum = open(&cluster, node(0), "/api/forum/ws/global", &carol_token).await;

    // Create (JSON) with a mention of Carol.
    let (status, created) = cluster
        .post(
            node(0),
            "/api/tracks/track-a/comments",
            &alice,
            json!({"content": "nice drop @carol", "timestamp": 42.5}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let comment_id = created["comment"]["id"].as_str().unwrap().to_string();
    for socket in [&mut alice_a, &mut bob_a] {
        let message = recv_until(socket, WAIT, |m| m["type"] == "new_comment").await;
        assert_eq!(message["track_id"], "track-a");
        assert_eq!(message["comment"]["content"], "nice drop @carol");
        assert_eq!(message["comment"]["timestamp"], 42.5);
        assert_eq!(message["comment"]["username"], "user1");
    }
    // Carol is mentioned on every socket she has, on whichever node.
    for socket in [&mut carol_b, &mut carol_forum] {
        let mention = recv_until(socket, WAIT, |m| m["type"] == "mention").await;
        assert_eq!(mention["track_id"], "track-a");
        assert_eq!(mention["from_user"], "user1");
        assert_eq!(mention["comment"]["id"], comment_id.as_str());
    }

    // Create (form) on track B: track-B clients get it, and it is the first comment they see.
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/api/tracks/track-b/comments",
            cluster.http(node(1))
        ))
        .bearer_auth(&bob)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("content=Test+comment&timestamp=0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let first_on_b = recv_until(&mut bob_b, WAIT, |m| {
        m["type"].as_str().is_some_and(|t| t.contains("comment"))
    })
    .await;
    assert_eq!(
        first_on_b["track_id"], "track-b",
        "a track-B client never sees track A"
    );
    assert_eq!(first_on_b["comment"]["content"], "Test comment");

    // Typing: delivered to the track, never stored.
    send_json(&mut bob_a, &json!({"type": "typing", "is_typing": true})).await;
    let typing = recv_until(&mut alice_a, WAIT, |m| m["type"] == "user_typing").await;
    assert_eq!(typing["track_id"], "track-a");
    assert_eq!(typing["user_id"], "2");
    assert_eq!(typing["is_typing"], true);

    // Edit: the author only.
    let url = format!("http://{}/api/comments/{comment_id}", cluster.http(node(1)));
    let client = reqwest::Client::new();
    let forbidden = client
        .put(&url)
        .bearer_auth(&bob)
        .json(&json!({"content": "hijack"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status().as_u16(), 403);
    let edited = client
        .put(&url)
        .bearer_auth(&alice)
        .json(&json!({"content": "edited drop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status().as_u16(), 200);
    let message = recv_until(&mut bob_a, WAIT, |m| m["type"] == "comment_edited").await;
    assert_eq!(message["comment_id"], comment_id.as_str());
    assert_eq!(message["content"], "edited drop");
    assert_eq!(message["is_edited"], true);
    assert!(message["last_edited_at"].is_string());
    assert_eq!(
        message["timestamp"], 42.5,
        "an edit keeps the position unless given one"
    );

    // Delete: not by another user, yes by a team member.
    let forbidden = client.delete(&url).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(forbidden.status().as_u16(), 403);
    let deleted = client.delete(&url).bearer_auth(&team).send().await.unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    let message = recv_until(&mut alice_a, WAIT, |m| m["type"] == "comment_deleted").await;
    assert_eq!(message["comment_id"], comment_id.as_str());
    assert_eq!(message["track_id"], "track-a");

    // Every node lists the same: track A empty, track B one comment; no typing in history.
    for index in 0..count {
        wait_until(WAIT, || async {
            let a = cluster
                .get(index, "/api/tracks/track-a/comments", &alice)
                .await;
            let b = cluster
                .get(index, "/api/tracks/track-b/comments", &alice)
                .await;
            a["comments"].as_array().unwrap().is_empty()
                && b["comments"].as_array().unwrap().len() == 1
        })
        .await;
        let history = cluster
            .get(index, "/api/channels/track:track-a/history", API_KEY)
            .await;
        assert!(
            history["events"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["type"] != "user_typing")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_checklist_on_one_node() {
    comment_checklist(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_checklist_across_three_nodes() {
    comment_checklist(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_and_deletes_on_different_nodes_converge() {
    let cluster = TestCluster::start_linked(3).await;
    let alice = cluster.token("1", &[]);
    let admin = cluster.token("0", &[Role::Admin]);
    let client = reqwest::Client::new();

    let mut ids = Vec::new();
    for n in 0..2 {
        let (status, created) = cluster
            .post(
                0,
                "/api/tracks/t1/comments",
                &alice,
                json!({"content": format!("original {n}")}),
            )
            .await;
        assert_eq!(status, 200);
        ids.push(created["comment"]["id"].as_str().unwrap().to_string());
    }
    cluster.wait_converged(WAIT).await;

    // Comment 0: edited on node 2 while deleted on node 3 -> deleted everywhere.
    // Comment 1: edited on nodes 1 and 2 at once -> the same winner everywhere.
    let edit0 = client
        .put(format!(
            "http://{}/api/comments/{}",
            cluster.http(1),
            ids[0]
        ))
        .bearer_auth(&alice)
        .json(&json!({"content": "edit that loses to the delete"}))
        .send();
    let delete0 = client
        .delete(format!(
            "http://{}/api/comments/{}",
            cluster.http(2),
            ids[0]
        ))
        .bearer_auth(&admin)
        .send();
    let edit1a = client
        .put(format!(
            "http://{}/api/comments/{}",
            cluster.http(0),
            ids[1]
        ))
        .bearer_auth(&alice)
        .json(&json!({"content": "edit from node 1"}))
        .send();
    let edit1b = client
        .put(format!(
            "http://{}/api/comments/{}",
            cluster.http(1),
            ids[1]
        ))
        .bearer_auth(&alice)
        .json(&json!({"content": "edit from node 2"}))
        .send();
    let (a, b, c, d) = tokio::join!(edit0, delete0, edit1a, edit1b);
    // The edit of comment 0 races the delete: if the delete reached node 2 first, the edit
    // finds no comment (404). Either way the delete must win everywhere.
    let edit0_status = a.unwrap().status().as_u16();
    assert!(
        edit0_status == 200 || edit0_status == 404,
        "edit of comment 0: {edit0_status}"
    );
    for response in [b, c, d] {
        assert!(response.unwrap().status().is_success());
    }
    cluster.wait_converged(WAIT).await;

    let mut lists = Vec::new();
    for index in 0..3 {
        lists.push(cluster.get(index, "/api/tracks/t1/comments", &alice).await["comments"].clone());
    }
    assert!(
        lists.windows(2).all(|w| w[0] == w[1]),
        "nodes disagree: {lists:?}"
    );
    let comments = lists[0].as_array().unwrap();
    assert_eq!(
        comments.len(),
        1,
        "the delete wins over the concurrent edit: {comments:?}"
    );
    assert_eq!(comments[0]["id"], ids[1].as_str());
    assert!(
        comments[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("edit from node")
    );
    assert_eq!(comments[0]["is_edited"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_comment_input_is_refused_clearly() {
    let cluster = TestCluster::start_linked(1).await;
    let alice = cluster.token("1", &[]);
    let cases: Vec<(&str, &str, Value, u16)> = vec![
        (
            "POST",
            "/api/tracks/t1/comments",
            json!({"content": ""}),
            400,
        ),
        (
            "POST",
            "/api/tracks/t1/comments",
            json!({"content": "x".repeat(2001)}),
            400,
        ),
        (
            "POST",
            "/api/tracks/t1/comments",
            json!({"content": "ok", "timestamp": -1}),
            400,
        ),
        (
            "POST",
            "/api/tracks/t1/comments",
            json!({"content": "ok", "timestamp": "soon"}),
            400,
        ),
        (
            "POST",
            "/api/tracks/bad%20track/comments",
            json!({"content": "ok"}),
            400,
        ),
        (
            "PUT",
            "/api/comments/no-such-comment",
            json!({"content": "ok"}),
            404,
        ),
        ("DELETE", "/api/comments/no-such-comment", json!({}), 404),
    ];
    let client = reqwest::Client::new();
    for (method, path, body, expected) in cases {
        let url = format!("http://{}{}", cluster.http(0), path);
        let request = match method {
            "POST" => client.post(url),
            "PUT" => client.put(url),
            _ => client.delete(url),
        };
        let response = request
            .bearer_auth(&alice)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "error", "{method} {path}: {body}");
        assert!(body["message"].is_string());
    }
    // 2000 characters of multi-byte text is within the limit.
    let (status, _) = cluster
        .post(
            0,
            "/api/tracks/t1/comments",
            &alice,
            json!({"content": "é".repeat(2000)}),
        )
        .await;
    assert_eq!(status, 200);
    // No token: 401.
    let response = client
        .post(format!("http://{}/api/tracks/t1/comments", cluster.http(0)))
        .json(&json!({"content": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}
