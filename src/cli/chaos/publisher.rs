//! Chaos publishers: publisher `p` publishes only through node `p`, one request in flight, at
//! a fixed rate, walking the channels; every 50th publish it also sets an admin broadcast
//! banner, so that the nodes have materialized state to agree on.
//!
//! Each event is `{"type":"chaos","p":<publisher>,"c":<channel>,"n":<seq>,"t":<unix nanos>}`.
//! A publish answered 2xx is acknowledged; anything else (an error, no answer within
//! [`PUBLISH_TIMEOUT`], the node down) is failed, except that while the node is known to be
//! down nothing is sent. After a failure the connection is dropped, so that a request the node
//! never answered cannot hold up the next.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::client::Directory;
use super::ledger::{Acks, EventKey};
use crate::cli::bench::http::HttpConnection;
use crate::cli::bench::publisher::unix_nanos;
use crate::cli::bench::scenario::channel_name;

/// A publish without an answer this long is failed.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Every this many publishes, a broadcast banner too.
const BANNER_EVERY: u64 = 50;

/// Live counts for the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    pub acked: AtomicU64,
    pub failed: AtomicU64,
}

/// One publisher's job.
pub struct Publisher {
    pub index: u32,
    pub channels: u32,
    pub every: Duration,
    pub api_key: String,
    pub admin_token: String,
    pub directory: Directory,
    pub counters: Arc<Counters>,
    pub stop: watch::Receiver<bool>,
}

/// What one publisher did.
pub struct Outcome {
    pub acks: Acks,
    pub errors: Vec<String>,
}

impl Publisher {
    pub async fn run(self) -> Outcome {
        let mut acks = Acks::default();
        let mut errors = Vec::new();
        let mut next_n = vec![0u64; self.channels as usize];
        let mut connection: Option<(SocketAddr, HttpConnection, HttpConnection)> = None;
        let mut pace = tokio::time::interval(self.every);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent = 0u64;
        while !*self.stop.borrow() {
            pace.tick().await;
            let address = self
                .directory
                .borrow()
                .get(self.index as usize)
                .copied()
                .flatten();
            let Some(address) = address else {
                connection = None;
                continue;
            };
            if connection.as_ref().is_none_or(|(at, _, _)| *at != address) {
                connection = Some((
                    address,
                    HttpConnection::new(address, &self.api_key),
                    HttpConnection::new(address, &self.admin_token),
                ));
            }
            let Some((_, publish, admin)) = connection.as_mut() else {
                continue;
            };
            let channel = (sent % u64::from(self.channels)) as u32;
            sent += 1;
            next_n[channel as usize] += 1;
            let key = EventKey {
                channel,
                publisher: self.index,
                n: next_n[channel as usize],
            };
            let body = serde_json::json!({
                "channel": channel_name(channel),
                "data": {"type": "chaos", "p": key.publisher, "c": channel, "n": key.n,
                         "t": unix_nanos()},
            });
            let answer = tokio::time::timeout(
                PUBLISH_TIMEOUT,
                publish.post_json("/api/publish", body.to_string().as_bytes()),
            )
            .await;
            match answer {
                Ok(Ok(answer)) if (200..300).contains(&answer.status) => {
                    acks.acked.insert(key);
                    self.counters.acked.fetch_add(1, Ordering::Relaxed);
                }
                failure => {
                    acks.failed.insert(key);
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    if errors.len() < 5 {
                        errors.push(describe(&failure));
                    }
                    connection = None;
                    continue;
                }
            }
            if sent % BANNER_EVERY == 0 {
                let banner = serde_json::json!({
                    "message": format!("chaos banner {} from n{}", sent, self.index + 1),
                    "type": "info",
                });
                let set = tokio::time::timeout(
                    PUBLISH_TIMEOUT,
                    admin.post_json("/api/creator/broadcast", banner.to_string().as_bytes()),
                )
                .await;
                if !matches!(set, Ok(Ok(_))) {
                    connection = None;
                }
            }
        }
        Outcome { acks, errors }
    }
}

fn describe(
    failure: &Result<anyhow::Result<crate::cli::bench::http::Answer>, tokio::time::error::Elapsed>,
) -> String {
    match failure {
        Err(_) => format!("no answer within {PUBLISH_TIMEOUT:?}"),
        Ok(Err(error)) => format!("{error:#}"),
        Ok(Ok(answer)) => format!(
            "status {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ),
    }
}

/// Publishes the end marker of publisher `index` on every channel through `address`; answers
/// whether every one was acknowledged.
pub async fn publish_markers(
    address: SocketAddr,
    api_key: &str,
    index: u32,
    channels: u32,
) -> anyhow::Result<()> {
    let mut connection = HttpConnection::new(address, api_key);
    for channel in 0..channels {
        let body = serde_json::json!({
            "channel": channel_name(channel),
            "data": {"type": "chaos-marker", "p": index, "c": channel},
        });
        let answer = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            connection.post_json("/api/publish", body.to_string().as_bytes()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {address} within {PUBLISH_TIMEOUT:?}"))??;
        if !(200..300).contains(&answer.status) {
            anyhow::bail!(
                "marker refused by {address}: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
    }
    Ok(())
}
