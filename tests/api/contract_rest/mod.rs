//! The REST contract (issue 17), over gRPC and REST alike: update masks on
//! every Update RPC, the order of every List RPC and its signed, filter-bound
//! page tokens, zero values present in JSON, and the window in
//! `RateLimit-Policy`.

mod lists;
mod masks;
mod zero_values;

use http::Method;
use serde_json::Value;

use crate::harness::{TestApp, http_client::send};

/// One REST call with `headers`; the status and the JSON body.
pub async fn rest(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Value) {
    let body = body.map(Value::to_string);
    let response = send(app.http_addr, method, path, headers, body.as_deref()).await;
    (response.status, response.json())
}

/// The field the first `BadRequest` violation of a REST error names.
pub fn rest_violation(error: &Value) -> &str {
    error["details"]
        .as_array()
        .and_then(|details| details.iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest"))
        .and_then(|d| d["fieldViolations"][0]["field"].as_str())
        .unwrap_or_else(|| panic!("no BadRequest detail in {error}"))
}

/// The field the first `BadRequest` violation of a gRPC status names.
pub fn grpc_violation(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    details.bad_request().unwrap_or_else(|| panic!("no BadRequest in {status:?}")).field_violations[0].field.clone()
}
