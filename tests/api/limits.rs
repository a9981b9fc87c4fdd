//! Limits at the edge: oversized messages, the request id round trip, and
//! a graceful stop while clients are connected.

use tenantry::proto::tenantry::v1::ListTenantsRequest;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;

use crate::harness::{TestApp, with_metadata};

#[tokio::test]
async fn a_message_over_four_mib_is_refused_and_the_server_keeps_serving() {
    let app = TestApp::builder().spawn().await;
    let huge = HealthCheckRequest { service: "x".repeat(5 * 1024 * 1024) };
    let status = app.health().check(huge).await.unwrap_err();
    // The gRPC spec's code for a message over the receiver's limit.
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let ok = app.health().check(HealthCheckRequest { service: String::new() }).await;
    assert!(ok.is_ok(), "{ok:?}");
}

#[tokio::test]
async fn the_request_id_is_echoed_or_generated() {
    let app = TestApp::builder().spawn().await;
    let request = with_metadata(ListTenantsRequest::default(), &[("x-request-id", "trace-me-123")]);
    let status = app.tenants().list_tenants(request).await.unwrap_err();
    assert_eq!(status.metadata().get("x-request-id").unwrap(), "trace-me-123");
    let response = app.tenants().list_tenants(app.as_admin(ListTenantsRequest::default())).await.unwrap();
    assert!(response.metadata().get("x-request-id").is_some(), "successful calls carry it too");

    let hostile = with_metadata(ListTenantsRequest::default(), &[("x-request-id", "bad id\twith spaces")]);
    let status = app.tenants().list_tenants(hostile).await.unwrap_err();
    let generated = status.metadata().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert!(generated.starts_with("req_"), "{generated}");
}

#[tokio::test]
async fn the_server_stops_cleanly_with_a_connected_client() {
    let app = TestApp::builder().spawn().await;
    app.health().check(HealthCheckRequest { service: String::new() }).await.unwrap();
    let started = std::time::Instant::now();
    app.stop().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "drain is bounded");
}

/// docs/tenancy.md's PgBouncer block is what the PgBouncer tests run: the
/// harness builds its configuration from it, replacing only addresses, auth
/// and paths, so every pooling setting reaches the real PgBouncer verbatim.
#[test]
fn the_documented_pgbouncer_configuration_is_the_one_the_tests_run() {
    use crate::harness::pgbouncer::{documented_block, documented_config};
    let documented = documented_block();
    for line in ["pool_mode = transaction", "ignore_startup_parameters = extra_float_digits,options"] {
        assert!(documented.lines().any(|l| l.trim() == line), "docs/tenancy.md lacks `{line}`");
    }
    let run = documented_config("* = host=127.0.0.1 port=5432", &[("listen_port", "6999".to_owned())]);
    for line in documented.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let replaced = line.starts_with("listen_port") || line.starts_with("tenantry =");
        assert_eq!(run.lines().any(|l| l == line), !replaced, "`{line}` in the configuration run:\n{run}");
    }
    assert!(run.contains("listen_port = 6999\n") && run.contains("* = host=127.0.0.1 port=5432\n"), "{run}");
}
