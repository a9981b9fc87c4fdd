//! `/openapi.json`, `/docs` and CORS on the live server.

use http::Method;

use super::send;
use crate::harness::{TestApp, TestDatabase};

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = TestApp::builder().spawn().await;
    let response = send(app.http_addr, Method::GET, "/openapi.json", &[], None).await;
    assert_eq!(response.status, 200);
    let spec = response.json();
    assert_eq!(spec["openapi"], "3.1.0");
    let table = tenantry::gateway::routes::RouteTable::embedded().unwrap();
    for route in table.iter() {
        let operation = &spec["paths"][route.template.openapi_path()][route.method.as_str().to_ascii_lowercase()];
        assert!(operation["operationId"].is_string(), "{}", route.template.source);
    }
    assert!(spec["components"]["securitySchemes"]["bearerAuth"].is_object());
    assert!(spec["components"]["securitySchemes"]["apiKey"].is_object());
    assert!(spec["components"]["schemas"]["Status"].is_object());
    assert_eq!(spec["servers"][0]["url"], "/");
    let create = &spec["paths"]["/v1/tenants"]["post"]["requestBody"];
    assert_eq!(create["required"], true);
    assert_eq!(create["content"]["application/json"]["example"]["slug"], "acme");
    let tenant = &spec["components"]["schemas"]["tenantry.v1.Tenant"]["properties"];
    assert_eq!(tenant["createTime"]["readOnly"], true);
}

#[tokio::test]
async fn the_reference_page_is_self_contained_html_with_try_it_out() {
    let app = TestApp::builder().spawn().await;
    let response = send(app.http_addr, Method::GET, "/docs", &[], None).await;
    assert_eq!(response.status, 200);
    assert!(response.header("content-type").unwrap().starts_with("text/html"));
    let html = response.text();
    assert!(html.contains("TenantService") && html.contains("/v1/tenants/{tenant_id}:suspend"));
    assert!(html.contains("id=\"auth-form\"") && html.contains("<form class=\"tryit\""));
    // The one script and the one stylesheet are inline: the page loads nothing from elsewhere.
    assert_eq!(html.matches("<script>").count(), 1);
    for external in ["<script src", " src=", "<link", "@import", "url("] {
        assert!(!html.contains(external), "the page loads something with `{external}`");
    }
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let app = TestApp::builder().spawn().await;
    let headers = [("origin", "https://app.example"), ("access-control-request-method", "GET")];
    let preflight = send(app.http_addr, Method::OPTIONS, "/v1/tenants", &headers, None).await;
    assert_eq!(preflight.status, 405);
    assert!(preflight.header("access-control-allow-origin").is_none());
    let call = send(app.http_addr, Method::GET, "/v1/tenants", &[("origin", "https://app.example")], None).await;
    assert!(call.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn configured_origins_get_preflights_and_cors_headers() {
    let database = TestDatabase::create().await;
    let app = TestApp::builder()
        .database(database)
        .configure(|c| c.rest.cors_allowed_origins = vec!["https://app.example".into()])
        .spawn()
        .await;
    let headers = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "authorization, content-type, grpc-metadata-trace"),
    ];
    let preflight = send(app.http_addr, Method::OPTIONS, "/v1/tenants", &headers, None).await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("https://app.example"));
    assert!(preflight.header("access-control-allow-headers").unwrap().contains("grpc-metadata-trace"));
    let call = send(app.http_addr, Method::GET, "/v1/tenants", &[("origin", "https://app.example")], None).await;
    assert_eq!(call.status, 401);
    assert_eq!(call.header("access-control-allow-origin"), Some("https://app.example"));
    let other = send(app.http_addr, Method::GET, "/v1/tenants", &[("origin", "https://evil.example")], None).await;
    assert!(other.header("access-control-allow-origin").is_none());
}
