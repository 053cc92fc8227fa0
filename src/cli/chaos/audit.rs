//! Reading the nodes' own account over HTTP: log positions, the chaos events in each log,
//! the materialized state, and convergence after a heal.
//!
//! - **Position**: a node's version vector (highest seq stored per origin) and its own origin,
//!   from its `GET /api/cluster`.
//! - **Convergence after a heal** ([`converge`]): the heal's target is, for every node that
//!   answers, its own origin at its own position at the moment of the heal; the cluster has
//!   converged once every node's position covers every target. Publishing goes on meanwhile,
//!   so "every node holds everything published before the heal" is the measure, not equal
//!   vectors.
//! - **Logs**: every chaos event in a node's history of each chaos channel, paged through
//!   `GET /api/channels/{channel}/history`.
//! - **State**: the active broadcast (`GET /api/creator/broadcast/active`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::time::Instant;

use super::client::Directory;
use super::ledger::EventKey;
use crate::cli::bench::http::HttpConnection;
use crate::cli::bench::scenario::channel_name;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(100);
/// How long [`observe`] waits for one node's `/readyz`.
const OBSERVE_TIMEOUT: Duration = Duration::from_millis(500);
const HISTORY_PAGE: usize = 1000;

/// A version vector as `/api/cluster` shows it.
pub type Position = BTreeMap<String, u64>;

async fn get_json(address: SocketAddr, bearer: &str, path: &str) -> anyhow::Result<Value> {
    let mut connection = HttpConnection::new(address, bearer);
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, connection.get(path))
        .await
        .with_context(|| format!("no answer from {address} within {REQUEST_TIMEOUT:?}"))??;
    if answer.status != 200 {
        bail!("{path} on {address} answered {}", answer.status);
    }
    serde_json::from_slice(&answer.body).with_context(|| format!("{path} on {address}"))
}

/// Node `address`'s own origin and its position.
pub async fn position(address: SocketAddr, api_key: &str) -> anyhow::Result<(String, Position)> {
    let view = get_json(address, api_key, "/api/cluster").await?;
    let origin = view["origin"]
        .as_str()
        .context("no origin in /api/cluster")?
        .to_string();
    let own = view["members"]
        .as_array()
        .and_then(|members| members.iter().find(|m| m["is_self"] == true))
        .context("no own row in /api/cluster")?;
    let position: Position = serde_json::from_value(own["log_position"].clone())
        .context("bad log_position in /api/cluster")?;
    Ok((origin, position))
}

/// Waits until every node at `addresses` is linked to all the others and sees them alive.
pub async fn wait_linked(
    addresses: &[SocketAddr],
    api_key: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    for &address in addresses {
        loop {
            let view = get_json(address, api_key, "/api/cluster").await;
            let linked = view.as_ref().map_or(0, |view| {
                view["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|m| m["linked"] == true && m["state"] == "alive")
                    .count()
            });
            if linked + 1 >= addresses.len() {
                break;
            }
            if Instant::now() > deadline {
                bail!("node {address} did not link to all its peers within {timeout:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

/// How a fault shows in the nodes' own account, for [`observe`].
#[derive(Clone, Debug)]
pub enum Symptom {
    /// Some node lists a node of the other group as unreachable in `/readyz`; the groups are
    /// node indexes, and `ids` every node's id.
    Unreachable {
        victims: Vec<usize>,
        others: Vec<usize>,
        ids: Vec<String>,
    },
    /// One of these nodes answers `/readyz` with something else than 200.
    Unready(Vec<usize>),
}

/// Polls the nodes until `symptom` shows, or `within` passed; answers after how long. All
/// nodes are asked at once, each with a short timeout: a paused node must not hold up the
/// others' answers.
pub async fn observe(directory: Directory, symptom: Symptom, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        let addresses = directory.borrow().clone();
        let asked = addresses.iter().map(|address| async move {
            match address {
                Some(address) => readyz(*address, OBSERVE_TIMEOUT).await.ok(),
                None => None,
            }
        });
        let answers: Vec<Option<Value>> = futures_util::future::join_all(asked).await;
        let shown = match &symptom {
            Symptom::Unreachable {
                victims,
                others,
                ids,
            } => [(victims, others), (others, victims)]
                .into_iter()
                .any(|(side, across)| {
                    side.iter().any(|&index| {
                        let listed = answers[index]
                            .as_ref()
                            .and_then(|ready| ready["unreachable"].as_array().cloned())
                            .unwrap_or_default();
                        across
                            .iter()
                            .any(|&i| listed.iter().any(|id| id == &ids[i]))
                    })
                }),
            Symptom::Unready(nodes) => nodes.iter().any(|&index| {
                answers[index]
                    .as_ref()
                    .is_some_and(|ready| ready["status"] != "ready")
            }),
        };
        if shown {
            return Some(started.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

/// After node `index` woke from a pause: waits until its `/readyz` answers 200 and answers
/// whether it then held less than `target` (what the others held as it woke), which would be
/// stale state passed off as current. `None` when it did not turn ready within `within`.
pub async fn ready_while_behind(
    directory: Directory,
    api_key: String,
    index: usize,
    target: Position,
    within: Duration,
) -> Option<bool> {
    let started = Instant::now();
    while started.elapsed() < within {
        let address = directory.borrow().get(index).copied().flatten()?;
        if readyz(address, REQUEST_TIMEOUT)
            .await
            .is_ok_and(|ready| ready["status"] == "ready")
        {
            // Read after the 200: positions only grow, so this is at most what it held then.
            let (_, held) = position(address, &api_key).await.ok()?;
            let behind = target
                .iter()
                .any(|(origin, seq)| held.get(origin).copied().unwrap_or(0) < *seq);
            return Some(behind);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// What every node up but `except` holds, merged (the most any of them holds per origin).
pub async fn held_by_others(directory: &Directory, api_key: &str, except: usize) -> Position {
    let mut merged = Position::new();
    for (_, _, position) in positions_but(directory, api_key, Some(except)).await {
        for (origin, seq) in position {
            let entry = merged.entry(origin).or_default();
            *entry = (*entry).max(seq);
        }
    }
    merged
}

/// The body of `/readyz` (200 or 503).
async fn readyz(address: SocketAddr, timeout: Duration) -> anyhow::Result<Value> {
    let mut connection = HttpConnection::new(address, "");
    let answer = tokio::time::timeout(timeout, connection.get("/readyz"))
        .await
        .with_context(|| format!("no answer from {address}"))??;
    serde_json::from_slice(&answer.body).context("bad /readyz body")
}

/// Waits until every node at `addresses` answers `/readyz` with 200.
pub async fn wait_ready(addresses: &[SocketAddr], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    for &address in addresses {
        loop {
            let ready = readyz(address, REQUEST_TIMEOUT).await;
            if ready.is_ok_and(|body| body["status"] == "ready") {
                break;
            }
            if Instant::now() > deadline {
                bail!("node {address} was not ready within {timeout:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

/// The node id `address` answers `/healthz` with.
pub async fn node_id(address: SocketAddr) -> anyhow::Result<String> {
    let health = get_json(address, "", "/healthz").await?;
    health["node_id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no node_id in /healthz of {address}"))
}

/// Every node's position that answers, by node index.
async fn positions(directory: &Directory, api_key: &str) -> Vec<(usize, String, Position)> {
    positions_but(directory, api_key, None).await
}

/// [`positions`] without asking node `except` (a paused node would hold up the answer).
async fn positions_but(
    directory: &Directory,
    api_key: &str,
    except: Option<usize>,
) -> Vec<(usize, String, Position)> {
    let addresses: Vec<(usize, SocketAddr)> = directory
        .borrow()
        .iter()
        .enumerate()
        .filter(|(index, _)| Some(*index) != except)
        .filter_map(|(index, address)| address.map(|a| (index, a)))
        .collect();
    let mut found = Vec::with_capacity(addresses.len());
    for (index, address) in addresses {
        if let Ok((origin, position)) = position(address, api_key).await {
            found.push((index, origin, position));
        }
    }
    found
}

/// Waits until every node up holds everything each node had published when this was called
/// (see the module doc); answers how long that took, or `None` after `timeout`.
pub async fn converge(
    directory: Directory,
    api_key: String,
    timeout: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let targets: Vec<(String, u64)> = positions(&directory, &api_key)
        .await
        .into_iter()
        .map(|(_, origin, position)| {
            let own = position.get(&origin).copied().unwrap_or(0);
            (origin, own)
        })
        .collect();
    loop {
        let now = positions(&directory, &api_key).await;
        let up = directory.borrow().iter().filter(|a| a.is_some()).count();
        let covered = now.len() == up
            && now.iter().all(|(_, _, position)| {
                targets
                    .iter()
                    .all(|(origin, seq)| position.get(origin).copied().unwrap_or(0) >= *seq)
            });
        if covered {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until every node up reports the same position; answers it, or the last positions
/// seen after `timeout`.
pub async fn settle(
    directory: &Directory,
    api_key: &str,
    timeout: Duration,
) -> Result<Position, Vec<Position>> {
    let deadline = Instant::now() + timeout;
    loop {
        let up = directory.borrow().iter().filter(|a| a.is_some()).count();
        let now: Vec<Position> = positions(directory, api_key)
            .await
            .into_iter()
            .map(|(_, _, position)| position)
            .collect();
        if now.len() == up && !now.is_empty() && now.windows(2).all(|pair| pair[0] == pair[1]) {
            return Ok(now[0].clone());
        }
        if Instant::now() > deadline {
            return Err(now);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The chaos events in node `address`'s log of channels `0..channels`.
pub async fn logged_events(
    address: SocketAddr,
    api_key: &str,
    channels: u32,
) -> anyhow::Result<BTreeSet<EventKey>> {
    let mut events = BTreeSet::new();
    for channel in 0..channels {
        let mut since = String::new();
        loop {
            let path = format!(
                "/api/channels/{}/history?limit={HISTORY_PAGE}&since={since}",
                channel_name(channel)
            );
            let page = get_json(address, api_key, &path).await?;
            for event in page["events"].as_array().into_iter().flatten() {
                if event["type"] != "chaos" {
                    continue;
                }
                let (Some(publisher), Some(n)) = (event["p"].as_u64(), event["n"].as_u64()) else {
                    continue;
                };
                events.insert(EventKey {
                    channel,
                    publisher: u32::try_from(publisher).unwrap_or(u32::MAX),
                    n,
                });
            }
            since = page["cursor"].as_str().unwrap_or_default().to_string();
            if page["complete"] != false {
                break;
            }
        }
    }
    Ok(events)
}

/// The id of node `address`'s active broadcast (`null` when none).
pub async fn active_broadcast(address: SocketAddr, admin_token: &str) -> anyhow::Result<Value> {
    let active = get_json(address, admin_token, "/api/creator/broadcast/active").await?;
    Ok(active["broadcast"]["id"].clone())
}
