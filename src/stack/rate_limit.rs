//! The rate-limit guard: per-tenant limits from the tenant's plan. It sits
//! after tenant context (limits are per tenant) and before authorize (so
//! refused calls cost too). In order it checks the plan's monthly request
//! quota (from memory), then takes the method's cost (`rate_cost`) from the
//! tenant's bucket. Admitted calls carry `x-ratelimit-*` headers; refused
//! ones are RESOURCE_EXHAUSTED with RetryInfo, a QuotaFailure naming the
//! limit, and `retry-after`.

use chrono::Utc;
use http::{Request, Response};
use tonic::body::Body;

use super::guard::{Guard, context};
use crate::{
    error::{ApiError, QuotaViolation},
    metrics::{Metrics, Quota},
    policy::MethodPolicy,
    ratelimit::{PlanBook, QuotaBook, RateHeaders, RateLimiter, quota::month_bounds},
    tenancy::TenantId,
};

/// See the module docs.
pub struct RateLimit {
    limiter: RateLimiter,
    plans: PlanBook,
    quotas: QuotaBook,
    metrics: Metrics,
}

impl RateLimit {
    /// Enforces `plans` limits with `limiter` and quotas from `quotas`.
    pub fn new(limiter: RateLimiter, plans: PlanBook, quotas: QuotaBook, metrics: Metrics) -> Self {
        RateLimit { limiter, plans, quotas, metrics }
    }
}

impl Guard for RateLimit {
    type Pass = Option<RateHeaders>;

    async fn check(&self, request: &mut Request<Body>) -> Result<Option<RateHeaders>, ApiError> {
        let context = context(request)?;
        match context.tenant_if_any() {
            Some(tenant) => self.admit(&tenant.id, &context.method).await,
            None => Ok(None),
        }
    }

    fn admitted(&self, headers: Option<RateHeaders>, response: &mut Response<Body>, _: super::guard::Handled) {
        if let Some(headers) = headers {
            headers.write_headers(response.headers_mut());
        }
    }
}

impl RateLimit {
    /// Decides whether the call may go on; `Some` headers when it is limited.
    async fn admit(&self, tenant: &TenantId, method: &MethodPolicy) -> Result<Option<RateHeaders>, ApiError> {
        let Some(limits) = self.plans.limits(tenant).await? else {
            return Ok(None);
        };
        if limits.monthly_request_quota > 0 {
            let used = self.quotas.used(tenant).await?;
            if used >= limits.monthly_request_quota {
                self.metrics.record_quota_refusal(Quota::MonthlyRequests);
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
            rate: Some(Box::new(decision.headers)),
        })
    }
}
