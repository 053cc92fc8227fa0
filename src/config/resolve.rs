//! Merging flags, environment, file and defaults into a [`Config`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use super::file::FileConfig;
use super::{BackplaneKind, Config, ConfigError, DEV_API_KEY, DEV_CLUSTER_SECRET, DEV_JWT_SECRET};
use crate::event::NodeId;
use crate::store::SyncMode;

const DEFAULT_HTTP: &str = "127.0.0.1:8000";
const DEFAULT_GOSSIP: &str = "127.0.0.1:7000";
const DEFAULT_MESH: &str = "127.0.0.1:9000";
const DEFAULT_DATA_ROOT: &str = "data";
const NODE_ID_FILE: &str = "node_id";

/// Flags of `herald serve` (and `herald cluster join`); each also reads `HERALD_<FLAG>`.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (for example cluster.toml).
    #[arg(long, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Selects a `[[nodes]]` entry of the configuration file by name (default: the file's only
    /// entry when it has exactly one; required when it has several).
    #[arg(long, env = "HERALD_NODE")]
    pub node: Option<String>,
    /// This node's stable id (default: generated once, kept in the data dir).
    #[arg(long, env = "HERALD_NODE_ID")]
    pub node_id: Option<String>,
    /// HTTP and WebSocket listen address.
    #[arg(long, env = "HERALD_HTTP")]
    pub http: Option<String>,
    /// Gossip (UDP) listen address.
    #[arg(long, env = "HERALD_GOSSIP")]
    pub gossip: Option<String>,
    /// Mesh (QUIC) listen address.
    #[arg(long, env = "HERALD_MESH")]
    pub mesh: Option<String>,
    /// Data directory (default: ./data/<node_id>).
    #[arg(long, env = "HERALD_DATA")]
    pub data: Option<PathBuf>,
    /// Gossip address of a node to join through; repeat for several.
    #[arg(long = "seed", env = "HERALD_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// How events travel between nodes.
    #[arg(long, env = "HERALD_BACKPLANE", value_enum)]
    pub backplane: Option<BackplaneKind>,
    /// Redis URL for the redis backplane, for example redis://user:password@host:6379/0, or
    /// rediss:// for TLS.
    #[arg(long, env = "HERALD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<super::RedisUrl>,
    /// PEM file with the CA certificate(s) of a rediss:// server (default: the system's roots).
    #[arg(long, env = "HERALD_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,
    /// 2: a publish answers only after another live node stored it.
    #[arg(long, env = "HERALD_REPLICATION")]
    pub replication: Option<u8>,
    /// Seconds of client silence before the server sends a heartbeat (for example 30s).
    #[arg(long, env = "HERALD_HEARTBEAT")]
    pub heartbeat: Option<String>,
    /// Most WebSocket connections this node holds at once.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most WebSocket connections one user holds on this node (0: no limit).
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<usize>,
    /// Most WebSocket connections from one IP address on this node (0: no limit).
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Messages per second one socket may send, on average (0: no limit).
    #[arg(long, env = "HERALD_CLIENT_MESSAGES_PER_S")]
    pub client_messages_per_s: Option<u32>,
    /// Messages one socket may send at once above its rate (default: twice the rate).
    #[arg(long, env = "HERALD_CLIENT_MESSAGES_BURST")]
    pub client_messages_burst: Option<u32>,
    /// Longest an HTTP request may take to be answered, for example 30s (sockets excepted).
    #[arg(long, env = "HERALD_HTTP_REQUEST_TIMEOUT")]
    pub http_request_timeout: Option<String>,
    /// Largest HTTP request body, in bytes.
    #[arg(long, env = "HERALD_MAX_REQUEST_BODY_BYTES")]
    pub max_request_body_bytes: Option<usize>,
    /// Most events of one POST /api/batch (and channels of one publish).
    #[arg(long, env = "HERALD_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Commit durability: full (fsync every commit) or normal.
    #[arg(long, env = "HERALD_STORE_SYNC", value_enum)]
    pub store_sync: Option<SyncMode>,
    /// Threads that serve connections, the mesh and gossip (default: one per core); the store
    /// writes on a thread of its own besides. See the README's tuning notes.
    #[arg(long, env = "HERALD_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    /// A fault hook for `herald chaos --plant-loss`: this node silently skips the local
    /// delivery of its Nth committed event. For testing the checker only.
    #[arg(long, hide = true, env = "HERALD_FAULT_SKIP_DELIVERY")]
    pub fault_skip_delivery: Option<u64>,
    /// The HTTP address clients and peers reach this node at (required when --http listens
    /// on `0.0.0.0` or `[::]` in a cluster).
    #[arg(long, env = "HERALD_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,
    /// The gossip address peers reach this node at (required when --gossip is unspecified).
    #[arg(long, env = "HERALD_ADVERTISE_GOSSIP")]
    pub advertise_gossip: Option<String>,
    /// The mesh address peers reach this node at (required when --mesh is unspecified).
    #[arg(long, env = "HERALD_ADVERTISE_MESH")]
    pub advertise_mesh: Option<String>,
    /// Events kept per channel (0: all).
    #[arg(long, env = "HERALD_HISTORY_SIZE")]
    pub history_size: Option<u64>,
    /// Age after which events are pruned, for example 24h (0: never).
    #[arg(long, env = "HERALD_HISTORY_TTL")]
    pub history_ttl: Option<String>,
    /// Ceiling for the log on disk, for example 8GiB (0: none); oldest events go first.
    #[arg(long, env = "HERALD_HISTORY_MAX_DISK")]
    pub history_max_disk: Option<String>,
    /// How far another node's clock may be from this one's (gossip datagrams and peers'
    /// timestamps beyond it are refused), for example 1m.
    #[arg(long, env = "HERALD_MAX_CLOCK_DRIFT")]
    pub max_clock_drift: Option<String>,
    /// PEM certificate chain: serve HTTPS and wss:// on the HTTP address (with --tls-key;
    /// reloaded from disk on SIGHUP).
    #[arg(long, env = "HERALD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "HERALD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM file with the CA certificate(s) that peers serving HTTPS must present a
    /// certificate from, for snapshots on the Redis backplane (default: the system's roots).
    #[arg(long, env = "HERALD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Log lines as text (default) or JSON (one object a line, with the node id).
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum)]
    pub log_format: Option<crate::telemetry::LogFormat>,
    /// Serve /metrics on this address only (then 404 on the HTTP port), for example
    /// 127.0.0.1:9100.
    #[arg(long, env = "HERALD_METRICS")]
    pub metrics: Option<String>,
}

impl clap::ValueEnum for SyncMode {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Full, Self::Normal]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(match self {
            Self::Full => clap::builder::PossibleValue::new("full"),
            Self::Normal => clap::builder::PossibleValue::new("normal"),
        })
    }
}

/// Builds the configuration; `env_secret` reads a secret from the environment (a parameter so
/// tests need not touch the process environment).
pub fn resolve(
    args: &ServeArgs,
    env_secret: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let node = select_node(args, &file)?.unwrap_or_default();
    let base_dir = args
        .config
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();

    let configured_id = match args
        .node_id
        .clone()
        .or_else(|| node.node_id.clone())
        .or_else(|| Some(node.name.clone()).filter(|name| !name.is_empty()))
    {
        Some(id) => Some(NodeId::new(&id).map_err(|e| ConfigError::invalid("node_id", e))?),
        None => None,
    };
    let explicit_data = args
        .data
        .clone()
        .or_else(|| node.data.as_ref().map(|d| base_dir.join(d)));
    let (node_id, data_dir) = resolve_identity(configured_id, explicit_data)?;

    let limits = super::limits::resolve_limits(&file.limits, args)?;
    let history = super::history::resolve_history(&file.history, args)?;
    let presence = super::presence::resolve_presence(&file.presence)?;
    let max_clock_drift = match args
        .max_clock_drift
        .as_deref()
        .or(file.max_clock_drift.as_deref())
    {
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| ConfigError::invalid("max_clock_drift", format!("{text:?}: {e}")))?,
        None => super::DEFAULT_MAX_CLOCK_DRIFT,
    };
    if max_clock_drift < std::time::Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "max_clock_drift",
            "must be at least 1s",
        ));
    }
    let replication = args.replication.or(file.replication).unwrap_or(1);
    if !(1..=2).contains(&replication) {
        return Err(ConfigError::invalid("replication", "must be 1 or 2"));
    }
    let backplane = args
        .backplane
        .or(file.backplane)
        .unwrap_or(BackplaneKind::Mesh);
    let redis_url = args.redis_url.clone().or(file.redis_url.clone());
    if backplane == BackplaneKind::Redis && redis_url.is_none() {
        return Err(ConfigError::invalid(
            "redis_url",
            "required with backplane = redis",
        ));
    }
    let redis_ca = args
        .redis_ca
        .clone()
        .or_else(|| file.redis_ca.as_ref().map(|ca| base_dir.join(ca)));
    if redis_ca.is_some() && !redis_url.as_ref().is_some_and(|url| url.uses_tls()) {
        return Err(ConfigError::invalid(
            "redis_ca",
            "needs a rediss:// (TLS) redis_url",
        ));
    }
    let tls = resolve_tls(args, &file, &base_dir)?;
    let tls_ca = args
        .tls_ca
        .clone()
        .or_else(|| file.tls_ca.as_ref().map(|ca| base_dir.join(ca)));
    if tls_ca.is_some() && backplane != BackplaneKind::Redis {
        // Only the Redis backplane's snapshot fetches dial peers over HTTP(S); the mesh has
        // its own mutual TLS from the cluster secret.
        return Err(ConfigError::invalid(
            "tls_ca",
            "used only with backplane = redis (to verify peers' HTTPS when fetching snapshots)",
        ));
    }
    let seeds = if !args.seeds.is_empty() {
        args.seeds.clone()
    } else {
        node.seeds
            .clone()
            .or(file.seeds.clone())
            .unwrap_or_default()
    };
    let cluster_id = file.cluster_id.clone().unwrap_or_else(|| "herald".into());
    if cluster_id.is_empty() || cluster_id.len() > 64 {
        return Err(ConfigError::invalid(
            "cluster_id",
            "must be 1 to 64 characters",
        ));
    }
    let secret = |key: &'static str, env: &str, from_file: &Option<String>, dev: &str| {
        let value = env_secret(env)
            .or_else(|| from_file.clone())
            .unwrap_or_else(|| dev.to_string());
        if value.len() < 8 {
            return Err(ConfigError::invalid(key, "must be at least 8 characters"));
        }
        Ok(value)
    };
    let advertised = |key: &'static str, flag: &Option<String>, entry: &Option<String>| {
        flag.as_deref()
            .or(entry.as_deref())
            .map(|text| address(key, Some(text), text))
            .transpose()
    };
    let advertise = super::Advertised {
        http: advertised("advertise_http", &args.advertise_http, &node.advertise_http)?,
        gossip: advertised(
            "advertise_gossip",
            &args.advertise_gossip,
            &node.advertise_gossip,
        )?,
        mesh: advertised("advertise_mesh", &args.advertise_mesh, &node.advertise_mesh)?,
    };
    let config = Config {
        http: address(
            "http",
            args.http.as_deref().or(node.http.as_deref()),
            DEFAULT_HTTP,
        )?,
        gossip: address(
            "gossip",
            args.gossip.as_deref().or(node.gossip.as_deref()),
            DEFAULT_GOSSIP,
        )?,
        mesh: address(
            "mesh",
            args.mesh.as_deref().or(node.mesh.as_deref()),
            DEFAULT_MESH,
        )?,
        advertise,
        node_id,
        cluster_id,
        seeds,
        data_dir,
        backplane,
        redis_url,
        redis_ca,
        tls,
        tls_ca,
        replication,
        jwt_secret: secret(
            "jwt_secret",
            "HERALD_JWT_SECRET",
            &file.jwt_secret,
            DEV_JWT_SECRET,
        )?,
        api_key: secret("api_key", "HERALD_API_KEY", &file.api_key, DEV_API_KEY)?,
        cluster_secret: secret(
            "cluster_secret",
            "HERALD_CLUSTER_SECRET",
            &file.cluster_secret,
            DEV_CLUSTER_SECRET,
        )?,
        store_sync: args
            .store_sync
            .or(file.store.sync)
            .unwrap_or(SyncMode::Full),
        limits,
        history,
        presence,
        max_clock_drift,
        shutdown_grace: std::time::Duration::from_secs(10),
        fault_skip_delivery: args.fault_skip_delivery,
        metrics: metrics_address(args, &node, &file)?,
    };
    super::exposure::check(&config)?;
    Ok(config)
}

/// The `[[nodes]]` entry that applies: the one `--node NAME` names; without `--node`, the
/// file's only entry when it has exactly one (what `herald init` writes), none when it has
/// none. Several entries and no `--node` is an error: which machine this is cannot be guessed.
fn select_node(
    args: &ServeArgs,
    file: &FileConfig,
) -> Result<Option<super::NodeEntry>, ConfigError> {
    match (&args.node, file.nodes.as_slice()) {
        (Some(name), _) => file.node(name).cloned().map(Some).ok_or_else(|| {
            ConfigError::invalid(
                "node",
                format!("no [[nodes]] entry named {name:?} in the config file"),
            )
        }),
        (None, []) => Ok(None),
        (None, [only]) => Ok(Some(only.clone())),
        (None, several) => {
            let names: Vec<&str> = several.iter().map(|entry| entry.name.as_str()).collect();
            Err(ConfigError::invalid(
                "node",
                format!(
                    "the config file has {} [[nodes]] entries ({}): choose one with --node NAME \
                     (or HERALD_NODE)",
                    several.len(),
                    names.join(", ")
                ),
            ))
        }
    }
}

/// `--tls-cert` and `--tls-key` (or the file's `tls_cert` and `tls_key`, relative to it):
/// both or neither.
fn resolve_tls(
    args: &ServeArgs,
    file: &FileConfig,
    base_dir: &std::path::Path,
) -> Result<Option<super::TlsFiles>, ConfigError> {
    let cert = args
        .tls_cert
        .clone()
        .or_else(|| file.tls_cert.as_ref().map(|path| base_dir.join(path)));
    let key = args
        .tls_key
        .clone()
        .or_else(|| file.tls_key.as_ref().map(|path| base_dir.join(path)));
    let files = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => super::TlsFiles { cert, key },
        (Some(_), None) => {
            return Err(ConfigError::invalid("tls_key", "required with tls_cert"));
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid("tls_cert", "required with tls_key"));
        }
    };
    Ok(Some(files))
}

/// The metrics listener: flag or environment, then the node's entry, then the file's top level.
fn metrics_address(
    args: &ServeArgs,
    node: &super::NodeEntry,
    file: &FileConfig,
) -> Result<Option<SocketAddr>, ConfigError> {
    let text = args
        .metrics
        .as_deref()
        .or(node.metrics.as_deref())
        .or(file.metrics.as_deref());
    text.map(|text| address("metrics", Some(text), text))
        .transpose()
}

fn address(
    key: &'static str,
    value: Option<&str>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let text = value.unwrap_or(default);
    text.to_socket_addrs()
        .map_err(|e| ConfigError::invalid(key, format!("{text:?}: {e}")))?
        .next()
        .ok_or_else(|| ConfigError::invalid(key, format!("{text:?} resolves to no address")))
}

/// The node id and data dir: configured, or read from `<data>/node_id`, or generated and kept.
fn resolve_identity(
    configured: Option<NodeId>,
    explicit_data: Option<PathBuf>,
) -> Result<(NodeId, PathBuf), ConfigError> {
    resolve_identity_in(Path::new(DEFAULT_DATA_ROOT), configured, explicit_data)
}

/// [`resolve_identity`] with the default data root given: with neither an id nor a data dir,
/// the id kept in `<root>/node_id` names the data dir `<root>/<id>`.
fn resolve_identity_in(
    root: &Path,
    configured: Option<NodeId>,
    explicit_data: Option<PathBuf>,
) -> Result<(NodeId, PathBuf), ConfigError> {
    let (data_dir, configured) = match (configured, explicit_data) {
        (configured, Some(dir)) => (dir, configured),
        (Some(id), None) => (root.join(id.as_str()), Some(id)),
        (None, None) => {
            let id = read_or_create_node_id(root, None)?;
            (root.join(id.as_str()), Some(id))
        }
    };
    let id = read_or_create_node_id(&data_dir, configured)?;
    Ok((id, data_dir))
}

/// Reads `dir/node_id`, or writes `configured` (or a generated id) there. A data dir that
/// belongs to another node is refused.
fn read_or_create_node_id(dir: &Path, configured: Option<NodeId>) -> Result<NodeId, ConfigError> {
    let data_error = |reason: String| ConfigError::DataDir {
        path: dir.to_path_buf(),
        reason,
    };
    let path = dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let stored = NodeId::new(text.trim()).map_err(|e| data_error(e.to_string()))?;
            match configured {
                Some(id) if id != stored => Err(data_error(format!(
                    "belongs to node {stored}, not {id}: use another --data or the same --node-id"
                ))),
                _ => Ok(stored),
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let id = configured.unwrap_or_else(NodeId::generate);
            std::fs::create_dir_all(dir).map_err(|e| data_error(e.to_string()))?;
            std::fs::write(&path, format!("{id}\n")).map_err(|e| data_error(e.to_string()))?;
            Ok(id)
        }
        Err(error) => Err(data_error(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_generate_and_keep_a_node_id() {
        let dir = tempfile::tempdir().unwrap();
        let args = ServeArgs {
            data: Some(dir.path().to_path_buf()),
            ..ServeArgs::default()
        };
        let first = resolve(&args, no_env).unwrap();
        let second = resolve(&args, no_env).unwrap();
        assert_eq!(first.node_id, second.node_id);
        assert_eq!(first.http.to_string(), DEFAULT_HTTP);
        assert_eq!(first.replication, 1);
    }

    #[test]
    fn with_no_id_and_no_data_dir_the_kept_id_names_the_data_dir() {
        let root = tempfile::tempdir().unwrap();
        let (first_id, first_dir) = resolve_identity_in(root.path(), None, None).unwrap();
        let (second_id, second_dir) = resolve_identity_in(root.path(), None, None).unwrap();
        assert_eq!(first_id, second_id);
        assert_eq!(first_dir, root.path().join(first_id.as_str()));
        assert_eq!(second_dir, first_dir);
        let kept = std::fs::read_to_string(first_dir.join(NODE_ID_FILE)).unwrap();
        assert_eq!(kept.trim(), first_id.as_str());
    }

    #[test]
    fn refuses_a_data_dir_of_another_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = ServeArgs {
            data: Some(dir.path().to_path_buf()),
            node_id: Some("a".into()),
            ..ServeArgs::default()
        };
        resolve(&args, no_env).unwrap();
        args.node_id = Some("b".into());
        let error = resolve(&args, no_env).unwrap_err().to_string();
        assert!(error.contains("belongs to node a"), "{error}");
    }

    #[test]
    fn flags_override_the_file_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "replication = 2\n[[nodes]]\nname = \"n1\"\nhttp = \"127.0.0.1:8101\"\ndata = \"d1\"\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(file.clone()),
            node: Some("n1".into()),
            ..ServeArgs::default()
        };
        let config = resolve(&args, no_env).unwrap();
        assert_eq!(config.http.port(), 8101);
        assert_eq!(config.replication, 2);
        assert_eq!(config.node_id.as_str(), "n1");
        assert_eq!(config.data_dir, dir.path().join("d1"));

        args.http = Some("127.0.0.1:9999".into());
        assert_eq!(resolve(&args, no_env).unwrap().http.port(), 9999);

        args.replication = Some(3);
        let error = resolve(&args, no_env).unwrap_err().to_string();
        assert!(error.starts_with("invalid replication"), "{error}");

        args.replication = None;
        args.node = Some("n9".into());
        let error = resolve(&args, no_env).unwrap_err().to_string();
        assert!(error.contains("n9"), "{error}");
    }

    #[test]
    fn secrets_come_from_the_environment_first() {
        let dir = tempfile::tempdir().unwrap();
        let args = ServeArgs {
            data: Some(dir.path().to_path_buf()),
            ..ServeArgs::default()
        };
        let config = resolve(&args, |key| {
            (key == "HERALD_JWT_SECRET").then(|| "from-env-secret".to_string())
        })
        .unwrap();
        assert_eq!(config.jwt_secret, "from-env-secret");
        assert_eq!(config.api_key, DEV_API_KEY);
        let shown = format!("{config:?}");
        for secret in ["from-env-secret", DEV_API_KEY, DEV_CLUSTER_SECRET] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let error = resolve(&args, |key| {
            (key == "HERALD_API_KEY").then(|| "short".to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("invalid api_key"), "{error}");
    }

    #[test]
    fn a_lone_nodes_entry_applies_without_node_and_several_need_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[[nodes]]\nname = \"this\"\nnode_id = \"n7\"\nhttp = \"127.0.0.1:8107\"\n\
             data = \"d7\"\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        let config = resolve(&args, no_env).unwrap();
        assert_eq!(config.node_id.as_str(), "n7");
        assert_eq!(config.http.port(), 8107);
        assert_eq!(config.data_dir, dir.path().join("d7"));
        // Naming it changes nothing; naming another is still refused.
        args.node = Some("this".into());
        assert_eq!(resolve(&args, no_env).unwrap().http.port(), 8107);
        args.node = Some("that".into());
        let error = resolve(&args, no_env).unwrap_err().to_string();
        assert!(error.contains("\"that\""), "{error}");
        // An entry without node_id is named by its name, selected or alone.
        std::fs::write(&file, "[[nodes]]\nname = \"solo\"\ndata = \"d8\"\n").unwrap();
        args.node = None;
        assert_eq!(resolve(&args, no_env).unwrap().node_id.as_str(), "solo");

        std::fs::write(
            &file,
            "[[nodes]]\nname = \"n1\"\ndata = \"d1\"\n[[nodes]]\nname = \"n2\"\ndata = \"d2\"\n",
        )
        .unwrap();
        let error = resolve(&args, no_env).unwrap_err().to_string();
        assert!(error.starts_with("invalid node"), "{error}");
        assert!(
            error.contains("2 [[nodes]] entries (n1, n2)") && error.contains("--node NAME"),
            "{error}"
        );
        args.node = Some("n2".into());
        assert_eq!(resolve(&args, no_env).unwrap().node_id.as_str(), "n2");
    }

    #[test]
    fn tls_files_come_in_pairs_relative_to_the_file_on_any_backplane() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "tls_cert = \"certs/a.pem\"\ntls_key = \"certs/a.key\"\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(file.clone()),
            data: Some(dir.path().join("data")),
            ..ServeArgs::default()
        };
        let config = resolve(&args, |_| None).unwrap();
        assert_eq!(
            config.tls,
            Some(crate::config::TlsFiles {
                cert: dir.path().join("certs/a.pem"),
                key: dir.path().join("certs/a.key"),
            })
        );
        assert_eq!(config.tls_ca, None);
        // The Redis backplane takes native TLS too (peers fetch snapshots over HTTPS), and a
        // CA for peers' certificates, from the file relative to it or from the flag.
        args.backplane = Some(BackplaneKind::Redis);
        args.redis_url = Some("redis://127.0.0.1:6379".parse().unwrap());
        let config = resolve(&args, |_| None).unwrap();
        assert!(config.tls.is_some());
        std::fs::write(
            &file,
            "tls_cert = \"certs/a.pem\"\ntls_key = \"certs/a.key\"\ntls_ca = \"certs/ca.pem\"\n",
        )
        .unwrap();
        let config = resolve(&args, |_| None).unwrap();
        assert_eq!(config.tls_ca, Some(dir.path().join("certs/ca.pem")));
        args.tls_ca = Some(PathBuf::from("/etc/herald/peers-ca.pem"));
        let config = resolve(&args, |_| None).unwrap();
        assert_eq!(
            config.tls_ca,
            Some(PathBuf::from("/etc/herald/peers-ca.pem"))
        );
        // The mesh dials no peer over HTTPS: a CA for it is refused, naming the key.
        args.backplane = Some(BackplaneKind::Mesh);
        let error = resolve(&args, |_| None).unwrap_err().to_string();
        assert!(
            error.starts_with("invalid tls_ca") && error.contains("redis"),
            "{error}"
        );
        args.tls_ca = None;
        std::fs::write(&file, "tls_cert = \"certs/a.pem\"\n").unwrap();
        args.backplane = None;
        let error = resolve(&args, |_| None).unwrap_err().to_string();
        assert!(error.contains("tls_key"), "{error}");
    }

    #[test]
    fn the_metrics_listener_comes_from_the_flag_the_node_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "metrics = \"127.0.0.1:9100\"\n[[nodes]]\nname = \"n1\"\nmetrics = \"127.0.0.1:9101\"\n\
             [[nodes]]\nname = \"n2\"\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(file),
            node: Some("n1".into()),
            data: Some(dir.path().join("d1")),
            ..ServeArgs::default()
        };
        let port = |args: &ServeArgs| resolve(args, no_env).unwrap().metrics.map(|a| a.port());
        assert_eq!(port(&args), Some(9101));
        args.node = Some("n2".into());
        args.data = Some(dir.path().join("d2"));
        assert_eq!(port(&args), Some(9100));
        args.metrics = Some("127.0.0.1:9200".into());
        assert_eq!(port(&args), Some(9200));
        args.metrics = Some("no-port-here".into());
        let error = resolve(&args, no_env).unwrap_err().to_string();
        assert!(error.starts_with("invalid metrics"), "{error}");
        let plain = ServeArgs {
            data: Some(dir.path().join("d3")),
            ..ServeArgs::default()
        };
        assert_eq!(port(&plain), None);
    }

    #[test]
    fn the_redis_ca_comes_from_the_file_relative_to_it_and_needs_tls() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "backplane = \"redis\"\nredis_url = \"rediss://herald:file-secret@redis:6380\"\n\
             redis_ca = \"certs/ca.pem\"\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(file.clone()),
            data: Some(dir.path().join("data")),
            ..ServeArgs::default()
        };
        let config = resolve(&args, no_env).unwrap();
        assert_eq!(config.redis_ca, Some(dir.path().join("certs/ca.pem")));
        assert!(!format!("{config:?}").contains("file-secret"));
        args.redis_url = Some("redis://herald:flag-secret@redis:6379".into());
        let error = resolve(&args, no_env).unwrap_err().to_string();
        assert!(error.contains("redis_ca"), "{error}");
        assert!(!error.contains("flag-secret"), "{error}");
    }
}
