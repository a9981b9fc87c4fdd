//! Errors over REST: one JSON shape for every failure, the stack's and the
//! gateway's own (no route, wrong method, bad JSON, body too large, wrong
//! media type): `{"code": <gRPC code>, "message": "…", "details": [{"@type":
//! "type.googleapis.com/google.rpc.BadRequest", …}]}`, with the HTTP status
//! from the one table in [`crate::error::http_status`]. Rate-limit answers
//! also carry `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit`
//! headers, built from the stack's `x-ratelimit-*` metadata.

use axum::{body::Body, response::Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};
use tonic::{Code, Status};
use tonic_types::{ErrorDetail, StatusExt};

use super::call::{METADATA_PREFIX, is_transport};
use crate::{
    error::{ApiError, http_status},
    ratelimit::HEADER_NAMES,
};

/// The JSON body of an error.
pub fn error_body(status: &Status) -> Value {
    json!({
        "code": status.code() as i32,
        "message": status.message(),
        "details": details(status),
    })
}

/// The HTTP response for a failed call.
pub fn status_response(status: &Status, metadata: &HeaderMap, pretty: bool) -> Response {
    let mut response = json_response(http_status(status.code()), &error_body(status), pretty);
    copy_response_metadata(metadata, response.headers_mut());
    if matches!(status.code(), Code::ResourceExhausted | Code::Unavailable) {
        retry_headers(status, metadata, response.headers_mut());
    }
    response
}

/// The HTTP response for an [`ApiError`] the gateway finds itself.
pub fn api_error_response(error: ApiError, pretty: bool) -> Response {
    status_response(&Status::from(error), &HeaderMap::new(), pretty)
}

/// A gateway failure with its own HTTP status (404, 405, 413, 415).
pub fn gateway_error(http: StatusCode, code: Code, message: impl Into<String>) -> Response {
    json_response(http, &error_body(&Status::new(code, message.into())), false)
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &Value, pretty: bool) -> Response {
    let body = if pretty { serde_json::to_vec_pretty(value) } else { serde_json::to_vec(value) };
    let mut response = Response::new(Body::from(body.unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Response metadata out: `x-request-id` as is, the rest as `Grpc-Metadata-*`,
/// plus the IETF rate-limit headers when the stack reported limits.
pub fn copy_response_metadata(metadata: &HeaderMap, to: &mut HeaderMap) {
    ratelimit_headers(metadata, to);
    for (name, value) in metadata {
        if AS_IS.contains(name) {
            to.insert(name.clone(), value.clone());
            continue;
        }
        if let Some(known) = HEADER_NAMES.iter().position(|n| n == name) {
            to.append(PREFIXED[known].clone(), value.clone());
            continue;
        }
        let name = name.as_str();
        if is_transport(name) {
            continue;
        }
        if let Ok(prefixed) = HeaderName::from_bytes(format!("{METADATA_PREFIX}{name}").as_bytes()) {
            to.append(prefixed, value.clone());
        }
    }
}

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Metadata passed on under its own name.
static AS_IS: [HeaderName; 4] =
    [crate::stack::observe::REQUEST_ID_HEADER, header::RETRY_AFTER, RATELIMIT, RATELIMIT_POLICY];

/// The `Grpc-Metadata-*` names of the stack's rate-limit metadata, in
/// [`HEADER_NAMES`]' order, built once.
static PREFIXED: [HeaderName; 4] = [
    HeaderName::from_static("grpc-metadata-x-ratelimit-limit"),
    HeaderName::from_static("grpc-metadata-x-ratelimit-remaining"),
    HeaderName::from_static("grpc-metadata-x-ratelimit-reset"),
    HeaderName::from_static("grpc-metadata-x-ratelimit-window"),
];

/// `Retry-After` in seconds: the stack's `retry-after` metadata, else `RetryInfo`.
fn retry_headers(status: &Status, metadata: &HeaderMap, to: &mut HeaderMap) {
    let retry_after = metadata.get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned).or_else(|| {
        let delay = status.get_details_retry_info()?.retry_delay?;
        Some(delay.as_secs_f64().ceil().max(1.0).to_string())
    });
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        to.insert(header::RETRY_AFTER, value);
    }
}

/// The IETF `RateLimit-Policy` / `RateLimit` headers, on every response that
/// carries the stack's rate-limit metadata.
fn ratelimit_headers(metadata: &HeaderMap, to: &mut HeaderMap) {
    let text = |name: &HeaderName| metadata.get(name).and_then(|v| v.to_str().ok());
    let [limit, remaining, reset, window] = &HEADER_NAMES;
    let policy = text(&RATELIMIT_POLICY).map(str::to_owned).or_else(|| {
        let limit = text(limit)?;
        Some(match text(window) {
            Some(window) => format!("\"default\";q={limit};w={window}"),
            None => format!("\"default\";q={limit}"),
        })
    });
    let current = text(&RATELIMIT).map(str::to_owned).or_else(|| {
        let remaining = text(remaining).unwrap_or("0");
        let reset = text(reset)?;
        Some(format!("\"default\";r={remaining};t={reset}"))
    });
    for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, current)] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).ok()) {
            to.insert(name, value);
        }
    }
}

/// The status's rich details as JSON objects with their `@type`.
fn details(status: &Status) -> Vec<Value> {
    const PREFIX: &str = "type.googleapis.com/google.rpc.";
    let typed = |name: &str, fields: Value| {
        let mut object = Map::new();
        object.insert("@type".into(), Value::String(format!("{PREFIX}{name}")));
        if let Value::Object(fields) = fields {
            object.extend(fields);
        }
        Value::Object(object)
    };
    status
        .get_error_details_vec()
        .into_iter()
        .filter_map(|detail| {
            Some(match detail {
                ErrorDetail::BadRequest(b) => typed(
                    "BadRequest",
                    json!({"fieldViolations": b.field_violations.iter()
                        .map(|v| json!({"field": v.field, "description": v.description}))
                        .collect::<Vec<_>>()}),
                ),
                ErrorDetail::ErrorInfo(i) => {
                    typed("ErrorInfo", json!({"reason": i.reason, "domain": i.domain, "metadata": i.metadata}))
                }
                ErrorDetail::RetryInfo(r) => {
                    let delay = r.retry_delay.map(|d| format!("{}s", trim_seconds(d.as_secs_f64())));
                    typed("RetryInfo", json!({"retryDelay": delay}))
                }
                ErrorDetail::QuotaFailure(q) => typed(
                    "QuotaFailure",
                    json!({"violations": q.violations.iter()
                        .map(|v| json!({"subject": v.subject, "description": v.description}))
                        .collect::<Vec<_>>()}),
                ),
                ErrorDetail::PreconditionFailure(p) => typed(
                    "PreconditionFailure",
                    json!({"violations": p.violations.iter()
                        .map(|v| json!({"type": v.r#type, "subject": v.subject, "description": v.description}))
                        .collect::<Vec<_>>()}),
                ),
                ErrorDetail::ResourceInfo(r) => typed(
                    "ResourceInfo",
                    json!({"resourceType": r.resource_type, "resourceName": r.resource_name,
                           "owner": r.owner, "description": r.description}),
                ),
                ErrorDetail::RequestInfo(r) => {
                    typed("RequestInfo", json!({"requestId": r.request_id, "servingData": r.serving_data}))
                }
                ErrorDetail::Help(h) => typed(
                    "Help",
                    json!({"links": h.links.iter()
                        .map(|l| json!({"description": l.description, "url": l.url}))
                        .collect::<Vec<_>>()}),
                ),
                ErrorDetail::LocalizedMessage(m) => {
                    typed("LocalizedMessage", json!({"locale": m.locale, "message": m.message}))
                }
                // Debug info is for the server's logs, never for clients.
                ErrorDetail::DebugInfo(_) => return None,
                _ => return None,
            })
        })
        .collect()
}

fn trim_seconds(seconds: f64) -> String {
    let text = format!("{seconds:.9}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bad_request_details_keep_the_field() {
        let status = Status::from(ApiError::invalid("tenant.slug", "too short"));
        let body = error_body(&status);
        assert_eq!(body["code"], 3);
        assert_eq!(body["details"][0]["@type"], "type.googleapis.com/google.rpc.BadRequest");
        assert_eq!(body["details"][0]["fieldViolations"][0]["field"], "tenant.slug");
    }

    #[test]
    fn rate_limits_become_429_with_retry_after_and_ietf_headers() {
        let status = Status::from(ApiError::exhausted("slow down", Some(Duration::from_millis(1500))));
        let mut metadata = HeaderMap::new();
        metadata.insert("x-ratelimit-limit", HeaderValue::from_static("10"));
        metadata.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        metadata.insert("x-ratelimit-reset", HeaderValue::from_static("2"));
        metadata.insert("x-ratelimit-window", HeaderValue::from_static("5"));
        let response = status_response(&status, &metadata, false);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(response.headers()["ratelimit-policy"], "\"default\";q=10;w=5");
        assert_eq!(response.headers()["ratelimit"], "\"default\";r=0;t=2");
        assert_eq!(response.headers()["grpc-metadata-x-ratelimit-limit"], "10");
    }

    #[test]
    fn every_grpc_code_maps_to_its_http_status_with_the_code_in_the_body() {
        let table = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, http) in table {
            let response = status_response(&Status::new(code, "m"), &HeaderMap::new(), false);
            assert_eq!(response.status().as_u16(), http, "{code:?}");
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(error_body(&Status::new(code, "m"))["code"], code as i32);
        }
    }

    #[test]
    fn response_metadata_goes_out_prefixed_and_transport_headers_stay_in() {
        let mut metadata = HeaderMap::new();
        metadata.insert("x-request-id", HeaderValue::from_static("req_1"));
        metadata.insert("x-shard", HeaderValue::from_static("7"));
        metadata.insert("grpc-status", HeaderValue::from_static("0"));
        let mut out = HeaderMap::new();
        copy_response_metadata(&metadata, &mut out);
        assert_eq!(out["x-request-id"], "req_1");
        assert_eq!(out["grpc-metadata-x-shard"], "7");
        assert!(!out.contains_key("grpc-status") && !out.contains_key("grpc-metadata-grpc-status"));
    }

    #[test]
    fn retry_delays_print_as_duration_strings() {
        assert_eq!(trim_seconds(1.5), "1.5");
        assert_eq!(trim_seconds(2.0), "2");
    }
}
