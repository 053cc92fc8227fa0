//! Logging and metrics set-up: `tracing` to stderr (text, or JSON lines carrying the node id),
//! and one process-wide Prometheus recorder whose every `herald_*` series is described and
//! registered at start ([`catalog`]).

pub mod catalog;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often histogram samples are folded into their buckets when nobody scrapes (they are
/// kept in a lock-free buffer until then).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the metrics recorder once per process (later calls are no-ops): histograms get
/// their buckets, and every catalogued series is described and registered at zero.
pub fn install_metrics() {
    PROMETHEUS.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for series in catalog::SERIES {
            if let Some(buckets) = series.buckets {
                builder = match builder
                    .set_buckets_for_metric(Matcher::Full(series.name.to_string()), buckets)
                {
                    Ok(builder) => builder,
                    Err(error) => unreachable!("{}: {error}", series.name),
                };
            }
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).ok()?;
        catalog::describe_and_register();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("herald-metrics".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the metrics upkeep thread");
        }
        Some(handle)
    });
}

/// The Prometheus text exposition of every metric: what the recorder holds, then a `HELP`
/// and `TYPE` line for each catalogued series that has no sample yet (a per-peer series on a
/// node without peers), so that every series is listed from the start.
pub fn render_metrics() -> String {
    match PROMETHEUS.get() {
        Some(Some(handle)) => catalog::complete(handle.render()),
        _ => String::new(),
    }
}

/// How `herald serve` writes its log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `fields` (with `message`), `target`,
    /// the spans, and `node_id`.
    Json,
}

/// Structured logs to stderr as text; `HERALD_LOG` (or `RUST_LOG`) sets the filter, default
/// `info`.
pub fn init_logging() {
    init_logging_as(LogFormat::Text, None);
}

/// Structured logs to stderr in `format`; in JSON every line carries `node_id` when given.
/// `HERALD_LOG` (or `RUST_LOG`) sets the filter, default `info`. Only the first call of a
/// process installs anything.
pub fn init_logging_as(format: LogFormat, node_id: Option<&str>) {
    let filter = std::env::var("HERALD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::new(filter);
    let _ = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .event_format(WithNodeId::new(
                tracing_subscriber::fmt::format().json(),
                node_id,
            ))
            .try_init(),
    };
}

/// A JSON event format that adds `"node_id"` to every object the inner format writes.
struct WithNodeId<F> {
    inner: F,
    /// `,"node_id":"..."`, or empty.
    field: String,
}

impl<F> WithNodeId<F> {
    fn new(inner: F, node_id: Option<&str>) -> Self {
        let field = node_id
            .and_then(|id| serde_json::to_string(id).ok())
            .map(|id| format!(",\"node_id\":{id}"))
            .unwrap_or_default();
        Self { inner, field }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithNodeId<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end_matches('\n');
        match body.strip_suffix('}') {
            Some(open) if !self.field.is_empty() => {
                writer.write_str(open)?;
                writer.write_str(&self.field)?;
                writer.write_str("}\n")
            }
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_the_node_id() {
        #[derive(Clone, Default)]
        struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .event_format(WithNodeId::new(
                tracing_subscriber::fmt::format().json(),
                Some("n\"1"),
            ))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(peer = "n2", count = 3, "link up");
            tracing::warn!("second line");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["node_id"], "n\"1");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["fields"]["message"], "link up");
        assert_eq!(lines[0]["fields"]["peer"], "n2");
        assert_eq!(lines[0]["fields"]["count"], 3);
        assert!(lines[0]["timestamp"].is_string());
        assert_eq!(lines[1]["node_id"], "n\"1");
    }
}
