//! Hub fan-out: one committed event offered to many local subscribers' bounded queues (the
//! render happens once per event; each subscriber gets an `Arc` clone), and the queues drained
//! as the connections' writers would.
//!
//! `cargo bench --bench hub`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald::event::{ChannelName, Event, Hlc, NodeId, VersionVector};
use herald::hub::{Hub, Subscription, SubscriptionSpec};

fn subscribers(hub: &Arc<Hub>, count: usize, channel: &ChannelName) -> Vec<Subscription> {
    (0..count)
        .map(|index| {
            hub.subscribe(SubscriptionSpec {
                user_id: format!("user-{index}").into(),
                channels: vec![channel.clone()],
                prefixes: Vec::new(),
            })
        })
        .collect()
}

fn event(origin: &NodeId, channel: &ChannelName, seq: u64) -> Arc<Event> {
    Arc::new(Event {
        origin: origin.clone(),
        seq,
        id: uuid::Uuid::nil(),
        hlc: Hlc(seq),
        channel: channel.clone(),
        kind: "bench".into(),
        payload: format!(r#"{{"type":"bench","t":1700000000000000000,"p":3,"c":0,"n":{seq}}}"#),
        users: None,
        ephemeral: false,
        idempotency_key: None,
    })
}

fn fanout(c: &mut Criterion) {
    let origin = NodeId::new("n1").expect("valid node id");
    let channel = ChannelName::new("bench.0").expect("valid channel");
    let mut group = c.benchmark_group("hub_fanout");
    for count in [100usize, 1_000] {
        for batch in [1usize, 16] {
            group.throughput(Throughput::Elements((count * batch) as u64));
            let id = BenchmarkId::new(format!("{count}_subscribers"), format!("batch_{batch}"));
            group.bench_function(id, |b| {
                let hub = Hub::new(VersionVector::new(), 1024);
                let mut subs = subscribers(&hub, count, &channel);
                let mut seq = 0u64;
                b.iter(|| {
                    let events: Vec<Arc<Event>> = (0..batch)
                        .map(|_| {
                            seq += 1;
                            event(&origin, &channel, seq)
                        })
                        .collect();
                    hub.dispatch(&events);
                    for sub in &mut subs {
                        while let Ok(delivery) = sub.deliveries.try_recv() {
                            black_box(delivery);
                        }
                    }
                });
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = fanout
}
criterion_main!(benches);
