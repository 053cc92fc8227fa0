//! `[limits]` (and `--heartbeat`, `--max-connections*`, `--client-messages-*`,
//! `--http-request-timeout`, `--max-request-body-bytes`, `--max-batch`) into [`Limits`]: the
//! bounds and timings of client connections and HTTP requests.

use std::time::Duration;

use super::ConfigError;
use super::file::LimitsSection;
use super::resolve::ServeArgs;

/// Bounds and timings of client connections and HTTP requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Messages queued per connection before it is closed as slow (1013).
    pub client_queue: usize,
    /// Largest WebSocket message or frame a client may send.
    pub max_client_message_bytes: usize,
    /// Largest `data` object accepted by the publish API.
    pub max_payload_bytes: usize,
    /// Silence from a client after which the server sends a heartbeat (and a protocol ping);
    /// a client silent for two of these is closed.
    pub heartbeat: Duration,
    /// Events per page when replaying history to a resuming client.
    pub replay_page: usize,
    /// Most WebSocket connections this node holds (a semaphore; the next gets 1013).
    pub max_connections: usize,
    /// Most WebSocket connections of one user on this node (0: no limit; the next gets 1008).
    pub max_connections_per_user: usize,
    /// Most WebSocket connections from one IP address on this node (0: no limit, the default,
    /// since users behind a proxy share one address).
    pub max_connections_per_ip: usize,
    /// Messages per second a socket may send on average (0: no limit).
    pub client_messages_per_s: u32,
    /// Messages a socket may send at once before its rate applies.
    pub client_messages_burst: u32,
    /// Longest an HTTP request may take to be answered (408 past it); a WebSocket is only
    /// bound by it until its upgrade.
    pub http_request_timeout: Duration,
    /// Largest HTTP request body (413 past it).
    pub max_request_body_bytes: usize,
    /// Most events of one `POST /api/batch` (and channels of one publish), 400 past it.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            client_queue: 1024,
            max_client_message_bytes: 64 * 1024,
            max_payload_bytes: 64 * 1024,
            heartbeat: Duration::from_secs(30),
            replay_page: 1000,
            max_connections: 18_000,
            max_connections_per_user: 100,
            max_connections_per_ip: 0,
            client_messages_per_s: 50,
            client_messages_burst: 100,
            http_request_timeout: Duration::from_secs(30),
            max_request_body_bytes: 1024 * 1024,
            max_batch: 1_000,
        }
    }
}

pub(super) fn resolve_limits(
    section: &LimitsSection,
    args: &ServeArgs,
) -> Result<Limits, ConfigError> {
    let defaults = Limits::default();
    let heartbeat = positive_duration(
        "heartbeat",
        args.heartbeat.as_deref().or(section.heartbeat.as_deref()),
        defaults.heartbeat,
    )?;
    let http_request_timeout = positive_duration(
        "limits.http_request_timeout",
        args.http_request_timeout
            .as_deref()
            .or(section.http_request_timeout.as_deref()),
        defaults.http_request_timeout,
    )?;
    let positive = |key: &'static str, value: Option<usize>, default: usize| match value {
        Some(0) => Err(ConfigError::invalid(key, "must be positive")),
        Some(value) => Ok(value),
        None => Ok(default),
    };
    let client_messages_per_s = args
        .client_messages_per_s
        .or(section.client_messages_per_s)
        .unwrap_or(defaults.client_messages_per_s);
    let client_messages_burst = match args.client_messages_burst.or(section.client_messages_burst) {
        Some(0) if client_messages_per_s > 0 => {
            return Err(ConfigError::invalid(
                "limits.client_messages_burst",
                "must be positive",
            ));
        }
        Some(burst) => burst,
        None => client_messages_per_s.saturating_mul(2),
    };
    Ok(Limits {
        client_queue: positive(
            "limits.client_queue",
            section.client_queue,
            defaults.client_queue,
        )?,
        max_client_message_bytes: positive(
            "limits.max_client_message_bytes",
            section.max_client_message_bytes,
            defaults.max_client_message_bytes,
        )?,
        max_payload_bytes: positive(
            "limits.max_payload_bytes",
            section.max_payload_bytes,
            defaults.max_payload_bytes,
        )?,
        heartbeat,
        replay_page: positive(
            "limits.replay_page",
            section.replay_page,
            defaults.replay_page,
        )?,
        max_connections: positive(
            "limits.max_connections",
            args.max_connections.or(section.max_connections),
            defaults.max_connections,
        )?,
        max_connections_per_user: args
            .max_connections_per_user
            .or(section.max_connections_per_user)
            .unwrap_or(defaults.max_connections_per_user),
        max_connections_per_ip: args
            .max_connections_per_ip
            .or(section.max_connections_per_ip)
            .unwrap_or(defaults.max_connections_per_ip),
        client_messages_per_s,
        client_messages_burst,
        http_request_timeout,
        max_request_body_bytes: positive(
            "limits.max_request_body_bytes",
            args.max_request_body_bytes
                .or(section.max_request_body_bytes),
            defaults.max_request_body_bytes,
        )?,
        max_batch: positive(
            "limits.max_batch",
            args.max_batch.or(section.max_batch),
            defaults.max_batch,
        )?,
    })
}

fn positive_duration(
    key: &'static str,
    text: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let duration = match text {
        Some(text) => humantime::parse_duration(text.trim())
            .map_err(|e| ConfigError::invalid(key, format!("{text:?}: {e}")))?,
        None => default,
    };
    if duration.is_zero() {
        return Err(ConfigError::invalid(key, "must be positive"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;

    fn limits(toml: &str, args: &ServeArgs) -> Result<Limits, String> {
        let file = FileConfig::parse(toml).map_err(|e| e.to_string())?;
        resolve_limits(&file.limits, args).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_documented_values() {
        let limits = limits("", &ServeArgs::default()).unwrap();
        assert_eq!(limits, Limits::default());
        assert_eq!(limits.max_connections_per_user, 100);
        assert_eq!(limits.max_connections_per_ip, 0);
        assert_eq!(limits.client_messages_per_s, 50);
        assert_eq!(limits.client_messages_burst, 100);
        assert_eq!(limits.http_request_timeout, Duration::from_secs(30));
        assert_eq!(limits.max_request_body_bytes, 1024 * 1024);
        assert_eq!(limits.max_batch, 1_000);
    }

    #[test]
    fn max_batch_comes_from_the_file_or_the_flag() {
        let toml = "[limits]\nmax_batch = 50\n";
        assert_eq!(limits(toml, &ServeArgs::default()).unwrap().max_batch, 50);
        let args = ServeArgs {
            max_batch: Some(7),
            ..ServeArgs::default()
        };
        assert_eq!(limits(toml, &args).unwrap().max_batch, 7);
        let error = limits("[limits]\nmax_batch = 0\n", &ServeArgs::default()).unwrap_err();
        assert!(error.starts_with("invalid limits.max_batch"), "{error}");
    }

    #[test]
    fn the_file_sets_limits_and_flags_win() {
        let toml = "[limits]\nmax_connections = 10\nmax_connections_per_user = 3\n\
                    max_connections_per_ip = 5\nclient_messages_per_s = 7\n\
                    http_request_timeout = \"2s\"\nmax_request_body_bytes = 4096\n";
        let from_file = limits(toml, &ServeArgs::default()).unwrap();
        assert_eq!(from_file.max_connections, 10);
        assert_eq!(from_file.max_connections_per_user, 3);
        assert_eq!(from_file.max_connections_per_ip, 5);
        assert_eq!(from_file.client_messages_per_s, 7);
        assert_eq!(from_file.client_messages_burst, 14, "twice the rate");
        assert_eq!(from_file.http_request_timeout, Duration::from_secs(2));
        assert_eq!(from_file.max_request_body_bytes, 4096);

        let args = ServeArgs {
            max_connections_per_user: Some(0),
            client_messages_per_s: Some(20),
            client_messages_burst: Some(25),
            http_request_timeout: Some("500ms".into()),
            ..ServeArgs::default()
        };
        let flagged = limits(toml, &args).unwrap();
        assert_eq!(flagged.max_connections_per_user, 0, "0 turns the limit off");
        assert_eq!(flagged.client_messages_per_s, 20);
        assert_eq!(flagged.client_messages_burst, 25);
        assert_eq!(flagged.http_request_timeout, Duration::from_millis(500));
    }

    #[test]
    fn bad_values_name_the_key() {
        let none = ServeArgs::default();
        let error = limits("[limits]\nmax_connections = 0\n", &none).unwrap_err();
        assert!(
            error.starts_with("invalid limits.max_connections"),
            "{error}"
        );
        let error = limits("[limits]\nclient_messages_burst = 0\n", &none).unwrap_err();
        assert!(
            error.starts_with("invalid limits.client_messages_burst"),
            "{error}"
        );
        let error = limits("[limits]\nhttp_request_timeout = \"0s\"\n", &none).unwrap_err();
        assert!(
            error.starts_with("invalid limits.http_request_timeout"),
            "{error}"
        );
        let error = limits("[limits]\nheartbeat = \"soon\"\n", &none).unwrap_err();
        assert!(error.starts_with("invalid heartbeat"), "{error}");
        let error = limits("[limits]\nmax_connections_per_usr = 1\n", &none).unwrap_err();
        assert!(error.contains("max_connections_per_usr"), "{error}");
    }
}
