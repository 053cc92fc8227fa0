//! Idempotency keys: what a backend names a publish with so that its retry after a timeout
//! never publishes the event twice.
//!
//! A key is 1 to [`MAX_KEY_BYTES`] bytes of printable ASCII (space to `~`). It is checked
//! wherever it enters: the publish APIs answer 400 for a bad one, and an event from a peer
//! (mesh frame, Redis entry, snapshot) carrying a bad one does not decode. Keys are scoped per
//! channel: `(channel, key)` names at most one event of the cluster once it has replicated
//! (see `crate::store` for what holds before).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(Arc<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdempotencyKeyError {
    #[error("idempotency_key must be 1 to {MAX_KEY_BYTES} printable ASCII characters (space to ~)")]
    Invalid,
}

impl IdempotencyKey {
    pub fn new(key: &str) -> Result<Self, IdempotencyKeyError> {
        let valid = !key.is_empty()
            && key.len() <= MAX_KEY_BYTES
            && key.bytes().all(|b| (b' '..=b'~').contains(&b));
        if valid {
            Ok(Self(Arc::from(key)))
        } else {
            Err(IdempotencyKeyError::Invalid)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = IdempotencyKeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<IdempotencyKey> for String {
    fn from(value: IdempotencyKey) -> Self {
        value.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_keys() {
        assert!(IdempotencyKey::new("order-42/retry").is_ok());
        assert!(IdempotencyKey::new("with space ~").is_ok());
        assert!(IdempotencyKey::new(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(IdempotencyKey::new(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("tab\there").is_err());
        assert!(IdempotencyKey::new("newline\n").is_err());
        assert!(IdempotencyKey::new("é").is_err());
    }

    #[test]
    fn a_bad_key_does_not_deserialize() {
        assert!(serde_json::from_str::<IdempotencyKey>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<IdempotencyKey>("\"\\u0000\"").is_err());
    }
}
