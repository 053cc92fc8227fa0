//! The Redis URL, which may carry a password (`redis://user:password@host:6379/0`).
//!
//! [`RedisUrl`] keeps the URL as given for the one place that needs it (building the Redis
//! client) and shows it everywhere else with the password replaced by `***`: its `Debug` and
//! `Display`, so a logged or printed [`Config`](super::Config) never carries the password, and
//! [`RedisUrl::redact`] for error texts that might quote it.

use std::fmt;

/// What replaces the password wherever the URL is shown.
const HIDDEN: &str = "***";

/// A Redis URL whose password never leaves through `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(from = "String")]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password: only for building the Redis client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for `rediss://` (TLS).
    pub fn uses_tls(&self) -> bool {
        self.scheme().eq_ignore_ascii_case("rediss")
    }

    fn scheme(&self) -> &str {
        self.0
            .split_once("://")
            .map(|(scheme, _)| scheme)
            .unwrap_or("")
    }

    /// The password as written in the URL (percent-encoded, if it was), when there is one.
    fn password(&self) -> Option<&str> {
        let (_, rest) = self.0.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        let (userinfo, _) = authority.rsplit_once('@')?;
        let password = match userinfo.split_once(':') {
            Some((_, password)) => password,
            // `redis://password@host`: a lone user part is taken as the password by some clients.
            None => userinfo,
        };
        (!password.is_empty()).then_some(password)
    }

    /// `host:port/db` without scheme or credentials: what health details show.
    pub fn server(&self) -> String {
        let rest = self
            .0
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(&self.0);
        let rest = rest.rsplit_once('@').map(|(_, host)| host).unwrap_or(rest);
        rest.to_string()
    }

    /// `text` with every occurrence of the password (as written, and percent-decoded)
    /// replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let Some(password) = self.password() else {
            return text.to_string();
        };
        let mut redacted = text.replace(password, HIDDEN);
        let decoded = percent_decode(password);
        if !decoded.is_empty() && decoded != password {
            redacted = redacted.replace(&decoded, HIDDEN);
        }
        redacted
    }
}

impl From<String> for RedisUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for RedisUrl {
    fn from(url: &str) -> Self {
        Self(url.to_string())
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = std::convert::Infallible;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(url))
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.password() {
            // Only the userinfo part changes: a password equal to some other piece of the URL
            // leaves that piece alone.
            Some(_) => {
                let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let (authority, path) = rest.split_at(end);
                let (userinfo, host) = authority.rsplit_once('@').unwrap_or(("", authority));
                let userinfo = match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:{HIDDEN}"),
                    None => HIDDEN.to_string(),
                };
                write!(f, "{scheme}://{userinfo}@{host}{path}")
            }
            None => f.write_str(&self.0),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[index], hex(index + 1), hex(index + 2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                index += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_hidden_in_display_and_debug() {
        let url = RedisUrl::new("rediss://herald:s3cr%40t-pw@10.0.0.1:6380/2");
        assert_eq!(url.to_string(), "rediss://herald:***@10.0.0.1:6380/2");
        let debug = format!("{url:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
        assert_eq!(url.server(), "10.0.0.1:6380/2");
        assert!(url.uses_tls());
        assert_eq!(
            url.redact("auth with s3cr@t-pw failed (s3cr%40t-pw)"),
            "auth with *** failed (***)"
        );
    }

    #[test]
    fn a_printed_config_does_not_carry_the_password() {
        let mut config = crate::config::Config::for_tests("/tmp/unused");
        config.redis_url = Some(RedisUrl::new("redis://herald:hunter2-secret@redis:6379"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(debug.contains("redis://herald:***@redis:6379"), "{debug}");
        let args = crate::config::ServeArgs {
            redis_url: config.redis_url.clone(),
            ..Default::default()
        };
        assert!(!format!("{args:?}").contains("hunter2-secret"));
    }

    #[test]
    fn urls_without_a_password_are_shown_as_they_are() {
        let url = RedisUrl::new("redis://127.0.0.1:6379");
        assert_eq!(url.to_string(), "redis://127.0.0.1:6379");
        assert_eq!(url.redact("anything"), "anything");
        assert!(!url.uses_tls());
        let lone = RedisUrl::new("redis://onlypassword@host:1");
        assert_eq!(lone.to_string(), "redis://***@host:1");
        let user_only = RedisUrl::new("redis://user:@host:1");
        assert_eq!(user_only.to_string(), "redis://user:@host:1");
    }
}
