//! Logging and tracing setup for binaries (DESIGN §6 "Observability").
//!
//! - Logs go to stderr, filtered by `RUST_LOG` (else the binary's default):
//!   compact text, with colours only when stderr is a terminal, or one JSON
//!   object per line with `ACCRUE_LOG_FORMAT=json`.
//! - Traces are exported over OTLP/gRPC (opentelemetry-otlp's tonic exporter)
//!   only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the exporter and SDK read
//!   the other standard variables themselves (`OTEL_EXPORTER_OTLP_HEADERS`,
//!   `…_TIMEOUT`, `…_COMPRESSION`, `OTEL_TRACES_SAMPLER`/`…_ARG`,
//!   `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`). `service.name` is the one the
//!   binary passes (`accrue-ledger`) unless `OTEL_SERVICE_NAME` or
//!   `OTEL_RESOURCE_ATTRIBUTES` names one. Only spans at INFO and above from
//!   Accrue's own crates are exported, whatever `RUST_LOG` says, so quieter
//!   logs never break a trace.
//! - W3C trace context (`traceparent`) crosses every gRPC call
//!   ([`propagation`]); the OpenTelemetry SDK ignores `OTEL_SDK_DISABLED`, so
//!   leaving the endpoint unset is how tracing is turned off.

pub mod propagation;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Added to every default filter: Postgres NOTICEs only at WARN and above.
const QUIET_NOTICES: &str = "sqlx::postgres::notice=warn";

/// The variable that selects the log format: `json`, else text.
pub const LOG_FORMAT_ENV: &str = "ACCRUE_LOG_FORMAT";

/// Set once an OpenTelemetry layer is installed: only then are the extra
/// per-saga spans worth making ([`tracing_enabled`]).
static TRACING: AtomicBool = AtomicBool::new(false);

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (a malformed endpoint…).
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` names a protocol this build lacks.
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL={0:?} is not supported: this build exports over grpc only")]
    Protocol(String),
}

/// What [`init`] installed; keep it for the life of the process and call
/// [`Telemetry::shutdown`] on the way out so that buffered spans are sent.
#[derive(Debug, Default)]
#[must_use = "dropping the guard without shutdown() may lose the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are being exported.
    pub fn is_tracing(&self) -> bool {
        self.provider.is_some()
    }

    /// [`Telemetry::shutdown`] from async code: on a blocking thread, since
    /// the exporter it waits for needs the runtime's workers.
    pub async fn flush(self) {
        if self.provider.is_some() {
            let _ = tokio::task::spawn_blocking(move || self.shutdown()).await;
        }
    }

    /// Flushes buffered spans and stops the exporter (blocks until the
    /// exporter has answered or timed out; from async code use
    /// [`Telemetry::flush`]).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {error}");
        }
    }
}

/// Whether an OpenTelemetry layer is installed in this process.
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Installs the global subscriber for a binary named `service_name`
/// (`accrue-ledger`, the default `service.name`): logs as described above,
/// `default_filter` when `RUST_LOG` is unset ("info"), and the OTLP exporter
/// when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Idempotent: when a subscriber
/// is already installed, later calls install nothing. An exporter that cannot
/// be built is reported on stderr and logging goes on without it. Call it
/// inside the Tokio runtime (the gRPC exporter needs it).
pub fn init(service_name: &str, default_filter: &str) -> Telemetry {
    let provider = if otlp_configured() {
        match otlp_provider(service_name) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("{service_name}: traces will not be exported: {error}");
                None
            }
        }
    } else {
        None
    };
    install(default_filter, provider)
}

/// Installs the global subscriber like [`init`], exporting spans through
/// `provider` (tests hand in one over the SDK's in-memory exporter).
pub fn init_with_provider(default_filter: &str, provider: SdkTracerProvider) -> Telemetry {
    install(default_filter, Some(provider))
}

fn otlp_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.trim().is_empty()))
}

/// A batch-exporting provider over OTLP/gRPC; the exporter reads the
/// endpoint, headers, timeout and compression from the `OTEL_*` variables.
fn otlp_provider(service_name: &str) -> Result<SdkTracerProvider, TelemetryError> {
    for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Ok(protocol) = std::env::var(name)
            && !protocol.is_empty()
            && protocol != "grpc"
        {
            return Err(TelemetryError::Protocol(protocol));
        }
    }
    use opentelemetry_otlp::WithExportConfig as _;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    // The exporter reads OTEL_EXPORTER_OTLP_TRACES_ENDPOINT itself; the
    // generic variable is a base URL, used as it is for gRPC.
    if std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_err()
        && let Ok(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
    {
        exporter = exporter.with_endpoint(endpoint);
    }
    let exporter = exporter.build()?;
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource(service_name)).build())
}

/// The process's resource: the SDK's detectors (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`), with `service_name` unless they name one.
fn resource(service_name: &str) -> opentelemetry_sdk::Resource {
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|name| !name.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.split(',').any(|pair| pair.trim_start().starts_with("service.name=")));
    let builder = opentelemetry_sdk::Resource::builder();
    if named_by_env { builder.build() } else { builder.with_service_name(service_name.to_string()).build() }
}

/// Whether `ACCRUE_LOG_FORMAT=json` asks for JSON lines.
fn json_requested() -> bool {
    std::env::var(LOG_FORMAT_ENV).is_ok_and(|format| format.eq_ignore_ascii_case("json"))
}

/// The log layer: one JSON object per line (the event's fields flattened,
/// with its current span), or compact text, coloured only when `ansi`.
fn log_layer<S, W>(json: bool, ansi: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(writer).boxed()
    }
}

fn install(default_filter: &str, provider: Option<SdkTracerProvider>) -> Telemetry {
    // Postgres NOTICEs reach the log at INFO through sqlx ("relation
    // _sqlx_migrations already exists, skipping" on every start); they are
    // the server's chatter, not the service's, so only their WARN and above
    // pass unless RUST_LOG asks for them.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_filter},{QUIET_NOTICES}")));
    let logs = log_layer(json_requested(), std::io::stderr().is_terminal(), std::io::stderr).with_filter(filter);
    let traces = provider.as_ref().map(|provider| {
        // Accrue's own spans (rpc, saga.step) at INFO and above; the
        // transport's and the driver's stay out of traces.
        // (Targets match by prefix: "accrue" covers accrue_kit, accrue_saga…)
        let accrue_only = Targets::new().with_target("accrue", LevelFilter::INFO).with_default(LevelFilter::OFF);
        tracing_opentelemetry::layer().with_tracer(provider.tracer("accrue")).with_filter(accrue_only)
    });
    let installed = tracing_subscriber::registry().with(logs).with(traces).try_init().is_ok();
    if !installed {
        // Another subscriber won (tests, a second init): spans would not
        // reach this provider, so keep nothing.
        if let Some(provider) = provider {
            let _ = provider.shutdown();
        }
        return Telemetry::default();
    }
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        TRACING.store(true, Ordering::Relaxed);
    }
    Telemetry { provider }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_logs_are_one_object_per_line_without_colour() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry()
            .with(log_layer(true, false, move || writer.clone()).with_filter(LevelFilter::INFO));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc", rpc.method = "PostEntries");
            let _entered = span.enter();
            tracing::info!(
                method = "accrue.ledger.v1.LedgerService/PostEntries",
                code = "OK",
                duration_ms = 1.5,
                "rpc"
            );
            tracing::info!("second line");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains('\u{1b}'), "no ANSI codes: {text}");
        let lines: Vec<serde_json::Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["code"], "OK");
        assert_eq!(lines[0]["method"], "accrue.ledger.v1.LedgerService/PostEntries");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["span"]["name"], "rpc");
    }
}
