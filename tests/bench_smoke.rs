//! `herald bench` end to end, small: it starts its own node, loads it briefly, and reports
//! every acknowledged publish delivered once and in order, as JSON; also over TLS.

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .env_remove("HERALD_JWT_SECRET")
        .env_remove("HERALD_API_KEY")
        .output()
        .expect("run herald bench");
    assert!(
        output.status.success(),
        "herald bench failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

/// A small `fanout` run (20 clients, 50 publishes/s for 1 s) with `extra` flags.
fn small_fanout(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["fanout"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "--clients",
        "20",
        "--rate",
        "50",
        "--duration",
        "1s",
        "--store-sync",
        "normal",
    ]);
    bench(&args)
}

/// Every acknowledged publish reached each of the 20 clients once, in order.
fn assert_every_publish_delivered_once(report: &serde_json::Value) {
    let acked = report["publishes"]["acked"].as_u64().unwrap();
    assert!(acked > 0, "{report:#}");
    assert_eq!(
        report["deliveries"]["received"].as_u64().unwrap(),
        acked * 20
    );
    for field in ["missing", "duplicates", "out_of_order"] {
        assert_eq!(report["correctness"][field], 0, "{field}: {report:#}");
    }
}

#[test]
fn fanout_delivers_every_publish_once_in_order() {
    let report = small_fanout(&[]);
    assert_every_publish_delivered_once(&report);
    assert_eq!(
        report["deliveries"]["received"],
        report["deliveries"]["expected"]
    );
    assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(report["cpu"]["server_seconds"].as_f64().is_some());
}

#[test]
fn fanout_over_tls_delivers_every_publish_once() {
    // The nodes serve HTTPS and wss:// with a certificate generated for the run, and every
    // bench connection (sockets, publishes, /metrics) speaks TLS to them.
    assert_every_publish_delivered_once(&small_fanout(&["--tls"]));
}

#[test]
fn idle_reports_memory_per_connection() {
    let report = bench(&["idle", "--clients", "50", "--duration", "200ms"]);
    let node = &report["nodes"][0];
    assert_eq!(node["clients"], 50);
    assert_eq!(report["clients"]["connected"], 50);
    assert!(
        node["rss_per_connection_kib"].as_f64().is_some(),
        "{report:#}"
    );
}

#[test]
fn rooms_in_batches_delivers_every_event_once_in_order() {
    let report = bench(&[
        "rooms",
        "--clients",
        "20",
        "--channels",
        "5",
        "--publishers",
        "2",
        "--batch",
        "25",
        "--rate",
        "500",
        "--duration",
        "1s",
        "--store-sync",
        "normal",
    ]);
    assert_eq!(report["plan"]["batch"], 25);
    let acked = report["publishes"]["acked"].as_u64().unwrap();
    assert!(acked >= 25 && acked % 25 == 0, "{report:#}");
    assert_eq!(
        report["deliveries"]["expected"].as_u64().unwrap(),
        acked * 4
    );
    assert_eq!(
        report["deliveries"]["received"],
        report["deliveries"]["expected"]
    );
    for field in ["missing", "duplicates", "out_of_order"] {
        assert_eq!(report["correctness"][field], 0, "{field}: {report:#}");
    }
}

#[test]
fn compare_bare_loads_the_floor_and_herald_and_gives_the_ratio() {
    let report = bench(&[
        "fanout",
        "--compare-bare",
        "--clients",
        "20",
        "--rate",
        "50",
        "--duration",
        "1s",
        "--store-sync",
        "normal",
    ]);
    for side in ["floor", "herald"] {
        let run = &report[side];
        let acked = run["publishes"]["acked"].as_u64().unwrap();
        assert!(acked > 0, "{side}: {report:#}");
        assert_eq!(run["deliveries"]["received"], run["deliveries"]["expected"]);
        assert_eq!(run["correctness"]["missing"], 0, "{side}: {report:#}");
        assert!(run["cpu"]["server_us_per_delivery"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(report["floor"]["nodes"][0]["id"], "floor");
    let ratio = report["comparison"]["server_cpu_ratio"].as_f64().unwrap();
    let (herald, floor) = (
        report["herald"]["cpu"]["server_us_per_delivery"]
            .as_f64()
            .unwrap(),
        report["floor"]["cpu"]["server_us_per_delivery"]
            .as_f64()
            .unwrap(),
    );
    assert!((ratio - herald / floor).abs() < 1e-9, "{report:#}");
}

#[test]
fn idle_over_a_cluster_spreads_clients_over_worker_processes() {
    // 300 clients, at most 120 per process: three worker processes, each from its own
    // loopback address, against a three-node mesh cluster; then one broadcast reaches all.
    let report = bench(&[
        "idle",
        "--spawn",
        "3",
        "--cluster",
        "--clients",
        "300",
        "--clients-per-process",
        "120",
        "--duration",
        "200ms",
        "--store-sync",
        "normal",
    ]);
    assert_eq!(report["clients"]["connected"], 300, "{report:#}");
    assert!(report["clients"]["connects_per_second"].as_f64().unwrap() > 0.0);
    let nodes = report["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for node in nodes {
        assert_eq!(node["clients"], 100, "{report:#}");
        assert!(node["rss_per_connection_kib"].as_f64().is_some());
    }
    assert_eq!(report["publishes"]["acked"], 1, "{report:#}");
    assert_eq!(report["deliveries"]["expected"], 300);
    assert_eq!(report["deliveries"]["received"], 300, "{report:#}");
    for field in ["missing", "duplicates", "out_of_order"] {
        assert_eq!(report["correctness"][field], 0, "{field}: {report:#}");
    }
    assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
}
