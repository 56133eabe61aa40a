//! Liveness, readiness and the Prometheus endpoint.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::problem::ApiError;
use super::AppState;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store and the broker, each reported on its own. Ready when
/// the store answers and the broker is up (or not configured); otherwise 503
/// problem+json naming which is down.
#[tracing::instrument(name = "http.readyz", skip_all)]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = match state.ingest.store().ping().await {
        Ok(()) => "up",
        Err(_) => "down",
    };
    let broker = state.broker.state();
    if store == "up" && broker != "down" {
        Ok(HttpResponse::Ok().json(json!({"status": "ready", "store": store, "broker": broker})))
    } else {
        Err(ApiError::Unavailable(format!(
            "store: {store}; broker: {broker}"
        )))
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
