//! Pruning: size and ttl per channel, prefix overrides, floors, the peer horizon, and a
//! database whose size follows what is retained.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::retention::{ChannelOverride, ChannelRetention};
use super::*;
use crate::event::{ChannelName, Event, EventDraft, Hlc, HybridClock, NodeId, SharedEvent};

struct Discard;

impl CommitSink for Discard {
    fn committed(&self, _events: &[SharedEvent]) {}
}

fn open(dir: &Path, retention: RetentionPolicy) -> Store {
    let mut options = StoreOptions::in_dir(dir);
    options.sync = SyncMode::Normal;
    options.retention = retention;
    let store = Store::open(
        &options,
        NodeId::new("n1").unwrap(),
        Arc::new(HybridClock::new()),
        Arc::new(Discard),
    )
    .unwrap();
    // No peers: nothing can hold more of this store's origin than it does.
    store.own_fence().open();
    store
}

fn rule(size: u64, ttl: Duration) -> ChannelRetention {
    ChannelRetention { size, ttl }
}

fn draft(channel: &str, n: usize, bytes: usize) -> EventDraft {
    EventDraft {
        channel: ChannelName::new(channel).unwrap(),
        kind: "item".into(),
        payload: format!(
            "{{\"type\":\"item\",\"n\":{n},\"pad\":\"{}\"}}",
            "x".repeat(bytes)
        ),
        users: None,
        idempotency_key: None,
    }
}

fn remote(origin: &str, seq: u64, channel: &str, millis: u64) -> SharedEvent {
    Arc::new(Event {
        origin: NodeId::new(origin).unwrap(),
        seq,
        id: uuid::Uuid::new_v4(),
        hlc: Hlc::from_parts(millis, 0),
        channel: ChannelName::new(channel).unwrap(),
        kind: "item".into(),
        payload: format!("{{\"type\":\"item\",\"seq\":{seq}}}"),
        users: None,
        ephemeral: false,
        idempotency_key: None,
    })
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Seqs of `channel`'s retained events, oldest first.
async fn retained(store: &Store, channel: &str) -> Vec<(String, u64)> {
    let channel = ChannelName::new(channel).unwrap();
    let page = store
        .read(move |c| {
            LogQuery {
                channels: vec![channel],
                prefixes: Vec::new(),
                after: VersionVector::new(),
                upto: VersionVector::new(),
                limit: 100_000,
            }
            .run_committed(c)
        })
        .await
        .unwrap();
    page.events
        .iter()
        .map(|e| (e.origin.to_string(), e.seq))
        .collect()
}

async fn lost(store: &Store, channels: &[&str], since: &VersionVector) -> Vec<String> {
    let channels: Vec<ChannelName> = channels
        .iter()
        .map(|c| ChannelName::new(c).unwrap())
        .collect();
    let since = since.clone();
    store
        .read(move |c| floors::channels_lost(c, &channels, &[], &since))
        .await
        .unwrap()
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn each_channel_keeps_its_newest_events_and_the_longest_prefix_wins() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RetentionPolicy::new(
        rule(5, Duration::ZERO),
        vec![
            ChannelOverride {
                prefix: "track:".into(),
                retention: rule(2, Duration::ZERO),
            },
            ChannelOverride {
                prefix: "track:keep".into(),
                retention: rule(0, Duration::ZERO),
            },
        ],
        0,
    );
    let store = open(dir.path(), policy);
    let mut middle = VersionVector::new();
    for n in 0..20 {
        for channel in ["news", "track:1", "track:keep1"] {
            let appended = store.append(draft(channel, n, 10)).await.unwrap();
            if n == 17 && channel == "news" {
                middle = appended.position.clone();
            }
        }
    }
    wait_for("news and track:1 pruned to their sizes", || async {
        retained(&store, "news").await.len() == 5 && retained(&store, "track:1").await.len() == 2
    })
    .await;
    assert_eq!(retained(&store, "track:keep1").await.len(), 20);
    // The newest are kept: news had seqs 1, 4, 7, ..., 58.
    let news: Vec<u64> = retained(&store, "news").await.iter().map(|e| e.1).collect();
    assert_eq!(news, vec![46, 49, 52, 55, 58]);

    let from_start = VersionVector::new();
    assert_eq!(
        lost(
            &store,
            &["news", "track:1", "track:keep1", "never"],
            &from_start
        )
        .await,
        vec!["news".to_string(), "track:1".to_string()]
    );
    // A cursor taken after the 18th round (news seq 52) lost nothing of news, but track:1 keeps
    // only its last two (seqs 56 and 59).
    assert_eq!(
        lost(&store, &["news", "track:1"], &middle).await,
        vec!["track:1".to_string()]
    );
    let now = store.version_vector().await.unwrap();
    assert!(lost(&store, &["news", "track:1"], &now).await.is_empty());
    store.close().await;
}

#[tokio::test]
async fn events_older_than_their_ttl_go_and_leave_a_floor() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RetentionPolicy::new(
        rule(0, Duration::from_secs(3600)),
        vec![ChannelOverride {
            prefix: "long:".into(),
            retention: rule(0, Duration::from_secs(30 * 86400)),
        }],
        0,
    );
    let store = open(dir.path(), policy);
    let hour = 3_600_000;
    let now = now_millis();
    let events = vec![
        remote("n2", 1, "short", now - 3 * hour),
        remote("n2", 2, "long:a", now - 3 * hour),
        remote("n2", 3, "short", now - 2 * hour),
        remote("n2", 4, "short", now - 1000),
        remote("n2", 5, "long:a", now - 1000),
    ];
    store.apply_remote(events).await.unwrap();
    wait_for("expired events pruned", || async {
        retained(&store, "short").await == vec![("n2".to_string(), 4)]
    })
    .await;
    assert_eq!(retained(&store, "long:a").await.len(), 2);
    let n2 = NodeId::new("n2").unwrap();
    let mut since = VersionVector::new();
    since.advance(&n2, 2);
    assert_eq!(
        lost(&store, &["short", "long:a"], &since).await,
        vec!["short"]
    );
    since.advance(&n2, 3);
    assert!(lost(&store, &["short", "long:a"], &since).await.is_empty());
    store.close().await;
}

#[tokio::test]
async fn events_not_yet_on_every_peer_are_kept_until_the_horizon_passes_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        RetentionPolicy::new(rule(1, Duration::ZERO), Vec::new(), 0),
    );
    // The peers hold only the first of this node's events.
    let mut peers = VersionVector::new();
    peers.advance(store.origin(), 1);
    store.set_prune_horizon(Some(peers));
    for n in 0..5 {
        store.append(draft("feed", n, 10)).await.unwrap();
    }
    wait_for("pruned up to what the peers hold", || async {
        retained(&store, "feed").await.len() == 4
    })
    .await;
    // Give the pruner several steps: nothing more may go.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(600) {
        assert_eq!(retained(&store, "feed").await.len(), 4);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut peers = VersionVector::new();
    peers.advance(store.origin(), 3);
    store.set_prune_horizon(Some(peers));
    wait_for("pruned up to the horizon", || async {
        retained(&store, "feed").await.len() == 2
    })
    .await;
    // No peer reports the origin: nothing holds it back.
    store.set_prune_horizon(Some(VersionVector::new()));
    wait_for("pruned to the size", || async {
        retained(&store, "feed").await.len() == 1
    })
    .await;
    store.close().await;
}

/// Bytes of the database and its WAL.
fn data_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn the_database_stays_near_what_is_retained() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        RetentionPolicy::new(rule(10, Duration::ZERO), Vec::new(), 0),
    );
    // 32,000 events of 1 KiB over 100 channels: 32 MiB written, 1,000 events kept.
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..4000 {
                let channel = format!("room:{}", (task * 4000 + n) % 100);
                store.append(draft(&channel, n, 1024)).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    wait_for("every room pruned to 10", || async {
        let mut total = 0;
        for room in 0..100 {
            total += retained(&store, &format!("room:{room}")).await.len();
        }
        total == 1000
    })
    .await;
    // The bound: an event of about 1.1 KiB takes at most two 4 KiB pages (its row, and an
    // overflow page: rows of a WITHOUT ROWID table over about 1 KB spill), so 1,000 retained
    // events take at most 8 MiB; 1 MiB more for the schema, indexes and statistics. While
    // open, the WAL holds at most the pages between automatic checkpoints (16 MiB); closing
    // checkpoints it away. Against the 32 MiB written: without pruning and page release the
    // files would pass either bound.
    let page = 4096;
    let closed_bound = 1000 * 2 * page + 1024 * 1024;
    let open_bound = closed_bound + crate::store::schema::WAL_CHECKPOINT_PAGES as u64 * page;
    wait_for("the files shrink under the bound", || async {
        data_bytes(dir.path()) < open_bound
    })
    .await;
    store.close().await;
    assert!(data_bytes(dir.path()) < closed_bound);
}

#[tokio::test]
async fn a_deleted_comment_is_collected_once_every_peer_holds_its_events_and_stays_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), RetentionPolicy::unlimited());
    let comment = serde_json::json!({"type": "new_comment", "comment": {
        "id": "c1", "track_id": "1", "user_id": "u1", "username": "alice", "content": "hi",
        "timestamp": 1.0, "created_at": "2026-12-01T00:00:00Z", "is_edited": false,
        "last_edited_at": null}});
    let draft_of = |kind: &str, payload: serde_json::Value| EventDraft {
        channel: ChannelName::new("track:1").unwrap(),
        kind: kind.into(),
        payload: payload.to_string(),
        users: None,
        idempotency_key: None,
    };
    let created = store
        .append(draft_of("new_comment", comment.clone()))
        .await
        .unwrap();
    let deleted = store
        .append(draft_of(
            "comment_deleted",
            serde_json::json!({"type": "comment_deleted", "track_id": "1", "comment_id": "c1"}),
        ))
        .await
        .unwrap();
    // A peer holds the creation but not the deletion yet: the tombstone stays.
    let mut peer = VersionVector::new();
    peer.advance(store.origin(), created.event.seq);
    store.set_prune_horizon(Some(peer));
    let row = |store: &Store| {
        let store = store.clone();
        async move { store.read(|c| state::comment_state(c, "c1")).await.unwrap() }
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert!(row(&store).await.is_some(), "collected too early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut peer = VersionVector::new();
    peer.advance(store.origin(), deleted.event.seq);
    store.set_prune_horizon(Some(peer));
    wait_for("the tombstone collected", || async {
        row(&store).await.is_none()
    })
    .await;
    // A late edit, or the creation replayed by a peer, does not bring it back.
    let edit = remote_event(
        "n2",
        1,
        "comment_edited",
        serde_json::json!({"type": "comment_edited", "track_id": "1", "comment_id": "c1",
            "content": "late", "timestamp": 1.0, "last_edited_at": null}),
    );
    let replayed = remote_event("n3", 1, "new_comment", comment);
    store.apply_remote(vec![edit, replayed]).await.unwrap();
    assert!(row(&store).await.is_none());
    let listed = store
        .read(|c| state::track_comments(c, "1", 10))
        .await
        .unwrap();
    assert!(listed.is_empty());
    store.close().await;
}

fn remote_event(origin: &str, seq: u64, kind: &str, payload: serde_json::Value) -> SharedEvent {
    Arc::new(Event {
        origin: NodeId::new(origin).unwrap(),
        seq,
        id: uuid::Uuid::new_v4(),
        hlc: Hlc::from_parts(now_millis(), 0),
        channel: ChannelName::new("track:1").unwrap(),
        kind: kind.into(),
        payload: payload.to_string(),
        users: None,
        ephemeral: false,
        idempotency_key: None,
    })
}

#[tokio::test]
async fn acknowledgements_of_a_superseded_broadcast_go_once_every_peer_holds_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), RetentionPolicy::unlimited());
    let broadcast = |id: &str| EventDraft {
        channel: ChannelName::new("broadcasts").unwrap(),
        kind: "new_broadcast".into(),
        payload: serde_json::json!({"type": "new_broadcast", "broadcast": {
            "id": id, "message": "hello", "message_type": "info", "created_by": "admin",
            "created_by_id": "100", "created_at": "2026-12-01T00:00:00Z"}})
        .to_string(),
        users: None,
        idempotency_key: None,
    };
    let ack = |id: &str, user: &str| EventDraft {
        channel: ChannelName::new("herald:acks").unwrap(),
        kind: "broadcast_acknowledged".into(),
        payload: serde_json::json!({"type": "broadcast_acknowledged", "broadcast_id": id,
            "user_id": user})
        .to_string(),
        users: None,
        idempotency_key: None,
    };
    store.append(broadcast("old")).await.unwrap();
    store.append(ack("old", "u1")).await.unwrap();
    let newer = store.append(broadcast("new")).await.unwrap();
    store.append(ack("new", "u2")).await.unwrap();
    let acked = |id: &'static str, user: &'static str| {
        let store = store.clone();
        async move {
            store
                .read(move |c| state::is_acknowledged(c, id, user))
                .await
                .unwrap()
        }
    };
    // A peer has not got the new broadcast yet: the old one could still be active there.
    let mut peer = VersionVector::new();
    peer.advance(store.origin(), newer.event.seq - 1);
    store.set_prune_horizon(Some(peer));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert!(acked("old", "u1").await, "collected too early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.set_prune_horizon(None);
    wait_for("the old acknowledgements collected", || async {
        !acked("old", "u1").await
    })
    .await;
    assert!(acked("new", "u2").await);
    let active = store.read(state::active_broadcast).await.unwrap().unwrap();
    assert_eq!(active.id, "new");
    store.close().await;
}

#[tokio::test]
async fn past_max_disk_the_oldest_events_go_first_whatever_peers_hold() {
    let dir = tempfile::tempdir().unwrap();
    let ceiling = 2 * 1024 * 1024;
    let store = open(
        dir.path(),
        RetentionPolicy::new(rule(0, Duration::ZERO), Vec::new(), ceiling),
    );
    // No peer holds anything: only the disk ceiling may prune.
    store.set_prune_horizon(Some({
        let mut nothing = VersionVector::new();
        nothing.advance(store.origin(), 1);
        nothing
    }));
    for n in 0..6000 {
        let channel = if n % 2 == 0 { "even" } else { "odd" };
        store.append(draft(channel, n, 900)).await.unwrap();
    }
    let used = |store: &Store| {
        let store = store.clone();
        async move { store.read(prune::used_bytes).await.unwrap() }
    };
    wait_for("the log back under max_disk", || async {
        used(&store).await <= ceiling
    })
    .await;
    // The newest events are the ones kept, on both channels; both channels lost their oldest.
    let even = retained(&store, "even").await;
    let odd = retained(&store, "odd").await;
    assert!(!even.is_empty() && !odd.is_empty());
    assert!(even.len() + odd.len() < 6000);
    assert_eq!(even.last().unwrap().1, 5999);
    assert_eq!(odd.last().unwrap().1, 6000);
    assert_eq!(
        lost(&store, &["even", "odd"], &VersionVector::new()).await,
        vec!["even".to_string(), "odd".to_string()]
    );
    store.close().await;
}
