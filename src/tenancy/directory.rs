//! Tenant lookups for the hot path: every tenant-scoped call resolves its
//! tenant here. Results are kept in a [`NotifyCache`]; every change to a
//! tenant sends `NOTIFY tenantry_tenants` in its transaction, and each node's
//! change feed evicts the entry at once, so a suspension or deletion reaches
//! every node within the notification latency.

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;

use super::{TenancyError, TenantId, TenantRef, TenantState};
use crate::{
    cache::{NotifyCache, Ttl},
    ids,
};

/// The channel tenant changes are announced on; the payload is `<id>:<slug>`.
pub const CHANNEL: &str = "tenantry_tenants";
/// How long a found tenant is trusted without a notification (a safety net).
const FOUND_TTL: Duration = Duration::from_secs(60);
/// How long "no such tenant" is remembered, so bogus names cost little.
const MISSING_TTL: Duration = Duration::from_secs(2);

/// A lookup's answer, as cached.
#[derive(Clone)]
struct Found(Option<TenantRef>);

impl Ttl for Found {
    fn ttl(&self) -> Duration {
        if self.0.is_some() { FOUND_TTL } else { MISSING_TTL }
    }
}

/// Looks tenants up by id or slug, with a cache invalidated across nodes.
#[derive(Clone)]
pub struct TenantDirectory {
    pool: PgPool,
    cache: Arc<NotifyCache<String, Found>>,
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    slug: String,
    state: String,
}

impl TenantDirectory {
    /// A directory over `pool`; caching starts once its change feed connects.
    pub fn new(pool: PgPool) -> Self {
        Self::with_capacity(pool, crate::cache::DEFAULT_ENTRIES)
    }

    /// A directory caching at most `entries` lookups; beyond it the least
    /// useful are evicted one by one.
    pub fn with_capacity(pool: PgPool, entries: u64) -> Self {
        TenantDirectory { pool, cache: Arc::new(NotifyCache::new("tenants", entries)) }
    }

    /// The tenant named by `key` (an id or a slug), if there is one.
    pub async fn resolve(&self, key: &str) -> Result<Option<TenantRef>, TenancyError> {
        if let Some(Found(hit)) = self.cache.get(key) {
            return Ok(hit);
        }
        let ticket = self.cache.ticket();
        let found = self.load(key).await?;
        self.cache.store(ticket, key.to_owned(), Found(found.clone()));
        Ok(found)
    }

    async fn load(&self, key: &str) -> Result<Option<TenantRef>, TenancyError> {
        let row: Option<TenantRow> = if ids::is_id("ten", key) {
            sqlx::query_as("SELECT id, slug, state FROM platform.tenants WHERE id = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?
        } else {
            sqlx::query_as("SELECT id, slug, state FROM platform.tenants WHERE slug = $1 AND state <> 'deleted'")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?
        };
        row.map(|row| {
            let state = TenantState::from_db(&row.state).ok_or(TenancyError::CorruptState(row.state))?;
            let id = TenantId::parse(&row.id).ok_or_else(|| TenancyError::CorruptState(row.id.clone()))?;
            Ok(TenantRef { id, slug: row.slug.into(), state })
        })
        .transpose()
    }

    /// Forgets a tenant on this node at once, so the node that changed it
    /// reads its own write; other nodes follow through the notification.
    pub fn forget(&self, id: &TenantId, slug: &str) {
        self.evict(&format!("{id}:{slug}"));
    }

    /// Evicts a tenant (by the `<id>:<slug>` payload of a notification).
    fn evict(&self, payload: &str) {
        for key in payload.split(':') {
            self.cache.evict(key);
        }
    }

    /// Follows tenant changes from `feed`.
    pub fn subscribe(&self, feed: &mut crate::db::notify::ChangeFeed) {
        feed.subscribe(&[CHANNEL], Arc::new(self.clone()));
    }
}

impl crate::db::notify::Subscriber for TenantDirectory {
    fn connected(&self) {
        self.cache.connected();
    }

    fn notified(&self, _channel: &str, payload: &str) {
        self.evict(payload);
    }

    fn disconnected(&self) {
        self.cache.disconnected();
    }
}
