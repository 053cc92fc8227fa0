//! The command line: `herald serve`, `herald init`, `herald cluster`, `herald token`,
//! `herald secret`, `herald publish`, and the toolkit beside the server: `herald bench` (load) and
//! `herald chaos` (correctness under faults), which share nodes, clients and the HTTP client.
//!
//! Each subcommand is a small module; errors reach the user as one line on stderr and a
//! non-zero exit code.

pub mod bench;
pub mod chaos;
mod cluster;
pub mod init;
mod publish;
mod remote;
mod secret;
mod serve;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "A clustered real-time WebSocket server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (a single node on 127.0.0.1:8000 with no arguments).
    Serve(Box<crate::config::ServeArgs>),
    /// Write a commented configuration file for a production node, with fresh secrets.
    Init(Box<init::InitArgs>),
    /// Join, inspect or leave a cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Mint a user token signed with HERALD_JWT_SECRET.
    Token(token::TokenArgs),
    /// Print a fresh random secret (for HERALD_CLUSTER_SECRET, HERALD_JWT_SECRET, HERALD_API_KEY).
    Secret,
    /// Publish one event through a node's HTTP API.
    Publish(publish::PublishArgs),
    /// Load a node (or start its own) and report latency, throughput, CPU and correctness.
    Bench(bench::BenchArgs),
    /// Start a cluster (or drive running nodes), inject faults, and check that nothing
    /// acknowledged was lost, duplicated or reordered.
    Chaos(Box<chaos::ChaosArgs>),
    /// The storeless floor `herald bench --compare-bare` loads (a bare fan-out server).
    #[command(name = "bench-floor", hide = true)]
    BenchFloor,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(args) = &cli.command {
        if let Some(threads) = args.worker_threads {
            builder.worker_threads(threads.into());
        }
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::anyhow!("cannot start the runtime: {error}")),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Init(args) => init::run(*args),
            Command::Cluster(command) => cluster::run(command).await,
            Command::Token(args) => token::run(args),
            Command::Secret => secret::run(),
            Command::Publish(args) => publish::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Chaos(args) => chaos::run(*args).await,
            Command::BenchFloor => bench::serve_floor().await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("herald: error: {error:#}");
    ExitCode::from(2)
}

/// The secret or key named `env`, from the environment.
pub(crate) fn env_secret(env: &str) -> Option<String> {
    std::env::var(env).ok().filter(|v| !v.is_empty())
}
