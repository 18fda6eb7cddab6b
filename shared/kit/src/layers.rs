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

/// The layer stack of every Accrue server: the trace layer (span, log line,
/// metrics), then authentication and authorization ([`crate::auth`]) inside
/// it, so refused calls are traced and counted too.
pub fn stack(verifier: Arc<Verifier>) -> Layers {
    ServiceBuilder::new().layer(RpcTraceLayer).layer(AuthLayer::new(verifier))
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
    ResBody: http_body::Body,
{
    type Response = http::Response<TracedBody<ResBody>>;
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
        let method = request.uri().path().to_string();
        let future = span.in_scope(|| self.inner.call(request));
        let outer = span.clone();
        Box::pin(
            async move {
                match future.await {
                    Ok(response) => {
                        let mut finish = Finish { span: tracing::Span::current(), method, started, done: false };
                        // A trailers-only response (every error tonic makes
                        // before the body) carries its status in the headers.
                        if let Some(code) = header_code(response.headers()) {
                            finish.record(code);
                        }
                        Ok(response.map(|inner| TracedBody { inner, finish }))
                    }
                    Err(error) => {
                        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                        tracing::warn!(%error, latency_ms, "rpc transport error");
                        Err(error)
                    }
                }
            }
            .instrument(outer),
        )
    }
}

/// Records an RPC's end once: its code and latency on the span, the log
/// line, and the `metrics` counter `accrue_rpc_requests_total` and histogram
/// `accrue_rpc_duration_seconds`, labelled `service`
/// ("accrue.ledger.v1.LedgerService"), `method` ("PostEntries") and `code`
/// ("Ok"). Without an installed recorder the metrics cost nothing.
#[derive(Debug)]
struct Finish {
    span: tracing::Span,
    /// The request path, "/<service>/<method>".
    method: String,
    started: Instant,
    done: bool,
}

impl Finish {
    fn record(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let _entered = self.span.enter();
        self.span.record("rpc.code", format!("{code:?}"));
        self.span.record("latency_ms", latency_ms);
        log_finished(code, latency_ms);
        let (service, method) = self.method.trim_start_matches('/').split_once('/').unwrap_or(("", &self.method));
        let labels = [("service", service.to_string()), ("method", method.to_string()), ("code", format!("{code:?}"))];
        metrics::counter!("accrue_rpc_requests_total", &labels).increment(1);
        metrics::histogram!("accrue_rpc_duration_seconds", &labels).record(elapsed.as_secs_f64());
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
        let service = RpcTraceLayer
            .layer(tower::service_fn(move |_: http::Request<()>| async move { Ok::<_, Infallible>(streamed(status)) }));
        let request = http::Request::builder().uri("/accrue.test.v1.Test/Stream").body(()).unwrap();
        let response = service.oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[tokio::test]
    async fn the_code_in_the_trailers_is_the_one_recorded() {
        let failed = logged_for("3").await;
        assert!(failed.contains("rpc rejected") && failed.contains("InvalidArgument"), "{failed}");
        assert!(failed.contains("/accrue.test.v1.Test/Stream"), "{failed}");
        let ok = logged_for("0").await;
        assert!(ok.contains("rpc finished") && ok.contains("code=Ok"), "{ok}");
        assert_eq!(ok.matches("rpc finished").count(), 1, "logged once: {ok}");
    }
}
