//! The Redis engine: GCRA (the generic cell rate algorithm) in one Lua
//! script, so the read-compute-write of a decision is atomic on the server.
//! Time comes from Redis `TIME`, never from a node's clock, so nodes with
//! skewed clocks still agree. Each tenant's state is one key,
//! `tenantry:rl:{<tenant id>}`: the hash tag puts it in one slot, which is
//! what Redis Cluster needs for a single-key script, and the tenant id in it
//! keeps tenants apart.
//!
//! Commands time out after at most 250 ms. After a failure the engine stops
//! asking Redis for a short cool-down and reports it unavailable at once, so
//! an outage costs calls no latency; the caller falls back.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use fred::{
    prelude::{Client, ClientLike},
    types::scripts::Script,
};

use super::{Decision, Limits, RateHeaders};
use crate::tenancy::TenantId;

/// Longest wait for one decision from Redis.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// How long Redis is not asked after a failure.
const COOL_DOWN: Duration = Duration::from_millis(500);

/// KEYS[1]: the tenant's key. ARGV: microseconds per token, bucket size, cost.
/// Returns {allowed, remaining, retry after µs, reset µs}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local bucket = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tolerance = interval * bucket
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cost * interval
if new_tat - tolerance > now then
  return {0, math.floor((tolerance - (tat - now)) / interval), new_tat - tolerance - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, math.floor((tolerance - (new_tat - now)) / interval), 0, new_tat - now}
"#;

/// See the module docs.
pub struct RedisLimiter {
    client: Client,
    script: Script,
    /// Start of the limiter's clock, for `unavailable_until`.
    epoch: Instant,
    /// Milliseconds since `epoch` before which Redis is not asked.
    unavailable_until: AtomicU64,
}

impl RedisLimiter {
    /// An engine over a connected (or connecting) client.
    pub fn new(client: Client) -> Self {
        RedisLimiter {
            client,
            script: Script::from_lua(GCRA),
            epoch: Instant::now(),
            unavailable_until: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Takes `cost` tokens from `tenant`'s bucket in Redis; `Err` when Redis
    /// did not answer in time (the caller falls back).
    pub async fn check(&self, tenant: &TenantId, limits: &Limits, cost: u32) -> Result<Decision, ()> {
        if self.now_ms() < self.unavailable_until.load(Ordering::Relaxed) || !self.client.is_connected() {
            return Err(());
        }
        let interval_us = (1_000_000 / u64::from(limits.requests_per_second.max(1))).max(1);
        let bucket = limits.bucket();
        let cost = cost.clamp(1, bucket);
        let key = format!("tenantry:rl:{{{tenant}}}");
        let call = self.script.evalsha_with_reload::<Vec<i64>, _, _>(
            &self.client,
            key,
            vec![interval_us.to_string(), bucket.to_string(), cost.to_string()],
        );
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(reply)) if reply.len() == 4 => {
                let micros = |v: i64| Duration::from_micros(v.max(0) as u64);
                Ok(Decision {
                    allowed: reply[0] == 1,
                    headers: RateHeaders {
                        limit: u64::from(bucket),
                        remaining: reply[1].clamp(0, i64::from(bucket)) as u64,
                        reset: micros(reply[3]),
                    },
                    retry_after: micros(reply[2]),
                })
            }
            outcome => {
                match outcome {
                    Ok(Ok(reply)) => tracing::warn!(?reply, "rate-limit script answered oddly; limiting locally"),
                    Ok(Err(error)) => tracing::warn!(%error, "Redis rate limit failed; limiting locally"),
                    Err(_) => tracing::warn!("Redis rate limit timed out; limiting locally"),
                }
                self.unavailable_until.store(self.now_ms() + COOL_DOWN.as_millis() as u64, Ordering::Relaxed);
                Err(())
            }
        }
    }
}
