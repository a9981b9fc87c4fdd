//! Purging deleted tenants after their grace period: the schema and the
//! tenant's jobs and scaling data are dropped, and the row kept as a
//! tombstone (`purged_at`), so ids are never reused.
//! Run by `tenantry tenant purge` and by the purge job.

use sqlx::PgPool;

use super::{TenancyError, TenantId};

/// Deleted tenants whose grace period is over and whose schema still exists.
pub async fn tenants_due_for_purge(pool: &PgPool, limit: i64) -> Result<Vec<TenantId>, TenancyError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM platform.tenants
         WHERE state = 'deleted' AND purged_at IS NULL AND purge_after <= now()
         ORDER BY purge_after LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    ids.iter().map(|id| TenantId::parse(id).ok_or_else(|| TenancyError::CorruptState(id.clone()))).collect()
}

/// Drops a due tenant's schema, deletes its platform-level rows and marks it
/// purged, in one transaction.
/// Returns false when the tenant is not (or no longer) due, e.g. because it
/// was purged concurrently by another node.
pub async fn purge_tenant(pool: &PgPool, tenant: &TenantId) -> Result<bool, TenancyError> {
    let mut tx = crate::db::begin(pool).await?;
    let due: Option<String> = sqlx::query_scalar(
        "SELECT id FROM platform.tenants
         WHERE id = $1 AND state = 'deleted' AND purged_at IS NULL AND purge_after <= now()
         FOR UPDATE SKIP LOCKED",
    )
    .bind(tenant.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    if due.is_none() {
        return Ok(false);
    }
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", tenant.schema())).execute(&mut *tx).await?;
    // What the platform schema holds for the tenant goes in the same
    // transaction: its jobs (never leased again once it was deleted) and its
    // scaling data. Nothing can be left behind by a crash in between.
    for table in ["jobs", "scaling_decisions", "scaling_state", "scaling_policies", "tenant_schema_versions"] {
        sqlx::query(&format!("DELETE FROM platform.{table} WHERE tenant_id = $1"))
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE platform.tenants SET purged_at = now(), updated_at = now() WHERE id = $1")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(tenant = %tenant, "tenant purged");
    Ok(true)
}
