//! What Front Door tells the EHR: the rules behind the `ehr.document` and
//! `ehr.identity` commands, as plain functions over the journey.
//!
//! | trigger | command | body |
//! |---|---|---|
//! | a contact with staff messages (or a note on it) ends | `ehr.document` | a FHIR R4 `Communication`: the patient by MRN, sender (the agent) and recipient (the patient), `sent`, the thread's messages and notes in order, the summary, and the appointment it concerned when there is one |
//! | an event from any channel but `ehr` makes a patient already known by its MRN claim a phone or email Front Door had not seen | `ehr.identity` | a suggestion (`action: "suggest"`) holding a FHIR R4 `Patient` with the MRN and the new telecom; never an automatic change |
//!
//! Both need the patient's MRN and the MRN system of the site (`[fhir.sites]`): an EHR
//! files nothing it cannot attach to a chart, so a provisional patient (no MRN) or a
//! site without a configured MRN system yields no command. The appointment a contact
//! "concerned" is the one in the contact's department (its skill) closest in time
//! to the contact; otherwise the soonest booked one within 30 days after it.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::command::{Command, CommandType};
use crate::event::{Author, Channel, Envelope, EventKind};
use crate::ids::IdentifierKind;
use crate::journey::{AppointmentStatus, AppointmentView, ContactView, IdentifierView, Journey};

/// The identifier system of Front Door's staff principals (agents), as in the audit log.
pub const PRINCIPAL_SYSTEM: &str = "urn:frontdoor:principal";
/// The identifier system of Front Door's contacts (`<site>/<contact id>`).
pub const CONTACT_SYSTEM: &str = "urn:frontdoor:contact";
/// HL7 v3 ParticipationMode (`Communication.medium`).
const PARTICIPATION_MODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode";

/// One site's EHR settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EhrSite {
    /// The `Patient.identifier.system` URIs that mean "our MRN" at this site (each
    /// EHR has its own). Inbound, an identifier of any of them is the MRN; outbound,
    /// the first one names the patient.
    pub mrn_systems: Vec<String>,
}

/// The EHR settings of every site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EhrSettings {
    /// Per site; the key `*` applies to every site not listed.
    #[serde(default)]
    pub sites: BTreeMap<String, EhrSite>,
}

impl EhrSettings {
    /// The settings of `site` (or of `*`).
    pub fn site(&self, site: &str) -> Option<&EhrSite> {
        self.sites.get(site).or_else(|| self.sites.get("*"))
    }

    /// The MRN system Front Door names patients with at `site`.
    pub fn mrn_system(&self, site: &str) -> Option<&str> {
        self.site(site)
            .and_then(|s| s.mrn_systems.first())
            .map(String::as_str)
    }

    /// Every configured system must be a non-empty URI without spaces.
    pub fn validate(&self) -> Result<(), String> {
        for (site, s) in &self.sites {
            if s.mrn_systems.is_empty() {
                return Err(format!("fhir.sites.{site}.mrn_systems is empty"));
            }
            for u in &s.mrn_systems {
                if u.is_empty() || u.chars().any(char::is_whitespace) || !u.contains(':') {
                    return Err(format!(
                        "fhir.sites.{site}.mrn_systems holds something that is not a URI"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The EHR commands `event` causes, given the journey *after* it was applied and the
/// identifiers it made the patient claim.
pub fn commands(
    event: &Envelope,
    after: &Journey,
    claims: &[IdentifierView],
    settings: &EhrSettings,
) -> Vec<Command> {
    let mut out = Vec::new();
    out.extend(document(event, after, settings));
    out.extend(identity_suggestion(event, after, claims, settings));
    out
}

fn mrn(journey: &Journey) -> Option<&str> {
    journey
        .identifiers
        .iter()
        .find(|i| i.kind == IdentifierKind::Mrn)
        .map(|i| i.value.as_str())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn patient_reference(system: &str, mrn: &str) -> Value {
    json!({"type": "Patient", "identifier": {"system": system, "value": mrn}})
}

/// `Communication.medium` for a channel (HL7 v3 ParticipationMode).
fn medium(channel: Channel) -> (&'static str, &'static str) {
    match channel {
        Channel::Voice => ("PHONE", "telephone"),
        Channel::Video => ("VIDEOCONF", "videoconferencing"),
        Channel::Email => ("EMAILWRIT", "email"),
        Channel::Sms => ("WRITTEN", "written"),
        Channel::Chat | Channel::Portal | Channel::Iva => ("ONLINEWRIT", "online written"),
        _ => ("ELECTRONIC", "electronic data"),
    }
}

/// A FHIR id: 1 to 64 of `[A-Za-z0-9-.]`.
fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// A reference to an appointment by the id Front Door knows it by.
pub fn appointment_reference(id: &str) -> Value {
    if is_fhir_id(id) {
        json!({"reference": format!("Appointment/{id}"), "type": "Appointment"})
    } else {
        json!({"type": "Appointment", "identifier": {"value": id}})
    }
}

/// The appointment a contact concerned (see the module docs).
pub fn concerned_appointment<'a>(
    journey: &'a Journey,
    contact: &ContactView,
) -> Option<&'a AppointmentView> {
    let at = contact.started_at;
    let live = |a: &&AppointmentView| a.status != AppointmentStatus::Cancelled;
    let distance = |a: &AppointmentView| a.starts_at.map(|t| (t - at).num_seconds().abs());
    if let Some(skill) = contact.skill.as_deref() {
        let same_department = journey
            .appointments
            .values()
            .filter(live)
            .filter(|a| {
                a.department
                    .as_deref()
                    .is_some_and(|d| d.trim().eq_ignore_ascii_case(skill.trim()))
            })
            .min_by_key(|a| distance(a).unwrap_or(i64::MAX));
        if same_department.is_some() {
            return same_department;
        }
    }
    journey
        .appointments
        .values()
        .filter(|a| {
            matches!(
                a.status,
                AppointmentStatus::Booked | AppointmentStatus::Rescheduled
            )
        })
        .filter(|a| {
            a.starts_at
                .is_some_and(|t| t >= at && t <= at + Duration::days(30))
        })
        .min_by_key(|a| a.starts_at)
}

/// `ehr.document`: the Communication of a staff exchange that just ended.
pub fn document(event: &Envelope, after: &Journey, settings: &EhrSettings) -> Option<Command> {
    if !matches!(event.kind, EventKind::ContactEnded { .. }) {
        return None;
    }
    let contact = after.contacts.get(event.contact_id.as_ref()?)?;
    let notes: Vec<_> = after
        .notes
        .iter()
        .filter(|n| n.contact_id.as_ref() == Some(&contact.id))
        .collect();
    let staff_spoke = contact.messages.iter().any(|m| m.from == Author::Staff);
    if !staff_spoke && notes.is_empty() {
        return None;
    }
    let mrn = mrn(after)?;
    let system = settings.mrn_system(contact.site.as_str())?;
    let patient = patient_reference(system, mrn);

    // The thread in order: messages and the notes written on it.
    let mut lines: Vec<(DateTime<Utc>, String)> = contact
        .messages
        .iter()
        .map(|m| {
            let who = match m.from {
                Author::Patient => "Patient",
                Author::Staff => "Staff",
                Author::Bot => "Virtual agent",
            };
            (m.at, format!("[{}] {who}: {}", rfc3339(m.at), m.text))
        })
        .collect();
    for n in &notes {
        let role = n
            .role
            .as_deref()
            .map(|r| format!(", {r}"))
            .unwrap_or_default();
        lines.push((
            n.occurred_at,
            format!(
                "[{}] Note ({}{role}): {}",
                rfc3339(n.occurred_at),
                n.author,
                n.text
            ),
        ));
    }
    lines.sort_by_key(|(t, _)| *t);
    let payload: Vec<Value> = lines
        .into_iter()
        .map(|(_, text)| json!({"contentString": text}))
        .collect();

    let (code, display) = medium(contact.channel);
    let sent = contact.closed_at.unwrap_or(event.occurred_at);
    let mut communication = json!({
        "resourceType": "Communication",
        "identifier": [{
            "system": CONTACT_SYSTEM,
            "value": format!("{}/{}", contact.site, contact.id),
        }],
        "status": "completed",
        "category": [{"text": format!("Front Door {} contact", contact.channel)}],
        "medium": [{"coding": [{"system": PARTICIPATION_MODE, "code": code, "display": display}]}],
        "subject": patient,
        "sent": rfc3339(sent),
        "recipient": [patient_reference(system, mrn)],
        "payload": payload,
    });
    let sender = match contact.last_agent.as_deref() {
        Some(agent) => json!({
            "type": "Practitioner",
            "identifier": {"system": PRINCIPAL_SYSTEM, "value": agent},
            "display": agent,
        }),
        None => json!({"display": "Front Door staff"}),
    };
    communication["sender"] = sender;
    if let Some(a) = concerned_appointment(after, contact) {
        communication["about"] = json!([appointment_reference(&a.id)]);
    }
    let mut note = Vec::new();
    if let Some(d) = contact
        .disposition
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        note.push(json!({"text": format!("Disposition: {d}")}));
    }
    if let Some(s) = contact.summary.as_deref().filter(|s| !s.trim().is_empty()) {
        note.push(json!({"text": s}));
    }
    if !note.is_empty() {
        communication["note"] = Value::Array(note);
    }

    let mut body = Map::new();
    body.insert("contact_id".into(), json!(contact.id.to_string()));
    body.insert("resource".into(), communication);
    Some(Command::new(
        CommandType::EhrDocument,
        event.id,
        "document",
        contact.site.clone(),
        Channel::Ehr,
        event.occurred_at,
        Some(after.patient_id),
        body,
    ))
}

/// `ehr.identity`: a phone or email a patient already known by its MRN claimed through a channel
/// other than the EHR, as a suggestion for the EHR's registrars.
pub fn identity_suggestion(
    event: &Envelope,
    after: &Journey,
    claims: &[IdentifierView],
    settings: &EhrSettings,
) -> Option<Command> {
    // From the EHR itself: it knows. With the MRN claimed by this very event, the
    // patient is new to Front Door: nothing was *learned* beside what the sender has.
    if event.channel == Channel::Ehr || claims.iter().any(|c| c.kind == IdentifierKind::Mrn) {
        return None;
    }
    let telecom: Vec<Value> = claims
        .iter()
        .filter_map(|c| match c.kind {
            IdentifierKind::Phone => Some(json!({"system": "phone", "value": c.value})),
            IdentifierKind::Email => Some(json!({"system": "email", "value": c.value})),
            _ => None,
        })
        .collect();
    if telecom.is_empty() {
        return None;
    }
    let mrn = mrn(after)?;
    let system = settings.mrn_system(event.site.as_str())?;
    let kinds: Vec<&str> = claims
        .iter()
        .filter(|c| matches!(c.kind, IdentifierKind::Phone | IdentifierKind::Email))
        .map(|c| c.kind.as_str())
        .collect();
    let mut body = Map::new();
    body.insert("action".into(), json!("suggest"));
    body.insert("suggested".into(), json!(kinds));
    body.insert(
        "learned_from".into(),
        json!({"event_id": event.id, "event_type": event.event_type, "channel": event.channel}),
    );
    body.insert(
        "resource".into(),
        json!({
            "resourceType": "Patient",
            "identifier": [{
                "type": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                    "code": "MR",
                }]},
                "system": system,
                "value": mrn,
            }],
            "telecom": telecom,
        }),
    );
    Some(Command::new(
        CommandType::EhrIdentity,
        event.id,
        "identity",
        event.site.clone(),
        Channel::Ehr,
        event.occurred_at,
        Some(after.patient_id),
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PatientId;
    use crate::journey::Limits;
    use uuid::Uuid;

    fn ev(n: u128, ty: &str, channel: &str, at: &str, extra: Value) -> Envelope {
        let mut v = json!({
            "id": Uuid::from_u128(n).to_string(), "type": ty, "occurred_at": at,
            "site": "north", "channel": channel, "patient": {"mrn": "M1"},
        });
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        Envelope::parse(v.to_string().as_bytes(), 1 << 20).unwrap()
    }

    fn settings() -> EhrSettings {
        let mut s = EhrSettings::default();
        s.sites.insert(
            "north".into(),
            EhrSite {
                mrn_systems: vec!["urn:oid:1.2.3.4".into()],
            },
        );
        s
    }

    fn journey_with(events: &[Envelope]) -> Journey {
        let mut j = Journey::new(PatientId::new(), Limits::default());
        j.identifiers.insert(IdentifierView {
            kind: IdentifierKind::Mrn,
            value: "M1".into(),
        });
        for (i, e) in events.iter().enumerate() {
            j.apply(i as u64, e);
        }
        j
    }

    fn nurse_chat() -> Vec<Envelope> {
        vec![
            ev(
                1,
                "appointment.booked",
                "portal",
                "2026-11-20T09:00:00Z",
                json!({
                "appointment_id": "appt-77", "starts_at": "2026-11-30T09:30:00Z", "department": "dermatology"}),
            ),
            ev(
                2,
                "contact.started",
                "chat",
                "2026-11-23T10:00:00Z",
                json!({"contact_id": "chat-9", "skill": "Dermatology"}),
            ),
            ev(
                3,
                "contact.message",
                "chat",
                "2026-11-23T10:00:05Z",
                json!({
                "contact_id": "chat-9", "from": "patient", "text": "Should I stop methotrexate?"}),
            ),
            ev(
                4,
                "contact.message",
                "chat",
                "2026-11-23T10:02:00Z",
                json!({
                "contact_id": "chat-9", "from": "staff", "text": "Keep taking it until your visit."}),
            ),
            ev(
                5,
                "contact.ended",
                "chat",
                "2026-11-23T10:05:00Z",
                json!({
                "contact_id": "chat-9", "agent": "rn-4", "summary": "Advised to continue."}),
            ),
        ]
    }

    #[test]
    fn a_nurse_chat_that_ends_is_documented_as_a_communication_about_its_appointment() {
        let evs = nurse_chat();
        let j = journey_with(&evs);
        let c = document(&evs[4], &j, &settings()).expect("a document");
        assert_eq!(c.command_type, CommandType::EhrDocument);
        assert_eq!(c.routing_key(), "north.ehr.ehr.document");
        let r = &c.payload["resource"];
        assert_eq!(r["resourceType"], "Communication");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["subject"]["identifier"]["system"], "urn:oid:1.2.3.4");
        assert_eq!(r["subject"]["identifier"]["value"], "M1");
        assert_eq!(r["sender"]["identifier"]["value"], "rn-4");
        assert_eq!(r["sent"], "2026-11-23T10:05:00Z");
        assert_eq!(r["about"][0]["reference"], "Appointment/appt-77");
        let texts: Vec<&str> = r["payload"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["contentString"].as_str().unwrap())
            .collect();
        assert_eq!(texts.len(), 2);
        assert!(texts[0].ends_with("Patient: Should I stop methotrexate?"));
        assert!(texts[1].ends_with("Staff: Keep taking it until your visit."));
        assert_eq!(r["note"][0]["text"], "Advised to continue.");
    }

    #[test]
    fn no_document_without_staff_words_an_mrn_or_a_configured_system() {
        let mut evs = nurse_chat();
        evs.remove(3);
        let j = journey_with(&evs);
        assert!(document(&evs[3], &j, &settings()).is_none(), "patient only");
        let evs = nurse_chat();
        let mut j = journey_with(&evs);
        assert!(document(&evs[4], &j, &EhrSettings::default()).is_none());
        j.identifiers = Default::default();
        assert!(document(&evs[4], &j, &settings()).is_none(), "no MRN");
    }

    #[test]
    fn a_phone_claimed_on_a_call_is_suggested_to_the_ehr_but_not_one_the_ehr_sent() {
        let call = ev(
            9,
            "contact.started",
            "voice",
            "2026-11-23T10:00:00Z",
            json!({"contact_id": "call-1"}),
        );
        let j = journey_with(std::slice::from_ref(&call));
        let claims = [IdentifierView {
            kind: IdentifierKind::Phone,
            value: "+15550100001".into(),
        }];
        let c = identity_suggestion(&call, &j, &claims, &settings()).expect("a suggestion");
        assert_eq!(c.payload["action"], "suggest");
        assert_eq!(c.payload["resource"]["telecom"][0]["value"], "+15550100001");
        assert_eq!(c.payload["resource"]["identifier"][0]["value"], "M1");
        let from_ehr = ev(
            10,
            "identity.linked",
            "ehr",
            "2026-11-23T10:00:00Z",
            json!({
            "patient": {"mrn": "M1", "phone": "+15550100001"}}),
        );
        assert!(identity_suggestion(&from_ehr, &j, &claims, &settings()).is_none());
        let mrn_only = [IdentifierView {
            kind: IdentifierKind::Mrn,
            value: "M2".into(),
        }];
        assert!(identity_suggestion(&call, &j, &mrn_only, &settings()).is_none());
        // First seen together with its MRN: the sender knows both; no suggestion.
        let first_seen = [mrn_only[0].clone(), claims[0].clone()];
        assert!(identity_suggestion(&call, &j, &first_seen, &settings()).is_none());
    }

    #[test]
    fn a_wildcard_site_applies_to_unlisted_sites_and_settings_validate() {
        let mut s = EhrSettings::default();
        s.sites.insert(
            "*".into(),
            EhrSite {
                mrn_systems: vec!["urn:oid:9".into()],
            },
        );
        assert_eq!(s.mrn_system("south"), Some("urn:oid:9"));
        assert!(s.validate().is_ok());
        s.sites.insert(
            "bad".into(),
            EhrSite {
                mrn_systems: vec!["not a uri".into()],
            },
        );
        assert!(s.validate().is_err());
    }
}
