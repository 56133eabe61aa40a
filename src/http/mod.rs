//! The HTTP API (actix-web).
//!
//! # Layout
//! - [`problem`]: RFC 9457 problem+json errors.
//! - [`events`]: `POST /v1/events`.
//! - [`patients`]: `GET /v1/patients`, `GET /v1/patients/{id}/context`.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.

pub mod events;
pub mod health;
pub mod patients;
pub mod problem;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::broker::BrokerHealth;
use crate::ingest::Ingest;

/// What every handler can reach.
pub struct AppState {
    /// The ingest service (store and patient actors).
    pub ingest: Ingest,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Largest accepted event body.
    pub max_event_bytes: usize,
    /// Broker connection state, for `/readyz`.
    pub broker: BrokerHealth,
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/v1/events", web::post().to(events::post_event))
        .route("/v1/patients", web::get().to(patients::lookup))
        .route(
            "/v1/patients/{patient_id}/context",
            web::get().to(patients::context),
        );
}

/// Answers unknown routes with problem+json.
pub async fn not_found() -> HttpResponse {
    problem::problem_response(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        "no such route".into(),
        Vec::new(),
    )
}

/// Turns query-string errors into problem+json.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    let _ = err;
    problem::ApiError::field("query", "could not be parsed").into()
}
