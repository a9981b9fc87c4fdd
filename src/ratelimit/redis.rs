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
//! A busy tenant far from its limit also leases tokens: with a batch of at
//! least four calls, the script takes up to twice the batch's tokens more
//! (twice the last lease when that one was spent to the last token; at most
//! a sixteenth of the bucket), but only if half the bucket is still left
//! after them. The node then admits that many of the tenant's next
//! calls itself ([`RedisLimiter::leased`]), without a round trip, for up
//! to 50 ms; what is not spent by then is dropped, never given back. Every
//! admitted call still spent a token taken in Redis, so all nodes together
//! never admit more than the bucket and its refill. Near the limit (less
//! than half the bucket left) no lease is granted and every call is decided
//! in Redis, in order, as above; buckets under 128 never lease. What leasing can cost: up to a
//! sixteenth of the bucket per node, held for 50 ms at most and dropped if
//! unspent (docs/limits-and-usage.md, "Leases").
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
/// Smallest lease worth asking for: buckets under 16 × this never lease.
const MIN_LEASE: u32 = 8;
/// How long leased tokens may be spent; what is left then is dropped.
const LEASE_TTL: Duration = Duration::from_millis(50);

/// KEYS[1]: the tenant's key. ARGV: microseconds per token, bucket size,
/// then the calls' costs in arrival order, comma-separated (one argument,
/// however many calls), then the tokens to lease (0: none). Returns four
/// numbers per call: {allowed, remaining, retry after µs, reset µs}, and
/// four more for a lease, which is granted only if half the bucket is left
/// after it.
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
local lease = tonumber(ARGV[4])
if lease > 0 then
  local new_tat = tat + lease * interval
  if new_tat - now <= tolerance / 2 then
    tat = new_tat
    taken = true
    table.insert(out, 1)
    table.insert(out, math.floor((tolerance - (tat - now)) / interval))
  else
    table.insert(out, 0)
    table.insert(out, 0)
  end
  table.insert(out, 0)
  table.insert(out, tat - now)
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

/// A tenant on this node: the calls queued behind its batch in flight, and
/// its lease.
#[derive(Default)]
struct TenantState {
    /// Calls waiting for the next batch; `None`: no batch in flight.
    queue: Option<Vec<Waiter>>,
    lease: Lease,
}

/// Tokens this node took from a busy tenant's bucket ahead of its calls,
/// spent here without a round trip until they run out or expire.
#[derive(Default, Clone, Copy)]
struct Lease {
    tokens: u32,
    /// How many tokens it was granted with.
    granted: u32,
    /// When the lease lapses.
    until: Option<Instant>,
    /// The plan it was taken under (a call under another plan ignores it).
    requests_per_second: u32,
    bucket: u32,
    /// What Redis had left right after granting it, and when the bucket is full again.
    remaining: u64,
    full_at: Option<Instant>,
}

impl Lease {
    /// Spends `cost` leased tokens, if the lease is live, for the same plan, and has them.
    fn spend(&mut self, cost: u32, requests_per_second: u32, bucket: u32, now: Instant) -> Option<Decision> {
        let same_plan = self.requests_per_second == requests_per_second && self.bucket == bucket;
        if self.lapsed(now) || self.tokens < cost || !same_plan {
            return None;
        }
        self.tokens -= cost;
        Some(Decision {
            allowed: true,
            headers: RateHeaders {
                limit: u64::from(self.bucket),
                // The tokens still leased are still this node's to give.
                remaining: (self.remaining + u64::from(self.tokens)).min(u64::from(self.bucket)),
                reset: self.full_at.map_or(Duration::ZERO, |full| full.saturating_duration_since(now)),
                window_seconds: RateHeaders::window_seconds(per_token(self.requests_per_second), self.bucket),
            },
            retry_after: Duration::ZERO,
        })
    }

    fn lapsed(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| now >= until)
    }

    /// Takes `fresh` in, keeping what is left of this lease if it is live
    /// and for the same plan (those tokens are taken in Redis too).
    fn renew(&mut self, fresh: Lease, now: Instant) {
        let kept = if self.lapsed(now)
            || (self.requests_per_second, self.bucket) != (fresh.requests_per_second, fresh.bucket)
        {
            0
        } else {
            self.tokens
        };
        *self = Lease { tokens: fresh.tokens.saturating_add(kept), ..fresh };
    }
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
    queues: [Mutex<HashMap<TenantId, TenantState>>; SHARDS],
    /// Picks a tenant's shard.
    hasher: RandomState,
    /// Script calls made, for tests and benchmarks.
    round_trips: AtomicU64,
    /// Calls decided from a lease, for tests and benchmarks.
    leased: AtomicU64,
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
                leased: AtomicU64::new(0),
            }),
        }
    }

    /// Script calls made so far (each decides one or more calls).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// Calls decided so far from leased tokens, without a round trip.
    pub fn leased_decisions(&self) -> u64 {
        self.inner.leased.load(Ordering::Relaxed)
    }

    /// Spends `cost` of the tokens this node leased for `tenant`, if it holds
    /// enough: a decision without a round trip. `None`: ask [`Self::check`].
    pub fn leased(&self, tenant: &TenantId, limits: &Limits, cost: u32) -> Option<Decision> {
        let bucket = limits.bucket();
        let mut queues = self.inner.shard(tenant).lock().unwrap_or_else(|e| e.into_inner());
        let decision = queues.get_mut(tenant)?.lease.spend(
            cost.clamp(1, bucket),
            limits.requests_per_second,
            bucket,
            Instant::now(),
        )?;
        self.inner.leased.fetch_add(1, Ordering::Relaxed);
        Some(decision)
    }

    /// Takes `cost` tokens from `tenant`'s bucket in Redis; `Err` when Redis
    /// did not answer in time (the caller falls back).
    pub async fn check(&self, tenant: &TenantId, limits: &Limits, cost: u32) -> Result<Decision, ()> {
        let inner = &self.inner;
        if inner.now_ms() < inner.unavailable_until.load(Ordering::Relaxed) || !inner.client.is_connected() {
            return Err(());
        }
        let bucket = limits.bucket();
        let cost = cost.clamp(1, bucket);
        let (decided, start_batching) = {
            let mut queues = inner.shard(tenant).lock().unwrap_or_else(|e| e.into_inner());
            let state = match queues.get_mut(tenant) {
                Some(state) => state,
                None => queues.entry(tenant.clone()).or_default(),
            };
            let (reply, decided) = oneshot::channel();
            let waiter = Waiter { cost, requests_per_second: limits.requests_per_second, bucket, reply };
            let start_batching = match &mut state.queue {
                Some(queue) => {
                    queue.push(waiter);
                    false
                }
                None => {
                    state.queue = Some(vec![waiter]);
                    true
                }
            };
            (decided, start_batching)
        };
        if start_batching {
            // A task, not this call, drives the tenant's batches: a caller
            // that goes away must not strand the calls queued behind it.
            tokio::spawn(self.inner.clone().drive(tenant.clone()));
        }
        decided.await.unwrap_or(Err(()))
    }
}

/// The time one token of a plan of `requests_per_second` takes to refill,
/// in whole microseconds (as the script counts it).
fn per_token(requests_per_second: u32) -> Duration {
    Duration::from_micros((1_000_000 / u64::from(requests_per_second.max(1))).max(1))
}

/// Tokens to lease after `batch`: as many as two batches like it, so the
/// calls that arrive while the next round trip is in flight need none; or,
/// when the `last` lease was spent to the last token, twice that lease,
/// however small the batch that found it spent (capped at a sixteenth of
/// the bucket, and none below [`MIN_LEASE`]: where `decide` settles it).
fn lease_size(batch: &[Waiter], last: &Lease) -> u32 {
    let costs: u32 = batch.iter().map(|w| w.cost).sum();
    let spent = last.tokens == 0 && last.granted > 0;
    costs.saturating_mul(2).max(if spent { last.granted.saturating_mul(2) } else { 0 })
}

impl Inner {
    /// The queue shard `tenant` belongs to.
    fn shard(&self, tenant: &TenantId) -> &Mutex<HashMap<TenantId, TenantState>> {
        &self.queues[self.hasher.hash_one(tenant) as usize & (SHARDS - 1)]
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Decides `tenant`'s queued calls, batch after batch, until none wait.
    async fn drive(self: Arc<Self>, tenant: TenantId) {
        let key = format!("tenantry:rl:{{{tenant}}}");
        loop {
            let (batch, lease) = {
                let mut queues = self.shard(&tenant).lock().unwrap_or_else(|e| e.into_inner());
                let Some(state) = queues.get_mut(&tenant) else { return };
                let now = Instant::now();
                // What queued during the round trip, the lease it brought may pay for.
                let mut waiting = Vec::new();
                for waiter in state.queue.take().unwrap_or_default() {
                    match state.lease.spend(waiter.cost, waiter.requests_per_second, waiter.bucket, now) {
                        Some(decision) => {
                            self.leased.fetch_add(1, Ordering::Relaxed);
                            let _ = waiter.reply.send(Ok(decision));
                        }
                        None => waiting.push(waiter),
                    }
                }
                if waiting.is_empty() {
                    if state.lease.lapsed(now) {
                        queues.remove(&tenant);
                        return;
                    }
                    break;
                }
                let take = waiting.len().min(MAX_BATCH);
                let batch: Vec<Waiter> = waiting.drain(..take).collect();
                state.queue = Some(waiting);
                let lease = lease_size(&batch, &state.lease);
                (batch, lease)
            };
            let decided = self.decide(&key, &batch, lease).await;
            if let Ok((_, Some(lease))) = &decided {
                let mut queues = self.shard(&tenant).lock().unwrap_or_else(|e| e.into_inner());
                if let Some(state) = queues.get_mut(&tenant) {
                    state.lease.renew(*lease, Instant::now());
                }
            }
            for (index, waiter) in batch.into_iter().enumerate() {
                let decision = decided.as_ref().map(|(d, _)| d[index]).map_err(|&()| ());
                // A caller that went away has nothing to be told.
                let _ = waiter.reply.send(decision);
            }
        }
        // Idle with a lease left: forget the tenant once it lapses, unless
        // its calls came back meanwhile.
        tokio::time::sleep(LEASE_TTL).await;
        let mut queues = self.shard(&tenant).lock().unwrap_or_else(|e| e.into_inner());
        if queues.get(&tenant).is_some_and(|state| state.queue.is_none() && state.lease.lapsed(Instant::now())) {
            queues.remove(&tenant);
        }
    }

    /// One script call deciding `batch` in order (limits from its newest call).
    async fn decide(&self, key: &str, batch: &[Waiter], lease: u32) -> Result<(Vec<Decision>, Option<Lease>), ()> {
        if self.now_ms() < self.unavailable_until.load(Ordering::Relaxed) {
            return Err(());
        }
        let newest = batch.last().expect("batches are never empty");
        let interval = per_token(newest.requests_per_second);
        let bucket = newest.bucket;
        let mut costs = String::with_capacity(batch.len() * 2);
        for waiter in batch {
            if !costs.is_empty() {
                costs.push(',');
            }
            let _ = write!(costs, "{}", waiter.cost.min(bucket));
        }
        let lease = lease.min(bucket / 16);
        let lease = if lease >= MIN_LEASE { lease } else { 0 };
        let args = vec![interval.as_micros().to_string(), bucket.to_string(), costs, lease.to_string()];
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let call = self.script.evalsha_with_reload::<Vec<i64>, _, _>(&self.client, key, args);
        let expected = 4 * (batch.len() + usize::from(lease > 0));
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(reply)) if reply.len() == expected => {
                let micros = |v: i64| Duration::from_micros(v.max(0) as u64);
                let (calls, leased) = reply.split_at(4 * batch.len());
                let now = Instant::now();
                let lease = (leased.first() == Some(&1)).then(|| Lease {
                    tokens: lease,
                    granted: lease,
                    until: Some(now + LEASE_TTL),
                    requests_per_second: newest.requests_per_second,
                    bucket,
                    remaining: leased[1].clamp(0, i64::from(bucket)) as u64,
                    full_at: Some(now + micros(leased[3])),
                });
                let decisions = calls
                    .chunks_exact(4)
                    .map(|r| Decision {
                        allowed: r[0] == 1,
                        headers: RateHeaders {
                            limit: u64::from(bucket),
                            // A refused call is told 0, as the local engine
                            // tells it: what is left does not fit this call.
                            remaining: if r[0] == 1 { r[1].clamp(0, i64::from(bucket)) as u64 } else { 0 },
                            reset: micros(r[3]),
                            window_seconds: RateHeaders::window_seconds(interval, bucket),
                        },
                        retry_after: micros(r[2]),
                    })
                    .collect();
                Ok((decisions, lease))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(tokens: u32, now: Instant) -> Lease {
        Lease {
            tokens,
            granted: tokens,
            until: Some(now + LEASE_TTL),
            requests_per_second: 100,
            bucket: 1_000,
            remaining: 600,
            full_at: Some(now + Duration::from_secs(4)),
        }
    }

    #[test]
    fn a_lease_pays_for_calls_of_its_plan_until_it_runs_out_or_lapses() {
        let now = Instant::now();
        let mut leased = lease(3, now);
        let first = leased.spend(2, 100, 1_000, now).expect("two of three tokens");
        assert!(first.allowed && first.retry_after.is_zero());
        assert_eq!(first.headers.limit, 1_000);
        assert_eq!(first.headers.remaining, 601, "what Redis had left plus the token still leased");
        assert_eq!(first.headers.reset, Duration::from_secs(4));
        assert!(leased.spend(2, 100, 1_000, now).is_none(), "one token left: not enough");
        assert!(leased.spend(1, 200, 1_000, now).is_none(), "another plan's call ignores it");
        assert!(leased.spend(1, 100, 1_000, now + LEASE_TTL).is_none(), "lapsed");
        assert!(leased.spend(1, 100, 1_000, now).is_some());
        assert!(Lease::default().spend(1, 100, 1_000, now).is_none(), "no lease");
    }

    #[test]
    fn a_renewed_lease_keeps_the_live_tokens_of_the_last() {
        let now = Instant::now();
        let mut leased = lease(5, now);
        leased.renew(lease(10, now), now);
        assert_eq!(leased.tokens, 15);
        let later = now + LEASE_TTL;
        leased.renew(lease(10, later), later);
        assert_eq!(leased.tokens, 10, "a lapsed lease's tokens are dropped");
        leased.renew(Lease { requests_per_second: 50, ..lease(4, later) }, later);
        assert_eq!(leased.tokens, 4, "so are another plan's");
    }

    #[test]
    fn leases_follow_the_batch_or_double_when_spent() {
        let waiter = |cost| Waiter { cost, requests_per_second: 1, bucket: 1, reply: oneshot::channel().0 };
        let none = Lease::default();
        assert_eq!(lease_size(&[waiter(1), waiter(1), waiter(1)], &none), 6, "under MIN_LEASE: dropped in decide");
        assert_eq!(lease_size(&[waiter(3), waiter(1)], &none), 8);
        let now = Instant::now();
        let mut spent = lease(40, now);
        assert_eq!(lease_size(&[waiter(1)], &spent), 2, "a lease with tokens left asks nothing more");
        while spent.spend(1, 100, 1_000, now).is_some() {}
        assert_eq!(lease_size(&[waiter(1)], &spent), 80, "one spent to the last token: twice as much");
        assert_eq!(lease_size(&[waiter(50)], &spent), 100);
    }
}
