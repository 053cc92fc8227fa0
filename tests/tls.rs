//! Native TLS for clients (issue 15, item 1): `--tls-cert`/`--tls-key` serve HTTPS and
//! wss:// on the HTTP address; SIGHUP reloads the certificate from disk, new handshakes get
//! the new one and open sockets stay open; bad files are refused at start with the reason.
//!
//! The test client accepts any certificate and records the one the server presented, which
//! is compared with the file's.

mod cluster_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

use cluster_support::{API_KEY, JWT_SECRET};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A self-signed certificate for `localhost` and 127.0.0.1: (certificate PEM, key PEM, DER).
fn certificate() -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params");
    let certificate = params.self_signed(&key).expect("certificate");
    (
        certificate.pem(),
        key.serialize_pem(),
        certificate.der().to_vec(),
    )
}

/// Accepts any server certificate and remembers it.
#[derive(Debug, Default)]
struct Recording {
    seen: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS connection to `addr` and the certificate the server presented.
async fn tls_connect(addr: SocketAddr) -> (TlsStream<TcpStream>, Vec<u8>) {
    let recording = Arc::new(Recording::default());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(recording.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let stream = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let seen = recording
        .seen
        .lock()
        .unwrap()
        .clone()
        .expect("a certificate");
    (stream, seen)
}

/// One HTTPS request (HTTP/1.1, connection close); answers the status and JSON body.
async fn https(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (mut stream, _) = tls_connect(addr).await;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {API_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let json = text
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|body| {
            // A chunked body: the JSON object is between the first `{` and the last `}`.
            let start = body.find('{')?;
            let end = body.rfind('}')?;
            serde_json::from_str(&body[start..=end]).ok()
        })
        .unwrap_or(Value::Null);
    (status, json)
}

type Wss = tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>;

/// A wss:// socket on `channel`, after its `connected`; and the certificate presented.
async fn wss(addr: SocketAddr, channel: &str) -> (Wss, Vec<u8>) {
    let (stream, seen) = tls_connect(addr).await;
    let auth = herald::auth::Authenticator::new(JWT_SECRET, API_KEY);
    let user = herald::auth::User {
        id: "reader".into(),
        name: "Reader".into(),
        roles: Vec::new(),
        creator_id: None,
    };
    let token = auth.mint(&user, Duration::from_secs(3600));
    let url = format!("wss://localhost/ws?channel={channel}&token={token}");
    let (mut socket, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket over TLS");
    let connected = next_json(&mut socket).await;
    assert_eq!(connected["type"], "connected", "{connected}");
    (socket, seen)
}

async fn next_json(socket: &mut Wss) -> Value {
    loop {
        let message = tokio::time::timeout(TIMEOUT, socket.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("no socket error");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("json");
        }
    }
}

struct Node {
    child: Child,
    http: SocketAddr,
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `herald serve` with the TLS files; waits for its ready line.
fn start(cert_pem: &str, key_pem: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--backplane", "local", "--http", "127.0.0.1:0"])
        .args(["--store-sync", "normal"])
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("HERALD_LOG", "warn")
        .env_remove("HERALD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn herald");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.contains("scheme=https"), "{line}");
    let http = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("http="))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
    Node {
        child,
        http,
        _dir: dir,
        cert,
        key,
    }
}

#[tokio::test]
async fn https_publish_and_wss_delivery_with_the_configured_certificate() {
    let (cert_pem, key_pem, der) = certificate();
    let node = start(&cert_pem, &key_pem);
    let (mut socket, seen) = wss(node.http, "news").await;
    assert_eq!(
        seen, der,
        "the socket's handshake presented the configured certificate"
    );
    let (status, answer) = https(
        node.http,
        "POST",
        "/api/publish",
        Some(json!({"channel": "news", "data": {"type": "hello", "n": 1}})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let event = next_json(&mut socket).await;
    assert_eq!(event["type"], "hello");
    assert_eq!(event["n"], 1);
    // Plain HTTP on the same port is not served.
    let mut plain = TcpStream::connect(node.http).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(TIMEOUT, plain.read(&mut buffer)).await;
    assert!(
        !matches!(read, Ok(Ok(n)) if buffer[..n].starts_with(b"HTTP/1.1 200")),
        "plain HTTP must not be answered on a TLS port"
    );
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_open_sockets_stay_open() {
    let (first_pem, first_key, first_der) = certificate();
    let node = start(&first_pem, &first_key);
    let (mut socket, seen) = wss(node.http, "news").await;
    assert_eq!(seen, first_der);

    let (second_pem, second_key, second_der) = certificate();
    std::fs::write(&node.cert, &second_pem).unwrap();
    std::fs::write(&node.key, &second_key).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // New handshakes get the new certificate once the reload happened.
    cluster_support::wait_for("the new certificate served", TIMEOUT, || async {
        tls_connect(node.http).await.1 == second_der
    })
    .await;
    // The socket opened before the reload still works.
    let (status, _) = https(
        node.http,
        "POST",
        "/api/publish",
        Some(json!({"channel": "news", "data": {"type": "after_reload"}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(next_json(&mut socket).await["type"], "after_reload");

    // A reload from a broken file keeps the certificate that works.
    std::fs::write(&node.key, "not a key").unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    cluster_support::holds_for(
        Duration::from_millis(500),
        "the certificate stays",
        || async { tls_connect(node.http).await.1 == second_der },
    )
    .await;
}

#[test]
fn bad_tls_files_are_refused_at_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "nothing").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--backplane", "local", "--http", "127.0.0.1:0"])
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(dir.path().join("missing.pem"))
        .env_remove("HERALD_CONFIG")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cert.pem") || stderr.contains("missing.pem"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--backplane", "local", "--http", "127.0.0.1:0"])
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .env_remove("HERALD_CONFIG")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tls_key"), "{stderr}");
}
