//! `/v1/runtime`: actor counts, mailbox depths, restarts, resident patients and the
//! config version; `/v1/runtime/config`: the reloadable values, changed live, stored
//! with who, when and why, applied by every node; its history and reverts.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::guard::Caller;
use super::problem::ApiError;
use super::AppState;
use crate::audit::{Action, AuditEntry, Outcome, Purpose};
use crate::runtime::ChangeError;

/// `GET /v1/runtime`.
#[tracing::instrument(name = "http.runtime", skip_all)]
pub async fn show(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.runtime.snapshot().await)
}

/// `GET /v1/runtime/config`: the reloadable values in force and their version.
#[tracing::instrument(name = "http.runtime_config", skip_all)]
pub async fn config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(answer(&state))
}

fn answer(state: &AppState) -> Value {
    json!({
        "config_version": state.runtime.version(),
        "config": state.runtime.tunables(),
    })
}

fn problem(e: ChangeError) -> ApiError {
    match e {
        ChangeError::Invalid(reason) => ApiError::field("config", &reason),
        ChangeError::NoSuchVersion(v) => {
            ApiError::NotFound(format!("no configuration version {v}"))
        }
        ChangeError::Store(_) => {
            ApiError::Unavailable("the change could not be stored; nothing changed, retry".into())
        }
        ChangeError::Busy => {
            ApiError::Unavailable("concurrent configuration changes; retry".into())
        }
    }
}

/// The stated reason: the body's `reason`, else `X-Access-Reason`.
fn reason_of(body: Option<&Value>, caller: &Caller) -> Result<Option<String>, ApiError> {
    match body {
        None | Some(Value::Null) => Ok(caller.reason.clone()),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(_) => Err(ApiError::field("reason", "must be a non-empty string")),
    }
}

/// Records a configuration change in the audit trail too (best effort, like every
/// non-read record: the change itself is already stored with who and why).
async fn audit(state: &AppState, caller: &Caller, reason: Option<String>, detail: String) {
    let entry = AuditEntry {
        principal_id: Some(caller.principal.id.clone()),
        principal_role: Some(caller.principal.role.as_str().to_string()),
        action: Action::Update,
        resource: "runtime.config".into(),
        patient_id: None,
        purpose: Purpose::Operations,
        reason,
        outcome: Outcome::Success,
        detail: Some(detail),
        event_id: None,
    };
    if state.ingest.store().audit(&entry).await.is_err() {
        metrics::counter!(crate::metrics::AUDIT_FAILURES_TOTAL, "resource" => "runtime.config")
            .increment(1);
    }
}

/// `PUT /v1/runtime/config`: a JSON merge patch over the reloadable values
/// (`routing`, `supervision.patient`, `supervision.tasks`) and an optional `reason`;
/// validated first (an invalid change answers 400 with the reason and changes
/// nothing), stored as the next version with who, when and why, applied here now
/// and by every other node within a few seconds.
#[tracing::instrument(name = "http.runtime_reload", skip_all)]
pub async fn reload(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let mut patch = body.into_inner();
    let reason = match patch.as_object_mut() {
        Some(p) => {
            let r = p.remove("reason");
            reason_of(r.as_ref(), &caller)?
        }
        None => None,
    };
    let v = state
        .runtime
        .change(&patch, &caller.principal.id, reason.clone())
        .await
        .map_err(problem)?;
    audit(
        &state,
        &caller,
        reason,
        format!("configuration version {v}"),
    )
    .await;
    Ok(HttpResponse::Ok().json(answer(&state)))
}

/// Query of `GET /v1/runtime/config/history`.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    /// At most this many changes (1 to 1000, default 100).
    limit: Option<i64>,
}

/// `GET /v1/runtime/config/history`: the stored changes, newest first.
#[tracing::instrument(name = "http.runtime_config_history", skip_all)]
pub async fn history(
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = match query.limit {
        None => 100,
        Some(n @ 1..=1000) => n as u32,
        Some(_) => return Err(ApiError::field("limit", "must be 1 to 1000")),
    };
    let changes = state
        .ingest
        .store()
        .config_history(limit)
        .await
        .map_err(|_| ApiError::Unavailable("the store is unavailable; retry later".into()))?;
    Ok(HttpResponse::Ok().json(json!({
        "config_version": state.runtime.version(),
        "changes": changes,
    })))
}

/// Body of `POST /v1/runtime/config/revert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevertBody {
    /// The version whose values become the ones in force again (1: the files alone).
    version: u64,
    /// Why.
    reason: Option<String>,
}

/// `POST /v1/runtime/config/revert`: the values of an earlier version, in force
/// again as a new version (recorded like any change).
#[tracing::instrument(name = "http.runtime_config_revert", skip_all)]
pub async fn revert(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<RevertBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let reason = reason_of(body.reason.map(Value::String).as_ref(), &caller)?;
    let v = state
        .runtime
        .revert(body.version, &caller.principal.id, reason.clone())
        .await
        .map_err(problem)?;
    audit(
        &state,
        &caller,
        reason,
        format!("configuration version {v}: revert to {}", body.version),
    )
    .await;
    Ok(HttpResponse::Ok().json(answer(&state)))
}
