//! Scaling evaluation as jobs. `tenantry.scaling.schedule` (platform-level,
//! periodic) enqueues one `tenantry.scaling.evaluate` job per active tenant
//! whose policy is due, each in that tenant's name and unique per tenant and
//! period, so the evaluations spread over the workers under the tenants'
//! job caps. `tenantry.scaling.evaluate` evaluates the tenant of its row.

use std::time::Duration;

use chrono::Utc;

use super::{Handler, HandlerError, HandlerFuture, JobContext, SCALING_EVALUATE};
use crate::{
    jobs::{BUILTIN_QUEUE, queue},
    scaling::store,
};

/// Tenants scheduled per run at most.
const MAX_TENANTS: i64 = 10_000;

/// See the module docs.
pub struct ScheduleEvaluations;

impl Handler for ScheduleEvaluations {
    fn run(&self, job: JobContext) -> HandlerFuture {
        Box::pin(async move {
            let due = store::tenants_due(&job.pool, MAX_TENANTS)
                .await
                .map_err(|error| HandlerError::retry(format!("listing tenants due failed: {error}")))?;
            let period = Utc::now().timestamp() / 5;
            let mut tx = job.pool.begin().await.map_err(|e| HandlerError::retry(e.to_string()))?;
            let mut enqueued = 0;
            for tenant in &due {
                let mut new = queue::NewJob::new(Some(tenant.clone()), SCALING_EVALUATE);
                new.queue = BUILTIN_QUEUE.to_owned();
                new.unique_key = Some(format!("scaling:{period}"));
                new.max_attempts = 1;
                new.timeout = Duration::from_secs(60);
                let outcome = queue::enqueue(&mut tx, new)
                    .await
                    .map_err(|e| HandlerError::retry(format!("enqueue failed: {e}")))?;
                enqueued += usize::from(!outcome.duplicate);
            }
            tx.commit().await.map_err(|e| HandlerError::retry(e.to_string()))?;
            Ok(serde_json::json!({ "due": due.len(), "enqueued": enqueued }))
        })
    }
}

/// See the module docs.
pub struct Evaluate;

impl Handler for Evaluate {
    fn run(&self, job: JobContext) -> HandlerFuture {
        Box::pin(async move {
            let tenant =
                job.job.tenant().ok_or_else(|| HandlerError::discard("a scaling evaluation needs a tenant"))?;
            let decision = store::evaluate(&job.pool, &tenant)
                .await
                .map_err(|error| HandlerError::retry(format!("evaluation failed: {error}")))?;
            Ok(match decision {
                None => serde_json::json!({ "skipped": "evaluated recently" }),
                Some(stored) => serde_json::json!({
                    "decision_id": stored.id,
                    "current_replicas": stored.decision.current,
                    "desired_replicas": stored.decision.desired,
                }),
            })
        })
    }
}
