//! Per-event encoding on the delivery path: rendering an event into client JSON (once per event
//! per node) and encoding and decoding cursors (once per event, and on every resume).
//!
//! `cargo bench --bench codec`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use herald::event::{ChannelName, Cursor, Event, Hlc, NodeId, VersionVector};
use herald::hub::render_event;

fn vector(origins: usize) -> VersionVector {
    (0..origins)
        .map(|index| {
            let id = NodeId::new(&format!("node-{index}")).expect("valid node id");
            (id, 1_000_000 + index as u64)
        })
        .collect()
}

fn render(c: &mut Criterion) {
    let event = Event {
        origin: NodeId::new("node-0").expect("valid node id"),
        seq: 1_000_000,
        id: uuid::Uuid::nil(),
        hlc: Hlc(1),
        channel: ChannelName::new("track:12345").expect("valid channel"),
        kind: "new_comment".into(),
        payload: r#"{"type":"new_comment","comment":{"id":991,"user":"alice","content":"nice drop at 1:32","timestamp":92.5}}"#.into(),
        users: None,
        ephemeral: false,
        idempotency_key: None,
    };
    let mut group = c.benchmark_group("render_event");
    for origins in [1usize, 3] {
        let cursor = vector(origins);
        group.bench_function(format!("{origins}_origins"), |b| {
            b.iter(|| black_box(render_event(black_box(&event), black_box(&cursor))));
        });
    }
    group.finish();
}

fn cursor(c: &mut Criterion) {
    let mut group = c.benchmark_group("cursor");
    for origins in [1usize, 3, 16] {
        let position = vector(origins);
        let text = Cursor::encode(&position);
        group.bench_function(format!("encode_{origins}_origins"), |b| {
            b.iter(|| black_box(Cursor::encode(black_box(&position))));
        });
        group.bench_function(format!("decode_{origins}_origins"), |b| {
            b.iter(|| black_box(Cursor::decode(black_box(&text))));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = render, cursor
}
criterion_main!(benches);
