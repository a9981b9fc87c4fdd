//! Admission control: how many calls that need the database run at once,
//! learned from their latency, with fair shares per tenant under saturation
//! and a fast refusal while PostgreSQL is known to be down (DESIGN §10).
//!
//! **Which calls are gated.** Each method's use of the database is tracked
//! (an exponentially weighted share of its recent calls whose handler took a
//! connection from the pool, [`crate::db::tracking_use`]). Methods answered
//! from memory (a cached WhoAmI, GetQuota, GetJwks) pass freely, so they keep
//! being served while database-bound calls are shed, however slow a
//! saturated CPU makes them; a cache miss now and then does not make them
//! gated. A method whose calls mostly use the database is gated from then
//! on, and passes freely again once they mostly do not.
//!
//! **How many.** A gradient limit in the manner of Netflix's
//! concurrency-limits (Gradient2): every [`WINDOW`] the gated calls' average
//! latency is compared with the lowest seen lately; when calls queue (the
//! average grows past [`TOLERANCE`] times the minimum) the limit shrinks in
//! proportion, otherwise it grows by its square root. So the limit settles
//! where calls stop queueing for connections, whatever the pool, the
//! database or the machine.
//!
//! **Who waits.** A gated call over the limit waits at most [`ADMIT_WAIT`]
//! (and never past its deadline) in a queue no longer than what the last
//! window served in that time; a call ending hands its slot straight to the
//! first in it. A call that finds the queue full, or whose wait runs out,
//! is shed (UNAVAILABLE with RetryInfo). So a burst a little larger than
//! the limit (a connection's worth of streams read at once) is served a few
//! milliseconds later instead of refused, and excess is still refused
//! within [`ADMIT_WAIT`]. The RetryInfo delay is a
//! control loop on the refusals themselves: every window it moves in
//! proportion to how far calls shed per call served is from
//! [`SHED_TARGET`] (at most ×4 up or ×0.9 down a window, within [`SHED_RETRY_AFTER`]
//! and [`MAX_PUSHBACK`]), so however many clients a flood has, those that
//! honour RetryInfo (the SDKs do) come back at a pace whose refusals cost a
//! small share of the CPU that serves. Under saturation a tenant below its
//! fair share (the limit divided by the tenants with calls in flight) is
//! still admitted, up to [`BURST`] times the limit, so one tenant's flood
//! cannot starve another's calls.
//!
//! **Holding.** Clients that ignore RetryInfo (h2load, a script retrying at
//! once) would otherwise resend every refused call immediately, and a flood
//! of them spends the CPU on refusals. Refusals therefore share a budget,
//! [`HOLD_BUDGET`] per call served, metered like a rate limit (GCRA, with
//! [`HOLD_TOLERANCE`] of burst). A refusal over it holds the reads of its
//! connection ([`crate::server::Pace`]) until the budget has room again:
//! the calls in flight there are still answered, and nothing more is read
//! from that client meanwhile, for at most the delay the client was told.
//! Only while more connections have calls refused than the limit admits
//! calls: then others are ready to take the slots a held connection leaves,
//! where holding the one or few connections of a flood would leave the
//! slots idle (measured: 4,202 → 100 OK/s for one h2load connection).
//! Clients that honour RetryInfo are kept by the pushback near
//! [`SHED_TARGET`], half the budget, so they are not held. Held connections
//! queue, and when slots go idle (fewer than the limit in flight, no call
//! waiting, none shed lately) a call ending releases the one held longest
//! early, at most one every [`RELEASE_SPACING`]: holds bound the refusals,
//! and the released connections' calls keep the slots full.
//!
//! **PostgreSQL down.** While the health probe reports it down, gated calls
//! are refused at once, except one call every [`PROBE_EVERY`] that tries it,
//! so the first success after it is back is not held up by the probe.
//!
//! **No process-wide lock.** The limit, the calls in flight and the window's
//! samples are atomics; the per-tenant counts are split into [`SHARDS`]
//! locked maps by tenant, so a call locks only its own tenant's shard (once
//! to enter, once to leave) and tenants never wait on each other.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use http::Request;
use tokio::sync::oneshot;
use tonic::body::Body;

use super::guard::{Guard, Handled, context};
use crate::{
    error::ApiError,
    health::{DependencyState, Readiness},
    metrics::{Metrics, ShedReason},
    policy::{MethodPolicy, PolicyTable},
    server::{MAX_HOLD, Pace},
    tenancy::TenantId,
};

/// How often the limit is recomputed.
const WINDOW: Duration = Duration::from_millis(100);
/// Latency up to this multiple of the minimum is not queueing.
const TOLERANCE: f64 = 2.0;
/// Tenants below their fair share may take the node up to this multiple of the limit.
const BURST: usize = 2;
/// While PostgreSQL is down, one gated call this often tries it anyway.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// `last_probe` before the first probe.
const NEVER: u64 = u64::MAX;
/// How long a shed client should wait.
const SHED_RETRY_AFTER: Duration = Duration::from_millis(200);
/// Calls shed per call served that the pushback aims at: refusals then
/// cost a small share of the CPU (one is far cheaper than a served call).
const SHED_TARGET: f64 = 0.25;
/// The longest retry delay a shed call is given.
const MAX_PUSHBACK: Duration = Duration::from_secs(10);
/// Refusals per call served before connections are held (see the module docs).
const HOLD_BUDGET: f64 = 2.0 * SHED_TARGET;
/// Refusals per second allowed however few calls are served.
const MIN_REFUSAL_RATE: f64 = 100.0;
/// How far refusals may run ahead of the budget before a connection is held.
const HOLD_TOLERANCE: Duration = Duration::from_secs(3);
/// How long a client should wait while PostgreSQL is down.
const DOWN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Held connections released early for idle slots: at most one this often
/// (the released connection's calls take about this long to arrive).
const RELEASE_SPACING: Duration = Duration::from_millis(2);
/// Most held connections queued for an early release; past it the oldest
/// is released.
const MAX_HELD: usize = 10_000;
/// The longest a call over the limit waits for a slot before it is shed.
const ADMIT_WAIT: Duration = Duration::from_millis(6);

/// The limit's bounds and starting point.
#[derive(Debug, Clone, Copy)]
pub struct LimitBounds {
    /// Never below this many gated calls at once.
    pub min: usize,
    /// Where the limit starts.
    pub initial: usize,
    /// Never above this.
    pub max: usize,
}

/// See the module docs.
pub struct Admission {
    methods: HashMap<String, Arc<DatabaseUse>>,
    limit: Arc<Limit>,
    readiness: Arc<Readiness>,
    metrics: Metrics,
}

/// The share of a method's recent calls that used the database, in
/// thousandths (an exponentially weighted average; 0 until measured).
#[derive(Default)]
struct DatabaseUse(AtomicU64);

impl DatabaseUse {
    fn is_light(&self) -> bool {
        self.0.load(Ordering::Relaxed) < 500
    }

    fn observe(&self, used_database: bool) {
        let sample = if used_database { 1000 } else { 0 };
        let old = self.0.load(Ordering::Relaxed);
        // Weight 1/8: quick to notice a method turning database-bound, steady otherwise.
        self.0.store(old - old / 8 + sample / 8, Ordering::Relaxed);
    }
}

/// Shards of the per-tenant in-flight counts.
const SHARDS: usize = 32;

/// The gradient limit and the calls it admitted.
struct Limit {
    bounds: LimitBounds,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    /// Held connections, longest held first, and when one was last
    /// released early (nanoseconds since `epoch`).
    held: Mutex<VecDeque<Pace>>,
    last_release_ns: AtomicU64,
    /// Calls waiting for a slot, first come first served; their count,
    /// readable without the lock by every call that ends; and how many may
    /// wait (what the last window served in [`ADMIT_WAIT`]).
    waiting: Mutex<VecDeque<oneshot::Sender<()>>>,
    waiters: AtomicUsize,
    max_waiting: AtomicUsize,
    /// When a call was last shed (nanoseconds since `epoch`).
    last_shed_ns: AtomicU64,
    /// Milliseconds since `epoch` of the last call let through while PostgreSQL is down.
    last_probe: AtomicU64,
    /// Calls shed in the current window.
    shed: AtomicUsize,
    /// The retry delay told to shed calls, in milliseconds (see [`Limit::sample`]).
    pushback_ms: AtomicU64,
    /// The refusal budget as a GCRA: nanoseconds of budget one refusal
    /// takes (set every window), and when the budget is spent up to, in
    /// nanoseconds since `epoch`.
    refusal_cost_ns: AtomicU64,
    refusals_due_ns: AtomicU64,
    /// Connections with a call refused in the current period of
    /// [`MAX_HOLD`] (counted since `epoch`), and in the one before.
    refusing_period: AtomicU64,
    refusing: AtomicUsize,
    refusing_before: AtomicUsize,
    epoch: Instant,
    window: Window,
    tenants: TenantCounts,
}

/// The latency samples of the current window and the lowest latency seen
/// lately, as atomics (a sample racing a window's end lands in either).
struct Window {
    /// Milliseconds since `epoch` when the window started.
    started_ms: AtomicU64,
    samples: AtomicU32,
    total_ns: AtomicU64,
    /// The minimum latency (0: none yet) and when it was seen (ms since `epoch`).
    min_ns: AtomicU64,
    min_at_ms: AtomicU64,
}

/// Gated calls in flight per tenant (`None`: platform calls), sharded by
/// tenant, and how many tenants have any.
struct TenantCounts {
    hasher: RandomState,
    shards: [Mutex<HashMap<Option<TenantId>, usize>>; SHARDS],
    active: AtomicUsize,
}

impl TenantCounts {
    fn shard(&self, tenant: &Option<TenantId>) -> std::sync::MutexGuard<'_, HashMap<Option<TenantId>, usize>> {
        let index = self.hasher.hash_one(tenant) as usize % SHARDS;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more call of `tenant`, admitted already.
    fn add(&self, tenant: &Option<TenantId>) {
        let mut shard = self.shard(tenant);
        let own = shard.entry(tenant.clone()).or_default();
        if *own == 0 {
            self.active.fetch_add(1, Ordering::Relaxed);
        }
        *own += 1;
    }

    /// Counts one more call of `tenant` if `admit` (given its calls in
    /// flight and the tenants active besides it) says so.
    fn enter<E>(&self, tenant: &Option<TenantId>, admit: impl FnOnce(usize, usize) -> Result<(), E>) -> Result<(), E> {
        let mut shard = self.shard(tenant);
        let own = shard.get(tenant).copied().unwrap_or(0);
        let others = self.active.load(Ordering::Relaxed).saturating_sub(usize::from(own > 0));
        admit(own, others)?;
        if own == 0 {
            self.active.fetch_add(1, Ordering::Relaxed);
        }
        *shard.entry(tenant.clone()).or_default() += 1;
        Ok(())
    }

    fn leave(&self, tenant: &Option<TenantId>) {
        let mut shard = self.shard(tenant);
        if let Some(count) = shard.get_mut(tenant) {
            *count -= 1;
            if *count == 0 {
                shard.remove(tenant);
                self.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Admission {
    /// Admission for the methods of `policies`, following PostgreSQL's
    /// health in `readiness`.
    pub fn new(policies: &PolicyTable, bounds: LimitBounds, readiness: Arc<Readiness>, metrics: Metrics) -> Self {
        let methods = policies.iter().map(|p| (p.path.clone(), Arc::default())).collect();
        metrics.set_concurrency_limit(bounds.initial);
        let limit = Limit::new(bounds);
        Admission { methods, limit: Arc::new(limit), readiness, metrics }
    }

    fn shed(&self, method: &MethodPolicy, reason: ShedReason) -> ApiError {
        self.metrics.record_shed(Some(method), reason);
        let (message, retry_after) = match reason {
            ShedReason::DbDown => ("the database is unavailable; retry with backoff", DOWN_RETRY_AFTER),
            _ => {
                self.limit.shed.fetch_add(1, Ordering::Relaxed);
                self.limit.last_shed_ns.store(self.limit.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
                let pushback = Duration::from_millis(self.limit.pushback_ms.load(Ordering::Relaxed));
                ("the server is saturated; retry with backoff", pushback)
            }
        };
        ApiError::Unavailable { message: message.into(), retry_after: Some(retry_after) }
    }
}

/// What an admitted call holds until it is answered: a gated call's slot,
/// released when it is dropped. Latency is sampled only for calls the
/// handler answered ([`Guard::admitted`]): a call refused after admission
/// (rate limit, authorization) did no work, and its short latency must
/// neither lower the minimum nor make its method look light.
pub struct Admitted {
    method: Option<Arc<DatabaseUse>>,
    gated: Option<Gated>,
}

/// A gated call's slot, released when dropped.
struct Gated {
    limit: Arc<Limit>,
    tenant: Option<TenantId>,
}

impl Guard for Admission {
    type Pass = Admitted;

    async fn check(&self, request: &mut Request<Body>) -> Result<Admitted, ApiError> {
        let context = context(request)?;
        let method = self.methods.get(&context.method.path);
        if method.is_none_or(|m| m.is_light()) {
            return Ok(Admitted { method: method.cloned(), gated: None });
        }
        let limit = &self.limit;
        if self.readiness.postgres() == DependencyState::Down && !limit.may_probe() {
            return Err(self.shed(&context.method, ShedReason::DbDown));
        }
        let tenant = context.tenant_if_any().map(|t| t.id.clone());
        let entered = match limit.enter(&tenant) {
            Err(ShedReason::Concurrency) => limit.wait(&tenant, context.deadline).await,
            entered => entered,
        };
        match entered {
            Ok(()) => {
                let gated = Some(Gated { limit: limit.clone(), tenant });
                Ok(Admitted { method: method.cloned(), gated })
            }
            Err(reason) => {
                if let Some(pace) = request.extensions().get::<Pace>()
                    && let Some(hold) = limit.hold(pace)
                {
                    pace.hold(hold);
                    limit.queue_held(pace);
                }
                Err(self.shed(&context.method, reason))
            }
        }
    }

    /// Learns from the handler only: what comes before it (a Redis
    /// rate-limit round trip, waiting for a turn) says nothing about how
    /// the method uses the database.
    fn admitted(&self, pass: Admitted, _response: &mut http::Response<Body>, handled: Handled) {
        if let Some(method) = &pass.method {
            method.observe(handled.used_database);
        }
        if pass.gated.is_some()
            && let Some(new) = self.limit.sample(handled.time)
        {
            self.metrics.set_concurrency_limit(new);
        }
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        self.limit.tenants.leave(&self.tenant);
        self.limit.free_slot();
    }
}

/// A call's place in the queue for a slot. A call that goes away (its
/// client cancelled, its deadline passed) after a slot was handed to it,
/// before it ran, passes the slot on instead of leaking it.
struct Waiting<'a> {
    limit: &'a Limit,
    receiver: oneshot::Receiver<()>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.receiver.close();
        if self.receiver.try_recv().is_ok() {
            self.limit.free_slot();
        }
    }
}

impl Limit {
    /// A limit starting at `bounds.initial`, nothing in flight.
    fn new(bounds: LimitBounds) -> Self {
        Limit {
            bounds,
            limit: AtomicUsize::new(bounds.initial),
            in_flight: AtomicUsize::new(0),
            held: Mutex::default(),
            last_release_ns: AtomicU64::new(0),
            waiting: Mutex::default(),
            waiters: AtomicUsize::new(0),
            max_waiting: AtomicUsize::new(bounds.initial),
            last_shed_ns: AtomicU64::new(0),
            last_probe: AtomicU64::new(NEVER),
            shed: AtomicUsize::new(0),
            pushback_ms: AtomicU64::new(SHED_RETRY_AFTER.as_millis() as u64),
            refusal_cost_ns: AtomicU64::new((1e9 / MIN_REFUSAL_RATE) as u64),
            refusals_due_ns: AtomicU64::new(0),
            refusing_period: AtomicU64::new(0),
            refusing: AtomicUsize::new(0),
            refusing_before: AtomicUsize::new(0),
            epoch: Instant::now(),
            window: Window {
                started_ms: AtomicU64::new(0),
                samples: AtomicU32::new(0),
                total_ns: AtomicU64::new(0),
                min_ns: AtomicU64::new(0),
                min_at_ms: AtomicU64::new(0),
            },
            tenants: TenantCounts {
                hasher: RandomState::new(),
                shards: std::array::from_fn(|_| Mutex::default()),
                active: AtomicUsize::new(0),
            },
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Admits one gated call of `tenant`, or says why not: under the limit
    /// anyone enters; at it, a tenant below its fair share still enters up
    /// to `BURST` times the limit.
    fn enter(&self, tenant: &Option<TenantId>) -> Result<(), ShedReason> {
        self.tenants.enter(tenant, |own, others| {
            let in_flight = self.in_flight.load(Ordering::Acquire);
            let current = self.limit.load(Ordering::Relaxed);
            if in_flight >= current {
                let share = (current / (others + 1)).max(1);
                if own >= share {
                    return Err(if others > 0 { ShedReason::FairShare } else { ShedReason::Concurrency });
                }
                if in_flight >= current * BURST {
                    return Err(ShedReason::Concurrency);
                }
            }
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            Ok(())
        })
    }

    /// Waits for a slot a call ending hands over, until `deadline` or
    /// [`ADMIT_WAIT`], whichever is sooner; refused at once when the queue
    /// is full. The slot comes counted in `in_flight`.
    async fn wait(&self, tenant: &Option<TenantId>, deadline: Instant) -> Result<(), ShedReason> {
        let until = deadline.min(Instant::now() + ADMIT_WAIT);
        let receiver = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if waiting.len() >= self.max_waiting.load(Ordering::Relaxed) {
                return Err(ShedReason::Concurrency);
            }
            let (sender, receiver) = oneshot::channel();
            waiting.push_back(sender);
            self.waiters.fetch_add(1, Ordering::AcqRel);
            receiver
        };
        let mut waiting = Waiting { limit: self, receiver };
        let handed = match tokio::time::timeout_at(until.into(), &mut waiting.receiver).await {
            Ok(result) => result.is_ok(),
            // A slot handed over as the wait ran out is still this call's.
            Err(_elapsed) => {
                waiting.receiver.close();
                waiting.receiver.try_recv().is_ok()
            }
        };
        drop(waiting);
        if handed {
            self.tenants.add(tenant);
            return Ok(());
        }
        // A slot freed with no call ending to hand it over (the limit grew,
        // or the last call ended before this one queued) is taken now.
        self.enter(tenant)
    }

    /// Frees the slot of a call that ended: to the first call waiting, or
    /// back to the limit (and then perhaps to a held connection).
    fn free_slot(&self) {
        if !self.hand_over() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.release_if_idle();
        }
    }

    /// Hands the slot of a call ending to the first call still waiting,
    /// unless the limit has shrunk below the calls in flight; says whether
    /// it did (the slot then stays counted in `in_flight`).
    fn hand_over(&self) -> bool {
        if self.waiters.load(Ordering::Acquire) == 0
            || self.in_flight.load(Ordering::Acquire) > self.limit.load(Ordering::Relaxed)
        {
            return false;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(waiter) = waiting.pop_front() {
            self.waiters.fetch_sub(1, Ordering::AcqRel);
            // Fails only for a call whose wait ran out.
            if waiter.send(()).is_ok() {
                return true;
            }
        }
        false
    }

    /// Queues a connection just held, for [`Limit::release_if_idle`].
    fn queue_held(&self, pace: &Pace) {
        if !pace.enqueue() {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() >= MAX_HELD
            && let Some(oldest) = held.pop_front()
        {
            oldest.release();
        }
        held.push_back(pace.clone());
    }

    /// Ends the hold of the connection held longest while slots are idle
    /// (fewer than the limit in flight) and the demand that is read has run
    /// out (no call shed for [`RELEASE_SPACING`]): holds keep refusals
    /// within their budget, not slots empty. At most one every
    /// [`RELEASE_SPACING`], so the calls of one arrive before another is
    /// let go, except when the last call in flight ends: no later one would
    /// release anything before the holds run out.
    fn release_if_idle(&self) {
        let in_flight = self.in_flight.load(Ordering::Acquire);
        if in_flight >= self.limit.load(Ordering::Relaxed) || self.waiters.load(Ordering::Acquire) > 0 {
            return;
        }
        let now = self.epoch.elapsed().as_nanos() as u64;
        let spacing = RELEASE_SPACING.as_nanos() as u64;
        let last = self.last_release_ns.load(Ordering::Relaxed);
        let recent = last.max(self.last_shed_ns.load(Ordering::Relaxed));
        if (in_flight > 0 && now < recent + spacing)
            || self.last_release_ns.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        // Connections whose hold ran out meanwhile are reading already.
        while let Some(pace) = held.pop_front() {
            if pace.release() {
                break;
            }
        }
    }

    /// Counts a refusal on the connection `pace` and says how long to hold
    /// that connection, if at all: only past the refusal budget, and only
    /// while more connections had calls refused, in this period or the last
    /// (a period is as long as the longest hold), than the limit admits calls.
    fn hold(&self, pace: &Pace) -> Option<Duration> {
        let period = self.now_ms() / MAX_HOLD.as_millis() as u64;
        let last = self.refusing_period.load(Ordering::Relaxed);
        if last != period
            && self.refusing_period.compare_exchange(last, period, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            let before = self.refusing.swap(0, Ordering::Relaxed);
            self.refusing_before.store(if period == last + 1 { before } else { 0 }, Ordering::Relaxed);
        }
        if pace.refused_in(period) {
            self.refusing.fetch_add(1, Ordering::Relaxed);
        }
        // Never longer than the client was told to wait.
        let told = Duration::from_millis(self.pushback_ms.load(Ordering::Relaxed));
        let hold = self.over_budget()?.min(told);
        let connections = self.refusing.load(Ordering::Relaxed).max(self.refusing_before.load(Ordering::Relaxed));
        (connections > self.limit.load(Ordering::Relaxed)).then_some(hold)
    }

    /// Takes one refusal from the budget; past its tolerance, says how long
    /// the refused call's connection is held so that it fits again.
    fn over_budget(&self) -> Option<Duration> {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let cost = self.refusal_cost_ns.load(Ordering::Relaxed);
        let tolerance = HOLD_TOLERANCE.as_nanos() as u64;
        // Never further ahead than a hold can pay back.
        let ceiling = now + tolerance + MAX_HOLD.as_nanos() as u64;
        let previous = self
            .refusals_due_ns
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |due| Some((due.max(now) + cost).min(ceiling)))
            .unwrap_or_else(|due| due);
        let due = (previous.max(now) + cost).min(ceiling);
        let over = due.saturating_sub(now + tolerance);
        (over > 0).then(|| Duration::from_nanos(over))
    }

    /// Whether this call may try PostgreSQL while it is reported down.
    fn may_probe(&self) -> bool {
        let now = self.now_ms();
        let last = self.last_probe.load(Ordering::Relaxed);
        (last == NEVER || now.saturating_sub(last) >= PROBE_EVERY.as_millis() as u64)
            && self.last_probe.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Adds a latency sample; at the end of a window, moves the limit and
    /// returns it (exactly one caller closes each window).
    fn sample(&self, latency: Duration) -> Option<usize> {
        let window = &self.window;
        let sample_ns = (latency.as_nanos().min(u128::from(u64::MAX)) as u64).max(1);
        window.samples.fetch_add(1, Ordering::Relaxed);
        window.total_ns.fetch_add(sample_ns, Ordering::Relaxed);
        let now = self.now_ms();
        // The minimum is forgotten after a while, so a lasting change of the
        // baseline (a slower database) is learned too.
        let min = window.min_ns.load(Ordering::Relaxed);
        let stale = now.saturating_sub(window.min_at_ms.load(Ordering::Relaxed)) > 30_000;
        if min == 0 || sample_ns <= min || stale {
            window.min_ns.store(sample_ns, Ordering::Relaxed);
            window.min_at_ms.store(now, Ordering::Relaxed);
        }
        let started = window.started_ms.load(Ordering::Relaxed);
        if now.saturating_sub(started) < WINDOW.as_millis() as u64
            || window.started_ms.compare_exchange(started, now, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return None;
        }
        let samples = window.samples.swap(0, Ordering::Relaxed).max(1);
        let average = Duration::from_nanos(window.total_ns.swap(0, Ordering::Relaxed) / u64::from(samples));
        // Pushback: moved in proportion to shed per served against the
        // target, so the delay settles where returning clients are shed at
        // that rate (a flood twice as large is told to wait twice as long).
        let ratio = self.shed.swap(0, Ordering::Relaxed) as f64 / f64::from(samples);
        // The refusal budget follows the calls served.
        let served_per_second = f64::from(samples) / (now.saturating_sub(started).max(1) as f64 / 1000.0);
        let refusals_per_second = (HOLD_BUDGET * served_per_second).max(MIN_REFUSAL_RATE);
        self.refusal_cost_ns.store((1e9 / refusals_per_second) as u64, Ordering::Relaxed);
        // A queue no longer than what is served while a call may wait.
        let max_waiting = (served_per_second * ADMIT_WAIT.as_secs_f64()) as usize;
        self.max_waiting.store(max_waiting.clamp(1, self.bounds.max), Ordering::Relaxed);
        // Up fast, down slowly: the clients told to wait are still out
        // there, and come back only after the delay they were given.
        let factor = (ratio / SHED_TARGET).clamp(0.9, 4.0);
        let pushback = self.pushback_ms.load(Ordering::Relaxed) as f64 * factor;
        let pushback = pushback.clamp(SHED_RETRY_AFTER.as_millis() as f64, MAX_PUSHBACK.as_millis() as f64);
        self.pushback_ms.store(pushback.round() as u64, Ordering::Relaxed);
        let min = Duration::from_nanos(window.min_ns.load(Ordering::Relaxed));
        let current = self.limit.load(Ordering::Relaxed) as f64;
        let gradient = (TOLERANCE * min.as_secs_f64() / average.as_secs_f64().max(1e-9)).clamp(0.5, 1.0);
        let target = current * gradient + current.sqrt();
        // Smoothed, so one noisy window moves it little.
        let next = (current * 0.8 + target * 0.2).round() as usize;
        let next = next.clamp(self.bounds.min, self.bounds.max);
        self.limit.store(next, Ordering::Relaxed);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A limit whose window is over and whose minimum latency is 2 ms.
    fn limit(initial: usize) -> Limit {
        let limit = Limit::new(LimitBounds { min: 4, initial, max: 1000 });
        limit.sample(Duration::from_millis(2));
        std::thread::sleep(WINDOW);
        limit
    }

    #[test]
    fn the_limit_shrinks_when_calls_queue_and_grows_when_they_do_not() {
        let queueing = limit(100);
        let moved = queueing.sample(Duration::from_millis(40));
        assert!(moved.is_some_and(|next| next < 100), "{moved:?}");
        let easy = limit(100);
        let moved = easy.sample(Duration::from_millis(2));
        assert!(moved.is_some_and(|next| next > 100), "{moved:?}");
    }

    #[test]
    fn a_flooding_tenant_is_held_to_its_share_and_others_still_enter() {
        let limit = Limit::new(LimitBounds { min: 4, initial: 4, max: 1000 });
        let (flood, quiet) = (Some(TenantId::generate()), Some(TenantId::generate()));
        let flooded = (0..10).filter(|_| limit.enter(&flood).is_ok()).count();
        assert_eq!(flooded, 4, "the flood takes the limit");
        assert_eq!(limit.enter(&flood), Err(ShedReason::Concurrency));
        assert!(limit.enter(&quiet).is_ok(), "a tenant below its share still enters");
        assert_eq!(limit.enter(&flood), Err(ShedReason::FairShare), "the flood is over its share");
        assert_eq!(limit.tenants.active.load(Ordering::Relaxed), 2);
        limit.tenants.leave(&quiet);
        assert_eq!(limit.tenants.active.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn pushback_grows_while_many_calls_are_shed_and_falls_back_when_none_are() {
        let limit = limit(100);
        let pushback = || Duration::from_millis(limit.pushback_ms.load(Ordering::Relaxed));
        assert_eq!(pushback(), SHED_RETRY_AFTER);
        for _ in 0..4 {
            limit.shed.store(10, Ordering::Relaxed); // 10 shed per call served: 40 times the target
            std::thread::sleep(WINDOW);
            assert!(limit.sample(Duration::from_millis(2)).is_some());
        }
        assert_eq!(pushback(), MAX_PUSHBACK, "×4 a window up to the ceiling");
        std::thread::sleep(WINDOW);
        assert!(limit.sample(Duration::from_millis(2)).is_some());
        assert_eq!(pushback(), MAX_PUSHBACK.mul_f64(0.9), "down by a tenth a window with nothing shed");
        for _ in 0..40 {
            std::thread::sleep(WINDOW);
            assert!(limit.sample(Duration::from_millis(2)).is_some());
        }
        assert_eq!(pushback(), SHED_RETRY_AFTER, "down to the floor");
    }

    #[test]
    fn methods_turn_gated_when_they_use_the_database_and_free_again_when_not() {
        let method = DatabaseUse::default();
        assert!(method.is_light());
        method.observe(true);
        assert!(method.is_light(), "one cache miss does not make a method gated");
        for _ in 0..20 {
            method.observe(true);
        }
        assert!(!method.is_light());
        for _ in 0..20 {
            method.observe(false);
        }
        assert!(method.is_light());
    }

    #[test]
    fn refusals_over_the_budget_hold_their_connection_at_most_the_longest_hold() {
        let limit = Limit::new(LimitBounds { min: 4, initial: 4, max: 1000 });
        limit.refusal_cost_ns.store(1_000_000, Ordering::Relaxed); // 1,000 refusals a second
        let tolerated = (HOLD_TOLERANCE.as_millis() as usize).saturating_sub(10);
        assert!((0..tolerated).all(|_| limit.over_budget().is_none()), "a burst within the tolerance is free");
        let holds: Vec<Duration> = (0..5_000).filter_map(|_| limit.over_budget()).collect();
        assert!(holds.len() > 4_000, "past it every refusal holds its connection: {}", holds.len());
        let longest = holds.iter().max().copied().unwrap_or_default();
        assert!(longest <= MAX_HOLD, "{longest:?}");
        assert!(longest > MAX_HOLD / 2, "holds grow with the debt: {longest:?}");
        assert!(holds.windows(2).take(100).all(|w| w[1] >= w[0]), "each refusal adds to the debt");
    }

    #[test]
    fn only_floods_on_more_connections_than_the_limit_are_held() {
        let limit = Limit::new(LimitBounds { min: 4, initial: 4, max: 1000 });
        limit.pushback_ms.store(MAX_PUSHBACK.as_millis() as u64, Ordering::Relaxed);
        limit.refusal_cost_ns.store(HOLD_TOLERANCE.as_nanos() as u64, Ordering::Relaxed); // one refusal spends it
        let few: Vec<Pace> = (0..4).map(|_| Pace::new(MAX_HOLD)).collect();
        for _ in 0..3 {
            for pace in &few {
                assert_eq!(limit.hold(pace), None, "holding one of 4 connections would leave slots idle");
            }
        }
        // Nine in all: however a period's turn splits them, one period has more than 4.
        let more: Vec<Pace> = (0..5).map(|_| Pace::new(MAX_HOLD)).collect();
        let holds: Vec<Option<Duration>> = more.iter().map(|pace| limit.hold(pace)).collect();
        let last = holds.last().copied().flatten();
        assert!(last.is_some_and(|h| h > Duration::ZERO && h <= MAX_HOLD), "{holds:?}");
        assert!(limit.hold(&few[0]).is_some(), "then every refusal over the budget holds its connection");
    }

    #[test]
    fn idle_slots_end_the_hold_of_the_connection_held_longest() {
        let limit = Arc::new(Limit::new(LimitBounds { min: 2, initial: 2, max: 2 }));
        let (first, second) = (Pace::new(MAX_HOLD), Pace::new(MAX_HOLD));
        for pace in [&first, &second, &first] {
            pace.hold(MAX_HOLD);
            limit.queue_held(pace);
        }
        assert_eq!(limit.held.lock().map(|h| h.len()).ok(), Some(2), "each connection queued once");
        assert!(limit.enter(&None).is_ok() && limit.enter(&None).is_ok());
        std::thread::sleep(RELEASE_SPACING);
        drop(Gated { limit: limit.clone(), tenant: None });
        assert!(!first.release(), "the slot it freed ended the first connection's hold");
        assert_eq!(limit.held.lock().map(|h| h.len()).ok(), Some(1), "one connection at a time");
        // The next freed slot, too soon after, releases nothing more while
        // calls are in flight, and the last one's does.
        first.hold(MAX_HOLD);
        limit.queue_held(&first);
        assert!(limit.enter(&None).is_ok());
        drop(Gated { limit: limit.clone(), tenant: None });
        assert_eq!(limit.held.lock().map(|h| h.len()).ok(), Some(2), "at most one every RELEASE_SPACING");
        drop(Gated { limit: limit.clone(), tenant: None });
        assert!(!second.release(), "the last call in flight ended: released at once");
        assert!(first.release(), "the other still held");
    }

    /// A limit of one slot, taken by a platform call, and a deadline far off.
    fn one_slot_taken() -> (Arc<Limit>, Instant) {
        let limit = Arc::new(Limit::new(LimitBounds { min: 1, initial: 1, max: 1 }));
        assert!(limit.enter(&None).is_ok());
        (limit, Instant::now() + Duration::from_secs(30))
    }

    #[tokio::test]
    async fn a_call_over_the_limit_waits_for_a_slot_handed_over_and_no_longer() {
        let (limit, far) = one_slot_taken();
        let platform: Option<TenantId> = None;
        let mut waiter = Box::pin(limit.wait(&platform, far));
        assert!(tokio::time::timeout(Duration::from_millis(1), waiter.as_mut()).await.is_err(), "it waits");
        drop(Gated { limit: limit.clone(), tenant: None });
        assert_eq!(waiter.await, Ok(()), "the slot of the call that ended");
        assert_eq!(limit.in_flight.load(Ordering::Acquire), 1, "handed over, not freed and taken again");
        // Nothing ends now: the wait runs out and the call is shed.
        let started = Instant::now();
        assert_eq!(limit.wait(&platform, far).await, Err(ShedReason::Concurrency));
        assert!(started.elapsed() >= ADMIT_WAIT, "{:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(1), "not until the deadline: {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_slot_handed_to_a_call_that_went_away_is_passed_on() {
        let (limit, far) = one_slot_taken();
        let platform: Option<TenantId> = None;
        let mut gone = Box::pin(limit.wait(&platform, far));
        assert!(tokio::time::timeout(Duration::from_millis(1), gone.as_mut()).await.is_err());
        drop(Gated { limit: limit.clone(), tenant: None });
        assert_eq!(limit.in_flight.load(Ordering::Acquire), 1, "the slot went to the waiting call");
        drop(gone); // cancelled before it ran
        assert_eq!(limit.in_flight.load(Ordering::Acquire), 0, "and came back: no slot leaks");
        assert!(limit.enter(&platform).is_ok(), "the next call takes it");
    }

    #[test]
    fn probes_while_down_are_spaced() {
        let limit = limit(10);
        assert!(limit.may_probe());
        assert!(!limit.may_probe());
    }
}
