//! The HTTP listener: liveness (`/healthz`), readiness (`/readyz`),
//! Prometheus metrics (`/metrics`), and a JSON 404 in the API's error shape
//! for everything else. The REST gateway ([`crate::gateway`]) is mounted as
//! this router's fallback by `startup`, so these routes keep priority over it.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{
        HeaderMap, StatusCode, Uri,
        header::{ACCEPT, CONTENT_TYPE},
    },
    routing::get,
};
use serde_json::{Value, json};

use crate::{
    health::Readiness,
    metrics::{Format, Metrics},
};

/// The HTTP routes.
pub fn router(readiness: Arc<Readiness>, metrics: Metrics) -> Router {
    // `/metrics` reports the same readiness `/readyz` answers with.
    metrics.watch_readiness(readiness.clone());
    let metrics = Router::new().route("/metrics", get(scrape)).with_state(metrics);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness)
        .merge(metrics)
        .fallback(not_found)
}

/// The Prometheus scrape: the exposition in the format `Accept` asks for
/// (Prometheus text 0.0.4 unless OpenMetrics is asked for), scrape-time
/// values fresh.
async fn scrape(
    State(metrics): State<Metrics>,
    headers: HeaderMap,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let accept = headers.get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    let format = Format::negotiate(Some(&accept));
    ([(CONTENT_TYPE, format.content_type())], metrics.render_as(format))
}

/// Liveness: the process answers; dependencies are not consulted.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: whether this node should get traffic, and why.
async fn readyz(State(readiness): State<Arc<Readiness>>) -> (StatusCode, Json<Value>) {
    let ready = readiness.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ready { "ready" } else if readiness.is_draining() { "draining" } else { "not_ready" },
        "postgres": readiness.postgres(),
        "redis": readiness.redis(),
    });
    (status, Json(body))
}

async fn not_found(uri: Uri) -> (StatusCode, Json<Value>) {
    let body = json!({ "code": 5, "message": format!("no route for {}", uri.path()), "details": [] });
    (StatusCode::NOT_FOUND, Json(body))
}
