//! A patient's context as a FHIR R4 `collection` Bundle: the "specialist sees what
//! primary care discussed" view (`GET /fhir/r4/Patient/{id}/$front-door-context`).
//!
//! | Front Door | FHIR |
//! |---|---|
//! | the patient, its identifiers, merged records | `Patient` (MRN typed `MR`, telecom, `link` type `replaces`) |
//! | appointments | `Appointment` |
//! | the current medication list | `MedicationStatement` (status active), one per item |
//! | device readings | `Observation` (LOINC coded when the reading came with a code) |
//! | contacts (open and recent) with their messages, and notes | `Communication` |
//!
//! Every resource has a stable id (UUIDv5 of the patient and the item) and a
//! `urn:uuid:` fullUrl; references inside the Bundle use those.

use chrono::{DateTime, SecondsFormat, Utc};
use frontdoor_actors::event::Author;
use frontdoor_actors::ids::IdentifierKind;
use frontdoor_actors::journey::{
    AppointmentStatus, AppointmentView, ContactState, ContactView, ContextView, DeviceReadingView,
    NoteView,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::codes::{LOINC, OBSERVATION_CATEGORY, V2_0203};

/// The R5 cross-version extension R4 senders use for a telehealth link.
pub const VIRTUAL_SERVICE: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService";

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

struct Builder {
    patient: Uuid,
    entries: Vec<Value>,
}

impl Builder {
    fn id(&self, what: &str) -> Uuid {
        Uuid::new_v5(&self.patient, what.as_bytes())
    }

    fn patient_ref(&self) -> Value {
        json!({"reference": format!("urn:uuid:{}", self.patient), "type": "Patient"})
    }

    fn push(&mut self, id: Uuid, mut resource: Value) {
        resource["id"] = json!(id.to_string());
        self.entries
            .push(json!({"fullUrl": format!("urn:uuid:{id}"), "resource": resource}));
    }
}

/// The context as a Bundle. `mrn_system` names the MRNs (the system of the site the
/// patient was last seen at, when configured).
pub fn bundle(ctx: &ContextView, mrn_system: Option<&str>, now: DateTime<Utc>) -> Value {
    let mut b = Builder {
        patient: ctx.patient_id.0,
        entries: Vec::new(),
    };
    patient(&mut b, ctx, mrn_system);
    for a in &ctx.appointments {
        appointment(&mut b, a);
    }
    if let Some(list) = &ctx.medications {
        for (i, m) in list.items.iter().enumerate() {
            let id = b.id(&format!("MedicationStatement/{i}/{}", m.name));
            let dosage: Vec<&str> = [m.dose.as_deref(), m.frequency.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            let mut r = json!({
                "resourceType": "MedicationStatement",
                "status": "active",
                "medicationCodeableConcept": {"text": m.name},
                "subject": b.patient_ref(),
                "dateAsserted": time(list.updated_at),
            });
            if !dosage.is_empty() {
                r["dosage"] = json!([{"text": dosage.join(", ")}]);
            }
            b.push(id, r);
        }
    }
    for (i, d) in ctx.device_readings.iter().enumerate() {
        observation(&mut b, i, d);
    }
    for c in ctx.open_contacts.iter().chain(&ctx.recent_contacts) {
        contact(&mut b, c);
    }
    for n in &ctx.notes {
        note(&mut b, n);
    }
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": now.to_rfc3339_opts(SecondsFormat::Millis, true),
        "entry": b.entries,
    })
}

fn patient(b: &mut Builder, ctx: &ContextView, mrn_system: Option<&str>) {
    let mut identifier = Vec::new();
    let mut telecom = Vec::new();
    for i in &ctx.identifiers {
        match i.kind {
            IdentifierKind::Mrn => {
                let mut id = json!({
                    "type": {"coding": [{"system": V2_0203, "code": "MR", "display": "Medical record number"}]},
                    "value": i.value,
                });
                if let Some(s) = mrn_system {
                    id["system"] = json!(s);
                }
                identifier.push(id);
            }
            IdentifierKind::PortalId => {
                identifier.push(json!({"system": "urn:frontdoor:portal-id", "value": i.value}))
            }
            IdentifierKind::Phone => telecom.push(json!({"system": "phone", "value": i.value})),
            IdentifierKind::Email => telecom.push(json!({"system": "email", "value": i.value})),
        }
    }
    let mut r = json!({"resourceType": "Patient"});
    if !identifier.is_empty() {
        r["identifier"] = Value::Array(identifier);
    }
    if !telecom.is_empty() {
        r["telecom"] = Value::Array(telecom);
    }
    if !ctx.merged_from.is_empty() {
        r["link"] = Value::Array(
            ctx.merged_from
                .iter()
                .map(
                    |m| json!({"other": {"reference": format!("Patient/{m}")}, "type": "replaces"}),
                )
                .collect(),
        );
    }
    let id = b.patient;
    b.push(id, r);
}

fn appointment(b: &mut Builder, a: &AppointmentView) {
    let status = match a.status {
        AppointmentStatus::Booked | AppointmentStatus::Rescheduled => "booked",
        AppointmentStatus::Cancelled => "cancelled",
        AppointmentStatus::NoShow => "noshow",
        AppointmentStatus::CheckedIn => "checked-in",
    };
    // R4 app-3: only proposed, cancelled or waitlisted appointments may lack times.
    if a.starts_at.is_none() && status != "cancelled" {
        return;
    }
    let mut r = json!({
        "resourceType": "Appointment",
        "identifier": [{"system": "urn:frontdoor:appointment", "value": a.id}],
        "status": status,
    });
    let mut participant = vec![json!({"actor": b.patient_ref(), "status": "accepted"})];
    if let Some(p) = &a.provider {
        participant
            .push(json!({"actor": {"display": p, "type": "Practitioner"}, "status": "accepted"}));
    }
    if let Some(l) = &a.location {
        participant
            .push(json!({"actor": {"display": l, "type": "Location"}, "status": "accepted"}));
    }
    r["participant"] = Value::Array(participant);
    if let Some(start) = a.starts_at {
        r["start"] = json!(time(start));
        match a.ends_at.filter(|e| *e >= start) {
            Some(end) => r["end"] = json!(time(end)),
            None => {
                r["end"] = json!(time(start));
                r["comment"] = json!(
                    "Front Door does not know when this appointment ends: end is set to its start"
                );
            }
        }
    }
    if let Some(d) = &a.department {
        r["specialty"] = json!([{"text": d}]);
    }
    if let Some(reason) = &a.reason {
        r["reasonCode"] = json!([{"text": reason}]);
    }
    if let Some(u) = &a.telehealth_url {
        r["extension"] =
            json!([{"url": VIRTUAL_SERVICE, "extension": [{"url": "addressUrl", "valueUrl": u}]}]);
    }
    let id = b.id(&format!("Appointment/{}", a.id));
    b.push(id, r);
}

fn observation(b: &mut Builder, i: usize, d: &DeviceReadingView) {
    let s = &d.summary;
    let field = |k: &str| s.get(k).and_then(Value::as_str);
    let mut code = Map::new();
    if let Some(l) = field("loinc") {
        let mut coding = json!({"system": LOINC, "code": l});
        if let Some(disp) = field("display") {
            coding["display"] = json!(disp);
        }
        code.insert("coding".into(), json!([coding]));
    }
    code.insert(
        "text".into(),
        json!(field("display")
            .map(str::to_string)
            .unwrap_or_else(|| format!("{} readings", d.device))),
    );
    let mut r = json!({
        "resourceType": "Observation",
        "status": "final",
        "code": Value::Object(code),
        "subject": b.patient_ref(),
        "effectiveDateTime": time(d.occurred_at),
        "device": {"display": d.device},
    });
    let category = match (field("analyte"), d.device.as_str()) {
        (Some("glucose"), _) => Some("laboratory"),
        (_, "vital-signs") => Some("vital-signs"),
        _ => None,
    };
    if let Some(c) = category {
        r["category"] = json!([{"coding": [{"system": OBSERVATION_CATEGORY, "code": c}]}]);
    }
    let quantity = |v: &Value| {
        let mut q = json!({"value": v.get("value")?.as_f64()?});
        if let Some(u) = v.get("unit").and_then(Value::as_str) {
            q["unit"] = json!(u);
        }
        Some(q)
    };
    if let Some(q) = quantity(s) {
        r["valueQuantity"] = q;
    } else if let Some(parts) = s.get("components").and_then(Value::as_array) {
        let comps: Vec<Value> = parts
            .iter()
            .filter_map(|p| {
                let q = quantity(p)?;
                let mut c = json!({"text": p.get("display").and_then(Value::as_str).unwrap_or("component")});
                if let Some(l) = p.get("loinc").and_then(Value::as_str) {
                    c["coding"] = json!([{"system": LOINC, "code": l}]);
                }
                Some(json!({"code": c, "valueQuantity": q}))
            })
            .collect();
        if !comps.is_empty() {
            r["component"] = Value::Array(comps);
        }
    } else {
        // A device platform's own summary: kept whole, as text.
        r["valueString"] = json!(s.to_string());
    }
    let id = b.id(&format!(
        "Observation/{i}/{}/{}",
        d.device,
        d.occurred_at.timestamp_millis()
    ));
    b.push(id, r);
}

fn medium(channel: &str) -> (&'static str, &'static str) {
    match channel {
        "voice" => ("PHONE", "telephone"),
        "video" => ("VIDEOCONF", "videoconferencing"),
        "email" => ("EMAILWRIT", "email"),
        "sms" => ("WRITTEN", "written"),
        "chat" | "portal" | "iva" => ("ONLINEWRIT", "online written"),
        _ => ("ELECTRONIC", "electronic data"),
    }
}

fn contact(b: &mut Builder, c: &ContactView) {
    if c.messages.is_empty() && c.summary.is_none() {
        return;
    }
    let (code, display) = medium(c.channel.as_str());
    let mut r = json!({
        "resourceType": "Communication",
        "identifier": [{"system": frontdoor_actors::ehr::CONTACT_SYSTEM, "value": format!("{}/{}", c.site, c.id)}],
        "status": if c.state == ContactState::Open { "in-progress" } else { "completed" },
        "category": [{"text": format!("Front Door {} contact", c.channel)}],
        "medium": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode", "code": code, "display": display}]}],
        "subject": b.patient_ref(),
    });
    if let Some(t) = c.closed_at {
        r["sent"] = json!(time(t));
    }
    if let Some(a) = &c.last_agent {
        r["sender"] = json!({"display": a});
    }
    if !c.messages.is_empty() {
        r["payload"] = Value::Array(
            c.messages
                .iter()
                .map(|m| {
                    let who = match m.from {
                        Author::Patient => "Patient",
                        Author::Staff => "Staff",
                        Author::Bot => "Virtual agent",
                    };
                    json!({"contentString": format!("[{}] {who}: {}", time(m.at), m.text)})
                })
                .collect(),
        );
    }
    if let Some(s) = &c.summary {
        r["note"] = json!([{"text": s}]);
    }
    let id = b.id(&format!("Communication/contact/{}/{}", c.site, c.id));
    b.push(id, r);
}

fn note(b: &mut Builder, n: &NoteView) {
    let sender = match &n.role {
        Some(role) => format!("{} ({role})", n.author),
        None => n.author.clone(),
    };
    let r = json!({
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"text": n.role.clone().unwrap_or_else(|| "note".into())}],
        "subject": b.patient_ref(),
        "sent": time(n.occurred_at),
        "sender": {"display": sender},
        "payload": [{"contentString": n.text}],
    });
    let id = b.id(&format!("Communication/note/{}", n.id));
    b.push(id, r);
}
