//! Logs and metrics: tracing subscriber setup and the Prometheus recorder.

pub mod metrics;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use omnigate_config::{Config, Mode};
use tokio_util::sync::CancellationToken;
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
///
/// Histograms are kept as samples until the next scrape or [`upkeep_until_stopped`] folds them in; both are
/// cheap because every histogram has fixed buckets (a summary would insert each sample into a sketch).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(metrics::SECONDS_BUCKETS)
                // Only an empty list of buckets is refused.
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding application); then ours only renders.
            drop(::metrics::set_global_recorder(recorder));
            metrics::describe_all();
            metrics::resolve_hot_path();
            handle
        })
        .clone()
}

/// How often [`upkeep_until_stopped`] folds recorded histogram samples in.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds histogram samples into their buckets every `every` until `stop`: without it they pile up between
/// scrapes, and without a scraper they would grow without bound (the recorder leaves upkeep to its owner).
pub async fn upkeep_until_stopped(handle: PrometheusHandle, every: Duration, stop: CancellationToken) {
    crate::shutdown::every_until_stopped(every, stop, || handle.run_upkeep()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn histograms_have_buckets_and_upkeep_stops_with_its_token() {
        let handle = prometheus();
        for _ in 0..3 {
            metrics::bus_command(0.000_03);
        }
        let stop = CancellationToken::new();
        let stop_soon = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stop.cancel();
        };
        tokio::join!(
            upkeep_until_stopped(handle.clone(), Duration::from_millis(5), stop.clone()),
            stop_soon
        );
        let text = handle.render();
        assert!(
            text.contains("omnigate_bus_command_seconds_bucket{le=\"0.00005\"}"),
            "{text}"
        );
        assert!(!text.contains("omnigate_bus_command_seconds{quantile"), "{text}");
    }
}
