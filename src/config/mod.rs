//! Configuration: `cluster.toml` (or any `--config FILE`), `HERALD_*` environment variables and
//! command-line flags, merged and validated into one [`Config`].
//!
//! Precedence: flags > environment > the selected `[[nodes]]` entry > the file's top level >
//! defaults. Unknown keys in the file are refused. Every error names the key at fault, in one
//! line. The node id is taken from the configuration or generated once and kept in the data
//! directory (`<data>/node_id`), which is then bound to that node for good.

mod exposure;
mod file;
mod history;
mod limits;
mod presence;
mod redis_url;
mod resolve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use exposure::MIN_CLUSTER_SECRET_LEN;
pub use file::{FileConfig, NodeEntry};
pub use limits::Limits;
pub use redis_url::RedisUrl;
pub use resolve::{ServeArgs, resolve};

use crate::event::NodeId;
use crate::store::{RetentionPolicy, SyncMode};

/// Secrets used when none is configured: fine on a laptop, refused nowhere, warned about loudly.
pub const DEV_JWT_SECRET: &str = "herald-dev-jwt-secret-change-me";
pub const DEV_API_KEY: &str = "herald-dev-api-key-change-me";
pub const DEV_CLUSTER_SECRET: &str = "herald-dev-cluster-secret-change-me";
/// How far another node's clock may be from this one's, unless configured.
pub const DEFAULT_MAX_CLOCK_DRIFT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("data dir {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: &'static str, reason: impl ToString) -> Self {
        Self::Invalid {
            key,
            reason: reason.to_string(),
        }
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum BackplaneKind {
    /// Gossip membership and QUIC links between nodes.
    Mesh,
    /// Redis Streams between nodes.
    Redis,
    /// A single node: nothing leaves it.
    Local,
}

/// Advertised addresses: what gossip and the registry tell others, where the node listens on
/// an address nobody can dial (`0.0.0.0`, `[::]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Advertised {
    pub http: Option<SocketAddr>,
    pub gossip: Option<SocketAddr>,
    pub mesh: Option<SocketAddr>,
}

/// The certificate chain and private key a node serves HTTPS with (PEM files, read at start
/// and again on SIGHUP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A validated configuration for one node. Its `Debug` form shows no secret.
#[derive(Clone)]
pub struct Config {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub http: SocketAddr,
    pub gossip: SocketAddr,
    pub mesh: SocketAddr,
    /// What this node tells others to reach it at (default: the listen address).
    pub advertise: Advertised,
    pub seeds: Vec<String>,
    pub data_dir: PathBuf,
    pub backplane: BackplaneKind,
    /// Shown without its password (`Debug`, `Display`).
    pub redis_url: Option<RedisUrl>,
    /// PEM file with the CA certificate(s) a `rediss://` server's certificate must chain to
    /// (default: the system's roots).
    pub redis_ca: Option<PathBuf>,
    /// HTTPS and wss:// on the HTTP address (plain HTTP without).
    pub tls: Option<TlsFiles>,
    /// PEM file with the CA certificate(s) that peers' HTTPS certificates must chain to when
    /// this node fetches a snapshot from them (Redis backplane; default: the system's roots).
    pub tls_ca: Option<PathBuf>,
    pub replication: u8,
    pub jwt_secret: String,
    pub api_key: String,
    pub cluster_secret: String,
    pub store_sync: SyncMode,
    pub limits: Limits,
    /// What the log keeps (`[history]`).
    pub history: RetentionPolicy,
    /// Which channels have presence (`[presence]`).
    pub presence: crate::presence::PresenceConfig,
    /// How far another node's clock may be from this one's: gossip sealed further from the
    /// local clock is refused, and so are peers' events stamped further ahead.
    pub max_clock_drift: Duration,
    /// How long a graceful shutdown waits for clients and the store.
    pub shutdown_grace: Duration,
    /// Fault hook for `herald chaos`'s self-test (see [`crate::dispatcher::DispatchFaults`]).
    pub fault_skip_delivery: Option<u64>,
    /// A listener of its own for `/metrics` (then 404 on the main port); `None`: the main port.
    pub metrics: Option<SocketAddr>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const HIDDEN: &str = "***";
        f.debug_struct("Config")
            .field("node_id", &self.node_id)
            .field("cluster_id", &self.cluster_id)
            .field("http", &self.http)
            .field("gossip", &self.gossip)
            .field("mesh", &self.mesh)
            .field("advertise", &self.advertise)
            .field("seeds", &self.seeds)
            .field("data_dir", &self.data_dir)
            .field("backplane", &self.backplane)
            .field("redis_url", &self.redis_url)
            .field("redis_ca", &self.redis_ca)
            .field("tls", &self.tls)
            .field("tls_ca", &self.tls_ca)
            .field("replication", &self.replication)
            .field("jwt_secret", &HIDDEN)
            .field("api_key", &HIDDEN)
            .field("cluster_secret", &HIDDEN)
            .field("store_sync", &self.store_sync)
            .field("limits", &self.limits)
            .field("history", &self.history)
            .field("presence", &self.presence)
            .field("max_clock_drift", &self.max_clock_drift)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("fault_skip_delivery", &self.fault_skip_delivery)
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl Config {
    /// A single-node configuration on loopback port 0 with data in `data_dir`: for tests and
    /// examples.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_id: NodeId::new("test-node").expect("valid id"),
            cluster_id: "herald-test".into(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            gossip: SocketAddr::from(([127, 0, 0, 1], 0)),
            mesh: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: Advertised::default(),
            seeds: Vec::new(),
            data_dir: data_dir.into(),
            backplane: BackplaneKind::Local,
            redis_url: None,
            redis_ca: None,
            tls: None,
            tls_ca: None,
            replication: 1,
            jwt_secret: DEV_JWT_SECRET.into(),
            api_key: DEV_API_KEY.into(),
            cluster_secret: DEV_CLUSTER_SECRET.into(),
            store_sync: SyncMode::Normal,
            limits: Limits::default(),
            history: RetentionPolicy::default(),
            presence: crate::presence::PresenceConfig::default(),
            max_clock_drift: DEFAULT_MAX_CLOCK_DRIFT,
            shutdown_grace: Duration::from_secs(5),
            fault_skip_delivery: None,
            metrics: None,
        }
    }

    pub fn uses_dev_secrets(&self) -> Vec<&'static str> {
        let mut dev = Vec::new();
        if self.jwt_secret == DEV_JWT_SECRET {
            dev.push("HERALD_JWT_SECRET");
        }
        if self.api_key == DEV_API_KEY {
            dev.push("HERALD_API_KEY");
        }
        if self.cluster_secret == DEV_CLUSTER_SECRET && self.backplane != BackplaneKind::Local {
            dev.push("HERALD_CLUSTER_SECRET");
        }
        dev
    }
}
