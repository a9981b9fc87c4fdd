//! Wake-ups. One LISTEN connection per process (`tenantry_jobs`, payload:
//! the queue that got work) fans out to the in-process workers and to
//! long-polling `LeaseJobs` calls; a polling fallback in every waiter covers
//! notifications lost while the connection was down. Changes made through
//! this process (completions, cancellations) are also signalled in-process,
//! so `WatchJob` streams answer promptly.

use std::{sync::Arc, time::Duration};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::queue::AVAILABLE_CHANNEL;

/// The process's job event hub; cheap to clone.
#[derive(Clone)]
pub struct JobEvents {
    available: broadcast::Sender<Arc<str>>,
    changed: broadcast::Sender<Arc<str>>,
}

impl Default for JobEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl JobEvents {
    /// A hub with no listener yet.
    pub fn new() -> Self {
        let (available, _) = broadcast::channel(1024);
        let (changed, _) = broadcast::channel(4096);
        JobEvents { available, changed }
    }

    /// Listens for `tenantry_jobs` notifications until `shutdown`,
    /// reconnecting after errors.
    pub fn start_listener(&self, pool: PgPool, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let available = self.available.clone();
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                let mut listener = match PgListener::connect_with(&pool).await {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::warn!(%error, "job wake-up listener cannot connect; polling meanwhile");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                };
                if let Err(error) = listener.listen(AVAILABLE_CHANNEL).await {
                    tracing::warn!(%error, "cannot LISTEN for jobs; polling meanwhile");
                    continue;
                }
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        message = listener.try_recv() => match message {
                            Ok(Some(notification)) => {
                                drop(available.send(Arc::from(notification.payload())));
                            }
                            // The connection dropped: wake everyone, since
                            // notifications may have been lost, then reconnect.
                            Ok(None) => {
                                drop(available.send(Arc::from("")));
                            }
                            Err(error) => {
                                tracing::warn!(%error, "job wake-up listener failed; reconnecting");
                                break;
                            }
                        },
                    }
                }
            }
        })
    }

    /// Receives the names of queues that got work (an empty name: any queue).
    pub fn subscribe_available(&self) -> broadcast::Receiver<Arc<str>> {
        self.available.subscribe()
    }

    /// Signals waiters that `queue` got work in this process.
    pub fn queue_available(&self, queue: &str) {
        drop(self.available.send(Arc::from(queue)));
    }

    /// Signals that job `id` changed.
    pub fn job_changed(&self, id: &str) {
        drop(self.changed.send(Arc::from(id)));
    }

    /// Receives the ids of jobs changed through this process.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Arc<str>> {
        self.changed.subscribe()
    }
}

/// Waits until `queue` may have work: a notification for it (or for every
/// queue), a lagged channel, `poll` elapsing, or `until`.
pub async fn wait_for_work(
    receiver: &mut broadcast::Receiver<Arc<str>>,
    queue: &str,
    poll: Duration,
    until: &CancellationToken,
) {
    let deadline = tokio::time::sleep(poll);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = until.cancelled() => return,
            () = &mut deadline => return,
            message = receiver.recv() => match message {
                Ok(name) if name.is_empty() || &*name == queue => return,
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => {
                    until.cancelled().await;
                    return;
                }
            },
        }
    }
}
