//! Routing's live state: contacts (with the reasons behind each decision), queues
//! and agents; and an agent's desktop setting its own state.
//!
//! A contact's record is patient data (patient id, intent, bot transcript): it is
//! decided per patient like the context ([`guard::authorize_patient`]) and audited.
//! Supervisors see the queues and agents of their sites only. Whoever sets an
//! agent's state (the agent itself, a supervisor, an admin) must cover both the
//! site the agent is at and the site it announces.

use actix_web::{web, HttpResponse};
use frontdoor_actors::event::{parse_agent_state_fields, EventKind};
use frontdoor_actors::ids::SiteId;
use frontdoor_actors::routing::router::{AgentUpdate, RoutingError, RoutingInput, RoutingOutput};
use serde_json::{json, Value};

use super::guard::{self, Caller};
use super::problem::ApiError;
use super::routes::Access;
use super::AppState;
use crate::audit::{Action, Outcome};

/// `GET /v1/contacts/{contact_id}`: state, queue, priority, agent and reasons.
#[tracing::instrument(name = "http.contact", skip_all)]
pub async fn contact(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let found = state
        .ingest
        .store()
        .routing_contact(&path, chrono::Utc::now())
        .await
        .map_err(|_| ApiError::Unavailable("the store is unavailable; retry later".into()))?;
    let patient = found.as_ref().map(|c| c.contact.patient_id);
    if caller.access == Access::WithReason {
        // A supervisor: the contact's site, not the patient's history, is the scope.
        // An unknown contact gets the same answer as one of another site (no oracle),
        // unless the supervisor's scope is every site.
        let in_scope = match &found {
            Some(c) => [c.contact.site.as_str(), c.contact.origin_site.as_str()]
                .iter()
                .any(|s| caller.principal.covers_site(s)),
            None => caller.principal.all_sites(),
        };
        if !in_scope {
            return Err(guard::deny(
                &state,
                &caller,
                patient,
                "this contact is outside your sites",
            )
            .await);
        }
    } else {
        guard::authorize_patient(&state, &caller, patient, patient).await?;
    }
    match found {
        Some(c) => {
            guard::audit_success(
                &state,
                caller.audit(Action::Read, patient, Outcome::Success, None),
            )
            .await?;
            Ok(HttpResponse::Ok().json(c))
        }
        None => {
            guard::audit_success(
                &state,
                caller.audit(Action::Read, None, Outcome::NotFound, None),
            )
            .await?;
            Err(ApiError::NotFound("routing knows no such contact".into()))
        }
    }
}

/// `GET /v1/queues`: every queue's live state with staffing (the router's, on
/// whichever node leads).
#[tracing::instrument(name = "http.queues", skip_all)]
pub async fn queues(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let mut queues = state
        .ingest
        .queues()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    queues.retain(|q| caller.principal.covers_site(q.site.as_str()));
    Ok(HttpResponse::Ok().json(json!({ "queues": queues })))
}

/// `GET /v1/agents`: each agent's presence, load, site, skills, offers and contacts.
#[tracing::instrument(name = "http.agents", skip_all)]
pub async fn agents(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let agents: Vec<Value> = state
        .ingest
        .store()
        .routing_agents()
        .await
        .map_err(|_| ApiError::Unavailable("the store is unavailable; retry later".into()))?
        .into_iter()
        .filter(|a| caller.principal.covers_site(a.site.as_str()))
        .map(|a| {
            let view = a.view();
            json!({
                "agent_id": a.id, "site": a.site, "state": a.presence, "skills": a.skills,
                "capacity": a.capacity, "load": view.load,
                "offers": a.offers.keys().collect::<Vec<_>>(),
                "contacts": a.assignments.keys().collect::<Vec<_>>(),
                "idle_since": a.idle_since,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "agents": agents })))
}

/// `POST /v1/agents/{agent_id}/state`: `{site, state, skills, capacity}`.
#[tracing::instrument(name = "http.set_agent_state", skip_all)]
pub async fn set_agent_state(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let Value::Object(mut obj) = body.into_inner() else {
        return Err(ApiError::field("body", "must be a JSON object"));
    };
    let path = path.into_inner();
    obj.insert("agent_id".into(), Value::String(path.clone()));
    let site = match obj.get("site").and_then(Value::as_str) {
        Some(s) => SiteId::parse(s).map_err(|r| ApiError::field("site", r))?,
        None => return Err(ApiError::field("site", "is required")),
    };
    // Agents, supervisors and admins alike: where the agent is and where it goes
    // must both be within the caller's sites.
    guard::authorize_agent_sites(&state, &caller, &path, Some(&site)).await?;
    let kind = parse_agent_state_fields(&obj).map_err(|e| ApiError::Invalid {
        detail: format!("the agent state was rejected: {e}"),
        errors: e.field_errors(),
    })?;
    let EventKind::AgentState {
        agent_id,
        presence,
        skills,
        capacity,
    } = kind
    else {
        return Err(ApiError::field("body", "is not an agent state"));
    };
    let update = AgentUpdate {
        agent_id: agent_id.clone(),
        site: site.clone(),
        presence,
        skills,
        capacity,
    };
    let answer = state
        .ingest
        .route_input(RoutingInput::AgentState(update), uuid::Uuid::new_v4())
        .await
        .map_err(|e| match e {
            RoutingError::Unavailable(_) | RoutingError::NotLeader => {
                ApiError::Unavailable("routing is unavailable; retry".into())
            }
            other => ApiError::Unprocessable(other.to_string()),
        })?;
    Ok(match answer {
        RoutingOutput::Agent { agent } => HttpResponse::Ok()
            .json(json!({"agent_id": agent.id, "state": agent.presence, "site": agent.site})),
        // A cluster whose leader did not answer in time: the state is on the
        // routing queue and the leader applies it.
        _ => HttpResponse::Accepted()
            .json(json!({"agent_id": agent_id, "state": presence, "site": site, "queued": true})),
    })
}

/// `POST /v1/contacts/{contact_id}/callback`: the patient waiting in a voice queue
/// asked to be called back (the IVR asks, for the caller). The contact keeps its
/// place; `callback.dial` goes out when an agent takes it. 409 when the contact is
/// not waiting in a voice queue; the contact's site must be one of the caller's.
#[tracing::instrument(name = "http.request_callback", skip_all)]
pub async fn request_callback(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let contact_id = path.into_inner();
    let found = state
        .ingest
        .store()
        .routing_contact(&contact_id, chrono::Utc::now())
        .await
        .map_err(|_| ApiError::Unavailable("the store is unavailable; retry later".into()))?;
    let Some(c) = found else {
        return Err(ApiError::Conflict(
            "routing has no waiting contact with this id".into(),
        ));
    };
    let in_scope = [c.contact.site.as_str(), c.contact.origin_site.as_str()]
        .iter()
        .any(|s| caller.principal.covers_site(s));
    if !in_scope {
        return Err(guard::deny(&state, &caller, None, "this contact is outside your sites").await);
    }
    let answer = state
        .ingest
        .route_input(
            RoutingInput::Callback {
                contact_id: contact_id.clone(),
            },
            uuid::Uuid::new_v4(),
        )
        .await
        .map_err(|e| match e {
            RoutingError::NotWaiting => ApiError::Conflict(
                "the contact is not waiting in a voice queue; no callback".into(),
            ),
            RoutingError::UnknownContact => {
                ApiError::Conflict("routing has no waiting contact with this id".into())
            }
            RoutingError::Unavailable(_) | RoutingError::NotLeader => {
                ApiError::Unavailable("routing is unavailable; retry".into())
            }
            other => ApiError::Unprocessable(other.to_string()),
        })?;
    Ok(match answer {
        RoutingOutput::Contact { contact: Some(c) } => HttpResponse::Ok().json(json!({
            "contact_id": contact_id, "state": c.contact.state,
            "callback": c.contact.callback, "waited_secs": c.waited_secs,
        })),
        _ => HttpResponse::Accepted().json(json!({"contact_id": contact_id, "queued": true})),
    })
}
