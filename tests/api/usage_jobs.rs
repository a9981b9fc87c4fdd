//! The usage built-ins over the metering table: CSV export as a job result
//! (only the job's own tenant), and the rollup that folds old minute
//! counters into hours without changing any sum.

use std::time::Duration;

use tenantry::{
    jobs::{convert, handlers::usage},
    proto::tenantry::v1::{EnqueueJobRequest, JobState, WatchJobRequest},
};

use crate::{
    harness::TestApp,
    jobs::{in_tenant, insert_tenant, jobs},
};

/// The metering table as the usage module defines it (created here when the
/// build under test does not migrate it itself).
async fn metering(app: &TestApp) {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS platform.usage_counters (
            tenant_id text NOT NULL, metric text NOT NULL, method text NOT NULL DEFAULT '',
            bucket_start timestamptz NOT NULL, value double precision NOT NULL,
            PRIMARY KEY (tenant_id, metric, method, bucket_start))",
    )
    .execute(&app.pool)
    .await
    .unwrap();
}

async fn count(app: &TestApp, tenant: &str, metric: &str, at: &str, value: f64) {
    sqlx::query(
        "INSERT INTO platform.usage_counters (tenant_id, metric, method, bucket_start, value)
         VALUES ($1, $2, '/tenantry.v1.JobsService/GetJob', $3::timestamptz, $4)",
    )
    .bind(tenant)
    .bind(metric)
    .bind(at)
    .bind(value)
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_usage_export_job_returns_the_tenants_usage_as_csv() {
    let app = TestApp::builder().spawn().await;
    metering(&app).await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let other = insert_tenant(&app, "other", "pro").await;
    count(&app, acme.as_str(), "api.requests", "2026-11-01T10:01:00Z", 3.0).await;
    count(&app, acme.as_str(), "api.requests", "2026-11-01T10:02:00Z", 4.0).await;
    count(&app, acme.as_str(), "api.requests", "2026-11-01T11:00:00Z", 1.0).await;
    count(&app, other.as_str(), "api.requests", "2026-11-01T10:01:00Z", 99.0).await;

    let payload = serde_json::json!({
        "start_time": "2026-11-01T00:00:00Z", "end_time": "2026-11-02T00:00:00Z", "granularity": "hour",
        // A tenant named in the payload is ignored: the job's tenant is used.
        "tenant_id": other.as_str(),
    });
    let request = EnqueueJobRequest {
        kind: "tenantry.usage.export".into(),
        payload: Some(convert::json_to_struct(&payload)),
        ..Default::default()
    };
    let mut client = jobs(&app);
    let job = client.enqueue_job(in_tenant(&app, &acme, request)).await.unwrap().into_inner().job.unwrap();
    let mut stream =
        client.watch_job(in_tenant(&app, &acme, WatchJobRequest { job_id: job.id })).await.unwrap().into_inner();
    let mut last = None;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.unwrap().unwrap() {
        last = message.job;
    }
    let last = last.unwrap();
    assert_eq!(last.state(), JobState::Completed, "{:?}", last.errors);
    let result = convert::struct_to_json(last.result.as_ref().unwrap());
    assert_eq!(
        result["csv"],
        "bucket_start,metric,method,value\n\
         2026-11-01T10:00:00Z,api.requests,/tenantry.v1.JobsService/GetJob,7\n\
         2026-11-01T11:00:00Z,api.requests,/tenantry.v1.JobsService/GetJob,1\n"
    );
    assert_eq!(result["rows"], 2);
    assert_eq!(result["truncated"], false);
}

#[tokio::test]
async fn the_usage_rollup_folds_old_minutes_into_hours_keeping_every_sum() {
    // This test runs the rollup itself: no in-process workers racing it.
    let app = TestApp::builder().configure(|c| c.no_workers = true).spawn().await;
    metering(&app).await;
    let acme = insert_tenant(&app, "acme", "pro").await;
    let old_hour = chrono::Utc::now() - chrono::Duration::days(50);
    let old_hour = old_hour.format("%Y-%m-%dT%H:00:00Z").to_string();
    let at = |minute: u32| old_hour.replace(":00:00Z", &format!(":{minute:02}:00Z"));
    for (minute, value) in [(0, 1.0), (7, 2.0), (59, 4.0)] {
        count(&app, acme.as_str(), "api.requests", &at(minute), value).await;
    }
    let recent = chrono::Utc::now().format("%Y-%m-%dT%H:%M:00Z").to_string();
    count(&app, acme.as_str(), "api.requests", &recent, 5.0).await;
    count(&app, acme.as_str(), "api.requests", "2020-01-01T00:05:00Z", 9.0).await;

    let folded = usage::fold_batch(&app.pool, usage::ROLLUP_AGE).await.unwrap();
    assert_eq!(folded, 3, "the 2020 row and the two non-aligned old minutes");
    let expired = usage::expire_batch(&app.pool, usage::RETENTION).await.unwrap();
    assert_eq!(expired, 1, "the 2020 hour is past retention");
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), value
           FROM platform.usage_counters WHERE tenant_id = $1 ORDER BY bucket_start",
    )
    .bind(acme.as_str())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows, vec![(old_hour.clone(), 7.0), (recent, 5.0)]);
    // Folding again changes nothing.
    assert_eq!(usage::fold_batch(&app.pool, usage::ROLLUP_AGE).await.unwrap(), 0);
}
