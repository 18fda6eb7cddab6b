//! W3C trace context (`traceparent`, `tracestate`) across process
//! boundaries: gRPC metadata on every call between services ([`Traced`],
//! added by [`crate::client::connect`]; read by [`crate::layers`]), and a
//! saga row, so that steps run later by a worker join the trace of the RPC
//! that started the saga ([`current_traceparent`], [`set_parent_from`]).
//!
//! Everything here is a no-op until [`super::init`] installed an
//! OpenTelemetry layer: without one, spans carry no trace context.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tonic::codegen::http;
use tonic::service::Interceptor;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header that carries the trace and parent span ids.
pub const TRACEPARENT: &str = "traceparent";

/// Reads propagation fields from HTTP/2 headers (gRPC metadata).
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|key| key.as_str()).collect()
    }
}

/// Writes propagation fields into outgoing gRPC metadata.
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes only ASCII names and values; anything else
        // is dropped rather than failing the call.
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// A one-field carrier for a stored `traceparent`.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// Makes the caller's trace the parent of `span` (just created, not yet
/// entered) when `headers` carry a valid `traceparent`. Returns whether
/// they did.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) -> bool {
    if !super::tracing_enabled() {
        return false;
    }
    let context =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)));
    adopt(span, context)
}

/// Makes the span a stored `traceparent` names the parent of `span` (just
/// created, not yet entered). Returns false for a missing or malformed one.
pub fn set_parent_from(span: &tracing::Span, traceparent: &str) -> bool {
    super::tracing_enabled() && adopt(span, context_of(traceparent))
}

/// Adds a link from `span` to the span a stored `traceparent` names (a
/// batch's span, to each saga it also worked for).
pub fn add_link_to(span: &tracing::Span, traceparent: &str) {
    if super::tracing_enabled() {
        span.add_link(context_of(traceparent).span().span_context().clone());
    }
}

fn context_of(traceparent: &str) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&Traceparent(traceparent)))
}

fn adopt(span: &tracing::Span, context: opentelemetry::Context) -> bool {
    context.span().span_context().is_valid() && span.set_parent(context).is_ok()
}

/// The current span's trace context as a `traceparent` value
/// (`00-<trace id>-<span id>-<flags>`), to store beside work that will run
/// later (a saga); `None` outside a trace.
pub fn current_traceparent() -> Option<String> {
    if !super::tracing_enabled() {
        return None;
    }
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut carrier));
    carrier.remove(TRACEPARENT)
}

/// The trace id (32 lowercase hex digits) of `span`, if it is in a trace.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    if !super::tracing_enabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// The trace id in a `traceparent` header, whether or not this process
/// traces: access logs of services that do not export still name the trace
/// their caller is in.
pub fn header_trace_id(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(TRACEPARENT)?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    (trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()) && trace_id.bytes().any(|b| b != b'0'))
        .then(|| trace_id.to_ascii_lowercase())
}

/// An interceptor that runs `I` (the bearer token), then adds the current
/// span's trace context to the call's metadata, so the callee's RPC span
/// joins the caller's trace.
#[derive(Debug, Clone)]
pub struct Traced<I>(pub I);

impl<I: Interceptor> Interceptor for Traced<I> {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let mut request = self.0.call(request)?;
        if super::tracing_enabled() {
            let context = tracing::Span::current().context();
            if context.span().span_context().is_valid() {
                opentelemetry::global::get_text_map_propagator(|propagator| {
                    propagator.inject_context(&context, &mut MetadataInjector(request.metadata_mut()))
                });
            }
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_header_names_its_trace() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(header_trace_id(&headers), None);
        headers.insert(
            TRACEPARENT,
            http::HeaderValue::from_static("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(header_trace_id(&headers).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        headers.insert(
            TRACEPARENT,
            http::HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        assert_eq!(header_trace_id(&headers), None, "the all-zero trace id is invalid");
    }
}
