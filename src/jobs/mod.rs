//! Background jobs on PostgreSQL (DESIGN §6): a durable, tenant-aware queue
//! in `platform.jobs`, fair across tenants and safe against crashed workers.
//!
//! A job exists if and only if the transaction that enqueued it commits
//! ([`queue::enqueue`] takes an open transaction). Workers lease jobs in
//! batches (`FOR UPDATE SKIP LOCKED`), woken by LISTEN/NOTIFY with a polling
//! fallback; every lease carries a fencing token, the attempt number, so a
//! worker whose lease expired can no longer change the job. A rescuer fails
//! attempts whose lease expired; retries back off exponentially with jitter.
//!
//! # Layout
//!
//! - [`model`]: the job row, its states, and the domain error.
//! - [`queue`]: producing and inspecting jobs (enqueue, get, list, cancel, retry).
//! - [`lease`]: the worker side (fair batched fetch, heartbeat, complete, fail, release).
//! - [`rescuer`]: expired leases and retention pruning.
//! - [`events`]: the LISTEN/NOTIFY wake-up hub and in-process change signals.
//! - [`worker`]: the built-in worker runtime (`tenantry serve`, `tenantry worker`).
//! - [`periodic`]: periodic built-in jobs from configuration, once per period across nodes.
//! - [`handlers`]: the built-in job kinds (`tenantry.*`).
//! - [`convert`]: protobuf `Struct`/`Duration` conversions.
//! - [`service`]: the gRPC `JobsService`.

pub mod convert;
pub mod events;
pub mod handlers;
pub mod lease;
pub mod model;
pub mod periodic;
pub mod queue;
pub mod rescuer;
pub mod service;
pub mod worker;

pub use model::{Job, JobError, JobState};

/// The queue built-in jobs live in; external workers cannot lease from it.
pub const BUILTIN_QUEUE: &str = "tenantry";

/// The kind prefix reserved for built-in jobs.
pub const BUILTIN_PREFIX: &str = "tenantry.";

/// The queue a job goes to when none is named.
pub const DEFAULT_QUEUE: &str = "default";

/// The job machinery of one server process: the wake-up listener, the
/// JobsService handlers and, unless disabled, the built-in workers.
pub struct Runtime {
    events: events::JobEvents,
    pool: sqlx::PgPool,
    workers: Option<tokio::task::JoinHandle<()>>,
}

impl Runtime {
    /// Starts the listener and (with a config) the workers, which report the
    /// queue's depth and lag to `metrics`; both stop when `shutdown` is
    /// cancelled.
    /// `listen_pool` holds the session connection LISTEN needs (direct to
    /// PostgreSQL even when `pool` goes through a transaction pooler).
    pub fn start(
        pool: sqlx::PgPool,
        listen_pool: sqlx::PgPool,
        metrics: Option<crate::metrics::Metrics>,
        workers: Option<worker::WorkerConfig>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        let events = events::JobEvents::new();
        events.start_listener(listen_pool, shutdown.clone());
        let workers = workers.map(|config| {
            let workers = worker::Workers::new(pool.clone(), handlers::Registry::builtin(), config, events.clone())
                .with_metrics(metrics);
            tokio::spawn(workers.run(shutdown))
        });
        Runtime { events, pool, workers }
    }

    /// The JobsService handlers.
    pub fn api(&self) -> service::JobsApi {
        service::JobsApi::new(self.pool.clone(), self.events.clone())
    }

    /// Waits for the workers to finish after shutdown.
    pub async fn stopped(self) {
        if let Some(workers) = self.workers
            && let Err(error) = workers.await
        {
            tracing::error!(%error, "job workers panicked");
        }
    }
}
