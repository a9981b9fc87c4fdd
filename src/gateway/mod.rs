//! The REST/JSON gateway: grpc-gateway-style transcoding of every RPC, from
//! the `google.api.http` rules of the embedded descriptor, through the SAME
//! tower stack the gRPC listener uses, called in process. Authentication,
//! tenant context, limits, metering, deadlines and errors are therefore the
//! gRPC ones; the gateway only maps JSON and HTTP to protobuf and gRPC and
//! back. It is mounted as the fallback of the HTTP listener, so `/healthz`,
//! `/readyz` (and `/metrics`) keep priority.
//!
//! # Layout
//!
//! - this file: [`Gateway`], the request flow, and [`RestConfig`].
//! - [`template`]: path templates (`/v1/tenants/{tenant.id}:suspend`).
//! - [`routes`]: the route table read from the descriptors, with conflicts
//!   reported at start-up.
//! - [`transcode`]: JSON (body, query string, path) ⇄ protobuf messages.
//! - [`call`]: the in-process gRPC call through the stack.
//! - [`errors`]: the one JSON error shape and the HTTP status mapping.
//! - [`streaming`]: NDJSON and Server-Sent Events for server streams.
//! - [`openapi`], [`docs`]: `/openapi.json` and `/docs`; [`examples`]: the
//!   example request bodies both show.
//! - [`cors`]: the CORS policy (off by default).
//!
//! Every REST request routed here is one call with one server span, opened
//! here (so the transcoding is a child of it) and handed to the stack's
//! observe layer, with the `http.*` attributes of OpenTelemetry's HTTP server
//! conventions. Requests the gateway refuses itself (404, 405, 413, 415,
//! bad JSON, unknown fields) get the same: a request id (`x-request-id`), a
//! log line, and `tenantry_gateway_refusals_total{reason}`.

pub mod call;
pub mod cors;
pub mod docs;
pub mod errors;
pub mod examples;
pub mod openapi;
#[cfg(test)]
mod proptests;
pub mod routes;
pub mod streaming;
pub mod template;
pub mod transcode;
pub mod wire_json;

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::{body::Body, extract::Request, response::Response};
use bytes::Bytes;
use clap::Args;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use tonic::Code;
use tracing::{Instrument as _, Span};

use self::{
    call::{Event, StackService},
    cors::Cors,
    errors::{api_error_response, gateway_error, status_response},
    routes::{Lookup, Route, RouteTable},
    streaming::{Framing, stream_response},
    template::Captures,
};
use crate::{
    config::ConfigError,
    context::RequestId,
    error::ApiError,
    metrics::{GatewayRefusal, Metrics},
    policy::PolicyTable,
    stack::observe::{self, CallSpan, REQUEST_ID_HEADER},
    telemetry::child_span,
};

pub use self::routes::RouteError;

/// REST gateway settings (flags with env fallbacks).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "REST gateway")]
pub struct RestConfig {
    /// Origins allowed to call the REST API from browsers (CORS), comma-separated, or `*`. Empty: CORS off.
    #[arg(long = "cors-allowed-origins", env = "TENANTRY_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,
    /// Ignore unknown JSON fields and query parameters instead of answering 400.
    #[arg(long = "rest-allow-unknown-fields", env = "TENANTRY_REST_ALLOW_UNKNOWN_FIELDS")]
    pub allow_unknown_fields: bool,
}

impl RestConfig {
    /// Checks the settings, naming the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for origin in &self.cors_allowed_origins {
            let plain = origin == "*"
                || (origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.ends_with('/')
                    && origin.split("://").nth(1).is_some_and(|host| !host.is_empty() && !host.contains('/'));
            if !plain {
                return Err(ConfigError::Invalid {
                    setting: "--cors-allowed-origins",
                    problem: format!("`{origin}` is not an origin like https://app.example.com (or `*`)"),
                });
            }
        }
        Ok(())
    }
}

/// The gateway: routes, the stack, and the generated documents.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    routes: RouteTable,
    stack: StackService,
    cors: Cors,
    deny_unknown_fields: bool,
    max_body_bytes: usize,
    openapi: Bytes,
    docs: Bytes,
    /// Counts the requests the gateway refuses itself.
    metrics: Metrics,
}

impl Gateway {
    /// A gateway over `stack` (the layered gRPC routes).
    pub fn new(
        routes: RouteTable,
        policies: &PolicyTable,
        stack: StackService,
        config: &RestConfig,
        max_body_bytes: usize,
        metrics: Metrics,
    ) -> Gateway {
        let spec = openapi::document(&routes, policies);
        let docs = Bytes::from(docs::render(&spec));
        let openapi = Bytes::from(serde_json::to_vec(&spec).unwrap_or_default());
        Gateway {
            inner: Arc::new(Inner {
                routes,
                stack,
                cors: Cors::new(config.cors_allowed_origins.clone()),
                deny_unknown_fields: !config.allow_unknown_fields,
                max_body_bytes,
                openapi,
                docs,
                metrics,
            }),
        }
    }

    /// Handles one HTTP request.
    pub async fn handle(&self, request: Request) -> Response {
        let cors = &self.inner.cors;
        if let Some(preflight) = cors.preflight(request.method(), request.headers()) {
            return preflight;
        }
        let origin = cors.allow(request.headers());
        let mut response = self.dispatch(request).await;
        cors.decorate(origin, &mut response);
        response
    }

    async fn dispatch(&self, request: Request) -> Response {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        if parts.method == Method::GET {
            match path.as_str() {
                "/openapi.json" => return document(&self.inner.openapi, "application/json"),
                "/docs" => return document(&self.inner.docs, "text/html; charset=utf-8"),
                _ => {}
            }
        }
        let started = Instant::now();
        let request_id = parts
            .headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(RequestId::from_header)
            .unwrap_or_else(RequestId::generate);
        // The stack reads the same id from the forwarded header.
        let request_id_value = HeaderValue::from_str(request_id.as_str()).ok();
        if let Some(value) = &request_id_value {
            parts.headers.insert(REQUEST_ID_HEADER, value.clone());
        }
        let lookup = self.inner.routes.lookup(&parts.method, &path);
        let route = match &lookup {
            Lookup::Found(route, _) => Some(Arc::clone(route)),
            _ => None,
        };
        let grpc_path = route.as_ref().map(|r| r.grpc_path.as_str());
        let span = observe::server_span(&request_id, grpc_path, grpc_path.unwrap_or(&path));
        span.record("http.request.method", parts.method.as_str());
        match &route {
            Some(route) => span.record("http.route", route.template.source.as_str()),
            // No route: named after the HTTP method alone (HTTP conventions).
            None => span.record("otel.name", parts.method.as_str()),
        };
        observe::set_parent(&span, &parts.headers);
        let routed = self.routed(lookup, parts, body, &path, span.clone());
        let (mut response, refusal) = routed.instrument(span.clone()).await;
        let status = response.status();
        span.record("http.response.status_code", i64::from(status.as_u16()));
        if let Some(refusal) = refusal {
            self.inner.metrics.record_gateway_refusal(refusal);
            let _entered = span.enter();
            tracing::info!(
                http_status = status.as_u16(),
                reason = refusal.as_str(),
                latency_ms = observe::latency_ms(started.elapsed()),
                "request refused by the gateway"
            );
        }
        if let Some(value) = request_id_value {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        response
    }

    /// Answers a request once its route is looked up: the response, and
    /// why the gateway refused it if it did so itself.
    async fn routed(
        &self,
        lookup: Lookup<'_>,
        parts: http::request::Parts,
        body: Body,
        path: &str,
        span: Span,
    ) -> (Response, Option<GatewayRefusal>) {
        let (route, captures) = match lookup {
            Lookup::Found(route, captures) => (route.clone(), captures),
            Lookup::WrongMethod(allowed) => {
                let mut response = gateway_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    Code::Unimplemented,
                    format!("{} is not allowed on {path}", parts.method),
                );
                let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
                if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                    response.headers_mut().insert(header::ALLOW, value);
                }
                return (response, Some(GatewayRefusal::MethodNotAllowed));
            }
            Lookup::NotFound => {
                let response = gateway_error(StatusCode::NOT_FOUND, Code::NotFound, format!("no route for {path}"));
                return (response, Some(GatewayRefusal::NoRoute));
            }
        };
        let mut pretty = false;
        let query: Vec<(String, String)> = form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .filter(|(key, _)| {
                let is_pretty = key == "pretty";
                pretty |= is_pretty;
                !is_pretty
            })
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let body = match self.read_body(&parts.headers, body).await {
            Ok(body) => body,
            Err((response, refusal)) => return (*response, Some(refusal)),
        };
        let connection = &parts.extensions;
        let request = Incoming { headers: &parts.headers, connection, query: &query, body: &body, pretty, span };
        self.call(&route, &captures, request).await
    }

    /// The body, within the size limit and in JSON.
    async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, (Box<Response>, GatewayRefusal)> {
        let limit = self.inner.max_body_bytes;
        let too_large = || {
            let response = gateway_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::ResourceExhausted,
                format!("the request body is larger than {limit} bytes"),
            );
            (Box::new(response), GatewayRefusal::BodyTooLarge)
        };
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
            Err(_) => {
                let response =
                    gateway_error(StatusCode::BAD_REQUEST, Code::InvalidArgument, "the request body could not be read");
                return Err((Box::new(response), GatewayRefusal::UnreadableBody));
            }
        };
        if !bytes.is_empty() && !is_json(headers) {
            let response = gateway_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::InvalidArgument,
                "request bodies must be JSON: send `content-type: application/json`",
            );
            return Err((Box::new(response), GatewayRefusal::UnsupportedMediaType));
        }
        Ok(bytes)
    }

    /// Transcodes, calls the stack, and transcodes the answer.
    async fn call(
        &self,
        route: &Route,
        captures: &Captures,
        request: Incoming<'_>,
    ) -> (Response, Option<GatewayRefusal>) {
        let Incoming { headers, connection, query, body, pretty, span } = request;
        let transcoding = || child_span!("gateway.transcode_request", otel.kind = "internal");
        let deny = self.inner.deny_unknown_fields;
        let message = match transcoding().in_scope(|| transcode::request_message(route, captures, query, body, deny)) {
            Ok(message) => message,
            Err(error) => {
                let refusal = refusal_of(&error);
                return (api_error_response(error, pretty), Some(refusal));
            }
        };
        let encoded = Bytes::from(prost::Message::encode_to_vec(&message));
        let max = self.inner.max_body_bytes;
        let reply =
            call::call(&self.inner.stack, &route.grpc_path, headers, connection, encoded, max, CallSpan(span)).await;
        let call::Reply { metadata, mut body } = reply;
        if route.rpc.is_server_streaming() {
            return (stream_response(metadata, body, route.rpc.output(), Framing::from_accept(headers)).await, None);
        }
        let (message, status, trailers) = match body.next().await {
            Event::Message(message) => match body.next().await {
                Event::End(status, trailers) => (Some(message), status, trailers),
                Event::Message(_) => (None, tonic::Status::internal("a unary call answered twice"), HeaderMap::new()),
            },
            Event::End(status, trailers) => (None, status, trailers),
        };
        let mut all = metadata;
        all.extend(trailers);
        let response = match (message, status.code()) {
            (Some(message), Code::Ok) => {
                let output = route.rpc.output();
                let transcoding = child_span!("gateway.transcode_response", otel.kind = "internal");
                match transcoding.in_scope(|| transcode::response_json(output, &message, pretty, route.plain_output)) {
                    Ok(json) => {
                        let mut response = Response::new(Body::from(json));
                        response
                            .headers_mut()
                            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        errors::copy_response_metadata(&all, response.headers_mut());
                        response
                    }
                    Err(error) => api_error_response(error, pretty),
                }
            }
            (None, Code::Ok) => status_response(&tonic::Status::internal("the call answered no message"), &all, pretty),
            (_, _) => status_response(&status, &all, pretty),
        };
        (response, None)
    }
}

/// Which refusal a transcoding error is (its messages are written in
/// `transcode`): the JSON itself, a field the message lacks, or a value.
fn refusal_of(error: &ApiError) -> GatewayRefusal {
    match error {
        ApiError::InvalidArgument { description, .. } if description.starts_with("invalid JSON") => {
            GatewayRefusal::MalformedJson
        }
        ApiError::InvalidArgument { description, .. }
            if description.contains("unknown") || description.contains("unrecognized") =>
        {
            GatewayRefusal::UnknownField
        }
        _ => GatewayRefusal::InvalidParameter,
    }
}

/// What the call needs from the HTTP request, once routed.
struct Incoming<'a> {
    headers: &'a HeaderMap,
    /// The HTTP request's extensions: its connection's address and pace.
    connection: &'a http::Extensions,
    query: &'a [(String, String)],
    body: &'a [u8],
    pretty: bool,
    /// The call's server span, handed to the stack.
    span: Span,
}

/// The gateway as a service, to mount as the HTTP listener's fallback:
/// every request reaches [`Gateway::handle`] without a router of its own
/// between (the route table does the matching).
impl tower::Service<Request> for Gateway {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let gateway = self.clone();
        Box::pin(async move { Ok(gateway.handle(request).await) })
    }
}

fn document(bytes: &Bytes, content_type: &'static str) -> Response {
    let mut response = Response::new(Body::from(bytes.clone()));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).is_some_and(
        |media| {
            let media = media.trim().to_ascii_lowercase();
            media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
        },
    )
}
