//! `--log-format json` through the real binary: two mesh nodes log at trace (every crate)
//! while they serve a publish with the API key, sockets with a good and a bad `?token=`, a
//! refused API key and an admin's broadcast; once they have shut down, every stderr line must
//! be a JSON object with `timestamp`, `level`, `fields` (herald's with a `message`) and the
//! node's `node_id`, and no line may hold a secret, the snapshot token derived from the
//! cluster secret, or a token.

mod cluster_support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald::auth::{Authenticator, Role, User};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const JWT_SECRET: &str = "jwt-secret-7f3a9c-never-in-a-log";
const API_KEY: &str = "api-key-51d0e2-never-in-a-log";
const CLUSTER_SECRET: &str = "cluster-secret-9b44c1-never-in-a-log-at-all";
const WRONG_API_KEY: &str = "wrong-api-key-c0ffee-not-in-a-log";
const BAD_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.bad-token-d00d.signature";
const TIMEOUT: Duration = Duration::from_secs(10);

struct Node {
    name: &'static str,
    child: Child,
    http: SocketAddr,
    stderr: std::thread::JoinHandle<Vec<String>>,
}

fn free_udp_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("a free udp port")
}

fn start(name: &'static str, gossip: SocketAddr, seeds: &str, data: &std::path::Path) -> Node {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .arg("serve")
        .args([
            "--node-id",
            name,
            "--http",
            "127.0.0.1:0",
            "--mesh",
            "127.0.0.1:0",
        ])
        .args(["--gossip", &gossip.to_string(), "--store-sync", "normal"])
        .args(["--backplane", "mesh", "--log-format", "json"])
        .arg("--data")
        .arg(data.join(name))
        .env_remove("HERALD_CONFIG")
        .env_remove("HERALD_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .env("HERALD_LOG", "trace")
        .env("HERALD_SEEDS", seeds)
        .env("HERALD_JWT_SECRET", JWT_SECRET)
        .env("HERALD_API_KEY", API_KEY)
        .env("HERALD_CLUSTER_SECRET", CLUSTER_SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn herald");
    let stderr = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect()
    });
    let stdout = child.stdout.take().expect("stdout");
    let (lines, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let line = ready
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{name} did not start"));
    let http = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("http="))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
    Node {
        name,
        child,
        http,
        stderr,
    }
}

/// SIGTERM, then the lines the node wrote on stderr.
fn stop(node: Node) -> (&'static str, Vec<String>) {
    let _ = Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status();
    // The exit is waited for on a thread of its own, for at most 20 s, then it is killed.
    let Node {
        name,
        mut child,
        stderr,
        ..
    } = node;
    let pid = child.id();
    let (exited, exit) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = exited.send(child.wait());
    });
    if exit.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let _ = waiter.join();
    (name, stderr.join().expect("stderr reader"))
}

async fn socket(
    node: &Node,
    query: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://{}/ws?{query}", node.http);
    let (socket, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .expect("handshake");
    socket
}

/// The next text message of `socket` whose `type` is `kind` (a close frame's reason as
/// `{"type":"close","reason":...}`).
async fn next_of(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    kind: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} in time"))
            .unwrap_or_else(|| panic!("socket ended before {kind}"))
            .expect("socket read");
        let value = match message {
            Message::Text(text) => serde_json::from_str(text.as_str()).unwrap_or(Value::Null),
            Message::Close(frame) => json!({
                "type": "close",
                "reason": frame.map(|f| f.reason.to_string()),
            }),
            _ => continue,
        };
        if value["type"] == kind {
            return value;
        }
    }
}

async fn wait_linked(http: &reqwest::Client, node: &Node) {
    let what = format!("{} linked", node.name);
    cluster_support::wait_for(&what, Duration::from_secs(30), || async {
        let cluster: Value = http
            .get(format!("http://{}/api/cluster", node.http))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("cluster request")
            .json()
            .await
            .expect("cluster json");
        cluster["links"].as_array().is_some_and(|l| !l.is_empty())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_node_id_and_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gossip = [free_udp_port(), free_udp_port()];
    let seeds = format!("{},{}", gossip[0], gossip[1]);
    let n1 = start("n1", gossip[0], &seeds, dir.path());
    let n2 = start("n2", gossip[1], &seeds, dir.path());
    let http = reqwest::Client::new();
    wait_linked(&http, &n1).await;
    wait_linked(&http, &n2).await;

    let auth = Authenticator::new(JWT_SECRET, API_KEY);
    let user = |id: &str, roles: &[Role]| User {
        id: id.into(),
        name: format!("user-{id}"),
        roles: roles.to_vec(),
        creator_id: None,
    };
    let token = auth.mint(&user("7", &[]), Duration::from_secs(3600));
    let admin = auth.mint(&user("1", &[Role::Admin]), Duration::from_secs(3600));

    // A socket with a good token on n1, one with a bad token, a publish through n2.
    let mut listener = socket(&n1, &format!("channel=news&token={token}")).await;
    next_of(&mut listener, "connected").await;
    let mut refused = socket(&n1, &format!("channel=news&token={BAD_TOKEN}")).await;
    next_of(&mut refused, "close").await;
    let published = http
        .post(format!("http://{}/api/publish", n2.http))
        .bearer_auth(API_KEY)
        .json(&json!({"channel": "news", "data": {"type": "note", "text": "hello"}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 200);
    let delivered = next_of(&mut listener, "note").await;
    assert_eq!(delivered["text"], "hello");
    listener
        .send(Message::Text(json!({"type": "ping"}).to_string().into()))
        .await
        .expect("send");
    // A wrong API key, a token in a header, a token in a cookie.
    let wrong = http
        .post(format!("http://{}/api/publish", n1.http))
        .bearer_auth(WRONG_API_KEY)
        .json(&json!({"channel": "news", "data": {"type": "note"}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(wrong.status(), 401);
    let broadcast = http
        .post(format!("http://{}/api/creator/broadcast", n1.http))
        .bearer_auth(&admin)
        .json(&json!({"message": "maintenance", "type": "info"}))
        .send()
        .await
        .expect("broadcast");
    assert_eq!(broadcast.status(), 200);
    let active = http
        .get(format!("http://{}/api/creator/broadcast/active", n2.http))
        .header("cookie", format!("herald_token={token}"))
        .send()
        .await
        .expect("active broadcast");
    assert_eq!(active.status(), 200);
    drop(listener);
    drop(refused);

    let snapshot_token = herald::backplane::peer_snapshot::snapshot_token(CLUSTER_SECRET, "herald");
    let forbidden = [
        JWT_SECRET,
        API_KEY,
        CLUSTER_SECRET,
        WRONG_API_KEY,
        BAD_TOKEN,
        "bad-token-d00d",
        token.as_str(),
        admin.as_str(),
        snapshot_token.as_str(),
    ];
    let mut total = 0;
    for (name, lines) in [stop(n1), stop(n2)] {
        assert!(lines.len() > 10, "{name} logged only {lines:?}");
        total += lines.len();
        for line in &lines {
            let entry: Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("{name}: not a JSON line ({error}): {line}"));
            assert_eq!(entry["node_id"], name, "{line}");
            assert!(entry["timestamp"].is_string(), "{line}");
            assert!(entry["level"].is_string(), "{line}");
            // A few dependencies' trace events carry fields but no message.
            let fields = entry["fields"].as_object().expect("fields");
            assert!(!fields.is_empty(), "{line}");
            if entry["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("herald"))
            {
                assert!(fields["message"].is_string(), "{line}");
            }
            for secret in forbidden {
                assert!(!line.contains(secret), "{name} logged a secret: {line}");
            }
        }
        let messages: Vec<&str> = lines
            .iter()
            .filter_map(|line| line.split("\"message\":\"").nth(1))
            .collect();
        for expected in ["node started", "mesh link up", "shutting down", "stopped"] {
            assert!(
                messages.iter().any(|m| m.starts_with(expected)),
                "{name} did not log {expected:?}"
            );
        }
    }
    eprintln!("checked {total} log lines");
}
