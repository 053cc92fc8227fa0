//! `herald serve`: resolve the configuration, start the node, run until SIGINT or SIGTERM.

use anyhow::Context;

use crate::config::{ServeArgs, resolve};
use crate::server::Server;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // An invalid configuration is one plain line on stderr (see `cli::main`), before any log.
    let config = resolve(&args, super::env_secret)?;
    init_logging(&args, &config);
    raise_open_files_limit(config.limits.max_connections);
    for variable in config.uses_dev_secrets() {
        tracing::warn!(
            variable,
            "using the built-in development secret: set it before going to production"
        );
    }
    let server = Server::start(config).await.context("cannot start")?;
    metrics::gauge!("herald_runtime_workers")
        .set(tokio::runtime::Handle::current().metrics().num_workers() as f64);
    // One line on stdout that harnesses (and people) can wait for.
    println!(
        "herald listening node_id={} http={} scheme={}",
        server.state().config.node_id,
        server.http_addr(),
        if server.serves_tls() { "https" } else { "http" }
    );
    notify_systemd(
        sd_notify::NotifyState::Ready,
        &format!("listening on {}", server.http_addr()),
    );
    tokio::select! {
        _ = wait_for_signal() => {
            notify_systemd(sd_notify::NotifyState::Stopping, "shutting down");
            server.shutdown().await
        }
        _ = server.leave_requested() => {
            notify_systemd(sd_notify::NotifyState::Stopping, "leaving the cluster");
            server.leave().await
        }
        _ = reload_tls_on_hangup(&server) => {}
    }
    Ok(())
}

/// Logs in the `--log-format` asked for; JSON lines carry the node id. Nothing is logged
/// before the configuration is resolved.
fn init_logging(args: &ServeArgs, config: &crate::config::Config) {
    let format = args.log_format.unwrap_or_default();
    crate::telemetry::init_logging_as(format, Some(config.node_id.as_str()));
}

/// On every SIGHUP, reads the TLS certificate and key again (open connections keep theirs).
/// Never returns.
async fn reload_tls_on_hangup(server: &Server) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                while hangups.recv().await.is_some() {
                    if !server.serves_tls() {
                        tracing::info!("SIGHUP: no TLS certificate to reload");
                        continue;
                    }
                    match server.reload_tls() {
                        Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                        Err(error) => {
                            tracing::error!(%error, "SIGHUP: TLS certificate not reloaded; the old one stays")
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot listen for SIGHUP"),
        }
    }
    std::future::pending::<()>().await
}

/// Tells systemd (`Type=notify`; nothing without `NOTIFY_SOCKET`) what the node is doing:
/// `READY=1` once it listens, `STOPPING=1` when a shutdown begins, each with a `STATUS=`.
fn notify_systemd(state: sd_notify::NotifyState<'_>, status: &str) {
    if let Err(error) = sd_notify::notify(&[state, sd_notify::NotifyState::Status(status)]) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}

/// Every socket is a file descriptor: raises the soft open-file limit to the hard one, and says
/// what it got (and warns when it is below `max_connections`, which sockets would then hit).
fn raise_open_files_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(limit, "open-file limit");
            if limit < max_connections as u64 {
                tracing::warn!(
                    limit,
                    max_connections,
                    "the open-file limit is below max_connections: sockets past it are refused"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read or raise the open-file limit"),
    }
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
