//! The CLI against a node that serves HTTPS (issue 15, "Running herald for real"):
//! `herald cluster status`, `herald publish` (one event and `--batch`) and
//! `herald cluster leave` take `--http https://host:port` and trust a private CA given with
//! `--tls-ca FILE` or `HERALD_TLS_CA`. A certificate that does not verify (no CA given, so the
//! system's roots; or another CA) fails the command with a line that says so and names the
//! address; a bare `host:port` is plain HTTP, and against a TLS port says to use https://.

mod tls_support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tls_support::{Node, TestCa};

const API_KEY: &str = "herald-dev-api-key-change-me";

/// `herald ARGS` with no `HERALD_*` variable but `env`; `stdin` fed to it.
fn herald(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.args(args);
    for (variable, _) in std::env::vars() {
        if variable.starts_with("HERALD_") {
            command.env_remove(variable);
        }
    }
    let mut child = command
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run herald");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("herald output")
}

fn succeeded(what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn failed(what: &str, output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(2),
        "{what} must fail: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A node on port 0 with native TLS from a certificate of `ca`.
fn tls_node(dir: &std::path::Path, ca: &TestCa) -> Node {
    let certificate = ca.issue(dir, "n1");
    Node::start(
        &args![
            "--node-id",
            "n1",
            "--backplane",
            "local",
            "--http",
            "127.0.0.1:0",
            "--store-sync",
            "normal",
            "--data",
            dir.join("data"),
            "--tls-cert",
            &certificate.cert,
            "--tls-key",
            &certificate.key,
        ],
        &[],
    )
}

async fn history(ca: &TestCa, node: &Node, channel: &str) -> Vec<Value> {
    let page: Value = ca
        .client()
        .get(format!(
            "{}/api/channels/{channel}/history?limit=100",
            node.url()
        ))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("history over HTTPS")
        .json()
        .await
        .expect("history JSON");
    page["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn status_publish_and_leave_reach_a_tls_node_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "test-ca");
    let mut node = tls_node(dir.path(), &ca);
    assert_eq!(node.scheme, "https");
    let url = node.url();
    let ca_file = ca.pem.to_str().unwrap();

    // status, with the CA as a flag and as HERALD_TLS_CA.
    let table = succeeded(
        "cluster status",
        &herald(
            &["cluster", "status", "--http", &url, "--tls-ca", ca_file],
            &[],
            "",
        ),
    );
    assert!(table.starts_with("NODE"), "{table}");
    assert!(table.contains("n1 *"), "{table}");
    let json = succeeded(
        "cluster status --json",
        &herald(
            &["cluster", "status", "--json", "--http", &url],
            &[("HERALD_TLS_CA", ca_file)],
            "",
        ),
    );
    let view: Value = serde_json::from_str(&json).expect("status JSON");
    assert_eq!(view["node_id"], "n1", "{view}");

    // publish: one event, then a batch from stdin, the address from HERALD_HTTP.
    let answer = succeeded(
        "publish",
        &herald(
            &[
                "publish",
                "--channel",
                "news",
                "--type",
                "hello",
                "--data",
                r#"{"n":1}"#,
            ],
            &[("HERALD_HTTP", &url), ("HERALD_TLS_CA", ca_file)],
            "",
        ),
    );
    assert!(answer.contains("\"status\":\"success\""), "{answer}");
    let batch = "{\"channel\":\"news\",\"data\":{\"type\":\"hello\",\"n\":2}}\n\
                 {\"channel\":\"news\",\"data\":{\"type\":\"hello\",\"n\":3}}\n";
    succeeded(
        "publish --batch",
        &herald(
            &["publish", "--batch", "--http", &url, "--tls-ca", ca_file],
            &[],
            batch,
        ),
    );
    let numbers: Vec<u64> = history(&ca, &node, "news")
        .await
        .iter()
        .filter_map(|event| event["n"].as_u64())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);

    // leave: the node drains and exits 0.
    let left = succeeded(
        "cluster leave",
        &herald(
            &["cluster", "leave", "--http", &url, "--tls-ca", ca_file],
            &[],
            "",
        ),
    );
    assert!(left.contains("success") || left.contains("leav"), "{left}");
    let status = node
        .wait_exit(Duration::from_secs(20))
        .expect("the node exits after leaving");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_certificate_that_does_not_verify_is_refused_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "test-ca");
    let other = TestCa::new(dir.path(), "other-ca");
    let node = tls_node(dir.path(), &ca);
    let url = node.url();

    // No CA: the system's roots do not hold the test CA.
    let stderr = failed(
        "status without the CA",
        &herald(&["cluster", "status", "--http", &url], &[], ""),
    );
    assert!(
        stderr.contains(&format!("the certificate of {url} does not verify")),
        "{stderr}"
    );
    assert!(stderr.contains("--tls-ca"), "{stderr}");

    // Another CA: refused just the same, by publish and leave too.
    let other_file = other.pem.to_str().unwrap();
    for args in [
        vec!["cluster", "status", "--http", &url],
        vec![
            "publish",
            "--channel",
            "news",
            "--type",
            "x",
            "--http",
            &url,
        ],
        vec!["cluster", "leave", "--http", &url],
    ] {
        let stderr = failed(
            &args.join(" "),
            &herald(&args, &[("HERALD_TLS_CA", other_file)], ""),
        );
        assert!(
            stderr.contains(&format!("the certificate of {url} does not verify")),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        history(&ca, &node, "news").await.is_empty(),
        "nothing was published past a refused certificate"
    );

    // A bare address is plain HTTP, which a TLS port does not answer: the error says so.
    let bare = node.http.to_string();
    let stderr = failed(
        "status over plain HTTP",
        &herald(&["cluster", "status", "--http", &bare], &[], ""),
    );
    assert!(stderr.contains(&format!("http://{bare}")), "{stderr}");
    assert!(
        stderr.contains(&format!("use --http https://{bare}")),
        "{stderr}"
    );

    // A CA file that holds no certificate is refused, naming it.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here").unwrap();
    let stderr = failed(
        "status with an empty CA file",
        &herald(
            &[
                "cluster",
                "status",
                "--http",
                &url,
                "--tls-ca",
                empty.to_str().unwrap(),
            ],
            &[],
            "",
        ),
    );
    assert!(stderr.contains("empty.pem"), "{stderr}");

    // The node is still up: a verified status works.
    succeeded(
        "status with the right CA",
        &herald(
            &[
                "cluster",
                "status",
                "--http",
                &url,
                "--tls-ca",
                ca.pem.to_str().unwrap(),
            ],
            &[],
            "",
        ),
    );
}

#[tokio::test]
async fn a_plain_node_is_reached_by_a_bare_address_and_https_to_it_fails_saying_tls() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        &args![
            "--node-id",
            "plain",
            "--backplane",
            "local",
            "--http",
            "127.0.0.1:0",
            "--store-sync",
            "normal",
            "--data",
            dir.path().join("data"),
        ],
        &[],
    );
    assert_eq!(node.scheme, "http");
    let bare = node.http.to_string();
    for http in [bare.clone(), format!("http://{bare}")] {
        let table = succeeded(
            "status over plain HTTP",
            &herald(&["cluster", "status", "--http", &http], &[], ""),
        );
        assert!(table.contains("plain *"), "{table}");
    }
    let stderr = failed(
        "status over HTTPS to a plain node",
        &herald(
            &["cluster", "status", "--http", &format!("https://{bare}")],
            &[],
            "",
        ),
    );
    assert!(
        stderr.contains(&format!("TLS with https://{bare} failed")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("use --http {bare}")), "{stderr}");
    // What is not an http(s) address is refused before anything is sent.
    let stderr = failed(
        "status with a path",
        &herald(
            &[
                "cluster",
                "status",
                "--http",
                &format!("https://{bare}/api"),
            ],
            &[],
            "",
        ),
    );
    assert!(stderr.contains("invalid --http"), "{stderr}");
}
