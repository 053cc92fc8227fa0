//! Network cuts between nodes on loopback with nftables, for partition tests.
//!
//! Each [`Firewall`] owns one nftables table of its own (`inet herald_test_<pid>_<n>`) with an
//! output-hook chain; a cut is a rule dropping UDP datagrams from some source ports to some
//! destination ports (a node's gossip and mesh ports). The table is deleted when the value is
//! dropped, also when the test panics, so no rule outlives its test.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const NFT: &str = "/usr/sbin/nft";
static NEXT_TABLE: AtomicUsize = AtomicUsize::new(0);

/// Why cuts cannot be made here (no `nft`, not root), or `None` when they can.
pub fn unavailable() -> Option<String> {
    if !std::path::Path::new(NFT).exists() {
        return Some(format!("{NFT} is missing"));
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default();
    if uid != "0" {
        return Some(format!("not root (uid {uid:?})"));
    }
    match Command::new(NFT).args(["list", "tables"]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "nft cannot list tables here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(error) => Some(format!("nft does not run: {error}")),
    }
}

/// Skips the calling test (answers true) when cuts cannot be made, unless
/// `HERALD_REQUIRE_NETNS=1` asks for them, in which case it panics.
pub fn skip_unless_available(test: &str) -> bool {
    let Some(reason) = unavailable() else {
        return false;
    };
    if std::env::var("HERALD_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("{test}: cannot cut the network: {reason} (HERALD_REQUIRE_NETNS=1)");
    }
    eprintln!("{test}: skipped: cannot cut the network: {reason}");
    true
}

pub struct Firewall {
    table: String,
}

fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new(NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed on {script:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn set(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("{{ {} }}", ports.join(", "))
}

impl Firewall {
    /// Creates this test's table, empty (nothing is cut yet).
    pub fn new() -> Self {
        let table = format!(
            "herald_test_{}_{}",
            std::process::id(),
            NEXT_TABLE.fetch_add(1, Ordering::Relaxed)
        );
        nft(&format!(
            "add table inet {table}\n\
             add chain inet {table} output {{ type filter hook output priority 0 ; policy accept ; }}\n"
        ))
        .expect("create the nftables table");
        Self { table }
    }

    /// Drops every UDP datagram from one of `from` (source ports) to one of `to` (destination
    /// ports) on loopback.
    pub fn drop_udp(&self, from: &[u16], to: &[u16]) {
        nft(&format!(
            "add rule inet {} output ip daddr 127.0.0.1 udp sport {} udp dport {} drop\n",
            self.table,
            set(from),
            set(to)
        ))
        .expect("add a drop rule");
    }

    /// Removes every rule: the network heals.
    pub fn heal(&self) {
        nft(&format!("flush chain inet {} output\n", self.table)).expect("flush the rules");
    }
}

impl Default for Firewall {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        if let Err(error) = nft(&format!("delete table inet {}\n", self.table)) {
            eprintln!("could not delete nftables table {}: {error}", self.table);
        }
    }
}
