//! Producing and inspecting jobs: [`enqueue`] inside the caller's
//! transaction, and the tenant-scoped [`get`], [`list`], [`cancel`] and
//! [`retry`]. Every by-id lookup includes the tenant, so another tenant's job
//! id is simply not found.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::{
    DEFAULT_QUEUE,
    model::{JOB_COLUMNS, Job, JobError, JobState},
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
pub async fn enqueue(conn: &mut PgConnection, new: NewJob) -> Result<Enqueued, JobError> {
    new.validate()?;
    let tenant = new.tenant.as_ref();
    if let Some(key) = &new.unique_key {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tenantry.jobs.unique'), hashtext($1))")
            .bind(format!("{}\u{1f}{}\u{1f}{key}", tenant.map_or("", TenantId::as_str), new.kind))
            .execute(&mut *conn)
            .await?;
        // Two spellings rather than `IS NOT DISTINCT FROM`, which no index serves.
        let tenant_clause = if tenant.is_some() { "tenant_id = $1" } else { "tenant_id IS NULL AND $1::text IS NULL" };
        let existing: Option<Job> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM platform.jobs
              WHERE {tenant_clause} AND kind = $2 AND unique_key = $3
                AND (state NOT IN ('completed', 'cancelled', 'discarded') OR unique_until > now())
              ORDER BY created_at DESC LIMIT 1"
        ))
        .bind(tenant)
        .bind(&new.kind)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(job) = existing {
            return Ok(Enqueued { job, duplicate: true });
        }
    }
    let job: Job = sqlx::query_as(&format!(
        "WITH ins AS (
            INSERT INTO platform.jobs
                (id, tenant_id, kind, queue, payload, priority, state, max_attempts, run_at, unique_key,
                 unique_until, timeout_ms, traceparent)
            VALUES ($1, $2, $3, $4, $5, $6,
                    CASE WHEN COALESCE($7, now()) > now() THEN 'scheduled' ELSE 'available' END,
                    $8, COALESCE($7, now()), $9, now() + $10::bigint * interval '1 millisecond', $11, $12)
            RETURNING {JOB_COLUMNS})
         SELECT ins.* FROM ins
           LEFT JOIN LATERAL (SELECT pg_notify('{AVAILABLE_CHANNEL}', ins.queue) WHERE ins.state = 'available') n
             ON true"
    ))
    .bind(ids::new_id("job"))
    .bind(tenant)
    .bind(&new.kind)
    .bind(&new.queue)
    .bind(&new.payload)
    .bind(new.priority)
    .bind(new.run_at)
    .bind(new.max_attempts)
    .bind(&new.unique_key)
    .bind(new.unique_window.map(|w| w.as_millis() as i64))
    .bind(new.timeout.as_millis() as i64)
    // The enqueuing call's trace, which the job's execution span links to.
    .bind(crate::telemetry::traceparent(&tracing::Span::current()))
    .fetch_one(&mut *conn)
    .await?;
    Ok(Enqueued { job, duplicate: false })
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
    let mut tx = pool.begin().await?;
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
