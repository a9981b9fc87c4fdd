//! The outermost layer: gives every call a request id and a tracing span
//! (a child of the caller's W3C trace context when it sent one), resolves its
//! method policy (an unknown method stops here), checks the request body's
//! gRPC framing as it streams ([`FramedBody`]), and when the response ends
//! (for streams, when the trailers carry the status) logs one line with the
//! code and latency and records the call's metrics. A call whose client
//! went away is reported CANCELLED (logged at DEBUG: not a server error),
//! whatever its handler answered to nobody.
//!
//! The span follows OpenTelemetry's RPC conventions ([`server_span`]:
//! `rpc.service`, `rpc.method`, `rpc.grpc.status_code`) and carries the
//! `trace_id`/`span_id` every log line inside the call shows.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body::Frame;
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::protocol::FramedBody;
use crate::{
    context::{RequestContext, RequestId},
    metrics::{MethodCalls, Metrics},
    policy::{MethodPolicy, PolicyTable},
};

/// Header carrying the request id, in and out.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

// Header names looked up on every call, parsed once: a lookup by `&str`
// parses and hashes the name each time.
const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Builds [`Observe`].
#[derive(Clone)]
pub struct ObserveLayer {
    methods: Arc<Methods>,
    max_deadline: Duration,
    max_message_bytes: usize,
}

impl ObserveLayer {
    /// Resolves methods in `policies`; deadlines start at `max_deadline`;
    /// request messages may be up to `max_message_bytes`; finished calls are
    /// counted in `metrics`.
    pub fn new(policies: Arc<PolicyTable>, max_deadline: Duration, max_message_bytes: usize, metrics: Metrics) -> Self {
        let observed = |policy: Option<Arc<MethodPolicy>>| {
            let calls = metrics.method_calls(policy.as_deref());
            Arc::new(Observed { policy, calls })
        };
        let by_path = policies.iter().map(|p| (p.path.clone(), observed(Some(p.clone())))).collect();
        let methods = Methods { by_path, unknown: observed(None) };
        ObserveLayer { methods: Arc::new(methods), max_deadline, max_message_bytes }
    }
}

/// Every method of the policy table with its kept metric series, by gRPC
/// path, and the one unknown paths are counted under.
struct Methods {
    by_path: HashMap<String, Arc<Observed>>,
    unknown: Arc<Observed>,
}

/// A method as this layer sees it: its policy (`None`: an unknown path) and
/// the series its calls are recorded in.
struct Observed {
    policy: Option<Arc<MethodPolicy>>,
    calls: MethodCalls,
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner, layer: self.clone() }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

impl<S> Service<Request<Body>> for Observe<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let request_id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(RequestId::from_header)
            .unwrap_or_else(RequestId::generate);
        let methods = &self.layer.methods;
        let observed = methods.by_path.get(request.uri().path()).unwrap_or(&methods.unknown).clone();
        // The REST gateway opened the call's span (with its `http.*`
        // attributes) before transcoding; a gRPC call gets one here.
        let span = match request.extensions_mut().remove::<CallSpan>() {
            Some(CallSpan(span)) => span,
            None => {
                let known_path = observed.policy.as_ref().map(|m| m.path.as_str());
                let span = server_span(&request_id, known_path, request.uri().path());
                set_parent(&span, request.headers());
                span
            }
        };
        let client_gone = Arc::new(AtomicBool::new(false));
        let method = observed.policy.clone();
        let outcome = Outcome::new(span, started, observed, client_gone.clone());
        let Some(method) = method else {
            let status = Status::unimplemented(format!("unknown method {}", request.uri().path()));
            let response = finish(status.into_http(), &request_id, outcome);
            return Box::pin(async move { Ok(response) });
        };
        let deadline = started + self.layer.max_deadline;
        request.extensions_mut().insert(RequestContext::new(request_id.clone(), method, deadline));
        let encoded = request.headers().get(GRPC_ENCODING).is_some_and(|e| e.as_bytes() != b"identity");
        let max = self.layer.max_message_bytes;
        let request = request.map(|body| Body::new(FramedBody::new(body, max, encoded, client_gone)));
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).instrument(outcome.span.clone()).await?;
            Ok(finish(response, &request_id, outcome))
        })
    }
}

/// The call's server span, opened by the REST gateway and handed to the
/// stack in the request's extensions.
#[derive(Clone)]
pub struct CallSpan(pub Span);

/// A call's server span, following OpenTelemetry's RPC conventions; the REST
/// gateway records the `http.*` fields. `known_path` is the method's path
/// when it is one of ours: an unknown path is never echoed into span names or
/// `rpc.*` attributes (callers choose it), only into the `method` log field.
/// With logs on, this is the one span a call always pays for; its trace
/// fields are filled only when traces are exported (see [`set_parent`]).
/// Without an exporter it carries only what its log lines show (the
/// OpenTelemetry attributes would be formatted into every line for nobody).
pub fn server_span(request_id: &RequestId, known_path: Option<&str>, path: &str) -> Span {
    if !crate::telemetry::exporting() {
        return tracing::info_span!(
            "rpc",
            request_id = %request_id,
            trace_id = Empty,
            method = %path,
            tenant = Empty,
            principal = Empty,
            http.request.method = Empty,
            http.route = Empty,
            http.response.status_code = Empty,
        );
    }
    let name = known_path.map_or("unknown", |p| p.trim_start_matches('/'));
    let (service, method) = name.split_once('/').unwrap_or(("unknown", "unknown"));
    tracing::info_span!(
        "rpc",
        request_id = %request_id,
        trace_id = Empty,
        span_id = Empty,
        method = %path,
        tenant = Empty,
        principal = Empty,
        otel.name = name,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        http.request.method = Empty,
        http.route = Empty,
        http.response.status_code = Empty,
    )
}

/// Makes the caller's W3C trace context (if any) the parent of `span` and
/// records the trace ids its log lines carry.
pub fn set_parent(span: &Span, headers: &http::HeaderMap) {
    if crate::telemetry::exporting() {
        // Fails only when the span is disabled (no subscriber wants it).
        drop(span.set_parent(crate::telemetry::parent_context(headers)));
    }
    crate::telemetry::record_trace_ids(span, headers);
}

/// A call's latency in milliseconds, rounded to the microsecond, so logs
/// print `1.234` rather than `1.2340000000000002`.
pub fn latency_ms(elapsed: Duration) -> f64 {
    elapsed.as_micros() as f64 / 1000.0
}

/// Adds the request id and arranges the call's log line and metrics.
fn finish(mut response: Response<Body>, request_id: &RequestId, outcome: Outcome) -> Response<Body> {
    if let Ok(mut value) = HeaderValue::from_str(request_id.as_str()) {
        // Never HPACK-indexed: no two calls share an id, so an index entry
        // would never be used again, and every call would walk and evict the
        // connection's table (about 3,500 instructions per call).
        value.set_sensitive(true);
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    // A trailers-only response (every error the stack makes) has its status
    // in the headers; otherwise it comes in the trailers at the body's end.
    if let Some(code) = status_code(response.headers()) {
        outcome.record(code);
        return response;
    }
    response.map(|body| Body::new(ObservedBody { inner: body, outcome: Some(outcome) }))
}

fn status_code(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get(GRPC_STATUS)?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(value))
}

/// What is needed to report a call once its code is known. Dropped
/// unreported (the client went away while the handler ran or before the
/// status was sent), it reports CANCELLED: every call is reported once.
struct Outcome {
    span: Span,
    started: Instant,
    observed: Arc<Observed>,
    /// Set by the request body when the client went away.
    client_gone: Arc<AtomicBool>,
    reported: bool,
}

impl Outcome {
    fn new(span: Span, started: Instant, observed: Arc<Observed>, client_gone: Arc<AtomicBool>) -> Self {
        observed.calls.started();
        Outcome { span, started, observed, client_gone, reported: false }
    }

    fn record(mut self, code: Code) {
        self.report(code);
    }

    fn report(&mut self, code: Code) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        let code = if self.client_gone.load(Ordering::Acquire) { Code::Cancelled } else { code };
        let elapsed = self.started.elapsed();
        self.observed.calls.record(code, elapsed);
        let latency_ms = latency_ms(elapsed);
        self.span.record("rpc.grpc.status_code", i32::from(code));
        if matches!(code, Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable | Code::DeadlineExceeded)
        {
            // Server-side failures mark the trace (OpenTelemetry's gRPC server conventions).
            self.span.record("otel.status_code", "ERROR");
        }
        let _entered = self.span.enter();
        let name = crate::metrics::code_name(code);
        match code {
            Code::Ok => tracing::info!(code = name, latency_ms, "call finished"),
            Code::Internal | Code::Unknown | Code::DataLoss => {
                tracing::error!(code = name, latency_ms, "call failed")
            }
            Code::Cancelled => tracing::debug!(code = name, latency_ms, "call cancelled by the client"),
            _ => tracing::info!(code = name, latency_ms, "call refused"),
        }
    }
}

/// A response body that reports the call's status when it ends.
struct ObservedBody {
    inner: Body,
    outcome: Option<Outcome>,
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|t| status_code(t).unwrap_or(Code::Unknown)),
            Poll::Ready(Some(Err(status))) => Some(status.code()),
            Poll::Ready(None) => Some(Code::Ok),
            Poll::Pending => None,
        };
        // Take the outcome only once the code is known: data frames come first.
        if let Some(code) = code
            && let Some(outcome) = this.outcome.take()
        {
            outcome.record(code);
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

impl Drop for Outcome {
    fn drop(&mut self) {
        self.report(Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_is_reported_once_and_a_dropped_one_as_cancelled() {
        let metrics = Metrics::new();
        let unknown = Arc::new(Observed { policy: None, calls: metrics.method_calls(None) });
        drop(Outcome::new(Span::none(), Instant::now(), unknown.clone(), Arc::default()));
        Outcome::new(Span::none(), Instant::now(), unknown.clone(), Arc::default()).record(Code::Ok);
        Outcome::new(Span::none(), Instant::now(), unknown, Arc::default()).record(Code::Ok);
        let text = metrics.render();
        let count = |code: &str| {
            let prefix = format!("tenantry_rpc_calls_total{{service=\"unknown\",method=\"unknown\",code=\"{code}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_owned))
        };
        assert_eq!(count("CANCELLED").as_deref(), Some("1"), "{text}");
        assert_eq!(count("OK").as_deref(), Some("2"), "the kept series counts on: {text}");
        assert!(text.lines().any(|l| l == "tenantry_rpc_in_flight 0"), "{text}");
    }

    #[test]
    fn the_request_id_goes_out_never_indexed() {
        let unknown = Arc::new(Observed { policy: None, calls: Metrics::new().method_calls(None) });
        let outcome = Outcome::new(Span::none(), Instant::now(), unknown, Arc::default());
        let id = RequestId::generate();
        let response = finish(Response::new(Body::empty()), &id, outcome);
        let value = &response.headers()[REQUEST_ID_HEADER];
        assert_eq!(value.to_str().unwrap(), id.as_str());
        assert!(value.is_sensitive(), "unique per call: HPACK must not index it");
    }
}
