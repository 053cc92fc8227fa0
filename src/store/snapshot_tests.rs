//! Snapshots: a node that lacks pruned history ends, after merging a peer's snapshot, with the
//! peer's state, floors, retained events and position; merging is idempotent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::retention::ChannelRetention;
use super::snapshot::SnapshotItem;
use super::*;
use crate::event::{ChannelName, EventDraft, HybridClock, NodeId, SharedEvent};

struct Discard;

impl CommitSink for Discard {
    fn committed(&self, _events: &[SharedEvent]) {}
}

fn open(dir: &Path, node: &str, size: u64) -> Store {
    let mut options = StoreOptions::in_dir(dir);
    options.sync = SyncMode::Normal;
    options.retention = RetentionPolicy::new(
        ChannelRetention {
            size,
            ttl: Duration::ZERO,
        },
        Vec::new(),
        0,
    );
    let store = Store::open(
        &options,
        NodeId::new(node).unwrap(),
        Arc::new(HybridClock::new()),
        Arc::new(Discard),
    )
    .unwrap();
    // No peers: nothing can hold more of this store's origin than it does.
    store.own_fence().open();
    store
}

fn draft(channel: &str, kind: &str, payload: serde_json::Value) -> EventDraft {
    EventDraft {
        channel: ChannelName::new(channel).unwrap(),
        kind: kind.into(),
        payload: payload.to_string(),
        users: None,
        idempotency_key: None,
    }
}

/// Publishes comments (some edited, one deleted), two broadcasts, acknowledgements, and filler
/// that pushes them all out of their channels' windows.
async fn populate(store: &Store, tag: &str) {
    for n in 0..20 {
        let id = format!("{tag}-c{n}");
        let comment = serde_json::json!({"type": "new_comment", "comment": {
            "id": id, "track_id": "7", "user_id": "u1", "username": "alice",
            "content": format!("comment {n}"), "timestamp": n as f64,
            "created_at": "2026-12-01T00:00:00Z", "is_edited": false, "last_edited_at": null}});
        store
            .append(draft("track:7", "new_comment", comment))
            .await
            .unwrap();
        if n % 3 == 0 {
            let edit = serde_json::json!({"type": "comment_edited", "track_id": "7",
                "comment_id": id, "content": format!("edited {n}"), "timestamp": n as f64,
                "last_edited_at": "2026-12-01T00:01:00Z"});
            store
                .append(draft("track:7", "comment_edited", edit))
                .await
                .unwrap();
        }
    }
    let delete = serde_json::json!({"type": "comment_deleted", "track_id": "7",
        "comment_id": format!("{tag}-c4")});
    store
        .append(draft("track:7", "comment_deleted", delete))
        .await
        .unwrap();
    for b in 0..2 {
        let broadcast = serde_json::json!({"type": "new_broadcast", "broadcast": {
            "id": format!("{tag}-b{b}"), "message": "hello", "message_type": "info",
            "created_by": "admin", "created_by_id": "100", "created_at": "2026-12-01T00:00:00Z"}});
        store
            .append(draft("broadcasts", "new_broadcast", broadcast))
            .await
            .unwrap();
    }
    for user in 0..5 {
        let ack = serde_json::json!({"type": "broadcast_acknowledged",
            "broadcast_id": format!("{tag}-b1"), "user_id": format!("u{user}")});
        store
            .append(draft("herald:acks", "broadcast_acknowledged", ack))
            .await
            .unwrap();
    }
    for n in 0..30 {
        for channel in ["track:7", "broadcasts", "herald:acks", "news"] {
            let filler = serde_json::json!({"type": "filler", "n": n});
            store
                .append(draft(channel, "filler", filler))
                .await
                .unwrap();
        }
    }
}

/// Everything a node's state and history consist of, as comparable text.
async fn dump(store: &Store) -> Vec<String> {
    store
        .read(|c| {
            let mut lines = Vec::new();
            for (name, sql) in [
                ("comment", "SELECT id, coalesce(author_id,''), content, is_edited, deleted, coalesce(created_hlc,0) FROM comments ORDER BY id"),
                ("broadcast", "SELECT id, message, '', '', '', hlc FROM broadcasts ORDER BY id"),
                ("active", "SELECT coalesce(broadcast_id,''), origin, '', '', '', hlc FROM active_broadcast"),
                ("ack", "SELECT broadcast_id, user_id, '', '', '', hlc FROM broadcast_acks ORDER BY 1, 2"),
                ("floor", "SELECT channel, origin, '', '', '', seq FROM channel_floors ORDER BY 1, 2"),
                ("event", "SELECT origin, channel, kind, payload, '', seq FROM events ORDER BY origin, seq"),
                ("position", "SELECT origin, '', '', '', '', contiguous FROM log_positions ORDER BY origin"),
                ("collected", "SELECT id, track_id, '', '', '', deleted_hlc FROM collected_tombstones ORDER BY id"),
            ] {
                let mut statement = c.prepare(sql)?;
                let rows = statement.query_map([], |row| {
                    let mut fields = Vec::new();
                    for i in 0..6 {
                        let value: rusqlite::types::Value = row.get(i)?;
                        fields.push(format!("{value:?}"));
                    }
                    Ok(format!("{name}: {}", fields.join(" | ")))
                })?;
                for row in rows {
                    lines.push(row?);
                }
            }
            Ok(lines)
        })
        .await
        .unwrap()
}

async fn events_in(store: &Store, channel: &str) -> usize {
    let channel = channel.to_string();
    store
        .read(move |c| {
            Ok(c.query_row(
                "SELECT count(*) FROM events WHERE channel = ?1",
                [channel],
                |r| r.get::<_, i64>(0),
            )? as usize)
        })
        .await
        .unwrap()
}

/// Waits until every deleted comment's row, and every acknowledgement of a broadcast that is
/// not the active one, was collected.
async fn collected(store: &Store) {
    const LEFT: &str = "SELECT (SELECT count(*) FROM comments WHERE deleted = 1)
        + (SELECT count(*) FROM broadcast_acks
           WHERE broadcast_id IS NOT (SELECT broadcast_id FROM active_broadcast))";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = store
            .read(|c| Ok(c.query_row(LEFT, [], |r| r.get::<_, i64>(0))?))
            .await
            .unwrap();
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "tombstones not collected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pruned_to(store: &Store, size: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for channel in ["track:7", "broadcasts", "herald:acks", "news"] {
        while events_in(store, channel).await > size {
            assert!(Instant::now() < deadline, "{channel} not pruned");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs a whole snapshot from `from` into `into`; answers how many parts it had.
async fn transfer(from: &Store, into: &Store) -> usize {
    let basis = into.snapshot_basis().await.unwrap();
    let mut items = from.snapshot(basis);
    let mut parts = 0;
    while let Some(item) = items.recv().await {
        match item {
            SnapshotItem::Part(part) => {
                into.merge_snapshot(part).await.unwrap();
                parts += 1;
            }
            SnapshotItem::End(end) => {
                into.finish_snapshot(end).await.unwrap();
                return parts;
            }
        }
    }
    panic!("the snapshot ended without its end");
}

#[tokio::test]
async fn a_new_node_ends_with_the_peers_state_history_and_position() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(a_dir.path(), "a", 10);
    populate(&a, "x").await;
    pruned_to(&a, 10).await;
    collected(&a).await;
    let b = open(b_dir.path(), "b", 10);
    let parts = transfer(&a, &b).await;
    assert!(
        parts >= 4,
        "state, floors and events come in parts ({parts})"
    );
    assert_eq!(dump(&b).await, dump(&a).await);
    assert_eq!(
        b.version_vector().await.unwrap(),
        a.version_vector().await.unwrap()
    );
    // The state survived the pruning of every event that made it.
    let comments = b
        .read(|c| state::track_comments(c, "7", 100))
        .await
        .unwrap();
    assert_eq!(comments.len(), 19);
    assert!(
        comments
            .iter()
            .any(|c| c.content == "edited 3" && c.is_edited)
    );
    assert!(comments.iter().all(|c| c.id != "x-c4"));
    let active = b.read(state::active_broadcast).await.unwrap().unwrap();
    assert_eq!(active.id, "x-b1");
    let acked = b
        .read(|c| state::is_acknowledged(c, "x-b1", "u3"))
        .await
        .unwrap();
    assert!(acked);
    // Nothing is lost that b's position covers: a resume from b's position loses nothing.
    let position = b.version_vector().await.unwrap();
    let lost = b
        .read(move |c| {
            floors::channels_lost(c, &[ChannelName::new("news").unwrap()], &[], &position)
        })
        .await
        .unwrap();
    assert!(lost.is_empty());

    // Merging the same snapshot again changes nothing.
    let before = dump(&b).await;
    let basis = snapshot::SnapshotBasis {
        since: VersionVector::new(),
        since_hlc: 0,
    };
    let mut items = a.snapshot(basis);
    while let Some(item) = items.recv().await {
        match item {
            SnapshotItem::Part(part) => b.merge_snapshot(part).await.unwrap(),
            SnapshotItem::End(end) => {
                b.finish_snapshot(end).await.unwrap();
            }
        }
    }
    assert_eq!(dump(&b).await, before);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_node_that_was_away_gets_what_changed_and_drops_what_the_peer_pruned() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(a_dir.path(), "a", 10);
    let b = open(b_dir.path(), "b", 10);
    populate(&a, "x").await;
    // b holds the first round, then is away while a publishes and prunes more.
    transfer(&a, &b).await;
    populate(&a, "y").await;
    pruned_to(&a, 10).await;
    collected(&a).await;
    collected(&b).await;
    let basis = b.snapshot_basis().await.unwrap();
    assert!(basis.since_hlc > 0);
    transfer(&a, &b).await;
    // b now knows the newer broadcast: it collects the old one's acknowledgements too.
    collected(&b).await;
    assert_eq!(dump(&b).await, dump(&a).await);
    let comments = b
        .read(|c| state::track_comments(c, "7", 100))
        .await
        .unwrap();
    assert_eq!(comments.len(), 38);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_snapshot_makes_a_node_that_missed_a_delete_drop_the_comment() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(a_dir.path(), "a", 10);
    let b = open(b_dir.path(), "b", 10);
    let comment = serde_json::json!({"type": "new_comment", "comment": {
        "id": "gone", "track_id": "9", "user_id": "u1", "username": "alice",
        "content": "soon deleted", "timestamp": 1.0,
        "created_at": "2026-12-01T00:00:00Z", "is_edited": false, "last_edited_at": null}});
    a.append(draft("track:9", "new_comment", comment))
        .await
        .unwrap();
    transfer(&a, &b).await;
    let listed = b.read(|c| state::track_comments(c, "9", 10)).await.unwrap();
    assert_eq!(listed.len(), 1);
    // b is away while a deletes the comment, collects its tombstone and prunes its events.
    let delete =
        serde_json::json!({"type": "comment_deleted", "track_id": "9", "comment_id": "gone"});
    a.append(draft("track:9", "comment_deleted", delete))
        .await
        .unwrap();
    for n in 0..12 {
        a.append(draft(
            "track:9",
            "filler",
            serde_json::json!({"type": "filler", "n": n}),
        ))
        .await
        .unwrap();
    }
    pruned_to(&a, 10).await;
    collected(&a).await;
    transfer(&a, &b).await;
    let listed = b.read(|c| state::track_comments(c, "9", 10)).await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    assert_eq!(dump(&b).await, dump(&a).await);
    a.close().await;
    b.close().await;
}

/// A sink that checks what a hub requires: each origin's events in seq order without gaps,
/// after jumps.
#[derive(Default)]
struct OrderCheck {
    state: std::sync::Mutex<(VersionVector, Vec<String>)>,
}

impl CommitSink for OrderCheck {
    fn committed(&self, events: &[SharedEvent]) {
        let mut state = self.state.lock().unwrap();
        for event in events {
            let delivered = state.0.get(&event.origin);
            if event.seq != delivered + 1 {
                let complaint = format!("{}:{} after {delivered}", event.origin, event.seq);
                state.1.push(complaint);
            }
            state.0.advance(&event.origin, event.seq);
        }
    }

    fn jumped(&self, position: &VersionVector) {
        self.state.lock().unwrap().0.merge(position);
    }
}

#[tokio::test]
async fn events_held_back_behind_a_snapshot_follow_its_jump_in_order() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = open(dirs[0].path(), "a", 10);
    for n in 0..30 {
        a.append(draft(
            "feed",
            "item",
            serde_json::json!({"type": "item", "n": n}),
        ))
        .await
        .unwrap();
    }
    pruned_to(&a, 10).await;
    // c holds a's log as of seq 30.
    let c = open(dirs[1].path(), "c", 10);
    transfer(&a, &c).await;
    // a goes on; b gets the two newest events live, before anything else: held back.
    let mut newest = Vec::new();
    for n in 30..32 {
        let appended = a
            .append(draft(
                "feed",
                "item",
                serde_json::json!({"type": "item", "n": n}),
            ))
            .await
            .unwrap();
        newest.push(appended.event);
    }
    let check = Arc::new(OrderCheck::default());
    let mut options = StoreOptions::in_dir(dirs[2].path());
    options.sync = SyncMode::Normal;
    let b = Store::open(
        &options,
        NodeId::new("b").unwrap(),
        Arc::new(HybridClock::new()),
        Arc::clone(&check) as Arc<dyn CommitSink>,
    )
    .unwrap();
    let applied = b.apply_remote(newest).await.unwrap();
    assert_eq!(applied.gaps.len(), 1, "held back behind a gap");
    // A snapshot from c (as of seq 30), then the held-back 31 and 32 follow the jump.
    transfer(&c, &b).await;
    let position = b.version_vector().await.unwrap();
    assert_eq!(position.get(a.origin()), 32);
    let (delivered, complaints) = check.state.lock().unwrap().clone();
    assert!(complaints.is_empty(), "out of order: {complaints:?}");
    assert_eq!(delivered.get(a.origin()), 32);
    for store in [a, b, c] {
        store.close().await;
    }
}
