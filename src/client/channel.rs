//! [`TenantryChannel`]: the tower service under every generated client. It
//! adds the bearer token and the tenant to each call, retries refused calls
//! by the [`RetryPolicy`] when repeating them is harmless, and records the
//! rate-limit state the server reports.
//!
//! It works on HTTP requests, below the generated clients, so every method
//! gets the same treatment without wrappers. Tenantry's requests are unary
//! messages, so the body is buffered once and resent on a retry; refusals
//! (rate limits, shedding) are trailers-only responses, so their status is in
//! the response headers.

use std::{
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use tonic::{
    Code, Status,
    body::Body,
    codegen::{BoxFuture, StdError},
    transport::Channel,
};
use tonic_types::StatusExt;
use tower::{Service, ServiceExt};

use super::{
    credentials::Credentials,
    retry::{RetryPolicy, may_repeat},
};

/// The tenant's rate-limit state from the last response that carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests the bucket holds.
    pub limit: u64,
    /// Requests left before calls are refused.
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_seconds: u64,
}

/// What every clone of a channel shares.
pub(super) struct Shared {
    pub raw: Channel,
    pub credentials: Option<Credentials>,
    pub tenant: Option<HeaderValue>,
    pub retry: RetryPolicy,
    pub rate_limit: Mutex<Option<RateLimit>>,
}

/// The channel the generated clients run on (see the module doc).
#[derive(Clone)]
pub struct TenantryChannel {
    pub(super) shared: Arc<Shared>,
}

impl TenantryChannel {
    /// The last rate-limit state the server reported.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        *self.shared.rate_limit.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Service<Request<Body>> for TenantryChannel {
    type Response = Response<Body>;
    type Error = StdError;
    type Future = BoxFuture<Response<Body>, StdError>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StdError>> {
        // Each call drives a clone of the inner channel to readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { send(&shared, request).await })
    }
}

async fn send(shared: &Shared, request: Request<Body>) -> Result<Response<Body>, StdError> {
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    if let Some(credentials) = &shared.credentials {
        let token = credentials.token(&shared.raw).await?;
        let value =
            HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| Status::unauthenticated("bad token"))?;
        parts.headers.insert(http::header::AUTHORIZATION, value);
    }
    if let Some(tenant) = &shared.tenant {
        parts.headers.insert("x-tenant-id", tenant.clone());
    }
    let deadline = parts.headers.get("grpc-timeout").and_then(parse_grpc_timeout).map(|t| Instant::now() + t);
    // The message follows the 5-byte gRPC frame header.
    let repeatable = may_repeat(parts.uri.path(), body.get(5..).unwrap_or_default());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut request = Request::from_parts(parts.clone(), Body::new(Full::new(body.clone())));
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            request.headers_mut().insert("grpc-timeout", grpc_timeout(left));
        }
        let outcome = shared.raw.clone().ready().await?.call(request).await;
        let (code, retry_info) = match &outcome {
            Ok(response) => {
                observe(shared, response.headers());
                match Status::from_header_map(response.headers()) {
                    Some(status) if status.code() != Code::Ok => {
                        (status.code(), status.get_details_retry_info().and_then(|r| r.retry_delay))
                    }
                    _ => return outcome.map_err(Into::into),
                }
            }
            // Could not reach the server: as UNAVAILABLE.
            Err(_) => (Code::Unavailable, None),
        };
        let wait = if repeatable { shared.retry.delay(code, retry_info, attempt) } else { None };
        match wait {
            Some(wait) if deadline.is_none_or(|d| Instant::now() + wait < d) => tokio::time::sleep(wait).await,
            _ => return outcome.map_err(Into::into),
        }
    }
}

fn observe(shared: &Shared, headers: &HeaderMap) {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.parse::<u64>().ok();
    if let (Some(limit), Some(remaining), Some(reset_seconds)) =
        (number("x-ratelimit-limit"), number("x-ratelimit-remaining"), number("x-ratelimit-reset"))
    {
        *shared.rate_limit.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(RateLimit { limit, remaining, reset_seconds });
    }
}

/// `grpc-timeout` (`100m`, `5S`, …) as a duration.
fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The time left as `grpc-timeout`, in milliseconds (at most 8 digits, at least 1).
fn grpc_timeout(left: Duration) -> HeaderValue {
    let millis = left.as_millis().clamp(1, 99_999_999);
    HeaderValue::try_from(format!("{millis}m")).unwrap_or(HeaderValue::from_static("1m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_round_trip_in_milliseconds() {
        assert_eq!(parse_grpc_timeout(&HeaderValue::from_static("5S")), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout(&HeaderValue::from_static("250m")), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout(&HeaderValue::from_static("x")), None);
        assert_eq!(grpc_timeout(Duration::from_millis(1500)), "1500m");
        assert_eq!(grpc_timeout(Duration::ZERO), "1m");
    }
}
