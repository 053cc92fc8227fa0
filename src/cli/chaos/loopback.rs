//! The fallback network when namespaces cannot be had: every node on a loopback address of
//! its own (`127.b.c.(i + 1)`), faults as one nftables table in this namespace that matches
//! those addresses.
//!
//! What it cannot cut, and says so in [`LoopbackRules::describe`]: only what a node sends from
//! a socket bound to its address carries that address, which is gossip and the mesh (UDP).
//! TCP a node opens to another (the HTTP snapshot transfer to a wiped node) and a node's link
//! to Redis leave from 127.0.0.1 like the clients' connections, and are not cut; with
//! `--backplane redis`, partitions and loss need namespaces. Delay needs `tc netem` on a
//! device of the nodes' own, so there is none here.
//!
//! The table (`inet herald_chaos_<tag>`) is replaced whole on every change and deleted on
//! drop.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

use super::network::{run, run_with_input};
use crate::cli::bench::nodes::Host;

/// Rule tables made by this process so far (a part of every name).
static MADE: AtomicU32 = AtomicU32::new(0);

pub struct LoopbackRules {
    table: String,
    prefix: [u8; 3],
    count: usize,
    cuts: BTreeSet<(usize, usize)>,
    loss_percent: u8,
}

impl LoopbackRules {
    /// Picks the nodes' addresses and installs an empty table.
    pub fn create(count: usize) -> anyhow::Result<Self> {
        // SAFETY: geteuid(2) has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            bail!("nftables rules need root");
        }
        run("nft", &["list", "tables"]).context("nft cannot be used here")?;
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        let pick = std::process::id().wrapping_mul(13).wrapping_add(made) % (150 * 256);
        let prefix = [
            127,
            100 + u8::try_from(pick / 256).unwrap_or(0),
            u8::try_from(pick % 256).unwrap_or(0),
        ];
        let rules = Self {
            table: format!("herald_chaos_{}_{made}", std::process::id()),
            prefix,
            count,
            cuts: BTreeSet::new(),
            loss_percent: 0,
        };
        rules.apply()?;
        Ok(rules)
    }

    pub fn address(&self, index: usize) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, u8::try_from(index + 1).unwrap_or(u8::MAX))
    }

    pub fn hosts(&self) -> Vec<Host> {
        (0..self.count)
            .map(|index| Host {
                ip: IpAddr::V4(self.address(index)),
                netns: None,
            })
            .collect()
    }

    pub fn describe(&self) -> String {
        let [a, b, c] = self.prefix;
        format!(
            "loopback addresses {a}.{b}.{c}.1-{} with nftables table {} (network namespaces \
             unavailable: only gossip and mesh packets are cut, not HTTP snapshot transfers)",
            self.count, self.table
        )
    }

    pub fn cut(&mut self, from: usize, to: usize) -> anyhow::Result<()> {
        self.cuts.insert((from, to));
        self.apply()
    }

    pub fn set_loss(&mut self, percent: u8) -> anyhow::Result<()> {
        self.loss_percent = percent.min(100);
        self.apply()
    }

    pub fn heal(&mut self) -> anyhow::Result<()> {
        self.cuts.clear();
        self.loss_percent = 0;
        self.apply()
    }

    fn apply(&self) -> anyhow::Result<()> {
        let nodes: Vec<Ipv4Addr> = (0..self.count).map(|i| self.address(i)).collect();
        let script = rules(&self.table, &nodes, &self.cuts, self.loss_percent);
        run_with_input("nft", &["-f", "-"], &script)
            .with_context(|| format!("cannot set the fault rules in table {}", self.table))
    }
}

impl Drop for LoopbackRules {
    fn drop(&mut self) {
        let _ = run("nft", &["delete", "table", "inet", &self.table]);
    }
}

/// The whole table for the nodes at `nodes`: a cut `from -> to` drops packets with both
/// addresses; loss drops a share of every packet between two nodes.
fn rules(
    table: &str,
    nodes: &[Ipv4Addr],
    cuts: &BTreeSet<(usize, usize)>,
    loss_percent: u8,
) -> String {
    let mut script = format!(
        "table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n  chain input {{\n    \
         type filter hook input priority 0; policy accept;\n"
    );
    for &(from, to) in cuts {
        script.push_str(&format!(
            "    ip saddr {} ip daddr {} drop\n",
            nodes[from], nodes[to]
        ));
    }
    if loss_percent > 0 && !nodes.is_empty() {
        let all: Vec<String> = nodes.iter().map(ToString::to_string).collect();
        let all = all.join(", ");
        script.push_str(&format!(
            "    ip saddr {{ {all} }} ip daddr {{ {all} }} numgen random mod 100 < {loss_percent} drop\n"
        ));
    }
    script.push_str("  }\n}\n");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<Ipv4Addr> {
        (1..=3).map(|i| Ipv4Addr::new(127, 120, 5, i)).collect()
    }

    #[test]
    fn a_cut_names_both_ends() {
        let script = rules("t", &nodes(), &BTreeSet::from([(0, 2)]), 0);
        assert!(script.contains("ip saddr 127.120.5.1 ip daddr 127.120.5.3 drop"));
        assert_eq!(script.matches("drop").count(), 1);
    }

    #[test]
    fn loss_is_only_between_nodes() {
        let script = rules("t", &nodes(), &BTreeSet::new(), 20);
        assert!(script.contains(
            "ip saddr { 127.120.5.1, 127.120.5.2, 127.120.5.3 } ip daddr { 127.120.5.1, \
             127.120.5.2, 127.120.5.3 } numgen random mod 100 < 20 drop"
        ));
        assert!(!script.contains("127.0.0.1"));
    }

    #[test]
    fn the_table_is_replaced_whole() {
        let script = rules("herald_chaos_1_0", &nodes(), &BTreeSet::new(), 0);
        assert!(
            script.starts_with("table inet herald_chaos_1_0\ndelete table inet herald_chaos_1_0\n")
        );
    }
}
