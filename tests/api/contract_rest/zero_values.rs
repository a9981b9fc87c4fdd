//! Zero values that mean something are present in REST JSON (every field
//! without presence is emitted), and `RateLimit-Policy` carries its window.

use http::Method;
use tenantry::proto::tenantry::v1::{Plan, UpsertPlanRequest};

use super::rest;
use crate::harness::{TestApp, http_client::send};

async fn tenant_on_plan(app: &TestApp, slug: &str, plan: &str, requests_per_second: u32, burst: u32) {
    let plan = Plan {
        id: plan.into(),
        display_name: plan.into(),
        requests_per_second,
        burst,
        max_concurrent_jobs: 1,
        min_replicas: 1,
        max_replicas: 1,
        ..Default::default()
    };
    let id = plan.id.clone();
    app.tenants().upsert_plan(app.as_admin(UpsertPlanRequest { plan: Some(plan) })).await.unwrap();
    crate::harness::tenants::insert_tenant_row(app, slug, &id, "active").await;
}

#[tokio::test]
async fn a_remaining_of_zero_and_an_unused_quota_are_present_in_json() {
    let app = TestApp::builder().spawn().await;
    // A bucket of one: the call that reads the quota takes the only token.
    tenant_on_plan(&app, "acme", "single", 1, 1).await;
    let admin = format!("Bearer {}", app.admin_key);
    let headers = [("authorization", admin.as_str()), ("x-tenant-id", "acme")];
    let (status, quota) = rest(&app, Method::GET, "/v1/usage/quota", &headers, None).await;
    assert_eq!(status, 200, "{quota}");
    let rate = &quota["rateLimit"];
    assert_eq!(rate["remaining"], 0, "rateLimit.remaining is present at 0: {quota}");
    assert_eq!((rate["requestsPerSecond"].as_u64(), rate["burst"].as_u64()), (Some(1), Some(1)), "{quota}");
    let quotas = quota["quotas"].as_array().unwrap_or_else(|| panic!("quotas is present: {quota}"));
    assert!(!quotas.is_empty(), "{quota}");
    for entry in quotas {
        // The plan sets no monthly quota: limit and remaining are 0, and said.
        assert_eq!((entry["limit"].as_str(), entry["unlimited"].as_bool()), (Some("0"), Some(true)), "{quota}");
        assert!(entry["remaining"].is_string() && entry["used"].is_string(), "{quota}");
    }
    // An empty list is an empty array, and the last page's token an empty string.
    let (status, none) =
        rest(&app, Method::GET, "/v1/tenants?state=TENANT_STATE_SUSPENDED", &[("authorization", &admin)], None).await;
    assert_eq!(status, 200, "{none}");
    assert_eq!(none, serde_json::json!({"tenants": [], "nextPageToken": ""}));
}

#[tokio::test]
async fn ratelimit_policy_carries_the_window_in_seconds() {
    let app = TestApp::builder().spawn().await;
    // 4 requests at once, refilled at 2 per second: an empty bucket is full
    // again after 2 seconds, so the policy is 4 per 2-second window.
    tenant_on_plan(&app, "acme", "paced", 2, 4).await;
    let admin = format!("Bearer {}", app.admin_key);
    let headers = [("authorization", admin.as_str()), ("x-tenant-id", "acme")];
    let response = send(app.http_addr, Method::GET, "/v1/usage/quota", &headers, None).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("ratelimit-policy"), Some("\"default\";q=4;w=2"), "{:?}", response.headers);
    let mut limited = None;
    for _ in 0..50 {
        let response = send(app.http_addr, Method::GET, "/v1/usage/quota", &headers, None).await;
        if response.status == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let limited = limited.expect("a bucket of 4 refilled at 2/s runs dry within 50 back-to-back calls");
    assert_eq!(limited.header("ratelimit-policy"), Some("\"default\";q=4;w=2"), "{:?}", limited.headers);
    let grpc = app.usage().get_quota(app.as_admin_in("acme", Default::default())).await;
    let metadata = match &grpc {
        Ok(response) => response.metadata().clone(),
        Err(status) => status.metadata().clone(),
    };
    assert_eq!(metadata.get("x-ratelimit-window").and_then(|v| v.to_str().ok()), Some("2"), "{grpc:?}");
}
