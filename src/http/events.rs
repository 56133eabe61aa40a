//! `POST /v1/events`: the HTTP edge of the event contract.

use actix_web::{web, HttpResponse};
use frontdoor_actors::event::{ContractError, Envelope, EventKind};
use futures_util::StreamExt;
use serde_json::json;

use super::guard::{self, Caller};
use super::problem::ApiError;
use super::AppState;
use crate::audit::{Action, AuditEntry, Outcome, Purpose};
use crate::ingest::{IngestError, IngestOutcome};
use crate::metrics as m;

fn rejected(err: ContractError) -> ApiError {
    metrics::counter!(m::EVENTS_REJECTED_TOTAL, "reason" => err.reason()).increment(1);
    ApiError::Invalid {
        detail: format!("the event was rejected: {err}"),
        errors: err.field_errors(),
    }
}

/// Reads at most `limit + 1` bytes of the body, so an oversized one is refused
/// without buffering it all.
async fn read_limited(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::field("body", "could not be read"))?;
        if body.len() + chunk.len() > limit {
            return Err(rejected(ContractError::TooLarge { limit }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Accepts one event: 202 once durably stored, 200 when already stored.
#[tracing::instrument(name = "http.post_event", skip_all)]
pub async fn post_event(
    state: web::Data<AppState>,
    caller: Caller,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_limited(payload, state.max_event_bytes).await?;
    let event = Envelope::parse(&body, state.max_event_bytes).map_err(rejected)?;
    if !caller.principal.covers_site(event.site.as_str()) {
        return Err(guard::deny(
            &state,
            &caller,
            None,
            "this event's site is outside your sites",
        )
        .await);
    }
    // A routing input acts on an agent: the caller's sites must also cover where
    // routing has that agent now (and, for agent.state, the site it announces).
    match &event.kind {
        EventKind::AgentState { agent_id, .. } => {
            guard::authorize_agent_sites(&state, &caller, agent_id, Some(&event.site)).await?
        }
        EventKind::OfferAccepted { agent_id }
        | EventKind::OfferDeclined { agent_id }
        | EventKind::ContactWrapped { agent_id }
        | EventKind::CallbackResult { agent_id, .. } => {
            guard::authorize_agent_sites(&state, &caller, agent_id, None).await?
        }
        EventKind::CallbackRequested => {
            // The contact's site (where routing has it) must be the caller's too.
            let contact = event
                .contact_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            let found = state
                .ingest
                .store()
                .routing_contact(&contact, chrono::Utc::now())
                .await
                .map_err(|_| {
                    ApiError::Unavailable("the store is unavailable; retry later".into())
                })?;
            if found.is_some_and(|c| !caller.principal.covers_site(c.contact.site.as_str())) {
                return Err(guard::deny(
                    &state,
                    &caller,
                    None,
                    "this contact's site is outside your sites",
                )
                .await);
            }
        }
        _ => {}
    }
    let id = event.id;
    let explicit_link = matches!(event.kind, EventKind::IdentityLinked);
    let res = state.ingest.ingest(event).await;
    if explicit_link && res.is_ok() {
        // Who asked for the link (the store audits each claim, merge and move it made).
        let patient = match &res {
            Ok(IngestOutcome::Accepted { patient_id, .. })
            | Ok(IngestOutcome::Duplicate { patient_id }) => Some(*patient_id),
            Ok(IngestOutcome::Routed) | Err(_) => None,
        };
        let entry = AuditEntry {
            principal_id: Some(caller.principal.id.clone()),
            principal_role: Some(caller.principal.role.as_str().to_string()),
            action: Action::Update,
            resource: "identity.link".into(),
            patient_id: patient,
            purpose: Purpose::Operations,
            reason: None,
            outcome: Outcome::Success,
            detail: Some("identity.linked event".into()),
            event_id: Some(id.to_string()),
        };
        if state.ingest.store().audit(&entry).await.is_err() {
            metrics::counter!(m::AUDIT_FAILURES_TOTAL, "resource" => "identity.link").increment(1);
        }
    }
    match res {
        Ok(IngestOutcome::Accepted { patient_id, seq }) => Ok(HttpResponse::Accepted()
            .json(json!({"id": id, "status": "stored", "patient_id": patient_id, "seq": seq}))),
        Ok(IngestOutcome::Duplicate { patient_id }) => Ok(HttpResponse::Ok()
            .json(json!({"id": id, "status": "duplicate", "patient_id": patient_id}))),
        Ok(IngestOutcome::Routed) => {
            Ok(HttpResponse::Accepted().json(json!({"id": id, "status": "applied"})))
        }
        Err(IngestError::Unavailable(_)) => Err(ApiError::Unavailable(
            "the event was not stored; retry later".into(),
        )),
        Err(IngestError::Rejected(reason)) => Err(ApiError::Unprocessable(reason.to_string())),
    }
}
