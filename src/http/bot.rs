//! Self-service for virtual agents: one routine intent answered for the patient of
//! an open bot contact, and the appointment actions a patient asks a bot for.
//!
//! Access (`WhileContactOpen` in the route table): the `bot` role, only for a
//! contact that is open now on a bot channel (`iva`, `chat`, `sms`) at one of the
//! caller's sites. Anything else is the same 403 (no oracle of which contacts or
//! patients exist), audited. Every answer is minimum necessary (only the fields that
//! intent needs), audited like any read of patient data, and recorded in the journey
//! as a `bot.turn` with `resolved` true or false, through the same path as any event
//! (so two unresolved turns, a request for a person or a red flag hand over).
//!
//! | intent | answers from | resolved when |
//! | --- | --- | --- |
//! | `appointment.next` | the next booked appointment: date and local time, location, department, telehealth link, actions | there is one |
//! | `directions` | the site directory: address, parking and directions, hours, phone | the site is in the directory |
//! | `refill.status` | the journey's prescriptions: medication, routed/ready, pharmacy | there is one |
//! | `billing` | — (hands over to billing with the context) | never |
//!
//! An intent it does not know: 422 problem+json naming it, and the bot hands over.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use frontdoor_actors::event::{AppointmentAction, Channel, Envelope};
use frontdoor_actors::ids::{IdentifierKind, PatientId, SiteId};
use frontdoor_actors::journey::{AppointmentStatus, ContactState, ContactView, ContextView};
use frontdoor_actors::routing::model::RouteState;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::guard::{self, Caller};
use super::problem::ApiError;
use super::AppState;
use crate::audit::{Action, Outcome};
use crate::ingest::IngestError;

/// The channels a virtual agent answers on.
const BOT_CHANNELS: [Channel; 3] = [Channel::Iva, Channel::Chat, Channel::Sms];

/// What the same 403 says for every contact the bot may not serve.
const NO_OPEN_CONTACT: &str = "no open bot contact (iva, chat or sms) with this id at your sites";

/// The intents this endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// The next appointment.
    AppointmentNext,
    /// How to get to the site.
    Directions,
    /// Where the patient's prescriptions are.
    RefillStatus,
    /// Billing questions: always a person.
    Billing,
}

impl Intent {
    /// Every intent, in contract order.
    pub const ALL: [Intent; 4] = [
        Intent::AppointmentNext,
        Intent::Directions,
        Intent::RefillStatus,
        Intent::Billing,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::AppointmentNext => "appointment.next",
            Intent::Directions => "directions",
            Intent::RefillStatus => "refill.status",
            Intent::Billing => "billing",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Intent> {
        Intent::ALL.into_iter().find(|i| i.as_str() == s)
    }
}

/// Body of `POST /v1/bot/contacts/{contact_id}/answer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    /// The intent the bot recognised.
    intent: String,
    /// What the patient said (recorded in the turn; red flags and requests for a
    /// person are heard in it).
    #[serde(default)]
    patient_text: Option<String>,
}

/// Body of `POST /v1/bot/contacts/{contact_id}/appointment`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppointmentActionRequest {
    /// Which appointment (from the `appointment.next` answer).
    appointment_id: String,
    /// `confirm`, `cancel` or `reschedule`.
    action: String,
    /// What the patient said.
    #[serde(default)]
    patient_text: Option<String>,
}

/// The open bot contact and its patient's context, or the one 403.
struct Open {
    patient: PatientId,
    context: ContextView,
    contact: ContactView,
}

async fn open_contact(
    state: &AppState,
    caller: &Caller,
    contact_id: &str,
    now: DateTime<Utc>,
) -> Result<Open, ApiError> {
    let routed = state
        .ingest
        .store()
        .routing_contact(contact_id, now)
        .await
        .map_err(|_| ApiError::Unavailable("the store is unavailable; retry later".into()))?;
    let Some((patient, route_state)) = routed.map(|c| (c.contact.patient_id, c.contact.state))
    else {
        return Err(guard::deny(state, caller, None, NO_OPEN_CONTACT).await);
    };
    let context = state
        .ingest
        .context(patient, now)
        .await
        .map_err(|e| match e {
            IngestError::Unavailable(_) => {
                ApiError::Unavailable("the journey is unavailable; retry later".into())
            }
            IngestError::Rejected(r) => ApiError::Unprocessable(r.to_string()),
        })?;
    let contact = context
        .open_contacts
        .iter()
        .find(|c| {
            c.id.as_str() == contact_id
                && c.state == ContactState::Open
                && BOT_CHANNELS.contains(&c.channel)
                && caller.principal.covers_site(c.site.as_str())
        })
        .cloned();
    match contact {
        // A person has the contact now: the bot stops (it was told so by bot.release).
        Some(_) if route_state == RouteState::Assigned => Err(ApiError::Conflict(
            "an agent has taken this contact; the virtual agent no longer answers it".into(),
        )),
        Some(contact) => Ok(Open {
            patient: context.patient_id,
            context,
            contact,
        }),
        None => Err(guard::deny(state, caller, Some(patient), NO_OPEN_CONTACT).await),
    }
}

/// The patient's strongest identifier as an envelope's `patient` object (the turn
/// resolves to the same patient).
fn patient_object(ctx: &ContextView) -> Option<Value> {
    [
        IdentifierKind::Mrn,
        IdentifierKind::PortalId,
        IdentifierKind::Email,
        IdentifierKind::Phone,
    ]
    .into_iter()
    .find_map(|k| {
        ctx.identifiers
            .iter()
            .find(|i| i.kind == k)
            .map(|i| json!({ k.as_str(): i.value }))
    })
}

/// Records an event in the journey through the one ingest path.
async fn record(state: &AppState, open: &Open, ty: &str, fields: Value) -> Result<(), ApiError> {
    let Some(patient) = patient_object(&open.context) else {
        return Err(ApiError::Unavailable(
            "the patient has no identifier to record the turn with".into(),
        ));
    };
    let mut v = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "type": ty,
        "occurred_at": Utc::now().to_rfc3339(),
        "site": open.contact.site.as_str(),
        "channel": open.contact.channel.as_str(),
        "patient": patient,
        "contact_id": open.contact.id.as_str(),
    });
    if let (Value::Object(obj), Value::Object(extra)) = (&mut v, fields) {
        obj.extend(extra);
    }
    let body = v.to_string();
    let event = Envelope::parse(body.as_bytes(), state.max_event_bytes).map_err(|e| {
        ApiError::Unprocessable(format!("the turn could not be recorded: {}", e.reason()))
    })?;
    state
        .ingest
        .ingest(event)
        .await
        .map(|_| ())
        .map_err(|e| match e {
            IngestError::Unavailable(_) => {
                ApiError::Unavailable("the turn was not recorded; retry later".into())
            }
            IngestError::Rejected(r) => ApiError::Unprocessable(r.to_string()),
        })
}

/// The typed body, or 400 naming what is wrong (never echoing values).
fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| {
        let reason = e.to_string();
        // serde names the field (`missing field `intent``, `unknown field ...`).
        let reason = reason
            .split(" at line")
            .next()
            .unwrap_or("invalid")
            .to_string();
        ApiError::field("body", &reason)
    })
}

/// An intent name safe to repeat in an answer (a label, never free text).
fn label(intent: &str) -> Option<&str> {
    let ok = !intent.is_empty()
        && intent.len() <= 64
        && intent
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    ok.then_some(intent)
}

/// An answer: what the bot says, the structured fields, and whether it resolved.
struct Answer {
    resolved: bool,
    hand_off: bool,
    text: String,
    fields: Map<String, Value>,
}

/// `t` in the site's local time (UTC for a site the directory lacks): date, time,
/// zone abbreviation.
fn local(state: &AppState, site: &SiteId, t: DateTime<Utc>) -> (String, String, String) {
    let l = state.sites.local_time(site, t);
    (
        l.format("%a %-d %b %Y").to_string(),
        l.format("%H:%M").to_string(),
        l.format("%Z").to_string(),
    )
}

fn appointment_next(state: &AppState, open: &Open, now: DateTime<Utc>) -> Answer {
    let next = open
        .context
        .appointments
        .iter()
        .filter(|a| {
            matches!(
                a.status,
                AppointmentStatus::Booked | AppointmentStatus::Rescheduled
            )
        })
        .filter(|a| a.starts_at.is_some_and(|t| t >= now))
        .min_by_key(|a| a.starts_at);
    let Some((a, starts_at)) = next.and_then(|a| a.starts_at.map(|t| (a, t))) else {
        return Answer {
            resolved: false,
            hand_off: false,
            text: "I could not find an upcoming appointment for you.".into(),
            fields: Map::new(),
        };
    };
    let (date, time, zone) = local(state, &open.contact.site, starts_at);
    let mut f = Map::new();
    f.insert("appointment_id".into(), a.id.clone().into());
    f.insert("starts_at".into(), starts_at.to_rfc3339().into());
    f.insert("date".into(), date.clone().into());
    f.insert("time".into(), time.clone().into());
    f.insert("time_zone".into(), zone.clone().into());
    for (k, v) in [
        ("department", &a.department),
        ("location", &a.location),
        ("telehealth_url", &a.telehealth_url),
    ] {
        if let Some(v) = v {
            f.insert(k.into(), v.clone().into());
        }
    }
    f.insert("actions".into(), json!(["confirm", "cancel", "reschedule"]));
    let place = match (&a.telehealth_url, &a.location) {
        (Some(_), _) => " (video visit: the link is in your messages)".to_string(),
        (None, Some(l)) => format!(" at {l}"),
        (None, None) => String::new(),
    };
    let dept = a
        .department
        .as_ref()
        .map(|d| format!(", {d}"))
        .unwrap_or_default();
    Answer {
        resolved: true,
        hand_off: false,
        text: format!("Your next appointment is on {date} at {time} {zone}{dept}{place}."),
        fields: f,
    }
}

fn directions(state: &AppState, open: &Open) -> Answer {
    match state.sites.get(&open.contact.site) {
        Some(site) => {
            let now = Utc::now();
            let mut f = Map::new();
            for (k, v) in [
                ("name", &site.name),
                ("address", &site.address),
                ("directions", &site.directions),
                ("phone", &site.phone),
            ] {
                if !v.is_empty() {
                    f.insert(k.into(), v.clone().into());
                }
            }
            let open_now = site.is_open(now);
            f.insert("open_now".into(), open_now.into());
            let next = site.next_opening(now);
            if let Some(t) = next.filter(|_| !open_now) {
                f.insert("next_opening".into(), t.to_rfc3339().into());
            }
            f.insert("hours".into(), hours_json(site));
            let when = match (open_now, next) {
                (true, _) => "We are open now.".to_string(),
                (false, Some(t)) => format!(
                    "We open {}.",
                    state.sites.patient_time(&open.contact.site, t)
                ),
                (false, None) => String::new(),
            };
            let text = [
                site.name.as_str(),
                site.address.as_str(),
                site.directions.as_str(),
                when.as_str(),
                &if site.phone.is_empty() {
                    String::new()
                } else {
                    format!("Phone {}.", site.phone)
                },
            ]
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
            Answer {
                resolved: true,
                hand_off: false,
                text,
                fields: f,
            }
        }
        None => Answer {
            resolved: false,
            hand_off: false,
            text: "I do not have directions for this clinic.".into(),
            fields: Map::new(),
        },
    }
}

/// A site's weekly hours as `{ "mon": ["08:00-17:00"], ... }` (local time).
fn hours_json(site: &frontdoor_actors::sites::Site) -> Value {
    use chrono::Weekday::*;
    let mut m = Map::new();
    for (key, day) in [
        ("mon", Mon),
        ("tue", Tue),
        ("wed", Wed),
        ("thu", Thu),
        ("fri", Fri),
        ("sat", Sat),
        ("sun", Sun),
    ] {
        let list: Vec<Value> = site
            .hours
            .on(day)
            .iter()
            .map(|(o, c)| format!("{}-{}", o.format("%H:%M"), c.format("%H:%M")).into())
            .collect();
        if !list.is_empty() {
            m.insert(key.into(), Value::Array(list));
        }
    }
    Value::Object(m)
}

fn refill_status(open: &Open) -> Answer {
    let list: Vec<Value> = open
        .context
        .prescriptions
        .iter()
        .map(|p| {
            json!({
                "medication": p.medication, "status": p.status,
                "pharmacy": p.pharmacy, "updated_at": p.updated_at,
            })
        })
        .collect();
    if list.is_empty() {
        return Answer {
            resolved: false,
            hand_off: false,
            text: "I could not find a prescription in progress for you.".into(),
            fields: Map::new(),
        };
    }
    let text = open
        .context
        .prescriptions
        .iter()
        .map(|p| {
            let status = serde_json::to_value(p.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let at = p
                .pharmacy
                .as_ref()
                .map(|ph| format!(" at {ph}"))
                .unwrap_or_default();
            match status.as_str() {
                "ready" => format!("{} is ready for pickup{at}.", p.medication),
                _ => format!("{} has been sent{at} and is not ready yet.", p.medication),
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut f = Map::new();
    f.insert("prescriptions".into(), Value::Array(list));
    Answer {
        resolved: true,
        hand_off: false,
        text,
        fields: f,
    }
}

/// `POST /v1/bot/contacts/{contact_id}/answer` `{intent, patient_text?}`.
#[tracing::instrument(name = "http.bot_answer", skip_all)]
pub async fn answer(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let now = Utc::now();
    // The contact is decided first: a caller without one learns nothing else.
    let open = open_contact(&state, &caller, &path, now).await?;
    let req: AnswerRequest = typed(body.into_inner())?;
    let Some(intent) = Intent::parse(req.intent.trim()) else {
        // Unknown: the bot hands over, and says which intent it was.
        let named = label(req.intent.trim());
        record(
            &state,
            &open,
            "bot.turn",
            json!({"resolved": false, "intent": named.unwrap_or("unknown"),
                   "patient_text": req.patient_text, "hand_off": true}),
        )
        .await?;
        let known: Vec<&str> = Intent::ALL.iter().map(|i| i.as_str()).collect();
        return Err(ApiError::UnprocessableField {
            detail: format!(
                "unknown intent {}; known: {}; the contact is handed to a person",
                named
                    .map(|n| format!("'{n}'"))
                    .unwrap_or_else(|| "(not a label)".into()),
                known.join(", ")
            ),
            field: "intent".into(),
        });
    };
    let a = match intent {
        Intent::AppointmentNext => appointment_next(&state, &open, now),
        Intent::Directions => directions(&state, &open),
        Intent::RefillStatus => refill_status(&open),
        Intent::Billing => Answer {
            resolved: false,
            hand_off: true,
            text: "Billing questions are answered by our billing team.".into(),
            fields: Map::new(),
        },
    };
    guard::audit_success(
        &state,
        caller.audit(
            Action::Read,
            Some(open.patient),
            Outcome::Success,
            Some(format!("bot intent {}", intent.as_str())),
        ),
    )
    .await?;
    record(
        &state,
        &open,
        "bot.turn",
        json!({"resolved": a.resolved, "intent": intent.as_str(),
               "patient_text": req.patient_text, "bot_text": a.text, "hand_off": a.hand_off}),
    )
    .await?;
    let mut out = a.fields;
    out.insert("intent".into(), intent.as_str().into());
    out.insert("resolved".into(), a.resolved.into());
    out.insert("handed_over".into(), a.hand_off.into());
    out.insert("text".into(), a.text.into());
    Ok(HttpResponse::Ok().json(Value::Object(out)))
}

/// `POST /v1/bot/contacts/{contact_id}/appointment` `{appointment_id, action}`: the
/// patient confirms, cancels or asks to reschedule their upcoming appointment. It
/// becomes an `appointment.requested` event (and an `appointment.request` command to
/// the scheduling system) and a resolved `bot.turn`.
#[tracing::instrument(name = "http.bot_appointment", skip_all)]
pub async fn appointment_action(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let now = Utc::now();
    let open = open_contact(&state, &caller, &path, now).await?;
    let req: AppointmentActionRequest = typed(body.into_inner())?;
    let Some(action) = AppointmentAction::parse(req.action.trim()) else {
        return Err(ApiError::field(
            "action",
            "must be confirm, cancel or reschedule",
        ));
    };
    let upcoming = open.context.appointments.iter().any(|a| {
        a.id == req.appointment_id
            && matches!(
                a.status,
                AppointmentStatus::Booked | AppointmentStatus::Rescheduled
            )
            && a.starts_at.is_some_and(|t| t >= now)
    });
    guard::audit_success(
        &state,
        caller.audit(
            Action::Update,
            Some(open.patient),
            if upcoming {
                Outcome::Success
            } else {
                Outcome::NotFound
            },
            Some(format!("bot appointment {}", action.as_str())),
        ),
    )
    .await?;
    if !upcoming {
        return Err(ApiError::UnprocessableField {
            detail: "the patient has no upcoming appointment with this id".into(),
            field: "appointment_id".into(),
        });
    }
    record(
        &state,
        &open,
        "appointment.requested",
        json!({"appointment_id": req.appointment_id, "action": action.as_str()}),
    )
    .await?;
    let text = match action {
        AppointmentAction::Confirm => "Thank you, your appointment is confirmed.",
        AppointmentAction::Cancel => "I have asked the clinic to cancel your appointment.",
        AppointmentAction::Reschedule => {
            "I have asked the clinic to find you another time; they will contact you."
        }
    };
    record(
        &state,
        &open,
        "bot.turn",
        json!({"resolved": true, "intent": format!("appointment.{}", action.as_str()),
               "patient_text": req.patient_text, "bot_text": text}),
    )
    .await?;
    Ok(HttpResponse::Accepted().json(json!({
        "appointment_id": req.appointment_id, "action": action.as_str(),
        "status": "requested", "text": text,
    })))
}
