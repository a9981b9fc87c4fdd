//! Arranging plans and tenants through the API, as a platform admin, and
//! calling as the admin inside a tenant (`x-tenant-id`).

use tenantry::proto::tenantry::v1::{
    CreateTenantRequest, Plan, Tenant, UpsertPlanRequest, tenant_service_client::TenantServiceClient,
};
use tonic::{Request, transport::Channel};

use super::{TestApp, with_metadata};

/// A tenant a test created, and the one way to call in it as the platform
/// admin ([`Self::as_admin`]).
#[derive(Clone)]
pub struct TenantHandle {
    /// The tenant's id.
    pub id: String,
    /// The tenant as CreateTenant answered.
    pub tenant: Tenant,
    /// The platform-admin key the calls are made with.
    admin_key: String,
}

impl TenantHandle {
    /// `message` as the platform admin acting in this tenant.
    pub fn as_admin<T>(&self, message: T) -> Request<T> {
        let bearer = format!("Bearer {}", self.admin_key);
        with_metadata(message, &[("authorization", &bearer), ("x-tenant-id", &self.id)])
    }
}

impl TestApp {
    /// Creates a tenant on the `free` plan as the platform admin.
    pub async fn create_tenant(&self, slug: &str) -> TenantHandle {
        self.create_tenant_on(slug, "free").await
    }

    /// Creates a tenant on `plan` as the platform admin.
    pub async fn create_tenant_on(&self, slug: &str, plan: &str) -> TenantHandle {
        create_tenant_via(&self.channel, &self.admin_key, slug, plan).await
    }
}

/// Creates a tenant on `plan` through `channel` with a platform-admin key:
/// for servers that are not a [`TestApp`] (separate processes).
pub async fn create_tenant_via(channel: &Channel, admin_key: &str, slug: &str, plan: &str) -> TenantHandle {
    let request = CreateTenantRequest {
        slug: slug.to_owned(),
        display_name: format!("Tenant {slug}"),
        plan_id: plan.to_owned(),
        ..CreateTenantRequest::default()
    };
    let bearer = format!("Bearer {admin_key}");
    let tenant = TenantServiceClient::new(channel.clone())
        .create_tenant(with_metadata(request, &[("authorization", &bearer)]))
        .await
        .expect("create tenant")
        .into_inner()
        .tenant
        .expect("tenant in the response");
    TenantHandle { id: tenant.id.clone(), tenant, admin_key: admin_key.to_owned() }
}

/// Creates (or replaces) a plan with the given limits.
pub async fn upsert_plan(channel: &Channel, admin_key: &str, id: &str, rps: u32, burst: u32, quota: u64) {
    let plan = Plan {
        id: id.to_owned(),
        display_name: id.to_owned(),
        requests_per_second: rps,
        burst,
        monthly_request_quota: quota,
        max_concurrent_jobs: 1,
        min_replicas: 1,
        max_replicas: 1,
        ..Default::default()
    };
    let bearer = format!("Bearer {admin_key}");
    TenantServiceClient::new(channel.clone())
        .upsert_plan(with_metadata(UpsertPlanRequest { plan: Some(plan) }, &[("authorization", &bearer)]))
        .await
        .expect("upsert plan");
}

/// A tenant row straight in `platform.tenants` (no schema, no owner), on
/// `plan` and in `state`: for tests of what reads the row.
pub async fn insert_tenant_row(
    app: &super::TestApp,
    slug: &str,
    plan: &str,
    state: &str,
) -> tenantry::tenancy::TenantId {
    let id = tenantry::tenancy::TenantId::generate();
    sqlx::query("INSERT INTO platform.tenants (id, slug, display_name, plan_id, state) VALUES ($1, $2, $2, $3, $4)")
        .bind(id.as_str())
        .bind(slug)
        .bind(plan)
        .bind(state)
        .execute(&app.pool)
        .await
        .unwrap();
    id
}
