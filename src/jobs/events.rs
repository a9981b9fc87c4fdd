//! Wake-ups. The process's one LISTEN session ([`crate::db::notify::ChangeFeed`])
//! delivers `tenantry_jobs` notifications (payload: the queue that got work)
//! to [`JobEvents`], which fans them out to the in-process workers and to
//! long-polling `LeaseJobs` calls. A polling fallback in every waiter covers
//! notifications lost while the session was down; a reconnect wakes every
//! waiter at once. Changes made through this process (completions,
//! cancellations) are also signalled in-process, so `WatchJob` streams
//! answer promptly.

use std::{sync::Arc, time::Duration};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::queue::AVAILABLE_CHANNEL;
use crate::db::notify::{ChangeFeed, Subscriber};

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

    /// Follows `tenantry_jobs` on the process's change feed.
    pub fn subscribe(&self, feed: &mut ChangeFeed) {
        feed.subscribe(&[AVAILABLE_CHANNEL], Arc::new(self.clone()));
    }

    /// Receives the names of queues that got work (an empty name: any queue).
    pub fn subscribe_available(&self) -> broadcast::Receiver<Arc<str>> {
        self.available.subscribe()
    }

    /// Signals waiters that `queue` got work in this process.
    pub fn queue_available(&self, queue: &str) {
        drop(self.available.send(Arc::from(queue)));
    }

    /// Signals that job `id` changed (nothing to do, not even the id's
    /// copy, while no watch is open: the workers call this twice per job).
    pub fn job_changed(&self, id: &str) {
        if self.changed.receiver_count() > 0 {
            drop(self.changed.send(Arc::from(id)));
        }
    }

    /// Receives the ids of jobs changed through this process.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Arc<str>> {
        self.changed.subscribe()
    }
}

/// Notifications wake the waiters of their queue. Any change of the
/// session wakes every waiter (an empty queue name): notifications may have
/// been missed while it was down.
impl Subscriber for JobEvents {
    fn connected(&self) {
        drop(self.available.send(Arc::from("")));
    }

    fn notified(&self, _channel: &str, payload: &str) {
        drop(self.available.send(Arc::from(payload)));
    }

    fn disconnected(&self) {
        drop(self.available.send(Arc::from("")));
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
