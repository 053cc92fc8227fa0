//! Store behaviour: group commit answers, gap-free seqs, idempotent remote applies, holding
//! back events behind a gap, and materialized state that does not depend on arrival order.

use std::sync::{Arc, Mutex};

use super::*;
use crate::event::{ChannelName, Event, EventDraft, Hlc, HybridClock, NodeId, SharedEvent};

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, u64)>>);

impl CommitSink for Recorder {
    fn committed(&self, events: &[SharedEvent]) {
        let mut seen = self.0.lock().unwrap();
        seen.extend(events.iter().map(|e| (e.origin.to_string(), e.seq)));
    }
}

/// A store in `dir` with no retention, handing commits to `sink` (shared by the store's test
/// modules).
pub(super) fn open(dir: &std::path::Path, sink: Arc<dyn CommitSink>) -> Store {
    let mut options = StoreOptions::in_dir(dir);
    options.sync = SyncMode::Normal;
    // These tests stamp remote events in 1970: keep them.
    options.retention = RetentionPolicy::unlimited();
    let store = Store::open(
        &options,
        NodeId::new("n1").unwrap(),
        Arc::new(HybridClock::new()),
        sink,
    )
    .unwrap();
    // No peers: nothing can hold more of this store's origin than it does.
    store.own_fence().open();
    store
}

pub(super) fn draft(n: u64) -> EventDraft {
    EventDraft {
        channel: ChannelName::new("feed").unwrap(),
        kind: "item".into(),
        payload: format!("{{\"type\":\"item\",\"n\":{n}}}"),
        users: None,
        idempotency_key: None,
    }
}

/// Event `seq` of `origin` on channel `feed`, stamped at `1000 + seq` ms.
pub(super) fn remote(origin: &str, seq: u64) -> Event {
    Event {
        origin: NodeId::new(origin).unwrap(),
        seq,
        id: uuid::Uuid::new_v4(),
        hlc: Hlc::from_parts(1_000 + seq, 0),
        channel: ChannelName::new("feed").unwrap(),
        kind: "item".into(),
        payload: format!("{{\"type\":\"item\",\"seq\":{seq}}}"),
        users: None,
        ephemeral: false,
        idempotency_key: None,
    }
}

#[tokio::test]
async fn concurrent_appends_get_gap_free_seqs_in_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let store = open(dir.path(), recorder.clone());
    let mut tasks = Vec::new();
    for n in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.append(draft(n)).await.unwrap().event.seq
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    let dispatched: Vec<u64> = recorder.0.lock().unwrap().iter().map(|(_, s)| *s).collect();
    assert_eq!(
        dispatched,
        (1..=200).collect::<Vec<u64>>(),
        "the sink sees log order"
    );
    store.close().await;
}

#[tokio::test]
async fn remote_events_are_idempotent_and_held_back_behind_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let store = open(dir.path(), recorder.clone());

    let applied = store
        .apply_remote(vec![remote("n2.x", 1).into(), remote("n2.x", 3).into()])
        .await
        .unwrap();
    assert_eq!(applied.position.get(&NodeId::new("n2.x").unwrap()), 1);
    assert_eq!(applied.gaps, vec![(NodeId::new("n2.x").unwrap(), 2, 3)]);
    assert_eq!(recorder.0.lock().unwrap().len(), 1, "seq 3 is held back");

    let applied = store
        .apply_remote(vec![remote("n2.x", 2).into(), remote("n2.x", 1).into()])
        .await
        .unwrap();
    assert_eq!(applied.position.get(&NodeId::new("n2.x").unwrap()), 3);
    assert!(applied.gaps.is_empty());
    assert_eq!(applied.inserted, 1, "seq 1 again is ignored");
    let dispatched: Vec<u64> = recorder.0.lock().unwrap().iter().map(|(_, s)| *s).collect();
    assert_eq!(
        dispatched,
        vec![1, 2, 3],
        "each event handed on once, in seq order"
    );
    store.close().await;
}

fn seqs_of(recorder: &Recorder) -> Vec<u64> {
    recorder.0.lock().unwrap().iter().map(|(_, s)| *s).collect()
}

#[tokio::test]
async fn in_order_events_pass_straight_through_and_a_gap_still_holds_back() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let store = open(dir.path(), recorder.clone());
    let n2 = NodeId::new("n2.x").unwrap();
    let apply = |seqs: &[u64]| {
        let events: Vec<SharedEvent> = seqs.iter().map(|&s| remote("n2.x", s).into()).collect();
        let store = store.clone();
        async move { store.apply_remote(events).await.unwrap() }
    };
    apply(&[1, 2]).await; // walked: the origin becomes known
    let applied = apply(&[3, 4]).await; // in order: no walk
    assert_eq!(applied.position.get(&n2), 4);
    let applied = apply(&[5, 7]).await;
    assert_eq!(applied.position.get(&n2), 5, "5 is next, 7 is behind a gap");
    assert_eq!(applied.gaps, vec![(n2.clone(), 6, 7)]);
    let applied = apply(&[8]).await;
    assert_eq!(applied.position.get(&n2), 5, "8 is held back too");
    assert_eq!(seqs_of(&recorder), vec![1, 2, 3, 4, 5]);
    let applied = apply(&[6, 9]).await;
    assert_eq!(applied.position.get(&n2), 9);
    assert!(applied.gaps.is_empty());
    assert_eq!(seqs_of(&recorder), (1..=9).collect::<Vec<u64>>());
    store.close().await;
}

#[tokio::test]
async fn events_held_back_before_a_restart_are_handed_on_when_the_gap_fills() {
    let dir = tempfile::tempdir().unwrap();
    let n2 = NodeId::new("n2.x").unwrap();
    {
        let store = open(dir.path(), Arc::new(Recorder::default()));
        store
            .apply_remote(vec![remote("n2.x", 1).into(), remote("n2.x", 3).into()])
            .await
            .unwrap();
        store.close().await;
    }
    let recorder = Arc::new(Recorder::default());
    let store = open(dir.path(), recorder.clone());
    let applied = store
        .apply_remote(vec![remote("n2.x", 2).into()])
        .await
        .unwrap();
    assert_eq!(
        applied.position.get(&n2),
        3,
        "3 was stored before the restart"
    );
    assert_eq!(seqs_of(&recorder), vec![2, 3]);
    store.close().await;
}

#[tokio::test]
async fn a_reopened_store_keeps_its_origin_and_continues_its_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Arc::new(Recorder::default()));
    let origin = store.origin().clone();
    store.append(draft(1)).await.unwrap();
    store.close().await;
    let store = open(dir.path(), Arc::new(Recorder::default()));
    assert_eq!(store.origin(), &origin);
    assert_eq!(store.append(draft(2)).await.unwrap().event.seq, 2);
    store.close().await;
}

/// A restored backup: the store's own events past the copy are held by a peer only. A publish
/// waits until they are back and is numbered after them, instead of reusing their seqs.
#[tokio::test]
async fn a_restored_store_numbers_its_events_after_what_a_peer_holds_of_its_origin() {
    let live = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let store = open(live.path(), Arc::new(Recorder::default()));
    for n in 1..=3 {
        store.append(draft(n)).await.unwrap();
    }
    store.close().await;
    std::fs::copy(
        live.path().join("herald.db"),
        backup.path().join("herald.db"),
    )
    .unwrap();
    let store = open(live.path(), Arc::new(Recorder::default()));
    let mut later = Vec::new();
    for n in 4..=5 {
        later.push(store.append(draft(n)).await.unwrap().event);
    }
    store.close().await;

    let mut options = StoreOptions::in_dir(backup.path());
    options.sync = SyncMode::Normal;
    options.retention = RetentionPolicy::unlimited();
    let restored = Store::open(
        &options,
        NodeId::new("n1").unwrap(),
        Arc::new(HybridClock::new()),
        Arc::new(Recorder::default()),
    )
    .unwrap();
    let fence = Arc::clone(restored.own_fence());
    assert!(
        fence.check().is_err(),
        "an existing database waits to hear from peers"
    );
    // The backplane heard a peer that holds seq 5 of this origin.
    fence.set_floor(5);
    fence.open();
    let refused = fence.check().unwrap_err();
    assert_eq!((refused.held, refused.floor), (3, 5));
    let publish = {
        let restored = restored.clone();
        tokio::spawn(async move { restored.append(draft(6)).await })
    };
    restored.apply_remote(later).await.unwrap();
    let appended = publish.await.unwrap().unwrap();
    assert_eq!(
        appended.event.seq, 6,
        "numbered after the events pulled back"
    );
    restored.close().await;
}

fn broadcast_event(origin: &str, seq: u64, hlc: u64, id: &str) -> Event {
    Event {
        origin: NodeId::new(origin).unwrap(),
        seq,
        id: uuid::Uuid::new_v4(),
        hlc: Hlc(hlc),
        channel: ChannelName::new("broadcasts").unwrap(),
        kind: "new_broadcast".into(),
        payload: serde_json::json!({"type": "new_broadcast", "broadcast": {
            "id": id, "message": id, "message_type": "info", "created_by": "a",
            "created_by_id": "1", "created_at": "2026-01-01T00:00:00Z"}})
        .to_string(),
        users: None,
        ephemeral: false,
        idempotency_key: None,
    }
}

fn clear_event(origin: &str, seq: u64, hlc: u64) -> Event {
    Event {
        kind: "broadcast_cleared".into(),
        payload: r#"{"type":"broadcast_cleared","message":"Active broadcast has been cleared"}"#
            .into(),
        ..broadcast_event(origin, seq, hlc, "unused")
    }
}

#[tokio::test]
async fn the_active_broadcast_is_last_writer_wins_whatever_the_arrival_order() {
    let events = [
        broadcast_event("a.1", 1, 100, "first"),
        broadcast_event("b.1", 1, 300, "second"),
        clear_event("a.1", 2, 200),
    ];
    let mut outcomes = Vec::new();
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Arc::new(Recorder::default()));
        for index in order {
            store
                .apply_remote(vec![events[index].clone().into()])
                .await
                .unwrap();
        }
        let active = store
            .read(state::active_broadcast)
            .await
            .unwrap()
            .map(|b| b.id);
        outcomes.push(active);
        store.close().await;
    }
    assert!(
        outcomes.iter().all(|o| o.as_deref() == Some("second")),
        "{outcomes:?}"
    );
}

/// The writer switches `synchronous` with a statement prepared once: it must take effect
/// each time, in both directions.
#[test]
fn switching_synchronous_takes_effect_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let connection = rusqlite::Connection::open(dir.path().join("sync.db")).unwrap();
    let current = || -> i64 {
        connection
            .query_row("PRAGMA synchronous", [], |row| row.get(0))
            .unwrap()
    };
    for _ in 0..3 {
        schema::set_synchronous(&connection, SyncMode::Full).unwrap();
        assert_eq!(current(), 2, "FULL");
        schema::set_synchronous(&connection, SyncMode::Normal).unwrap();
        assert_eq!(current(), 1, "NORMAL");
    }
}

/// WAL frames (pages) the database's WAL holds now, read from another connection.
fn wal_frames(dir: &std::path::Path) -> i64 {
    let connection = rusqlite::Connection::open(dir.join("herald.db")).unwrap();
    connection
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
        .unwrap()
}

#[tokio::test]
async fn a_single_event_commit_writes_four_pages() {
    // The log's key, its channel index, the channel's counts and the log position: the
    // channel's age indexes are left alone while its age does not change, and no index on
    // (channel, time) exists (`oldest` finds a channel's oldest events without one).
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Arc::new(Recorder::default()));
    store.append(draft(0)).await.unwrap();
    let mut fewest = i64::MAX;
    for n in 1..=5 {
        let checkpoint = rusqlite::Connection::open(dir.path().join("herald.db")).unwrap();
        checkpoint
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        assert_eq!(wal_frames(dir.path()), 0);
        store.append(draft(n)).await.unwrap();
        // The least of five: a housekeeping write in between only adds.
        fewest = fewest.min(wal_frames(dir.path()));
    }
    assert_eq!(fewest, 4);
    store.close().await;
}
