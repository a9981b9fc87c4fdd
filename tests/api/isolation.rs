//! Tenant isolation at the connection level: the one door (`TenantTx`) never
//! lets one tenant's scope leak to the next borrower of a pooled connection,
//! even with cancelled calls and aborted transactions, straight to
//! PostgreSQL and through PgBouncer in transaction pooling mode.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tenantry::tenancy::{
    TenantId, TenantTx,
    model::{NewTenant, Slug},
    store,
};

use crate::harness::{Backend, TestDatabase, on_every_backend};

on_every_backend!(pooled_connections_never_carry_a_tenant_scope_to_the_next_call);

const TENANTS: usize = 50;
const OPERATIONS: usize = 3000;
const WORKERS: usize = 16;

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

/// Provisions `TENANTS` tenants, each with a marker row naming itself.
async fn provision_tenants(direct: &PgPool) -> Vec<TenantId> {
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let new = NewTenant {
            slug: Slug::parse(&format!("tenant-{i}")).unwrap(),
            display_name: format!("Tenant {i}"),
            plan_id: "free".into(),
            labels: Default::default(),
        };
        let (tenant, mut tx) = store::provision(direct.begin().await.unwrap(), &new, deadline()).await.unwrap();
        sqlx::query("INSERT INTO audit_events (id, event_type, actor_kind, actor_id) VALUES ('marker', 'test.marker', 'system', $1)")
            .bind(tenant.id.as_str())
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        tenants.push(tenant.id);
    }
    tenants
}

#[derive(Default)]
struct Tally {
    checked: AtomicUsize,
    mismatches: AtomicUsize,
    cancelled: AtomicUsize,
    aborted: AtomicUsize,
}

/// Reads the marker through the tenant door; it must name `tenant`.
async fn check_scope(pool: &PgPool, tenant: &TenantId, tally: &Tally) -> Result<(), sqlx::Error> {
    let mut tx = TenantTx::begin(pool, tenant, deadline()).await?;
    let marker: String = sqlx::query_scalar("SELECT actor_id FROM audit_events WHERE id = 'marker'")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await?;
    let path: String =
        sqlx::query_scalar("SELECT current_setting('search_path')").persistent(false).fetch_one(&mut *tx).await?;
    if marker != tenant.as_str() || path != format!("\"{}\"", tenant.schema()) {
        tally.mismatches.fetch_add(1, Ordering::Relaxed);
    }
    tally.checked.fetch_add(1, Ordering::Relaxed);
    tx.commit().await
}

/// Work outside any tenant must never see a tenant's search_path.
async fn check_unscoped(pool: &PgPool, tally: &Tally) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let path: String =
        sqlx::query_scalar("SELECT current_setting('search_path')").persistent(false).fetch_one(&mut *tx).await?;
    if path.contains("t_ten_") {
        tally.mismatches.fetch_add(1, Ordering::Relaxed);
    }
    tally.checked.fetch_add(1, Ordering::Relaxed);
    tx.commit().await
}

async fn run_interleaved(pool: PgPool, tenants: Vec<TenantId>, seed: u64) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let tenants = Arc::new(tenants);
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (pool, tenants, tally) = (pool.clone(), tenants.clone(), tally.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed + worker as u64);
            for _ in 0..OPERATIONS / WORKERS {
                let tenant = tenants[rng.random_range(0..tenants.len())].clone();
                match rng.random_range(0..10) {
                    // A call cancelled at a random point, mid-transaction.
                    0 | 1 => {
                        let cut = Duration::from_micros(rng.random_range(0..2000));
                        let work = async {
                            let mut tx = TenantTx::begin(&pool, &tenant, deadline()).await?;
                            sqlx::query("SELECT pg_sleep(0.001)").persistent(false).execute(&mut *tx).await?;
                            tx.commit().await
                        };
                        if tokio::time::timeout(cut, work).await.is_err() {
                            tally.cancelled.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // A transaction aborted by an error, then dropped.
                    2 => {
                        let mut tx = TenantTx::begin(&pool, &tenant, deadline()).await.unwrap();
                        let failed = sqlx::query("SELECT 1 / 0").persistent(false).execute(&mut *tx).await;
                        assert!(failed.is_err());
                        tally.aborted.fetch_add(1, Ordering::Relaxed);
                    }
                    // A transaction that writes, then rolls back explicitly.
                    3 => {
                        let mut tx = TenantTx::begin(&pool, &tenant, deadline()).await.unwrap();
                        sqlx::query("UPDATE audit_events SET outcome = 'changed' WHERE id = 'marker'")
                            .persistent(false)
                            .execute(&mut *tx)
                            .await
                            .unwrap();
                        drop(tx);
                    }
                    4 => check_unscoped(&pool, &tally).await.unwrap(),
                    _ => check_scope(&pool, &tenant, &tally).await.unwrap(),
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    tally
}

async fn assert_no_contamination(pool: PgPool, direct: &PgPool, tenants: Vec<TenantId>) {
    let tally = run_interleaved(pool, tenants.clone(), 7).await;
    let checked = tally.checked.load(Ordering::Relaxed);
    assert!(checked > OPERATIONS / 2, "only {checked} checks ran");
    assert!(tally.aborted.load(Ordering::Relaxed) > 0, "no aborted transactions were injected");
    assert_eq!(tally.mismatches.load(Ordering::Relaxed), 0, "a connection leaked a tenant's scope");
    // Rolled-back writes left nothing behind.
    for tenant in &tenants {
        let mut tx = TenantTx::begin(direct, tenant, deadline()).await.unwrap();
        let outcome: String = sqlx::query_scalar("SELECT outcome FROM audit_events WHERE id = 'marker'")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(outcome, "success", "{tenant}");
    }
}

async fn pooled_connections_never_carry_a_tenant_scope_to_the_next_call(backend: Backend) {
    let database = TestDatabase::create().await;
    let direct = PgPool::connect_with(database.options.clone()).await.unwrap();
    tenantry::db::migrate(&direct).await.unwrap();
    let tenants = provision_tenants(&direct).await;
    // Two pooled connections; through PgBouncer they are multiplexed over
    // shared server connections, where any session state would leak between
    // tenants.
    let options = backend.database_config(&database).await.connect_options().unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await
        .unwrap();
    assert_no_contamination(pool, &direct, tenants).await;
}
