//! The server's own counters, read from `GET /metrics` (Prometheus text) before and after the
//! measured window: commits and events appended (so events per group commit), deliveries as
//! the hub counted them, and slow clients it closed. They explain where a figure comes from,
//! for example whether group commit actually batched under load.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::Serialize;

use super::http::HttpConnection;

/// The counters the report uses.
const COUNTERS: [&str; 5] = [
    "herald_store_commits_total",
    "herald_store_events_appended_total",
    "herald_deliveries_total",
    "herald_slow_client_disconnects_total",
    "herald_publishes_total",
];

/// One node's counters at one moment (summed over labels).
#[derive(Clone, Debug, Default)]
pub struct Snapshot(HashMap<String, f64>);

/// What changed over the window, summed over the nodes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerCounters {
    pub commits: u64,
    pub events_appended: u64,
    /// Events per group commit, on average.
    pub events_per_commit: Option<f64>,
    pub deliveries: u64,
    pub slow_client_disconnects: u64,
}

/// Reads `/metrics` of `node`; `None` when it cannot.
pub async fn snapshot(node: SocketAddr, api_key: &str) -> Option<Snapshot> {
    let mut connection = HttpConnection::new(node, api_key);
    let answer = connection.get("/metrics").await.ok()?;
    if answer.status != 200 {
        return None;
    }
    Some(parse(&String::from_utf8_lossy(&answer.body)))
}

fn parse(text: &str) -> Snapshot {
    let mut values = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name_and_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name_and_labels
            .split_once('{')
            .map_or(name_and_labels, |(name, _)| name);
        if !COUNTERS.contains(&name) {
            continue;
        }
        if let Ok(value) = value.trim().parse::<f64>() {
            *values.entry(name.to_string()).or_insert(0.0) += value;
        }
    }
    Snapshot(values)
}

impl Snapshot {
    fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }
}

/// The change from `before` to `after` over every node that answered both times.
pub fn difference(pairs: &[(Option<Snapshot>, Option<Snapshot>)]) -> Option<ServerCounters> {
    let mut counters = ServerCounters::default();
    let mut any = false;
    for pair in pairs {
        let (Some(before), Some(after)) = pair else {
            continue;
        };
        any = true;
        let delta = |name: &str| (after.get(name) - before.get(name)).max(0.0) as u64;
        counters.commits += delta("herald_store_commits_total");
        counters.events_appended += delta("herald_store_events_appended_total");
        counters.deliveries += delta("herald_deliveries_total");
        counters.slow_client_disconnects += delta("herald_slow_client_disconnects_total");
    }
    if counters.commits > 0 {
        counters.events_per_commit =
            Some(counters.events_appended as f64 / counters.commits as f64);
    }
    any.then_some(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_labels_and_differences_counters() {
        let before =
            parse("# TYPE x counter\nherald_store_commits_total 10\nherald_deliveries_total 5\n");
        let after = parse(
            "herald_store_commits_total 20\nherald_store_events_appended_total 400\n\
             herald_deliveries_total{node=\"a\"} 100\nherald_deliveries_total{node=\"b\"} 5\n\
             other_total 7\n",
        );
        let counters = difference(&[(Some(before), Some(after))]).unwrap();
        assert_eq!(counters.commits, 10);
        assert_eq!(counters.events_appended, 400);
        assert_eq!(counters.events_per_commit, Some(40.0));
        assert_eq!(counters.deliveries, 100);
        assert!(difference(&[(None, None)]).is_none());
    }
}
