//! `herald init`: the file it writes is private, holds fresh secrets (or another node's),
//! the production settings and the code's defaults, is accepted as is by the configuration
//! resolver and by `herald serve`, and is never overwritten.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use herald::cli::init::ENTRY;
use herald::config::{
    Advertised, BackplaneKind, Config, DEV_API_KEY, DEV_CLUSTER_SECRET, DEV_JWT_SECRET, FileConfig,
    Limits, ServeArgs, resolve,
};
use herald::presence::PresenceConfig;
use herald::store::{RetentionPolicy, SyncMode};

/// `herald init ARGS`, with no `HERALD_*` variable.
fn init(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.arg("init").args(args);
    for (variable, _) in std::env::vars() {
        if variable.starts_with("HERALD_") {
            command.env_remove(variable);
        }
    }
    command.output().expect("run herald init")
}

fn init_ok(args: &[&str]) {
    let output = init(args);
    assert!(
        output.status.success(),
        "herald init {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read the written file")
}

/// The file resolved the way `herald serve --config FILE` (deploy/herald.service) resolves it,
/// with no secret in the environment: its only `[[nodes]]` entry applies without `--node`.
/// Naming the entry (`--node this`) resolves to the same.
fn resolved(path: &Path) -> Config {
    let resolve_with = |node: Option<&str>| {
        let args = ServeArgs {
            config: Some(path.to_path_buf()),
            node: node.map(str::to_string),
            ..ServeArgs::default()
        };
        resolve(&args, |_| None)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), text(path)))
    };
    let config = resolve_with(None);
    let named = resolve_with(Some(ENTRY));
    assert_eq!(format!("{config:?}"), format!("{named:?}"));
    config
}

fn str_path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

#[test]
fn init_writes_a_private_production_file_that_the_resolver_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    let data = dir.path().join("data");
    init_ok(&[
        "--path",
        str_path(&path),
        "--node-id",
        "n1",
        "--advertise",
        "192.0.2.10",
        "--seed",
        "192.0.2.10:7000",
        "--seed",
        "192.0.2.11:7000,192.0.2.12:7000",
        "--data",
        str_path(&data),
        "--cluster-id",
        "prod",
    ]);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the file holds the secrets");
    }
    let written = text(&path);
    // Commented: a comment line before (nearly) every setting.
    let settings = written
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(" = "))
        .count();
    let comments = written.lines().filter(|l| l.starts_with('#')).count();
    assert!(comments >= settings, "{written}");

    // Listening on 0.0.0.0 with fresh secrets passes the safe-default checks.
    let config = resolved(&path);
    assert_eq!(config.node_id.as_str(), "n1");
    assert_eq!(config.cluster_id, "prod");
    assert_eq!(config.http.to_string(), "0.0.0.0:8000");
    assert_eq!(config.gossip.to_string(), "0.0.0.0:7000");
    assert_eq!(config.mesh.to_string(), "0.0.0.0:9000");
    assert_eq!(
        config.advertise,
        Advertised {
            http: Some("192.0.2.10:8000".parse().unwrap()),
            gossip: Some("192.0.2.10:7000".parse().unwrap()),
            mesh: Some("192.0.2.10:9000".parse().unwrap()),
        }
    );
    assert_eq!(
        config.seeds,
        ["192.0.2.10:7000", "192.0.2.11:7000", "192.0.2.12:7000"]
    );
    assert_eq!(config.data_dir, data);
    assert_eq!(config.backplane, BackplaneKind::Mesh);
    assert_eq!(config.replication, 2);
    assert_eq!(config.store_sync, SyncMode::Full);
    assert!(config.uses_dev_secrets().is_empty());
    for secret in [&config.jwt_secret, &config.api_key, &config.cluster_secret] {
        assert_eq!(secret.len(), 43, "herald secret's length");
        assert!(written.contains(secret.as_str()));
    }
    assert_ne!(config.jwt_secret, config.api_key);
    assert_ne!(config.api_key, config.cluster_secret);
    for dev in [DEV_JWT_SECRET, DEV_API_KEY, DEV_CLUSTER_SECRET] {
        assert!(!written.contains(dev));
    }
    // What the file writes as defaults are the code's defaults.
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.history, RetentionPolicy::default());
    assert_eq!(config.presence, PresenceConfig::default());
    assert_eq!(
        config.max_clock_drift,
        herald::config::DEFAULT_MAX_CLOCK_DRIFT
    );
}

#[test]
fn without_advertise_the_node_listens_on_loopback_and_every_key_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    init_ok(&[
        "--path",
        str_path(&path),
        "--data",
        "data",
        "--replication",
        "1",
    ]);
    // The parser refuses unknown keys: every key written is one herald accepts.
    let file = FileConfig::parse(&text(&path)).unwrap();
    assert_eq!(file.nodes.len(), 1);
    let config = resolved(&path);
    assert_eq!(config.http.to_string(), "127.0.0.1:8000");
    assert_eq!(config.advertise, Advertised::default());
    assert!(config.seeds.is_empty());
    assert_eq!(config.replication, 1);
    assert!(config.node_id.as_str().starts_with("node-"), "generated");
    assert_eq!(
        config.data_dir,
        dir.path().join("data"),
        "relative to the file"
    );

    let refused = init(&[
        "--path",
        str_path(&dir.path().join("other.toml")),
        "--listen",
        "0.0.0.0",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--advertise"));
}

#[test]
fn init_never_overwrites_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, "# mine\n").unwrap();
    let output = init(&["--path", str_path(&path), "--node-id", "n1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(stderr.contains(str_path(&path)), "{stderr}");
    assert_eq!(text(&path), "# mine\n", "left alone");

    // A file init wrote itself is not overwritten either.
    let second = dir.path().join("second.toml");
    init_ok(&["--path", str_path(&second)]);
    let before = text(&second);
    assert_eq!(init(&["--path", str_path(&second)]).status.code(), Some(2));
    assert_eq!(text(&second), before);
}

#[test]
fn secrets_are_fresh_unless_taken_from_another_nodes_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| -> PathBuf { dir.path().join(name) };
    let (first, second, third) = (path("n1.toml"), path("n2.toml"), path("n3.toml"));
    init_ok(&[
        "--path",
        str_path(&first),
        "--data",
        "d1",
        "--cluster-id",
        "prod",
    ]);
    init_ok(&["--path", str_path(&second), "--data", "d2"]);
    init_ok(&[
        "--path",
        str_path(&third),
        "--data",
        "d3",
        "--secrets-from",
        str_path(&first),
        "--node-id",
        "n3",
    ]);
    let (n1, n2, n3) = (resolved(&first), resolved(&second), resolved(&third));
    assert_ne!(n1.jwt_secret, n2.jwt_secret);
    assert_ne!(n1.api_key, n2.api_key);
    assert_ne!(n1.cluster_secret, n2.cluster_secret);
    assert_eq!(n3.jwt_secret, n1.jwt_secret);
    assert_eq!(n3.api_key, n1.api_key);
    assert_eq!(n3.cluster_secret, n1.cluster_secret);
    assert_eq!(n3.cluster_id, "prod", "the cluster id comes along");
    assert_ne!(n3.node_id, n1.node_id);

    std::fs::write(path("bare.toml"), "cluster_id = \"x\"\n").unwrap();
    let output = init(&[
        "--path",
        str_path(&path("n4.toml")),
        "--secrets-from",
        str_path(&path("bare.toml")),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("jwt_secret"));
    assert!(!path("n4.toml").exists());
}

#[test]
fn herald_serve_starts_on_the_written_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    init_ok(&[
        "--path",
        str_path(&path),
        "--node-id",
        "n1",
        "--advertise",
        "192.0.2.10",
        "--data",
        "data",
    ]);
    // The file as written, without --node, as deploy/herald.service runs it; only the ports
    // are overridden (free ones), and HTTP stays on 0.0.0.0 so that the safe-default checks
    // see a node others can reach.
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .args(["serve", "--config", str_path(&path)])
        .args(["--http", "0.0.0.0:0"])
        .args(["--gossip", "127.0.0.1:0", "--mesh", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (variable, _) in std::env::vars() {
        if variable.starts_with("HERALD_") || variable == "NOTIFY_SOCKET" {
            command.env_remove(variable);
        }
    }
    let mut child = command.spawn().expect("spawn herald serve");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let listening = loop {
        match received.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.starts_with("herald listening") => break line,
            Ok(_) => {}
            Err(_) => {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut stderr = String::new();
                    use std::io::Read;
                    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
                    panic!("herald serve exited ({status}) on the written file: {stderr}");
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("herald serve did not listen within 60 s");
                }
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening.contains("node_id=n1"), "{listening}");
    assert!(dir.path().join("data").join("node_id").exists());
}

#[test]
fn a_second_nodes_entry_makes_node_required() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    init_ok(&[
        "--path",
        str_path(&path),
        "--node-id",
        "n1",
        "--data",
        "data",
    ]);
    let mut written = text(&path);
    written.push_str("\n[[nodes]]\nname = \"spare\"\nnode_id = \"n9\"\ndata = \"spare\"\n");
    std::fs::write(&path, written).unwrap();
    let args = |node: Option<&str>| ServeArgs {
        config: Some(path.clone()),
        node: node.map(str::to_string),
        ..ServeArgs::default()
    };
    let error = resolve(&args(None), |_| None).unwrap_err().to_string();
    assert!(
        error.contains(&format!("({ENTRY}, spare)")) && error.contains("--node NAME"),
        "{error}"
    );
    assert_eq!(
        resolve(&args(Some(ENTRY)), |_| None)
            .unwrap()
            .node_id
            .as_str(),
        "n1"
    );
    assert_eq!(
        resolve(&args(Some("spare")), |_| None)
            .unwrap()
            .node_id
            .as_str(),
        "n9"
    );
}
