//! Client workers: child bench processes that each hold a share of the clients, for runs with
//! more connections than one process may open (one file descriptor each; 20,000 here).
//!
//! The orchestrator starts this executable as `herald bench <scenario> --worker`, writes one
//! [`Job`] line (the clients to open, already placed and with their tokens) to its stdin, and
//! reads its stdout: a [`Line::Status`] every [`STATUS_EVERY`] (the orchestrator copies it into
//! that worker's [`GroupCounters`], so the progress bar, the connect wait and the drain see
//! workers and local client tasks alike), then one [`Line::Outcome`]. The orchestrator asks for
//! the outcome with a [`Stop`] line carrying the acknowledged publishes, so the worker checks
//! its own clients' deliveries and sends back sums ([`Summary`]), never per-client state.
//! A worker whose stdin closes stops too, so none outlives its orchestrator.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{oneshot, watch};

use super::publisher::micros_histogram;
use super::report::Correctness;
use super::subscriber::{self, ClientSpec, GroupCounters, GroupOutcome};
use super::tracker::{AckLedger, StreamAcks, StreamKey};

/// How often a worker reports its counters.
const STATUS_EVERY: Duration = Duration::from_millis(100);
/// The longest line the orchestrator reads from a worker (an outcome with its histogram).
const MAX_LINE: usize = 16 * 1024 * 1024;
/// How long a worker may take to exit after its outcome.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a worker is asked to do.
#[derive(Serialize, Deserialize)]
pub struct Job {
    pub clients: Vec<ClientSpec>,
    pub client_tasks: usize,
}

/// The orchestrator's request for the outcome.
#[derive(Serialize, Deserialize, Default)]
pub struct Stop {
    /// Acknowledged publishes per stream: `(channel, publisher, acked, failed seqs)`.
    pub acks: Vec<(u32, u32, u64, Vec<u64>)>,
}

/// A worker's stdout, one JSON line each.
#[derive(Serialize, Deserialize)]
enum Line {
    Status {
        connected: u64,
        connect_failed: u64,
        received: u64,
        disconnected: u64,
    },
    Outcome(Summary),
}

/// What a set of clients saw, summed: what the report needs from a client task or a worker.
#[derive(Serialize, Deserialize)]
pub struct Summary {
    /// Publish to receive, microseconds: `(value, count)` pairs of the histogram.
    pub latency: Vec<(u64, u64)>,
    pub received: u64,
    /// Deliveries the acknowledged publishes asked of these clients.
    pub expected: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub clients_affected: u64,
    pub errors: Vec<String>,
}

impl Summary {
    /// Sums one client task's outcome against the acknowledged publishes.
    pub fn of(outcome: &GroupOutcome, ledger: &AckLedger) -> Self {
        let mut summary = Self {
            latency: outcome
                .latency
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
            received: outcome.received,
            expected: 0,
            missing: 0,
            duplicates: 0,
            out_of_order: 0,
            clients_affected: 0,
            errors: outcome.errors.clone(),
        };
        for client in &outcome.clients {
            summary.expected += client
                .channels
                .iter()
                .map(|&c| ledger.acked_on(c))
                .sum::<u64>();
            let missing = client.tracker.missing(ledger, &client.channels);
            let (duplicates, out_of_order) =
                (client.tracker.duplicates, client.tracker.out_of_order);
            summary.missing += missing;
            summary.duplicates += duplicates;
            summary.out_of_order += out_of_order;
            if missing + duplicates + out_of_order > 0 {
                summary.clients_affected += 1;
            }
        }
        summary
    }

    /// Adds this summary to the run's totals.
    pub fn add_to(
        &self,
        latency: &mut Histogram<u64>,
        correctness: &mut Correctness,
        errors: &mut Vec<String>,
    ) {
        for &(value, count) in &self.latency {
            latency.saturating_record_n(value, count);
        }
        correctness.missing += self.missing;
        correctness.duplicates += self.duplicates;
        correctness.out_of_order += self.out_of_order;
        correctness.clients_affected += self.clients_affected;
        errors.extend(self.errors.iter().cloned());
    }
}

impl Stop {
    pub fn of(ledger: &AckLedger) -> Self {
        Self {
            acks: ledger
                .streams()
                .map(|(key, acks)| (key.channel, key.publisher, acks.acked, acks.failed.clone()))
                .collect(),
        }
    }

    fn ledger(&self) -> AckLedger {
        let mut ledger = AckLedger::new();
        for (channel, publisher, acked, failed) in &self.acks {
            let key = StreamKey {
                channel: *channel,
                publisher: *publisher,
            };
            ledger.insert(
                key,
                StreamAcks {
                    acked: *acked,
                    failed: failed.clone(),
                },
            );
        }
        ledger
    }
}

/// The source address of worker `index`'s clients when the nodes are on IPv4 loopback:
/// `127.0.1.<index + 1>`, so each worker has the whole ephemeral port range to itself.
pub fn source_address(index: usize, node: IpAddr) -> Option<IpAddr> {
    match node {
        IpAddr::V4(v4) if v4.is_loopback() => Some(IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            1,
            (index % 250 + 1) as u8,
        ))),
        _ => None,
    }
}

/// A running worker, seen from the orchestrator.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    outcome: oneshot::Receiver<anyhow::Result<Summary>>,
}

impl Worker {
    /// Starts a worker for `job`; its status lines go to `counters`.
    pub async fn start(
        scenario: &str,
        job: &Job,
        counters: Arc<GroupCounters>,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the herald executable")?;
        let mut child = Command::new(exe)
            .args(["bench", scenario, "--worker"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a bench worker")?;
        let mut stdin = child.stdin.take().context("no stdin to the worker")?;
        let stdout = child.stdout.take().context("no stdout from the worker")?;
        let mut line = serde_json::to_vec(job)?;
        line.push(b'\n');
        stdin
            .write_all(&line)
            .await
            .context("cannot hand the job to a worker")?;
        stdin.flush().await?;
        let (done, outcome) = oneshot::channel();
        tokio::spawn(async move {
            let _ = done.send(follow(BufReader::new(stdout), &counters).await);
        });
        Ok(Self {
            child,
            stdin,
            outcome,
        })
    }

    /// Asks for the outcome (deliveries checked against `ledger`) and waits for the worker.
    pub async fn finish(mut self, ledger: &AckLedger) -> anyhow::Result<Summary> {
        let mut line = serde_json::to_vec(&Stop::of(ledger))?;
        line.push(b'\n');
        self.stdin
            .write_all(&line)
            .await
            .context("a worker is gone")?;
        self.stdin.flush().await?;
        let summary = self.outcome.await.context("a worker's output ended")??;
        drop(self.stdin);
        if tokio::time::timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        Ok(summary)
    }
}

/// Reads a worker's lines: status into `counters`, until its outcome.
async fn follow(
    mut stdout: BufReader<tokio::process::ChildStdout>,
    counters: &GroupCounters,
) -> anyhow::Result<Summary> {
    let mut line = String::new();
    loop {
        line.clear();
        let read = (&mut stdout)
            .take(MAX_LINE as u64)
            .read_line(&mut line)
            .await
            .context("reading a worker")?;
        if read == 0 {
            bail!("a worker ended without an outcome");
        }
        match serde_json::from_str::<Line>(&line).context("a worker's line")? {
            Line::Status {
                connected,
                connect_failed,
                received,
                disconnected,
            } => {
                counters.connected.store(connected, Ordering::Relaxed);
                counters
                    .connect_failed
                    .store(connect_failed, Ordering::Relaxed);
                counters.received.store(received, Ordering::Relaxed);
                counters.disconnected.store(disconnected, Ordering::Relaxed);
            }
            Line::Outcome(summary) => return Ok(summary),
        }
    }
}

/// The worker's side (`herald bench <scenario> --worker`): runs the job from stdin.
pub async fn serve() -> anyhow::Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    (&mut stdin)
        .take(MAX_LINE as u64)
        .read_line(&mut line)
        .await
        .context("reading the job")?;
    let job: Job = serde_json::from_str(&line).context("the job")?;
    let tasks = job.client_tasks.clamp(1, job.clients.len().max(1));
    let mut groups: Vec<Vec<ClientSpec>> = vec![Vec::new(); tasks];
    for (index, spec) in job.clients.into_iter().enumerate() {
        groups[index % tasks].push(spec);
    }
    let counters: Vec<Arc<GroupCounters>> = groups
        .iter()
        .map(|_| Arc::new(GroupCounters::default()))
        .collect();
    let (stop, stopped) = watch::channel(false);
    let group_tasks: Vec<_> = groups
        .into_iter()
        .zip(&counters)
        .map(|(specs, counters)| {
            tokio::spawn(subscriber::run_group(
                specs,
                Arc::clone(counters),
                stopped.clone(),
            ))
        })
        .collect();
    // The stop request is read by a task of its own (a line read is not cancel-safe).
    let (requested, mut request) = oneshot::channel();
    tokio::spawn(async move {
        let mut line = String::new();
        let read = (&mut stdin)
            .take(MAX_LINE as u64)
            .read_line(&mut line)
            .await;
        let stop = match read {
            Ok(n) if n > 0 => serde_json::from_str::<Stop>(&line).unwrap_or_default(),
            _ => Stop::default(),
        };
        let _ = requested.send(stop);
    });
    let mut stdout = tokio::io::stdout();
    let mut ticker = tokio::time::interval(STATUS_EVERY);
    let request = loop {
        tokio::select! {
            _ = ticker.tick() => {
                let mut text = serde_json::to_vec(&status(&counters))?;
                text.push(b'\n');
                stdout.write_all(&text).await?;
                stdout.flush().await?;
            }
            stop = &mut request => break stop.unwrap_or_default(),
        }
    };
    let _ = stop.send(true);
    let ledger = request.ledger();
    let mut total = Summary::of(
        &GroupOutcome {
            latency: micros_histogram(),
            received: 0,
            clients: Vec::new(),
            errors: Vec::new(),
        },
        &ledger,
    );
    let mut latency = micros_histogram();
    for task in group_tasks {
        let outcome = task.await.context("a client task failed")?;
        let part = Summary::of(&outcome, &ledger);
        let _ = latency.add(&outcome.latency);
        total.received += part.received;
        total.expected += part.expected;
        total.missing += part.missing;
        total.duplicates += part.duplicates;
        total.out_of_order += part.out_of_order;
        total.clients_affected += part.clients_affected;
        total.errors.extend(part.errors);
    }
    total.latency = latency
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    let mut text = serde_json::to_vec(&Line::Outcome(total))?;
    text.push(b'\n');
    stdout.write_all(&text).await?;
    stdout.flush().await?;
    Ok(())
}

fn status(counters: &[Arc<GroupCounters>]) -> Line {
    let sum = |read: fn(&GroupCounters) -> u64| counters.iter().map(|c| read(c)).sum();
    Line::Status {
        connected: sum(|c| c.connected.load(Ordering::Relaxed)),
        connect_failed: sum(|c| c.connect_failed.load(Ordering::Relaxed)),
        received: sum(|c| c.received.load(Ordering::Relaxed)),
        disconnected: sum(|c| c.disconnected.load(Ordering::Relaxed)),
    }
}
