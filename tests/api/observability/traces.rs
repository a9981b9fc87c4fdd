//! Traces reach a real OTLP/gRPC receiver started by the test: the server's
//! `rpc` span joins the caller's W3C trace, is named after the method and
//! carries OpenTelemetry's RPC (and, for REST, HTTP) attributes; its children
//! are the tenant transaction, each statement, and the gateway's transcoding.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
    trace::v1::{Span, span::SpanKind},
};
use tenantry::{auth::api_key::AdminKeys, proto::tenantry::v1::ListTenantsRequest};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::server_process::ServerProcess;
use crate::harness::{TestDatabase, http_client, tenants::create_tenant_via, with_metadata};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// Forwards every export it receives to the test.
struct Receiver(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.send(request.into_inner()).ok();
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Starts the receiver on a free port; returns its endpoint and the exports.
async fn start_receiver() -> (String, mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(sender)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (endpoint, receiver)
}

fn int_attribute(span: &Span, key: &str) -> Option<i64> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::IntValue(value) => Some(*value),
        _ => None,
    })
}

/// Every span of `trace_id` the receiver gets until it has been quiet for
/// a second after the server's exit (which flushes the last batch).
async fn spans_of(exports: &mut mpsc::UnboundedReceiver<ExportTraceServiceRequest>, trace_id: &str) -> Vec<Span> {
    let mut spans = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(export)) = tokio::time::timeout(Duration::from_secs(1), exports.recv()).await {
        let all = export.resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        spans.extend(all.filter(|span| hex::encode(&span.trace_id) == trace_id));
        if tokio::time::Instant::now() > deadline {
            break;
        }
    }
    spans
}

/// The spans as an indented tree with their times and main attributes.
fn tree(spans: &[Span]) -> String {
    fn walk(spans: &[Span], parent: &[u8], depth: usize, out: &mut String) {
        let mut children: Vec<&Span> = spans.iter().filter(|s| s.parent_span_id == parent).collect();
        children.sort_by_key(|s| s.start_time_unix_nano);
        for span in children {
            let ms = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) as f64 / 1e6;
            let mut keys: Vec<String> = span
                .attributes
                .iter()
                .filter(|kv| kv.key.starts_with("rpc.") || kv.key.starts_with("http.") || kv.key.starts_with("db."))
                .filter(|kv| kv.key != "db.query.text")
                .map(|kv| {
                    let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(Value::StringValue(text)) => text.clone(),
                        Some(Value::IntValue(number)) => number.to_string(),
                        other => format!("{other:?}"),
                    };
                    format!("{}={value}", kv.key)
                })
                .collect();
            keys.sort();
            let kind = format!("{:?}", span.kind()).to_lowercase();
            out.push_str(&format!("{}{} [{kind}, {ms:.2} ms] {}\n", "  ".repeat(depth), span.name, keys.join(" ")));
            walk(spans, &span.span_id, depth + 1, out);
        }
    }
    let ids: HashSet<&[u8]> = spans.iter().map(|s| s.span_id.as_slice()).collect();
    let mut out = String::new();
    let mut roots: Vec<&[u8]> =
        spans.iter().map(|s| s.parent_span_id.as_slice()).filter(|p| !ids.contains(p)).collect();
    roots.dedup();
    for root in roots {
        walk(spans, root, 0, &mut out);
    }
    out
}

fn string_attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(text) => Some(text.as_str()),
        _ => None,
    })
}

#[tokio::test]
async fn the_rpc_span_joins_the_callers_trace_and_reaches_the_otlp_receiver() {
    let (endpoint, mut exports) = start_receiver().await;
    let database = TestDatabase::create().await;
    let env = HashMap::from([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_SERVICE_NAME", "tenantry-under-test".to_owned()),
    ]);
    let server = ServerProcess::start(&database, &env).await;
    let pool = sqlx::PgPool::connect_with(database.options.clone()).await.unwrap();
    let (_, admin_key) = AdminKeys::new(pool.clone()).create("traces").await.unwrap();
    pool.close().await;

    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", server.grpc)).unwrap().connect().await.unwrap();
    let mut tenants = tenantry::proto::tenantry::v1::tenant_service_client::TenantServiceClient::new(channel);
    let request = with_metadata(
        ListTenantsRequest::default(),
        &[("x-api-key", &admin_key), ("traceparent", &traceparent), ("x-request-id", "req-traced")],
    );
    tenants.list_tenants(request).await.unwrap();
    // Shutting down flushes the batch of spans that is still pending.
    let captured = server.terminate().await;

    let mut received = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(export) = exports.recv().await {
            for resource_spans in export.resource_spans {
                let service_name = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                    .and_then(|kv| kv.value.clone());
                for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                    if hex::encode(&span.trace_id) == TRACE_ID && span.kind() == SpanKind::Server {
                        return Some((span, service_name));
                    }
                    received.push(span.name);
                }
            }
        }
        None
    })
    .await;
    let (span, service_name) = match found {
        Ok(Some(found)) => found,
        _ => panic!("no span of trace {TRACE_ID} among {received:?}; server logs:\n{}", captured.all()),
    };
    assert_eq!(span.name, "tenantry.v1.TenantService/ListTenants");
    assert_eq!(hex::encode(&span.parent_span_id), PARENT_SPAN_ID, "the caller's span is the parent");
    assert_eq!(span.kind(), SpanKind::Server);
    assert_eq!(string_attribute(&span, "method"), Some("/tenantry.v1.TenantService/ListTenants"));
    assert_eq!(string_attribute(&span, "request_id"), Some("req-traced"));
    assert_eq!(string_attribute(&span, "rpc.system"), Some("grpc"));
    assert_eq!(string_attribute(&span, "rpc.service"), Some("tenantry.v1.TenantService"));
    assert_eq!(string_attribute(&span, "rpc.method"), Some("ListTenants"));
    assert_eq!(int_attribute(&span, "rpc.grpc.status_code"), Some(0));
    for noise in ["busy_ns", "idle_ns", "code.file.path", "code.filepath", "thread.id", "level", "target"] {
        assert!(span.attributes.iter().all(|kv| kv.key != noise), "{noise} in {:?}", span.attributes);
    }
    let service_name = service_name.and_then(|v| v.value);
    assert_eq!(service_name, Some(Value::StringValue("tenantry-under-test".into())));
}

#[tokio::test]
async fn a_rest_call_exports_its_server_span_with_transaction_statement_and_transcoding_children() {
    const REST_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const REST_PARENT: &str = "b7ad6b7169203331";
    let (endpoint, mut exports) = start_receiver().await;
    let database = TestDatabase::create().await;
    let env = HashMap::from([("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]);
    let server = ServerProcess::start(&database, &env).await;
    let pool = sqlx::PgPool::connect_with(database.options.clone()).await.unwrap();
    let (_, admin_key) = AdminKeys::new(pool.clone()).create("traces").await.unwrap();
    pool.close().await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", server.grpc)).unwrap().connect().await.unwrap();
    let tenant = create_tenant_via(&channel, &admin_key, "traced", "free").await;

    let traceparent = format!("00-{REST_TRACE}-{REST_PARENT}-01");
    let headers = [
        ("x-api-key", admin_key.as_str()),
        ("x-tenant-id", "traced"),
        ("traceparent", traceparent.as_str()),
        ("x-request-id", "req-rest-traced"),
    ];
    let response = http_client::send(server.http, http::Method::GET, "/v1/users", &headers, None).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-request-id"), Some("req-rest-traced"));
    let captured = server.terminate().await;
    let spans = spans_of(&mut exports, REST_TRACE).await;
    let printed = tree(&spans);
    println!("span tree of GET /v1/users:\n{printed}");

    let server_span = spans
        .iter()
        .find(|s| s.kind() == SpanKind::Server)
        .unwrap_or_else(|| panic!("no server span in {printed}; logs:\n{}", captured.all()));
    assert_eq!(hex::encode(&server_span.parent_span_id), REST_PARENT, "{printed}");
    assert_eq!(server_span.name, "tenantry.v1.AuthService/ListUsers");
    assert_eq!(string_attribute(server_span, "rpc.service"), Some("tenantry.v1.AuthService"));
    assert_eq!(string_attribute(server_span, "rpc.method"), Some("ListUsers"));
    assert_eq!(int_attribute(server_span, "rpc.grpc.status_code"), Some(0));
    assert_eq!(string_attribute(server_span, "http.request.method"), Some("GET"));
    assert_eq!(string_attribute(server_span, "http.route"), Some("/v1/users"));
    assert_eq!(int_attribute(server_span, "http.response.status_code"), Some(200));
    assert_eq!(string_attribute(server_span, "tenant"), Some(tenant.id.as_str()));

    let children_of = |parent: &Span| -> Vec<&Span> {
        spans.iter().filter(|s| s.parent_span_id == parent.span_id).collect::<Vec<_>>()
    };
    let direct = children_of(server_span);
    let transaction = direct
        .iter()
        .find(|s| s.name == "db.transaction")
        .unwrap_or_else(|| panic!("no transaction under the server span: {printed}"));
    assert_eq!(string_attribute(transaction, "db.system"), Some("postgresql"));
    let statements = children_of(transaction);
    // A read is two round trips (docs/tenancy.md): BEGIN with the scoping,
    // then the statement; its rollback goes after the call, with the
    // connection's return to the pool.
    assert!(statements.len() >= 2, "the BEGIN with the scoping and the SELECT at least: {printed}");
    for statement in &statements {
        assert_eq!(statement.kind(), SpanKind::Client, "{printed}");
        assert_eq!(string_attribute(statement, "db.system"), Some("postgresql"), "{printed}");
        let text = string_attribute(statement, "db.query.text").unwrap_or_default();
        // Parameters stay placeholders: the tenant's schema is a bound value.
        assert!(!text.contains(&tenant.id), "a parameter value in {text}");
    }
    let operations: HashSet<&str> =
        statements.iter().filter_map(|s| string_attribute(s, "db.operation.name")).collect();
    assert!(operations.contains("BEGIN") && operations.contains("SELECT"), "{operations:?} in {printed}");
    for name in ["gateway.transcode_request", "gateway.transcode_response"] {
        assert!(direct.iter().any(|s| s.name == name), "no {name} span: {printed}");
    }

    // The call's log line joins the trace.
    let lines = captured.json_lines();
    let call = lines
        .iter()
        .find(|l| l["span"]["request_id"] == "req-rest-traced" && l["message"] == "call finished")
        .unwrap_or_else(|| panic!("no call line:\n{}", captured.all()));
    assert_eq!(call["span"]["trace_id"], REST_TRACE, "{call}");
    assert_eq!(call["span"]["span_id"], hex::encode(&server_span.span_id), "{call}");
}

#[tokio::test]
async fn an_otlp_endpoint_the_exporter_cannot_use_stops_the_start_with_its_name() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example:4317")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && stderr.contains("http://"), "{stderr}");
}
