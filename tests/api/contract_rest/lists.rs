//! The order of every List RPC, pinned page by page (newest first for the
//! time-ordered lists; roles built-in first then by name; plans by id), and
//! page tokens that are opaque, bound to the request's filters and list, and
//! refused when altered: INVALID_ARGUMENT naming `page_token`, 400 over REST.

use std::future::Future;

use http::Method;
use serde_json::Value;
use tenantry::proto::tenantry::v1::{
    CreateApiKeyRequest, CreateRoleRequest, CreateTenantRequest, EnqueueJobRequest, ListApiKeysRequest,
    ListAuditEventsRequest, ListJobsRequest, ListPlansRequest, ListRolesRequest, ListScalingDecisionsRequest,
    ListTenantsRequest, ListUsersRequest, scaling_service_client::ScalingServiceClient,
};

use super::{grpc_violation, rest, rest_violation};
use crate::{
    harness::{TestApp, identity::bearer},
    jobs::{in_tenant, insert_tenant, jobs},
};

/// Every item of a list, two to a page, in the order the pages give them.
async fn walk<F, Fut>(mut page: F) -> Vec<String>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = (Vec<String>, String)>,
{
    let (mut seen, mut token) = (Vec::new(), String::new());
    for _ in 0..100 {
        let (items, next) = page(token).await;
        assert!(items.len() <= 2, "a page of 2 held {}", items.len());
        seen.extend(items);
        if next.is_empty() {
            return seen;
        }
        token = next;
    }
    panic!("the pages did not end");
}

fn reversed(ids: &[String]) -> Vec<String> {
    ids.iter().rev().cloned().collect()
}

async fn create_tenant(app: &TestApp, slug: &str, plan: &str) -> String {
    let request = CreateTenantRequest {
        slug: slug.into(),
        display_name: slug.into(),
        plan_id: plan.into(),
        ..Default::default()
    };
    app.tenants().create_tenant(app.as_admin(request)).await.unwrap().into_inner().tenant.unwrap().id
}

#[tokio::test]
async fn every_time_ordered_list_is_newest_first_over_every_page() {
    let app = &TestApp::builder().spawn().await;

    // ListTenants, over gRPC and REST.
    let mut tenants = Vec::new();
    for slug in ["alpha", "bravo", "charlie"] {
        tenants.push(create_tenant(app, slug, "free").await);
    }
    let owned = app.tenant_with_owner("delta").await;
    tenants.push(owned.id.clone());
    let listed = walk(|page_token| async move {
        let request = ListTenantsRequest { page_size: 2, page_token, ..Default::default() };
        let page = app.tenants().list_tenants(app.as_admin(request)).await.unwrap().into_inner();
        (page.tenants.into_iter().map(|t| t.id).collect(), page.next_page_token)
    })
    .await;
    assert_eq!(listed, reversed(&tenants), "ListTenants over gRPC");
    let admin = format!("Bearer {}", app.admin_key);
    let listed = walk(|token| {
        let admin = admin.clone();
        async move {
            let path = format!("/v1/tenants?pageSize=2&pageToken={token}");
            let (status, page) = rest(app, Method::GET, &path, &[("authorization", &admin)], None).await;
            assert_eq!(status, 200, "{page}");
            let ids = page["tenants"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned());
            (ids.collect(), page["nextPageToken"].as_str().unwrap().to_owned())
        }
    })
    .await;
    assert_eq!(listed, reversed(&tenants), "ListTenants over REST");

    // ListUsers: the owner first created, then three more.
    let mut users = vec![owned.owner.id.clone()];
    for name in ["ann", "ben", "cat"] {
        users.push(app.user_with_roles(&owned, name, &["member"]).await.0.id);
    }
    let token = &owned.owner_token;
    let listed = walk(|page_token| async move {
        let request = ListUsersRequest { page_size: 2, page_token, ..Default::default() };
        let page = app.auth().list_users(bearer(request, token)).await.unwrap().into_inner();
        (page.users.into_iter().map(|u| u.id).collect(), page.next_page_token)
    })
    .await;
    assert_eq!(listed, reversed(&users), "ListUsers");

    // ListApiKeys.
    let mut keys = Vec::new();
    for name in ["one", "two", "three"] {
        let request = CreateApiKeyRequest { name: name.into(), scopes: vec!["users:read".into()], expire_time: None };
        keys.push(app.auth().create_api_key(bearer(request, token)).await.unwrap().into_inner().api_key.unwrap().id);
    }
    let listed = walk(|page_token| async move {
        let request = ListApiKeysRequest { page_size: 2, page_token, ..Default::default() };
        let page = app.auth().list_api_keys(bearer(request, token)).await.unwrap().into_inner();
        (page.api_keys.into_iter().map(|k| k.id).collect(), page.next_page_token)
    })
    .await;
    assert_eq!(listed, reversed(&keys), "ListApiKeys");

    // ListAuditEvents: the calls above left events; times never increase.
    let (mut times, mut page_token) = (Vec::new(), String::new());
    loop {
        let request = ListAuditEventsRequest { page_size: 2, page_token, ..Default::default() };
        let page = app.auth().list_audit_events(bearer(request, token)).await.unwrap().into_inner();
        assert!(page.audit_events.len() <= 2);
        times.extend(page.audit_events.into_iter().map(|e| e.create_time.map(|t| (t.seconds, t.nanos)).unwrap()));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert!(times.len() >= 7, "user and key events: {times:?}");
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "ListAuditEvents newest first: {times:?}");

    // ListJobs.
    let acme = &insert_tenant(app, "echo", "enterprise").await;
    let mut enqueued = Vec::new();
    for _ in 0..3 {
        let request = EnqueueJobRequest { kind: "report.build".into(), ..Default::default() };
        enqueued.push(jobs(app).enqueue_job(in_tenant(app, acme, request)).await.unwrap().into_inner().job.unwrap().id);
    }
    let listed = walk(|page_token| async move {
        let request = ListJobsRequest { page_size: 2, page_token, ..Default::default() };
        let page = jobs(app).list_jobs(in_tenant(app, acme, request)).await.unwrap().into_inner();
        (page.jobs.into_iter().map(|j| j.id).collect(), page.next_page_token)
    })
    .await;
    assert_eq!(listed, reversed(&enqueued), "ListJobs");

    // ListScalingDecisions: rows one second apart.
    let mut decisions = Vec::new();
    for (i, suffix) in ["a", "b", "c"].iter().enumerate() {
        let id = format!("sdc_{}", suffix.repeat(24));
        sqlx::query(
            "INSERT INTO platform.scaling_decisions (id, tenant_id, evaluated_at, current_replicas,
                 desired_replicas, raw_recommendation, limiting_rule, metrics, explanation)
             VALUES ($1, $2, now() - make_interval(secs => $3), 2, 3, 3, 'none', '[]', 'test')",
        )
        .bind(&id)
        .bind(acme.as_str())
        .bind(10.0 - i as f64)
        .execute(&app.pool)
        .await
        .unwrap();
        decisions.push(id);
    }
    let scaling = ScalingServiceClient::new(app.channel.clone());
    let listed = walk(|page_token| {
        let mut scaling = scaling.clone();
        let request = ListScalingDecisionsRequest { page_size: 2, page_token, ..Default::default() };
        let request = in_tenant(app, acme, request);
        async move {
            let page = scaling.list_scaling_decisions(request).await.unwrap().into_inner();
            (page.decisions.into_iter().map(|d| d.id).collect(), page.next_page_token)
        }
    })
    .await;
    assert_eq!(listed, reversed(&decisions), "ListScalingDecisions");
}

#[tokio::test]
async fn roles_list_built_in_first_then_by_name_and_plans_by_id() {
    let app = &TestApp::builder().spawn().await;
    let tenant = app.tenant_with_owner("acme").await;
    let token = &tenant.owner_token;
    for name in ["zeta", "Alpha", "mid"] {
        let request =
            CreateRoleRequest { name: name.into(), description: String::new(), permissions: vec!["audit:read".into()] };
        app.auth().create_role(bearer(request, token)).await.unwrap();
    }
    let listed = walk(|page_token| async move {
        let request = ListRolesRequest { page_size: 2, page_token };
        let page = app.auth().list_roles(bearer(request, token)).await.unwrap().into_inner();
        (page.roles.into_iter().map(|r| r.name).collect(), page.next_page_token)
    })
    .await;
    assert_eq!(listed, ["owner", "admin", "member", "viewer", "Alpha", "mid", "zeta"]);

    crate::harness::tenants::upsert_plan(&app.channel, &app.admin_key, "aaa-first", 10, 10, 0).await;
    let listed = walk(|page_token| async move {
        let request = ListPlansRequest { page_size: 2, page_token };
        let page = app.tenants().list_plans(app.as_admin(request)).await.unwrap().into_inner();
        (page.plans.into_iter().map(|p| p.id).collect(), page.next_page_token)
    })
    .await;
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "ListPlans by id");
    assert_eq!(listed[0], "aaa-first");
}

/// `token` with one character in the middle changed.
fn tampered(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test]
async fn a_page_token_only_reads_with_the_filters_and_list_it_was_issued_for() {
    let app = &TestApp::builder().spawn().await;
    for slug in ["alpha", "bravo", "charlie"] {
        create_tenant(app, slug, "free").await;
    }
    let admin = format!("Bearer {}", app.admin_key);
    let headers = [("authorization", admin.as_str())];
    let (status, first) = rest(app, Method::GET, "/v1/tenants?planId=free&pageSize=1", &headers, None).await;
    assert_eq!(status, 200, "{first}");
    let token = first["nextPageToken"].as_str().unwrap().to_owned();
    assert!(!token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert!(!token.contains("ten_"), "the position is not readable: {token}");

    // The same filters, even with another page size: the next page.
    let path = format!("/v1/tenants?planId=free&pageSize=5&pageToken={token}");
    let (status, next) = rest(app, Method::GET, &path, &headers, None).await;
    assert_eq!((status, next["tenants"].as_array().map(Vec::len)), (200, Some(2)), "{next}");

    let refused = |(status, error): (u16, Value), why: &str| {
        assert_eq!(status, 400, "{why}: {error}");
        assert_eq!(error["code"], 3, "{why}: {error}");
        assert_eq!(rest_violation(&error), "page_token", "{why}: {error}");
    };
    // Replayed with another filter (AIP-158), over REST and gRPC.
    for other in ["planId=pro", "planId=free&state=TENANT_STATE_SUSPENDED", ""] {
        let path = format!("/v1/tenants?{other}&pageToken={token}");
        refused(rest(app, Method::GET, &path, &headers, None).await, other);
    }
    let request = ListTenantsRequest { plan_id: "pro".into(), page_token: token.clone(), ..Default::default() };
    let status = app.tenants().list_tenants(app.as_admin(request)).await.unwrap_err();
    assert_eq!(grpc_violation(&status), "page_token");

    // Altered, or in the old readable form.
    let path = format!("/v1/tenants?planId=free&pageToken={}", tampered(&token));
    refused(rest(app, Method::GET, &path, &headers, None).await, "tampered");
    let readable = hex::encode("1700000000000000|ten_aaaaaaaaaaaaaaaaaaaaaaaa");
    refused(rest(app, Method::GET, &format!("/v1/tenants?pageToken={readable}"), &headers, None).await, "hex");

    // Another list's token: ListUsers' and ListRoles' in ListTenants, and back.
    let owned = app.tenant_with_owner("delta").await;
    app.user_with_roles(&owned, "ann", &["member"]).await;
    let request = ListUsersRequest { page_size: 1, ..Default::default() };
    let users = app.auth().list_users(bearer(request, &owned.owner_token)).await.unwrap().into_inner();
    let request = ListRolesRequest { page_size: 1, page_token: String::new() };
    let roles = app.auth().list_roles(bearer(request, &owned.owner_token)).await.unwrap().into_inner();
    for foreign in [&users.next_page_token, &roles.next_page_token] {
        assert!(!foreign.is_empty());
        let path = format!("/v1/tenants?pageToken={foreign}");
        refused(rest(app, Method::GET, &path, &headers, None).await, "another list");
    }
    let request = ListUsersRequest { page_token: token.clone(), ..Default::default() };
    let status = app.auth().list_users(bearer(request, &owned.owner_token)).await.unwrap_err();
    assert_eq!(grpc_violation(&status), "page_token");
}

/// The order each List RPC's description states: the one the code keeps
/// (pinned by the tests above). `/docs` is rendered from the same document.
const DOCUMENTED_ORDER: [(&str, &str); 8] = [
    ("TenantService_ListTenants", "newest first"),
    ("TenantService_ListPlans", "ordered by id"),
    ("AuthService_ListUsers", "newest first"),
    ("AuthService_ListApiKeys", "newest first"),
    ("AuthService_ListRoles", "the built-in roles first, then custom roles by name"),
    ("AuthService_ListAuditEvents", "newest first"),
    ("JobsService_ListJobs", "newest first"),
    ("ScalingService_ListScalingDecisions", "newest first"),
];

#[tokio::test]
async fn the_openapi_document_states_the_order_of_every_list() {
    let app = &TestApp::builder().spawn().await;
    let (status, document) = rest(app, Method::GET, "/openapi.json", &[], None).await;
    assert_eq!(status, 200);
    let mut lists = Vec::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values().filter(|o| o.get("operationId").is_some()) {
            let id = operation["operationId"].as_str().unwrap();
            if id.split('_').nth(1).is_some_and(|method| method.starts_with("List")) {
                let description = operation["description"].as_str().unwrap_or_default().replace('\n', " ");
                lists.push((id.to_owned(), description));
            }
        }
    }
    for (id, description) in &lists {
        let (_, order) = DOCUMENTED_ORDER
            .iter()
            .find(|(known, _)| known == id)
            .unwrap_or_else(|| panic!("{id} is a List RPC without a pinned order: add it here and to the tests above"));
        assert!(description.contains(order), "{id} says {description:?}, not {order:?}");
    }
    assert_eq!(lists.len(), DOCUMENTED_ORDER.len(), "{lists:?}");
}
