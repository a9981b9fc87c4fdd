//! The worker side of the queue: a fair batched fetch, heartbeats, and the
//! fenced completion, failure and release of leased jobs.
//!
//! # Due work only
//!
//! Jobs that are not due are never in the fetch's way. A job waiting for its
//! time (SCHEDULED, or RETRYABLE while backing off) is moved to AVAILABLE once
//! its `run_at` has come, by [`stage_due`], which every fetch runs first in
//! its own transaction, for its own queue (an index probe on `jobs_due` when
//! nothing is due) and which wakes the queue's workers when it staged some. So AVAILABLE means due, and the tenant scan
//! below reads only the `jobs_available` index: 10,000 tenants holding
//! nothing but future jobs cost the fetch nothing.
//!
//! # Fairness
//!
//! [`fetch`] then runs in one short transaction of two statements. The first
//! finds the tenants with available work in the queue (a skip scan over the
//! `jobs_available` index, one index probe per tenant however deep its
//! backlog), keeps those that are active and below their plan's
//! `max_concurrent_jobs` (so suspended or saturated tenants never take the
//! place of others), and takes a transaction-scoped advisory lock per tenant,
//! skipping tenants another fetcher is serving right now. The scan starts at
//! a random tenant id and wraps around, so when more than
//! `MAX_TENANTS_PER_FETCH` tenants are ready, every one of them is reached.
//! The second statement, with a fresh snapshot taken after those locks,
//! counts each locked tenant's running jobs against its cap (0: unlimited),
//! takes each tenant's next jobs (`FOR UPDATE SKIP LOCKED`) and interleaves
//! them round-robin: every tenant's first job comes before any tenant's
//! second. A tenant with a deep backlog therefore delays another tenant's
//! job by at most one batch, and the caps hold exactly even with many
//! fetchers. Platform-level jobs (no tenant) count as one more tenant
//! without a cap.
//!
//! # Fencing
//!
//! A lease is `(job id, attempt)`. Heartbeat, complete, fail and release all
//! require the job to still be RUNNING at that attempt, so a worker whose
//! lease expired and whose job was leased again changes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{
    model::{JOB_COLUMNS_J, Job, JobError, failure_assignments},
    queue::AVAILABLE_CHANNEL,
};
use crate::tenancy::TenantId;

/// Advisory-lock class of the per-tenant fetch lock (`'jobs'` in ASCII).
const FETCH_LOCK_CLASS: i32 = 0x6a6f_6273;
/// At most this many tenants are considered per fetch.
const MAX_TENANTS_PER_FETCH: i64 = 1000;
/// At most this many due jobs are made available per fetch.
const STAGE_BATCH: i64 = 5000;

/// What a worker asks for.
#[derive(Debug, Clone)]
pub struct FetchRequest<'a> {
    /// The queue.
    pub queue: &'a str,
    /// Kinds the worker runs; empty: any.
    pub kinds: &'a [String],
    /// Only this tenant's jobs; `None`: every tenant's.
    pub tenant: Option<&'a TenantId>,
    /// Largest batch.
    pub limit: usize,
    /// Lease length (capped by each job's timeout).
    pub lease: Duration,
    /// Recorded on the jobs.
    pub worker_id: &'a str,
}

/// Moves up to a batch of `queue`'s jobs whose time has come (SCHEDULED, or
/// RETRYABLE after their backoff) to AVAILABLE, and wakes the queue's workers
/// when this commits; returns how many. It runs first in the fetch's own
/// transaction, so an idle poll is one transaction (rolled back: it wrote
/// nothing) and what it stages is leased by the same fetch. Only the
/// fetch's own queue: a fetcher never holds another queue's due rows.
pub async fn stage_due(conn: &mut sqlx::PgConnection, queue: &str) -> Result<u64, JobError> {
    let staged: i64 = sqlx::query_scalar(&format!(
        "WITH staged AS (
            UPDATE platform.jobs j SET state = 'available'
              FROM (SELECT id FROM platform.jobs
                     WHERE state IN ('scheduled', 'retryable') AND run_at <= now() AND queue = $2
                     ORDER BY run_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
             WHERE j.id = due.id AND j.state IN ('scheduled', 'retryable')
             RETURNING j.queue),
         per_queue AS (SELECT queue, count(*) AS n FROM staged GROUP BY queue)
         SELECT COALESCE(sum(n), 0)::bigint FROM (SELECT n, pg_notify('{AVAILABLE_CHANNEL}', queue) FROM per_queue) woken"
    ))
    .bind(STAGE_BATCH)
    .bind(queue)
    .fetch_one(conn)
    .await?;
    Ok(staged as u64)
}

/// Leases up to `limit` due jobs fairly across tenants (see the module docs).
pub async fn fetch(pool: &PgPool, request: &FetchRequest<'_>) -> Result<Vec<Job>, JobError> {
    if request.limit == 0 {
        return Ok(Vec::new());
    }
    let mut tx = crate::db::begin(pool).await?;
    let staged = stage_due(&mut tx, request.queue).await?;
    // `None` stands for the platform-level jobs (no tenant).
    let tenants: Vec<Option<String>> = match request.tenant {
        Some(tenant) => {
            sqlx::query_scalar(
                "SELECT $2::text WHERE pg_try_advisory_xact_lock($1, hashtext($2))
                AND EXISTS (SELECT 1 FROM platform.jobs
                             WHERE queue = $3 AND tenant_id = $2 AND state = 'available')",
            )
            .bind(FETCH_LOCK_CLASS)
            .bind(tenant.as_str())
            .bind(request.queue)
            .fetch_all(&mut *tx)
            .await?
        }
        None => {
            // Two skip scans, from a random tenant id to the end and from the
            // start up to it; a CTE is read lazily, so the scan stops once
            // enough tenants are taken. The lock is taken last (a volatile
            // function is not pushed below the joins), only for tenants that
            // are active and have room.
            sqlx::query_scalar(
                "WITH RECURSIVE
                 after(tenant_id) AS (
                    (SELECT tenant_id FROM platform.jobs
                      WHERE queue = $2 AND state = 'available' AND tenant_id >= $4
                      ORDER BY tenant_id LIMIT 1)
                    UNION ALL
                    SELECT (SELECT j.tenant_id FROM platform.jobs j
                             WHERE j.queue = $2 AND j.state = 'available' AND j.tenant_id > a.tenant_id
                             ORDER BY j.tenant_id LIMIT 1)
                      FROM after a WHERE a.tenant_id IS NOT NULL),
                 before(tenant_id) AS (
                    (SELECT tenant_id FROM platform.jobs
                      WHERE queue = $2 AND state = 'available' AND tenant_id < $4
                      ORDER BY tenant_id LIMIT 1)
                    UNION ALL
                    SELECT (SELECT j.tenant_id FROM platform.jobs j
                             WHERE j.queue = $2 AND j.state = 'available'
                               AND j.tenant_id > b.tenant_id AND j.tenant_id < $4
                             ORDER BY j.tenant_id LIMIT 1)
                      FROM before b WHERE b.tenant_id IS NOT NULL),
                 ready(tenant_id) AS (
                    SELECT NULL::text
                     WHERE EXISTS (SELECT 1 FROM platform.jobs
                                    WHERE queue = $2 AND tenant_id IS NULL AND state = 'available')
                    UNION ALL
                    SELECT r.tenant_id
                      FROM (SELECT tenant_id FROM after WHERE tenant_id IS NOT NULL
                            UNION ALL
                            SELECT tenant_id FROM before WHERE tenant_id IS NOT NULL) r
                      JOIN platform.tenants t ON t.id = r.tenant_id
                      JOIN platform.plans p ON p.id = t.plan_id
                     WHERE t.state = 'active'
                       AND (p.max_concurrent_jobs = 0
                            OR p.max_concurrent_jobs > (SELECT count(*) FROM platform.jobs x
                                                         WHERE x.state = 'running' AND x.tenant_id = r.tenant_id)))
             SELECT tenant_id FROM ready
              WHERE pg_try_advisory_xact_lock($1, hashtext(COALESCE(tenant_id, '')))
              LIMIT $3",
            )
            .bind(FETCH_LOCK_CLASS)
            .bind(request.queue)
            .bind(MAX_TENANTS_PER_FETCH)
            .bind(crate::ids::new_id("ten"))
            .fetch_all(&mut *tx)
            .await?
        }
    };
    if tenants.is_empty() {
        // What was staged stays staged (its tenants may be busy or at their cap).
        if staged > 0 {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        return Ok(Vec::new());
    }
    let jobs: Vec<Job> = sqlx::query_as(&format!(
        "WITH cand AS (
            SELECT x.tenant_id,
                   CASE WHEN x.tenant_id IS NULL OR p.max_concurrent_jobs = 0 THEN $4::int
                        ELSE p.max_concurrent_jobs - (SELECT count(*) FROM platform.jobs r
                                                       WHERE r.state = 'running' AND r.tenant_id = x.tenant_id)::int
                   END AS room
              FROM unnest($1::text[]) AS x(tenant_id)
              LEFT JOIN platform.tenants t ON t.id = x.tenant_id
              LEFT JOIN platform.plans p ON p.id = t.plan_id
             WHERE x.tenant_id IS NULL OR t.state = 'active'),
         picked AS (
            SELECT j.id, j.priority, j.run_at,
                   row_number() OVER (PARTITION BY j.tenant_id ORDER BY j.priority DESC, j.run_at, j.id) AS rn
              FROM cand c
             CROSS JOIN LATERAL (
                -- Two branches (each gated on the tenant being absent or not)
                -- so that both reach the index: `IS NOT DISTINCT FROM` cannot.
                SELECT * FROM (
                    SELECT id, tenant_id, priority, run_at FROM platform.jobs j
                     WHERE c.tenant_id IS NOT NULL AND j.queue = $2 AND j.tenant_id = c.tenant_id
                       AND j.state = 'available'
                       AND (cardinality($3::text[]) = 0 OR j.kind = ANY($3::text[]))
                     ORDER BY j.priority DESC, j.run_at, j.id
                     LIMIT greatest(least(c.room, $4), 0)
                     FOR UPDATE SKIP LOCKED) tenant_jobs
                UNION ALL
                SELECT * FROM (
                    -- `queue, tenant_id` lead the order although both are fixed:
                    -- `IS NULL` does not make the index's order usable (unlike
                    -- `=`), and without them every fetch sorted every
                    -- available platform job.
                    SELECT id, tenant_id, priority, run_at FROM platform.jobs j
                     WHERE c.tenant_id IS NULL AND j.queue = $2 AND j.tenant_id IS NULL
                       AND j.state = 'available'
                       AND (cardinality($3::text[]) = 0 OR j.kind = ANY($3::text[]))
                     ORDER BY j.queue, j.tenant_id, j.priority DESC, j.run_at, j.id
                     LIMIT $4
                     FOR UPDATE SKIP LOCKED) platform_jobs) j),
         chosen AS (SELECT id FROM picked ORDER BY rn, priority DESC, run_at, id LIMIT $4)
         UPDATE platform.jobs j
            SET state = 'running', attempt = j.attempt + 1, started_at = now(), worker_id = $5, lease_ms = $6,
                lease_expires_at = now() + least($6, j.timeout_ms) * interval '1 millisecond'
          -- An id array rather than a join: the planner hashed the whole table for the join.
          WHERE j.id = ANY(ARRAY(SELECT id FROM chosen))
         RETURNING {JOB_COLUMNS_J}"
    ))
    .bind(&tenants)
    .bind(request.queue)
    .bind(request.kinds)
    .bind(request.limit.min(i32::MAX as usize) as i32)
    .bind(request.worker_id)
    .bind(request.lease.as_millis() as i64)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(jobs)
}

/// The outcome of a heartbeat.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// The new end of the lease.
    pub lease_expires_at: DateTime<Utc>,
    /// Whether the job was asked to cancel.
    pub cancel_requested: bool,
}

/// Extends a lease by `lease` (or its original length), never past the
/// attempt's timeout. Lost leases answer [`JobError::LeaseLost`].
pub async fn heartbeat(
    pool: &PgPool,
    tenant: Option<&TenantId>,
    id: &str,
    attempt: i32,
    lease: Option<Duration>,
) -> Result<Heartbeat, JobError> {
    let row: Option<(DateTime<Utc>, bool)> = sqlx::query_as(
        "UPDATE platform.jobs j
            SET lease_expires_at = least(now() + COALESCE($4, j.lease_ms) * interval '1 millisecond',
                                         j.started_at + j.timeout_ms * interval '1 millisecond'),
                lease_ms = COALESCE($4, j.lease_ms)
          WHERE j.id = $1 AND ($2::text IS NULL OR j.tenant_id = $2) AND j.attempt = $3 AND j.state = 'running'
          RETURNING j.lease_expires_at, j.cancel_requested",
    )
    .bind(id)
    .bind(tenant.map(TenantId::as_str))
    .bind(attempt)
    .bind(lease.map(|l| l.as_millis() as i64))
    .fetch_optional(pool)
    .await?;
    match row {
        Some((lease_expires_at, cancel_requested)) => Ok(Heartbeat { lease_expires_at, cancel_requested }),
        None => Err(lease_error(pool, tenant, id).await),
    }
}

/// Extends many leases of one worker at once; returns `(id, cancel_requested)`
/// for the leases still held (the others were lost).
pub async fn heartbeat_many(
    pool: &PgPool,
    leases: &[(String, i32)],
    lease: Duration,
) -> Result<Vec<(String, bool)>, JobError> {
    let (ids, attempts): (Vec<String>, Vec<i32>) = leases.iter().cloned().unzip();
    Ok(sqlx::query_as(
        "UPDATE platform.jobs j
            SET lease_expires_at = least(now() + $3 * interval '1 millisecond',
                                         j.started_at + j.timeout_ms * interval '1 millisecond')
           FROM unnest($1::text[], $2::int[]) AS l(id, attempt)
          WHERE j.id = l.id AND j.attempt = l.attempt AND j.state = 'running'
          RETURNING j.id, j.cancel_requested",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(lease.as_millis() as i64)
    .fetch_all(pool)
    .await?)
}

/// Completes a leased job with its result; nothing changes if the lease is lost.
pub async fn complete(
    pool: &PgPool,
    tenant: Option<&TenantId>,
    id: &str,
    attempt: i32,
    result: &serde_json::Value,
) -> Result<Job, JobError> {
    let job: Option<Job> = sqlx::query_as(&format!(
        "UPDATE platform.jobs j
            SET state = 'completed', finished_at = now(), result = $4, lease_expires_at = NULL
          WHERE j.id = $1 AND ($2::text IS NULL OR j.tenant_id = $2) AND j.attempt = $3 AND j.state = 'running'
          RETURNING {JOB_COLUMNS_J}"
    ))
    .bind(id)
    .bind(tenant.map(TenantId::as_str))
    .bind(attempt)
    .bind(result)
    .fetch_optional(pool)
    .await?;
    match job {
        Some(job) => Ok(job),
        None => Err(lease_error(pool, tenant, id).await),
    }
}

/// Completes many leased jobs in one statement (the built-in workers'
/// batched completer); returns the ids whose lease was still held.
pub async fn complete_many(pool: &PgPool, done: &[(String, i32, serde_json::Value)]) -> Result<Vec<String>, JobError> {
    let ids: Vec<&str> = done.iter().map(|d| d.0.as_str()).collect();
    let attempts: Vec<i32> = done.iter().map(|d| d.1).collect();
    let results: Vec<&serde_json::Value> = done.iter().map(|d| &d.2).collect();
    Ok(sqlx::query_scalar(
        "UPDATE platform.jobs j
            SET state = 'completed', finished_at = now(), result = d.result, lease_expires_at = NULL
           FROM unnest($1::text[], $2::int[], $3::jsonb[]) AS d(id, attempt, result)
          WHERE j.id = d.id AND j.attempt = d.attempt AND j.state = 'running'
          RETURNING j.id",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&results)
    .fetch_all(pool)
    .await?)
}

/// How an attempt failed.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    /// What went wrong (at most 4 KiB are kept).
    pub message: String,
    /// Wait this long before the next attempt instead of the backoff.
    pub retry_after: Option<Duration>,
    /// Give up now.
    pub discard: bool,
}

/// Records a failed attempt: RETRYABLE, DISCARDED or CANCELLED (see
/// [`failure_assignments`]); nothing changes if the lease is lost.
pub async fn fail(
    pool: &PgPool,
    tenant: Option<&TenantId>,
    id: &str,
    attempt: i32,
    failure: &Failure,
) -> Result<Job, JobError> {
    let message: String = failure.message.chars().take(4096).collect();
    let job: Option<Job> = sqlx::query_as(&format!(
        "UPDATE platform.jobs j SET {}
          WHERE j.id = $1 AND ($2::text IS NULL OR j.tenant_id = $2) AND j.attempt = $3 AND j.state = 'running'
          RETURNING {JOB_COLUMNS_J}",
        failure_assignments("$4::text", "$5", "$6")
    ))
    .bind(id)
    .bind(tenant.map(TenantId::as_str))
    .bind(attempt)
    .bind(message)
    .bind(failure.discard)
    .bind(failure.retry_after.map(|d| d.as_millis() as i64))
    .fetch_optional(pool)
    .await?;
    match job {
        Some(job) => Ok(job),
        None => Err(lease_error(pool, tenant, id).await),
    }
}

/// Gives leased jobs back without counting the attempt, for a worker that
/// stops before finishing them: they become available at once. Safe only
/// once the releasing worker can no longer act on them.
pub async fn release(pool: &PgPool, leases: &[(String, i32)]) -> Result<u64, JobError> {
    let (ids, attempts): (Vec<String>, Vec<i32>) = leases.iter().cloned().unzip();
    let mut tx = crate::db::begin(pool).await?;
    let queues: Vec<String> = sqlx::query_scalar(
        "UPDATE platform.jobs j
            SET state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'available' END,
                finished_at = CASE WHEN j.cancel_requested THEN now() END,
                attempt = j.attempt - 1, run_at = now(), lease_expires_at = NULL
           FROM unnest($1::text[], $2::int[]) AS l(id, attempt)
          WHERE j.id = l.id AND j.attempt = l.attempt AND j.state = 'running'
          RETURNING j.queue",
    )
    .bind(&ids)
    .bind(&attempts)
    .fetch_all(&mut *tx)
    .await?;
    let mut distinct = queues.clone();
    distinct.sort();
    distinct.dedup();
    for queue in &distinct {
        super::queue::notify_available(&mut tx, queue).await?;
    }
    tx.commit().await?;
    Ok(queues.len() as u64)
}

/// Why a fenced update matched nothing: the job does not exist (in this
/// tenant), or the lease is lost.
async fn lease_error(pool: &PgPool, tenant: Option<&TenantId>, id: &str) -> JobError {
    match super::queue::find(pool, tenant, id).await {
        Err(error) => error,
        Ok(None) => JobError::NotFound(id.to_owned()),
        Ok(Some(job)) => JobError::LeaseLost(format!(
            "the lease on job {id} is lost: it is {} at attempt {}",
            job.state().as_str(),
            job.attempt
        )),
    }
}
