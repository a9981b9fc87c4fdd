//! Tenants and plans in `platform`: provisioning (tenant row, schema and
//! tenant migrations in one transaction), reads, lists, updates and the
//! lifecycle. Every change announces itself on [`super::directory::CHANNEL`]
//! in the same transaction, so caches on every node drop stale entries when
//! it commits.

use std::{collections::BTreeMap, time::Instant};

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::{
    TenancyError, TenantId, TenantState, TenantTx,
    directory::CHANNEL,
    model::{NewTenant, Plan, Tenant},
    schema,
};
use crate::pagination::Cursor;

const TENANT_COLUMNS: &str = "id, slug, display_name, plan_id, state, suspend_reason, labels, created_at, \
                              updated_at, suspended_at, deleted_at, purge_after";

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    slug: String,
    display_name: String,
    plan_id: String,
    state: String,
    suspend_reason: Option<String>,
    labels: sqlx::types::Json<BTreeMap<String, String>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    suspended_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
    purge_after: Option<DateTime<Utc>>,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = TenancyError;
    fn try_from(row: TenantRow) -> Result<Tenant, TenancyError> {
        Ok(Tenant {
            id: TenantId::parse(&row.id).ok_or_else(|| TenancyError::CorruptState(row.id.clone()))?,
            state: TenantState::from_db(&row.state).ok_or(TenancyError::CorruptState(row.state))?,
            slug: row.slug,
            display_name: row.display_name,
            plan_id: row.plan_id,
            suspend_reason: row.suspend_reason,
            labels: row.labels.0,
            created_at: row.created_at,
            updated_at: row.updated_at,
            suspended_at: row.suspended_at,
            deleted_at: row.deleted_at,
            purge_after: row.purge_after,
        })
    }
}

async fn announce(conn: &mut PgConnection, tenant: &Tenant) -> Result<(), TenancyError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(format!("{}:{}", tenant.id, tenant.slug))
        .execute(conn)
        .await?;
    Ok(())
}

fn unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.constraint() == Some(constraint))
}

/// Provisions a tenant inside `tx`: the row, its schema and every tenant
/// migration. The caller may add more (the owner user) and must commit; if
/// anything fails, nothing of the tenant exists.
pub async fn provision(
    tx: Transaction<'static, Postgres>,
    new: &NewTenant,
    deadline: Instant,
) -> Result<(Tenant, TenantTx), TenancyError> {
    let mut tx = tx;
    let plan_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM platform.plans WHERE id = $1)")
        .bind(&new.plan_id)
        .fetch_one(&mut *tx)
        .await?;
    if !plan_exists {
        return Err(TenancyError::UnknownPlan(new.plan_id.clone()));
    }
    let id = TenantId::generate();
    let row: TenantRow = sqlx::query_as(&format!(
        "INSERT INTO platform.tenants (id, slug, display_name, plan_id, labels) VALUES ($1, $2, $3, $4, $5)
         RETURNING {TENANT_COLUMNS}"
    ))
    .bind(id.as_str())
    .bind(new.slug.as_str())
    .bind(&new.display_name)
    .bind(&new.plan_id)
    .bind(sqlx::types::Json(&new.labels))
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| if unique_violation(&e, "tenants_live_slug") { TenancyError::SlugTaken } else { e.into() })?;
    let tenant = Tenant::try_from(row)?;
    schema::create_schema(&mut tx, &id).await?;
    announce(&mut tx, &tenant).await?;
    let mut scoped = TenantTx::scope_existing(tx, &id, deadline).await?;
    schema::apply_pending(&mut scoped).await?;
    Ok((tenant, scoped))
}

/// A tenant by id (any state, purged included) or by live slug.
pub async fn get(pool: &PgPool, key: &str) -> Result<Option<Tenant>, TenancyError> {
    let row: Option<TenantRow> = if crate::ids::is_id("ten", key) {
        sqlx::query_as(&format!("SELECT {TENANT_COLUMNS} FROM platform.tenants WHERE id = $1"))
            .bind(key)
            .fetch_optional(pool)
            .await?
    } else {
        sqlx::query_as(&format!("SELECT {TENANT_COLUMNS} FROM platform.tenants WHERE slug = $1 AND state <> 'deleted'"))
            .bind(key)
            .fetch_optional(pool)
            .await?
    };
    row.map(Tenant::try_from).transpose()
}

/// Filters of [`list`].
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub state: Option<TenantState>,
    pub plan_id: Option<String>,
}

/// The order of [`list`], newest first.
pub const LIST_ORDER: &str = "created_at desc, id desc";

/// One page of tenants, newest first, after `after`, plus the position
/// after the page when there is a next one. A backward scan of
/// `tenants_created (created_at, id)`.
pub async fn list(
    pool: &PgPool,
    filter: &ListFilter,
    size: i64,
    after: Option<Cursor>,
) -> Result<(Vec<Tenant>, Option<Cursor>), TenancyError> {
    let (after_time, after_id) = match after {
        Some(c) => (Some(c.created_at), Some(c.id)),
        None => (None, None),
    };
    let rows: Vec<TenantRow> = sqlx::query_as(&format!(
        "SELECT {TENANT_COLUMNS} FROM platform.tenants
         WHERE ($1::text IS NULL OR state = $1)
           AND ($2::text IS NULL OR plan_id = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
         ORDER BY created_at DESC, id DESC
         LIMIT $5"
    ))
    .bind(filter.state.map(TenantState::as_db))
    .bind(&filter.plan_id)
    .bind(after_time)
    .bind(after_id)
    .bind(size + 1)
    .fetch_all(pool)
    .await?;
    let mut tenants = rows.into_iter().map(Tenant::try_from).collect::<Result<Vec<_>, _>>()?;
    let next = crate::pagination::split_page(&mut tenants, size, |t| Cursor {
        created_at: t.created_at,
        id: t.id.to_string(),
    });
    Ok((tenants, next))
}

/// Changes to a tenant's descriptive fields; `None` leaves a field alone.
#[derive(Debug, Default, Clone)]
pub struct TenantChanges {
    pub display_name: Option<String>,
    pub plan_id: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// Applies `changes` to a live (not deleted) tenant.
pub async fn update(pool: &PgPool, id: &TenantId, changes: &TenantChanges) -> Result<Tenant, TenancyError> {
    let mut tx = crate::db::begin(pool).await?;
    if let Some(plan) = &changes.plan_id {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM platform.plans WHERE id = $1)")
            .bind(plan)
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            return Err(TenancyError::UnknownPlan(plan.clone()));
        }
    }
    let row: Option<TenantRow> = sqlx::query_as(&format!(
        "UPDATE platform.tenants SET
             display_name = COALESCE($2, display_name),
             plan_id = COALESCE($3, plan_id),
             labels = COALESCE($4, labels),
             updated_at = now()
         WHERE id = $1 AND state <> 'deleted'
         RETURNING {TENANT_COLUMNS}"
    ))
    .bind(id.as_str())
    .bind(&changes.display_name)
    .bind(&changes.plan_id)
    .bind(changes.labels.as_ref().map(sqlx::types::Json))
    .fetch_optional(&mut *tx)
    .await?;
    let tenant = Tenant::try_from(row.ok_or(TenancyError::NotFound)?)?;
    announce(&mut tx, &tenant).await?;
    tx.commit().await?;
    Ok(tenant)
}

/// A lifecycle change.
#[derive(Debug, Clone)]
pub enum Transition {
    /// active → suspended (suspended stays suspended, with the new reason).
    Suspend { reason: Option<String> },
    /// suspended → active (active stays active).
    Resume,
    /// active or suspended → deleted; the schema is purged after `grace`.
    Delete { grace: Duration },
}

/// Moves a tenant through its lifecycle; deleted tenants cannot move.
pub async fn transition(pool: &PgPool, id: &TenantId, change: Transition) -> Result<Tenant, TenancyError> {
    let mut tx = crate::db::begin(pool).await?;
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM platform.tenants WHERE id = $1 FOR UPDATE")
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let state = state.ok_or(TenancyError::NotFound)?;
    if state == "deleted" {
        return Err(TenancyError::Deleted);
    }
    let sql = match &change {
        Transition::Suspend { .. } => {
            "UPDATE platform.tenants SET state = 'suspended', suspend_reason = $2,
                 suspended_at = COALESCE(suspended_at, now()), updated_at = now() WHERE id = $1"
        }
        Transition::Resume => {
            "UPDATE platform.tenants SET state = 'active', suspend_reason = NULL, suspended_at = NULL,
                 updated_at = now() WHERE id = $1"
        }
        Transition::Delete { .. } => {
            "UPDATE platform.tenants SET state = 'deleted', deleted_at = now(),
                 purge_after = now() + make_interval(secs => $3), updated_at = now() WHERE id = $1"
        }
    };
    let (reason, grace_secs) = match &change {
        Transition::Suspend { reason } => (reason.clone(), 0.0),
        Transition::Resume => (None, 0.0),
        Transition::Delete { grace } => (None, grace.num_milliseconds() as f64 / 1000.0),
    };
    sqlx::query(sql).bind(id.as_str()).bind(reason).bind(grace_secs).execute(&mut *tx).await?;
    let row: TenantRow = sqlx::query_as(&format!("SELECT {TENANT_COLUMNS} FROM platform.tenants WHERE id = $1"))
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await?;
    let tenant = Tenant::try_from(row)?;
    announce(&mut tx, &tenant).await?;
    tx.commit().await?;
    Ok(tenant)
}

/// Every plan, by id.
pub async fn list_plans(pool: &PgPool) -> Result<Vec<Plan>, TenancyError> {
    Ok(sqlx::query_as("SELECT * FROM platform.plans ORDER BY id").fetch_all(pool).await?)
}

/// A plan by id.
pub async fn get_plan(pool: &PgPool, id: &str) -> Result<Option<Plan>, TenancyError> {
    Ok(sqlx::query_as("SELECT * FROM platform.plans WHERE id = $1").bind(id).fetch_optional(pool).await?)
}

/// Creates or replaces a plan; returns it and whether it was created.
pub async fn upsert_plan(pool: &PgPool, plan: &Plan) -> Result<(Plan, bool), TenancyError> {
    let (stored, created): (Plan, bool) = {
        let row: (bool,) = sqlx::query_as("SELECT NOT EXISTS (SELECT 1 FROM platform.plans WHERE id = $1)")
            .bind(&plan.id)
            .fetch_one(pool)
            .await?;
        let stored: Plan = sqlx::query_as(
            "INSERT INTO platform.plans (id, display_name, requests_per_second, burst, monthly_request_quota,
                 max_concurrent_jobs, min_replicas, max_replicas)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE SET display_name = $2, requests_per_second = $3, burst = $4,
                 monthly_request_quota = $5, max_concurrent_jobs = $6, min_replicas = $7, max_replicas = $8,
                 updated_at = now()
             RETURNING *",
        )
        .bind(&plan.id)
        .bind(&plan.display_name)
        .bind(plan.requests_per_second)
        .bind(plan.burst)
        .bind(plan.monthly_request_quota)
        .bind(plan.max_concurrent_jobs)
        .bind(plan.min_replicas)
        .bind(plan.max_replicas)
        .fetch_one(pool)
        .await?;
        // Nodes cache plan limits for rate limits and quotas: tell them.
        sqlx::query("SELECT pg_notify('tenantry_plans', $1)").bind(&stored.id).execute(pool).await?;
        (stored, row.0)
    };
    Ok((stored, created))
}
