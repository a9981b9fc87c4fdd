//! The in-process engine: governor's GCRA, keyed by tenant. Plans differ in
//! rate and bucket size, so there is one keyed limiter per distinct
//! (rate, bucket) pair — a handful, since plans are few — and idle tenants
//! are forgotten periodically, so memory follows the active tenants.
//!
//! As the Redis fallback it divides each plan's rate and bucket by the
//! expected node count, so the nodes together stay near the global limit.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, RwLock},
    time::Duration,
};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};

use super::{Decision, Limits, RateHeaders};
use crate::tenancy::TenantId;

type Keyed = RateLimiter<TenantId, DefaultKeyedStateStore<TenantId>, DefaultClock, StateInformationMiddleware>;

/// See the module docs.
pub struct LocalLimiter {
    /// Share of each plan's limit this node enforces (1 = all of it).
    divisor: u32,
    /// One keyed limiter per (nanoseconds per token, bucket size).
    limiters: RwLock<HashMap<(u64, u32), Arc<Keyed>>>,
}

impl LocalLimiter {
    /// A limiter enforcing 1 / `divisor` of each plan's limit.
    pub fn new(divisor: u32) -> Self {
        LocalLimiter { divisor: divisor.max(1), limiters: RwLock::default() }
    }

    /// The rate and bucket this node enforces for `limits`.
    fn shape(&self, limits: &Limits) -> (Duration, u32) {
        let per_token = Duration::from_secs(u64::from(self.divisor)) / limits.requests_per_second.max(1);
        let bucket = (limits.bucket() / self.divisor).max(1);
        (per_token.max(Duration::from_nanos(1)), bucket)
    }

    fn limiter(&self, per_token: Duration, bucket: u32) -> Arc<Keyed> {
        let key = (per_token.as_nanos() as u64, bucket);
        if let Some(found) = self.limiters.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return found.clone();
        }
        let mut limiters = self.limiters.write().unwrap_or_else(|e| e.into_inner());
        limiters
            .entry(key)
            .or_insert_with(|| {
                let bucket = NonZeroU32::new(bucket).unwrap_or(NonZeroU32::MIN);
                #[allow(clippy::expect_used)]
                let quota = Quota::with_period(per_token).expect("period is positive").allow_burst(bucket);
                Arc::new(RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>())
            })
            .clone()
    }

    /// Takes `cost` tokens (at most a full bucket) from `tenant`'s bucket.
    pub fn check(&self, tenant: &TenantId, limits: &Limits, cost: u32) -> Decision {
        let (per_token, bucket) = self.shape(limits);
        let limiter = self.limiter(per_token, bucket);
        // A method costing more than the whole bucket could never pass; it
        // costs the whole bucket instead.
        let cost = cost.clamp(1, bucket);
        let n = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        let limit = u64::from(bucket);
        match limiter.check_key_n(tenant, n) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    headers: RateHeaders {
                        limit,
                        remaining: u64::from(remaining),
                        reset: per_token * (bucket - remaining.min(bucket)),
                        window_seconds: RateHeaders::window_seconds(per_token, bucket),
                    },
                    retry_after: Duration::ZERO,
                }
            }
            Ok(Err(not_until)) => {
                let retry_after = not_until.wait_time_from(limiter.clock().now());
                Decision {
                    allowed: false,
                    headers: RateHeaders {
                        limit,
                        remaining: 0,
                        reset: retry_after + per_token * (bucket - cost),
                        window_seconds: RateHeaders::window_seconds(per_token, bucket),
                    },
                    retry_after,
                }
            }
            // Unreachable since the cost is clamped to the bucket; refuse for a full period.
            Err(_) => Decision {
                allowed: false,
                headers: RateHeaders {
                    limit,
                    remaining: 0,
                    reset: per_token * bucket,
                    window_seconds: RateHeaders::window_seconds(per_token, bucket),
                },
                retry_after: per_token * bucket,
            },
        }
    }

    /// Drops buckets that are full again (indistinguishable from new ones).
    pub fn forget_idle(&self) {
        for limiter in self.limiters.read().unwrap_or_else(|e| e.into_inner()).values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rps: u32, burst: u32) -> Limits {
        Limits { plan_id: "t".into(), requests_per_second: rps, burst, monthly_request_quota: 0 }
    }

    #[test]
    fn a_full_bucket_admits_exactly_burst_calls_then_refuses() {
        let limiter = LocalLimiter::new(1);
        let tenant = TenantId::generate();
        let limits = plan(1, 5);
        for expected_remaining in (0..5).rev() {
            let decision = limiter.check(&tenant, &limits, 1);
            assert!(decision.allowed);
            assert_eq!(decision.headers.remaining, expected_remaining);
        }
        let refused = limiter.check(&tenant, &limits, 1);
        assert!(!refused.allowed);
        assert!(refused.retry_after > Duration::from_millis(900) && refused.retry_after <= Duration::from_secs(1));
        assert!(limiter.check(&TenantId::generate(), &limits, 1).allowed, "other tenants have their own bucket");
    }

    #[test]
    fn costs_take_several_tokens_and_the_fallback_divides_the_limit() {
        let limiter = LocalLimiter::new(2);
        let tenant = TenantId::generate();
        let limits = plan(10, 8);
        let decision = limiter.check(&tenant, &limits, 3);
        assert_eq!(decision.headers.limit, 4, "bucket 8 over 2 nodes");
        assert_eq!(decision.headers.remaining, 1);
        assert!(!limiter.check(&tenant, &limits, 3).allowed);
    }
}
