//! Logging and metrics set-up: `tracing` to stderr, and one process-wide Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the metrics recorder once per process (later calls are no-ops).
pub fn install_metrics() {
    PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).ok().map(|()| handle)
    });
}

/// The Prometheus text exposition of every metric.
pub fn render_metrics() -> String {
    match PROMETHEUS.get() {
        Some(Some(handle)) => handle.render(),
        _ => String::new(),
    }
}

/// Structured logs to stderr; `RUST_LOG` (or `HERALD_LOG`) sets the filter, default `info`.
pub fn init_logging() {
    let filter = std::env::var("HERALD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
