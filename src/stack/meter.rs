//! Metering: per-tenant usage of every call (DESIGN §5), as a guard that
//! never refuses. It sits right after tenant context, so it reads the call's
//! tenant from the request context itself, and before the rate limit and
//! authorization, so calls those refuse are metered too. It counts the
//! request and response body bytes and the time until the handler answered,
//! and hands the call to the [`Meter`] once the response body is finished or
//! dropped. Calls that act in no tenant are not metered.

use std::{
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

use super::guard::{Guard, context};
use crate::{
    error::ApiError,
    tenancy::TenantId,
    usage::meter::{CallUsage, Meter},
};

/// See the module docs.
pub struct Metering {
    meter: Meter,
}

impl Metering {
    /// Meters calls into `meter`.
    pub fn new(meter: Meter) -> Self {
        Metering { meter }
    }
}

impl Guard for Metering {
    /// The call's recording, fired when the response body is done with, or
    /// when the call was refused below (with no response body).
    type Pass = Option<Recording>;

    async fn check(&self, request: &mut Request<Body>) -> Result<Option<Recording>, ApiError> {
        let context = context(request)?;
        let Some(tenant) = context.tenant_if_any() else { return Ok(None) };
        let recording = Recording {
            meter: self.meter.clone(),
            tenant: tenant.id.clone(),
            method: context.method.metered_name.clone(),
            started: Instant::now(),
            compute: None,
            request_bytes: Arc::new(AtomicU64::new(0)),
            response_bytes: 0,
        };
        let body = std::mem::replace(request.body_mut(), Body::empty());
        *request.body_mut() =
            Body::new(CountingBody { inner: body, bytes: ByteCount::Shared(recording.request_bytes.clone()) });
        Ok(Some(recording))
    }

    fn admitted(&self, recording: Option<Recording>, response: &mut Response<Body>, _: super::guard::Handled) {
        let Some(mut recording) = recording else { return };
        recording.compute = Some(recording.started.elapsed());
        let body = std::mem::replace(response.body_mut(), Body::empty());
        *response.body_mut() = Body::new(CountingBody { inner: body, bytes: ByteCount::Owned(recording) });
    }
}

/// One call's usage, recorded when dropped.
pub struct Recording {
    meter: Meter,
    tenant: TenantId,
    method: Arc<str>,
    started: Instant,
    /// Until the handler answered; for a refused call, until it was refused.
    compute: Option<Duration>,
    request_bytes: Arc<AtomicU64>,
    response_bytes: u64,
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.meter.record(CallUsage {
            tenant: self.tenant.clone(),
            method: self.method.clone(),
            at: chrono::Utc::now(),
            compute: self.compute.unwrap_or_else(|| self.started.elapsed()),
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
