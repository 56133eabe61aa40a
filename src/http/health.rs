//! Liveness, readiness and the Prometheus endpoint.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::problem::ApiError;
use super::AppState;
use crate::metrics as m;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store answers.
#[tracing::instrument(name = "http.readyz", skip_all)]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let down = state.runtime.stats.down();
    match state.ingest.store().ping().await {
        Ok(()) if down.is_empty() => {
            Ok(HttpResponse::Ok().json(json!({"status": "ready", "store": "up"})))
        }
        Ok(()) => Err(ApiError::Unavailable(format!(
            "components escalated: {}",
            down.join(", ")
        ))),
        Err(_) => Err(ApiError::Unavailable("store: down".into())),
    }
}

/// `GET /metrics`: Prometheus text format.
///
/// The resident-patients gauge is refreshed on each scrape (one message per shard)
/// as well as every few seconds, so a scrape never shows a stale count.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let resident = state.ingest.patients().resident().await;
    metrics::gauge!(m::RESIDENT_PATIENTS).set(resident as f64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
