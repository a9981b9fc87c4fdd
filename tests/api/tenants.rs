//! TenantService end to end: provisioning, validation, lifecycle, lists,
//! plans, and cache invalidation across nodes; each test runs straight to
//! PostgreSQL and through PgBouncer in transaction pooling mode.

use std::time::{Duration, Instant};

use prost_types::FieldMask;
use tenantry::{
    proto::tenantry::v1::{
        CreateTenantRequest, DeleteTenantRequest, GetQuotaRequest, GetTenantRequest, ListPlansRequest,
        ListTenantsRequest, Plan, ResumeTenantRequest, SuspendTenantRequest, Tenant, TenantState, UpdateTenantRequest,
        UpsertPlanRequest,
    },
    tenancy::{
        TenantId,
        model::{NewTenant, Slug},
        schema, store,
    },
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::{Backend, TestApp, eventually, on_every_backend};

on_every_backend!(
    creating_a_tenant_provisions_its_schema_at_the_latest_version,
    bad_input_is_invalid_argument_naming_the_field_and_creates_nothing,
    a_duplicate_slug_is_already_exists_and_leaves_nothing_behind,
    concurrent_creates_of_one_slug_make_exactly_one_tenant,
    provisioning_that_does_not_commit_leaves_no_row_and_no_schema,
    get_tenant_finds_by_id_or_slug_and_unknown_is_not_found,
    list_tenants_pages_through_all_newest_first_and_filters_by_state,
    update_tenant_applies_only_the_masked_fields,
    a_suspended_tenant_is_refused_until_resumed,
    a_suspension_reaches_every_node_within_five_seconds,
    a_deleted_tenant_is_gone_at_once_and_purged_after_its_grace_period,
    lifecycle_calls_take_tenant_ids_and_refuse_unknown_ones,
    plans_are_seeded_and_upserted,
);

fn create(slug: &str) -> CreateTenantRequest {
    CreateTenantRequest {
        slug: slug.into(),
        display_name: "Acme Inc".into(),
        plan_id: "free".into(),
        ..Default::default()
    }
}

async fn schema_exists(app: &TestApp, id: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(format!("t_{id}"))
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn counts(app: &TestApp) -> (i64, i64) {
    let tenants = sqlx::query_scalar("SELECT count(*) FROM platform.tenants").fetch_one(&app.pool).await.unwrap();
    let schemas = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_ten\\_%'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    (tenants, schemas)
}

/// The code a tenant-scoped call in `tenant` gets (GetQuota as the admin).
async fn scoped_call(app: &TestApp, tenant: &str) -> Code {
    match app.usage().get_quota(app.as_admin_in(tenant, GetQuotaRequest::default())).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// The field named by the first BadRequest violation.
fn bad_field(status: &tonic::Status) -> String {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status.get_error_details().bad_request().expect("BadRequest details").field_violations[0].field.clone()
}

async fn creating_a_tenant_provisions_its_schema_at_the_latest_version(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let tenant = app.create_tenant("acme").await.tenant;
    assert!(TenantId::parse(&tenant.id).is_some(), "{}", tenant.id);
    assert_eq!(tenant.state(), TenantState::Active);
    assert_eq!((tenant.slug.as_str(), tenant.plan_id.as_str()), ("acme", "free"));
    assert!(tenant.create_time.is_some());
    assert!(schema_exists(&app, &tenant.id).await);
    let version: i64 = sqlx::query_scalar(&format!("SELECT max(version) FROM \"t_{}\".schema_migrations", tenant.id))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(version, schema::latest_version());
}

async fn bad_input_is_invalid_argument_naming_the_field_and_creates_nothing(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let long = "x".repeat(201);
    let cases: Vec<(CreateTenantRequest, &str)> = vec![
        (create("ab"), "slug"),
        (create(&"a".repeat(64)), "slug"),
        (create("-acme"), "slug"),
        (create("acme-"), "slug"),
        (create("Acme"), "slug"),
        (create("ac_me"), "slug"),
        (create("admin"), "slug"),
        (create("acme corp"), "slug"),
        (CreateTenantRequest { display_name: long, ..create("acme") }, "display_name"),
        (CreateTenantRequest { display_name: " ".into(), ..create("acme") }, "display_name"),
        (CreateTenantRequest { plan_id: "platinum".into(), ..create("acme") }, "plan_id"),
        (CreateTenantRequest { plan_id: "".into(), ..create("acme") }, "plan_id"),
        (CreateTenantRequest { labels: [("Bad Key".to_owned(), "v".to_owned())].into(), ..create("acme") }, "labels"),
    ];
    for (request, field) in cases {
        let status = app.tenants().create_tenant(app.as_admin(request.clone())).await.unwrap_err();
        assert_eq!(bad_field(&status), field, "{request:?}");
    }
    assert_eq!(counts(&app).await, (0, 0), "nothing half-created");
}

async fn a_duplicate_slug_is_already_exists_and_leaves_nothing_behind(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    app.create_tenant("acme").await;
    let before = counts(&app).await;
    let status = app.tenants().create_tenant(app.as_admin(create("acme"))).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(counts(&app).await, before);
}

async fn concurrent_creates_of_one_slug_make_exactly_one_tenant(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let attempts = (0..8).map(|_| {
        let mut client = app.tenants();
        let request = app.as_admin(create("race"));
        async move { client.create_tenant(request).await.map(|_| ()).map_err(|s| s.code()) }
    });
    let results = futures_join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| r.is_ok() || r == &Err(Code::AlreadyExists)), "{results:?}");
    assert_eq!(counts(&app).await, (1, 1));
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

async fn provisioning_that_does_not_commit_leaves_no_row_and_no_schema(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let new = NewTenant {
        slug: Slug::parse("ghost").unwrap(),
        display_name: "Ghost".into(),
        plan_id: "free".into(),
        labels: Default::default(),
    };
    let tx = app.pool.begin().await.unwrap();
    let (tenant, scoped) =
        store::provision(tx, &new, Instant::now() + Duration::from_secs(10)).await.expect("provisioned in tx");
    drop(scoped); // a failure after provisioning: the transaction rolls back
    assert!(!schema_exists(&app, tenant.id.as_str()).await);
    assert_eq!(counts(&app).await, (0, 0));
}

async fn get_tenant_finds_by_id_or_slug_and_unknown_is_not_found(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let tenant = app.create_tenant("acme").await;
    for key in [tenant.id.as_str(), "acme"] {
        let got = app.tenants().get_tenant(app.as_admin(GetTenantRequest { tenant_id: key.into() })).await.unwrap();
        assert_eq!(got.into_inner().tenant.unwrap().id, tenant.id);
    }
    for key in ["nobody", &TenantId::generate().to_string()] {
        let status = app.tenants().get_tenant(app.as_admin(GetTenantRequest { tenant_id: key.into() })).await;
        assert_eq!(status.unwrap_err().code(), Code::NotFound, "{key}");
    }
    let status = app.tenants().get_tenant(app.as_admin(GetTenantRequest::default())).await.unwrap_err();
    assert_eq!(bad_field(&status), "tenant_id");
}

async fn list_tenants_pages_through_all_newest_first_and_filters_by_state(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(app.create_tenant(&format!("tenant-{i}")).await.id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let request = ListTenantsRequest { page_size: 3, page_token: token.clone(), ..Default::default() };
        let page = app.tenants().list_tenants(app.as_admin(request)).await.unwrap().into_inner();
        assert!(page.tenants.len() <= 3);
        seen.extend(page.tenants.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let suspend = SuspendTenantRequest { tenant_id: created[2].clone(), reason: Some("billing".into()) };
    app.tenants().suspend_tenant(app.as_admin(suspend)).await.unwrap();
    let request = ListTenantsRequest { state: TenantState::Suspended as i32, ..Default::default() };
    let page = app.tenants().list_tenants(app.as_admin(request)).await.unwrap().into_inner();
    assert_eq!(page.tenants.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), vec![created[2].clone()]);

    let bad = ListTenantsRequest { page_token: "not-a-token".into(), ..Default::default() };
    let status = app.tenants().list_tenants(app.as_admin(bad)).await.unwrap_err();
    assert_eq!(bad_field(&status), "page_token");
    let bad = ListTenantsRequest { page_size: -1, ..Default::default() };
    assert_eq!(bad_field(&app.tenants().list_tenants(app.as_admin(bad)).await.unwrap_err()), "page_size");
}

async fn update_tenant_applies_only_the_masked_fields(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let tenant = app.create_tenant("acme").await;
    let update = |fields: Tenant, paths: &[&str]| UpdateTenantRequest {
        tenant: Some(fields),
        update_mask: Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() }),
    };
    let fields = Tenant {
        id: tenant.id.clone(),
        display_name: "Acme Corporation".into(),
        plan_id: "pro".into(),
        labels: [("team".to_owned(), "core".to_owned())].into(),
        ..Default::default()
    };
    let updated = app.tenants().update_tenant(app.as_admin(update(fields.clone(), &["display_name"]))).await;
    let updated = updated.unwrap().into_inner().tenant.unwrap();
    assert_eq!((updated.display_name.as_str(), updated.plan_id.as_str()), ("Acme Corporation", "free"));
    assert!(updated.labels.is_empty());

    let updated = app.tenants().update_tenant(app.as_admin(update(fields.clone(), &["plan_id", "labels"]))).await;
    let updated = updated.unwrap().into_inner().tenant.unwrap();
    assert_eq!(updated.plan_id, "pro");
    assert_eq!(updated.labels.get("team").map(String::as_str), Some("core"));

    // No mask: the fields present in the message.
    let only_name = Tenant { id: tenant.id.clone(), display_name: "Acme 3".into(), ..Default::default() };
    let request = UpdateTenantRequest { tenant: Some(only_name), update_mask: None };
    let updated = app.tenants().update_tenant(app.as_admin(request)).await.unwrap().into_inner().tenant.unwrap();
    assert_eq!((updated.display_name.as_str(), updated.plan_id.as_str()), ("Acme 3", "pro"));

    let status = app.tenants().update_tenant(app.as_admin(update(fields.clone(), &["slug"]))).await.unwrap_err();
    assert_eq!(bad_field(&status), "update_mask");
    let unknown_plan = Tenant { plan_id: "platinum".into(), ..fields.clone() };
    let status = app.tenants().update_tenant(app.as_admin(update(unknown_plan, &["plan_id"]))).await.unwrap_err();
    assert_eq!(bad_field(&status), "plan_id");
    let other = Tenant { id: TenantId::generate().to_string(), ..fields.clone() };
    let status = app.tenants().update_tenant(app.as_admin(update(other, &["display_name"]))).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let by_slug = Tenant { id: "acme".into(), ..fields };
    let status = app.tenants().update_tenant(app.as_admin(update(by_slug, &["display_name"]))).await.unwrap_err();
    assert_eq!(bad_field(&status), "tenant.id");
}

async fn a_suspended_tenant_is_refused_until_resumed(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let tenant = app.create_tenant("acme").await;
    assert_ne!(scoped_call(&app, "acme").await, Code::FailedPrecondition);

    let suspend = SuspendTenantRequest { tenant_id: tenant.id.clone(), reason: Some("unpaid invoice".into()) };
    let suspended = app.tenants().suspend_tenant(app.as_admin(suspend)).await.unwrap().into_inner().tenant.unwrap();
    assert_eq!(suspended.state(), TenantState::Suspended);
    assert_eq!(suspended.suspend_reason, "unpaid invoice");
    assert_eq!(scoped_call(&app, "acme").await, Code::FailedPrecondition, "refused at once");

    let resume = ResumeTenantRequest { tenant_id: tenant.id.clone() };
    let resumed = app.tenants().resume_tenant(app.as_admin(resume)).await.unwrap().into_inner().tenant.unwrap();
    assert_eq!(resumed.state(), TenantState::Active);
    assert_ne!(scoped_call(&app, "acme").await, Code::FailedPrecondition);
}

async fn a_suspension_reaches_every_node_within_five_seconds(backend: Backend) {
    let first = TestApp::builder().backend(backend).spawn().await;
    let tenant = first.create_tenant("acme").await;
    let second = first.second_node().spawn().await;
    // Warm the second node's cache.
    assert_ne!(scoped_call(&second, "acme").await, Code::FailedPrecondition);

    let suspend = SuspendTenantRequest { tenant_id: tenant.id.clone(), reason: None };
    first.tenants().suspend_tenant(first.as_admin(suspend)).await.unwrap();
    let refused =
        eventually(Duration::from_secs(5), || async { scoped_call(&second, "acme").await == Code::FailedPrecondition })
            .await;
    assert!(refused, "the second node still serves the suspended tenant");
}

async fn a_deleted_tenant_is_gone_at_once_and_purged_after_its_grace_period(backend: Backend) {
    let app = TestApp::builder().backend(backend).configure(|c| c.tenant_purge_grace = Duration::ZERO).spawn().await;
    let tenant = app.create_tenant("acme").await;
    let request = app.as_admin(DeleteTenantRequest { tenant_id: tenant.id.clone() });
    let deleted = app.tenants().delete_tenant(request).await.unwrap().into_inner().tenant.unwrap();
    assert_eq!(deleted.state(), TenantState::Deleted);
    assert!(deleted.purge_time.is_some() && deleted.delete_time.is_some());

    for key in ["acme", tenant.id.as_str()] {
        assert_eq!(scoped_call(&app, key).await, Code::NotFound, "{key}");
    }
    let request = app.as_admin(ResumeTenantRequest { tenant_id: tenant.id.clone() });
    assert_eq!(app.tenants().resume_tenant(request).await.unwrap_err().code(), Code::FailedPrecondition);
    // The slug is free again.
    let again = app.create_tenant("acme").await;
    assert_ne!(again.id, tenant.id);

    assert!(schema_exists(&app, &tenant.id).await);
    let due = tenantry::tenancy::purge::tenants_due_for_purge(&app.pool, 10).await.unwrap();
    assert_eq!(due.iter().map(|t| t.to_string()).collect::<Vec<_>>(), vec![tenant.id.clone()]);
    let id = TenantId::parse(&tenant.id).unwrap();
    assert!(tenantry::tenancy::purge::purge_tenant(&app.pool, &id).await.unwrap());
    assert!(!tenantry::tenancy::purge::purge_tenant(&app.pool, &id).await.unwrap(), "purging twice is a no-op");
    assert!(!schema_exists(&app, &tenant.id).await);
    assert!(schema_exists(&app, &again.id).await, "the new tenant with the same slug is untouched");
}

async fn lifecycle_calls_take_tenant_ids_and_refuse_unknown_ones(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let status = app.tenants().suspend_tenant(app.as_admin(SuspendTenantRequest::default())).await.unwrap_err();
    assert_eq!(bad_field(&status), "tenant_id");
    let unknown = DeleteTenantRequest { tenant_id: TenantId::generate().to_string() };
    assert_eq!(app.tenants().delete_tenant(app.as_admin(unknown)).await.unwrap_err().code(), Code::NotFound);
    let long_reason =
        SuspendTenantRequest { tenant_id: TenantId::generate().to_string(), reason: Some("x".repeat(501)) };
    let status = app.tenants().suspend_tenant(app.as_admin(long_reason)).await.unwrap_err();
    assert_eq!(bad_field(&status), "reason");
}

async fn plans_are_seeded_and_upserted(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let plans = app.tenants().list_plans(app.as_admin(ListPlansRequest::default())).await.unwrap().into_inner();
    let mut ids: Vec<_> = plans.plans.iter().map(|p| p.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["enterprise", "free", "pro"]);
    let free = plans.plans.iter().find(|p| p.id == "free").unwrap();
    assert!(free.requests_per_second > 0 && free.burst > 0 && free.monthly_request_quota > 0);
    assert!(free.max_concurrent_jobs > 0 && free.max_replicas >= free.min_replicas);

    let plan = Plan {
        id: "team".into(),
        display_name: "Team".into(),
        requests_per_second: 50,
        burst: 100,
        monthly_request_quota: 1_000_000,
        max_concurrent_jobs: 5,
        min_replicas: 1,
        max_replicas: 4,
        ..Default::default()
    };
    let created = app.tenants().upsert_plan(app.as_admin(UpsertPlanRequest { plan: Some(plan.clone()) })).await;
    assert!(created.unwrap().into_inner().created);
    let changed = Plan { burst: 150, ..plan.clone() };
    let updated = app.tenants().upsert_plan(app.as_admin(UpsertPlanRequest { plan: Some(changed) })).await;
    let updated = updated.unwrap().into_inner();
    assert!(!updated.created);
    assert_eq!(updated.plan.unwrap().burst, 150);

    let inverted = Plan { min_replicas: 5, max_replicas: 2, ..plan };
    let status = app.tenants().upsert_plan(app.as_admin(UpsertPlanRequest { plan: Some(inverted) })).await.unwrap_err();
    assert_eq!(bad_field(&status), "plan.max_replicas");
}
