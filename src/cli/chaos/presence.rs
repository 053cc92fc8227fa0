//! The presence check: every subscriber also sits on a presence channel under a user of its
//! own, so that after the faults every node must list exactly the subscribers connected at
//! that moment (wherever they resumed), and once they are stopped, nobody: no ghost of a
//! killed, paused, cut-off or wiped node's users, and nobody missing.
//!
//! Against running nodes (`--http`) whose configuration gives the channel no presence, the
//! check says so and is skipped.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::time::Instant;

use crate::cli::bench::http::HttpConnection;

/// The channel the subscribers' presence is on (a default presence prefix, `forum:thread:`).
pub const CHANNEL: &str = "forum:thread:herald-chaos";
/// How long the nodes get to agree on who is there.
pub const AGREE_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(50);

/// What the verdict says about presence.
#[derive(Debug, Default, Serialize)]
pub struct PresenceReport {
    /// False when the nodes give the channel no presence (`--http` against other settings).
    pub checked: bool,
    /// After the end markers: how long until every node listed exactly the connected
    /// subscribers.
    pub agreed_after_ms: Option<u64>,
    /// After the subscribers stopped: how long until every node listed nobody.
    pub emptied_after_ms: Option<u64>,
    /// What the nodes listed when they did not agree in time.
    pub disagreement: Option<String>,
}

/// The user id of subscriber `index`.
pub fn user(index: usize) -> String {
    format!("chaos-reader-{index}")
}

/// Who node `address` lists on [`CHANNEL`]; `None` when the channel has no presence there.
async fn listed(address: SocketAddr, api_key: &str) -> anyhow::Result<Option<BTreeSet<String>>> {
    let mut connection = HttpConnection::new(address, api_key);
    let path = format!("/api/channels/{CHANNEL}/presence");
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, connection.get(&path))
        .await
        .with_context(|| format!("no answer from {address} within {REQUEST_TIMEOUT:?}"))??;
    if answer.status == 404 {
        return Ok(None);
    }
    if answer.status != 200 {
        bail!("{path} on {address} answered {}", answer.status);
    }
    let value: serde_json::Value =
        serde_json::from_slice(&answer.body).with_context(|| format!("{path} on {address}"))?;
    Ok(Some(
        value["users"]
            .as_array()
            .context("no users in the presence answer")?
            .iter()
            .filter_map(|user| user["user_id"].as_str().map(str::to_string))
            .collect(),
    ))
}

/// Waits until every node lists exactly `expected()` (read afresh at every look, since a
/// subscriber may be resuming); answers how long it took, or what the nodes listed at the
/// last look. `Ok(None)` when the channel has no presence.
pub async fn wait_agreed(
    addresses: &[SocketAddr],
    api_key: &str,
    mut expected: impl FnMut() -> BTreeSet<String>,
) -> anyhow::Result<Option<Result<Duration, String>>> {
    let started = Instant::now();
    loop {
        let want = expected();
        let mut seen = Vec::new();
        for &address in addresses {
            match listed(address, api_key).await {
                Ok(Some(users)) => seen.push(users),
                Ok(None) => return Ok(None),
                Err(error) => return Err(error),
            }
        }
        if seen.iter().all(|users| *users == want) {
            return Ok(Some(Ok(started.elapsed())));
        }
        if started.elapsed() >= AGREE_TIMEOUT {
            let described = seen
                .iter()
                .enumerate()
                .map(|(index, users)| {
                    let extra: Vec<&String> = users.difference(&want).collect();
                    let missing: Vec<&String> = want.difference(users).collect();
                    format!("n{}: ghosts {extra:?}, missing {missing:?}", index + 1)
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Ok(Some(Err(described)));
        }
        tokio::time::sleep(POLL).await;
    }
}
