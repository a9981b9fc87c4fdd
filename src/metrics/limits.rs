//! What limits and meters calls: rate-limit decisions and the engine that
//! made them, quota refusals, the Redis calls behind distributed limits, and
//! the usage meter's flushes.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::Metrics;
use crate::config;

/// Redis round-trip buckets, in seconds: 0.25 ms to 1 s (the limiter's
/// command timeout is well under a second, so a timeout lands at the top).
const REDIS_BUCKETS: [f64; 12] = [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// What the rate limiter decided for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitDecision {
    /// The call was admitted.
    Allowed,
    /// The call was refused with RESOURCE_EXHAUSTED.
    Limited,
}

/// Which engine made a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitEngine {
    /// The in-process limiter (no Redis configured).
    Local,
    /// The shared limiter in Redis.
    Redis,
    /// The local fallback bucket, because Redis did not answer in time.
    Fallback,
}

/// A plan quota that refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quota {
    /// The plan's monthly request quota.
    MonthlyRequests,
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
struct DecisionLabels {
    decision: &'static str,
    engine: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabels {
    engine: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    quota: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlushLabels {
    outcome: &'static str,
}

pub(super) struct LimitMetrics {
    decisions: Family<DecisionLabels, Counter>,
    engine: Family<EngineLabels, Gauge>,
    quota_refusals: Family<QuotaLabels, Counter>,
    redis_latency: Family<OperationLabels, Histogram, fn() -> Histogram>,
    redis_errors: Family<OperationLabels, Counter>,
    usage_flushes: Family<FlushLabels, Counter>,
    usage_rows: Counter,
    usage_dropped: Counter,
}

impl LimitMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = LimitMetrics {
            decisions: Family::default(),
            engine: Family::default(),
            quota_refusals: Family::default(),
            redis_latency: Family::new_with_constructor(|| Histogram::new(REDIS_BUCKETS)),
            redis_errors: Family::default(),
            usage_flushes: Family::default(),
            usage_rows: Counter::default(),
            usage_dropped: Counter::default(),
        };
        registry.register(
            "rate_limit_decisions",
            "Rate-limit decisions by outcome and the engine that made them",
            metrics.decisions.clone(),
        );
        registry.register(
            "rate_limit_engine",
            "The rate-limit engine this node was started with (value 1)",
            metrics.engine.clone(),
        );
        registry.register(
            "quota_refusals",
            "Calls refused RESOURCE_EXHAUSTED by a plan quota, by quota",
            metrics.quota_refusals.clone(),
        );
        registry.register_with_unit(
            "redis_duration",
            "Round trip of Redis calls by operation, failures and timeouts included",
            Unit::Seconds,
            metrics.redis_latency.clone(),
        );
        registry.register(
            "redis_errors",
            "Redis calls that failed or timed out, by operation",
            metrics.redis_errors.clone(),
        );
        registry.register(
            "usage_flushes",
            "Usage batches flushed to PostgreSQL, by outcome",
            metrics.usage_flushes.clone(),
        );
        registry.register("usage_flushed_rows", "Usage rows written by flushes", metrics.usage_rows.clone());
        registry.register(
            "usage_dropped_rows",
            "Usage rows dropped (buffer full or retries exhausted)",
            metrics.usage_dropped.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Publishes the engine this node limits with (once, at start).
    pub fn set_rate_limit_engine(&self, engine: config::RateLimitEngine) {
        let engine = match engine {
            config::RateLimitEngine::Local => "local",
            config::RateLimitEngine::Redis => "redis",
        };
        self.inner.limits.engine.get_or_create(&EngineLabels { engine }).set(1);
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
        self.inner.limits.decisions.get_or_create(&DecisionLabels { decision, engine }).inc();
    }

    /// Records a call refused by a plan quota.
    pub fn record_quota_refusal(&self, quota: Quota) {
        let quota = match quota {
            Quota::MonthlyRequests => "monthly_requests",
        };
        self.inner.limits.quota_refusals.get_or_create(&QuotaLabels { quota }).inc();
    }

    /// Records one Redis call of `operation` (`rate_limit`, `ping`; a fixed
    /// string in code) that took `elapsed`; a failed or timed-out call is
    /// also counted as an error.
    pub fn record_redis_call(&self, operation: &'static str, elapsed: Duration, succeeded: bool) {
        let labels = OperationLabels { operation };
        self.inner.limits.redis_latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
        if !succeeded {
            self.inner.limits.redis_errors.get_or_create(&labels).inc();
        }
    }

    /// Records a failed Redis call whose duration is not known.
    pub fn record_redis_error(&self, operation: &'static str) {
        self.inner.limits.redis_errors.get_or_create(&OperationLabels { operation }).inc();
    }

    /// Records one usage flush of `rows` rows.
    pub fn record_usage_flush(&self, outcome: FlushOutcome, rows: u64) {
        let label = match outcome {
            FlushOutcome::Ok => "ok",
            FlushOutcome::Failed => "failed",
        };
        self.inner.limits.usage_flushes.get_or_create(&FlushLabels { outcome: label }).inc();
        if outcome == FlushOutcome::Ok {
            self.inner.limits.usage_rows.inc_by(rows);
        }
    }

    /// Records usage rows given up on.
    pub fn record_usage_dropped(&self, rows: u64) {
        self.inner.limits.usage_dropped.inc_by(rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }

    #[test]
    fn rate_limit_decisions_are_counted_by_engine_and_outcome() {
        let metrics = Metrics::new();
        metrics.set_rate_limit_engine(config::RateLimitEngine::Redis);
        metrics.record_rate_limit(RateLimitEngine::Redis, RateLimitDecision::Allowed);
        metrics.record_rate_limit(RateLimitEngine::Fallback, RateLimitDecision::Limited);
        metrics.record_rate_limit(RateLimitEngine::Fallback, RateLimitDecision::Limited);
        metrics.record_quota_refusal(Quota::MonthlyRequests);
        let text = metrics.render();
        has(&text, "tenantry_rate_limit_engine{engine=\"redis\"} 1");
        has(&text, "tenantry_rate_limit_decisions_total{decision=\"allowed\",engine=\"redis\"} 1");
        has(&text, "tenantry_rate_limit_decisions_total{decision=\"limited\",engine=\"fallback\"} 2");
        has(&text, "tenantry_quota_refusals_total{quota=\"monthly_requests\"} 1");
    }

    #[test]
    fn redis_calls_are_timed_and_failures_counted() {
        let metrics = Metrics::new();
        metrics.record_redis_call("rate_limit", Duration::from_micros(700), true);
        metrics.record_redis_call("rate_limit", Duration::from_millis(300), false);
        metrics.record_redis_error("ping");
        let text = metrics.render();
        has(&text, "tenantry_redis_duration_seconds_count{operation=\"rate_limit\"} 2");
        has(&text, "tenantry_redis_duration_seconds_bucket{operation=\"rate_limit\",le=\"0.001\"} 1");
        has(&text, "tenantry_redis_errors_total{operation=\"rate_limit\"} 1");
        has(&text, "tenantry_redis_errors_total{operation=\"ping\"} 1");
    }

    #[test]
    fn usage_flushes_render() {
        let metrics = Metrics::new();
        metrics.record_usage_flush(FlushOutcome::Ok, 40);
        metrics.record_usage_flush(FlushOutcome::Failed, 7);
        metrics.record_usage_dropped(3);
        let text = metrics.render();
        has(&text, "tenantry_usage_flushes_total{outcome=\"ok\"} 1");
        has(&text, "tenantry_usage_flushes_total{outcome=\"failed\"} 1");
        has(&text, "tenantry_usage_flushed_rows_total 40");
        has(&text, "tenantry_usage_dropped_rows_total 3");
    }
}
