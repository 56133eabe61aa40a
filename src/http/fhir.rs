//! `/fhir/r4`: the FHIR R4 edge (docs/fhir.md).
//!
//! - `POST /fhir/r4` (adapters): a Bundle or one resource. The whole body is read,
//!   validated and mapped ([`crate::fhir::inbound`]) before anything is stored, so
//!   invalid FHIR is answered 400 with an `OperationOutcome` naming each element and
//!   stores nothing. The events then go through [`crate::ingest::Ingest::ingest`], the
//!   path of every other edge (identity, idempotency, outbox, routing). The answer is
//!   a `transaction-response` (for a transaction) or `batch-response` Bundle with an
//!   `OperationOutcome` per entry.
//! - `GET /fhir/r4/Patient/{id}/$front-door-context`: the patient's context as a
//!   `collection` Bundle, decided and audited like `GET /v1/patients/{id}/context`.
//!
//! Errors are `OperationOutcome`s (`application/fhir+json`); the refusals of the
//! route guard before a handler runs (401, 403, 429) are problem+json, as on every route.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;
use frontdoor_actors::event::{Envelope, EventKind};
use frontdoor_actors::ids::{Identifier, Mrn, SiteId};
use frontdoor_actors::journey::AppointmentStatus;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::guard::{self, Caller};
use super::problem::ApiError;
use super::AppState;
use crate::audit::{Action, AuditEntry, Outcome as AuditOutcome, Purpose};
use crate::fhir::element::Issue;
use crate::fhir::inbound::{self, Booking, Outcome, PlannedEvent, SiteContext};
use crate::fhir::{context as fhir_context, outcome};
use crate::ingest::{IngestError, IngestOutcome};
use crate::metrics as m;

/// The media type of every FHIR answer.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Why a FHIR request failed (each answered as an `OperationOutcome`).
#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    /// Not valid FHIR R4 (or not JSON): the issues name each element. Nothing stored.
    #[error("the body is not valid FHIR R4")]
    Invalid(Vec<Issue>),
    /// Not `application/fhir+json` (or `application/json`).
    #[error("the body must be application/fhir+json")]
    MediaType,
    /// Larger than `fhir.max_bundle_bytes`.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// Valid FHIR that cannot be used (a transaction entry whose patient is unknown,
    /// a site without an MRN system). Nothing of a transaction is stored.
    #[error("the request cannot be processed")]
    Unprocessable(Vec<Issue>),
    /// The store or the patient actors are unavailable: retry (stored entries are
    /// recognised as duplicates).
    #[error("{0}")]
    Unavailable(String),
    /// Refused or failed as on every route (403, 404, 503...).
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl FhirError {
    fn issues(&self) -> Vec<Issue> {
        match self {
            FhirError::Invalid(i) | FhirError::Unprocessable(i) => i.clone(),
            FhirError::MediaType => vec![Issue::error(
                "not-supported",
                "Resource",
                "send the body as application/fhir+json (or application/json)",
            )],
            FhirError::TooLarge(_) => vec![Issue {
                severity: crate::fhir::element::Severity::Error,
                code: "too-long",
                expression: None,
                diagnostics: self.to_string(),
            }],
            FhirError::Unavailable(why) => vec![Issue {
                severity: crate::fhir::element::Severity::Error,
                code: "transient",
                expression: None,
                diagnostics: why.clone(),
            }],
            FhirError::Api(e) => {
                let code = match e.status_code().as_u16() {
                    400 => "invalid",
                    401 => "login",
                    403 => "forbidden",
                    404 => "not-found",
                    429 => "throttled",
                    503 => "transient",
                    _ => "processing",
                };
                vec![Issue {
                    severity: crate::fhir::element::Severity::Error,
                    code,
                    expression: None,
                    diagnostics: e.to_string(),
                }]
            }
        }
    }
}

impl ResponseError for FhirError {
    fn status_code(&self) -> StatusCode {
        match self {
            FhirError::Invalid(_) => StatusCode::BAD_REQUEST,
            FhirError::MediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            FhirError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            FhirError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            FhirError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            FhirError::Api(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if self.status_code() == StatusCode::SERVICE_UNAVAILABLE {
            res.insert_header(("Retry-After", "5"));
        }
        res.content_type(FHIR_JSON)
            .body(outcome::operation_outcome(&self.issues()).to_string())
    }
}

fn fhir_json(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(FHIR_JSON)
        .body(body.to_string())
}

/// Query of `POST /fhir/r4`.
#[derive(Debug, Deserialize)]
pub struct PostQuery {
    /// The site the body is for (default: the adapter's only site).
    site: Option<String>,
}

fn rejected(reason: &'static str, err: FhirError) -> FhirError {
    metrics::counter!(m::FHIR_REJECTED_TOTAL, "reason" => reason).increment(1);
    err
}

fn check_media_type(req: &HttpRequest) -> Result<(), FhirError> {
    let ct = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/fhir+json" | "application/json" | "application/json+fhir" => Ok(()),
        _ => Err(rejected("media_type", FhirError::MediaType)),
    }
}

async fn read_limited(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, FhirError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            FhirError::Invalid(vec![Issue::error(
                "structure",
                "Resource",
                "the body could not be read",
            )])
        })?;
        if body.len() + chunk.len() > limit {
            return Err(rejected("too_large", FhirError::TooLarge(limit)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The site the body is for: `?site=`, else the adapter's only site; within the
/// caller's sites and with an MRN system configured.
async fn site_for(
    state: &AppState,
    caller: &Caller,
    asked: Option<String>,
) -> Result<SiteContext, FhirError> {
    let name = match asked {
        Some(s) => s,
        None => match caller.principal.sites.as_slice() {
            [one] if one != "*" => one.clone(),
            _ => {
                return Err(rejected(
                    "validation",
                    FhirError::Invalid(vec![Issue {
                        severity: crate::fhir::element::Severity::Error,
                        code: "required",
                        expression: None,
                        diagnostics: "name the site with the site query parameter (?site=...)"
                            .into(),
                    }]),
                ))
            }
        },
    };
    let Ok(site) = SiteId::parse(&name) else {
        return Err(rejected(
            "validation",
            FhirError::Invalid(vec![Issue {
                severity: crate::fhir::element::Severity::Error,
                code: "value",
                expression: None,
                diagnostics: "the site query parameter must be 1-64 characters of [A-Za-z0-9-_.:]"
                    .into(),
            }]),
        ));
    };
    if !caller.principal.covers_site(site.as_str()) {
        return Err(
            guard::deny(state, caller, None, "this site is outside your sites")
                .await
                .into(),
        );
    }
    let Some(systems) = state
        .fhir
        .sites
        .get(site.as_str())
        .or_else(|| state.fhir.sites.get("*"))
    else {
        return Err(rejected(
            "site_not_configured",
            FhirError::Unprocessable(vec![Issue {
                severity: crate::fhir::element::Severity::Error,
                code: "business-rule",
                expression: None,
                diagnostics: "no MRN identifier system is configured for this site (fhir.sites.<site>.mrn_systems)".into(),
            }]),
        ));
    };
    Ok(SiteContext {
        site,
        mrn_systems: systems.mrn_systems.clone(),
        country_code: state.fhir.default_country_code.clone(),
        vital_signs: state.fhir.vital_signs_as_readings,
        now: Utc::now(),
    })
}

/// A booking of an appointment the journey holds at another time is a reschedule.
async fn decide_booking(
    state: &AppState,
    ev: &PlannedEvent,
    b: &Booking,
) -> Result<Envelope, FhirError> {
    let unavailable =
        |_| FhirError::Unavailable("the store is unavailable; retry the request".into());
    let mrn = Mrn::parse(&b.mrn).map_err(|_| FhirError::Unavailable("unusable MRN".into()))?;
    let Some(patient) = state
        .ingest
        .store()
        .find_patient(&Identifier::Mrn(mrn))
        .await
        .map_err(unavailable)?
    else {
        return Ok(ev.envelope.clone());
    };
    let ctx = state
        .ingest
        .context(patient, Utc::now())
        .await
        .map_err(|_| {
            FhirError::Unavailable(
                "the patient's journey could not be loaded; retry the request".into(),
            )
        })?;
    let moved = ctx.appointments.iter().any(|a| {
        a.id == b.appointment_id
            && a.status != AppointmentStatus::Cancelled
            && a.starts_at.is_some_and(|t| t != b.starts_at)
    });
    if !moved {
        return Ok(ev.envelope.clone());
    }
    let mut obj = ev.object.clone();
    obj.insert(
        "type".into(),
        Value::String("appointment.rescheduled".into()),
    );
    Envelope::from_object(obj).map_err(|_| {
        FhirError::Unprocessable(vec![Issue::info(
            "processing",
            "the reschedule could not be built",
        )])
    })
}

/// What became of one planned event.
#[derive(Debug, Clone)]
enum Stored {
    /// Stored now (type, event id).
    New(String, uuid::Uuid),
    /// Stored before.
    Duplicate(uuid::Uuid),
    /// Failed: HTTP status text and why.
    Failed(&'static str, &'static str, String),
}

/// `POST /fhir/r4`: a Bundle (transaction, batch, collection, searchset, history,
/// subscription notification) or one resource, from an EHR adapter.
#[tracing::instrument(name = "http.post_fhir", skip_all, fields(fhir.body, fhir.entries))]
pub async fn post_bundle(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<PostQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, FhirError> {
    check_media_type(&req)?;
    let body = read_limited(payload, state.fhir.max_bundle_bytes).await?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        let why = match e.classify() {
            serde_json::error::Category::Eof => "unexpected end of input",
            _ => "syntax error",
        };
        rejected(
            "syntax",
            FhirError::Invalid(vec![Issue {
                severity: crate::fhir::element::Severity::Error,
                code: "structure",
                expression: None,
                diagnostics: format!(
                    "the body is not JSON: {why} at line {} column {}",
                    e.line(),
                    e.column()
                ),
            }]),
        )
    })?;
    let site = site_for(&state, &caller, query.into_inner().site).await?;
    let received = inbound::read(&value)
        .map_err(|issues| rejected("validation", FhirError::Invalid(issues)))?;
    let span = tracing::Span::current();
    span.record("fhir.body", received.kind.label());
    span.record("fhir.entries", received.entries.len());
    let plan = inbound::plan(&received, &site);
    let atomic = received.kind.atomic();
    if atomic {
        let refused = plan.refusals();
        if !refused.is_empty() {
            return Err(rejected("unprocessable", FhirError::Unprocessable(refused)));
        }
    }

    // Store, in plan order (patients' links first), through the one ingest path.
    let mut results: Vec<Stored> = Vec::with_capacity(plan.events.len());
    for ev in &plan.events {
        let envelope = match &ev.booking {
            Some(b) => match decide_booking(&state, ev, b).await {
                Ok(e) => e,
                Err(e) if atomic => return Err(e),
                Err(e) => {
                    results.push(Stored::Failed(
                        "503 Service Unavailable",
                        "transient",
                        e.to_string(),
                    ));
                    continue;
                }
            },
            None => ev.envelope.clone(),
        };
        let id = envelope.id;
        let event_type = envelope.event_type.clone();
        let link = matches!(envelope.kind, EventKind::IdentityLinked);
        let res = state.ingest.ingest(envelope).await;
        if link {
            if let Ok(
                IngestOutcome::Accepted { patient_id, .. }
                | IngestOutcome::Duplicate { patient_id },
            ) = &res
            {
                audit_link(&state, &caller, *patient_id, id).await;
            }
        }
        let stored = match res {
            Ok(IngestOutcome::Accepted { .. }) | Ok(IngestOutcome::Routed) => Stored::New(event_type, id),
            Ok(IngestOutcome::Duplicate { .. }) => Stored::Duplicate(id),
            Err(IngestError::Unavailable(_)) if atomic => {
                return Err(FhirError::Unavailable(
                    "the store is unavailable: retry the whole bundle (entries stored already are recognised)".into(),
                ))
            }
            Err(IngestError::Unavailable(_)) => Stored::Failed(
                "503 Service Unavailable",
                "transient",
                "the store is unavailable: retry this entry".into(),
            ),
            Err(IngestError::Rejected(why)) if atomic => {
                return Err(FhirError::Unprocessable(vec![Issue {
                    severity: crate::fhir::element::Severity::Error,
                    code: "processing",
                    expression: None,
                    diagnostics: why.to_string(),
                }]))
            }
            Err(IngestError::Rejected(why)) => Stored::Failed("422 Unprocessable Entity", "processing", why.to_string()),
        };
        results.push(stored);
    }

    let mut entries = Vec::with_capacity(plan.entries.len());
    for e in &plan.entries {
        let resource = e.resource_type.unwrap_or("none");
        let (status, label, mut issues) = match &e.outcome {
            Outcome::Event(n) => match &results[*n] {
                Stored::New(t, id) => (
                    "201 Created",
                    "stored",
                    vec![Issue::info("informational", format!("stored as event {id} ({t})"))],
                ),
                Stored::Duplicate(id) => (
                    "200 OK",
                    "duplicate",
                    vec![Issue::info(
                        "informational",
                        format!("already stored (event {id}): nothing changed"),
                    )],
                ),
                Stored::Failed(status, code, why) => (
                    *status,
                    "failed",
                    vec![Issue {
                        severity: crate::fhir::element::Severity::Error,
                        code,
                        expression: None,
                        diagnostics: why.clone(),
                    }],
                ),
            },
            Outcome::Skip { text, unsupported } => (
                "200 OK",
                if *unsupported { "unsupported" } else { "skipped" },
                vec![Issue::info("informational", text.clone())],
            ),
            Outcome::Refused(issues) => ("422 Unprocessable Entity", "refused", issues.clone()),
            Outcome::NotAllowed => (
                "405 Method Not Allowed",
                "refused",
                vec![Issue::info(
                    "not-supported",
                    "Front Door receives resources (POST or PUT entries) and serves no other request here",
                )],
            ),
        };
        metrics::counter!(m::FHIR_ENTRIES_TOTAL, "resource" => resource, "outcome" => label)
            .increment(1);
        issues.extend(e.notes.iter().cloned());
        entries.push(outcome::entry_response(status, e.etag.as_deref(), &issues));
    }
    let bundle = outcome::response_bundle(received.kind.response_type(), entries, Utc::now());
    Ok(fhir_json(StatusCode::OK, &bundle))
}

/// Who asked for an identity link (the store audits each claim, merge and move).
async fn audit_link(
    state: &AppState,
    caller: &Caller,
    patient: frontdoor_actors::ids::PatientId,
    event: uuid::Uuid,
) {
    let entry = AuditEntry {
        principal_id: Some(caller.principal.id.clone()),
        principal_role: Some(caller.principal.role.as_str().to_string()),
        action: Action::Update,
        resource: "identity.link".into(),
        patient_id: Some(patient),
        purpose: Purpose::Operations,
        reason: None,
        outcome: AuditOutcome::Success,
        detail: Some("FHIR Patient".into()),
        event_id: Some(event.to_string()),
    };
    if state.ingest.store().audit(&entry).await.is_err() {
        metrics::counter!(m::AUDIT_FAILURES_TOTAL, "resource" => "identity.link").increment(1);
    }
}

/// `GET /fhir/r4/Patient/{patient_id}/$front-door-context`: the context as a Bundle.
#[tracing::instrument(name = "http.fhir_context", skip_all, fields(patient_id))]
pub async fn context(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    let ctx =
        super::patients::read_context(&state, &caller, &path, Some("as a FHIR Bundle")).await?;
    // The MRN system of the site the patient was last seen at, when configured.
    let ehr = state.fhir.ehr();
    let system = ctx
        .timeline
        .iter()
        .find_map(|t| ehr.mrn_system(t.site.as_str()))
        .map(str::to_string);
    let bundle = fhir_context::bundle(&ctx, system.as_deref(), Utc::now());
    Ok(fhir_json(StatusCode::OK, &bundle))
}
