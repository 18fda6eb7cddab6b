//! gRPC channels to other Accrue services.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Why a channel could not be made.
#[derive(Debug, thiserror::Error)]
#[error("invalid service URL {url:?}: {source}")]
pub struct ClientError {
    url: String,
    #[source]
    source: tonic::transport::Error,
}

/// A lazily connecting channel to `url` (`http://127.0.0.1:50051`): the
/// service may start before its peers and reconnects when they come back.
pub fn channel(url: &str) -> Result<Channel, ClientError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|source| ClientError { url: url.to_string(), source })?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .http2_adaptive_window(true);
    Ok(endpoint.connect_lazy())
}
