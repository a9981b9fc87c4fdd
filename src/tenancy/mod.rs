//! Tenants as the rest of the code sees them: the [`TenantId`] newtype, the
//! [`TenantRef`] the stack puts in a call's context, and the lookup by id or
//! slug behind the tenant context layer.

use std::fmt;

use sqlx::PgPool;

use crate::ids;

/// A tenant's id, `ten_` followed by 24 of `[0-9a-z]`. Only ever built from
/// checked text, so it is safe to derive a schema name from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

impl TenantId {
    /// A new random tenant id.
    pub fn generate() -> Self {
        TenantId(ids::new_id("ten"))
    }

    /// Checks and wraps an id.
    pub fn parse(text: &str) -> Option<Self> {
        ids::is_id("ten", text).then(|| TenantId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tenant's PostgreSQL schema, `t_<id>`: derived, never user text.
    pub fn schema(&self) -> String {
        format!("t_{}", self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a tenant is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantState {
    /// Serving calls.
    Active,
    /// Refused with FAILED_PRECONDITION until resumed.
    Suspended,
    /// Gone for the API; its schema is purged after a grace period.
    Deleted,
}

impl TenantState {
    fn from_db(text: &str) -> Option<Self> {
        match text {
            "active" => Some(TenantState::Active),
            "suspended" => Some(TenantState::Suspended),
            "deleted" => Some(TenantState::Deleted),
            _ => None,
        }
    }
}

/// The tenant a call acts in, as the stack resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRef {
    /// The tenant's id.
    pub id: TenantId,
    /// Its slug, for logs and messages.
    pub slug: String,
    /// Its state when resolved.
    pub state: TenantState,
}

/// Why a tenant lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error("tenant store unavailable")]
    Store(#[from] sqlx::Error),
    #[error("tenant row has an unknown state `{0}`")]
    CorruptState(String),
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    slug: String,
    state: String,
}

/// Looks tenants up by id or slug.
#[derive(Debug, Clone)]
pub struct TenantDirectory {
    pool: PgPool,
}

impl TenantDirectory {
    /// The directory over a pool.
    pub fn new(pool: PgPool) -> Self {
        TenantDirectory { pool }
    }

    /// The tenant named by `key` (an id or a slug), if there is one.
    pub async fn resolve(&self, key: &str) -> Result<Option<TenantRef>, TenancyError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_derive_from_checked_ids_only() {
        let id = TenantId::generate();
        assert_eq!(id.schema(), format!("t_{}", id.as_str()));
        assert!(TenantId::parse("ten_x\"; DROP SCHEMA platform; --").is_none());
        assert!(TenantId::parse("acme").is_none());
    }
}
