//! Scenarios by name, their defaults (DESIGN.md section 7), and the plan a run follows: how
//! many clients on which channels of which node, how many publishers at what rate.
//!
//! | scenario | clients | channels | publishes/s | publishers | target (section 7) |
//! |---|---|---|---|---|---|
//! | `fanout` | 1,000 on one channel | 1 | 200 for 10 s | 16 | keeps up, p99 < 50 ms |
//! | `rooms` | 1,000, ten per channel | 100 | 500 for 10 s | 32 | p99 < 5 ms |
//! | `durable` | 1, on every channel | 16 | as fast as acknowledged | 128 | 20k/s per node |
//! | `idle` | 19,000 per node | 1 | none (held 5 s), then 1 broadcast | 0 | < 8 KiB resident each |
//!
//! `failover`, `catchup` (`cluster_timings.rs`) and `retention` (`retention.rs`) spawn their own
//! nodes and measure outside any plan; `--spawn N --cluster` starts N nodes as one cluster and
//! routes [`Routing::Cluster`], so `fanout` and `rooms` measure cross-node delivery.
//!
//! Routing: in a cluster every node delivers every channel, so clients go round-robin over the
//! nodes and so do publishers ([`Routing::Cluster`]). Independent nodes (what `--spawn` starts
//! until nodes can be joined) only deliver their own publishes, so a channel then lives on one
//! node, `channel % nodes`, and its clients and publishes go there ([`Routing::PerChannel`]).

use std::time::Duration;

/// The named workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// One channel, many clients: fan-out cost and latency.
    Fanout,
    /// Many channels, a few clients each: routing and latency.
    Rooms,
    /// Publish throughput with commit acknowledgement, many concurrent publishers.
    Durable,
    /// Idle connections: resident memory per connection.
    Idle,
    /// Three-node cluster: time for peers to mark a SIGKILLed node dead.
    Failover,
    /// Three-node cluster: time for a node that missed `--events` events to catch up.
    Catchup,
    /// Two nodes, pruning off and on: publish latency, disk over time, resume below the floor.
    Retention,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fanout => "fanout",
            Self::Rooms => "rooms",
            Self::Durable => "durable",
            Self::Idle => "idle",
            Self::Failover => "failover",
            Self::Catchup => "catchup",
            Self::Retention => "retention",
        }
    }
}

/// How clients and publishes are spread over the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// The nodes form one cluster: any node delivers any channel.
    Cluster,
    /// Independent nodes: channel `c` lives on node `c % nodes`.
    PerChannel,
}

/// Everything a run does, after defaults and flags are merged.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Plan {
    pub scenario: Scenario,
    pub clients: usize,
    pub channels: u32,
    /// Channels each client subscribes to (at most [`crate::features::channels::MAX_CHANNELS_PER_SOCKET`]).
    pub channels_per_client: u32,
    /// Publishes per second over all publishers; `None` as fast as acknowledgements allow.
    pub rate: Option<f64>,
    #[serde(with = "seconds")]
    pub duration: Duration,
    pub publishers: u32,
    pub client_tasks: usize,
    #[serde(with = "seconds")]
    pub drain: Duration,
    pub routing: Routing,
    /// Events per publish request: 1 publishes through `POST /api/publish`, more through
    /// `POST /api/batch`.
    pub batch: u32,
}

/// The flags that override a scenario's defaults.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub clients: Option<usize>,
    pub channels: Option<u32>,
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    pub publishers: Option<u32>,
    pub client_tasks: Option<usize>,
    pub drain: Option<Duration>,
    pub batch: Option<u32>,
}

/// Idle connections held per node by default (the section 7 figure).
pub const IDLE_PER_NODE: usize = 19_000;

impl Plan {
    pub fn new(scenario: Scenario, nodes: usize, routing: Routing, flags: &Overrides) -> Self {
        let nodes = nodes.max(1);
        let (clients, channels, per_client, rate, duration, publishers) = match scenario {
            Scenario::Fanout => (1_000, 1, 1, Some(200.0), 10, 16),
            Scenario::Rooms => (1_000, 100, 1, Some(500.0), 10, 32),
            Scenario::Durable => (1, 16, u32::MAX, None, 10, 128),
            Scenario::Idle => (IDLE_PER_NODE * nodes, 1, 1, None, 5, 0),
            // Measured by `cluster_timings`, never planned here.
            Scenario::Failover | Scenario::Catchup | Scenario::Retention => (0, 1, 1, None, 0, 0),
        };
        let channels = flags.channels.unwrap_or(channels).max(1);
        let clients = flags.clients.unwrap_or(clients);
        // A rate of 0 on the command line means "as fast as acknowledged".
        let rate = match flags.rate {
            Some(rate) if rate > 0.0 => Some(rate),
            Some(_) => None,
            None => rate,
        };
        let publishers = match scenario {
            Scenario::Idle | Scenario::Failover | Scenario::Catchup | Scenario::Retention => 0,
            _ => flags.publishers.unwrap_or(publishers).max(1),
        };
        let max_per_socket = crate::features::channels::MAX_CHANNELS_PER_SOCKET as u32;
        let client_tasks = flags
            .client_tasks
            .unwrap_or_else(|| clients.div_ceil(250).clamp(1, 16))
            .clamp(1, clients.max(1));
        Self {
            scenario,
            clients,
            channels,
            channels_per_client: per_client.min(channels).min(max_per_socket),
            rate,
            duration: flags.duration.unwrap_or(Duration::from_secs(duration)),
            publishers,
            client_tasks,
            drain: flags.drain.unwrap_or(Duration::from_secs(10)),
            routing,
            batch: flags.batch.unwrap_or(1).max(1),
        }
    }

    /// The node (index) that a publish on `channel` goes to, for publisher `publisher`.
    pub fn publish_node(&self, publisher: u32, channel: u32, nodes: usize) -> usize {
        match self.routing {
            Routing::Cluster => publisher as usize % nodes.max(1),
            Routing::PerChannel => channel as usize % nodes.max(1),
        }
    }

    /// The channel publisher `publisher` uses for its `step`-th publish: each publisher walks
    /// every channel, starting at its own.
    pub fn publish_channel(&self, publisher: u32, step: u64) -> u32 {
        ((u64::from(publisher) + step) % u64::from(self.channels)) as u32
    }

    /// Client `index`'s node (index) and channels.
    pub fn client_placement(&self, index: usize, nodes: usize) -> (usize, Vec<u32>) {
        let nodes = nodes.max(1);
        let home = (index % self.channels as usize) as u32;
        match self.routing {
            Routing::Cluster => {
                let channels = (0..self.channels_per_client)
                    .map(|offset| (home + offset) % self.channels)
                    .collect();
                (index % nodes, channels)
            }
            Routing::PerChannel => {
                let node = home as usize % nodes;
                let channels = (0..self.channels)
                    .map(|offset| (home + offset) % self.channels)
                    .filter(|channel| *channel as usize % nodes == node)
                    .take(self.channels_per_client as usize)
                    .collect();
                (node, channels)
            }
        }
    }

    /// The deliveries per second this plan asks for (each publish times its channel's
    /// subscribers), when it has a fixed rate.
    pub fn asked_deliveries_per_second(&self) -> Option<f64> {
        let rate = self.rate?;
        let subscriptions = self.clients as f64 * f64::from(self.channels_per_client);
        Some(rate * subscriptions / f64::from(self.channels))
    }
}

/// The name of channel `index` on the server.
pub fn channel_name(index: u32) -> String {
    format!("bench.{index}")
}

mod seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(value.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_design_targets() {
        let plan = Plan::new(Scenario::Fanout, 1, Routing::Cluster, &Overrides::default());
        assert_eq!(
            (plan.clients, plan.channels, plan.rate),
            (1000, 1, Some(200.0))
        );
        assert_eq!(plan.asked_deliveries_per_second(), Some(200_000.0));
        let rooms = Plan::new(Scenario::Rooms, 1, Routing::Cluster, &Overrides::default());
        assert_eq!(rooms.asked_deliveries_per_second(), Some(5_000.0));
        let idle = Plan::new(Scenario::Idle, 3, Routing::Cluster, &Overrides::default());
        assert_eq!((idle.clients, idle.publishers), (57_000, 0));
    }

    #[test]
    fn per_channel_routing_keeps_a_client_on_its_channels_node() {
        let flags = Overrides {
            clients: Some(6),
            channels: Some(6),
            ..Overrides::default()
        };
        let plan = Plan::new(Scenario::Durable, 3, Routing::PerChannel, &flags);
        assert_eq!(plan.channels_per_client, 6);
        for index in 0..6 {
            let (node, channels) = plan.client_placement(index, 3);
            assert_eq!(channels.len(), 2);
            assert!(channels.iter().all(|c| *c as usize % 3 == node));
            assert!(channels.iter().all(|&c| plan.publish_node(0, c, 3) == node));
        }
    }
}
