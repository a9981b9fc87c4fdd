//! Authentication and tenant parity: the same credentials and tenant headers
//! get the same code, message and details over REST as over gRPC, because
//! both go through the one stack.

use http::Method;
use tenantry::{
    error::http_status,
    proto::tenantry::v1::{GetQuotaRequest, ListTenantsRequest},
};
use tonic_types::StatusExt;

use super::{HttpResponse, bearer, insert_tenant, send};
use crate::harness::{TestApp, with_metadata};

const WELL_FORMED_UNKNOWN: &str = "tnty_AAAAAAAAAAAAAAAA_0123456789012345678901234567890123456789012";

fn assert_same(rest: &HttpResponse, grpc: &tonic::Status, case: &str) {
    assert_eq!(rest.status, http_status(grpc.code()).as_u16(), "{case}: {}", rest.text());
    let json = rest.json();
    assert_eq!(json["code"], grpc.code() as i32, "{case}");
    assert_eq!(json["message"], grpc.message(), "{case}");
    assert_eq!(json["details"].as_array().unwrap().len(), grpc.get_error_details_vec().len(), "{case}: {json}");
}

async fn list_tenants_both_ways(app: &TestApp, headers: &[(&'static str, &str)]) -> (HttpResponse, tonic::Status) {
    let rest = send(app.http_addr, Method::GET, "/v1/tenants", headers, None).await;
    let grpc = app.tenants().list_tenants(with_metadata(ListTenantsRequest::default(), headers)).await.unwrap_err();
    (rest, grpc)
}

#[tokio::test]
async fn credentials_are_judged_the_same_over_rest_and_grpc() {
    let app = TestApp::builder().spawn().await;
    let (public_id, _) = app.admin_key.trim_start_matches("tnty_").split_once('_').unwrap();
    let forged = format!("tnty_{public_id}_{}", "A".repeat(43));
    let admin = bearer(&app);
    let cases: Vec<Vec<(&'static str, String)>> = vec![
        vec![],
        vec![("authorization", format!("Bearer {WELL_FORMED_UNKNOWN}"))],
        vec![("x-api-key", WELL_FORMED_UNKNOWN.to_owned())],
        vec![("authorization", "Basic dXNlcjpwYXNz".into())],
        vec![("authorization", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".into())],
        vec![("x-api-key", forged)],
        vec![("authorization", admin.clone()), ("x-api-key", app.admin_key.clone())],
        // A platform-level method refuses a tenant header.
        vec![("authorization", admin.clone()), ("x-tenant-id", "acme".into())],
    ];
    for case in cases {
        let headers: Vec<(&'static str, &str)> = case.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (rest, grpc) = list_tenants_both_ways(&app, &headers).await;
        assert_same(&rest, &grpc, &format!("{case:?}"));
        assert!(!rest.text().contains("0123456789"), "the message echoes the credential");
    }
    // A valid key passes in either header, over both doors.
    for header in [("authorization", admin.clone()), ("x-api-key", app.admin_key.clone())] {
        let rest = send(app.http_addr, Method::GET, "/v1/tenants", &[(header.0, &header.1)], None).await;
        assert_eq!(rest.status, 200, "{}", rest.text());
        let grpc =
            app.tenants().list_tenants(with_metadata(ListTenantsRequest::default(), &[(header.0, &header.1)])).await;
        assert!(grpc.is_ok());
    }
}

#[tokio::test]
async fn an_unauthenticated_rest_call_is_401_with_the_grpc_message() {
    let app = TestApp::builder().spawn().await;
    let response = send(app.http_addr, Method::GET, "/v1/tenants", &[], None).await;
    assert_eq!(response.status, 401);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let json = response.json();
    assert_eq!(json["code"], 16);
    assert!(json["message"].as_str().unwrap().contains("authorization: Bearer"));
    assert_eq!(json["details"][0]["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
}

#[tokio::test]
async fn tenant_context_is_the_same_over_rest_and_grpc() {
    let app = TestApp::builder().spawn().await;
    insert_tenant(&app, "acme", "active").await;
    insert_tenant(&app, "frozen", "suspended").await;
    insert_tenant(&app, "gone", "deleted").await;
    let admin = bearer(&app);
    for tenant in [None, Some("acme"), Some("frozen"), Some("gone"), Some("nobody"), Some("")] {
        let mut headers = vec![("authorization", admin.as_str())];
        if let Some(tenant) = tenant {
            headers.push(("x-tenant-id", tenant));
        }
        let rest = send(app.http_addr, Method::GET, "/v1/usage/quota", &headers, None).await;
        match app.usage().get_quota(with_metadata(GetQuotaRequest::default(), &headers)).await {
            Err(grpc) => assert_same(&rest, &grpc, &format!("{tenant:?}")),
            Ok(grpc) => {
                assert_eq!(rest.status, 200, "{tenant:?}: {}", rest.text());
                assert_eq!(rest.json()["planId"], grpc.get_ref().plan_id, "{tenant:?}");
            }
        }
    }
    // The mapping itself, spelled out: missing tenant 400 naming the header,
    // suspended 400 FAILED_PRECONDITION, unknown 404.
    let missing = send(app.http_addr, Method::GET, "/v1/usage/quota", &[("authorization", &admin)], None).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()["details"][0]["fieldViolations"][0]["field"], "x-tenant-id");
    let suspended = send(
        app.http_addr,
        Method::GET,
        "/v1/usage/quota",
        &[("authorization", &admin), ("x-tenant-id", "frozen")],
        None,
    )
    .await;
    assert_eq!((suspended.status, suspended.json()["code"].as_i64()), (400, Some(9)));
    let unknown = send(
        app.http_addr,
        Method::GET,
        "/v1/usage/quota",
        &[("authorization", &admin), ("x-tenant-id", "nobody")],
        None,
    )
    .await;
    assert_eq!((unknown.status, unknown.json()["code"].as_i64()), (404, Some(5)));
}

#[tokio::test]
async fn request_ids_and_grpc_metadata_pass_through() {
    let app = TestApp::builder().spawn().await;
    let response = send(
        app.http_addr,
        Method::GET,
        "/v1/tenants",
        &[("authorization", &bearer(&app)), ("x-request-id", "rest-test-42")],
        None,
    )
    .await;
    assert_eq!(response.header("x-request-id"), Some("rest-test-42"));
}

#[tokio::test]
async fn a_grpc_timeout_header_bounds_the_call_like_a_grpc_deadline() {
    let app = TestApp::builder().spawn().await;
    let bad = send(
        app.http_addr,
        Method::GET,
        "/v1/tenants",
        &[("authorization", &bearer(&app)), ("grpc-timeout", "soon")],
        None,
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["details"][0]["fieldViolations"][0]["field"], "grpc-timeout");
    // A deadline that has passed before the call starts runs no work at all.
    let expired = send(
        app.http_addr,
        Method::GET,
        "/v1/tenants",
        &[("authorization", &bearer(&app)), ("grpc-timeout", "1n")],
        None,
    )
    .await;
    assert_eq!(expired.status, 504, "{}", expired.text());
    assert_eq!(expired.json()["code"], 4);
}
