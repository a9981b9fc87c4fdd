//! JobsService end to end: producing and inspecting jobs, the external
//! worker protocol with fencing, cancellation, fairness across tenants, and
//! the transactional and unique-key guarantees of enqueue.

use std::time::Duration;

use tenantry::{
    jobs::{lease, periodic, queue, rescuer},
    proto::tenantry::v1::{
        CancelJobRequest, CompleteJobRequest, EnqueueJobRequest, FailJobRequest, GetJobRequest, HeartbeatJobRequest,
        JobState, LeaseJobsRequest, ListJobsRequest, RetryJobRequest, WatchJobRequest,
        jobs_service_client::JobsServiceClient,
    },
    tenancy::TenantId,
};
use tonic::{Code, Request, transport::Channel};
use tonic_types::StatusExt;

use crate::harness::{TestApp, with_metadata};

/// A tenant row on `plan`, straight in the table.
pub async fn insert_tenant(app: &TestApp, slug: &str, plan: &str) -> TenantId {
    crate::harness::tenants::insert_tenant_row(app, slug, plan, "active").await
}

/// A jobs client.
pub fn jobs(app: &TestApp) -> JobsServiceClient<Channel> {
    JobsServiceClient::new(app.channel.clone())
}

/// `message` as the platform admin acting in `tenant`.
pub fn in_tenant<T>(app: &TestApp, tenant: &TenantId, message: T) -> Request<T> {
    let bearer = format!("Bearer {}", app.admin_key);
    with_metadata(message, &[("authorization", &bearer), ("x-tenant-id", tenant.as_str())])
}

fn enqueue(kind: &str) -> EnqueueJobRequest {
    EnqueueJobRequest { kind: kind.into(), ..Default::default() }
}

fn lease_req(max_jobs: i32) -> LeaseJobsRequest {
    LeaseJobsRequest { max_jobs, worker_id: "test-worker".into(), ..Default::default() }
}

fn field_of(status: &tonic::Status) -> String {
    status.get_error_details().bad_request().map(|b| b.field_violations[0].field.clone()).unwrap_or_default()
}

#[tokio::test]
async fn an_enqueued_job_can_be_read_listed_and_paged() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut request = enqueue(if i % 2 == 0 { "email.send" } else { "report.build" });
        request.payload = Some(tenantry::jobs::convert::json_to_struct(&serde_json::json!({"n": i})));
        request.priority = i;
        let response = client.enqueue_job(in_tenant(&app, &acme, request)).await.unwrap().into_inner();
        let job = response.job.unwrap();
        assert!(!response.duplicate);
        assert_eq!(job.state(), JobState::Available);
        assert_eq!(job.tenant_id, acme.as_str());
        assert_eq!(job.queue, "default");
        ids.push(job.id);
    }
    let job = client
        .get_job(in_tenant(&app, &acme, GetJobRequest { job_id: ids[2].clone() }))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(tenantry::jobs::convert::struct_to_json(job.payload.as_ref().unwrap()), serde_json::json!({"n": 2}));
    assert_eq!(job.max_attempts, 10);

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_jobs(in_tenant(
                &app,
                &acme,
                ListJobsRequest { page_size: 2, page_token: token, ..Default::default() },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.jobs.len() <= 2);
        seen.extend(page.jobs.into_iter().map(|j| j.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let only_email = client
        .list_jobs(in_tenant(&app, &acme, ListJobsRequest { kind: "email.send".into(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_email.jobs.len(), 3);
    let running = client
        .list_jobs(in_tenant(&app, &acme, ListJobsRequest { state: JobState::Running as i32, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert!(running.jobs.is_empty());
}

#[tokio::test]
async fn another_tenants_job_is_not_found_everywhere() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let other = insert_tenant(&app, "other", "pro").await;
    let mut client = jobs(&app);
    let job =
        client.enqueue_job(in_tenant(&app, &acme, enqueue("email.send"))).await.unwrap().into_inner().job.unwrap();
    let id = job.id.clone();

    let status = client.get_job(in_tenant(&app, &other, GetJobRequest { job_id: id.clone() })).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client.cancel_job(in_tenant(&app, &other, CancelJobRequest { job_id: id.clone() })).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client.retry_job(in_tenant(&app, &other, RetryJobRequest { job_id: id.clone() })).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client.watch_job(in_tenant(&app, &other, WatchJobRequest { job_id: id.clone() })).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // The other tenant's worker sees nothing to lease, and cannot act on the job.
    let leased = client.lease_jobs(in_tenant(&app, &other, lease_req(10))).await.unwrap().into_inner();
    assert!(leased.jobs.is_empty());
    let leased = client.lease_jobs(in_tenant(&app, &acme, lease_req(10))).await.unwrap().into_inner();
    assert_eq!(leased.jobs.len(), 1);
    let complete = CompleteJobRequest { job_id: id.clone(), attempt: 1, result: None };
    let status = client.complete_job(in_tenant(&app, &other, complete)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let heartbeat = HeartbeatJobRequest { job_id: id.clone(), attempt: 1, lease_duration: None };
    let status = client.heartbeat_job(in_tenant(&app, &other, heartbeat)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let listed = client.list_jobs(in_tenant(&app, &other, ListJobsRequest::default())).await.unwrap().into_inner();
    assert!(listed.jobs.is_empty());
}

#[tokio::test]
async fn invalid_enqueue_requests_name_the_field() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);
    let cases: Vec<(EnqueueJobRequest, &str)> = vec![
        (enqueue(""), "kind"),
        (enqueue("bad kind!"), "kind"),
        (enqueue("tenantry.tenant.purge"), "kind"),
        (EnqueueJobRequest { queue: "tenantry".into(), ..enqueue("email.send") }, "queue"),
        (EnqueueJobRequest { max_attempts: -1, ..enqueue("email.send") }, "max_attempts"),
        (EnqueueJobRequest { unique_key: "k".repeat(300), ..enqueue("email.send") }, "unique_key"),
        (
            EnqueueJobRequest {
                timeout: Some(prost_types::Duration { seconds: -5, nanos: 0 }),
                ..enqueue("email.send")
            },
            "timeout",
        ),
    ];
    for (request, field) in cases {
        let status = client.enqueue_job(in_tenant(&app, &acme, request)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(field_of(&status), field);
    }
    let huge = serde_json::json!({"blob": "x".repeat(300 * 1024)});
    let request =
        EnqueueJobRequest { payload: Some(tenantry::jobs::convert::json_to_struct(&huge)), ..enqueue("email.send") };
    let status = client.enqueue_job(in_tenant(&app, &acme, request)).await.unwrap_err();
    assert_eq!(field_of(&status), "payload");
}

#[tokio::test]
async fn a_job_enqueued_in_a_rolled_back_transaction_never_exists() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    for i in 0..1000 {
        let mut tx = app.pool.begin().await.unwrap();
        let mut job = queue::NewJob::new(Some(acme.clone()), "email.send");
        job.payload = serde_json::json!({ "i": i });
        queue::enqueue(&mut tx, job).await.unwrap();
        tx.rollback().await.unwrap();
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM platform.jobs WHERE tenant_id = $1")
        .bind(acme.as_str())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
    // And a committed one does.
    let mut tx = app.pool.begin().await.unwrap();
    queue::enqueue(&mut tx, queue::NewJob::new(Some(acme.clone()), "email.send")).await.unwrap();
    tx.commit().await.unwrap();
    let listed = jobs(&app).list_jobs(in_tenant(&app, &acme, ListJobsRequest::default())).await.unwrap().into_inner();
    assert_eq!(listed.jobs.len(), 1);
}

#[tokio::test]
async fn concurrent_enqueues_with_one_unique_key_create_one_job() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let calls = (0..32).map(|_| {
        let mut client = jobs(&app);
        let request =
            in_tenant(&app, &acme, EnqueueJobRequest { unique_key: "invoice-42".into(), ..enqueue("invoice.send") });
        async move { client.enqueue_job(request).await.unwrap().into_inner() }
    });
    let responses = futures_join_all(calls).await;
    let created: Vec<_> = responses.iter().filter(|r| !r.duplicate).collect();
    assert_eq!(created.len(), 1);
    let id = &created[0].job.as_ref().unwrap().id;
    assert!(responses.iter().all(|r| &r.job.as_ref().unwrap().id == id));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM platform.jobs WHERE tenant_id = $1")
        .bind(acme.as_str())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

/// Runs futures concurrently (no extra dependency for `join_all`).
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_unique_key_stops_blocking_once_the_job_is_final_unless_a_window_is_set() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);
    let keyed = || EnqueueJobRequest { unique_key: "k".into(), ..enqueue("sync.run") };
    let first = client.enqueue_job(in_tenant(&app, &acme, keyed())).await.unwrap().into_inner().job.unwrap();
    client.cancel_job(in_tenant(&app, &acme, CancelJobRequest { job_id: first.id.clone() })).await.unwrap();
    let second = client.enqueue_job(in_tenant(&app, &acme, keyed())).await.unwrap().into_inner();
    assert!(!second.duplicate);

    let windowed = || EnqueueJobRequest {
        unique_key: "w".into(),
        unique_window: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        ..enqueue("sync.run")
    };
    let first = client.enqueue_job(in_tenant(&app, &acme, windowed())).await.unwrap().into_inner().job.unwrap();
    client.cancel_job(in_tenant(&app, &acme, CancelJobRequest { job_id: first.id.clone() })).await.unwrap();
    let again = client.enqueue_job(in_tenant(&app, &acme, windowed())).await.unwrap().into_inner();
    assert!(again.duplicate);
    assert_eq!(again.job.unwrap().id, first.id);
}

#[tokio::test]
async fn an_external_worker_leases_heartbeats_and_completes_a_job() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);
    let job =
        client.enqueue_job(in_tenant(&app, &acme, enqueue("email.send"))).await.unwrap().into_inner().job.unwrap();
    let leased = client.lease_jobs(in_tenant(&app, &acme, lease_req(5))).await.unwrap().into_inner();
    assert_eq!(leased.jobs.len(), 1);
    let lease = &leased.jobs[0];
    assert_eq!(lease.attempt, 1);
    let running = lease.job.as_ref().unwrap();
    assert_eq!(running.id, job.id);
    assert_eq!(running.state(), JobState::Running);
    assert_eq!(running.worker_id, "test-worker");

    let beat = client
        .heartbeat_job(in_tenant(
            &app,
            &acme,
            HeartbeatJobRequest {
                job_id: job.id.clone(),
                attempt: 1,
                lease_duration: Some(prost_types::Duration { seconds: 120, nanos: 0 }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!beat.cancel_requested);
    assert!(beat.lease_expire_time.unwrap().seconds > lease.lease_expire_time.unwrap().seconds);

    let result = tenantry::jobs::convert::json_to_struct(&serde_json::json!({"sent": 3}));
    let done = client
        .complete_job(in_tenant(
            &app,
            &acme,
            CompleteJobRequest { job_id: job.id.clone(), attempt: 1, result: Some(result.clone()) },
        ))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(done.state(), JobState::Completed);
    assert_eq!(done.result, Some(result));
    assert!(done.finish_time.is_some());
    // Completing twice is refused and changes nothing.
    let status = client
        .complete_job(in_tenant(&app, &acme, CompleteJobRequest { job_id: job.id.clone(), attempt: 1, result: None }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_stale_workers_late_completion_changes_nothing() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);
    let job =
        client.enqueue_job(in_tenant(&app, &acme, enqueue("email.send"))).await.unwrap().into_inner().job.unwrap();
    client.lease_jobs(in_tenant(&app, &acme, lease_req(1))).await.unwrap();
    // The first worker vanishes: its lease runs out and the rescuer fails the attempt.
    sqlx::query("UPDATE platform.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(&job.id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(rescuer::rescue_expired(&app.pool).await.unwrap(), ["email.send"]);
    let rescued = client.get_job(in_tenant(&app, &acme, GetJobRequest { job_id: job.id.clone() })).await.unwrap();
    let rescued = rescued.into_inner().job.unwrap();
    assert_eq!(rescued.state(), JobState::Retryable);
    assert_eq!(rescued.errors[0].message, "lease expired");
    sqlx::query("UPDATE platform.jobs SET run_at = now() WHERE id = $1")
        .bind(&job.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let second = client.lease_jobs(in_tenant(&app, &acme, lease_req(1))).await.unwrap().into_inner();
    assert_eq!(second.jobs[0].attempt, 2);

    let late = CompleteJobRequest { job_id: job.id.clone(), attempt: 1, result: None };
    let status = client.complete_job(in_tenant(&app, &acme, late)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let late =
        FailJobRequest { job_id: job.id.clone(), attempt: 1, error_message: "late".into(), ..Default::default() };
    assert_eq!(client.fail_job(in_tenant(&app, &acme, late)).await.unwrap_err().code(), Code::FailedPrecondition);
    let late = HeartbeatJobRequest { job_id: job.id.clone(), attempt: 1, lease_duration: None };
    assert_eq!(client.heartbeat_job(in_tenant(&app, &acme, late)).await.unwrap_err().code(), Code::FailedPrecondition);
    let still = client.get_job(in_tenant(&app, &acme, GetJobRequest { job_id: job.id.clone() })).await.unwrap();
    let still = still.into_inner().job.unwrap();
    assert_eq!((still.state(), still.attempt), (JobState::Running, 2));

    let current = CompleteJobRequest { job_id: job.id.clone(), attempt: 2, result: None };
    let done = client.complete_job(in_tenant(&app, &acme, current)).await.unwrap().into_inner().job.unwrap();
    assert_eq!(done.state(), JobState::Completed);
}

#[tokio::test]
async fn failures_back_off_then_discard_keeping_the_error_history() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);
    let request = EnqueueJobRequest { max_attempts: 2, ..enqueue("email.send") };
    let job = client.enqueue_job(in_tenant(&app, &acme, request)).await.unwrap().into_inner().job.unwrap();

    client.lease_jobs(in_tenant(&app, &acme, lease_req(1))).await.unwrap();
    let fail =
        FailJobRequest { job_id: job.id.clone(), attempt: 1, error_message: "smtp down".into(), ..Default::default() };
    let failed = client.fail_job(in_tenant(&app, &acme, fail)).await.unwrap().into_inner().job.unwrap();
    assert_eq!(failed.state(), JobState::Retryable);
    // Backoff after attempt 1: 2 s ± 20%.
    let delay = failed.run_time.unwrap().seconds - chrono::Utc::now().timestamp();
    assert!((0..=3).contains(&delay), "{delay}");
    // Not leased before its time.
    assert!(client.lease_jobs(in_tenant(&app, &acme, lease_req(1))).await.unwrap().into_inner().jobs.is_empty());

    sqlx::query("UPDATE platform.jobs SET run_at = now() WHERE id = $1")
        .bind(&job.id)
        .execute(&app.pool)
        .await
        .unwrap();
    client.lease_jobs(in_tenant(&app, &acme, lease_req(1))).await.unwrap();
    let fail =
        FailJobRequest { job_id: job.id.clone(), attempt: 2, error_message: "still down".into(), ..Default::default() };
    let failed = client.fail_job(in_tenant(&app, &acme, fail)).await.unwrap().into_inner().job.unwrap();
    assert_eq!(failed.state(), JobState::Discarded);
    let messages: Vec<_> = failed.errors.iter().map(|e| (e.attempt, e.message.as_str())).collect();
    assert_eq!(messages, [(1, "smtp down"), (2, "still down")]);

    // A retry hint wins over the backoff, and `discard` gives up at once.
    let job =
        client.enqueue_job(in_tenant(&app, &acme, enqueue("email.send"))).await.unwrap().into_inner().job.unwrap();
    client.lease_jobs(in_tenant(&app, &acme, lease_req(1))).await.unwrap();
    let fail = FailJobRequest {
        job_id: job.id.clone(),
        attempt: 1,
        error_message: "rate limited".into(),
        retry_after: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
        discard: false,
    };
    let failed = client.fail_job(in_tenant(&app, &acme, fail)).await.unwrap().into_inner().job.unwrap();
    let delay = failed.run_time.unwrap().seconds - chrono::Utc::now().timestamp();
    assert!((598..=600).contains(&delay), "{delay}");
    sqlx::query("UPDATE platform.jobs SET run_at = now() WHERE id = $1")
        .bind(&job.id)
        .execute(&app.pool)
        .await
        .unwrap();
    client.lease_jobs(in_tenant(&app, &acme, lease_req(1))).await.unwrap();
    let fail = FailJobRequest {
        job_id: job.id.clone(),
        attempt: 2,
        error_message: "bad address".into(),
        discard: true,
        ..Default::default()
    };
    let failed = client.fail_job(in_tenant(&app, &acme, fail)).await.unwrap().into_inner().job.unwrap();
    assert_eq!(failed.state(), JobState::Discarded);

    // A discarded job can be retried, with one more attempt allowed.
    let retried = client.retry_job(in_tenant(&app, &acme, RetryJobRequest { job_id: job.id.clone() })).await.unwrap();
    let retried = retried.into_inner().job.unwrap();
    assert_eq!(retried.state(), JobState::Available);
    assert_eq!(retried.max_attempts, 10);
}

#[tokio::test]
async fn cancelling_a_running_job_reaches_its_worker() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);
    let job =
        client.enqueue_job(in_tenant(&app, &acme, enqueue("video.encode"))).await.unwrap().into_inner().job.unwrap();
    client.lease_jobs(in_tenant(&app, &acme, lease_req(1))).await.unwrap();

    let cancelled =
        client.cancel_job(in_tenant(&app, &acme, CancelJobRequest { job_id: job.id.clone() })).await.unwrap();
    let cancelled = cancelled.into_inner().job.unwrap();
    assert_eq!(cancelled.state(), JobState::Running);
    assert!(cancelled.cancel_requested);
    let status =
        client.retry_job(in_tenant(&app, &acme, RetryJobRequest { job_id: job.id.clone() })).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    let beat = HeartbeatJobRequest { job_id: job.id.clone(), attempt: 1, lease_duration: None };
    assert!(client.heartbeat_job(in_tenant(&app, &acme, beat)).await.unwrap().into_inner().cancel_requested);
    let fail =
        FailJobRequest { job_id: job.id.clone(), attempt: 1, error_message: "stopped".into(), ..Default::default() };
    let failed = client.fail_job(in_tenant(&app, &acme, fail)).await.unwrap().into_inner().job.unwrap();
    assert_eq!(failed.state(), JobState::Cancelled);

    // Cancelling again is a no-op; a completed job cannot be cancelled.
    let again = client.cancel_job(in_tenant(&app, &acme, CancelJobRequest { job_id: job.id.clone() })).await.unwrap();
    assert_eq!(again.into_inner().job.unwrap().state(), JobState::Cancelled);
    let other =
        client.enqueue_job(in_tenant(&app, &acme, enqueue("video.encode"))).await.unwrap().into_inner().job.unwrap();
    client.lease_jobs(in_tenant(&app, &acme, lease_req(1))).await.unwrap();
    let complete = CompleteJobRequest { job_id: other.id.clone(), attempt: 1, result: None };
    client.complete_job(in_tenant(&app, &acme, complete)).await.unwrap();
    let status = client.cancel_job(in_tenant(&app, &acme, CancelJobRequest { job_id: other.id })).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_built_in_job_stops_when_cancelled_and_watch_streams_until_final() {
    // A short lease: heartbeats (a third of it) carry the cancel to the handler.

    let app = TestApp::builder().workers(|w| w.lease = Duration::from_secs(3)).spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);
    let request = EnqueueJobRequest {
        payload: Some(tenantry::jobs::convert::json_to_struct(&serde_json::json!({"sleep_ms": 600000}))),
        ..enqueue("tenantry.noop")
    };
    let job = client.enqueue_job(in_tenant(&app, &acme, request)).await.unwrap().into_inner().job.unwrap();
    assert_eq!(job.queue, "tenantry");
    let mut stream = client
        .watch_job(in_tenant(&app, &acme, WatchJobRequest { job_id: job.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    let mut states = Vec::new();
    let mut cancelled = false;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(60), stream.message()).await.unwrap().unwrap() {
        let snapshot = message.job.unwrap();
        states.push(snapshot.state());
        if snapshot.state() == JobState::Running && !cancelled {
            cancelled = true;
            client.cancel_job(in_tenant(&app, &acme, CancelJobRequest { job_id: job.id.clone() })).await.unwrap();
        }
    }
    // The first snapshot is the job as it is when watching starts.
    assert!(matches!(states.first(), Some(JobState::Available | JobState::Running)), "{states:?}");
    assert!(states.contains(&JobState::Running), "{states:?}");
    assert_eq!(states.last(), Some(&JobState::Cancelled), "{states:?}");
}

#[tokio::test]
async fn watching_a_built_in_noop_job_ends_at_completed() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);
    let job =
        client.enqueue_job(in_tenant(&app, &acme, enqueue("tenantry.noop"))).await.unwrap().into_inner().job.unwrap();
    let mut stream = client
        .watch_job(in_tenant(&app, &acme, WatchJobRequest { job_id: job.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.unwrap().unwrap() {
        last = message.job;
    }
    let last = last.unwrap();
    assert_eq!(last.state(), JobState::Completed);
    assert_eq!(last.attempt, 1);
    assert!(last.result.is_some());
}

#[tokio::test]
async fn a_long_poll_lease_returns_as_soon_as_a_job_is_enqueued() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut waiting = jobs(&app);
    let request = in_tenant(
        &app,
        &acme,
        LeaseJobsRequest { wait_duration: Some(prost_types::Duration { seconds: 20, nanos: 0 }), ..lease_req(1) },
    );
    let lease = tokio::spawn(async move { waiting.lease_jobs(request).await });
    // Give the call time to start waiting (arrangement, not an assertion:
    // had it not started yet, it would lease the job at once).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job =
        jobs(&app).enqueue_job(in_tenant(&app, &acme, enqueue("email.send"))).await.unwrap().into_inner().job.unwrap();
    let started = std::time::Instant::now();
    let leased = lease.await.unwrap().unwrap().into_inner();
    assert_eq!(leased.jobs.len(), 1);
    assert_eq!(leased.jobs[0].job.as_ref().unwrap().id, job.id);
    assert!(started.elapsed() < Duration::from_secs(20));

    let empty =
        LeaseJobsRequest { wait_duration: Some(prost_types::Duration { seconds: 1, nanos: 0 }), ..lease_req(1) };
    assert!(jobs(&app).lease_jobs(in_tenant(&app, &acme, empty)).await.unwrap().into_inner().jobs.is_empty());
}

#[tokio::test]
async fn invalid_lease_requests_name_the_field() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);
    let cases = [
        (LeaseJobsRequest { queue: "tenantry".into(), ..lease_req(1) }, "queue"),
        (LeaseJobsRequest { max_jobs: 101, ..lease_req(1) }, "max_jobs"),
        (LeaseJobsRequest { kinds: vec!["no spaces".into()], ..lease_req(1) }, "kinds[0]"),
        (
            LeaseJobsRequest { lease_duration: Some(prost_types::Duration { seconds: 1, nanos: 0 }), ..lease_req(1) },
            "lease_duration",
        ),
        (
            LeaseJobsRequest { wait_duration: Some(prost_types::Duration { seconds: 31, nanos: 0 }), ..lease_req(1) },
            "wait_duration",
        ),
    ];
    for (request, field) in cases {
        let status = client.lease_jobs(in_tenant(&app, &acme, request)).await.unwrap_err();
        assert_eq!((status.code(), field_of(&status)), (Code::InvalidArgument, field.to_owned()));
    }
}

#[tokio::test]
async fn a_deep_backlog_delays_another_tenants_job_by_at_most_one_batch() {
    let app = TestApp::builder().spawn().await;
    let busy = insert_tenant(&app, "busy", "enterprise").await;
    let quiet = insert_tenant(&app, "quiet", "enterprise").await;
    // 100,000 ready jobs for one tenant, older than the other tenant's one job.
    sqlx::query(
        "INSERT INTO platform.jobs (id, tenant_id, kind, queue, state, max_attempts, timeout_ms, run_at, created_at)
         SELECT 'job_' || lpad(to_hex(g), 24, '0'), $1, 'bulk.item', 'default', 'available', 10, 60000,
                now() - interval '1 hour', now() - interval '1 hour'
           FROM generate_series(1, 100000) g",
    )
    .bind(busy.as_str())
    .execute(&app.pool)
    .await
    .unwrap();
    let mut client = jobs(&app);
    let lonely =
        client.enqueue_job(in_tenant(&app, &quiet, enqueue("email.send"))).await.unwrap().into_inner().job.unwrap();
    // A platform-wide worker (the admin without x-tenant-id) leases one batch.
    let batch = client.lease_jobs(app.as_admin(lease_req(10))).await.unwrap().into_inner();
    assert_eq!(batch.jobs.len(), 10);
    let ids: Vec<_> = batch.jobs.iter().map(|j| j.job.as_ref().unwrap().id.clone()).collect();
    assert!(ids.contains(&lonely.id), "the quiet tenant's job is in the first batch");
}

#[tokio::test]
async fn a_tenant_never_runs_more_jobs_than_its_plan_allows() {
    let app = TestApp::builder().spawn().await;
    let free = insert_tenant(&app, "small", "free").await; // max_concurrent_jobs = 2
    let mut client = jobs(&app);
    for _ in 0..10 {
        client.enqueue_job(in_tenant(&app, &free, enqueue("email.send"))).await.unwrap();
    }
    let first = client.lease_jobs(in_tenant(&app, &free, lease_req(10))).await.unwrap().into_inner();
    assert_eq!(first.jobs.len(), 2);
    assert!(client.lease_jobs(app.as_admin(lease_req(10))).await.unwrap().into_inner().jobs.is_empty());
    let done = &first.jobs[0];
    let complete =
        CompleteJobRequest { job_id: done.job.as_ref().unwrap().id.clone(), attempt: done.attempt, result: None };
    client.complete_job(in_tenant(&app, &free, complete)).await.unwrap();
    let next = client.lease_jobs(in_tenant(&app, &free, lease_req(10))).await.unwrap().into_inner();
    assert_eq!(next.jobs.len(), 1);
}

#[tokio::test]
async fn a_suspended_tenants_jobs_are_not_leased() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    jobs(&app).enqueue_job(in_tenant(&app, &acme, enqueue("email.send"))).await.unwrap();
    sqlx::query("UPDATE platform.tenants SET state = 'suspended' WHERE id = $1")
        .bind(acme.as_str())
        .execute(&app.pool)
        .await
        .unwrap();
    assert!(jobs(&app).lease_jobs(app.as_admin(lease_req(10))).await.unwrap().into_inner().jobs.is_empty());
}

#[tokio::test]
async fn a_periodic_job_is_enqueued_once_per_period_across_nodes() {
    let app = TestApp::builder().spawn().await;
    let job = periodic::PeriodicJob { kind: "tenantry.noop", every: Duration::from_secs(3600) };
    let key = periodic::period_key(job.every, chrono::Utc::now().timestamp_millis());
    let nodes = (0..8).map(|_| {
        let pool = app.pool.clone();
        let key = key.clone();
        async move { periodic::enqueue_once(&pool, &job, &key).await.unwrap() }
    });
    futures_join_all(nodes).await;
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM platform.jobs WHERE kind = 'tenantry.noop' AND unique_key = $1")
            .bind(&key)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn finished_jobs_are_pruned_after_their_retention() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);
    let old = client.enqueue_job(in_tenant(&app, &acme, enqueue("a.b"))).await.unwrap().into_inner().job.unwrap();
    let recent = client.enqueue_job(in_tenant(&app, &acme, enqueue("a.b"))).await.unwrap().into_inner().job.unwrap();
    let pending = client.enqueue_job(in_tenant(&app, &acme, enqueue("a.b"))).await.unwrap().into_inner().job.unwrap();
    for id in [&old.id, &recent.id] {
        client.cancel_job(in_tenant(&app, &acme, CancelJobRequest { job_id: id.clone() })).await.unwrap();
    }
    sqlx::query("UPDATE platform.jobs SET finished_at = now() - interval '8 days' WHERE id = $1")
        .bind(&old.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let retention =
        rescuer::Retention { completed: Duration::from_secs(86_400), failed: Duration::from_secs(7 * 86_400) };
    assert_eq!(rescuer::prune(&app.pool, retention).await.unwrap(), 1);
    for (id, exists) in [(&old.id, false), (&recent.id, true), (&pending.id, true)] {
        let found = client.get_job(in_tenant(&app, &acme, GetJobRequest { job_id: id.clone() })).await;
        assert_eq!(found.is_ok(), exists, "{id}");
    }
}

#[tokio::test]
async fn released_leases_are_available_again_without_using_an_attempt() {
    let app = TestApp::builder().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let job = jobs(&app).enqueue_job(in_tenant(&app, &acme, enqueue("a.b"))).await.unwrap().into_inner().job.unwrap();
    let leased = jobs(&app).lease_jobs(in_tenant(&app, &acme, lease_req(1))).await.unwrap().into_inner();
    assert_eq!(leased.jobs[0].attempt, 1);
    assert_eq!(lease::release(&app.pool, &[(job.id.clone(), 1)]).await.unwrap(), 1);
    let again = jobs(&app).lease_jobs(in_tenant(&app, &acme, lease_req(1))).await.unwrap().into_inner();
    assert_eq!(again.jobs[0].attempt, 1);
}

#[tokio::test]
async fn the_periodic_purge_job_drops_a_deleted_tenant_and_its_jobs_after_the_grace_period() {
    let app = TestApp::builder().workers(|w| w.purge_interval = Duration::from_secs(1)).spawn().await;
    let gone = insert_tenant(&app, "gone", "pro").await;
    let kept = insert_tenant(&app, "kept", "pro").await;
    for tenant in [&gone, &kept] {
        sqlx::query(&format!("CREATE SCHEMA \"{}\"", tenant.schema())).execute(&app.pool).await.unwrap();
        jobs(&app).enqueue_job(in_tenant(&app, tenant, enqueue("email.send"))).await.unwrap();
    }
    sqlx::query(
        "UPDATE platform.tenants SET state = 'deleted', deleted_at = now(), purge_after = now() - interval '1 second'
          WHERE id = $1",
    )
    .bind(gone.as_str())
    .execute(&app.pool)
    .await
    .unwrap();
    let schema_exists = |tenant: TenantId| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(tenant.schema())
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let purged = crate::harness::eventually(Duration::from_secs(30), || {
        let check = schema_exists(gone.clone());
        async move { !check.await }
    })
    .await;
    assert!(purged, "the deleted tenant's schema was dropped");
    assert!(schema_exists(kept.clone()).await, "the live tenant's schema is untouched");
    let jobs_left = |tenant: &TenantId| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM platform.jobs WHERE tenant_id = $1")
            .bind(tenant.as_str().to_owned())
            .fetch_one(&app.pool)
    };
    assert_eq!(jobs_left(&gone).await.unwrap(), 0);
    assert_eq!(jobs_left(&kept).await.unwrap(), 1);
}

#[tokio::test]
async fn the_rest_gateway_enqueues_leases_and_completes_a_job() {
    use http::Method;

    use crate::rest::{bearer, send};
    let app = TestApp::builder().spawn().await;
    insert_tenant(&app, "acme", "pro").await;
    let admin = bearer(&app);
    let headers = [("authorization", admin.as_str()), ("x-tenant-id", "acme")];
    let body = r#"{"kind": "email.send", "payload": {"to": "a@example.com"}}"#;
    let created = send(app.http_addr, Method::POST, "/v1/jobs", &headers, Some(body)).await;
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["job"]["id"].as_str().unwrap().to_owned();
    let leased = send(app.http_addr, Method::POST, "/v1/jobs:lease", &headers, Some(r#"{"maxJobs": 1}"#)).await;
    assert_eq!(leased.status, 200, "{}", leased.text());
    assert_eq!(leased.json()["jobs"][0]["job"]["id"], id.as_str());
    let path = format!("/v1/jobs/{id}:complete");
    let done =
        send(app.http_addr, Method::POST, &path, &headers, Some(r#"{"attempt": 1, "result": {"ok": true}}"#)).await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["job"]["state"], "JOB_STATE_COMPLETED");
    let stale = send(app.http_addr, Method::POST, &path, &headers, Some(r#"{"attempt": 1}"#)).await;
    assert_eq!(stale.status, 400, "a lost lease is FAILED_PRECONDITION: {}", stale.text());
}
