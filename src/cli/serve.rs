//! `herald serve`: resolve the configuration, start the node, run until SIGINT or SIGTERM.

use anyhow::Context;

use crate::config::{ServeArgs, resolve};
use crate::server::Server;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    crate::telemetry::init_logging();
    let config = resolve(&args, super::env_secret)?;
    for variable in config.uses_dev_secrets() {
        tracing::warn!(
            variable,
            "using the built-in development secret: set it before going to production"
        );
    }
    let server = Server::start(config).await.context("cannot start")?;
    // One line on stdout that harnesses (and people) can wait for.
    println!(
        "herald listening node_id={} http={}",
        server.state().config.node_id,
        server.http_addr()
    );
    tokio::select! {
        _ = wait_for_signal() => server.shutdown().await,
        _ = server.leave_requested() => server.leave().await,
    }
    Ok(())
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
