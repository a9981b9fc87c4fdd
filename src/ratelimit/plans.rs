//! Each tenant's plan limits, looked up on every limited call and therefore
//! cached. A tenant's change (its plan included) is announced on
//! `tenantry_tenants` and a plan's on `tenantry_plans`; this node's listener
//! evicts the affected entries at once, so new limits apply within the
//! notification latency. While the listener is down the cache is bypassed,
//! since invalidations could be missed.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::Limits;
use crate::tenancy::{TenantId, directory};

/// The channel plan changes are announced on; the payload is the plan id.
pub const PLANS_CHANNEL: &str = "tenantry_plans";
/// How long an entry is trusted without a notification (a safety net).
const TTL: Duration = Duration::from_secs(60);
/// Beyond this many entries the cache starts over (bounded memory).
const MAX_ENTRIES: usize = 200_000;

#[derive(Default)]
struct Cache {
    entries: RwLock<HashMap<TenantId, (Arc<Limits>, Instant)>>,
    listening: AtomicBool,
}

/// Tenant → plan limits, cached and invalidated across nodes.
#[derive(Clone)]
pub struct PlanBook {
    pool: PgPool,
    cache: Arc<Cache>,
}

#[derive(sqlx::FromRow)]
struct LimitsRow {
    plan_id: String,
    requests_per_second: i32,
    burst: i32,
    monthly_request_quota: i64,
}

impl PlanBook {
    /// A book over `pool`; caching starts once [`Self::listen`] runs.
    pub fn new(pool: PgPool) -> Self {
        PlanBook { pool, cache: Arc::default() }
    }

    /// The limits of `tenant`'s plan; `None` for an unknown tenant.
    pub async fn limits(&self, tenant: &TenantId) -> Result<Option<Arc<Limits>>, sqlx::Error> {
        let listening = self.cache.listening.load(Ordering::Acquire);
        if listening
            && let Some((limits, at)) = self.cache.entries.read().unwrap_or_else(|e| e.into_inner()).get(tenant)
            && at.elapsed() < TTL
        {
            return Ok(Some(limits.clone()));
        }
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
        if listening {
            let mut entries = self.cache.entries.write().unwrap_or_else(|e| e.into_inner());
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(tenant.clone(), (limits.clone(), Instant::now()));
        }
        Ok(Some(limits))
    }

    fn evict_tenant(&self, payload: &str) {
        let mut entries = self.cache.entries.write().unwrap_or_else(|e| e.into_inner());
        if let Some(tenant) = payload.split(':').next().and_then(TenantId::parse) {
            entries.remove(&tenant);
        }
    }

    fn evict_plan(&self, plan_id: &str) {
        let mut entries = self.cache.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (limits, _)| limits.plan_id != plan_id);
    }

    fn forget_everything(&self) {
        self.cache.entries.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Listens for tenant and plan changes on a session connection from
    /// `listen_pool` until `shutdown`, reconnecting as needed. Caching is on
    /// only while the listener is connected.
    pub fn listen(&self, listen_pool: PgPool, shutdown: CancellationToken) {
        crate::db::notify::listen(
            listen_pool,
            &[directory::CHANNEL, PLANS_CHANNEL],
            "plans",
            std::sync::Arc::new(self.clone()),
            shutdown,
        );
    }
}

impl crate::db::notify::Subscriber for PlanBook {
    fn connected(&self) {
        self.forget_everything();
        self.cache.listening.store(true, Ordering::Release);
    }

    fn notified(&self, channel: &str, payload: &str) {
        if channel == PLANS_CHANNEL { self.evict_plan(payload) } else { self.evict_tenant(payload) }
    }

    fn disconnected(&self) {
        self.cache.listening.store(false, Ordering::Release);
        self.forget_everything();
    }
}
