//! Taking a connection from the pool, timed and bounded: how long callers
//! wait, how many wait at once, and which waits end without a connection
//! all reach `/metrics` (`tenantry_db_pool_*`).
//!
//! sqlx does not expose its wait queue, so the pool's waiters and acquire
//! time are only as complete as the callers that come through here; tenant
//! transactions and admission's bounded wait are meant to.

use std::time::{Duration, Instant};

use sqlx::{PgPool, Postgres, Transaction, pool::PoolConnection};

use crate::metrics::{AcquireFailure, Metrics};

/// A connection from `pool` within `wait` (the pool's own acquire timeout
/// still applies when it is shorter). A wait that runs out is
/// `sqlx::Error::PoolTimedOut`, as sqlx's own timeout is, so callers map both
/// the same way.
pub async fn acquire(
    pool: &PgPool,
    metrics: &Metrics,
    wait: Duration,
) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    let waiting = metrics.pool_wait_started();
    let started = Instant::now();
    let result = match tokio::time::timeout(wait, pool.acquire()).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    };
    drop(waiting);
    let failure = match &result {
        Ok(_) => None,
        Err(sqlx::Error::PoolTimedOut) => Some(AcquireFailure::Timeout),
        Err(_) => Some(AcquireFailure::Error),
    };
    metrics.record_pool_acquire(started.elapsed(), failure);
    result
}

/// A transaction on a connection from [`acquire`]. The wait is timed up to
/// the connection alone, not `BEGIN`'s round trip.
pub async fn begin(
    pool: &PgPool,
    metrics: &Metrics,
    wait: Duration,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let connection = acquire(pool, metrics, wait).await?;
    // `PgPool::begin` does this after its own, untimed acquire (cancel-safe here).
    super::begin_on(connection, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_on_an_unreachable_database_is_counted_as_failed_and_uncounted_as_waiting() {
        // Nothing listens on port 1: connecting fails (or the wait runs out).
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let metrics = Metrics::new();
        let error = begin(&pool, &metrics, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(error, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)), "{error:?}");
        let text = metrics.render();
        assert!(text.lines().any(|l| l == "tenantry_db_pool_waiters 0"), "{text}");
        assert!(text.lines().any(|l| l == "tenantry_db_pool_acquire_duration_seconds_count 1"), "{text}");
        assert!(text.contains("tenantry_db_pool_acquire_failures_total{reason="), "{text}");
    }
}
