//! `herald chaos`: a correctness checker for a herald cluster under faults.
//!
//! It starts a cluster of `--nodes` nodes of this executable (a mesh, or nodes sharing a
//! Redis server it starts with `--backplane redis`) (each in a network namespace
//! of its own when the faults need the network), runs a publisher through every node and
//! subscribers on every node, injects a seeded schedule of faults for `--duration`, heals
//! everything, and prints a verdict: what was acknowledged, what was lost (from a live node's
//! log or from a subscriber that stayed subscribed, resuming where its node went away),
//! duplicated or delivered out of per-origin order, how long the nodes took to converge after
//! each heal, and whether they ended with identical logs and materialized state. It exits 0
//! only when nothing was lost, duplicated or reordered.
//!
//! With `--http` it drives nodes that are already running instead; it can then only pause
//! them (`--faults pause` with their `--server-pid`s): it cannot restart, wipe or cut what it
//! did not start.
//!
//! | file | concept |
//! |---|---|
//! | `schedule.rs` | fault kinds and the seeded schedule of episodes |
//! | `network.rs` | namespaces, veth pairs and nftables rules: cuts, loss, delay |
//! | `loopback.rs` | the fallback: nftables rules on loopback addresses of the nodes' own |
//! | `publisher.rs` | one publisher per node, acknowledged or failed publishes |
//! | `client.rs` | subscribers that resume on another node with their cursor |
//! | `ledger.rs` | the checks: missing, duplicate, out of order |
//! | `redis.rs` | the Redis server of `--backplane redis` |
//! | `audit.rs` | the nodes' positions, logs and state over HTTP; convergence |
//! | `verdict.rs` | the verdict, for people and as JSON |
//!
//! Nodes, their processes and the HTTP client are `herald bench`'s (`cli::bench::nodes`,
//! `cli::bench::http`). Everything the run creates (processes, namespaces, rules, data) is
//! removed at the end, also after Ctrl-C.

mod audit;
mod client;
mod ledger;
mod loopback;
mod network;
mod presence;
mod publisher;
mod redis;
mod schedule;
mod verdict;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::auth::{Authenticator, Role, User};
use crate::cli::bench::nodes::{self, Node, Spawned};
use crate::config::{DEV_API_KEY, DEV_JWT_SECRET};
use crate::store::SyncMode;
use client::Subscriber;
use ledger::Acks;
use schedule::{Episode, Fault, ScheduleSpec};
pub use schedule::{FaultKind, PartitionMode};
use verdict::{EpisodeReport, Verdict};

/// How long to wait for the nodes to converge after a heal (and at the end).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long subscribers get to receive every end marker.
const MARKER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long subscribers get to connect at the start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a started cluster gets to link up.
const LINK_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How the nodes of a chaos run reach each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ChaosBackplane {
    /// Gossip and QUIC links between the nodes.
    Mesh,
    /// A Redis server this run starts; partitions and loss cut and degrade the nodes' links
    /// to it.
    Redis,
}

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Nodes of the cluster this run starts.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=32))]
    pub nodes: u16,
    /// The backplane of the nodes this run starts.
    #[arg(long, value_enum, default_value = "mesh")]
    pub backplane: ChaosBackplane,
    /// Drive running nodes instead (their HTTP addresses; repeat for several). Only `pause`
    /// can be injected then, with their --server-pid.
    #[arg(long = "http")]
    pub http: Vec<String>,
    /// The pid of each --http node, in the same order (for pause).
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// The faults to draw from, comma-separated: kill, pause, partition, loss, wipe, restore.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kill,pause,partition,loss,wipe,restore"
    )]
    pub faults: Vec<FaultKind>,
    /// How long to publish and inject faults, for example 60s.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub duration: Duration,
    /// How long each fault is held before it is healed (a pause must outlast the failure
    /// detector, about 2 s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "4s")]
    pub fault_for: Duration,
    /// Time without faults after each heal.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub calm: Duration,
    /// Seed of the fault schedule (default: from the clock; printed, to replay a run).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The network partitions and loss cut: namespaces where they can be had (root, iproute2,
    /// nftables), else nftables rules on loopback addresses of the nodes' own.
    #[arg(long, value_enum, default_value = "auto")]
    pub network: network::NetworkChoice,
    /// Which partitions to draw.
    #[arg(long, value_enum, default_value = "mixed")]
    pub partition: PartitionMode,
    /// Packets dropped by `loss`, in percent of every link between nodes.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub loss: u8,
    /// Delay added with `loss`, where the kernel has netem (else the verdict says it was not).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20ms")]
    pub delay: Duration,
    /// Publishes per second through each node.
    #[arg(long, default_value_t = 40.0)]
    pub rate: f64,
    /// Channels the events are spread over (every subscriber subscribes to all).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub channels: u32,
    /// Subscribers per node.
    #[arg(long, default_value_t = 2)]
    pub subscribers: usize,
    /// The nodes' `--replication`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub replication: u8,
    /// Commit durability of the nodes this run starts.
    #[arg(long, value_enum, default_value = "full")]
    pub store_sync: SyncMode,
    /// Print the verdict as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Self-test of the checker: node 1 silently loses its Nth committed event from local
    /// delivery (a fault hook); the run must then fail.
    #[arg(long, hide = true)]
    pub plant_loss: Option<u64>,
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    validate(&args)?;
    let mut cluster = Cluster::start(&args).await?;
    let outcome = tokio::select! {
        outcome = check(&args, &mut cluster) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    cluster.stop().await;
    let verdict = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        print!("{}", verdict.human());
    }
    if !verdict.passed {
        bail!("chaos verdict: {}", verdict.problems.join("; "));
    }
    Ok(())
}

fn validate(args: &ChaosArgs) -> anyhow::Result<()> {
    if args.faults.is_empty() {
        bail!("--faults needs at least one of kill, pause, partition, loss, wipe, restore");
    }
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 10_000.0) {
        bail!("--rate must be above 0 and at most 10000 publishes per second per node");
    }
    if args.subscribers == 0 || args.subscribers > 1000 {
        bail!("--subscribers must be 1 to 1000 per node");
    }
    if args.duration.is_zero() || args.fault_for.is_zero() {
        bail!("--duration and --fault-for must be above zero");
    }
    if !args.http.is_empty() {
        if let Some(kind) = args.faults.iter().find(|k| k.needs_spawned_nodes()) {
            bail!(
                "--faults {kind:?} needs nodes this run starts (it restarts, wipes or cuts \
                 them): with --http only `--faults pause` (and --server-pid) is possible"
            );
        }
        if args.server_pids.len() != args.http.len() {
            bail!("--faults pause on --http nodes needs one --server-pid per --http, in order");
        }
        if args.plant_loss.is_some() {
            bail!("--plant-loss needs nodes this run starts");
        }
    }
    Ok(())
}

/// The nodes under test and how to reach and hurt them.
struct Cluster {
    nodes: Vec<Node>,
    spawned: Option<Spawned>,
    testbed: Option<network::Network>,
    network: String,
    directory: watch::Sender<Vec<Option<SocketAddr>>>,
    backplane: ChaosBackplane,
    /// Kept alive for the nodes of `--backplane redis`.
    _redis: Option<redis::RedisServer>,
    /// What publishers and the audit present, and what user tokens are signed with.
    api_key: String,
    jwt_secret: String,
}

impl Cluster {
    async fn start(args: &ChaosArgs) -> anyhow::Result<Self> {
        if !args.http.is_empty() {
            let mut nodes = nodes::resolve(&args.http, &args.server_pids).await?;
            // Faults are recognized by the node ids the nodes report each other under.
            for node in &mut nodes {
                node.id = audit::node_id(node.http).await?;
            }
            let addresses = nodes.iter().map(|n| Some(n.http)).collect();
            return Ok(Self {
                nodes,
                spawned: None,
                testbed: None,
                network: "the given nodes; faults by signals only".into(),
                directory: watch::channel(addresses).0,
                backplane: args.backplane,
                _redis: None,
                api_key: super::env_secret("HERALD_API_KEY").unwrap_or_else(|| DEV_API_KEY.into()),
                jwt_secret: super::env_secret("HERALD_JWT_SECRET")
                    .unwrap_or_else(|| DEV_JWT_SECRET.into()),
            });
        }
        let count = usize::from(args.nodes);
        let extra = |index: usize| {
            let mut extra = vec![
                // Every acknowledged event must stay in every log to the end.
                "--history-size".to_string(),
                "0".into(),
                "--replication".into(),
                args.replication.to_string(),
            ];
            if let (0, Some(n)) = (index, args.plant_loss) {
                extra.extend(["--fault-skip-delivery".to_string(), n.to_string()]);
            }
            extra
        };
        let needs_network = args.faults.iter().any(|k| k.needs_network());
        let (testbed, network) = if needs_network {
            let testbed = network::Network::create(count, args.network).map_err(|error| {
                anyhow::anyhow!(
                    "--faults partition and loss need a network to cut: {error:#}. Run as root \
                     with iproute2 and nftables installed, or leave partition and loss out of \
                     --faults (no fault is ever reported as tested when it was not injected)"
                )
            })?;
            let mut network = testbed.describe();
            if args.backplane == ChaosBackplane::Redis {
                if !testbed.is_namespaces() {
                    bail!(
                        "with --backplane redis, partitions and loss need network namespaces \
                         (on loopback the nodes' links to Redis cannot be told apart)"
                    );
                }
                network.push_str("; partitions cut nodes from Redis");
            }
            (Some(testbed), network)
        } else {
            (None, "loopback; faults by signals only".into())
        };
        // Nodes in namespaces listen beyond loopback: they refuse the development secrets.
        let (api_key, jwt_secret) = match &testbed {
            Some(testbed) if testbed.is_namespaces() => (fresh_secret(), fresh_secret()),
            _ => (DEV_API_KEY.to_string(), DEV_JWT_SECRET.to_string()),
        };
        let env = match &testbed {
            Some(testbed) if testbed.is_namespaces() => vec![
                ("HERALD_API_KEY".to_string(), api_key.clone()),
                ("HERALD_JWT_SECRET".to_string(), jwt_secret.clone()),
                ("HERALD_CLUSTER_SECRET".to_string(), fresh_secret()),
            ],
            _ => Vec::new(),
        };
        let hosts = match &testbed {
            Some(testbed) => testbed.hosts(),
            None => vec![nodes::Host::loopback(); count],
        };
        let mut redis_server = None;
        let mut testbed = testbed;
        let (nodes, spawned) = match args.backplane {
            ChaosBackplane::Mesh => match &testbed {
                Some(_) => nodes::spawn_cluster_on(hosts, args.store_sync, env, extra).await?,
                None => nodes::spawn_with(count, args.store_sync, true, extra).await?,
            },
            ChaosBackplane::Redis => {
                let ip = match &testbed {
                    Some(network::Network::Namespaces(testbed)) => {
                        std::net::IpAddr::V4(testbed.gateway())
                    }
                    _ => nodes::Host::loopback().ip,
                };
                let server = redis::RedisServer::start(ip).await?;
                if let Some(network::Network::Namespaces(testbed)) = testbed.as_mut() {
                    testbed.set_redis_port(server.address.port());
                }
                let url = server.url();
                redis_server = Some(server);
                nodes::spawn_redis_on(hosts, url, args.store_sync, env, extra).await?
            }
        };
        let addresses: Vec<SocketAddr> = nodes.iter().map(|n| n.http).collect();
        match args.backplane {
            ChaosBackplane::Mesh => audit::wait_linked(&addresses, &api_key, LINK_TIMEOUT).await?,
            ChaosBackplane::Redis => audit::wait_ready(&addresses, LINK_TIMEOUT).await?,
        }
        let addresses = nodes.iter().map(|n| Some(n.http)).collect();
        Ok(Self {
            nodes,
            spawned: Some(spawned),
            testbed,
            network,
            directory: watch::channel(addresses).0,
            backplane: args.backplane,
            _redis: redis_server,
            api_key,
            jwt_secret,
        })
    }

    fn directory(&self) -> client::Directory {
        self.directory.subscribe()
    }

    fn set_address(&self, index: usize, address: Option<SocketAddr>) {
        self.directory
            .send_modify(|addresses| addresses[index] = address);
    }

    fn spawned(&mut self) -> anyhow::Result<&mut Spawned> {
        self.spawned
            .as_mut()
            .context("this fault needs nodes this run started")
    }

    fn testbed(&mut self) -> anyhow::Result<&mut network::Network> {
        self.testbed
            .as_mut()
            .context("this fault needs the network namespaces")
    }

    /// Injects `fault` (undone by [`Cluster::heal`]).
    async fn inject(&mut self, fault: &Fault, args: &ChaosArgs) -> anyhow::Result<()> {
        match fault {
            Fault::Kill { node } | Fault::Wipe { node } => {
                self.set_address(*node, None);
                self.spawned()?.kill(*node).await;
                if matches!(fault, Fault::Wipe { .. }) {
                    self.spawned()?.wipe(*node);
                }
            }
            // The copy is taken now; the node runs on until the heal puts it back.
            Fault::Restore { node } => self.spawned()?.back_up(*node)?,
            Fault::Pause { node } => match &self.spawned {
                Some(spawned) => spawned.pause(*node)?,
                None => nodes::signal(self.nodes[*node].pid, libc::SIGSTOP)?,
            },
            Fault::Partition { minority, one_way } => {
                use network::Endpoint;
                let count = self.nodes.len();
                // Through Redis, the minority is cut from the one thing between the nodes.
                let outside: Vec<Endpoint> = match self.backplane {
                    ChaosBackplane::Mesh => (0..count)
                        .filter(|o| !minority.contains(o))
                        .map(Endpoint::Node)
                        .collect(),
                    ChaosBackplane::Redis => vec![Endpoint::Redis],
                };
                let testbed = self.testbed()?;
                for &inside in minority {
                    for &other in &outside {
                        testbed.cut(Endpoint::Node(inside), other)?;
                        if !one_way {
                            testbed.cut(other, Endpoint::Node(inside))?;
                        }
                    }
                }
            }
            Fault::Loss { percent } => {
                let delay = u32::try_from(args.delay.as_millis()).unwrap_or(u32::MAX);
                let testbed = self.testbed()?;
                testbed.set_loss(*percent)?;
                if delay > 0 && testbed.delay_support().is_ok() {
                    testbed.set_delay(delay)?;
                }
            }
        }
        Ok(())
    }

    /// How `fault` must show while it is held (`None`: it need not show, like loss): the
    /// check that a fault was injected at all, and the failure detector's time.
    fn symptom(&self, fault: &Fault) -> Option<audit::Symptom> {
        let count = self.nodes.len();
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        let split = |victims: Vec<usize>| {
            let others = (0..count).filter(|i| !victims.contains(i)).collect();
            audit::Symptom::Unreachable {
                victims,
                others,
                ids: ids.clone(),
            }
        };
        match (self.backplane, fault) {
            (ChaosBackplane::Mesh, Fault::Partition { minority, .. }) => {
                Some(split(minority.clone()))
            }
            (
                ChaosBackplane::Mesh,
                Fault::Pause { node } | Fault::Kill { node } | Fault::Wipe { node },
            ) => Some(split(vec![*node])),
            (ChaosBackplane::Redis, Fault::Partition { minority, .. }) => {
                Some(audit::Symptom::Unready(minority.clone()))
            }
            _ => None,
        }
    }

    /// Undoes `fault`: restarts a killed or wiped node, restarts a node on its older copy,
    /// resumes a paused one, heals the network.
    async fn heal(&mut self, fault: &Fault) -> anyhow::Result<()> {
        match fault {
            Fault::Restore { node } => {
                self.set_address(*node, None);
                self.spawned()?.kill(*node).await;
                self.spawned()?.restore(*node)?;
                let restarted = self.spawned()?.restart(*node).await?;
                self.set_address(*node, Some(restarted.http));
                self.nodes[*node] = restarted;
            }
            Fault::Kill { node } | Fault::Wipe { node } => {
                let restarted = self.spawned()?.restart(*node).await?;
                self.set_address(*node, Some(restarted.http));
                self.nodes[*node] = restarted;
            }
            Fault::Pause { node } => match &self.spawned {
                Some(spawned) => spawned.resume(*node)?,
                None => nodes::signal(self.nodes[*node].pid, libc::SIGCONT)?,
            },
            Fault::Partition { .. } | Fault::Loss { .. } => self.testbed()?.heal()?,
        }
        Ok(())
    }

    /// Stops what the run started: nodes, then namespaces (on drop of the testbed).
    async fn stop(self) {
        if let Some(spawned) = self.spawned {
            spawned.stop().await;
        }
        drop(self.testbed);
    }
}

/// Runs the schedule against `cluster` and builds the verdict.
async fn check(args: &ChaosArgs, cluster: &mut Cluster) -> anyhow::Result<Verdict> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let node_count = cluster.nodes.len();
    let episodes = schedule::draw(&ScheduleSpec {
        seed,
        nodes: node_count,
        kinds: args.faults.clone(),
        duration: args.duration,
        fault_for: args.fault_for,
        calm: args.calm,
        partition_mode: args.partition,
        loss_percent: args.loss,
    });
    let api_key = cluster.api_key.clone();
    let authenticator = Authenticator::new(&cluster.jwt_secret, &api_key);
    let token = |name: &str, roles: Vec<Role>| {
        authenticator.mint(
            &User {
                id: name.into(),
                name: name.into(),
                roles,
                creator_id: None,
            },
            Duration::from_secs(24 * 3600),
        )
    };
    let admin_token = token("chaos-admin", vec![Role::Admin]);
    let (stop_publishing, publishing_stopped) = watch::channel(false);
    let (stop_subscribers, subscribers_stopped) = watch::channel(false);
    let all_channels: Vec<u32> = (0..args.channels).collect();

    // Subscribers, each starting on its own node.
    let mut subscribers = Vec::new();
    for index in 0..node_count * args.subscribers {
        let state: client::Shared = Arc::default();
        let job = Subscriber {
            home: index % node_count,
            channels: all_channels.clone(),
            token: token(&presence::user(index), Vec::new()),
            directory: cluster.directory(),
            state: Arc::clone(&state),
            stop: subscribers_stopped.clone(),
        };
        subscribers.push((state, tokio::spawn(job.run())));
    }
    wait_for(CONNECT_TIMEOUT, || {
        subscribers
            .iter()
            .all(|(state, _)| client::lock(state).connected)
    })
    .await
    .context("subscribers did not all connect")?;

    // Publishers, one through each node.
    let counters = Arc::new(publisher::Counters::default());
    let every = Duration::from_secs_f64(1.0 / args.rate);
    let publishers: Vec<JoinHandle<publisher::Outcome>> = (0..node_count)
        .map(|index| {
            let job = publisher::Publisher {
                index: index as u32,
                channels: args.channels,
                every,
                api_key: api_key.clone(),
                admin_token: admin_token.clone(),
                directory: cluster.directory(),
                counters: Arc::clone(&counters),
                stop: publishing_stopped.clone(),
            };
            tokio::spawn(job.run())
        })
        .collect();

    // The schedule.
    let started = Instant::now();
    let mut progress = Progress::new(args.json, started, Arc::clone(&counters));
    progress.say(&format!(
        "herald chaos: {node_count} nodes, seed {seed}, {} faults over {:?}; {}",
        episodes.len(),
        args.duration,
        cluster.network
    ));
    let mut reports = Vec::new();
    let mut watchers: Vec<JoinHandle<Option<Duration>>> = Vec::new();
    let mut stale_checks: Vec<Option<JoinHandle<Option<bool>>>> = Vec::new();
    for Episode { at, hold, fault } in &episodes {
        progress.wait_until(started + *at).await;
        let description = fault.describe();
        progress.say(&description);
        let started_ms = started.elapsed().as_millis() as u64;
        cluster
            .inject(fault, args)
            .await
            .with_context(|| format!("cannot inject {description}"))?;
        let symptom = cluster.symptom(fault);
        let observer = symptom
            .map(|symptom| tokio::spawn(audit::observe(cluster.directory(), symptom, *hold)));
        progress.wait_until(Instant::now() + *hold).await;
        let observed_after_ms = match observer {
            Some(observer) => Some(observer.await.ok().flatten().map(|d| d.as_millis() as u64)),
            None => None,
        };
        // What the others hold as a paused node wakes: it must not be ready before it does.
        let woken = match (cluster.backplane, fault) {
            (ChaosBackplane::Mesh, Fault::Pause { node }) => Some((
                *node,
                audit::held_by_others(&cluster.directory(), &api_key, *node).await,
            )),
            _ => None,
        };
        cluster
            .heal(fault)
            .await
            .with_context(|| format!("cannot heal {description}"))?;
        let healed_ms = started.elapsed().as_millis() as u64;
        let stale_check = woken.map(|(node, target)| {
            tokio::spawn(audit::ready_while_behind(
                cluster.directory(),
                api_key.clone(),
                node,
                target,
                CONVERGE_TIMEOUT,
            ))
        });
        progress.say(&format!("healed {description}"));
        watchers.push(tokio::spawn(audit::converge(
            cluster.directory(),
            api_key.clone(),
            CONVERGE_TIMEOUT,
        )));
        reports.push(EpisodeReport {
            fault: fault.clone(),
            description,
            started_ms,
            healed_ms,
            observed_after_ms: observed_after_ms.flatten(),
            expected_symptom: observed_after_ms.is_some(),
            converged_after_ms: None,
            ready_while_behind: None,
        });
        stale_checks.push(stale_check);
    }
    progress.wait_until(started + args.duration).await;
    let _ = stop_publishing.send(true);
    let mut acks = Acks::default();
    let mut errors = Vec::new();
    for publisher in publishers {
        let outcome = publisher.await.context("a publisher failed")?;
        acks.merge(outcome.acks);
        errors.extend(outcome.errors.into_iter().take(2));
    }
    let duration_secs = started.elapsed().as_secs_f64();
    for (report, check) in reports.iter_mut().zip(stale_checks) {
        if let Some(check) = check {
            report.ready_while_behind = check.await.ok().flatten();
        }
    }
    for (report, watcher) in reports.iter_mut().zip(watchers) {
        report.converged_after_ms = watcher.await.ok().flatten().map(|d| d.as_millis() as u64);
    }
    progress.say("every fault healed; waiting for the nodes to converge");

    // The end: converged, end markers through every node, then the audit.
    let directory = cluster.directory();
    let settled_from = Instant::now();
    let settled = audit::settle(&directory, &api_key, CONVERGE_TIMEOUT).await;
    let final_ms = settled
        .is_ok()
        .then(|| settled_from.elapsed().as_millis() as u64);
    let mut problems = Vec::new();
    if let Err(positions) = &settled {
        problems.push(format!("positions at the end: {positions:?}"));
    }
    for (index, node) in cluster.nodes.iter().enumerate() {
        if let Err(error) =
            publisher::publish_markers(node.http, &api_key, index as u32, args.channels).await
        {
            problems.push(format!("end marker through n{}: {error:#}", index + 1));
        }
    }
    let markers = node_count * args.channels as usize;
    let all_markers = wait_for(MARKER_TIMEOUT, || {
        subscribers
            .iter()
            .all(|(state, _)| client::lock(state).markers.len() >= markers)
    })
    .await
    .is_ok();
    let addresses: Vec<SocketAddr> = cluster.nodes.iter().map(|node| node.http).collect();
    let online = || {
        subscribers
            .iter()
            .enumerate()
            .filter(|(_, (state, _))| client::lock(state).online)
            .map(|(index, _)| presence::user(index))
            .collect()
    };
    let agreed = presence::wait_agreed(&addresses, &api_key, online).await;
    let _ = stop_subscribers.send(true);
    for (_, task) in &mut subscribers {
        if tokio::time::timeout(Duration::from_secs(5), &mut *task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
    let emptied = presence::wait_agreed(&addresses, &api_key, BTreeSet::new).await;
    let presence = presence_report(agreed, emptied, &mut problems);

    // Subscribers.
    let mut verdict = Verdict {
        seed,
        nodes: node_count,
        backplane: match (cluster.spawned.is_some(), cluster.backplane) {
            (false, _) => "the given nodes' own".into(),
            (true, ChaosBackplane::Mesh) => "mesh".into(),
            (true, ChaosBackplane::Redis) => "redis".into(),
        },
        network: cluster.network.clone(),
        delay: delay_note(cluster, args),
        duration_secs,
        presence,
        ..Verdict::default()
    };
    for (state, _) in &subscribers {
        let state = client::lock(state);
        let found = ledger::check_client(&state.arrivals, &all_channels, &acks);
        verdict.lost_in_clients += found.missing.len() as u64;
        extend_examples(&mut verdict.lost_examples, &found.missing);
        verdict.duplicates += found.duplicates;
        verdict.out_of_order += found.out_of_order;
        verdict.clients.received += state.arrivals.count() as u64;
        verdict.clients.resumes += state.resumes;
        verdict.clients.replayed += state.replayed;
        if state.markers.len() < markers {
            verdict.clients.without_markers += 1;
        }
    }
    verdict.clients.subscribers = subscribers.len();
    if !all_markers {
        problems.push(format!(
            "{} subscribers did not receive every end marker within {MARKER_TIMEOUT:?}",
            verdict.clients.without_markers
        ));
    }

    // Logs and state.
    let mut logs = Vec::new();
    let mut broadcasts = Vec::new();
    for node in &cluster.nodes {
        logs.push(
            audit::logged_events(node.http, &api_key, args.channels)
                .await
                .with_context(|| format!("cannot read the log of {}", node.id))?,
        );
        broadcasts.push(audit::active_broadcast(node.http, &admin_token).await?);
    }
    let found = ledger::check_logs(&logs, &acks);
    for missing in &found.missing {
        verdict.lost_in_logs += missing.len() as u64;
        extend_examples(&mut verdict.lost_examples, missing);
    }
    verdict.logs_identical = found.identical && settled.is_ok();
    verdict.state_identical = broadcasts.windows(2).all(|pair| pair[0] == pair[1]);
    verdict.publishes = verdict::Publishes {
        acknowledged: acks.acked.len() as u64,
        failed: acks.failed.len() as u64,
        errors,
    };
    let mut converged: Vec<u64> = reports
        .iter()
        .filter_map(|r| r.converged_after_ms)
        .collect();
    let (p50_ms, max_ms) = verdict::p50_max(&mut converged);
    verdict.convergence = verdict::Convergence {
        p50_ms,
        max_ms,
        not_converged: reports.len() - converged.len(),
        final_ms,
    };
    if verdict.convergence.not_converged > 0 {
        problems.push(format!(
            "{} heals were not followed by convergence within {CONVERGE_TIMEOUT:?}",
            verdict.convergence.not_converged
        ));
    }
    let stale: Vec<&str> = reports
        .iter()
        .filter(|r| r.ready_while_behind == Some(true))
        .map(|r| r.description.as_str())
        .collect();
    if !stale.is_empty() {
        problems.push(format!(
            "a woken node was ready while it held less than its peers (stale state passed off \
             as current): {}",
            stale.join(", ")
        ));
    }
    let unseen: Vec<&str> = reports
        .iter()
        .filter(|r| r.expected_symptom && r.observed_after_ms.is_none())
        .map(|r| r.description.as_str())
        .collect();
    if !unseen.is_empty() {
        problems.push(format!(
            "no node noticed these faults while they were held (were they injected?): {}",
            unseen.join(", ")
        ));
    }
    let mut noticed: Vec<u64> = reports.iter().filter_map(|r| r.observed_after_ms).collect();
    let (p50_ms, max_ms) = verdict::p50_max(&mut noticed);
    verdict.detection = verdict::Detection { p50_ms, max_ms };
    verdict.faults = reports;
    verdict.problems = problems;
    verdict.decide();
    Ok(verdict)
}

/// A random secret for the nodes of one run.
fn fresh_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn extend_examples(examples: &mut Vec<ledger::EventKey>, missing: &[ledger::EventKey]) {
    for key in missing {
        if examples.len() >= verdict::SHOWN {
            return;
        }
        if !examples.contains(key) {
            examples.push(*key);
        }
    }
}

fn delay_note(cluster: &Cluster, args: &ChaosArgs) -> String {
    if !args.faults.contains(&FaultKind::Loss) {
        return "not part of this run (no loss faults)".into();
    }
    match cluster.testbed.as_ref().map(|t| t.delay_support()) {
        Some(Ok(())) => format!("{:?} with every loss fault (tc netem)", args.delay),
        Some(Err(reason)) => format!("not injected: {reason}; loss only"),
        None => "not injected: no testbed".into(),
    }
}

/// Waits until `condition` holds, or fails after `timeout`.
async fn wait_for(timeout: Duration, condition: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            bail!("not within {timeout:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// The progress lines on stderr (none with `--json`).
struct Progress {
    quiet: bool,
    started: Instant,
    counters: Arc<publisher::Counters>,
}

impl Progress {
    fn new(quiet: bool, started: Instant, counters: Arc<publisher::Counters>) -> Self {
        Self {
            quiet,
            started,
            counters,
        }
    }

    fn say(&self, what: &str) {
        if !self.quiet {
            eprintln!(
                "[{:>6.1}s] {what} (acknowledged {}, failed {})",
                self.started.elapsed().as_secs_f64(),
                self.counters.acked.load(Ordering::Relaxed),
                self.counters.failed.load(Ordering::Relaxed)
            );
        }
    }

    /// Sleeps until `when`, printing a progress line every few seconds.
    async fn wait_until(&mut self, when: Instant) {
        while Instant::now() < when {
            let next = (Instant::now() + PROGRESS_EVERY).min(when);
            tokio::time::sleep_until(next).await;
            if next < when {
                self.say("running");
            }
        }
    }
}

/// The verdict's presence part, with a problem for each check that failed.
fn presence_report(
    agreed: anyhow::Result<Option<Result<Duration, String>>>,
    emptied: anyhow::Result<Option<Result<Duration, String>>>,
    problems: &mut Vec<String>,
) -> presence::PresenceReport {
    let mut report = presence::PresenceReport::default();
    for (what, outcome) in [("connected", agreed), ("stopped", emptied)] {
        match outcome {
            Ok(None) => return presence::PresenceReport::default(),
            Ok(Some(Ok(after))) => {
                report.checked = true;
                let ms = Some(after.as_millis() as u64);
                if what == "connected" {
                    report.agreed_after_ms = ms;
                } else {
                    report.emptied_after_ms = ms;
                }
            }
            Ok(Some(Err(described))) => {
                report.checked = true;
                problems.push(format!(
                    "presence with the subscribers {what}: the nodes did not agree within \
                     {:?}: {described}",
                    presence::AGREE_TIMEOUT
                ));
                report.disagreement.get_or_insert(described);
            }
            Err(error) => {
                report.checked = true;
                problems.push(format!("presence could not be read: {error:#}"));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        chaos: ChaosArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<ChaosArgs> {
        let cli = Cli::try_parse_from(std::iter::once("chaos").chain(args.iter().copied()))?;
        Ok(cli.chaos)
    }

    #[test]
    fn the_defaults_draw_every_fault() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.faults.len(), 6);
        assert_eq!(args.nodes, 3);
        validate(&args).unwrap();
    }

    #[test]
    fn running_nodes_can_only_be_paused() {
        let args = parse(&["--http", "127.0.0.1:1", "--faults", "kill"]).unwrap();
        let error = validate(&args).unwrap_err().to_string();
        assert!(error.contains("only `--faults pause`"), "{error}");
        let args = parse(&["--http", "127.0.0.1:1", "--faults", "pause"]).unwrap();
        assert!(
            validate(&args)
                .unwrap_err()
                .to_string()
                .contains("--server-pid")
        );
        let args = parse(&[
            "--http",
            "127.0.0.1:1",
            "--faults",
            "pause",
            "--server-pid",
            "1",
        ])
        .unwrap();
        validate(&args).unwrap();
    }

    #[test]
    fn bad_numbers_are_refused() {
        assert!(parse(&["--nodes", "1"]).is_err());
        assert!(parse(&["--loss", "0"]).is_err());
        assert!(parse(&["--faults", "meteor"]).is_err());
        let args = parse(&["--rate", "0"]).unwrap();
        assert!(validate(&args).is_err());
    }
}
