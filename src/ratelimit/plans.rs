//! Each tenant's plan limits, looked up on every limited call and therefore
//! cached in a [`NotifyCache`]. A tenant's change (its plan included) is
//! announced on `tenantry_tenants` and a plan's on `tenantry_plans`; this
//! node's change feed evicts the affected entries at once, so new limits
//! apply within the notification latency.

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;

use super::Limits;
use crate::{
    cache::{NotifyCache, Ttl},
    db::notify::ChangeFeed,
    tenancy::{TenantId, directory},
};

/// The channel plan changes are announced on; the payload is the plan id.
pub const PLANS_CHANNEL: &str = "tenantry_plans";
/// How long an entry is trusted without a notification (a safety net).
const TTL: Duration = Duration::from_secs(60);

impl Ttl for Arc<Limits> {
    fn ttl(&self) -> Duration {
        TTL
    }
}

/// Tenant → plan limits, cached and invalidated across nodes.
#[derive(Clone)]
pub struct PlanBook {
    pool: PgPool,
    cache: Arc<NotifyCache<TenantId, Arc<Limits>>>,
}

#[derive(sqlx::FromRow)]
struct LimitsRow {
    plan_id: String,
    requests_per_second: i32,
    burst: i32,
    monthly_request_quota: i64,
}

impl PlanBook {
    /// A book over `pool`; caching starts once its change feed connects.
    pub fn new(pool: PgPool) -> Self {
        Self::with_capacity(pool, crate::cache::DEFAULT_ENTRIES)
    }

    /// A book caching at most `entries` tenants' limits; beyond it the least
    /// useful are evicted one by one.
    pub fn with_capacity(pool: PgPool, entries: u64) -> Self {
        PlanBook { pool, cache: Arc::new(NotifyCache::new("plans", entries)) }
    }

    /// The limits of `tenant`'s plan; `None` for an unknown tenant.
    pub async fn limits(&self, tenant: &TenantId) -> Result<Option<Arc<Limits>>, sqlx::Error> {
        if let Some(limits) = self.cache.get(tenant) {
            return Ok(Some(limits));
        }
        let ticket = self.cache.ticket();
        let row: Option<LimitsRow> = sqlx::query_as(
            "SELECT p.id AS plan_id, p.requests_per_second, p.burst, p.monthly_request_quota
             FROM platform.tenants t JOIN platform.plans p ON p.id = t.plan_id WHERE t.id = $1",
        )
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let limits = Arc::new(Limits {
            plan_id: row.plan_id,
            requests_per_second: u32::try_from(row.requests_per_second).unwrap_or(0),
            burst: u32::try_from(row.burst).unwrap_or(0),
            monthly_request_quota: u64::try_from(row.monthly_request_quota).unwrap_or(0),
        });
        self.cache.store(ticket, tenant.clone(), limits.clone());
        Ok(Some(limits))
    }

    /// Follows tenant (plan assignment) and plan changes from `feed`.
    pub fn subscribe(&self, feed: &mut ChangeFeed) {
        feed.subscribe(&[directory::CHANNEL, PLANS_CHANNEL], Arc::new(self.clone()));
    }
}

impl crate::db::notify::Subscriber for PlanBook {
    fn connected(&self) {
        self.cache.connected();
    }

    fn notified(&self, channel: &str, payload: &str) {
        if channel == PLANS_CHANNEL {
            let plan = payload.to_owned();
            self.cache.evict_where(move |_, limits| limits.plan_id == plan);
        } else if let Some(tenant) = payload.split(':').next().and_then(TenantId::parse) {
            self.cache.evict(&tenant);
        }
    }

    fn disconnected(&self) {
        self.cache.disconnected();
    }
}
