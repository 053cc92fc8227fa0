//! The Redis server of a `--backplane redis` chaos run: a `redis-server` child without
//! persistence, on the testbed's bridge address (so that cuts and loss can reach the nodes'
//! links to it) or on 127.0.0.1, killed when dropped.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio::time::Instant;

const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RedisServer {
    _child: Child,
    pub address: SocketAddr,
}

impl RedisServer {
    /// Starts `redis-server` on `ip` and a free port; answers once it accepts connections.
    pub async fn start(ip: IpAddr) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind((ip, 0))
            .and_then(|listener| listener.local_addr())
            .with_context(|| format!("cannot pick a port on {ip} for redis-server"))?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", &ip.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context(
                "--backplane redis needs redis-server (Debian: apt-get install redis-server)",
            )?;
        let address = SocketAddr::new(ip, port);
        let deadline = Instant::now() + READY_TIMEOUT;
        while tokio::net::TcpStream::connect(address).await.is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not listen on {address} within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            _child: child,
            address,
        })
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.address)
    }
}
