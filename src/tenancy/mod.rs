//! Tenants: ids, the tenant context's lookup, schemas, the one door to
//! tenant data, and the lifecycle.
//!
//! # Layout
//!
//! - this file: [`TenantId`], [`TenantRef`], [`TenantState`], [`TenancyError`].
//! - [`model`]: validated domain types (slugs, names, labels, plans).
//! - [`store`]: tenants and plans in `platform`; provisioning; lifecycle.
//! - [`tx`]: [`TenantTx`], the only way to touch a tenant's tables.
//! - [`schema`]: tenant schemas and the migrations inside them.
//! - [`migrate`]: upgrading every tenant schema (`tenantry migrate`).
//! - [`directory`]: cached lookups for the hot path, invalidated by NOTIFY.
//! - [`purge`]: dropping deleted tenants' schemas after the grace period.
//! - [`service`]: the TenantService gRPC handlers.

pub mod directory;
pub mod migrate;
pub mod model;
pub mod purge;
pub mod schema;
pub mod service;
pub mod store;
pub mod tx;

use std::fmt;

pub use self::{directory::TenantDirectory, tx::TenantTx};
use crate::{error::ApiError, ids};

/// A tenant's id, `ten_` followed by 24 of `[0-9a-z]`. Only ever built from
/// checked text, so it is safe to derive a schema name from.
/// Shared text: every call carries its tenant's id through several layers,
/// and a clone is a reference count, not an allocation.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TenantId(std::sync::Arc<str>);

impl TenantId {
    /// A new random tenant id.
    pub fn generate() -> Self {
        TenantId(ids::new_id("ten").into())
    }

    /// Checks and wraps an id.
    pub fn parse(text: &str) -> Option<Self> {
        ids::is_id("ten", text).then(|| TenantId(text.into()))
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

/// Stored as text. Decoding checks the id like [`TenantId::parse`], so a
/// malformed stored id is an error, never a tenant.
impl sqlx::Type<sqlx::Postgres> for TenantId {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for TenantId {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        TenantId::parse(text).ok_or_else(|| format!("{text:?} is not a tenant id").into())
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for TenantId {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
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
    /// Reads the stored form.
    pub fn from_db(text: &str) -> Option<Self> {
        match text {
            "active" => Some(TenantState::Active),
            "suspended" => Some(TenantState::Suspended),
            "deleted" => Some(TenantState::Deleted),
            _ => None,
        }
    }

    /// The stored form.
    pub fn as_db(self) -> &'static str {
        match self {
            TenantState::Active => "active",
            TenantState::Suspended => "suspended",
            TenantState::Deleted => "deleted",
        }
    }
}

/// The tenant a call acts in, as the stack resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRef {
    /// The tenant's id.
    pub id: TenantId,
    /// Its slug, for logs and messages (shared, like the id).
    pub slug: std::sync::Arc<str>,
    /// Its state when resolved.
    pub state: TenantState,
}

/// What can go wrong in tenancy.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error("tenant store unavailable")]
    Store(#[from] sqlx::Error),
    #[error("tenant row has an unexpected value `{0}`")]
    CorruptState(String),
    #[error("tenant migration {0} was changed after it was applied")]
    MigrationChanged(i64),
    #[error("tenant migration {0} has no down migration in this build; it cannot be reverted")]
    MigrationIrreversible(i64),
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("a live tenant already has this slug")]
    SlugTaken,
    #[error("no plan `{0}`")]
    UnknownPlan(String),
    #[error("tenant not found")]
    NotFound,
    #[error("the tenant is deleted")]
    Deleted,
}

impl From<TenancyError> for ApiError {
    fn from(error: TenancyError) -> Self {
        match error {
            TenancyError::Invalid { field, problem } => ApiError::invalid(field, problem),
            TenancyError::SlugTaken => ApiError::AlreadyExists { message: "a tenant with this slug exists".into() },
            TenancyError::UnknownPlan(plan) => ApiError::invalid("plan_id", format!("no plan `{plan}`")),
            TenancyError::NotFound => ApiError::NotFound { resource: "tenant".into() },
            TenancyError::Deleted => ApiError::FailedPrecondition {
                reason: crate::error::Reason::TenantDeleted,
                message: "the tenant is deleted".into(),
            },
            TenancyError::Store(error) => error.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<TenancyError> for tonic::Status {
    fn from(error: TenancyError) -> Self {
        ApiError::from(error).into()
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
