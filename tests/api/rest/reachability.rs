//! Every RPC is reachable over REST, enumerated from the descriptor: each
//! binding (additional ones too) reaches its own method through the whole
//! stack. Methods whose service has not landed answer UNIMPLEMENTED naming
//! the method (proving the route's target); landed ones answer from their
//! handler, never 5xx. Anonymous callers are refused exactly as over gRPC.

use http::Method;
use tenantry::{
    gateway::routes::RouteTable,
    policy::{Access, PolicyTable},
};

use super::{bearer, send};
use crate::harness::TestApp;

/// A concrete path for a route: every variable filled with `value`.
fn concrete_path(route: &tenantry::gateway::routes::Route, value: &str) -> String {
    let mut path = route.template.openapi_path();
    for variable in &route.template.variables {
        path = path.replace(&format!("{{{}}}", variable.openapi_name()), value);
    }
    path
}

#[tokio::test]
async fn every_rpc_binding_reaches_its_method_through_the_stack() {
    let app = TestApp::builder().spawn().await;
    // Provisioned through the API, so the tenant's schema (users, keys, roles) exists.
    app.create_tenant("acme").await;
    let table = RouteTable::embedded().unwrap();
    let policies = PolicyTable::embedded().unwrap();
    let routes: Vec<_> = table.iter().collect();
    assert!(routes.len() >= 50, "49 RPCs and the JWKS alias");
    let authorization = bearer(&app);
    for route in routes {
        let path = concrete_path(route, "x1");
        let body = (route.body != tenantry::gateway::routes::BodyRule::None).then_some("{}");
        let method_name = format!("{}.{}", route.rpc.parent_service().full_name(), route.rpc.name());
        let policy = policies.get(&route.grpc_path).unwrap();
        let mut headers = vec![("authorization", authorization.as_str())];
        if policy.tenant_scope != tenantry::policy::TenantScope::None {
            headers.push(("x-tenant-id", "acme"));
        }
        let response = send(app.http_addr, route.method.clone(), &path, &headers, body).await;
        assert!(response.header("x-request-id").is_some(), "{path} has no request id");
        if landed(&app, &route.grpc_path, &headers).await {
            assert!(response.status < 500, "{} {path}: {}", route.method, response.text());
            assert!(response.header("content-type").is_some_and(|t| t.starts_with("application/")), "{path}");
        } else {
            // Past authentication, tenant context and authorization, the
            // stack answers UNIMPLEMENTED naming the method: the route's target.
            assert_eq!(response.status, 501, "{} {path}: {}", route.method, response.text());
            let json = response.json();
            assert_eq!(json["code"], 12, "{path}");
            assert!(json["message"].as_str().unwrap().contains(&method_name), "{path}: {json}");
        }

        // Anonymous: refused exactly as over gRPC.
        let anonymous = send(app.http_addr, route.method.clone(), &path, &[], body).await;
        if policy.access == Access::Public {
            assert_ne!(anonymous.status, 401, "{} {path}", route.method);
        } else {
            assert_eq!(anonymous.status, 401, "{} {path}: {}", route.method, anonymous.text());
        }
    }
}

/// Whether the method's service is served: over gRPC with an empty message
/// it answers anything but the stack's UNIMPLEMENTED.
async fn landed(app: &crate::harness::TestApp, grpc_path: &str, headers: &[(&'static str, &str)]) -> bool {
    let status = app.call_raw(grpc_path, headers).await;
    !(status.code() == tonic::Code::Unimplemented && status.message().ends_with("not implemented by this server yet"))
}

#[tokio::test]
async fn the_jwks_is_served_at_the_well_known_path_too() {
    let app = TestApp::builder().spawn().await;
    for path in ["/v1/auth/jwks", "/.well-known/jwks.json"] {
        let response = send(app.http_addr, Method::GET, path, &[], None).await;
        assert_eq!(response.status, 200, "{path}");
        let keys = &response.json()["keys"];
        assert_eq!(keys[0]["kty"], "RSA", "{path}: {keys}");
        assert_eq!(keys[0]["alg"], "RS256", "{path}: {keys}");
    }
}

#[tokio::test]
async fn health_endpoints_keep_priority_over_the_gateway() {
    let app = TestApp::builder().spawn().await;
    let response = send(app.http_addr, Method::GET, "/healthz", &[], None).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["status"], "ok");
}
