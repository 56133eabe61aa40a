//! Liveness, readiness and the Prometheus endpoint.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::problem::ApiError;
use super::AppState;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store and the broker, each reported on its own, and the
/// supervised components. Ready when the store answers, the broker is up (or not
/// configured) and no component has escalated; otherwise 503 problem+json naming
/// each side (`store: down; broker: up`).
#[tracing::instrument(name = "http.readyz", skip_all)]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let down = state.runtime.stats.down();
    let store = match state.ingest.store().ping().await {
        Ok(()) => "up",
        Err(_) => "down",
    };
    let broker = state.broker.state();
    if store == "up" && broker != "down" && down.is_empty() {
        return Ok(
            HttpResponse::Ok().json(json!({"status": "ready", "store": store, "broker": broker}))
        );
    }
    let mut detail = format!("store: {store}; broker: {broker}");
    if !down.is_empty() {
        detail.push_str(&format!("; components escalated: {}", down.join(", ")));
    }
    Err(ApiError::Unavailable(detail))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
