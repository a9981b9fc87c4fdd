//! TenantService: thin handlers that validate the request into domain
//! types, call [`super::store`], and map the result back. A tenant principal
//! sees only its own tenant: any other id answers NOT_FOUND, never
//! PERMISSION_DENIED, so ids cannot be probed.

use std::{collections::BTreeMap, time::Duration};

use sqlx::PgPool;
use tonic::{Request, Response, Status};

use super::{
    TenantDirectory, TenantId, TenantState,
    model::{self, NewTenant, Plan, Slug, Tenant},
    store::{self, ListFilter, TenantChanges, Transition},
};
use crate::{
    context::{self, RequestContext},
    error::ApiError,
    field_mask::{Mutable, UpdateMask},
    pagination::{self, ListQuery, PageTokens},
    proto::{
        tenantry::v1::{self as pb, tenant_service_server::TenantService},
        timestamp,
    },
};

/// What UpdateTenant may change (the plan: platform admins only).
const TENANT_MUTABLE: Mutable =
    Mutable { message: "tenantry.v1.Tenant", paths: &["display_name", "plan_id", "labels"] };

/// The TenantService implementation.
#[derive(Clone)]
pub struct TenantApi {
    pool: PgPool,
    directory: TenantDirectory,
    purge_grace: Duration,
    /// Hashes the owner's password of a new tenant (bounded, off the executor).
    passwords: crate::identity::passwords::PasswordHasherPool,
    /// Signs and reads ListTenants and ListPlans page tokens.
    page_tokens: PageTokens,
}

impl TenantApi {
    /// Handlers over `pool`; changes are evicted from `directory` at once;
    /// deleted tenants are purged after `purge_grace`.
    pub fn new(pool: PgPool, directory: TenantDirectory, purge_grace: Duration, page_tokens: PageTokens) -> Self {
        let passwords = crate::identity::passwords::PasswordHasherPool::new(1);
        TenantApi { pool, directory, purge_grace, passwords, page_tokens }
    }

    /// Shares the server's password hasher (and its concurrency bound).
    pub fn with_passwords(self, passwords: crate::identity::passwords::PasswordHasherPool) -> Self {
        TenantApi { passwords, ..self }
    }

    /// Records a committed change: this node's cache forgets the tenant.
    fn changed(&self, tenant: Tenant) -> pb::Tenant {
        self.directory.forget(&tenant.id, &tenant.slug);
        tenant_to_pb(tenant)
    }

    /// The tenant named by `key` as `ctx`'s caller may see it.
    async fn visible(&self, ctx: &RequestContext, key: &str, field: &'static str) -> Result<Tenant, ApiError> {
        if key.is_empty() {
            return Err(ApiError::invalid(field, "is required"));
        }
        let tenant = store::get(&self.pool, key).await?.ok_or(not_found())?;
        let principal = ctx.principal().ok_or_else(|| ApiError::internal("no principal"))?;
        match principal.tenant() {
            Some(own) if own != &tenant.id => Err(not_found()),
            _ => Ok(tenant),
        }
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound { resource: "tenant".into() }
}

fn tenant_id(field: &'static str, text: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(text).ok_or_else(|| ApiError::invalid(field, "must be a tenant id (ten_…)"))
}

fn state_to_pb(state: TenantState) -> pb::TenantState {
    match state {
        TenantState::Active => pb::TenantState::Active,
        TenantState::Suspended => pb::TenantState::Suspended,
        TenantState::Deleted => pb::TenantState::Deleted,
    }
}

fn tenant_to_pb(tenant: Tenant) -> pb::Tenant {
    pb::Tenant {
        id: tenant.id.to_string(),
        slug: tenant.slug,
        display_name: tenant.display_name,
        plan_id: tenant.plan_id,
        state: state_to_pb(tenant.state) as i32,
        suspend_reason: tenant.suspend_reason.unwrap_or_default(),
        create_time: Some(timestamp(tenant.created_at)),
        update_time: Some(timestamp(tenant.updated_at)),
        suspend_time: tenant.suspended_at.map(timestamp),
        delete_time: tenant.deleted_at.map(timestamp),
        purge_time: tenant.purge_after.map(timestamp),
        labels: tenant.labels.into_iter().collect(),
    }
}

fn plan_to_pb(plan: Plan) -> pb::Plan {
    let unsigned = |n: i32| u32::try_from(n).unwrap_or(0);
    pb::Plan {
        id: plan.id,
        display_name: plan.display_name,
        requests_per_second: unsigned(plan.requests_per_second),
        burst: unsigned(plan.burst),
        monthly_request_quota: u64::try_from(plan.monthly_request_quota).unwrap_or(0),
        max_concurrent_jobs: unsigned(plan.max_concurrent_jobs),
        min_replicas: unsigned(plan.min_replicas),
        max_replicas: unsigned(plan.max_replicas),
        create_time: Some(timestamp(plan.created_at)),
        update_time: Some(timestamp(plan.updated_at)),
    }
}

fn plan_from_pb(plan: pb::Plan) -> Result<Plan, ApiError> {
    let id = model::plan_id("plan.id", &plan.id)?;
    let display_name = model::display_name("plan.display_name", &plan.display_name)?;
    let signed = |field: &'static str, n: u32| i32::try_from(n).map_err(|_| ApiError::invalid(field, "is too large"));
    let quota = i64::try_from(plan.monthly_request_quota)
        .map_err(|_| ApiError::invalid("plan.monthly_request_quota", "is too large"))?;
    let parsed = Plan {
        id,
        display_name,
        requests_per_second: signed("plan.requests_per_second", plan.requests_per_second)?,
        burst: signed("plan.burst", plan.burst)?,
        monthly_request_quota: quota,
        max_concurrent_jobs: signed("plan.max_concurrent_jobs", plan.max_concurrent_jobs)?,
        min_replicas: signed("plan.min_replicas", plan.min_replicas)?,
        max_replicas: signed("plan.max_replicas", plan.max_replicas)?,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    };
    if parsed.max_replicas < parsed.min_replicas {
        return Err(ApiError::invalid("plan.max_replicas", "must be at least min_replicas"));
    }
    if parsed.max_replicas == 0 {
        return Err(ApiError::invalid("plan.max_replicas", "must be at least 1"));
    }
    Ok(parsed)
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl TenantService for TenantApi {
    async fn create_tenant(&self, request: Request<pb::CreateTenantRequest>) -> Reply<pb::CreateTenantResponse> {
        let deadline = context::of(&request)?.deadline;
        let actor = crate::identity::audit::actor_of(context::of(&request)?);
        let message = request.into_inner();
        let new = NewTenant {
            slug: Slug::parse(&message.slug)?,
            display_name: model::display_name("display_name", &message.display_name)?,
            plan_id: model::plan_id("plan_id", &message.plan_id)?,
            labels: message.labels.into_iter().collect::<BTreeMap<_, _>>(),
        };
        model::labels("labels", &new.labels)?;
        // The owner is checked and its password hashed before the provisioning
        // transaction opens, then created inside it: tenant and owner exist
        // together or not at all.
        let owner = match (&message.owner_email, &message.owner_password) {
            (None, None) => None,
            (Some(email), Some(password)) => {
                Some(crate::identity::service::hash_owner_password(&self.passwords, email, password).await?)
            }
            (Some(_), None) => return Err(ApiError::invalid("owner_password", "is required with owner_email").into()),
            (None, Some(_)) => return Err(ApiError::invalid("owner_email", "is required with owner_password").into()),
        };
        let tx = crate::db::begin(&self.pool).await.map_err(ApiError::from)?;
        let (tenant, mut scoped) = store::provision(tx, &new, deadline).await?;
        let owner = match owner {
            Some((email, hash)) => {
                Some(crate::identity::service::create_owner(&mut scoped, &actor, &email, &hash).await?)
            }
            None => None,
        };
        scoped.commit().await.map_err(ApiError::from)?;
        tracing::info!(tenant = %tenant.id, slug = %tenant.slug, "tenant created");
        Ok(Response::new(pb::CreateTenantResponse { tenant: Some(self.changed(tenant)), owner }))
    }

    async fn get_tenant(&self, request: Request<pb::GetTenantRequest>) -> Reply<pb::GetTenantResponse> {
        let ctx = context::of(&request)?;
        let tenant = self.visible(ctx, &request.get_ref().tenant_id, "tenant_id").await?;
        Ok(Response::new(pb::GetTenantResponse { tenant: Some(tenant_to_pb(tenant)) }))
    }

    async fn list_tenants(&self, request: Request<pb::ListTenantsRequest>) -> Reply<pb::ListTenantsResponse> {
        let message = request.into_inner();
        let size = pagination::page_size(message.page_size)?;
        let query = ListQuery::new("tenants", store::LIST_ORDER)
            .filter("state", message.state)
            .filter("plan_id", &message.plan_id);
        let after = self.page_tokens.cursor(&query, &message.page_token)?;
        let state = match pb::TenantState::try_from(message.state) {
            Ok(pb::TenantState::Unspecified) => None,
            Ok(pb::TenantState::Active) => Some(TenantState::Active),
            Ok(pb::TenantState::Suspended) => Some(TenantState::Suspended),
            Ok(pb::TenantState::Deleted) => Some(TenantState::Deleted),
            Err(_) => return Err(ApiError::invalid("state", "is not a tenant state").into()),
        };
        let plan_id = match message.plan_id.as_str() {
            "" => None,
            plan => Some(model::plan_id("plan_id", plan)?),
        };
        let (tenants, next) = store::list(&self.pool, &ListFilter { state, plan_id }, size, after).await?;
        let next_page_token = self.page_tokens.issue(&query, next.as_ref());
        let tenants = tenants.into_iter().map(tenant_to_pb).collect();
        Ok(Response::new(pb::ListTenantsResponse { tenants, next_page_token }))
    }

    async fn update_tenant(&self, request: Request<pb::UpdateTenantRequest>) -> Reply<pb::UpdateTenantResponse> {
        let ctx = context::of(&request)?;
        let is_admin = ctx.principal().is_some_and(|p| p.is_platform_admin());
        let own_tenant = ctx.principal().and_then(|p| p.tenant().cloned());
        let message = request.into_inner();
        let update = message.tenant.ok_or_else(|| ApiError::invalid("tenant", "is required"))?;
        let id = tenant_id("tenant.id", &update.id)?;
        if own_tenant.as_ref().is_some_and(|own| own != &id) {
            return Err(not_found().into());
        }
        let mask = UpdateMask::parse(message.update_mask.as_ref(), TENANT_MUTABLE)?;
        let paths: Vec<String> = match &mask {
            // A tenant admin's `*` replaces what it may change; the plan
            // stays unless the request names one.
            Some(mask) if mask.replace_all && !is_admin && update.plan_id.is_empty() => {
                mask.paths.iter().filter(|p| *p != "plan_id").cloned().collect()
            }
            Some(mask) => mask.paths.clone(),
            None => UpdateMask::populated(&update, TENANT_MUTABLE)?,
        };
        if paths.is_empty() {
            return Err(ApiError::invalid("update_mask", "names no field to update").into());
        }
        let mut changes = TenantChanges::default();
        for path in &paths {
            match path.as_str() {
                "display_name" => {
                    changes.display_name = Some(model::display_name("tenant.display_name", &update.display_name)?);
                }
                "labels" => {
                    let labels: BTreeMap<String, String> = update.labels.clone().into_iter().collect();
                    model::labels("tenant.labels", &labels)?;
                    changes.labels = Some(labels);
                }
                "plan_id" if !is_admin => {
                    return Err(ApiError::PermissionDenied {
                        reason: crate::error::Reason::PlatformAdminRequired,
                        message: "only platform admins change a tenant's plan".into(),
                    }
                    .into());
                }
                "plan_id" => changes.plan_id = Some(model::plan_id("tenant.plan_id", &update.plan_id)?),
                other => return Err(ApiError::internal(format!("mutable path `{other}` has no handler")).into()),
            }
        }
        let tenant = match store::update(&self.pool, &id, &changes).await {
            Err(super::TenancyError::NotFound) => return Err(not_found().into()),
            other => other?,
        };
        Ok(Response::new(pb::UpdateTenantResponse { tenant: Some(self.changed(tenant)) }))
    }

    async fn suspend_tenant(&self, request: Request<pb::SuspendTenantRequest>) -> Reply<pb::SuspendTenantResponse> {
        let message = request.into_inner();
        let id = tenant_id("tenant_id", &message.tenant_id)?;
        let reason = match message.reason {
            Some(reason) if reason.chars().count() > 500 => {
                return Err(ApiError::invalid("reason", "must be at most 500 characters").into());
            }
            other => other.filter(|r| !r.trim().is_empty()),
        };
        let tenant = store::transition(&self.pool, &id, Transition::Suspend { reason }).await?;
        tracing::info!(tenant = %tenant.id, "tenant suspended");
        Ok(Response::new(pb::SuspendTenantResponse { tenant: Some(self.changed(tenant)) }))
    }

    async fn resume_tenant(&self, request: Request<pb::ResumeTenantRequest>) -> Reply<pb::ResumeTenantResponse> {
        let id = tenant_id("tenant_id", &request.get_ref().tenant_id)?;
        let tenant = store::transition(&self.pool, &id, Transition::Resume).await?;
        tracing::info!(tenant = %tenant.id, "tenant resumed");
        Ok(Response::new(pb::ResumeTenantResponse { tenant: Some(self.changed(tenant)) }))
    }

    async fn delete_tenant(&self, request: Request<pb::DeleteTenantRequest>) -> Reply<pb::DeleteTenantResponse> {
        let id = tenant_id("tenant_id", &request.get_ref().tenant_id)?;
        let grace = chrono::Duration::from_std(self.purge_grace).map_err(ApiError::internal)?;
        let tenant = store::transition(&self.pool, &id, Transition::Delete { grace }).await?;
        tracing::info!(tenant = %tenant.id, purge_after = ?tenant.purge_after, "tenant deleted");
        Ok(Response::new(pb::DeleteTenantResponse { tenant: Some(self.changed(tenant)) }))
    }

    async fn list_plans(&self, request: Request<pb::ListPlansRequest>) -> Reply<pb::ListPlansResponse> {
        let message = request.into_inner();
        let size = pagination::page_size(message.page_size)? as usize;
        // A short catalogue, read whole and paged by offset, by id.
        let query = ListQuery::new("plans", "id");
        let offset = self.page_tokens.offset(&query, &message.page_token)?;
        let all: Vec<Plan> = store::list_plans(&self.pool).await?;
        let end = (offset + size).min(all.len());
        let next_page_token = self.page_tokens.issue_offset(&query, end, all.len());
        let plans = all.into_iter().skip(offset).take(size).map(plan_to_pb).collect();
        Ok(Response::new(pb::ListPlansResponse { plans, next_page_token }))
    }

    async fn upsert_plan(&self, request: Request<pb::UpsertPlanRequest>) -> Reply<pb::UpsertPlanResponse> {
        let plan = request.into_inner().plan.ok_or_else(|| ApiError::invalid("plan", "is required"))?;
        let (plan, created) = store::upsert_plan(&self.pool, &plan_from_pb(plan)?).await?;
        Ok(Response::new(pb::UpsertPlanResponse { plan: Some(plan_to_pb(plan)), created }))
    }
}
