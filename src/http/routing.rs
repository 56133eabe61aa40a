//! Routing's live state: contacts (with the reasons behind each decision), queues
//! and agents; and an agent's desktop setting its own state.

use actix_web::{web, HttpResponse};
use frontdoor_actors::event::{parse_agent_state_fields, EventKind};
use frontdoor_actors::ids::SiteId;
use frontdoor_actors::routing::router::{AgentUpdate, RoutingError};
use serde_json::{json, Value};

use super::problem::ApiError;
use super::AppState;

/// `GET /v1/contacts/{contact_id}`: state, queue, priority, agent and reasons.
#[tracing::instrument(name = "http.contact", skip_all)]
pub async fn contact(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match state.ingest.routing().contact(&path).await {
        Some(c) => Ok(HttpResponse::Ok().json(c)),
        None => Err(ApiError::NotFound("routing knows no such contact".into())),
    }
}

/// `GET /v1/queues`: every queue's live state with staffing.
#[tracing::instrument(name = "http.queues", skip_all)]
pub async fn queues(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"queues": state.ingest.routing().queues().await}))
}

/// `GET /v1/agents`: each agent's presence, load, site, skills, offers and contacts.
#[tracing::instrument(name = "http.agents", skip_all)]
pub async fn agents(state: web::Data<AppState>) -> HttpResponse {
    let agents: Vec<Value> = state
        .ingest
        .routing()
        .agents()
        .await
        .into_iter()
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
    HttpResponse::Ok().json(json!({ "agents": agents }))
}

/// `POST /v1/agents/{agent_id}/state`: `{site, state, skills, capacity}`.
#[tracing::instrument(name = "http.set_agent_state", skip_all)]
pub async fn set_agent_state(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let Value::Object(mut obj) = body.into_inner() else {
        return Err(ApiError::field("body", "must be a JSON object"));
    };
    obj.insert("agent_id".into(), Value::String(path.into_inner()));
    let site = match obj.get("site").and_then(Value::as_str) {
        Some(s) => SiteId::parse(s).map_err(|r| ApiError::field("site", r))?,
        None => return Err(ApiError::field("site", "is required")),
    };
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
    let agent = state
        .ingest
        .routing()
        .agent_state(AgentUpdate {
            agent_id,
            site,
            presence,
            skills,
            capacity,
        })
        .await
        .map_err(|e| match e {
            RoutingError::Unavailable(_) => {
                ApiError::Unavailable("routing is unavailable; retry".into())
            }
            other => ApiError::Unprocessable(other.to_string()),
        })?;
    Ok(HttpResponse::Ok()
        .json(json!({"agent_id": agent.id, "state": agent.presence, "site": agent.site})))
}
