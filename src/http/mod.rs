//! The HTTP API (actix-web).
//!
//! # Layout
//! - [`problem`]: RFC 9457 problem+json errors.
//! - [`events`]: `POST /v1/events`.
//! - [`patients`]: `GET /v1/patients`, `GET /v1/patients/{id}/context`.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`runtime`]: `/v1/runtime` and `/v1/runtime/config` (live reload).
//! - [`routing`]: `/v1/contacts/{id}`, `/v1/queues`, `/v1/agents`, `/v1/agents/{id}/state`.

pub mod events;
pub mod health;
pub mod patients;
pub mod problem;
pub mod routing;
pub mod runtime;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::ingest::Ingest;
use crate::metrics as m;

/// What every handler can reach.
pub struct AppState {
    /// The ingest service (store and patient actors).
    pub ingest: Ingest,
    /// The live runtime (reload, statistics).
    pub runtime: std::sync::Arc<crate::runtime::Runtime>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Largest accepted event body.
    pub max_event_bytes: usize,
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
        )
        .route("/v1/runtime", web::get().to(runtime::show))
        .route("/v1/runtime/config", web::get().to(runtime::config))
        .route("/v1/runtime/config", web::put().to(runtime::reload));
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

/// Counts every request by route pattern (bounded: the registered patterns, or
/// `unmatched`), method and status class.
pub async fn count_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        _ => "other",
    };
    let res = next.call(req).await;
    let status = match &res {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    let class = match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    metrics::counter!(m::HTTP_REQUESTS_TOTAL, "route" => route, "method" => method, "status" => class)
        .increment(1);
    res
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
