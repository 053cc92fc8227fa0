//! A cluster of real `herald serve` child processes on loopback, for tests that kill nodes.
//!
//! Every node gets free ports (HTTP and mesh on port 0, gossip on a port picked once and kept
//! across restarts so that seeds stay valid), its own data dir, and is started, killed with
//! SIGKILL, restarted and wiped by name. Waiting is always on a condition with a timeout.

#![allow(dead_code)]

pub mod client;
pub mod firewall;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const API_KEY: &str = "herald-dev-api-key-change-me";
pub const JWT_SECRET: &str = "herald-dev-jwt-secret-change-me";
pub const CLUSTER_SECRET: &str = "cluster-secret-for-tests";

pub struct NodeSpec {
    pub name: String,
    pub gossip: SocketAddr,
    pub data: PathBuf,
    pub cluster_secret: String,
    pub extra_args: Vec<String>,
}

pub struct Node {
    pub spec: NodeSpec,
    pub http: Option<SocketAddr>,
    child: Option<Child>,
}

impl Node {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    http: reqwest::Client,
}

fn free_udp_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    socket.local_addr().expect("local addr")
}

impl TestCluster {
    /// Starts `count` nodes named n1..nN that seed each other.
    pub async fn start(count: usize) -> Self {
        Self::start_with(count, |_, _| {}).await
    }

    /// Starts `count` nodes and waits until each is linked to all the others.
    pub async fn start_linked(count: usize) -> Self {
        let cluster = Self::start(count).await;
        for index in 0..count {
            cluster
                .wait_linked(index, count - 1, Duration::from_secs(30))
                .await;
        }
        cluster
    }

    pub async fn start_with(count: usize, customize: impl Fn(usize, &mut NodeSpec)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        for index in 0..count {
            let name = format!("n{}", index + 1);
            let mut spec = NodeSpec {
                data: dir.path().join(&name),
                name,
                gossip: free_udp_port(),
                cluster_secret: CLUSTER_SECRET.into(),
                extra_args: Vec::new(),
            };
            customize(index, &mut spec);
            nodes.push(Node {
                spec,
                http: None,
                child: None,
            });
        }
        let mut cluster = Self {
            dir,
            nodes,
            http: reqwest::Client::new(),
        };
        for index in 0..count {
            cluster.start_node(index);
        }
        cluster
    }

    /// Adds node n{count+1} (a fresh data dir) to the cluster and starts it; answers its index.
    pub fn add_node(&mut self, customize: impl Fn(&mut NodeSpec)) -> usize {
        let index = self.nodes.len();
        let name = format!("n{}", index + 1);
        let mut spec = NodeSpec {
            data: self.dir.path().join(&name),
            name,
            gossip: free_udp_port(),
            cluster_secret: CLUSTER_SECRET.into(),
            extra_args: Vec::new(),
        };
        customize(&mut spec);
        self.nodes.push(Node {
            spec,
            http: None,
            child: None,
        });
        self.start_node(index);
        index
    }

    /// The value of a metric series of node `index` (summed over its labels; 0 when absent).
    pub async fn metric(&self, index: usize, name: &str) -> f64 {
        let url = format!("http://{}/metrics", self.http(index));
        let text = self
            .http
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.spec.gossip.to_string())
            .collect()
    }

    /// Starts (or restarts) node `index` and waits for its ready line.
    pub fn start_node(&mut self, index: usize) {
        let seeds = self.seeds();
        let node = &mut self.nodes[index];
        assert!(
            node.child.is_none(),
            "{} is already running",
            node.spec.name
        );
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .arg("serve")
            .args(["--node-id", &node.spec.name])
            .args(["--http", "127.0.0.1:0"])
            .args(["--mesh", "127.0.0.1:0"])
            .args(["--gossip", &node.spec.gossip.to_string()]);
        // No fsync unless the spec asks for it (flags may be given once only).
        if !node.spec.extra_args.iter().any(|arg| arg == "--store-sync") {
            command.args(["--store-sync", "normal"]);
        }
        // The mesh unless the spec picks another backplane (flags may be given once only).
        if !node.spec.extra_args.iter().any(|arg| arg == "--backplane") {
            command.args(["--backplane", "mesh"]);
        }
        command
            .arg("--data")
            .arg(&node.spec.data)
            .args(node.spec.extra_args.iter())
            .env("HERALD_CLUSTER_SECRET", &node.spec.cluster_secret)
            .env("HERALD_SEEDS", seeds.join(","))
            .env(
                "HERALD_LOG",
                std::env::var("HERALD_TEST_NODE_LOG").unwrap_or_else(|_| "error".into()),
            )
            .env_remove("HERALD_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("spawn herald");
        let stdout = child.stdout.take().expect("stdout");
        let (ready, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = ready.send(line);
            }
        });
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{} did not become ready", node.spec.name));
        let http = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("http="))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
        node.http = Some(http);
        node.child = Some(child);
    }

    /// SIGKILL: no goodbye, no flush beyond what SQLite already has.
    pub fn kill(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.http = None;
    }

    /// SIGTERM and wait for the process to exit.
    pub fn terminate(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if let Some(mut child) = node.child.take() {
            unsafe_sigterm(child.id());
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::park_timeout(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        node.http = None;
    }

    /// SIGSTOP (`pause`) or SIGCONT (`!pause`) node `index`: a stop-the-world pause.
    pub fn pause(&self, index: usize, pause: bool) {
        let child = self.nodes[index].child.as_ref().expect("node is running");
        let signal = if pause { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    pub fn wipe(&mut self, index: usize) {
        assert!(!self.nodes[index].is_running());
        let _ = std::fs::remove_dir_all(&self.nodes[index].spec.data);
    }

    pub fn http(&self, index: usize) -> SocketAddr {
        self.nodes[index].http.expect("node is running")
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    pub async fn publish(&self, index: usize, channel: &str, data: Value) -> Result<Value, String> {
        let url = format!("http://{}/api/publish", self.http(index));
        let response = self
            .http
            .post(url)
            .bearer_auth(API_KEY)
            .timeout(Duration::from_secs(5))
            .json(&json!({ "channel": channel, "data": data }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        response.json().await.map_err(|e| e.to_string())
    }

    pub async fn get(&self, index: usize, path: &str, bearer: &str) -> Value {
        let url = format!("http://{}{}", self.http(index), path);
        self.http
            .get(url)
            .bearer_auth(bearer)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    }

    pub async fn post(&self, index: usize, path: &str, bearer: &str, body: Value) -> (u16, Value) {
        let url = format!("http://{}{}", self.http(index), path);
        let response = self
            .http
            .post(url)
            .bearer_auth(bearer)
            .timeout(Duration::from_secs(5))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Every `tick` event `{p, n}` in node `index`'s history of `channel`, paging through it.
    pub async fn history_ticks(
        &self,
        index: usize,
        channel: &str,
    ) -> std::collections::BTreeSet<(u64, u64)> {
        let mut ticks = std::collections::BTreeSet::new();
        let mut since = String::new();
        loop {
            let page = self
                .get(
                    index,
                    &format!("/api/channels/{channel}/history?limit=1000&since={since}"),
                    API_KEY,
                )
                .await;
            for event in page["events"].as_array().into_iter().flatten() {
                if event["type"] == "tick" {
                    ticks.insert((event["p"].as_u64().unwrap(), event["n"].as_u64().unwrap()));
                }
            }
            since = page["cursor"].as_str().unwrap_or_default().to_string();
            if page["complete"] == true {
                return ticks;
            }
        }
    }

    /// `GET /readyz` of node `index`: its status and body.
    pub async fn readyz(&self, index: usize) -> (u16, Value) {
        let response = self
            .http
            .get(format!("http://{}/readyz", self.http(index)))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("readyz");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `/api/cluster` of node `index`.
    pub async fn cluster_view(&self, index: usize) -> Value {
        self.get(index, "/api/cluster", API_KEY).await
    }

    /// The log position of node `index`, from its own `/api/cluster` row.
    pub async fn log_position(&self, index: usize) -> HashMap<String, u64> {
        let view = self.cluster_view(index).await;
        let own = view["members"]
            .as_array()
            .and_then(|members| members.iter().find(|m| m["is_self"] == true))
            .cloned()
            .unwrap_or(Value::Null);
        serde_json::from_value(own["log_position"].clone()).unwrap_or_default()
    }

    /// Waits until every running node reports the same log position; answers it.
    pub async fn wait_converged(&self, timeout: Duration) -> HashMap<String, u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut positions = Vec::new();
            for index in self.running() {
                positions.push(self.log_position(index).await);
            }
            if positions.windows(2).all(|pair| pair[0] == pair[1]) && !positions.is_empty() {
                return positions.remove(0);
            }
            assert!(
                Instant::now() < deadline,
                "nodes did not converge: {positions:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `index` sees `count` other members alive and linked.
    pub async fn wait_linked(&self, index: usize, count: usize, timeout: Duration) {
        wait_until(timeout, || async {
            let view = self.cluster_view(index).await;
            let linked = view["members"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter(|m| m["linked"] == true && m["state"] == "alive")
                        .count()
                })
                .unwrap_or(0);
            linked >= count
        })
        .await;
    }

    /// The gossip and mesh ports of node `index`, from its own `/api/cluster` row (what a
    /// firewall rule cuts).
    pub async fn ports(&self, index: usize) -> Vec<u16> {
        let view = self.cluster_view(index).await;
        let own = view["members"]
            .as_array()
            .and_then(|members| members.iter().find(|m| m["is_self"] == true))
            .cloned()
            .expect("own member row");
        ["gossip_addr", "mesh_addr"]
            .iter()
            .map(|key| {
                own[*key]
                    .as_str()
                    .and_then(|addr| addr.parse::<SocketAddr>().ok())
                    .map(|addr| addr.port())
                    .unwrap_or_else(|| panic!("no {key} in {own}"))
            })
            .collect()
    }

    pub fn token(&self, user: &str, roles: &[herald::auth::Role]) -> String {
        let auth = herald::auth::Authenticator::new(JWT_SECRET, API_KEY);
        let user = herald::auth::User {
            id: user.into(),
            name: format!("user{user}"),
            roles: roles.to_vec(),
            creator_id: None,
        };
        auth.mint(&user, Duration::from_secs(3600))
    }

    pub fn ws_url(&self, index: usize, path_and_query: &str) -> String {
        format!("ws://{}{}", self.http(index), path_and_query)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Polls `condition` every 50 ms until it holds, failing the test after `timeout` with `what`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `condition` every 50 ms until it holds, failing the test after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until_every(timeout, Duration::from_millis(50), condition).await;
}

/// Polls `condition` every `every` until it holds, failing the test after `timeout`: for a
/// condition that must be caught within a short window.
pub async fn wait_until_every<F, Fut>(timeout: Duration, every: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Asserts that `condition` holds at every look (every 100 ms) for `window`: a property over
/// time, such as "nothing more is pulled".
pub async fn holds_for<F, Fut>(window: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + window;
    while Instant::now() < until {
        assert!(
            condition().await,
            "{what} stopped holding within {window:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
