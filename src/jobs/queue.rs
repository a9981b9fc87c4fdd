//! Producing and inspecting jobs: [`enqueue`] inside the caller's
//! transaction, and the tenant-scoped [`get`], [`list`], [`cancel`] and
//! [`retry`]. Every by-id lookup includes the tenant, so another tenant's job
//! id is simply not found.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::{
    DEFAULT_QUEUE,
    model::{JOB_COLUMNS, JOB_COLUMNS_J, Job, JobError, JobState},
};
use crate::{ids, pagination::Cursor, tenancy::TenantId};

/// The NOTIFY channel that wakes workers; the payload is the queue name.
pub const AVAILABLE_CHANNEL: &str = "tenantry_jobs";

/// Attempts allowed when the producer does not say.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 10;
/// Time one attempt may run when the producer does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest payload or result, serialized.
pub const MAX_JSON_BYTES: usize = 256 * 1024;

/// A job to enqueue. Build it with [`NewJob::new`] and adjust the fields.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The owning tenant; `None` for a platform-level (built-in) job.
    pub tenant: Option<TenantId>,
    /// What the job does.
    pub kind: String,
    /// The queue.
    pub queue: String,
    /// Input, a JSON object.
    pub payload: serde_json::Value,
    /// Higher runs first.
    pub priority: i32,
    /// Not before this time; `None`: now.
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Uniqueness key within the tenant and kind.
    pub unique_key: Option<String>,
    /// How long the key blocks duplicates whatever the job's state.
    pub unique_window: Option<Duration>,
    /// Time one attempt may run.
    pub timeout: Duration,
}

impl NewJob {
    /// A job of `kind` with an empty payload and the defaults.
    pub fn new(tenant: Option<TenantId>, kind: impl Into<String>) -> Self {
        NewJob {
            tenant,
            kind: kind.into(),
            queue: DEFAULT_QUEUE.to_owned(),
            payload: serde_json::json!({}),
            priority: 0,
            run_at: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            unique_key: None,
            unique_window: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Checks every field, naming the first at fault.
    pub fn validate(&self) -> Result<(), JobError> {
        if !is_name(&self.kind, 128) {
            return Err(JobError::invalid("kind", "must be 1 to 128 letters, digits, `_`, `-` or `.`"));
        }
        if !is_name(&self.queue, 64) {
            return Err(JobError::invalid("queue", "must be 1 to 64 letters, digits, `_`, `-` or `.`"));
        }
        if !self.payload.is_object() {
            return Err(JobError::invalid("payload", "must be a JSON object"));
        }
        if self.payload.to_string().len() > MAX_JSON_BYTES {
            return Err(JobError::invalid("payload", "must be at most 256 KiB when serialized"));
        }
        if !(1..=1000).contains(&self.max_attempts) {
            return Err(JobError::invalid("max_attempts", "must be between 1 and 1000"));
        }
        if let Some(key) = &self.unique_key
            && (key.is_empty() || key.chars().count() > 256)
        {
            return Err(JobError::invalid("unique_key", "must be 1 to 256 characters"));
        }
        if self.unique_window.is_some_and(|w| w.is_zero() || w > Duration::from_secs(366 * 86_400)) {
            return Err(JobError::invalid("unique_window", "must be longer than 0 and at most a year"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&self.timeout) {
            return Err(JobError::invalid("timeout", "must be between 1 second and 24 hours"));
        }
        Ok(())
    }
}

/// Whether `text` is a kind or queue name: `[A-Za-z0-9_.-]`, 1 to `max` long.
pub fn is_name(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// The outcome of [`enqueue`].
#[derive(Debug, Clone)]
pub struct Enqueued {
    /// The new job, or the live job holding the unique key.
    pub job: Job,
    /// True when the unique key matched and nothing was inserted.
    pub duplicate: bool,
}

/// Enqueues `new` on `conn`, which must be inside an open transaction: the job
/// exists if and only if that transaction commits, and the workers' wake-up
/// (NOTIFY) is delivered only then. Concurrent enqueues with one unique key
/// serialize on a transaction-scoped advisory lock, so exactly one job is
/// created.
///
/// A job with a unique key goes through [`enqueue_many`]'s statements, so
/// one rule decides who holds a key; a job without one is a plain
/// single-row insert (half the database time of the batch statement for one
/// row).
pub async fn enqueue(conn: &mut PgConnection, new: NewJob) -> Result<Enqueued, JobError> {
    new.validate()?;
    if new.unique_key.is_some() {
        let mut enqueued = insert(conn, std::slice::from_ref(&new)).await?;
        return enqueued.pop().ok_or(JobError::Store(sqlx::Error::RowNotFound));
    }
    let job: Job = sqlx::query_as(&format!(
        "WITH ins AS (
            INSERT INTO platform.jobs
                (id, tenant_id, kind, queue, payload, priority, state, max_attempts, run_at, timeout_ms, traceparent)
            VALUES ($1, $2, $3, $4, $5, $6,
                    CASE WHEN COALESCE($7, now()) > now() THEN 'scheduled' ELSE 'available' END,
                    $8, COALESCE($7, now()), $9, $10)
            RETURNING {JOB_COLUMNS})
         SELECT ins.* FROM ins
           LEFT JOIN LATERAL (SELECT pg_notify('{AVAILABLE_CHANNEL}', ins.queue) WHERE ins.state = 'available') n
             ON true"
    ))
    .bind(ids::new_id("job"))
    .bind(new.tenant.as_ref())
    .bind(&new.kind)
    .bind(&new.queue)
    .bind(&new.payload)
    .bind(new.priority)
    .bind(new.run_at)
    .bind(new.max_attempts)
    .bind(new.timeout.as_millis() as i64)
    // The enqueuing call's trace, which the job's execution span links to.
    .bind(crate::telemetry::traceparent(&tracing::Span::current()))
    .fetch_one(&mut *conn)
    .await?;
    Ok(Enqueued { job, duplicate: false })
}

/// Enqueues `jobs` on `conn` (inside an open transaction, as [`enqueue`]) in
/// one statement, and answers in their order. Unique keys work as if the
/// jobs were enqueued one after another: a job whose key is held by a live
/// job, or by an earlier job of the batch, creates nothing and its answer is
/// that job with `duplicate`. When any job is invalid nothing is written and
/// [`JobError::InvalidItem`] names the first.
pub async fn enqueue_many(conn: &mut PgConnection, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, JobError> {
    for (index, job) in jobs.iter().enumerate() {
        job.validate().map_err(|error| match error {
            JobError::Invalid { field, problem } => JobError::InvalidItem { index, field, problem },
            other => other,
        })?;
    }
    insert(conn, &jobs).await
}

/// One answer row of [`insert`].
#[derive(sqlx::FromRow)]
struct InsertedRow {
    duplicate: bool,
    #[sqlx(flatten)]
    job: Job,
}

/// Inserts validated `jobs`: one statement, plus one before it that takes
/// the advisory locks of the unique keys when any job has one.
///
/// The locks need their own statement: the statement that reads the live
/// jobs holding the keys must take its snapshot after the locks are held, or
/// it could miss a job committed by a concurrent enqueue it waited for. They
/// are taken in hash order, so batches with overlapping keys cannot deadlock
/// on each other.
async fn insert(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<Vec<Enqueued>, JobError> {
    let tenant_of = |job: &NewJob| job.tenant.as_ref().map_or("", TenantId::as_str).to_owned();
    let keys: Vec<String> = jobs
        .iter()
        .filter_map(|job| job.unique_key.as_ref().map(|key| format!("{}\u{1f}{}\u{1f}{key}", tenant_of(job), job.kind)))
        .collect();
    if !keys.is_empty() {
        sqlx::query(
            "SELECT count(pg_advisory_xact_lock(hashtext('tenantry.jobs.unique'), k))
               FROM (SELECT DISTINCT hashtext(key) AS k FROM unnest($1::text[]) AS u(key) ORDER BY 1) sorted",
        )
        .bind(&keys)
        .execute(&mut *conn)
        .await?;
    }
    let ids: Vec<String> = jobs.iter().map(|_| ids::new_id("job")).collect();
    let tenants: Vec<Option<&str>> = jobs.iter().map(|j| j.tenant.as_ref().map(TenantId::as_str)).collect();
    let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    let payloads: Vec<&serde_json::Value> = jobs.iter().map(|j| &j.payload).collect();
    let priorities: Vec<i32> = jobs.iter().map(|j| j.priority).collect();
    let run_at: Vec<Option<DateTime<Utc>>> = jobs.iter().map(|j| j.run_at).collect();
    let max_attempts: Vec<i32> = jobs.iter().map(|j| j.max_attempts).collect();
    let unique_keys: Vec<Option<&str>> = jobs.iter().map(|j| j.unique_key.as_deref()).collect();
    let unique_ms: Vec<Option<i64>> = jobs.iter().map(|j| j.unique_window.map(|w| w.as_millis() as i64)).collect();
    let timeout_ms: Vec<i64> = jobs.iter().map(|j| j.timeout.as_millis() as i64).collect();
    // `holders`: the job holding each keyed item's key, the newest live job
    // with it (two branches rather than `IS NOT DISTINCT FROM`, which no
    // index serves), else the batch's first item with it. An item is
    // inserted when it has no key or holds its own; the queues that got
    // available work are notified once each.
    let rows: Vec<InsertedRow> = sqlx::query_as(&format!(
        "WITH input AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::int[],
                                 $7::timestamptz[], $8::int[], $9::text[], $10::bigint[], $11::bigint[])
                   WITH ORDINALITY AS i(id, tenant_id, kind, queue, payload, priority, run_at, max_attempts,
                                        unique_key, unique_ms, timeout_ms, ord)),
         holders AS (
            SELECT i.ord,
                   COALESCE(
                       (SELECT live.id FROM (
                            SELECT j.id, j.created_at FROM platform.jobs j
                             WHERE i.tenant_id IS NOT NULL AND j.tenant_id = i.tenant_id
                               AND j.kind = i.kind AND j.unique_key = i.unique_key
                               AND (j.state NOT IN ('completed', 'cancelled', 'discarded') OR j.unique_until > now())
                            UNION ALL
                            SELECT j.id, j.created_at FROM platform.jobs j
                             WHERE i.tenant_id IS NULL AND j.tenant_id IS NULL
                               AND j.kind = i.kind AND j.unique_key = i.unique_key
                               AND (j.state NOT IN ('completed', 'cancelled', 'discarded') OR j.unique_until > now())
                        ) live ORDER BY live.created_at DESC LIMIT 1),
                       first_value(i.id) OVER (PARTITION BY i.tenant_id, i.kind, i.unique_key ORDER BY i.ord)
                   ) AS holder
              FROM input i WHERE i.unique_key IS NOT NULL),
         ins AS (
            INSERT INTO platform.jobs
                (id, tenant_id, kind, queue, payload, priority, state, max_attempts, run_at, unique_key,
                 unique_until, timeout_ms, traceparent)
            SELECT i.id, i.tenant_id, i.kind, i.queue, i.payload, i.priority,
                   CASE WHEN COALESCE(i.run_at, now()) > now() THEN 'scheduled' ELSE 'available' END,
                   i.max_attempts, COALESCE(i.run_at, now()), i.unique_key,
                   now() + i.unique_ms * interval '1 millisecond', i.timeout_ms, $12::text
              FROM input i
             WHERE i.unique_key IS NULL OR i.id IN (SELECT holder FROM holders)
            RETURNING {JOB_COLUMNS}),
         woken AS (
            SELECT count(pg_notify('{AVAILABLE_CHANNEL}', q.queue)) AS queues
              FROM (SELECT DISTINCT queue FROM ins WHERE state = 'available') q)
         SELECT i.ord, (h.holder IS NOT NULL AND h.holder <> i.id) AS duplicate, r.*
           FROM input i
           LEFT JOIN holders h ON h.ord = i.ord
           JOIN (SELECT * FROM ins
                 UNION ALL
                 -- The live jobs from before this statement (its own inserts are not visible here).
                 SELECT {JOB_COLUMNS_J} FROM platform.jobs j WHERE j.id IN (SELECT holder FROM holders)) r
             ON r.id = COALESCE(h.holder, i.id)
          CROSS JOIN woken
          ORDER BY i.ord"
    ))
    .bind(&ids)
    .bind(&tenants)
    .bind(&kinds)
    .bind(&queues)
    .bind(&payloads)
    .bind(&priorities)
    .bind(&run_at)
    .bind(&max_attempts)
    .bind(&unique_keys)
    .bind(&unique_ms)
    .bind(&timeout_ms)
    // The enqueuing call's trace, which the jobs' execution spans link to.
    .bind(crate::telemetry::traceparent(&tracing::Span::current()))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|row| Enqueued { job: row.job, duplicate: row.duplicate }).collect())
}

/// Wakes the workers of `queue` (delivered when the surrounding transaction,
/// if any, commits).
pub async fn notify_available(conn: &mut PgConnection, queue: &str) -> Result<(), JobError> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(AVAILABLE_CHANNEL).bind(queue).execute(conn).await?;
    Ok(())
}

/// The tenant's job `id`; another tenant's job is not found.
pub async fn get(pool: &PgPool, tenant: &TenantId, id: &str) -> Result<Job, JobError> {
    find(pool, Some(tenant), id).await?.ok_or_else(|| JobError::NotFound(id.to_owned()))
}

/// Job `id`, in `tenant` when given, across tenants otherwise.
pub async fn find(pool: &PgPool, tenant: Option<&TenantId>, id: &str) -> Result<Option<Job>, JobError> {
    if !ids::is_id("job", id) {
        return Ok(None);
    }
    Ok(sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM platform.jobs WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)"
    ))
    .bind(id)
    .bind(tenant.map(TenantId::as_str))
    .fetch_optional(pool)
    .await?)
}

/// What [`list`] returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this (reported) state.
    pub state: Option<JobState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
}

/// The order of [`list`], newest first.
pub const LIST_ORDER: &str = "created_at desc, id desc";

/// A page of the tenant's jobs, newest first, after `cursor`; one extra row
/// is fetched so the caller can tell whether a next page exists.
pub async fn list(
    pool: &PgPool,
    tenant: &TenantId,
    filter: &ListFilter,
    limit: i64,
    cursor: Option<&Cursor>,
) -> Result<Vec<Job>, JobError> {
    let state_clause = match filter.state {
        None => "true",
        Some(JobState::Available) => "(state = 'available' OR (state = 'scheduled' AND run_at <= now()))",
        Some(JobState::Scheduled) => "(state = 'scheduled' AND run_at > now())",
        Some(_) => "state = $6",
    };
    Ok(sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM platform.jobs
          WHERE tenant_id = $1 AND {state_clause}
            AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR queue = $3)
            AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::text))
          ORDER BY created_at DESC, id DESC
          LIMIT $7"
    ))
    .bind(tenant.as_str())
    .bind(&filter.kind)
    .bind(&filter.queue)
    .bind(cursor.map(|c| c.created_at))
    .bind(cursor.map(|c| c.id.clone()))
    .bind(filter.state.map(JobState::as_str))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?)
}

/// Cancels the tenant's job: at once unless it is running, in which case
/// `cancel_requested` is set for its worker to observe. Cancelling a
/// cancelled job changes nothing; a completed or discarded one cannot be.
pub async fn cancel(pool: &PgPool, tenant: &TenantId, id: &str) -> Result<Job, JobError> {
    let updated: Option<Job> = sqlx::query_as(&format!(
        "UPDATE platform.jobs j
            SET state = CASE WHEN j.state = 'running' THEN 'running' ELSE 'cancelled' END,
                cancel_requested = (j.state = 'running'),
                finished_at = CASE WHEN j.state = 'running' THEN NULL ELSE now() END
          WHERE j.id = $1 AND j.tenant_id = $2 AND j.state IN ('scheduled', 'available', 'retryable', 'running')
          RETURNING {}",
        super::model::JOB_COLUMNS_J
    ))
    .bind(id)
    .bind(tenant.as_str())
    .fetch_optional(pool)
    .await?;
    if let Some(job) = updated {
        return Ok(job);
    }
    let job = get(pool, tenant, id).await?;
    match job.state() {
        JobState::Cancelled => Ok(job),
        state => Err(JobError::WrongState(format!("job {id} is {} and cannot be cancelled", state.as_str()))),
    }
}

/// Makes the tenant's job run again as soon as possible (see the RPC docs);
/// a running job cannot be retried.
pub async fn retry(pool: &PgPool, tenant: &TenantId, id: &str) -> Result<Job, JobError> {
    let mut tx = crate::db::begin(pool).await?;
    let updated: Option<Job> = sqlx::query_as(&format!(
        "UPDATE platform.jobs j
            SET state = 'available', run_at = now(), finished_at = NULL, cancel_requested = false,
                result = NULL, max_attempts = greatest(j.max_attempts, j.attempt + 1)
          WHERE j.id = $1 AND j.tenant_id = $2 AND j.state <> 'running'
          RETURNING {}",
        super::model::JOB_COLUMNS_J
    ))
    .bind(id)
    .bind(tenant.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(job) = updated else {
        let job = get(pool, tenant, id).await?;
        return Err(JobError::WrongState(format!("job {id} is {} and cannot be retried", job.state().as_str())));
    };
    notify_available(&mut tx, &job.queue).await?;
    tx.commit().await?;
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_jobs_are_validated_field_by_field() {
        let mut job = NewJob::new(None, "email.send");
        assert!(job.validate().is_ok());
        job.kind = "bad kind!".into();
        assert!(matches!(job.validate(), Err(JobError::Invalid { field: "kind", .. })));
        let mut job = NewJob::new(None, "x");
        job.payload = serde_json::json!([1]);
        assert!(matches!(job.validate(), Err(JobError::Invalid { field: "payload", .. })));
        let mut job = NewJob::new(None, "x");
        job.max_attempts = 0;
        assert!(matches!(job.validate(), Err(JobError::Invalid { field: "max_attempts", .. })));
    }
}
