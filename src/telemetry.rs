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
//!
//! Child spans (transactions, Redis calls, hashing, transcoding) are made
//! with [`child_span!`], target [`CHILD_SPANS`]: only the OpenTelemetry layer
//! sees them, so the log lines keep the call's span (request id, trace id)
//! as their span, and with no exporter they are not made at all.
//! [`statements`] turns sqlx's per-statement events into `db` spans.
//! The server span and every log line inside it carry `trace_id` and
//! `span_id` ([`record_trace_ids`]); `docs/observability.md` lists the spans.

pub mod log;
mod statements;

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use opentelemetry::{
    KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer as _, fmt, prelude::*};

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
    /// Sends the spans still buffered, stops the exporter and writes the log
    /// lines still buffered. Blocks for at most a few seconds; call it
    /// outside async code, with the runtime alive.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            log::flush();
            eprintln!("warning: traces may be lost: {error}");
        }
        log::flush();
    }
}

/// Installs the global subscriber once (later calls, in tests, keep the
/// first). With an OTLP endpoint, it must be called inside a Tokio runtime:
/// the exporter's channel lives on it.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    config.validate()?;
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let provider = config.otlp_endpoint.as_deref().map(|endpoint| tracer_provider(endpoint, config)).transpose()?;
    // Each layer has its own filter: the logs never show child spans (their
    // lines keep the call's span), and only the exporter asks for sqlx's
    // per-statement events, so without one those are never even built.
    let mut installed_dispatch = None;
    let otel = provider.as_ref().map(|provider| {
        let tracer = provider.tracer("tenantry");
        let spans = tracing_opentelemetry::layer()
            .with_tracer(tracer.clone())
            // Noise an operator never reads: busy/idle ns, code location,
            // thread, level and target attributes.
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_level(false)
            .with_target(false)
            .with_filter(filter(&[(CHILD_SPANS, "trace")]));
        let (statements, dispatch) = statements::StatementSpans::new(tracer);
        installed_dispatch = Some(dispatch);
        let statements = statements.with_filter(statements::filter());
        spans.and_then(statements)
    });
    // Logs go to stderr: stdout is reserved for what commands print (keys).
    // JSON lines carry the current span's fields (request id, trace id,
    // method, tenant, principal) next to the event's own (code, latency).
    let json_layer = json.then(|| log::JsonLog::stderr().with_filter(filter(&[(CHILD_SPANS, "off")])));
    let pretty_layer =
        (!json).then(|| fmt::layer().with_writer(std::io::stderr).with_filter(filter(&[(CHILD_SPANS, "off")])));
    let installed = tracing_subscriber::registry().with(otel).with(json_layer).with(pretty_layer).try_init().is_ok();
    if installed {
        JSON_LOGS.store(json, Ordering::Relaxed);
    }
    if installed && let Some(slot) = installed_dispatch {
        tracing::dispatcher::get_default(|dispatch| drop(slot.set(dispatch.downgrade())));
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Ok(Telemetry { provider: provider.filter(|_| installed) })
}

/// The target of child spans (transactions, Redis, hashing, transcoding),
/// which only the exporter sees. Use it through [`child_span!`].
pub const CHILD_SPANS: &str = "tenantry_trace";

/// `tracing::info_span!` with the target [`CHILD_SPANS`] when spans are
/// exported, else a disabled span, without asking the subscriber. The log
/// layers refuse these spans, but the subscriber's absent layers (no
/// exporter, no human format) count as wanting every callsite, so the
/// registry built, entered and closed each one for nobody: two per REST
/// call, 5,500 instructions. Installing only the layers in use avoided that
/// and lost log lines instead (the per-layer filter state a refused span
/// leaves behind filtered the next event).
macro_rules! child_span {
    ($($span:tt)*) => {
        if $crate::telemetry::exporting() {
            ::tracing::info_span!(target: $crate::telemetry::CHILD_SPANS, $($span)*)
        } else {
            ::tracing::Span::none()
        }
    };
}
pub(crate) use child_span;

/// The W3C trace-context header, parsed once (it is looked up on every call).
pub(crate) const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Whether spans are exported. The subscriber is process-global, so this is
/// too; it lets the hot path skip trace work (context extraction, ids) when
/// nobody would receive it.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces (an OTLP endpoint is configured).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Whether log lines are JSON (set once by [`init`]).
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Whether this process writes JSON log lines: long-running commands then
/// report progress as log events instead of drawing on the terminal.
pub fn logs_are_json() -> bool {
    JSON_LOGS.load(Ordering::Relaxed)
}

/// `RUST_LOG` (or the default), with `extra` directives that always apply.
fn filter(extra: &[(&str, &str)]) -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn,hyper=warn,opentelemetry=warn"));
    for (target, level) in extra {
        if let Ok(directive) = format!("{target}={level}").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
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

/// Records `trace_id` and `span_id` on `span` (a span that declares both
/// fields), so every log line inside it can be joined to its trace. With an
/// exporter they are the span's own ids; without one, only a caller's
/// `traceparent` gives a trace id (and no span id: nothing is exported).
pub fn record_trace_ids(span: &Span, headers: &http::HeaderMap) {
    let context = if exporting() {
        span.context().span().span_context().clone()
    } else if headers.contains_key(TRACEPARENT) {
        let parent = parent_context(headers).span().span_context().clone();
        if parent.is_valid() {
            span.record("trace_id", tracing::field::display(parent.trace_id()));
        }
        return;
    } else {
        return;
    };
    if context.is_valid() {
        span.record("trace_id", tracing::field::display(context.trace_id()));
        span.record("span_id", tracing::field::display(context.span_id()));
    }
}

/// The W3C `traceparent` of `span`, to store with work that continues the
/// trace later (an enqueued job); `None` when nothing is exported.
pub fn traceparent(span: &Span) -> Option<String> {
    if !exporting() {
        return None;
    }
    let mut carrier = TraceparentInjector(None);
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.0
}

/// Links `span` to the trace a stored `traceparent` names (a job's
/// execution to the call that enqueued it). Malformed values are ignored.
pub fn link_to(span: &Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|_| exporting()) else { return };
    let mut headers = http::HeaderMap::new();
    let Ok(value) = http::HeaderValue::from_str(traceparent) else { return };
    headers.insert("traceparent", value);
    let context: SpanContext = parent_context(&headers).span().span_context().clone();
    if context.is_valid() {
        span.add_link(context);
    }
}

/// The execution span of one job attempt: a root span (a job may run long
/// after its call ended) linked to the trace that enqueued it.
pub fn job_span(id: &str, kind: &str, attempt: i32, traceparent: Option<&str>) -> Span {
    let span = child_span!(
        parent: None,
        "job",
        otel.name = format!("{kind} process"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "tenantry.jobs",
        "messaging.operation.type" = "process",
        messaging.message.id = id,
        tenantry.job.kind = kind,
        tenantry.job.attempt = attempt,
    );
    link_to(&span, traceparent);
    span
}

struct TraceparentInjector(Option<String>);

impl Injector for TraceparentInjector {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
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
    fn without_an_exporter_child_spans_are_disabled_and_log_lines_keep_the_call_span() {
        // The subscriber `init` installs when no OTLP endpoint is set.
        let subscriber = tracing_subscriber::registry()
            .with(fmt::layer().with_writer(std::io::sink).with_filter(filter(&[(CHILD_SPANS, "off")])));
        tracing::subscriber::with_default(subscriber, || {
            let mut evaluated = false;
            let child = tracing::info_span!(target: CHILD_SPANS, "child", field = {
                evaluated = true;
                1
            });
            assert!(child.is_disabled());
            assert!(!evaluated, "a disabled span's fields are never evaluated");
            // What the code uses: not even asked of the subscriber.
            let made = child_span!(
                "child",
                field = {
                    evaluated = true;
                    1
                }
            );
            assert!(made.is_disabled() && !evaluated);
            assert!(!exporting());
            let call = tracing::info_span!("rpc", trace_id = tracing::field::Empty);
            assert!(!call.is_disabled(), "the call's span feeds the log line");
            // No traceparent: nothing to record, nothing extracted.
            record_trace_ids(&call, &http::HeaderMap::new());
            assert_eq!(traceparent(&call), None);
        });
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", "00-not-a-trace-01".parse().unwrap());
        assert!(!parent_context(&headers).span().span_context().is_valid());
        assert!(!parent_context(&http::HeaderMap::new()).span().span_context().is_valid());
    }
}
