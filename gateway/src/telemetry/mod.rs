//! Logs and metrics: tracing subscriber setup and the Prometheus recorder.

pub mod metrics;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use omnigate_config::{Config, Mode};
use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global log subscriber: JSON in production, pretty in development. `RUST_LOG` overrides the
/// configured filter. Calling it twice is harmless.
pub fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.filter));
    let json = match config.log.format.as_str() {
        "json" => true,
        "pretty" => false,
        _ => config.mode == Mode::Production,
    };
    let result = if json {
        fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(true)
            .try_init()
    } else {
        fmt().with_env_filter(filter).with_target(false).try_init()
    };
    drop(result);
}

/// The process-wide Prometheus recorder (installed on first use) and its render handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding application); then ours only renders.
            drop(::metrics::set_global_recorder(recorder));
            metrics::describe_all();
            metrics::resolve_hot_path();
            handle
        })
        .clone()
}
