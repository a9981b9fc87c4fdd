//! Traces reach a real OTLP/gRPC receiver started by the test: the server's
//! `rpc` span joins the caller's W3C trace and is named after the method.

use std::{collections::HashMap, time::Duration};

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
use crate::harness::{TestDatabase, with_metadata};

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
                    if hex::encode(&span.trace_id) == TRACE_ID {
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
    let service_name = service_name.and_then(|v| v.value);
    assert_eq!(service_name, Some(Value::StringValue("tenantry-under-test".into())));
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
