//! The tower layers every service runs behind, added once in
//! [`crate::server::serve`] (DESIGN §6): today a tracing span per RPC; the
//! authentication and metrics layers of later work go into [`stack`] beside it,
//! so every service gets them without touching its handlers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::Code;
use tonic::codegen::http;
use tower::layer::util::{Identity, Stack};
use tower::{Layer, Service, ServiceBuilder};
use tracing::Instrument;

/// The layers in the order a request meets them (outermost first).
pub type Layers = ServiceBuilder<Stack<RpcTraceLayer, Identity>>;

/// The layer stack of every Accrue server. Later layers (auth, metrics) are
/// added here, inside the trace layer so their rejections are traced too.
pub fn stack() -> Layers {
    ServiceBuilder::new().layer(RpcTraceLayer)
}

/// Wraps each RPC in an `rpc` span carrying the gRPC method
/// (`/accrue.ledger.v1.LedgerService/PostEntries`) and, when it ends, its
/// status code and latency.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcTraceLayer;

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace { inner }
    }
}

/// The service [`RpcTraceLayer`] makes.
#[derive(Debug, Clone)]
pub struct RpcTrace<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcTrace<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let span = tracing::info_span!(
            "rpc",
            rpc.method = %request.uri().path(),
            rpc.code = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        let started = Instant::now();
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let result = future.await;
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                let span = tracing::Span::current();
                span.record("latency_ms", latency_ms);
                match &result {
                    Ok(response) => {
                        let code = grpc_code(response.headers());
                        span.record("rpc.code", format!("{code:?}"));
                        log_finished(code, latency_ms);
                    }
                    Err(error) => tracing::warn!(%error, latency_ms, "rpc transport error"),
                }
                result
            }
            .instrument(span),
        )
    }
}

/// The status of a response: tonic puts `grpc-status` in the headers of an
/// error (a trailers-only response) and in the trailers of a success, so no
/// status header means OK.
fn grpc_code(headers: &http::HeaderMap) -> Code {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from)
}

/// Our faults are WARN (INTERNAL is already logged at ERROR where it is made),
/// the caller's are INFO, successes DEBUG: a client sending bad requests must
/// not page anyone.
fn log_finished(code: Code, latency_ms: f64) {
    match code {
        Code::Ok => tracing::debug!(code = ?code, latency_ms, "rpc finished"),
        Code::Internal
        | Code::Unknown
        | Code::DataLoss
        | Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Unimplemented => tracing::warn!(code = ?code, latency_ms, "rpc failed"),
        _ => tracing::info!(code = ?code, latency_ms, "rpc rejected"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_status_header_is_ok() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_code(&headers), Code::Ok);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(grpc_code(&headers), Code::NotFound);
    }
}
