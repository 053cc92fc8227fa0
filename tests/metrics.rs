//! `/metrics` as an operator reads it: every catalogued series listed with `HELP` and `TYPE`
//! from the start, at zero; the publish and delivery histograms after traffic; `--metrics
//! ADDR` serving `/metrics` alone (404 on the main port); and, on a real two-node cluster,
//! link state and replication lag per peer.
//!
//! Metrics are process-wide, so the in-process test that counts exactly runs alone in its
//! node; the other in-process test only reads.

mod cluster_support;
mod common;

use std::time::Duration;

use common::{TIMEOUT, TestNode};
use herald::telemetry::catalog::{self, Kind, SERIES};
use serde_json::json;

async fn scrape(http: &reqwest::Client, url: &str) -> (u16, String) {
    let response = http.get(url).send().await.expect("GET /metrics");
    let status = response.status().as_u16();
    (status, response.text().await.expect("metrics text"))
}

/// Scrapes `url` until `holds` accepts what it answers (failing after `timeout`).
async fn scrape_until(
    http: &reqwest::Client,
    url: &str,
    what: &str,
    timeout: Duration,
    holds: impl Fn(&str) -> bool,
) -> String {
    let last = std::sync::Mutex::new(String::new());
    common::wait_until(what, timeout, || async {
        let (_, text) = scrape(http, url).await;
        let held = holds(&text);
        *last.lock().unwrap() = text;
        held
    })
    .await;
    last.into_inner().unwrap()
}

/// The value of the sample line `name` (with its labels as written, e.g. `x{kind="own"}`).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().expect("a number"))
        })
}

#[tokio::test]
async fn a_fresh_node_lists_every_series_then_times_a_publish_and_its_delivery() {
    let node = TestNode::start().await;
    let http = node.http().clone();
    let (status, text) = scrape(&http, &node.http_url("/metrics")).await;
    assert_eq!(status, 200);
    for series in SERIES {
        let kind = match series.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        assert!(
            text.contains(&format!("# HELP {} {}\n", series.name, series.help)),
            "no HELP for {}",
            series.name
        );
        assert!(
            text.contains(&format!("# TYPE {} {kind}\n", series.name)),
            "no TYPE {kind} for {}",
            series.name
        );
        match (series.kind, series.label) {
            (Kind::Histogram, None) => {
                assert_eq!(sample(&text, &format!("{}_count", series.name)), Some(0.0));
            }
            (Kind::Histogram, Some(label)) => {
                for value in label.values {
                    let count = format!("{}_count{{{}=\"{value}\"}}", series.name, label.name);
                    assert_eq!(sample(&text, &count), Some(0.0), "{count}");
                }
            }
            (Kind::Counter, None) => {
                assert_eq!(sample(&text, series.name), Some(0.0), "{}", series.name);
            }
            (Kind::Counter, Some(label)) => {
                for value in label.values {
                    let name = format!("{}{{{}=\"{value}\"}}", series.name, label.name);
                    assert_eq!(sample(&text, &name), Some(0.0), "{name}");
                }
            }
            (Kind::Gauge, None) => {
                assert!(sample(&text, series.name).is_some(), "{}", series.name);
            }
            (Kind::Gauge, Some(_)) => {}
        }
    }
    // Buckets, not a summary.
    assert!(text.contains(&format!(
        "{}_bucket{{le=\"0.005\"}} 0\n",
        catalog::PUBLISH_DURATION
    )));

    let token = node.token("7", "ann", &[]);
    let mut socket = node.channel_socket(&["news"], &token).await;
    node.publish("news", json!({"type": "note", "n": 1})).await;
    let delivered = socket.recv_type("note", TIMEOUT).await;
    assert_eq!(delivered["n"], 1);
    let url = node.http_url("/metrics");
    let lag_count = format!("{}_count", catalog::DELIVERY_LAG);
    let text = scrape_until(
        &http,
        &url,
        "the delivery lag is recorded",
        TIMEOUT,
        |text| sample(text, &lag_count) == Some(1.0),
    )
    .await;
    assert_eq!(
        sample(&text, &format!("{}_count", catalog::PUBLISH_DURATION)),
        Some(1.0)
    );
    let publish_seconds = sample(&text, &format!("{}_sum", catalog::PUBLISH_DURATION)).unwrap();
    assert!(
        publish_seconds > 0.0 && publish_seconds < 5.0,
        "{publish_seconds}"
    );
    let lag = sample(&text, &format!("{}_sum", catalog::DELIVERY_LAG)).unwrap();
    assert!((0.0..5.0).contains(&lag), "{lag}");
    let commits = format!("{}_count{{kind=\"own\"}}", catalog::STORE_COMMIT_DURATION);
    assert!(sample(&text, &commits).unwrap() >= 1.0, "{commits}");
    assert_eq!(sample(&text, "herald_publishes_total"), Some(1.0));
    assert_eq!(sample(&text, "herald_deliveries_total"), Some(1.0));
    assert_eq!(sample(&text, "herald_connections"), Some(1.0));
    assert_eq!(sample(&text, catalog::USERS), Some(1.0));
    socket.close().await;
}

#[tokio::test]
async fn metrics_on_a_listener_of_their_own_leave_the_main_port_404() {
    let node = TestNode::start_with(|config| {
        config.metrics = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = node.server().metrics_addr().expect("a metrics listener");
    assert_ne!(addr.port(), node.http_addr().port());
    let http = node.http().clone();
    let (status, text) = scrape(&http, &format!("http://{addr}/metrics")).await;
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE herald_publishes_total counter\n"));
    let (status, _) = scrape(&http, &node.http_url("/metrics")).await;
    assert_eq!(status, 404);
    let (status, _) = scrape(&http, &format!("http://{addr}/readyz")).await;
    assert_eq!(status, 404, "the metrics listener serves /metrics only");
    let (status, _) = scrape(&http, &node.http_url("/healthz")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shows_link_state_and_replication_lag_per_peer() {
    let mut cluster = cluster_support::TestCluster::start_linked(2).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/metrics", cluster.http(0));
    let link = "herald_mesh_link_up{peer=\"n2\"}";
    let lag = "herald_replication_lag_seconds{peer=\"n2\"}";
    let publish = format!("http://{}/api/publish", cluster.http(0));
    let answer = http
        .post(&publish)
        .bearer_auth(cluster_support::API_KEY)
        .json(&json!({"channel": "news", "data": {"type": "note"}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(answer.status(), 200);
    scrape_until(
        &http,
        &url,
        "n1 shows n2 linked and caught up",
        TIMEOUT,
        |text| sample(text, link) == Some(1.0) && sample(text, lag) == Some(0.0),
    )
    .await;
    // n2 gone: its link goes down and its lag grows from n1's next commit on.
    cluster.kill(1);
    let answer = http
        .post(&publish)
        .bearer_auth(cluster_support::API_KEY)
        .json(&json!({"channel": "news", "data": {"type": "note"}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(answer.status(), 200);
    scrape_until(
        &http,
        &url,
        "n1 shows n2 down and behind",
        Duration::from_secs(20),
        |text| sample(text, link) == Some(0.0) && sample(text, lag).is_some_and(|lag| lag >= 0.5),
    )
    .await;
}
