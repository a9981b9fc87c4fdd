//! Periodic built-in jobs from configuration (`--purge-interval`,
//! `--scaling-interval`). Every worker process runs this scheduler; each
//! period's job carries the unique key `periodic:<period number>`, so however
//! many nodes run it, one job per period exists.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{BUILTIN_QUEUE, queue};

/// A built-in kind enqueued once per period.
#[derive(Debug, Clone, Copy)]
pub struct PeriodicJob {
    /// The kind.
    pub kind: &'static str,
    /// The period.
    pub every: Duration,
}

/// The unique key of `every`'s period containing `now_ms` (ms since the epoch).
pub fn period_key(every: Duration, now_ms: i64) -> String {
    let period = now_ms.div_euclid(every.as_millis().max(1) as i64);
    format!("periodic:{period}")
}

/// Enqueues each periodic job once per period until `stop`.
pub async fn run(pool: PgPool, jobs: Vec<PeriodicJob>, stop: CancellationToken) {
    let Some(shortest) = jobs.iter().map(|j| j.every).min() else { return };
    let mut tick = tokio::time::interval((shortest / 2).clamp(Duration::from_millis(500), Duration::from_secs(30)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_key: Vec<Option<String>> = vec![None; jobs.len()];
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (job, last) in jobs.iter().zip(last_key.iter_mut()) {
            let key = period_key(job.every, Utc::now().timestamp_millis());
            if last.as_deref() == Some(key.as_str()) {
                continue;
            }
            match enqueue_once(&pool, job, &key).await {
                Ok(()) => *last = Some(key),
                Err(error) => tracing::warn!(%error, kind = job.kind, "enqueueing a periodic job failed"),
            }
        }
    }
}

/// Enqueues `job` for the period named `key` unless that period already has it.
pub async fn enqueue_once(pool: &PgPool, job: &PeriodicJob, key: &str) -> Result<(), super::JobError> {
    let mut new = queue::NewJob::new(None, job.kind);
    new.queue = BUILTIN_QUEUE.to_owned();
    new.unique_key = Some(key.to_owned());
    // The key names the period; the window keeps it blocking after the job finished.
    new.unique_window = Some(job.every * 2);
    new.max_attempts = 3;
    new.timeout = job.every.max(Duration::from_secs(60));
    let mut tx = crate::db::begin(pool).await?;
    queue::enqueue(&mut tx, new).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instant_of_a_period_shares_its_key() {
        let every = Duration::from_secs(60);
        assert_eq!(period_key(every, 60_000), period_key(every, 119_999));
        assert_ne!(period_key(every, 119_999), period_key(every, 120_000));
    }
}
