//! The rate-limit layer: per-tenant limits from the tenant's plan. It sits
//! after tenant context (limits are per tenant) and before authorize (so
//! refused calls cost too). In order it checks the plan's monthly request
//! quota (from memory), then takes the method's cost (`rate_cost`) from the
//! tenant's bucket. Admitted calls carry `x-ratelimit-*` headers; refused
//! ones are RESOURCE_EXHAUSTED with RetryInfo, a QuotaFailure naming the
//! limit, and `retry-after`. It also tells the meter the call's tenant and
//! times the handler for it.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::Instant,
};

use chrono::Utc;
use http::{Request, Response};
use tonic::body::Body;
use tower::{Layer, Service};

use super::{
    guard::{context, reject},
    meter::MeterSlot,
};
use crate::{
    error::{ApiError, QuotaViolation},
    policy::MethodPolicy,
    ratelimit::{PlanBook, QuotaBook, RateHeaders, RateLimiter, quota::month_bounds},
    tenancy::TenantId,
};

/// Builds [`RateLimit`].
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    plans: PlanBook,
    quotas: QuotaBook,
}

impl RateLimitLayer {
    /// A layer enforcing `plans` limits with `limiter` and quotas from `quotas`.
    pub fn new(limiter: RateLimiter, plans: PlanBook, quotas: QuotaBook) -> Self {
        RateLimitLayer { limiter, plans, quotas }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner, limits: Arc::new(self.clone()) }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limits: Arc<RateLimitLayer>,
}

impl RateLimitLayer {
    /// Decides whether the call may go on; `Some` headers when it is limited.
    async fn admit(&self, tenant: &TenantId, method: &MethodPolicy) -> Result<Option<RateHeaders>, ApiError> {
        let Some(limits) = self.plans.limits(tenant).await.map_err(ApiError::from)? else {
            return Ok(None);
        };
        if limits.monthly_request_quota > 0 {
            let used = self.quotas.used(tenant).await.map_err(ApiError::from)?;
            if used >= limits.monthly_request_quota {
                self.limiter.count_quota_exhausted();
                let now = Utc::now();
                let (_, period_end) = month_bounds(now);
                let retry_after = (period_end - now).to_std().ok();
                return Err(ApiError::ResourceExhausted {
                    message: format!(
                        "monthly request quota of {} requests of plan `{}` is used up until {}",
                        limits.monthly_request_quota,
                        limits.plan_id,
                        period_end.to_rfc3339()
                    ),
                    retry_after,
                    violation: Some(QuotaViolation {
                        subject: format!("tenants/{tenant}/monthly_request_quota"),
                        description: format!(
                            "monthly_request_quota: {} requests per UTC month",
                            limits.monthly_request_quota
                        ),
                    }),
                    rate: None,
                });
            }
        }
        let Some(decision) = self.limiter.check(tenant, &limits, method.rate_cost, &method.path).await else {
            return Ok(None);
        };
        if decision.allowed {
            return Ok(Some(decision.headers));
        }
        Err(ApiError::ResourceExhausted {
            message: format!(
                "rate limit of {} requests per second (burst {}) of plan `{}` exceeded; retry in {} ms",
                limits.requests_per_second,
                limits.bucket(),
                limits.plan_id,
                decision.retry_after.as_millis().max(1)
            ),
            retry_after: Some(decision.retry_after),
            violation: Some(QuotaViolation {
                subject: format!("tenants/{tenant}/requests_per_second"),
                description: format!(
                    "requests_per_second: {} with burst {}; this method costs {}",
                    limits.requests_per_second,
                    limits.bucket(),
                    method.rate_cost
                ),
            }),
            rate: Some(decision.headers),
        })
    }
}

impl<S> Service<Request<Body>> for RateLimit<S>
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
        let limits = self.limits.clone();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let slot = request.extensions().get::<Arc<MeterSlot>>().cloned();
            let (tenant, method) = match context(&request) {
                Ok(context) => (context.tenant_if_any().map(|t| t.id.clone()), context.method.clone()),
                Err(error) => return Ok(reject(error)),
            };
            if let (Some(slot), Some(tenant)) = (&slot, &tenant) {
                let _ = slot.tenant.set(tenant.clone());
            }
            let headers = match &tenant {
                Some(tenant) => match limits.admit(tenant, &method).await {
                    Ok(headers) => headers,
                    Err(error) => return Ok(reject(error)),
                },
                None => None,
            };
            if let Some(headers) = headers {
                // The handler may report the rate state (GetQuota).
                request.extensions_mut().insert(headers);
            }
            let started = Instant::now();
            let mut response = inner.call(request).await?;
            if let Some(slot) = &slot {
                slot.handler_nanos.store(started.elapsed().as_nanos() as u64, Ordering::Release);
            }
            if let Some(headers) = headers {
                headers.write_headers(response.headers_mut());
            }
            Ok(response)
        })
    }
}
