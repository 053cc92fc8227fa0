//! Append-many: one transaction, all or none; seqs in batch order; idempotency keys that answer
//! the event held already (also one replicated from a peer, and after a restart), refuse a
//! different event under a held key, and never publish twice from concurrent retries.

use std::sync::{Arc, Mutex};

use super::tests::open;
use super::*;
use crate::event::{ChannelName, Event, EventDraft, Hlc, IdempotencyKey, SharedEvent};

#[derive(Default)]
struct Recorder(Mutex<Vec<u64>>);

impl CommitSink for Recorder {
    fn committed(&self, events: &[SharedEvent]) {
        self.0.lock().unwrap().extend(events.iter().map(|e| e.seq));
    }
}

fn draft(channel: &str, n: u64, key: Option<&str>) -> EventDraft {
    EventDraft {
        channel: ChannelName::new(channel).unwrap(),
        kind: "item".into(),
        payload: format!("{{\"type\":\"item\",\"n\":{n}}}"),
        users: None,
        idempotency_key: key.map(|k| IdempotencyKey::new(k).unwrap()),
    }
}

fn count(dir: &std::path::Path) -> i64 {
    let connection = rusqlite::Connection::open(dir.join("herald.db")).unwrap();
    connection
        .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_batch_gets_consecutive_seqs_in_its_order() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let store = open(dir.path(), recorder.clone());
    store.append(draft("feed", 0, None)).await.unwrap();
    let drafts: Vec<EventDraft> = (1..=5).map(|n| draft("feed", n, None)).collect();
    let appended = store.append_many(drafts).await.unwrap();
    let seqs: Vec<u64> = appended.iter().map(|a| a.event.seq).collect();
    assert_eq!(seqs, [2, 3, 4, 5, 6]);
    for (index, one) in appended.iter().enumerate() {
        assert!(!one.replayed);
        assert_eq!(
            one.position.get(store.origin()),
            index as u64 + 2,
            "covers it"
        );
        assert_eq!(
            one.event.payload,
            format!("{{\"type\":\"item\",\"n\":{}}}", index + 1)
        );
    }
    assert_eq!(*recorder.0.lock().unwrap(), [1, 2, 3, 4, 5, 6]);
    store.close().await;
}

#[tokio::test]
async fn a_failing_event_rolls_back_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let store = open(dir.path(), recorder.clone());
    store.append(draft("feed", 0, None)).await.unwrap();
    {
        let connection = rusqlite::Connection::open(dir.path().join("herald.db")).unwrap();
        connection
            .execute_batch(
                "CREATE TRIGGER refuse_13 BEFORE INSERT ON events
                 WHEN NEW.payload LIKE '%\"n\":13}' BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
    }
    let drafts: Vec<EventDraft> = (11..=15).map(|n| draft("feed", n, None)).collect();
    assert!(store.append_many(drafts).await.is_err());
    assert_eq!(count(dir.path()), 1, "none of the batch is stored");
    assert_eq!(*recorder.0.lock().unwrap(), [1], "none of it is handed on");
    // The writer goes on, and seqs stay gap-free.
    let appended = store
        .append_many(vec![draft("feed", 20, None), draft("feed", 21, None)])
        .await
        .unwrap();
    assert_eq!(appended[0].event.seq, 2);
    assert_eq!(appended[1].event.seq, 3);
    store.close().await;
}

#[tokio::test]
async fn a_held_key_answers_its_event_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let store = open(dir.path(), recorder.clone());
    let first = store
        .append_many(vec![draft("feed", 1, Some("k1")), draft("feed", 2, None)])
        .await
        .unwrap();
    let again = store
        .append_many(vec![
            draft("feed", 1, Some("k1")),
            draft("feed", 3, Some("k3")),
        ])
        .await
        .unwrap();
    assert!(again[0].replayed);
    assert_eq!(again[0].event.id, first[0].event.id);
    assert_eq!(again[0].event.seq, 1);
    assert!(again[0].position.covers(store.origin(), 1));
    assert!(!again[1].replayed);
    assert_eq!(again[1].event.seq, 3);
    // A single append with a key goes the same way.
    let single = store.append(draft("feed", 3, Some("k3"))).await.unwrap();
    assert_eq!(single.event.id, again[1].event.id);
    // The same key on another channel is another event.
    let other = store.append(draft("other", 1, Some("k1"))).await.unwrap();
    assert_ne!(other.event.id, first[0].event.id);
    assert_eq!(*recorder.0.lock().unwrap(), [1, 2, 3, 4]);
    store.close().await;

    // Keys are in the database: they hold after a restart.
    let store = open(dir.path(), Arc::new(Recorder::default()));
    let after = store.append(draft("feed", 1, Some("k1"))).await.unwrap();
    assert_eq!(after.event.id, first[0].event.id);
    assert_eq!(count(dir.path()), 4);
    store.close().await;
}

#[tokio::test]
async fn a_held_key_with_another_event_refuses_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Arc::new(Recorder::default()));
    let first = store.append(draft("feed", 1, Some("k"))).await.unwrap();
    let error = store
        .append_many(vec![draft("feed", 5, None), draft("feed", 2, Some("k"))])
        .await
        .unwrap_err();
    match error {
        StoreError::IdempotencyConflict {
            index,
            key,
            existing,
        } => {
            assert_eq!((index, key.as_str()), (1, "k"));
            assert_eq!(existing, Some(first.event.id));
        }
        other => panic!("unexpected {other:?}"),
    }
    let error = store
        .append_many(vec![
            draft("feed", 6, Some("j")),
            draft("feed", 7, Some("j")),
        ])
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        StoreError::IdempotencyConflict {
            index: 1,
            existing: None,
            ..
        }
    ));
    assert_eq!(count(dir.path()), 1, "neither batch stored anything");
    store.close().await;
}

#[tokio::test]
async fn concurrent_retries_on_one_node_publish_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Arc::new(Recorder::default()));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append_many(vec![draft("feed", 1, Some("same"))])
                .await
                .unwrap()[0]
                .event
                .id
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap());
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(count(dir.path()), 1);
    store.close().await;
}

#[tokio::test]
async fn a_key_replicated_from_a_peer_answers_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Arc::new(Recorder::default()));
    let remote = Arc::new(Event {
        origin: crate::event::NodeId::new("n2.x").unwrap(),
        seq: 1,
        id: uuid::Uuid::new_v4(),
        hlc: Hlc::from_parts(1_000, 0),
        channel: ChannelName::new("feed").unwrap(),
        kind: "item".into(),
        payload: "{\"type\":\"item\",\"n\":1}".into(),
        users: None,
        ephemeral: false,
        idempotency_key: Some(IdempotencyKey::new("k").unwrap()),
    });
    store.apply_remote(vec![Arc::clone(&remote)]).await.unwrap();
    let retried = store.append(draft("feed", 1, Some("k"))).await.unwrap();
    assert_eq!(retried.event.id, remote.id);
    assert_eq!(retried.event.origin, remote.origin);
    assert!(retried.position.covers(&remote.origin, 1));
    assert_eq!(count(dir.path()), 1);
    store.close().await;
}
