//! `herald init`: writes a commented configuration file for one production node, with fresh
//! random secrets (or another node's, `--secrets-from`), refusing to overwrite a file.
//!
//! The file holds what a node of a cluster needs: the cluster's id and secrets, its seeds,
//! `replication`, `[store] sync`, `[limits]`, `[history]` and `[presence]` at their defaults
//! (taken from the code, so they cannot drift from it), and one `[[nodes]]` entry named
//! [`ENTRY`] with this machine's node id, listen and advertised addresses and data directory.
//! `herald serve` applies a file's only `[[nodes]]` entry without `--node`, so the node is
//! started with `herald serve --config FILE` (what `deploy/herald.service` runs); `--node this`
//! names it too, and is needed once the file has several entries.
//! The file is created with mode 0600: it holds the secrets.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::{FileConfig, Limits};
use crate::event::NodeId;
use crate::presence::{DEFAULT_CHANNELS, DEFAULT_MAX_USERS_PER_CHANNEL};
use crate::store::retention::{
    DEFAULT_HISTORY_MAX_DISK, DEFAULT_HISTORY_SIZE, DEFAULT_HISTORY_TTL,
};

/// The name of the `[[nodes]]` entry `herald init` writes: the same on every machine, so that
/// `--node this` selects it anywhere (the file's only entry applies without `--node` too).
pub const ENTRY: &str = "this";

/// Flags of `herald init`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// The file to write; an existing file is never overwritten.
    #[arg(long, default_value = "herald.toml")]
    pub path: PathBuf,
    /// This node's id, as `herald cluster status` shows it (default: a fresh random one).
    #[arg(long)]
    pub node_id: Option<String>,
    /// The host (name or IP address, without a port) that peers and clients reach this node
    /// at. With it the node listens on every interface (0.0.0.0) unless --listen says
    /// otherwise.
    #[arg(long)]
    pub advertise: Option<String>,
    /// The address to listen on (default: 0.0.0.0 with --advertise, 127.0.0.1 without).
    #[arg(long)]
    pub listen: Option<String>,
    /// The gossip address (host:port) of a node to join through; repeat for several. List
    /// every node of the cluster, this one included.
    #[arg(long = "seed", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// HTTP and WebSocket port (TCP).
    #[arg(long, default_value_t = 8000)]
    pub http_port: u16,
    /// Gossip port (UDP).
    #[arg(long, default_value_t = 7000)]
    pub gossip_port: u16,
    /// Mesh port (QUIC, so UDP).
    #[arg(long, default_value_t = 9000)]
    pub mesh_port: u16,
    /// Data directory (relative paths are relative to the file's directory).
    #[arg(long, default_value = "/var/lib/herald")]
    pub data: PathBuf,
    /// The cluster's id: the same on every node (default: herald, or the one of
    /// --secrets-from).
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// 2: a publish answers once another node stored the event too; 1: once this node did.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub replication: u8,
    /// Take jwt_secret, api_key and cluster_secret (and cluster_id) from this file, another
    /// node's herald.toml, instead of generating fresh ones: every node of a cluster needs the
    /// same.
    #[arg(long)]
    pub secrets_from: Option<PathBuf>,
}

pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let settings = Settings::from_args(&args)?;
    let text = render(&settings);
    // Every key written must be one `herald serve` accepts.
    FileConfig::parse(&text).map_err(|reason| {
        anyhow::anyhow!("herald init wrote a file herald cannot read (a bug): {reason}")
    })?;
    write_new(&args.path, &text)?;
    println!(
        "wrote {} (node {}, mode 0600): start it with `herald serve --config {}` \
         or deploy/herald.service",
        args.path.display(),
        settings.node_id,
        args.path.display(),
    );
    Ok(())
}

/// The secrets of a cluster.
struct Secrets {
    jwt_secret: String,
    api_key: String,
    cluster_secret: String,
}

/// Everything the file says besides the defaults.
struct Settings {
    node_id: NodeId,
    cluster_id: String,
    secrets: Secrets,
    seeds: Vec<String>,
    replication: u8,
    listen: String,
    advertise: Option<String>,
    http_port: u16,
    gossip_port: u16,
    mesh_port: u16,
    data: PathBuf,
}

impl Settings {
    fn from_args(args: &InitArgs) -> anyhow::Result<Self> {
        let node_id = match &args.node_id {
            Some(id) => NodeId::new(id).map_err(|e| anyhow::anyhow!("invalid --node-id: {e}"))?,
            None => NodeId::generate(),
        };
        let (secrets, their_cluster_id) = match &args.secrets_from {
            Some(path) => secrets_from(path)?,
            None => (
                Secrets {
                    jwt_secret: super::secret::generate()?,
                    api_key: super::secret::generate()?,
                    cluster_secret: super::secret::generate()?,
                },
                None,
            ),
        };
        let cluster_id = args
            .cluster_id
            .clone()
            .or(their_cluster_id)
            .unwrap_or_else(|| "herald".into());
        if cluster_id.is_empty() || cluster_id.len() > 64 {
            bail!("invalid --cluster-id: must be 1 to 64 characters");
        }
        let advertise = args
            .advertise
            .as_deref()
            .map(|host| host_text("--advertise", host))
            .transpose()?;
        let listen = match (&args.listen, &advertise) {
            (Some(host), _) => host_text("--listen", host)?,
            (None, Some(_)) => "0.0.0.0".to_string(),
            (None, None) => "127.0.0.1".to_string(),
        };
        let unspecified = listen
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        if unspecified && advertise.is_none() {
            bail!(
                "invalid --listen: {listen} is an address no peer can dial: add --advertise HOST, \
                 the address peers reach this node at"
            );
        }
        for seed in &args.seeds {
            let valid = seed
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                bail!("invalid --seed {seed:?}: give a gossip address, host:port");
            }
        }
        Ok(Self {
            node_id,
            cluster_id,
            secrets,
            seeds: args.seeds.clone(),
            replication: args.replication,
            listen,
            advertise,
            http_port: args.http_port,
            gossip_port: args.gossip_port,
            mesh_port: args.mesh_port,
            data: args.data.clone(),
        })
    }

    fn listen_at(&self, port: u16) -> String {
        format!("{}:{port}", self.listen)
    }

    fn advertised_at(&self, port: u16) -> Option<String> {
        self.advertise.as_ref().map(|host| format!("{host}:{port}"))
    }
}

/// A host as it goes before `:port`: an IPv6 address in brackets, anything else as given.
fn host_text(flag: &str, host: &str) -> anyhow::Result<String> {
    let host = host.trim();
    if let Ok(IpAddr::V6(ip)) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(format!("[{ip}]"));
    }
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !valid {
        bail!("invalid {flag} {host:?}: give a host name or an IP address, without a port");
    }
    Ok(host.to_string())
}

/// The secrets (and cluster id) of another node's file.
fn secrets_from(path: &Path) -> anyhow::Result<(Secrets, Option<String>)> {
    let file = FileConfig::load(path).context("--secrets-from")?;
    let take = |key: &str, value: Option<String>| {
        value.ok_or_else(|| {
            anyhow::anyhow!(
                "--secrets-from {}: it has no {key} (use a file herald init wrote)",
                path.display()
            )
        })
    };
    let secrets = Secrets {
        jwt_secret: take("jwt_secret", file.jwt_secret)?,
        api_key: take("api_key", file.api_key)?,
        cluster_secret: take("cluster_secret", file.cluster_secret)?,
    };
    Ok((secrets, file.cluster_id))
}

/// Creates `path` with mode 0600 and writes `text`; an existing file is left alone.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} already exists: not overwriting it (move it away, or choose another --path)",
            path.display()
        ),
        Err(error) => bail!("cannot create {}: {error}", path.display()),
    };
    let written = (|| {
        #[cfg(unix)]
        {
            // Whatever the umask: the file holds the secrets.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(path);
        bail!("cannot write {}: {error}", path.display());
    }
    Ok(())
}

/// A TOML string (quoted and escaped).
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A TOML array of strings.
fn string_array<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| quoted(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// A duration the way the file takes it: `"30s"`, `"24h"`.
fn duration_text(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let text = if duration.subsec_nanos() != 0 {
        format!("{}ms", duration.as_millis())
    } else if seconds != 0 && seconds % 3600 == 0 {
        format!("{}h", seconds / 3600)
    } else if seconds != 0 && seconds % 60 == 0 {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    };
    quoted(&text)
}

/// A size the way the file takes it: `"8GiB"`, or a number of bytes.
fn bytes_text(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    match bytes {
        0 => "0".into(),
        b if b % GIB == 0 => quoted(&format!("{}GiB", b / GIB)),
        b if b % MIB == 0 => quoted(&format!("{}MiB", b / MIB)),
        b => b.to_string(),
    }
}

/// The file's text.
fn render(settings: &Settings) -> String {
    let limits = Limits::default();
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push('\n');
    };
    line("# herald configuration for one node, written by `herald init`.");
    line("#");
    line("#   herald serve --config <this file>    (what deploy/herald.service runs)");
    line("#");
    line("# Top-level keys and tables are the cluster's (cluster_id and the secrets must match on");
    line("# every node); the [[nodes]] entry at the end is this machine's. Unknown keys are");
    line("# refused. Precedence: flags > HERALD_* environment variables > the [[nodes]] entry >");
    line("# the top level > defaults.");
    line("# This file holds the cluster's secrets: keep it mode 0600, readable by herald only.");
    line("");
    line("# The cluster's name: nodes of different clusters never talk to each other.");
    line(&format!("cluster_id = {}", quoted(&settings.cluster_id)));
    line("# Gossip addresses (host:port) of nodes to join through: every node's, this one's too.");
    line(&format!("seeds = {}", string_array(&settings.seeds)));
    line("# mesh: gossip membership and QUIC links between nodes (redis and local also exist).");
    line("backplane = \"mesh\"");
    line("# 2: a publish answers once another node stored the event too (at most 2 s, then");
    line("# \"replicated\": false); replicas then fsync what they store. 1: once this node did.");
    line(&format!("replication = {}", settings.replication));
    line("# Largest clock difference between nodes; keep clocks in sync (NTP).");
    line(&format!(
        "max_clock_drift = {}",
        duration_text(crate::config::DEFAULT_MAX_CLOCK_DRIFT)
    ));
    line("");
    line("# Secrets: the same on every node (HERALD_JWT_SECRET, HERALD_API_KEY and");
    line("# HERALD_CLUSTER_SECRET in the environment win over these).");
    line("# Signs and checks user tokens (HS256 JWTs).");
    line(&format!(
        "jwt_secret = {}",
        quoted(&settings.secrets.jwt_secret)
    ));
    line("# What backends present as `Authorization: Bearer` to publish and administer.");
    line(&format!("api_key = {}", quoted(&settings.secrets.api_key)));
    line("# Keys the mesh's mutual TLS and seals gossip: a node without it is never a member.");
    line(&format!(
        "cluster_secret = {}",
        quoted(&settings.secrets.cluster_secret)
    ));
    line("");
    line("[store]");
    line("# full: fsync every group commit, so an acknowledged publish survives a power cut.");
    line("sync = \"full\"");
    line("");
    line("[limits]");
    line("# Sockets per node; keep LimitNOFILE (deploy/herald.service) above it.");
    line(&format!("max_connections = {}", limits.max_connections));
    line("# Sockets per user on this node (0: no limit); the next is closed with 1008.");
    line(&format!(
        "max_connections_per_user = {}",
        limits.max_connections_per_user
    ));
    line("# Sockets per client IP address (0: off; users behind a proxy share one address).");
    line(&format!(
        "max_connections_per_ip = {}",
        limits.max_connections_per_ip
    ));
    line("# Messages per second one socket may send, on average (0: no limit) ...");
    line(&format!(
        "client_messages_per_s = {}",
        limits.client_messages_per_s
    ));
    line("# ... after a burst of this many.");
    line(&format!(
        "client_messages_burst = {}",
        limits.client_messages_burst
    ));
    line("# Client silence before a heartbeat and a ping; silent for two of these: closed.");
    line(&format!("heartbeat = {}", duration_text(limits.heartbeat)));
    line("# Longest an HTTP request may take (408 past it); a socket only until its upgrade.");
    line(&format!(
        "http_request_timeout = {}",
        duration_text(limits.http_request_timeout)
    ));
    line("# Largest HTTP request body, in bytes (413 past it).");
    line(&format!(
        "max_request_body_bytes = {}",
        limits.max_request_body_bytes
    ));
    line("# Messages queued per socket before it is closed as too slow (1013).");
    line(&format!("client_queue = {}", limits.client_queue));
    line("# Largest message a client may send, in bytes (1009 past it).");
    line(&format!(
        "max_client_message_bytes = {}",
        limits.max_client_message_bytes
    ));
    line("# Largest `data` of a publish, in bytes.");
    line(&format!("max_payload_bytes = {}", limits.max_payload_bytes));
    line("# Most events of one POST /api/batch, and channels of one publish.");
    line(&format!("max_batch = {}", limits.max_batch));
    line("# Events per page when a resuming client is replayed what it missed.");
    line(&format!("replay_page = {}", limits.replay_page));
    line("");
    line("[history]");
    line("# Events kept per channel (0: all); a client resuming from further back is told so.");
    line(&format!("size = {DEFAULT_HISTORY_SIZE}"));
    line("# Events older than this are pruned (0: never).");
    line(&format!("ttl = {}", duration_text(DEFAULT_HISTORY_TTL)));
    line("# Ceiling for the log on disk (0: none); past it the oldest events go first.");
    line(&format!(
        "max_disk = {}",
        bytes_text(DEFAULT_HISTORY_MAX_DISK)
    ));
    line("# Overrides by channel-name prefix (the longest match wins), for example:");
    line("# [[history.channels]]");
    line("# prefix = \"track:\"");
    line("# size = 200");
    line("# ttl = \"30d\"");
    line("");
    line("[presence]");
    line(
        "# Channel-name prefixes whose subscribers are listed and announced (\"*\": every channel).",
    );
    line(&format!("channels = {}", string_array(DEFAULT_CHANNELS)));
    line("# Most users one channel lists.");
    line(&format!(
        "max_users_per_channel = {DEFAULT_MAX_USERS_PER_CHANNEL}"
    ));
    line("");
    line(&format!(
        "# This machine: applied as the file's only [[nodes]] entry (or by name, --node {ENTRY});"
    ));
    line("# a file with several entries needs --node NAME.");
    line("[[nodes]]");
    line(&format!("name = {}", quoted(ENTRY)));
    line("# The node's id for good: its data directory is bound to it.");
    line(&format!("node_id = {}", quoted(settings.node_id.as_str())));
    line("# Listen addresses: HTTP and WebSocket (TCP), gossip (UDP), mesh (QUIC over UDP).");
    line(&format!(
        "http = {}",
        quoted(&settings.listen_at(settings.http_port))
    ));
    line(&format!(
        "gossip = {}",
        quoted(&settings.listen_at(settings.gossip_port))
    ));
    line(&format!(
        "mesh = {}",
        quoted(&settings.listen_at(settings.mesh_port))
    ));
    let advertised = [
        ("advertise_http", settings.http_port),
        ("advertise_gossip", settings.gossip_port),
        ("advertise_mesh", settings.mesh_port),
    ];
    if settings.advertise.is_some() {
        line("# Where peers and clients reach this node (what gossip tells the others).");
    } else {
        line("# Where peers and clients reach this node, if not at the listen addresses:");
    }
    for (key, port) in advertised {
        match settings.advertised_at(port) {
            Some(address) => line(&format!("{key} = {}", quoted(&address))),
            None => line(&format!("# {key} = \"HOST:{port}\"")),
        }
    }
    line("# The SQLite log and the node id (deploy/herald.service: StateDirectory=herald).");
    line(&format!(
        "data = {}",
        quoted(&settings.data.to_string_lossy())
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(advertise: Option<&str>) -> Settings {
        Settings {
            node_id: NodeId::new("n1").unwrap(),
            cluster_id: "prod".into(),
            secrets: Secrets {
                jwt_secret: "j".repeat(43),
                api_key: "a".repeat(43),
                cluster_secret: "c".repeat(43),
            },
            seeds: vec!["10.0.0.1:7000".into(), "[2001:db8::2]:7000".into()],
            replication: 2,
            listen: "0.0.0.0".into(),
            advertise: advertise.map(str::to_string),
            http_port: 8000,
            gossip_port: 7000,
            mesh_port: 9000,
            data: "/var/lib/herald".into(),
        }
    }

    #[test]
    fn the_file_parses_and_holds_the_settings() {
        let text = render(&settings(Some("10.0.0.1")));
        let file = FileConfig::parse(&text).unwrap();
        assert_eq!(file.cluster_id.as_deref(), Some("prod"));
        assert_eq!(file.seeds.as_ref().unwrap().len(), 2);
        let node = file.node(ENTRY).unwrap();
        assert_eq!(node.node_id.as_deref(), Some("n1"));
        assert_eq!(node.http.as_deref(), Some("0.0.0.0:8000"));
        assert_eq!(node.advertise_mesh.as_deref(), Some("10.0.0.1:9000"));
        let without = FileConfig::parse(&render(&settings(None))).unwrap();
        assert_eq!(without.node(ENTRY).unwrap().advertise_http, None);
    }

    #[test]
    fn hosts_and_texts() {
        assert_eq!(
            host_text("--advertise", "2001:db8::1").unwrap(),
            "[2001:db8::1]"
        );
        assert_eq!(host_text("--advertise", "[::1]").unwrap(), "[::1]");
        assert_eq!(
            host_text("--advertise", "node1.example.com").unwrap(),
            "node1.example.com"
        );
        assert!(host_text("--advertise", "10.0.0.1:8000").is_err());
        assert!(host_text("--advertise", "").is_err());
        assert_eq!(duration_text(Duration::from_secs(86400)), "\"24h\"");
        assert_eq!(duration_text(Duration::from_secs(60)), "\"1m\"");
        assert_eq!(duration_text(Duration::from_secs(30)), "\"30s\"");
        assert_eq!(bytes_text(8 << 30), "\"8GiB\"");
        assert_eq!(bytes_text(1000), "1000");
        for text in ["plain", "a\"b\\c", "it's", "/var/lib/herald"] {
            let parsed: toml::Table = format!("x = {}", quoted(text)).parse().unwrap();
            assert_eq!(parsed["x"].as_str(), Some(text));
        }
    }
}
