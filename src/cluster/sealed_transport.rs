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
//! `recv` is cancelled by chitchat's loop at every gossip tick, so the one datagram handed to
//! `codec` and not yet read back is remembered in `self` and read first on the next call.
//! A datagram that opens but that `codec` cannot decode (only a holder of the secret can send
//! one) is given up after [`DECODE_WAIT`] and counted.
//!
//! Everything refused is counted in `herald_gossip_rejected_total{reason}` and logged at most
//! once per [`REJECT_LOG_EVERY`], with the number suppressed since.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};

use super::seal::{GossipKey, OVERHEAD, Opener, Rejection, Sealer};

/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// How long a datagram handed to the codec may take to come back decoded (loopback delivery
/// is immediate; only an undecodable one takes this long).
pub const DECODE_WAIT: Duration = Duration::from_millis(100);
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
        Ok(Box::new(SealedSocket {
            public,
            codec,
            relay,
            relay_addr,
            sealer: Sealer::new(&self.key),
            opener: Opener::new(self.key.clone(), self.max_drift),
            handed_to_codec: None,
            buf: vec![0; MAX_DATAGRAM + 1],
            sealed: Vec::with_capacity(MAX_DATAGRAM),
            rejections: RejectLog::default(),
        }))
    }
}

/// A datagram given to the codec and not yet read back from it.
#[derive(Clone, Copy)]
struct HandedToCodec {
    from: SocketAddr,
    plaintext_len: usize,
    sealed_len: usize,
    at: Instant,
}

struct SealedSocket {
    public: tokio::net::UdpSocket,
    codec: UdpSocket,
    relay: tokio::net::UdpSocket,
    relay_addr: SocketAddr,
    sealer: Sealer,
    opener: Opener,
    handed_to_codec: Option<HandedToCodec>,
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
                let left = DECODE_WAIT.saturating_sub(handed.at.elapsed());
                match tokio::time::timeout(left, self.codec.recv()).await {
                    Ok(outcome) => {
                        let outcome = outcome?;
                        if outcome.num_bytes_received != handed.plaintext_len {
                            // Not the datagram handed over: something else on the host.
                            self.reject(outcome.from_addr, Rejection::Unauthenticated);
                            continue;
                        }
                        self.handed_to_codec = None;
                        return Ok(RecvOutcome {
                            from_addr: handed.from,
                            envelope: outcome.envelope,
                            num_bytes_received: handed.sealed_len,
                        });
                    }
                    Err(_) => {
                        self.handed_to_codec = None;
                        self.reject(handed.from, Rejection::Undecodable);
                    }
                }
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
            let plaintext_len = plaintext.len();
            self.relay
                .send(&self.buf[plaintext])
                .await
                .context("gossip relay send")?;
            self.handed_to_codec = Some(HandedToCodec {
                from,
                plaintext_len,
                sealed_len: len,
                at: Instant::now(),
            });
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
