//! Patient lookup and the context a staff desktop reads. Both are patient data:
//! every attempt is decided per patient ([`guard::authorize_patient`]) and audited.

use actix_web::{web, HttpResponse};
use frontdoor_actors::ids::{Identifier, IdentifierKind, PatientId};
use frontdoor_actors::journey::ContextView;
use serde::Deserialize;
use serde_json::json;

use super::guard::{self, Caller};
use super::problem::ApiError;
use super::routes::Access;
use super::AppState;
use crate::audit::{Action, Outcome};
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
///
/// An agent gets an answer only for a patient it holds; for anyone else, and for
/// nobody, it gets 403 (so lookups are no oracle of who is a patient).
#[tracing::instrument(name = "http.lookup_patient", skip_all)]
pub async fn lookup(
    state: web::Data<AppState>,
    caller: Caller,
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
    let found = state
        .ingest
        .store()
        .find_patient(&id)
        .await
        .map_err(store_unavailable)?;
    guard::authorize_patient(&state, &caller, found, found).await?;
    let detail = Some(format!("by {}", kind.as_str()));
    match found {
        Some(p) => {
            guard::audit_success(
                &state,
                caller.audit(Action::Execute, Some(p), Outcome::Success, detail),
            )
            .await?;
            Ok(HttpResponse::Ok().json(json!({"patient_id": p})))
        }
        None => {
            guard::audit_success(
                &state,
                caller.audit(Action::Execute, None, Outcome::NotFound, detail),
            )
            .await?;
            Err(ApiError::NotFound("no patient has that identifier".into()))
        }
    }
}

/// `GET /v1/patients/{patient_id}/context`: the journey a staff member needs.
#[tracing::instrument(name = "http.patient_context", skip_all, fields(patient_id))]
pub async fn context(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ctx = read_context(&state, &caller, &path, None).await?;
    Ok(HttpResponse::Ok().json(ctx))
}

/// Reads a patient's context for `caller`: the patient-level decision, the read
/// itself and its audit record (`form` notes another form than JSON, e.g. FHIR).
/// Shared by every route that serves a context.
pub async fn read_context(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    form: Option<&str>,
) -> Result<ContextView, ApiError> {
    let requested = PatientId::parse(raw_id);
    let Some(requested) = requested else {
        if matches!(caller.access, Access::WhileAssigned | Access::InDepartment) {
            // No such patient is theirs: the same answer as for any other patient.
            guard::authorize_patient(state, caller, None, None).await?;
        }
        return Err(ApiError::field("patient_id", "must be a UUID"));
    };
    let surviving = state
        .ingest
        .store()
        .surviving_patient(requested)
        .await
        .map_err(store_unavailable)?;
    guard::authorize_patient(state, caller, Some(requested), surviving).await?;
    let Some(patient) = surviving else {
        guard::audit_success(
            state,
            caller.audit(
                Action::Read,
                Some(requested),
                Outcome::NotFound,
                form.map(str::to_string),
            ),
        )
        .await?;
        return Err(ApiError::NotFound("no such patient".into()));
    };
    tracing::Span::current().record("patient_id", tracing::field::display(patient));
    let ctx = state
        .ingest
        .context(patient, chrono::Utc::now())
        .await
        .map_err(|_| {
            ApiError::Unavailable("the patient's journey could not be loaded; retry later".into())
        })?;
    let mut detail: Vec<String> = form.map(str::to_string).into_iter().collect();
    if requested != patient {
        detail.push(format!("requested as Patient/{requested}"));
    }
    let detail = (!detail.is_empty()).then(|| detail.join("; "));
    guard::audit_success(
        state,
        caller.audit(Action::Read, Some(patient), Outcome::Success, detail),
    )
    .await?;
    Ok(ctx)
}
