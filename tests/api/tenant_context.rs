//! The tenant context layer: which tenant a platform admin's call acts in,
//! and how unknown, deleted and suspended tenants are answered; straight to
//! PostgreSQL and through PgBouncer in transaction pooling mode.

use tenantry::{
    proto::tenantry::v1::{GetQuotaRequest, ListTenantsRequest},
    tenancy::TenantId,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::{Backend, TestApp, on_every_backend, with_metadata};

on_every_backend!(
    a_platform_admin_must_name_the_tenant_of_a_tenant_scoped_call,
    an_active_tenant_named_by_id_or_slug_is_accepted,
    unknown_and_deleted_tenants_are_not_found,
    a_suspended_tenant_is_failed_precondition,
    a_platform_level_method_refuses_a_tenant_header,
);

async fn insert_tenant(app: &TestApp, slug: &str, state: &str) -> TenantId {
    crate::harness::tenants::insert_tenant_row(app, slug, "free", state).await
}

fn as_admin_in(app: &TestApp, tenant: &str) -> tonic::Request<GetQuotaRequest> {
    let bearer = format!("Bearer {}", app.admin_key);
    with_metadata(GetQuotaRequest::default(), &[("authorization", &bearer), ("x-tenant-id", tenant)])
}

async fn a_platform_admin_must_name_the_tenant_of_a_tenant_scoped_call(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let status = app.usage().get_quota(app.as_admin(GetQuotaRequest::default())).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    assert_eq!(details.bad_request().unwrap().field_violations[0].field, "x-tenant-id");
}

async fn an_active_tenant_named_by_id_or_slug_is_accepted(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let id = insert_tenant(&app, "acme", "active").await;
    for name in [id.as_str(), "acme"] {
        let quota = app.usage().get_quota(as_admin_in(&app, name)).await;
        assert!(quota.is_ok(), "{name}: {quota:?}");
    }
}

async fn unknown_and_deleted_tenants_are_not_found(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let deleted = insert_tenant(&app, "gone", "deleted").await;
    for name in
        ["nobody", deleted.as_str(), "gone", &TenantId::generate().to_string(), "x'; DROP TABLE platform.tenants; --"]
    {
        let status = app.usage().get_quota(as_admin_in(&app, name)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{name}: {status:?}");
    }
}

async fn a_suspended_tenant_is_failed_precondition(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    insert_tenant(&app, "paused", "suspended").await;
    let status = app.usage().get_quota(as_admin_in(&app, "paused")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("suspended"));
}

async fn a_platform_level_method_refuses_a_tenant_header(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    insert_tenant(&app, "acme", "active").await;
    let bearer = format!("Bearer {}", app.admin_key);
    let request = with_metadata(ListTenantsRequest::default(), &[("authorization", &bearer), ("x-tenant-id", "acme")]);
    let status = app.tenants().list_tenants(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}
