//! Store append with group commit: many tasks appending at once, each answered after the
//! commit that holds its event. Reported as appends per second, with `sync = normal` (commit
//! without fsync) and `full` (fsync every group commit, the default).
//!
//! `cargo bench --bench store`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald::event::{ChannelName, EventDraft, HybridClock, NodeId, SharedEvent};
use herald::store::{CommitSink, Store, StoreOptions, SyncMode};

/// Drops committed events (the hub and backplane are measured elsewhere).
struct NullSink;

impl CommitSink for NullSink {
    fn committed(&self, _events: &[SharedEvent]) {}
}

fn draft(channel: &ChannelName, n: u64) -> EventDraft {
    EventDraft {
        channel: channel.clone(),
        kind: "bench".into(),
        payload: format!(r#"{{"type":"bench","t":1700000000000000000,"p":1,"c":0,"n":{n}}}"#),
        users: None,
        idempotency_key: None,
    }
}

/// Appends `total` events from `tasks` concurrent tasks; answers the time taken.
async fn append_all(store: &Store, channel: &ChannelName, tasks: u64, total: u64) -> Duration {
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let store = store.clone();
            let channel = channel.clone();
            let share = total / tasks + u64::from(task < total % tasks);
            tokio::spawn(async move {
                for n in 0..share {
                    store.append(draft(&channel, n)).await.expect("append");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("appender");
    }
    started.elapsed()
}

fn group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let channel = ChannelName::new("bench.0").expect("valid channel");
    let mut group = c.benchmark_group("store_append");
    group.throughput(Throughput::Elements(1));
    for (sync, name) in [
        (SyncMode::Normal, "sync_normal"),
        (SyncMode::Full, "sync_full"),
    ] {
        for tasks in [1u64, 64] {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut options = StoreOptions::in_dir(dir.path());
            options.sync = sync;
            let store = runtime.block_on(async {
                Store::open(
                    &options,
                    NodeId::new("n1").expect("valid node id"),
                    Arc::new(HybridClock::new()),
                    Arc::new(NullSink),
                )
                .expect("open store")
            });
            let id = BenchmarkId::new(name, format!("{tasks}_tasks"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    runtime.block_on(append_all(&store, &channel, tasks.min(iters), iters))
                });
            });
            runtime.block_on(store.close());
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    targets = group_commit
}
criterion_main!(benches);
