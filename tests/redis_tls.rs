//! The Redis backplane over TLS and with credentials, through the real binary: a
//! `redis-server` that only speaks TLS (certificate from a private CA made here with rcgen)
//! and only lets in an ACL user with a password. Two nodes connect with
//! `rediss://user:password@127.0.0.1:port` and `--redis-ca`, and replicate; the password
//! appears in no log line, no `/api/cluster` answer, no `herald cluster status` output and no
//! `/readyz` detail, also for a node that was given a wrong one.
//!
//! Skipped, saying so, when `redis-server` is not installed (`HERALD_REQUIRE_REDIS=1` makes
//! that a failure).

#![cfg(feature = "redis")]

mod cluster_support;
mod redis_support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_support::wait_for;
use serde_json::{Value, json};

const API_KEY: &str = "herald-dev-api-key-change-me";
const USER: &str = "herald";
const PASSWORD: &str = "Tls-Pa55word-n0t-in-logs";
const WRONG_PASSWORD: &str = "Wr0ng-Pa55word-n0t-in-logs-either";
const WAIT: Duration = Duration::from_secs(30);

/// A private CA and a server certificate for 127.0.0.1 and localhost, as PEM files in `dir`.
struct Certificates {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_certificates(dir: &Path) -> Certificates {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "herald test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
    server_params
        .distinguished_name
        .push(DnType::CommonName, "redis test server");
    let issuer = Issuer::new(ca_params, ca_key);
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    let files = Certificates {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.ca, ca_cert.pem()).unwrap();
    std::fs::write(&files.cert, server_cert.pem()).unwrap();
    std::fs::write(&files.key, server_key.serialize_pem()).unwrap();
    files
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

/// `redis-server` on TLS only, with the default user off and one ACL user with a password.
struct TlsRedis {
    port: u16,
    child: Child,
}

impl TlsRedis {
    fn start(dir: &Path, certificates: &Certificates) -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--tls-cert-file")
            .arg(&certificates.cert)
            .arg("--tls-key-file")
            .arg(&certificates.key)
            .arg("--tls-ca-cert-file")
            .arg(&certificates.ca)
            .args(["--tls-auth-clients", "no"])
            .args(["--user", "default", "off"])
            .args([
                "--user",
                USER,
                "on",
                &format!(">{PASSWORD}"),
                "~*",
                "&*",
                "+@all",
            ])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-server");
        let mut redis = Self { port, child };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server with TLS exited: {status} (does this build support TLS?)");
            }
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::park_timeout(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self, password: &str) -> String {
        format!("rediss://{USER}:{password}@127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `herald serve` child whose log output (stderr) is kept.
struct Node {
    child: Child,
    http: SocketAddr,
    logs: Arc<Mutex<String>>,
}

impl Node {
    fn start(name: &str, data: &Path, url: &str, ca: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("serve")
            .args(["--node-id", name])
            .args(["--http", "127.0.0.1:0"])
            .args(["--backplane", "redis", "--redis-url", url])
            .arg("--redis-ca")
            .arg(ca)
            .arg("--data")
            .arg(data)
            .args(["--store-sync", "normal"])
            // Debug: more lines that could carry the password, if anything let it out.
            .env("HERALD_LOG", "debug")
            .env_remove("HERALD_CONFIG")
            .env_remove("HERALD_REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herald");
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let kept = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut logs = kept.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (ready, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = ready.send(line);
            }
        });
        let line = lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("{name} did not start: {}", logs.lock().unwrap()));
        let http = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("http="))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
        Self { child, http, logs }
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .get(format!("http://{}{path}", self.http))
            .bearer_auth(API_KEY)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    async fn publish(&self, n: u64) -> Value {
        let response = reqwest::Client::new()
            .post(format!("http://{}/api/publish", self.http))
            .bearer_auth(API_KEY)
            .timeout(Duration::from_secs(10))
            .json(&json!({ "channel": "secure", "data": { "type": "tick", "n": n } }))
            .send()
            .await
            .expect("publish");
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.expect("publish answer")
    }

    async fn ticks(&self) -> Vec<u64> {
        let (_, body) = self.get("/api/channels/secure/history?limit=1000").await;
        let page: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let mut ticks: Vec<u64> = page["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|event| event["n"].as_u64())
            .collect();
        ticks.sort_unstable();
        ticks
    }

    /// Stops the node and answers everything it logged.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread ends with the pipe; give it the moment it needs.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut logs = self.logs();
        while Instant::now() < deadline {
            std::thread::park_timeout(Duration::from_millis(50));
            let now = self.logs();
            if now == logs {
                break;
            }
            logs = now;
        }
        logs
    }
}

fn assert_no_password(what: &str, text: &str) {
    for secret in [PASSWORD, WRONG_PASSWORD] {
        assert!(
            !text.contains(secret),
            "the redis password appears in {what}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_replicate_through_redis_over_tls_with_a_password_that_never_shows() {
    if !redis_support::available("nodes_replicate_through_redis_over_tls_with_a_password") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certificates = make_certificates(dir.path());
    let redis = TlsRedis::start(dir.path(), &certificates);
    let url = redis.url(PASSWORD);
    let n1 = Node::start("n1", &dir.path().join("n1"), &url, &certificates.ca);
    let n2 = Node::start("n2", &dir.path().join("n2"), &url, &certificates.ca);
    for node in [&n1, &n2] {
        wait_for("ready through redis over TLS", WAIT, || async {
            node.get("/readyz").await.0 == 200
        })
        .await;
    }

    for n in 1..=5 {
        n1.publish(n).await;
        n2.publish(100 + n).await;
    }
    let all: Vec<u64> = (1..=5).chain(101..=105).collect();
    for node in [&n1, &n2] {
        wait_for("events replicated both ways", WAIT, || async {
            node.ticks().await == all
        })
        .await;
    }

    // A node with a wrong password is not ready, and does not show that password either.
    let wrong = Node::start(
        "n3",
        &dir.path().join("n3"),
        &redis.url(WRONG_PASSWORD),
        &certificates.ca,
    );
    let (status, readyz) = wrong.get("/readyz").await;
    assert_eq!(status, 503, "{readyz}");
    wait_for(
        "a failed authentication in the health detail",
        WAIT,
        || async { wrong.get("/readyz").await.1.contains("WRONGPASS") },
    )
    .await;
    let (_, readyz) = wrong.get("/readyz").await;
    assert_no_password(
        "the readiness detail of a node with a wrong password",
        &readyz,
    );

    for node in [&n1, &n2, &wrong] {
        let (status, cluster) = node.get("/api/cluster").await;
        assert_eq!(status, 200, "{cluster}");
        assert_no_password("/api/cluster", &cluster);
        let (_, readyz) = node.get("/readyz").await;
        assert_no_password("/readyz", &readyz);
    }
    let (_, cluster) = n1.get("/api/cluster").await;
    assert!(
        cluster.contains(&format!("127.0.0.1:{}", redis.port)),
        "{cluster}"
    );

    let status = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["cluster", "status", "--http", &n1.http.to_string()])
        .env_remove("HERALD_API_KEY")
        .output()
        .expect("herald cluster status");
    assert!(status.status.success(), "{status:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(printed.contains("n2"), "{printed}");
    assert_no_password("herald cluster status", &printed);

    for (name, node) in [("n1", n1), ("n2", n2), ("n3", wrong)] {
        let logs = node.stop();
        assert!(!logs.is_empty(), "{name} logged nothing");
        assert_no_password(&format!("the log of {name}"), &logs);
    }
}

#[test]
fn a_node_refuses_a_ca_file_without_tls_and_names_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let run = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("serve")
            .args([
                "--http",
                "127.0.0.1:0",
                "--backplane",
                "redis",
                "--redis-url",
                url,
            ])
            .arg("--redis-ca")
            .arg(&ca)
            .arg("--data")
            .arg(dir.path().join("data"))
            .env_remove("HERALD_CONFIG")
            .output()
            .expect("run herald")
    };
    // A CA for a plain redis:// URL is a configuration error naming the key.
    let output = run(&format!("redis://{USER}:{PASSWORD}@127.0.0.1:1"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("redis_ca"), "{stderr}");
    assert_no_password("a configuration error", &stderr);
    // A CA file with no certificate in it is refused, naming the file.
    let output = run(&format!("rediss://{USER}:{PASSWORD}@127.0.0.1:1"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&ca.display().to_string()), "{stderr}");
    assert_no_password("a TLS configuration error", &stderr);
}
