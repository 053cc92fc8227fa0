//! Snapshots between nodes over HTTP, for backplanes without a link between nodes (Redis).
//!
//! `GET /api/cluster/snapshot?since=<cursor>&since_hlc=<n>` streams the same frames the mesh
//! sends ([`Frame::SnapshotPart`] then [`Frame::SnapshotEnd`], each with its header), read
//! from one transaction of the serving node's store. The caller proves the cluster secret with
//! a bearer token derived from it ([`snapshot_token`]); anything else is refused. The body is
//! produced as the asker reads it: a slow asker slows the reader, nothing piles up.
//!
//! The asker merges parts as they arrive and ends with the jump (see
//! `crate::store::snapshot`); a snapshot cut short leaves its position where it was, and the
//! next attempt starts over.
//!
//! A peer that serves HTTPS (native TLS, told in its registry record) is asked over
//! `https://`, and its certificate must chain to the asker's `tls_ca` (or the system's roots
//! without one) and name the address it advertises: a certificate that does not verify is
//! refused, and the fetch fails saying so (see [`crate::tls_client`]).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::event::Cursor;
use crate::mesh::frame::{self, Frame, HEADER_LEN};
use crate::store::Store;
use crate::store::snapshot::{SnapshotBasis, SnapshotItem};

/// The path of the snapshot endpoint.
pub const SNAPSHOT_PATH: &str = "/api/cluster/snapshot";
/// Longest wait for the next bytes of a snapshot body.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a connection (and its TLS handshake) to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client snapshots are fetched with: plain HTTP to peers that serve it, HTTPS verified
/// against the CA certificates in `ca` (or the system's roots) to those that serve HTTPS.
pub fn client(ca: Option<&Path>) -> Result<reqwest::Client, crate::tls_client::ClientTlsError> {
    crate::tls_client::http_client(
        ca,
        reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT),
    )
}

/// Where a peer serves snapshots: its advertised HTTP address and whether it serves HTTPS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddress {
    pub addr: SocketAddr,
    pub https: bool,
}

impl PeerAddress {
    /// From a peer's registry record: `None` unless `http` is an `ip:port` address (the record
    /// comes from the network; nothing else is dialed).
    pub fn from_record(http: &str, https: bool) -> Option<Self> {
        let addr = http.parse::<SocketAddr>().ok()?;
        (addr.port() != 0 && !addr.ip().is_unspecified()).then_some(Self { addr, https })
    }
}

impl std::fmt::Display for PeerAddress {
    /// `http://ip:port` or `https://ip:port`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.addr)
    }
}

/// The bearer token that proves the cluster secret for `cluster_id` (hex HMAC-SHA256).
pub fn snapshot_token(cluster_secret: &str, cluster_id: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, cluster_secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("herald snapshot v1 {cluster_id}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// True when `presented` is the token for this secret and cluster (compared in constant time).
pub fn token_matches(presented: &str, cluster_secret: &str, cluster_id: &str) -> bool {
    let Some(tag) = decode_hex(presented) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, cluster_secret.as_bytes());
    ring::hmac::verify(
        &key,
        format!("herald snapshot v1 {cluster_id}").as_bytes(),
        &tag,
    )
    .is_ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Encodes one snapshot item as a frame with its header.
pub fn encode_item(item: SnapshotItem) -> Result<Vec<u8>, frame::FrameError> {
    frame::encode(&match item {
        SnapshotItem::Part(part) => Frame::SnapshotPart { id: 0, part },
        SnapshotItem::End(end) => Frame::SnapshotEnd { id: 0, end },
    })
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Http(String),
    #[error("the peer answered {0}")]
    Status(u16),
    #[error("bad frame: {0}")]
    Frame(#[from] frame::FrameError),
    #[error("unexpected frame in a snapshot")]
    Unexpected,
    #[error("the snapshot ended before its end")]
    Truncated,
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Fetches a snapshot from the node at `peer` and merges it into `store`. Answers the number
/// of parts merged.
pub async fn fetch(
    http: &reqwest::Client,
    peer: &PeerAddress,
    token: &str,
    store: &Store,
) -> Result<u64, FetchError> {
    let basis = store.snapshot_basis().await?;
    let address = peer.to_string();
    let url = format!(
        "{address}{SNAPSHOT_PATH}?since={}&since_hlc={}",
        Cursor::encode(&basis.since),
        basis.since_hlc
    );
    let mut response = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| FetchError::Http(crate::tls_client::describe(&e, &address)))?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let mut buffer: Vec<u8> = Vec::new();
    let mut parts = 0u64;
    loop {
        let chunk = tokio::time::timeout(READ_TIMEOUT, response.chunk())
            .await
            .map_err(|_| {
                FetchError::Http(format!("timed out reading the snapshot from {address}"))
            })?
            .map_err(|e| FetchError::Http(crate::tls_client::describe(&e, &address)))?;
        let Some(chunk) = chunk else {
            return Err(FetchError::Truncated);
        };
        buffer.extend_from_slice(&chunk);
        while buffer.len() >= HEADER_LEN {
            let header: [u8; HEADER_LEN] = buffer[..HEADER_LEN].try_into().unwrap_or_default();
            let length = frame::decode_header(&header)?;
            if buffer.len() < HEADER_LEN + length {
                break;
            }
            let frame = frame::decode_body(&buffer[HEADER_LEN..HEADER_LEN + length])?;
            buffer.drain(..HEADER_LEN + length);
            match frame {
                Frame::SnapshotPart { part, .. } => {
                    store.merge_snapshot(part).await?;
                    parts += 1;
                }
                Frame::SnapshotEnd { end, .. } => {
                    store.finish_snapshot(end).await?;
                    metrics::counter!("herald_snapshots_received_total").increment(1);
                    return Ok(parts);
                }
                _ => return Err(FetchError::Unexpected),
            }
        }
    }
}

/// Parses the snapshot request's query: `since` (a cursor) and `since_hlc`.
pub fn parse_basis(since: Option<&str>, since_hlc: Option<&str>) -> Result<SnapshotBasis, String> {
    let since = match since.filter(|s| !s.is_empty()) {
        Some(text) => Cursor::decode(text).map_err(|e| e.to_string())?,
        None => crate::event::VersionVector::new(),
    };
    let since_hlc = match since_hlc {
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| "since_hlc must be a number".to_string())?,
        None => 0,
    };
    Ok(SnapshotBasis { since, since_hlc })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_prove_the_secret_and_the_cluster() {
        let token = snapshot_token("secret-one", "c1");
        assert!(token_matches(&token, "secret-one", "c1"));
        assert!(!token_matches(&token, "secret-two", "c1"));
        assert!(!token_matches(&token, "secret-one", "c2"));
        assert!(!token_matches("nope", "secret-one", "c1"));
        assert!(!token_matches(&"zz".repeat(32), "secret-one", "c1"));
    }

    #[test]
    fn peers_are_dialed_at_an_ip_and_port_with_the_scheme_they_serve() {
        let peer = PeerAddress::from_record("10.0.0.2:8000", true).unwrap();
        assert_eq!(peer.to_string(), "https://10.0.0.2:8000");
        let peer = PeerAddress::from_record("[::1]:8000", false).unwrap();
        assert_eq!(peer.to_string(), "http://[::1]:8000");
        for bad in [
            "",
            "10.0.0.2",
            "10.0.0.2:0",
            "0.0.0.0:8000",
            "evil.example.com:80/x?",
            "10.0.0.2:8000/path",
            "user@10.0.0.2:8000",
        ] {
            assert_eq!(PeerAddress::from_record(bad, false), None, "{bad}");
        }
    }

    #[test]
    fn the_basis_is_checked() {
        assert!(parse_basis(None, None).is_ok());
        assert!(parse_basis(Some("!!"), None).is_err());
        assert!(parse_basis(None, Some("x")).is_err());
        let basis = parse_basis(None, Some("42")).unwrap();
        assert_eq!(basis.since_hlc, 42);
    }
}
