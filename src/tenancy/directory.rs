//! Tenant lookups for the hot path: every tenant-scoped call resolves its
//! tenant here. Results are cached in memory; every change to a tenant sends
//! `NOTIFY tenantry_tenants` in its transaction, and each node's listener
//! evicts the entry at once, so a suspension or deletion reaches every node
//! within the notification latency. While the listener is not connected the
//! cache is bypassed, since invalidations could be missed.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{TenancyError, TenantId, TenantRef, TenantState};
use crate::ids;

/// The channel tenant changes are announced on; the payload is `<id>:<slug>`.
pub const CHANNEL: &str = "tenantry_tenants";
/// How long a found tenant is trusted without a notification (a safety net).
const FOUND_TTL: Duration = Duration::from_secs(60);
/// How long "no such tenant" is remembered, so bogus names cost little.
const MISSING_TTL: Duration = Duration::from_secs(2);
/// Beyond this many entries the cache starts over (bounded memory).
const MAX_ENTRIES: usize = 200_000;

#[derive(Clone)]
enum Entry {
    Found(TenantRef, Instant),
    Missing(Instant),
}

#[derive(Default)]
struct Cache {
    entries: RwLock<HashMap<String, Entry>>,
    listening: AtomicBool,
    /// Bumped by every eviction, so a load that raced one is not cached
    /// (it may have read the row before the change committed).
    generation: AtomicU64,
}

/// Looks tenants up by id or slug, with a cache invalidated across nodes.
#[derive(Clone)]
pub struct TenantDirectory {
    pool: PgPool,
    cache: Arc<Cache>,
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    slug: String,
    state: String,
}

impl TenantDirectory {
    /// A directory over `pool`; caching starts once [`Self::listen`] runs.
    pub fn new(pool: PgPool) -> Self {
        TenantDirectory { pool, cache: Arc::default() }
    }

    /// The tenant named by `key` (an id or a slug), if there is one.
    pub async fn resolve(&self, key: &str) -> Result<Option<TenantRef>, TenancyError> {
        let listening = self.cache.listening.load(Ordering::Acquire);
        if listening && let Some(hit) = self.cached(key) {
            return Ok(hit);
        }
        let generation = self.cache.generation.load(Ordering::Acquire);
        let found = self.load(key).await?;
        if listening {
            let now = Instant::now();
            let entry = match &found {
                Some(tenant) => Entry::Found(tenant.clone(), now),
                None => Entry::Missing(now),
            };
            let mut entries = self.cache.entries.write().unwrap_or_else(|e| e.into_inner());
            // Checked under the lock evictions take, so none slips in between.
            if self.cache.generation.load(Ordering::Acquire) != generation {
                return Ok(found);
            }
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key.to_owned(), entry);
        }
        Ok(found)
    }

    fn cached(&self, key: &str) -> Option<Option<TenantRef>> {
        let entries = self.cache.entries.read().unwrap_or_else(|e| e.into_inner());
        match entries.get(key)? {
            Entry::Found(tenant, at) if at.elapsed() < FOUND_TTL => Some(Some(tenant.clone())),
            Entry::Missing(at) if at.elapsed() < MISSING_TTL => Some(None),
            _ => None,
        }
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
            Ok(TenantRef { id, slug: row.slug, state })
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
        let mut entries = self.cache.entries.write().unwrap_or_else(|e| e.into_inner());
        self.cache.generation.fetch_add(1, Ordering::AcqRel);
        for key in payload.split(':') {
            entries.remove(key);
        }
    }

    fn forget_everything(&self) {
        let mut entries = self.cache.entries.write().unwrap_or_else(|e| e.into_inner());
        self.cache.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// Listens for tenant changes on a session connection from
    /// `listen_pool` until `shutdown`, reconnecting as needed. Caching is on
    /// only while the listener is connected.
    pub fn listen(&self, listen_pool: PgPool, shutdown: CancellationToken) {
        crate::db::notify::listen(listen_pool, &[CHANNEL], "tenants", std::sync::Arc::new(self.clone()), shutdown);
    }
}

impl crate::db::notify::Subscriber for TenantDirectory {
    fn connected(&self) {
        self.forget_everything();
        self.cache.listening.store(true, Ordering::Release);
    }

    fn notified(&self, _channel: &str, payload: &str) {
        self.evict(payload);
    }

    fn disconnected(&self) {
        self.cache.listening.store(false, Ordering::Release);
        self.forget_everything();
    }
}
