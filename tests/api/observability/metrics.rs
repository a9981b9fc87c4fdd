//! `/metrics` after a known set of calls: every counter moved by exactly the
//! calls made, label sets stay bounded, scrape-time values (pool, process,
//! readiness) are read when scraped, and both formats satisfy Prometheus's
//! own tools.

use std::collections::{BTreeSet, HashSet};

use tenantry::{policy::PolicyTable, proto::tenantry::v1::ListTenantsRequest};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;

use super::exposition::{
    PROMETHEUS_ACCEPT, Scrape, get, promtool_available, promtool_check_metrics, promtool_parse_openmetrics,
};
use crate::harness::{TestApp, with_metadata};

const LIST_TENANTS: [(&str, &str); 2] = [("service", "tenantry.v1.TenantService"), ("method", "ListTenants")];

async fn list_tenants(app: &TestApp, metadata: &[(&'static str, &str)]) -> Code {
    let request = with_metadata(ListTenantsRequest::default(), metadata);
    app.tenants().list_tenants(request).await.map_or_else(|status| status.code(), |_| Code::Ok)
}

/// A call to a path no service defines, through a raw gRPC client.
async fn call_unknown_method(app: &TestApp) -> Code {
    app.call_raw("/tenantry.v1.NoSuchService/Anything", &[]).await.code()
}

async fn scrape(app: &TestApp) -> Scrape {
    let (status, body) = app.http_get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    Scrape::parse(&body)
}

fn calls(scrape: &Scrape, service: &str, method: &str, code: &str) -> f64 {
    let labels = [("service", service), ("method", method), ("code", code)];
    scrape.value("tenantry_rpc_calls_total", &labels).unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_calls_by_method_and_code_and_auth_failures_by_reason() {
    let app = TestApp::builder().spawn().await;
    let admin = format!("Bearer {}", app.admin_key);
    assert_eq!(list_tenants(&app, &[("authorization", &admin)]).await, Code::Ok);
    assert_eq!(list_tenants(&app, &[("x-api-key", &app.admin_key)]).await, Code::Ok);
    let wrong_secret = format!("{}{}", &app.admin_key[..app.admin_key.len() - 4], "AAAA");
    assert_eq!(list_tenants(&app, &[("x-api-key", &wrong_secret)]).await, Code::Unauthenticated);
    assert_eq!(list_tenants(&app, &[]).await, Code::Unauthenticated);
    assert_eq!(list_tenants(&app, &[("authorization", "Bearer not.a.jwt")]).await, Code::Unauthenticated);
    assert_eq!(list_tenants(&app, &[("authorization", "Basic dXNlcjpwYXNz")]).await, Code::Unauthenticated);
    let health = app.health().check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(health.get_ref().status, 1, "SERVING");
    assert_eq!(call_unknown_method(&app).await, Code::Unimplemented);

    let scrape = scrape(&app).await;
    assert_eq!(calls(&scrape, "tenantry.v1.TenantService", "ListTenants", "OK"), 2.0);
    assert_eq!(calls(&scrape, "tenantry.v1.TenantService", "ListTenants", "UNAUTHENTICATED"), 4.0);
    assert_eq!(calls(&scrape, "grpc.health.v1.Health", "Check", "OK"), 1.0);
    assert_eq!(calls(&scrape, "unknown", "unknown", "UNIMPLEMENTED"), 1.0, "unknown paths collapse");
    let total: f64 = scrape.named("tenantry_rpc_calls_total").map(|s| s.value).sum();
    assert_eq!(total, 8.0, "nothing else was counted");
    assert_eq!(scrape.value("tenantry_rpc_in_flight", &[]), Some(0.0), "every started call finished");

    let failures = |reason| scrape.value("tenantry_auth_failures_total", &[("reason", reason)]);
    assert_eq!(failures("API_KEY_INVALID"), Some(1.0));
    assert_eq!(failures("CREDENTIAL_MISSING"), Some(1.0));
    assert_eq!(failures("ACCESS_TOKEN_INVALID"), Some(1.0));
    assert_eq!(failures("CREDENTIAL_MALFORMED"), Some(1.0));

    assert_eq!(scrape.value("tenantry_rpc_duration_seconds_count", &LIST_TENANTS), Some(6.0));
    let mut inf = LIST_TENANTS.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(scrape.value("tenantry_rpc_duration_seconds_bucket", &inf), Some(6.0));
    assert!(scrape.value("tenantry_rpc_duration_seconds_sum", &LIST_TENANTS).unwrap() > 0.0);
    assert_eq!(scrape.types["tenantry_rpc_duration_seconds"], "histogram");
    assert_eq!(scrape.types["tenantry_rpc_calls_total"], "counter", "the Prometheus text names counters with _total");
}

#[tokio::test]
async fn metric_labels_come_from_closed_sets_and_name_no_tenant() {
    let app = TestApp::builder().spawn().await;
    for i in 0..3 {
        let request = with_metadata(
            ListTenantsRequest::default(),
            &[("x-api-key", &app.admin_key), ("x-request-id", &format!("req-{i}"))],
        );
        app.tenants().list_tenants(request).await.unwrap();
    }
    call_unknown_method(&app).await;
    let scrape = scrape(&app).await;
    let policies = PolicyTable::embedded().unwrap();
    let known: HashSet<(String, String)> = policies.iter().map(|p| (p.service.clone(), p.method.clone())).collect();
    for sample in &scrape.samples {
        assert!(
            !sample.labels.keys().any(|k| ["tenant", "principal", "request_id", "path"].contains(&k.as_str())),
            "unbounded label in {sample:?}"
        );
        if let (Some(service), Some(method)) = (sample.labels.get("service"), sample.labels.get("method")) {
            let pair = (service.clone(), method.clone());
            assert!(known.contains(&pair) || pair == ("unknown".into(), "unknown".into()), "{sample:?}");
        }
    }
}

#[tokio::test]
async fn the_database_pool_is_reported_at_scrape_time() {
    let app = TestApp::builder().spawn().await;
    let scrape = scrape(&app).await;
    let in_use = scrape.value("tenantry_db_pool_connections", &[("state", "in_use")]).unwrap();
    let idle = scrape.value("tenantry_db_pool_connections", &[("state", "idle")]).unwrap();
    assert!(in_use + idle >= 1.0, "the pool holds a connection after start: {in_use} in use, {idle} idle");
    assert_eq!(scrape.value("tenantry_db_pool_max_connections", &[]), Some(20.0));

    let held = app.pool.acquire().await.unwrap();
    let scrape_with_held = self::scrape(&app).await;
    assert!(scrape_with_held.value("tenantry_db_pool_connections", &[("state", "in_use")]).unwrap() >= 1.0);
    drop(held);
    assert_eq!(
        scrape.value("tenantry_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0),
        "the build is labelled"
    );
}

/// Every (name, labels) of a scrape, values aside; bucket bounds compared
/// as numbers (the formats print `1` and `1.0`).
fn series(scrape: &Scrape) -> BTreeSet<String> {
    let bound = |(k, v): (&String, &String)| match (k.as_str(), v.parse::<f64>()) {
        ("le", Ok(le)) => format!("le={le}"),
        _ => format!("{k}={v}"),
    };
    scrape.samples.iter().map(|s| format!("{}{:?}", s.name, s.labels.iter().map(bound).collect::<Vec<_>>())).collect()
}

#[tokio::test]
async fn metrics_answer_prometheus_text_unless_openmetrics_is_asked_for_and_promtool_accepts_both() {
    // No built-in workers: a periodic job finishing between the scrapes
    // would add series to the second one.
    let app = TestApp::builder().configure(|serve| serve.no_workers = true).spawn().await;
    // Counters with labels, a histogram and an unknown path, so every kind of family has samples.
    assert_eq!(list_tenants(&app, &[("x-api-key", &app.admin_key)]).await, Code::Ok);
    assert_eq!(list_tenants(&app, &[]).await, Code::Unauthenticated);
    call_unknown_method(&app).await;

    let mut texts = Vec::new();
    for accept in [None, Some("text/plain"), Some("*/*"), Some("text/plain;version=0.0.4;q=0.9")] {
        let (status, content_type, body) = get(app.http_addr, "/metrics", accept).await;
        assert_eq!(status, 200);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8", "Accept {accept:?}");
        assert!(!body.contains("# EOF"), "the 0.0.4 text has no EOF marker");
        texts.push(body);
    }
    let (status, content_type, openmetrics) = get(app.http_addr, "/metrics", Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(openmetrics.ends_with("# EOF\n"));

    let (text, open) = (Scrape::parse(&texts[0]), Scrape::parse(&openmetrics));
    assert_eq!(series(&text), series(&open), "both formats carry the same series");
    assert_eq!(text.types.len(), text.help.len(), "every family has HELP and TYPE");
    assert_eq!(open.types.len(), open.help.len(), "every family has HELP and TYPE");
    assert_eq!(open.types["tenantry_rpc_calls"], "counter", "OpenMetrics names the counter family without _total");

    if promtool_available() {
        let (clean, printed) = promtool_check_metrics(&texts[0]).await;
        assert!(clean && printed.trim().is_empty(), "promtool check metrics:\n{printed}\n{}", texts[0]);
        let (parsed, printed) = promtool_parse_openmetrics(&openmetrics).await;
        assert!(parsed, "Prometheus's OpenMetrics parser:\n{printed}\n{openmetrics}");
    }
}

#[tokio::test]
async fn process_and_readiness_are_read_at_scrape_time() {
    let app = TestApp::builder().spawn().await;
    let scrape = scrape(&app).await;
    let value = |name: &str| scrape.value(name, &[]).unwrap_or_else(|| panic!("{name} is reported"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(started <= now + 1.0 && started > now - 86_400.0 * 7.0, "the test process started recently: {started}");
    assert!(value("process_cpu_seconds_total") > 0.0);
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
    assert!(value("process_open_fds") >= 3.0 && value("process_open_fds") <= value("process_max_fds"));
    assert!(value("process_threads") >= 1.0);
    assert_eq!(scrape.types["process_cpu_seconds_total"], "counter");

    assert_eq!(value("tenantry_ready"), 1.0, "PostgreSQL answers: ready");
    assert_eq!(scrape.value("tenantry_dependency_up", &[("dependency", "postgres")]), Some(1.0));
    assert_eq!(scrape.value("tenantry_dependency_up", &[("dependency", "redis")]), Some(1.0), "the harness sets Redis");
}
