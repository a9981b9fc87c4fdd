//! The gRPC `JobsService`: thin handlers that validate requests into domain
//! types, call [`super::queue`] and [`super::lease`], and map the results.
//!
//! Producer methods act in the call's tenant (required by the policy). The
//! worker methods (lease, heartbeat, complete, fail) act in the call's
//! tenant when it has one, and across tenants for a platform admin who names
//! none. Every by-id lookup includes the tenant: another tenant's job id is
//! NOT_FOUND.

use std::{pin::Pin, time::Duration};

use sqlx::PgPool;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    BUILTIN_PREFIX, BUILTIN_QUEUE, DEFAULT_QUEUE,
    convert::{self, json_to_struct, struct_to_json},
    events::{JobEvents, wait_for_work},
    handlers,
    lease::{self, FetchRequest},
    model::{Job, JobError, JobState},
    queue::{self, ListFilter, NewJob},
};
use crate::{
    context,
    error::ApiError,
    metrics::Metrics,
    pagination::{self, Cursor, ListQuery, PageTokens},
    proto::{
        tenantry::v1::{self as pb, jobs_service_server::JobsService},
        timestamp,
    },
    tenancy::TenantId,
};

/// The JobsService implementation.
#[derive(Clone)]
pub struct JobsApi {
    pool: PgPool,
    events: JobEvents,
    /// Cancelled when the process begins to shut down: open WatchJob
    /// streams end at once with UNAVAILABLE, long-polling LeaseJobs calls
    /// answer with what they have, so neither holds up the drain.
    stopping: CancellationToken,
    /// Jobs enqueued, and external workers' attempts, by kind.
    metrics: Metrics,
    /// Signs and reads ListJobs page tokens.
    page_tokens: PageTokens,
}

impl JobsApi {
    /// Handlers over `pool`, woken through `events` (fed by the process's
    /// change feed), ending long-lived calls when `stopping` is cancelled,
    /// counting in `metrics`.
    pub fn new(
        pool: PgPool,
        events: JobEvents,
        stopping: CancellationToken,
        metrics: Metrics,
        page_tokens: PageTokens,
    ) -> Self {
        JobsApi { pool, events, stopping, metrics, page_tokens }
    }

    /// Counts an external worker's finished attempt, timed from its lease.
    fn record_attempt(&self, job: &Job) {
        let ran = job.started_at.and_then(|at| (chrono::Utc::now() - at).to_std().ok()).unwrap_or_default();
        self.metrics.record_job_attempt(&job.kind, job.stored_state.as_str(), ran);
    }
}

/// How long a client should wait before re-opening a watch ended by
/// shutdown (on another node, or this one restarted).
const WATCH_RETRY_AFTER: Duration = Duration::from_millis(500);

/// The status that ends open watches at shutdown: UNAVAILABLE is retryable
/// by every gRPC client's default policy, and RetryInfo says when.
fn shutting_down() -> Status {
    ApiError::Unavailable {
        message: "the server is shutting down; watch the job again".into(),
        retry_after: Some(WATCH_RETRY_AFTER),
    }
    .into()
}

fn job_id(text: &str) -> Result<&str, ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid("job_id", "is required"));
    }
    Ok(text)
}

fn state_to_pb(state: JobState) -> pb::JobState {
    match state {
        JobState::Scheduled => pb::JobState::Scheduled,
        JobState::Available => pb::JobState::Available,
        JobState::Running => pb::JobState::Running,
        JobState::Retryable => pb::JobState::Retryable,
        JobState::Completed => pb::JobState::Completed,
        JobState::Cancelled => pb::JobState::Cancelled,
        JobState::Discarded => pb::JobState::Discarded,
    }
}

fn state_from_pb(value: i32) -> Result<Option<JobState>, ApiError> {
    let state = pb::JobState::try_from(value).map_err(|_| ApiError::invalid("state", "is not a job state"))?;
    Ok(match state {
        pb::JobState::Unspecified => None,
        pb::JobState::Scheduled => Some(JobState::Scheduled),
        pb::JobState::Available => Some(JobState::Available),
        pb::JobState::Running => Some(JobState::Running),
        pb::JobState::Retryable => Some(JobState::Retryable),
        pb::JobState::Completed => Some(JobState::Completed),
        pb::JobState::Cancelled => Some(JobState::Cancelled),
        pb::JobState::Discarded => Some(JobState::Discarded),
    })
}

/// A job as the API shows it.
pub fn job_to_pb(job: &Job) -> pb::Job {
    pb::Job {
        id: job.id.clone(),
        tenant_id: job.tenant().map(ToString::to_string).unwrap_or_default(),
        kind: job.kind.clone(),
        queue: job.queue.clone(),
        payload: Some(json_to_struct(&job.payload)),
        priority: job.priority,
        state: state_to_pb(job.state()) as i32,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        run_time: Some(timestamp(job.run_at)),
        create_time: Some(timestamp(job.created_at)),
        start_time: job.started_at.map(timestamp),
        finish_time: job.finished_at.map(timestamp),
        unique_key: job.unique_key.clone().unwrap_or_default(),
        result: job.result.as_ref().map(json_to_struct),
        errors: job
            .errors()
            .iter()
            .map(|e| pb::JobError { attempt: e.attempt, message: e.message.clone(), error_time: Some(timestamp(e.at)) })
            .collect(),
        cancel_requested: job.cancel_requested,
        timeout: Some(convert::duration(job.timeout())),
        worker_id: job.worker_id.clone(),
    }
}

fn duration_field(field: &'static str, value: Option<&prost_types::Duration>) -> Result<Option<Duration>, ApiError> {
    value.map(|d| convert::from_duration(d).ok_or_else(|| ApiError::invalid(field, "must not be negative"))).transpose()
}

fn json_field(field: &'static str, value: Option<&prost_types::Struct>) -> Result<serde_json::Value, ApiError> {
    let json = value.map_or_else(|| serde_json::json!({}), struct_to_json);
    if json.to_string().len() > queue::MAX_JSON_BYTES {
        return Err(ApiError::invalid(field, "must be at most 256 KiB when serialized"));
    }
    Ok(json)
}

/// Validates an EnqueueJob request into a [`NewJob`] of `tenant`.
fn new_job(tenant: &TenantId, request: pb::EnqueueJobRequest) -> Result<NewJob, ApiError> {
    let mut job = NewJob::new(Some(tenant.clone()), request.kind.clone());
    if request.kind.is_empty() {
        return Err(ApiError::invalid("kind", "is required"));
    }
    let builtin = request.kind.starts_with(BUILTIN_PREFIX);
    if builtin && !handlers::tenant_enqueueable(&request.kind) {
        return Err(ApiError::invalid("kind", "the `tenantry.` prefix is reserved for built-in jobs"));
    }
    job.queue = match (builtin, request.queue.as_str()) {
        (true, "" | BUILTIN_QUEUE) => BUILTIN_QUEUE.to_owned(),
        (true, _) => return Err(ApiError::invalid("queue", "built-in jobs run in the `tenantry` queue")),
        (false, BUILTIN_QUEUE) => return Err(ApiError::invalid("queue", "`tenantry` is reserved for built-in jobs")),
        (false, "") => DEFAULT_QUEUE.to_owned(),
        (false, queue) => queue.to_owned(),
    };
    job.payload = json_field("payload", request.payload.as_ref())?;
    job.priority = request.priority;
    job.run_at = match &request.schedule {
        None => None,
        Some(pb::enqueue_job_request::Schedule::RunTime(time)) => Some(
            crate::proto::from_timestamp(time).ok_or_else(|| ApiError::invalid("run_time", "is not a valid time"))?,
        ),
        Some(pb::enqueue_job_request::Schedule::Delay(delay)) => {
            let delay = duration_field("delay", Some(delay))?.unwrap_or_default();
            let delay = chrono::Duration::from_std(delay).map_err(|_| ApiError::invalid("delay", "is too long"))?;
            Some(chrono::Utc::now() + delay)
        }
    };
    job.max_attempts = match request.max_attempts {
        0 => queue::DEFAULT_MAX_ATTEMPTS,
        n => n,
    };
    job.unique_key = Some(request.unique_key).filter(|k| !k.is_empty());
    job.unique_window = duration_field("unique_window", request.unique_window.as_ref())?;
    if job.unique_window.is_some() && job.unique_key.is_none() {
        return Err(ApiError::invalid("unique_window", "needs a unique_key"));
    }
    if let Some(timeout) = duration_field("timeout", request.timeout.as_ref())? {
        job.timeout = timeout;
    }
    job.validate()?;
    Ok(job)
}

/// Most jobs one EnqueueJobs call may carry.
pub const MAX_BATCH: usize = 1000;

/// Validates an EnqueueJobs request into the [`NewJob`]s of `tenant`; an
/// invalid item is named by its index (`requests[3].kind`).
fn new_jobs(tenant: &TenantId, request: pb::EnqueueJobsRequest) -> Result<Vec<NewJob>, ApiError> {
    if request.requests.is_empty() {
        return Err(ApiError::invalid("requests", "is required: 1 to 1,000 jobs"));
    }
    if request.requests.len() > MAX_BATCH {
        return Err(ApiError::invalid("requests", "must hold at most 1,000 jobs"));
    }
    request
        .requests
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            new_job(tenant, item).map_err(|error| match error {
                ApiError::InvalidArgument { field, description } => {
                    ApiError::invalid(format!("requests[{index}].{field}"), description)
                }
                other => other,
            })
        })
        .collect()
}

/// A lease request's duration: unset 30 s, else between 5 s and 10 min.
fn lease_duration(field: &'static str, value: Option<&prost_types::Duration>) -> Result<Option<Duration>, ApiError> {
    let lease = duration_field(field, value)?;
    if lease.is_some_and(|l| !(Duration::from_secs(5)..=Duration::from_secs(600)).contains(&l)) {
        return Err(ApiError::invalid(field, "must be between 5 seconds and 10 minutes"));
    }
    Ok(lease)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchJobResponse, Status>> + Send>>;

/// How often a watch re-reads its job when nothing signalled a change
/// (changes made through other nodes).
const WATCH_POLL: Duration = Duration::from_millis(250);

#[tonic::async_trait]
impl JobsService for JobsApi {
    async fn enqueue_job(
        &self,
        request: Request<pb::EnqueueJobRequest>,
    ) -> Result<Response<pb::EnqueueJobResponse>, Status> {
        let ctx = context::of(&request)?;
        let tenant = ctx.tenant()?.id.clone();
        let new = new_job(&tenant, request.into_inner())?;
        let mut tx = crate::db::begin(&self.pool).await.map_err(ApiError::from)?;
        let enqueued = queue::enqueue(&mut tx, new).await.map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        if !enqueued.duplicate {
            self.metrics.record_job_enqueued(&enqueued.job.kind);
        }
        Ok(Response::new(pb::EnqueueJobResponse { job: Some(job_to_pb(&enqueued.job)), duplicate: enqueued.duplicate }))
    }

    async fn enqueue_jobs(
        &self,
        request: Request<pb::EnqueueJobsRequest>,
    ) -> Result<Response<pb::EnqueueJobsResponse>, Status> {
        let ctx = context::of(&request)?;
        let tenant = ctx.tenant()?.id.clone();
        let jobs = new_jobs(&tenant, request.into_inner())?;
        let mut tx = crate::db::begin(&self.pool).await.map_err(ApiError::from)?;
        let enqueued = queue::enqueue_many(&mut tx, jobs).await.map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        let results = enqueued
            .iter()
            .map(|e| {
                if !e.duplicate {
                    self.metrics.record_job_enqueued(&e.job.kind);
                }
                pb::EnqueueJobResponse { job: Some(job_to_pb(&e.job)), duplicate: e.duplicate }
            })
            .collect();
        Ok(Response::new(pb::EnqueueJobsResponse { results }))
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::GetJobResponse>, Status> {
        let tenant = context::of(&request)?.tenant()?.id.clone();
        let job = queue::get(&self.pool, &tenant, job_id(&request.get_ref().job_id)?).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::GetJobResponse { job: Some(job_to_pb(&job)) }))
    }

    async fn list_jobs(&self, request: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let tenant = context::of(&request)?.tenant()?.id.clone();
        let request = request.into_inner();
        let size = pagination::page_size(request.page_size)?;
        let query = ListQuery::new("jobs", queue::LIST_ORDER)
            .filter("state", request.state)
            .filter("kind", &request.kind)
            .filter("queue", &request.queue);
        let cursor = self.page_tokens.cursor(&query, &request.page_token)?;
        for (field, value) in [("kind", &request.kind), ("queue", &request.queue)] {
            if !value.is_empty() && !queue::is_name(value, 128) {
                return Err(ApiError::invalid(field, "must be letters, digits, `_`, `-` or `.`").into());
            }
        }
        let filter = ListFilter {
            state: state_from_pb(request.state)?,
            kind: Some(request.kind).filter(|k| !k.is_empty()),
            queue: Some(request.queue).filter(|q| !q.is_empty()),
        };
        let mut jobs =
            queue::list(&self.pool, &tenant, &filter, size, cursor.as_ref()).await.map_err(ApiError::from)?;
        let next_page_token = self
            .page_tokens
            .next_page(&query, &mut jobs, size, |job| Cursor { created_at: job.created_at, id: job.id.clone() });
        Ok(Response::new(pb::ListJobsResponse { jobs: jobs.iter().map(job_to_pb).collect(), next_page_token }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let tenant = context::of(&request)?.tenant()?.id.clone();
        let job =
            queue::cancel(&self.pool, &tenant, job_id(&request.get_ref().job_id)?).await.map_err(ApiError::from)?;
        self.events.job_changed(&job.id);
        Ok(Response::new(pb::CancelJobResponse { job: Some(job_to_pb(&job)) }))
    }

    async fn retry_job(&self, request: Request<pb::RetryJobRequest>) -> Result<Response<pb::RetryJobResponse>, Status> {
        let tenant = context::of(&request)?.tenant()?.id.clone();
        let job =
            queue::retry(&self.pool, &tenant, job_id(&request.get_ref().job_id)?).await.map_err(ApiError::from)?;
        self.events.job_changed(&job.id);
        Ok(Response::new(pb::RetryJobResponse { job: Some(job_to_pb(&job)) }))
    }

    type WatchJobStream = WatchStream;

    async fn watch_job(&self, request: Request<pb::WatchJobRequest>) -> Result<Response<WatchStream>, Status> {
        let tenant = context::of(&request)?.tenant()?.id.clone();
        let id = job_id(&request.get_ref().job_id)?.to_owned();
        let mut changes = self.events.subscribe_changes();
        let first = queue::get(&self.pool, &tenant, &id).await.map_err(ApiError::from)?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let pool = self.pool.clone();
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            let mut last: Option<pb::Job> = None;
            let mut job = first;
            loop {
                let snapshot = job_to_pb(&job);
                if last.as_ref() != Some(&snapshot) {
                    if tx.send(Ok(pb::WatchJobResponse { job: Some(snapshot.clone()) })).await.is_err() {
                        return;
                    }
                    last = Some(snapshot);
                }
                if job.state().is_final() {
                    return;
                }
                let poll = tokio::time::sleep(WATCH_POLL);
                tokio::pin!(poll);
                loop {
                    tokio::select! {
                        () = &mut poll => break,
                        () = tx.closed() => return,
                        () = stopping.cancelled() => {
                            drop(tx.send(Err(shutting_down())).await);
                            return;
                        }
                        changed = changes.recv() => match changed {
                            Ok(changed) if *changed == *id => break,
                            Ok(_) => continue,
                            Err(_) => break,
                        },
                    }
                }
                job = match queue::get(&pool, &tenant, &id).await {
                    Ok(job) => job,
                    Err(JobError::NotFound(_)) => {
                        // Pruned by retention while watched: the stream just ends.
                        return;
                    }
                    Err(error) => {
                        drop(tx.send(Err(Status::from(ApiError::from(error)))).await);
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn lease_jobs(
        &self,
        request: Request<pb::LeaseJobsRequest>,
    ) -> Result<Response<pb::LeaseJobsResponse>, Status> {
        let ctx = context::of(&request)?;
        let tenant = ctx.tenant_if_any().map(|t| t.id.clone());
        let deadline = tokio::time::Instant::from_std(ctx.deadline);
        let request = request.into_inner();
        let queue_name = match request.queue.as_str() {
            "" => DEFAULT_QUEUE,
            BUILTIN_QUEUE => {
                return Err(ApiError::invalid("queue", "built-in jobs are run by Tenantry's own workers").into());
            }
            name if queue::is_name(name, 64) => name,
            _ => return Err(ApiError::invalid("queue", "must be 1 to 64 letters, digits, `_`, `-` or `.`").into()),
        };
        for (i, kind) in request.kinds.iter().enumerate() {
            if !queue::is_name(kind, 128) {
                return Err(ApiError::invalid(
                    format!("kinds[{i}]"),
                    "must be 1 to 128 letters, digits, `_`, `-` or `.`",
                )
                .into());
            }
        }
        let max_jobs = match request.max_jobs {
            0 => 1,
            n @ 1..=100 => n as usize,
            _ => return Err(ApiError::invalid("max_jobs", "must be between 0 and 100").into()),
        };
        let lease =
            lease_duration("lease_duration", request.lease_duration.as_ref())?.unwrap_or(Duration::from_secs(30));
        let wait = duration_field("wait_duration", request.wait_duration.as_ref())?.unwrap_or_default();
        if wait > Duration::from_secs(30) {
            return Err(ApiError::invalid("wait_duration", "must be at most 30 seconds").into());
        }
        if request.worker_id.chars().count() > 128 {
            return Err(ApiError::invalid("worker_id", "must be at most 128 characters").into());
        }
        // Answer (empty) a little before the call's deadline rather than after it.
        let until = (tokio::time::Instant::now() + wait).min(deadline - Duration::from_millis(50));
        let mut wake = self.events.subscribe_available();
        let fetch = FetchRequest {
            queue: queue_name,
            kinds: &request.kinds,
            tenant: tenant.as_ref(),
            limit: max_jobs,
            lease,
            worker_id: &request.worker_id,
        };
        loop {
            let jobs = lease::fetch(&self.pool, &fetch).await.map_err(ApiError::from)?;
            if !jobs.is_empty() || tokio::time::Instant::now() >= until || self.stopping.is_cancelled() {
                for job in &jobs {
                    self.events.job_changed(&job.id);
                }
                let jobs = jobs
                    .iter()
                    .map(|job| pb::LeasedJob {
                        job: Some(job_to_pb(job)),
                        attempt: job.attempt,
                        lease_expire_time: job.lease_expires_at.map(timestamp),
                    })
                    .collect();
                return Ok(Response::new(pb::LeaseJobsResponse { jobs }));
            }
            let remaining = until.saturating_duration_since(tokio::time::Instant::now());
            wait_for_work(&mut wake, queue_name, remaining.min(Duration::from_secs(1)), &self.stopping).await;
        }
    }

    async fn heartbeat_job(
        &self,
        request: Request<pb::HeartbeatJobRequest>,
    ) -> Result<Response<pb::HeartbeatJobResponse>, Status> {
        let tenant = context::of(&request)?.tenant_if_any().map(|t| t.id.clone());
        let request = request.into_inner();
        let id = job_id(&request.job_id)?;
        if request.attempt < 1 {
            return Err(ApiError::invalid("attempt", "must be the lease's attempt (1 or more)").into());
        }
        let lease = lease_duration("lease_duration", request.lease_duration.as_ref())?;
        let beat =
            lease::heartbeat(&self.pool, tenant.as_ref(), id, request.attempt, lease).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::HeartbeatJobResponse {
            lease_expire_time: Some(timestamp(beat.lease_expires_at)),
            cancel_requested: beat.cancel_requested,
        }))
    }

    async fn complete_job(
        &self,
        request: Request<pb::CompleteJobRequest>,
    ) -> Result<Response<pb::CompleteJobResponse>, Status> {
        let tenant = context::of(&request)?.tenant_if_any().map(|t| t.id.clone());
        let request = request.into_inner();
        let id = job_id(&request.job_id)?;
        if request.attempt < 1 {
            return Err(ApiError::invalid("attempt", "must be the lease's attempt (1 or more)").into());
        }
        let result = json_field("result", request.result.as_ref())?;
        let job =
            lease::complete(&self.pool, tenant.as_ref(), id, request.attempt, &result).await.map_err(ApiError::from)?;
        self.record_attempt(&job);
        self.events.job_changed(&job.id);
        Ok(Response::new(pb::CompleteJobResponse { job: Some(job_to_pb(&job)) }))
    }

    async fn fail_job(&self, request: Request<pb::FailJobRequest>) -> Result<Response<pb::FailJobResponse>, Status> {
        let tenant = context::of(&request)?.tenant_if_any().map(|t| t.id.clone());
        let request = request.into_inner();
        let id = job_id(&request.job_id)?;
        if request.attempt < 1 {
            return Err(ApiError::invalid("attempt", "must be the lease's attempt (1 or more)").into());
        }
        if request.error_message.len() > 4096 {
            return Err(ApiError::invalid("error_message", "must be at most 4 KiB").into());
        }
        let retry_after = duration_field("retry_after", request.retry_after.as_ref())?;
        if retry_after.is_some_and(|d| d > Duration::from_secs(366 * 86_400)) {
            return Err(ApiError::invalid("retry_after", "must be at most a year").into());
        }
        let failure = lease::Failure { message: request.error_message, retry_after, discard: request.discard };
        let job =
            lease::fail(&self.pool, tenant.as_ref(), id, request.attempt, &failure).await.map_err(ApiError::from)?;
        self.record_attempt(&job);
        self.events.job_changed(&job.id);
        Ok(Response::new(pb::FailJobResponse { job: Some(job_to_pb(&job)) }))
    }
}
