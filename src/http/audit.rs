//! `GET /v1/audit` (admin): the audit log, filtered by patient, principal and time,
//! as JSON or (`?format=fhir`) a FHIR R4 searchset Bundle of `AuditEvent`s.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use frontdoor_actors::ids::PatientId;
use serde::Deserialize;
use serde_json::json;

use super::guard::{self, Caller};
use super::problem::ApiError;
use super::AppState;
use crate::audit::{Action, Outcome};
use crate::store::audit::AuditFilter;

/// Largest page.
const MAX_LIMIT: i64 = 1000;
/// Default page.
const DEFAULT_LIMIT: i64 = 100;

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Patient id (UUID).
    patient: Option<String>,
    /// Principal id.
    principal: Option<String>,
    /// RFC 3339, inclusive.
    from: Option<String>,
    /// RFC 3339, exclusive.
    to: Option<String>,
    /// Page size, 1 to 1000.
    limit: Option<i64>,
    /// Cursor from the previous page's `next`.
    after: Option<i64>,
    /// `json` (default) or `fhir`.
    format: Option<String>,
}

fn time(field: &str, v: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    v.as_deref()
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::field(field, "must be an RFC 3339 timestamp"))
        })
        .transpose()
}

fn filter(q: &AuditQuery) -> Result<AuditFilter, ApiError> {
    let patient_id = q
        .patient
        .as_deref()
        .map(|p| PatientId::parse(p).ok_or_else(|| ApiError::field("patient", "must be a UUID")))
        .transpose()?;
    if let Some(p) = &q.principal {
        if p.is_empty() || p.len() > 128 {
            return Err(ApiError::field("principal", "must be 1 to 128 characters"));
        }
    }
    let from = time("from", &q.from)?;
    let to = time("to", &q.to)?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::field("from", "must not be after to"));
        }
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    if q.after.is_some_and(|a| a < 0) {
        return Err(ApiError::field("after", "must not be negative"));
    }
    Ok(AuditFilter {
        patient_id,
        principal_id: q.principal.clone(),
        from,
        to,
        after_seq: q.after,
        limit,
    })
}

/// `GET /v1/audit`.
#[tracing::instrument(name = "http.audit_search", skip_all)]
pub async fn search(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let fhir = match q.format.as_deref() {
        None | Some("json") => false,
        Some("fhir") => true,
        Some(_) => return Err(ApiError::field("format", "must be json or fhir")),
    };
    let f = filter(&q)?;
    let records = state
        .ingest
        .store()
        .audit_search(&f)
        .await
        .map_err(|_| ApiError::Unavailable("the store is unavailable; retry later".into()))?;
    // Reading the audit log is itself audited.
    guard::audit_success(
        &state,
        caller.audit(Action::Execute, f.patient_id, Outcome::Success, None),
    )
    .await?;
    let next = (records.len() as i64 == f.limit)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    if !fhir {
        return Ok(HttpResponse::Ok().json(json!({"records": records, "next": next})));
    }
    let base = format!(
        "{}://{}{}",
        req.connection_info().scheme(),
        req.connection_info().host(),
        req.path()
    );
    let mut links =
        vec![json!({"relation": "self", "url": format!("{base}?{}", req.query_string())})];
    if let Some(n) = next {
        let mut qs: Vec<String> = req
            .query_string()
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("after="))
            .map(str::to_string)
            .collect();
        qs.push(format!("after={n}"));
        links.push(json!({"relation": "next", "url": format!("{base}?{}", qs.join("&"))}));
    }
    let entries: Vec<_> = records
        .iter()
        .map(|r| {
            json!({
                "fullUrl": format!("urn:uuid:{}", r.id),
                "resource": r.to_fhir(),
                "search": {"mode": "match"},
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .content_type("application/fhir+json")
        .json(json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "link": links,
            "entry": entries,
        })))
}
