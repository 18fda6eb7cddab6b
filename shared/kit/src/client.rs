//! gRPC clients of Accrue services, all made by [`connect`] so that every
//! caller — a peer service, the CLI, a test — gets the same message limits,
//! connection settings, bearer token ([`Credential`]) and W3C trace
//! context ([`crate::telemetry::propagation::Traced`]). A URL whose host is a
//! DNS name is balanced over every address it resolves to, re-resolved
//! periodically ([`balance`]).

pub mod balance;

use std::time::Duration;

use accrue_proto::attribution::v1::attribution_service_client::AttributionServiceClient;
use accrue_proto::commission::v1::commission_service_client::CommissionServiceClient;
use accrue_proto::events::v1::event_service_client::EventServiceClient;
use accrue_proto::events::v1::webhook_service_client::WebhookServiceClient;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use accrue_proto::payouts::v1::payout_service_client::PayoutServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::auth::{Bearer, Credential};
use crate::telemetry::propagation::Traced;

use crate::server::MAX_MESSAGE_BYTES;

/// Call timeout between services: a peer that has not answered a batch call
/// in a minute is treated as down.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(60);
/// Call timeout of operators' bulk calls (the CLI's replay), which may carry
/// the largest batches.
pub const BULK_TIMEOUT: Duration = Duration::from_secs(900);

/// Why a channel could not be made.
#[derive(Debug, thiserror::Error)]
#[error("invalid service URL {url:?}: {source}")]
pub struct ClientError {
    url: String,
    #[source]
    source: tonic::transport::Error,
}

/// A lazily connecting channel to `url` (`http://127.0.0.1:50051`) with the
/// [`PEER_TIMEOUT`]: the service may start before its peers and reconnects
/// when they come back.
pub fn channel(url: &str) -> Result<Channel, ClientError> {
    channel_with_timeout(url, PEER_TIMEOUT)
}

/// The endpoint of `url` with every client's connection settings.
fn endpoint(url: &str, timeout: Duration) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_adaptive_window(true))
}

/// One lazy endpoint for an IP address or `localhost` (or outside a
/// runtime, where no resolver task can run); a channel balanced over the
/// name's addresses, looked up again every [`balance::resolve_interval`],
/// for a DNS name.
pub fn channel_with_timeout(url: &str, timeout: Duration) -> Result<Channel, ClientError> {
    let single = endpoint(url, timeout).map_err(|source| ClientError { url: url.to_string(), source })?;
    let uri = single.uri().clone();
    match uri.host() {
        Some(host) if balance::is_balanced_host(host) && tokio::runtime::Handle::try_current().is_ok() => {
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
            balanced_channel(url, timeout, balance::dns(host, port), balance::resolve_interval())
        }
        _ => Ok(single.connect_lazy()),
    }
}

/// A channel balanced over the addresses `resolver` returns for `url`'s
/// service, looked up again every `every` (each address gets `url`'s scheme
/// and settings). Must be called inside a Tokio runtime (it starts the
/// resolver task).
pub fn balanced_channel(
    url: &str,
    timeout: Duration,
    resolver: balance::Resolver,
    every: Duration,
) -> Result<Channel, ClientError> {
    let named = endpoint(url, timeout).map_err(|source| ClientError { url: url.to_string(), source })?;
    let scheme = named.uri().scheme_str().unwrap_or("http").to_string();
    Ok(balance::balanced(resolver, every, move |addr| match addr {
        Some(addr) => endpoint(&format!("{scheme}://{addr}"), timeout),
        None => Ok(named.clone()),
    }))
}

/// The transport of every Accrue client: a channel that adds the caller's
/// bearer token and the current span's trace context to each call.
pub type AuthChannel = InterceptedService<Channel, Traced<Bearer>>;

/// A generated Accrue client that [`connect`] can build.
pub trait Client: Sized {
    /// The client over `channel`, sending and accepting messages up to
    /// [`MAX_MESSAGE_BYTES`].
    fn over(channel: AuthChannel) -> Self;
}

macro_rules! limited_clients {
    ($($client:ident),* $(,)?) => {$(
        impl Client for $client<AuthChannel> {
            fn over(channel: AuthChannel) -> Self {
                $client::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            }
        }
    )*};
}

limited_clients!(
    HierarchyServiceClient,
    AttributionServiceClient,
    CommissionServiceClient,
    LedgerServiceClient,
    PayoutServiceClient,
    EventServiceClient,
    WebhookServiceClient,
);

/// A client of any Accrue service that calls a method with message types of
/// the caller's choosing — the wire-compatible views of
/// [`accrue_proto::passthrough`] — under the generated clients' limits,
/// token and trace context.
#[derive(Debug, Clone)]
pub struct RawClient(tonic::client::Grpc<AuthChannel>);

impl Client for RawClient {
    fn over(channel: AuthChannel) -> Self {
        RawClient(
            tonic::client::Grpc::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }
}

impl RawClient {
    /// Calls `method` of `service` (`"accrue.ledger.v1.LedgerService"`,
    /// `"PostEntries"`) with `request` and reads the answer as `Resp`, as
    /// the generated client of the service would with its own types; its
    /// errors are the generated client's (the peer's status, or UNKNOWN
    /// when the channel is not ready).
    pub async fn unary<Req, Resp>(
        &mut self,
        service: &'static str,
        method: &'static str,
        request: Req,
    ) -> Result<tonic::Response<Resp>, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + prost::Name + Default + Send + Sync + 'static,
    {
        self.0.ready().await.map_err(|e| tonic::Status::unknown(format!("Service was not ready: {e}")))?;
        let path = tonic::codegen::http::uri::PathAndQuery::try_from(format!("/{service}/{method}"))
            .map_err(|e| tonic::Status::internal(format!("method path /{service}/{method}: {e}")))?;
        let mut request = tonic::Request::new(request);
        request.extensions_mut().insert(tonic::GrpcMethod::new(service, method));
        self.0.unary(request, path, accrue_proto::codec::CheckedCodec::default()).await
    }
}

/// A lazily connecting client of the service at `url` with call `timeout`
/// (usually [`PEER_TIMEOUT`]); fails only on a malformed URL.
/// Every call carries `credential`'s token.
pub fn connect<C: Client>(url: &str, timeout: Duration, credential: &Credential) -> Result<C, ClientError> {
    let channel = channel_with_timeout(url, timeout)?;
    Ok(over(channel, credential))
}

/// A client over `channel` (e.g. a [`balanced_channel`]) whose calls carry
/// `credential`'s token.
pub fn over<C: Client>(channel: Channel, credential: &Credential) -> C {
    C::over(InterceptedService::new(channel, Traced(Bearer(credential.clone()))))
}

/// Whether `status` was made by this side's transport from a broken
/// connection (a peer killed or restarting mid-call: an I/O error in its
/// source chain, or tonic's "transport error" / "h2 protocol error"
/// wording), not answered by the peer. Such a call may succeed when sent
/// again, whatever its code (UNKNOWN, INTERNAL, CANCELLED).
pub fn is_broken_connection(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<std::io::Error>() {
            return true;
        }
        source = error.source();
    }
    let message = status.message().to_ascii_lowercase();
    ["h2 protocol error", "transport error", "connection reset", "broken pipe", "connection closed"]
        .iter()
        .any(|needle| message.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_wording_is_a_broken_connection_and_a_peer_answer_is_not() {
        assert!(is_broken_connection(&tonic::Status::unknown("transport error")));
        assert!(is_broken_connection(&tonic::Status::internal("h2 protocol error: connection reset")));
        assert!(!is_broken_connection(&tonic::Status::internal("internal error")));
        assert!(!is_broken_connection(&tonic::Status::invalid_argument("bad")));
    }
}
