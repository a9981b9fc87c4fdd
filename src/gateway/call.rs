//! The in-process gRPC call: the gateway frames the request message as gRPC
//! would arrive on the wire, hands it to the same tower stack the gRPC
//! listener uses (no network hop), and reads the response frames and the
//! status from the trailers (or from the headers of a trailers-only answer).

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Version, header};
use http_body_util::{BodyExt, Full};
use tonic::{Status, body::Body, transport::server::TcpConnectInfo};
use tower::ServiceExt;

use crate::server::Pace;

pub use crate::stack::StackService;

/// Request headers passed to the stack as gRPC metadata under their own name.
static FORWARDED: [HeaderName; 8] = [
    header::AUTHORIZATION,
    crate::auth::X_API_KEY,
    crate::stack::tenant::TENANT_HEADER_NAME,
    crate::stack::observe::REQUEST_ID_HEADER,
    crate::stack::rescue::GRPC_TIMEOUT,
    crate::telemetry::TRACEPARENT,
    HeaderName::from_static("tracestate"),
    header::USER_AGENT,
];

/// Prefix of headers mapped to and from arbitrary gRPC metadata.
pub const METADATA_PREFIX: &str = "grpc-metadata-";

/// The answer of the stack: its initial metadata and the message stream.
pub struct Reply {
    /// Response headers (initial metadata), without the gRPC transport ones.
    pub metadata: HeaderMap,
    /// The messages and the final status.
    pub body: GrpcBody,
}

/// One step of reading a gRPC response body.
pub enum Event {
    /// One encoded message.
    Message(Bytes),
    /// The end, with the call's status and trailing metadata.
    End(Status, HeaderMap),
}

/// Calls `grpc_path` through the stack with `message` and the request's
/// credentials, tenant, deadline, trace context and `Grpc-Metadata-*`; the
/// client's address (from `connection`, the HTTP request's extensions) goes
/// where tonic puts it for gRPC calls, with the connection's [`Pace`].
pub async fn call(
    stack: &StackService,
    grpc_path: &str,
    headers: &HeaderMap,
    connection: &http::Extensions,
    message: Bytes,
    max: usize,
    span: crate::stack::observe::CallSpan,
) -> Reply {
    let mut framed = BytesMut::with_capacity(message.len() + 5);
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.extend_from_slice(&message);
    let mut request = Request::new(Body::new(Full::new(framed.freeze())));
    *request.method_mut() = Method::POST;
    *request.version_mut() = Version::HTTP_2;
    *request.uri_mut() = grpc_path.parse().unwrap_or_default();
    let metadata = request.headers_mut();
    metadata.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    metadata.insert(header::TE, HeaderValue::from_static("trailers"));
    copy_request_metadata(headers, metadata);
    let remote_addr = connection.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0);
    request.extensions_mut().insert(TcpConnectInfo { local_addr: None, remote_addr });
    if let Some(pace) = connection.get::<Pace>() {
        request.extensions_mut().insert(pace.clone());
    }
    request.extensions_mut().insert(span);

    let response = match stack.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    // A trailers-only answer carries its status in the headers.
    let early = Status::from_header_map(&parts.headers);
    let metadata = strip_transport(parts.headers);
    let body = GrpcBody { body, buffer: BytesMut::new(), early, finished: false, max };
    Reply { metadata, body }
}

/// Copies the forwarded headers and `Grpc-Metadata-*` into gRPC metadata.
pub fn copy_request_metadata(from: &HeaderMap, to: &mut HeaderMap) {
    for name in &FORWARDED {
        for value in from.get_all(name) {
            to.append(name.clone(), value.clone());
        }
    }
    for (name, value) in from {
        let Some(key) = name.as_str().strip_prefix(METADATA_PREFIX) else { continue };
        if is_transport(key) || FORWARDED.iter().any(|n| n == key) {
            continue;
        }
        if let Ok(key) = HeaderName::from_bytes(key.as_bytes()) {
            to.append(key, value.clone());
        }
    }
}

/// Headers that belong to the gRPC or HTTP transport, never to metadata.
pub fn is_transport(name: &str) -> bool {
    name.starts_with("grpc-")
        || matches!(name, "content-type" | "te" | "content-length" | "connection" | "host" | "transfer-encoding")
}

fn strip_transport(mut headers: HeaderMap) -> HeaderMap {
    let names: Vec<HeaderName> = headers.keys().filter(|n| is_transport(n.as_str())).cloned().collect();
    for name in names {
        headers.remove(name);
    }
    headers
}

/// A gRPC response body read message by message.
pub struct GrpcBody {
    body: Body,
    buffer: BytesMut,
    early: Option<Status>,
    finished: bool,
    max: usize,
}

impl GrpcBody {
    /// A body over any gRPC response body (tests feed synthetic ones).
    pub fn new(body: Body, max: usize) -> Self {
        GrpcBody { body, buffer: BytesMut::new(), early: None, finished: false, max }
    }

    /// The next message, or the end with the status.
    pub async fn next(&mut self) -> Event {
        if self.finished {
            return Event::End(Status::internal("the response already ended"), HeaderMap::new());
        }
        if let Some(status) = self.early.take() {
            self.finished = true;
            return Event::End(status, HeaderMap::new());
        }
        loop {
            match self.take_message() {
                Ok(Some(message)) => return Event::Message(message),
                Ok(None) => {}
                Err(status) => return self.end(status, HeaderMap::new()),
            }
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        let Ok(trailers) = frame.into_trailers() else { continue };
                        let status = Status::from_header_map(&trailers)
                            .unwrap_or_else(|| Status::unknown("the response ended without a status"));
                        let status = if self.buffer.is_empty() {
                            status
                        } else {
                            Status::internal("the response ended inside a message")
                        };
                        return self.end(status, strip_transport(trailers));
                    }
                },
                Some(Err(status)) => return self.end(status, HeaderMap::new()),
                None => return self.end(Status::unknown("the response ended without a status"), HeaderMap::new()),
            }
        }
    }

    fn end(&mut self, status: Status, trailers: HeaderMap) -> Event {
        self.finished = true;
        Event::End(status, trailers)
    }

    /// One whole message from the buffer, if it holds one.
    fn take_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        if self.buffer[0] != 0 {
            return Err(Status::internal("the response is compressed, which the gateway never asks for"));
        }
        let length = u32::from_be_bytes([self.buffer[1], self.buffer[2], self.buffer[3], self.buffer[4]]) as usize;
        if length > self.max {
            return Err(Status::resource_exhausted("the response message is larger than the limit"));
        }
        if self.buffer.len() < 5 + length {
            return Ok(None);
        }
        self.buffer.advance(5);
        Ok(Some(self.buffer.split_to(length).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_headers_and_grpc_metadata_become_metadata() {
        let mut from = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer t"),
            ("x-tenant-id", "acme"),
            ("grpc-timeout", "2S"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("grpc-metadata-x-client", "cli/1.0"),
            ("grpc-metadata-grpc-status", "0"),
            ("grpc-metadata-content-type", "text/plain"),
            ("cookie", "session=secret"),
            ("content-type", "application/json"),
        ] {
            from.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let mut to = HeaderMap::new();
        copy_request_metadata(&from, &mut to);
        assert_eq!(to["authorization"], "Bearer t");
        assert_eq!(to["x-tenant-id"], "acme");
        assert_eq!(to["grpc-timeout"], "2S");
        assert!(to.contains_key("traceparent"));
        assert_eq!(to["x-client"], "cli/1.0");
        // Transport headers cannot be smuggled in as metadata; cookies stay out.
        assert!(!to.contains_key("grpc-status") && !to.contains_key("content-type") && !to.contains_key("cookie"));
    }
}
