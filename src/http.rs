//! The HTTP listener: liveness (`/healthz`), readiness (`/readyz`),
//! Prometheus metrics (`/metrics`), and a JSON 404 in the API's error shape
//! for everything else. The REST gateway ([`crate::gateway`]) is mounted as
//! this router's fallback by `startup`, so these routes keep priority over it.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, Uri, header::CONTENT_TYPE},
    routing::get,
};
use serde_json::{Value, json};

use crate::{health::Readiness, metrics::Metrics};

/// The HTTP routes.
pub fn router(readiness: Arc<Readiness>, metrics: Metrics) -> Router {
    let metrics = Router::new().route("/metrics", get(scrape)).with_state(metrics);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness)
        .merge(metrics)
        .fallback(not_found)
}

/// The Prometheus scrape: the exposition text, scrape-time values fresh.
async fn scrape(State(metrics): State<Metrics>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], metrics.render())
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
        "status": if ready { "ready" } else { "not_ready" },
        "postgres": readiness.postgres(),
        "redis": readiness.redis(),
    });
    (status, Json(body))
}

async fn not_found(uri: Uri) -> (StatusCode, Json<Value>) {
    let body = json!({ "code": 5, "message": format!("no route for {}", uri.path()), "details": [] });
    (StatusCode::NOT_FOUND, Json(body))
}
