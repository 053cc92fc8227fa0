//! What the Redis backplane keeps in Redis: key names, stream entries and registry records.
//!
//! Every key starts with `herald:{cluster}`, braces included: a Redis Cluster hash
//! tag, so that all of a cluster's keys live in one slot and the multi-stream `XREAD` works
//! there too.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `herald:{cluster}:log:{origin}` | stream, `MAXLEN ~` [`LOG_STREAM_CAP`] | one entry per event of `origin`: `seq`, `ev` |
//! | `herald:{cluster}:nodes` | hash | node id -> [`NodeRecord`] (JSON), rewritten every tick |
//! | `herald:{cluster}:epoch` | string | a random value set once (`SET NX`); a new value means Redis lost its data |
//! | `herald:{cluster}:shipped` | hash | origin -> the highest seq its node has shipped into its stream |
//! | `herald:{cluster}:probe:{node}` | stream, `MAXLEN ~ 16` | the node's reader probes |
//! | `herald:{cluster}:ephemeral` | stream, `MAXLEN ~` [`EPHEMERAL_STREAM_CAP`] | typing indicators |
//! | `herald:{cluster}:presence:{node}` | string, `PX` (refreshed every tick) | the node's whole presence snapshot (`super::presence`), numbered by its record's `presence_version` |
//!
//! An entry's `ev` field is the mesh codec's versioned [`Frame::Events`] (or
//! [`Frame::Ephemeral`]) holding exactly one event, so that the wire format of an event lives in
//! one module, [`crate::mesh::frame`].

use serde::{Deserialize, Serialize};

use crate::event::{Event, NodeId, SharedEvent, VersionVector};
use crate::mesh::{Frame, frame};

/// Entries kept per origin stream (approximately: `MAXLEN ~`). Redis memory for the logs is
/// bounded by this times the number of origins times the largest event.
pub const LOG_STREAM_CAP: u64 = 100_000;
/// Entries kept in a node's probe stream.
pub const PROBE_STREAM_CAP: u64 = 16;
/// Entries kept in the shared ephemeral stream.
pub const EPHEMERAL_STREAM_CAP: u64 = 1_000;

/// Field names of stream entries.
pub const FIELD_SEQ: &str = "seq";
pub const FIELD_EVENT: &str = "ev";
pub const FIELD_NONCE: &str = "nonce";
pub const FIELD_AT_MS: &str = "at";

/// The key names of one cluster.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(cluster_id: &str) -> Self {
        Self {
            prefix: format!("herald:{{{cluster_id}}}"),
        }
    }

    pub fn log(&self, origin: &NodeId) -> String {
        format!("{}:log:{origin}", self.prefix)
    }

    /// The origin whose log `key` is, if it is a log stream key.
    pub fn origin_of(&self, key: &str) -> Option<NodeId> {
        let origin = key.strip_prefix(&self.prefix)?.strip_prefix(":log:")?;
        NodeId::new(origin).ok()
    }

    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    pub fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    pub fn shipped(&self) -> String {
        format!("{}:shipped", self.prefix)
    }

    pub fn probe(&self, node: &NodeId) -> String {
        format!("{}:probe:{node}", self.prefix)
    }

    pub fn ephemeral(&self) -> String {
        format!("{}:ephemeral", self.prefix)
    }

    pub fn presence(&self, node: &NodeId) -> String {
        format!("{}:presence:{node}", self.prefix)
    }
}

/// What each node writes into the registry hash every tick.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's store origin (node id plus database creation time).
    #[serde(default)]
    pub origin: Option<NodeId>,
    /// Its log position: the highest contiguous seq it holds per origin.
    pub vector: VersionVector,
    pub connections: u64,
    pub users: u64,
    pub broadcast_users: u64,
    pub http: Option<String>,
    /// True when `http` serves HTTPS (native TLS): peers fetch snapshots from it over
    /// `https://`, verifying its certificate. Absent in older nodes' records: plain HTTP.
    #[serde(default)]
    pub https: bool,
    /// Wall-clock milliseconds when written: used only for records seen for the first time.
    pub at_ms: u64,
    /// Grows with every write: a record whose beat stops changing belongs to a dead node.
    pub beat: u64,
    /// Set when the node shut down gracefully.
    #[serde(default)]
    pub left: bool,
    /// The highest seq of each origin it pruned: below that it cannot repair anyone.
    #[serde(default)]
    pub pruned: VersionVector,
    /// The version of the presence snapshot the node last wrote to its presence key (written
    /// before this record); 0: none (a node without presence through Redis).
    #[serde(default)]
    pub presence_version: u64,
}

impl NodeRecord {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// Encodes one committed or ephemeral event as a stream entry's `ev` field.
pub fn encode_event(event: &Event) -> Result<Vec<u8>, frame::FrameError> {
    let events = vec![std::sync::Arc::new(event.clone())];
    let frame = if event.ephemeral {
        Frame::Ephemeral { events }
    } else {
        Frame::Events { events }
    };
    frame::encode(&frame)
}

/// Decodes an `ev` field; `None` when it is not a single well-formed event.
pub fn decode_event(bytes: &[u8]) -> Option<SharedEvent> {
    match frame::decode(bytes).ok()? {
        Frame::Events { mut events } | Frame::Ephemeral { mut events } if events.len() == 1 => {
            events.pop()
        }
        _ => None,
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChannelName, Hlc};

    fn event(seq: u64, ephemeral: bool) -> Event {
        Event {
            origin: NodeId::new("n1.abc").unwrap(),
            seq,
            id: uuid::Uuid::new_v4(),
            hlc: Hlc::default(),
            channel: ChannelName::new("room").unwrap(),
            kind: "item".into(),
            payload: r#"{"type":"item"}"#.into(),
            users: None,
            ephemeral,
            idempotency_key: None,
        }
    }

    #[test]
    fn events_round_trip_through_entries() {
        for ephemeral in [false, true] {
            let original = event(7, ephemeral);
            let bytes = encode_event(&original).unwrap();
            assert_eq!(decode_event(&bytes).as_deref(), Some(&original));
        }
        assert_eq!(decode_event(b"not a frame"), None);
    }

    #[test]
    fn log_keys_name_their_origin() {
        let keys = Keys::new("c1");
        let origin = NodeId::new("n1.123").unwrap();
        assert_eq!(keys.log(&origin), "herald:{c1}:log:n1.123");
        assert_eq!(keys.origin_of(&keys.log(&origin)), Some(origin));
        assert_eq!(keys.origin_of("herald:{c1}:nodes"), None);
        assert_eq!(keys.origin_of("herald:{c2}:log:n1"), None);
    }

    #[test]
    fn records_round_trip_as_json() {
        let mut vector = VersionVector::new();
        vector.advance(&NodeId::new("n1.1").unwrap(), 42);
        let record = NodeRecord {
            origin: Some(NodeId::new("n1.1").unwrap()),
            vector,
            connections: 3,
            beat: 9,
            http: Some("127.0.0.1:8443".into()),
            https: true,
            ..NodeRecord::default()
        };
        assert!(record.to_json().contains(r#""https":true"#));
        assert_eq!(NodeRecord::from_json(&record.to_json()), Some(record));
        assert_eq!(NodeRecord::from_json("{"), None);
    }

    #[test]
    fn records_of_older_nodes_have_presence_version_zero() {
        let old = r#"{"vector":{},"connections":0,"users":0,"broadcast_users":0,"http":null,"at_ms":1,"beat":2}"#;
        let record = NodeRecord::from_json(old).expect("an older record still reads");
        assert_eq!(record.presence_version, 0);
        assert!(!record.https, "an older node serves plain HTTP");
        assert_eq!(record.beat, 2);
        let keys = Keys::new("c1");
        assert_eq!(
            keys.presence(&NodeId::new("n2").unwrap()),
            "herald:{c1}:presence:n2"
        );
    }
}
