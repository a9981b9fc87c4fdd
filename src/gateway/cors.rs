//! CORS for browser clients of the REST API: off by default (no CORS headers,
//! preflights answered 405 like any unbound method). With allowed origins
//! configured, matching requests get `Access-Control-Allow-Origin` and
//! preflights (`OPTIONS` with `Access-Control-Request-Method`) are answered
//! 204 by the gateway itself, before the stack: a preflight carries no
//! credentials and calls nothing.

use axum::{body::Body, response::Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

/// Headers a browser may send on a cross-origin call.
const ALLOWED_HEADERS: &str = "authorization, content-type, x-api-key, x-tenant-id, x-request-id, grpc-timeout, \
                               traceparent, tracestate";
/// Response headers a browser script may read.
const EXPOSED_HEADERS: &str = "x-request-id, retry-after, ratelimit, ratelimit-policy";
/// Methods the API uses.
const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";

/// The CORS policy.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    /// Allowed origins (`https://app.example.com`), or `*`; empty: CORS off.
    origins: Vec<String>,
}

impl Cors {
    /// A policy allowing `origins` (empty: off).
    pub fn new(origins: Vec<String>) -> Cors {
        Cors { origins }
    }

    /// The value of `Access-Control-Allow-Origin` for a request, if allowed
    /// (gRPC-Web on the gRPC port shares the origin list).
    pub(crate) fn allow(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        if self.origins.iter().any(|o| o == "*") {
            return Some(HeaderValue::from_static("*"));
        }
        let text = origin.to_str().ok()?;
        self.origins.iter().any(|o| o.eq_ignore_ascii_case(text)).then(|| origin.clone())
    }

    /// The answer to a preflight, when this is one and CORS is on.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Response> {
        if *method != Method::OPTIONS || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
            return None;
        }
        let origin = self.allow(headers)?;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOWED_METHODS));
        // Grpc-Metadata-* names are open-ended: echo what was asked if it is one of ours or metadata.
        let requested = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).and_then(|v| v.to_str().ok());
        let extra: Vec<&str> = requested
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|h| h.to_ascii_lowercase().starts_with(super::call::METADATA_PREFIX))
            .collect();
        let allowed = if extra.is_empty() {
            ALLOWED_HEADERS.to_owned()
        } else {
            format!("{ALLOWED_HEADERS}, {}", extra.join(", "))
        };
        if let Ok(value) = HeaderValue::from_str(&allowed) {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
        }
        out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        out.insert(header::VARY, HeaderValue::from_static("origin"));
        Some(response)
    }

    /// Adds the CORS headers to an actual response, given what [`Cors::allow`]
    /// said of its request.
    pub fn decorate(&self, allowed: Option<HeaderValue>, response: &mut Response) {
        if self.origins.is_empty() {
            return;
        }
        let out = response.headers_mut();
        out.append(header::VARY, HeaderValue::from_static("origin"));
        if let Some(origin) = allowed {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn cors_is_off_by_default() {
        let cors = Cors::default();
        let request = headers(&[("origin", "https://app.example"), ("access-control-request-method", "GET")]);
        assert!(cors.preflight(&Method::OPTIONS, &request).is_none());
        let mut response = Response::new(Body::empty());
        cors.decorate(cors.allow(&request), &mut response);
        assert!(response.headers().is_empty());
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let cors = Cors::new(vec!["https://app.example".into()]);
        let good = headers(&[("origin", "https://app.example"), ("access-control-request-method", "POST")]);
        let preflight = cors.preflight(&Method::OPTIONS, &good).unwrap();
        assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
        assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.example");
        let evil = headers(&[("origin", "https://evil.example"), ("access-control-request-method", "POST")]);
        assert!(cors.preflight(&Method::OPTIONS, &evil).is_none());
        let mut response = Response::new(Body::empty());
        cors.decorate(cors.allow(&evil), &mut response);
        assert!(!response.headers().contains_key("access-control-allow-origin"));
    }
}
