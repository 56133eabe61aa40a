//! Patient lookup and the context a staff desktop reads.

use actix_web::{web, HttpResponse};
use frontdoor_actors::ids::{Identifier, IdentifierKind, PatientId};
use serde::Deserialize;
use serde_json::json;

use super::problem::ApiError;
use super::AppState;
use crate::store::StoreError;

fn store_unavailable(_: StoreError) -> ApiError {
    ApiError::Unavailable("the store is unavailable; retry later".into())
}

/// Query of `GET /v1/patients`: exactly one identifier.
#[derive(Debug, Deserialize)]
pub struct LookupQuery {
    mrn: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    portal_id: Option<String>,
}

/// `GET /v1/patients?mrn=|phone=|email=|portal_id=`: the patient id.
#[tracing::instrument(name = "http.lookup_patient", skip_all)]
pub async fn lookup(
    state: web::Data<AppState>,
    query: web::Query<LookupQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let given: Vec<(IdentifierKind, String)> = [
        (IdentifierKind::Mrn, q.mrn),
        (IdentifierKind::Phone, q.phone),
        (IdentifierKind::Email, q.email),
        (IdentifierKind::PortalId, q.portal_id),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let [(kind, value)] = given.as_slice() else {
        return Err(ApiError::field(
            "query",
            "must give exactly one of mrn, phone, email, portal_id",
        ));
    };
    let id =
        Identifier::parse(*kind, value).map_err(|reason| ApiError::field(kind.as_str(), reason))?;
    match state
        .ingest
        .store()
        .find_patient(&id)
        .await
        .map_err(store_unavailable)?
    {
        Some(p) => Ok(HttpResponse::Ok().json(json!({"patient_id": p}))),
        None => Err(ApiError::NotFound("no patient has that identifier".into())),
    }
}

/// `GET /v1/patients/{patient_id}/context`: the journey a staff member needs.
#[tracing::instrument(name = "http.patient_context", skip_all, fields(patient_id))]
pub async fn context(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let requested =
        PatientId::parse(&path).ok_or_else(|| ApiError::field("patient_id", "must be a UUID"))?;
    let patient = state
        .ingest
        .store()
        .surviving_patient(requested)
        .await
        .map_err(store_unavailable)?
        .ok_or_else(|| ApiError::NotFound("no such patient".into()))?;
    tracing::Span::current().record("patient_id", tracing::field::display(patient));
    let ctx = state
        .ingest
        .patients()
        .context(patient, chrono::Utc::now())
        .await
        .map_err(|_| {
            ApiError::Unavailable("the patient's journey could not be loaded; retry later".into())
        })?;
    Ok(HttpResponse::Ok().json(ctx))
}
