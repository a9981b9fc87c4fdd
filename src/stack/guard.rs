//! One mechanism for the stack's checks that run before a call and may
//! refuse it (authenticate, tenant context, rate limit, authorize): a
//! [`Guard`] reads and enriches the request, and [`GuardLayer`] turns its
//! refusal into a gRPC error response without calling the handler.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::{context::RequestContext, error::ApiError};

/// A check made before the handler runs.
pub trait Guard: Send + Sync + 'static {
    /// Inspects (and may enrich) the request; an error refuses the call.
    fn check(&self, request: &mut Request<Body>) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// The call's context; the observe layer inserts it before any guard runs.
pub fn context(request: &Request<Body>) -> Result<&RequestContext, ApiError> {
    request
        .extensions()
        .get::<RequestContext>()
        .ok_or_else(|| ApiError::internal("request context missing: the observe layer must run first"))
}

/// The call's context, mutable.
pub fn context_mut(request: &mut Request<Body>) -> Result<&mut RequestContext, ApiError> {
    request
        .extensions_mut()
        .get_mut::<RequestContext>()
        .ok_or_else(|| ApiError::internal("request context missing: the observe layer must run first"))
}

/// Turns an error into a trailers-only gRPC response.
pub fn reject(error: ApiError) -> Response<Body> {
    Status::from(error).into_http()
}

/// Runs a [`Guard`] in front of the inner service. The guard is shared, so
/// the per-call clones tower makes of the service cost one reference count.
#[derive(Clone)]
pub struct GuardLayer<G> {
    guard: Arc<G>,
}

impl<G> GuardLayer<G> {
    /// A layer running `guard`.
    pub fn new(guard: G) -> Self {
        GuardLayer { guard: Arc::new(guard) }
    }
}

impl<G, S> Layer<S> for GuardLayer<G> {
    type Service = Guarded<G, S>;
    fn layer(&self, inner: S) -> Self::Service {
        Guarded { guard: self.guard.clone(), inner }
    }
}

/// The service made by [`GuardLayer`].
#[derive(Clone)]
pub struct Guarded<G, S> {
    guard: Arc<G>,
    inner: S,
}

impl<G, S> Service<Request<Body>> for Guarded<G, S>
where
    G: Guard,
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
        let guard = self.guard.clone();
        // The clone is not ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            match guard.check(&mut request).await {
                Ok(()) => inner.call(request).await,
                Err(error) => Ok(reject(error)),
            }
        })
    }
}
