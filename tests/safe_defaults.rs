//! Safe defaults, through the real binary: protected mode (no development secret off
//! loopback), the cluster secret's length, advertised addresses, and `herald secret`. Every
//! refusal exits with status 2 and one line naming what to set, before anything listens.

use std::process::{Command, Output};

const HERALD_VARIABLES: [&str; 9] = [
    "HERALD_JWT_SECRET",
    "HERALD_API_KEY",
    "HERALD_CLUSTER_SECRET",
    "HERALD_CONFIG",
    "HERALD_HTTP",
    "HERALD_GOSSIP",
    "HERALD_MESH",
    "HERALD_BACKPLANE",
    "HERALD_ADVERTISE_HTTP",
];

/// Runs `herald serve ARGS` with the secrets given (and no other `HERALD_*` variable).
fn serve(args: &[&str], secrets: &[(&str, &str)]) -> Output {
    let data = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .arg("serve")
        .arg("--data")
        .arg(data.path())
        .args(args);
    for variable in HERALD_VARIABLES {
        command.env_remove(variable);
    }
    for (variable, value) in secrets {
        command.env(variable, value);
    }
    command.output().expect("run herald")
}

fn refused(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(
        output.status.code(),
        Some(2),
        "exit status; stderr: {stderr}"
    );
    let line = stderr
        .lines()
        .find(|line| line.starts_with("herald: error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr:?}"));
    line.to_string()
}

const REAL: [(&str, &str); 3] = [
    ("HERALD_JWT_SECRET", "a-jwt-secret-that-is-not-the-default"),
    ("HERALD_API_KEY", "an-api-key-that-is-not-the-default"),
    (
        "HERALD_CLUSTER_SECRET",
        "a-cluster-secret-of-more-than-thirty-two-characters",
    ),
];

#[test]
fn off_loopback_the_development_secrets_are_refused() {
    let output = serve(&["--backplane", "local", "--http", "0.0.0.0:0"], &[]);
    let line = refused(&output);
    assert!(line.contains("HERALD_JWT_SECRET"), "{line}");
    assert!(line.contains("not loopback"), "{line}");
    let output = serve(&["--backplane", "local", "--http", "0.0.0.0:0"], &[REAL[0]]);
    assert!(refused(&output).contains("HERALD_API_KEY"));
}

#[test]
fn off_loopback_a_short_cluster_secret_is_refused() {
    let output = serve(
        &[
            "--http",
            "0.0.0.0:0",
            "--advertise-http",
            "192.0.2.1:8000",
            "--mesh",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
        ],
        &[
            REAL[0],
            REAL[1],
            ("HERALD_CLUSTER_SECRET", "only-twenty-chars-xx"),
        ],
    );
    let line = refused(&output);
    assert!(line.contains("cluster_secret"), "{line}");
    assert!(line.contains("herald secret"), "{line}");
}

#[test]
fn a_clustered_node_on_an_unspecified_address_must_advertise_one() {
    let output = serve(
        &[
            "--http",
            "0.0.0.0:0",
            "--mesh",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
        ],
        &REAL,
    );
    let line = refused(&output);
    assert!(line.contains("--advertise-http"), "{line}");
    let output = serve(
        &[
            "--http",
            "127.0.0.1:0",
            "--mesh",
            "[::]:0",
            "--gossip",
            "127.0.0.1:0",
        ],
        &REAL,
    );
    assert!(refused(&output).contains("--advertise-mesh"));
}

#[test]
fn herald_secret_prints_a_fresh_strong_secret() {
    let run = || {
        let output = Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("secret")
            .output()
            .expect("run herald secret");
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let (first, second) = (run(), run());
    assert_ne!(first, second);
    assert!(first.len() >= 32, "{first}");
    assert!(
        first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{first}"
    );
}
