//! What admission control costs: per connection, the node's semaphore permit plus the
//! per-address and per-user counts (taken and given back), against the hub count read that
//! stood in for admission before; per client message, the token-bucket check, next to the
//! JSON parse every message already paid.
//!
//! `cargo bench --bench admission`

use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use herald::api::admission::Admission;
use herald::api::ws::rate::MessageRate;
use herald::config::Limits;
use herald::event::VersionVector;
use herald::hub::{Hub, SubscriptionSpec};

/// Connections already held while one more is admitted.
const HELD: usize = 10_000;

fn per_connection(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission_per_connection");

    // Before: `hub.counts().connections >= max_connections`, a read under the hub's lock.
    let hub = Hub::new(VersionVector::new(), 16);
    let held: Vec<_> = (0..HELD)
        .map(|n| {
            hub.subscribe(SubscriptionSpec::new(
                &format!("user-{n}"),
                Vec::new(),
                Vec::new(),
            ))
        })
        .collect();
    group.bench_function("before_hub_count_read", |b| {
        b.iter(|| black_box(hub.counts().connections >= 18_000));
    });
    drop(held);

    // After: the node permit, the address count (the limit on) and the user count, taken and
    // dropped, with HELD other connections of other users and addresses in the maps.
    let admission = Admission::new(&Limits {
        max_connections: HELD + 100,
        max_connections_per_ip: 100,
        ..Limits::default()
    });
    let held: Vec<_> = (0..HELD)
        .map(|n| {
            let address = IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
            let mut permit = admission.admit_peer(Some(address)).expect("room");
            admission
                .admit_user(&mut permit, &format!("user-{n}"))
                .expect("room");
            permit
        })
        .collect();
    let address = IpAddr::from([192, 168, 0, 1]);
    group.bench_function("after_permit_address_and_user", |b| {
        b.iter(|| {
            let mut permit = admission.admit_peer(Some(address)).expect("room");
            admission.admit_user(&mut permit, "user-new").expect("room");
            black_box(&permit);
        });
    });
    drop(held);

    // The defaults: no per-address count.
    let admission = Admission::new(&Limits {
        max_connections: HELD + 100,
        ..Limits::default()
    });
    let held: Vec<_> = (0..HELD)
        .map(|n| {
            let mut permit = admission.admit_peer(None).expect("room");
            admission
                .admit_user(&mut permit, &format!("user-{n}"))
                .expect("room");
            permit
        })
        .collect();
    group.bench_function("after_permit_and_user_defaults", |b| {
        b.iter(|| {
            let mut permit = admission.admit_peer(Some(address)).expect("room");
            admission.admit_user(&mut permit, "user-new").expect("room");
            black_box(&permit);
        });
    });
    drop(held);
    group.finish();
}

fn per_message(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission_per_message");
    let mut rate = MessageRate::new(u32::MAX, u32::MAX, Instant::now());
    group.bench_function("rate_check_with_clock_read", |b| {
        b.iter(|| black_box(rate.check(Instant::now())));
    });
    group.bench_function("reference_json_parse_of_a_ping", |b| {
        b.iter(|| {
            let value: serde_json::Value =
                serde_json::from_str(black_box(r#"{"type":"ping"}"#)).expect("json");
            black_box(value)
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = per_connection, per_message
}
criterion_main!(benches);
