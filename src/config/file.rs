//! The TOML file: top-level keys apply to every node, `[[nodes]]` entries override them for
//! the node selected with `--node NAME` (or for the file's only entry, without `--node`).

use std::path::Path;

use serde::Deserialize;

use super::{BackplaneKind, ConfigError};
use crate::store::SyncMode;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub cluster_id: Option<String>,
    pub seeds: Option<Vec<String>>,
    pub backplane: Option<BackplaneKind>,
    pub redis_url: Option<super::RedisUrl>,
    /// PEM file with the CA of a `rediss://` server, relative to the file's directory.
    pub redis_ca: Option<std::path::PathBuf>,
    pub replication: Option<u8>,
    pub jwt_secret: Option<String>,
    pub api_key: Option<String>,
    pub cluster_secret: Option<String>,
    /// For example `"1m"`.
    pub max_clock_drift: Option<String>,
    /// Address of a listener serving only `/metrics`.
    pub metrics: Option<String>,
    /// PEM certificate chain and key for HTTPS and wss://, relative to the file's directory.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// PEM CA certificate(s) peers' HTTPS certificates must chain to (Redis backplane),
    /// relative to the file's directory.
    pub tls_ca: Option<std::path::PathBuf>,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub history: HistorySection,
    #[serde(default)]
    pub presence: PresenceSection,
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
}

/// A number, or text such as `"24h"` or `"8GiB"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(u64),
    Text(String),
}

/// `[presence]`: which channels have presence (see `crate::presence`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceSection {
    /// Channel-name prefixes, or `"*"` for every channel.
    pub channels: Option<Vec<String>>,
    pub max_users_per_channel: Option<usize>,
}

/// `[history]`: what the log keeps (see `crate::store::RetentionPolicy`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySection {
    /// Events kept per channel; 0 for all.
    pub size: Option<u64>,
    /// For example `"24h"`; `0` or `"0s"` keeps events for ever.
    pub ttl: Option<NumberOrText>,
    /// For example `"8GiB"`; 0 for no ceiling.
    pub max_disk: Option<NumberOrText>,
    #[serde(default)]
    pub channels: Vec<HistoryOverride>,
}

/// `[[history.channels]]`: a rule for the channels starting with `prefix`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryOverride {
    pub prefix: String,
    pub size: Option<u64>,
    pub ttl: Option<NumberOrText>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub sync: Option<SyncMode>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub client_queue: Option<usize>,
    pub max_client_message_bytes: Option<usize>,
    pub max_payload_bytes: Option<usize>,
    /// For example `"30s"`.
    pub heartbeat: Option<String>,
    pub replay_page: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_user: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub client_messages_per_s: Option<u32>,
    pub client_messages_burst: Option<u32>,
    /// For example `"30s"`.
    pub http_request_timeout: Option<String>,
    pub max_request_body_bytes: Option<usize>,
    pub max_batch: Option<usize>,
}

/// One node of the cluster file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub name: String,
    pub node_id: Option<String>,
    pub http: Option<String>,
    pub gossip: Option<String>,
    pub mesh: Option<String>,
    /// Addresses peers and clients reach this node at, when it listens on `0.0.0.0` or `[::]`.
    pub advertise_http: Option<String>,
    pub advertise_gossip: Option<String>,
    pub advertise_mesh: Option<String>,
    pub data: Option<String>,
    pub seeds: Option<Vec<String>>,
    /// Address of this node's listener serving only `/metrics`.
    pub metrics: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|reason| ConfigError::File {
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.message().to_string().replace('\n', " "))
    }

    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unknown_keys_and_names_them() {
        let error = FileConfig::parse("cluster_id = \"a\"\nbogus = 1\n").unwrap_err();
        assert!(error.contains("bogus"), "{error}");
        let error = FileConfig::parse("[[nodes]]\nname = \"n1\"\nhttpp = \"x\"\n").unwrap_err();
        assert!(error.contains("httpp"), "{error}");
    }

    #[test]
    fn reads_history_with_overrides() {
        let file = FileConfig::parse(
            "[history]\nsize = 10\nttl = \"1h\"\nmax_disk = \"1GiB\"\n\
             [[history.channels]]\nprefix = \"track:\"\nsize = 2\n",
        )
        .unwrap();
        assert_eq!(file.history.size, Some(10));
        assert_eq!(file.history.ttl, Some(NumberOrText::Text("1h".into())));
        assert_eq!(file.history.channels[0].prefix, "track:");
        let error = FileConfig::parse("[history]\nsizes = 1\n").unwrap_err();
        assert!(error.contains("sizes"), "{error}");
    }

    #[test]
    fn reads_the_repository_cluster_file() {
        let text = include_str!("../../cluster.toml");
        let file = FileConfig::parse(text).unwrap();
        assert_eq!(file.nodes.len(), 3);
        assert!(file.node("n2").is_some());
    }
}
