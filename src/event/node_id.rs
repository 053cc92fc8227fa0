//! Node identifiers: short, stable names that also appear inside cursors.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A node's stable identity: `[A-Za-z0-9_.-]{1,64}`.
///
/// The restricted alphabet keeps cursors and gossip keys unambiguous (no `:` or `,`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(Arc<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid node id {0:?}: use 1 to 64 of A-Z a-z 0-9 _ . -")]
pub struct NodeIdError(pub String);

impl NodeId {
    pub fn new(id: &str) -> Result<Self, NodeIdError> {
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(Self(Arc::from(id)))
        } else {
            Err(NodeIdError(id.to_string()))
        }
    }

    /// A fresh random id for a node that has none configured.
    pub fn generate() -> Self {
        let simple = uuid::Uuid::new_v4().simple().to_string();
        Self(Arc::from(format!("node-{}", &simple[..12])))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for NodeId {
    type Error = NodeIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<NodeId> for String {
    fn from(value: NodeId) -> Self {
        value.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_simple_names_and_rejects_separators() {
        assert!(NodeId::new("n1").is_ok());
        assert!(NodeId::new("node-a.b_c").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a:b").is_err());
        assert!(NodeId::new("a,b").is_err());
        assert!(NodeId::new(&"x".repeat(65)).is_err());
        assert!(NodeId::new(NodeId::generate().as_str()).is_ok());
    }
}
