//! Monthly request counts per tenant, kept in memory so the quota check
//! costs no query per call.
//!
//! A tenant's count is `base + unflushed`: `base` is what the database held
//! for this month when last read (lazily on the tenant's first limited call,
//! then after flushes, to pick up other nodes' calls), `unflushed` is what
//! this node's meter counted and has not yet written. The meter moves counts
//! from `unflushed` into `base` as it flushes them, so nothing is counted
//! twice. Between reconciliations other nodes' calls are not seen, which is
//! why a quota may be exceeded slightly (documented in GetQuota).
//!
//! The map is bounded and evicted (moka, no process-wide lock): a tenant
//! unused here for ten minutes is forgotten, and so is the least recently
//! used one past its capacity (`--cache-entries`). A forgotten tenant's count is read from
//! the database again on its next call, which then includes everything
//! flushed; reconciliation after each flush covers only the tenants kept.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Datelike, TimeZone, Utc};
use sqlx::PgPool;

use crate::tenancy::TenantId;

/// The metric the monthly request quota counts.
pub const REQUESTS_METRIC: &str = "api.requests";

#[derive(Default)]
struct Count {
    /// Months since year 0 of `base`.
    month: AtomicI64,
    base: AtomicU64,
    unflushed: AtomicI64,
    loaded: AtomicBool,
}

impl Count {
    fn used(&self) -> u64 {
        self.base.load(Ordering::Acquire).saturating_add(self.unflushed.load(Ordering::Acquire).max(0) as u64)
    }
}

/// A tenant unused this long is forgotten (and re-read on its next call).
const IDLE: Duration = Duration::from_secs(600);

/// See the module docs.
#[derive(Clone)]
pub struct QuotaBook {
    pool: PgPool,
    counts: moka::sync::Cache<TenantId, Arc<Count>>,
}

/// The first instant of `at`'s UTC month, and of the next one.
pub fn month_bounds(at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0).single().unwrap_or(at);
    let (year, month) = if at.month() == 12 { (at.year() + 1, 1) } else { (at.year(), at.month() + 1) };
    let end = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single().unwrap_or(at);
    (start, end)
}

fn month_index(at: DateTime<Utc>) -> i64 {
    i64::from(at.year()) * 12 + i64::from(at.month0())
}

impl QuotaBook {
    /// An empty book over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self::with_capacity(pool, crate::cache::DEFAULT_ENTRIES)
    }

    /// An empty book keeping at most `tenants` counts.
    pub fn with_capacity(pool: PgPool, tenants: u64) -> Self {
        let counts = moka::sync::Cache::builder().max_capacity(tenants).time_to_idle(IDLE).build();
        QuotaBook { pool, counts }
    }

    fn count(&self, tenant: &TenantId) -> Arc<Count> {
        self.counts.get_with_by_ref(tenant, Arc::default)
    }

    /// Tenants kept now (bounded by the capacity).
    pub fn tenants(&self) -> u64 {
        self.counts.run_pending_tasks();
        self.counts.entry_count()
    }

    /// Requests `tenant` made this UTC month, loading the stored count on
    /// first use (one query per tenant and node per month).
    pub async fn used(&self, tenant: &TenantId) -> Result<u64, sqlx::Error> {
        let count = self.count(tenant);
        let now = Utc::now();
        let month = month_index(now);
        if !count.loaded.load(Ordering::Acquire) || count.month.load(Ordering::Acquire) != month {
            let (start, end) = month_bounds(now);
            let stored = load(&self.pool, std::slice::from_ref(tenant), start, end).await?;
            count.month.store(month, Ordering::Release);
            count.base.store(stored.get(tenant).copied().unwrap_or(0), Ordering::Release);
            count.loaded.store(true, Ordering::Release);
        }
        Ok(count.used())
    }

    /// The meter counted `n` calls of `tenant` (not yet written).
    pub fn counted(&self, tenant: &TenantId, n: u64) {
        self.count(tenant).unflushed.fetch_add(n as i64, Ordering::AcqRel);
    }

    /// The meter wrote `n` calls of `tenant` in the minute starting `at`.
    /// A forgotten tenant is not brought back: its next call re-reads the
    /// database, which then holds these calls.
    pub fn flushed(&self, tenant: &TenantId, at: DateTime<Utc>, n: u64) {
        let Some(count) = self.counts.get(tenant) else { return };
        if count.loaded.load(Ordering::Acquire) && count.month.load(Ordering::Acquire) == month_index(at) {
            count.base.fetch_add(n, Ordering::AcqRel);
        }
        unflush(&count, n);
    }

    /// The meter dropped `n` calls of `tenant` (buffer full).
    pub fn dropped(&self, tenant: &TenantId, n: u64) {
        if let Some(count) = self.counts.get(tenant) {
            unflush(&count, n);
        }
    }

    /// Re-reads the stored counts of every loaded tenant, picking up other
    /// nodes' calls. Run by the meter right after a flush.
    pub async fn reconcile(&self) -> Result<(), sqlx::Error> {
        let now = Utc::now();
        let month = month_index(now);
        let loaded: Vec<(TenantId, Arc<Count>)> = self
            .counts
            .iter()
            .filter(|(_, c)| c.loaded.load(Ordering::Acquire))
            .map(|(t, c)| ((*t).clone(), c))
            .collect();
        let (start, end) = month_bounds(now);
        for chunk in loaded.chunks(1000) {
            let tenants: Vec<TenantId> = chunk.iter().map(|(t, _)| t.clone()).collect();
            let stored = load(&self.pool, &tenants, start, end).await?;
            for (tenant, count) in chunk {
                count.month.store(month, Ordering::Release);
                count.base.store(stored.get(tenant).copied().unwrap_or(0), Ordering::Release);
            }
        }
        Ok(())
    }
}

/// Takes `n` flushed or dropped calls off `count`'s unflushed ones, never
/// below zero (a tenant forgotten and re-created in between started at 0).
fn unflush(count: &Count, n: u64) {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let _ = count.unflushed.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some((u - n).max(0)));
}

async fn load(
    pool: &PgPool,
    tenants: &[TenantId],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<HashMap<TenantId, u64>, sqlx::Error> {
    let ids: Vec<&str> = tenants.iter().map(TenantId::as_str).collect();
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT tenant_id, sum(value) FROM platform.usage_counters
         WHERE tenant_id = ANY($1) AND metric = $2 AND bucket_start >= $3 AND bucket_start < $4
         GROUP BY tenant_id",
    )
    .bind(&ids)
    .bind(REQUESTS_METRIC)
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().filter_map(|(id, sum)| Some((TenantId::parse(&id)?, sum.max(0.0) as u64))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months() {
        let at = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let (start, end) = month_bounds(at);
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    }
}
