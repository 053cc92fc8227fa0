//! Assembling a node: open the store, build the hub and backplane, serve HTTP, and shut down
//! gracefully (stop accepting, close clients with 1001, flush the store).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::admission::Admission;
use crate::api::tls::{TlsConfig, TlsError};
use crate::api::{self, AppState, Lifecycle, Services};
use crate::auth::Authenticator;
use crate::backplane::{Backplane, LocalBackplane, MeshBackplane};
use crate::cluster::{Cluster, SelfDescription, keys, resolve_gossip_addr};
use crate::config::{BackplaneKind, Config};
use crate::dispatcher::{DispatchFaults, start_dispatcher};
use crate::event::HybridClock;
use crate::hub::{CloseReason, Hub};
use crate::mesh::{LocalIdentity, Mesh};
use crate::presence::Presence;
use crate::store::{Store, StoreError, StoreOptions};

/// Binds the mesh endpoint, joins gossip, and builds the mesh backplane (not yet running).
async fn start_mesh(
    config: &Config,
    http_addr: SocketAddr,
) -> Result<
    (
        Arc<MeshBackplane>,
        tokio::sync::mpsc::Receiver<crate::mesh::Inbound>,
    ),
    ServerError,
> {
    let generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let local = LocalIdentity {
        node_id: config.node_id.clone(),
        cluster_id: config.cluster_id.clone(),
        generation,
    };
    let (mesh, inbound) = Mesh::start(config.mesh, local, &config.cluster_secret)
        .map_err(|e| ServerError::Cluster(e.to_string()))?;
    let mesh_addr = mesh.local_addr().unwrap_or(config.mesh);
    let gossip_addr = resolve_gossip_addr(config.gossip).map_err(|source| ServerError::Bind {
        addr: config.gossip,
        source,
    })?;
    let description = SelfDescription {
        node_id: config.node_id.clone(),
        cluster_id: config.cluster_id.clone(),
        generation,
        gossip_addr,
        gossip_advertise_addr: config.advertise.gossip.unwrap_or(gossip_addr),
        seeds: config.seeds.clone(),
        initial_keys: vec![
            (
                keys::MESH_ADDR.to_string(),
                config.advertise.mesh.unwrap_or(mesh_addr).to_string(),
            ),
            (
                keys::HTTP_ADDR.to_string(),
                config.advertise.http.unwrap_or(http_addr).to_string(),
            ),
            (
                keys::VERSION.to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            (
                keys::REPLICATION.to_string(),
                config.replication.to_string(),
            ),
        ],
    };
    let transport = crate::cluster::sealed_transport::SealedUdpTransport::new(
        &config.cluster_secret,
        &config.cluster_id,
        config.max_clock_drift,
    );
    let cluster = Cluster::join(description, &transport)
        .await
        .map_err(|e| ServerError::Cluster(e.to_string()))?;
    tracing::info!(node_id = %config.node_id, mesh = %mesh_addr, gossip = %gossip_addr, seeds = ?config.seeds, "joined gossip");
    Ok((
        MeshBackplane::new(mesh, cluster, config.max_clock_drift),
        inbound,
    ))
}

/// Builds the Redis backplane (not yet running). It connects in the background: a node whose
/// Redis is unreachable still starts, reports not ready, and joins when Redis appears.
#[cfg(feature = "redis")]
fn start_redis(
    config: &Config,
    http_addr: SocketAddr,
) -> Result<Arc<crate::backplane::RedisBackplane>, ServerError> {
    let url = config
        .redis_url
        .clone()
        .ok_or_else(|| ServerError::Redis("redis_url is required with backplane = redis".into()))?;
    let backplane = crate::backplane::RedisBackplane::connect(crate::backplane::RedisOptions {
        url,
        ca: config.redis_ca.clone(),
        cluster_id: config.cluster_id.clone(),
        node_id: config.node_id.clone(),
        http_addr: config.advertise.http.unwrap_or(http_addr),
        https: config.tls.is_some(),
        snapshot_token: crate::backplane::peer_snapshot::snapshot_token(
            &config.cluster_secret,
            &config.cluster_id,
        ),
        snapshot_http: crate::backplane::peer_snapshot::client(config.tls_ca.as_deref())
            .map_err(ServerError::PeerTls)?,
    })
    .map_err(|e| ServerError::Redis(e.to_string()))?;
    tracing::info!(node_id = %config.node_id, "redis backplane connecting");
    Ok(backplane)
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("redis: {0}")]
    Redis(String),
    #[error("tls: {0}")]
    Tls(TlsError),
    #[error("tls_ca: {0}")]
    PeerTls(crate::tls_client::ClientTlsError),
    #[error("backplane {0:?} is not available in this build")]
    BackplaneUnavailable(BackplaneKind),
}

/// Binds the listener of `config.metrics` (`--metrics ADDR`), if any: bound before the node
/// starts, so that an address in use fails the start.
async fn bind_metrics(config: &Config) -> Result<Option<TcpListener>, ServerError> {
    let Some(addr) = config.metrics else {
        return Ok(None);
    };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Serves `/metrics` alone on `listener` until `stopped` fires.
fn serve_metrics(
    listener: TcpListener,
    state: &AppState,
    mut stopped: watch::Receiver<bool>,
) -> (SocketAddr, JoinHandle<()>) {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| state.config.metrics.unwrap_or(state.config.http));
    let app = api::metrics_router(state.clone());
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "metrics listener failed");
        }
    });
    tracing::info!(metrics = %addr, "metrics listening");
    (addr, task)
}

/// A running node. Dropping it without [`Server::shutdown`] leaves the tasks running until the
/// runtime ends.
pub struct Server {
    http_addr: SocketAddr,
    state: AppState,
    stop: watch::Sender<bool>,
    http_task: JoinHandle<()>,
    /// The `/metrics` listener of `--metrics ADDR`.
    metrics: Option<(SocketAddr, JoinHandle<()>)>,
    tls: Option<TlsConfig>,
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until `stopped` fires; then lets
/// open connections finish (TLS: for at most `grace`, after which they are cut).
fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<TlsConfig>,
    mut stopped: watch::Receiver<bool>,
    grace: std::time::Duration,
) -> Result<JoinHandle<()>, ServerError> {
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let Some(tls) = tls else {
        return Ok(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(%error, "http server failed");
            }
        }));
    };
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let listener = listener
        .into_std()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        let _ = stopped.wait_for(|stop| *stop).await;
        stopping.graceful_shutdown(Some(grace));
    });
    Ok(tokio::spawn(async move {
        if let Err(error) = axum_server::from_tcp_rustls(listener, tls.rustls())
            .handle(handle)
            .serve(app)
            .await
        {
            tracing::error!(%error, "https server failed");
        }
    }))
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
        let metrics_listener = bind_metrics(&config).await?;
        let (stop, stopped) = watch::channel(false);
        let mut mesh_parts = None;
        #[cfg(feature = "redis")]
        let mut redis_part = None;
        let backplane: Arc<dyn Backplane> = match config.backplane {
            BackplaneKind::Local => Arc::new(LocalBackplane),
            BackplaneKind::Mesh => {
                let (mesh, inbound) = start_mesh(&config, http_addr).await?;
                mesh_parts = Some((Arc::clone(&mesh), inbound));
                mesh
            }
            #[cfg(feature = "redis")]
            BackplaneKind::Redis => {
                let redis = start_redis(&config, http_addr)?;
                redis_part = Some(Arc::clone(&redis));
                redis
            }
            #[cfg(not(feature = "redis"))]
            other => return Err(ServerError::BackplaneUnavailable(other)),
        };
        let clock = Arc::new(HybridClock::with_max_drift(config.max_clock_drift));
        let mut options = StoreOptions::in_dir(&config.data_dir);
        options.sync = config.store_sync;
        // With `replication = 2` a peer's acknowledgement is what a publish answers on, so
        // what a replica stores must reach its disk before it acknowledges.
        if config.replication >= 2 {
            options.replica_sync = config.store_sync;
        }
        options.retention = config.history.clone();
        let delivered = Store::read_version_vector(&options.path)?;
        let hub = Hub::new(delivered, config.limits.client_queue);
        let faults = DispatchFaults {
            skip_delivery: config.fault_skip_delivery,
        };
        if faults.skip_delivery.is_some() {
            tracing::warn!(
                ?faults,
                "fault hook set: this node will lose an event on purpose"
            );
        }
        let sink = start_dispatcher(Arc::clone(&hub), Arc::clone(&backplane), faults);
        let store = Store::open(&options, config.node_id.clone(), clock, sink)?;
        if matches!(config.backplane, BackplaneKind::Local) {
            // No peer can hold events of this node's origin.
            store.own_fence().open();
        }
        let auth = Arc::new(Authenticator::new(&config.jwt_secret, &config.api_key));
        let admission = Arc::new(Admission::new(&config.limits));
        let presence = Presence::new(
            config.presence.clone(),
            config.node_id.clone(),
            Arc::clone(&hub),
        );
        let state = AppState::new(Services {
            config: Arc::new(config),
            store,
            hub,
            auth,
            backplane,
            started: Instant::now(),
            lifecycle: Arc::new(Lifecycle::default()),
            admission,
            presence,
        });
        if let Some((mesh, inbound)) = mesh_parts {
            mesh.run(
                state.store.clone(),
                Arc::clone(&state.hub),
                Arc::clone(&state.presence),
                inbound,
                stopped.clone(),
            );
        }
        #[cfg(feature = "redis")]
        if let Some(redis) = redis_part {
            redis.run(
                state.store.clone(),
                Arc::clone(&state.hub),
                Arc::clone(&state.presence),
                stopped.clone(),
            );
        }
        let metrics =
            metrics_listener.map(|listener| serve_metrics(listener, &state, stopped.clone()));
        let tls = match &state.config.tls {
            Some(files) => Some(TlsConfig::load(files).map_err(ServerError::Tls)?),
            None => None,
        };
        let app = api::router(state.clone());
        let http_task = serve_http(
            listener,
            app,
            tls.clone(),
            stopped,
            state.config.shutdown_grace,
        )?;
        tracing::info!(node_id = %state.config.node_id, http = %http_addr, data = %state.config.data_dir.display(), "node started");
        Ok(Self {
            http_addr,
            state,
            stop,
            http_task,
            metrics,
            tls,
        })
    }

    /// Whether the HTTP address serves HTTPS.
    pub fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads the TLS certificate and key again (SIGHUP): new handshakes get them, open
    /// connections stay as they are. Does nothing without TLS.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where `/metrics` is served on its own (`--metrics ADDR`), if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Leaves the cluster gracefully: closes clients with 1012 (reconnect elsewhere, with the
    /// cursor), announces the leave on gossip so peers need not wait for the failure detector,
    /// then shuts down.
    pub async fn leave(self) {
        tracing::info!(node_id = %self.state.config.node_id, "leaving the cluster");
        self.state.hub.close_all(CloseReason::Leaving);
        if let Some(cluster) = self.state.backplane.cluster() {
            cluster.leave().await;
        }
        self.shutdown().await;
    }

    /// Resolves when someone asked this node to leave (`POST /api/cluster/leave`).
    pub async fn leave_requested(&self) {
        self.state.lifecycle.leave_requested().await;
    }

    /// Stops accepting, closes every client with 1001, waits (up to the configured grace) for
    /// the sessions to end, then commits what is queued and closes the store.
    pub async fn shutdown(self) {
        tracing::info!(node_id = %self.state.config.node_id, "shutting down");
        let _ = self.stop.send(true);
        self.state.hub.close_all(CloseReason::Shutdown);
        let grace = self.state.config.shutdown_grace;
        let mut http_task = self.http_task;
        if tokio::time::timeout(grace, &mut http_task).await.is_err() {
            tracing::warn!("clients still connected after the grace period; closing anyway");
            http_task.abort();
        }
        if let Some((_, task)) = self.metrics {
            let _ = tokio::time::timeout(grace, task).await;
        }
        self.state.backplane.close();
        self.state.store.close().await;
        tracing::info!(node_id = %self.state.config.node_id, "stopped");
    }
}
