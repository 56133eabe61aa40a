//! The HTTP API (actix-web).
//!
//! # Layout
//! - [`problem`]: RFC 9457 problem+json errors.
//! - [`events`]: `POST /v1/events`.
//! - [`patients`]: `GET /v1/patients`, `GET /v1/patients/{id}/context`.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`routing`]: `/v1/contacts/{id}`, `/v1/queues`, `/v1/agents`, `/v1/agents/{id}/state`.

pub mod events;
pub mod health;
pub mod patients;
pub mod problem;
pub mod routing;

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
        )
        .route("/v1/contacts/{contact_id}", web::get().to(routing::contact))
        .route("/v1/queues", web::get().to(routing::queues))
        .route("/v1/agents", web::get().to(routing::agents))
        .route(
            "/v1/agents/{agent_id}/state",
            web::post().to(routing::set_agent_state),
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
    _err: actix_web::error::QueryPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    problem::ApiError::field("query", "could not be parsed").into()
}

/// Turns JSON body errors into problem+json (never echoing the body).
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    let reason = match err {
        actix_web::error::JsonPayloadError::OverflowKnownLength { .. }
        | actix_web::error::JsonPayloadError::Overflow { .. } => "is too large",
        actix_web::error::JsonPayloadError::ContentType => "must be application/json",
        _ => "is not valid JSON",
    };
    problem::ApiError::field("body", reason).into()
}
