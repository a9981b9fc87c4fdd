//! Per-tenant rate limits and monthly request quotas.
//!
//! One interface, [`RateLimiter`], over two engines: in this process
//! (governor, exact per node) or in Redis (GCRA in one atomic Lua script,
//! shared by every node, time taken from Redis). When Redis cannot answer
//! within its short timeout, calls are limited by a local bucket at the
//! plan's rate divided by the expected node count, or (fail mode `open`) not
//! rate-limited; Login and API-key creation are always limited locally. Every
//! decision and every fallback is counted in `tenantry_rate_limit_decisions_total`.
//!
//! # Layout
//!
//! - this file: [`RateLimiter`], [`Limits`], [`Decision`], [`RateHeaders`].
//! - [`local`]: the in-process engine.
//! - [`redis`]: the Redis engine and its circuit breaker.
//! - [`fleet`]: seeing other nodes, to warn when local limits multiply.
//! - [`plans`]: the tenant → plan limits cache, invalidated by NOTIFY.
//! - [`quota`]: monthly request counts kept in memory, fed by the meter.

pub mod fleet;
pub mod local;
pub mod plans;
pub mod quota;
pub mod redis;

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tonic::metadata::MetadataMap;

pub use self::{local::LocalLimiter, plans::PlanBook, quota::QuotaBook, redis::RedisLimiter};
use crate::{
    config::RateLimitFailMode,
    metrics::{Metrics, RateLimitDecision, RateLimitEngine},
    tenancy::TenantId,
};

/// The limits a tenant's plan sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The plan's id (`free`, `pro`).
    pub plan_id: String,
    /// Sustained rate; 0 means no rate limit.
    pub requests_per_second: u32,
    /// Bucket size (requests at once); at least 1 is used.
    pub burst: u32,
    /// Requests per UTC month; 0 means unlimited.
    pub monthly_request_quota: u64,
}

impl Limits {
    /// Requests the bucket holds when full.
    pub fn bucket(&self) -> u32 {
        self.burst.max(1)
    }
}

/// The `x-ratelimit-*` values of a limited call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    /// Bucket size: requests allowed at once.
    pub limit: u64,
    /// Requests that could be sent right now without being limited.
    pub remaining: u64,
    /// Time until the bucket is full again (sent as whole seconds, rounded up).
    pub reset: Duration,
    /// Seconds an empty bucket takes to fill, rounded up, at least 1:
    /// `limit` requests per `window_seconds` is the plan's sustained rate (the
    /// IETF `RateLimit-Policy` `w`). Whole seconds keep [`crate::error::ApiError`] small.
    pub window_seconds: u32,
}

/// The rate-limit headers' names, in [`RateHeaders::values`]' order.
const NAMES: [&str; 4] = ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-window"];
/// The same names, made at compile time (no parsing per call): limit,
/// remaining, reset, window.
pub const HEADER_NAMES: [http::HeaderName; 4] = [
    http::HeaderName::from_static(NAMES[0]),
    http::HeaderName::from_static(NAMES[1]),
    http::HeaderName::from_static(NAMES[2]),
    http::HeaderName::from_static(NAMES[3]),
];

impl RateHeaders {
    fn values(&self) -> [u64; 4] {
        [self.limit, self.remaining, crate::error::retry_after_seconds(self.reset), u64::from(self.window_seconds)]
    }

    /// The window of a bucket of `bucket` tokens refilled one per `per_token`.
    pub fn window_seconds(per_token: Duration, bucket: u32) -> u32 {
        u32::try_from(crate::error::retry_after_seconds(per_token * bucket)).unwrap_or(u32::MAX).max(1)
    }

    /// Writes the values into gRPC metadata (refusals).
    pub fn write_metadata(&self, metadata: &mut MetadataMap) {
        for (name, value) in NAMES.into_iter().zip(self.values()) {
            metadata.insert(name, value.into());
        }
    }

    /// Writes the values into HTTP response headers (admitted calls).
    pub fn write_headers(&self, headers: &mut http::HeaderMap) {
        for (name, value) in HEADER_NAMES.into_iter().zip(self.values()) {
            headers.insert(name, header_number(value));
        }
    }
}

/// Header values below this are made once and shared (a clone is a
/// reference count): every admitted call sends four numbers, and buckets,
/// what remains of them and reset seconds are small.
const SHARED_NUMBERS: u64 = 4096;

/// `value` as a header value, without an allocation when it is small.
fn header_number(value: u64) -> http::HeaderValue {
    static SMALL: std::sync::OnceLock<Vec<http::HeaderValue>> = std::sync::OnceLock::new();
    match usize::try_from(value) {
        Ok(index) if value < SHARED_NUMBERS => {
            SMALL.get_or_init(|| (0..SHARED_NUMBERS).map(http::HeaderValue::from).collect())[index].clone()
        }
        _ => http::HeaderValue::from(value),
    }
}

/// The outcome of one rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the call may proceed.
    pub allowed: bool,
    /// What the caller is told.
    pub headers: RateHeaders,
    /// When a refused call may be retried; zero when allowed.
    pub retry_after: Duration,
}

/// Methods that stay rate-limited locally when Redis is down, whatever the
/// fail mode: they are what an attacker hammers.
pub const SENSITIVE_METHODS: &[&str] = &["/tenantry.v1.AuthService/Login", "/tenantry.v1.AuthService/CreateApiKey"];

enum Engine {
    Local(LocalLimiter),
    Redis { redis: RedisLimiter, fallback: LocalLimiter, fail_mode: RateLimitFailMode },
}

/// How long a tenant's last decision is kept without a new one.
const LAST_DECISION_IDLE: Duration = Duration::from_secs(3600);
/// Shards of [`LastDecisions`] (a power of two).
const LAST_DECISION_SHARDS: usize = 32;

/// Each tenant's last decision on this node and when it was made, for at
/// most `capacity` tenants. Every admitted call updates its tenant's entry in
/// place, under its shard's lock only: no allocation after a tenant's first
/// call. A new tenant arriving when it is full takes the place of another
/// entry of its shard (whose state reads as unknown until its next call),
/// so memory stays bounded without a clear-all; housekeeping forgets
/// tenants idle for an hour.
struct LastDecisions {
    shards: [Mutex<HashMap<TenantId, (Instant, RateHeaders)>>; LAST_DECISION_SHARDS],
    hasher: RandomState,
    capacity: usize,
    len: AtomicUsize,
}

impl LastDecisions {
    fn new(capacity: u64) -> Self {
        LastDecisions {
            shards: std::array::from_fn(|_| Mutex::default()),
            hasher: RandomState::new(),
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX).max(1),
            len: AtomicUsize::new(0),
        }
    }

    fn shard(&self, tenant: &TenantId) -> std::sync::MutexGuard<'_, HashMap<TenantId, (Instant, RateHeaders)>> {
        let index = self.hasher.hash_one(tenant) as usize & (LAST_DECISION_SHARDS - 1);
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, tenant: &TenantId, headers: RateHeaders) {
        let entry = (Instant::now(), headers);
        {
            let mut shard = self.shard(tenant);
            if let Some(slot) = shard.get_mut(tenant) {
                *slot = entry;
                return;
            }
            if self.len.fetch_add(1, Ordering::AcqRel) < self.capacity {
                shard.insert(tenant.clone(), entry);
                return;
            }
            self.len.fetch_sub(1, Ordering::AcqRel);
            if let Some(other) = shard.keys().next().cloned() {
                shard.remove(&other);
                shard.insert(tenant.clone(), entry);
                return;
            }
        }
        // Full, and this shard is empty: make room in another (one lock at a time).
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(other) = shard.keys().next().cloned() {
                shard.remove(&other);
                self.len.fetch_sub(1, Ordering::AcqRel);
                break;
            }
        }
        if self.shard(tenant).insert(tenant.clone(), entry).is_none() {
            self.len.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn get(&self, tenant: &TenantId) -> Option<(Instant, RateHeaders)> {
        self.shard(tenant).get(tenant).copied()
    }

    fn forget_idle(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let before = shard.len();
            shard.retain(|_, (at, _)| at.elapsed() < LAST_DECISION_IDLE);
            self.len.fetch_sub(before - shard.len(), Ordering::AcqRel);
        }
    }
}

/// The per-tenant rate limiter; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    engine: Arc<Engine>,
    /// Each tenant's last decision on this node and when it was made, so
    /// [`RateLimiter::state`] can answer without taking tokens.
    last: Arc<LastDecisions>,
    /// Where decisions are exported (`tenantry_rate_limit_decisions_total`).
    metrics: Option<Metrics>,
}

impl RateLimiter {
    /// Limits in this process only.
    pub fn local() -> Self {
        Self::with_engine(Engine::Local(LocalLimiter::new(1)))
    }

    /// Limits in Redis; while Redis is unreachable, `fail_mode` decides, with
    /// a local bucket at limit / `expected_nodes`.
    pub fn redis(client: fred::prelude::Client, expected_nodes: u32, fail_mode: RateLimitFailMode) -> Self {
        let engine =
            Engine::Redis { redis: RedisLimiter::new(client), fallback: LocalLimiter::new(expected_nodes), fail_mode };
        Self::with_engine(engine)
    }

    fn with_engine(engine: Engine) -> Self {
        let last = Arc::new(LastDecisions::new(crate::cache::DEFAULT_ENTRIES));
        RateLimiter { engine: Arc::new(engine), last, metrics: None }
    }

    /// Remembers the last decision of at most `tenants` tenants (for GetQuota).
    pub fn remembering(mut self, tenants: u64) -> Self {
        self.last = Arc::new(LastDecisions::new(tenants));
        self
    }

    /// Also exports every decision to `metrics`.
    /// Publishes the engine (`tenantry_rate_limit_engine`) at once.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        metrics.set_rate_limit_engine(match &*self.engine {
            Engine::Local(_) => crate::config::RateLimitEngine::Local,
            Engine::Redis { .. } => crate::config::RateLimitEngine::Redis,
        });
        self.metrics = Some(metrics);
        self
    }

    fn export(&self, engine: RateLimitEngine, allowed: bool) {
        if let Some(metrics) = &self.metrics {
            let decision = if allowed { RateLimitDecision::Allowed } else { RateLimitDecision::Limited };
            metrics.record_rate_limit(engine, decision);
        }
    }

    /// Takes `cost` tokens from `tenant`'s bucket. `None` when the plan sets
    /// no rate limit (or fail mode open let the call through).
    pub async fn check(&self, tenant: &TenantId, limits: &Limits, cost: u32, method: &str) -> Option<Decision> {
        if limits.requests_per_second == 0 {
            return None;
        }
        let (engine, decision) = match &*self.engine {
            Engine::Local(local) => (RateLimitEngine::Local, local.check(tenant, limits, cost)),
            Engine::Redis { redis, fallback, fail_mode } => match self.redis_check(redis, tenant, limits, cost).await {
                Ok(decision) => (RateLimitEngine::Redis, decision),
                Err(()) => {
                    let sensitive = SENSITIVE_METHODS.contains(&method);
                    if *fail_mode == RateLimitFailMode::Open && !sensitive {
                        self.export(RateLimitEngine::Fallback, true);
                        return None;
                    }
                    (RateLimitEngine::Fallback, fallback.check(tenant, limits, cost))
                }
            },
        };
        self.export(engine, decision.allowed);
        self.last.record(tenant, decision.headers);
        Some(decision)
    }

    /// One Redis decision as the call sees it (its batch's round trip
    /// included): a `redis` child span of the call and
    /// `tenantry_redis_call_duration_seconds{operation="rate_limit"}`; or
    /// a decision from this node's lease, which is neither.
    async fn redis_check(
        &self,
        redis: &RedisLimiter,
        tenant: &TenantId,
        limits: &Limits,
        cost: u32,
    ) -> Result<Decision, ()> {
        if let Some(decision) = redis.leased(tenant, limits, cost) {
            return Ok(decision); // no Redis call: neither a span nor its latency
        }
        let span = crate::telemetry::child_span!(
            "EVALSHA",
            otel.kind = "client",
            db.system = "redis",
            db.operation.name = "EVALSHA",
            otel.status_code = tracing::field::Empty,
        );
        let started = Instant::now();
        let decided = tracing::Instrument::instrument(redis.check(tenant, limits, cost), span.clone()).await;
        if let Some(metrics) = &self.metrics {
            metrics.record_redis_call("rate_limit", started.elapsed(), decided.is_ok());
        }
        if decided.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        decided
    }

    /// `tenant`'s rate state now, without taking tokens: its last decision
    /// on this node, with the tokens the bucket regained since. `None` when
    /// the plan sets no rate limit or no call of the tenant was decided here
    /// lately.
    pub fn state(&self, tenant: &TenantId, limits: &Limits) -> Option<RateHeaders> {
        if limits.requests_per_second == 0 {
            return None;
        }
        let (at, last) = self.last.get(tenant)?;
        let elapsed = at.elapsed();
        let regained = (elapsed.as_secs_f64() * f64::from(limits.requests_per_second)).floor() as u64;
        Some(RateHeaders {
            limit: last.limit,
            remaining: last.remaining.saturating_add(regained).min(last.limit),
            reset: last.reset.saturating_sub(elapsed),
            window_seconds: last.window_seconds,
        })
    }

    /// Forgets idle buckets every few seconds until `stop` (bounded memory).
    pub async fn housekeep(self, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match &*self.engine {
                Engine::Local(local) => local.forget_idle(),
                Engine::Redis { fallback, .. } => fallback.forget_idle(),
            }
            self.last.forget_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(remaining: u64) -> RateHeaders {
        RateHeaders { limit: 10, remaining, reset: Duration::ZERO, window_seconds: 1 }
    }

    #[test]
    fn header_numbers_read_the_same_shared_or_not() {
        for value in [0, 1, 42, SHARED_NUMBERS - 1, SHARED_NUMBERS, 10_000_000] {
            assert_eq!(header_number(value).to_str().unwrap(), value.to_string());
        }
    }

    #[test]
    fn last_decisions_update_in_place_and_stay_within_capacity_without_clearing() {
        let last = LastDecisions::new(3);
        let tenants: Vec<TenantId> = (0..10).map(|_| TenantId::generate()).collect();
        last.record(&tenants[0], headers(9));
        last.record(&tenants[0], headers(8));
        assert_eq!(last.get(&tenants[0]).map(|(_, h)| h.remaining), Some(8));
        for (i, tenant) in tenants.iter().enumerate() {
            last.record(tenant, headers(i as u64));
            // The newest tenant is always known, and the total never passes the capacity.
            assert_eq!(last.get(tenant).map(|(_, h)| h.remaining), Some(i as u64));
            let held: usize = last.shards.iter().map(|s| s.lock().unwrap().len()).sum();
            assert!(held <= 3, "{held} entries held with capacity 3");
            assert_eq!(held, last.len.load(Ordering::Acquire));
        }
        last.forget_idle();
        assert_eq!(
            last.len.load(Ordering::Acquire),
            last.shards.iter().map(|s| s.lock().unwrap().len()).sum::<usize>()
        );
    }
}
