//! Authentication and authorization in front of every route, per its row in
//! [`super::routes::ROUTES`].
//!
//! 1. Open routes pass.
//! 2. `Authorization: Bearer <token>` names a principal, or the answer is 401.
//! 3. The row's [`Access`] for the principal's role decides: 403 when refused; `Own`
//!    compares the `{agent_id}` segment; `WithReason` needs `X-Access-Reason`.
//!    Patient-level rules (`WhileAssigned`, site scope) are left to the handler,
//!    which knows the patient: see [`authorize_patient`].
//! 4. The per-token rate limit (429 with `Retry-After`).
//! 5. The handler gets a [`Caller`].
//! 6. Every answer says `Cache-Control: no-store` and `Pragma: no-cache`.
//!
//! Every refusal by a known principal is audited, and so is every attempt on a
//! patient-data route, authenticated or not. Nothing of the request (token, query,
//! path values) reaches a log line.

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::sync::Mutex;
use std::time::Instant;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, CACHE_CONTROL, PRAGMA};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};
use frontdoor_actors::ids::{PatientId, SiteId};

use super::problem::ApiError;
use super::routes::{Access, Auth, RouteSpec};
use super::AppState;
use crate::audit::{Action, AuditEntry, Outcome, Purpose};
use crate::auth::{Principal, Role};
use crate::metrics as m;

/// Header naming why patient data is read (treatment, operations, payment, emergency).
pub const PURPOSE_HEADER: &str = "x-purpose-of-use";
/// Header stating the reason in words (required where the route says `WithReason`).
pub const REASON_HEADER: &str = "x-access-reason";

/// The authenticated caller, as the handler sees it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// What the route's row grants this role.
    pub access: Access,
    /// Why (from the header, or implied by the role).
    pub purpose: Purpose,
    /// The stated reason, if any (stored in the audit log, never logged).
    pub reason: Option<String>,
    /// The route's audited resource name.
    pub resource: &'static str,
}

impl Caller {
    /// An audit entry about this caller.
    pub fn audit(
        &self,
        action: Action,
        patient: Option<PatientId>,
        outcome: Outcome,
        detail: Option<String>,
    ) -> AuditEntry {
        AuditEntry {
            principal_id: Some(self.principal.id.clone()),
            principal_role: Some(self.principal.role.as_str().to_string()),
            action,
            resource: self.resource.to_string(),
            patient_id: patient,
            purpose: self.purpose,
            reason: self.reason.clone(),
            outcome,
            detail,
            event_id: None,
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Caller>()
                .cloned()
                .ok_or_else(|| ApiError::Forbidden("this route has no access policy".into())),
        )
    }
}

/// Per-principal token buckets for the rate-limited route.
#[derive(Debug, Default)]
pub struct RateLimiter {
    /// Principal id → (tokens left, last refill).
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// Takes one token for `key`; Err(seconds to wait) when none is left.
    pub fn take(&self, key: &str, rate_per_sec: f64, burst: u32) -> Result<(), u64> {
        let rate = rate_per_sec.max(0.001);
        let burst = f64::from(burst.max(1));
        let now = Instant::now();
        // unwrap: the lock guards plain arithmetic that cannot panic.
        let mut buckets = self.buckets.lock().unwrap();
        let (tokens, last) = buckets.entry(key.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

fn bearer(req: &ServiceRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn header<'a>(req: &'a ServiceRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A stated reason: 3 to 200 printable characters.
fn valid_reason(s: &str) -> Option<String> {
    let t = s.trim();
    let n = t.chars().count();
    ((3..=200).contains(&n) && !t.chars().any(char::is_control)).then(|| t.to_string())
}

fn path_patient(req: &ServiceRequest) -> Option<PatientId> {
    req.match_info()
        .get("patient_id")
        .and_then(PatientId::parse)
}

fn refuse(req: ServiceRequest, err: ApiError) -> ServiceResponse<BoxBody> {
    let res = err.error_response();
    req.into_response(res)
}

async fn audit_or_count(state: &AppState, entry: &AuditEntry) {
    if state.ingest.store().audit(entry).await.is_err() {
        metrics::counter!(m::AUDIT_FAILURES_TOTAL, "resource" => "denial").increment(1);
    }
}

fn denied(reason: &'static str, role: Option<Role>) {
    metrics::counter!(m::AUTH_DENIED_TOTAL, "reason" => reason, "role" => role.map(Role::as_str).unwrap_or("none"))
        .increment(1);
}

/// The middleware body for one route (see the module docs). Every answer, refusals
/// included, says `Cache-Control: no-store` (and `Pragma: no-cache` for HTTP/1.0
/// caches): the API serves patient data and live state that no cache may keep.
pub async fn authorize(
    spec: &'static RouteSpec,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let mut res = decide(spec, req, next).await?;
    let headers = res.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(res)
}

async fn decide(
    spec: &'static RouteSpec,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // AppState is registered on the App; without it nothing can be decided.
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(refuse(
            req,
            ApiError::Unavailable("the service is not ready".into()),
        ));
    };
    let open = match spec.auth {
        Auth::Open => true,
        Auth::MetricsSetting => !state.security.metrics_require_token,
        Auth::Required => false,
    };
    if open {
        return next.call(req).await;
    }

    let principal = match bearer(&req) {
        None => Err("missing_token"),
        Some(token) => state.principals.authenticate(token).ok_or("unknown_token"),
    };
    let principal = match principal {
        Ok(p) => p,
        Err(reason) => {
            denied(reason, None);
            if spec.patient_data {
                let entry = AuditEntry {
                    principal_id: None,
                    principal_role: None,
                    action: Action::Read,
                    resource: spec.resource.to_string(),
                    patient_id: path_patient(&req),
                    purpose: Purpose::Operations,
                    reason: None,
                    outcome: Outcome::Unauthenticated,
                    detail: Some(reason.replace('_', " ")),
                    event_id: None,
                };
                audit_or_count(&state, &entry).await;
            }
            return Ok(refuse(
                req,
                ApiError::Unauthorized("a valid bearer token is required".into()),
            ));
        }
    };

    let access = spec.access(principal.role);
    let stated_purpose = header(&req, PURPOSE_HEADER).map(Purpose::parse);
    let reason = header(&req, REASON_HEADER).and_then(valid_reason);
    let purpose = match (principal.role, stated_purpose) {
        // Agents and clinicians act for treatment; only break-glass (emergency) is
        // theirs to state.
        (Role::Agent | Role::Clinician, Some(Some(Purpose::Emergency))) => Purpose::Emergency,
        (Role::Agent | Role::Clinician, _) => Purpose::Treatment,
        (Role::Bot, _) => Purpose::Treatment,
        (_, Some(Some(p))) => p,
        _ => Purpose::Operations,
    };
    let caller = Caller {
        principal,
        access,
        purpose,
        reason,
        resource: spec.resource,
    };
    let refusal = match access {
        Access::Deny => Some(format!(
            "the {} role may not use this endpoint",
            caller.principal.role.as_str()
        )),
        Access::Own => match req.match_info().get("agent_id") {
            Some(id) if id == caller.principal.id => None,
            _ => Some("an agent may act only on its own record".into()),
        },
        Access::WithReason if matches!(stated_purpose, Some(None)) => Some(format!(
            "{PURPOSE_HEADER} must be treatment, operations, payment or emergency"
        )),
        Access::WithReason if caller.reason.is_none() => Some(format!(
            "state the reason for this access in {REASON_HEADER} (3 to 200 characters)"
        )),
        Access::Allow
        | Access::WhileAssigned
        | Access::WithReason
        | Access::InDepartment
        | Access::WhileContactOpen => None,
    };
    if let Some(detail) = refusal {
        denied("forbidden", Some(caller.principal.role));
        let action = if spec.method == actix_web::http::Method::GET {
            Action::Read
        } else {
            Action::Execute
        };
        let entry = caller.audit(
            action,
            path_patient(&req),
            Outcome::Denied,
            Some(format!("{} {}", spec.method, spec.path)),
        );
        audit_or_count(&state, &entry).await;
        return Ok(refuse(req, ApiError::Forbidden(detail)));
    }

    if spec.rate_limited {
        if let Err(wait) = state.rate_limiter.take(
            &caller.principal.id,
            state.security.events_rate_per_sec,
            state.security.events_burst,
        ) {
            denied("rate_limited", Some(caller.principal.role));
            return Ok(refuse(req, ApiError::TooManyRequests(wait)));
        }
    }

    req.extensions_mut().insert(caller);
    next.call(req).await
}

/// The patient-level decision for a patient-data read (pure: the caller gathered
/// the facts). `holds` is whether the agent holds one of the patient's contacts;
/// `in_scope` whether the patient is within the caller's scope: seen at one of its
/// sites (supervisors), or with an appointment in one of its departments at one of
/// its sites (clinicians).
pub fn patient_decision(access: Access, holds: bool, in_scope: bool) -> bool {
    match access {
        Access::Allow => true,
        Access::WhileAssigned => holds,
        Access::WithReason | Access::InDepartment => in_scope,
        // Decided by the bot handler on the journey (an open contact), never here.
        Access::Deny | Access::Own | Access::WhileContactOpen => false,
    }
}

/// Decides whether `caller` may read `patient`'s data, auditing a refusal. The
/// requested id and the surviving id (after merges) are both checked against
/// assignments, since an offer may name either.
pub async fn authorize_patient(
    state: &AppState,
    caller: &Caller,
    requested: Option<PatientId>,
    surviving: Option<PatientId>,
) -> Result<(), ApiError> {
    let mut holds = false;
    let mut in_scope = false;
    match caller.access {
        Access::WhileAssigned => {
            // Routing must have the agent at one of its own sites: whoever put it
            // elsewhere, the agent's sites bound what it reads.
            let at_own_site = state
                .assignments
                .agent_site(&caller.principal.id)
                .await
                .is_some_and(|s| caller.principal.covers_site(s.as_str()));
            if at_own_site {
                for p in [requested, surviving].into_iter().flatten() {
                    if state
                        .assignments
                        .agent_holds_patient(&caller.principal.id, p)
                        .await
                    {
                        holds = true;
                        break;
                    }
                }
            }
        }
        Access::WithReason => {
            in_scope = match surviving {
                // Every site: nothing to hide, the handler answers 404 when not found.
                _ if caller.principal.all_sites() => true,
                Some(p) => state
                    .ingest
                    .store()
                    .patient_seen_at_sites(p, &caller.principal.sites)
                    .await
                    .map_err(|_| {
                        ApiError::Unavailable("the store is unavailable; retry later".into())
                    })?,
                // Nobody: the same answer as a patient of another site, so a
                // site-scoped supervisor cannot probe whether an identifier is known.
                None => false,
            };
        }
        Access::InDepartment => {
            in_scope = match surviving {
                Some(p) => state
                    .ingest
                    .store()
                    .patient_has_appointment_in(
                        p,
                        &caller.principal.sites,
                        &caller.principal.departments,
                    )
                    .await
                    .map_err(|_| {
                        ApiError::Unavailable("the store is unavailable; retry later".into())
                    })?,
                // Unknown: the same 403 as someone else's patient (no oracle).
                None => false,
            };
        }
        _ => {}
    }
    if patient_decision(caller.access, holds, in_scope) {
        return Ok(());
    }
    if break_glass(state, caller, surviving) {
        return Ok(());
    }
    let detail = match caller.access {
        Access::WhileAssigned => "no contact of this patient is offered or assigned to you",
        Access::InDepartment => "this patient has no appointment in your departments at your sites",
        _ => "this patient is outside your sites",
    };
    Err(deny(state, caller, surviving.or(requested), detail).await)
}

/// Emergency access (break-glass, HIPAA 164.312(a)(2)(ii)): when enabled, an agent or
/// supervisor that states `X-Purpose-Of-Use: emergency` and a reason reads an existing
/// patient it would otherwise be refused. The read is audited with purpose
/// `emergency` and the reason like any other, counted, and logged as a warning (staff
/// id and internal patient id only) so that every use is reviewed.
fn break_glass(state: &AppState, caller: &Caller, patient: Option<PatientId>) -> bool {
    let Some(patient) = patient else {
        return false;
    };
    let eligible = matches!(
        caller.access,
        Access::WhileAssigned | Access::WithReason | Access::InDepartment
    );
    if !(state.security.break_glass_enabled
        && eligible
        && caller.purpose == Purpose::Emergency
        && caller.reason.is_some())
    {
        return false;
    }
    let role = caller.principal.role.as_str();
    metrics::counter!(m::BREAK_GLASS_TOTAL, "role" => role).increment(1);
    tracing::warn!(principal.id = %caller.principal.id, principal.role = role, patient_id = %patient, "break-glass access to patient data");
    true
}

/// Refuses a routing input unless the caller's sites cover every site it acts on:
/// where it puts the agent (`target`, the site of an `agent.state`) and where
/// routing has the agent now. Agents, desktop adapters and supervisors alike.
pub async fn authorize_agent_sites(
    state: &AppState,
    caller: &Caller,
    agent_id: &str,
    target: Option<&SiteId>,
) -> Result<(), ApiError> {
    let current = state.assignments.agent_site(agent_id).await;
    let outside = target
        .into_iter()
        .chain(current.as_ref())
        .any(|s| !caller.principal.covers_site(s.as_str()));
    if outside {
        return Err(deny(
            state,
            caller,
            None,
            "this agent's site is outside your sites",
        )
        .await);
    }
    Ok(())
}

/// Refuses `caller` (403), auditing the refusal.
pub async fn deny(
    state: &AppState,
    caller: &Caller,
    patient: Option<PatientId>,
    detail: &'static str,
) -> ApiError {
    denied("forbidden", Some(caller.principal.role));
    let entry = caller.audit(
        Action::Read,
        patient,
        Outcome::Denied,
        Some(detail.to_string()),
    );
    audit_or_count(state, &entry).await;
    ApiError::Forbidden(detail.into())
}

/// Writes the audit record of an allowed access; if it cannot be written the data is
/// not returned (503).
pub async fn audit_success(state: &AppState, entry: AuditEntry) -> Result<(), ApiError> {
    state.ingest.store().audit(&entry).await.map_err(|_| {
        metrics::counter!(m::AUDIT_FAILURES_TOTAL, "resource" => "read").increment(1);
        ApiError::Unavailable("the access could not be audited; retry later".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_reads_a_patient_only_while_holding_one_of_its_contacts() {
        assert!(!patient_decision(Access::WhileAssigned, false, true));
        assert!(patient_decision(Access::WhileAssigned, true, false));
    }

    #[test]
    fn a_supervisor_reads_only_patients_seen_at_its_sites() {
        assert!(patient_decision(Access::WithReason, false, true));
        assert!(!patient_decision(Access::WithReason, true, false));
    }

    #[test]
    fn a_clinician_reads_only_patients_with_an_appointment_in_its_departments() {
        assert!(patient_decision(Access::InDepartment, false, true));
        assert!(!patient_decision(Access::InDepartment, true, false));
    }

    #[test]
    fn denied_and_own_never_reach_patient_data() {
        for (h, s) in [(true, true), (false, false)] {
            assert!(!patient_decision(Access::Deny, h, s));
            assert!(!patient_decision(Access::Own, h, s));
            assert!(patient_decision(Access::Allow, h, s));
        }
    }

    #[test]
    fn a_reason_must_be_short_printable_text() {
        assert_eq!(valid_reason(" callback QA "), Some("callback QA".into()));
        assert_eq!(valid_reason("ok"), None);
        assert_eq!(valid_reason(&"x".repeat(201)), None);
        assert_eq!(valid_reason("line\nbreak"), None);
    }

    #[test]
    fn the_bucket_refuses_past_the_burst_and_says_when_to_retry() {
        let l = RateLimiter::default();
        assert!(l.take("a", 1.0, 2).is_ok());
        assert!(l.take("a", 1.0, 2).is_ok());
        assert_eq!(l.take("a", 1.0, 2), Err(1));
        assert!(l.take("b", 1.0, 2).is_ok(), "buckets are per principal");
    }
}
