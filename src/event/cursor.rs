//! Client cursors: the version vector of a subscription, as an opaque URL-safe string.
//!
//! Format: base64url (no padding) of `h1|origin:seq,origin:seq`. The `h1` tag versions the
//! format; node ids cannot contain `:` `,` or `|`, so the text form is unambiguous.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{NodeId, VersionVector};

const TAG: &str = "h1|";
/// Cursors longer than this are refused before decoding (about 100 origins).
const MAX_CURSOR_LEN: usize = 8 * 1024;

/// Encodes and decodes cursors; a namespace, never constructed.
pub enum Cursor {}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid cursor: {0}")]
pub struct CursorError(&'static str);

impl Cursor {
    pub fn encode(vector: &VersionVector) -> String {
        let mut text = String::with_capacity(TAG.len() + 16 * 4);
        text.push_str(TAG);
        for (index, (origin, seq)) in vector.iter().enumerate() {
            if index > 0 {
                text.push(',');
            }
            text.push_str(origin.as_str());
            text.push(':');
            text.push_str(&seq.to_string());
        }
        URL_SAFE_NO_PAD.encode(text)
    }

    pub fn decode(cursor: &str) -> Result<VersionVector, CursorError> {
        if cursor.len() > MAX_CURSOR_LEN {
            return Err(CursorError("too long"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor.trim())
            .map_err(|_| CursorError("not base64url"))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| CursorError("not utf-8"))?;
        let body = text
            .strip_prefix(TAG)
            .ok_or(CursorError("unknown version"))?;
        let mut vector = VersionVector::new();
        if body.is_empty() {
            return Ok(vector);
        }
        for entry in body.split(',') {
            let (origin, seq) = entry
                .split_once(':')
                .ok_or(CursorError("malformed entry"))?;
            let origin = NodeId::new(origin).map_err(|_| CursorError("bad origin"))?;
            let seq: u64 = seq.parse().map_err(|_| CursorError("bad seq"))?;
            vector.advance(&origin, seq);
        }
        Ok(vector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let vector: VersionVector = [
            (NodeId::new("n1").unwrap(), 17),
            (NodeId::new("node-b").unwrap(), 3),
        ]
        .into_iter()
        .collect();
        let text = Cursor::encode(&vector);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Cursor::decode(&text).unwrap(), vector);
        assert_eq!(
            Cursor::decode(&Cursor::encode(&VersionVector::new())).unwrap(),
            VersionVector::new()
        );
    }

    #[test]
    fn refuses_garbage() {
        assert!(Cursor::decode("!!!").is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("h2|n1:1")).is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("h1|n1")).is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("h1|n1:x")).is_err());
        assert!(Cursor::decode(&"a".repeat(10_000)).is_err());
    }
}
