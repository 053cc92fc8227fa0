//! Assembling a node: open the store, build the hub and backplane, serve HTTP, and shut down
//! gracefully (stop accepting, close clients with 1001, flush the store).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::auth::Authenticator;
use crate::backplane::{Backplane, CommitFanout, LocalBackplane};
use crate::config::{BackplaneKind, Config};
use crate::event::HybridClock;
use crate::hub::Hub;
use crate::store::{Store, StoreError, StoreOptions};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("backplane {0:?} is not available in this build yet")]
    BackplaneUnavailable(BackplaneKind),
}

/// A running node. Dropping it without [`Server::shutdown`] leaves the tasks running until the
/// runtime ends.
pub struct Server {
    http_addr: SocketAddr,
    state: AppState,
    stop: watch::Sender<bool>,
    http_task: JoinHandle<()>,
}

impl Server {
    /// Starts a node on `config.http` (port 0 picks a free port; see [`Server::http_addr`]).
    pub async fn start(config: Config) -> Result<Self, ServerError> {
        crate::telemetry::install_metrics();
        let listener =
            TcpListener::bind(config.http)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.http,
                    source,
                })?;
        Self::start_on(config, listener).await
    }

    /// Starts a node on an already bound listener.
    pub async fn start_on(config: Config, listener: TcpListener) -> Result<Self, ServerError> {
        crate::telemetry::install_metrics();
        let http_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.http,
            source,
        })?;
        let backplane: Arc<dyn Backplane> = match config.backplane {
            BackplaneKind::Local => Arc::new(LocalBackplane),
            other => return Err(ServerError::BackplaneUnavailable(other)),
        };
        let clock = Arc::new(HybridClock::new());
        let mut options = StoreOptions::in_dir(&config.data_dir);
        options.sync = config.store_sync;
        let delivered = Store::read_version_vector(&options.path)?;
        let hub = Hub::new(delivered, config.limits.client_queue);
        let sink = Arc::new(CommitFanout {
            hub: Arc::clone(&hub),
            backplane: Arc::clone(&backplane),
        });
        let store = Store::open(&options, config.node_id.clone(), clock, sink)?;
        let auth = Arc::new(Authenticator::new(&config.jwt_secret, &config.api_key));
        let state = AppState {
            config: Arc::new(config),
            store,
            hub,
            auth,
            backplane,
            started: Instant::now(),
        };
        let (stop, mut stopped) = watch::channel(false);
        let app = api::router(state.clone());
        let http_task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(%error, "http server failed");
            }
        });
        tracing::info!(node_id = %state.config.node_id, http = %http_addr, data = %state.config.data_dir.display(), "node started");
        Ok(Self {
            http_addr,
            state,
            stop,
            http_task,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting, closes every client with 1001, waits (up to the configured grace) for
    /// the sessions to end, then commits what is queued and closes the store.
    pub async fn shutdown(self) {
        tracing::info!(node_id = %self.state.config.node_id, "shutting down");
        let _ = self.stop.send(true);
        self.state.hub.close_all();
        let grace = self.state.config.shutdown_grace;
        let mut http_task = self.http_task;
        if tokio::time::timeout(grace, &mut http_task).await.is_err() {
            tracing::warn!("clients still connected after the grace period; closing anyway");
            http_task.abort();
        }
        self.state.store.close().await;
        tracing::info!(node_id = %self.state.config.node_id, "stopped");
    }
}
