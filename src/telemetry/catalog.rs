//! Every `herald_*` metric, in one list: its type, unit, help text, the label it is split by
//! (and the label values known in advance), and a histogram's buckets.
//!
//! At start ([`describe_and_register`]) each series is described (the `HELP` line) and
//! registered, so that `/metrics` lists it at zero before anything happened: a rate or an
//! alert then has a baseline from the first scrape. A labelled series is registered with each
//! of its known values; one split by peer appears once a peer is known, and until then
//! [`complete`] still writes its `HELP` and `TYPE` lines. A unit test reads `src/` and fails
//! on a metric the code records that this list lacks (or records as another type), and
//! another checks that the Grafana dashboard (`deploy/grafana-herald.json`) only queries
//! series listed here.

use std::collections::HashSet;

use metrics::Unit;

/// A Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// The label a series is split by, and the values registered at start (none for values only
/// known at run time, such as peers).
#[derive(Clone, Copy, Debug)]
pub struct Label {
    pub name: &'static str,
    pub values: &'static [&'static str],
}

/// One catalogued metric.
#[derive(Clone, Copy, Debug)]
pub struct Series {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub help: &'static str,
    pub label: Option<Label>,
    /// Bucket upper bounds, for histograms.
    pub buckets: Option<&'static [f64]>,
}

/// From the publish request's handler to its answer (`POST /api/publish`, `POST /api/batch`).
pub const PUBLISH_DURATION: &str = "herald_publish_duration_seconds";
/// One store write transaction, from its start to its commit (fsync included).
pub const STORE_COMMIT_DURATION: &str = "herald_store_commit_duration_seconds";
/// From an event's hybrid-clock stamp to its write on a local socket.
pub const DELIVERY_LAG: &str = "herald_delivery_lag_seconds";
/// How long the oldest event of this node's own that a peer lacks has been committed.
pub const REPLICATION_LAG: &str = "herald_replication_lag_seconds";
/// 1 while this node has a mesh link to the peer.
pub const MESH_LINK_UP: &str = "herald_mesh_link_up";
/// Distinct users with a socket on this node.
pub const USERS: &str = "herald_users";

/// Latencies of HTTP answers: half a millisecond to 5 s (a `replication = 2` publish waits up
/// to 2 s for a peer).
const PUBLISH_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// SQLite commits: 100 µs (no fsync, a few rows) to a second (a slow disk).
const COMMIT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Delivery lag, at the clock's millisecond resolution, up to a minute (a node catching up).
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const fn counter(name: &'static str, help: &'static str) -> Series {
    Series {
        name,
        kind: Kind::Counter,
        unit: Unit::Count,
        help,
        label: None,
        buckets: None,
    }
}

const fn bytes_counter(name: &'static str, help: &'static str) -> Series {
    Series {
        unit: Unit::Bytes,
        ..counter(name, help)
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Series {
    Series {
        kind: Kind::Gauge,
        ..counter(name, help)
    }
}

const fn histogram(name: &'static str, help: &'static str, buckets: &'static [f64]) -> Series {
    Series {
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        buckets: Some(buckets),
        ..counter(name, help)
    }
}

const fn by(series: Series, label: &'static str, values: &'static [&'static str]) -> Series {
    Series {
        label: Some(Label {
            name: label,
            values,
        }),
        ..series
    }
}

const PEER: &[&str] = &[];

/// Every `herald_*` series.
pub const SERIES: &[Series] = &[
    // ---- publishing and delivery ----
    counter(
        "herald_publishes_total",
        "Events published on this node (a replayed idempotent retry excluded).",
    ),
    counter(
        "herald_publishes_replayed_total",
        "Publishes answered from an existing event by their idempotency key.",
    ),
    counter(
        "herald_batches_total",
        "POST /api/batch requests committed.",
    ),
    counter(
        "herald_ephemeral_events_total",
        "Ephemeral events (typing indicators) published on this node.",
    ),
    counter(
        "herald_replication_timeouts_total",
        "replication = 2 publishes that no peer confirmed in time (answered replicated: false).",
    ),
    histogram(
        PUBLISH_DURATION,
        "Publish latency: from the handler of POST /api/publish or /api/batch to its answer, errors included.",
        PUBLISH_BUCKETS,
    ),
    counter(
        "herald_deliveries_total",
        "Events handed to local sockets' queues (one per socket and event).",
    ),
    histogram(
        DELIVERY_LAG,
        "From an event's hybrid-clock stamp (its publish on its origin node) to its write on a local socket, sampled on each socket's first write batch and one in 16 after it.",
        LAG_BUCKETS,
    ),
    counter(
        "herald_slow_client_disconnects_total",
        "Sockets closed with 1013 because their queue was full.",
    ),
    counter(
        "herald_replayed_events_total",
        "Events sent to resuming sockets from the log (?since=).",
    ),
    counter(
        "herald_resumes_below_floor_total",
        "Resumes older than what some channel keeps (recovered: false).",
    ),
    // ---- sockets ----
    gauge(
        "herald_connections",
        "WebSocket connections open on this node.",
    ),
    gauge(
        USERS,
        "Distinct users with a WebSocket connection on this node (sampled at scrape).",
    ),
    by(
        counter(
            "herald_connections_refused_total",
            "Sockets refused, by reason.",
        ),
        "reason",
        &["capacity", "ip", "user", "auth", "forbidden"],
    ),
    counter(
        "herald_client_messages_refused_total",
        "Client messages dropped for exceeding the socket's message rate.",
    ),
    counter(
        "herald_rate_limit_disconnects_total",
        "Sockets closed for sending too many messages (1008).",
    ),
    counter(
        "herald_unresponsive_disconnects_total",
        "Sockets closed after two silent heartbeat intervals.",
    ),
    gauge(
        "herald_runtime_workers",
        "Runtime worker threads of herald serve (the store writes on one more).",
    ),
    // ---- presence ----
    gauge(
        "herald_presence_entries",
        "Presence entries (user on a channel, per source node) this node holds.",
    ),
    counter(
        "herald_presence_joins_total",
        "Users who became present on a channel, cluster-wide as this node sees it.",
    ),
    counter(
        "herald_presence_leaves_total",
        "Users who stopped being present on a channel, cluster-wide as this node sees it.",
    ),
    counter(
        "herald_presence_entries_refused_total",
        "Presence entries not listed: past max_users_per_channel or the table's ceiling.",
    ),
    by(
        counter(
            "herald_presence_peers_removed_total",
            "Times a peer's presence was dropped, by why.",
        ),
        "why",
        &["gossip", "link", "registry", "cut_off"],
    ),
    // ---- the store ----
    counter(
        "herald_store_commits_total",
        "Group commits of this node's own events.",
    ),
    counter(
        "herald_store_events_appended_total",
        "Own events committed (over herald_store_commits_total: events per group commit).",
    ),
    counter(
        "herald_store_commit_failures_total",
        "Group commits of own events that failed and were rolled back.",
    ),
    counter(
        "herald_store_own_fence_refusals_total",
        "Publishes (single events or batches) refused because this node had not heard from its peers since it started, or held less of its own origin than a peer.",
    ),
    counter(
        "herald_store_own_fence_waived_total",
        "Floors of this node's own origin given up on: a peer reported events of it that did not come back within 10 s.",
    ),
    counter(
        "herald_store_own_seq_conflicts_total",
        "Events of this node's origin from a peer that differ from the event held here under the same seq (a database that was behind the cluster published while no peer that held more was reachable).",
    ),
    by(
        histogram(
            STORE_COMMIT_DURATION,
            "Store write transactions, from begin to commit (fsync included): own events, or events from peers.",
            COMMIT_BUCKETS,
        ),
        "kind",
        &["own", "replica"],
    ),
    by(
        counter(
            "herald_store_replica_commits_total",
            "Commits of events from peers, by durability.",
        ),
        "sync",
        &["full", "normal"],
    ),
    counter(
        "herald_store_events_replicated_total",
        "Events from peers stored on this node.",
    ),
    counter(
        "herald_store_write_failures_total",
        "Store writes that failed (a full disk, an I/O error).",
    ),
    gauge(
        "herald_store_full",
        "1 while the store cannot commit because its disk is full.",
    ),
    counter(
        "herald_store_undecodable_rows_total",
        "Log rows skipped because they no longer decode into an event.",
    ),
    Series {
        unit: Unit::Count,
        ..gauge(
            "herald_log_events",
            "Events retained in the log (every origin).",
        )
    },
    Series {
        unit: Unit::Bytes,
        ..gauge("herald_log_bytes", "Bytes of events retained in the log.")
    },
    counter(
        "herald_pruned_events_total",
        "Events pruned from the log by the retention rules.",
    ),
    counter(
        "herald_tombstones_collected_total",
        "Deleted comments and superseded broadcasts collected once every peer held them.",
    ),
    counter(
        "herald_origins_retired_total",
        "Origins retired (no live member publishes under them, no events left).",
    ),
    counter(
        "herald_snapshot_parts_merged_total",
        "Snapshot parts merged into the store while catching up.",
    ),
    counter(
        "herald_snapshots_sent_total",
        "Snapshots served to peers (mesh or HTTP).",
    ),
    counter(
        "herald_snapshots_received_total",
        "Snapshots this node caught up from.",
    ),
    // ---- the mesh ----
    by(
        gauge(
            MESH_LINK_UP,
            "1 while this node has a mesh link to the peer, 0 otherwise (sampled at scrape, mesh backplane).",
        ),
        "peer",
        PEER,
    ),
    Series {
        unit: Unit::Seconds,
        ..by(
            gauge(
                REPLICATION_LAG,
                "How long the oldest of this node's own committed events that the peer has not reported holding has been committed; 0 when it holds all (sampled at scrape, mesh backplane).",
            ),
            "peer",
            PEER,
        )
    },
    counter(
        "herald_mesh_links_established_total",
        "Mesh links established (either side dialed).",
    ),
    counter("herald_mesh_dial_failures_total", "Mesh dials that failed."),
    counter(
        "herald_mesh_handshake_failures_total",
        "Inbound mesh connections whose handshake failed.",
    ),
    counter(
        "herald_mesh_handshakes_refused_total",
        "Mesh TLS handshakes refused: the peer's certificate is not the cluster's.",
    ),
    counter(
        "herald_mesh_links_unacknowledged_total",
        "Mesh links closed because the peer acknowledged nothing for 1.25 s.",
    ),
    by(
        counter(
            "herald_mesh_peer_violations_total",
            "Peer frames that broke the protocol (the link is closed), by reason.",
        ),
        "reason",
        &[
            "seq_out_of_range",
            "foreign_event_in_range",
            "seq_far_ahead",
            "own_origin_ahead",
            "future_timestamp",
            "oversized_pull",
            "oversized_interest",
            "bad_presence",
        ],
    ),
    counter(
        "herald_mesh_malformed_frames_total",
        "Mesh frames that did not decode (the link is closed).",
    ),
    by(
        counter(
            "herald_mesh_frames_dropped_total",
            "Frames not queued for a peer, by reason (a full link queue: the peer pulls them later).",
        ),
        "reason",
        &["queue_full"],
    ),
    bytes_counter(
        "herald_mesh_bytes_sent_total",
        "Bytes written on mesh links.",
    ),
    bytes_counter(
        "herald_mesh_bytes_received_total",
        "Bytes read from mesh links.",
    ),
    counter(
        "herald_mesh_acks_sent_total",
        "Immediate position frames sent to peers that wait for replication acks.",
    ),
    counter(
        "herald_mesh_pulls_requested_total",
        "Pulls of missing events asked of peers.",
    ),
    counter(
        "herald_mesh_events_served_total",
        "Events sent to peers in answer to their pulls.",
    ),
    by(
        counter(
            "herald_mesh_requests_dropped_total",
            "Peer requests dropped because too many from that peer were waiting, by kind.",
        ),
        "kind",
        &["pull", "snapshot"],
    ),
    by(
        counter(
            "herald_mesh_ephemeral_sent_total",
            "Ephemeral event frames sent, by peer.",
        ),
        "peer",
        PEER,
    ),
    counter(
        "herald_mesh_ephemeral_received_total",
        "Ephemeral events received from peers.",
    ),
    counter(
        "herald_mesh_ephemeral_filtered_total",
        "Ephemeral events not sent to a peer that has no subscriber of their channel.",
    ),
    gauge(
        "herald_mesh_interest_known_peers",
        "Linked peers whose channel interest this node knows.",
    ),
    counter(
        "herald_mesh_interest_snapshots_sent_total",
        "Interest snapshots sent to peers.",
    ),
    counter(
        "herald_mesh_interest_resyncs_requested_total",
        "Interest snapshots asked of peers.",
    ),
    counter(
        "herald_mesh_interest_lost_total",
        "Peer interest forgotten after a gap in its deltas (until its next snapshot).",
    ),
    counter(
        "herald_mesh_interest_overflows_total",
        "Peers whose interest grew past the limit (everything is sent to them).",
    ),
    counter(
        "herald_mesh_presence_snapshots_sent_total",
        "Presence snapshots sent to peers.",
    ),
    counter(
        "herald_mesh_presence_resyncs_requested_total",
        "Presence snapshots asked of peers.",
    ),
    counter(
        "herald_mesh_presence_changes_received_total",
        "Presence changes received from peers.",
    ),
    counter(
        "herald_mesh_presence_lost_total",
        "Peer presence streams broken by a gap (until their next snapshot).",
    ),
    bytes_counter(
        "herald_mesh_presence_bytes_sent_total",
        "Bytes of presence frames sent to peers.",
    ),
    // ---- gossip ----
    by(
        counter(
            "herald_gossip_rejected_total",
            "Gossip datagrams dropped before gossip saw them, by reason.",
        ),
        "reason",
        &[
            "malformed",
            "unauthenticated",
            "stale",
            "replayed",
            "too_many_sessions",
            "undecodable",
        ],
    ),
    counter(
        "herald_gossip_oversized_total",
        "Gossip messages too large to seal (not sent).",
    ),
    counter(
        "herald_gossip_relay_dropped_total",
        "Opened gossip datagrams dropped because the local relay was busy.",
    ),
    // ---- the Redis backplane ----
    counter(
        "herald_redis_events_shipped_total",
        "Own events written to Redis.",
    ),
    counter(
        "herald_redis_ship_errors_total",
        "Failed writes of own events to Redis (retried).",
    ),
    Series {
        unit: Unit::Count,
        ..gauge(
            "herald_redis_ship_backlog",
            "Own committed events not yet written to Redis.",
        )
    },
    counter(
        "herald_redis_events_repaired_total",
        "Own events written to Redis again for a peer that lacked them.",
    ),
    counter(
        "herald_redis_events_received_total",
        "Events read from Redis and stored.",
    ),
    counter(
        "herald_redis_entries_skipped_total",
        "Redis stream entries skipped because this node held them already.",
    ),
    counter(
        "herald_redis_malformed_entries_total",
        "Redis stream entries that did not decode into an event of their stream's origin.",
    ),
    counter(
        "herald_redis_read_errors_total",
        "Failed reads of the Redis streams.",
    ),
    counter(
        "herald_redis_reader_repairs_total",
        "Times the Redis reader was rebuilt because it stopped delivering its probe.",
    ),
    counter(
        "herald_redis_epoch_changes_total",
        "Times Redis was found to have lost its data (everything is shipped again).",
    ),
    counter(
        "herald_redis_stream_trimmed_total",
        "Entries trimmed from this node's Redis stream.",
    ),
    counter(
        "herald_redis_ephemeral_dropped_total",
        "Ephemeral events not sent through Redis (a full queue or a failed write).",
    ),
    counter(
        "herald_redis_presence_writes_total",
        "Presence snapshots written to Redis.",
    ),
    bytes_counter(
        "herald_redis_presence_bytes_written_total",
        "Bytes of presence snapshots written to Redis.",
    ),
    counter(
        "herald_redis_presence_reads_total",
        "Peers' presence snapshots read from Redis.",
    ),
    counter(
        "herald_redis_presence_refused_total",
        "Peers' presence snapshots refused as invalid.",
    ),
];

/// The catalogued series called `name`.
pub fn find(name: &str) -> Option<&'static Series> {
    SERIES.iter().find(|series| series.name == name)
}

/// Describes every series to the installed recorder and registers it (with each known label
/// value) so that it is rendered, at zero, from the start. Gauges are registered without a
/// value of their own: a gauge another node of this process already set keeps its value.
pub fn describe_and_register() {
    for series in SERIES {
        let (name, unit, help) = (series.name, series.unit, series.help);
        match series.kind {
            Kind::Counter => metrics::describe_counter!(name, unit, help),
            Kind::Gauge => metrics::describe_gauge!(name, unit, help),
            Kind::Histogram => metrics::describe_histogram!(name, unit, help),
        }
        match series.label {
            None => register(series, &[]),
            Some(label) => {
                for value in label.values {
                    register(series, &[(label.name, value)]);
                }
            }
        }
    }
}

fn register(series: &Series, labels: &[(&'static str, &'static str)]) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(key, value)| metrics::Label::new(*key, *value))
        .collect();
    match series.kind {
        Kind::Counter => drop(metrics::counter!(series.name, labels)),
        Kind::Gauge => drop(metrics::gauge!(series.name, labels)),
        Kind::Histogram => drop(metrics::histogram!(series.name, labels)),
    }
}

/// `rendered` plus `HELP` and `TYPE` lines for each catalogued series it does not show (a
/// per-peer series before any peer is known).
pub fn complete(mut rendered: String) -> String {
    let shown: HashSet<&str> = rendered
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    let missing: Vec<&Series> = SERIES
        .iter()
        .filter(|series| !shown.contains(series.name))
        .collect();
    for series in missing {
        rendered.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n\n",
            name = series.name,
            help = series.help,
            kind = series.kind.as_str(),
        ));
    }
    rendered
}

/// The delivery-lag histogram's handle, looked up once (the session writer records into it
/// for a sample of its write batches).
pub fn delivery_lag() -> &'static metrics::Histogram {
    static HANDLE: std::sync::OnceLock<metrics::Histogram> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| metrics::histogram!(DELIVERY_LAG))
}

/// Records one delivery-lag sample: now minus `stamp_ms`, an event's hybrid-clock
/// milliseconds (0 when the stamp is ahead of this node's clock).
pub fn record_delivery_lag(stamp_ms: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or(0.0);
    let lag = now - stamp_ms as f64 / 1000.0;
    delivery_lag().record(lag.max(0.0));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    /// Every counter, gauge and histogram macro naming a `herald_*` literal under `src/`, with
    /// the type it is recorded as.
    fn recorded_in_source() -> BTreeMap<String, (Kind, String)> {
        fn walk(dir: &Path, found: &mut BTreeMap<String, (Kind, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (macro_name, kind) in [
                        ("counter!(", Kind::Counter),
                        ("gauge!(", Kind::Gauge),
                        ("histogram!(", Kind::Histogram),
                    ] {
                        for (at, _) in text.match_indices(macro_name) {
                            let rest = text[at + macro_name.len()..].trim_start();
                            let Some(rest) = rest.strip_prefix('"') else {
                                continue;
                            };
                            let name: String = rest
                                .chars()
                                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                                .collect();
                            if name.starts_with("herald_") && !name.ends_with('_') {
                                found.insert(name, (kind, path.display().to_string()));
                            }
                        }
                    }
                }
            }
        }
        let mut found = BTreeMap::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        found
    }

    #[test]
    fn every_metric_in_the_code_is_catalogued_with_its_type() {
        let recorded = recorded_in_source();
        assert!(
            recorded.len() > 50,
            "the scan found too little: {recorded:?}"
        );
        for (name, (kind, file)) in &recorded {
            let series = find(name)
                .unwrap_or_else(|| panic!("{name} ({file}) is not in telemetry::catalog"));
            assert_eq!(series.kind, *kind, "{name} ({file})");
        }
        // Named through constants rather than literals: recorded by name elsewhere.
        let through_constants = [
            PUBLISH_DURATION,
            STORE_COMMIT_DURATION,
            DELIVERY_LAG,
            REPLICATION_LAG,
            MESH_LINK_UP,
            USERS,
        ];
        for series in SERIES {
            assert!(
                recorded.contains_key(series.name) || through_constants.contains(&series.name),
                "{} is catalogued but nothing records it",
                series.name
            );
        }
    }

    #[test]
    fn the_catalog_is_well_formed() {
        let mut names = HashSet::new();
        for series in SERIES {
            assert!(names.insert(series.name), "{} twice", series.name);
            assert!(series.name.starts_with("herald_"), "{}", series.name);
            assert!(
                !series.help.is_empty()
                    && !series.help.contains('\n')
                    && !series.help.contains('\\'),
                "{}: help text must be one plain line",
                series.name
            );
            assert_eq!(
                series.kind == Kind::Counter,
                series.name.ends_with("_total"),
                "{}: counters, and only they, end in _total",
                series.name
            );
            match series.kind {
                Kind::Histogram => {
                    let buckets = series.buckets.expect("a histogram has buckets");
                    assert!(!buckets.is_empty());
                    assert!(buckets.windows(2).all(|pair| pair[0] < pair[1]));
                    assert!(series.name.ends_with("_seconds"), "{}", series.name);
                }
                _ => assert!(series.buckets.is_none(), "{}", series.name),
            }
        }
    }

    #[test]
    fn complete_lists_series_without_samples() {
        let rendered = "# TYPE herald_connections gauge\nherald_connections 0\n\n".to_string();
        let text = complete(rendered);
        assert_eq!(text.matches("# TYPE herald_connections ").count(), 1);
        assert!(text.contains(&format!("# TYPE {MESH_LINK_UP} gauge\n")));
        assert!(text.contains(&format!("# HELP {REPLICATION_LAG} How long")));
    }

    /// Metric names an expression of the dashboard uses (`_bucket`, `_sum` and `_count` of a
    /// histogram name the histogram).
    fn names_in(expression: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = expression;
        while let Some(at) = rest.find("herald_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| find(base).is_some_and(|s| s.kind == Kind::Histogram))
                })
                .map(str::to_string)
                .unwrap_or(name);
            names.push(base);
        }
        names
    }

    #[test]
    fn the_grafana_dashboard_only_queries_catalogued_series() {
        let text = include_str!("../../deploy/grafana-herald.json");
        let dashboard: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
        assert!(dashboard["title"].is_string());
        let panels = dashboard["panels"].as_array().expect("panels");
        let mut queried = HashSet::new();
        let mut expressions = 0;
        for panel in panels {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expression = target["expr"].as_str().expect("every target has an expr");
                expressions += 1;
                let names = names_in(expression);
                assert!(!names.is_empty(), "{expression} names no herald series");
                for name in names {
                    assert!(
                        find(&name).is_some(),
                        "{expression}: {name} is not catalogued"
                    );
                    queried.insert(name);
                }
            }
        }
        assert!(expressions >= 10, "only {expressions} expressions");
        for wanted in [
            "herald_publishes_total",
            PUBLISH_DURATION,
            "herald_deliveries_total",
            DELIVERY_LAG,
            REPLICATION_LAG,
            "herald_connections",
            USERS,
            MESH_LINK_UP,
            STORE_COMMIT_DURATION,
            "herald_slow_client_disconnects_total",
            "herald_presence_entries",
        ] {
            assert!(queried.contains(wanted), "the dashboard lacks {wanted}");
        }
    }
}
