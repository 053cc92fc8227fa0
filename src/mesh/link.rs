//! One peer link: a QUIC connection with one unidirectional stream each way, a writer task
//! draining the bounded outbound queue, and a reader task decoding frames into the inbound
//! queue. A malformed frame closes the link and is logged; nothing here panics on input.

use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::frame::{self, Frame, HEADER_LEN};
use super::{Inbound, LINK_QUEUE_FRAMES, LocalIdentity, Mesh, MeshError};
use crate::event::NodeId;

/// What `Hello` told us about the peer.
#[derive(Clone, Debug)]
pub(super) struct Hello {
    pub node_id: NodeId,
    pub generation: u64,
}

/// A link as reported by `/api/cluster`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct LinkInfo {
    /// The peer's node id.
    #[schema(value_type = String)]
    pub peer: NodeId,
    /// The peer's mesh address, `host:port`.
    #[schema(value_type = String)]
    pub remote_addr: SocketAddr,
    pub generation: u64,
    pub rtt_ms: f64,
    pub queued_frames: usize,
}

/// Numbers links for good: quinn's `stable_id` is an address, reused once a connection is
/// freed, so it cannot tell a closed link from its successor.
static NEXT_LINK_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

pub(super) struct Link {
    id: usize,
    peer: NodeId,
    generation: u64,
    connection: quinn::Connection,
    outbound: mpsc::Sender<std::sync::Arc<[u8]>>,
}

impl Link {
    /// This link's number, unique for the life of the process.
    pub(super) fn connection_id(&self) -> usize {
        self.id
    }

    /// The peer's generation, as its `Hello` said.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// UDP datagrams received on this link's connection so far.
    pub(super) fn datagrams_received(&self) -> u64 {
        self.connection.stats().udp_rx.datagrams
    }

    /// The connection's smoothed RTT in nanoseconds: it moves only when an ACK from the peer
    /// newly acknowledges one of our ack-eliciting packets, i.e. when the peer heard something
    /// new from us. (Counting ACK frames would not do: a peer that hears nothing from us still
    /// repeats its old acknowledgements in every packet it sends.)
    pub(super) fn heard_by_peer_mark(&self) -> u128 {
        self.connection.rtt().as_nanos()
    }

    /// False once the connection is closed (by either side), even before its tasks have
    /// noticed and removed the link.
    pub(super) fn is_open(&self) -> bool {
        self.connection.close_reason().is_none()
    }

    pub(super) fn remote_addr(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    pub(super) fn info(&self) -> LinkInfo {
        LinkInfo {
            peer: self.peer.clone(),
            remote_addr: self.remote_addr(),
            generation: self.generation,
            rtt_ms: self.connection.rtt().as_secs_f64() * 1000.0,
            queued_frames: LINK_QUEUE_FRAMES - self.outbound.capacity(),
        }
    }

    pub(super) fn try_send(&self, bytes: &std::sync::Arc<[u8]>) {
        match self.outbound.try_send(std::sync::Arc::clone(bytes)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!("herald_mesh_frames_dropped_total", "reason" => "queue_full")
                    .increment(1);
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    pub(super) fn sender(&self) -> mpsc::Sender<std::sync::Arc<[u8]>> {
        self.outbound.clone()
    }

    pub(super) fn close(&self, reason: &str) {
        self.close_with(0, reason);
    }

    pub(super) fn close_with(&self, code: u32, reason: &str) {
        self.connection.close(code.into(), reason.as_bytes());
    }
}

/// Opens the streams, exchanges `Hello`, and starts the link's tasks.
pub(super) async fn open(
    connection: quinn::Connection,
    local: &LocalIdentity,
    inbound: mpsc::Sender<Inbound>,
    mesh: Weak<Mesh>,
) -> Result<(Link, Hello), MeshError> {
    let handshake = async {
        let mut send = connection
            .open_uni()
            .await
            .map_err(|e| MeshError::Handshake(e.to_string()))?;
        let hello = frame::encode(&Frame::Hello {
            node_id: local.node_id.clone(),
            cluster_id: local.cluster_id.clone(),
            generation: local.generation,
        })
        .map_err(|e| MeshError::Handshake(e.to_string()))?;
        send.write_all(&hello)
            .await
            .map_err(|e| MeshError::Handshake(e.to_string()))?;
        let mut recv = connection
            .accept_uni()
            .await
            .map_err(|e| MeshError::Handshake(e.to_string()))?;
        let first = read_frame(&mut recv).await?;
        let Frame::Hello {
            node_id,
            cluster_id,
            generation,
        } = first
        else {
            return Err(MeshError::Handshake("first frame is not hello".into()));
        };
        if cluster_id != local.cluster_id {
            return Err(MeshError::Handshake(format!(
                "peer is in cluster {cluster_id:?}"
            )));
        }
        Ok((
            send,
            recv,
            Hello {
                node_id,
                generation,
            },
        ))
    };
    let (send, recv, hello) = match tokio::time::timeout(Duration::from_secs(3), handshake).await {
        Ok(Ok(parts)) => parts,
        Ok(Err(error)) => {
            connection.close(1u32.into(), b"handshake failed");
            return Err(error);
        }
        Err(_) => {
            connection.close(1u32.into(), b"handshake timed out");
            return Err(MeshError::Handshake("timed out".into()));
        }
    };
    let (outbound, queue) = mpsc::channel(LINK_QUEUE_FRAMES);
    let connection_id = NEXT_LINK_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let link = Link {
        id: connection_id,
        peer: hello.node_id.clone(),
        generation: hello.generation,
        connection: connection.clone(),
        outbound,
    };
    tokio::spawn(write_frames(send, queue, connection.clone()));
    tokio::spawn(read_frames(
        recv,
        connection,
        hello.node_id.clone(),
        inbound,
        mesh,
        connection_id,
    ));
    Ok((link, hello))
}

async fn write_frames(
    mut send: quinn::SendStream,
    mut queue: mpsc::Receiver<std::sync::Arc<[u8]>>,
    connection: quinn::Connection,
) {
    let mut batch = Vec::with_capacity(64);
    while queue.recv_many(&mut batch, 64).await > 0 {
        for bytes in batch.drain(..) {
            if send.write_all(&bytes).await.is_err() {
                connection.close(2u32.into(), b"write failed");
                return;
            }
            metrics::counter!("herald_mesh_bytes_sent_total").increment(bytes.len() as u64);
        }
    }
}

async fn read_frames(
    mut recv: quinn::RecvStream,
    connection: quinn::Connection,
    peer: NodeId,
    inbound: mpsc::Sender<Inbound>,
    mesh: Weak<Mesh>,
    connection_id: usize,
) {
    loop {
        match read_frame(&mut recv).await {
            Ok(frame) => {
                if inbound
                    .send(Inbound {
                        from: peer.clone(),
                        frame,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Err(MeshError::Handshake(reason)) if reason == "stream closed" => break,
            Err(error) => {
                metrics::counter!("herald_mesh_malformed_frames_total").increment(1);
                tracing::warn!(%peer, %error, "malformed mesh frame; closing the link");
                connection.close(3u32.into(), b"malformed frame");
                break;
            }
        }
    }
    if let Some(mesh) = mesh.upgrade() {
        mesh.link_closed(&peer, connection_id);
    }
}

/// Reads one frame; a clean end of stream is `Handshake("stream closed")`.
async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Frame, MeshError> {
    let mut header = [0u8; HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => {
            return Err(MeshError::Handshake("stream closed".into()));
        }
        Err(quinn::ReadExactError::ReadError(_)) => {
            return Err(MeshError::Handshake("stream closed".into()));
        }
        Err(error) => return Err(MeshError::Connect(error.to_string())),
    }
    let length = frame::decode_header(&header).map_err(|e| MeshError::Connect(e.to_string()))?;
    let mut body = vec![0u8; length];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| MeshError::Connect(e.to_string()))?;
    metrics::counter!("herald_mesh_bytes_received_total").increment((HEADER_LEN + length) as u64);
    frame::decode_body(&body).map_err(|e| MeshError::Connect(e.to_string()))
}
