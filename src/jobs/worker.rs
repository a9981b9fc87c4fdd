//! The built-in worker runtime, run by `tenantry serve` (unless
//! `--no-workers`) and by `tenantry worker`. One process runs:
//!
//! - a fetch loop that leases batches from the `tenantry` queue while it has
//!   free slots, woken by NOTIFY with a polling fallback;
//! - one task per job, bounded by the job's timeout, panics caught;
//! - a completer that records completions in batches (one statement for
//!   many jobs; each fenced by its attempt);
//! - a heartbeat loop that extends every held lease at once and stops the
//!   handlers of jobs that were cancelled or whose lease was lost;
//! - the periodic scheduler ([`super::periodic`]).
//!
//! On shutdown it stops fetching, lets running jobs finish within
//! `--worker-shutdown-timeout`, then stops the rest and releases their
//! leases so another worker picks them up at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::Args;
use sqlx::PgPool;
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::{
    BUILTIN_QUEUE,
    events::{JobEvents, wait_for_work},
    handlers::{HandlerError, JobContext, Registry},
    lease::{self, FetchRequest},
    model::Job,
    periodic,
};
use crate::config::{ConfigError, parse_duration};

/// Settings of the built-in workers.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Job workers")]
pub struct WorkerConfig {
    /// Jobs one process runs at once.
    #[arg(long = "worker-concurrency", env = "TENANTRY_WORKER_CONCURRENCY", default_value_t = 100)]
    pub concurrency: usize,
    /// Lease length; heartbeats extend it every third of it.
    #[arg(long = "worker-lease", env = "TENANTRY_WORKER_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,
    /// How often an idle worker looks for work without a notification.
    #[arg(long = "worker-poll-interval", env = "TENANTRY_WORKER_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// How often expired leases are rescued.
    #[arg(long = "worker-rescue-interval", env = "TENANTRY_WORKER_RESCUE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub rescue_interval: Duration,
    /// How long shutdown waits for running jobs before releasing them.
    #[arg(long = "worker-shutdown-timeout", env = "TENANTRY_WORKER_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// How long completed jobs are kept.
    #[arg(long = "job-retention", env = "TENANTRY_JOB_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub retention_completed: Duration,
    /// How long cancelled and discarded jobs are kept.
    #[arg(long = "job-failed-retention", env = "TENANTRY_JOB_FAILED_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub retention_failed: Duration,
    /// Period of `tenantry.tenant.purge` (0 disables it).
    #[arg(long = "purge-interval", env = "TENANTRY_PURGE_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub purge_interval: Duration,
    /// Period of `tenantry.usage.rollup` (0 disables it).
    #[arg(long = "usage-rollup-interval", env = "TENANTRY_USAGE_ROLLUP_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub usage_rollup_interval: Duration,
    /// Period of `tenantry.scaling.evaluate`, which evaluates the tenants
    /// whose policy is due (0 disables autoscaling evaluation).
    #[arg(long = "scaling-interval", env = "TENANTRY_SCALING_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub scaling_interval: Duration,
    /// How long scaling decisions are kept (each tenant's newest always);
    /// pruned by `tenantry.scaling.evaluate`.
    #[arg(long = "scaling-decision-retention", env = "TENANTRY_SCALING_DECISION_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub scaling_decision_retention: Duration,
}

impl WorkerConfig {
    /// Checks the settings, naming the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, problem: &str| ConfigError::Invalid { setting, problem: problem.to_owned() };
        if !(1..=10_000).contains(&self.concurrency) {
            return Err(invalid("--worker-concurrency", "must be between 1 and 10000"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.lease) {
            return Err(invalid("--worker-lease", "must be between 1s and 1h"));
        }
        if self.poll_interval < Duration::from_millis(10) {
            return Err(invalid("--worker-poll-interval", "must be at least 10ms"));
        }
        if self.rescue_interval < Duration::from_millis(100) {
            return Err(invalid("--worker-rescue-interval", "must be at least 100ms"));
        }
        if self.scaling_decision_retention < Duration::from_secs(3600) {
            return Err(invalid(
                "--scaling-decision-retention",
                "must be at least 1h (the longest stabilization window)",
            ));
        }
        for (setting, value) in
            [("--purge-interval", self.purge_interval), ("--scaling-interval", self.scaling_interval)]
        {
            if !value.is_zero() && value < Duration::from_secs(1) {
                return Err(invalid(setting, "must be 0 (off) or at least 1s"));
            }
        }
        Ok(())
    }

    /// The periodic built-in jobs these settings enable.
    pub fn periodic_jobs(&self) -> Vec<periodic::PeriodicJob> {
        use super::handlers::{SCALING_EVALUATE, TENANT_PURGE, USAGE_ROLLUP};
        [
            (TENANT_PURGE, self.purge_interval),
            (USAGE_ROLLUP, self.usage_rollup_interval),
            (SCALING_EVALUATE, self.scaling_interval),
        ]
        .into_iter()
        .filter(|(_, every)| !every.is_zero())
        .map(|(kind, every)| periodic::PeriodicJob { kind, every })
        .collect()
    }
}

/// Jobs this process holds: id → (attempt, stop signal).
type InFlight = Arc<Mutex<HashMap<String, (i32, CancellationToken)>>>;

/// A completion waiting to be recorded.
type Done = (String, i32, serde_json::Value);

/// The built-in workers of one process.
pub struct Workers {
    pool: PgPool,
    registry: Registry,
    config: WorkerConfig,
    events: JobEvents,
    worker_id: String,
    /// Where attempts are counted by kind and outcome (none in benches).
    metrics: Option<crate::metrics::Metrics>,
}

impl Workers {
    /// Workers over `pool` running `registry`'s kinds, woken through `events`
    /// (whose listener the caller starts).
    pub fn new(pool: PgPool, registry: Registry, config: WorkerConfig, events: JobEvents) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".to_owned());
        let worker_id = format!("{host}/pid-{}/{}", std::process::id(), crate::ids::random_token(6));
        Workers { pool, registry, config, events, worker_id, metrics: None }
    }

    /// Counts attempts in `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// This process's worker id, as recorded on the jobs it leases.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Runs until `shutdown`, then drains as described in the module docs.
    pub async fn run(self, shutdown: CancellationToken) {
        let Workers { pool, registry, config, events, worker_id, metrics } = self;
        let in_flight: InFlight = Arc::default();
        let slot_freed = Arc::new(Notify::new());
        let background = CancellationToken::new();
        let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel::<Done>();

        let completer =
            tokio::spawn(completer(pool.clone(), done_rx, in_flight.clone(), slot_freed.clone(), events.clone()));
        let heartbeats = tokio::spawn(heartbeats(pool.clone(), in_flight.clone(), config.lease, background.clone()));
        let job_metrics = metrics;
        let scheduler = tokio::spawn(periodic::run(pool.clone(), config.periodic_jobs(), background.clone()));

        let kinds = registry.kinds();
        let mut tasks = JoinSet::new();
        let mut wake = events.subscribe_available();
        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let free = config.concurrency.saturating_sub(lock(&in_flight).len());
            if free == 0 {
                tokio::select! {
                    () = slot_freed.notified() => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            let limit = free.min(500);
            let request = FetchRequest {
                queue: BUILTIN_QUEUE,
                kinds: &kinds,
                tenant: None,
                limit,
                lease: config.lease,
                worker_id: &worker_id,
            };
            let jobs = match lease::fetch(&pool, &request).await {
                Ok(jobs) => jobs,
                Err(error) => {
                    tracing::warn!(%error, "fetching jobs failed; retrying after the poll interval");
                    Vec::new()
                }
            };
            let fetched = jobs.len();
            for job in jobs {
                let stop = CancellationToken::new();
                lock(&in_flight).insert(job.id.clone(), (job.attempt, stop.clone()));
                events.job_changed(&job.id);
                tasks.spawn(run_job(
                    pool.clone(),
                    registry.clone(),
                    job,
                    stop,
                    done_tx.clone(),
                    in_flight.clone(),
                    events.clone(),
                    slot_freed.clone(),
                    job_metrics.clone(),
                ));
            }
            if fetched < limit {
                tokio::select! {
                    () = wait_for_work(&mut wake, BUILTIN_QUEUE, config.poll_interval, &shutdown) => {}
                    () = slot_freed.notified() => {}
                }
            }
        }

        // Shutdown: let running jobs finish within the bound.
        let drained =
            tokio::time::timeout(config.shutdown_timeout, async { while tasks.join_next().await.is_some() {} })
                .await
                .is_ok();
        if !drained {
            tracing::warn!(
                running = tasks.len(),
                "jobs still running at shutdown; stopping them and releasing their leases"
            );
            // Abort without signalling the handlers first: a handler that saw
            // its stop token could report a failure (using up an attempt)
            // instead of having its lease released below.
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        drop(done_tx);
        drop(completer.await);
        background.cancel();
        drop(heartbeats.await);
        let leftover: Vec<(String, i32)> =
            lock(&in_flight).iter().map(|(id, (attempt, _))| (id.clone(), *attempt)).collect();
        if !leftover.is_empty() {
            match lease::release(&pool, &leftover).await {
                Ok(released) => tracing::info!(released, "released the leases of unfinished jobs"),
                Err(error) => tracing::warn!(%error, "releasing leases failed; the rescuer will recover them"),
            }
        }
        drop(scheduler.await);
        tracing::info!("job workers stopped");
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock(in_flight: &InFlight) -> std::sync::MutexGuard<'_, HashMap<String, (i32, CancellationToken)>> {
    in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs one job to a result: completion goes to the completer, failure is
/// recorded at once.
#[allow(clippy::too_many_arguments)]
async fn run_job(
    pool: PgPool,
    registry: Registry,
    job: Job,
    stop: CancellationToken,
    done: tokio::sync::mpsc::UnboundedSender<Done>,
    in_flight: InFlight,
    events: JobEvents,
    slot_freed: Arc<Notify>,
    metrics: Option<crate::metrics::Metrics>,
) {
    let (id, attempt, timeout) = (job.id.clone(), job.attempt, job.timeout());
    let (kind, started) = (job.kind.clone(), std::time::Instant::now());
    let span = crate::telemetry::job_span(&job.id, &job.kind, attempt, job.traceparent.as_deref());
    let outcome = match registry.get(&job.kind) {
        None => Err(HandlerError::discard(format!("no handler for kind {}", job.kind))),
        Some(handler) => {
            let context = JobContext { pool: pool.clone(), job, cancel: stop.clone() };
            // Its own task, so a panic becomes a failed attempt, not a lost worker.
            let mut task = tokio::spawn(tracing::Instrument::instrument(handler.run(context), span.clone()));
            // Aborted with this task too (timeout, or shutdown aborting it).
            let _abort = AbortOnDrop(task.abort_handle());
            match tokio::time::timeout(timeout, &mut task).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(join)) if join.is_panic() => Err(HandlerError::retry("the handler panicked")),
                Ok(Err(_)) => Err(HandlerError::retry("the handler was stopped")),
                Err(_) => Err(HandlerError::retry(format!("timed out after {}s", timeout.as_secs()))),
            }
        }
    };
    match outcome {
        Ok(result) => {
            let result = if result.to_string().len() > super::queue::MAX_JSON_BYTES {
                serde_json::json!({"error": "result larger than 256 KiB was dropped"})
            } else {
                result
            };
            if done.send((id.clone(), attempt, result)).is_err() {
                lock(&in_flight).remove(&id);
            }
            if let Some(metrics) = &metrics {
                metrics.record_job_attempt(&kind, "completed", started.elapsed());
            }
        }
        Err(error) => {
            let failure =
                lease::Failure { message: error.message, retry_after: error.retry_after, discard: error.discard };
            span.record("otel.status_code", "ERROR");
            match lease::fail(&pool, None, &id, attempt, &failure).await {
                Ok(failed) => {
                    if let Some(metrics) = &metrics {
                        metrics.record_job_attempt(&kind, failed.stored_state.as_str(), started.elapsed());
                    }
                }
                Err(super::model::JobError::LeaseLost(_)) => {}
                Err(error) => {
                    tracing::warn!(%error, job = %id, "recording a failed attempt failed; the rescuer will retry it")
                }
            }
            lock(&in_flight).remove(&id);
            events.job_changed(&id);
            slot_freed.notify_one();
        }
    }
}

/// Records completions in batches until the channel closes.
async fn completer(
    pool: PgPool,
    mut done: tokio::sync::mpsc::UnboundedReceiver<Done>,
    in_flight: InFlight,
    slot_freed: Arc<Notify>,
    events: JobEvents,
) {
    let mut batch = Vec::with_capacity(1000);
    while done.recv_many(&mut batch, 1000).await > 0 {
        let mut tries = 0;
        loop {
            match lease::complete_many(&pool, &batch).await {
                Ok(_) => break,
                Err(error) if tries < 5 => {
                    tries += 1;
                    tracing::warn!(%error, "recording completions failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                }
                Err(error) => {
                    tracing::error!(%error, jobs = batch.len(), "recording completions failed; the rescuer will run them again");
                    break;
                }
            }
        }
        {
            let mut held = lock(&in_flight);
            for (id, _, _) in &batch {
                held.remove(id);
            }
        }
        for (id, _, _) in &batch {
            events.job_changed(id);
        }
        slot_freed.notify_one();
        batch.clear();
    }
}

/// Extends every held lease each third of the lease; stops the handlers of
/// jobs whose cancel was requested or whose lease was lost.
async fn heartbeats(pool: PgPool, in_flight: InFlight, lease: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let held: Vec<(String, i32)> =
            lock(&in_flight).iter().map(|(id, (attempt, _))| (id.clone(), *attempt)).collect();
        if held.is_empty() {
            continue;
        }
        match lease::heartbeat_many(&pool, &held, lease).await {
            Ok(alive) => {
                let alive: HashMap<String, bool> = alive.into_iter().collect();
                let map = lock(&in_flight);
                for (id, _) in &held {
                    let keep_going = alive.get(id).is_some_and(|cancel_requested| !cancel_requested);
                    if !keep_going && let Some((_, token)) = map.get(id) {
                        token.cancel();
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "heartbeat failed; retrying next tick"),
        }
    }
}
