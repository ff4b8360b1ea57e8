//! OpenTelemetry: the caller's W3C trace context (`traceparent`,
//! `tracestate`) is read from every request, so the server's request span is
//! a child of the caller's span and the events the request appends carry its
//! trace id; with `--otlp-endpoint` the spans are exported over OTLP/HTTP
//! (protobuf). A malformed `traceparent` is ignored, as the W3C spec says.

use axum::http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The path of the OTLP/HTTP traces endpoint under a collector's base URL.
const TRACES_PATH: &str = "/v1/traces";

/// The caller's trace context from a request's headers; empty when it sent
/// none, or a malformed one.
pub fn remote_context(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers))
}

/// The trace a request belongs to: its span's (the caller's trace, or the
/// one it began when spans are exported), else the caller's `traceparent`'s.
pub fn request_trace_id(span: &tracing::Span, headers: &HeaderMap) -> Option<TraceId> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let own = span.context().span().span_context().clone();
    if own.is_valid() {
        return Some(own.trace_id());
    }
    let remote = remote_context(headers).span().span_context().clone();
    remote.is_valid().then(|| remote.trace_id())
}

/// The URL spans are POSTed to: `endpoint` is a collector's OTLP/HTTP base
/// URL (`http://collector:4318`), as in `OTEL_EXPORTER_OTLP_ENDPOINT`; one
/// that already names the traces path is used as it is.
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        base.to_owned()
    } else {
        format!("{base}{TRACES_PATH}")
    }
}

/// The span exporter, while the process runs; `shutdown` flushes it.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// A tracer provider that batches spans to `endpoint` over OTLP/HTTP.
    pub fn otlp(endpoint: &str) -> anyhow::Result<Self> {
        use opentelemetry_otlp::{Protocol, WithExportConfig};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces_url(endpoint))
            .build()
            .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint}: {e}"))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("runledger")
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Self {
            provider: Some(provider),
        })
    }

    /// The tracing layer that turns spans into OpenTelemetry spans; `None`
    /// when nothing is exported.
    pub fn layer<S>(&self) -> Option<impl tracing_subscriber::Layer<S>>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        let tracer = self.provider.as_ref()?.tracer("runledger");
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    /// Exports every span still buffered, then stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "flushing the OTLP span exporter failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_to_a_base_url_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }

    #[test]
    fn a_malformed_traceparent_gives_no_context() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "00-not-a-trace-01".parse().unwrap());
        assert!(!remote_context(&headers).span().span_context().is_valid());
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = remote_context(&headers);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
