//! Real TenantService calls over REST: the JSON mapping end to end (camelCase
//! out, both spellings in, enums by name, timestamps), query parameters,
//! custom verbs, PATCH with a derived `update_mask`, and the error mapping of
//! real handler errors (400 naming the field, 404, 409).

use http::Method;
use serde_json::{Value, json};

use super::{bearer, send};
use crate::harness::TestApp;

async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let admin = bearer(app);
    let body = body.map(|b| b.to_string());
    let response = send(app.http_addr, method, path, &[("authorization", &admin)], body.as_deref()).await;
    (response.status, response.json())
}

#[tokio::test]
async fn a_tenant_can_be_created_read_listed_updated_and_suspended_over_rest() {
    let app = TestApp::builder().spawn().await;
    // Both spellings are accepted in; lowerCamelCase comes out.
    let body = json!({"slug": "acme", "display_name": "Acme", "planId": "free", "labels": {"region": "eu"}});
    let (status, created) = call(&app, Method::POST, "/v1/tenants", Some(body)).await;
    assert_eq!(status, 200, "{created}");
    let tenant = &created["tenant"];
    let id = tenant["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ten_"));
    assert_eq!(tenant["displayName"], "Acme");
    assert_eq!(tenant["state"], "TENANT_STATE_ACTIVE");
    assert!(chrono::DateTime::parse_from_rfc3339(tenant["createTime"].as_str().unwrap()).is_ok());

    for name in [id.as_str(), "acme"] {
        let (status, got) = call(&app, Method::GET, &format!("/v1/tenants/{name}"), None).await;
        assert_eq!((status, got["tenant"]["id"].as_str()), (200, Some(id.as_str())));
    }

    let (status, listed) = call(&app, Method::GET, "/v1/tenants?pageSize=10&state=TENANT_STATE_ACTIVE", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["tenants"].as_array().unwrap().len(), 1);
    let (_, none) = call(&app, Method::GET, "/v1/tenants?state=TENANT_STATE_SUSPENDED", None).await;
    assert!(none.get("tenants").is_none_or(|t| t.as_array().unwrap().is_empty()), "{none}");

    // PATCH without a mask: only the fields in the body change, and an empty
    // map in the body clears the labels (a mask derived from the body says so).
    let (status, patched) =
        call(&app, Method::PATCH, &format!("/v1/tenants/{id}"), Some(json!({"displayName": "Acme Corp"}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["tenant"]["displayName"], "Acme Corp");
    assert_eq!(patched["tenant"]["labels"]["region"], "eu");
    let (status, cleared) = call(&app, Method::PATCH, &format!("/v1/tenants/{id}"), Some(json!({"labels": {}}))).await;
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(cleared["tenant"]["labels"], json!({}), "{cleared}");
    assert_eq!(cleared["tenant"]["displayName"], "Acme Corp");

    let (status, suspended) =
        call(&app, Method::POST, &format!("/v1/tenants/{id}:suspend"), Some(json!({"reason": "late payment"}))).await;
    assert_eq!(status, 200, "{suspended}");
    assert_eq!(suspended["tenant"]["state"], "TENANT_STATE_SUSPENDED");
    assert_eq!(suspended["tenant"]["suspendReason"], "late payment");
}

#[tokio::test]
async fn handler_errors_map_to_http_statuses_with_details() {
    let app = TestApp::builder().spawn().await;
    let (status, error) = call(&app, Method::POST, "/v1/tenants", Some(json!({"slug": "A!", "planId": "free"}))).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["code"], 3);
    assert_eq!(error["details"][0]["@type"], "type.googleapis.com/google.rpc.BadRequest");
    assert_eq!(error["details"][0]["fieldViolations"][0]["field"], "slug");

    let body = json!({"slug": "acme", "displayName": "Acme", "planId": "free"});
    assert_eq!(call(&app, Method::POST, "/v1/tenants", Some(body.clone())).await.0, 200);
    let (status, error) = call(&app, Method::POST, "/v1/tenants", Some(body)).await;
    assert_eq!((status, error["code"].as_i64()), (409, Some(6)), "{error}");

    let (status, error) = call(&app, Method::GET, "/v1/tenants/ten_00000000000000000000000000", None).await;
    assert_eq!((status, error["code"].as_i64()), (404, Some(5)), "{error}");
}

#[tokio::test]
async fn plans_are_listed_with_int64_fields_as_strings() {
    let app = TestApp::builder().spawn().await;
    let plan = json!({"displayName": "Pro", "requestsPerSecond": 50, "burst": 100, "monthlyRequestQuota": "1000000",
                      "maxConcurrentJobs": 4, "minReplicas": 1, "maxReplicas": 8});
    let (status, upserted) = call(&app, Method::PUT, "/v1/plans/pro-test", Some(plan)).await;
    assert_eq!(status, 200, "{upserted}");
    let (status, plans) = call(&app, Method::GET, "/v1/plans?pageSize=100", None).await;
    assert_eq!(status, 200);
    let pro = plans["plans"].as_array().unwrap().iter().find(|p| p["id"] == "pro-test").cloned().unwrap();
    assert_eq!(pro["monthlyRequestQuota"], "1000000");
}
