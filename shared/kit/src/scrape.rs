//! Prometheus metrics over HTTP (DESIGN §6 "Observability"): a service
//! started with `--metrics-listen ADDR` (`ACCRUE_<SERVICE>_METRICS_LISTEN`;
//! off by default) serves the text exposition format at `GET /metrics`.
//!
//! The code records through the `metrics` crate, whose recorder is global to
//! the process; [`install`] makes it a Prometheus one (once). Every series
//! carries a `service` label (`ledger`), so when several services share a
//! process (`accrue dev`, tests) each one's metrics port serves the same,
//! whole-process registry and the label tells them apart. In production one
//! process runs one service, so its port serves only its own series.
//!
//! Series (base units; durations are histograms with
//! [`DURATION_BUCKETS`]):
//! - `accrue_rpc_requests_total`, `accrue_rpc_duration_seconds`
//!   {service, method, code} ([`crate::layers`]);
//! - `accrue_db_pool_connections` {service, state = idle | in_use} and
//!   `accrue_db_pool_max_connections` {service} ([`sample_pool`]);
//! - the saga engine's, the ledger's and the payouts' (see their crates and
//!   the README's "Observe" section).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Upper bounds of the buckets of every `…_seconds` histogram: 1 ms to 60 s.
pub const DURATION_BUCKETS: [f64; 15] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// How often the pool gauges are refreshed, and how often the recorder's
/// histograms are folded (its upkeep).
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The text exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The installed recorder's handle (a mutex, so that two services starting
/// at once install one recorder).
static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Why metrics cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Another recorder (a test's) already owns the process's metrics.
    #[error("another metrics recorder is installed in this process")]
    OtherRecorder,
    /// The bucket configuration was refused (a bug).
    #[error("metrics recorder: {0}")]
    Build(String),
    /// The HTTP server failed.
    #[error("metrics server: {0}")]
    Serve(#[source] std::io::Error),
}

/// The process's Prometheus recorder, installed as the global `metrics`
/// recorder on the first call; later calls return the same handle.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let mut installed = HANDLE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &DURATION_BUCKETS)
        .map_err(|error| MetricsError::Build(error.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::OtherRecorder)?;
    describe();
    *installed = Some(handle.clone());
    Ok(handle)
}

/// HELP lines for the series every service records.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("accrue_rpc_requests_total", "RPCs served, by service, method and gRPC code.");
    describe_histogram!(
        "accrue_rpc_duration_seconds",
        Unit::Seconds,
        "RPC latency to the last response frame, by service, method and gRPC code."
    );
    describe_gauge!("accrue_db_pool_connections", "Database pool connections, by service and state (idle, in_use).");
    describe_gauge!("accrue_db_pool_max_connections", "Database pool size limit, by service.");
}

/// Serves `GET /metrics` (the whole process's registry, see the module
/// docs) on `listener` until `shutdown` is cancelled; also runs the
/// recorder's upkeep meanwhile.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> Result<(), MetricsError> {
    let handle = install()?;
    let upkeep = handle.clone();
    let upkeep_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => upkeep.run_upkeep(),
                () = upkeep_shutdown.cancelled() => break,
            }
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], handle.render()) }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await.map_err(MetricsError::Serve)
}

/// Refreshes `service`'s pool gauges every second until `shutdown`:
/// `accrue_db_pool_connections{state="idle"|"in_use"}` and
/// `accrue_db_pool_max_connections`. Free when no recorder is installed.
pub async fn sample_pool(service: &'static str, pool: PgPool, shutdown: CancellationToken) {
    let max = f64::from(pool.options().get_max_connections());
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let size = pool.size();
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
        metrics::gauge!("accrue_db_pool_connections", "service" => service, "state" => "idle").set(f64::from(idle));
        metrics::gauge!("accrue_db_pool_connections", "service" => service, "state" => "in_use")
            .set(f64::from(size - idle));
        metrics::gauge!("accrue_db_pool_max_connections", "service" => service).set(max);
    }
}
