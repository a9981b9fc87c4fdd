//! Admission control: how many calls that need the database run at once,
//! learned from their latency, with fair shares per tenant under saturation
//! and a fast refusal while PostgreSQL is known to be down (DESIGN §10).
//!
//! **Which calls are gated.** Each method's latency is tracked (an
//! exponentially weighted average). Methods answered from memory (a cached
//! WhoAmI, GetQuota, GetJwks) stay under [`LIGHT`] and pass freely, so they
//! keep being served while database-bound calls are shed. A method whose
//! average rises past it (it waits on the database) is gated from then on,
//! and passes freely again once it is fast.
//!
//! **How many.** A gradient limit in the manner of Netflix's
//! concurrency-limits (Gradient2): every [`WINDOW`] the gated calls' average
//! latency is compared with the lowest seen lately; when calls queue (the
//! average grows past [`TOLERANCE`] times the minimum) the limit shrinks in
//! proportion, otherwise it grows by its square root. So the limit settles
//! where calls stop queueing for connections, whatever the pool, the
//! database or the machine.
//!
//! **Who waits.** A gated call over the limit is shed at once (UNAVAILABLE
//! with RetryInfo): a queue only adds latency. The RetryInfo delay grows
//! with the pressure (calls shed per call served in the last window,
//! cubed, from [`SHED_RETRY_AFTER`] up to [`MAX_PUSHBACK`]), so
//! clients that honour it (the SDKs do) back off as far as the overload
//! needs and refusals do not crowd out the calls being served. Under saturation a tenant
//! below its fair share (the limit divided by the tenants with calls in
//! flight) is still admitted, up to [`BURST`] times the limit, so one
//! tenant's flood cannot starve another's calls.
//!
//! **PostgreSQL down.** While the health probe reports it down, gated calls
//! are refused at once, except one call every [`PROBE_EVERY`] that tries it,
//! so the first success after it is back is not held up by the probe.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use http::Request;
use tonic::body::Body;

use super::guard::{Guard, context};
use crate::{
    error::ApiError,
    health::{DependencyState, Readiness},
    metrics::{Metrics, ShedReason},
    policy::{MethodPolicy, PolicyTable},
    tenancy::TenantId,
};

/// A method whose average latency stays under this is answered from memory.
pub const LIGHT: Duration = Duration::from_millis(5);
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
/// The longest retry delay a shed call is given.
const MAX_PUSHBACK: Duration = Duration::from_secs(5);
/// How long a client should wait while PostgreSQL is down.
const DOWN_RETRY_AFTER: Duration = Duration::from_secs(1);

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
    methods: HashMap<String, Arc<MethodLatency>>,
    limit: Arc<Limit>,
    readiness: Arc<Readiness>,
    metrics: Metrics,
}

/// A method's average latency, in nanoseconds (0: not measured yet).
#[derive(Default)]
struct MethodLatency(AtomicU64);

impl MethodLatency {
    fn is_light(&self) -> bool {
        self.0.load(Ordering::Relaxed) < LIGHT.as_nanos() as u64
    }

    fn observe(&self, latency: Duration) {
        let sample = latency.as_nanos().min(u128::from(u64::MAX)) as u64;
        let old = self.0.load(Ordering::Relaxed);
        // Weight 1/8: quick to notice a method turning slow, steady otherwise.
        let new = if old == 0 { sample } else { old - old / 8 + sample / 8 };
        self.0.store(new, Ordering::Relaxed);
    }
}

/// The gradient limit and the calls it admitted.
struct Limit {
    bounds: LimitBounds,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last call let through while PostgreSQL is down.
    last_probe: AtomicU64,
    /// Calls shed in the current window.
    shed: AtomicUsize,
    /// The retry delay told to shed calls, in milliseconds (see [`Limit::sample`]).
    pushback_ms: AtomicU64,
    epoch: Instant,
    state: Mutex<Window>,
}

/// The samples of the current window, the minimum latency, and the gated
/// calls in flight per tenant (`None`: platform calls).
struct Window {
    started: Instant,
    samples: u32,
    total: Duration,
    min: Option<(Duration, Instant)>,
    tenants: HashMap<Option<TenantId>, usize>,
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
                let pushback = Duration::from_millis(self.limit.pushback_ms.load(Ordering::Relaxed));
                ("the server is saturated; retry with backoff", pushback)
            }
        };
        ApiError::Unavailable { message: message.into(), retry_after: Some(retry_after) }
    }
}

/// What an admitted call holds until it is answered: its method's latency
/// is sampled, and a gated call's slot released, when it is dropped.
pub struct Admitted {
    started: Instant,
    method: Option<Arc<MethodLatency>>,
    _gated: Option<Gated>,
}

/// A gated call's slot: released (and its latency sampled) when dropped.
struct Gated {
    limit: Arc<Limit>,
    tenant: Option<TenantId>,
    metrics: Metrics,
    started: Instant,
}

impl Guard for Admission {
    type Pass = Admitted;

    async fn check(&self, request: &mut Request<Body>) -> Result<Admitted, ApiError> {
        let context = context(request)?;
        let started = Instant::now();
        let latency = self.methods.get(&context.method.path);
        if latency.is_none_or(|l| l.is_light()) {
            return Ok(Admitted { started, method: latency.cloned(), _gated: None });
        }
        let limit = &self.limit;
        if self.readiness.postgres() == DependencyState::Down && !limit.may_probe() {
            return Err(self.shed(&context.method, ShedReason::DbDown));
        }
        let tenant = context.tenant_if_any().map(|t| t.id.clone());
        let admitted = {
            let mut window = limit.state.lock().unwrap_or_else(|e| e.into_inner());
            let in_flight = limit.in_flight.load(Ordering::Acquire);
            let current = limit.limit.load(Ordering::Relaxed);
            let decision = if in_flight < current {
                Ok(())
            } else {
                let active = window.tenants.len().max(1) + usize::from(!window.tenants.contains_key(&tenant));
                let share = (current / active).max(1);
                let own = window.tenants.get(&tenant).copied().unwrap_or(0);
                if own < share && in_flight < current * BURST {
                    Ok(())
                } else if own >= share && window.tenants.len() > 1 {
                    Err(ShedReason::FairShare)
                } else {
                    Err(ShedReason::Concurrency)
                }
            };
            if decision.is_ok() {
                limit.in_flight.fetch_add(1, Ordering::AcqRel);
                *window.tenants.entry(tenant.clone()).or_default() += 1;
            }
            decision
        };
        match admitted {
            Ok(()) => Ok(Admitted {
                started,
                method: latency.cloned(),
                _gated: Some(Gated { limit: limit.clone(), tenant, metrics: self.metrics.clone(), started }),
            }),
            Err(reason) => Err(self.shed(&context.method, reason)),
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(method) = &self.method {
            method.observe(self.started.elapsed());
        }
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        let latency = self.started.elapsed();
        let limit = &self.limit;
        let mut window = limit.state.lock().unwrap_or_else(|e| e.into_inner());
        limit.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(count) = window.tenants.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                window.tenants.remove(&self.tenant);
            }
        }
        if let Some(new) = limit.sample(&mut window, latency) {
            self.metrics.set_concurrency_limit(new);
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
            last_probe: AtomicU64::new(NEVER),
            shed: AtomicUsize::new(0),
            pushback_ms: AtomicU64::new(SHED_RETRY_AFTER.as_millis() as u64),
            epoch: Instant::now(),
            state: Mutex::new(Window {
                started: Instant::now(),
                samples: 0,
                total: Duration::ZERO,
                min: None,
                tenants: HashMap::new(),
            }),
        }
    }

    /// Whether this call may try PostgreSQL while it is reported down.
    fn may_probe(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_probe.load(Ordering::Relaxed);
        (last == NEVER || now.saturating_sub(last) >= PROBE_EVERY.as_millis() as u64)
            && self.last_probe.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Adds a latency sample; at the end of a window, moves the limit and
    /// returns it.
    fn sample(&self, window: &mut Window, latency: Duration) -> Option<usize> {
        window.samples += 1;
        window.total += latency;
        let now = Instant::now();
        // The minimum is forgotten after a while, so a lasting change of the
        // baseline (a slower database) is learned too.
        if window.min.is_none_or(|(min, at)| latency <= min || now.duration_since(at) > Duration::from_secs(30)) {
            window.min = Some((latency, now));
        }
        if now.duration_since(window.started) < WINDOW {
            return None;
        }
        let average = window.total / window.samples.max(1);
        // Pushback: the more calls are shed per call served, the longer shed
        // clients are told to wait (cubed), so clients that honour
        // RetryInfo offer less and refusals stop eating the CPU that serves.
        let shed = self.shed.swap(0, Ordering::Relaxed) as f64;
        let pressure = 1.0 + shed / f64::from(window.samples.max(1));
        let pushback = SHED_RETRY_AFTER.mul_f64(pressure.powi(3)).min(MAX_PUSHBACK);
        self.pushback_ms.store(pushback.as_millis() as u64, Ordering::Relaxed);
        let (min, _) = window.min?;
        window.started = now;
        window.samples = 0;
        window.total = Duration::ZERO;
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

    fn limit(initial: usize) -> Limit {
        let limit = Limit::new(LimitBounds { min: 4, initial, max: 1000 });
        limit.state.lock().unwrap().started = Instant::now() - WINDOW;
        limit
    }

    #[test]
    fn the_limit_shrinks_when_calls_queue_and_grows_when_they_do_not() {
        let queueing = limit(100);
        {
            let mut window = queueing.state.lock().unwrap();
            window.min = Some((Duration::from_millis(2), Instant::now()));
            window.started = Instant::now() - WINDOW;
            let moved = queueing.sample(&mut window, Duration::from_millis(40));
            assert!(moved.is_some_and(|next| next < 100), "{moved:?}");
        }
        let easy = limit(100);
        let mut window = easy.state.lock().unwrap();
        window.min = Some((Duration::from_millis(2), Instant::now()));
        window.started = Instant::now() - WINDOW;
        let moved = easy.sample(&mut window, Duration::from_millis(2));
        assert!(moved.is_some_and(|next| next > 100), "{moved:?}");
    }

    #[test]
    fn methods_turn_gated_when_slow_and_free_again_when_fast() {
        let method = MethodLatency::default();
        assert!(method.is_light());
        for _ in 0..20 {
            method.observe(Duration::from_millis(50));
        }
        assert!(!method.is_light());
        for _ in 0..60 {
            method.observe(Duration::from_micros(200));
        }
        assert!(method.is_light());
    }

    #[test]
    fn probes_while_down_are_spaced() {
        let limit = limit(10);
        assert!(limit.may_probe());
        assert!(!limit.may_probe());
    }
}
