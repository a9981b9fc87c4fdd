//! Logs and traces: one `tracing` subscriber writing JSON lines in
//! production and readable lines on a terminal, filtered by `RUST_LOG`, and,
//! when an OTLP endpoint is configured, an OpenTelemetry layer exporting the
//! same spans over OTLP/gRPC.
//!
//! Calls join their caller's trace: [`parent_context`] reads the W3C
//! `traceparent`/`tracestate` headers (gRPC metadata and HTTP headers are both
//! headers), and the observe layer makes it the parent of the call's `rpc`
//! span. [`Telemetry::shutdown`] flushes pending spans; the CLI calls it on
//! exit.

use std::{io::IsTerminal, time::Duration};

use opentelemetry::{
    KeyValue,
    propagation::{Extractor, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, TelemetryConfig};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// What must outlive the process's work: the tracer provider, if any.
#[must_use = "call shutdown on exit so pending spans are sent"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered and stops the exporter. Blocks for at
    /// most a few seconds; call it outside async code, with the runtime alive.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("warning: traces may be lost: {error}");
        }
    }
}

/// Installs the global subscriber once (later calls, in tests, keep the
/// first). With an OTLP endpoint, it must be called inside a Tokio runtime:
/// the exporter's channel lives on it.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    config.validate()?;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn,hyper=warn,opentelemetry=warn"));
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let provider = config.otlp_endpoint.as_deref().map(|endpoint| tracer_provider(endpoint, config)).transpose()?;
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("tenantry")).with_level(true).with_threads(false)
    });
    // Logs go to stderr: stdout is reserved for what commands print (keys).
    // JSON lines carry the current span's fields (request id, method,
    // tenant, principal) next to the event's own (code, latency).
    let json_layer = json.then(|| {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    let pretty_layer = (!json).then(|| fmt::layer().with_writer(std::io::stderr));
    let installed =
        tracing_subscriber::registry().with(filter).with(otel).with(json_layer).with(pretty_layer).try_init().is_ok();
    Ok(Telemetry { provider: provider.filter(|_| installed) })
}

fn tracer_provider(endpoint: &str, config: &TelemetryConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()?;
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    // Sampling follows OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG
    // (default: parent-based, always on), read by the SDK.
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// The trace context a caller sent in W3C `traceparent`/`tracestate`
/// headers; empty (a new trace) when there is none or it is malformed.
pub fn parent_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    #[test]
    fn a_valid_traceparent_becomes_the_parent() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        let context = parent_context(&headers);
        let span = context.span();
        let parent = span.span_context();
        assert!(parent.is_remote() && parent.is_sampled());
        assert_eq!(parent.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", "00-not-a-trace-01".parse().unwrap());
        assert!(!parent_context(&headers).span().span_context().is_valid());
        assert!(!parent_context(&http::HeaderMap::new()).span().span_context().is_valid());
    }
}
