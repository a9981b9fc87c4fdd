//! Health and readiness that follow the dependencies: a probe task checks
//! PostgreSQL (and Redis when configured) on an interval, sets every
//! service's `grpc.health.v1` status, and backs `/readyz`.
//!
//! PostgreSQL down makes every Tenantry service NOT_SERVING and `/readyz`
//! 503. Redis down is reported but keeps the node ready: rate limits fall
//! back to local buckets (DESIGN §5), so pulling every node out of the load
//! balancer would turn a degraded cache into an outage.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::Duration,
};

use fred::prelude::{Client, ClientLike};
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::metrics::Metrics;

/// How often PostgreSQL is probed while it is down.
pub const DOWN_INTERVAL: Duration = Duration::from_millis(200);

/// What the probe last saw of a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencyState {
    /// Not configured.
    Disabled,
    /// Answering.
    Up,
    /// Not answering.
    Down,
}

/// The last probe's results, shared with `/readyz`.
#[derive(Debug)]
pub struct Readiness {
    postgres: AtomicBool,
    redis: AtomicU8,
    /// Set when shutdown begins: the node stops being ready first, so load
    /// balancers stop sending work before the listeners close.
    draining: AtomicBool,
}

impl Readiness {
    /// Readiness before the first probe: PostgreSQL assumed up (the build
    /// just connected), Redis up when configured.
    pub fn new(redis_configured: bool) -> Self {
        let redis = if redis_configured { DependencyState::Up } else { DependencyState::Disabled };
        Readiness {
            postgres: AtomicBool::new(true),
            redis: AtomicU8::new(redis as u8),
            draining: AtomicBool::new(false),
        }
    }

    /// Whether this node should receive traffic.
    pub fn is_ready(&self) -> bool {
        self.postgres.load(Ordering::Relaxed) && !self.is_draining()
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Shutdown begins: not ready from now on.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// PostgreSQL's state.
    pub fn postgres(&self) -> DependencyState {
        if self.postgres.load(Ordering::Relaxed) { DependencyState::Up } else { DependencyState::Down }
    }

    /// Redis's state.
    pub fn redis(&self) -> DependencyState {
        match self.redis.load(Ordering::Relaxed) {
            x if x == DependencyState::Up as u8 => DependencyState::Up,
            x if x == DependencyState::Down as u8 => DependencyState::Down,
            _ => DependencyState::Disabled,
        }
    }
}

/// Probes dependencies and publishes the result.
pub struct HealthProbe {
    /// Where the results go (`/readyz`, and every node-local reader).
    pub readiness: Arc<Readiness>,
    /// The gRPC health service's reporter.
    pub reporter: HealthReporter,
    /// Service names whose status follows PostgreSQL.
    pub services: Vec<String>,
    /// The pool to probe.
    pub pool: PgPool,
    /// The Redis client to probe, when configured.
    pub redis: Option<Client>,
    /// Time between probes.
    pub interval: Duration,
    /// Where failed Redis probes are counted.
    pub metrics: Metrics,
}

impl HealthProbe {
    /// Probes once, so every service has a status before the first call.
    pub async fn probe_once(&self) {
        self.probe(&mut None).await;
    }

    /// Keeps probing until `stop`, then reports every service NOT_SERVING.
    /// While PostgreSQL is down it probes every [`DOWN_INTERVAL`] at most, so
    /// calls (refused at once meanwhile) resume within a fraction of a second
    /// of its return.
    pub async fn run(&self, stop: CancellationToken) {
        let mut serving = Some(self.readiness.is_ready());
        loop {
            let every = match self.readiness.postgres() {
                DependencyState::Down => self.interval.min(DOWN_INTERVAL),
                _ => self.interval,
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                () = tokio::time::sleep(every) => self.probe(&mut serving).await,
            }
        }
        for service in self.services.iter().map(String::as_str).chain([""]) {
            self.reporter.set_service_status(service, ServingStatus::NotServing).await;
        }
    }

    /// One round: probe the dependencies, publish changes.
    async fn probe(&self, serving: &mut Option<bool>) {
        let readiness = &self.readiness;
        let timeout = self.interval.min(Duration::from_secs(1));
        let postgres_up = crate::db::ping(&self.pool, timeout).await;
        readiness.postgres.store(postgres_up, Ordering::Relaxed);
        if let Some(redis) = &self.redis {
            let up = matches!(tokio::time::timeout(timeout, redis.ping::<()>(None)).await, Ok(Ok(())));
            let state = if up { DependencyState::Up } else { DependencyState::Down };
            if !up {
                self.metrics.record_redis_error("ping");
            }
            if readiness.redis() != state {
                if up {
                    tracing::info!("Redis answers again");
                } else {
                    tracing::warn!("Redis does not answer; rate limits fall back to local buckets, still ready");
                }
            }
            readiness.redis.store(state as u8, Ordering::Relaxed);
        }
        if *serving == Some(postgres_up) {
            return;
        }
        let status = if postgres_up { ServingStatus::Serving } else { ServingStatus::NotServing };
        if postgres_up {
            tracing::info!("PostgreSQL answers; serving");
        } else {
            tracing::warn!("PostgreSQL does not answer; NOT_SERVING");
        }
        for service in self.services.iter().map(String::as_str).chain([""]) {
            self.reporter.set_service_status(service, status).await;
        }
        *serving = Some(postgres_up);
    }
}
