//! One node's memory as the tenants it serves grow from 1,000 to 10,000 to
//! 100,000 (issue 14, item 4): a release `tenantry serve --no-workers` (the
//! API task as Terraform runs it) is called for every tenant of the step,
//! and its resident set size is read from `/proc` after each step.
//!
//! # What the calls exercise
//!
//! For tenant `i` of a step, three calls, 64 in flight:
//! - `GetQuota` as the platform admin naming the tenant (`x-tenant-id`): the
//!   tenant directory cache, the plan cache, the rate limiter (its engine and
//!   its per-tenant last decision), the monthly quota map (one count loaded
//!   per tenant) and the usage meter (one entry per tenant and method);
//! - `WhoAmI` with API key `i`: the API-key index lookup and the identity
//!   cache of verified keys, and the batched last-used flush;
//! - `WhoAmI` with an access token of user `i`, signed with the server's key
//!   (the bench gives the server its key): the verified-token cache and the
//!   identity cache of users' access.
//!
//! # Why tenant rows, not 100,000 schemas
//!
//! Provisioning a tenant (schema, migrations, owner) takes tens of
//! milliseconds; 100,000 would take over an hour and measure PostgreSQL's
//! catalog, not the node. None of the node state above reads a tenant
//! schema except the key lookup, so the 100,000 tenants are rows in
//! `platform.tenants` (inserted in one statement), and the 100,000 API keys
//! and 100,000 users live in 100 provisioned tenants, 1,000 of each per
//! tenant (bulk inserted; keys with their index rows, hashed as
//! `CreateApiKey` hashes them). The identity caches are keyed by key and by
//! user, not by tenant, so at step N they hold N keys and N users, as they
//! would if each of N tenants had one active key and one active user.
//!
//! # Running it
//!
//! `nice -n 10 cargo bench --bench node_memory` (uses `DATABASE_URL`, or a
//! private PostgreSQL; `REDIS_URL` when set selects the Redis engine, as in
//! production). `NODE_MEMORY_STEPS=1000,10000` runs fewer steps. Figures are
//! recorded in docs/scaling-out.md.

mod support;

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use tenantry::{
    auth::api_key::{self, AdminKeys},
    identity::{
        keys::{self, KeyRing},
        tokens::TokenService,
    },
    ids,
    proto::tenantry::v1::{
        GetQuotaRequest, WhoAmIRequest, auth_service_client::AuthServiceClient,
        usage_service_client::UsageServiceClient,
    },
    tenancy::TenantId,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::Semaphore,
};
use tonic::{Code, Request, metadata::AsciiMetadataValue, transport::Channel};

/// Tenants that hold the API keys (full schemas).
const KEY_TENANTS: usize = 100;
/// Calls in flight.
const IN_FLIGHT: usize = 64;

#[tokio::main]
async fn main() {
    let steps: Vec<usize> = std::env::var("NODE_MEMORY_STEPS")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("NODE_MEMORY_STEPS: numbers"))
        .collect();
    let largest = *steps.iter().max().expect("a step");
    let scratch = support::Scratch::create().await;

    let started = Instant::now();
    let tenants = insert_tenant_rows(&scratch.pool, largest).await;
    let key_tenants = support::provision_many(&scratch.pool, 0..KEY_TENANTS, "keys", 8).await;
    sqlx::query("UPDATE platform.tenants SET plan_id = 'enterprise' WHERE slug LIKE 'keys-%'")
        .execute(&scratch.pool)
        .await
        .unwrap();
    let keys = insert_api_keys(&scratch.pool, &key_tenants, largest).await;
    let signing = keys::generate().unwrap();
    let tokens = insert_users(&scratch.pool, &key_tenants, largest, &signing.private_pem).await;
    sqlx::query("ANALYZE").execute(&scratch.pool).await.unwrap();
    println!(
        "{largest} tenant rows, {} API keys and {} users with tokens in {:.1?}",
        keys.len(),
        tokens.len(),
        started.elapsed()
    );
    let credentials: Vec<(String, String)> = keys.into_iter().zip(tokens).collect();

    let (_, admin_key) = AdminKeys::new(scratch.pool.clone()).create("bench").await.unwrap();
    let (mut server, grpc) = start_server(&scratch.url(), &signing.private_pem).await;
    let pid = server.id().expect("running");
    let channels: Vec<Channel> = {
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap());
        }
        channels
    };
    // One call, so the baseline includes what the first call sets up.
    call_tenants(&channels, &admin_key, &tenants[..1], &credentials[..1]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let baseline = memory(pid);
    println!("baseline (one tenant called): RSS {} MiB", baseline.0 / 1024);
    println!("| tenants called | RSS MiB | peak RSS MiB | step wall time |");
    println!("|---:|---:|---:|---:|");
    for &step in &steps {
        let began = Instant::now();
        call_tenants(&channels, &admin_key, &tenants[..step], &credentials[..step]).await;
        let took = began.elapsed();
        // The meter flushes every second and moka settles its pending work.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (rss, peak) = memory(pid);
        println!("| {step} | {} | {} | {:.1?} |", rss / 1024, peak / 1024, took);
    }

    server.start_kill().ok();
    server.wait().await.ok();
    scratch.finish().await;
}

/// `count` tenant rows on the free plan, ids in the tenant id format.
async fn insert_tenant_rows(pool: &sqlx::PgPool, count: usize) -> Vec<TenantId> {
    let ids: Vec<String> = sqlx::query_scalar(
        "INSERT INTO platform.tenants (id, slug, display_name, plan_id)
         SELECT 'ten_' || substr(md5('bench' || g), 1, 24), 'bench-' || g, 'bench-' || g, 'free'
           FROM generate_series(1, $1) g
         RETURNING id",
    )
    .bind(count as i64)
    .fetch_all(pool)
    .await
    .unwrap();
    ids.iter().map(|id| TenantId::parse(id).expect("a tenant id")).collect()
}

/// `count` API keys spread over `holders`, as CreateApiKey stores them;
/// returns the full keys.
async fn insert_api_keys(pool: &sqlx::PgPool, holders: &[TenantId], count: usize) -> Vec<String> {
    let per_holder = count.div_ceil(holders.len());
    let mut full = Vec::with_capacity(count);
    for holder in holders {
        let generated: Vec<_> = (0..per_holder.min(count - full.len())).map(|_| api_key::generate()).collect();
        let key_ids: Vec<String> = generated.iter().map(|_| ids::new_id("key")).collect();
        let public_ids: Vec<&str> = generated.iter().map(|k| k.public_id.as_str()).collect();
        let hashes: Vec<&[u8]> = generated.iter().map(|k| k.secret_hash.as_slice()).collect();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(&format!(
            "INSERT INTO \"{}\".api_keys (id, public_id, name, secret_hash, scopes, created_by)
             SELECT id, public_id, 'bench', secret_hash, ARRAY['usage:read'], 'usr_bench'
               FROM unnest($1::text[], $2::text[], $3::bytea[]) AS k (id, public_id, secret_hash)",
            holder.schema()
        ))
        .bind(&key_ids)
        .bind(&public_ids)
        .bind(&hashes)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO platform.api_key_index (public_id, tenant_id, key_id)
             SELECT public_id, $3, id FROM unnest($1::text[], $2::text[]) AS k (id, public_id)",
        )
        .bind(&key_ids)
        .bind(&public_ids)
        .bind(holder.as_str())
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        full.extend(generated.into_iter().map(|k| k.full));
    }
    full
}

/// `count` users spread over `holders` (no roles, no password anyone
/// knows), and an access token for each signed with `private_pem`.
async fn insert_users(pool: &sqlx::PgPool, holders: &[TenantId], count: usize, private_pem: &str) -> Vec<String> {
    let defaults: tenantry::config::ServeConfig = tenantry::config::defaults();
    let issuer = TokenService::new(
        KeyRing::from_pems(private_pem, &[]).unwrap(),
        &defaults.identity.jwt_issuer,
        &defaults.identity.jwt_audience,
        // Outlives the run.
        Duration::from_secs(4 * 3600),
    );
    let per_holder = count.div_ceil(holders.len());
    let mut tokens = Vec::with_capacity(count);
    for holder in holders {
        let users: Vec<String> = (0..per_holder.min(count - tokens.len())).map(|_| ids::new_id("usr")).collect();
        sqlx::query(&format!(
            "INSERT INTO \"{}\".users (id, email, password_hash)
             SELECT id, id || '@bench.test', 'not-a-hash' FROM unnest($1::text[]) AS u (id)",
            holder.schema()
        ))
        .bind(&users)
        .execute(pool)
        .await
        .unwrap();
        tokens.extend(users.iter().map(|user| issuer.issue(holder, user, "ses_bench").unwrap().0));
    }
    tokens
}

/// The release binary serving on `database_url` signing with
/// `private_pem`, and its gRPC address.
async fn start_server(database_url: &str, private_pem: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--no-workers", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env("DATABASE_URL", database_url)
        .env("TENANTRY_JWT_PRIVATE_KEY", private_pem)
        .env("TENANTRY_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("TENANTRY_DB_ACQUIRE_TIMEOUT", "5s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tenantry serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let grpc = loop {
        let line = lines.next_line().await.unwrap().expect("tenantry serve exited before serving");
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
            && json["message"] == "serving"
        {
            break json["grpc"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, grpc)
}

/// Resident and peak resident set size of `pid`, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn with_header<T>(message: T, pairs: &[(&'static str, &str)]) -> Request<T> {
    let mut request = Request::new(message);
    for (name, value) in pairs {
        request.metadata_mut().insert(*name, AsciiMetadataValue::try_from(*value).unwrap());
    }
    request
}

/// Calls GetQuota in each of `tenants` and WhoAmI with each of
/// `credentials` (an API key and an access token), [`IN_FLIGHT`] at a time,
/// retrying what the node sheds or limits.
async fn call_tenants(channels: &[Channel], admin_key: &str, tenants: &[TenantId], credentials: &[(String, String)]) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let admin = format!("Bearer {admin_key}");
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (tenant, (key, token))) in tenants.iter().zip(credentials).enumerate() {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let channel = channels[i % channels.len()].clone();
        let (admin, tenant) = (admin.clone(), tenant.as_str().to_owned());
        let (key, token) = (format!("Bearer {key}"), format!("Bearer {token}"));
        tasks.spawn(async move {
            let _permit = permit;
            let usage = UsageServiceClient::new(channel.clone());
            let auth = AuthServiceClient::new(channel);
            retrying(|| {
                let request =
                    with_header(GetQuotaRequest::default(), &[("authorization", &admin), ("x-tenant-id", &tenant)]);
                let mut usage = usage.clone();
                async move { usage.get_quota(request).await.map(drop) }
            })
            .await;
            for bearer in [&key, &token] {
                retrying(|| {
                    let request = with_header(WhoAmIRequest {}, &[("authorization", bearer)]);
                    let mut auth = auth.clone();
                    async move { auth.who_am_i(request).await.map(drop) }
                })
                .await;
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    tasks.join_all().await;
}

/// Runs `call` until it succeeds, waiting a little after a shed or limited
/// call; any other error ends the bench.
async fn retrying<F, Fut>(mut call: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    loop {
        match call().await {
            Ok(()) => return,
            Err(status) if matches!(status.code(), Code::Unavailable | Code::ResourceExhausted) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(status) => panic!("unexpected error: {status:?}"),
        }
    }
}
