//! The job row as stored in `platform.jobs`, its states, and the queue's
//! error type with its mapping to API errors.
//!
//! The row decodes into types, not text: the tenant is an
//! `Option<TenantId>` (NULL for platform-level jobs), the state a
//! [`JobState`] and the error history a `Json<Vec<AttemptError>>`. A value
//! that does not fit (an unknown state, a malformed tenant id or error entry)
//! fails the query as corrupt data instead of being read as something else.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use sqlx::types::Json;

use crate::{error::ApiError, tenancy::TenantId};

/// Where a job is in its life (the stored form, text in the `state` column;
/// see [`Job::state`] for the reported one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its `run_at`.
    Scheduled,
    /// Ready to be leased.
    Available,
    /// Leased by a worker.
    Running,
    /// An attempt failed; runs again at `run_at`.
    Retryable,
    /// Final: succeeded.
    Completed,
    /// Final: cancelled.
    Cancelled,
    /// Final: gave up.
    Discarded,
}

impl JobState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Discarded => "discarded",
        }
    }

    /// Whether the job will never change again on its own.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Cancelled | JobState::Discarded)
    }
}

/// The error of one failed attempt, kept in the job's history (an element
/// of the `errors` JSON array, written by [`failure_assignments`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AttemptError {
    /// The attempt that failed.
    pub attempt: i32,
    /// What went wrong.
    pub message: String,
    /// When (`to_jsonb(now())`: RFC 3339 text).
    #[serde(deserialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
}

/// Reads an RFC 3339 timestamp (chrono's serde support is not enabled).
fn rfc3339<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    DateTime::parse_from_rfc3339(&text).map(|at| at.with_timezone(&Utc)).map_err(serde::de::Error::custom)
}

/// A job as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    /// `job_…`.
    pub id: String,
    /// The owning tenant; `None` (NULL) for platform-level jobs.
    pub tenant_id: Option<TenantId>,
    /// What the job does.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// Its input.
    pub payload: serde_json::Value,
    /// Higher runs first.
    pub priority: i32,
    /// The stored state (see [`Job::state`] for the reported one).
    #[sqlx(rename = "state")]
    pub stored_state: JobState,
    /// Attempts started so far; the current one is the lease's fencing token.
    pub attempt: i32,
    /// Attempts allowed before discarding.
    pub max_attempts: i32,
    /// When it is due.
    pub run_at: DateTime<Utc>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When the latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// The producer's uniqueness key.
    pub unique_key: Option<String>,
    /// Output of the successful attempt.
    pub result: Option<serde_json::Value>,
    /// Errors of failed attempts, oldest first.
    pub errors: Json<Vec<AttemptError>>,
    /// CancelJob was called while it ran.
    pub cancel_requested: bool,
    /// How long one attempt may run.
    pub timeout_ms: i64,
    /// Length of the current lease.
    pub lease_ms: Option<i64>,
    /// When the current lease ends.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Who holds (or last held) it.
    pub worker_id: String,
    /// The W3C `traceparent` of the call that enqueued it, if traced.
    #[sqlx(default)]
    pub traceparent: Option<String>,
}

impl Job {
    /// The state as reported: a scheduled job whose time has come is
    /// available (it is leased without being moved first).
    pub fn state(&self) -> JobState {
        match self.stored_state {
            JobState::Scheduled if self.run_at <= Utc::now() => JobState::Available,
            state => state,
        }
    }

    /// The owning tenant, `None` for platform-level jobs.
    pub fn tenant(&self) -> Option<&TenantId> {
        self.tenant_id.as_ref()
    }

    /// The error history, oldest first.
    pub fn errors(&self) -> &[AttemptError] {
        &self.errors
    }

    /// How long one attempt may run.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(0) as u64)
    }
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    /// Item `index` (from 0) of a batch enqueue is invalid.
    #[error("item {index}: {field}: {problem}")]
    InvalidItem { index: usize, field: &'static str, problem: String },
    #[error("job {0} not found")]
    NotFound(String),
    #[error("{0}")]
    LeaseLost(String),
    #[error("{0}")]
    WrongState(String),
    #[error("job store unavailable")]
    Store(#[from] sqlx::Error),
}

impl JobError {
    /// An invalid request field.
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        JobError::Invalid { field, problem: problem.into() }
    }
}

impl From<JobError> for ApiError {
    fn from(error: JobError) -> Self {
        match error {
            JobError::Invalid { field, problem } => ApiError::invalid(field, problem),
            // EnqueueJobs calls the batch's items `requests`.
            JobError::InvalidItem { index, field, problem } => {
                ApiError::invalid(format!("requests[{index}].{field}"), problem)
            }
            JobError::NotFound(id) => ApiError::NotFound { resource: format!("job {id}") },
            JobError::LeaseLost(message) => {
                ApiError::FailedPrecondition { reason: crate::error::Reason::JobLeaseLost, message }
            }
            JobError::WrongState(message) => {
                ApiError::FailedPrecondition { reason: crate::error::Reason::JobState, message }
            }
            JobError::Store(error) => error.into(),
        }
    }
}

/// The columns every query returns, in [`Job`]'s order.
pub const JOB_COLUMNS: &str = "id, tenant_id, kind, queue, payload, priority, state, attempt, max_attempts, run_at, \
     created_at, started_at, finished_at, unique_key, result, errors, cancel_requested, timeout_ms, lease_ms, \
     lease_expires_at, worker_id, traceparent";

/// The same columns qualified by the alias `j`, for `UPDATE … FROM … RETURNING`.
pub const JOB_COLUMNS_J: &str = "j.id, j.tenant_id, j.kind, j.queue, j.payload, j.priority, j.state, j.attempt, \
     j.max_attempts, j.run_at, j.created_at, j.started_at, j.finished_at, j.unique_key, j.result, j.errors, \
     j.cancel_requested, j.timeout_ms, j.lease_ms, j.lease_expires_at, j.worker_id, j.traceparent";

/// SQL for the state an attempt failure leads to, and the matching updates:
/// cancelled when a cancel was requested, discarded when `$discard` is true
/// or attempts are used up, retryable otherwise (after `$retry_ms`, or an
/// exponential backoff of 2^attempt seconds capped at one hour, ±20% jitter).
/// Used by FailJob and the rescuer so both apply the same rules. Expects the
/// row alias `j`, a message expression and bind positions for the rest.
pub fn failure_assignments(message: &str, discard: &str, retry_ms: &str) -> String {
    format!(
        "state = CASE WHEN j.cancel_requested THEN 'cancelled' \
                      WHEN {discard} OR j.attempt >= j.max_attempts THEN 'discarded' \
                      ELSE 'retryable' END, \
         finished_at = CASE WHEN j.cancel_requested OR {discard} OR j.attempt >= j.max_attempts THEN now() END, \
         run_at = CASE WHEN j.cancel_requested OR {discard} OR j.attempt >= j.max_attempts THEN j.run_at \
                       ELSE now() + COALESCE({retry_ms}::bigint * interval '1 millisecond', \
                            least(3600.0, power(2, least(j.attempt, 12))) * (0.8 + random() * 0.4) * interval '1 second') END, \
         errors = (CASE WHEN jsonb_array_length(j.errors) >= 20 THEN j.errors - 0 ELSE j.errors END) \
                  || jsonb_build_array(jsonb_build_object('attempt', j.attempt, 'message', {message}, \
                     'at', to_jsonb(now()))), \
         lease_expires_at = NULL"
    )
}
