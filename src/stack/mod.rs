//! The one tower stack every call passes through, gRPC and (later) REST
//! alike, assembled here and read top to bottom: the first layer is the
//! outermost.
//!
//! # Layout
//!
//! - [`observe`]: request id, tracing span, method lookup, one log line per call.
//! - [`meter`]: per-tenant usage of every call (count, handler time, bytes).
//! - [`limits`]: load shedding and the call's deadline.
//! - [`guard`]: the mechanism the remaining checks share.
//! - [`authenticate`], [`tenant`], [`rate_limit`], [`authorize`]: the checks.
//! - [`auth_failures`]: counts the authenticate guard's refusals by reason.

pub mod auth_failures;
pub mod authenticate;
pub mod authorize;
pub mod guard;
pub mod limits;
pub mod meter;
pub mod observe;
pub mod rate_limit;
pub mod tenant;

use std::{collections::HashSet, sync::Arc, time::Duration};

use tower::{
    ServiceBuilder,
    layer::util::{Identity, Stack},
};

use self::{
    auth_failures::CountAuthFailures, authenticate::Authenticate, authorize::Authorize, guard::GuardLayer,
    limits::LimitsLayer, meter::MeterLayer, observe::ObserveLayer, rate_limit::RateLimitLayer, tenant::TenantContext,
};
use crate::{
    identity::Authenticator,
    metrics::Metrics,
    policy::PolicyTable,
    ratelimit::{PlanBook, QuotaBook, RateLimiter},
    tenancy::TenantDirectory,
    usage::meter::Meter,
};

/// What the stack's layers need, as cheap-clone handles.
#[derive(Clone)]
pub struct StackState {
    /// Every method's policy.
    pub policies: Arc<PolicyTable>,
    /// Services this server serves; other contract methods answer UNIMPLEMENTED.
    pub mounted: Arc<HashSet<String>>,
    /// Verifies access tokens, tenant API keys and platform-admin keys.
    pub authenticator: Authenticator,
    /// Resolves tenants for the tenant context.
    pub tenants: TenantDirectory,
    /// Calls in flight before shedding.
    pub max_in_flight: usize,
    /// Ceiling on every call's deadline.
    pub max_deadline: Duration,
    /// The server's metrics (calls, auth failures; rate-limit decisions).
    pub metrics: Metrics,
    /// Per-tenant rate limits (in process or in Redis).
    pub limiter: RateLimiter,
    /// Tenant → plan limits.
    pub plans: PlanBook,
    /// Monthly request counts, in memory.
    pub quotas: QuotaBook,
    /// Per-tenant usage of every call.
    pub meter: Meter,
}

/// The stack's layers, outermost first.
pub type Layers = Stack<
    GuardLayer<Authorize>,
    Stack<
        RateLimitLayer,
        Stack<
            GuardLayer<TenantContext>,
            Stack<
                GuardLayer<CountAuthFailures<Authenticate>>,
                Stack<LimitsLayer, Stack<MeterLayer, Stack<ObserveLayer, Identity>>>,
            >,
        >,
    >,
>;

/// Builds the stack. Apply it to the gRPC routes for the network server and
/// to the same routes for the in-process REST gateway: one stack, two doors.
pub fn layers(state: StackState) -> ServiceBuilder<Layers> {
    ServiceBuilder::new()
        // First, so every later refusal is logged with a request id, a method and a latency.
        .layer(ObserveLayer::new(state.policies.clone(), state.max_deadline, state.metrics.clone()))
        // Before the limits and checks, so calls they refuse are metered too once a tenant is known.
        .layer(MeterLayer::new(state.meter))
        // Before any work: shed when overloaded, and bound the call by its deadline.
        .layer(LimitsLayer::new(state.max_in_flight))
        // Who is calling; everything below depends on it.
        .layer(GuardLayer::new(CountAuthFailures::new(Authenticate::new(state.authenticator), state.metrics.clone())))
        // Which tenant the call acts in: needs the principal, feeds limits and authorization.
        .layer(GuardLayer::new(TenantContext::new(state.tenants)))
        // Per-tenant limits: after the tenant is known, before authorization so refused calls count.
        .layer(RateLimitLayer::new(state.limiter, state.plans, state.quotas))
        // Last: the declared policy against principal and tenant, then the handler.
        .layer(GuardLayer::new(Authorize::new(state.mounted)))
}
