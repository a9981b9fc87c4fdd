//! Calls: counted and timed by method and code, calls shed by admission,
//! authentication failures, and the REST requests the gateway refuses itself.

use std::{sync::OnceLock, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use tonic::Code;

use super::Metrics;
use crate::policy::MethodPolicy;

/// Call latency buckets, in seconds: 1 ms to 30 s, dense where calls land.
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Why admission control refused a call before its handler ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedReason {
    /// Over the adaptive concurrency limit.
    Concurrency,
    /// Over the tenant's fair share while the node is saturated.
    FairShare,
    /// No database connection within the bounded wait.
    DbWait,
    /// PostgreSQL is known to be down: refused at once.
    DbDown,
}

impl ShedReason {
    fn as_str(self) -> &'static str {
        match self {
            ShedReason::Concurrency => "concurrency",
            ShedReason::FairShare => "fair_share",
            ShedReason::DbWait => "db_wait",
            ShedReason::DbDown => "db_down",
        }
    }
}

/// A REST request the gateway answered itself, without calling the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayRefusal {
    /// 404: no route matches the path.
    NoRoute,
    /// 405: the path exists with another HTTP method.
    MethodNotAllowed,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 400: the body is not valid JSON for the message.
    MalformedJson,
    /// 400: the body or query names a field the message does not have.
    UnknownField,
    /// 400: a path or query parameter cannot be converted.
    InvalidParameter,
    /// 413: the body is larger than the limit.
    BodyTooLarge,
    /// 400: the body could not be read (the client broke off).
    UnreadableBody,
}

impl GatewayRefusal {
    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayRefusal::NoRoute => "no_route",
            GatewayRefusal::MethodNotAllowed => "method_not_allowed",
            GatewayRefusal::UnsupportedMediaType => "unsupported_media_type",
            GatewayRefusal::MalformedJson => "malformed_json",
            GatewayRefusal::UnknownField => "unknown_field",
            GatewayRefusal::InvalidParameter => "invalid_parameter",
            GatewayRefusal::BodyTooLarge => "body_too_large",
            GatewayRefusal::UnreadableBody => "unreadable_body",
        }
    }
}

/// A method as a label pair, from the policy table.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

impl MethodLabels {
    fn of(method: Option<&MethodPolicy>) -> Self {
        match method {
            Some(policy) => MethodLabels { service: policy.service.clone(), method: policy.method.clone() },
            None => MethodLabels { service: "unknown".into(), method: "unknown".into() },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    method: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    service: String,
    method: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    pub(super) reason: &'static str,
}

pub(super) struct CallMetrics {
    calls: Family<CallLabels, Counter>,
    in_flight: Gauge,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    shed: Family<ShedLabels, Counter>,
    concurrency_limit: Gauge,
    auth_failures: Family<ReasonLabels, Counter>,
    gateway_refusals: Family<ReasonLabels, Counter>,
}

impl CallMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = CallMetrics {
            calls: Family::default(),
            in_flight: Gauge::default(),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            shed: Family::default(),
            concurrency_limit: Gauge::default(),
            auth_failures: Family::default(),
            gateway_refusals: Family::default(),
        };
        registry.register("rpc_calls", "Finished calls (gRPC and REST) by method and gRPC code", metrics.calls.clone());
        registry.register("rpc_in_flight", "Calls started and not yet finished", metrics.in_flight.clone());
        registry.register_with_unit(
            "rpc_duration",
            "Call latency by method, from the first byte in to the status out",
            Unit::Seconds,
            metrics.latency.clone(),
        );
        registry.register(
            "rpc_shed",
            "Calls refused by admission control before their handler ran, by method and reason",
            metrics.shed.clone(),
        );
        registry.register(
            "admission_concurrency_limit",
            "Current value of the adaptive concurrency limit",
            metrics.concurrency_limit.clone(),
        );
        registry.register(
            "auth_failures",
            "Calls refused as UNAUTHENTICATED, by reason",
            metrics.auth_failures.clone(),
        );
        registry.register(
            "gateway_refusals",
            "REST requests the gateway refused itself without calling the stack, by reason",
            metrics.gateway_refusals.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Counts a call as started; [`Metrics::record_call`] counts it finished.
    pub fn call_started(&self) {
        self.inner.calls.in_flight.inc();
    }

    /// Records a finished call: its method (`None` for an unknown path), its
    /// code and how long it took. Pairs with one [`Metrics::call_started`].
    /// The stack records through a kept [`MethodCalls`] instead, which skips
    /// the two family lookups.
    pub fn record_call(&self, method: Option<&MethodPolicy>, code: Code, elapsed: Duration) {
        self.method_calls(method).record(code, elapsed);
    }

    /// A method's call counters and latency histogram, to keep and record
    /// every call of that method with (`None`: the unknown method).
    pub fn method_calls(&self, method: Option<&MethodPolicy>) -> MethodCalls {
        MethodCalls {
            metrics: self.clone(),
            labels: MethodLabels::of(method),
            latency: OnceLock::new(),
            by_code: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Records a call admission control refused (it is also recorded by
    /// [`Metrics::record_call`] with the code it got).
    pub fn record_shed(&self, method: Option<&MethodPolicy>, reason: ShedReason) {
        let MethodLabels { service, method } = MethodLabels::of(method);
        self.inner.calls.shed.get_or_create(&ShedLabels { service, method, reason: reason.as_str() }).inc();
    }

    /// Publishes the adaptive concurrency limit's current value.
    pub fn set_concurrency_limit(&self, limit: usize) {
        self.inner.calls.concurrency_limit.set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// Records a call refused as UNAUTHENTICATED; `reason` is the error's
    /// `ErrorInfo` reason (`API_KEY_INVALID`, …), a fixed string in code.
    pub fn record_auth_failure(&self, reason: &'static str) {
        self.inner.calls.auth_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Records a REST request the gateway refused itself.
    pub fn record_gateway_refusal(&self, refusal: GatewayRefusal) {
        self.inner.calls.gateway_refusals.get_or_create(&ReasonLabels { reason: refusal.as_str() }).inc();
    }
}

/// How many gRPC codes there are (`OK` = 0 to `UNAUTHENTICATED` = 16).
const CODES: usize = 17;

/// One method's series of the call families, each looked up on its first
/// use and then kept. Looking a series up in its family hashes the label
/// strings and takes the family's lock; with two families per call that was
/// about 1,400 instructions of every call (`benches/instructions.sh`). A
/// series only appears once a call has recorded into it, as before.
pub struct MethodCalls {
    metrics: Metrics,
    labels: MethodLabels,
    latency: OnceLock<Histogram>,
    by_code: [OnceLock<Counter>; CODES],
}

impl MethodCalls {
    /// Counts a call of this method as started; [`MethodCalls::record`]
    /// counts it finished.
    pub fn started(&self) {
        self.metrics.call_started();
    }

    /// Records a finished call of this method: its code and how long it
    /// took. Pairs with one [`Metrics::call_started`].
    pub fn record(&self, code: Code, elapsed: Duration) {
        let calls = &self.metrics.inner.calls;
        calls.in_flight.dec();
        let latency = self.latency.get_or_init(|| calls.latency.get_or_create(&self.labels).clone());
        latency.observe(elapsed.as_secs_f64());
        // `Code`'s values are 0..=16, each named by `code_name`'s exhaustive match.
        let counter = self.by_code[code as usize].get_or_init(|| {
            let MethodLabels { service, method } = self.labels.clone();
            calls.calls.get_or_create(&CallLabels { service, method, code: code_name(code) }).clone()
        });
        counter.inc();
    }
}

/// The canonical gRPC name of a code (`OK`, `NOT_FOUND`, …).
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
    use super::*;

    #[test]
    fn unknown_methods_collapse_into_one_label() {
        let metrics = Metrics::new();
        metrics.record_call(None, Code::Unimplemented, Duration::from_millis(1));
        metrics.record_call(None, Code::Unimplemented, Duration::from_millis(1));
        metrics.record_shed(None, ShedReason::DbDown);
        let text = metrics.render();
        assert!(
            text.contains("tenantry_rpc_calls_total{service=\"unknown\",method=\"unknown\",code=\"UNIMPLEMENTED\"} 2"),
            "{text}"
        );
        assert!(text.contains("tenantry_rpc_shed_total{service=\"unknown\",method=\"unknown\",reason=\"db_down\"} 1"));
    }

    #[test]
    fn gateway_refusals_and_the_concurrency_limit_render() {
        let metrics = Metrics::new();
        metrics.record_gateway_refusal(GatewayRefusal::UnknownField);
        metrics.set_concurrency_limit(48);
        let text = metrics.render();
        assert!(text.lines().any(|l| l == "tenantry_gateway_refusals_total{reason=\"unknown_field\"} 1"), "{text}");
        assert!(text.lines().any(|l| l == "tenantry_admission_concurrency_limit 48"), "{text}");
    }
}
