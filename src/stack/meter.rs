//! The metering layer: per-tenant usage of every call (DESIGN §5). It sits
//! right after tenant context, so it reads the call's tenant from the
//! request context itself, and before the rate limit and authorization, so
//! calls those refuse are metered too. It counts the request and response
//! body bytes and the time until the handler answered, and hands the call to
//! the [`Meter`] once the response body is finished or dropped. Calls that
//! act in no tenant are not metered.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{Request, Response};
use http_body::Frame;
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::{
    context::RequestContext,
    error::ApiError,
    tenancy::TenantId,
    usage::meter::{CallUsage, Meter},
};

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
    S: Service<Request<Body>, Response = Response<Body>, Error = ApiError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, ApiError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ApiError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metered = request
            .extensions()
            .get::<RequestContext>()
            .and_then(|c| Some((c.tenant_if_any()?.id.clone(), c.method.metered_name.clone())));
        let Some((tenant, method)) = metered else {
            return Box::pin(inner.call(request));
        };
        let request_bytes = Arc::new(AtomicU64::new(0));
        let request = request
            .map(|body| Body::new(CountingBody { inner: body, bytes: ByteCount::Shared(request_bytes.clone()) }));
        let meter = self.meter.clone();
        Box::pin(async move {
            let started = Instant::now();
            let result = inner.call(request).await;
            let recording =
                Recording { meter, tenant, method, compute: started.elapsed(), request_bytes, response_bytes: 0 };
            match result {
                Ok(response) => {
                    Ok(response.map(|body| Body::new(CountingBody { inner: body, bytes: ByteCount::Owned(recording) })))
                }
                // Refused below (rate limit, authorization): metered with no
                // response body when the recording drops here.
                Err(error) => Err(error),
            }
        })
    }
}

/// Records the call when the response body is done with.
struct Recording {
    meter: Meter,
    tenant: TenantId,
    method: Arc<str>,
    compute: Duration,
    request_bytes: Arc<AtomicU64>,
    response_bytes: u64,
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.meter.record(CallUsage {
            tenant: self.tenant.clone(),
            method: self.method.clone(),
            at: chrono::Utc::now(),
            compute: self.compute,
            request_bytes: self.request_bytes.load(Ordering::Acquire),
            response_bytes: self.response_bytes,
        });
    }
}

/// Where a body's byte count goes.
enum ByteCount {
    /// The request side: read by the recording later.
    Shared(Arc<AtomicU64>),
    /// The response side: the recording itself, fired on drop.
    Owned(Recording),
}

/// A body that counts its data bytes.
struct CountingBody {
    inner: Body,
    bytes: ByteCount,
}

impl http_body::Body for CountingBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<bytes::Bytes>, Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            match &mut this.bytes {
                ByteCount::Shared(counter) => {
                    counter.fetch_add(data.len() as u64, Ordering::AcqRel);
                }
                ByteCount::Owned(recording) => recording.response_bytes += data.len() as u64,
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
