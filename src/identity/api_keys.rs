//! Tenant API keys: `tnty_<public id>_<secret>` (see [`crate::auth::api_key`]
//! for the format and hashing). The key's row lives in the tenant schema;
//! `platform.api_key_index` maps its public id to the tenant, so
//! authentication finds the schema with one indexed lookup.
//!
//! Verified keys are cached per node (the secret is still hashed and
//! compared in constant time on every call); revocation sends a NOTIFY that
//! evicts the key on every node. `last_used_at` is collected in memory and
//! written in batches ([`LastUsed`]), never once per call.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::{IdentityError, access};
use crate::{auth::api_key, ids, pagination::Cursor, tenancy::TenantId};

/// A verified key as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedKey {
    pub tenant: TenantId,
    pub key_id: String,
    pub public_id: String,
    pub name: String,
    pub secret_hash: Vec<u8>,
    pub scopes: Arc<BTreeSet<String>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key's metadata as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: String,
    pub public_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, public_id, name, scopes, created_by, created_at, expires_at, revoked_at, last_used_at";

/// Creates a key; returns its metadata and the full key (shown once).
pub async fn create(
    conn: &mut PgConnection,
    tenant: &TenantId,
    name: &str,
    scopes: &BTreeSet<String>,
    created_by: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(ApiKeyRecord, String), IdentityError> {
    let key = api_key::generate();
    let id = ids::new_id("key");
    let record: ApiKeyRecord = sqlx::query_as(&format!(
        "INSERT INTO api_keys (id, public_id, name, secret_hash, scopes, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    ))
    .bind(&id)
    .bind(&key.public_id)
    .bind(name)
    .bind(&key.secret_hash)
    .bind(scopes.iter().cloned().collect::<Vec<_>>())
    .bind(created_by)
    .bind(expires_at)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO platform.api_key_index (public_id, tenant_id, key_id) VALUES ($1, $2, $3)")
        .bind(&key.public_id)
        .bind(tenant.as_str())
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    Ok((record, key.full))
}

/// The order of [`list`], newest first.
pub const LIST_ORDER: &str = "created_at desc, id desc";

/// One page of keys, newest first; fetches one extra row for paging.
pub async fn list(
    conn: &mut PgConnection,
    show_inactive: bool,
    size: i64,
    before: Option<Cursor>,
) -> Result<Vec<ApiKeyRecord>, IdentityError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys
          WHERE ($1 OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())))
            AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
          ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(show_inactive)
    .bind(before.as_ref().map(|c| c.created_at))
    .bind(before.as_ref().map(|c| c.id.clone()))
    .bind(size + 1)
    .fetch_all(conn)
    .await?)
}

/// Revokes a key (a no-op when revoked already) and announces it; the key
/// and whether this call revoked it.
pub async fn revoke(conn: &mut PgConnection, id: &str) -> Result<(ApiKeyRecord, bool), IdentityError> {
    if !ids::is_id("key", id) {
        return Err(IdentityError::NotFound("API key"));
    }
    let revoked: Option<ApiKeyRecord> = sqlx::query_as(&format!(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING {COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(record) = revoked {
        access::notify_key(conn, &record.public_id).await?;
        return Ok((record, true));
    }
    let existing: Option<ApiKeyRecord> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    existing.map(|r| (r, false)).ok_or(IdentityError::NotFound("API key"))
}

/// Revokes every live key a principal created; their ids and public ids.
pub async fn revoke_created_by(
    conn: &mut PgConnection,
    created_by: &str,
) -> Result<Vec<(String, String)>, IdentityError> {
    let revoked: Vec<(String, String)> = sqlx::query_as(
        "UPDATE api_keys SET revoked_at = now() WHERE created_by = $1 AND revoked_at IS NULL RETURNING id, public_id",
    )
    .bind(created_by)
    .fetch_all(&mut *conn)
    .await?;
    for (_, public_id) in &revoked {
        access::notify_key(conn, public_id).await?;
    }
    Ok(revoked)
}

/// The tenant of a public id, from the platform index.
pub async fn tenant_of(pool: &PgPool, public_id: &str) -> Result<Option<TenantId>, IdentityError> {
    let tenant: Option<String> =
        sqlx::query_scalar("SELECT tenant_id FROM platform.api_key_index WHERE public_id = $1")
            .bind(public_id)
            .fetch_optional(pool)
            .await?;
    Ok(tenant.and_then(|t| TenantId::parse(&t)))
}

/// A live (unrevoked) key by public id, in the tenant's connection.
pub async fn load(
    conn: &mut PgConnection,
    tenant: &TenantId,
    public_id: &str,
) -> Result<Option<CachedKey>, IdentityError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: String,
        name: String,
        secret_hash: Vec<u8>,
        scopes: Vec<String>,
        created_by: String,
        created_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, name, secret_hash, scopes, created_by, created_at, expires_at FROM api_keys
          WHERE public_id = $1 AND revoked_at IS NULL",
    )
    .bind(public_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| CachedKey {
        tenant: tenant.clone(),
        key_id: row.id,
        public_id: public_id.to_owned(),
        name: row.name,
        secret_hash: row.secret_hash,
        scopes: Arc::new(row.scopes.into_iter().collect()),
        created_by: row.created_by,
        created_at: row.created_at,
        expires_at: row.expires_at,
    }))
}

/// When each key (by its id, unique across tenants) was last seen since the
/// last flush, with its tenant.
type Seen = HashMap<String, (TenantId, DateTime<Utc>)>;

/// A tenant and its keys' last use, as one flush writes them.
type TenantKeys = (TenantId, Vec<(String, DateTime<Utc>)>);

/// Shards of [`LastUsed`] (a power of two): a call locks one, never all.
const SHARDS: usize = 16;
/// Keys noted per shard between flushes at most (memory bound).
const MAX_PER_SHARD: usize = 65_536;
/// Tenants written by one statement.
const TENANTS_PER_STATEMENT: usize = 200;

/// Keys used since the last flush, written in one statement across
/// tenants (up to [`TENANTS_PER_STATEMENT`] per statement).
#[derive(Clone)]
pub struct LastUsed {
    seen: Arc<[Mutex<Seen>; SHARDS]>,
    hasher: std::hash::RandomState,
}

impl Default for LastUsed {
    fn default() -> Self {
        LastUsed { seen: Arc::new(std::array::from_fn(|_| Mutex::default())), hasher: Default::default() }
    }
}

impl LastUsed {
    /// Notes that a key authenticated a call now.
    pub fn touch(&self, tenant: &TenantId, key_id: &str) {
        use std::hash::BuildHasher;
        let shard = self.hasher.hash_one(key_id) as usize & (SHARDS - 1);
        let mut seen = self.seen[shard].lock().unwrap_or_else(|e| e.into_inner());
        // A key seen before only moves its time: no allocation per call.
        if let Some((_, at)) = seen.get_mut(key_id) {
            *at = Utc::now();
        } else if seen.len() < MAX_PER_SHARD {
            seen.insert(key_id.to_owned(), (tenant.clone(), Utc::now()));
        }
    }

    /// Writes what was collected; errors are logged (the data is a hint).
    pub async fn flush(&self, pool: &PgPool) {
        let mut by_tenant: HashMap<TenantId, Vec<(String, DateTime<Utc>)>> = HashMap::new();
        for shard in self.seen.iter() {
            let drained = std::mem::take(&mut *shard.lock().unwrap_or_else(|e| e.into_inner()));
            for (key_id, (tenant, at)) in drained {
                by_tenant.entry(tenant).or_default().push((key_id, at));
            }
        }
        let tenants: Vec<TenantKeys> = by_tenant.into_iter().collect();
        for chunk in tenants.chunks(TENANTS_PER_STATEMENT) {
            if let Err(error) = write_last_used(pool, chunk).await {
                // One tenant's schema may be gone (deleted meanwhile): write
                // the others one by one rather than lose them all.
                tracing::debug!(%error, tenants = chunk.len(), "batched last-use write failed; writing per tenant");
                for one in chunk {
                    if let Err(error) = write_last_used(pool, std::slice::from_ref(one)).await {
                        tracing::warn!(%error, tenant = %one.0, "writing API keys' last use failed");
                    }
                }
            }
        }
    }

    /// Flushes every `interval` until `shutdown`, then once more; await the
    /// handle before closing the pool so the last batch is written.
    pub async fn run(self, pool: PgPool, interval: Duration, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticker.tick() => self.flush(&pool).await,
            }
        }
        self.flush(&pool).await;
    }
}

/// One statement for the keys of several tenants: a data-modifying CTE per
/// tenant schema, each reading its rows from one shared `unnest`. Schema
/// names are derived from checked tenant ids and quoted; the values are
/// bound. This is platform maintenance across schemas, so it names each
/// table by schema instead of going through a tenant transaction.
async fn write_last_used(pool: &PgPool, tenants: &[TenantKeys]) -> Result<(), sqlx::Error> {
    let mut sql =
        String::from("WITH v AS (SELECT * FROM unnest($1::int4[], $2::text[], $3::timestamptz[]) AS v(t, id, at))");
    let (mut index, mut ids, mut times) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (tenant, keys)) in tenants.iter().enumerate() {
        sql.push_str(&format!(
            ", u{i} AS (UPDATE \"{}\".api_keys k SET last_used_at = v.at FROM v
                 WHERE v.t = {i} AND k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.at))",
            tenant.schema()
        ));
        for (key_id, at) in keys {
            index.push(i as i32);
            ids.push(key_id.as_str());
            times.push(*at);
        }
    }
    sql.push_str(" SELECT 1");
    // Not prepared: the text differs per batch and would crowd the statement cache.
    let statement = sqlx::query(&sql).persistent(false).bind(&index).bind(&ids).bind(&times).execute(pool);
    match tokio::time::timeout(Duration::from_secs(10), statement).await {
        Ok(result) => result.map(drop),
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}
