//! What a principal may do right now, cached per node and invalidated
//! across nodes with PostgreSQL LISTEN/NOTIFY (the same pattern as the
//! tenant directory): every change to a user, a role or an API key sends
//! `NOTIFY tenantry_identity` in its transaction, and each node's listener
//! evicts the entries at once. While the listener is disconnected the caches
//! are bypassed, since invalidations could be missed.
//!
//! Payloads: `user:<tenant>:<user>`, `tenant:<tenant>` (a role changed:
//! every user of the tenant), `key:<public id>` (a tenant API key revoked,
//! or a platform-admin key changed: a trigger on `platform.admin_api_keys`
//! sends it, so revoking one with plain SQL reaches every node).

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::{IdentityError, api_keys::CachedKey, roles};
use crate::{
    auth::api_key::AdminKey,
    tenancy::{TenantId, TenantTx},
};

/// The channel identity changes are announced on.
pub const CHANNEL: &str = "tenantry_identity";
/// How long an entry is trusted without a notification (a safety net).
const TTL: Duration = Duration::from_secs(60);
/// Beyond this many entries a cache starts over (bounded memory).
const MAX_ENTRIES: usize = 100_000;

/// A user's standing in a tenant, as authentication needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAccess {
    /// Live and active: may authenticate.
    pub active: bool,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<String>,
    pub permissions: Arc<BTreeSet<String>>,
}

struct Timed<T> {
    value: Arc<T>,
    at: Instant,
}

/// A verified API key as the cache holds it, under its public id.
#[derive(Debug)]
pub enum VerifiedKey {
    /// A tenant's key, from the tenant's schema.
    Tenant(CachedKey),
    /// A platform-admin key.
    Admin(AdminKey),
}

impl VerifiedKey {
    fn public_id(&self) -> &str {
        match self {
            VerifiedKey::Tenant(key) => &key.public_id,
            VerifiedKey::Admin(key) => &key.public_id,
        }
    }
}

/// Users' access by tenant and user id.
type UserMap = RwLock<HashMap<(TenantId, String), Timed<UserAccess>>>;

/// The per-node identity caches and their invalidation.
#[derive(Clone)]
pub struct IdentityCache {
    pool: PgPool,
    users: Arc<UserMap>,
    keys: Arc<RwLock<HashMap<String, Timed<VerifiedKey>>>>,
    listening: Arc<AtomicBool>,
    /// Bumped by every eviction, so a load that raced one is not cached.
    generation: Arc<AtomicU64>,
}

/// Announces that a user's access changed (sent when `conn` commits).
pub async fn notify_user(conn: &mut PgConnection, tenant: &TenantId, user_id: &str) -> Result<(), IdentityError> {
    notify(conn, &format!("user:{}:{user_id}", tenant.as_str())).await
}

/// Announces that every user of a tenant may have changed (a role changed).
pub async fn notify_tenant(conn: &mut PgConnection, tenant: &TenantId) -> Result<(), IdentityError> {
    notify(conn, &format!("tenant:{}", tenant.as_str())).await
}

/// Announces that an API key changed (revoked).
pub async fn notify_key(conn: &mut PgConnection, public_id: &str) -> Result<(), IdentityError> {
    notify(conn, &format!("key:{public_id}")).await
}

async fn notify(conn: &mut PgConnection, payload: &str) -> Result<(), IdentityError> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(conn).await?;
    Ok(())
}

/// Inserts unless an eviction happened since `seen`; checked under the map's
/// lock, which every eviction takes after bumping the generation, so none
/// can slip in between.
fn insert_bounded<K: std::hash::Hash + Eq, T>(
    map: &RwLock<HashMap<K, Timed<T>>>,
    generation: &AtomicU64,
    seen: u64,
    key: K,
    value: Arc<T>,
) {
    let mut map = map.write().unwrap_or_else(|e| e.into_inner());
    if generation.load(Ordering::Acquire) != seen {
        return;
    }
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(key, Timed { value, at: Instant::now() });
}

fn fresh<K: std::hash::Hash + Eq + ?Sized, Q, T>(map: &RwLock<HashMap<Q, Timed<T>>>, key: &K) -> Option<Arc<T>>
where
    Q: std::borrow::Borrow<K> + std::hash::Hash + Eq,
{
    let map = map.read().unwrap_or_else(|e| e.into_inner());
    map.get(key).filter(|t| t.at.elapsed() < TTL).map(|t| t.value.clone())
}

impl IdentityCache {
    /// Caches over `pool`; caching starts once [`Self::listen`] connects.
    pub fn new(pool: PgPool) -> Self {
        IdentityCache {
            pool,
            users: Arc::default(),
            keys: Arc::default(),
            listening: Arc::default(),
            generation: Arc::default(),
        }
    }

    /// Whether caching is on (the listener is connected).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Turns caching on without a listener: for benchmarks and single-node tools only.
    pub fn assume_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    /// A user's current access in `tenant`.
    pub async fn user(
        &self,
        tenant: &TenantId,
        user_id: &str,
        deadline: Instant,
    ) -> Result<Arc<UserAccess>, IdentityError> {
        if let Some(hit) = self.cached_user(tenant, user_id) {
            return Ok(hit);
        }
        let generation = self.generation();
        let mut tx = TenantTx::begin(&self.pool, tenant, deadline).await?;
        let access = Arc::new(load_user(&mut tx, user_id).await?);
        tx.commit().await?;
        self.remember_user(tenant, user_id, access.clone(), generation);
        Ok(access)
    }

    /// A user's cached access, if caching is on and the entry is fresh.
    pub fn cached_user(&self, tenant: &TenantId, user_id: &str) -> Option<Arc<UserAccess>> {
        if !self.is_listening() {
            return None;
        }
        fresh(&self.users, &(tenant.clone(), user_id.to_owned()))
    }

    /// Caches a user's access, unless an eviction happened since `generation`.
    pub fn remember_user(&self, tenant: &TenantId, user_id: &str, access: Arc<UserAccess>, generation: u64) {
        if self.is_listening() {
            insert_bounded(&self.users, &self.generation, generation, (tenant.clone(), user_id.to_owned()), access);
        }
    }

    /// A cached API key (a tenant's or a platform admin's) by public id.
    pub fn key(&self, public_id: &str) -> Option<Arc<VerifiedKey>> {
        if !self.is_listening() {
            return None;
        }
        fresh(&self.keys, public_id)
    }

    /// The current generation, to pass back to [`Self::remember_key`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches a verified key, unless an eviction happened since `generation`.
    pub fn remember_key(&self, key: Arc<VerifiedKey>, generation: u64) {
        if self.is_listening() {
            insert_bounded(&self.keys, &self.generation, generation, key.public_id().to_owned(), key);
        }
    }

    /// Forgets a user on this node at once, so the node that changed it
    /// reads its own write; other nodes follow through the notification.
    pub fn forget_user(&self, tenant: &TenantId, user_id: &str) {
        self.evict(&format!("user:{}:{user_id}", tenant.as_str()));
    }

    /// Forgets every user of a tenant on this node (a role changed).
    pub fn forget_tenant(&self, tenant: &TenantId) {
        self.evict(&format!("tenant:{}", tenant.as_str()));
    }

    /// Forgets an API key on this node (revoked).
    pub fn forget_key(&self, public_id: &str) {
        self.evict(&format!("key:{public_id}"));
    }

    fn evict(&self, payload: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut parts = payload.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("user"), Some(tenant), Some(user)) => {
                if let Some(tenant) = TenantId::parse(tenant) {
                    self.users.write().unwrap_or_else(|e| e.into_inner()).remove(&(tenant, user.to_owned()));
                }
            }
            (Some("tenant"), Some(tenant), None) => {
                self.users.write().unwrap_or_else(|e| e.into_inner()).retain(|(t, _), _| t.as_str() != tenant);
            }
            (Some("key"), Some(public_id), None) => {
                self.keys.write().unwrap_or_else(|e| e.into_inner()).remove(public_id);
            }
            _ => self.forget_everything(),
        }
    }

    fn forget_everything(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.users.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.keys.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Listens for identity changes on a session connection from
    /// `listen_pool` until `shutdown`, reconnecting as needed. Caching is on
    /// only while the listener is connected.
    pub fn listen(&self, listen_pool: PgPool, shutdown: CancellationToken) {
        crate::db::notify::listen(listen_pool, &[CHANNEL], "identity", std::sync::Arc::new(self.clone()), shutdown);
    }
}

/// A user's access, read in the tenant's connection.
pub async fn load_user(conn: &mut PgConnection, user_id: &str) -> Result<UserAccess, IdentityError> {
    let row: Option<(String, String, String)> =
        sqlx::query_as("SELECT state, email, display_name FROM users WHERE id = $1 AND deleted_at IS NULL")
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((state, email, display_name)) = row else {
        return Ok(UserAccess {
            active: false,
            email: String::new(),
            display_name: String::new(),
            roles: Vec::new(),
            permissions: Arc::default(),
        });
    };
    let roles: Vec<String> = sqlx::query_scalar("SELECT role_id FROM user_roles WHERE user_id = $1 ORDER BY role_id")
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await?;
    let permissions = roles::permissions_of(conn, &roles).await?;
    Ok(UserAccess { active: state == "active", email, display_name, roles, permissions: Arc::new(permissions) })
}

impl crate::db::notify::Subscriber for IdentityCache {
    fn connected(&self) {
        self.forget_everything();
        self.listening.store(true, Ordering::Release);
    }

    fn notified(&self, _channel: &str, payload: &str) {
        self.evict(payload);
    }

    fn disconnected(&self) {
        self.listening.store(false, Ordering::Release);
        self.forget_everything();
    }
}
