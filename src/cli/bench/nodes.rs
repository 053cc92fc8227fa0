//! The nodes under load: addresses given with `--http` (and their pids with `--server-pid`,
//! for CPU and memory readings), or nodes the bench starts itself with `--spawn N`.
//!
//! A spawned node is this very executable (`std::env::current_exe()`) running
//! `herald serve` on 127.0.0.1 port 0 with a fresh data directory under the system temp dir.
//! The bench waits for its ready line (`herald listening node_id=.. http=..`), sends its logs to
//! a file beside the data, and at the end stops it with SIGTERM (SIGKILL if it does not stop
//! in time) and removes the directory. Spawned nodes are independent single nodes, or, with
//! `--cluster`, one mesh cluster (gossip seeds on pre-picked ports, a shared cluster secret);
//! cluster nodes can be killed (SIGKILL) and restarted on their data for the failover and
//! catch-up scenarios, paused (SIGSTOP) and resumed, and wiped.
//!
//! `herald chaos` places cluster nodes on [`Host`]s of its own: an address inside a network
//! namespace, where the node runs under `ip netns exec` so that the links between nodes can be
//! cut and degraded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::store::SyncMode;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// One node the load goes to.
#[derive(Clone, Debug)]
pub struct Node {
    pub id: String,
    pub http: SocketAddr,
    /// Known for spawned nodes and `--server-pid`: CPU and memory are read from `/proc`.
    pub pid: Option<u32>,
}

/// Nodes started by the bench; stopped and cleaned up by [`Spawned::stop`] (or, failing that,
/// killed on drop).
pub struct Spawned {
    children: Vec<SpawnedChild>,
    root: PathBuf,
    specs: Vec<NodeSpec>,
    exe: PathBuf,
    sync: SyncMode,
    /// Environment every node starts with (secrets).
    env: Vec<(String, String)>,
    /// The Redis backplane nodes without gossip use (else: the local backplane).
    redis_url: Option<String>,
}

/// Where a spawned node runs: the address it listens on, and the network namespace it runs
/// in (none: this process's own, on loopback).
#[derive(Clone, Debug)]
pub struct Host {
    pub ip: IpAddr,
    pub netns: Option<String>,
}

impl Host {
    /// 127.0.0.1 in this process's namespace.
    pub fn loopback() -> Self {
        Self {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            netns: None,
        }
    }
}

/// The gossip port of nodes in a network namespace of their own (each namespace has its own
/// ports, so every node can use the same one).
const NAMESPACED_GOSSIP_PORT: u16 = 7946;

/// What it takes to start (or restart) one spawned node.
#[derive(Clone, Debug)]
struct NodeSpec {
    index: usize,
    host: Host,
    /// Gossip address and every node's, for a cluster.
    cluster: Option<(SocketAddr, Vec<SocketAddr>)>,
    /// More `herald serve` flags for this node.
    extra_args: Vec<String>,
}

/// The cluster secret spawned clusters share.
const BENCH_CLUSTER_SECRET: &str = "herald-bench-cluster-secret";

struct SpawnedChild {
    child: Child,
    /// Kept open: the node may print to stdout again, and must not get EPIPE.
    _stdout: BufReader<ChildStdout>,
}

/// Starts `count` nodes on 127.0.0.1, independent single nodes or one mesh cluster, with more
/// `herald serve` flags for node `index` (0-based) from `extra_args`.
pub async fn spawn_with(
    count: usize,
    sync: SyncMode,
    cluster: bool,
    extra_args: impl Fn(usize) -> Vec<String>,
) -> anyhow::Result<(Vec<Node>, Spawned)> {
    let gossip: Vec<SocketAddr> = if cluster {
        (0..count)
            .map(|_| free_udp_addr())
            .collect::<anyhow::Result<_>>()?
    } else {
        Vec::new()
    };
    let placed = (0..count)
        .map(|index| (Host::loopback(), gossip.get(index).copied()))
        .collect();
    spawn_placed(placed, sync, Vec::new(), None, extra_args).await
}

/// Starts one mesh cluster with node `index` on `hosts[index]` (its own network namespace,
/// where it gossips on a fixed port, or a loopback address of its own), every node with the environment `env` (nodes that
/// listen beyond loopback need secrets of their own).
pub async fn spawn_cluster_on(
    hosts: Vec<Host>,
    sync: SyncMode,
    env: Vec<(String, String)>,
    extra_args: impl Fn(usize) -> Vec<String>,
) -> anyhow::Result<(Vec<Node>, Spawned)> {
    let placed = hosts
        .into_iter()
        .map(|host| {
            let gossip = match host.netns {
                Some(_) => SocketAddr::new(host.ip, NAMESPACED_GOSSIP_PORT),
                None => free_udp_addr_on(host.ip)?,
            };
            Ok((host, Some(gossip)))
        })
        .collect::<anyhow::Result<_>>()?;
    spawn_placed(placed, sync, env, None, extra_args).await
}

/// Starts one node per host (each in its own namespace, or on loopback) sharing the Redis
/// backplane at `redis_url`, every node with the environment `env`.
pub async fn spawn_redis_on(
    hosts: Vec<Host>,
    redis_url: String,
    sync: SyncMode,
    env: Vec<(String, String)>,
    extra_args: impl Fn(usize) -> Vec<String>,
) -> anyhow::Result<(Vec<Node>, Spawned)> {
    let placed = hosts.into_iter().map(|host| (host, None)).collect();
    spawn_placed(placed, sync, env, Some(redis_url), extra_args).await
}

/// Starts one node per `(host, gossip address)`; with gossip addresses, one cluster.
async fn spawn_placed(
    placed: Vec<(Host, Option<SocketAddr>)>,
    sync: SyncMode,
    env: Vec<(String, String)>,
    redis_url: Option<String>,
    extra_args: impl Fn(usize) -> Vec<String>,
) -> anyhow::Result<(Vec<Node>, Spawned)> {
    let count = placed.len();
    let exe = std::env::current_exe().context("cannot find the herald executable")?;
    let root = std::env::temp_dir().join(format!(
        "herald-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let seeds: Vec<SocketAddr> = placed.iter().filter_map(|(_, gossip)| *gossip).collect();
    let specs: Vec<NodeSpec> = placed
        .into_iter()
        .enumerate()
        .map(|(index, (host, gossip))| NodeSpec {
            index: index + 1,
            host,
            cluster: gossip.map(|gossip| (gossip, seeds.clone())),
            extra_args: extra_args(index),
        })
        .collect();
    let mut spawned = Spawned {
        children: Vec::with_capacity(count),
        root,
        specs,
        exe,
        sync,
        env,
        redis_url,
    };
    let mut nodes = Vec::with_capacity(count);
    for spec in spawned.specs.clone() {
        let (node, child) = spawned.spawn_one(&spec).await?;
        nodes.push(node);
        spawned.children.push(child);
    }
    Ok((nodes, spawned))
}

fn free_udp_addr() -> anyhow::Result<SocketAddr> {
    free_udp_addr_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn free_udp_addr_on(ip: IpAddr) -> anyhow::Result<SocketAddr> {
    let socket = std::net::UdpSocket::bind((ip, 0)).context("cannot pick a gossip port")?;
    socket.local_addr().context("cannot pick a gossip port")
}

impl Spawned {
    async fn spawn_one(&self, spec: &NodeSpec) -> anyhow::Result<(Node, SpawnedChild)> {
        let (exe, root, sync) = (&self.exe, &self.root, self.sync);
        let index = spec.index;
        let id = format!("bench-n{index}");
        let data = root.join(&id);
        let log_path = root.join(format!("{id}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let sync = match sync {
            SyncMode::Full => "full",
            SyncMode::Normal => "normal",
        };
        let mut command = match &spec.host.netns {
            None => Command::new(exe),
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(exe);
                command
            }
        };
        let listen = SocketAddr::new(spec.host.ip, 0).to_string();
        command.args([
            "serve",
            "--http",
            &listen,
            "--mesh",
            &listen,
            "--node-id",
            &id,
        ]);
        match &spec.cluster {
            Some((gossip, all)) => {
                let seeds: Vec<String> = all.iter().map(ToString::to_string).collect();
                command
                    .args(["--backplane", "mesh", "--gossip", &gossip.to_string()])
                    .args(["--seed", &seeds.join(",")])
                    .env("HERALD_CLUSTER_SECRET", BENCH_CLUSTER_SECRET);
            }
            None => match &self.redis_url {
                Some(url) => {
                    command.args(["--backplane", "redis", "--redis-url", url]);
                    command.args(["--gossip", &listen]);
                }
                None => {
                    command.args(["--backplane", "local", "--gossip", &listen]);
                }
            },
        }
        command
            .args(["--store-sync", sync])
            .args(&spec.extra_args)
            .arg("--data")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true);
        if std::env::var_os("HERALD_LOG").is_none() && std::env::var_os("RUST_LOG").is_none() {
            command.env("HERALD_LOG", "warn");
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let pid = child.id().context("spawned node exited at once")?;
        let stdout = child.stdout.take().context("no stdout from the node")?;
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let read = tokio::time::timeout(READY_TIMEOUT, stdout.read_line(&mut line)).await;
        let http = match read {
            Ok(Ok(n)) if n > 0 => parse_ready_line(&line),
            _ => None,
        };
        let Some(http) = http else {
            let _ = child.start_kill();
            bail!(
                "node {id} did not become ready (got {:?}); its log: {}",
                line.trim(),
                log_path.display()
            );
        };
        Ok((
            Node {
                id,
                http,
                pid: Some(pid),
            },
            SpawnedChild {
                child,
                _stdout: stdout,
            },
        ))
    }
}

/// The nodes at the `--http` addresses given (in order, named `node1`, ...), with their
/// `--server-pid`s where given.
pub async fn resolve(http: &[String], pids: &[u32]) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::with_capacity(http.len());
    for (index, text) in http.iter().enumerate() {
        let address: SocketAddr = tokio::net::lookup_host(text.as_str())
            .await
            .with_context(|| format!("invalid --http {text}"))?
            .next()
            .with_context(|| format!("--http {text} resolves to nothing"))?;
        nodes.push(Node {
            id: format!("node{}", index + 1),
            http: address,
            pid: pids.get(index).copied(),
        });
    }
    Ok(nodes)
}

/// Sends `signal` to the process `pid`.
pub fn signal(pid: Option<u32>, signal: libc::c_int) -> anyhow::Result<()> {
    let pid = pid.context("the node is not running")?;
    let pid = libc::pid_t::try_from(pid).context("process id out of range")?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } != 0 {
        bail!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The `http=` address of `herald listening node_id=<id> http=<addr>`.
pub fn parse_ready_line(line: &str) -> Option<SocketAddr> {
    let rest = line.trim().strip_prefix("herald listening ")?;
    rest.split_whitespace()
        .find_map(|field| field.strip_prefix("http="))
        .and_then(|addr| addr.parse().ok())
}

impl Spawned {
    /// Deletes node `index`'s data directory (the node must be stopped).
    pub fn wipe(&self, index: usize) {
        let _ = std::fs::remove_dir_all(self.data_dir(index));
    }

    /// Copies node `index`'s database while it runs (`VACUUM INTO`: a consistent copy, as an
    /// online backup takes it), for [`Spawned::restore`].
    pub fn back_up(&self, index: usize) -> anyhow::Result<()> {
        use anyhow::Context;
        let copy = self.backup_path(index);
        let _ = std::fs::remove_file(&copy);
        let database = self.data_dir(index).join("herald.db");
        let connection = rusqlite::Connection::open_with_flags(
            &database,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .with_context(|| format!("cannot open {} to back it up", database.display()))?;
        connection
            .execute("VACUUM INTO ?1", [copy.to_string_lossy().as_ref()])
            .with_context(|| format!("cannot back up {}", database.display()))?;
        Ok(())
    }

    /// Puts the copy [`Spawned::back_up`] took back in place of node `index`'s database (the
    /// node must be stopped); its `node_id` stays.
    pub fn restore(&self, index: usize) -> anyhow::Result<()> {
        use anyhow::Context;
        let database = self.data_dir(index).join("herald.db");
        for side in ["herald.db-wal", "herald.db-shm"] {
            let _ = std::fs::remove_file(self.data_dir(index).join(side));
        }
        std::fs::copy(self.backup_path(index), &database)
            .with_context(|| format!("cannot restore {}", database.display()))?;
        Ok(())
    }

    fn backup_path(&self, index: usize) -> PathBuf {
        self.root.join(format!("backup-n{}.db", index + 1))
    }

    /// The data directory of node `index` (0-based).
    pub fn data_dir(&self, index: usize) -> PathBuf {
        self.root.join(format!("bench-n{}", index + 1))
    }

    /// SIGKILL node `index` (0-based): no goodbye to anyone.
    pub async fn kill(&mut self, index: usize) {
        let _ = self.children[index].child.kill().await;
    }

    /// The process id of node `index` while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.children[index].child.id()
    }

    /// SIGSTOP node `index`: it keeps its sockets and state but runs no code until
    /// [`Spawned::resume`] (a stop-the-world pause).
    pub fn pause(&self, index: usize) -> anyhow::Result<()> {
        signal(self.pid(index), libc::SIGSTOP)
    }

    /// SIGCONT node `index` after [`Spawned::pause`].
    pub fn resume(&self, index: usize) -> anyhow::Result<()> {
        signal(self.pid(index), libc::SIGCONT)
    }

    /// Starts node `index` again on its data directory (and gossip port); answers its new
    /// address.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<Node> {
        let spec = self.specs[index].clone();
        let (node, child) = self.spawn_one(&spec).await?;
        self.children[index] = child;
        Ok(node)
    }

    /// Stops every node (SIGTERM, then SIGKILL after a grace period) and removes the data.
    pub async fn stop(mut self) {
        for spawned in &mut self.children {
            if let Some(pid) = spawned.child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await;
            }
        }
        for spawned in &mut self.children {
            if tokio::time::timeout(STOP_TIMEOUT, spawned.child.wait())
                .await
                .is_err()
            {
                let _ = spawned.child.kill().await;
            }
        }
        self.children.clear();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Children are killed by kill_on_drop; only the data is left to remove.
        if !self.children.is_empty() {
            for spawned in &mut self.children {
                let _ = spawned.child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line() {
        assert_eq!(
            parse_ready_line("herald listening node_id=n1 http=127.0.0.1:4321\n"),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        assert_eq!(parse_ready_line("something else"), None);
    }
}
