//! Per-tenant rate limits and monthly request quotas.
//!
//! One interface, [`RateLimiter`], over two engines: in this process
//! (governor, exact per node) or in Redis (GCRA in one atomic Lua script,
//! shared by every node, time taken from Redis). When Redis cannot answer
//! within its short timeout, calls are limited by a local bucket at the
//! plan's rate divided by the expected node count, or (fail mode `open`) not
//! rate-limited; Login and API-key creation are always limited locally. Every
//! decision and every fallback is counted in [`LimiterStats`].
//!
//! # Layout
//!
//! - this file: [`RateLimiter`], [`Limits`], [`Decision`], [`RateHeaders`], stats.
//! - [`local`]: the in-process engine.
//! - [`redis`]: the Redis engine and its circuit breaker.
//! - [`plans`]: the tenant → plan limits cache, invalidated by NOTIFY.
//! - [`quota`]: monthly request counts kept in memory, fed by the meter.

pub mod local;
pub mod plans;
pub mod quota;
pub mod redis;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
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
}

impl RateHeaders {
    fn values(&self) -> [(&'static str, u64); 3] {
        [
            ("x-ratelimit-limit", self.limit),
            ("x-ratelimit-remaining", self.remaining),
            ("x-ratelimit-reset", crate::error::retry_after_seconds(self.reset)),
        ]
    }

    /// Writes the values into gRPC metadata (refusals).
    pub fn write_metadata(&self, metadata: &mut MetadataMap) {
        for (name, value) in self.values() {
            metadata.insert(name, value.into());
        }
    }

    /// Writes the values into HTTP response headers (admitted calls).
    pub fn write_headers(&self, headers: &mut http::HeaderMap) {
        for (name, value) in self.values() {
            headers.insert(name, http::HeaderValue::from(value));
        }
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

/// Counters a metrics endpoint reads at scrape time.
#[derive(Debug, Default)]
struct Counters {
    allowed: AtomicU64,
    limited: AtomicU64,
    quota_exhausted: AtomicU64,
    fallback: AtomicU64,
    fallback_open: AtomicU64,
}

/// A snapshot of the limiter's decision counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Calls admitted by the rate limit.
    pub allowed: u64,
    /// Calls refused by the rate limit.
    pub limited: u64,
    /// Calls refused because the monthly quota was used up.
    pub quota_exhausted: u64,
    /// Decisions made by the local fallback because Redis did not answer.
    pub fallback: u64,
    /// Calls admitted unlimited because Redis did not answer (fail mode open).
    pub fallback_open: u64,
}

/// Methods that stay rate-limited locally when Redis is down, whatever the
/// fail mode: they are what an attacker hammers.
pub const SENSITIVE_METHODS: &[&str] = &["/tenantry.v1.AuthService/Login", "/tenantry.v1.AuthService/CreateApiKey"];

enum Engine {
    Local(LocalLimiter),
    Redis { redis: RedisLimiter, fallback: LocalLimiter, fail_mode: RateLimitFailMode },
}

/// The per-tenant rate limiter; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    engine: Arc<Engine>,
    counters: Arc<Counters>,
    /// Where decisions are exported (`tenantry_rate_limit_decisions_total`).
    metrics: Option<Metrics>,
}

impl RateLimiter {
    /// Limits in this process only.
    pub fn local() -> Self {
        RateLimiter { engine: Arc::new(Engine::Local(LocalLimiter::new(1))), counters: Arc::default(), metrics: None }
    }

    /// Limits in Redis; while Redis is unreachable, `fail_mode` decides, with
    /// a local bucket at limit / `expected_nodes`.
    pub fn redis(client: fred::prelude::Client, expected_nodes: u32, fail_mode: RateLimitFailMode) -> Self {
        let engine =
            Engine::Redis { redis: RedisLimiter::new(client), fallback: LocalLimiter::new(expected_nodes), fail_mode };
        RateLimiter { engine: Arc::new(engine), counters: Arc::default(), metrics: None }
    }

    /// Also exports every decision to `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
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
            Engine::Redis { redis, fallback, fail_mode } => match redis.check(tenant, limits, cost).await {
                Ok(decision) => (RateLimitEngine::Redis, decision),
                Err(()) => {
                    self.counters.fallback.fetch_add(1, Ordering::Relaxed);
                    let sensitive = SENSITIVE_METHODS.contains(&method);
                    if *fail_mode == RateLimitFailMode::Open && !sensitive {
                        self.counters.fallback_open.fetch_add(1, Ordering::Relaxed);
                        self.export(RateLimitEngine::Fallback, true);
                        return None;
                    }
                    (RateLimitEngine::Fallback, fallback.check(tenant, limits, cost))
                }
            },
        };
        self.export(engine, decision.allowed);
        let counter = if decision.allowed { &self.counters.allowed } else { &self.counters.limited };
        counter.fetch_add(1, Ordering::Relaxed);
        Some(decision)
    }

    /// Counts a call refused by its monthly quota.
    pub fn count_quota_exhausted(&self) {
        self.counters.quota_exhausted.fetch_add(1, Ordering::Relaxed);
    }

    /// The decision counters since start.
    pub fn stats(&self) -> LimiterStats {
        let c = &self.counters;
        LimiterStats {
            allowed: c.allowed.load(Ordering::Relaxed),
            limited: c.limited.load(Ordering::Relaxed),
            quota_exhausted: c.quota_exhausted.load(Ordering::Relaxed),
            fallback: c.fallback.load(Ordering::Relaxed),
            fallback_open: c.fallback_open.load(Ordering::Relaxed),
        }
    }

    /// Forgets idle buckets every few seconds until `shutdown` (bounded memory).
    pub fn housekeep(&self, shutdown: tokio_util::sync::CancellationToken) {
        let limiter = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match &*limiter.engine {
                    Engine::Local(local) => local.forget_idle(),
                    Engine::Redis { fallback, .. } => fallback.forget_idle(),
                }
            }
        });
    }
}
