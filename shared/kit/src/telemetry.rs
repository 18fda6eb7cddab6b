//! Logging setup for binaries: `RUST_LOG` filter, compact text to stderr.

/// Installs the global tracing subscriber (idempotent: later calls are no-ops).
/// `default_filter` applies when `RUST_LOG` is unset (e.g. "info").
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
