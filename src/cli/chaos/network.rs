//! The network `herald chaos` cuts and degrades: one network namespace per spawned node, or
//! where namespaces cannot be had, rules on loopback addresses ([`super::loopback`]).
//!
//! [`Namespaces`] makes a bridge in this process's namespace with the address `.254` of a
//! private /24 it picks (one not routed here yet), and for node `i` a namespace with a veth
//! pair to that bridge and the address `.(i + 1)`; the node runs there under `ip netns exec`.
//! Clients and publishers (this process) reach every node through the bridge, so a fault
//! between nodes never cuts a client off: like a load balancer that still sees both sides of
//! a split.
//!
//! Faults are nftables rules in each node's namespace, on its input hook, replaced atomically
//! as one table (`inet herald_chaos`) on every change:
//!
//! - a **cut** `from -> to` drops at `to` every packet whose source is `from`'s address (a
//!   symmetric partition is both directions; a one-way partition one of them);
//! - **loss** drops the given share of packets from every other node (`numgen random`), so
//!   each direction of each link loses that share; packets from clients are untouched;
//! - **delay** (`tc netem` on the node's veth) only where the kernel has `sch_netem`; the
//!   testbed says whether it has ([`Namespaces::delay_support`]) and never pretends.
//!
//! Everything is removed on drop: namespaces (which takes their veth ends and rules with
//! them) and the bridge. Names carry this process's id and a counter, so that several runs
//! (parallel tests) never share one.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

use super::loopback::LoopbackRules;
use crate::cli::bench::nodes::Host;

/// Testbeds made by this process so far (a part of every name).
static MADE: AtomicU32 = AtomicU32::new(0);

/// Which network a run uses (`--network`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkChoice {
    /// Namespaces where they can be had, else rules on loopback addresses.
    Auto,
    Namespaces,
    Loopback,
}

/// The network between the nodes of a run that injects partitions or loss.
pub enum Network {
    Namespaces(Namespaces),
    Loopback(LoopbackRules),
}

impl Network {
    /// Sets up the network `choice` names for `count` nodes, or says why it cannot.
    pub fn create(count: usize, choice: NetworkChoice) -> anyhow::Result<Self> {
        let namespaces = match choice {
            NetworkChoice::Loopback => Err(anyhow::anyhow!("--network loopback")),
            _ => Namespaces::create(count),
        };
        let error = match namespaces {
            Ok(namespaces) => return Ok(Self::Namespaces(namespaces)),
            Err(error) if choice == NetworkChoice::Namespaces => return Err(error),
            Err(error) => error,
        };
        match LoopbackRules::create(count) {
            Ok(rules) => Ok(Self::Loopback(rules)),
            Err(fallback) => bail!(
                "network namespaces cannot be had ({error:#}), nor nftables rules on \
                 loopback ({fallback:#})"
            ),
        }
    }

    pub fn hosts(&self) -> Vec<Host> {
        match self {
            Self::Namespaces(n) => n.hosts(),
            Self::Loopback(l) => l.hosts(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Namespaces(n) => n.describe(),
            Self::Loopback(l) => l.describe(),
        }
    }

    pub fn is_namespaces(&self) -> bool {
        matches!(self, Self::Namespaces(_))
    }

    /// `Ok` when delay can be injected, else why not.
    pub fn delay_support(&self) -> Result<(), String> {
        match self {
            Self::Namespaces(n) => n.delay_support().clone(),
            Self::Loopback(_) => Err("delay needs network namespaces (tc netem on the nodes' \
                                     own devices)"
                .into()),
        }
    }

    pub fn set_delay(&mut self, millis: u32) -> anyhow::Result<()> {
        match self {
            Self::Namespaces(n) => n.set_delay(millis),
            Self::Loopback(_) => bail!("delay needs network namespaces"),
        }
    }

    pub fn cut(&mut self, from: Endpoint, to: Endpoint) -> anyhow::Result<()> {
        match (self, from, to) {
            (Self::Namespaces(n), from, to) => n.cut(from, to),
            (Self::Loopback(l), Endpoint::Node(from), Endpoint::Node(to)) => l.cut(from, to),
            (Self::Loopback(_), _, _) => {
                bail!("links to Redis can be cut only between network namespaces")
            }
        }
    }

    pub fn set_loss(&mut self, percent: u8) -> anyhow::Result<()> {
        match self {
            Self::Namespaces(n) => n.set_loss(percent),
            Self::Loopback(l) => l.set_loss(percent),
        }
    }

    pub fn heal(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Namespaces(n) => n.heal(),
            Self::Loopback(l) => l.heal(),
        }
    }
}

/// Per-process namespaces, bridge and veth pairs, and the fault rules in them.
pub struct Namespaces {
    tag: String,
    bridge: String,
    subnet: [u8; 3],
    namespaces: Vec<String>,
    cuts: BTreeSet<(Endpoint, Endpoint)>,
    loss_percent: u8,
    delay_support: Result<(), String>,
    /// The port of the Redis server on the bridge address, when the nodes share one.
    redis_port: Option<u16>,
}

/// One end of a link the testbed can cut: a node, or the Redis server on the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Node(usize),
    Redis,
}

/// Why namespaces cannot be had here, or nothing.
pub fn availability() -> Result<(), String> {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("network namespaces need root".into());
    }
    for tool in ["ip", "nft"] {
        if run_quiet(tool, &["-V"]).is_err() && run_quiet(tool, &["--version"]).is_err() {
            return Err(format!(
                "`{tool}` is not installed (Debian: {})",
                if tool == "ip" { "iproute2" } else { "nftables" }
            ));
        }
    }
    Ok(())
}

impl Namespaces {
    /// Makes the bridge and `count` namespaces, each with its veth and address.
    pub fn create(count: usize) -> anyhow::Result<Self> {
        if let Err(reason) = availability() {
            bail!("{reason}");
        }
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:x}{made:x}", std::process::id() % 0xfffff);
        let subnet = free_subnet(std::process::id(), made)?;
        let mut testbed = Self {
            bridge: format!("hcb{tag}"),
            tag,
            subnet,
            namespaces: Vec::new(),
            cuts: BTreeSet::new(),
            loss_percent: 0,
            delay_support: Err("not probed".into()),
            redis_port: None,
        };
        let bridge = testbed.bridge.clone();
        let gateway = format!("{}/24", testbed.address(usize::from(GATEWAY - 1)));
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run("ip", &["addr", "add", &gateway, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for index in 0..count {
            testbed.add_namespace(index)?;
        }
        testbed.delay_support = probe_netem(&testbed.namespaces[0]);
        testbed.apply()?;
        Ok(testbed)
    }

    fn add_namespace(&mut self, index: usize) -> anyhow::Result<()> {
        let namespace = format!("hc{}n{}", self.tag, index + 1);
        let outside = format!("hc{}v{}", self.tag, index + 1);
        let inside = format!("hc{}p{}", self.tag, index + 1);
        run("ip", &["netns", "add", &namespace])?;
        self.namespaces.push(namespace.clone());
        run(
            "ip",
            &[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ],
        )?;
        run("ip", &["link", "set", &inside, "netns", &namespace])?;
        run(
            "ip",
            &["link", "set", &outside, "master", &self.bridge, "up"],
        )?;
        let address = format!("{}/24", self.address(index));
        run(
            "ip",
            &["-n", &namespace, "link", "set", &inside, "name", "eth0"],
        )?;
        run(
            "ip",
            &["-n", &namespace, "addr", "add", &address, "dev", "eth0"],
        )?;
        run("ip", &["-n", &namespace, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", &namespace, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Node `index`'s address inside its namespace.
    pub fn address(&self, index: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        let host = u8::try_from(index + 1).unwrap_or(u8::MAX);
        Ipv4Addr::new(a, b, c, host)
    }

    /// The bridge's address: where this process (clients, a Redis server) is reached from
    /// the namespaces.
    pub fn gateway(&self) -> Ipv4Addr {
        self.address(usize::from(GATEWAY - 1))
    }

    /// Says that the nodes share a Redis server at the gateway on `port`: cuts and loss then
    /// apply to their links to it.
    pub fn set_redis_port(&mut self, port: u16) {
        self.redis_port = Some(port);
    }

    /// Where node `index` runs: for [`crate::cli::bench::nodes::spawn_cluster_on`].
    pub fn hosts(&self) -> Vec<Host> {
        (0..self.namespaces.len())
            .map(|index| Host {
                ip: IpAddr::V4(self.address(index)),
                netns: Some(self.namespaces[index].clone()),
            })
            .collect()
    }

    /// What this testbed is, for the report.
    pub fn describe(&self) -> String {
        let [a, b, c] = self.subnet;
        format!(
            "network namespaces {} (bridge {}, {a}.{b}.{c}.0/24), faults as nftables rules",
            self.namespaces.join(","),
            self.bridge
        )
    }

    /// `Ok` when `tc netem` delay can be injected here, else why not.
    pub fn delay_support(&self) -> &Result<(), String> {
        &self.delay_support
    }

    /// Drops every packet from `from` to `to` (one direction) until healed.
    pub fn cut(&mut self, from: Endpoint, to: Endpoint) -> anyhow::Result<()> {
        self.cuts.insert((from, to));
        self.apply()
    }

    /// Drops `percent` of the packets on every link between nodes, each direction.
    pub fn set_loss(&mut self, percent: u8) -> anyhow::Result<()> {
        self.loss_percent = percent.min(100);
        self.apply()
    }

    /// Delays every packet a node sends by `millis` (needs [`Namespaces::delay_support`]).
    pub fn set_delay(&mut self, millis: u32) -> anyhow::Result<()> {
        if let Err(reason) = &self.delay_support {
            bail!("delay cannot be injected: {reason}");
        }
        for namespace in &self.namespaces {
            if millis == 0 {
                let _ = run_quiet(
                    "ip",
                    &[
                        "netns", "exec", namespace, "tc", "qdisc", "del", "dev", "eth0", "root",
                    ],
                );
            } else {
                run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        namespace,
                        "tc",
                        "qdisc",
                        "replace",
                        "dev",
                        "eth0",
                        "root",
                        "netem",
                        "delay",
                        &format!("{millis}ms"),
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Removes every cut and all loss (delay too, where it was set).
    pub fn heal(&mut self) -> anyhow::Result<()> {
        self.cuts.clear();
        self.loss_percent = 0;
        if self.delay_support.is_ok() {
            self.set_delay(0)?;
        }
        self.apply()
    }

    /// Writes each namespace's rule table for the current cuts and loss.
    fn apply(&self) -> anyhow::Result<()> {
        let links = Links {
            nodes: (0..self.namespaces.len())
                .map(|i| self.address(i))
                .collect(),
            redis: self.redis_port.map(|port| (self.gateway(), port)),
        };
        for (index, namespace) in self.namespaces.iter().enumerate() {
            let rules = rules_for(index, &links, &self.cuts, self.loss_percent);
            run_with_input(
                "ip",
                &["netns", "exec", namespace, "nft", "-f", "-"],
                &rules,
            )
            .with_context(|| format!("cannot set the fault rules of {namespace}"))?;
        }
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for namespace in &self.namespaces {
            let _ = run_quiet("ip", &["netns", "del", namespace]);
        }
        let _ = run_quiet("ip", &["link", "del", &self.bridge]);
    }
}

/// The addresses a node's rules name: every node's, and the Redis server's with its port.
struct Links {
    nodes: Vec<Ipv4Addr>,
    redis: Option<(Ipv4Addr, u16)>,
}

/// The nftables script for node `to`: its whole table, replaced in one transaction. Cuts and
/// loss from other nodes and from Redis are dropped on input; cuts and loss towards Redis (a
/// process of the root namespace, where no rule of ours lives) on output.
fn rules_for(
    to: usize,
    links: &Links,
    cuts: &BTreeSet<(Endpoint, Endpoint)>,
    loss_percent: u8,
) -> String {
    let mut input = Vec::new();
    let mut output = Vec::new();
    let from_redis = |(ip, port): (Ipv4Addr, u16)| format!("ip saddr {ip} tcp sport {port}");
    let to_redis = |(ip, port): (Ipv4Addr, u16)| format!("ip daddr {ip} tcp dport {port}");
    for &(from, cut_to) in cuts {
        match (from, cut_to) {
            (Endpoint::Node(from), Endpoint::Node(cut_to)) if cut_to == to => {
                input.push(format!("ip saddr {} drop", links.nodes[from]));
            }
            (Endpoint::Redis, Endpoint::Node(cut_to)) if cut_to == to => {
                if let Some(redis) = links.redis {
                    input.push(format!("{} drop", from_redis(redis)));
                }
            }
            (Endpoint::Node(from), Endpoint::Redis) if from == to => {
                if let Some(redis) = links.redis {
                    output.push(format!("{} drop", to_redis(redis)));
                }
            }
            _ => {}
        }
    }
    if loss_percent > 0 {
        let lose = format!("numgen random mod 100 < {loss_percent} drop");
        let others: Vec<String> = (0..links.nodes.len())
            .filter(|&from| from != to)
            .map(|from| links.nodes[from].to_string())
            .collect();
        if !others.is_empty() {
            input.push(format!("ip saddr {{ {} }} {lose}", others.join(", ")));
        }
        if let Some(redis) = links.redis {
            input.push(format!("{} {lose}", from_redis(redis)));
            output.push(format!("{} {lose}", to_redis(redis)));
        }
    }
    let mut rules = String::from(
        "table inet herald_chaos\ndelete table inet herald_chaos\ntable inet herald_chaos {\n",
    );
    for (chain, hook, lines) in [("input", "input", input), ("output", "output", output)] {
        rules.push_str(&format!(
            "  chain {chain} {{\n    type filter hook {hook} priority 0; policy accept;\n"
        ));
        for line in lines {
            rules.push_str(&format!("    {line}\n"));
        }
        rules.push_str("  }\n");
    }
    rules.push_str("}\n");
    rules
}

/// The bridge's host number in the subnet.
const GATEWAY: u8 = 254;

/// A 10.x.y.0/24 that no route here covers yet, derived from the process id and a counter.
fn free_subnet(pid: u32, made: u32) -> anyhow::Result<[u8; 3]> {
    let routes = Command::new("ip")
        .args(["-4", "route", "show"])
        .output()
        .context("cannot list routes")?;
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    let start = pid.wrapping_mul(31).wrapping_add(made.wrapping_mul(7));
    for attempt in 0..4096u32 {
        let pick = start.wrapping_add(attempt) % (56 * 256);
        let b = 200 + u8::try_from(pick / 256).unwrap_or(0);
        let c = u8::try_from(pick % 256).unwrap_or(0);
        let prefix = format!("10.{b}.{c}.");
        if !routes.contains(&prefix) {
            return Ok([10, b, c]);
        }
    }
    bail!("no free 10.200-255.x.0/24 subnet for the testbed")
}

/// Whether `tc netem` works in `namespace` (the kernel may lack `sch_netem`).
fn probe_netem(namespace: &str) -> Result<(), String> {
    let added = Command::new("ip")
        .args([
            "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
            "delay", "1ms",
        ])
        .output()
        .map_err(|e| format!("cannot run tc: {e}"))?;
    if !added.status.success() {
        let why = String::from_utf8_lossy(&added.stderr).trim().to_string();
        return Err(format!(
            "tc netem is unavailable here ({why}): the kernel lacks sch_netem"
        ));
    }
    let _ = run_quiet(
        "ip",
        &[
            "netns", "exec", namespace, "tc", "qdisc", "del", "dev", "lo", "root",
        ],
    );
    Ok(())
}

/// Runs `program` with `args`; fails with its standard error when it fails.
pub(super) fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    succeeded(program, args, &output)
}

fn succeeded(program: &str, args: &[&str], output: &std::process::Output) -> anyhow::Result<()> {
    if !output.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn run_quiet(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("{program} failed");
    }
    Ok(())
}

/// [`run`] with `input` on the program's standard input.
pub(super) fn run_with_input(program: &str, args: &[&str], input: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(input.as_bytes())?;
    let output = child.wait_with_output()?;
    succeeded(program, args, &output)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(count: u8, redis: bool) -> Links {
        Links {
            nodes: (1..=count).map(|i| Ipv4Addr::new(10, 201, 7, i)).collect(),
            redis: redis.then_some((Ipv4Addr::new(10, 201, 7, 254), 6400)),
        }
    }

    #[test]
    fn a_cut_drops_only_the_cut_direction_at_the_receiver() {
        let cuts = BTreeSet::from([(Endpoint::Node(0), Endpoint::Node(1))]);
        let at = |to| rules_for(to, &links(3, false), &cuts, 0);
        assert!(at(1).contains("ip saddr 10.201.7.1 drop"));
        assert!(!at(0).contains("drop"), "0 still hears 1");
        assert!(!at(2).contains("drop"));
    }

    #[test]
    fn loss_applies_to_other_nodes_only_not_clients() {
        let rules = rules_for(2, &links(3, false), &BTreeSet::new(), 20);
        assert!(
            rules.contains("ip saddr { 10.201.7.1, 10.201.7.2 } numgen random mod 100 < 20 drop")
        );
        assert!(!rules.contains("10.201.7.254"));
    }

    #[test]
    fn links_to_redis_are_cut_and_degraded_by_port_in_both_directions() {
        let cuts = BTreeSet::from([
            (Endpoint::Node(1), Endpoint::Redis),
            (Endpoint::Redis, Endpoint::Node(1)),
        ]);
        let rules = rules_for(1, &links(3, true), &cuts, 0);
        assert!(rules.contains("ip saddr 10.201.7.254 tcp sport 6400 drop"));
        assert!(rules.contains("ip daddr 10.201.7.254 tcp dport 6400 drop"));
        assert!(!rules_for(0, &links(3, true), &cuts, 0).contains("drop"));
        let lossy = rules_for(0, &links(3, true), &BTreeSet::new(), 10);
        assert!(lossy.contains("ip daddr 10.201.7.254 tcp dport 6400 numgen random mod 100 < 10"));
        assert!(lossy.contains("ip saddr 10.201.7.254 tcp sport 6400 numgen random mod 100 < 10"));
    }

    #[test]
    fn the_table_is_replaced_whole() {
        let rules = rules_for(0, &links(2, false), &BTreeSet::new(), 0);
        assert!(rules.starts_with("table inet herald_chaos\ndelete table inet herald_chaos\n"));
        assert!(!rules.contains("drop"));
    }
}
