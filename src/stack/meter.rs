//! The metering layer: counts every call's request and response body bytes
//! and, once the response body is finished (or dropped), hands the call's
//! usage to the [`Meter`]. The tenant is only known further in, so this
//! layer puts an empty [`MeterSlot`] into the request extensions and the
//! rate-limit layer fills it with the tenant and the handler's time; calls
//! that never got a tenant are not metered.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::{
    context::RequestContext,
    tenancy::TenantId,
    usage::meter::{CallUsage, Meter},
};

/// Filled by the inner layers: who the call was for and how long the
/// handler took.
#[derive(Debug, Default)]
pub struct MeterSlot {
    /// The tenant the call acted in, once resolved.
    pub tenant: OnceLock<TenantId>,
    /// Nanoseconds spent in the handler (and authorization).
    pub handler_nanos: AtomicU64,
}

/// Builds [`Metered`].
#[derive(Clone)]
pub struct MeterLayer {
    meter: Meter,
}

impl MeterLayer {
    /// A layer feeding `meter`.
    pub fn new(meter: Meter) -> Self {
        MeterLayer { meter }
    }
}

impl<S> Layer<S> for MeterLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Metered { inner, meter: self.meter.clone() }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    meter: Meter,
}

impl<S> Service<Request<Body>> for Metered<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some(method) = request.extensions().get::<RequestContext>().map(|c| metered_name(&c.method.path)) else {
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            return Box::pin(async move { inner.call(request).await });
        };
        let slot = Arc::new(MeterSlot::default());
        let request_bytes = Arc::new(AtomicU64::new(0));
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(slot.clone());
        let body = Body::new(CountingBody { inner: body, bytes: BytesSeen::Shared(request_bytes.clone()) });
        let request = Request::from_parts(parts, body);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let meter = self.meter.clone();
        Box::pin(async move {
            let response = inner.call(request).await?;
            let recording = Recording { meter, slot, method, request_bytes, response_bytes: 0 };
            Ok(response.map(|body| Body::new(CountingBody { inner: body, bytes: BytesSeen::Owned(recording) })))
        })
    }
}

/// `/tenantry.v1.UsageService/GetQuota` → `tenantry.v1.UsageService/GetQuota`.
fn metered_name(path: &str) -> Arc<str> {
    Arc::from(path.trim_start_matches('/'))
}

/// Records the call when the response body is done with.
struct Recording {
    meter: Meter,
    slot: Arc<MeterSlot>,
    method: Arc<str>,
    request_bytes: Arc<AtomicU64>,
    response_bytes: u64,
}

impl Drop for Recording {
    fn drop(&mut self) {
        let Some(tenant) = self.slot.tenant.get() else { return };
        self.meter.record(CallUsage {
            tenant: tenant.clone(),
            method: self.method.clone(),
            at: chrono::Utc::now(),
            compute: Duration::from_nanos(self.slot.handler_nanos.load(Ordering::Acquire)),
            request_bytes: self.request_bytes.load(Ordering::Acquire),
            response_bytes: self.response_bytes,
        });
    }
}

enum BytesSeen {
    /// The request side: read by the recording later.
    Shared(Arc<AtomicU64>),
    /// The response side: the recording itself, fired on drop.
    Owned(Recording),
}

/// A body that counts its data bytes.
struct CountingBody {
    inner: Body,
    bytes: BytesSeen,
}

impl http_body::Body for CountingBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            match &mut this.bytes {
                BytesSeen::Shared(counter) => {
                    counter.fetch_add(data.len() as u64, Ordering::AcqRel);
                }
                BytesSeen::Owned(recording) => recording.response_bytes += data.len() as u64,
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
