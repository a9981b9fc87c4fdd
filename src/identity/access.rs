//! What a principal may do right now, cached per node in two
//! [`NotifyCache`]s (users' access, verified API keys) and invalidated across
//! nodes: every change to a user, a role or an API key sends
//! `NOTIFY tenantry_identity` in its transaction, and each node's change feed
//! evicts the entries at once.
//!
//! Payloads: `user:<tenant>:<user>`, `tenant:<tenant>` (a role changed:
//! every user of the tenant), `key:<public id>` (a tenant API key revoked,
//! or a platform-admin key changed: a trigger on `platform.admin_api_keys`
//! sends it, so revoking one with plain SQL reaches every node).

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::{PgConnection, PgPool};

use super::{IdentityError, api_keys::CachedKey, roles};
use crate::{
    auth::api_key::AdminKey,
    cache::{LoadTicket, NotifyCache, Ttl},
    db::notify::ChangeFeed,
    tenancy::{TenantId, TenantTx},
};

/// The channel identity changes are announced on.
pub const CHANNEL: &str = "tenantry_identity";
/// How long an entry is trusted without a notification (a safety net).
const TTL: Duration = Duration::from_secs(60);

/// The key of a user's cached access: `(tenant, user id)`.
pub type UserKey = (TenantId, String);

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

impl Ttl for Arc<UserAccess> {
    fn ttl(&self) -> Duration {
        TTL
    }
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

impl Ttl for Arc<VerifiedKey> {
    fn ttl(&self) -> Duration {
        TTL
    }
}

/// The per-node identity caches and their invalidation.
#[derive(Clone)]
pub struct IdentityCache {
    pool: PgPool,
    users: Arc<NotifyCache<UserKey, Arc<UserAccess>>>,
    keys: Arc<NotifyCache<String, Arc<VerifiedKey>>>,
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

impl IdentityCache {
    /// Caches over `pool`; caching starts once their change feed connects.
    pub fn new(pool: PgPool) -> Self {
        Self::with_capacity(pool, crate::cache::DEFAULT_ENTRIES)
    }

    /// Caches of at most `entries` users and `entries` keys each; beyond it
    /// the least useful are evicted one by one.
    pub fn with_capacity(pool: PgPool, entries: u64) -> Self {
        IdentityCache {
            pool,
            users: Arc::new(NotifyCache::new("identity_users", entries)),
            keys: Arc::new(NotifyCache::new("api_keys", entries)),
        }
    }

    /// Turns caching on without a listener: for benchmarks and single-node tools only.
    pub fn assume_listening(&self) {
        self.users.assume_listening();
        self.keys.assume_listening();
    }

    /// A user's current access, by `(tenant, user id)`.
    pub async fn user(&self, key: &UserKey, deadline: Instant) -> Result<Arc<UserAccess>, IdentityError> {
        let (tenant, user_id) = key;
        self.users
            .get_or_load(key, async {
                let mut tx = TenantTx::begin(&self.pool, tenant, deadline).await?;
                let access = Arc::new(load_user(&mut tx, user_id).await?);
                tx.commit().await?;
                Ok(access)
            })
            .await
    }

    /// A user's cached access, if caching is on and the entry is fresh.
    pub fn cached_user(&self, tenant: &TenantId, user_id: &str) -> Option<Arc<UserAccess>> {
        self.users.get(&(tenant.clone(), user_id.to_owned()))
    }

    /// Caches a user's access loaded since `ticket` (benchmarks).
    pub fn remember_user(&self, ticket: LoadTicket, tenant: &TenantId, user_id: &str, access: Arc<UserAccess>) {
        self.users.store(ticket, (tenant.clone(), user_id.to_owned()), access);
    }

    /// A cached API key (a tenant's or a platform admin's) by public id.
    pub fn key(&self, public_id: &str) -> Option<Arc<VerifiedKey>> {
        self.keys.get(public_id)
    }

    /// Take before loading a key; pass to [`Self::remember_key`].
    pub fn key_ticket(&self) -> LoadTicket {
        self.keys.ticket()
    }

    /// Take before loading a user; pass to [`Self::remember_user`].
    pub fn user_ticket(&self) -> LoadTicket {
        self.users.ticket()
    }

    /// Caches a verified key, unless an eviction happened since `ticket`.
    pub fn remember_key(&self, ticket: LoadTicket, key: Arc<VerifiedKey>) {
        self.keys.store(ticket, key.public_id().to_owned(), key);
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
        let mut parts = payload.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("user"), Some(tenant), Some(user)) => {
                if let Some(tenant) = TenantId::parse(tenant) {
                    self.users.evict(&(tenant, user.to_owned()));
                }
            }
            (Some("tenant"), Some(tenant), None) => {
                let tenant = tenant.to_owned();
                self.users.evict_where(move |(t, _), _| t.as_str() == tenant);
            }
            (Some("key"), Some(public_id), None) => self.keys.evict(public_id),
            _ => {
                tracing::warn!(payload, "unknown identity change; forgetting every cached identity");
                self.users.evict_where(|_, _| true);
                self.keys.evict_where(|_, _| true);
            }
        }
    }

    /// Follows identity changes from `feed`.
    pub fn subscribe(&self, feed: &mut ChangeFeed) {
        feed.subscribe(&[CHANNEL], Arc::new(self.clone()));
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
        self.users.connected();
        self.keys.connected();
    }

    fn notified(&self, _channel: &str, payload: &str) {
        self.evict(payload);
    }

    fn disconnected(&self) {
        self.users.disconnected();
        self.keys.disconnected();
    }
}
