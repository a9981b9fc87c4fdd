//! Housekeeping every serving process runs, whether or not it runs
//! built-in workers ([`run`], the supervisor's `job-housekeeping` task): the
//! rescuer, which fails the attempts whose lease expired (their worker
//! crashed, hung or lost its connection), the queue's depth and lag for
//! metrics, and retention pruning of finished jobs. All work in bounded
//! batches with `SKIP LOCKED`, so running them on every node is safe.
//!
//! A rescued attempt is fenced off: the job is no longer RUNNING at that
//! attempt, so the stale worker's heartbeat, completion and failure are
//! refused as a lost lease ([`super::lease`]).

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{
    model::{JobError, failure_assignments},
    worker::WorkerConfig,
};
use crate::metrics::Metrics;

/// The rescuer and queue metrics every `--worker-rescue-interval`, retention
/// pruning every minute, until `stop`.
pub async fn run(pool: PgPool, config: WorkerConfig, metrics: Metrics, stop: CancellationToken) {
    let mut tick = tokio::time::interval(config.rescue_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = tokio::time::Instant::now();
    let retention = Retention { completed: config.retention_completed, failed: config.retention_failed };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match rescue_expired(&pool).await {
            Ok(kinds) => kinds.iter().for_each(|kind| metrics.record_lease_rescued(kind)),
            Err(error) => tracing::warn!(%error, "rescuing expired leases failed"),
        }
        match queue_stats(&pool).await {
            Ok(stats) => {
                for (state, depth, oldest) in stats {
                    metrics.set_job_queue(state, depth, oldest);
                }
            }
            Err(error) => tracing::warn!(%error, "measuring the job queue failed"),
        }
        if last_prune.elapsed() >= Duration::from_secs(60) {
            last_prune = tokio::time::Instant::now();
            match prune(&pool, retention).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned finished jobs past retention"),
                Err(error) => tracing::warn!(%error, "pruning finished jobs failed"),
            }
        }
    }
}

/// Rows touched per statement.
const BATCH: i64 = 1000;

/// Fails up to a batch of attempts whose lease expired, with the same
/// retry/discard/cancel rules as FailJob; returns the rescued jobs' kinds
/// (one entry per job).
pub async fn rescue_expired(pool: &PgPool) -> Result<Vec<String>, JobError> {
    let message = "CASE WHEN now() >= j.started_at + j.timeout_ms * interval '1 millisecond' \
                   THEN 'timed out after ' || (j.timeout_ms / 1000) || 's' ELSE 'lease expired' END";
    let kinds: Vec<String> = sqlx::query_scalar(&format!(
        "UPDATE platform.jobs j SET {}
           FROM (SELECT id FROM platform.jobs
                  WHERE state = 'running' AND lease_expires_at < now()
                  ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) x
          WHERE j.id = x.id AND j.state = 'running'
          RETURNING j.kind",
        failure_assignments(message, "false", "NULL")
    ))
    .bind(BATCH)
    .fetch_all(pool)
    .await?;
    if !kinds.is_empty() {
        tracing::warn!(rescued = kinds.len(), "failed job attempts whose lease expired");
    }
    Ok(kinds)
}

/// How long finished jobs are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Completed jobs.
    pub completed: Duration,
    /// Cancelled and discarded jobs (kept longer, for their error history).
    pub failed: Duration,
}

/// Deletes up to a batch of finished jobs past their retention; returns how many.
pub async fn prune(pool: &PgPool, retention: Retention) -> Result<u64, JobError> {
    let pruned = sqlx::query(
        "DELETE FROM platform.jobs WHERE id IN (
            SELECT id FROM platform.jobs
             WHERE state IN ('completed', 'cancelled', 'discarded')
               AND finished_at < now() - CASE WHEN state = 'completed' THEN $1 ELSE $2 END * interval '1 millisecond'
             LIMIT $3 FOR UPDATE SKIP LOCKED)",
    )
    .bind(retention.completed.as_millis() as i64)
    .bind(retention.failed.as_millis() as i64)
    .bind(BATCH)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(pruned)
}

/// Depth and age of the oldest job per state, for metrics: `ready` (due,
/// not leased: its age is the queue's lag), `scheduled` (not yet due) and
/// `running` (age since the attempt started).
pub async fn queue_stats(pool: &PgPool) -> Result<Vec<(&'static str, i64, Duration)>, JobError> {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT s.state, count(j.id), COALESCE(extract(epoch FROM now() - min(j.since)), 0)::float8
           FROM (VALUES ('ready'), ('scheduled'), ('running')) AS s(state)
           LEFT JOIN (
               SELECT id,
                      CASE WHEN state = 'running' THEN 'running'
                           WHEN run_at <= now() THEN 'ready' ELSE 'scheduled' END AS bucket,
                      CASE WHEN state = 'running' THEN started_at WHEN run_at <= now() THEN run_at ELSE now() END AS since
                 FROM platform.jobs
                WHERE state IN ('scheduled', 'available', 'retryable', 'running')) j ON j.bucket = s.state
          GROUP BY s.state",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(state, depth, age)| {
            let state = match state.as_str() {
                "ready" => "ready",
                "scheduled" => "scheduled",
                _ => "running",
            };
            (state, depth, Duration::from_secs_f64(age.max(0.0)))
        })
        .collect())
}
