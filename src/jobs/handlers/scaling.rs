//! `tenantry.scaling.evaluate` (platform-level, periodic): evaluates the
//! scaling policy of every active tenant that is due (its last evaluation is
//! older than its `evaluation_interval`) and has something to decide (a
//! policy, recent activity, or replicas above its floor; see
//! `scaling::store::tenants_due`), a few tenants at a time, storing the
//! decisions that change something. At most every ten minutes a run also
//! prunes decisions older than `--scaling-decision-retention`. The jobs are
//! platform-level so they never show up in, or count against, a tenant's own
//! jobs; each tenant's evaluation locks its state row, so overlapping runs
//! never evaluate a tenant twice. Every evaluation is counted in
//! `tenantry_scaling_decisions_total` by direction and limiting rule.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{sync::Semaphore, task::JoinSet};

use super::{Handler, HandlerError, HandlerFuture, JobContext};
use crate::{
    metrics::{Metrics, ScalingDirection},
    scaling::store,
};

/// Tenants evaluated per run at most; the next run continues.
const MAX_TENANTS: i64 = 10_000;
/// Evaluations running at once.
const CONCURRENCY: usize = 8;

/// How often decisions are pruned (by whichever run comes first).
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Decisions deleted per statement; the next prune continues.
const PRUNE_BATCH: i64 = 10_000;

/// See the module docs.
pub struct EvaluateScaling {
    /// How long decisions are kept.
    retention: Duration,
    /// When this process last pruned.
    pruned: Mutex<Option<Instant>>,
    /// Where evaluations are counted (none in tests that build a bare registry).
    metrics: Option<Metrics>,
}

impl EvaluateScaling {
    /// Keeps decisions for `retention` (each tenant's newest always).
    pub fn new(retention: Duration) -> Self {
        EvaluateScaling { retention, pruned: Mutex::new(None), metrics: None }
    }

    /// Counts every evaluation in `metrics`.
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        EvaluateScaling { metrics: Some(metrics), ..self }
    }

    /// Whether this run should prune (and notes that it does).
    fn prune_now(&self) -> bool {
        let mut pruned = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
        if pruned.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
            return false;
        }
        *pruned = Some(Instant::now());
        true
    }
}

impl Default for EvaluateScaling {
    /// Seven days, the `--scaling-decision-retention` default.
    fn default() -> Self {
        EvaluateScaling::new(Duration::from_secs(7 * 24 * 3600))
    }
}

impl Handler for EvaluateScaling {
    fn run(&self, job: JobContext) -> HandlerFuture {
        let prune = self.prune_now().then_some(self.retention);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let mut pruned = 0;
            if let Some(retention) = prune {
                match store::prune_decisions(&job.pool, retention, PRUNE_BATCH).await {
                    Ok(deleted) => pruned = deleted,
                    Err(error) => tracing::warn!(%error, "pruning scaling decisions failed"),
                }
            }
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
                let (pool, metrics) = (job.pool.clone(), metrics.clone());
                evaluations.spawn(async move {
                    let _permit = permit;
                    match store::evaluate(&pool, &tenant).await {
                        Ok(evaluation) => {
                            let decided = evaluation.decision();
                            if let (Some(metrics), Some(decision)) = (&metrics, decided) {
                                let direction = match decision.desired.cmp(&decision.current) {
                                    std::cmp::Ordering::Greater => ScalingDirection::Up,
                                    std::cmp::Ordering::Less => ScalingDirection::Down,
                                    std::cmp::Ordering::Equal => ScalingDirection::Hold,
                                };
                                metrics.record_scaling_decision(direction, decision.limiting_rule);
                            }
                            decided.is_some()
                        }
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
            Ok(serde_json::json!({ "due": count, "evaluated": evaluated, "pruned": pruned }))
        })
    }
}
