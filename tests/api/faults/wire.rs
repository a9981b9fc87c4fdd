//! Raw gRPC requests through a test's HTTP/2 connection (tonic's channel is
//! hyper's HTTP/2 client underneath): any HTTP method, headers and body
//! bytes, and the answer read as its HTTP status and gRPC status (from the
//! headers of a trailers-only answer, or from the trailers).

use bytes::{BufMut, Bytes, BytesMut};
use http::{Method, Request};
use http_body_util::BodyExt;
use tonic::{Code, Status, transport::Channel};
use tower::{Service, ServiceExt};

/// What the server answered.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub http: u16,
    /// The gRPC status, if the answer carried one.
    pub status: Option<Status>,
}

impl Answer {
    /// The gRPC code, if any.
    pub fn code(&self) -> Option<Code> {
        self.status.as_ref().map(Status::code)
    }
}

/// One gRPC message frame: the compressed flag, the length, the bytes.
pub fn frame(flag: u8, message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(flag);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    framed.freeze()
}

/// A POST with `content-type: application/grpc` and `te: trailers`, plus `headers`.
pub async fn post(channel: &Channel, path: &str, headers: &[(&str, &str)], body: Bytes) -> Answer {
    let mut all = vec![("content-type", "application/grpc"), ("te", "trailers")];
    all.extend_from_slice(headers);
    send(channel, Method::POST, path, &all, body).await
}

/// Sends exactly this request on `channel` and reads the whole answer.
pub async fn send(channel: &Channel, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Answer {
    let body = tonic::body::Body::new(http_body_util::Full::new(body));
    send_body(channel, method, path, headers, body).await
}

/// [`send`] with any body (one that stalls, for disconnects).
pub async fn send_body(
    channel: &Channel,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: tonic::body::Body,
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(body).expect("a valid request");
    let mut channel = channel.clone();
    let response = channel.ready().await.expect("channel ready").call(request).await.expect("an answer");
    let http = response.status().as_u16();
    if let Some(status) = Status::from_header_map(response.headers()) {
        return Answer { http, status: Some(status) };
    }
    let status = match response.into_body().collect().await {
        Ok(collected) => collected.trailers().and_then(Status::from_header_map),
        Err(error) => Some(Status::unknown(format!("the answer's body failed: {error}"))),
    };
    Answer { http, status }
}
