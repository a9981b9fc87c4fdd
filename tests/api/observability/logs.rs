//! The logs of a real `tenantry serve`: one JSON line per call with request
//! id, method, tenant, principal, code and latency, and no credential or
//! password anywhere in what the process writes, whatever callers send.

use std::collections::HashMap;

use tenantry::{
    auth::api_key::AdminKeys,
    proto::tenantry::v1::{
        GetQuotaRequest, ListTenantsRequest, LoginRequest, RefreshTokenRequest, auth_service_client::AuthServiceClient,
        tenant_service_client::TenantServiceClient, usage_service_client::UsageServiceClient,
    },
    tenancy::TenantId,
};
use tonic::transport::Channel;

use super::server_process::ServerProcess;
use crate::harness::{TestDatabase, http_client, with_metadata};

const PASSWORD: &str = "correct-horse-battery-staple-9f3k";
const REFRESH_TOKEN: &str = "rt_Zk3vQ9mW2xLp7sT1nB8cY4dR6fH0jA5e";
const JWT: &str = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1c3JfMSJ9.c2lnbmF0dXJlLXNlY3JldA";
const BASIC: &str = "dXNlcjpodW50ZXIy"; // user:hunter2

#[tokio::test]
async fn call_logs_carry_the_call_and_never_a_secret() {
    let database = TestDatabase::create().await;
    let env = HashMap::from([("RUST_LOG", "info,tenantry=trace".to_owned())]);
    let server = ServerProcess::start(&database, &env).await;
    let pool = sqlx::PgPool::connect_with(database.options.clone()).await.unwrap();
    let (key_id, admin_key) = AdminKeys::new(pool.clone()).create("logs").await.unwrap();
    let tenant = TenantId::generate();
    sqlx::query("INSERT INTO platform.tenants (id, slug, display_name, plan_id) VALUES ($1, 'acme', 'Acme', 'free')")
        .bind(tenant.as_str())
        .execute(&pool)
        .await
        .unwrap();
    let secret_part = admin_key.rsplit('_').next().unwrap().to_owned();
    let wrong_secret = format!("{}{}", &admin_key[..admin_key.len() - 6], "wrong0");
    let bogus_key = "tnty_aaaaaaaaaaaaaaaa_bogusbogusbogusbogusbogusbogusbogusbogus123";

    let channel = Channel::from_shared(format!("http://{}", server.grpc)).unwrap().connect().await.unwrap();
    let mut usage = UsageServiceClient::new(channel.clone());
    let mut tenants = TenantServiceClient::new(channel.clone());
    let mut auth = AuthServiceClient::new(channel);

    // The call whose line is checked field by field.
    let traced = with_metadata(
        GetQuotaRequest::default(),
        &[("x-api-key", &admin_key), ("x-tenant-id", "acme"), ("x-request-id", "req-logs-1")],
    );
    usage.get_quota(traced).await.unwrap();
    let bearer = format!("Bearer {admin_key}");
    tenants.list_tenants(with_metadata(ListTenantsRequest::default(), &[("authorization", &bearer)])).await.ok();
    for key in [wrong_secret.as_str(), bogus_key] {
        tenants.list_tenants(with_metadata(ListTenantsRequest::default(), &[("x-api-key", key)])).await.ok();
    }
    let jwt = format!("Bearer {JWT}");
    tenants.list_tenants(with_metadata(ListTenantsRequest::default(), &[("authorization", &jwt)])).await.ok();
    let basic = format!("Basic {BASIC}");
    tenants.list_tenants(with_metadata(ListTenantsRequest::default(), &[("authorization", &basic)])).await.ok();
    let login = LoginRequest { tenant: "acme".into(), email: "ada@example.com".into(), password: PASSWORD.into() };
    auth.login(login).await.ok();
    auth.refresh_token(RefreshTokenRequest { refresh_token: REFRESH_TOKEN.into() }).await.ok();
    let refresh_as_header = with_metadata(RefreshTokenRequest::default(), &[("authorization", &jwt)]);
    auth.refresh_token(refresh_as_header).await.ok();

    let captured = server.terminate().await;
    let everything = captured.all();
    for secret in [admin_key.as_str(), &secret_part, &wrong_secret, bogus_key, JWT, BASIC, PASSWORD, REFRESH_TOKEN] {
        assert!(!everything.contains(secret), "{secret} appears in the output:\n{everything}");
    }
    assert!(!everything.contains(&wrong_secret[wrong_secret.len() - 20..]));

    let lines = captured.json_lines();
    assert!(lines.len() > 5, "logs are JSON lines: {everything}");
    let call = lines
        .iter()
        .find(|l| l["span"]["request_id"] == "req-logs-1" && l["code"].is_string())
        .unwrap_or_else(|| panic!("no call line for req-logs-1:\n{everything}"));
    assert_eq!(call["span"]["method"], "/tenantry.v1.UsageService/GetQuota", "{call}");
    assert_eq!(call["span"]["tenant"], tenant.as_str(), "{call}");
    assert_eq!(call["span"]["principal"], key_id.as_str(), "{call}");
    assert_eq!(call["code"], "OK", "{call}");
    assert!(call["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{call}");
    assert!(call["timestamp"].is_string() && call["level"] == "INFO", "{call}");

    let list_tenants = |l: &&serde_json::Value| l["span"]["method"] == "/tenantry.v1.TenantService/ListTenants";
    let finished = lines
        .iter()
        .filter(list_tenants)
        .find(|l| l["message"] == "call finished")
        .unwrap_or_else(|| panic!("the successful ListTenants is logged:\n{everything}"));
    assert_eq!(finished["code"], "OK", "{finished}");
    assert_eq!(finished["span"]["principal"], key_id.as_str(), "{finished}");

    let refused: Vec<_> = lines.iter().filter(list_tenants).filter(|l| l["code"] == "UNAUTHENTICATED").collect();
    assert_eq!(refused.len(), 4, "every refused ListTenants is logged once: {everything}");
    for line in refused {
        assert!(line["span"]["request_id"].as_str().is_some_and(|id| id.starts_with("req_")), "{line}");
        assert!(line["span"].get("principal").is_none(), "no principal for a refused credential: {line}");
    }
    pool.close().await;
}

#[tokio::test]
async fn serve_dev_logs_never_repeat_the_admin_key_it_prints() {
    use std::{os::unix::fs::PermissionsExt, process::Stdio, time::Duration};

    use tokio::{
        io::{AsyncBufReadExt, AsyncReadExt, BufReader},
        process::Command,
    };

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--dev", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("RUST_LOG", "info,tenantry=trace")
        .env("TENANTRY_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let logs = tokio::spawn(async move {
        let mut text = String::new();
        stderr.read_to_string(&mut text).await.unwrap();
        text
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut grpc, mut key) = (None, None);
    let banner = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let line = line.trim();
            if let Some(addr) = line.strip_prefix("gRPC: ") {
                grpc = Some(addr.to_owned());
            } else if line.starts_with("tnty_") {
                key = Some(line.to_owned());
            } else if line.starts_with("curl ") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), banner).await.expect("the banner is printed");
    let (grpc, key) = (grpc.expect("gRPC address"), key.expect("admin key"));
    let mut tenants = TenantServiceClient::connect(format!("http://{grpc}")).await.unwrap();
    let bearer = format!("Bearer {key}");
    tenants.list_tenants(with_metadata(ListTenantsRequest::default(), &[("authorization", &bearer)])).await.ok();
    tenants.list_tenants(with_metadata(ListTenantsRequest::default(), &[("x-api-key", &key)])).await.ok();

    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    let logs = logs.await.unwrap();
    let secret = key.rsplit('_').next().unwrap();
    assert!(logs.contains("call refused") || logs.contains("call finished"), "the calls were logged:\n{logs}");
    assert!(!logs.contains(&key) && !logs.contains(secret), "the admin key leaked into the logs:\n{logs}");
}

#[tokio::test]
async fn gateway_refusals_are_logged_counted_and_answer_a_request_id() {
    let database = TestDatabase::create().await;
    let server = ServerProcess::start(&database, &HashMap::new()).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let http = server.http;
    let send = |method: http::Method, path: &'static str, headers: Vec<(&'static str, &'static str)>, body| async move {
        http_client::send(http, method, path, &headers, body).await
    };
    let no_route = send(
        http::Method::GET,
        "/v1/nothing-here",
        vec![("x-request-id", "req-no-route"), ("traceparent", traceparent)],
        None,
    )
    .await;
    assert_eq!(no_route.status, 404);
    assert_eq!(no_route.header("x-request-id"), Some("req-no-route"));
    let wrong_method = send(http::Method::PUT, "/v1/tenants", vec![], None).await;
    assert_eq!(wrong_method.status, 405);
    let generated = wrong_method.header("x-request-id").expect("a generated request id").to_owned();
    assert!(generated.starts_with("req_"), "{generated}");
    let bad_json = send(http::Method::POST, "/v1/tenants", vec![], Some("{not json")).await;
    assert_eq!(bad_json.status, 400);
    let not_json = send(http::Method::POST, "/v1/tenants", vec![("content-type", "text/plain")], Some("hi")).await;
    assert_eq!(not_json.status, 415);
    let unknown = send(http::Method::POST, "/v1/tenants", vec![], Some(r#"{"nope": 1}"#)).await;
    assert_eq!(unknown.status, 400);
    let metrics = http_client::send(server.http, http::Method::GET, "/metrics", &[], None).await.text();
    let captured = server.terminate().await;

    for (reason, count) in [
        ("no_route", 1),
        ("method_not_allowed", 1),
        ("malformed_json", 1),
        ("unsupported_media_type", 1),
        ("unknown_field", 1),
    ] {
        let line = format!("tenantry_gateway_refusals_total{{reason=\"{reason}\"}} {count}");
        assert!(metrics.lines().any(|l| l == line), "missing {line}:\n{metrics}");
    }
    let lines = captured.json_lines();
    let refused: Vec<_> = lines.iter().filter(|l| l["message"] == "request refused by the gateway").collect();
    assert_eq!(refused.len(), 5, "one line per refusal:\n{}", captured.all());
    let first = refused.iter().find(|l| l["span"]["request_id"] == "req-no-route").expect("the 404's line");
    assert_eq!(first["reason"], "no_route", "{first}");
    assert_eq!(first["http_status"], 404, "{first}");
    // Without an exporter, the caller's trace id still joins the line to its trace.
    assert_eq!(first["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{first}");
    // Latency is a short number: at most three decimals.
    let latency = first["latency_ms"].to_string();
    assert!(latency.split('.').nth(1).is_none_or(|decimals| decimals.len() <= 3), "{latency}");
    assert!(refused.iter().any(|l| l["span"]["request_id"] == generated.as_str()), "{refused:?}");
}
