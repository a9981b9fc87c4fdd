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

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// An HTTP response, read whole.
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request on a fresh connection.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect http");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(path).header("host", "test");
    if body.is_some() && !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.unwrap_or_default().to_owned()))).unwrap();
    let response = sender.send_request(request).await.expect("send request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("read body").to_bytes();
    HttpResponse { status, headers, body }
}

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
