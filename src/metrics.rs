//! Prometheus metrics: one registry per server, typed handles other modules
//! call, and the text exposition `GET /metrics` serves.
//!
//! Label values come from closed sets only, so the number of series is
//! bounded whatever callers send: methods from the policy table (anything
//! else collapses into `unknown`), gRPC codes, and enums or `&'static str`
//! reasons chosen in code. There are no per-tenant labels; per-tenant numbers
//! live in the usage tables, where they can be queried without exploding the
//! time-series database.
//!
//! # Layout
//!
//! - [`Metrics`]: the cheap-clone handle (an `Arc`) held by the stack, the
//!   HTTP listener and the domain modules; one method per thing to count.
//! - [`Metrics::render`]: the OpenMetrics/Prometheus text, with scrape-time
//!   values (the database pool) read just before encoding.
//!
//! See `docs/observability.md` for every metric's name, labels and meaning.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use sqlx::PgPool;
use tonic::Code;

use crate::policy::MethodPolicy;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets, in seconds: 1 ms to 10 s, dense where calls usually land.
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

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

/// What the rate limiter decided for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitDecision {
    /// The call was admitted.
    Allowed,
    /// The call was refused with RESOURCE_EXHAUSTED.
    Limited,
}

/// Which engine made the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitEngine {
    /// The in-process limiter (no Redis configured).
    Local,
    /// The shared limiter in Redis.
    Redis,
    /// The local fallback bucket, because Redis did not answer in time.
    Fallback,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitLabels {
    decision: &'static str,
    engine: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// How a usage flush ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushOutcome {
    /// The batch was written.
    Ok,
    /// The batch could not be written (it may be retried).
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlushLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The metrics of one server. Clone it freely: clones share the registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    in_flight: Gauge,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    rate_limit: Family<RateLimitLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    usage_flushes: Family<FlushLabels, Counter>,
    usage_rows: Counter,
    usage_dropped: Counter,
    job_depth: Family<StateLabels, Gauge>,
    job_lag: Family<StateLabels, FloatGauge>,
    db_pool: Family<StateLabels, Gauge>,
    db_pool_max: Gauge,
    redis_errors: Family<OperationLabels, Counter>,
    pool: std::sync::OnceLock<PgPool>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every Tenantry metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tenantry");
        let inner = Inner {
            calls: Family::default(),
            in_flight: Gauge::default(),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            rate_limit: Family::default(),
            auth_failures: Family::default(),
            usage_flushes: Family::default(),
            usage_rows: Counter::default(),
            usage_dropped: Counter::default(),
            job_depth: Family::default(),
            job_lag: Family::default(),
            db_pool: Family::default(),
            db_pool_max: Gauge::default(),
            redis_errors: Family::default(),
            pool: std::sync::OnceLock::new(),
            registry: Registry::default(),
        };
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "The running build; the value is always 1", build_info);
        registry.register("rpc_calls", "Finished calls by method and gRPC code", inner.calls.clone());
        registry.register("rpc_in_flight", "Calls started and not yet finished", inner.in_flight.clone());
        registry.register_with_unit(
            "rpc_duration",
            "Call latency by method, from the first byte in to the status out",
            Unit::Seconds,
            inner.latency.clone(),
        );
        registry.register(
            "rate_limit_decisions",
            "Rate-limit decisions by outcome and the engine that made them",
            inner.rate_limit.clone(),
        );
        registry.register("auth_failures", "Calls refused as UNAUTHENTICATED, by reason", inner.auth_failures.clone());
        registry.register(
            "usage_flushes",
            "Usage batches flushed to PostgreSQL, by outcome",
            inner.usage_flushes.clone(),
        );
        registry.register("usage_flushed_rows", "Usage rows written by flushes", inner.usage_rows.clone());
        registry.register(
            "usage_dropped_rows",
            "Usage rows dropped (buffer full or retries exhausted)",
            inner.usage_dropped.clone(),
        );
        registry.register("jobs_queue_depth", "Jobs in the queue by state", inner.job_depth.clone());
        registry.register_with_unit(
            "jobs_oldest_age",
            "Age of the oldest job in each state (for ready jobs: how far the queue is behind)",
            Unit::Seconds,
            inner.job_lag.clone(),
        );
        registry.register(
            "db_pool_connections",
            "PostgreSQL pool connections by state (in_use, idle)",
            inner.db_pool.clone(),
        );
        registry.register("db_pool_max_connections", "Size limit of the PostgreSQL pool", inner.db_pool_max.clone());
        registry.register(
            "redis_errors",
            "Redis commands that failed or timed out, by operation",
            inner.redis_errors.clone(),
        );
        Metrics { inner: Arc::new(Inner { registry, ..inner }) }
    }

    /// Reports the pool's connections at every scrape.
    pub fn watch_pool(&self, pool: PgPool) {
        drop(self.inner.pool.set(pool));
    }

    /// Counts a call as started; [`Metrics::record_call`] counts it finished.
    pub fn call_started(&self) {
        self.inner.in_flight.inc();
    }

    /// Records a finished call: its method (`None` for an unknown path), its
    /// code and how long it took. Pairs with one [`Metrics::call_started`].
    pub fn record_call(&self, method: Option<&MethodPolicy>, code: Code, elapsed: Duration) {
        self.inner.in_flight.dec();
        let labels = MethodLabels::of(method);
        self.inner.latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
        let MethodLabels { service, method } = labels;
        self.inner.calls.get_or_create(&CallLabels { service, method, code: code_name(code) }).inc();
    }

    /// Records one rate-limit decision. The limiter calls this once per
    /// checked call, with the engine that decided.
    pub fn record_rate_limit(&self, engine: RateLimitEngine, decision: RateLimitDecision) {
        let decision = match decision {
            RateLimitDecision::Allowed => "allowed",
            RateLimitDecision::Limited => "limited",
        };
        let engine = match engine {
            RateLimitEngine::Local => "local",
            RateLimitEngine::Redis => "redis",
            RateLimitEngine::Fallback => "fallback",
        };
        self.inner.rate_limit.get_or_create(&RateLimitLabels { decision, engine }).inc();
    }

    /// Records a call refused as UNAUTHENTICATED; `reason` is the error's
    /// `ErrorInfo` reason (`API_KEY_INVALID`, …), a fixed string in code.
    pub fn record_auth_failure(&self, reason: &'static str) {
        self.inner.auth_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Records one usage flush of `rows` rows.
    pub fn record_usage_flush(&self, outcome: FlushOutcome, rows: u64) {
        let label = match outcome {
            FlushOutcome::Ok => "ok",
            FlushOutcome::Failed => "failed",
        };
        self.inner.usage_flushes.get_or_create(&FlushLabels { outcome: label }).inc();
        if outcome == FlushOutcome::Ok {
            self.inner.usage_rows.inc_by(rows);
        }
    }

    /// Records usage rows given up on.
    pub fn record_usage_dropped(&self, rows: u64) {
        self.inner.usage_dropped.inc_by(rows);
    }

    /// Sets the job queue's depth and the age of its oldest job for one
    /// state (`ready`, `scheduled`, `running`, …; a fixed string in code).
    /// The jobs module calls this whenever it measures the queue; the age of
    /// the oldest ready job is the queue's lag.
    pub fn set_job_queue(&self, state: &'static str, depth: i64, oldest: Duration) {
        self.inner.job_depth.get_or_create(&StateLabels { state }).set(depth);
        self.inner.job_lag.get_or_create(&StateLabels { state }).set(oldest.as_secs_f64());
    }

    /// Records a failed Redis command; `operation` names what it was for
    /// (`ping`, `rate_limit`, …; a fixed string in code).
    pub fn record_redis_error(&self, operation: &'static str) {
        self.inner.redis_errors.get_or_create(&OperationLabels { operation }).inc();
    }

    /// The exposition text, with scrape-time values refreshed.
    pub fn render(&self) -> String {
        if let Some(pool) = self.inner.pool.get() {
            let size = i64::from(pool.size());
            let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
            self.inner.db_pool.get_or_create(&StateLabels { state: "idle" }).set(idle);
            self.inner.db_pool.get_or_create(&StateLabels { state: "in_use" }).set((size - idle).max(0));
            self.inner.db_pool_max.set(i64::from(pool.options().get_max_connections()));
        }
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
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
    fn rate_limit_decisions_are_counted_by_engine_and_outcome() {
        let metrics = Metrics::new();
        metrics.record_rate_limit(RateLimitEngine::Redis, RateLimitDecision::Allowed);
        metrics.record_rate_limit(RateLimitEngine::Fallback, RateLimitDecision::Limited);
        metrics.record_rate_limit(RateLimitEngine::Fallback, RateLimitDecision::Limited);
        let text = metrics.render();
        assert!(
            text.contains("tenantry_rate_limit_decisions_total{decision=\"allowed\",engine=\"redis\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tenantry_rate_limit_decisions_total{decision=\"limited\",engine=\"fallback\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn usage_jobs_and_redis_series_render() {
        let metrics = Metrics::new();
        metrics.record_usage_flush(FlushOutcome::Ok, 40);
        metrics.record_usage_flush(FlushOutcome::Failed, 7);
        metrics.record_usage_dropped(3);
        metrics.set_job_queue("ready", 12, Duration::from_millis(1500));
        metrics.record_redis_error("ping");
        let text = metrics.render();
        for line in [
            "tenantry_usage_flushes_total{outcome=\"ok\"} 1",
            "tenantry_usage_flushes_total{outcome=\"failed\"} 1",
            "tenantry_usage_flushed_rows_total 40",
            "tenantry_usage_dropped_rows_total 3",
            "tenantry_jobs_queue_depth{state=\"ready\"} 12",
            "tenantry_jobs_oldest_age_seconds{state=\"ready\"} 1.5",
            "tenantry_redis_errors_total{operation=\"ping\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn unknown_methods_collapse_into_one_label() {
        let metrics = Metrics::new();
        metrics.record_call(None, Code::Unimplemented, Duration::from_millis(1));
        metrics.record_call(None, Code::Unimplemented, Duration::from_millis(1));
        let text = metrics.render();
        assert!(
            text.contains("tenantry_rpc_calls_total{service=\"unknown\",method=\"unknown\",code=\"UNIMPLEMENTED\"} 2")
        );
    }
}
