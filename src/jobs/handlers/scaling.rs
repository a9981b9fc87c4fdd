//! `tenantry.scaling.evaluate` (platform-level, periodic): evaluates the
//! scaling policy of every active tenant that is due (its last evaluation is
//! older than its `evaluation_interval`), a few tenants at a time, storing
//! each decision. The jobs are platform-level so they never show up in, or
//! count against, a tenant's own jobs; each tenant's evaluation locks its
//! state row, so overlapping runs never evaluate a tenant twice.

use std::sync::Arc;

use tokio::{sync::Semaphore, task::JoinSet};

use super::{Handler, HandlerError, HandlerFuture, JobContext};
use crate::scaling::store;

/// Tenants evaluated per run at most; the next run continues.
const MAX_TENANTS: i64 = 10_000;
/// Evaluations running at once.
const CONCURRENCY: usize = 8;

/// See the module docs.
pub struct EvaluateScaling;

impl Handler for EvaluateScaling {
    fn run(&self, job: JobContext) -> HandlerFuture {
        Box::pin(async move {
            let due = store::tenants_due(&job.pool, MAX_TENANTS)
                .await
                .map_err(|error| HandlerError::retry(format!("listing tenants due failed: {error}")))?;
            let permits = Arc::new(Semaphore::new(CONCURRENCY));
            let mut evaluations = JoinSet::new();
            let count = due.len();
            for tenant in due {
                if job.cancel.is_cancelled() {
                    break;
                }
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                let pool = job.pool.clone();
                evaluations.spawn(async move {
                    let _permit = permit;
                    match store::evaluate(&pool, &tenant).await {
                        Ok(decision) => decision.is_some(),
                        Err(error) => {
                            tracing::warn!(%error, tenant = %tenant, "scaling evaluation failed");
                            false
                        }
                    }
                });
            }
            let mut evaluated = 0;
            while let Some(outcome) = evaluations.join_next().await {
                evaluated += usize::from(outcome.unwrap_or(false));
            }
            Ok(serde_json::json!({ "due": count, "evaluated": evaluated }))
        })
    }
}
