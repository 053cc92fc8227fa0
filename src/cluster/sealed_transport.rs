//! A chitchat [`Transport`] whose every datagram on the wire is sealed (see [`super::seal`]).
//!
//! chitchat encodes its messages only inside its own UDP socket, so this transport keeps one
//! as the codec and talks to it over loopback:
//!
//! - `public` is the gossip port peers see; only sealed datagrams cross it.
//! - `codec` is chitchat's own socket on an ephemeral loopback port. To send, chitchat's
//!   message is encoded by `codec` into a datagram to `relay`, which is sealed and sent from
//!   `public`. To receive, a datagram that opens is handed from `relay` to `codec`, which
//!   decodes it, and chitchat is told the real sender.
//! - `relay` is connected to `codec`, so it hears nothing else. What reaches `codec` from
//!   another local process is told apart by its length and dropped; the boundary this
//!   transport defends is the network, not the host.
//!
//! `recv` is cancelled by chitchat's loop at every gossip tick, so what was handed to `codec`
//! and not yet read back is remembered in `self`, and nothing between handing over and
//! remembering awaits. Each datagram that opens is followed into `codec` by a sentinel (a
//! message of chitchat's own encoding, made at start): when the sentinel comes out first, the
//! datagram was not a gossip message (only a holder of the secret can send one) and is counted.
//!
//! Everything refused is counted in `herald_gossip_rejected_total{reason}` and logged at most
//! once per [`REJECT_LOG_EVERY`], with the number suppressed since.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};
use chitchat::{ChitchatEnvelope, ChitchatMessage, ProtocolVersion};

use super::seal::{GossipKey, OVERHEAD, Opener, Rejection, Sealer};

/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
pub const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Opens sealed gossip sockets keyed from the cluster secret.
pub struct SealedUdpTransport {
    key: GossipKey,
    max_drift: Duration,
}

impl SealedUdpTransport {
    /// `max_drift`: how far a datagram's timestamp may be from the local clock.
    pub fn new(cluster_secret: &str, cluster_id: &str, max_drift: Duration) -> Self {
        Self {
            key: GossipKey::derive(cluster_secret, cluster_id),
            max_drift,
        }
    }
}

#[async_trait]
impl Transport for SealedUdpTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let public = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind to {listen_addr}/UDP for gossip"))?;
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let codec = UdpSocket::open(loopback).await?;
        let codec_addr = codec.local_addr()?;
        let relay = tokio::net::UdpSocket::bind(loopback)
            .await
            .context("failed to bind the gossip relay")?;
        relay
            .connect(codec_addr)
            .await
            .context("failed to connect the gossip relay")?;
        let relay_addr = relay.local_addr()?;
        let mut codec = codec;
        let mut buf = vec![0; MAX_DATAGRAM + 1];
        codec.send(relay_addr, sentinel()).await?;
        let len = relay.recv(&mut buf).await.context("gossip relay recv")?;
        let sentinel_bytes = buf[..len].to_vec();
        Ok(Box::new(SealedSocket {
            public,
            codec,
            relay,
            relay_addr,
            sealer: Sealer::new(&self.key),
            opener: Opener::new(self.key.clone(), self.max_drift),
            handed_to_codec: None,
            sentinel: sentinel_bytes,
            buf,
            sealed: Vec::with_capacity(MAX_DATAGRAM),
            rejections: RejectLog::default(),
        }))
    }
}

/// The message `codec` is given after each datagram, to tell when it dropped one.
fn sentinel() -> ChitchatEnvelope {
    ChitchatEnvelope {
        version: ProtocolVersion::V0,
        message: ChitchatMessage::BadCluster,
    }
}

/// A datagram given to the codec, followed by the sentinel, and what is still to come back.
#[derive(Clone, Copy)]
struct HandedToCodec {
    from: SocketAddr,
    plaintext_len: usize,
    sealed_len: usize,
    /// The datagram came back; only the sentinel is still due.
    delivered: bool,
}

struct SealedSocket {
    public: tokio::net::UdpSocket,
    codec: UdpSocket,
    relay: tokio::net::UdpSocket,
    relay_addr: SocketAddr,
    sealer: Sealer,
    opener: Opener,
    handed_to_codec: Option<HandedToCodec>,
    /// The sentinel, as `codec` encodes it.
    sentinel: Vec<u8>,
    buf: Vec<u8>,
    sealed: Vec<u8>,
    rejections: RejectLog,
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.public
            .local_addr()
            .context("failed to get the gossip socket address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let encoded = self.codec.send(self.relay_addr, envelope).await?;
        let len = loop {
            let len = self
                .relay
                .recv(&mut self.buf)
                .await
                .context("gossip relay recv")?;
            if len == encoded.num_bytes_sent {
                break len;
            }
        };
        if len + OVERHEAD > MAX_DATAGRAM {
            metrics::counter!("herald_gossip_oversized_total").increment(1);
            tracing::warn!(bytes = len, "gossip message too large to seal; not sent");
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        self.sealer.seal(&self.buf[..len], &mut self.sealed);
        let sent = self
            .public
            .send_to(&self.sealed, to)
            .await
            .context("failed to send a gossip datagram")?;
        Ok(SendOutcome {
            num_bytes_sent: sent,
        })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(handed) = self.handed_to_codec {
                let outcome = self.codec.recv().await?;
                let is_sentinel = outcome.envelope == sentinel();
                if handed.delivered {
                    if is_sentinel {
                        self.handed_to_codec = None;
                    }
                    continue;
                }
                if is_sentinel {
                    self.handed_to_codec = None;
                    self.reject(handed.from, Rejection::Undecodable);
                    continue;
                }
                if outcome.num_bytes_received != handed.plaintext_len {
                    // Not the datagram handed over: something else on this host sent it.
                    self.reject(outcome.from_addr, Rejection::Unauthenticated);
                    continue;
                }
                self.handed_to_codec = Some(HandedToCodec {
                    delivered: true,
                    ..handed
                });
                return Ok(RecvOutcome {
                    from_addr: handed.from,
                    envelope: outcome.envelope,
                    num_bytes_received: handed.sealed_len,
                });
            }
            let (len, from) = match self.public.recv_from(&mut self.buf).await {
                Ok(received) => received,
                Err(error) if is_transient(&error) => continue,
                Err(error) => return Err(error).context("fatal gossip recv error"),
            };
            if len > MAX_DATAGRAM {
                self.reject(from, Rejection::Malformed);
                continue;
            }
            let plaintext = match self.opener.open(&mut self.buf[..len]) {
                Ok(range) => range,
                Err(rejection) => {
                    self.reject(from, rejection);
                    continue;
                }
            };
            if self.buf[plaintext.clone()] == self.sentinel[..] {
                // A peer's genuine copy of the sentinel's message: no need for the codec.
                return Ok(RecvOutcome {
                    from_addr: from,
                    envelope: sentinel(),
                    num_bytes_received: len,
                });
            }
            // Handed over without awaiting, so a cancelled `recv` never loses track of it.
            let handed = self
                .relay
                .try_send(&self.buf[plaintext.clone()])
                .and_then(|_| self.relay.try_send(&self.sentinel));
            match handed {
                Ok(_) => {
                    self.handed_to_codec = Some(HandedToCodec {
                        from,
                        plaintext_len: plaintext.len(),
                        sealed_len: len,
                        delivered: false,
                    });
                }
                Err(error) => {
                    // Loopback full: dropped like any datagram a busy socket cannot take.
                    tracing::debug!(%error, "gossip relay busy; datagram dropped");
                    metrics::counter!("herald_gossip_relay_dropped_total").increment(1);
                }
            }
        }
    }
}

impl SealedSocket {
    fn reject(&mut self, from: SocketAddr, rejection: Rejection) {
        metrics::counter!("herald_gossip_rejected_total", "reason" => rejection.label())
            .increment(1);
        self.rejections.note(from, rejection);
    }
}

fn is_transient(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::OutOfMemory
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

/// Logs refused datagrams at most once per [`REJECT_LOG_EVERY`].
#[derive(Default)]
struct RejectLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RejectLog {
    fn note(&mut self, from: SocketAddr, rejection: Rejection) {
        if self.last.is_some_and(|at| at.elapsed() < REJECT_LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(%from, reason = rejection.label(), suppressed = self.suppressed,
            "gossip datagram refused (wrong cluster secret, forged, corrupted or replayed)");
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-cluster-secret-of-enough-length!";

    fn message() -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V1,
            message: ChitchatMessage::BadCluster,
        }
    }

    async fn socket() -> Box<dyn Socket> {
        SealedUdpTransport::new(SECRET, "c1", Duration::from_secs(60))
            .open(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("opens")
    }

    #[tokio::test]
    async fn messages_cross_sealed_and_arrive_from_their_sender() {
        let (mut a, mut b) = (socket().await, socket().await);
        let b_addr = b.local_addr().unwrap();
        let sent = a.send(b_addr, message()).await.unwrap();
        assert!(sent.num_bytes_sent > OVERHEAD);
        let received = b.recv().await.unwrap();
        assert_eq!(received.envelope, message());
        assert_eq!(received.from_addr, a.local_addr().unwrap());
        // The sentinel's own message is carried too.
        a.send(b_addr, sentinel()).await.unwrap();
        assert_eq!(b.recv().await.unwrap().envelope, sentinel());
    }

    #[tokio::test]
    async fn an_authentic_datagram_that_is_not_gossip_is_skipped_without_losing_track() {
        let (mut a, mut b) = (socket().await, socket().await);
        let b_addr = b.local_addr().unwrap();
        // A holder of the secret sends sealed garbage, then a real message follows from `a`.
        let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut sealer = Sealer::new(&GossipKey::derive(SECRET, "c1"));
        let mut garbage = Vec::new();
        sealer.seal(b"not a chitchat message", &mut garbage);
        raw.send_to(&garbage, b_addr).await.unwrap();
        a.send(b_addr, message()).await.unwrap();
        let received = tokio::time::timeout(Duration::from_secs(5), b.recv())
            .await
            .expect("the real message arrives")
            .unwrap();
        assert_eq!(received.envelope, message());
        assert_eq!(received.from_addr, a.local_addr().unwrap());
    }

    #[tokio::test]
    async fn a_cancelled_recv_loses_nothing() {
        let (mut a, mut b) = (socket().await, socket().await);
        let b_addr = b.local_addr().unwrap();
        for _ in 0..3 {
            a.send(b_addr, message()).await.unwrap();
        }
        let mut received = 0;
        while received < 3 {
            // Polled once and dropped, as chitchat's loop does at every tick.
            let once = futures_util::FutureExt::now_or_never(b.recv());
            if let Some(outcome) = once {
                assert_eq!(outcome.unwrap().from_addr, a.local_addr().unwrap());
                received += 1;
            } else {
                tokio::task::yield_now().await;
            }
        }
    }
}
