//! The Redis engine: GCRA (the generic cell rate algorithm) in one Lua
//! script, so the read-compute-write of a decision is atomic on the server.
//! Time comes from Redis `TIME`, never from a node's clock, so nodes with
//! skewed clocks still agree. Each tenant's state is one key,
//! `tenantry:rl:{<tenant id>}`: the hash tag puts it in one slot, which is
//! what Redis Cluster needs for a single-key script, and the tenant id in it
//! keeps tenants apart.
//!
//! Decisions for one tenant are coalesced, never approximated: while a
//! tenant's round trip is in flight, its next calls queue, and one script
//! call then decides the whole queue in arrival order, each call against the
//! bucket as the previous ones left it. Every admitted call still took its
//! tokens in Redis (accuracy across nodes is unchanged), an idle tenant's
//! call goes out at once, and a busy tenant costs one round trip per batch
//! instead of one per call.
//!
//! The per-call path takes no process-wide lock: the queues are sharded by
//! tenant (a call locks only its tenant's shard, for a map insert), and
//! script calls of different tenants go out concurrently on the client,
//! which pipelines them on its connection (one per Redis Cluster master)
//! instead of waiting for each reply in turn.
//!
//! Commands time out after at most 250 ms. After a failure the engine stops
//! asking Redis for a short cool-down and reports it unavailable at once, so
//! an outage costs calls no latency; the caller falls back.

use std::{
    collections::HashMap,
    fmt::Write as _,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use fred::{
    prelude::{Client, ClientLike},
    types::scripts::Script,
};
use tokio::sync::oneshot;

use super::{Decision, Limits, RateHeaders};
use crate::tenancy::TenantId;

/// Longest wait for one decision from Redis.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// How long Redis is not asked after a failure.
const COOL_DOWN: Duration = Duration::from_millis(500);
/// Most calls decided by one script call.
const MAX_BATCH: usize = 256;
/// Shards of the queue map (a power of two).
const SHARDS: usize = 64;

/// KEYS[1]: the tenant's key. ARGV: microseconds per token, bucket size,
/// then the calls' costs in arrival order, comma-separated (one argument,
/// however many calls). Returns four numbers per call:
/// {allowed, remaining, retry after µs, reset µs}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local bucket = tonumber(ARGV[2])
local tolerance = interval * bucket
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local out = {}
local taken = false
for cost in string.gmatch(ARGV[3], '%d+') do
  local new_tat = tat + tonumber(cost) * interval
  if new_tat - tolerance > now then
    table.insert(out, 0)
    table.insert(out, math.floor((tolerance - (tat - now)) / interval))
    table.insert(out, new_tat - tolerance - now)
    table.insert(out, tat - now)
  else
    tat = new_tat
    taken = true
    table.insert(out, 1)
    table.insert(out, math.floor((tolerance - (tat - now)) / interval))
    table.insert(out, 0)
    table.insert(out, tat - now)
  end
end
if taken then
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return out
"#;

/// A call waiting for its tenant's next batch.
struct Waiter {
    cost: u32,
    /// Its plan's rate and bucket (a batch uses its newest call's).
    requests_per_second: u32,
    bucket: u32,
    reply: oneshot::Sender<Result<Decision, ()>>,
}

/// See the module docs; cheap to clone.
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    script: Script,
    /// Start of the limiter's clock, for `unavailable_until`.
    epoch: Instant,
    /// Milliseconds since `epoch` before which Redis is not asked.
    unavailable_until: AtomicU64,
    /// Tenants with a batch in flight, and the calls queued behind it,
    /// sharded by tenant.
    queues: [Mutex<HashMap<TenantId, Vec<Waiter>>>; SHARDS],
    /// Picks a tenant's shard.
    hasher: RandomState,
    /// Script calls made, for tests and benchmarks.
    round_trips: AtomicU64,
}

impl RedisLimiter {
    /// An engine over a connected (or connecting) client.
    pub fn new(client: Client) -> Self {
        RedisLimiter {
            inner: Arc::new(Inner {
                client,
                script: Script::from_lua(GCRA),
                epoch: Instant::now(),
                unavailable_until: AtomicU64::new(0),
                queues: std::array::from_fn(|_| Mutex::default()),
                hasher: RandomState::new(),
                round_trips: AtomicU64::new(0),
            }),
        }
    }

    /// Script calls made so far (each decides one or more calls).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// Takes `cost` tokens from `tenant`'s bucket in Redis; `Err` when Redis
    /// did not answer in time (the caller falls back).
    pub async fn check(&self, tenant: &TenantId, limits: &Limits, cost: u32) -> Result<Decision, ()> {
        let inner = &self.inner;
        if inner.now_ms() < inner.unavailable_until.load(Ordering::Relaxed) || !inner.client.is_connected() {
            return Err(());
        }
        let (reply, decided) = oneshot::channel();
        let bucket = limits.bucket();
        let waiter =
            Waiter { cost: cost.clamp(1, bucket), requests_per_second: limits.requests_per_second, bucket, reply };
        let start_batching = {
            let mut queues = inner.shard(tenant).lock().unwrap_or_else(|e| e.into_inner());
            match queues.get_mut(tenant) {
                Some(queue) => {
                    queue.push(waiter);
                    false
                }
                None => {
                    queues.insert(tenant.clone(), vec![waiter]);
                    true
                }
            }
        };
        if start_batching {
            // A task, not this call, drives the tenant's batches: a caller
            // that goes away must not strand the calls queued behind it.
            tokio::spawn(self.inner.clone().drive(tenant.clone()));
        }
        decided.await.unwrap_or(Err(()))
    }
}

impl Inner {
    /// The queue shard `tenant` belongs to.
    fn shard(&self, tenant: &TenantId) -> &Mutex<HashMap<TenantId, Vec<Waiter>>> {
        &self.queues[self.hasher.hash_one(tenant) as usize & (SHARDS - 1)]
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Decides `tenant`'s queued calls, batch after batch, until none wait.
    async fn drive(self: Arc<Self>, tenant: TenantId) {
        let key = format!("tenantry:rl:{{{tenant}}}");
        loop {
            let batch: Vec<Waiter> = {
                let mut queues = self.shard(&tenant).lock().unwrap_or_else(|e| e.into_inner());
                let Some(queue) = queues.get_mut(&tenant) else { return };
                if queue.is_empty() {
                    queues.remove(&tenant);
                    return;
                }
                let take = queue.len().min(MAX_BATCH);
                queue.drain(..take).collect()
            };
            let decisions = self.decide(&key, &batch).await;
            for (index, waiter) in batch.into_iter().enumerate() {
                let decision = decisions.as_ref().map(|d| d[index]).map_err(|&()| ());
                // A caller that went away has nothing to be told.
                let _ = waiter.reply.send(decision);
            }
        }
    }

    /// One script call deciding `batch` in order (limits from its newest call).
    async fn decide(&self, key: &str, batch: &[Waiter]) -> Result<Vec<Decision>, ()> {
        if self.now_ms() < self.unavailable_until.load(Ordering::Relaxed) {
            return Err(());
        }
        let newest = batch.last().expect("batches are never empty");
        let interval_us = (1_000_000 / u64::from(newest.requests_per_second.max(1))).max(1);
        let bucket = newest.bucket;
        let mut costs = String::with_capacity(batch.len() * 2);
        for waiter in batch {
            if !costs.is_empty() {
                costs.push(',');
            }
            let _ = write!(costs, "{}", waiter.cost.min(bucket));
        }
        let args = vec![interval_us.to_string(), bucket.to_string(), costs];
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let call = self.script.evalsha_with_reload::<Vec<i64>, _, _>(&self.client, key, args);
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(reply)) if reply.len() == 4 * batch.len() => {
                let micros = |v: i64| Duration::from_micros(v.max(0) as u64);
                Ok(reply
                    .chunks_exact(4)
                    .map(|r| Decision {
                        allowed: r[0] == 1,
                        headers: RateHeaders {
                            limit: u64::from(bucket),
                            // A refused call is told 0, as the local engine
                            // tells it: what is left does not fit this call.
                            remaining: if r[0] == 1 { r[1].clamp(0, i64::from(bucket)) as u64 } else { 0 },
                            reset: micros(r[3]),
                            window_seconds: RateHeaders::window_seconds(Duration::from_micros(interval_us), bucket),
                        },
                        retry_after: micros(r[2]),
                    })
                    .collect())
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
