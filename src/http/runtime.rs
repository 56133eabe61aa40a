//! `/v1/runtime`: actor counts, mailbox depths, restarts, resident patients and the
//! config version; `/v1/runtime/config`: the reloadable values, changed live.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::problem::ApiError;
use super::AppState;

/// `GET /v1/runtime`.
#[tracing::instrument(name = "http.runtime", skip_all)]
pub async fn show(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.runtime.snapshot().await)
}

/// `GET /v1/runtime/config`: the reloadable values in force and their version.
#[tracing::instrument(name = "http.runtime_config", skip_all)]
pub async fn config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "config_version": state.runtime.version(),
        "config": state.runtime.tunables(),
    }))
}

/// `PUT /v1/runtime/config`: a JSON patch over the reloadable values
/// (`routing`, `supervision.patient`, `supervision.tasks`); validated first, an
/// invalid change answers 400 with the reason and changes nothing.
#[tracing::instrument(name = "http.runtime_reload", skip_all)]
pub async fn reload(
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    match state.runtime.apply(&body) {
        Ok(v) => Ok(HttpResponse::Ok()
            .json(json!({"config_version": v, "config": state.runtime.tunables()}))),
        Err(reason) => Err(ApiError::field("config", &reason)),
    }
}
