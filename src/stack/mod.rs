//! The one tower stack every call passes through, gRPC, gRPC-Web and REST
//! alike, assembled in [`wrap`] and read top to bottom: the first layer is
//! the outermost. Layers below the rescue return errors as values
//! ([`ApiError`](crate::error::ApiError), or tower's own errors); only the
//! rescue renders them.
//!
//! # Layout
//!
//! - [`observe`]: request id, tracing span, method lookup, one log line and
//!   the metrics of every call.
//! - [`rescue`]: the call's deadline, and the one place errors become responses.
//! - [`guard`]: the mechanism the checks share.
//! - [`admission`]: how many database-bound calls run at once (adaptive, fair).
//! - [`protocol`]: the gRPC envelope (method, content type, metadata size, framing).
//! - [`authenticate`], [`tenant`], [`rate_limit`], [`authorize`]: the checks.
//! - [`auth_failures`]: counts the authenticate guard's refusals by reason.
//! - [`meter`]: per-tenant usage of every call (count, time, bytes).

pub mod admission;
pub mod auth_failures;
pub mod authenticate;
pub mod authorize;
pub mod guard;
pub mod meter;
pub mod observe;
pub mod protocol;
pub mod rate_limit;
pub mod rescue;
pub mod tenant;

use std::convert::Infallible;

use http::{Request, Response};
use tonic::body::Body;
use tower::{
    Service, ServiceBuilder, limit::GlobalConcurrencyLimitLayer, load_shed::LoadShedLayer, util::BoxCloneSyncService,
};

use self::{
    auth_failures::CountAuthFailures, authenticate::Authenticate, authorize::Authorize, guard::GuardLayer,
    meter::Metering, observe::ObserveLayer, protocol::Protocol, rate_limit::RateLimit, rescue::RescueLayer,
    tenant::TenantContext,
};
use crate::{error::ApiError, state::AppState};

/// The layered routes, as one cloneable service (what both listeners and
/// the in-process gateway call).
pub type StackService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// Wraps `routes` in the stack, with the handles and settings of `state`.
pub fn wrap<S>(state: &AppState, routes: S) -> StackService
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let metrics = state.metrics.clone();
    let service = ServiceBuilder::new()
        // First, so every call, refused or not, is logged and counted with a
        // request id, a method and a latency, and carries a context.
        .layer(ObserveLayer::new(
            state.policies.clone(),
            state.config.max_deadline,
            state.config.max_message_bytes,
            metrics.clone(),
        ))
        // Directly inside observe, so observe sees every refusal as the
        // response the client gets: errors below travel up to here as values.
        .layer(RescueLayer)
        // A ceiling on calls in flight in this process (memory), shed at once
        // rather than queued: a queue only adds latency to calls whose clients
        // will have given up. tower's own layers; their errors are rescued.
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(state.in_flight.clone()))
        // The checks, in order, as one layer (a tuple of guards runs them in
        // sequence at the cost of one boxed future per call):
        .layer(GuardLayer::new((
            (
                // the gRPC envelope (nothing is looked up for a call that is not one),
                Protocol::new(state.config.max_metadata_bytes),
                // who is calling, then which tenant the call acts in (the
                // tenant needs the principal; everything after needs both),
                (
                    CountAuthFailures::new(Authenticate::new(state.authenticator.clone()), metrics.clone()),
                    TenantContext::new(state.tenants.clone()),
                ),
            ),
            (
                // metering as soon as the tenant is known, so calls refused
                // after it are metered too,
                Metering::new(state.meter.clone()),
                // admission control as soon as the tenant is known (fair
                // shares need it): a shed call costs no rate-limit decision
                // (a Redis round trip with the Redis engine) and uses none of
                // the tenant's budget; then per-tenant limits before
                // authorization, so refused calls count against the tenant
                // too; then the declared policy.
                (
                    state.admission.clone(),
                    (
                        RateLimit::new(state.limiter.clone(), state.plans.clone(), state.quotas.clone(), metrics),
                        Authorize,
                    ),
                ),
            ),
        )))
        .map_err(|never: Infallible| -> ApiError { match never {} })
        .service(routes);
    BoxCloneSyncService::new(service)
}
