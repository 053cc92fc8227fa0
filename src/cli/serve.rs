//! `herald serve`: resolve the configuration, start the node, run until SIGINT or SIGTERM.

use anyhow::Context;

use crate::config::{ServeArgs, resolve};
use crate::server::Server;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // An invalid configuration is one plain line on stderr (see `cli::main`), before any log.
    let config = resolve(&args, super::env_secret)?;
    init_logging(&args, &config);
    // Before anything else: a signal that came before its handler would kill the process
    // with the default action, without a graceful shutdown (a SIGTERM right after `READY=1`,
    // or a SIGHUP during start-up).
    let (mut stop, mut hangups) = listen_for_signals()?;
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
        _ = stop.next() => {
            notify_systemd(sd_notify::NotifyState::Stopping, "shutting down");
            server.shutdown().await
        }
        _ = server.leave_requested() => {
            notify_systemd(sd_notify::NotifyState::Stopping, "leaving the cluster");
            server.leave().await
        }
        _ = reload_tls_on_hangup(&server, &mut hangups) => {}
    }
    Ok(())
}

/// Logs in the `--log-format` asked for; JSON lines carry the node id. Nothing is logged
/// before the configuration is resolved.
fn init_logging(args: &ServeArgs, config: &crate::config::Config) {
    let format = args.log_format.unwrap_or_default();
    crate::telemetry::init_logging_as(format, Some(config.node_id.as_str()));
}

/// SIGINT and SIGTERM, listened for from the start (see [`listen_for_signals`]).
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

/// SIGHUP, listened for from the start.
struct Hangups {
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

/// Installs the handlers now (tokio's `ctrl_c()` would only when first polled).
fn listen_for_signals() -> anyhow::Result<(StopSignals, Hangups)> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let stop = StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        };
        let hangups = Hangups {
            hangup: signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?,
        };
        Ok((stop, hangups))
    }
    #[cfg(not(unix))]
    Ok((StopSignals {}, Hangups {}))
}

impl StopSignals {
    /// The next SIGINT or SIGTERM (also one that came before this was called).
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

impl Hangups {
    /// The next SIGHUP; never on platforms without it.
    async fn next(&mut self) {
        #[cfg(unix)]
        if self.hangup.recv().await.is_some() {
            return;
        }
        std::future::pending::<()>().await
    }
}

/// On every SIGHUP, reads the TLS certificate and key again (open connections keep theirs).
/// Never returns.
async fn reload_tls_on_hangup(server: &Server, hangups: &mut Hangups) {
    loop {
        hangups.next().await;
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
