//! Redis connections: the reconnect policy and timeouts, closing, and the retry back-off.

use std::time::Duration;

use fred::prelude::{
    Client, ClientLike, Config as FredConfig, ConnectionConfig, PerformanceConfig, ReconnectPolicy,
    TcpConfig,
};
use fred::types::ConnectHandle;
use tokio::sync::watch;

/// How long closing waits for Redis to answer.
pub(super) const QUIT_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs `work` unless `stop` fires first (a command waits up to its timeout while Redis is
/// away; shutting down should not).
pub(super) async fn unless_stopped<F: std::future::Future>(
    stop: &mut watch::Receiver<bool>,
    work: F,
) -> Option<F::Output> {
    tokio::select! {
        output = work => Some(output),
        _ = stop.wait_for(|stop| *stop) => None,
    }
}

/// Closes a client: `QUIT` when Redis answers, then stop its connection task, which would
/// otherwise keep reconnecting forever.
pub(super) async fn disconnect((client, connection): (Client, ConnectHandle)) {
    let _ = tokio::time::timeout(QUIT_TIMEOUT, client.quit()).await;
    connection.abort();
}

/// A client with an explicit reconnect policy (fred's default never reconnects): exponential
/// back-off from 100 ms to 500 ms, forever; connection, command and unresponsiveness timeouts.
pub(super) fn new_client(config: &FredConfig) -> Client {
    let connection = ConnectionConfig {
        connection_timeout: Duration::from_secs(2),
        internal_command_timeout: Duration::from_secs(2),
        max_command_attempts: 3,
        // Each task has at most one pipeline in flight; this only guards against a bug.
        max_command_buffer_len: 64 * 1024,
        unresponsive: fred::types::config::UnresponsiveConfig {
            max_timeout: Some(Duration::from_secs(5)),
            interval: Duration::from_secs(1),
        },
        tcp: TcpConfig {
            nodelay: Some(true),
            ..TcpConfig::default()
        },
        ..ConnectionConfig::default()
    };
    let performance = PerformanceConfig {
        default_command_timeout: Duration::from_secs(5),
        ..PerformanceConfig::default()
    };
    let policy = ReconnectPolicy::new_exponential(0, 100, 500, 2);
    Client::new(
        config.clone(),
        Some(performance),
        Some(connection),
        Some(policy),
    )
}

/// `redis://user:secret@host:6379/0` -> `host:6379/0`.
pub(super) fn display_server(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, host)| host).unwrap_or(rest);
    rest.to_string()
}

/// Doubling back-off for retries: 25 ms up to 250 ms. Short, because a retry is what notices
/// that Redis is back (a command waits for the reconnection anyway, up to its timeout).
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(25);
    const MAX: Duration = Duration::from_millis(250);

    pub(super) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    pub(super) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// Waits for the next delay; false when `stop` fired meanwhile.
    pub(super) async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = stop.wait_for(|stop| *stop) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_health_detail() {
        assert_eq!(
            display_server("redis://user:secret@10.0.0.1:6379/2"),
            "10.0.0.1:6379/2"
        );
        assert_eq!(display_server("redis://127.0.0.1:6380"), "127.0.0.1:6380");
    }
}
