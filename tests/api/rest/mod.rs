//! The REST/JSON gateway against the real server: every RPC reachable over
//! REST, authentication, tenant and error parity with gRPC, the gateway's own
//! errors, streaming, the OpenAPI document and CORS. A plain HTTP/1.1 client
//! (hyper) plays curl.

mod documents;
mod errors;
mod live;
mod parity;
mod reachability;
mod tenants;

pub use crate::harness::http_client::{HttpResponse, send};

/// The admin's bearer header value.
pub fn bearer(app: &crate::harness::TestApp) -> String {
    format!("Bearer {}", app.admin_key)
}

/// Inserts a tenant row directly (TenantService arranges this once it lands).
/// A tenant row on the enterprise plan: these tests make many calls in a
/// burst and check routing and errors, not rate limits.
pub async fn insert_tenant(app: &crate::harness::TestApp, slug: &str, state: &str) -> String {
    crate::harness::tenants::insert_tenant_row(app, slug, "enterprise", state).await.as_str().to_owned()
}
