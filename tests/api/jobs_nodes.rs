//! The queue as a fleet runs it: a shutdown ends open WatchJob streams at
//! once, every serving node rescues expired leases (even with
//! `--no-workers`) and fences the stale attempt off, and due work starts
//! promptly however many tenants hold only future, backing-off, suspended or
//! saturated work. Platform-level jobs are stored without a tenant.

use std::time::{Duration, Instant};

use tenantry::{
    jobs::{periodic, queue},
    proto::tenantry::v1::{
        CompleteJobRequest, EnqueueJobRequest, FailJobRequest, GetJobRequest, HeartbeatJobRequest, JobState,
        LeaseJobsRequest, WatchJobRequest,
    },
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    harness::{TestApp, TestAppBuilder, eventually},
    jobs::{in_tenant, insert_tenant, jobs},
};

/// A server whose built-in workers run no periodic jobs (10,000 tenants
/// would otherwise be evaluated for scaling during the test).
fn quiet() -> TestAppBuilder {
    TestApp::builder().workers(|w| {
        w.purge_interval = Duration::ZERO;
        w.usage_rollup_interval = Duration::ZERO;
        w.scaling_interval = Duration::ZERO;
    })
}

fn enqueue(kind: &str) -> EnqueueJobRequest {
    EnqueueJobRequest { kind: kind.into(), ..Default::default() }
}

fn lease_req(max_jobs: i32) -> LeaseJobsRequest {
    LeaseJobsRequest { max_jobs, worker_id: "external".into(), ..Default::default() }
}

#[tokio::test]
async fn a_shutdown_ends_open_watch_streams_at_once_with_a_retryable_status() {
    let app = quiet().spawn().await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);
    // An external kind: nothing runs it, so the watch stays open.
    let job = client.enqueue_job(in_tenant(&app, &acme, enqueue("report.build"))).await.unwrap();
    let job_id = job.into_inner().job.unwrap().id;
    let mut stream = client.watch_job(in_tenant(&app, &acme, WatchJobRequest { job_id })).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("the current state first");
    assert_eq!(first.job.unwrap().state(), JobState::Available);
    let reader = tokio::spawn(async move { stream.message().await });

    let started = Instant::now();
    // Keeping the database: dropping it is the harness's work, not the server's.
    let database = app.stop_keeping_database().await;
    let took = started.elapsed();
    drop(database);
    println!("shutdown with one watch open took {took:?}");
    let ended = tokio::time::timeout(Duration::from_secs(5), reader).await.expect("the stream ends").unwrap();
    let status = ended.expect_err("the stream ends with a status, not a clean end");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let retry = status.get_error_details().retry_info().expect("a retry hint").retry_delay;
    assert!(retry.is_some_and(|d| d <= Duration::from_secs(1)), "{retry:?}");
    assert!(took <= Duration::from_secs(1), "shutdown with only a watch open took {took:?}");
}

#[tokio::test]
async fn a_node_without_workers_rescues_expired_leases_and_refuses_the_stale_attempt() {
    let app = TestApp::builder()
        .configure(|s| s.no_workers = true)
        .workers(|w| w.rescue_interval = Duration::from_millis(200))
        .spawn()
        .await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);
    let job = client.enqueue_job(in_tenant(&app, &acme, enqueue("email.send"))).await.unwrap();
    let id = job.into_inner().job.unwrap().id;
    let leased = client.lease_jobs(in_tenant(&app, &acme, lease_req(1))).await.unwrap().into_inner();
    assert_eq!(leased.jobs.len(), 1);
    let stale = leased.jobs[0].attempt;
    // The API's shortest lease is 5 s; this worker's is 1 s, and then it hangs.
    sqlx::query("UPDATE platform.jobs SET lease_expires_at = now() + interval '1 second' WHERE id = $1")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();

    let started = Instant::now();
    let rescued = eventually(Duration::from_secs(5), || {
        let (mut client, request) = (client.clone(), in_tenant(&app, &acme, GetJobRequest { job_id: id.clone() }));
        async move {
            let job = client.get_job(request).await.unwrap().into_inner().job.unwrap();
            job.state() != JobState::Running
        }
    })
    .await;
    assert!(rescued, "the expired lease was rescued by a node without workers");
    let after = started.elapsed();
    println!("a 1 s lease was rescued {after:?} after it was shortened");
    assert!(after >= Duration::from_millis(900), "not rescued before the lease ended ({after:?})");

    let refused = |status: tonic::Status| {
        assert!(matches!(status.code(), Code::FailedPrecondition | Code::Aborted), "{status:?}");
    };
    let beat = HeartbeatJobRequest { job_id: id.clone(), attempt: stale, ..Default::default() };
    refused(client.heartbeat_job(in_tenant(&app, &acme, beat.clone())).await.unwrap_err());
    let complete = CompleteJobRequest { job_id: id.clone(), attempt: stale, result: None };
    refused(client.complete_job(in_tenant(&app, &acme, complete.clone())).await.unwrap_err());
    let fail =
        FailJobRequest { job_id: id.clone(), attempt: stale, error_message: "late".into(), ..Default::default() };
    refused(client.fail_job(in_tenant(&app, &acme, fail.clone())).await.unwrap_err());

    // Another worker takes the job over; the stale attempt still changes nothing.
    sqlx::query("UPDATE platform.jobs SET run_at = now() WHERE id = $1").bind(&id).execute(&app.pool).await.unwrap();
    let again = client.lease_jobs(in_tenant(&app, &acme, lease_req(1))).await.unwrap().into_inner();
    assert_eq!(again.jobs[0].attempt, stale + 1);
    refused(client.heartbeat_job(in_tenant(&app, &acme, beat)).await.unwrap_err());
    refused(client.complete_job(in_tenant(&app, &acme, complete)).await.unwrap_err());
    refused(client.fail_job(in_tenant(&app, &acme, fail)).await.unwrap_err());
    let job = client.get_job(in_tenant(&app, &acme, GetJobRequest { job_id: id })).await.unwrap().into_inner();
    let job = job.job.unwrap();
    assert_eq!((job.state(), job.attempt), (JobState::Running, stale + 1));
    assert_eq!(job.errors.len(), 1, "only the rescue is in the history: {:?}", job.errors);
}

/// `count` tenant rows with random ids on `plan` in `state`, straight in SQL
/// (no schemas: the fetch reads only `platform.tenants` and `platform.plans`).
async fn insert_many_tenants(app: &TestApp, prefix: &str, count: i32, plan: &str, state: &str) {
    sqlx::query(
        "INSERT INTO platform.tenants (id, slug, display_name, plan_id, state)
         SELECT 'ten_' || substr(md5($1 || g || random()::text), 1, 24), $1 || '-' || g, $1 || '-' || g, $3, $4
           FROM generate_series(1, $2) g",
    )
    .bind(prefix)
    .bind(count)
    .bind(plan)
    .bind(state)
    .execute(&app.pool)
    .await
    .unwrap();
}

/// One job per tenant whose slug starts with `prefix`, in `queue`, with the
/// given state and due time.
async fn insert_jobs_per_tenant(app: &TestApp, prefix: &str, queue: &str, kind: &str, state: &str, run_at: &str) {
    sqlx::query(&format!(
        "INSERT INTO platform.jobs (id, tenant_id, kind, queue, state, attempt, max_attempts, timeout_ms, run_at)
         SELECT 'job_' || substr(md5(t.id || random()::text), 1, 24), t.id, $2, $3, $4,
                CASE WHEN $4 = 'retryable' THEN 1 ELSE 0 END, 10, 60000, {run_at}
           FROM platform.tenants t WHERE t.slug LIKE $1 || '-%'"
    ))
    .bind(prefix)
    .bind(kind)
    .bind(queue)
    .bind(state)
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_due_job_starts_within_a_second_behind_ten_thousand_tenants_with_only_future_work() {
    let app = quiet().spawn().await;
    // 10,000 tenants: half hold a job due in an hour, half a job backing off for an hour.
    insert_many_tenants(&app, "later", 5_000, "pro", "active").await;
    insert_many_tenants(&app, "backoff", 5_000, "pro", "active").await;
    let hour = "now() + interval '1 hour'";
    insert_jobs_per_tenant(&app, "later", "tenantry", "tenantry.noop", "scheduled", hour).await;
    insert_jobs_per_tenant(&app, "backoff", "tenantry", "tenantry.noop", "retryable", hour).await;
    sqlx::query("ANALYZE platform.jobs").execute(&app.pool).await.unwrap();
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);

    let enqueued = Instant::now();
    let job = client.enqueue_job(in_tenant(&app, &acme, enqueue("tenantry.noop"))).await.unwrap();
    let id = job.into_inner().job.unwrap().id;
    let done = eventually(Duration::from_secs(10), || {
        let (mut client, request) = (client.clone(), in_tenant(&app, &acme, GetJobRequest { job_id: id.clone() }));
        async move { client.get_job(request).await.unwrap().into_inner().job.unwrap().state() == JobState::Completed }
    })
    .await;
    assert!(done, "the due job ran");
    let waited = enqueued.elapsed();
    let (start_delay,): (f64,) =
        sqlx::query_as("SELECT extract(epoch FROM started_at - created_at)::float8 FROM platform.jobs WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(start_delay <= 1.0, "the due job started {start_delay:.3} s after it was enqueued (done after {waited:?})");
    println!("behind 10,000 tenants with future work, the due job started after {start_delay:.3} s");
    let future: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM platform.jobs WHERE state IN ('scheduled', 'retryable') AND run_at > now()",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(future, 10_000, "the future jobs stay where they are");
}

#[tokio::test]
async fn suspended_and_saturated_tenants_never_block_another_tenants_due_job() {
    let app = quiet().configure(|s| s.no_workers = true).spawn().await;
    // 1,500 suspended tenants with due work, and 1,500 tenants at their cap
    // (free: 2 running) with more due work: 3,000 tenants ahead of the cap of
    // 1,000 tenants a fetch considers.
    insert_many_tenants(&app, "frozen", 1_500, "pro", "suspended").await;
    insert_many_tenants(&app, "busy", 1_500, "free", "active").await;
    let now = "now() - interval '1 minute'";
    insert_jobs_per_tenant(&app, "frozen", "default", "email.send", "available", now).await;
    for _ in 0..2 {
        insert_jobs_per_tenant(&app, "busy", "default", "email.send", "running", now).await;
    }
    insert_jobs_per_tenant(&app, "busy", "default", "email.send", "available", now).await;
    sqlx::query("ANALYZE platform.jobs").execute(&app.pool).await.unwrap();
    let acme = insert_tenant(&app, "acme", "pro").await;
    let mut client = jobs(&app);
    let job = client.enqueue_job(in_tenant(&app, &acme, enqueue("email.send"))).await.unwrap();
    let id = job.into_inner().job.unwrap().id;

    // A platform-wide external worker (the admin naming no tenant).
    let leased = client.lease_jobs(app.as_admin(lease_req(10))).await.unwrap().into_inner();
    let ids: Vec<_> = leased.jobs.iter().map(|j| j.job.as_ref().unwrap().id.clone()).collect();
    assert_eq!(ids, [id], "only the active tenant with room gets work");
}

#[tokio::test]
async fn platform_level_jobs_are_stored_without_a_tenant() {
    let app = quiet().configure(|s| s.no_workers = true).spawn().await;
    let job = periodic::PeriodicJob { kind: "tenantry.noop", every: Duration::from_secs(60) };
    periodic::enqueue_once(&app.pool, &job, "test-period").await.unwrap();
    let (id, tenant): (String, Option<String>) =
        sqlx::query_as("SELECT id, tenant_id FROM platform.jobs WHERE unique_key = 'test-period'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(tenant, None, "NULL, not an empty string");
    let stored = queue::find(&app.pool, None, &id).await.unwrap().expect("the job");
    assert!(stored.tenant().is_none());
    // The same period again is a duplicate (the unique key holds without a tenant).
    periodic::enqueue_once(&app.pool, &job, "test-period").await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM platform.jobs WHERE unique_key = 'test-period'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}
