//! One mechanism for changes announced across nodes: [`ChangeFeed`] holds one
//! LISTEN session per process (from the direct listen pool, never a
//! transaction-mode pooler), reconnects with backoff, and tells every
//! [`Subscriber`] when caching is safe (connected), what changed
//! (notifications on its channels), and when it is not (disconnected:
//! notifications may have been missed). The caches ([`crate::cache`]) and
//! the job wake-ups subscribe to it.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use sqlx::{PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;

/// Something that follows change notifications.
pub trait Subscriber: Send + Sync + 'static {
    /// The session is (re)established: drop everything cached; caching may start.
    fn connected(&self);
    /// A change was committed somewhere on one of the subscribed channels.
    fn notified(&self, channel: &str, payload: &str);
    /// The session is lost: stop trusting the cache until reconnected.
    fn disconnected(&self);
}

/// The subscribers of one process and the channels each follows.
#[derive(Default, Clone)]
pub struct ChangeFeed {
    subscribers: Vec<(&'static [&'static str], Arc<dyn Subscriber>)>,
}

impl ChangeFeed {
    /// Delivers `channels`' notifications to `subscriber` once [`Self::run`] runs.
    pub fn subscribe(&mut self, channels: &'static [&'static str], subscriber: Arc<dyn Subscriber>) {
        self.subscribers.push((channels, subscriber));
    }

    /// Listens until `shutdown`, reconnecting with backoff (100 ms up to 5 s).
    pub async fn run(self, listen_pool: PgPool, shutdown: CancellationToken) {
        let channels: BTreeSet<&'static str> =
            self.subscribers.iter().flat_map(|(channels, _)| channels.iter().copied()).collect();
        if channels.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let connect = async {
                let mut listener = PgListener::connect_with(&listen_pool).await?;
                listener.listen_all(channels.iter().copied()).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                () = shutdown.cancelled() => return,
                result = connect => match result {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::warn!(%error, "change listener cannot connect; caches are off meanwhile");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            };
            backoff = Duration::from_millis(100);
            for (_, subscriber) in &self.subscribers {
                subscriber.connected();
            }
            loop {
                let received = tokio::select! {
                    () = shutdown.cancelled() => return,
                    received = listener.try_recv() => received,
                };
                match received {
                    Ok(Some(notification)) => {
                        let channel = notification.channel();
                        for (channels, subscriber) in &self.subscribers {
                            if channels.contains(&channel) {
                                subscriber.notified(channel, notification.payload());
                            }
                        }
                    }
                    // The connection dropped and notifications may have been missed.
                    Ok(None) | Err(_) => break,
                }
            }
            tracing::warn!("change listener lost its connection; reconnecting");
            for (_, subscriber) in &self.subscribers {
                subscriber.disconnected();
            }
        }
    }
}
