//! Channel names: `[A-Za-z0-9_.:-]{1,128}`, with the `herald:` prefix reserved for internal
//! channels that clients can neither publish to nor subscribe to.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Channels whose events only change materialized state (acknowledgements): never delivered.
pub const INTERNAL_PREFIX: &str = "herald:";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChannelName(Arc<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    #[error("invalid channel name {0:?}: use 1 to 128 of A-Z a-z 0-9 _ . : -")]
    Invalid(String),
}

impl ChannelName {
    pub fn new(name: &str) -> Result<Self, ChannelError> {
        let valid = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        if valid {
            Ok(Self(Arc::from(name)))
        } else {
            Err(ChannelError::Invalid(name.to_string()))
        }
    }

    /// A channel name built by herald itself from validated parts.
    pub fn internal(name: &str) -> Self {
        debug_assert!(
            Self::new(name).is_ok(),
            "internal channel name {name:?} is invalid"
        );
        Self(Arc::from(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_internal(&self) -> bool {
        self.0.starts_with(INTERNAL_PREFIX)
    }

    /// The user id of a `user:{id}` channel.
    pub fn personal_owner(&self) -> Option<&str> {
        self.0
            .strip_prefix("user:")
            .or_else(|| self.0.strip_prefix("book_requests:user:"))
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ChannelName {
    type Error = ChannelError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<ChannelName> for String {
    fn from(value: ChannelName) -> Self {
        value.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_names() {
        assert!(ChannelName::new("track:42").is_ok());
        assert!(ChannelName::new("book_requests:user:7").is_ok());
        assert!(ChannelName::new("a.b-c_d").is_ok());
        assert!(ChannelName::new("").is_err());
        assert!(ChannelName::new("has space").is_err());
        assert!(ChannelName::new("slash/no").is_err());
        assert!(ChannelName::new(&"c".repeat(128)).is_ok());
        assert!(ChannelName::new(&"c".repeat(129)).is_err());
    }

    #[test]
    fn knows_personal_channels() {
        let user = ChannelName::new("user:7").unwrap();
        assert_eq!(user.personal_owner(), Some("7"));
        let books = ChannelName::new("book_requests:user:9").unwrap();
        assert_eq!(books.personal_owner(), Some("9"));
        assert_eq!(ChannelName::new("forum").unwrap().personal_owner(), None);
        assert!(ChannelName::new("herald:acks").unwrap().is_internal());
    }
}
