//! Subscribers that survive their node: a WebSocket client that resumes elsewhere.
//!
//! A [`Subscriber`] connects to its home node, subscribes to every chaos channel (and, under
//! a user of its own, to the presence channel of `super::presence`) and records
//! each event it receives, in arrival order, into its [`Arrivals`]. It keeps the newest
//! cursor. When its connection ends (the node was killed or wiped), or the node stays silent
//! for [`SILENCE`] (paused: the client pings every second and any answer counts), it
//! reconnects to the next node that is up with `?since=<cursor>`, the way a real client
//! resumes after losing its node, and counts the resume and what the resumed connection
//! replayed (events published before it connected).
//!
//! Its state sits behind a mutex that is never held across an `.await`: the run reads it to
//! see when every subscriber is connected and has every end marker.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::ledger::{Arrivals, EventKey};
use crate::cli::bench::publisher::unix_nanos;
use crate::cli::bench::scenario::channel_name;

/// A node that sends nothing for this long (not even a pong) is given up on.
pub const SILENCE: Duration = Duration::from_secs(3);
const PING_EVERY: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between connection attempts when no node accepted.
const RETRY: Duration = Duration::from_millis(100);

/// Every node's HTTP address while it is up (`None` while it is down), by node index.
pub type Directory = watch::Receiver<Vec<Option<SocketAddr>>>;

/// What a subscriber saw so far.
#[derive(Debug, Default)]
pub struct SubscriberState {
    pub arrivals: Arrivals,
    /// End markers received: (channel, publisher).
    pub markers: BTreeSet<(u32, u32)>,
    pub cursor: Option<String>,
    pub connected: bool,
    /// Connected right now (for the presence check).
    pub online: bool,
    pub resumes: u64,
    /// Events a resumed connection delivered that were published before it connected.
    pub replayed: u64,
}

pub type Shared = Arc<Mutex<SubscriberState>>;

/// One subscriber's job.
pub struct Subscriber {
    pub home: usize,
    pub channels: Vec<u32>,
    pub token: String,
    pub directory: Directory,
    pub state: Shared,
    pub stop: watch::Receiver<bool>,
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    p: Option<u32>,
    c: Option<u32>,
    n: Option<u64>,
    t: Option<u64>,
    cursor: Option<String>,
}

impl Subscriber {
    /// Runs until stopped.
    pub async fn run(self) {
        let nodes = self.directory.borrow().len();
        let mut node = self.home;
        while !*self.stop.borrow() {
            let address = self.directory.borrow().get(node).copied().flatten();
            let Some(address) = address else {
                node = (node + 1) % nodes;
                tokio::time::sleep(RETRY / 4).await;
                continue;
            };
            let since = lock(&self.state).cursor.clone();
            if let Some(socket) = self.connect(address, since.as_deref()).await {
                // Every connection but the first starts from a cursor.
                let resumed = since.is_some();
                {
                    let mut state = lock(&self.state);
                    state.connected = true;
                    state.online = true;
                    if resumed {
                        state.resumes += 1;
                    }
                }
                let stopped = self.read(socket, resumed).await;
                lock(&self.state).online = false;
                if stopped {
                    return;
                }
            } else {
                tokio::time::sleep(RETRY).await;
            }
            node = (node + 1) % nodes;
        }
    }

    async fn connect(&self, address: SocketAddr, since: Option<&str>) -> Option<Socket> {
        let mut url = format!("ws://{address}/ws?");
        for channel in &self.channels {
            url.push_str(&format!("channel={}&", channel_name(*channel)));
        }
        url.push_str(&format!("channel={}&", super::presence::CHANNEL));
        url.push_str("token=");
        url.push_str(&self.token);
        if let Some(cursor) = since {
            url.push_str("&since=");
            url.push_str(cursor);
        }
        let connecting = tokio_tungstenite::connect_async(url);
        let (mut socket, _) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .ok()?
            .ok()?;
        // The first message says the subscription is in place, and from which cursor: a
        // subscriber that received no event yet resumes from there.
        let first = tokio::time::timeout(CONNECT_TIMEOUT, socket.next()).await;
        let Ok(Some(Ok(Message::Text(text)))) = first else {
            return None;
        };
        let connected = serde_json::from_str::<Incoming>(text.as_str()).ok()?;
        if connected.kind != Some("connected") {
            return None;
        }
        let mut state = lock(&self.state);
        if state.cursor.is_none() {
            state.cursor = connected.cursor;
        }
        drop(state);
        Some(socket)
    }

    /// Reads one connection until it ends or goes silent; answers true when told to stop.
    async fn read(&self, mut socket: Socket, resumed: bool) -> bool {
        let connected_at = unix_nanos();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = tokio::time::Instant::now();
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return true;
        }
        loop {
            let silence_ends = last_heard + SILENCE;
            tokio::select! {
                _ = stop.changed() => {
                    let _ = socket.close(None).await;
                    return true;
                }
                _ = ping.tick() => {
                    let sent = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        socket.send(Message::Ping(Vec::new().into())),
                    );
                    if !matches!(sent.await, Ok(Ok(()))) {
                        return false;
                    }
                }
                _ = tokio::time::sleep_until(silence_ends) => return false,
                message = socket.next() => {
                    last_heard = tokio::time::Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            self.handle(text.as_str(), resumed, connected_at);
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
                        Some(Ok(_)) => {}
                    }
                }
            }
        }
    }

    fn handle(&self, text: &str, resumed: bool, connected_at: u64) {
        let Ok(message) = serde_json::from_str::<Incoming>(text) else {
            return;
        };
        let mut state = lock(&self.state);
        match (message.kind, message.c, message.p) {
            (Some("chaos"), Some(channel), Some(publisher)) => {
                if let Some(n) = message.n {
                    state.arrivals.record(EventKey {
                        channel,
                        publisher,
                        n,
                    });
                    if resumed && message.t.is_some_and(|t| t < connected_at) {
                        state.replayed += 1;
                    }
                }
            }
            (Some("chaos-marker"), Some(channel), Some(publisher)) => {
                state.markers.insert((channel, publisher));
            }
            _ => {}
        }
        if let Some(cursor) = message.cursor {
            state.cursor = Some(cursor);
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub fn lock(state: &Shared) -> std::sync::MutexGuard<'_, SubscriberState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}
