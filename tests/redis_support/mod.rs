//! A throwaway `redis-server` for tests: a free loopback port, no persistence (so every start
//! is an empty Redis), killed with SIGKILL on drop.
//!
//! When `redis-server` is not installed the tests that need it print why they are skipped and
//! return, unless `HERALD_REQUIRE_REDIS=1` (set by `.ci/run`), which makes that a failure.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "redis-server";
const READY_WITHIN: Duration = Duration::from_secs(10);

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// True when `redis-server` can be run. Otherwise prints why `test` is skipped, or panics when
/// `HERALD_REQUIRE_REDIS=1`.
pub fn available(test: &str) -> bool {
    let installed = Command::new(BINARY)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        return true;
    }
    if std::env::var("HERALD_REQUIRE_REDIS").is_ok_and(|v| v == "1") {
        panic!("{test}: redis-server is not installed but HERALD_REQUIRE_REDIS=1");
    }
    // Written to stderr directly, past the test harness's capture, so that it is always seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: redis-server is not installed (apt-get install redis-server); \
         set HERALD_REQUIRE_REDIS=1 to make this a failure"
    );
    false
}

impl RedisServer {
    /// A server on a free port, not started yet; `None` when redis-server is not installed.
    pub fn new(test: &str) -> Option<Self> {
        if !available(test) {
            return None;
        }
        Some(Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
        })
    }

    /// A running server; `None` when redis-server is not installed.
    pub fn started(test: &str) -> Option<Self> {
        let mut server = Self::new(test)?;
        server.start();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts an empty Redis on this server's port and waits until it answers PING.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = Command::new(BINARY)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        while !self.answers_ping() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer within {READY_WITHIN:?}",
                self.port
            );
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    /// SIGKILL: Redis and everything in it are gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends one command (inline form) and answers the raw reply.
    pub fn command(&self, line: &str) -> String {
        let mut stream = TcpStream::connect(self.addr()).expect("connect to redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write");
        let mut buffer = [0u8; 64 * 1024];
        let read = stream.read(&mut buffer).unwrap_or(0);
        String::from_utf8_lossy(&buffer[..read]).into_owned()
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut reply = [0u8; 7];
        stream
            .read(&mut reply)
            .is_ok_and(|n| reply[..n].starts_with(b"+PONG"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

/// A TCP proxy in front of a Redis that can stall, without closing them, the connections that
/// have sent an `XREAD`: a reader that silently stops delivering, as behind a half-open
/// connection. Connections opened after the stall pass.
pub struct StallingProxy {
    addr: SocketAddr,
    /// The id of the last connection accepted.
    last_id: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Reader connections with a smaller id are stalled.
    stall_before: std::sync::Arc<std::sync::atomic::AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    pub async fn start(target: SocketAddr) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let stall_before = Arc::new(AtomicU64::new(0));
        let last_id = Arc::new(AtomicU64::new(0));
        let (stall, ids) = (Arc::clone(&stall_before), Arc::clone(&last_id));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let id = ids.fetch_add(1, Ordering::SeqCst) + 1;
                let reader = Arc::new(AtomicBool::new(false));
                let stalled = {
                    let (stall, reader) = (Arc::clone(&stall), Arc::clone(&reader));
                    move || reader.load(Ordering::SeqCst) && id < stall.load(Ordering::SeqCst)
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let upstream_stalled = stalled.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        let n = match client_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if buffer[..n]
                            .windows(5)
                            .any(|w| w.eq_ignore_ascii_case(b"XREAD"))
                        {
                            reader.store(true, Ordering::SeqCst);
                        }
                        if upstream_stalled() {
                            std::future::pending::<()>().await;
                        }
                        if server_write.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        let n = match server_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if stalled() {
                            std::future::pending::<()>().await;
                        }
                        if client_write.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            last_id,
            stall_before,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// From now on nothing more passes on the reader connections open now.
    pub fn stall_current_readers(&self) {
        use std::sync::atomic::Ordering;
        let last = self.last_id.load(Ordering::SeqCst);
        self.stall_before.store(last + 1, Ordering::SeqCst);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
