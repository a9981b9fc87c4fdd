//! The database pool: connections in use and idle and the size limit, read
//! from sqlx at scrape time; callers waiting, the acquire wait and failed
//! waits, recorded by the timed acquire in `db::acquire`.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::Counter, family::Family, gauge::ConstGauge, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use sqlx::PgPool;

use super::{Metrics, calls::ReasonLabels};

/// Acquire-wait buckets, in seconds: 0.1 ms (an idle connection) to 5 s
/// (beyond any sensible acquire timeout).
const ACQUIRE_BUCKETS: [f64; 13] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Why a wait for a connection ended without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireFailure {
    /// The wait bound passed.
    Timeout,
    /// Connecting (or the pool) failed.
    Error,
}

pub(super) struct PoolMetrics {
    waiters: Gauge,
    wait: Histogram,
    failures: Family<ReasonLabels, Counter>,
}

impl PoolMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = PoolMetrics {
            waiters: Gauge::default(),
            wait: Histogram::new(ACQUIRE_BUCKETS),
            failures: Family::default(),
        };
        registry.register("db_pool_waiters", "Callers waiting for a database connection", metrics.waiters.clone());
        registry.register_with_unit(
            "db_pool_acquire_duration",
            "Time to get a database connection from the pool, failed waits included",
            Unit::Seconds,
            metrics.wait.clone(),
        );
        registry.register(
            "db_pool_acquire_failures",
            "Waits for a database connection that ended without one, by reason",
            metrics.failures.clone(),
        );
        metrics
    }
}

/// One caller waiting for a connection: counted while it lives.
pub struct Waiting<'a> {
    metrics: &'a Metrics,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.metrics.inner.pool.waiters.dec();
    }
}

impl Metrics {
    /// Counts a caller as waiting for a connection until the guard drops
    /// (so a cancelled wait is uncounted too).
    pub fn pool_wait_started(&self) -> Waiting<'_> {
        self.inner.pool.waiters.inc();
        Waiting { metrics: self }
    }

    /// Records how long one wait for a connection took and, when it got
    /// none, why.
    pub fn record_pool_acquire(&self, waited: Duration, failure: Option<AcquireFailure>) {
        let pool = &self.inner.pool;
        pool.wait.observe(waited.as_secs_f64());
        if let Some(failure) = failure {
            let reason = match failure {
                AcquireFailure::Timeout => "timeout",
                AcquireFailure::Error => "error",
            };
            pool.failures.get_or_create(&ReasonLabels { reason }).inc();
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// The watched pool's connections, read from sqlx when scraped.
#[derive(Debug)]
pub(super) struct PoolGauges(pub(super) Arc<OnceLock<PgPool>>);

impl Collector for PoolGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(pool) = self.0.get() else { return Ok(()) };
        let size = i64::from(pool.size());
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        let mut connections = encoder.encode_descriptor(
            "db_pool_connections",
            "Database pool connections by state (in_use, idle).",
            None,
            MetricType::Gauge,
        )?;
        for (state, value) in [("in_use", (size - idle).max(0)), ("idle", idle)] {
            ConstGauge::new(value).encode(connections.encode_family(&StateLabels { state })?)?;
        }
        let max = i64::from(pool.options().get_max_connections());
        let limit = encoder.encode_descriptor(
            "db_pool_max_connections",
            "Size limit of the database pool.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(max).encode(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_timed_counted_while_they_last_and_failures_counted() {
        let metrics = Metrics::new();
        let waiting = metrics.pool_wait_started();
        assert!(metrics.render().lines().any(|l| l == "tenantry_db_pool_waiters 1"));
        drop(waiting);
        metrics.record_pool_acquire(Duration::from_micros(50), None);
        metrics.record_pool_acquire(Duration::from_millis(800), Some(AcquireFailure::Timeout));
        let text = metrics.render();
        for line in [
            "tenantry_db_pool_waiters 0",
            "tenantry_db_pool_acquire_duration_seconds_count 2",
            "tenantry_db_pool_acquire_failures_total{reason=\"timeout\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
    }
}
