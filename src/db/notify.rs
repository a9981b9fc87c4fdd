//! One mechanism for cache invalidation across nodes: a task holding a
//! LISTEN session (from the direct listen pool, never a transaction-mode
//! pooler) that reconnects with backoff and tells its [`Subscriber`] when
//! caching is safe (connected), what changed (notifications), and when it is
//! not (disconnected: notifications may have been missed).

use std::{sync::Arc, time::Duration};

use sqlx::{PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;

/// A cache that follows change notifications.
pub trait Subscriber: Send + Sync + 'static {
    /// The session is (re)established: drop everything cached; caching may start.
    fn connected(&self);
    /// A change was committed somewhere.
    fn notified(&self, channel: &str, payload: &str);
    /// The session is lost: stop trusting the cache until reconnected.
    fn disconnected(&self);
}

/// Listens on `channels` until `shutdown`, reconnecting with backoff.
/// `label` names the cache in logs.
pub fn listen<S: Subscriber>(
    listen_pool: PgPool,
    channels: &'static [&'static str],
    label: &'static str,
    subscriber: Arc<S>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
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
                        tracing::warn!(%error, cache = label, "change listener cannot connect; cache off");
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
            subscriber.connected();
            loop {
                let received = tokio::select! {
                    () = shutdown.cancelled() => return,
                    received = listener.try_recv() => received,
                };
                match received {
                    Ok(Some(notification)) => subscriber.notified(notification.channel(), notification.payload()),
                    // The connection dropped and notifications may have been missed.
                    Ok(None) | Err(_) => break,
                }
            }
            subscriber.disconnected();
        }
    });
}
