//! Redis killed (SIGKILL) under the Redis rate-limit engine while clients
//! call, then started again: no client sees an error, the limits fall back
//! to the node and return to Redis.

use std::time::{Duration, Instant};

use tenantry::{
    config::{RateLimitEngine, RateLimitFailMode},
    proto::tenantry::v1::{
        GetQuotaRequest, ListJobsRequest, jobs_service_client::JobsServiceClient,
        usage_service_client::UsageServiceClient,
    },
};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::{Tally, server_errors};
use crate::harness::{
    TestApp, eventually,
    redis_cluster::OwnedRedis,
    tenants::{TenantHandle, upsert_plan},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_the_redis_engine_costs_clients_nothing() {
    let mut redis = OwnedRedis::start().await;
    let url = redis.url();
    let app = TestApp::builder()
        .configure(|config| {
            config.redis_url = Some(url.into());
            config.rate_limit_engine = Some(RateLimitEngine::Redis);
            config.rate_limit_fail_mode = RateLimitFailMode::Local;
            config.no_workers = true;
        })
        .spawn()
        .await;
    upsert_plan(&app.channel, &app.admin_key, "faults-roomy", 100_000, 100_000, 0).await;
    let tenant = app.create_tenant_on("redisless", "faults-roomy").await;
    let mut usage = UsageServiceClient::new(app.channel.clone());
    let served = &app;
    let decided_in_redis = || {
        let (mut usage, request) = (usage.clone(), tenant.as_admin(GetQuotaRequest::default()));
        async move { usage.get_quota(request).await.is_ok() && decisions(served, "redis").await > 0.0 }
    };
    assert!(eventually(Duration::from_secs(10), decided_in_redis).await, "limits are decided in Redis");
    usage.get_quota(tenant.as_admin(GetQuotaRequest::default())).await.expect("a call before the kill");

    let stop = CancellationToken::new();
    let callers: Vec<_> =
        (0..4).map(|n| tokio::spawn(call_until(app.channel.clone(), tenant.clone(), n, stop.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fallback = decisions(&app, "fallback").await;
    redis.restart().await;
    let decided_before = decisions(&app, "redis").await;
    let back = eventually(Duration::from_secs(15), || async { decisions(&app, "redis").await > decided_before }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let mut tally = Tally::default();
    let mut slowest = Duration::ZERO;
    for caller in callers {
        let (calls, slow) = caller.await.expect("caller");
        tally.merge(&calls);
        slowest = slowest.max(slow);
    }
    eprintln!("calls through the Redis kill: {tally:?}, slowest {} ms", slowest.as_millis());
    assert!(tally.total() > 100, "{tally:?}");
    assert_eq!(tally.count(Code::Ok), tally.total(), "no errors while Redis was gone: {tally:?}");
    assert!(fallback > 0.0, "the node decided locally while Redis was gone");
    assert!(back, "limits are decided in Redis again once it is back");
    let errors = server_errors(&app).await;
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Rate-limit decisions made by `engine` (`redis`, `fallback`), by the
/// server's metrics.
async fn decisions(app: &TestApp, engine: &str) -> f64 {
    let (_, metrics) = app.http_get("/metrics").await;
    let label = format!("engine=\"{engine}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("tenantry_rate_limit_decisions_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<f64>().ok()))
        .sum()
}

/// Alternates a memory-only call and a database call until `stop`.
async fn call_until(
    channel: tonic::transport::Channel,
    tenant: TenantHandle,
    n: usize,
    stop: CancellationToken,
) -> (Tally, Duration) {
    let mut usage = UsageServiceClient::new(channel.clone());
    let mut jobs = JobsServiceClient::new(channel);
    let mut tally = Tally::default();
    let mut slowest = Duration::ZERO;
    let mut i = n;
    while !stop.is_cancelled() {
        i += 1;
        let started = Instant::now();
        let code = if i.is_multiple_of(2) {
            usage.get_quota(tenant.as_admin(GetQuotaRequest::default())).await.map(drop)
        } else {
            jobs.list_jobs(tenant.as_admin(ListJobsRequest { page_size: 1, ..Default::default() })).await.map(drop)
        }
        .map_or_else(|s| s.code(), |()| Code::Ok);
        slowest = slowest.max(started.elapsed());
        tally.add(code);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (tally, slowest)
}
