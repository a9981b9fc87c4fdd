//! Health and readiness follow PostgreSQL: NOT_SERVING while it is gone,
//! SERVING again when it returns; `/healthz` is liveness only.

use std::time::Duration;

use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::harness::{TestApp, TestDatabase, eventually, postgres::private_cluster};

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest { service: service.to_owned() }
}

#[tokio::test]
async fn every_service_reports_serving_and_readyz_names_its_dependencies() {
    let app = TestApp::builder().spawn().await;
    for service in ["", "tenantry.v1.TenantService", "tenantry.v1.AuthService", "tenantry.v1.JobsService"] {
        let status = app.health().check(check(service)).await.unwrap().into_inner().status();
        assert_eq!(status, ServingStatus::Serving, "{service}");
    }
    let (code, body) = app.http_get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["postgres"], "up");
    assert!(
        eventually(Duration::from_secs(5), || async { app.http_get("/readyz").await.1.contains("\"redis\":\"up\"") })
            .await,
        "redis is configured and answering"
    );
    assert_eq!(app.http_get("/healthz").await.0, 200);
}

#[tokio::test]
async fn an_unknown_service_is_not_found_by_health() {
    let app = TestApp::builder().spawn().await;
    let status = app.health().check(check("tenantry.v1.NoSuchService")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn health_flips_to_not_serving_when_postgres_goes_away_and_back() {
    let (cluster, _dir) = private_cluster("health").await;
    let app = TestApp::builder().database(TestDatabase::on_cluster(&cluster).await).spawn().await;
    let service = "tenantry.v1.UsageService";
    let serving = |want: ServingStatus| {
        let mut health = app.health();
        async move { matches!(health.check(check(service)).await, Ok(r) if r.get_ref().status() == want) }
    };
    assert!(serving(ServingStatus::Serving).await);

    cluster.stop().await.expect("stop PostgreSQL");
    assert!(eventually(Duration::from_secs(15), || serving(ServingStatus::NotServing)).await, "NOT_SERVING");
    let (code, body) = app.http_get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"postgres\":\"down\""), "{body}");
    assert_eq!(app.http_get("/healthz").await.0, 200, "liveness does not follow dependencies");

    cluster.restart().await.expect("start PostgreSQL again");
    assert!(eventually(Duration::from_secs(15), || serving(ServingStatus::Serving)).await, "SERVING again");
    assert_eq!(app.http_get("/readyz").await.0, 200);
    app.stop().await;
    cluster.stop().await.ok();
}

#[tokio::test]
async fn redis_down_is_reported_and_counted_but_the_node_stays_ready() {
    // Nothing listens on port 1: the configured Redis never answers.
    let app = TestApp::builder()
        .configure(|config| {
            config.redis_url = Some("redis://127.0.0.1:1".to_owned().into());
        })
        .spawn()
        .await;
    let redis_down = || async {
        let (code, body) = app.http_get("/readyz").await;
        code == 200 && body.contains("\"redis\":\"down\"") && body.contains("\"status\":\"ready\"")
    };
    assert!(eventually(Duration::from_secs(10), redis_down).await, "{:?}", app.http_get("/readyz").await);
    let status = app.health().check(check("tenantry.v1.TenantService")).await.unwrap().into_inner().status();
    assert_eq!(status, ServingStatus::Serving, "Redis alone never takes the node out");
    let (_, metrics) = app.http_get("/metrics").await;
    let failed_pings = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tenantry_redis_errors_total{operation=\"ping\"} "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(failed_pings.is_some_and(|n| n >= 1.0), "{metrics}");
}
