//! Identity hot paths: the cached access-token check, a full (uncached)
//! RS256 verification, and the cached API-key check. Budgets: ≤ 2 µs,
//! ≤ 40 µs, ≤ 2 µs. Results are recorded in docs/performance.md.

use std::{sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::postgres::PgPoolOptions;
use tenantry::{
    auth::api_key,
    identity::{
        Authenticator,
        access::{IdentityCache, UserAccess, VerifiedKey},
        api_keys::{CachedKey, LastUsed},
        authenticator,
        keys::{self, KeyRing},
        roles,
        tokens::TokenService,
    },
    ids,
    tenancy::{TenantDirectory, TenantId},
};

fn token_service() -> TokenService {
    let ring = KeyRing::from_pems(&keys::generate().unwrap().private_pem, &[]).unwrap();
    TokenService::new(ring, "tenantry", "tenantry-api", Duration::from_secs(900))
}

fn tokens(c: &mut Criterion) {
    let service = token_service();
    let tenant = TenantId::generate();
    let user = ids::new_id("usr");
    let (token, _) = service.issue(&tenant, &user, "ses_bench").unwrap();
    service.verify(&token).unwrap();
    c.bench_function("jwt: cached check", |b| b.iter(|| service.verify(std::hint::black_box(&token)).unwrap()));

    // The authenticate layer's whole in-memory path for a user: cached token,
    // cached user access (roles, permissions), principal assembled.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = runtime.enter();
    let pool = PgPoolOptions::new().connect_lazy("postgres://bench@localhost/bench").unwrap();
    let cache = IdentityCache::new(pool);
    cache.assume_listening();
    let access = UserAccess {
        active: true,
        email: "ada@example.test".into(),
        display_name: "Ada".into(),
        roles: vec!["member".into()],
        permissions: Arc::new(roles::built_in_permissions("member").unwrap()),
    };
    cache.remember_user(cache.user_ticket(), &tenant, &user, Arc::new(access));
    c.bench_function("jwt: cached check to principal", |b| {
        b.iter(|| {
            let verified = service.verify(std::hint::black_box(&token)).unwrap();
            let access = cache.cached_user(&verified.tenant, &verified.user_id).unwrap();
            authenticator::user_principal(&verified.tenant, &verified.user_id, &access, &verified)
        })
    });
    c.bench_function("jwt: uncached RS256 verify", |b| {
        b.iter(|| service.verify_uncached(std::hint::black_box(&token)).unwrap())
    });
}

fn api_keys(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = runtime.enter();
    // No database is reached: the pool is lazy and every lookup hits the cache.
    let pool = PgPoolOptions::new().connect_lazy("postgres://bench@localhost/bench").unwrap();
    let cache = IdentityCache::new(pool.clone());
    cache.assume_listening();
    let key = api_key::generate();
    let cached = CachedKey {
        tenant: TenantId::generate(),
        key_id: ids::new_id("key"),
        public_id: key.public_id.clone(),
        name: "bench".into(),
        secret_hash: key.secret_hash.clone(),
        scopes: Arc::new(["users:read".to_owned()].into_iter().collect()),
        created_by: ids::new_id("usr"),
        created_at: chrono::Utc::now(),
        expires_at: None,
    };
    cache.remember_key(cache.key_ticket(), Arc::new(VerifiedKey::Tenant(cached)));
    let authenticator =
        Authenticator::new(pool.clone(), token_service(), cache, TenantDirectory::new(pool), LastUsed::default());
    assert!(authenticator.check_cached_key(&key.full).is_some());
    c.bench_function("api key: cached check", |b| {
        b.iter(|| authenticator.check_cached_key(std::hint::black_box(&key.full)).unwrap())
    });
}

criterion_group!(benches, tokens, api_keys);
criterion_main!(benches);
