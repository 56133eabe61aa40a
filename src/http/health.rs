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

/// `GET /readyz`: the store and the broker, each reported on its own, the
/// supervised components and the live configuration (a stored version this node
/// cannot apply makes it not ready). Ready when the store answers, the broker is up (or not
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
    let own = state.ingest.cluster().now();
    let cluster = match &own.membership {
        crate::cluster::Membership::Standalone => "standalone",
        crate::cluster::Membership::Member => "member",
        crate::cluster::Membership::Joining => "joining",
        crate::cluster::Membership::Refused(_) => "refused",
    };
    let cluster_ok = matches!(cluster, "standalone" | "member");
    let config = state.runtime.config_failure();
    let version = state.runtime.version();
    if store == "up" && broker != "down" && down.is_empty() && cluster_ok && config.is_none() {
        return Ok(HttpResponse::Ok().json(json!({
            "status": "ready", "store": store, "broker": broker, "cluster": cluster,
            "config_version": version,
        })));
    }
    let mut detail = format!("store: {store}; broker: {broker}; cluster: {cluster}");
    if !down.is_empty() {
        detail.push_str(&format!("; components escalated: {}", down.join(", ")));
    }
    if let Some((v, reason)) = config {
        detail.push_str(&format!(
            "; configuration version {v} cannot be applied here ({reason}); running version {version}"
        ));
    }
    Err(ApiError::Unavailable(detail))
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
