//! Redis connections: the client configuration from the URL (credentials, TLS with the
//! system's roots or a private CA), the reconnect policy and timeouts, closing, and the retry
//! back-off.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{
    Client, ClientLike, Config as FredConfig, ConnectionConfig, PerformanceConfig, ReconnectPolicy,
    TcpConfig,
};
use fred::types::ConnectHandle;
use fred::types::config::{TlsConfig, TlsConnector};
use tokio::sync::watch;

use super::RedisBackplaneError;
use crate::config::RedisUrl;

/// The client configuration for `url`: its server, database and credentials, and for
/// `rediss://` a TLS connector (rustls with ring) that trusts the CA certificates in `ca` only,
/// or the system's roots without one. Error texts never carry the password.
pub(super) fn fred_config(
    url: &RedisUrl,
    ca: Option<&Path>,
) -> Result<FredConfig, RedisBackplaneError> {
    let tls = url.uses_tls();
    // The TLS connector is built here rather than by fred from the scheme, so that a private
    // CA replaces the system's roots instead of joining them.
    let plain = match url.expose().split_once("://") {
        Some((_, rest)) if tls => format!("redis://{rest}"),
        _ => url.expose().to_string(),
    };
    let mut config = FredConfig::from_url(&plain)
        .map_err(|error| RedisBackplaneError::Url(url.redact(&error.to_string())))?;
    if tls {
        config.tls = Some(tls_config(ca)?);
    } else if ca.is_some() {
        return Err(RedisBackplaneError::Tls(
            "a CA file was given for a redis:// URL; use rediss://".into(),
        ));
    }
    Ok(config)
}

fn tls_config(ca: Option<&Path>) -> Result<TlsConfig, RedisBackplaneError> {
    let Some(ca) = ca else {
        let connector = TlsConnector::default_rustls()
            .map_err(|error| RedisBackplaneError::Tls(format!("system roots: {error}")))?;
        return Ok(connector.into());
    };
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let unreadable = |error: &dyn std::fmt::Display| {
        RedisBackplaneError::Tls(format!("CA file {}: {error}", ca.display()))
    };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|error| unreadable(&error))?
        .collect::<Result<_, _>>()
        .map_err(|error| unreadable(&error))?;
    if certificates.is_empty() {
        return Err(unreadable(&"no certificate in it"));
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate).map_err(|error| unreadable(&error))?;
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| RedisBackplaneError::Tls(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(client).into())
}

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
        let url = RedisUrl::new("redis://user:secret@10.0.0.1:6379/2");
        assert_eq!(url.server(), "10.0.0.1:6379/2");
        assert_eq!(
            RedisUrl::new("redis://127.0.0.1:6380").server(),
            "127.0.0.1:6380"
        );
    }

    #[test]
    fn credentials_and_tls_come_from_the_url() {
        let config = fred_config(&RedisUrl::new("redis://herald:pw@127.0.0.1:6390/3"), None)
            .expect("config");
        assert_eq!(config.username.as_deref(), Some("herald"));
        assert_eq!(config.password.as_deref(), Some("pw"));
        assert_eq!(config.database, Some(3));
        assert!(config.tls.is_none());
        let missing = std::path::Path::new("/nonexistent/ca.pem");
        let error = fred_config(
            &RedisUrl::new("rediss://herald:pw@127.0.0.1:6390"),
            Some(missing),
        )
        .map(|_| ())
        .expect_err("a missing CA file is an error")
        .to_string();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        assert!(!error.contains("pw@"), "{error}");
    }
}
