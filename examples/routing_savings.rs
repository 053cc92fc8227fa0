//! Server-side routing against the seeds' client-side filtering, measured.
//!
//! Starts one node in-process, opens `CLIENTS` track sockets spread over `TRACKS` tracks (each
//! client watches one track), posts `COMMENTS_PER_TRACK` comments on every track, and counts the
//! messages and bytes each client received. The seeds broadcast every comment to every client
//! and filtered in the browser, so each client would have received every comment of every
//! track: that figure is computed from the same messages.
//!
//! Run: `cargo run --release --example routing_savings`

use std::time::Duration;

use futures_util::StreamExt;
use herald::auth::{Authenticator, User};
use herald::config::{Config, DEV_API_KEY, DEV_JWT_SECRET};
use herald::server::Server;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const TRACKS: usize = 50;
const CLIENTS: usize = 500;
const COMMENTS_PER_TRACK: usize = 4;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(Config::for_tests(dir.path())).await?;
    let addr = server.http_addr();
    let auth = Authenticator::new(DEV_JWT_SECRET, DEV_API_KEY);
    let token = |id: usize| {
        auth.mint(
            &User {
                id: format!("u{id}"),
                name: format!("user{id}"),
                roles: vec![],
                creator_id: None,
            },
            Duration::from_secs(600),
        )
    };

    let mut readers = Vec::new();
    for client in 0..CLIENTS {
        let url = format!(
            "ws://{addr}/api/ws/track/track-{}?token={}",
            client % TRACKS,
            token(client)
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
        socket.next().await; // connected
        readers.push(tokio::spawn(async move {
            let (mut messages, mut bytes) = (0usize, 0usize);
            while messages < COMMENTS_PER_TRACK {
                match tokio::time::timeout(Duration::from_secs(20), socket.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        if value["type"] == "new_comment" {
                            messages += 1;
                            bytes += text.len();
                        }
                    }
                    _ => break,
                }
            }
            (messages, bytes)
        }));
    }

    let http = reqwest::Client::new();
    let poster = token(CLIENTS + 1);
    let mut all_comment_bytes = 0usize;
    for round in 0..COMMENTS_PER_TRACK {
        for track in 0..TRACKS {
            let body: Value = http
                .post(format!("http://{addr}/api/tracks/track-{track}/comments"))
                .bearer_auth(&poster)
                .json(&json!({"content": format!("comment {round} on track {track}: nice part at 1:23"), "timestamp": 83}))
                .send()
                .await?
                .json()
                .await?;
            // The message a client receives is the event with its channel and cursor; count
            // its size as the history API renders it.
            let _ = body;
        }
    }
    let mut history_bytes = 0usize;
    for track in 0..TRACKS {
        let page: Value = http
            .get(format!(
                "http://{addr}/api/channels/track:track-{track}/history?limit=1000"
            ))
            .bearer_auth(DEV_API_KEY)
            .send()
            .await?
            .json()
            .await?;
        for event in page["events"].as_array().into_iter().flatten() {
            history_bytes += event.to_string().len();
        }
    }
    all_comment_bytes += history_bytes;

    let (mut messages, mut bytes) = (0usize, 0usize);
    for reader in readers {
        let (m, b) = reader.await?;
        messages += m;
        bytes += b;
    }
    let per_client_messages = messages as f64 / CLIENTS as f64;
    let per_client_bytes = bytes as f64 / CLIENTS as f64;
    let seeds_messages = (TRACKS * COMMENTS_PER_TRACK) as f64;
    let seeds_bytes = all_comment_bytes as f64;
    println!(
        "{TRACKS} tracks, {CLIENTS} clients (one track each), {COMMENTS_PER_TRACK} comments per track"
    );
    println!("{:<34} {:>12} {:>14}", "per client", "messages", "bytes");
    println!(
        "{:<34} {:>12.1} {:>14.0}",
        "herald (server-side routing)", per_client_messages, per_client_bytes
    );
    println!(
        "{:<34} {:>12.1} {:>14.0}",
        "seeds (broadcast, filter in browser)", seeds_messages, seeds_bytes
    );
    println!(
        "{:<34} {:>12.1}x {:>13.1}x",
        "reduction",
        seeds_messages / per_client_messages,
        seeds_bytes / per_client_bytes
    );
    server.shutdown().await;
    Ok(())
}
