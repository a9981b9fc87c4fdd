//! The load a tenant's scaling decision is fed, measured over the last
//! evaluation interval (at least a minute, so sparse traffic averages out):
//!
//! - request rate and compute time from metering (`platform.usage_counters`,
//!   metrics `api.requests` and `api.compute_ms`);
//! - job backlog: the tenant's jobs that are due and not yet leased.

use std::time::Duration;

use sqlx::PgPool;

use super::{policy::Signal, store::ScalingError};
use crate::tenancy::TenantId;

/// The tenant's current value of every signal.
pub async fn measure(pool: &PgPool, tenant: &TenantId, interval: Duration) -> Result<Vec<(Signal, f64)>, ScalingError> {
    let window = interval.max(Duration::from_secs(60));
    let backlog: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM platform.jobs
          WHERE tenant_id = $1 AND state IN ('available', 'scheduled', 'retryable') AND run_at <= now()",
    )
    .bind(tenant.as_str())
    .fetch_one(pool)
    .await?;
    let mut values = vec![(Signal::JobBacklog, backlog as f64)];
    // The metering table is part of the platform migrations the server
    // checks at start: no per-evaluation catalog lookup.
    let (requests, compute_ms): (f64, f64) = sqlx::query_as(
        "SELECT COALESCE(sum(value) FILTER (WHERE metric = 'api.requests'), 0)::float8,
                COALESCE(sum(value) FILTER (WHERE metric = 'api.compute_ms'), 0)::float8
           FROM platform.usage_counters
          WHERE tenant_id = $1 AND metric IN ('api.requests', 'api.compute_ms')
            AND bucket_start >= now() - $2 * interval '1 millisecond'",
    )
    .bind(tenant.as_str())
    .bind(window.as_millis() as i64)
    .fetch_one(pool)
    .await?;
    let seconds = window.as_secs_f64();
    values.push((Signal::RequestRate, requests / seconds));
    values.push((Signal::ComputeTime, compute_ms / 1000.0 / seconds));
    Ok(values)
}
