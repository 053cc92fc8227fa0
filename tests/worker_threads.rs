//! `--worker-threads`: the number of runtime threads a node serves with, through the real
//! binary (reported as `herald_runtime_workers`), and a bad number refused before anything
//! listens.

mod cluster_support;

use std::process::Command;

use cluster_support::TestCluster;

#[tokio::test]
async fn a_node_serves_with_the_worker_threads_it_is_given() {
    let cluster = TestCluster::start_with(2, |index, spec| {
        let threads = if index == 0 { "1" } else { "3" };
        spec.extra_args
            .extend(["--worker-threads".to_string(), threads.to_string()]);
    })
    .await;
    assert_eq!(cluster.metric(0, "herald_runtime_workers").await, 1.0);
    assert_eq!(cluster.metric(1, "herald_runtime_workers").await, 3.0);
    let health = reqwest::get(format!("http://{}/healthz", cluster.http(0)))
        .await
        .expect("GET /healthz");
    assert!(health.status().is_success(), "{health:?}");
}

#[test]
fn zero_worker_threads_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--worker-threads", "0"])
        .env_remove("HERALD_WORKER_THREADS")
        .output()
        .expect("run herald");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--worker-threads"), "{stderr}");
}
