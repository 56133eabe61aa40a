//! The event contract: the one JSON envelope every channel adapter sends, parsed
//! into typed values at the edge.
//!
//! Parsing is strict about the envelope (every malformed case names its field) and
//! lenient about the future: a `type` this version does not know is kept whole as
//! [`EventKind::Unknown`] and shown in the journey, not rejected. Validation never
//! echoes a field's *value* (it may be PHI); errors name the field and the rule.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::ids::{ContactId, Email, Identifier, Mrn, PhoneNumber, PortalId, SiteId};

/// The channel an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Voice,
    Sms,
    Chat,
    Email,
    Video,
    Portal,
    Iva,
    Ehr,
    Pharmacy,
    Device,
    Desktop,
}

impl Channel {
    /// Every channel, in contract order.
    pub const ALL: [Channel; 11] = [
        Channel::Voice,
        Channel::Sms,
        Channel::Chat,
        Channel::Email,
        Channel::Video,
        Channel::Portal,
        Channel::Iva,
        Channel::Ehr,
        Channel::Pharmacy,
        Channel::Device,
        Channel::Desktop,
    ];

    /// The wire name, also used as a bounded metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Sms => "sms",
            Channel::Chat => "chat",
            Channel::Email => "email",
            Channel::Video => "video",
            Channel::Portal => "portal",
            Channel::Iva => "iva",
            Channel::Ehr => "ehr",
            Channel::Pharmacy => "pharmacy",
            Channel::Device => "device",
            Channel::Desktop => "desktop",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an agent takes work (`agent.state`'s `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Available,
    Away,
    Offline,
}

impl Presence {
    /// Every presence, in contract order.
    pub const ALL: [Presence; 3] = [Presence::Available, Presence::Away, Presence::Offline];

    /// Wire name and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Available => "available",
            Presence::Away => "away",
            Presence::Offline => "offline",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Presence> {
        Presence::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The identifiers an event carries for its patient. At least one is present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientIdentifiers {
    /// Medical record number: authoritative.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mrn: Option<Mrn>,
    /// E.164 phone number: a claim that links to a patient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<PhoneNumber>,
    /// Email address (lower-cased): a claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// Patient-portal account id: a claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portal_id: Option<PortalId>,
}

impl PatientIdentifiers {
    /// The identifiers as a list, strongest first (MRN, portal id, email, phone).
    pub fn to_list(&self) -> Vec<Identifier> {
        let mut out = Vec::with_capacity(4);
        if let Some(v) = &self.mrn {
            out.push(Identifier::Mrn(v.clone()));
        }
        if let Some(v) = &self.portal_id {
            out.push(Identifier::PortalId(v.clone()));
        }
        if let Some(v) = &self.email {
            out.push(Identifier::Email(v.clone()));
        }
        if let Some(v) = &self.phone {
            out.push(Identifier::Phone(v.clone()));
        }
        out
    }
}

/// Who wrote a `contact.message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Author {
    Patient,
    Staff,
    Bot,
}

/// One medication in a `medications.updated` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Medication {
    /// Medication name as the EHR gives it.
    pub name: String,
    /// Dose text, e.g. "500 mg".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dose: Option<String>,
    /// Frequency text, e.g. "twice daily".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<String>,
}

/// Appointment fields shared by `appointment.*` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppointmentFields {
    /// The scheduling system's appointment id.
    pub appointment_id: String,
    /// When it starts (absent on a cancellation that does not repeat it).
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// When it ends, if the scheduling system says.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// Department, e.g. dermatology.
    #[serde(default)]
    pub department: Option<String>,
    /// Reason for visit, as the patient or scheduler gave it.
    #[serde(default)]
    pub reason: Option<String>,
    /// The provider seen.
    #[serde(default)]
    pub provider: Option<String>,
    /// Clinic location.
    #[serde(default)]
    pub location: Option<String>,
    /// Telehealth link for a video visit.
    #[serde(default)]
    pub telehealth_url: Option<String>,
}

/// What a patient asks about an appointment (`appointment.requested`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppointmentAction {
    /// "Yes, I'll be there."
    Confirm,
    /// "Please cancel it."
    Cancel,
    /// "I need another time" (a scheduler or the scheduling system picks it).
    Reschedule,
}

impl AppointmentAction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentAction::Confirm => "confirm",
            AppointmentAction::Cancel => "cancel",
            AppointmentAction::Reschedule => "reschedule",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<AppointmentAction> {
        match s {
            "confirm" => Some(AppointmentAction::Confirm),
            "cancel" => Some(AppointmentAction::Cancel),
            "reschedule" => Some(AppointmentAction::Reschedule),
            _ => None,
        }
    }
}

/// The typed payload of an event, by `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// `contact.started`: a call, chat, SMS thread, email thread, video visit or bot session began.
    ContactStarted {
        /// Detected or selected intent, e.g. `prescription`.
        intent: Option<String>,
        /// The department or skill the contact asked for, if known.
        skill: Option<String>,
        /// An inbound SMS or e-mail: the patient's first message (a reply to a
        /// reminder or confirmation is read for keywords, see `outreach`).
        text: Option<String>,
    },
    /// `contact.message`: one message inside a contact.
    ContactMessage {
        from: Author,
        text: String,
    },
    /// `bot.turn`: one exchange with a virtual agent.
    BotTurn {
        resolved: bool,
        intent: Option<String>,
        /// What the patient said in this exchange.
        patient_text: Option<String>,
        /// What the bot answered.
        bot_text: Option<String>,
        /// The bot hands over after this turn whatever else happened (an intent it
        /// does not serve, such as billing, or does not know).
        hand_off: bool,
    },
    /// `contact.transferred`: moved to another department or skill.
    ContactTransferred {
        to: String,
        from_agent: Option<String>,
    },
    /// `contact.abandoned`: the patient left while waiting.
    ContactAbandoned,
    /// `contact.ended`: the contact finished.
    ContactEnded {
        disposition: Option<String>,
        summary: Option<String>,
        agent: Option<String>,
    },
    AppointmentBooked(AppointmentFields),
    AppointmentRescheduled(AppointmentFields),
    AppointmentCancelled(AppointmentFields),
    /// `appointment.no_show`: the patient did not come.
    AppointmentNoShow(AppointmentFields),
    /// `appointment.checked_in`: the patient arrived (or the visit took place).
    AppointmentCheckedIn(AppointmentFields),
    /// `appointment.requested`: the patient asked (through a virtual agent) to
    /// confirm, cancel or reschedule an appointment; the scheduling system decides.
    AppointmentRequested {
        appointment_id: String,
        action: AppointmentAction,
    },
    /// `appointment.confirmed`: the patient confirmed they will come (portal, IVR;
    /// an SMS reply "C" is read as the same).
    AppointmentConfirmed(AppointmentFields),
    /// `encounter.finished`: a visit ended, with its summary and an education link.
    EncounterFinished {
        /// The visit summary the patient may read.
        summary: Option<String>,
        /// Patient education material for the visit.
        education_url: Option<String>,
    },
    /// `medications.updated`: the full current list (replaces the previous one).
    MedicationsUpdated {
        medications: Vec<Medication>,
    },
    /// `prescription.routed`: sent to a pharmacy.
    PrescriptionRouted {
        prescription_id: Option<String>,
        medication: String,
        pharmacy: Option<String>,
    },
    /// `prescription.ready`: ready for pickup.
    PrescriptionReady {
        prescription_id: Option<String>,
        medication: String,
        pharmacy: Option<String>,
    },
    /// `device.readings`: a device summary (e.g. CGM), kept as given.
    DeviceReadings {
        device: String,
        summary: Value,
    },
    /// `note.recorded`: a clinician's or staff member's note.
    NoteRecorded {
        author: String,
        role: Option<String>,
        text: String,
    },
    /// `identity.linked`: the identifiers in `patient` belong to one person.
    IdentityLinked,
    /// `agent.state`: an agent's presence, skills and capacity.
    AgentState {
        agent_id: String,
        presence: Presence,
        skills: std::collections::BTreeMap<String, u8>,
        capacity: std::collections::BTreeMap<String, u32>,
    },
    /// `offer.accepted`: the agent took the offered contact.
    OfferAccepted {
        agent_id: String,
    },
    /// `offer.declined`: the agent declined it.
    OfferDeclined {
        agent_id: String,
    },
    /// `contact.wrapped`: the agent finished after-contact work.
    ContactWrapped {
        agent_id: String,
    },
    /// `callback.requested`: the patient waiting in a voice queue asked to be called
    /// back (the IVR sends it; the contact keeps its place).
    CallbackRequested,
    /// `callback.result`: the voice channel dialled a callback for the agent.
    CallbackResult {
        agent_id: String,
        answered: bool,
    },
    /// A type this version does not know: stored and shown, never rejected.
    Unknown,
}

/// One event type this version understands: its wire name, what its envelope must
/// carry, and how its fields parse. [`TYPES`] is the one list; adding a type is
/// adding its [`EventKind`] variant and a row there.
pub struct TypeSpec {
    /// The wire `type`, also its metric label.
    pub name: &'static str,
    /// True when the event is about one contact: `contact_id` is required.
    pub contact: bool,
    /// True for routing events (agents and offers): no `patient`, applied to routing
    /// instead of a journey.
    pub routing: bool,
    /// Parses the type's own fields (each problem is recorded on `Fields`).
    parse: fn(&mut Fields<'_>) -> Option<EventKind>,
}

/// Every event type this version understands, in contract order.
pub const TYPES: &[TypeSpec] = &[
    TypeSpec {
        name: "contact.started",
        contact: true,
        routing: false,
        parse: |f| {
            Some(EventKind::ContactStarted {
                intent: f.str_opt("intent"),
                skill: f.str_opt("skill").or_else(|| f.str_opt("department")),
                text: f.str_opt("text"),
            })
        },
    },
    TypeSpec {
        name: "contact.message",
        contact: true,
        routing: false,
        parse: parse_message,
    },
    TypeSpec {
        name: "bot.turn",
        contact: true,
        routing: false,
        parse: |f| {
            let resolved = f.bool_req("resolved");
            Some(EventKind::BotTurn {
                resolved: resolved?,
                intent: f.str_opt("intent"),
                patient_text: f.str_opt("patient_text"),
                bot_text: f.str_opt("bot_text"),
                hand_off: f.bool_opt("hand_off").unwrap_or(false),
            })
        },
    },
    TypeSpec {
        name: "contact.transferred",
        contact: true,
        routing: false,
        parse: |f| {
            let to = f.str_req("to");
            Some(EventKind::ContactTransferred {
                to: to?,
                from_agent: f.str_opt("from_agent"),
            })
        },
    },
    TypeSpec {
        name: "contact.abandoned",
        contact: true,
        routing: false,
        parse: |_| Some(EventKind::ContactAbandoned),
    },
    TypeSpec {
        name: "contact.ended",
        contact: true,
        routing: false,
        parse: |f| {
            Some(EventKind::ContactEnded {
                disposition: f.str_opt("disposition"),
                summary: f.str_opt("summary"),
                agent: f.str_opt("agent"),
            })
        },
    },
    TypeSpec {
        name: "appointment.booked",
        contact: false,
        routing: false,
        parse: |f| parse_appointment(f, true).map(EventKind::AppointmentBooked),
    },
    TypeSpec {
        name: "appointment.rescheduled",
        contact: false,
        routing: false,
        parse: |f| parse_appointment(f, true).map(EventKind::AppointmentRescheduled),
    },
    TypeSpec {
        name: "appointment.cancelled",
        contact: false,
        routing: false,
        parse: |f| parse_appointment(f, false).map(EventKind::AppointmentCancelled),
    },
    TypeSpec {
        name: "appointment.no_show",
        contact: false,
        routing: false,
        parse: |f| parse_appointment(f, false).map(EventKind::AppointmentNoShow),
    },
    TypeSpec {
        name: "appointment.checked_in",
        contact: false,
        routing: false,
        parse: |f| parse_appointment(f, false).map(EventKind::AppointmentCheckedIn),
    },
    TypeSpec {
        name: "appointment.requested",
        contact: false,
        routing: false,
        parse: |f| {
            let appointment_id = f.str_req("appointment_id");
            let action = match f.str_req("action") {
                Some(a) => match AppointmentAction::parse(&a) {
                    Some(a) => Some(a),
                    None => {
                        f.err("action", "must be confirm, cancel or reschedule");
                        None
                    }
                },
                None => None,
            };
            Some(EventKind::AppointmentRequested {
                appointment_id: appointment_id?,
                action: action?,
            })
        },
    },
    TypeSpec {
        name: "appointment.confirmed",
        contact: false,
        routing: false,
        parse: |f| parse_appointment(f, false).map(EventKind::AppointmentConfirmed),
    },
    TypeSpec {
        name: "encounter.finished",
        contact: false,
        routing: false,
        parse: |f| {
            Some(EventKind::EncounterFinished {
                summary: f.str_opt("summary"),
                education_url: f.str_opt("education_url"),
            })
        },
    },
    TypeSpec {
        name: "medications.updated",
        contact: false,
        routing: false,
        parse: parse_medications,
    },
    TypeSpec {
        name: "prescription.routed",
        contact: false,
        routing: false,
        parse: |f| {
            let (prescription_id, medication, pharmacy) = parse_prescription(f)?;
            Some(EventKind::PrescriptionRouted {
                prescription_id,
                medication,
                pharmacy,
            })
        },
    },
    TypeSpec {
        name: "prescription.ready",
        contact: false,
        routing: false,
        parse: |f| {
            let (prescription_id, medication, pharmacy) = parse_prescription(f)?;
            Some(EventKind::PrescriptionReady {
                prescription_id,
                medication,
                pharmacy,
            })
        },
    },
    TypeSpec {
        name: "device.readings",
        contact: false,
        routing: false,
        parse: parse_device_readings,
    },
    TypeSpec {
        name: "note.recorded",
        contact: false,
        routing: false,
        parse: |f| {
            let author = f.str_req("author");
            let role = f.str_opt("role");
            let text = f.str_req("text");
            Some(EventKind::NoteRecorded {
                author: author?,
                role,
                text: text?,
            })
        },
    },
    TypeSpec {
        name: "identity.linked",
        contact: false,
        routing: false,
        parse: parse_identity_linked,
    },
    TypeSpec {
        name: "agent.state",
        contact: false,
        routing: true,
        parse: parse_agent_state,
    },
    TypeSpec {
        name: "offer.accepted",
        contact: true,
        routing: true,
        parse: |f| {
            Some(EventKind::OfferAccepted {
                agent_id: parse_agent_id(f)?,
            })
        },
    },
    TypeSpec {
        name: "offer.declined",
        contact: true,
        routing: true,
        parse: |f| {
            Some(EventKind::OfferDeclined {
                agent_id: parse_agent_id(f)?,
            })
        },
    },
    TypeSpec {
        name: "contact.wrapped",
        contact: true,
        routing: true,
        parse: |f| {
            Some(EventKind::ContactWrapped {
                agent_id: parse_agent_id(f)?,
            })
        },
    },
    TypeSpec {
        name: "callback.requested",
        contact: true,
        routing: true,
        parse: |_| Some(EventKind::CallbackRequested),
    },
    TypeSpec {
        name: "callback.result",
        contact: true,
        routing: true,
        parse: |f| {
            let agent_id = parse_agent_id(f);
            let answered = f.bool_req("answered");
            Some(EventKind::CallbackResult {
                agent_id: agent_id?,
                answered: answered?,
            })
        },
    },
];

/// The wire names of [`TYPES`].
pub const KNOWN_TYPES: [&str; TYPES.len()] = {
    let mut names = [""; TYPES.len()];
    let mut i = 0;
    while i < TYPES.len() {
        names[i] = TYPES[i].name;
        i += 1;
    }
    names
};

/// The row of a known type.
pub fn type_spec(event_type: &str) -> Option<&'static TypeSpec> {
    TYPES.iter().find(|t| t.name == event_type)
}

/// Routing events are about agents and offers, not a patient.
pub fn is_routing_event(event_type: &str) -> bool {
    type_spec(event_type).is_some_and(|t| t.routing)
}

/// A parsed, validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The idempotency key.
    pub id: Uuid,
    /// The wire `type`, kept as sent (so unknown types keep their name).
    pub event_type: String,
    /// The typed payload.
    pub kind: EventKind,
    /// When it happened at the source.
    pub occurred_at: DateTime<Utc>,
    /// The site the event belongs to.
    pub site: SiteId,
    /// The channel it came from.
    pub channel: Channel,
    /// The patient's identifiers (absent only on non-patient events).
    pub patient: Option<PatientIdentifiers>,
    /// The channel's call or conversation id.
    pub contact_id: Option<ContactId>,
    /// The whole object as received, stored verbatim in the journey log.
    pub raw: Arc<Map<String, Value>>,
}

/// One field that failed validation. Never carries the field's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path of the field, e.g. `patient.phone`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Why an envelope was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("the body is not a JSON object")]
    NotAnObject,
    #[error("the body is not valid JSON: {0}")]
    Syntax(String),
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{} field(s) invalid", .0.len())]
    Fields(Vec<FieldError>),
    /// Broker only: the routing key is not `<site>.<channel>.<type>` of the envelope.
    #[error("the routing key is not <site>.<channel>.<type> of the envelope")]
    RoutingKey,
}

impl ContractError {
    /// Every value [`ContractError::reason`] answers.
    pub const REASONS: [&'static str; 4] = ["validation", "too_large", "syntax", "routing_key"];

    /// Why, as the one bounded label both edges use: the
    /// `frontdoor_events_rejected_total{reason}` label and the broker's
    /// `x-frontdoor-reason` header.
    pub fn reason(&self) -> &'static str {
        match self {
            ContractError::TooLarge { .. } => "too_large",
            ContractError::Syntax(_) | ContractError::NotAnObject => "syntax",
            ContractError::Fields(_) => "validation",
            ContractError::RoutingKey => "routing_key",
        }
    }

    /// The field errors (one synthetic `body` entry for whole-body errors).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            ContractError::Fields(f) => f.clone(),
            ContractError::RoutingKey => vec![FieldError {
                field: "routing_key".into(),
                reason: "must be <site>.<channel>.<type> of the envelope".into(),
            }],
            other => vec![FieldError {
                field: "body".into(),
                reason: other.to_string(),
            }],
        }
    }
}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn err(&mut self, field: &str, reason: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_string(),
            reason: reason.into(),
        });
    }

    fn str_opt(&mut self, field: &str) -> Option<String> {
        match self.obj.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.err(field, "must be a string");
                None
            }
        }
    }

    fn str_req(&mut self, field: &str) -> Option<String> {
        match self.obj.get(field) {
            None | Some(Value::Null) => {
                self.err(field, "is required");
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.err(field, "must not be empty");
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.err(field, "must be a string");
                None
            }
        }
    }

    fn bool_req(&mut self, field: &str) -> Option<bool> {
        match self.obj.get(field) {
            Some(Value::Bool(b)) => Some(*b),
            None | Some(Value::Null) => {
                self.err(field, "is required");
                None
            }
            Some(_) => {
                self.err(field, "must be a boolean");
                None
            }
        }
    }

    fn bool_opt(&mut self, field: &str) -> Option<bool> {
        match self.obj.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.err(field, "must be a boolean");
                None
            }
        }
    }

    fn time_opt(&mut self, field: &str) -> Option<DateTime<Utc>> {
        let s = self.str_opt(field)?;
        match DateTime::parse_from_rfc3339(&s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                self.err(field, "must be an RFC 3339 timestamp");
                None
            }
        }
    }

    fn time_req(&mut self, field: &str) -> Option<DateTime<Utc>> {
        if matches!(self.obj.get(field), None | Some(Value::Null)) {
            self.err(field, "is required");
            return None;
        }
        self.time_opt(field)
    }
}

impl Envelope {
    /// Parses and validates a request body of at most `limit` bytes.
    pub fn parse(body: &[u8], limit: usize) -> Result<Envelope, ContractError> {
        if body.len() > limit {
            return Err(ContractError::TooLarge { limit });
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ContractError::Syntax(syntax_reason(&e)))?;
        match value {
            Value::Object(obj) => Envelope::from_object(obj),
            _ => Err(ContractError::NotAnObject),
        }
    }

    /// Re-reads an envelope that was validated before and stored.
    pub fn from_stored(json: &str) -> Result<Envelope, ContractError> {
        Envelope::parse(json.as_bytes(), usize::MAX)
    }

    /// Validates a JSON object as an envelope.
    pub fn from_object(obj: Map<String, Value>) -> Result<Envelope, ContractError> {
        let mut f = Fields {
            obj: &obj,
            errors: Vec::new(),
        };
        // A NUL character is valid JSON but no text column (PostgreSQL) stores it:
        // refuse it here, naming the field, instead of failing at every retry.
        for (k, v) in &obj {
            nul_fields(k, v, &mut f.errors);
        }
        let id = match f.str_req("id") {
            Some(s) => match Uuid::parse_str(&s) {
                Ok(id) => Some(id),
                Err(_) => {
                    f.err("id", "must be a UUID");
                    None
                }
            },
            None => None,
        };
        let event_type = f.str_req("type");
        if let Some(t) = &event_type {
            if t.len() > 64
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
            {
                f.err("type", "must be at most 64 characters of [A-Za-z0-9._-]");
            }
        }
        let occurred_at = f.time_req("occurred_at");
        let site = f.str_req("site").and_then(|s| match SiteId::parse(&s) {
            Ok(s) => Some(s),
            Err(reason) => {
                f.err("site", reason);
                None
            }
        });
        let channel = f.str_req("channel").and_then(|s| match Channel::parse(&s) {
            Some(c) => Some(c),
            None => {
                f.err(
                    "channel",
                    "must be one of voice, sms, chat, email, video, portal, iva, ehr, pharmacy, device, desktop",
                );
                None
            }
        });
        let contact_id = f
            .str_opt("contact_id")
            .and_then(|s| match ContactId::parse(&s) {
                Ok(c) => Some(c),
                Err(reason) => {
                    f.err("contact_id", reason);
                    None
                }
            });
        let patient = parse_patient(&mut f);

        let event_type = event_type.unwrap_or_default();
        let spec = type_spec(&event_type);
        let routing = spec.is_some_and(|t| t.routing);
        if !routing && patient.is_none() && !f.errors.iter().any(|e| e.field.starts_with("patient"))
        {
            f.err(
                "patient",
                "is required: an object with at least one of mrn, phone, email, portal_id",
            );
        }
        // `"contact_id": null` is no contact id (a contact event without one is refused),
        // unless the field was already refused for its value.
        if spec.is_some_and(|t| t.contact)
            && contact_id.is_none()
            && !f.errors.iter().any(|e| e.field == "contact_id")
        {
            f.err("contact_id", "is required for contact events");
        }
        // A type this version does not know is kept whole, never rejected.
        let kind = match spec {
            Some(t) => (t.parse)(&mut f),
            None => Some(EventKind::Unknown),
        };
        if !f.errors.is_empty() {
            return Err(ContractError::Fields(f.errors));
        }
        match (id, occurred_at, site, channel, kind) {
            (Some(id), Some(occurred_at), Some(site), Some(channel), Some(kind)) => Ok(Envelope {
                id,
                event_type,
                kind,
                occurred_at,
                site,
                channel,
                patient,
                contact_id,
                raw: Arc::new(obj),
            }),
            // Every None above pushed a field error, so this arm is unreachable in
            // practice; answer with a generic error rather than panic.
            _ => Err(ContractError::Fields(vec![FieldError {
                field: "body".into(),
                reason: "invalid envelope".into(),
            }])),
        }
    }

    /// The stored form: the object exactly as received.
    pub fn to_json(&self) -> String {
        // unwrap-free: serialising a Map<String, Value> cannot fail.
        serde_json::to_string(&*self.raw).unwrap_or_default()
    }

    /// The event type as a bounded metric label: known types by name, the rest `other`.
    pub fn type_label(&self) -> &'static str {
        type_spec(&self.event_type).map_or("other", |t| t.name)
    }

    /// A raw field beside the envelope (for routing events parsed elsewhere).
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.raw.get(name)
    }
}

fn nul_fields(path: &str, v: &Value, errors: &mut Vec<FieldError>) {
    match v {
        Value::String(s) if s.contains('\0') => errors.push(FieldError {
            field: path.to_string(),
            reason: "must not contain a NUL character".into(),
        }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                nul_fields(&format!("{path}[{i}]"), item, errors);
            }
        }
        Value::Object(m) => {
            for (k, item) in m {
                if k.contains('\0') {
                    errors.push(FieldError {
                        field: path.to_string(),
                        reason: "must not contain a key with a NUL character".into(),
                    });
                }
                nul_fields(&format!("{path}.{k}"), item, errors);
            }
        }
        _ => {}
    }
}

fn syntax_reason(e: &serde_json::Error) -> String {
    // serde_json's messages carry line/column but never echo the input.
    format!("{} at line {} column {}", category(e), e.line(), e.column())
}

fn category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "unexpected end of input",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "invalid data",
        serde_json::error::Category::Io => "read error",
    }
}

fn parse_patient(f: &mut Fields<'_>) -> Option<PatientIdentifiers> {
    let obj = match f.obj.get("patient") {
        None | Some(Value::Null) => return None,
        Some(Value::Object(o)) => o,
        Some(_) => {
            f.err("patient", "must be an object of identifiers");
            return None;
        }
    };
    let mut ids = PatientIdentifiers::default();
    let mut any = false;
    for (key, value) in obj {
        let field = format!("patient.{key}");
        let Value::String(s) = value else {
            if !value.is_null() {
                f.err(&field, "must be a string");
            }
            continue;
        };
        let ok = match key.as_str() {
            "mrn" => Mrn::parse(s).map(|v| ids.mrn = Some(v)),
            "phone" => PhoneNumber::parse(s).map(|v| ids.phone = Some(v)),
            "email" => Email::parse(s).map(|v| ids.email = Some(v)),
            "portal_id" => PortalId::parse(s).map(|v| ids.portal_id = Some(v)),
            _ => Err("is not a known identifier (mrn, phone, email, portal_id)"),
        };
        match ok {
            Ok(()) => any = true,
            Err(reason) => f.err(&field, reason),
        }
    }
    if !any {
        if !f.errors.iter().any(|e| e.field.starts_with("patient")) {
            f.err(
                "patient",
                "must carry at least one of mrn, phone, email, portal_id",
            );
        }
        return None;
    }
    Some(ids)
}

fn parse_appointment(f: &mut Fields<'_>, needs_time: bool) -> Option<AppointmentFields> {
    let appointment_id = f.str_req("appointment_id");
    let starts_at = if needs_time {
        f.time_req("starts_at")
    } else {
        f.time_opt("starts_at")
    };
    let ends_at = f.time_opt("ends_at");
    let department = f.str_opt("department");
    let reason = f.str_opt("reason");
    let provider = f.str_opt("provider");
    let location = f.str_opt("location");
    let telehealth_url = f.str_opt("telehealth_url");
    Some(AppointmentFields {
        appointment_id: appointment_id?,
        starts_at,
        ends_at,
        department,
        reason,
        provider,
        location,
        telehealth_url,
    })
}

fn parse_prescription(f: &mut Fields<'_>) -> Option<(Option<String>, String, Option<String>)> {
    let prescription_id = f.str_opt("prescription_id");
    let medication = f.str_req("medication");
    let pharmacy = f.str_opt("pharmacy");
    Some((prescription_id, medication?, pharmacy))
}

fn parse_agent_id(f: &mut Fields<'_>) -> Option<String> {
    let id = f.str_req("agent_id")?;
    if id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        f.err("agent_id", "must be 1-64 characters of [A-Za-z0-9-_.:]");
        return None;
    }
    Some(id)
}

/// Parses the body of `agent.state` (also `POST /v1/agents/{id}/state`).
pub fn parse_agent_state_fields(obj: &Map<String, Value>) -> Result<EventKind, ContractError> {
    let mut f = Fields {
        obj,
        errors: Vec::new(),
    };
    let kind = parse_agent_state(&mut f);
    match kind {
        Some(k) if f.errors.is_empty() => Ok(k),
        _ => Err(ContractError::Fields(f.errors)),
    }
}

fn parse_agent_state(f: &mut Fields<'_>) -> Option<EventKind> {
    let agent_id = parse_agent_id(f);
    let presence = f.str_req("state").and_then(|s| {
        let p = Presence::parse(&s);
        if p.is_none() {
            f.err("state", "must be one of available, away, offline");
        }
        p
    });
    let mut skills = std::collections::BTreeMap::new();
    match f.obj.get("skills") {
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v.as_u64() {
                    Some(p @ 1..=5) if !k.is_empty() && k.len() <= 64 => {
                        skills.insert(k.clone(), p as u8);
                    }
                    _ => f.err(&format!("skills.{k}"), "must be a proficiency from 1 to 5"),
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => f.err("skills", "must be an object of skill: proficiency (1-5)"),
    }
    let mut capacity = std::collections::BTreeMap::new();
    match f.obj.get("capacity") {
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match (Channel::parse(k), v.as_u64()) {
                    (Some(ch), Some(n)) if n <= 50 => {
                        capacity.insert(ch.as_str().to_string(), n as u32);
                    }
                    (None, _) => f.err(&format!("capacity.{k}"), "is not a channel"),
                    _ => f.err(
                        &format!("capacity.{k}"),
                        "must be a whole number from 0 to 50",
                    ),
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => f.err("capacity", "must be an object of channel: capacity"),
    }
    Some(EventKind::AgentState {
        agent_id: agent_id?,
        presence: presence?,
        skills,
        capacity,
    })
}

fn parse_message(f: &mut Fields<'_>) -> Option<EventKind> {
    let from = match f.str_req("from").as_deref() {
        Some("patient") => Some(Author::Patient),
        Some("staff") => Some(Author::Staff),
        Some("bot") => Some(Author::Bot),
        Some(_) => {
            f.err("from", "must be one of patient, staff, bot");
            None
        }
        None => None,
    };
    let text = f.str_req("text");
    Some(EventKind::ContactMessage {
        from: from?,
        text: text?,
    })
}

fn parse_medications(f: &mut Fields<'_>) -> Option<EventKind> {
    let meds = match f.obj.get("medications") {
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match serde_json::from_value::<Medication>(item.clone()) {
                    Ok(m) if !m.name.trim().is_empty() => out.push(m),
                    _ => f.err(
                        &format!("medications[{i}]"),
                        "must be an object with a non-empty string name (dose and frequency optional strings)",
                    ),
                }
            }
            Some(out)
        }
        None | Some(Value::Null) => {
            f.err(
                "medications",
                "is required (the current list, may be empty)",
            );
            None
        }
        Some(_) => {
            f.err("medications", "must be an array");
            None
        }
    };
    Some(EventKind::MedicationsUpdated { medications: meds? })
}

fn parse_device_readings(f: &mut Fields<'_>) -> Option<EventKind> {
    let device = f.str_req("device");
    let summary = match f.obj.get("summary") {
        Some(v @ Value::Object(_)) => Some(v.clone()),
        None | Some(Value::Null) => {
            f.err("summary", "is required (an object of readings)");
            None
        }
        Some(_) => {
            f.err("summary", "must be an object");
            None
        }
    };
    Some(EventKind::DeviceReadings {
        device: device?,
        summary: summary?,
    })
}

fn parse_identity_linked(f: &mut Fields<'_>) -> Option<EventKind> {
    let n = match f.obj.get("patient") {
        Some(Value::Object(o)) => o.values().filter(|v| v.is_string()).count(),
        _ => 0,
    };
    if n < 2 {
        f.err(
            "patient",
            "identity.linked needs at least two identifiers that belong together",
        );
        return None;
    }
    Some(EventKind::IdentityLinked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "id": "6f1c2b1e-8f0a-4c7e-9a43-0d4c1f6a2b11",
            "type": "contact.started",
            "occurred_at": "2026-11-23T23:00:00Z",
            "site": "north",
            "channel": "chat",
            "patient": {"portal_id": "p-1"},
            "contact_id": "c-1",
            "intent": "medication_question"
        })
    }

    fn parse(v: &Value) -> Result<Envelope, ContractError> {
        Envelope::parse(v.to_string().as_bytes(), 65_536)
    }

    fn fields_of(err: ContractError) -> Vec<String> {
        err.field_errors().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_valid_contact_started_parses_into_its_typed_kind() {
        let e = parse(&base()).unwrap();
        assert_eq!(e.channel, Channel::Chat);
        assert_eq!(
            e.kind,
            EventKind::ContactStarted {
                intent: Some("medication_question".into()),
                skill: None,
                text: None,
            }
        );
        assert_eq!(e.type_label(), "contact.started");
    }

    #[test]
    fn each_missing_envelope_field_is_named() {
        for field in ["id", "type", "occurred_at", "site", "channel", "patient"] {
            let mut v = base();
            v.as_object_mut().unwrap().remove(field);
            let fields = fields_of(parse(&v).unwrap_err());
            assert!(fields.contains(&field.to_string()), "{field}: {fields:?}");
        }
    }

    #[test]
    fn bad_values_are_named_without_echoing_them() {
        let mut v = base();
        v["occurred_at"] = json!("yesterday-ish");
        v["channel"] = json!("fax");
        v["patient"] = json!({"phone": "555-CANARY"});
        let err = parse(&v).unwrap_err();
        let text = format!("{:?}", err.field_errors());
        assert!(!text.contains("CANARY") && !text.contains("yesterday"));
        let fields = fields_of(err);
        assert_eq!(fields, vec!["occurred_at", "channel", "patient.phone"]);
    }

    #[test]
    fn wrong_field_types_are_rejected() {
        let mut v = json!({
            "id": "6f1c2b1e-8f0a-4c7e-9a43-0d4c1f6a2b11", "type": "bot.turn",
            "occurred_at": "2026-11-23T23:00:00Z", "site": "north", "channel": "iva",
            "patient": {"mrn": "M1"}, "contact_id": "c", "resolved": "no"
        });
        assert_eq!(fields_of(parse(&v).unwrap_err()), vec!["resolved"]);
        v["resolved"] = json!(false);
        assert!(parse(&v).is_ok());
    }

    #[test]
    fn a_nul_character_anywhere_is_refused_naming_its_field() {
        let mut v = base();
        v["patient"] = json!({"email": "nul\u{0}byte@example.org"});
        v["medications"] = json!([{"name": "a\u{0}b"}]);
        let fields = fields_of(parse(&v).unwrap_err());
        assert!(fields.contains(&"patient.email".to_string()), "{fields:?}");
        assert!(
            fields.contains(&"medications[0].name".to_string()),
            "{fields:?}"
        );
    }

    #[test]
    fn an_oversized_body_is_rejected_before_parsing() {
        let big = vec![b' '; 70_000];
        assert!(matches!(
            Envelope::parse(&big, 65_536),
            Err(ContractError::TooLarge { .. })
        ));
    }

    #[test]
    fn an_unknown_type_is_kept_not_rejected() {
        let mut v = base();
        v["type"] = json!("survey.completed");
        v["score"] = json!(9);
        let e = parse(&v).unwrap();
        assert_eq!(e.kind, EventKind::Unknown);
        assert_eq!(e.type_label(), "other");
        assert_eq!(e.field("score"), Some(&json!(9)));
    }

    #[test]
    fn contact_events_need_a_contact_id() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("contact_id");
        assert_eq!(fields_of(parse(&v).unwrap_err()), vec!["contact_id"]);
    }

    #[test]
    fn identity_linked_needs_two_identifiers() {
        let mut v = base();
        v["type"] = json!("identity.linked");
        v["channel"] = json!("ehr");
        assert_eq!(fields_of(parse(&v).unwrap_err()), vec!["patient"]);
        v["patient"] = json!({"mrn": "MRN-1", "phone": "+15551230000"});
        assert_eq!(parse(&v).unwrap().kind, EventKind::IdentityLinked);
    }

    #[test]
    fn each_type_is_listed_once_and_routing_types_carry_no_patient() {
        let mut names: Vec<&str> = KNOWN_TYPES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TYPES.len(), "a type is listed twice");
        for t in TYPES.iter().filter(|t| t.routing) {
            let mut v = json!({
                "id": "6f1c2b1e-8f0a-4c7e-9a43-0d4c1f6a2b11", "type": t.name,
                "occurred_at": "2026-11-23T23:00:00Z", "site": "north", "channel": "desktop",
                "agent_id": "a-1", "state": "away", "answered": false
            });
            if t.contact {
                v["contact_id"] = json!("c-1");
            }
            let e = parse(&v).unwrap_or_else(|e| panic!("{}: {:?}", t.name, e.field_errors()));
            assert!(is_routing_event(&e.event_type) && e.kind != EventKind::Unknown);
            assert_eq!(e.type_label(), t.name);
        }
    }

    #[test]
    fn a_contract_error_has_one_bounded_reason() {
        assert_eq!(ContractError::TooLarge { limit: 1 }.reason(), "too_large");
        assert_eq!(ContractError::NotAnObject.reason(), "syntax");
        assert_eq!(parse(&json!({})).unwrap_err().reason(), "validation");
        assert_eq!(ContractError::RoutingKey.reason(), "routing_key");
        for e in [
            ContractError::TooLarge { limit: 1 },
            ContractError::NotAnObject,
            ContractError::Syntax(String::new()),
            ContractError::Fields(Vec::new()),
            ContractError::RoutingKey,
        ] {
            assert!(ContractError::REASONS.contains(&e.reason()), "{e}");
        }
    }

    #[test]
    fn stored_form_round_trips() {
        let e = parse(&base()).unwrap();
        assert_eq!(Envelope::from_stored(&e.to_json()).unwrap(), e);
    }
}
