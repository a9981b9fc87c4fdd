//! Server streaming over REST (`WatchJob`): newline-delimited JSON by
//! default, one message per line and no envelope; Server-Sent Events when the
//! client sends `Accept: text/event-stream` (`data: <message>` per event).
//!
//! An error before the first message is an ordinary error response (status
//! code and JSON body). An error after it cannot change the status any more:
//! the stream ends with one last line in the error shape
//! (`{"code": …, "message": …, "details": […]}`; in SSE, an `event: error`).
//! A client that disconnects drops the gRPC call, which cancels the handler.

use axum::{body::Body, response::Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prost_reflect::MessageDescriptor;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::{
    call::{Event, GrpcBody},
    errors::{copy_response_metadata, error_body, status_response},
    transcode::response_json,
};

/// How the stream is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `application/x-ndjson`.
    Ndjson,
    /// `text/event-stream`.
    Sse,
}

impl Framing {
    /// The framing a request asks for with its `Accept` header.
    pub fn from_accept(headers: &HeaderMap) -> Framing {
        let wants_sse = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().starts_with("text/event-stream")));
        if wants_sse { Framing::Sse } else { Framing::Ndjson }
    }

    fn content_type(self) -> &'static str {
        match self {
            Framing::Ndjson => "application/x-ndjson",
            Framing::Sse => "text/event-stream",
        }
    }

    /// One message as a frame.
    pub fn message(self, json: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(json.len() + 8);
        if self == Framing::Sse {
            out.extend_from_slice(b"data: ");
        }
        out.extend_from_slice(json);
        out.extend_from_slice(if self == Framing::Sse { b"\n\n" } else { b"\n" });
        Bytes::from(out)
    }

    /// The final error frame.
    pub fn error(self, status: &Status) -> Bytes {
        let json = serde_json::to_vec(&error_body(status)).unwrap_or_default();
        match self {
            Framing::Ndjson => self.message(&json),
            Framing::Sse => {
                let mut out = b"event: error\n".to_vec();
                out.extend_from_slice(&self.message(&json));
                Bytes::from(out)
            }
        }
    }
}

/// Streams the call's messages to the client in `framing`.
pub async fn stream_response(
    metadata: HeaderMap,
    mut body: GrpcBody,
    output: MessageDescriptor,
    framing: Framing,
) -> Response {
    // Wait for the first message: until then an error keeps its HTTP status.
    let first = match body.next().await {
        Event::Message(message) => Some(message),
        Event::End(status, _) if status.code() == Code::Ok => None,
        Event::End(status, trailers) => {
            let mut all = metadata.clone();
            all.extend(trailers);
            return status_response(&status, &all, false);
        }
    };
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let mut next = first.map(Event::Message);
        loop {
            let event = match next.take() {
                Some(event) => event,
                None => body.next().await,
            };
            let frame = match event {
                Event::Message(encoded) => match response_json(output.clone(), &encoded, false, false) {
                    Ok(json) => framing.message(&json),
                    Err(error) => {
                        let _ = sender.send(Ok(framing.error(&Status::from(error)))).await;
                        return;
                    }
                },
                Event::End(status, _) if status.code() == Code::Ok => return,
                Event::End(status, _) => {
                    let _ = sender.send(Ok(framing.error(&status))).await;
                    return;
                }
            };
            // The client left: dropping the body cancels the call.
            if sender.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(Body::from_stream(ReceiverStream::new(receiver)));
    *response.status_mut() = StatusCode::OK;
    copy_response_metadata(&metadata, response.headers_mut());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(framing.content_type()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use http_body_util::{BodyExt, StreamBody};
    use prost_reflect::DynamicMessage;

    use super::*;
    use crate::{error::ApiError, gateway::routes::RouteTable};

    fn job_descriptor() -> MessageDescriptor {
        let pool = RouteTable::embedded().unwrap().pool().clone();
        let watch = pool.get_service_by_name("tenantry.v1.JobsService").unwrap();
        watch.methods().find(|m| m.name() == "WatchJob").unwrap().output()
    }

    /// A synthetic gRPC response body: `messages` then `status` in trailers.
    fn grpc_body(output: &MessageDescriptor, messages: usize, status: Status) -> GrpcBody {
        let mut frames: Vec<Result<http_body::Frame<Bytes>, Status>> = Vec::new();
        for _ in 0..messages {
            let message = DynamicMessage::new(output.clone());
            let encoded = prost::Message::encode_to_vec(&message);
            let mut framed = bytes::BytesMut::new();
            framed.put_u8(0);
            framed.put_u32(encoded.len() as u32);
            framed.extend_from_slice(&encoded);
            frames.push(Ok(http_body::Frame::data(framed.freeze())));
        }
        let mut trailers = HeaderMap::new();
        status.add_header(&mut trailers).unwrap();
        frames.push(Ok(http_body::Frame::trailers(trailers)));
        let stream = tokio_stream::iter(frames);
        GrpcBody::new(tonic::body::Body::new(StreamBody::new(stream)), 1 << 20)
    }

    async fn read(response: Response) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn ndjson_has_one_message_per_line_and_a_final_error_line() {
        let output = job_descriptor();
        let status = Status::from(ApiError::Unavailable { message: "worker lost".into(), retry_after: None });
        let response = stream_response(HeaderMap::new(), grpc_body(&output, 2, status), output, Framing::Ndjson).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/x-ndjson");
        let text = read(response).await;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "{}");
        let error: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(error["code"], 14);
        assert_eq!(error["message"], "worker lost");
    }

    #[tokio::test]
    async fn sse_frames_each_message_as_an_event() {
        let output = job_descriptor();
        let response =
            stream_response(HeaderMap::new(), grpc_body(&output, 2, Status::ok("")), output, Framing::Sse).await;
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(read(response).await, "data: {}\n\ndata: {}\n\n");
    }

    #[tokio::test]
    async fn an_error_before_the_first_message_is_a_plain_error_response() {
        let output = job_descriptor();
        let status = Status::from(ApiError::NotFound { resource: "job job_1".into() });
        let response = stream_response(HeaderMap::new(), grpc_body(&output, 0, status), output, Framing::Sse).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: serde_json::Value = serde_json::from_str(&read(response).await).unwrap();
        assert_eq!(body["code"], 5);
    }

    #[test]
    fn accept_selects_sse() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
        assert_eq!(Framing::from_accept(&headers), Framing::Sse);
        assert_eq!(Framing::from_accept(&HeaderMap::new()), Framing::Ndjson);
    }
}
