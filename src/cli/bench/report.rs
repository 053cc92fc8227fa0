//! The result of a run: a table for people, JSON (`--json`) for machines, and each figure
//! next to its DESIGN.md section 7 target.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::scenario::{Plan, Scenario};
use super::server_metrics::ServerCounters;

#[derive(Debug, Serialize)]
pub struct Report {
    pub plan: Plan,
    pub nodes: Vec<NodeReport>,
    pub clients: ClientsReport,
    pub publishes: PublishReport,
    pub deliveries: DeliveryReport,
    /// Publish (HTTP request sent) to receive (client read), milliseconds.
    pub latency_ms: Option<Latency>,
    pub correctness: Correctness,
    pub cpu: CpuReport,
    /// The servers' own counters over the window, from `/metrics`.
    pub server_counters: Option<ServerCounters>,
    pub targets: Vec<Target>,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct NodeReport {
    pub id: String,
    pub http: String,
    pub pid: Option<u32>,
    pub clients: usize,
    /// Server CPU (user + system) during the measured window, seconds.
    pub cpu_seconds: Option<f64>,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// (after - before) / clients on this node, for `idle`.
    pub rss_per_connection_kib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ClientsReport {
    pub asked: usize,
    pub connected: usize,
    pub connect_failed: usize,
    /// Connections closed or failed during the run (1013 slow client, errors).
    pub disconnected: usize,
    pub connect_seconds: f64,
    /// Connected clients per second of the connect phase.
    pub connects_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct PublishReport {
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub acked_per_second: f64,
    /// Request to commit acknowledgement, milliseconds.
    pub ack_latency_ms: Option<Latency>,
    /// How far behind schedule the slowest publisher fell, milliseconds.
    pub max_lag_ms: f64,
    pub window_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct DeliveryReport {
    pub expected: u64,
    pub received: u64,
    pub asked_per_second: Option<f64>,
    /// Received / (publish window + time to drain).
    pub per_second: f64,
    /// Time from the last publish until every expected delivery had arrived (or the drain gave up).
    pub drain_seconds: f64,
}

#[derive(Debug, Serialize, Clone, Copy)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    pub samples: u64,
}

impl Latency {
    /// From a histogram in microseconds.
    pub fn from_micros(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Some(Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
            samples: histogram.len(),
        })
    }
}

#[derive(Debug, Serialize, Default)]
pub struct Correctness {
    /// Acknowledged publishes a connected client never received (summed over clients).
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Clients with at least one of the above.
    pub clients_affected: u64,
}

impl Correctness {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.out_of_order == 0
    }
}

#[derive(Debug, Serialize, Default)]
pub struct CpuReport {
    /// Every measured node's CPU over the window, seconds.
    pub server_seconds: Option<f64>,
    pub server_us_per_delivery: Option<f64>,
    pub server_us_per_publish: Option<f64>,
    /// The bench's own CPU over the window.
    pub bench_seconds: Option<f64>,
    pub bench_us_per_delivery: Option<f64>,
    pub window_seconds: f64,
}

/// One DESIGN.md section 7 target and how this run did.
#[derive(Debug, Serialize)]
pub struct Target {
    pub figure: String,
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

impl Report {
    /// Fills in [`Report::targets`] for the scenario.
    pub fn judge(&mut self) {
        let mut targets = Vec::new();
        let nodes = self.nodes.len();
        let on = if nodes == 1 {
            "1 node".to_string()
        } else {
            format!("{nodes} nodes")
        };
        let p99 = self.latency_ms.map(|l| l.p99);
        match self.plan.scenario {
            Scenario::Fanout => {
                if let Some(asked) = self.deliveries.asked_per_second {
                    let kept_up =
                        self.deliveries.per_second >= 0.95 * asked && self.correctness.missing == 0;
                    targets.push(Target {
                        figure: format!("fanout keeps up ({on})"),
                        target: format!("{asked:.0} deliveries/s, nothing missing"),
                        measured: format!(
                            "{:.0}/s, {} missing",
                            self.deliveries.per_second, self.correctness.missing
                        ),
                        met: Some(kept_up),
                    });
                }
                targets.push(latency_target(&on, p99, 50.0));
                targets.push(self.cpu_target());
            }
            Scenario::Rooms => {
                targets.push(latency_target(&on, p99, 5.0));
                targets.push(self.cpu_target());
            }
            Scenario::Durable => {
                let per_node = self.publishes.acked_per_second / nodes.max(1) as f64;
                targets.push(Target {
                    figure: "durable publishes per node".into(),
                    target: ">= 20000/s committed".into(),
                    measured: format!("{per_node:.0}/s"),
                    met: Some(per_node >= 20_000.0),
                });
            }
            Scenario::Failover | Scenario::Catchup | Scenario::Retention => {}
            Scenario::Idle => {
                for node in &self.nodes {
                    let per = node.rss_per_connection_kib;
                    targets.push(Target {
                        figure: format!("idle memory per connection ({})", node.id),
                        target: "19000 per node, < 8 KiB each".into(),
                        measured: match per {
                            Some(kib) => format!("{} conns, {kib:.1} KiB each", node.clients),
                            None => "no pid to read".into(),
                        },
                        met: per.map(|kib| kib < 8.0 && node.clients >= 19_000),
                    });
                }
            }
        }
        targets.push(Target {
            figure: "missing / duplicate / out of order".into(),
            target: "0 / 0 / 0".into(),
            measured: format!(
                "{} / {} / {}",
                self.correctness.missing,
                self.correctness.duplicates,
                self.correctness.out_of_order
            ),
            met: Some(self.correctness.ok()),
        });
        self.targets = targets;
    }

    fn cpu_target(&self) -> Target {
        let us = self.cpu.server_us_per_delivery;
        Target {
            figure: "server CPU per delivery".into(),
            target: "< 3 us".into(),
            measured: us.map_or("no pid to read".into(), |us| format!("{us:.2} us")),
            met: us.map(|us| us < 3.0),
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let plan = &self.plan;
        let load = match (plan.scenario, plan.rate) {
            (Scenario::Idle, _) if self.publishes.sent > 0 => format!(
                "held {:.0} s, then {} broadcast(s) to all",
                plan.duration.as_secs_f64(),
                self.publishes.sent
            ),
            (Scenario::Idle, _) => format!("held {:.0} s", plan.duration.as_secs_f64()),
            (_, Some(rate)) => format!(
                "{} publishers at {rate:.0}/s for {:.0} s",
                plan.publishers,
                plan.duration.as_secs_f64()
            ),
            (_, None) => format!(
                "{} publishers as fast as acknowledged for {:.0} s",
                plan.publishers,
                plan.duration.as_secs_f64()
            ),
        };
        let load = if plan.batch > 1 {
            format!("{load}, {} events per /api/batch request", plan.batch)
        } else {
            load
        };
        let _ = writeln!(
            out,
            "herald bench {}: {} clients on {} channel(s) over {} node(s), {load}",
            plan.scenario.name(),
            plan.clients,
            plan.channels,
            self.nodes.len(),
        );
        let _ = writeln!(out);
        let mut rows: Vec<(String, String)> = Vec::new();
        let c = &self.clients;
        rows.push((
            "clients".into(),
            format!(
                "{} connected of {} in {:.1} s ({:.0}/s), {} failed, {} dropped during the run",
                c.connected,
                c.asked,
                c.connect_seconds,
                c.connects_per_second,
                c.connect_failed,
                c.disconnected
            ),
        ));
        if plan.scenario != Scenario::Idle || self.publishes.sent > 0 {
            let p = &self.publishes;
            rows.push((
                "publishes".into(),
                format!(
                    "{} acknowledged of {} sent ({} failed): {:.0}/s over {:.1} s",
                    p.acked, p.sent, p.failed, p.acked_per_second, p.window_seconds
                ),
            ));
            if let Some(l) = p.ack_latency_ms {
                rows.push(("publish ack ms".into(), latency_row(&l)));
            }
            if p.max_lag_ms > 0.0 {
                rows.push((
                    "publisher lag".into(),
                    format!("{:.1} ms behind schedule at worst", p.max_lag_ms),
                ));
            }
            let d = &self.deliveries;
            let asked = d
                .asked_per_second
                .map_or(String::new(), |a| format!(" (asked {a:.0}/s)"));
            rows.push((
                "deliveries".into(),
                format!(
                    "{} of {} expected: {:.0}/s{asked}, drained {:.2} s after the last publish",
                    d.received, d.expected, d.per_second, d.drain_seconds
                ),
            ));
            match &self.latency_ms {
                Some(l) => rows.push(("latency ms".into(), latency_row(l))),
                None => rows.push(("latency ms".into(), "no deliveries".into())),
            }
            let k = &self.correctness;
            rows.push((
                "correctness".into(),
                format!(
                    "{} missing, {} duplicated, {} out of order ({} clients affected)",
                    k.missing, k.duplicates, k.out_of_order, k.clients_affected
                ),
            ));
        }
        let cpu = &self.cpu;
        if let Some(seconds) = cpu.server_seconds {
            let mut text = format!(
                "{seconds:.2} s over {:.1} s ({:.0}% of one core)",
                cpu.window_seconds,
                100.0 * seconds / cpu.window_seconds.max(1e-9)
            );
            if let Some(us) = cpu.server_us_per_delivery {
                let _ = write!(text, ", {us:.2} us per delivery");
            }
            if let Some(us) = cpu.server_us_per_publish {
                let _ = write!(text, ", {us:.1} us per publish");
            }
            rows.push(("server CPU".into(), text));
        }
        if let Some(seconds) = cpu.bench_seconds {
            let mut text = format!("{seconds:.2} s");
            if let Some(us) = cpu.bench_us_per_delivery {
                let _ = write!(text, ", {us:.2} us per delivery");
            }
            rows.push(("bench CPU".into(), text));
        }
        if let Some(counters) = &self.server_counters {
            if counters.commits > 0 || counters.deliveries > 0 {
                rows.push((
                    "server counted".into(),
                    format!(
                        "{} commits of {} events ({:.1} per commit), {} deliveries, {} slow clients closed",
                        counters.commits,
                        counters.events_appended,
                        counters.events_per_commit.unwrap_or(0.0),
                        counters.deliveries,
                        counters.slow_client_disconnects
                    ),
                ));
            }
        }
        for node in &self.nodes {
            let mut text = format!(
                "{} pid {} clients {}",
                node.http,
                node.pid.map_or("?".into(), |p| p.to_string()),
                node.clients
            );
            if let Some(cpu) = node.cpu_seconds {
                let _ = write!(text, ", CPU {cpu:.2} s");
            }
            if let (Some(before), Some(after)) = (node.rss_before_kib, node.rss_after_kib) {
                let _ = write!(text, ", RSS {before} -> {after} KiB");
            }
            if let Some(per) = node.rss_per_connection_kib {
                let _ = write!(text, " ({per:.1} KiB per connection)");
            }
            rows.push((format!("node {}", node.id), text));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in rows {
            let _ = writeln!(out, "  {key:<width$}  {value}");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "  targets (DESIGN.md section 7):");
        let figure_width = self
            .targets
            .iter()
            .map(|t| t.figure.len())
            .max()
            .unwrap_or(0);
        let target_width = self
            .targets
            .iter()
            .map(|t| t.target.len())
            .max()
            .unwrap_or(0);
        for target in &self.targets {
            let verdict = match target.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "?",
            };
            let _ = writeln!(
                out,
                "  {verdict:<6}  {:<figure_width$}  {:<target_width$}  {}",
                target.figure, target.target, target.measured
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "  first errors:");
            for error in &self.errors {
                let _ = writeln!(out, "    {error}");
            }
        }
        out
    }
}

fn latency_target(on: &str, p99: Option<f64>, limit_ms: f64) -> Target {
    Target {
        figure: format!("p99 publish-to-receive ({on})"),
        target: format!("< {limit_ms} ms"),
        measured: p99.map_or("no deliveries".into(), |p| format!("{p:.2} ms")),
        met: p99.map(|p| p < limit_ms),
    }
}

fn latency_row(l: &Latency) -> String {
    format!(
        "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (mean {:.2}, {} samples)",
        l.p50, l.p90, l.p99, l.p999, l.max, l.mean, l.samples
    )
}
