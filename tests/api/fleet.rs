//! The fleet as production runs it (issue 14): three `tenantry serve`
//! processes and one `tenantry worker`, every pool through PgBouncer in
//! transaction mode (the documented `pgbouncer.ini`, LISTEN direct), a
//! three-master Redis Cluster, and otherwise the default configuration: the
//! only limit setting given is the `redis-cluster://` URL.
//!
//! One fleet is started once and checked in phases, so the test pays one
//! start-up:
//!
//! 1. every node picked the Redis engine, and the three together admit at
//!    most 1.01x the plan (and not much less);
//! 2. an API key revoked and a user disabled on node A are refused on nodes B
//!    and C within a second;
//! 3. jobs enqueued on all three nodes run exactly once, by the worker
//!    process and by the nodes' built-in workers;
//! 4. node C stopped with SIGTERM has written every call it acknowledged
//!    (metered calls and RecordUsage events), and the others keep serving.
//!
//! Skipped with one line without PgBouncer >= 1.21 (failing instead when
//! `TENANTRY_REQUIRE_PGBOUNCER` is set), as every PgBouncer variant is.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tenantry::proto::tenantry::v1::{
    CreateApiKeyRequest, CreateTenantRequest, EnqueueJobRequest, GetQuotaRequest, RecordUsageRequest,
    RevokeApiKeyRequest, UpdateUserRequest, UsageEvent, User, UserState, WhoAmIRequest,
    auth_service_client::AuthServiceClient, jobs_service_client::JobsServiceClient,
    tenant_service_client::TenantServiceClient, usage_service_client::UsageServiceClient,
};
use tonic::{Code, transport::Channel};

use crate::{
    harness::{
        Backend, TestDatabase, http_get,
        identity::{PASSWORD, bearer},
        pgbouncer,
        redis_cluster::cluster_url,
        tenants::{TenantHandle, create_tenant_via, upsert_plan},
        with_metadata,
    },
    observability::server_process::ServerProcess,
};

/// Three API nodes and a worker on one database, and a way in.
struct Fleet {
    /// Nodes A, B and C.
    nodes: Vec<ServerProcess>,
    /// A gRPC channel to each node, in the same order.
    channels: Vec<Channel>,
    worker: ServerProcess,
    /// Straight to PostgreSQL, for arranging and inspecting.
    pool: sqlx::PgPool,
    admin_key: String,
    /// Dropped last: the processes are killed before their database goes.
    _database: TestDatabase,
}

impl Fleet {
    async fn start() -> Fleet {
        let database = TestDatabase::create().await;
        let mut env: HashMap<&str, String> = Backend::PgBouncer.cli_env(&database).await.into_iter().collect();
        env.insert("REDIS_URL", cluster_url().await.to_owned());
        // The first node migrates; the others then find the schema current.
        let first = ServerProcess::start(&database, &env).await;
        let (second, third, worker) = tokio::join!(
            ServerProcess::start(&database, &env),
            ServerProcess::start(&database, &env),
            ServerProcess::start_worker(&database, &env),
        );
        let nodes = vec![first, second, third];
        let mut channels = Vec::new();
        for node in &nodes {
            let endpoint = Channel::from_shared(format!("http://{}", node.grpc)).unwrap();
            channels.push(endpoint.connect().await.expect("connect to a node"));
        }
        let pool = sqlx::PgPool::connect_with(database.options.clone()).await.unwrap();
        let (_, admin_key) = tenantry::auth::api_key::AdminKeys::new(pool.clone()).create("fleet").await.unwrap();
        Fleet { nodes, channels, worker, pool, admin_key, _database: database }
    }

    /// A tenant on `plan` with an owner `owner@<slug>.test`, created through node A.
    async fn tenant_with_owner(&self, slug: &str, plan: &str) {
        let request = CreateTenantRequest {
            slug: slug.into(),
            display_name: slug.into(),
            plan_id: plan.into(),
            owner_email: Some(format!("owner@{slug}.test")),
            owner_password: Some(PASSWORD.into()),
            ..Default::default()
        };
        let bearer = format!("Bearer {}", self.admin_key);
        TenantServiceClient::new(self.channels[0].clone())
            .create_tenant(with_metadata(request, &[("authorization", &bearer)]))
            .await
            .expect("create a tenant with an owner");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_and_a_worker_through_pgbouncer_and_a_redis_cluster_behave_as_one_service() {
    if !pgbouncer::available() {
        return;
    }
    let started = Instant::now();
    let fleet = Fleet::start().await;
    println!("fleet up in {:.1?}", started.elapsed());
    global_rate_limits_hold_across_the_nodes(&fleet).await;
    revocations_on_one_node_reach_the_others_within_a_second(&fleet).await;
    jobs_enqueued_on_every_node_run_exactly_once(&fleet).await;
    metering_is_exact_after_a_node_is_stopped_with_sigterm(fleet).await;
    println!("fleet test done in {:.1?}", started.elapsed());
}

async fn get_quota(channel: &Channel, tenant: &TenantHandle) -> Result<(), tonic::Status> {
    UsageServiceClient::new(channel.clone()).get_quota(tenant.as_admin(GetQuotaRequest::default())).await.map(drop)
}

/// Phase 1: the default engine is Redis on every node, and the plan holds
/// for the three together.
async fn global_rate_limits_hold_across_the_nodes(fleet: &Fleet) {
    const RPS: u32 = 50;
    const BURST: u32 = 20;
    const WINDOW: Duration = Duration::from_secs(6);
    for node in &fleet.nodes {
        let (_, metrics) = http_get(node.http, "/metrics").await;
        assert!(metrics.contains("tenantry_rate_limit_engine{engine=\"redis\"} 1"), "a Redis URL alone: {metrics}");
    }
    upsert_plan(&fleet.channels[0], &fleet.admin_key, "fleet", RPS, BURST, 0).await;
    let tenant = create_tenant_via(&fleet.channels[0], &fleet.admin_key, "limited", "fleet").await;

    let (admitted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let began = Instant::now();
    let clients: Vec<_> = (0..12)
        .map(|i| {
            let channel = fleet.channels[i % 3].clone();
            let (tenant, admitted, refused) = (tenant.clone(), admitted.clone(), refused.clone());
            tokio::spawn(async move {
                while began.elapsed() < WINDOW {
                    match get_quota(&channel, &tenant).await {
                        Ok(()) => admitted.fetch_add(1, Ordering::Relaxed),
                        Err(status) if status.code() == Code::ResourceExhausted => {
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(status) => panic!("only admissions and refusals: {status:?}"),
                    };
                    // Paced: 12 clients still offer several times the plan,
                    // without taking a shared 2-core machine's CPU.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let elapsed = began.elapsed().as_secs_f64();
    let (admitted, refused) = (admitted.load(Ordering::Relaxed) as f64, refused.load(Ordering::Relaxed));
    let plan = f64::from(RPS) * elapsed + f64::from(BURST);
    println!(
        "3 nodes through PgBouncer, only a redis-cluster:// URL: admitted {admitted} in {elapsed:.2} s \
         ({refused} refused); the plan allows {plan:.0}: {:.3}x",
        admitted / plan
    );
    assert!(refused > 0, "the clients pushed past the limit");
    assert!(admitted <= f64::from(RPS) * elapsed * 1.01 + f64::from(BURST), "at most 1.01x the plan: {admitted}");
    assert!(admitted >= 0.9 * f64::from(RPS) * WINDOW.as_secs_f64(), "the plan was reachable: {admitted}");
}

/// Polls `call` on every one of `channels` every 10 ms until each refuses
/// with UNAUTHENTICATED; returns how long each took, or fails after 5 s.
async fn refused_everywhere<F, Fut>(what: &str, channels: &[Channel], since: Instant, call: F) -> Vec<Duration>
where
    F: Fn(Channel) -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let mut took = Vec::new();
    for channel in channels {
        loop {
            match call(channel.clone()).await {
                Err(status) if status.code() == Code::Unauthenticated => break,
                Err(status) => panic!("{what}: refused with UNAUTHENTICATED, not {status:?}"),
                Ok(()) => {
                    assert!(since.elapsed() < Duration::from_secs(5), "{what}: still accepted after 5 s");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        took.push(since.elapsed());
    }
    took
}

/// Phase 2: revocations made on A are refused on B and C within a second,
/// after B and C cached the credential.
async fn revocations_on_one_node_reach_the_others_within_a_second(fleet: &Fleet) {
    fleet.tenant_with_owner("revoking", "enterprise").await;
    let on = |i: usize| AuthServiceClient::new(fleet.channels[i].clone());
    let owner = on(0).login(login_request("revoking", "owner")).await.expect("the owner logs in").into_inner();
    let key_request = CreateApiKeyRequest { name: "ci".into(), scopes: vec!["users:read".into()], expire_time: None };
    let key = on(0).create_api_key(bearer(key_request, &owner.access_token)).await.unwrap().into_inner();
    let user_request = tenantry::proto::tenantry::v1::CreateUserRequest {
        email: "ada@revoking.test".into(),
        display_name: "Ada".into(),
        password: PASSWORD.into(),
        roles: vec!["member".into()],
    };
    let ada = on(0).create_user(bearer(user_request, &owner.access_token)).await.unwrap().into_inner().user.unwrap();
    let ada_token = on(0).login(login_request("revoking", "ada")).await.unwrap().into_inner().access_token;
    let who_am_i = |secret: String| {
        move |channel: Channel| {
            let secret = secret.clone();
            async move { AuthServiceClient::new(channel).who_am_i(bearer(WhoAmIRequest {}, &secret)).await.map(drop) }
        }
    };
    // B and C verify, and cache, both credentials first.
    for channel in &fleet.channels[1..] {
        who_am_i(key.secret.clone())(channel.clone()).await.expect("the key works on every node");
        who_am_i(ada_token.clone())(channel.clone()).await.expect("the token works on every node");
    }

    let key_id = key.api_key.unwrap().id;
    let revoked_at = Instant::now();
    on(0).revoke_api_key(bearer(RevokeApiKeyRequest { api_key_id: key_id }, &owner.access_token)).await.unwrap();
    let key_took = refused_everywhere("the revoked key", &fleet.channels[1..], revoked_at, who_am_i(key.secret)).await;

    let disable = UpdateUserRequest {
        user: Some(User { id: ada.id, state: UserState::Disabled as i32, ..Default::default() }),
        update_mask: None,
    };
    let disabled_at = Instant::now();
    on(0).update_user(bearer(disable, &owner.access_token)).await.unwrap();
    let user_took =
        refused_everywhere("the disabled user", &fleet.channels[1..], disabled_at, who_am_i(ada_token)).await;
    println!("revocation on A refused on B and C after: key {key_took:?}, user {user_took:?} (from the request)");
    for took in key_took.iter().chain(&user_took) {
        assert!(*took <= Duration::from_secs(1), "refused on every node within a second: {key_took:?} {user_took:?}");
    }
}

fn login_request(tenant: &str, name: &str) -> tenantry::proto::tenantry::v1::LoginRequest {
    tenantry::proto::tenantry::v1::LoginRequest {
        tenant: tenant.into(),
        email: format!("{name}@{tenant}.test"),
        password: PASSWORD.into(),
    }
}

/// Phase 3: jobs enqueued through all three nodes, in waves, each run once.
async fn jobs_enqueued_on_every_node_run_exactly_once(fleet: &Fleet) {
    const TENANTS: usize = 3;
    const WAVES: usize = 6;
    const PER_WAVE_AND_NODE: usize = 15;
    // Test instrumentation: every transition to completed, with the lease
    // holder that got it there.
    for statement in [
        "CREATE TABLE public.completions (job_id text NOT NULL, worker_id text)",
        "CREATE FUNCTION public.log_completion() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN INSERT INTO public.completions VALUES (NEW.id, OLD.worker_id); RETURN NEW; END $$",
        "CREATE TRIGGER log_completion AFTER UPDATE ON platform.jobs FOR EACH ROW
         WHEN (NEW.kind = 'tenantry.noop' AND NEW.state = 'completed' AND OLD.state <> 'completed') EXECUTE FUNCTION public.log_completion()",
    ] {
        sqlx::query(statement).execute(&fleet.pool).await.unwrap();
    }
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        tenants.push(create_tenant_via(&fleet.channels[i], &fleet.admin_key, &format!("jobs-{i}"), "enterprise").await);
    }
    let payload = prost_types::Struct {
        fields: BTreeMap::from([(
            "sleep_ms".to_owned(),
            prost_types::Value { kind: Some(prost_types::value::Kind::NumberValue(20.0)) },
        )]),
    };
    let mut enqueued = 0;
    for wave in 0..WAVES {
        let mut enqueues = tokio::task::JoinSet::new();
        for (node, i) in (0..3).flat_map(|node| (0..PER_WAVE_AND_NODE).map(move |i| (node, i))) {
            let mut client = JobsServiceClient::new(fleet.channels[node].clone());
            let request = EnqueueJobRequest {
                kind: "tenantry.noop".into(),
                payload: Some(payload.clone()),
                ..Default::default()
            };
            let request = tenants[(node + i + wave) % TENANTS].as_admin(request);
            enqueues.spawn(async move { client.enqueue_job(request).await.expect("enqueue") });
        }
        enqueued += enqueues.join_all().await.len();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let count =
        |sql: &'static str| async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&fleet.pool).await.unwrap() };
    let drained = crate::harness::eventually(Duration::from_secs(30), || async {
        count("SELECT count(*) FROM platform.jobs WHERE kind = 'tenantry.noop' AND state <> 'completed'").await == 0
    })
    .await;
    assert!(drained, "every job completed");
    let jobs = count("SELECT count(*) FROM platform.jobs WHERE kind = 'tenantry.noop' AND tenant_id IS NOT NULL").await;
    assert_eq!(jobs as usize, enqueued);
    assert_eq!(count("SELECT count(*) FROM public.completions").await as usize, enqueued, "one completion per job");
    assert_eq!(count("SELECT count(DISTINCT job_id) FROM public.completions").await as usize, enqueued);
    assert_eq!(count("SELECT count(*) FROM platform.jobs WHERE attempt <> 1 AND kind = 'tenantry.noop'").await, 0);

    let by_holder: Vec<(String, i64)> =
        sqlx::query_as("SELECT worker_id, count(*) FROM public.completions GROUP BY worker_id")
            .fetch_all(&fleet.pool)
            .await
            .unwrap();
    let ran_by = |process: &ServerProcess| -> i64 {
        let tag = format!("/pid-{}/", process.pid());
        by_holder.iter().filter(|(holder, _)| holder.contains(&tag)).map(|(_, n)| n).sum()
    };
    let per_node: Vec<i64> = fleet.nodes.iter().map(ran_by).collect();
    let by_worker = ran_by(&fleet.worker);
    println!("{enqueued} jobs, each completed once: nodes A, B, C ran {per_node:?}, the worker process {by_worker}");
    assert_eq!(per_node.iter().sum::<i64>() + by_worker, enqueued as i64, "every lease holder is one of the fleet");
    assert!(by_worker > 0, "the worker process ran jobs");
    assert!(per_node.iter().sum::<i64>() > 0, "the nodes' built-in workers ran jobs");
}

/// What the clients of phase 4 saw.
#[derive(Default)]
struct Tally {
    /// Calls answered OK, by node C and (after the switch) by node A.
    quota_ok: AtomicU64,
    usage_ok: AtomicU64,
    /// Calls node C failed while it stopped (each client switches at its first).
    failed_on_c: AtomicU64,
    /// Iterations begun, so the signal lands mid-load.
    begun: AtomicU64,
}

/// How a call fails on a node that is stopping: refused while it drains
/// (UNAVAILABLE), its connection closed under the call (the client's
/// CANCELLED or UNKNOWN transport error), or refused by the node's graceful
/// GOAWAY before it was processed. Never an error of the call itself.
fn assert_stopping(status: &tonic::Status) {
    let stopping = matches!(status.code(), Code::Unavailable | Code::Cancelled | Code::Unknown)
        || status.code() == Code::Internal && refused_by_graceful_goaway(status);
    assert!(stopping, "{status:?}");
}

/// Whether the call is one the server's graceful GOAWAY (NO_ERROR) turned
/// away: the client sent it after the GOAWAY reached it, so the server never
/// saw it. tonic reports that as INTERNAL with h2's error as the cause
/// (grpc-java and grpc-go map it to UNAVAILABLE and retry it themselves); only
/// this exact cause is accepted, never an INTERNAL the server sent.
fn refused_by_graceful_goaway(status: &tonic::Status) -> bool {
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        cause = error.source();
    }
    false
}

/// One client of phase 4: `CALLS` rounds of GetQuota and a RecordUsage of
/// two events, on node C until it fails, then on node A, retrying the failed
/// call there (the same event ids: RecordUsage is idempotent).
async fn metered_client(client: usize, c: Channel, a: Channel, tenant: TenantHandle, tally: Arc<Tally>) {
    const CALLS: usize = 40;
    let mut on_c = true;
    for call in 0..CALLS {
        tally.begun.fetch_add(1, Ordering::Relaxed);
        loop {
            match get_quota(if on_c { &c } else { &a }, &tenant).await {
                Ok(()) => break,
                Err(status) if on_c => {
                    tally.failed_on_c.fetch_add(1, Ordering::Relaxed);
                    on_c = false;
                    assert_stopping(&status);
                }
                Err(status) => panic!("node A fails GetQuota: {status:?}"),
            }
        }
        tally.quota_ok.fetch_add(1, Ordering::Relaxed);
        let events: Vec<UsageEvent> = (0..2)
            .map(|e| UsageEvent {
                event_id: format!("c{client}-{call}-{e}"),
                metric: "fleet.widgets".into(),
                quantity: 1.0,
                ..Default::default()
            })
            .collect();
        loop {
            let mut usage = UsageServiceClient::new(if on_c { c.clone() } else { a.clone() });
            match usage.record_usage(tenant.as_admin(RecordUsageRequest { events: events.clone() })).await {
                Ok(_) => break,
                Err(status) if on_c => {
                    tally.failed_on_c.fetch_add(1, Ordering::Relaxed);
                    on_c = false;
                    assert_stopping(&status);
                }
                Err(status) => panic!("node A fails RecordUsage: {status:?}"),
            }
        }
        tally.usage_ok.fetch_add(1, Ordering::Relaxed);
    }
}

/// Phase 4: node C is stopped with SIGTERM while clients call it; they move
/// to node A at their first failure. Every call acknowledged (by C before or
/// during its drain, or by A) is metered, at most the few that failed on C
/// besides, and every acknowledged event is stored once.
async fn metering_is_exact_after_a_node_is_stopped_with_sigterm(mut fleet: Fleet) {
    const CLIENTS: usize = 4;
    let tenant = create_tenant_via(&fleet.channels[0], &fleet.admin_key, "metered", "enterprise").await;
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (c, a) = (fleet.channels[2].clone(), fleet.channels[0].clone());
            tokio::spawn(metered_client(client, c, a, tenant.clone(), tally.clone()))
        })
        .collect();
    while tally.begun.load(Ordering::Relaxed) < 40 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let node_c = fleet.nodes.pop().expect("three nodes");
    let stopping = Instant::now();
    node_c.terminate().await;
    println!("node C drained and exited {:.1?} after SIGTERM", stopping.elapsed());
    for client in clients {
        client.await.unwrap();
    }
    let (quota_ok, usage_ok, failed_on_c) = (
        tally.quota_ok.load(Ordering::Relaxed) as f64,
        tally.usage_ok.load(Ordering::Relaxed) as f64,
        tally.failed_on_c.load(Ordering::Relaxed) as f64,
    );
    assert!(failed_on_c > 0.0, "the signal landed while the clients were calling node C");

    let metered = |method: &'static str| {
        let (pool, tenant) = (fleet.pool.clone(), tenant.id.clone());
        async move {
            sqlx::query_scalar::<_, f64>(
                "SELECT COALESCE(sum(value), 0)::float8 FROM platform.usage_counters
                  WHERE tenant_id = $1 AND metric = 'api.requests' AND method LIKE '%/' || $2",
            )
            .bind(tenant)
            .bind(method)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // Node C wrote its share before exiting; node A flushes every second.
    let counted = crate::harness::eventually(Duration::from_secs(5), || async {
        metered("GetQuota").await + metered("RecordUsage").await >= quota_ok + usage_ok
    })
    .await;
    let (quota_metered, usage_metered) = (metered("GetQuota").await, metered("RecordUsage").await);
    println!(
        "SIGTERM of node C under load: {quota_ok} GetQuota and {usage_ok} RecordUsage acknowledged, \
         {failed_on_c} failed on C and retried on A; metered {quota_metered} and {usage_metered}"
    );
    assert!(
        counted,
        "every acknowledged call is metered: {quota_metered} of {quota_ok}, {usage_metered} of {usage_ok}"
    );
    assert!(quota_metered >= quota_ok && usage_metered >= usage_ok);
    assert!(
        quota_metered + usage_metered <= quota_ok + usage_ok + failed_on_c,
        "nothing beyond the calls C failed is metered twice"
    );
    let schema = tenantry::tenancy::TenantId::parse(&tenant.id).expect("a tenant id").schema();
    let stored: (i64, f64) = sqlx::query_as(&format!(
        "SELECT count(*), COALESCE(sum(quantity), 0)::float8 FROM \"{schema}\".usage_events
          WHERE metric = 'fleet.widgets'"
    ))
    .fetch_one(&fleet.pool)
    .await
    .unwrap();
    assert_eq!(stored, (2 * usage_ok as i64, 2.0 * usage_ok), "every acknowledged event stored once");
    get_quota(&fleet.channels[1], &tenant).await.expect("node B still serves");
}
