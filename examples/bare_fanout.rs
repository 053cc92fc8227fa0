//! The storeless floor herald's figures are compared against (see `herald::cli::bench`'s
//! floor module): a bare WebSocket fan-out server with herald's client protocol and socket
//! settings, and no store, auth, cursors or replication.
//!
//! `herald bench fanout --compare-bare` starts it itself and loads both in one run; to load it
//! by hand: `cargo run --release --example bare_fanout` (prints its address and pid), then
//! `herald bench fanout --http ADDR --server-pid PID`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    herald::cli::bench::serve_floor().await
}
