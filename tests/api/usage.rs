//! Usage metering and UsageService, end to end: metered totals against
//! ground truth (across a graceful shutdown), idempotent RecordUsage at
//! volume, refusals that name the field or event, and GetQuota.

use std::{collections::HashMap, time::Duration};

use prost::Message;
use prost_types::Timestamp;
use tenantry::proto::tenantry::v1::{
    GetQuotaRequest, GetUsageRequest, Granularity, RecordUsageRequest, UsageEvent,
    usage_service_client::UsageServiceClient,
};
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;

use crate::harness::{
    TestApp, eventually,
    tenants::{TenantHandle, upsert_plan},
};

fn ago(duration: Duration) -> Timestamp {
    Timestamp::from(std::time::SystemTime::now() - duration)
}

/// Sums of the tenant's counters per metric, straight from the table.
async fn stored_totals(pool: &sqlx::PgPool, tenant: &str) -> HashMap<String, f64> {
    sqlx::query_as::<_, (String, f64)>(
        "SELECT metric, sum(value) FROM platform.usage_counters WHERE tenant_id = $1 GROUP BY metric",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Makes `n` GetQuota calls; returns (request bytes, response bytes) as sent
/// on the wire in gRPC frames (5-byte prefix + message).
async fn quota_calls(channel: &Channel, tenant: &TenantHandle, n: usize) -> (u64, u64) {
    let mut client = UsageServiceClient::new(channel.clone());
    let (mut sent, mut received) = (0, 0);
    for _ in 0..n {
        let request = GetQuotaRequest::default();
        sent += 5 + request.encoded_len() as u64;
        let response = client.get_quota(tenant.as_admin(request)).await.expect("get quota");
        received += 5 + response.get_ref().encoded_len() as u64;
    }
    (sent, received)
}

#[tokio::test]
async fn metered_totals_equal_ground_truth_across_a_graceful_shutdown() {
    // A flush interval of an hour: only the shutdown flush can write the first server's usage.
    let app = TestApp::builder().configure(|c| c.usage_flush_interval = Duration::from_secs(3600)).spawn().await;
    upsert_plan(&app.channel, &app.admin_key, "roomy", 0, 0, 0).await;
    let tenant = app.create_tenant_on("metered", "roomy").await;
    let (sent_before, received_before) = quota_calls(&app.channel, &tenant, 40).await;
    let database = app.stop_keeping_database().await;
    let pool = sqlx::PgPool::connect_with(database.options.clone()).await.unwrap();
    let after_shutdown = stored_totals(&pool, &tenant.id).await;
    assert_eq!(after_shutdown.get("api.requests"), Some(&40.0), "{after_shutdown:?}");
    assert_eq!(after_shutdown.get("api.request_bytes"), Some(&(sent_before as f64)));
    assert_eq!(after_shutdown.get("api.response_bytes"), Some(&(received_before as f64)));
    assert!(after_shutdown.get("api.compute_ms").is_some_and(|ms| *ms > 0.0));

    // A new server on the same database goes on counting, flushing every 100 ms.
    let app = TestApp::builder()
        .database(database)
        .configure(|c| c.usage_flush_interval = Duration::from_millis(100))
        .spawn()
        .await;
    let (sent_after, received_after) = quota_calls(&app.channel, &tenant, 25).await;
    let expected_requests = 65.0;
    let flushed = eventually(Duration::from_secs(10), || async {
        stored_totals(&pool, &tenant.id).await.get("api.requests") == Some(&expected_requests)
    })
    .await;
    assert!(flushed, "{:?}", stored_totals(&pool, &tenant.id).await);
    let totals = stored_totals(&pool, &tenant.id).await;
    assert_eq!(totals["api.request_bytes"], (sent_before + sent_after) as f64);
    assert_eq!(totals["api.response_bytes"], (received_before + received_after) as f64);

    // GetUsage reports the automatic metrics, per minute.
    let mut client = UsageServiceClient::new(app.channel.clone());
    let usage = client
        .get_usage(tenant.as_admin(GetUsageRequest {
            metrics: vec!["api.requests".into()],
            start_time: Some(ago(Duration::from_secs(3600))),
            granularity: Granularity::Minute as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.series.len(), 1);
    assert!(usage.series[0].total >= expected_requests, "{usage:?}");
    assert_eq!(usage.series[0].buckets.iter().map(|b| b.value).sum::<f64>(), usage.series[0].total);
    pool.close().await;
}

/// An event dated from a base fixed once per test process, so a repeat
/// built later has exactly the same payload.
fn event(id: usize, metric: &str, quantity: f64) -> UsageEvent {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let minute = *BASE.get_or_init(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        now - now % 60
    });
    UsageEvent {
        event_id: format!("evt-{id}"),
        metric: metric.into(),
        quantity,
        event_time: Some(Timestamp { seconds: minute - 60 - (id % 7200) as i64, nanos: 0 }),
        dimensions: [("region".to_owned(), format!("r{}", id % 3))].into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_events_with_ten_percent_duplicates_give_exact_totals() {
    let app = TestApp::builder().spawn().await;
    upsert_plan(&app.channel, &app.admin_key, "roomy", 0, 0, 0).await;
    let tenant = app.create_tenant_on("recorder", "roomy").await;
    let metrics = ["emails.sent", "storage.gb_hours", "exports.rows"];
    let make = |id: usize| event(id, metrics[id % 3], (id % 10 + 1) as f64);

    // 100 batches of 1,000: 900 new events and 100 repeats of events sent before.
    let mut batches: Vec<Vec<UsageEvent>> = Vec::new();
    let mut expected: HashMap<&str, f64> = HashMap::new();
    let mut next = 0;
    for batch in 0..100 {
        let mut events: Vec<UsageEvent> = (next..next + 900).map(make).collect();
        for id in next..next + 900 {
            *expected.entry(metrics[id % 3]).or_default() += (id % 10 + 1) as f64;
        }
        // Repeats from earlier batches, or from this one for the first.
        let pool_end = if batch == 0 { 900 } else { next };
        events.extend((0..100).map(|k| make((k * 7919 + batch * 31) % pool_end)));
        next += 900;
        batches.push(events);
    }

    let mut accepted = 0;
    let mut duplicates = 0;
    // Four batches at a time, as concurrent clients would send them.
    for group in batches.chunks(4) {
        let calls = group.iter().cloned().map(|events| {
            let mut client = UsageServiceClient::new(app.channel.clone());
            let request = tenant.as_admin(RecordUsageRequest { events });
            async move { client.record_usage(request).await.expect("record usage").into_inner() }
        });
        for response in futures_join(calls).await {
            accepted += response.accepted_count;
            duplicates += response.duplicate_count;
        }
    }
    assert_eq!((accepted, duplicates), (90_000, 10_000));

    let usage = UsageServiceClient::new(app.channel.clone())
        .get_usage(tenant.as_admin(GetUsageRequest {
            start_time: Some(ago(Duration::from_secs(3 * 3600))),
            granularity: Granularity::Hour as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    for metric in metrics {
        let series = usage.series.iter().find(|s| s.metric == metric).expect("a series per metric");
        assert_eq!(series.total, expected[metric], "{metric}");
    }
    let stored: (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM \"t_{}\".usage_events", tenant.id))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.0, 90_000);
}

async fn futures_join<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

#[tokio::test]
async fn a_reused_event_id_with_another_payload_is_refused_and_nothing_is_recorded() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.create_tenant_on("careful", "pro").await;
    let mut client = UsageServiceClient::new(app.channel.clone());
    let first = event(1, "emails.sent", 3.0);
    let recorded = client.record_usage(tenant.as_admin(RecordUsageRequest { events: vec![first.clone()] })).await;
    assert_eq!(recorded.unwrap().into_inner().accepted_count, 1);

    // The same event again is a harmless duplicate.
    let again = client.record_usage(tenant.as_admin(RecordUsageRequest { events: vec![first.clone()] })).await;
    assert_eq!(again.unwrap().into_inner().duplicate_count, 1);

    let changed = UsageEvent { quantity: 4.0, ..first };
    let fresh = event(2, "emails.sent", 1.0);
    let status =
        client.record_usage(tenant.as_admin(RecordUsageRequest { events: vec![fresh, changed] })).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains("evt-1"), "{}", status.message());
    let count: (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM \"t_{}\".usage_events", tenant.id))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count.0, 1, "the batch was all or nothing");
}

#[tokio::test]
async fn events_outside_the_accepted_time_window_are_refused_naming_the_field() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.create_tenant_on("timely", "pro").await;
    let mut client = UsageServiceClient::new(app.channel.clone());
    for (bad, label) in [
        (ago(Duration::from_secs(36 * 24 * 3600)), "older than 35 days"),
        (Timestamp::from(std::time::SystemTime::now() + Duration::from_secs(600)), "10 minutes ahead"),
    ] {
        let mut events: Vec<UsageEvent> = (0..5).map(|i| event(i, "emails.sent", 1.0)).collect();
        events[3].event_time = Some(bad);
        let status = client.record_usage(tenant.as_admin(RecordUsageRequest { events })).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{label}");
        let details = status.get_error_details();
        assert_eq!(details.bad_request().unwrap().field_violations[0].field, "events[3].event_time", "{label}");
    }
    let status = client
        .record_usage(tenant.as_admin(RecordUsageRequest { events: vec![event(9, "api.requests", 1.0)] }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "api.* metrics are reserved");
}

#[tokio::test]
async fn get_quota_reports_the_plan_the_period_usage_and_the_rate_state() {
    let app = TestApp::builder().configure(|c| c.usage_flush_interval = Duration::from_millis(100)).spawn().await;
    upsert_plan(&app.channel, &app.admin_key, "metered", 5, 10, 1000).await;
    let tenant = app.create_tenant_on("quota-co", "metered").await;
    quota_calls(&app.channel, &tenant, 3).await;
    let mut client = UsageServiceClient::new(app.channel.clone());
    let quota = client.get_quota(tenant.as_admin(GetQuotaRequest::default())).await.unwrap().into_inner();
    assert_eq!(quota.plan_id, "metered");
    let requests = &quota.quotas[0];
    assert_eq!((requests.metric.as_str(), requests.limit, requests.unlimited), ("api.requests", 1000, false));
    assert!((3..=4).contains(&requests.used), "{requests:?}");
    assert_eq!(requests.remaining, 1000 - requests.used);
    let rate = quota.rate_limit.unwrap();
    assert_eq!((rate.requests_per_second, rate.burst), (5, 10));
    assert!(rate.remaining <= 6, "four calls came out of a bucket of ten: {rate:?}");
    let period = (quota.period_start_time.unwrap(), quota.period_end_time.unwrap());
    assert!(period.0.seconds < period.1.seconds);
}

#[tokio::test]
async fn get_usage_validates_its_range() {
    let app = TestApp::builder().spawn().await;
    let tenant = app.create_tenant_on("ranges", "pro").await;
    let mut client = UsageServiceClient::new(app.channel.clone());
    let status = client.get_usage(tenant.as_admin(GetUsageRequest::default())).await.unwrap_err();
    assert_eq!(status.get_error_details().bad_request().unwrap().field_violations[0].field, "start_time");
    let too_many = GetUsageRequest {
        start_time: Some(ago(Duration::from_secs(30 * 24 * 3600))),
        granularity: Granularity::Minute as i32,
        ..Default::default()
    };
    let status = client.get_usage(tenant.as_admin(too_many)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

/// `tenantry serve` as a child process on `database` with an hour-long
/// usage flush interval: nothing is written before it stops. The caller
/// stops and waits for the child.
#[allow(clippy::zombie_processes)]
async fn serve_child(database: &crate::harness::TestDatabase) -> (std::process::Child, Channel) {
    let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (grpc, http) = (port(), port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--migrate", "--usage-flush-interval", "1h"])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}"), "--http-addr", &format!("127.0.0.1:{http}")])
        .env_remove("REDIS_URL")
        .env("DATABASE_URL", &database.url)
        .env("TENANTRY_DB_ACQUIRE_TIMEOUT", "5s")
        .env("TENANTRY_JWT_PRIVATE_KEY", &crate::harness::identity::signing_key().private_pem)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn tenantry serve");
    let endpoint = Channel::from_shared(format!("http://127.0.0.1:{grpc}")).unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Ok(channel) = endpoint.connect().await {
            return (child, channel);
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().ok();
            child.wait().ok();
            panic!("tenantry serve did not come up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Metered GetQuota calls of `tenant` in the table.
async fn metered_get_quota(pool: &sqlx::PgPool, tenant: &str) -> f64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(value), 0)::float8 FROM platform.usage_counters
          WHERE tenant_id = $1 AND metric = 'api.requests' AND method LIKE '%/GetQuota'",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The documented loss bound on real processes: SIGTERM writes every
/// metered call before exit; SIGKILL loses what was metered since the last
/// flush and nothing else (here the interval is an hour, so all of it).
#[tokio::test]
async fn sigterm_loses_no_metered_call_and_sigkill_loses_at_most_one_flush_interval() {
    const CALLS: usize = 25;
    let database = crate::harness::TestDatabase::create().await;
    let (mut first, channel) = serve_child(&database).await;
    let pool = sqlx::PgPool::connect_with(database.options.clone()).await.unwrap();
    let (_, admin_key) = tenantry::auth::api_key::AdminKeys::new(pool.clone()).create("test").await.unwrap();
    let tenant = crate::harness::tenants::create_tenant_via(&channel, &admin_key, "crashy", "enterprise").await;
    let calls = |channel: Channel| {
        let tenant = tenant.clone();
        async move {
            for _ in 0..CALLS {
                UsageServiceClient::new(channel.clone())
                    .get_quota(tenant.as_admin(GetQuotaRequest::default()))
                    .await
                    .ok();
            }
        }
    };
    calls(channel).await;
    let status = std::process::Command::new("kill").args(["-TERM", &first.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || first.wait().unwrap()).await.unwrap();
    assert!(exited.success(), "a clean exit on SIGTERM: {exited}");
    assert_eq!(metered_get_quota(&pool, &tenant.id).await, CALLS as f64, "SIGTERM lost nothing");

    let (mut second, channel) = serve_child(&database).await;
    calls(channel).await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(
        metered_get_quota(&pool, &tenant.id).await,
        CALLS as f64,
        "SIGKILL lost exactly the unflushed calls (an hour's interval: all of the second node's)"
    );
    pool.close().await;
}
