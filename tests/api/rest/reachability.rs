//! Every RPC is reachable over REST, enumerated from the descriptor: each
//! binding (additional ones too) reaches its own method through the whole
//! stack, and answers exactly what gRPC answers for the same call.

use http::Method;
use tenantry::{
    gateway::routes::RouteTable,
    policy::{Access, PolicyTable},
};

use super::{bearer, insert_tenant, send};
use crate::harness::spawn_app;

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
    let app = spawn_app().await;
    insert_tenant(&app, "acme", "active").await;
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
        // No tenantry.v1 service is served by this build yet: past
        // authentication, tenant context and authorization, each answers
        // UNIMPLEMENTED naming the method, which proves the route's target.
        assert_eq!(response.status, 501, "{} {path}: {}", route.method, response.text());
        let json = response.json();
        assert_eq!(json["code"], 12, "{path}");
        assert!(json["message"].as_str().unwrap().contains(&method_name), "{path}: {json}");
        assert!(response.header("x-request-id").is_some(), "{path} has no request id");

        // Anonymous: refused exactly as over gRPC.
        let anonymous = send(app.http_addr, route.method.clone(), &path, &[], body).await;
        let expected = if policy.access == Access::Public { 501 } else { 401 };
        assert_eq!(anonymous.status, expected, "{} {path}: {}", route.method, anonymous.text());
    }
}

#[tokio::test]
async fn the_jwks_is_served_at_the_well_known_path_too() {
    let app = spawn_app().await;
    for path in ["/v1/auth/jwks", "/.well-known/jwks.json"] {
        let response = send(app.http_addr, Method::GET, path, &[], None).await;
        assert_eq!(response.status, 501, "{path}");
        assert!(response.json()["message"].as_str().unwrap().contains("GetJwks"));
    }
}

#[tokio::test]
async fn health_endpoints_keep_priority_over_the_gateway() {
    let app = spawn_app().await;
    let response = send(app.http_addr, Method::GET, "/healthz", &[], None).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["status"], "ok");
}
