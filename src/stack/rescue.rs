//! The one rescue: every error a layer below returns (an [`ApiError`], or
//! the boxed errors of tower's own layers, such as load shedding) is
//! rendered here, once, as a trailers-only gRPC response with the rich
//! details of [`ApiError`]'s mapping; the REST gateway turns that same
//! response into its JSON error and HTTP status. The rescue also bounds the
//! call by its deadline, so a call that runs out of time ends as
//! DEADLINE_EXCEEDED wherever it was.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{Request, Response};
use tonic::{Status, body::Body};
use tower::{BoxError, Layer, Service};

use crate::error::ApiError;

/// The client's deadline header, parsed once (it is looked up on every call).
pub(crate) const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// How long a client shed by the load-shed layer should wait.
const SHED_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Builds [`Rescue`].
#[derive(Clone, Copy, Default)]
pub struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Rescue { inner }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct Rescue<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for Rescue<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Layers below either are always ready or are load-shed: they report
        // overload as an error from `call`, never by staying pending.
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) | Poll::Pending => Poll::Ready(Ok(())),
            Poll::Ready(Err(error)) => {
                tracing::error!(error = %error.into(), "a layer failed to become ready");
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let deadline = match apply_deadline(&mut request) {
            Ok(deadline) => deadline,
            Err(error) => return Box::pin(std::future::ready(Ok(render(error)))),
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let result = match tokio::time::timeout_at(deadline.into(), inner.call(request)).await {
                Ok(result) => result.map_err(Into::into),
                Err(_elapsed) => Err(ApiError::DeadlineExceeded.into()),
            };
            Ok(result.unwrap_or_else(|error| render(classify(error))))
        })
    }
}

/// Lowers the context's deadline to the client's `grpc-timeout` when it is
/// sooner, and refuses a call whose deadline has already passed (no work
/// starts for it).
fn apply_deadline(request: &mut Request<Body>) -> Result<Instant, ApiError> {
    let timeout =
        match request.headers().get(GRPC_TIMEOUT) {
            None => None,
            Some(value) => Some(value.to_str().ok().and_then(parse_grpc_timeout).ok_or_else(|| {
                ApiError::invalid("grpc-timeout", "must be 1 to 8 digits and a unit (H, M, S, m, u, n)")
            })?),
        };
    let context = super::guard::context_mut(request)?;
    if let Some(timeout) = timeout {
        context.deadline = context.deadline.min(Instant::now() + timeout);
    }
    if context.deadline <= Instant::now() {
        return Err(ApiError::DeadlineExceeded);
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

/// The API error a layer's error stands for.
fn classify(error: BoxError) -> ApiError {
    match error.downcast::<ApiError>() {
        Ok(error) => *error,
        Err(error) if error.is::<tower::load_shed::error::Overloaded>() => ApiError::Unavailable {
            message: "the server is at its concurrency limit; retry with backoff".into(),
            retry_after: Some(SHED_RETRY_AFTER),
        },
        Err(error) => ApiError::internal(error),
    }
}

/// A trailers-only gRPC response for `error`.
pub fn render(error: ApiError) -> Response<Body> {
    match error {
        ApiError::Protocol { status, message } => super::protocol::not_grpc(status, &message),
        error => Status::from(error).into_http(),
    }
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

    #[test]
    fn errors_of_tower_layers_are_classified() {
        let overloaded: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
        assert_eq!(classify(overloaded).code(), tonic::Code::Unavailable);
        let ours: BoxError = Box::new(ApiError::DeadlineExceeded);
        assert_eq!(classify(ours).code(), tonic::Code::DeadlineExceeded);
        let unknown: BoxError = "something else".into();
        assert_eq!(classify(unknown).code(), tonic::Code::Internal);
    }
}
