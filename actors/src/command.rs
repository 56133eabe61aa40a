//! Commands: what the runtime tells channel adapters, agent desktops and
//! supervisors to do. They are written to the outbox in the same transaction as the
//! state change that causes them and relayed to the broker afterwards.
//!
//! A command's id is derived from what caused it (the event id, or the offer id)
//! and its type, so a retried relay or a re-run of the same decision yields the
//! same command, never a second different one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::event::Channel;
use crate::ids::{IdentifierKind, PatientId, SiteId};
use crate::journey::{AppointmentStatus, Journey, PrescriptionStatus};

/// Namespace for deterministic command ids (UUIDv5).
const COMMAND_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_0c2e_94d1_4d0a_8f2b_7a9c_3e51_d402);

/// The kinds of command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandType {
    /// Send an SMS or email to the patient (confirmation, prescription ready).
    #[serde(rename = "notify.send")]
    NotifySend,
    /// Offer a contact to an agent's desktop.
    #[serde(rename = "contact.offer")]
    ContactOffer,
    /// Connect a contact (a call) to an agent.
    #[serde(rename = "contact.route")]
    ContactRoute,
    /// Tell supervisors a contact escalated.
    #[serde(rename = "escalation.raised")]
    EscalationRaised,
    /// Internal to a cluster: a routing input on its way to the router (the
    /// leader). Relayed to the routing queue, never to adapters.
    #[serde(rename = "routing.request")]
    RoutingRequest,
    /// File a FHIR `Communication` (a staff exchange that ended) in the EHR.
    #[serde(rename = "ehr.document")]
    EhrDocument,
    /// Suggest to the EHR's registrars an identifier Front Door learned (never an
    /// automatic change).
    #[serde(rename = "ehr.identity")]
    EhrIdentity,
    /// Tell the bot or channel what to say now (a red flag: call 911 / 988).
    #[serde(rename = "bot.instruct")]
    BotInstruct,
    /// Tell the virtual agent to stop: a human takes over (with the wait).
    #[serde(rename = "bot.release")]
    BotRelease,
    /// Tell the contact's channel its place and estimated wait.
    #[serde(rename = "queue.announce")]
    QueueAnnounce,
    /// Call the patient back: an agent is reserved for them.
    #[serde(rename = "callback.dial")]
    CallbackDial,
    /// Ask the scheduling system to confirm, cancel or reschedule an appointment
    /// (what a patient asked a virtual agent).
    #[serde(rename = "appointment.request")]
    AppointmentRequest,
    /// The queue is closed: offer the virtual agent or a callback.
    #[serde(rename = "after_hours.offer")]
    AfterHoursOffer,
}

impl CommandType {
    /// The wire name (also the last part of the routing key and a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            CommandType::NotifySend => "notify.send",
            CommandType::ContactOffer => "contact.offer",
            CommandType::ContactRoute => "contact.route",
            CommandType::EscalationRaised => "escalation.raised",
            CommandType::RoutingRequest => "routing.request",
            CommandType::EhrDocument => "ehr.document",
            CommandType::EhrIdentity => "ehr.identity",
            CommandType::BotInstruct => "bot.instruct",
            CommandType::BotRelease => "bot.release",
            CommandType::QueueAnnounce => "queue.announce",
            CommandType::CallbackDial => "callback.dial",
            CommandType::AppointmentRequest => "appointment.request",
            CommandType::AfterHoursOffer => "after_hours.offer",
        }
    }
}

/// One command for the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Deterministic id (the broker `message_id`).
    pub id: Uuid,
    /// What to do.
    #[serde(rename = "type")]
    pub command_type: CommandType,
    /// Site it is for (routing key part).
    pub site: SiteId,
    /// Channel it goes out on (routing key part).
    pub channel: Channel,
    /// When it was decided.
    pub issued_at: DateTime<Utc>,
    /// The event or decision that caused it.
    pub caused_by: Uuid,
    /// The patient concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<PatientId>,
    /// Type-specific fields.
    pub payload: Map<String, Value>,
}

/// The id of a command of `command_type` caused by `caused_by`, with `discriminator`.
fn derived_id(caused_by: Uuid, command_type: CommandType, discriminator: &str) -> Uuid {
    let name = format!("{caused_by}:{}:{discriminator}", command_type.as_str());
    Uuid::new_v5(&COMMAND_NAMESPACE, name.as_bytes())
}

impl Command {
    /// The id of the routing request a patient event `cause` wrote (a cluster's
    /// router records its inputs under it; `frontdoor replay` finds the event's place
    /// in the router's order by it).
    pub fn routing_request_id(cause: Uuid) -> Uuid {
        derived_id(cause, CommandType::RoutingRequest, "route")
    }

    /// A command whose id is derived from `caused_by`, its type and a discriminator.
    #[allow(clippy::too_many_arguments)] // each is a distinct wire field; a builder would only rename them
    pub fn new(
        command_type: CommandType,
        caused_by: Uuid,
        discriminator: &str,
        site: SiteId,
        channel: Channel,
        issued_at: DateTime<Utc>,
        patient_id: Option<PatientId>,
        payload: Map<String, Value>,
    ) -> Command {
        Command {
            id: derived_id(caused_by, command_type, discriminator),
            command_type,
            site,
            channel,
            issued_at,
            caused_by,
            patient_id,
            payload,
        }
    }

    /// A routing request written with the event that caused it, so it reaches
    /// the router (through the outbox and the routing queue) exactly when the event
    /// is stored. Its payload is `{"input": <RoutingInput>}`.
    pub fn routing_request(
        req: &crate::routing::request::RouteRequest,
        cause: Uuid,
        site: SiteId,
        channel: Channel,
        issued_at: DateTime<Utc>,
        patient_id: PatientId,
    ) -> Command {
        let input = crate::routing::router::RoutingInput::Route(req.clone());
        let mut payload = Map::new();
        payload.insert(
            "input".into(),
            serde_json::to_value(&input).unwrap_or(Value::Null),
        );
        Command::new(
            CommandType::RoutingRequest,
            cause,
            "route",
            site,
            channel,
            issued_at,
            Some(patient_id),
            payload,
        )
    }

    /// The broker routing key: `<site>.<channel>.<command>`.
    pub fn routing_key(&self) -> String {
        format!(
            "{}.{}.{}",
            self.site,
            self.channel,
            self.command_type.as_str()
        )
    }

    /// The wire body: envelope fields and the payload side by side.
    pub fn to_wire(&self) -> Value {
        let mut obj = self.payload.clone();
        obj.insert("id".into(), Value::String(self.id.to_string()));
        obj.insert(
            "type".into(),
            Value::String(self.command_type.as_str().into()),
        );
        obj.insert("site".into(), Value::String(self.site.to_string()));
        obj.insert(
            "channel".into(),
            Value::String(self.channel.as_str().into()),
        );
        obj.insert(
            "issued_at".into(),
            Value::String(self.issued_at.to_rfc3339()),
        );
        obj.insert(
            "caused_by".into(),
            Value::String(self.caused_by.to_string()),
        );
        if let Some(p) = self.patient_id {
            obj.insert("patient_id".into(), Value::String(p.to_string()));
        }
        Value::Object(obj)
    }
}

/// The `appointment.request` an `appointment.requested` causes: the scheduling
/// system (through the EHR adapter) confirms, cancels or finds another time, and
/// answers with the usual appointment events. Only for an appointment the journey
/// knows.
pub fn appointment_requests(event: &crate::event::Envelope, journey: &Journey) -> Vec<Command> {
    let crate::event::EventKind::AppointmentRequested {
        appointment_id,
        action,
    } = &event.kind
    else {
        return Vec::new();
    };
    let Some(appt) = journey.appointments.get(appointment_id) else {
        return Vec::new();
    };
    let mut payload = Map::new();
    payload.insert("appointment_id".into(), appointment_id.clone().into());
    payload.insert("action".into(), action.as_str().into());
    if let Some(c) = &event.contact_id {
        payload.insert("contact_id".into(), c.to_string().into());
    }
    if let Some(d) = &appt.department {
        payload.insert("department".into(), d.clone().into());
    }
    if let Some(t) = appt.starts_at {
        payload.insert("starts_at".into(), t.to_rfc3339().into());
    }
    vec![Command::new(
        CommandType::AppointmentRequest,
        event.id,
        appointment_id,
        event.site.clone(),
        Channel::Ehr,
        event.occurred_at,
        Some(journey.patient_id),
        payload,
    )]
}

/// Where patient notifications point (paperwork links).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifySettings {
    /// Base URL of the pre-visit paperwork page; the appointment id is appended.
    pub paperwork_base_url: String,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            paperwork_base_url: "https://portal.example.org/paperwork/".into(),
        }
    }
}

/// The notifications an event causes, given the journey before it is applied.
///
/// - `appointment.booked` / `appointment.rescheduled`: a confirmation with date and
///   time in the site's local time, the location (or telehealth link), the site's
///   address, phone and directions, and the paperwork link; not again for a
///   booking the patient was already confirmed at that time (an EHR re-sending an
///   appointment whose other details changed). A telehealth visit also gets an
///   e-mail (`appointment.telehealth`) with the video link and login instructions.
/// - `prescription.ready`: a pickup notice with the pharmacy, the latest visit
///   summary and an education link when one is known.
///
/// They go by SMS when the patient has a phone, else by email; a patient with
/// neither gets none (the channel adapter has nowhere to send it). Whether each
/// goes out now is for [`crate::outreach::disposition`] to say (consent, quiet hours).
pub fn notifications(
    event: &crate::event::Envelope,
    journey: &Journey,
    outreach: &crate::outreach::Outreach,
) -> Vec<Command> {
    use crate::event::EventKind;
    let reach = reach_of(event, journey);
    let Some((channel, to)) = reach.preferred() else {
        return Vec::new();
    };
    let mut payload = Map::new();
    payload.insert("to".into(), to.into());
    let mut extra = Vec::new();
    match &event.kind {
        EventKind::AppointmentBooked(a) | EventKind::AppointmentRescheduled(a) => {
            if already_confirmed(journey, a) {
                return Vec::new();
            }
            let template = if matches!(event.kind, EventKind::AppointmentBooked(_)) {
                "appointment.confirmation"
            } else {
                "appointment.rescheduled"
            };
            // The appointment as it will be once this event is applied.
            let mut after = journey.clone();
            after.apply(u64::MAX, event);
            let Some(view) = after.appointments.get(&a.appointment_id) else {
                return Vec::new();
            };
            payload.insert("template".into(), template.into());
            payload.extend(outreach.appointment_fields(&event.site, view));
            payload.insert(
                "paperwork_url".into(),
                format!("{}{}", outreach.notify.paperwork_base_url, a.appointment_id).into(),
            );
            if let (Some(url), Some(email), true) = (
                &view.telehealth_url,
                &reach.email,
                outreach.settings.telehealth_email,
            ) {
                let mut p = outreach.appointment_fields(&event.site, view);
                p.insert("to".into(), email.clone().into());
                p.insert("template".into(), "appointment.telehealth".into());
                p.insert("telehealth_url".into(), url.clone().into());
                p.insert(
                    "instructions".into(),
                    outreach.telehealth_instructions(&event.site).into(),
                );
                extra.push(Command::new(
                    CommandType::NotifySend,
                    event.id,
                    "telehealth",
                    event.site.clone(),
                    Channel::Email,
                    event.occurred_at,
                    Some(journey.patient_id),
                    p,
                ));
            }
        }
        EventKind::PrescriptionReady {
            prescription_id,
            medication,
            pharmacy,
        } => {
            // Sent once per prescription, even if the pharmacy repeats the event.
            let key = prescription_id
                .clone()
                .unwrap_or_else(|| medication.clone());
            if journey
                .prescriptions
                .get(&key)
                .is_some_and(|p| p.status == PrescriptionStatus::Ready)
            {
                return Vec::new();
            }
            payload.insert("template".into(), "prescription.ready".into());
            payload.insert("medication".into(), medication.clone().into());
            if let Some(p) = pharmacy {
                payload.insert("pharmacy".into(), p.clone().into());
            }
            let education = event
                .field("education_url")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .or_else(|| {
                    journey
                        .visit_summary
                        .as_ref()
                        .and_then(|v| v.education_url.clone())
                });
            if let Some(v) = journey.visit_summary.as_ref() {
                if !v.summary.is_empty() {
                    payload.insert("visit_summary".into(), v.summary.clone().into());
                }
            }
            if let Some(url) = education {
                payload.insert("education_url".into(), url.into());
            }
        }
        _ => return Vec::new(),
    }
    let mut out = vec![Command::new(
        CommandType::NotifySend,
        event.id,
        "patient",
        event.site.clone(),
        channel,
        event.occurred_at,
        Some(journey.patient_id),
        payload,
    )];
    out.extend(extra);
    out
}

/// Where the patient can be reached: the event's own phone and e-mail first, then
/// the journey's.
pub fn reach_of(event: &crate::event::Envelope, journey: &Journey) -> crate::outreach::Reach {
    crate::outreach::Reach {
        phone: event
            .patient
            .as_ref()
            .and_then(|p| p.phone.as_ref().map(|v| v.as_str().to_string()))
            .or_else(|| find_identifier(journey, IdentifierKind::Phone)),
        email: event
            .patient
            .as_ref()
            .and_then(|p| p.email.as_ref().map(|v| v.as_str().to_string()))
            .or_else(|| find_identifier(journey, IdentifierKind::Email)),
    }
}

/// True when the journey already holds this appointment, booked (or rescheduled) for
/// the same start: the patient has its confirmation.
fn already_confirmed(journey: &Journey, a: &crate::event::AppointmentFields) -> bool {
    journey
        .appointments
        .get(&a.appointment_id)
        .is_some_and(|known| {
            matches!(
                known.status,
                AppointmentStatus::Booked | AppointmentStatus::Rescheduled
            ) && known.starts_at.is_some()
                && known.starts_at == a.starts_at
        })
}

fn find_identifier(journey: &Journey, kind: IdentifierKind) -> Option<String> {
    journey
        .identifiers
        .iter()
        .find(|i| i.kind == kind)
        .map(|i| i.value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routing_requests_id_is_known_from_the_event_that_caused_it() {
        let cause = Uuid::new_v4();
        let req = crate::routing::request::RouteRequest::Abandoned {
            contact_id: crate::ids::ContactId::parse("c-1").unwrap(),
        };
        let c = Command::routing_request(
            &req,
            cause,
            SiteId::parse("north").unwrap(),
            Channel::Voice,
            Utc::now(),
            PatientId::new(),
        );
        assert_eq!(Command::routing_request_id(cause), c.id);
        assert_ne!(Command::routing_request_id(Uuid::new_v4()), c.id);
    }
    use crate::event::Envelope;
    use crate::journey::Limits;
    use serde_json::json;

    fn ev(v: Value) -> Envelope {
        Envelope::parse(v.to_string().as_bytes(), 1 << 20).unwrap()
    }

    fn booked() -> Envelope {
        ev(json!({
            "id": "0d6c3c1e-2a8b-4f7e-b1d1-8d1b3c9a0e11", "type": "appointment.booked",
            "occurred_at": "2026-11-26T23:00:00Z", "site": "north", "channel": "portal",
            "patient": {"mrn": "M1", "phone": "+15550100001"},
            "appointment_id": "A1", "starts_at": "2026-11-30T09:30:00Z",
            "department": "dermatology", "location": "North Clinic"
        }))
    }

    #[test]
    fn a_booking_sends_a_confirmation_with_date_time_location_and_paperwork() {
        let j = Journey::new(PatientId::new(), Limits::default());
        let cmds = notifications(&booked(), &j, &crate::outreach::Outreach::default());
        assert_eq!(cmds.len(), 1);
        let c = &cmds[0];
        assert_eq!(c.routing_key(), "north.sms.notify.send");
        assert_eq!(c.payload["date"], "2026-11-30");
        assert_eq!(c.payload["time"], "09:30 UTC");
        assert_eq!(c.payload["location"], "North Clinic");
        assert_eq!(
            c.payload["paperwork_url"],
            "https://portal.example.org/paperwork/A1"
        );
    }

    #[test]
    fn the_same_cause_always_yields_the_same_command_id() {
        let j = Journey::new(PatientId::new(), Limits::default());
        let a = notifications(&booked(), &j, &crate::outreach::Outreach::default());
        let b = notifications(&booked(), &j, &crate::outreach::Outreach::default());
        assert_eq!(a[0].id, b[0].id);
    }

    #[test]
    fn a_booking_repeated_for_the_same_time_is_not_confirmed_twice_but_a_new_time_is() {
        let mut j = Journey::new(PatientId::new(), Limits::default());
        let first = booked();
        j.apply(1, &first);
        let mut again = booked();
        again.id = Uuid::from_u128(2);
        assert!(notifications(&again, &j, &crate::outreach::Outreach::default()).is_empty());
        let mut moved = booked();
        moved.id = Uuid::from_u128(3);
        if let crate::event::EventKind::AppointmentBooked(a) = &mut moved.kind {
            a.starts_at = Some("2026-12-01T10:00:00Z".parse().unwrap());
        }
        assert_eq!(
            notifications(&moved, &j, &crate::outreach::Outreach::default()).len(),
            1
        );
    }

    #[test]
    fn a_patient_without_phone_or_email_gets_no_notification() {
        let mut e = booked();
        e.patient = Some(crate::event::PatientIdentifiers {
            mrn: e.patient.unwrap().mrn,
            ..Default::default()
        });
        let j = Journey::new(PatientId::new(), Limits::default());
        assert!(notifications(&e, &j, &crate::outreach::Outreach::default()).is_empty());
    }
}
