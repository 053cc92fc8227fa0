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
    eprintln!(
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
