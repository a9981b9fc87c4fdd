//! gRPC-Web on the gRPC port, so browsers can call the API directly.
//!
//! [`layers`] goes on the gRPC server *outside* the one tower stack
//! (`stack::layers`): tonic-web translates a gRPC-Web call (HTTP/1.1 or
//! HTTP/2, binary or base64 text) into an ordinary gRPC call first, so the
//! stack's authentication, tenant context, limits, rate limits, metering and
//! metrics see it exactly as they see a native call, and its response
//! (`x-ratelimit-*`, `retry-after`, `grpc-status-details-bin`) is translated
//! back. The server must accept HTTP/1.1 (`accept_http1(true)`); native gRPC
//! keeps using HTTP/2.
//!
//! CORS comes first of all, because a browser's preflight (`OPTIONS`, no
//! credentials) is not a gRPC-Web call and tonic-web would refuse it. It uses
//! the REST gateway's origin list (`--cors-allowed-origins`), one setting for
//! both doors; with no origins configured no CORS header is ever sent and
//! browsers on other origins are refused by their own CORS checks.

use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use tonic_web::GrpcWebLayer;
use tower::{
    Layer, Service, ServiceBuilder,
    layer::util::{Identity, Stack},
};

use crate::gateway::cors::Cors;

/// Request headers a gRPC-Web client may send: the protocol's own and Tenantry's metadata.
const ALLOWED_HEADERS: &str = "content-type, x-grpc-web, x-user-agent, grpc-timeout, authorization, x-api-key, \
                               x-tenant-id, x-request-id, traceparent, tracestate";
/// Response headers a script must read: the status (trailers-only answers
/// carry it in headers), rich error details, the request id and rate limits.
const EXPOSED_HEADERS: &str = "grpc-status, grpc-message, grpc-status-details-bin, x-request-id, x-ratelimit-limit, \
                               x-ratelimit-remaining, x-ratelimit-reset, retry-after";

/// The layers to put outside the stack on the gRPC server, outermost first.
pub type Layers = ServiceBuilder<Stack<GrpcWebLayer, Stack<CorsLayer, Identity>>>;

/// CORS, then the gRPC-Web translation, for the allowed browser origins.
pub fn layers(origins: &[String]) -> Layers {
    ServiceBuilder::new().layer(CorsLayer { cors: Cors::new(origins.to_vec()) }).layer(GrpcWebLayer::new())
}

/// Answers CORS preflights and marks allowed origins on responses.
#[derive(Debug, Clone)]
pub struct CorsLayer {
    cors: Cors,
}

impl<S> Layer<S> for CorsLayer {
    type Service = CorsService<S>;

    fn layer(&self, inner: S) -> CorsService<S> {
        CorsService { cors: self.cors.clone(), inner }
    }
}

/// The service of [`CorsLayer`].
#[derive(Debug, Clone)]
pub struct CorsService<S> {
    cors: Cors,
    inner: S,
}

impl<S, B> Service<Request<B>> for CorsService<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let origin = self.cors.allow(request.headers());
        if request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Box::pin(std::future::ready(Ok(preflight(origin))));
        }
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            // POST answers are not cached, so other origins need no `Vary` either.
            if origin.is_some() {
                mark(response.headers_mut(), origin);
            }
            Ok(response)
        })
    }
}

/// The answer to a preflight: 204 with the allowed methods and headers for
/// an allowed origin, 403 (and no CORS headers) otherwise.
fn preflight(origin: Option<HeaderValue>) -> Response<tonic::body::Body> {
    let mut response = Response::new(tonic::body::Body::empty());
    let Some(origin) = origin else {
        *response.status_mut() = StatusCode::FORBIDDEN;
        return response;
    };
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    mark(headers, Some(origin));
    response
}

/// Lets an allowed origin read the response; `Vary` tells caches the answer depends on the origin.
fn mark(headers: &mut HeaderMap, origin: Option<HeaderValue>) {
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preflight_request(origin: &'static str) -> Request<()> {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/tenantry.v1.AuthService/WhoAmI")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type, x-grpc-web, authorization")
            .body(())
            .unwrap()
    }

    async fn call(origins: &[&str], request: Request<()>) -> Response<tonic::body::Body> {
        let inner = tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(tonic::body::Body::empty()))
        });
        let origins: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
        let mut service = CorsLayer { cors: Cors::new(origins) }.layer(inner);
        service.call(request).await.unwrap()
    }

    #[tokio::test]
    async fn a_preflight_from_an_allowed_origin_is_answered_with_the_grpc_web_headers() {
        let response = call(&["https://app.example"], preflight_request("https://app.example")).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(response.headers()["access-control-allow-origin"], "https://app.example");
        let allowed = response.headers()["access-control-allow-headers"].to_str().unwrap();
        assert!(allowed.contains("x-grpc-web") && allowed.contains("x-tenant-id"), "{allowed}");
        let exposed = response.headers()["access-control-expose-headers"].to_str().unwrap();
        assert!(exposed.contains("grpc-status-details-bin") && exposed.contains("x-ratelimit-remaining"));
    }

    #[tokio::test]
    async fn a_preflight_from_another_origin_is_refused_without_cors_headers() {
        let response = call(&["https://app.example"], preflight_request("https://evil.example")).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(!response.headers().contains_key("access-control-allow-origin"));
    }

    #[tokio::test]
    async fn without_configured_origins_no_cors_header_is_sent() {
        let request = Request::builder().uri("/x").header(header::ORIGIN, "https://app.example").body(()).unwrap();
        let response = call(&[], request).await;
        assert!(response.headers().is_empty());
        assert_eq!(call(&[], preflight_request("https://app.example")).await.status(), StatusCode::FORBIDDEN);
    }
}
