//! `herald bench`: the built-in load generator and its report.
//!
//! A run opens WebSocket clients on the nodes under test (spread over a few client tasks),
//! subscribes them to channels, publishes through the HTTP publish API at a fixed rate, and
//! reports publish-to-receive latency (an HDR histogram: p50, p90, p99, p99.9, max),
//! deliveries and acknowledged publishes per second, the server's CPU time per delivery and,
//! for `idle`, its resident memory per connection. Every client checks that it received each
//! acknowledged publish of its channels exactly once and in order; a run where one did not
//! fails (exit status 2) after printing the report.
//!
//! | file | concept |
//! |---|---|
//! | `scenario.rs` | scenario names, their DESIGN.md section 7 defaults, the plan, routing over nodes |
//! | `nodes.rs` | the nodes under load: `--http` addresses, or `--spawn N` children of this executable |
//! | `floor.rs` | the storeless floor server and `--compare-bare` |
//! | `cluster_timings.rs` | `failover` (dead node noticed) and `catchup` (restarted node converges) |
//! | `retention.rs` | `retention`: publish latency and disk with pruning on and off, resume below the floor |
//! | `subscriber.rs` | WebSocket client tasks: connect, read, latency |
//! | `tracker.rs` | per-client accounting of missing, duplicate and out-of-order events |
//! | `publisher.rs` | fixed-rate publishers, one request in flight each |
//! | `http.rs` | the minimal HTTP/1.1 client the publishers use |
//! | `procfs.rs` | CPU time and resident memory from `/proc` |
//! | `server_metrics.rs` | the server's own counters from `/metrics` (events per group commit) |
//! | `progress.rs` | the progress bar |
//! | `report.rs` | the table, `--json`, and the targets |
//! | `workers.rs` | child bench processes holding a share of the clients (more than one process may open) |
//!
//! The run is measured in one window: from the moment every client is connected until the last
//! expected delivery arrived (or the drain gave up), so connection set-up is not in the CPU
//! figures. All load goes to the given addresses; spawned nodes listen on 127.0.0.1 only.
//!
//! The bench holds one file descriptor per client. A plan with more clients than one process
//! may hold (`--clients-per-process`, by default what the open-file limit allows and at most
//! 19,000) spreads them over worker processes of this executable (`workers.rs`), each
//! connecting from its own loopback address; the orchestrator keeps the publishers, the
//! progress and the report. `idle` then publishes `--broadcasts` events to every client and
//! reports their delivery latency.

pub(crate) mod cluster_timings;
mod floor;
pub(crate) mod http;
pub(crate) mod nodes;
mod procfs;
mod progress;
pub(crate) mod publisher;
mod report;
mod retention;
pub(crate) mod scenario;
mod server_metrics;
mod subscriber;
pub(crate) mod tls;
mod tracker;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::auth::{Authenticator, User};
use crate::config::{DEV_API_KEY, DEV_JWT_SECRET};
use crate::store::SyncMode;

pub use floor::serve as serve_floor;
use nodes::Node;
use progress::Live;
use publisher::{PublishCounters, PublisherJob, PublisherOutcome, micros_histogram};
pub use report::Report;
use report::{
    ClientsReport, Correctness, CpuReport, DeliveryReport, Latency, NodeReport, PublishReport,
};
use scenario::{Overrides, Plan};
pub use scenario::{Routing, Scenario};
use subscriber::{ClientSpec, GroupCounters};

/// How often the orchestrator looks at the counters while waiting.
const POLL: Duration = Duration::from_millis(50);
/// A drain ends early when no delivery arrived for this long.
const DRAIN_STALL: Duration = Duration::from_secs(2);
/// Connecting gives up when no client connected or failed for this long.
const CONNECT_STALL: Duration = Duration::from_secs(60);
/// File descriptors kept free for everything else this process opens.
const SPARE_FILES: u64 = 256;
/// Errors shown in the report.
const SHOWN_ERRORS: usize = 10;
/// Most clients one bench process holds by default (the open-file limit here is 20,000).
const CLIENTS_PER_PROCESS: usize = 19_000;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The workload: fanout, rooms, durable or idle.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// A node to load (its HTTP address); repeat for several. Without it, the bench starts
    /// its own nodes (see --spawn).
    #[arg(long = "http")]
    pub http: Vec<String>,
    /// The pid of each --http node, in the same order, to read its CPU time and memory.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Start N single nodes of this executable on 127.0.0.1 port 0 with temporary data
    /// (the default, with N = 1, when no --http is given).
    #[arg(long, conflicts_with = "http")]
    pub spawn: Option<usize>,
    /// Spawned nodes form one mesh cluster (gossip and QUIC links) instead of independent
    /// nodes; clients and publishers are spread over all of them.
    #[arg(long)]
    pub cluster: bool,
    /// Events published while a node is down (catchup).
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Kill-and-detect rounds (failover).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Commit durability of spawned nodes.
    #[arg(long, value_enum, default_value = "full")]
    pub store_sync: SyncMode,
    /// How clients and publishes are spread over the nodes (default: cluster for --http,
    /// per-channel for spawned nodes, which are independent).
    #[arg(long, value_enum)]
    pub routing: Option<Routing>,
    /// WebSocket clients (default: the scenario's).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Channels (default: the scenario's).
    #[arg(long)]
    pub channels: Option<u32>,
    /// Publishes per second over all publishers; 0 for as fast as acknowledged.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to publish (idle: how long to hold the connections), for example 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Concurrent publishers, each with one request in flight.
    #[arg(long)]
    pub publishers: Option<u32>,
    /// Events per publish request, sent through POST /api/batch (default 1: POST /api/publish);
    /// --rate still counts events.
    #[arg(long)]
    pub batch: Option<u32>,
    /// Tasks the clients are spread over.
    #[arg(long)]
    pub client_tasks: Option<usize>,
    /// Longest wait for in-flight deliveries after the last publish.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub drain: Option<Duration>,
    /// Print the report as JSON on stdout (and no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Events per channel the pruning node keeps (retention; default 100); for failover and
    /// catchup, the spawned nodes' `--history-size`.
    #[arg(long)]
    pub history_size: Option<u64>,
    /// Padding per published event, in bytes (retention).
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Catchup: the node comes back with an empty data dir, like a new node joining.
    #[arg(long)]
    pub wipe: bool,
    /// Catchup: the events are track comments (materialized state a snapshot must carry).
    #[arg(long)]
    pub comments: bool,
    /// Run the same load on the storeless floor (a bare WebSocket fan-out server) first, then
    /// on herald, and print both and the ratios (herald / floor).
    #[arg(long, conflicts_with = "http")]
    pub compare_bare: bool,
    /// Spawned nodes serve HTTPS and wss:// with a certificate generated for the run, and
    /// every bench connection speaks TLS (what TLS costs, against a run without).
    #[arg(long, conflicts_with_all = ["http", "compare_bare"])]
    pub tls: bool,
    /// Most clients this process holds itself; more are spread over worker processes of this
    /// executable (default: what the open-file limit allows, at most 19,000).
    #[arg(long)]
    pub clients_per_process: Option<usize>,
    /// Idle: events published to every client after the hold, one at a time, each waited for
    /// (their delivery latency is the report's).
    #[arg(long, default_value_t = 1)]
    pub broadcasts: u32,
    /// Run as a client worker of another bench process (a job on stdin, results on stdout).
    #[arg(long, hide = true)]
    pub worker: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.worker {
        return workers::serve().await;
    }
    if matches!(args.scenario, Scenario::Failover | Scenario::Catchup) {
        return cluster_timings::run(&args).await;
    }
    if args.scenario == Scenario::Retention {
        return retention::run(&args).await;
    }
    if args.compare_bare {
        if args.scenario == Scenario::Idle {
            bail!("--compare-bare compares deliveries: use fanout, rooms or durable");
        }
        return floor::compare(&args).await;
    }
    let report = load_nodes_and_measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    check(&report)
}

/// Starts the nodes the flags ask for (or takes the `--http` ones), runs the plan on them,
/// and stops what it started.
async fn load_nodes_and_measure(args: &BenchArgs) -> anyhow::Result<Report> {
    let (nodes, spawned) = if args.http.is_empty() {
        let count = args.spawn.unwrap_or(1).max(1);
        // Each spawned node admits its share of the clients (and a margin for publishers),
        // beyond the default 18,000 when the plan asks for more.
        let planned = Plan::new(args.scenario, count, Routing::Cluster, &overrides(args));
        let per_node = planned.clients.div_ceil(count) + 1_000;
        let max_connections = per_node.max(crate::config::Limits::default().max_connections);
        let certificate = if args.tls { Some(tls::enable()?) } else { None };
        let (nodes, spawned) = nodes::spawn_with(count, args.store_sync, args.cluster, |_| {
            let mut flags = vec!["--max-connections".into(), max_connections.to_string()];
            if let Some(files) = &certificate {
                flags.push("--tls-cert".into());
                flags.push(files.cert.display().to_string());
                flags.push("--tls-key".into());
                flags.push(files.key.display().to_string());
            }
            flags
        })
        .await?;
        // The nodes read the files at start (and on SIGHUP, which the bench never sends).
        drop(certificate);
        if args.cluster {
            cluster_timings::wait_linked(&nodes).await?;
        }
        (nodes, Some(spawned))
    } else {
        (external_nodes(args).await?, None)
    };
    let routing = args.routing.unwrap_or(match spawned {
        Some(_) if !args.cluster => Routing::PerChannel,
        _ => Routing::Cluster,
    });
    // On Ctrl-C, stop the spawned nodes rather than leave them running.
    let result = tokio::select! {
        result = measure(args, &nodes, routing) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Some(spawned) = spawned {
        spawned.stop().await;
    }
    result
}

/// Fails a run whose clients missed, duplicated or reordered events.
fn check(report: &Report) -> anyhow::Result<()> {
    let k = &report.correctness;
    if !k.ok() {
        bail!(
            "correctness check failed: {} missing, {} duplicated, {} out of order",
            k.missing,
            k.duplicates,
            k.out_of_order
        );
    }
    Ok(())
}

async fn external_nodes(args: &BenchArgs) -> anyhow::Result<Vec<Node>> {
    if !args.server_pids.is_empty() && args.server_pids.len() != args.http.len() {
        bail!("give one --server-pid per --http, in the same order");
    }
    nodes::resolve(&args.http, &args.server_pids).await
}

/// Prints a report of the scenarios that spawn their own nodes: JSON with `--json`, else
/// `human`.
fn print_json_or(json: bool, report: &serde_json::Value, human: impl Fn(&serde_json::Value)) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        human(report);
    }
}

fn secret(env: &str, default: &str) -> String {
    super::env_secret(env).unwrap_or_else(|| default.to_string())
}

fn overrides(args: &BenchArgs) -> Overrides {
    Overrides {
        clients: args.clients,
        channels: args.channels,
        rate: args.rate,
        duration: args.duration,
        publishers: args.publishers,
        client_tasks: args.client_tasks,
        drain: args.drain,
        batch: args.batch,
    }
}

/// Where the clients run: client tasks in this process, or worker processes.
enum Clients {
    Local(Vec<tokio::task::JoinHandle<subscriber::GroupOutcome>>),
    Workers(Vec<workers::Worker>),
}

/// Runs the plan against `nodes` and builds the report.
async fn measure(args: &BenchArgs, nodes: &[Node], routing: Routing) -> anyhow::Result<Report> {
    let plan = Arc::new(Plan::new(
        args.scenario,
        nodes.len(),
        routing,
        &overrides(args),
    ));
    let publisher_files = u64::from(plan.publishers) * nodes.len() as u64;
    let per_process = args.clients_per_process.unwrap_or_else(|| {
        let allowed = procfs::open_files_limit()
            .map(|limit| limit.saturating_sub(SPARE_FILES + publisher_files) as usize)
            .unwrap_or(CLIENTS_PER_PROCESS);
        allowed.min(CLIENTS_PER_PROCESS)
    });
    if plan.batch > 1 && plan.routing == Routing::PerChannel && nodes.len() > 1 {
        bail!("--batch needs one node, or nodes that form a cluster (--cluster)");
    }
    let in_workers = plan.clients > per_process.max(1);
    let local_clients = if in_workers { 0 } else { plan.clients as u64 };
    let needed = local_clients + publisher_files;
    if let Some(limit) = procfs::open_files_limit() {
        if needed + SPARE_FILES > limit {
            bail!(
                "{} clients and {} publisher connections need about {} open files; this process \
                 may open {limit}: use fewer clients, or several bench processes",
                plan.clients,
                u64::from(plan.publishers) * nodes.len() as u64,
                needed + SPARE_FILES
            );
        }
    }
    let visible = !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let api_key: Arc<str> = secret("HERALD_API_KEY", DEV_API_KEY).into();
    let auth = Authenticator::new(&secret("HERALD_JWT_SECRET", DEV_JWT_SECRET), &api_key);

    // Place the clients.
    let mut per_node = vec![0usize; nodes.len()];
    let mut specs: Vec<ClientSpec> = Vec::with_capacity(plan.clients);
    for index in 0..plan.clients {
        let (node, channels) = plan.client_placement(index, nodes.len());
        per_node[node] += 1;
        let id = format!("bench-{index}");
        let user = User {
            name: id.clone(),
            id,
            roles: Vec::new(),
            creator_id: None,
        };
        specs.push(ClientSpec {
            node: nodes[node].http,
            channels,
            token: auth.mint(&user, Duration::from_secs(4 * 3600)),
            source: None,
        });
    }
    let rss_before = rss_now(nodes);

    // Connect: in client tasks of this process, or in worker processes, each holding at most
    // `per_process` clients (spread evenly) from its own loopback address.
    let shares = if in_workers {
        plan.clients.div_ceil(per_process.max(1))
    } else {
        plan.client_tasks
    };
    let mut groups: Vec<Vec<ClientSpec>> = vec![Vec::new(); shares];
    for (index, mut spec) in specs.into_iter().enumerate() {
        let share = index % shares;
        if in_workers {
            spec.source = workers::source_address(share, spec.node.ip());
        }
        groups[share].push(spec);
    }
    let live = Live {
        groups: groups
            .iter()
            .map(|_| Arc::new(GroupCounters::default()))
            .collect(),
        publishes: Arc::new(PublishCounters::default()),
    };
    let (stop, stopped) = watch::channel(false);
    let connect_started = Instant::now();
    let clients = if in_workers {
        let mut started = Vec::with_capacity(groups.len());
        for (clients, counters) in groups.into_iter().zip(&live.groups) {
            let job = workers::Job {
                clients,
                client_tasks: plan.client_tasks,
            };
            started.push(
                workers::Worker::start(plan.scenario.name(), &job, Arc::clone(counters)).await?,
            );
        }
        Clients::Workers(started)
    } else {
        Clients::Local(
            groups
                .into_iter()
                .zip(&live.groups)
                .map(|(specs, counters)| {
                    tokio::spawn(subscriber::run_group(
                        specs,
                        Arc::clone(counters),
                        stopped.clone(),
                    ))
                })
                .collect(),
        )
    };
    let bar = progress::bar(visible, plan.clients as u64, "connect");
    let mut last_change = (0, Instant::now());
    loop {
        let totals = live.totals();
        let done = totals.connected + totals.connect_failed;
        bar.set_position(done);
        bar.set_message(format!(
            "{} of {} connected, {} failed",
            totals.connected, plan.clients, totals.connect_failed
        ));
        if done >= plan.clients as u64 {
            break;
        }
        if done != last_change.0 {
            last_change = (done, Instant::now());
        } else if last_change.1.elapsed() > CONNECT_STALL {
            let _ = stop.send(true);
            bail!("connecting stalled at {done} of {} clients", plan.clients);
        }
        tokio::time::sleep(POLL).await;
    }
    bar.finish_and_clear();
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    let connected = live.totals();
    if plan.clients > 0 && connected.connected == 0 {
        let _ = stop.send(true);
        let summaries = summaries(clients, &tracker::AckLedger::new()).await?;
        let errors: Vec<String> = summaries.into_iter().flat_map(|s| s.errors).collect();
        bail!(
            "no client could connect: {}",
            errors.first().map_or("no error recorded", String::as_str)
        );
    }

    // The measured window.
    let metrics_before = snapshots(nodes, &api_key).await;
    let cpu_before: Vec<Option<Duration>> = nodes
        .iter()
        .map(|n| n.pid.and_then(procfs::cpu_time))
        .collect();
    let own_before = procfs::own_cpu_time();
    let window_start = Instant::now();
    let mut publishing = None;
    // Idle: memory is read at the end of the hold, before the broadcasts.
    let mut rss_held = None;
    if plan.scenario == Scenario::Idle {
        hold(&plan, visible, &live, nodes).await;
        rss_held = Some(rss_now(nodes));
        if args.broadcasts > 0 {
            publishing = Some(broadcast(&plan, args.broadcasts, &live, nodes, &api_key).await);
        }
    } else {
        publishing = Some(publish(&plan, visible, &live, nodes, &api_key).await);
    }
    let cpu_after: Vec<Option<Duration>> = nodes
        .iter()
        .map(|n| n.pid.and_then(procfs::cpu_time))
        .collect();
    let own_after = procfs::own_cpu_time();
    let window = window_start.elapsed();
    let metrics_after = snapshots(nodes, &api_key).await;
    let rss_after = rss_held.unwrap_or_else(|| rss_now(nodes));

    let _ = stop.send(true);
    let (published, ledger) = match publishing {
        Some((published, ledger)) => (Some(published), ledger),
        None => (None, tracker::AckLedger::new()),
    };

    // Assemble the report.
    let mut latency = micros_histogram();
    let mut errors = Vec::new();
    let mut correctness = Correctness::default();
    let mut received = 0;
    let mut expected = 0;
    for summary in summaries(clients, &ledger).await? {
        summary.add_to(&mut latency, &mut correctness, &mut errors);
        received += summary.received;
        expected += summary.expected;
    }
    let final_totals = live.totals();
    let node_reports: Vec<NodeReport> = nodes
        .iter()
        .enumerate()
        .map(|(index, node)| {
            let cpu = match (cpu_before[index], cpu_after[index]) {
                (Some(before), Some(after)) => Some(after.saturating_sub(before).as_secs_f64()),
                _ => None,
            };
            let (before, after) = (rss_before[index], rss_after[index]);
            let per_connection = match (before, after) {
                (Some(before), Some(after))
                    if plan.scenario == Scenario::Idle && per_node[index] > 0 =>
                {
                    Some(after.saturating_sub(before) as f64 / per_node[index] as f64)
                }
                _ => None,
            };
            NodeReport {
                id: node.id.clone(),
                http: node.http.to_string(),
                pid: node.pid,
                clients: per_node[index],
                cpu_seconds: cpu,
                rss_before_kib: before,
                rss_after_kib: after,
                rss_per_connection_kib: per_connection,
            }
        })
        .collect();
    let server_seconds = if node_reports.iter().all(|n| n.cpu_seconds.is_some()) {
        Some(
            node_reports
                .iter()
                .filter_map(|n| n.cpu_seconds)
                .sum::<f64>(),
        )
    } else {
        None
    };
    let bench_seconds = match (own_before, own_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before).as_secs_f64()),
        _ => None,
    };
    let per = |seconds: Option<f64>, count: u64| {
        seconds
            .filter(|_| count > 0)
            .map(|s| s * 1e6 / count as f64)
    };
    let (publishes, drain_seconds, publish_window) = match &published {
        Some(p) => (
            PublishReport {
                sent: p.sent,
                acked: p.acked,
                failed: p.failed,
                acked_per_second: p.acked as f64 / p.window.as_secs_f64().max(1e-9),
                ack_latency_ms: Latency::from_micros(&p.ack_latency),
                max_lag_ms: p.max_lag.as_secs_f64() * 1000.0,
                window_seconds: p.window.as_secs_f64(),
            },
            p.drain.as_secs_f64(),
            p.window.as_secs_f64(),
        ),
        None => (
            PublishReport {
                sent: 0,
                acked: 0,
                failed: 0,
                acked_per_second: 0.0,
                ack_latency_ms: None,
                max_lag_ms: 0.0,
                window_seconds: 0.0,
            },
            0.0,
            0.0,
        ),
    };
    errors.extend(published.iter().flat_map(|p| p.errors.iter().cloned()));
    errors.truncate(SHOWN_ERRORS);
    let acked = publishes.acked;
    let mut report = Report {
        plan: (*plan).clone(),
        nodes: node_reports,
        clients: ClientsReport {
            asked: plan.clients,
            connected: connected.connected as usize,
            connect_failed: connected.connect_failed as usize,
            disconnected: final_totals.disconnected as usize,
            connect_seconds,
            connects_per_second: connected.connected as f64 / connect_seconds.max(1e-9),
        },
        deliveries: DeliveryReport {
            expected,
            received,
            asked_per_second: plan.asked_deliveries_per_second(),
            per_second: received as f64 / (publish_window + drain_seconds).max(1e-9),
            drain_seconds,
        },
        publishes,
        latency_ms: Latency::from_micros(&latency),
        correctness,
        cpu: CpuReport {
            server_seconds,
            server_us_per_delivery: per(server_seconds, received),
            server_us_per_publish: per(server_seconds, acked),
            bench_seconds,
            bench_us_per_delivery: per(bench_seconds, received),
            window_seconds: window.as_secs_f64(),
        },
        server_counters: server_metrics::difference(
            &metrics_before
                .into_iter()
                .zip(metrics_after)
                .collect::<Vec<_>>(),
        ),
        targets: Vec::new(),
        errors,
    };
    report.judge();
    Ok(report)
}

/// Every client's deliveries checked against `ledger`, summed per client task or worker.
async fn summaries(
    clients: Clients,
    ledger: &tracker::AckLedger,
) -> anyhow::Result<Vec<workers::Summary>> {
    match clients {
        Clients::Local(tasks) => {
            let mut summaries = Vec::with_capacity(tasks.len());
            for task in tasks {
                let outcome = task.await.context("a client task failed")?;
                summaries.push(workers::Summary::of(&outcome, ledger));
            }
            Ok(summaries)
        }
        Clients::Workers(workers) => {
            futures_util::future::join_all(workers.into_iter().map(|w| w.finish(ledger)))
                .await
                .into_iter()
                .collect()
        }
    }
}

/// Idle, after the hold: publishes `count` events on the channel every client listens to,
/// one at a time, each waited for until every connected client has it (or the drain gives up).
async fn broadcast(
    plan: &Plan,
    count: u32,
    live: &Live,
    nodes: &[Node],
    api_key: &str,
) -> (Published, tracker::AckLedger) {
    let mut ledger = tracker::AckLedger::new();
    let mut published = Published::none();
    let key = tracker::StreamKey {
        channel: 0,
        publisher: 0,
    };
    let mut connection = http::HttpConnection::new(nodes[0].http, api_key);
    let start = Instant::now();
    let received_before = live.totals().received;
    for n in 1..=u64::from(count) {
        let body = format!(
            r#"{{"channel":"{}","data":{{"type":"bench","t":{},"p":0,"c":0,"n":{n}}}}}"#,
            scenario::channel_name(0),
            publisher::unix_nanos(),
        );
        let sent_at = Instant::now();
        published.sent += 1;
        match connection.post_json("/api/publish", body.as_bytes()).await {
            Ok(answer) if answer.status == 200 => {
                published.acked += 1;
                let micros = sent_at.elapsed().as_micros() as u64;
                published.ack_latency.saturating_record(micros.max(1));
                ledger.acked(key);
            }
            answer => {
                published.failed += 1;
                ledger.failed(key, n);
                published.errors.push(match answer {
                    Ok(answer) => format!("broadcast: HTTP {}", answer.status),
                    Err(error) => format!("broadcast: {error:#}"),
                });
                continue;
            }
        }
        let sent = Instant::now();
        let acked = published.acked;
        live.drain(plan.drain, DRAIN_STALL, |totals| {
            let listening = totals.connected.saturating_sub(totals.disconnected);
            totals.received - received_before >= listening * acked
        })
        .await;
        published.drain = sent.elapsed();
    }
    published.window = start.elapsed().saturating_sub(published.drain);
    (published, ledger)
}

/// Each node's resident memory, KiB (when its pid is known).
fn rss_now(nodes: &[Node]) -> Vec<Option<u64>> {
    nodes
        .iter()
        .map(|n| n.pid.and_then(procfs::rss_kib))
        .collect()
}

async fn snapshots(nodes: &[Node], api_key: &str) -> Vec<Option<server_metrics::Snapshot>> {
    let mut snapshots = Vec::with_capacity(nodes.len());
    for node in nodes {
        snapshots.push(server_metrics::snapshot(node.http, api_key).await);
    }
    snapshots
}

/// Idle: hold the connections for the plan's duration while memory settles.
async fn hold(plan: &Plan, visible: bool, live: &Live, nodes: &[Node]) {
    let millis = plan.duration.as_millis() as u64;
    let bar = progress::bar(visible, millis, "hold");
    let start = Instant::now();
    while start.elapsed() < plan.duration {
        bar.set_position(start.elapsed().as_millis() as u64);
        let rss: u64 = nodes
            .iter()
            .filter_map(|n| n.pid.and_then(procfs::rss_kib))
            .sum();
        let totals = live.totals();
        bar.set_message(format!(
            "{} connections, server RSS {} MiB",
            totals.connected - totals.disconnected.min(totals.connected),
            rss / 1024
        ));
        tokio::time::sleep(POLL.min(plan.duration.saturating_sub(start.elapsed()))).await;
    }
    bar.finish_and_clear();
}

/// The merged result of every publisher, and how long publishing and draining took.
struct Published {
    sent: u64,
    acked: u64,
    failed: u64,
    ack_latency: hdrhistogram::Histogram<u64>,
    max_lag: Duration,
    errors: Vec<String>,
    window: Duration,
    drain: Duration,
}

impl Published {
    /// Nothing published yet.
    fn none() -> Self {
        Self {
            sent: 0,
            acked: 0,
            failed: 0,
            ack_latency: micros_histogram(),
            max_lag: Duration::ZERO,
            errors: Vec::new(),
            window: Duration::ZERO,
            drain: Duration::ZERO,
        }
    }
}

/// Publishes for the plan's duration, then waits for the deliveries still in flight.
async fn publish(
    plan: &Arc<Plan>,
    visible: bool,
    live: &Live,
    nodes: &[Node],
    api_key: &Arc<str>,
) -> (Published, tracker::AckLedger) {
    let addrs = Arc::new(nodes.iter().map(|n| n.http).collect::<Vec<_>>());
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + plan.duration;
    let tasks: Vec<_> = (0..plan.publishers)
        .map(|index| {
            tokio::spawn(publisher::run(PublisherJob {
                index,
                plan: Arc::clone(plan),
                nodes: Arc::clone(&addrs),
                api_key: Arc::clone(api_key),
                start,
                end,
                counters: Arc::clone(&live.publishes),
            }))
        })
        .collect();
    let millis = plan.duration.as_millis() as u64;
    let bar = progress::bar(visible, millis, plan.scenario.name());
    while tasks.iter().any(|task| !task.is_finished()) {
        let elapsed = start.elapsed();
        bar.set_position((elapsed.as_millis() as u64).min(millis));
        bar.set_message(progress::load_message(&live.totals()));
        tokio::time::sleep(POLL).await;
    }
    let mut ledger = tracker::AckLedger::new();
    let mut published = Published::none();
    for task in tasks {
        let outcome: PublisherOutcome = match task.await {
            Ok(outcome) => outcome,
            Err(error) => {
                published
                    .errors
                    .push(format!("a publisher failed: {error}"));
                continue;
            }
        };
        ledger.merge(outcome.ledger);
        published.sent += outcome.sent;
        published.acked += outcome.acked;
        published.failed += outcome.failed;
        let _ = published.ack_latency.add(&outcome.ack_latency);
        published.max_lag = published.max_lag.max(outcome.max_lag);
        published.errors.extend(outcome.errors);
    }
    let publishing_done = Instant::now();
    published.window = publishing_done.saturating_duration_since(start);

    // Drain: every acknowledged publish times its channel's subscribers, or a stall, or the cap.
    let mut subscribers = vec![0u64; plan.channels as usize];
    for index in 0..plan.clients {
        for channel in plan.client_placement(index, nodes.len()).1 {
            subscribers[channel as usize] += 1;
        }
    }
    let expected: u64 = (0..plan.channels)
        .map(|c| ledger.acked_on(c) * subscribers[c as usize])
        .sum();
    bar.set_prefix("drain");
    let cap = plan.drain.saturating_sub(publishing_done.elapsed());
    live.drain(cap, DRAIN_STALL, |totals| {
        bar.set_message(progress::load_message(totals));
        totals.received >= expected
    })
    .await;
    published.drain = publishing_done.elapsed();
    bar.finish_and_clear();
    (published, ledger)
}
