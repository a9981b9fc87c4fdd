//! Serving connections on a listener, the same way for the gRPC port and the
//! HTTP port (hyper's automatic HTTP/1.1 and HTTP/2 server), with the limits
//! a server facing real clients needs and no default gives:
//!
//! - a **connection cap**: past it, new connections are closed at once
//!   rather than left waiting in the kernel's backlog;
//! - an **HTTP/1 header-read timeout**: a client that opens a connection and
//!   sends half a request is cut off;
//! - an **idle timeout**: a connection with no call in flight (streams
//!   included) for that long is closed gracefully (HTTP/2 GOAWAY);
//! - **HTTP/2 keepalive pings**, so dead peers are found;
//! - bounds on HTTP/2 streams per connection and on header size;
//! - **coalesced writes**: the socket is offered to hyper as not supporting
//!   vectored writes (see [`Coalesced`]), so many small responses leave in
//!   one system call.
//!
//! Every request carries the client's address (tonic's `TcpConnectInfo` and
//! axum's `ConnectInfo`), as the handlers and the login throttle expect.
//! [`serve`] returns once `closing` is cancelled and every connection has
//! finished its calls.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::{BoxError, Service};

/// The limits of one listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; past it new ones are closed.
    pub max_connections: usize,
    /// How long an HTTP/1 client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no call in flight.
    pub idle_timeout: Duration,
    /// How often an HTTP/2 connection is pinged.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Largest header block a client may send (the stack enforces a smaller
    /// limit with a proper status; this one protects memory).
    pub max_header_list_bytes: u32,
}

/// Serves `service` on `listener` until `closing` is cancelled, then closes
/// every connection gracefully and returns once their calls have finished.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    closing: CancellationToken,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let local = listener.local_addr()?;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_bytes);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let (stream, remote) = tokio::select! {
            () = closing.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "connection cap reached; closing a new connection");
            drop(stream);
            continue;
        };
        stream.set_nodelay(true).ok();
        let activity = Activity::new();
        let service = Tracked { inner: service.clone(), activity: activity.clone(), local, remote };
        let (builder, closing) = (builder.clone(), closing.clone());
        connections.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(Coalesced { stream, yielded: false }),
                TowerToHyperService::new(service),
            );
            tokio::pin!(connection);
            let mut idle_check = tokio::time::interval((limits.idle_timeout / 4).max(Duration::from_millis(50)));
            let mut closing_down = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%remote, error = %error, "connection ended with an error");
                        }
                        break;
                    }
                    () = closing.cancelled(), if !closing_down => {
                        connection.as_mut().graceful_shutdown();
                        closing_down = true;
                    }
                    _ = idle_check.tick(), if !closing_down => {
                        if activity.idle_for() >= limits.idle_timeout {
                            tracing::debug!(%remote, "closing an idle connection");
                            connection.as_mut().graceful_shutdown();
                            closing_down = true;
                        }
                    }
                }
            }
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// A connection's socket, offered to hyper as one without vectored writes.
///
/// With vectored writes, h2 keeps any DATA frame of 256 bytes or more out
/// of its write buffer and writes it, chained to what is buffered, before
/// it buffers another frame: one `writev` per response for nearly every
/// unary answer (WhoAmI's is 452 bytes), so 1.4 system calls per call under
/// load. Without them it copies frames below 1 KiB into its 16 KiB buffer,
/// and the answers of the streams that finished together leave in one
/// system call (docs/performance.md, "Hot path"). The price is paid by
/// frames of 1 KiB or more: h2 still writes each on its own, now as two
/// writes (what is buffered, then the payload) where it was one `writev`.
/// Answers are mostly far smaller; a large one is many 16 KiB frames, each
/// one more system call. HTTP/1 still writes a
/// response in one call: hyper copies the body behind the head ("flatten")
/// instead of writing the two as one vectored write.
///
/// Before each write it also lets the connection's task go once to the back
/// of the runtime's queue (waking itself, so nothing waits on the socket):
/// the calls whose handlers are about to finish add their answers to the
/// same buffer, and one write carries them all.
struct Coalesced {
    stream: TcpStream,
    /// Whether this write already gave way once.
    yielded: bool,
}

impl AsyncRead for Coalesced {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalesced {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if written.is_ready() {
            self.yielded = false;
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// Calls in flight on one connection, and when the last one ended.
#[derive(Clone)]
struct Activity {
    in_flight: Arc<AtomicUsize>,
    last_end: Arc<Mutex<Instant>>,
}

impl Activity {
    fn new() -> Self {
        Activity { in_flight: Arc::default(), last_end: Arc::new(Mutex::new(Instant::now())) }
    }

    /// How long the connection has had no call in flight (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        self.last_end.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }

    fn begin(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// One call in flight; ends when dropped with its response body.
struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The service one connection calls: adds the client's address to every
/// request and counts the calls in flight until their bodies end.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Activity,
    local: SocketAddr,
    remote: SocketAddr,
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let extensions = request.extensions_mut();
        extensions.insert(tonic::transport::server::TcpConnectInfo {
            local_addr: Some(self.local),
            remote_addr: Some(self.remote),
        });
        extensions.insert(axum::extract::ConnectInfo(self.remote));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody { inner: body, _in_flight: in_flight }))
        })
    }
}

/// A response body that keeps its call counted as in flight until it ends.
struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: http_body::Body + Unpin> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::AtomicUsize,
        task::{Wake, Waker},
    };

    use tokio::io::AsyncReadExt;

    use super::*;

    /// Counts its wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_write_gives_way_once_then_goes_out_whole_and_is_not_vectored() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut coalesced = Coalesced { stream: server, yielded: false };
        assert!(!coalesced.is_write_vectored(), "h2 must copy small frames into its buffer");
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);

        for answer in [&b"first"[..], b"second"] {
            let before = wakes.0.load(Ordering::SeqCst);
            let first = Pin::new(&mut coalesced).poll_write(&mut cx, answer);
            assert!(first.is_pending(), "the first attempt gives way");
            assert_eq!(
                wakes.0.load(Ordering::SeqCst),
                before + 1,
                "and wakes its task, so nothing waits on the socket"
            );
            let second = Pin::new(&mut coalesced).poll_write(&mut cx, answer);
            assert!(matches!(second, Poll::Ready(Ok(n)) if n == answer.len()), "{second:?}");
        }
        drop(coalesced);
        let mut received = Vec::new();
        let mut client = client;
        client.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, b"firstsecond");
    }
}
