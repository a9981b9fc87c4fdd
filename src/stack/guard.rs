//! One mechanism for the stack's checks that run before a call and may
//! refuse it (authenticate, tenant context, rate limit, authorize): a
//! [`Guard`] reads and enriches the request and either passes it on or
//! returns the [`ApiError`] that refuses it. Guards never render responses;
//! the error travels up to the one rescue ([`super::rescue`]).
//!
//! What a guard learned may also shape the admitted call's response
//! ([`Guard::admitted`]): the rate limit adds its `x-ratelimit-*` headers.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{Request, Response};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::{context::RequestContext, error::ApiError};

/// A check made before the handler runs.
pub trait Guard: Send + Sync + 'static {
    /// What a passed check hands to [`Guard::admitted`].
    type Pass: Send + 'static;

    /// Inspects (and may enrich) the request; an error refuses the call.
    fn check(&self, request: &mut Request<Body>) -> impl Future<Output = Result<Self::Pass, ApiError>> + Send;

    /// Adjusts the response of a call this guard let through, knowing what
    /// its handler (everything below the guards) did.
    fn admitted(&self, _pass: Self::Pass, _response: &mut Response<Body>, _handled: Handled) {}
}

/// Two guards run in order as one (one layer, one boxed future per call):
/// the second runs only if the first passed.
impl<A: Guard, B: Guard> Guard for (A, B) {
    type Pass = (A::Pass, B::Pass);

    async fn check(&self, request: &mut Request<Body>) -> Result<Self::Pass, ApiError> {
        let first = self.0.check(request).await?;
        Ok((first, self.1.check(request).await?))
    }

    fn admitted(&self, (first, second): Self::Pass, response: &mut Response<Body>, handled: Handled) {
        self.1.admitted(second, response, handled);
        self.0.admitted(first, response, handled);
    }
}

/// A shared guard (one instance for both doors, or with state of its own).
impl<G: Guard> Guard for std::sync::Arc<G> {
    type Pass = G::Pass;

    async fn check(&self, request: &mut Request<Body>) -> Result<Self::Pass, ApiError> {
        G::check(self, request).await
    }

    fn admitted(&self, pass: Self::Pass, response: &mut Response<Body>, handled: Handled) {
        G::admitted(self, pass, response, handled);
    }
}

/// What the handler of an admitted call did.
#[derive(Debug, Clone, Copy)]
pub struct Handled {
    /// How long it took to answer (to the response's headers).
    pub time: Duration,
    /// Whether it took a connection from the database pool.
    pub used_database: bool,
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

/// The most of a refused request's body [`drain`] reads.
const DRAIN_BYTES: usize = 64 * 1024;
/// The longest [`drain`] waits for it.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// Reads what a refused call's client is still sending (a unary request's
/// message, usually already here), bounded in bytes and time, before the
/// refusal is answered. Answering first leaves the message's DATA frame to
/// arrive on a stream nobody reads, and h2 counts such small frames against
/// the connection's framing budget without giving it back: a few hundred
/// refusals during a flood made it close the whole connection (GOAWAY
/// ENHANCE_YOUR_CALM, `too_many_data_frames`), failing the client's calls
/// that were being served.
async fn drain(body: Body) {
    use http_body_util::BodyExt;
    let read = async {
        let mut body = body;
        let mut bytes = 0;
        while let Some(Ok(frame)) = body.frame().await {
            bytes += frame.data_ref().map_or(0, |data| data.len());
            if bytes > DRAIN_BYTES {
                break;
            }
        }
    };
    drop(tokio::time::timeout(DRAIN_WAIT, read).await);
}

/// Runs a [`Guard`] in front of the inner service. The guard is shared, so
/// the per-call clones tower makes of the service cost one reference count.
pub struct GuardLayer<G> {
    guard: Arc<G>,
}

impl<G> Clone for GuardLayer<G> {
    fn clone(&self) -> Self {
        GuardLayer { guard: self.guard.clone() }
    }
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
pub struct Guarded<G, S> {
    guard: Arc<G>,
    inner: S,
}

impl<G, S: Clone> Clone for Guarded<G, S> {
    fn clone(&self) -> Self {
        Guarded { guard: self.guard.clone(), inner: self.inner.clone() }
    }
}

impl<G, S> Service<Request<Body>> for Guarded<G, S>
where
    G: Guard,
    S: Service<Request<Body>, Response = Response<Body>, Error = ApiError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, ApiError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ApiError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let guard = self.guard.clone();
        // The clone is not ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let pass = match guard.check(&mut request).await {
                Ok(pass) => pass,
                Err(error) => {
                    drain(request.into_body()).await;
                    return Err(error);
                }
            };
            let started = Instant::now();
            let (response, used_database) = crate::db::tracking_use(inner.call(request)).await;
            let mut response = response?;
            guard.admitted(pass, &mut response, Handled { time: started.elapsed(), used_database });
            Ok(response)
        })
    }
}
