//! Per-tenant rate limits and monthly quotas, end to end: the in-process
//! engine, the Redis engine on a three-master cluster, Redis lost and back,
//! and three server processes sharing one limit.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tenantry::{
    config::{RateLimitEngine, RateLimitFailMode},
    proto::tenantry::v1::{GetQuotaRequest, usage_service_client::UsageServiceClient},
};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

use crate::{
    harness::{
        TestApp, TestDatabase, eventually,
        redis_cluster::{OwnedRedis, cluster_url},
        tenants::{TenantHandle, create_tenant_via, upsert_plan},
    },
    observability::server_process::ServerProcess,
};

fn header(metadata: &tonic::metadata::MetadataMap, name: &str) -> u64 {
    metadata.get(name).unwrap_or_else(|| panic!("{name} is set")).to_str().unwrap().parse().unwrap()
}

async fn call(channel: &Channel, tenant: &TenantHandle) -> Result<tonic::Response<()>, Status> {
    UsageServiceClient::new(channel.clone()).get_quota(tenant.as_admin(GetQuotaRequest::default())).await.map(|r| {
        let (metadata, _, extensions) = r.into_parts();
        tonic::Response::from_parts(metadata, (), extensions)
    })
}

fn assert_rate_limited(status: &Status, tenant: &TenantHandle) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    let delay = details.retry_info().and_then(|r| r.retry_delay).expect("RetryInfo with a delay");
    let violation = &details.quota_failure().expect("QuotaFailure").violations[0];
    assert_eq!(violation.subject, format!("tenants/{}/requests_per_second", tenant.id));
    assert_eq!(header(status.metadata(), "x-ratelimit-remaining"), 0);
    assert!(header(status.metadata(), "retry-after") >= 1);
    delay
}

#[tokio::test]
async fn a_burst_is_admitted_then_refused_then_admitted_again_after_retry_after() {
    let app = TestApp::builder().spawn().await;
    upsert_plan(&app.channel, &app.admin_key, "tiny", 2, 3, 0).await;
    let tenant = app.create_tenant_on("bursty", "tiny").await;

    for expected_remaining in [2, 1, 0] {
        let response = call(&app.channel, &tenant).await.expect("within the burst");
        assert_eq!(header(response.metadata(), "x-ratelimit-limit"), 3);
        assert_eq!(header(response.metadata(), "x-ratelimit-remaining"), expected_remaining);
        assert!(response.metadata().get("x-ratelimit-reset").is_some());
    }
    let refused = call(&app.channel, &tenant).await.unwrap_err();
    let delay = assert_rate_limited(&refused, &tenant);
    assert!(delay <= Duration::from_millis(500), "one token comes back every 500 ms: {delay:?}");

    // Waiting as told is enough.
    tokio::time::sleep(delay).await;
    call(&app.channel, &tenant).await.expect("admitted after retry-after");
}

#[tokio::test]
async fn a_method_costs_its_declared_rate_cost() {
    let app = TestApp::builder().spawn().await;
    upsert_plan(&app.channel, &app.admin_key, "medium", 1, 25, 0).await;
    let tenant = app.create_tenant_on("costly", "medium").await;
    let mut client = UsageServiceClient::new(app.channel.clone());
    let event = tenantry::proto::tenantry::v1::UsageEvent {
        event_id: "e1".into(),
        metric: "emails.sent".into(),
        quantity: 1.0,
        ..Default::default()
    };
    let request = || tenant.as_admin(tenantry::proto::tenantry::v1::RecordUsageRequest { events: vec![event.clone()] });
    // RecordUsage declares rate_cost 10 in the contract.
    let first = client.record_usage(request()).await.expect("within the burst");
    assert_eq!(header(first.metadata(), "x-ratelimit-remaining"), 15);
    let second = client.record_usage(request()).await.expect("within the burst");
    assert_eq!(header(second.metadata(), "x-ratelimit-remaining"), 5);
    let refused = client.record_usage(request()).await.unwrap_err();
    assert_rate_limited(&refused, &tenant);
    // A read costs 1 and still fits.
    let read = call(&app.channel, &tenant).await.expect("a cheap call fits in what is left");
    assert_eq!(header(read.metadata(), "x-ratelimit-remaining"), 4);
}

#[tokio::test]
async fn one_tenant_exhausting_its_limit_leaves_another_unaffected() {
    let app = TestApp::builder().spawn().await;
    upsert_plan(&app.channel, &app.admin_key, "tiny", 1, 2, 0).await;
    let a = app.create_tenant_on("tenant-a", "tiny").await;
    let b = app.create_tenant_on("tenant-b", "tiny").await;
    let mut refused = 0;
    for _ in 0..6 {
        if call(&app.channel, &a).await.is_err() {
            refused += 1;
        }
    }
    assert!(refused >= 3, "tenant A is limited ({refused} refused)");
    for expected_remaining in [1, 0] {
        let response = call(&app.channel, &b).await.expect("tenant B has its own full bucket");
        assert_eq!(header(response.metadata(), "x-ratelimit-remaining"), expected_remaining);
    }
}

#[tokio::test]
async fn the_monthly_quota_is_enforced_and_named_in_quota_failure() {
    let app = TestApp::builder().spawn().await;
    upsert_plan(&app.channel, &app.admin_key, "capped", 0, 0, 5).await;
    let tenant = app.create_tenant_on("capped-co", "capped").await;
    let mut admitted = 0;
    let status = loop {
        match call(&app.channel, &tenant).await {
            Ok(_) => admitted += 1,
            Err(status) => break status,
        }
        assert!(admitted <= 10, "the quota is never enforced");
    };
    // Calls are counted as their responses finish, so one racing call may slip in.
    assert!((5..=6).contains(&admitted), "admitted {admitted} of a quota of 5");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    let violation = &details.quota_failure().expect("QuotaFailure").violations[0];
    assert_eq!(violation.subject, format!("tenants/{}/monthly_request_quota", tenant.id));
    assert!(details.retry_info().and_then(|r| r.retry_delay).is_some(), "retry when the month ends");
    assert!(status.message().contains("monthly request quota"), "{}", status.message());
}

#[tokio::test]
async fn plan_changes_apply_to_the_tenants_on_the_plan_within_seconds() {
    let app = TestApp::builder().spawn().await;
    upsert_plan(&app.channel, &app.admin_key, "changing", 1, 2, 0).await;
    let tenant = app.create_tenant_on("upgrader", "changing").await;
    let first = call(&app.channel, &tenant).await.unwrap();
    assert_eq!(header(first.metadata(), "x-ratelimit-limit"), 2);
    upsert_plan(&app.channel, &app.admin_key, "changing", 100, 50, 0).await;
    let upgraded = eventually(Duration::from_secs(5), || async {
        call(&app.channel, &tenant).await.is_ok_and(|r| header(r.metadata(), "x-ratelimit-limit") == 50)
    })
    .await;
    assert!(upgraded, "the new burst applies");
}

#[tokio::test]
async fn the_redis_engine_limits_on_a_three_master_cluster() {
    let url = cluster_url().await.to_owned();
    let app = TestApp::builder()
        .configure(|config| {
            config.redis_url = Some(url.into());
            config.rate_limit_engine = Some(RateLimitEngine::Redis);
        })
        .spawn()
        .await;
    upsert_plan(&app.channel, &app.admin_key, "tiny", 1, 3, 0).await;
    // Several tenants, so keys land on different cluster slots and masters.
    for slug in ["cluster-a", "cluster-b", "cluster-c", "cluster-d"] {
        let tenant = app.create_tenant_on(slug, "tiny").await;
        for expected_remaining in [2, 1, 0] {
            let response = call(&app.channel, &tenant).await.expect("within the burst");
            assert_eq!(header(response.metadata(), "x-ratelimit-limit"), 3);
            assert_eq!(header(response.metadata(), "x-ratelimit-remaining"), expected_remaining);
        }
        let refused = call(&app.channel, &tenant).await.unwrap_err();
        assert_rate_limited(&refused, &tenant);
    }
}

#[tokio::test]
async fn losing_redis_falls_back_to_local_limits_without_errors_and_recovers() {
    let mut redis = OwnedRedis::start().await;
    let url = redis.url();
    let app = TestApp::builder()
        .configure(|config| {
            config.redis_url = Some(url.into());
            config.rate_limit_engine = Some(RateLimitEngine::Redis);
            config.rate_limit_expected_nodes = 2;
            config.rate_limit_fail_mode = RateLimitFailMode::Local;
        })
        .spawn()
        .await;
    upsert_plan(&app.channel, &app.admin_key, "steady", 1, 8, 0).await;
    let tenant = app.create_tenant_on("resilient", "steady").await;
    let global = call(&app.channel, &tenant).await.expect("admitted by Redis");
    assert_eq!(header(global.metadata(), "x-ratelimit-limit"), 8, "Redis enforces the whole bucket");

    redis.kill();
    let mut admitted = 0;
    let mut refused = 0;
    for _ in 0..12 {
        match call(&app.channel, &tenant).await {
            Ok(response) => {
                admitted += 1;
                assert_eq!(header(response.metadata(), "x-ratelimit-limit"), 4, "a local bucket of 8 / 2 nodes");
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "no request errors while Redis is down: {status:?}");
                refused += 1;
            }
        }
    }
    assert!(admitted >= 4 && refused >= 1, "the local fallback limits: {admitted} admitted, {refused} refused");

    redis.restart().await;
    let resumed = eventually(Duration::from_secs(15), || async {
        match call(&app.channel, &tenant).await {
            Ok(response) => header(response.metadata(), "x-ratelimit-limit") == 8,
            Err(status) => header(status.metadata(), "x-ratelimit-limit") == 8,
        }
    })
    .await;
    assert!(resumed, "global limiting resumes once Redis is back");
}

/// A `tenantry serve --migrate` child process with only the database and
/// Redis URLs set (the Redis engine is the default then), and a channel to
/// it. Its logs are shown if it does not start.
async fn serve_process(database: &TestDatabase, redis_url: &str) -> (ServerProcess, Channel) {
    let env = HashMap::from([("REDIS_URL", redis_url.to_owned())]);
    let server = ServerProcess::start(database, &env).await;
    let channel = Channel::from_shared(format!("http://{}", server.grpc)).unwrap().connect().await.unwrap();
    (server, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_server_processes_with_only_a_redis_url_admit_at_most_the_plan() {
    const RPS: u32 = 50;
    const BURST: u32 = 20;
    const WINDOW: Duration = Duration::from_secs(10);
    let redis_url = cluster_url().await.to_owned();
    let database = TestDatabase::create().await;
    // The first process migrates; the others then find the schema current.
    let (first, first_channel) = serve_process(&database, &redis_url).await;
    let (second, second_channel) = serve_process(&database, &redis_url).await;
    let (third, third_channel) = serve_process(&database, &redis_url).await;
    let pool = sqlx::PgPool::connect_with(database.options.clone()).await.unwrap();
    let (_, admin_key) = tenantry::auth::api_key::AdminKeys::new(pool.clone()).create("test").await.unwrap();
    upsert_plan(&first_channel, &admin_key, "shared", RPS, BURST, 0).await;
    let tenant = create_tenant_via(&first_channel, &admin_key, "shared-co", "shared").await;

    let channels = [first_channel, second_channel, third_channel];
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..12 {
        let channel = channels[i % 3].clone();
        let (tenant, admitted, refused) = (tenant.clone(), admitted.clone(), refused.clone());
        clients.push(tokio::spawn(async move {
            while started.elapsed() < WINDOW {
                match call(&channel, &tenant).await {
                    Ok(_) => admitted.fetch_add(1, Ordering::Relaxed),
                    Err(status) if status.code() == Code::ResourceExhausted => refused.fetch_add(1, Ordering::Relaxed),
                    Err(status) => panic!("unexpected error: {status:?}"),
                };
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = admitted.load(Ordering::Relaxed) as f64;
    let bound = f64::from(RPS) * elapsed * 1.01 + f64::from(BURST);
    let plan = f64::from(RPS) * elapsed + f64::from(BURST);
    println!(
        "3 nodes, only REDIS_URL set: admitted {admitted} in {elapsed:.2}s, plan allows {plan:.0}: {:.3}x",
        admitted / plan
    );
    assert!(refused.load(Ordering::Relaxed) > 0, "the clients pushed past the limit");
    assert!(admitted <= bound, "admitted {admitted} in {elapsed:.2}s; bound {bound:.0}");
    assert!(admitted >= f64::from(RPS) * WINDOW.as_secs_f64() * 0.9, "admitted {admitted}: the limit was reachable");
    for server in [first, second, third] {
        server.terminate().await;
    }
    pool.close().await;
}

/// A Redis limiter on the test Redis, as `serve` builds it.
async fn redis_limiter() -> tenantry::ratelimit::RedisLimiter {
    let config = fred::prelude::Config::from_url(crate::harness::redis::url().await).unwrap();
    let client = fred::prelude::Builder::from_config(config).build().unwrap();
    fred::prelude::ClientLike::init(&client).await.unwrap();
    tenantry::ratelimit::RedisLimiter::new(client)
}

/// A plan of `burst` tokens refilled at one a second (the slowest refill a
/// plan has), so a test's few seconds add almost nothing to its bucket.
fn slow_plan(burst: u32) -> tenantry::ratelimit::Limits {
    tenantry::ratelimit::Limits { plan_id: "slow".into(), requests_per_second: 1, burst, monthly_request_quota: 0 }
}

/// Makes `calls` concurrent one-token calls of `tenant` on `limiter`, each
/// spent from a lease when the node holds one, as the stack does; returns
/// how many were admitted.
async fn admitted_of(
    limiter: &tenantry::ratelimit::RedisLimiter,
    tenant: &tenantry::tenancy::TenantId,
    limits: &tenantry::ratelimit::Limits,
    calls: usize,
) -> usize {
    let handles: Vec<_> = (0..calls)
        .map(|_| {
            let (limiter, tenant, limits) = (limiter.clone(), tenant.clone(), limits.clone());
            tokio::spawn(async move {
                match limiter.leased(&tenant, &limits, 1) {
                    Some(decision) => decision.allowed,
                    None => limiter.check(&tenant, &limits, 1).await.expect("Redis answers").allowed,
                }
            })
        })
        .collect();
    let mut admitted = 0;
    for handle in handles {
        admitted += usize::from(handle.await.unwrap());
    }
    admitted
}

/// Concurrent calls of one tenant share round trips but are decided one by
/// one in Redis: a bucket of 50 admits exactly 50 of 400 simultaneous calls,
/// each told how many remain, and a refused call takes no tokens.
#[tokio::test]
async fn coalesced_redis_decisions_are_exact() {
    let limiter = redis_limiter().await;
    let tenant = tenantry::tenancy::TenantId::generate();
    // One token a second (the slowest refill a plan has): a second must pass
    // before a 51st call could be admitted.
    let limits = slow_plan(50);
    let started = Instant::now();
    let calls: Vec<_> = (0..400)
        .map(|_| {
            let (limiter, tenant, limits) = (limiter.clone(), tenant.clone(), limits.clone());
            tokio::spawn(async move { limiter.check(&tenant, &limits, 1).await.expect("Redis answers") })
        })
        .collect();
    let mut decisions = Vec::new();
    for call in calls {
        decisions.push(call.await.unwrap());
    }
    let refills = started.elapsed().as_secs() as usize;
    let mut remaining: Vec<u64> = decisions.iter().filter(|d| d.allowed).map(|d| d.headers.remaining).collect();
    assert!(
        (50..=50 + refills).contains(&remaining.len()),
        "{} admitted of a bucket of 50 in {:?}",
        remaining.len(),
        started.elapsed()
    );
    if refills == 0 {
        remaining.sort_unstable();
        assert_eq!(remaining, (0..50).collect::<Vec<_>>(), "each admitted call saw its own remaining count");
    }
    assert!(decisions.iter().filter(|d| !d.allowed).all(|d| d.retry_after > Duration::ZERO));
    assert!(limiter.round_trips() < 400, "{} round trips for 400 calls: nothing was coalesced", limiter.round_trips());
    // A costlier call than what is left is refused without taking the rest.
    let limits = tenantry::ratelimit::Limits { burst: 5, ..limits };
    let other = tenantry::tenancy::TenantId::generate();
    assert!(limiter.check(&other, &limits, 3).await.unwrap().allowed);
    assert!(!limiter.check(&other, &limits, 3).await.unwrap().allowed);
    assert!(limiter.check(&other, &limits, 2).await.unwrap().allowed, "the refused call took nothing");
}

/// A busy tenant far from its limit is partly decided from leased tokens,
/// without round trips; the bucket still bounds what is admitted.
#[tokio::test]
async fn leased_redis_decisions_never_admit_more_than_the_bucket() {
    let limiter = redis_limiter().await;
    // Room for every call: all admitted, some from leases.
    let roomy = tenantry::tenancy::TenantId::generate();
    let started = Instant::now();
    assert_eq!(admitted_of(&limiter, &roomy, &slow_plan(3_200), 2_000).await, 2_000);
    assert!(limiter.leased_decisions() > 0, "no call was decided from a lease");
    let (round_trips, leased) = (limiter.round_trips(), limiter.leased_decisions());
    assert!(round_trips < 2_000 && leased < 2_000, "{round_trips} round trips, {leased} leased");

    // Twice the bucket: no more than the bucket (and its refill) admitted,
    // and at most one lease's worth (a sixteenth) left unspent.
    let busy = tenantry::tenancy::TenantId::generate();
    let admitted = admitted_of(&limiter, &busy, &slow_plan(1_600), 3_200).await;
    let refills = started.elapsed().as_secs() as usize + 1;
    assert!((1_500..=1_600 + refills).contains(&admitted), "{admitted} admitted of a bucket of 1,600");
}

/// Two nodes share a tenant's Redis bucket. Tokens one node holds leased
/// (at most a sixteenth of the bucket) never refuse a burst on the other
/// that the rest of the bucket has room for, and together the two never
/// admit more than the bucket and its refill (docs/limits-and-usage.md,
/// "Leases").
#[tokio::test]
async fn a_lease_on_one_node_leaves_the_rest_of_the_bucket_to_the_others() {
    let (first, second) = (redis_limiter().await, redis_limiter().await);
    let tenant = tenantry::tenancy::TenantId::generate();
    let limits = slow_plan(1_600);
    let started = Instant::now();
    assert_eq!(admitted_of(&first, &tenant, &limits, 800).await, 800, "the first node's calls fit the bucket");
    assert!(first.leased_decisions() > 0, "the first node decided calls from leases");
    // 800 spent, at most 100 leased and unspent on the first node: the
    // second node gets every one of the 700 left.
    assert_eq!(
        admitted_of(&second, &tenant, &limits, 700).await,
        700,
        "a lease elsewhere refused calls the bucket had room for"
    );
    // Both nodes now flood what is left: the bucket holds at most its
    // refill and the first node's unspent lease.
    let (more_first, more_second) =
        tokio::join!(admitted_of(&first, &tenant, &limits, 500), admitted_of(&second, &tenant, &limits, 500));
    let refills = started.elapsed().as_secs() as usize + 1;
    let total = 800 + 700 + more_first + more_second;
    assert!(total <= 1_600 + refills, "{total} admitted by two nodes sharing a bucket of 1,600");
    // What leases can waste: one unspent lease per node.
    assert!(total >= 1_600 - 2 * 100, "{total} admitted: more than two leases' worth of the bucket went unspent");
}

/// A Redis URL alone selects the Redis engine; `local` must be asked for.
#[tokio::test]
async fn a_redis_url_selects_the_redis_engine_and_local_is_an_explicit_opt_out() {
    let app = TestApp::builder().spawn().await; // the harness sets only the Redis URL
    let (_, metrics) = app.http_get("/metrics").await;
    assert!(metrics.contains("tenantry_rate_limit_engine{engine=\"redis\"} 1"), "{metrics}");
    upsert_plan(&app.channel, &app.admin_key, "tiny", 1, 3, 0).await;
    let tenant = app.create_tenant_on("by-default", "tiny").await;
    for _ in 0..3 {
        call(&app.channel, &tenant).await.expect("within the burst");
    }
    let refused = call(&app.channel, &tenant).await.unwrap_err();
    assert_rate_limited(&refused, &tenant);
    let local = app.second_node().configure(|c| c.rate_limit_engine = Some(RateLimitEngine::Local)).spawn().await;
    let (_, metrics) = local.http_get("/metrics").await;
    assert!(metrics.contains("tenantry_rate_limit_engine{engine=\"local\"} 1"), "{metrics}");
    local.stop().await;
    app.stop().await;
}

/// Nodes name themselves on their database sessions; a node limiting
/// locally sees its API peers, which is what its start-up warning reports.
#[tokio::test]
async fn a_node_limiting_locally_sees_the_other_api_nodes() {
    use tenantry::{
        config::Role,
        ratelimit::fleet::{self, NodeIdentity},
    };
    let local = |c: &mut tenantry::config::ServeConfig| c.rate_limit_engine = Some(RateLimitEngine::Local);
    let app = TestApp::builder().configure(local).spawn().await;
    let second = app.second_node().configure(local).spawn().await;
    let third = app.second_node().spawn().await; // Redis by default
    let me = NodeIdentity::new(Role::Api, RateLimitEngine::Local);
    let all_seen = eventually(Duration::from_secs(10), || async {
        let seen = fleet::peers(&app.pool, &me).await.expect("pg_stat_activity is readable");
        seen.iter().filter(|p| p.role == "api").count() >= 3
    })
    .await;
    let seen = fleet::peers(&app.pool, &me).await.unwrap();
    assert!(all_seen, "three API nodes are visible: {seen:?}");
    assert_eq!(seen.iter().filter(|p| p.engine == "local").count(), 2, "{seen:?}");
    let warning = fleet::verdict(&me, &seen).expect("a local node among peers is warned");
    assert!(warning.contains("up to 4x its plan"), "{warning}");
    for node in [third, second, app] {
        node.stop().await;
    }
}
