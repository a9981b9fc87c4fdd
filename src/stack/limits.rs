//! Limits applied before any work: load shedding (a bound on calls in flight
//! in this process) and the call's deadline (the smaller of the client's
//! `grpc-timeout` and the server's ceiling), enforced around the handler.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use tokio::sync::Semaphore;
use tonic::body::Body;
use tower::{Layer, Service};

use super::guard::{context_mut, reject};
use crate::error::ApiError;

/// Builds [`Limits`].
#[derive(Clone)]
pub struct LimitsLayer {
    in_flight: Arc<Semaphore>,
}

impl LimitsLayer {
    /// At most `max_in_flight` calls run at once; more are shed.
    pub fn new(max_in_flight: usize) -> Self {
        LimitsLayer { in_flight: Arc::new(Semaphore::new(max_in_flight)) }
    }
}

impl<S> Layer<S> for LimitsLayer {
    type Service = Limits<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Limits { inner, in_flight: self.in_flight.clone() }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct Limits<S> {
    inner: S,
    in_flight: Arc<Semaphore>,
}

impl<S> Service<Request<Body>> for Limits<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // Shedding answers at once instead of queueing: a queue only adds
        // latency to calls whose clients will have given up.
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            let error = ApiError::Unavailable {
                message: "server overloaded; retry with backoff".into(),
                retry_after: Some(Duration::from_millis(250)),
            };
            return Box::pin(async move { Ok(reject(error)) });
        };
        let deadline = match apply_deadline(&mut request) {
            // No work starts for a call whose deadline has already passed.
            Ok(deadline) if deadline <= std::time::Instant::now() => {
                return Box::pin(async move { Ok(reject(ApiError::DeadlineExceeded)) });
            }
            Ok(deadline) => deadline,
            Err(error) => return Box::pin(async move { Ok(reject(error)) }),
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let result = tokio::time::timeout_at(deadline.into(), inner.call(request)).await;
            drop(permit);
            match result {
                Ok(response) => response,
                Err(_elapsed) => Ok(reject(ApiError::DeadlineExceeded)),
            }
        })
    }
}

/// Lowers the context's deadline to the client's `grpc-timeout`, if sooner.
fn apply_deadline(request: &mut Request<Body>) -> Result<std::time::Instant, ApiError> {
    let timeout =
        match request.headers().get("grpc-timeout") {
            None => None,
            Some(value) => Some(value.to_str().ok().and_then(parse_grpc_timeout).ok_or_else(|| {
                ApiError::invalid("grpc-timeout", "must be 1 to 8 digits and a unit (H, M, S, m, u, n)")
            })?),
        };
    let context = context_mut(request)?;
    if let Some(timeout) = timeout {
        let requested = std::time::Instant::now() + timeout;
        context.deadline = context.deadline.min(requested);
    }
    Ok(context.deadline)
}

/// Parses the gRPC `grpc-timeout` header value (`100m`, `5S`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
