//! Safe defaults for a node that others can reach: checked once the configuration is merged.
//!
//! - **Protected mode** (as Redis does it): a node listening on anything but loopback refuses
//!   to start while a built-in development secret is in use, naming the variable to set. On
//!   loopback it starts, with a warning.
//! - **Cluster secret strength**: off loopback, the cluster secret (which keys the mesh's TLS,
//!   and the token peers take snapshots with) must have at least 32 characters, about 128 bits
//!   when random; `herald secret` prints one.
//! - **Advertised addresses**: a clustered node listening on `0.0.0.0` or `[::]` must say which
//!   address peers reach it at (`--advertise-http`, `--advertise-gossip`, `--advertise-mesh`)
//!   rather than gossip one nobody can dial.

use std::net::SocketAddr;

use super::{BackplaneKind, Config, ConfigError};

/// The shortest cluster secret accepted off loopback.
pub const MIN_CLUSTER_SECRET_LEN: usize = 32;

pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    let clustered = config.backplane != BackplaneKind::Local;
    let mesh = config.backplane == BackplaneKind::Mesh;
    let mut listening: Vec<SocketAddr> = vec![config.http];
    if mesh {
        listening.extend([config.gossip, config.mesh]);
    }
    if let Some(exposed) = listening.iter().find(|addr| !addr.ip().is_loopback()) {
        if let Some(variable) = config.uses_dev_secrets().first() {
            return Err(ConfigError::invalid(
                variable,
                format!(
                    "the built-in development value cannot be used while listening on {exposed} \
                     (not loopback): set {variable}"
                ),
            ));
        }
        if clustered && config.cluster_secret.len() < MIN_CLUSTER_SECRET_LEN {
            return Err(ConfigError::invalid(
                "cluster_secret",
                format!(
                    "must have at least {MIN_CLUSTER_SECRET_LEN} characters off loopback \
                     (`herald secret` prints one)"
                ),
            ));
        }
    }
    if clustered {
        let mut wanted = vec![(
            "http",
            config.http,
            config.advertise.http,
            "--advertise-http",
        )];
        if mesh {
            wanted.push((
                "gossip",
                config.gossip,
                config.advertise.gossip,
                "--advertise-gossip",
            ));
            wanted.push((
                "mesh",
                config.mesh,
                config.advertise.mesh,
                "--advertise-mesh",
            ));
        }
        for (key, listen, advertised, flag) in wanted {
            if listen.ip().is_unspecified() && advertised.is_none() {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "listening on {listen}, an address no peer can dial: set {flag} to the \
                         address peers reach this node at"
                    ),
                ));
            }
            if advertised.is_some_and(|a| a.ip().is_unspecified() || a.port() == 0) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{flag} must name a host and a port peers can dial"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Advertised, DEV_API_KEY, DEV_CLUSTER_SECRET, DEV_JWT_SECRET};

    fn config(http: &str, backplane: BackplaneKind) -> Config {
        let mut config = Config::for_tests(std::env::temp_dir());
        config.http = http.parse().unwrap();
        config.gossip = "127.0.0.1:7000".parse().unwrap();
        config.mesh = "127.0.0.1:9000".parse().unwrap();
        config.backplane = backplane;
        config.jwt_secret = "a-real-jwt-secret".into();
        config.api_key = "a-real-api-key".into();
        config.cluster_secret = "x".repeat(MIN_CLUSTER_SECRET_LEN);
        config
    }

    fn refusal(config: &Config) -> String {
        check(config).unwrap_err().to_string()
    }

    #[test]
    fn development_secrets_are_refused_off_loopback_only() {
        let mut local = config("127.0.0.1:8000", BackplaneKind::Local);
        local.jwt_secret = DEV_JWT_SECRET.into();
        assert!(check(&local).is_ok(), "loopback starts, with a warning");
        let mut exposed = config("10.0.0.5:8000", BackplaneKind::Local);
        exposed.jwt_secret = DEV_JWT_SECRET.into();
        let error = refusal(&exposed);
        assert!(error.starts_with("invalid HERALD_JWT_SECRET"), "{error}");
        assert!(error.contains("10.0.0.5:8000"), "{error}");
        exposed.jwt_secret = "a-real-jwt-secret".into();
        exposed.api_key = DEV_API_KEY.into();
        assert!(refusal(&exposed).starts_with("invalid HERALD_API_KEY"));
        let mut mesh = config("127.0.0.1:8000", BackplaneKind::Mesh);
        mesh.gossip = "192.0.2.1:7000".parse().unwrap();
        mesh.advertise = Advertised::default();
        mesh.cluster_secret = DEV_CLUSTER_SECRET.into();
        assert!(refusal(&mesh).starts_with("invalid HERALD_CLUSTER_SECRET"));
    }

    #[test]
    fn a_short_cluster_secret_is_refused_off_loopback() {
        let mut mesh = config("192.0.2.1:8000", BackplaneKind::Mesh);
        mesh.cluster_secret = "short-but-not-dev".into();
        let error = refusal(&mesh);
        assert!(error.starts_with("invalid cluster_secret"), "{error}");
        mesh.http = "127.0.0.1:8000".parse().unwrap();
        assert!(check(&mesh).is_ok());
    }

    #[test]
    fn an_unspecified_listen_address_needs_an_advertised_one() {
        let mut mesh = config("0.0.0.0:8000", BackplaneKind::Mesh);
        let error = refusal(&mesh);
        assert!(error.contains("--advertise-http"), "{error}");
        mesh.advertise.http = Some("192.0.2.1:8000".parse().unwrap());
        assert!(check(&mesh).is_ok());
        mesh.mesh = "[::]:9000".parse().unwrap();
        assert!(refusal(&mesh).contains("--advertise-mesh"));
        mesh.advertise.mesh = Some("192.0.2.1:0".parse().unwrap());
        assert!(refusal(&mesh).contains("--advertise-mesh must name"));
        // A single node gossips nothing: 0.0.0.0 needs no advertised address.
        let local = config("0.0.0.0:8000", BackplaneKind::Local);
        assert!(check(&local).is_ok());
    }
}
