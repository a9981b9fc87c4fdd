//! The gRPC envelope, checked before anything else looks at a call: the
//! request's HTTP method and content type (the gRPC spec's answers: 405 and
//! 415, with a status for clients that read one), the size of its metadata
//! (RESOURCE_EXHAUSTED past `--max-metadata-bytes`), and the framing of its
//! body ([`FramedBody`]): a message longer than `--max-message-bytes` is
//! RESOURCE_EXHAUSTED as soon as its length prefix arrives, and a
//! compressed flag without an encoding, a body that ends inside a message
//! or carries none are INVALID_ARGUMENT. A body that fails because the
//! client went away marks the call cancelled for observe.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Frame;
use tonic::{Code, Status, body::Body};

use super::guard::Guard;
use crate::error::ApiError;

/// See the module docs.
pub struct Protocol {
    /// Largest metadata (sum of header names and values) a call may carry.
    max_metadata_bytes: usize,
}

impl Protocol {
    /// Checks calls against these limits.
    pub fn new(max_metadata_bytes: usize) -> Self {
        Protocol { max_metadata_bytes }
    }
}

impl Guard for Protocol {
    type Pass = ();

    async fn check(&self, request: &mut Request<Body>) -> Result<(), ApiError> {
        if request.method() != Method::POST {
            return Err(ApiError::Protocol {
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: format!("gRPC calls are POST requests, not {}", request.method()),
            });
        }
        let grpc = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            v == "application/grpc" || v.starts_with("application/grpc+") || v.starts_with("application/grpc;")
        });
        if !grpc {
            return Err(ApiError::Protocol {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: "gRPC calls carry `content-type: application/grpc`".into(),
            });
        }
        let metadata: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
        if metadata > self.max_metadata_bytes {
            return Err(ApiError::exhausted(
                format!("the call's metadata ({metadata} bytes) is larger than {} bytes", self.max_metadata_bytes),
                None,
            ));
        }
        Ok(())
    }
}

/// A trailers-only gRPC answer with an HTTP status other than 200, as the
/// gRPC spec asks for requests that are not gRPC (wrong method or content type).
pub fn not_grpc(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Status::new(Code::InvalidArgument, message).into_http::<Body>();
    *response.status_mut() = status;
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

/// Where a request body is in the gRPC framing.
enum Framing {
    /// Reading a message's 5-byte prefix; `have` bytes of it so far.
    Prefix { bytes: [u8; 5], have: usize },
    /// Inside a message; this many bytes of it still to come.
    Message { remaining: usize },
}

/// A request body checked frame by frame as it streams (see the module docs).
pub struct FramedBody {
    inner: Body,
    framing: Framing,
    messages: usize,
    max_message_bytes: usize,
    /// Whether the request declared a `grpc-encoding` (compressed messages allowed).
    encoded: bool,
    /// Set when the body fails because the client went away.
    client_gone: Arc<AtomicBool>,
    failed: bool,
}

impl FramedBody {
    /// Wraps `inner`; `client_gone` is shared with whoever reports the call.
    pub fn new(inner: Body, max_message_bytes: usize, encoded: bool, client_gone: Arc<AtomicBool>) -> Self {
        FramedBody {
            inner,
            framing: Framing::Prefix { bytes: [0; 5], have: 0 },
            messages: 0,
            max_message_bytes,
            encoded,
            client_gone,
            failed: false,
        }
    }

    /// Advances the framing over `data`.
    fn advance(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            match &mut self.framing {
                Framing::Prefix { bytes, have } => {
                    let take = (5 - *have).min(data.len());
                    bytes[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    data = &data[take..];
                    if *have == 5 {
                        let length = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
                        match bytes[0] {
                            0 => {}
                            1 if self.encoded => {}
                            1 => {
                                return Err(invalid(
                                    "a message is marked compressed but the call declares no grpc-encoding",
                                ));
                            }
                            _ => return Err(invalid("a message's compressed flag is neither 0 nor 1")),
                        }
                        if length > self.max_message_bytes {
                            return Err(Status::from(ApiError::exhausted(
                                format!(
                                    "the request message ({length} bytes) is larger than the limit of {} bytes",
                                    self.max_message_bytes
                                ),
                                None,
                            )));
                        }
                        self.messages += 1;
                        self.framing = Framing::Message { remaining: length };
                    }
                }
                Framing::Message { remaining } => {
                    let take = (*remaining).min(data.len());
                    *remaining -= take;
                    data = &data[take..];
                }
            }
            if let Framing::Message { remaining: 0 } = self.framing {
                self.framing = Framing::Prefix { bytes: [0; 5], have: 0 };
            }
        }
        Ok(())
    }

    /// Whether the body may end here.
    fn at_end(&self) -> Result<(), Status> {
        match self.framing {
            Framing::Prefix { have: 0, .. } if self.messages > 0 => Ok(()),
            Framing::Prefix { have: 0, .. } => Err(invalid("the request carries no message")),
            _ => Err(invalid("the request ended inside a message")),
        }
    }
}

fn invalid(description: &str) -> Status {
    Status::from(ApiError::invalid("request", description))
}

impl http_body::Body for FramedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        let polled = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(polled) => polled,
        };
        let checked: Result<(), Status> = match polled {
            Some(Ok(frame)) => match frame.data_ref().map(|data| this.advance(data)) {
                Some(Err(status)) => Err(status),
                _ => return Poll::Ready(Some(Ok(frame))),
            },
            None => match this.at_end() {
                Ok(()) => return Poll::Ready(None),
                Err(status) => Err(status),
            },
            Some(Err(error)) => {
                // The body broke under the server: the client reset the
                // stream or the connection. Nobody will read the answer.
                this.client_gone.store(true, Ordering::Release);
                Err(Status::cancelled(format!("the client went away: {}", error.message())))
            }
        };
        this.failed = true;
        Poll::Ready(checked.err().map(Err))
    }

    fn is_end_stream(&self) -> bool {
        // A body that ends where it may not (an empty one, above all) must
        // still be polled, so its fault is reported; otherwise tonic sees the
        // end first and answers INTERNAL "Missing request message".
        self.failed || (self.inner.is_end_stream() && self.at_end().is_ok())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(max: usize, encoded: bool) -> FramedBody {
        FramedBody::new(Body::empty(), max, encoded, Arc::default())
    }

    #[test]
    fn framing_follows_messages_split_across_chunks() {
        let mut body = framed(100, false);
        let message = [0u8, 0, 0, 0, 3, b'a', b'b', b'c'];
        for chunk in message.chunks(3) {
            body.advance(chunk).unwrap();
        }
        assert_eq!(body.messages, 1);
        body.at_end().unwrap();
    }

    #[test]
    fn bad_framing_gets_the_right_code() {
        let code = |bytes: &[u8], encoded: bool| {
            let mut body = framed(4, encoded);
            body.advance(bytes).and_then(|()| body.at_end()).err().map(|s| s.code())
        };
        assert_eq!(code(&[0, 0, 0, 0, 5], false), Some(Code::ResourceExhausted));
        assert_eq!(code(&[1, 0, 0, 0, 1, 0], false), Some(Code::InvalidArgument));
        assert_eq!(code(&[1, 0, 0, 0, 1, 0], true), None);
        assert_eq!(code(&[2, 0, 0, 0, 1, 0], true), Some(Code::InvalidArgument));
        assert_eq!(code(&[0, 0, 0, 0, 3, 1], false), Some(Code::InvalidArgument));
        assert_eq!(code(&[], false), Some(Code::InvalidArgument));
        assert_eq!(code(&[0, 0], false), Some(Code::InvalidArgument));
    }
}
