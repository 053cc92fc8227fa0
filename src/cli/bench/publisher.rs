//! Publishers: tasks that publish through `POST /api/publish` at a fixed rate (or as fast as
//! acknowledgements come back), each with one request in flight at a time. With `--batch N`
//! each request is a `POST /api/batch` of N events (the rate still counts events), walking the
//! channels as N single publishes would; a failed batch counts its N events as failed.
//!
//! One in flight per publisher is what makes per-stream order meaningful: publish `n + 1` on a
//! channel is sent only after `n` was acknowledged, so the server must deliver them in that
//! order. Rate: publisher `k` of `P` sends every `P / rate` seconds, shifted by `k / rate`, so
//! together they publish evenly. A publisher that falls behind sends at once (no publish is
//! skipped) and the report shows how far behind it fell.
//!
//! Each event is `{"type":"bench","t":<unix nanos at send>,"p":<publisher>,"c":<channel>,
//! "n":<seq>}`: `t` gives the publish-to-receive latency, `(c, p, n)` the correctness checks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::http::HttpConnection;
use super::scenario::{Plan, channel_name};
use super::tracker::{AckLedger, StreamKey};

/// A publish that takes longer than this is counted as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Error texts kept per publisher for the report.
const KEPT_ERRORS: usize = 3;

/// Live counts every publisher adds to, for the progress bar and the drain.
#[derive(Debug, Default)]
pub struct PublishCounters {
    pub acked: AtomicU64,
    pub failed: AtomicU64,
}

/// What one publisher did.
pub struct PublisherOutcome {
    pub ledger: AckLedger,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    /// Request to acknowledgement (commit), microseconds.
    pub ack_latency: Histogram<u64>,
    /// How far behind its schedule the publisher fell at worst.
    pub max_lag: Duration,
    pub errors: Vec<String>,
}

/// The schedule and target of one publisher.
pub struct PublisherJob {
    pub index: u32,
    pub plan: Arc<Plan>,
    pub nodes: Arc<Vec<SocketAddr>>,
    pub api_key: Arc<str>,
    pub start: Instant,
    pub end: Instant,
    pub counters: Arc<PublishCounters>,
}

/// A latency histogram in microseconds, from 1 us to an hour, 3 significant figures.
pub fn micros_histogram() -> Histogram<u64> {
    // Bounds are constants that satisfy the constructor's rules (low >= 1, high >= 2 * low,
    // sigfig <= 5), so this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub async fn run(job: PublisherJob) -> PublisherOutcome {
    let plan = &job.plan;
    let mut connections: Vec<Option<HttpConnection>> = job.nodes.iter().map(|_| None).collect();
    let mut seqs = vec![0u64; plan.channels as usize];
    let mut outcome = PublisherOutcome {
        ledger: AckLedger::new(),
        sent: 0,
        acked: 0,
        failed: 0,
        ack_latency: micros_histogram(),
        max_lag: Duration::ZERO,
        errors: Vec::new(),
    };
    // With batches the rate counts events: a request goes out every `batch` events' worth.
    let batch = plan.batch.max(1);
    let path = if batch > 1 {
        "/api/batch"
    } else {
        "/api/publish"
    };
    let per_request = f64::from(batch);
    let interval = plan
        .rate
        .map(|rate| Duration::from_secs_f64(f64::from(plan.publishers) * per_request / rate));
    let mut due = job.start
        + plan
            .rate
            .map(|rate| Duration::from_secs_f64(f64::from(job.index) * per_request / rate))
            .unwrap_or_default();
    let mut body = String::with_capacity(160 * batch as usize);
    let mut streams: Vec<(StreamKey, u64)> = Vec::with_capacity(batch as usize);
    for step in 0u64.. {
        match interval {
            Some(interval) => {
                if due >= job.end {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep_until(due).await;
                } else {
                    outcome.max_lag = outcome.max_lag.max(now - due);
                }
                due += interval;
            }
            None => {
                if Instant::now() >= job.end {
                    break;
                }
                if step == 0 {
                    tokio::time::sleep_until(job.start).await;
                }
            }
        }
        let first = plan.publish_channel(job.index, step * u64::from(batch));
        let node = plan.publish_node(job.index, first, job.nodes.len());
        streams.clear();
        body.clear();
        if batch > 1 {
            body.push_str(r#"{"events":["#);
        }
        for offset in 0..u64::from(batch) {
            let channel = plan.publish_channel(job.index, step * u64::from(batch) + offset);
            let seq = &mut seqs[channel as usize];
            *seq += 1;
            let n = *seq;
            streams.push((
                StreamKey {
                    channel,
                    publisher: job.index,
                },
                n,
            ));
            if offset > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                r#"{{"channel":"{}","data":{{"type":"bench","t":{},"p":{},"c":{},"n":{}}}}}"#,
                channel_name(channel),
                unix_nanos(),
                job.index,
                channel,
                n
            ));
        }
        if batch > 1 {
            body.push_str("]}");
        }
        let connection = connections[node]
            .get_or_insert_with(|| HttpConnection::new(job.nodes[node], &job.api_key));
        let sent_at = Instant::now();
        outcome.sent += u64::from(batch);
        let answer =
            tokio::time::timeout(PUBLISH_TIMEOUT, connection.post_json(path, body.as_bytes()))
                .await;
        let error = match answer {
            Ok(Ok(answer)) if answer.status == 200 => None,
            Ok(Ok(answer)) => Some(format!(
                "HTTP {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            )),
            Ok(Err(error)) => Some(format!("{error:#}")),
            Err(_) => {
                // The connection is mid-request: start afresh next time.
                connections[node] = None;
                Some(format!("no answer in {PUBLISH_TIMEOUT:?}"))
            }
        };
        match error {
            None => {
                let micros = sent_at.elapsed().as_micros() as u64;
                outcome.ack_latency.saturating_record(micros.max(1));
                outcome.acked += u64::from(batch);
                for (key, _) in &streams {
                    outcome.ledger.acked(*key);
                }
                job.counters
                    .acked
                    .fetch_add(u64::from(batch), Ordering::Relaxed);
            }
            Some(error) => {
                outcome.failed += u64::from(batch);
                for (key, n) in &streams {
                    outcome.ledger.failed(*key, *n);
                }
                job.counters
                    .failed
                    .fetch_add(u64::from(batch), Ordering::Relaxed);
                if outcome.errors.len() < KEPT_ERRORS {
                    outcome.errors.push(error);
                }
            }
        }
    }
    outcome
}
