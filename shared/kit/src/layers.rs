//! The tower layers every service runs behind, added once in
//! [`crate::server::serve`] (DESIGN §6): a tracing span, log line and metrics
//! per RPC, and authentication ([`crate::auth`]), so every service gets them
//! without touching its handlers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::Code;
use tonic::codegen::http;
use tower::layer::util::{Identity, Stack};
use tower::{Layer, Service, ServiceBuilder};
use tracing::Instrument;

use crate::auth::{AuthLayer, Verifier};

/// The layers in the order a request meets them (outermost first).
pub type Layers = ServiceBuilder<Stack<AuthLayer, Stack<RpcTraceLayer, Identity>>>;

/// The layer stack of every Accrue server: the trace layer (span, access
/// log line, metrics), then authentication and authorization
/// ([`crate::auth`]) inside it, so refused calls are traced and counted too.
/// `service` is the hosting service's short name (its schema, `ledger`),
/// the `service` label of its metrics.
pub fn stack(service: &'static str, verifier: Arc<Verifier>) -> Layers {
    ServiceBuilder::new().layer(RpcTraceLayer::new(service)).layer(AuthLayer::new(verifier))
}

/// The metadata key of a caller's correlation id, echoed on the response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Wraps each RPC in an `rpc` span named after the OpenTelemetry RPC
/// conventions (`rpc.system` grpc, `rpc.service`, `rpc.method`,
/// `rpc.grpc.status_code`, `otel.kind` server) whose parent is the caller's
/// W3C trace context when the call carries one
/// ([`crate::telemetry::propagation`]); and, when the RPC ends, writes one
/// access-log line and records its metrics ([`Finish::record`]).
#[derive(Debug, Clone, Copy)]
pub struct RpcTraceLayer {
    service: &'static str,
}

impl RpcTraceLayer {
    /// The layer of the service whose short name is `service` (`ledger`).
    pub fn new(service: &'static str) -> Self {
        RpcTraceLayer { service }
    }
}

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace { inner, service: self.service }
    }
}

/// The service [`RpcTraceLayer`] makes.
#[derive(Debug, Clone)]
pub struct RpcTrace<S> {
    inner: S,
    service: &'static str,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcTrace<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
    ResBody: http_body::Body,
{
    type Response = http::Response<TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let rpc = Rpc::of(self.service, request.uri().path());
        let request_id = request_id(request.headers());
        let span = tracing::info_span!(
            "rpc",
            otel.name = %rpc.path,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %rpc.grpc_service,
            rpc.method = %rpc.method,
            rpc.grpc.status_code = tracing::field::Empty,
            accrue.service = self.service,
            request_id = %request_id,
        );
        crate::telemetry::propagation::set_parent_from_headers(&span, request.headers());
        let trace_id = crate::telemetry::propagation::trace_id(&span)
            .or_else(|| crate::telemetry::propagation::header_trace_id(request.headers()));
        let started = Instant::now();
        let future = span.in_scope(|| self.inner.call(request));
        let outer = span.clone();
        Box::pin(
            async move {
                match future.await {
                    Ok(mut response) => {
                        if let Ok(value) = http::HeaderValue::from_str(&request_id) {
                            response.headers_mut().insert(REQUEST_ID_HEADER, value);
                        }
                        let mut finish =
                            Finish { span: tracing::Span::current(), rpc, request_id, trace_id, started, done: false };
                        // A trailers-only response (every error tonic makes
                        // before the body) carries its status in the headers.
                        if let Some(code) = header_code(response.headers()) {
                            finish.record(code);
                        }
                        Ok(response.map(|inner| TracedBody { inner, finish }))
                    }
                    Err(error) => {
                        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
                        tracing::warn!(%error, method = %rpc.path, duration_ms, request_id, "rpc transport error");
                        Err(error)
                    }
                }
            }
            .instrument(outer),
        )
    }
}

/// What an RPC is, from its path `/<grpc service>/<method>`.
#[derive(Debug)]
struct Rpc {
    /// The hosting service's short name (`ledger`).
    service: &'static str,
    /// `accrue.ledger.v1.LedgerService/PostEntries` (the path without its slash).
    path: String,
    /// `accrue.ledger.v1.LedgerService`.
    grpc_service: String,
    /// `PostEntries`.
    method: String,
    /// Health or reflection rather than the service's own API.
    infrastructure: bool,
}

impl Rpc {
    fn of(service: &'static str, path: &str) -> Self {
        let path = path.trim_start_matches('/').to_string();
        let (grpc_service, method) = path.split_once('/').unwrap_or(("", &path));
        let infrastructure = grpc_service.starts_with("grpc.");
        Rpc {
            service,
            grpc_service: grpc_service.to_string(),
            method: method.to_string(),
            path: path.clone(),
            infrastructure,
        }
    }

    /// The `method` label: the bare method of the service's own API
    /// (`PostEntries`); health and reflection keep their gRPC service
    /// (`grpc.health.v1.Health/Check`) so they never mix with it.
    fn method_label(&self) -> &str {
        if self.infrastructure { &self.path } else { &self.method }
    }
}

/// The caller's `x-request-id` when it is a sensible one (1–128 visible
/// ASCII characters), else a fresh random one (16 hex digits).
fn request_id(headers: &http::HeaderMap) -> String {
    let given = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic()));
    match given {
        Some(value) => value.to_string(),
        None => format!("{:016x}", rand::random::<u64>()),
    }
}

/// Records an RPC's end once: its code on the span, the access-log line,
/// and the `metrics` counter `accrue_rpc_requests_total` and histogram
/// `accrue_rpc_duration_seconds`, labelled `service` (`ledger`), `method`
/// (`PostEntries`, [`Rpc::method_label`]) and `code` (the canonical gRPC
/// name, `OK`, `INVALID_ARGUMENT`). Without an installed recorder the
/// metrics cost nothing.
#[derive(Debug)]
struct Finish {
    span: tracing::Span,
    rpc: Rpc,
    request_id: String,
    trace_id: Option<String>,
    started: Instant,
    done: bool,
}

impl Finish {
    fn record(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        let name = code_name(code);
        let _entered = self.span.enter();
        self.span.record("rpc.grpc.status_code", code as i32);
        if is_server_fault(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        self.log(code, elapsed.as_secs_f64() * 1000.0);
        let labels = [
            ("service", self.rpc.service.to_string()),
            ("method", self.rpc.method_label().to_string()),
            ("code", name.to_string()),
        ];
        metrics::counter!("accrue_rpc_requests_total", &labels).increment(1);
        metrics::histogram!("accrue_rpc_duration_seconds", &labels).record(elapsed.as_secs_f64());
    }

    /// The access-log line: INFO for every call of the service's own API
    /// (WARN when the fault is ours: INTERNAL is also logged at ERROR where
    /// it is made), DEBUG for health and reflection (probes every few
    /// seconds would drown the rest).
    fn log(&self, code: Code, duration_ms: f64) {
        let (method, request_id) = (&self.rpc.path, &self.request_id);
        let trace_id = self.trace_id.as_deref().unwrap_or("");
        let fault = is_server_fault(code);
        let code = code_name(code);
        if fault {
            tracing::warn!(method, code, duration_ms, request_id, trace_id, "rpc");
        } else if self.rpc.infrastructure {
            tracing::debug!(method, code, duration_ms, request_id, trace_id, "rpc");
        } else {
            tracing::info!(method, code, duration_ms, request_id, trace_id, "rpc");
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the RPC's status when it ends: from the
    /// `grpc-status` trailer of a response with a body (every unary success
    /// and every stream, including one that fails midway), so the span and
    /// log line carry the real code and the latency to the last frame.
    #[derive(Debug)]
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        finish: Finish,
    }
}

impl<B: http_body::Body> http_body::Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish.record(header_code(trailers).unwrap_or(Code::Ok));
                }
            }
            // The body broke off (the client went away): no status was sent.
            Poll::Ready(Some(Err(_))) => this.finish.record(Code::Unknown),
            Poll::Ready(None) => this.finish.record(Code::Ok),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        // Dropped before its end (the client cancelled): say so, once.
        if !self.done {
            self.record(Code::Cancelled);
        }
    }
}

/// The `grpc-status` in a header map (headers of a trailers-only response, or
/// trailers), if any.
fn header_code(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map(Code::from)
}

/// Whether `code` is the server's fault rather than the caller's: those
/// are WARN and mark the span as an error (the OpenTelemetry gRPC
/// conventions, plus RESOURCE_EXHAUSTED: a server out of capacity); a client
/// sending bad requests must not page anyone.
fn is_server_fault(code: Code) -> bool {
    matches!(
        code,
        Code::Internal
            | Code::Unknown
            | Code::DataLoss
            | Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Unimplemented
    )
}

/// The canonical name of a gRPC status code (google.rpc.Code), as metrics
/// and logs spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn a_status_header_names_the_code() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(header_code(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(header_code(&headers), Some(Code::NotFound));
    }

    /// Captures what the layer logs.
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

    type Frames = tokio_stream::Iter<std::vec::IntoIter<Result<http_body::Frame<bytes::Bytes>, Infallible>>>;

    /// A response whose status comes only in its trailers, as a stream that
    /// fails midway is sent.
    fn streamed(status: &'static str) -> http::Response<http_body_util::StreamBody<Frames>> {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static(status));
        let frames = vec![
            Ok(http_body::Frame::data(bytes::Bytes::from_static(b"msg"))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        http::Response::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
    }

    async fn logged_for(status: &'static str) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let service = RpcTraceLayer::new("test")
            .layer(tower::service_fn(move |_: http::Request<()>| async move { Ok::<_, Infallible>(streamed(status)) }));
        let request = http::Request::builder().uri("/accrue.test.v1.Test/Stream").body(()).unwrap();
        let response = service.oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[tokio::test]
    async fn the_code_in_the_trailers_is_the_one_recorded() {
        let failed = logged_for("3").await;
        assert!(failed.contains(" INFO ") && failed.contains("code=\"INVALID_ARGUMENT\""), "{failed}");
        assert!(failed.contains("accrue.test.v1.Test/Stream"), "{failed}");
        let ok = logged_for("0").await;
        assert!(ok.contains("code=\"OK\"") && ok.contains("request_id="), "{ok}");
        assert_eq!(ok.matches(" code=\"").count(), 1, "logged once: {ok}");
        let broken = logged_for("13").await;
        assert!(broken.contains(" WARN ") && broken.contains("code=\"INTERNAL\""), "{broken}");
    }
}
