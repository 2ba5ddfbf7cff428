//! # AllFrame Prometheus
//!
//! Serves the metrics AllFrame reports (through the `metrics` facade, see
//! `allframe_cqrs_core::metric_names`) to Prometheus, and the store's health to load
//! balancers, over plain HTTP:
//!
//! * `GET /metrics`: the Prometheus text format; histograms with buckets, so that dashboards
//!   can take quantiles over many processes;
//! * `GET /health`: the health answer as JSON, with status 200 (ok, degraded) or 503 (failed).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use allframe_cqrs_core::{EventStoreBackend, Metered};
//! use allframe_prometheus::Exporter;
//!
//! // Install first: metrics registered before the recorder exists are not recorded.
//! let exporter = Exporter::install()?;
//! let backend = std::sync::Arc::new(Metered::new(allframe_backend_memory::InMemoryBackend::new()));
//! let checked = backend.clone();
//! let server = exporter.serve("127.0.0.1:9464".parse()?, move || {
//!     let backend = checked.clone();
//!     async move { backend.health().await }
//! }).await?;
//! println!("metrics on http://{}/metrics", server.local_addr());
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod http;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use allframe_cqrs_core::Health;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use http::Server;

/// Bucket bounds (seconds) of the latency histograms: from 10 µs (an in-memory read) to
/// 10 s (a stalled sync), about three per decade.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds of the group-commit size histogram (appends per group).
pub const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How often the exporter drains its histogram buffers (the exporter's "upkeep").
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExporterError {
    /// Another recorder is already installed in this process (the `metrics` facade holds one).
    #[error("a metrics recorder is already installed in this process: {0}")]
    AlreadyInstalled(String),
    /// The listening address could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The Prometheus recorder, installed as the process's `metrics` recorder.
#[derive(Clone, Debug)]
pub struct Exporter {
    handle: PrometheusHandle,
}

impl Exporter {
    /// Installs the Prometheus recorder for the whole process, with buckets for every
    /// histogram AllFrame reports and the meaning of every metric (`# HELP`).
    ///
    /// Install it before opening stores: a [`Metered`](allframe_cqrs_core::Metered) backend
    /// registers its metrics with the recorder installed when it is made.
    pub fn install() -> Result<Exporter, ExporterError> {
        let handle =
            builder().install_recorder().map_err(|error| ExporterError::AlreadyInstalled(error.to_string()))?;
        allframe_cqrs_core::metric_names::describe_all();
        Ok(Exporter { handle })
    }

    /// The current figures in the Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Serves `/metrics` and `/health` on `address` until the returned [`Server`] is stopped
    /// or dropped; `health` answers each `/health` request. Runs on the current tokio runtime.
    pub async fn serve<F, Fut>(self, address: SocketAddr, health: F) -> Result<Server, ExporterError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Health> + Send + 'static,
    {
        let listener =
            tokio::net::TcpListener::bind(address).await.map_err(|source| ExporterError::Bind { address, source })?;
        let upkeep = self.handle.clone();
        let upkeep = tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                every.tick().await;
                upkeep.run_upkeep();
            }
        });
        Ok(http::Server::start(listener, self, health, upkeep))
    }
}

/// The recorder's settings: true histograms (with buckets) for every `_seconds` metric and for
/// group sizes, so that quantiles can be taken in Prometheus across processes.
fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(allframe_cqrs_core::metric_names::COMMIT_GROUP_APPENDS.into()),
                GROUP_BUCKETS,
            )
        })
        .expect("the bucket lists are not empty")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_group_sizes_render_as_histograms_with_buckets() {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!(allframe_cqrs_core::metric_names::SYNC_DURATION, "backend" => "allsource")
                .record(0.002);
            metrics::histogram!(allframe_cqrs_core::metric_names::COMMIT_GROUP_APPENDS, "backend" => "allsource")
                .record(3.0);
        });
        let text = handle.render();
        assert!(
            text.contains("allframe_sync_duration_seconds_bucket{backend=\"allsource\",le=\"0.0025\"} 1"),
            "{text}"
        );
        assert!(text.contains("allframe_commit_group_appends_bucket{backend=\"allsource\",le=\"4\"} 1"), "{text}");
    }
}
