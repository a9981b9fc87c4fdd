//! The gateway against live behaviour of landed services: a server stream
//! delivered to completion as NDJSON and as SSE, and a real rate-limit
//! rejection as 429 with `Retry-After` and the IETF RateLimit headers.

use http::Method;
use tenantry::proto::tenantry::v1::{
    CompleteJobRequest, LeaseJobsRequest, Plan, UpsertPlanRequest, jobs_service_client::JobsServiceClient,
};

use super::{bearer, insert_tenant, send};
use crate::harness::TestApp;

/// Enqueues an external job over REST and returns its id.
async fn enqueue(app: &TestApp, admin: &str, kind: &str) -> String {
    let body = format!("{{\"kind\": \"{kind}\"}}");
    let created = send(
        app.http_addr,
        Method::POST,
        "/v1/jobs",
        &[("authorization", admin), ("x-tenant-id", "acme")],
        Some(&body),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    created.json()["job"]["id"].as_str().unwrap().to_owned()
}

/// Leases and completes the job as an external worker over gRPC.
async fn complete(app: &TestApp, kind: &str) {
    let mut jobs = JobsServiceClient::new(app.channel.clone());
    let lease = LeaseJobsRequest { kinds: vec![kind.into()], max_jobs: 1, ..Default::default() };
    let leased = jobs.lease_jobs(app.as_admin_in("acme", lease)).await.unwrap().into_inner().jobs;
    assert_eq!(leased.len(), 1);
    let job = &leased[0];
    let done =
        CompleteJobRequest { job_id: job.job.as_ref().unwrap().id.clone(), attempt: job.attempt, ..Default::default() };
    jobs.complete_job(app.as_admin_in("acme", done)).await.unwrap();
}

/// Watches `job_id` over REST with `accept`, completing the job meanwhile.
async fn watch_to_the_end(app: &TestApp, admin: &str, job_id: &str, kind: &str, accept: &str) -> super::HttpResponse {
    let path = format!("/v1/jobs/{job_id}:watch");
    let (addr, admin, accept) = (app.http_addr, admin.to_owned(), accept.to_owned());
    let watch = tokio::spawn(async move {
        send(addr, Method::GET, &path, &[("authorization", &admin), ("x-tenant-id", "acme"), ("accept", &accept)], None)
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    complete(app, kind).await;
    tokio::time::timeout(std::time::Duration::from_secs(30), watch).await.expect("the stream ends").unwrap()
}

#[tokio::test]
async fn a_watched_job_streams_as_ndjson_until_it_completes() {
    let app = TestApp::builder().spawn().await;
    insert_tenant(&app, "acme", "active").await;
    let admin = bearer(&app);
    let job_id = enqueue(&app, &admin, "email.send").await;
    let response = watch_to_the_end(&app, &admin, &job_id, "email.send", "application/json").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.header("content-type").unwrap().starts_with("application/x-ndjson"));
    let lines: Vec<serde_json::Value> =
        response.text().lines().map(|l| serde_json::from_str(l).expect("one JSON message per line")).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        assert_eq!(line["job"]["id"], job_id.as_str(), "no envelope: each line is a WatchJobResponse");
    }
    assert_eq!(lines.last().unwrap()["job"]["state"], "JOB_STATE_COMPLETED");
}

#[tokio::test]
async fn a_watched_job_streams_as_server_sent_events_until_it_completes() {
    let app = TestApp::builder().spawn().await;
    insert_tenant(&app, "acme", "active").await;
    let admin = bearer(&app);
    let job_id = enqueue(&app, &admin, "report.build").await;
    let response = watch_to_the_end(&app, &admin, &job_id, "report.build", "text/event-stream").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.header("content-type").unwrap().starts_with("text/event-stream"));
    let events: Vec<serde_json::Value> = response
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|data| serde_json::from_str(data.trim()).expect("JSON event data"))
        .collect();
    assert!(!events.is_empty(), "{}", response.text());
    assert_eq!(events.last().unwrap()["job"]["state"], "JOB_STATE_COMPLETED");
}

#[tokio::test]
async fn an_exhausted_rate_limit_is_429_with_retry_after_and_ratelimit_headers() {
    let app = TestApp::builder().spawn().await;
    let plan = Plan {
        id: "tiny".into(),
        display_name: "Tiny".into(),
        requests_per_second: 1,
        burst: 1,
        max_concurrent_jobs: 1,
        min_replicas: 1,
        max_replicas: 1,
        ..Default::default()
    };
    app.tenants().upsert_plan(app.as_admin(UpsertPlanRequest { plan: Some(plan) })).await.unwrap();
    let id = insert_tenant(&app, "acme", "active").await;
    sqlx::query("UPDATE platform.tenants SET plan_id = 'tiny' WHERE id = $1")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();
    let admin = bearer(&app);
    let mut limited = None;
    for _ in 0..5 {
        let response = send(
            app.http_addr,
            Method::GET,
            "/v1/usage/quota",
            &[("authorization", &admin), ("x-tenant-id", "acme")],
            None,
        )
        .await;
        if response.status == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let limited = limited.expect("a 1 rps, burst 1 plan refuses one of five back-to-back calls");
    assert_eq!(limited.json()["code"], 8, "RESOURCE_EXHAUSTED");
    let retry_after: u64 = limited.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert!(limited.header("ratelimit-policy").is_some(), "{:?}", limited.headers);
    assert!(limited.header("ratelimit").is_some(), "{:?}", limited.headers);
}
