//! The gateway's own failures use the API's JSON error shape and the right
//! HTTP status: no route 404, wrong method 405 (with `Allow`), bad JSON and
//! unknown fields 400 (naming the field), body too large 413, wrong media
//! type 415. Unknown fields can be allowed by configuration.

use http::Method;

use super::{bearer, send};
use crate::harness::TestApp;

#[tokio::test]
async fn an_unknown_path_is_a_json_404() {
    let app = TestApp::builder().spawn().await;
    let response = send(app.http_addr, Method::GET, "/v1/nothing-here", &[], None).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json()["code"], 5);
    assert_eq!(response.json()["details"], serde_json::json!([]));
}

#[tokio::test]
async fn a_wrong_method_is_405_listing_the_allowed_ones() {
    let app = TestApp::builder().spawn().await;
    let response = send(app.http_addr, Method::DELETE, "/v1/tenants", &[], None).await;
    assert_eq!(response.status, 405);
    let allow = response.header("allow").unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert_eq!(response.json()["code"], 12);
    // A custom verb is part of the route: GET on `:suspend` is not GetTenant.
    let response = send(app.http_addr, Method::GET, "/v1/tenants/ten_1:suspend", &[], None).await;
    assert_eq!(response.status, 405);
}

#[tokio::test]
async fn bad_json_and_unknown_fields_are_400_naming_the_field() {
    let app = TestApp::builder().spawn().await;
    let admin = bearer(&app);
    let auth = [("authorization", admin.as_str())];
    let response = send(app.http_addr, Method::POST, "/v1/tenants", &auth, Some("{\"slug\":")).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["details"][0]["fieldViolations"][0]["field"], "body");

    let response =
        send(app.http_addr, Method::POST, "/v1/tenants", &auth, Some(r#"{"slug":"a","colour":"red"}"#)).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["details"][0]["fieldViolations"][0]["field"], "colour");

    let response = send(app.http_addr, Method::GET, "/v1/tenants?colour=red", &auth, None).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["details"][0]["fieldViolations"][0]["field"], "colour");

    let response = send(app.http_addr, Method::GET, "/v1/tenants?state=FROZEN", &auth, None).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["details"][0]["fieldViolations"][0]["field"], "state");

    // The JSON shape is checked before authentication: bad input is 400 even anonymously.
    let response = send(app.http_addr, Method::POST, "/v1/tenants", &[], Some("[1]")).await;
    assert_eq!(response.status, 400);
}

#[tokio::test]
async fn unknown_fields_are_ignored_when_configured() {
    let app = TestApp::builder().configure(|c| c.rest.allow_unknown_fields = true).spawn().await;
    let admin = bearer(&app);
    let auth = [("authorization", admin.as_str())];
    let body = r#"{"slug":"acme","displayName":"Acme","planId":"free","colour":"red"}"#;
    let response = send(app.http_addr, Method::POST, "/v1/tenants", &auth, Some(body)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let response = send(app.http_addr, Method::GET, "/v1/tenants?colour=red", &auth, None).await;
    assert_eq!(response.status, 200, "{}", response.text());
}

#[tokio::test]
async fn a_body_over_the_message_limit_is_413() {
    let app = TestApp::builder().configure(|c| c.max_message_bytes = 1024).spawn().await;
    let big = format!(r#"{{"slug":"{}"}}"#, "a".repeat(2048));
    let response = send(app.http_addr, Method::POST, "/v1/tenants", &[], Some(&big)).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["code"], 8);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = TestApp::builder().spawn().await;
    let response =
        send(app.http_addr, Method::POST, "/v1/tenants", &[("content-type", "text/plain")], Some("slug=a")).await;
    assert_eq!(response.status, 415);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json()["code"], 3);
}

#[tokio::test]
async fn pretty_output_is_indented() {
    let app = TestApp::builder().spawn().await;
    let response = send(app.http_addr, Method::GET, "/v1/tenants?pretty", &[], None).await;
    assert_eq!(response.status, 401);
    assert!(response.text().contains("\n  \"code\": 16"), "{}", response.text());
}

#[tokio::test]
async fn a_stream_failing_before_its_first_message_is_an_ordinary_error_in_both_formats() {
    let app = TestApp::builder().spawn().await;
    super::insert_tenant(&app, "acme", "active").await;
    let admin = bearer(&app);
    for accept in ["application/x-ndjson", "text/event-stream"] {
        let headers = [("authorization", admin.as_str()), ("x-tenant-id", "acme"), ("accept", accept)];
        let response = send(app.http_addr, Method::GET, "/v1/jobs/job_1:watch", &headers, None).await;
        // No such job: NOT_FOUND before any message.
        assert_eq!(response.status, 404, "{accept}");
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert!(response.json()["message"].as_str().unwrap().contains("job_1"));
    }
    let anonymous =
        send(app.http_addr, Method::GET, "/v1/jobs/job_1:watch", &[("accept", "text/event-stream")], None).await;
    assert_eq!(anonymous.status, 401);
}
