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
//!   one system call;
//! - **held reads**: admission control may hold a connection whose client
//!   keeps sending calls it is told to retry later (see [`Pace`]); the
//!   server then reads nothing more from it for a while, so refusals cannot
//!   take the CPU that serves.
//!
//! Every request carries the client's address (tonic's `TcpConnectInfo` and
//! axum's `ConnectInfo`), as the handlers and the login throttle expect, and
//! its connection's [`Pace`].
//! [`serve`] returns once `closing` is cancelled and every connection has
//! finished its calls.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
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
    time::Sleep,
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

impl ConnectionLimits {
    /// The longest a connection's reads may be held: well within the time a
    /// ping may go unanswered and an HTTP/1 client may take over its
    /// headers, so holding never closes a connection.
    fn longest_hold(&self) -> Duration {
        MAX_HOLD.min(self.keepalive_timeout / 2).min(self.header_read_timeout / 2)
    }
}

/// The longest a connection's reads are ever held at once.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(2);

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
        let pace = Pace::new(limits.longest_hold());
        let service = Tracked { inner: service.clone(), activity: activity.clone(), pace: pace.clone(), local, remote };
        let (builder, closing) = (builder.clone(), closing.clone());
        connections.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(Coalesced::new(stream, pace)),
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
///
/// Reads wait while the connection's [`Pace`] holds them; writes never do,
/// so the answers of calls in flight still go out.
struct Coalesced {
    stream: TcpStream,
    /// Whether this write already gave way once.
    yielded: bool,
    pace: Pace,
    /// The timer of the current hold.
    hold: Option<Pin<Box<Sleep>>>,
}

impl Coalesced {
    fn new(stream: TcpStream, pace: Pace) -> Self {
        Coalesced { stream, yielded: false, pace, hold: None }
    }
}

impl Drop for Coalesced {
    /// A closed connection may still be queued as held; its task need not
    /// outlive it there.
    fn drop(&mut self) {
        self.pace.0.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl AsyncRead for Coalesced {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        // A hold may be extended while it runs: wait until none is left.
        while let Some(until) = self.pace.held_until() {
            let until = tokio::time::Instant::from_std(until);
            let hold = self.hold.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
            if hold.deadline() != until {
                hold.as_mut().reset(until);
            }
            if hold.as_mut().poll(cx).is_pending() {
                // Released early (admission control has free slots), or not.
                self.pace.wake_on_release(cx.waker());
                if self.pace.held_until().is_some() {
                    return Poll::Pending;
                }
            }
        }
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

/// When a connection may be read again: admission control holds the reads
/// of a connection whose client keeps sending calls faster than refusals
/// may be answered (`stack::admission`, "Holding"), one hold at most
/// `longest` (see [`ConnectionLimits::longest_hold`]). Every request of the
/// connection carries it as an extension.
///
/// Holding a connection's reads is the server's side of RetryInfo: a client
/// that ignores the delay it was told, and sends the refused call again at
/// once, is not read again for a while. Its calls in flight are still
/// answered, and TCP's flow control tells it to stop sending. A hold ends
/// early when admission control has slots to fill ([`Pace::release`]).
#[derive(Clone)]
pub struct Pace(Arc<PaceState>);

struct PaceState {
    /// Microseconds since [`PACE_EPOCH`] until which reads are held; 0: none.
    until_us: AtomicU64,
    longest: Duration,
    /// The period this connection last had a call refused in.
    refused_in: AtomicU64,
    /// Whether admission control has the connection in its queue of held ones.
    queued: AtomicBool,
    /// The reader to wake when a hold ends early.
    reader: Mutex<Option<Waker>>,
}

/// The origin of [`PaceState::until_us`].
static PACE_EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Pace {
    /// A connection read freely, whose holds last at most `longest`.
    pub fn new(longest: Duration) -> Self {
        Pace(Arc::new(PaceState {
            until_us: AtomicU64::new(0),
            longest,
            refused_in: AtomicU64::new(u64::MAX),
            queued: AtomicBool::new(false),
            reader: Mutex::new(None),
        }))
    }

    /// Holds the connection's reads for `hold` from now (at most the
    /// connection's longest hold); a longer hold already running stays.
    pub fn hold(&self, hold: Duration) {
        let until = PACE_EPOCH.elapsed() + hold.min(self.0.longest);
        let until_us = (until.as_micros() as u64).max(1);
        self.0.until_us.fetch_max(until_us, Ordering::AcqRel);
    }

    /// Notes a refusal in `period` (admission control's count): whether it
    /// is the connection's first there.
    pub fn refused_in(&self, period: u64) -> bool {
        self.0.refused_in.swap(period, Ordering::Relaxed) != period
    }

    /// Marks the connection as in admission control's queue of held
    /// connections: whether it was not already.
    pub fn enqueue(&self) -> bool {
        !self.0.queued.swap(true, Ordering::AcqRel)
    }

    /// Ends a hold early and wakes the reader: whether one was running.
    /// The connection leaves admission control's queue.
    pub fn release(&self) -> bool {
        self.0.queued.store(false, Ordering::Release);
        let until_us = self.0.until_us.swap(0, Ordering::AcqRel);
        let held = u128::from(until_us) > PACE_EPOCH.elapsed().as_micros();
        if let Some(reader) = self.0.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            reader.wake();
        }
        held
    }

    fn wake_on_release(&self, waker: &Waker) {
        let mut reader = self.0.reader.lock().unwrap_or_else(|e| e.into_inner());
        if !reader.as_ref().is_some_and(|r| r.will_wake(waker)) {
            *reader = Some(waker.clone());
        }
    }

    /// Until when reads are held, if they are.
    fn held_until(&self) -> Option<Instant> {
        let until_us = self.0.until_us.load(Ordering::Acquire);
        if until_us == 0 {
            return None;
        }
        let until = *PACE_EPOCH + Duration::from_micros(until_us);
        if until > Instant::now() {
            return Some(until);
        }
        // Over: later reads need not look at the clock (a newer hold wins).
        let _ = self.0.until_us.compare_exchange(until_us, 0, Ordering::AcqRel, Ordering::Relaxed);
        None
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
    pace: Pace,
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
        extensions.insert(self.pace.clone());
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
        let mut coalesced = Coalesced::new(server, Pace::new(MAX_HOLD));
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

    #[tokio::test]
    async fn a_held_connection_is_read_only_after_its_hold_and_answers_meanwhile() {
        use tokio::io::AsyncWriteExt;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let pace = Pace::new(Duration::from_millis(300));
        let mut coalesced = Coalesced::new(server, pace.clone());
        client.write_all(b"call").await.unwrap();

        let mut buf = [0_u8; 16];
        let n = coalesced.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"call", "a connection nobody held is read at once");

        client.write_all(b"again").await.unwrap();
        pace.hold(Duration::from_secs(60)); // capped at the connection's longest hold
        let started = Instant::now();
        let n = coalesced.read(&mut buf).await.unwrap();
        let held = started.elapsed();
        assert_eq!(&buf[..n], b"again");
        assert!(held >= Duration::from_millis(290), "read after the hold: {held:?}");
        assert!(held < Duration::from_secs(30), "the hold is capped: {held:?}");
        assert!(pace.held_until().is_none(), "the hold is over");

        pace.hold(Duration::from_millis(200));
        coalesced.write_all(b"answer").await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"answer", "a held connection still writes");

        // Released early (admission control has idle slots): read at once.
        let pace = Pace::new(Duration::from_secs(20));
        let (mut client, server) = {
            let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            (client, listener.accept().await.unwrap().0)
        };
        let mut coalesced = Coalesced::new(server, pace.clone());
        pace.hold(Duration::from_secs(20));
        client.write_all(b"early").await.unwrap();
        let started = Instant::now();
        let release = tokio::spawn({
            let pace = pace.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                pace.release()
            }
        });
        let n = coalesced.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"early");
        assert!(release.await.unwrap(), "the hold was still running when it was ended");
        assert!(started.elapsed() < Duration::from_secs(10), "read when released: {:?}", started.elapsed());
    }
}
