//! `--worker-threads`: the number of runtime threads a node serves with, through the real
//! binary (reported as `herald_runtime_workers`), and a bad number refused before anything
//! listens.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

struct Node {
    child: Child,
    http: SocketAddr,
    _data: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(threads: &str) -> Node {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("serve")
        .args(["--http", "127.0.0.1:0", "--store-sync", "normal"])
        .arg("--data")
        .arg(data.path())
        .args(["--worker-threads", threads])
        .env_remove("HERALD_CONFIG")
        .env_remove("HERALD_WORKER_THREADS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn herald");
    let stdout = child.stdout.take().expect("stdout");
    let (ready, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = ready.send(line);
        }
    });
    let line = lines.recv_timeout(WAIT).expect("the node's ready line");
    let http = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("http="))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
    Node {
        child,
        http,
        _data: data,
    }
}

async fn workers(node: &Node) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", node.http))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix("herald_runtime_workers "))
        .unwrap_or_else(|| panic!("no herald_runtime_workers in {text}"))
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn a_node_serves_with_the_worker_threads_it_is_given() {
    for threads in ["1", "3"] {
        let node = start(threads);
        assert_eq!(workers(&node).await, threads.parse::<f64>().unwrap());
        let health = reqwest::get(format!("http://{}/healthz", node.http))
            .await
            .expect("GET /health");
        assert!(
            health.status().is_success(),
            "{threads} threads: {health:?}"
        );
    }
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
