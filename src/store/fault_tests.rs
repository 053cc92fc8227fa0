//! Rows that cannot be decoded: skipped by every read with an error log and
//! `herald_store_undecodable_rows_total`, and walked past by the writer, never retried for ever.
//! (A full disk and a corrupted file are tested through the binary: `tests/store_faults.rs`.)

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::tests::{draft, open};
use super::*;
use crate::event::{ChannelName, Event, Hlc, NodeId, SharedEvent};

#[derive(Default)]
struct Recorder(Mutex<Vec<u64>>);

impl CommitSink for Recorder {
    fn committed(&self, events: &[SharedEvent]) {
        self.0.lock().unwrap().extend(events.iter().map(|e| e.seq));
    }
}

fn remote(seq: u64) -> SharedEvent {
    Arc::new(Event {
        origin: NodeId::new("peer").unwrap(),
        seq,
        id: uuid::Uuid::new_v4(),
        hlc: Hlc::from_parts(1_000 + seq, 0),
        channel: ChannelName::new("feed").unwrap(),
        kind: "item".into(),
        payload: format!("{{\"type\":\"item\",\"seq\":{seq}}}"),
        users: None,
        ephemeral: false,
        idempotency_key: None,
    })
}

/// A second connection on the store's file, to damage rows with.
fn raw(dir: &Path) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(dir.join("herald.db")).unwrap();
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    connection
}

fn undecodable_rows_counted() -> u64 {
    crate::telemetry::install_metrics();
    crate::telemetry::render_metrics()
        .lines()
        .find_map(|line| line.strip_prefix("herald_store_undecodable_rows_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Collects what `tracing` writes on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn an_undecodable_row_is_skipped_with_an_error_log_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Arc::new(Recorder::default()));
    for n in 1..=5 {
        store.append(draft(n)).await.unwrap();
    }
    let origin = store.origin().clone();
    store.close().await;
    let connection = raw(dir.path());
    // Seq 2: a payload that is a blob, not text. Seq 4: a channel no longer valid.
    connection
        .execute(
            "UPDATE events SET payload = X'00FF00' WHERE origin = ?1 AND seq = 2",
            [origin.as_str()],
        )
        .unwrap();
    connection
        .execute(
            "UPDATE events SET channel = 'not a channel!' WHERE origin = ?1 AND seq = 4",
            [origin.as_str()],
        )
        .unwrap();

    let before = undecodable_rows_counted();
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let (range, history) = tracing::subscriber::with_default(subscriber, || {
        // Another test's thread may have hit the log's callsites first, with no subscriber,
        // while this one was being set: have every callsite ask again, this one included.
        tracing::callsite::rebuild_interest_cache();
        let range = log::range(&connection, &origin, 0, 10, 100).unwrap();
        let history = LogQuery {
            channels: vec![ChannelName::new("feed").unwrap()],
            prefixes: Vec::new(),
            after: VersionVector::new(),
            upto: VersionVector::new(),
            limit: 100,
        }
        .run_committed(&connection)
        .unwrap();
        (range, history)
    });
    let seqs = |events: &[Event]| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&range), vec![1, 3, 5]);
    // Seq 4's channel is not "feed" any more: only seq 2 is read (and skipped) by the history.
    assert_eq!(seqs(&history.events), vec![1, 3, 5]);
    assert!(history.complete);
    let text = logs.text();
    assert!(text.contains("ERROR"), "{text}");
    assert!(
        text.contains("skipping an undecodable row of the event log"),
        "{text}"
    );
    assert!(text.contains("seq=2") && text.contains("seq=4"), "{text}");
    // Counted once per row read: twice by the range, once by the history.
    assert!(undecodable_rows_counted() >= before + 3);

    // A history page of one event at a time still gets past the bad row.
    let mut after = VersionVector::new();
    let mut paged = Vec::new();
    for _ in 0..10 {
        let page = LogQuery {
            channels: vec![ChannelName::new("feed").unwrap()],
            prefixes: Vec::new(),
            after: after.clone(),
            upto: VersionVector::new(),
            limit: 1,
        }
        .run_committed(&connection)
        .unwrap();
        for event in &page.events {
            after.advance(&event.origin, event.seq);
            paged.push(event.seq);
        }
        if page.complete {
            break;
        }
    }
    assert_eq!(paged, vec![1, 3, 5]);

    // The shipper's read goes on past a page of nothing but undecodable rows.
    let (events, scanned) = log::range_scanned(&connection, &origin, 1, 10, 1).unwrap();
    assert!(events.is_empty());
    assert_eq!(scanned, 2);
}

#[tokio::test]
async fn the_writer_walks_past_an_undecodable_row_instead_of_waiting_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let store = open(dir.path(), recorder.clone());
    let peer = NodeId::new("peer").unwrap();
    let applied = store
        .apply_remote(vec![remote(1), remote(3)])
        .await
        .unwrap();
    assert_eq!(applied.position.get(&peer), 1);
    assert_eq!(applied.gaps, vec![(peer.clone(), 2, 3)]);
    // Seq 2 arrives damaged (as if written by a version with other rules): its id is no UUID.
    raw(dir.path())
        .execute(
            "INSERT INTO events (origin, seq, id, hlc, channel, kind, payload, users)
             VALUES ('peer', 2, 'not-a-uuid', 1002, 'feed', 'item', '{}', NULL)",
            [],
        )
        .unwrap();
    let before = undecodable_rows_counted();
    let applied = store.apply_remote(vec![remote(4)]).await.unwrap();
    assert_eq!(applied.position.get(&peer), 4);
    assert!(applied.gaps.is_empty(), "{:?}", applied.gaps);
    assert_eq!(*recorder.0.lock().unwrap(), vec![1, 3, 4]);
    assert!(undecodable_rows_counted() > before);
    // Nothing is held back any more: the next apply walks nothing again.
    let applied = store.apply_remote(vec![remote(5)]).await.unwrap();
    assert_eq!(applied.position.get(&peer), 5);
    assert_eq!(*recorder.0.lock().unwrap(), vec![1, 3, 4, 5]);
    store.close().await;
}
