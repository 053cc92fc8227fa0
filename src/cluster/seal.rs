//! Sealing gossip datagrams with the cluster secret: an AEAD envelope and a replay guard.
//!
//! Every datagram a node sends is
//!
//! ```text
//! "HGS1" | session (16 random bytes) | counter (u64 BE) | sent at (unix ms, u64 BE) | ciphertext+tag
//! ```
//!
//! sealed with ChaCha20-Poly1305 under a key derived (HKDF-SHA256) from the cluster secret,
//! the cluster id and the session, with the header as associated data. A session is one
//! socket's lifetime: a fresh random id at every start, so a counter never repeats under a
//! key, and the nonce is the counter.
//!
//! The receiver ([`Opener`]) accepts a datagram only if it opens under the key of its session,
//! was sent within `max_drift` of the local clock (either way), and its counter was not seen
//! before in that session (a sliding window of [`REPLAY_WINDOW`] counters behind the highest).
//! A session's record is kept while any of its datagrams could still pass the clock check
//! (twice `max_drift` after its last accepted datagram), so a replay is refused either as seen
//! or as stale. Records exist only for sessions that proved the secret, so forged traffic
//! cannot fill the table; past [`MAX_SESSIONS`] live records a new session is refused.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

const MAGIC: &[u8; 4] = b"HGS1";
const SESSION_LEN: usize = 16;
/// Magic, session, counter, timestamp.
pub const HEADER_LEN: usize = 4 + SESSION_LEN + 8 + 8;
/// Bytes a sealed datagram adds to the plaintext: the header and the tag.
pub const OVERHEAD: usize = HEADER_LEN + 16;
/// Counters accepted behind the highest one seen in a session (UDP may reorder a little).
pub const REPLAY_WINDOW: u64 = 128;
/// Most sessions remembered at once (each is one start of one node, for twice the drift).
pub const MAX_SESSIONS: usize = 4096;
const SALT: &[u8] = b"herald gossip seal v1";

type Session = [u8; SESSION_LEN];

/// Why a datagram was refused; the label of `herald_gossip_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Too short, or not a herald sealed datagram.
    Malformed,
    /// Did not open under the cluster key: another secret, a forgery or a corruption.
    Unauthenticated,
    /// Sent further from the local clock than the allowed drift.
    Stale,
    /// A counter already seen in its session.
    Replayed,
    /// A new session while the table of recent sessions is full.
    TooManySessions,
    /// Opened, but the plaintext is not a gossip message.
    Undecodable,
}

impl Rejection {
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Unauthenticated => "unauthenticated",
            Self::Stale => "stale",
            Self::Replayed => "replayed",
            Self::TooManySessions => "too_many_sessions",
            Self::Undecodable => "undecodable",
        }
    }
}

/// The cluster's gossip key material: derives one key per session.
#[derive(Clone)]
pub struct GossipKey {
    prk: hkdf::Prk,
    cluster_id: Vec<u8>,
}

impl GossipKey {
    pub fn derive(cluster_secret: &str, cluster_id: &str) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(cluster_secret.as_bytes());
        Self {
            prk,
            cluster_id: cluster_id.as_bytes().to_vec(),
        }
    }

    fn session_key(&self, session: &Session) -> LessSafeKey {
        let info = [self.cluster_id.as_slice(), b"/", session.as_slice()];
        let okm = self
            .prk
            .expand(&info, &CHACHA20_POLY1305)
            .expect("a 32-byte key is within HKDF's output limit");
        LessSafeKey::new(UnboundKey::from(okm))
    }
}

/// The sending side: one session, a counter per datagram.
pub struct Sealer {
    session: Session,
    key: LessSafeKey,
    counter: u64,
}

impl Sealer {
    pub fn new(key: &GossipKey) -> Self {
        let mut session = [0u8; SESSION_LEN];
        SystemRandom::new()
            .fill(&mut session)
            .expect("the system random source works");
        Self {
            key: key.session_key(&session),
            session,
            counter: 0,
        }
    }

    /// Seals `plaintext` stamped with the current time into `out` (cleared first).
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) {
        self.seal_at(plaintext, unix_ms(SystemTime::now()), out);
    }

    /// Seals with a given timestamp (tests forge stale datagrams with it).
    pub fn seal_at(&mut self, plaintext: &[u8], sent_at_ms: u64, out: &mut Vec<u8>) {
        self.counter += 1;
        out.clear();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.session);
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.extend_from_slice(&sent_at_ms.to_be_bytes());
        out.extend_from_slice(plaintext);
        let (header, body) = out.split_at_mut(HEADER_LEN);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.counter), Aad::from(&*header), body)
            .expect("a gossip datagram is far below the AEAD's length limit");
        out.extend_from_slice(tag.as_ref());
    }
}

struct SessionRecord {
    key: LessSafeKey,
    highest: u64,
    /// Bit `i` set: counter `highest - i` was seen.
    seen: u128,
    last_accepted: Instant,
}

impl SessionRecord {
    /// Whether `counter` is new in this session; does not record it.
    fn is_new(&self, counter: u64) -> bool {
        if counter > self.highest {
            return true;
        }
        let behind = self.highest - counter;
        behind < REPLAY_WINDOW && self.seen & (1u128 << behind) == 0
    }

    fn record(&mut self, counter: u64, now: Instant) {
        if counter > self.highest {
            let shift = counter - self.highest;
            self.seen = if shift >= 128 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = counter;
        } else {
            self.seen |= 1u128 << (self.highest - counter);
        }
        self.last_accepted = now;
    }
}

/// The receiving side: opens datagrams and refuses replays.
pub struct Opener {
    key: GossipKey,
    max_drift: Duration,
    sessions: HashMap<Session, SessionRecord>,
}

impl Opener {
    pub fn new(key: GossipKey, max_drift: Duration) -> Self {
        Self {
            key,
            max_drift,
            sessions: HashMap::new(),
        }
    }

    /// Opens `datagram` in place and answers the range of it that holds the plaintext.
    pub fn open(&mut self, datagram: &mut [u8]) -> Result<std::ops::Range<usize>, Rejection> {
        self.open_at(datagram, SystemTime::now(), Instant::now())
    }

    fn open_at(
        &mut self,
        datagram: &mut [u8],
        wall: SystemTime,
        now: Instant,
    ) -> Result<std::ops::Range<usize>, Rejection> {
        if datagram.len() < OVERHEAD || &datagram[..4] != MAGIC {
            return Err(Rejection::Malformed);
        }
        let session: Session = datagram[4..4 + SESSION_LEN]
            .try_into()
            .map_err(|_| Rejection::Malformed)?;
        let counter = read_u64(&datagram[4 + SESSION_LEN..]);
        let sent_at_ms = read_u64(&datagram[4 + SESSION_LEN + 8..]);
        let (header, body) = datagram.split_at_mut(HEADER_LEN);
        let fresh_key;
        let key = match self.sessions.get(&session) {
            Some(record) => &record.key,
            None => {
                fresh_key = self.key.session_key(&session);
                &fresh_key
            }
        };
        let plaintext_len = key
            .open_in_place(nonce(counter), Aad::from(&*header), body)
            .map_err(|_| Rejection::Unauthenticated)?
            .len();
        // Checked only once authentic: a forgery is counted as one, whatever it claims.
        if let Some(record) = self.sessions.get(&session) {
            if !record.is_new(counter) {
                return Err(Rejection::Replayed);
            }
        }
        let local_ms = unix_ms(wall);
        let drift_ms = u64::try_from(self.max_drift.as_millis()).unwrap_or(u64::MAX);
        if sent_at_ms.abs_diff(local_ms) > drift_ms {
            return Err(Rejection::Stale);
        }
        match self.sessions.get_mut(&session) {
            Some(record) => record.record(counter, now),
            None => {
                self.forget_quiet_sessions(now);
                if self.sessions.len() >= MAX_SESSIONS {
                    return Err(Rejection::TooManySessions);
                }
                let mut record = SessionRecord {
                    key: self.key.session_key(&session),
                    highest: 0,
                    seen: 0,
                    last_accepted: now,
                };
                record.record(counter, now);
                self.sessions.insert(session, record);
            }
        }
        Ok(HEADER_LEN..HEADER_LEN + plaintext_len)
    }

    /// Drops sessions none of whose datagrams could pass the clock check any more.
    fn forget_quiet_sessions(&mut self, now: Instant) {
        let keep_for = self.max_drift.saturating_mul(2);
        self.sessions
            .retain(|_, record| now.saturating_duration_since(record.last_accepted) <= keep_for);
    }

    /// Sessions remembered now.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(word)
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRIFT: Duration = Duration::from_secs(60);

    fn pair() -> (Sealer, Opener) {
        let key = GossipKey::derive("a-cluster-secret-of-enough-length!", "c1");
        (Sealer::new(&key), Opener::new(key, DRIFT))
    }

    fn sealed(sealer: &mut Sealer, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        sealer.seal(text, &mut out);
        out
    }

    fn open(opener: &mut Opener, datagram: &[u8]) -> Result<Vec<u8>, Rejection> {
        let mut copy = datagram.to_vec();
        let range = opener.open(&mut copy)?;
        Ok(copy[range].to_vec())
    }

    #[test]
    fn opens_what_was_sealed_once() {
        let (mut sealer, mut opener) = pair();
        let datagram = sealed(&mut sealer, b"hello gossip");
        assert_eq!(datagram.len(), b"hello gossip".len() + OVERHEAD);
        assert_eq!(open(&mut opener, &datagram).unwrap(), b"hello gossip");
        assert_eq!(open(&mut opener, &datagram), Err(Rejection::Replayed));
    }

    #[test]
    fn another_secret_or_cluster_does_not_open() {
        let (mut sealer, _) = pair();
        let datagram = sealed(&mut sealer, b"x");
        for (secret, cluster) in [
            ("another-cluster-secret-of-enough-len", "c1"),
            ("a-cluster-secret-of-enough-length!", "c2"),
        ] {
            let mut opener = Opener::new(GossipKey::derive(secret, cluster), DRIFT);
            assert_eq!(
                open(&mut opener, &datagram),
                Err(Rejection::Unauthenticated)
            );
        }
    }

    #[test]
    fn every_bit_flip_and_truncation_is_refused() {
        let (mut sealer, mut opener) = pair();
        let datagram = sealed(&mut sealer, b"a gossip payload of some length");
        for byte in 0..datagram.len() {
            for bit in [0x01u8, 0x80] {
                let mut corrupted = datagram.clone();
                corrupted[byte] ^= bit;
                assert!(open(&mut opener, &corrupted).is_err(), "byte {byte}");
            }
        }
        for len in 0..datagram.len() {
            assert!(open(&mut opener, &datagram[..len]).is_err(), "len {len}");
        }
        assert!(open(&mut opener, &datagram).is_ok());
    }

    #[test]
    fn stale_and_future_datagrams_are_refused() {
        let (mut sealer, mut opener) = pair();
        let now = unix_ms(SystemTime::now());
        let mut out = Vec::new();
        sealer.seal_at(b"old", now - 61_000, &mut out);
        assert_eq!(open(&mut opener, &out), Err(Rejection::Stale));
        sealer.seal_at(b"future", now + 61_000, &mut out);
        assert_eq!(open(&mut opener, &out), Err(Rejection::Stale));
        sealer.seal_at(b"skewed but fine", now - 30_000, &mut out);
        assert!(open(&mut opener, &out).is_ok());
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once() {
        let (mut sealer, mut opener) = pair();
        let datagrams: Vec<Vec<u8>> = (0..200).map(|_| sealed(&mut sealer, b"d")).collect();
        assert!(open(&mut opener, &datagrams[150]).is_ok());
        assert!(open(&mut opener, &datagrams[100]).is_ok());
        assert_eq!(open(&mut opener, &datagrams[100]), Err(Rejection::Replayed));
        // 140 behind the highest: outside the window, refused even if never seen.
        assert_eq!(open(&mut opener, &datagrams[10]), Err(Rejection::Replayed));
        assert!(open(&mut opener, &datagrams[199]).is_ok());
        assert_eq!(open(&mut opener, &datagrams[150]), Err(Rejection::Replayed));
    }

    #[test]
    fn a_session_is_remembered_while_its_datagrams_are_fresh() {
        let (mut sealer, mut opener) = pair();
        let datagram = sealed(&mut sealer, b"d");
        let start = Instant::now();
        let wall = SystemTime::now();
        let mut copy = datagram.clone();
        assert!(opener.open_at(&mut copy, wall, start).is_ok());
        // Another session arriving later forgets only sessions quiet for twice the drift.
        let (mut other, _) = pair();
        let mut later = sealed(&mut other, b"e");
        assert!(opener.open_at(&mut later, wall, start + DRIFT).is_ok());
        assert_eq!(opener.sessions(), 2);
        let mut replay = datagram.clone();
        assert_eq!(
            opener.open_at(&mut replay, wall, start + DRIFT),
            Err(Rejection::Replayed)
        );
        let (mut third, _) = pair();
        let wall_later = wall + DRIFT * 4;
        let mut much_later = Vec::new();
        third.seal_at(b"f", unix_ms(wall_later), &mut much_later);
        assert!(
            opener
                .open_at(&mut much_later, wall_later, start + DRIFT * 4)
                .is_ok()
        );
        assert_eq!(opener.sessions(), 1, "quiet sessions are forgotten");
        // The first session's datagram is now refused by the clock instead.
        let mut replay = datagram.clone();
        assert_eq!(
            opener.open_at(&mut replay, wall_later, start + DRIFT * 4),
            Err(Rejection::Stale)
        );
    }
}
