//! The UsageService gRPC handlers: validate, call the domain, map errors.
//! Every method acts in the tenant of the call, which the stack resolved.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use super::{
    events,
    query::{self, Granularity, MAX_BUCKETS},
};
use crate::{
    context,
    error::ApiError,
    proto::tenantry::v1::{self as pb, usage_service_server::UsageService},
    ratelimit::{PlanBook, QuotaBook, RateLimiter, quota::month_bounds},
};

/// See the module docs.
#[derive(Clone)]
pub struct UsageApi {
    pool: PgPool,
    plans: PlanBook,
    quotas: QuotaBook,
    limiter: RateLimiter,
}

impl UsageApi {
    /// Handlers over the database, the plan cache, the quota counts and
    /// the rate limiter (which GetQuota asks for the rate state).
    pub fn new(pool: PgPool, plans: PlanBook, quotas: QuotaBook, limiter: RateLimiter) -> Self {
        UsageApi { pool, plans, quotas, limiter }
    }
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::from(at))
}

#[tonic::async_trait]
impl UsageService for UsageApi {
    async fn record_usage(
        &self,
        request: Request<pb::RecordUsageRequest>,
    ) -> Result<Response<pb::RecordUsageResponse>, Status> {
        let ctx = context::of(&request)?;
        let (tenant, deadline) = (ctx.tenant()?.id.clone(), ctx.deadline);
        let events = events::validate(request.into_inner().events, Utc::now())?;
        let recorded = events::record(&self.pool, &tenant, deadline, events).await?;
        Ok(Response::new(pb::RecordUsageResponse {
            accepted_count: recorded.accepted as i32,
            duplicate_count: recorded.duplicates as i32,
        }))
    }

    async fn get_usage(&self, request: Request<pb::GetUsageRequest>) -> Result<Response<pb::GetUsageResponse>, Status> {
        let tenant = context::of(&request)?.tenant()?.id.clone();
        let request = request.into_inner();
        let (granularity, reported) = match pb::Granularity::try_from(request.granularity) {
            Ok(pb::Granularity::Minute) => (Granularity::Minute, pb::Granularity::Minute),
            Ok(pb::Granularity::Hour) => (Granularity::Hour, pb::Granularity::Hour),
            Ok(pb::Granularity::Day | pb::Granularity::Unspecified) => (Granularity::Day, pb::Granularity::Day),
            Ok(pb::Granularity::Month) => (Granularity::Month, pb::Granularity::Month),
            Err(_) => return Err(ApiError::invalid("granularity", "is not a known granularity").into()),
        };
        let start = request.start_time.as_ref().ok_or_else(|| ApiError::invalid("start_time", "is required"))?;
        let start = granularity.truncate(events::timestamp("start_time", start)?);
        let end = match &request.end_time {
            Some(end) => events::timestamp("end_time", end)?,
            None => Utc::now(),
        };
        if end <= start {
            return Err(ApiError::invalid("end_time", "must be after start_time").into());
        }
        if granularity.buckets(start, end) > MAX_BUCKETS {
            return Err(ApiError::invalid(
                "start_time",
                format!("the range spans more than {MAX_BUCKETS} buckets; narrow it or use a coarser granularity"),
            )
            .into());
        }
        for (i, metric) in request.metrics.iter().enumerate() {
            if !events::is_metric_name(metric) {
                return Err(ApiError::invalid(format!("metrics[{i}]"), "is not a metric name").into());
            }
        }
        let series = query::usage(&self.pool, &tenant, &request.metrics, start, end, granularity)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetUsageResponse {
            series: series
                .into_iter()
                .map(|s| pb::UsageSeries {
                    total: s.buckets.iter().map(|(_, v)| v).sum(),
                    metric: s.metric,
                    buckets: s
                        .buckets
                        .into_iter()
                        .map(|(at, value)| pb::UsageBucket { start_time: Some(timestamp(at)), value })
                        .collect(),
                })
                .collect(),
            granularity: reported as i32,
        }))
    }

    async fn get_quota(&self, request: Request<pb::GetQuotaRequest>) -> Result<Response<pb::GetQuotaResponse>, Status> {
        let tenant = context::of(&request)?.tenant()?.id.clone();
        let limits = self
            .plans
            .limits(&tenant)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound { resource: format!("tenant {tenant}") })?;
        let rate = self.limiter.state(&tenant, &limits);
        let now = Utc::now();
        let (period_start, period_end) = month_bounds(now);
        let used = self.quotas.used(&tenant).await.map_err(ApiError::from)?;
        let quota = limits.monthly_request_quota;
        let requests = pb::QuotaUsage {
            metric: crate::usage::meter::metrics::REQUESTS.to_owned(),
            limit: quota,
            used,
            remaining: if quota == 0 { 0 } else { quota.saturating_sub(used) },
            unlimited: quota == 0,
        };
        let rate_limit = pb::RateLimitState {
            requests_per_second: limits.requests_per_second,
            burst: if limits.requests_per_second == 0 { limits.burst } else { limits.bucket() },
            remaining: rate.map_or(limits.bucket(), |r| u32::try_from(r.remaining).unwrap_or(u32::MAX)),
            reset_time: Some(timestamp(
                now + rate.map_or(chrono::Duration::zero(), |r| {
                    chrono::Duration::from_std(r.reset).unwrap_or(chrono::Duration::zero())
                }),
            )),
        };
        Ok(Response::new(pb::GetQuotaResponse {
            plan_id: limits.plan_id.clone(),
            period_start_time: Some(timestamp(period_start)),
            period_end_time: Some(timestamp(period_end)),
            quotas: vec![requests],
            rate_limit: Some(rate_limit),
        }))
    }
}
