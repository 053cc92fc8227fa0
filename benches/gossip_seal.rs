//! The cost sealing adds to every gossip datagram: sealing on the sender, opening with the
//! replay and clock checks on the receiver, at the sizes herald's gossip sends (a digest of a
//! few nodes, a delta with every key of a node, a large delta).
//!
//! `cargo bench --bench gossip_seal`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use herald::cluster::seal::{GossipKey, Opener, Sealer};

fn seal_and_open(c: &mut Criterion) {
    let key = GossipKey::derive("a-cluster-secret-of-enough-length!", "herald");
    let mut group = c.benchmark_group("gossip_seal");
    for size in [200usize, 1_500, 16_000] {
        let plaintext = vec![7u8; size];
        let mut sealer = Sealer::new(&key);
        let mut opener = Opener::new(key.clone(), Duration::from_secs(60));
        let mut sealed = Vec::new();
        group.bench_function(format!("seal_{size}b"), |b| {
            b.iter(|| sealer.seal(black_box(&plaintext), &mut sealed));
        });
        group.bench_function(format!("seal_and_open_{size}b"), |b| {
            b.iter(|| {
                sealer.seal(black_box(&plaintext), &mut sealed);
                black_box(opener.open(&mut sealed).expect("opens"));
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = seal_and_open
}
criterion_main!(benches);
