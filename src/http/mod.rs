//! The HTTP API (actix-web).
//!
//! # Layout
//! - [`routes`]: the one table of endpoints, handlers and per-role access.
//! - [`guard`]: authentication, authorization, rate limit and denial audit.
//! - [`problem`]: RFC 9457 problem+json errors.
//! - [`events`]: `POST /v1/events`.
//! - [`fhir`]: `POST /fhir/r4` and `GET /fhir/r4/Patient/{id}/$front-door-context`.
//! - [`patients`]: `GET /v1/patients`, `GET /v1/patients/{id}/context`.
//! - [`audit`]: `GET /v1/audit` (JSON or FHIR AuditEvent).
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`openapi`]: the OpenAPI 3.1 document (`/openapi.json`), generated from [`routes`].
//! - [`runtime`]: `/v1/runtime` and `/v1/runtime/config` (live reload).
//! - [`routing`]: `/v1/contacts/{id}`, `/v1/queues`, `/v1/agents`, `/v1/agents/{id}/state`.

pub mod audit;
pub mod bot;
pub mod events;
pub mod fhir;
pub mod guard;
pub mod health;
pub mod openapi;
pub mod patients;
pub mod problem;
pub mod routes;
pub mod routing;
pub mod runtime;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::{AssignmentCheck, Principals};
use crate::broker::BrokerHealth;
use crate::configuration::SecuritySettings;
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
    /// Broker connection state, for `/readyz`.
    pub broker: BrokerHealth,
    /// Who holds which token.
    pub principals: Principals,
    /// Which agent holds which patient's contact (routing).
    pub assignments: Arc<dyn AssignmentCheck>,
    /// Rate limits and the `/metrics` setting.
    pub security: SecuritySettings,
    /// Per-token buckets for `POST /v1/events` and `POST /fhir/r4`.
    pub rate_limiter: guard::RateLimiter,
    /// The FHIR edge's settings (per-site MRN systems, limits).
    pub fhir: crate::configuration::FhirSettings,
    /// The site directory: local times, directions, hours (the virtual agent's answers).
    pub sites: Arc<frontdoor_actors::sites::SiteDirectory>,
}

/// Registers every route (from [`routes::ROUTES`], each behind its policy).
pub fn routes(cfg: &mut web::ServiceConfig) {
    routes::register(cfg);
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

/// Answers a known path with another method with problem+json and an `Allow`
/// header listing the methods it takes.
pub async fn method_not_allowed(allow: String) -> HttpResponse {
    let mut res = problem::problem_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this path does not take that method".into(),
        Vec::new(),
    );
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allow) {
        res.headers_mut().insert(actix_web::http::header::ALLOW, v);
    }
    res
}

/// Turns query-string errors into problem+json (never echoing the query).
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

/// Turns JSON body errors (too large, malformed) into problem+json (never echoing the body).
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    let reason = match err {
        actix_web::error::JsonPayloadError::Overflow { .. }
        | actix_web::error::JsonPayloadError::OverflowKnownLength { .. } => "is too large",
        actix_web::error::JsonPayloadError::ContentType => "must be application/json",
        _ => "is not valid JSON of the expected shape",
    };
    problem::ApiError::field("body", reason).into()
}

/// Turns path-segment errors into problem+json.
pub fn path_error(
    err: actix_web::error::PathError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    let _ = err;
    problem::ApiError::field("path", "could not be parsed").into()
}
