//! Inbound FHIR R4: a Bundle (or one resource) read into typed entries ([`read`]),
//! then mapped into the envelopes of the event contract ([`plan`]). Both are pure:
//! the HTTP edge stores nothing until the whole body has been read and planned, so
//! invalid FHIR changes nothing.
//!
//! | resource | becomes |
//! |---|---|
//! | `Patient` with an MRN and a phone or email | `identity.linked` (the EHR is the authority) |
//! | `Appointment` booked / cancelled / noshow / fulfilled, arrived, checked-in | `appointment.booked` (or `.rescheduled`, decided when stored) / `.cancelled` / `.no_show` / `.checked_in` |
//! | `MedicationRequest`, `MedicationStatement` | one `medications.updated` per patient: the active ones |
//! | `Observation` with a glucose LOINC code (vital signs when configured) | `device.readings` |
//! | `Communication` (completed or in progress, with text) | `contact.message` on channel `portal` |
//! | `Encounter` finished, with a narrative | `note.recorded` (role `visit summary`) |
//!
//! Every event's id is a UUIDv5 of the site and the resource's type, id (else its
//! `fullUrl`) and `meta.versionId` (else a digest of its content): the same resource
//! sent twice is the same event, stored once.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use frontdoor_actors::event::{Envelope, PatientIdentifiers};
use frontdoor_actors::ids::{Email, Mrn, PhoneNumber, SiteId};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::codes::{self, GlucoseSource};
use super::element::{structure, Concept, Ident, Issue, Quantity, Reader, Reference};

/// Namespace of the event ids derived from FHIR resources (UUIDv5).
const FHIR_NAMESPACE: Uuid = Uuid::from_u128(0x3c9d_6e10_5b7a_4f2c_9e41_0d8a_7b25_c6f3);

/// What the edge needs to know about the site a body is for.
#[derive(Debug, Clone)]
pub struct SiteContext {
    /// The site.
    pub site: SiteId,
    /// The identifier systems that mean "our MRN" here.
    pub mrn_systems: Vec<String>,
    /// Country calling code for numbers written without `+`.
    pub country_code: String,
    /// Keep vital signs as readings.
    pub vital_signs: bool,
    /// The receive time (when a resource says nothing of its own time).
    pub now: DateTime<Utc>,
}

/// The kind of body received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// All or nothing (validation and planning); answered `transaction-response`.
    Transaction,
    /// Entry by entry; answered `batch-response` (so are the kinds below).
    Batch,
    /// A collection of resources.
    Collection,
    /// A search result (e.g. `MedicationRequest?patient=…`).
    Searchset,
    /// A history bundle (the R4 Subscriptions Backport's notifications).
    History,
    /// An R4B-style subscription notification.
    SubscriptionNotification,
    /// One resource, not in a Bundle.
    Resource,
}

impl BodyKind {
    /// A bounded label (metrics).
    pub fn label(self) -> &'static str {
        match self {
            BodyKind::Transaction => "transaction",
            BodyKind::Batch => "batch",
            BodyKind::Collection => "collection",
            BodyKind::Searchset => "searchset",
            BodyKind::History => "history",
            BodyKind::SubscriptionNotification => "subscription-notification",
            BodyKind::Resource => "resource",
        }
    }

    /// The `Bundle.type` of the answer.
    pub fn response_type(self) -> &'static str {
        match self {
            BodyKind::Transaction => "transaction-response",
            _ => "batch-response",
        }
    }

    /// True when one failing entry fails the whole body.
    pub fn atomic(self) -> bool {
        self == BodyKind::Transaction
    }
}

/// A telecom entry of a Patient.
#[derive(Debug, Clone)]
pub struct Telecom {
    /// Its path.
    pub path: String,
    /// `phone`, `email`, `sms`...
    pub system: Option<String>,
    /// The value.
    pub value: Option<String>,
    /// `mobile`, `home`...
    pub use_: Option<String>,
}

/// How a medication is named.
#[derive(Debug, Clone)]
pub enum MedicationName {
    /// `medicationCodeableConcept`.
    Concept(Concept),
    /// `medicationReference`.
    Reference(Reference),
}

/// The elements Front Door reads, by resource type.
#[derive(Debug, Clone)]
pub enum Body {
    /// A patient: identifiers and telecom (names are not read).
    Patient {
        identifiers: Vec<(String, Ident)>,
        telecom: Vec<Telecom>,
    },
    /// An appointment.
    Appointment(Box<AppointmentBody>),
    /// A MedicationRequest (`statement` false) or MedicationStatement.
    Medication {
        statement: bool,
        status: &'static str,
        name: Option<MedicationName>,
        subject: Option<Reference>,
        dose: Option<String>,
        frequency: Option<String>,
    },
    /// An observation.
    Observation(Box<ObservationBody>),
    /// A message.
    Communication(Box<CommunicationBody>),
    /// A visit.
    Encounter(Box<EncounterBody>),
    /// A practitioner (provider names).
    Practitioner { name: Option<String> },
    /// A practitioner in a role (points at the practitioner).
    PractitionerRole {
        practitioner: Option<Reference>,
        display: Option<String>,
    },
    /// A location (appointment locations).
    Location { name: Option<String> },
    /// A medication definition (`medicationReference` targets).
    MedicationDefinition { name: Option<String> },
    /// Read only to resolve references, or a subscription's status: nothing recorded.
    Supporting,
    /// A type Front Door does not use.
    Unsupported,
    /// An entry with no resource (a GET or DELETE request).
    Empty,
}

/// An Appointment's elements.
#[derive(Debug, Clone)]
pub struct AppointmentBody {
    /// The status code.
    pub status: &'static str,
    /// Start.
    pub start: Option<DateTime<Utc>>,
    /// End.
    pub end: Option<DateTime<Utc>>,
    /// Specialty, else service type, else service category.
    pub department: Option<String>,
    /// Reason code, else the description.
    pub reason: Option<String>,
    /// A telehealth link (virtual-service extension, an URL extension, or in the description).
    pub telehealth_url: Option<String>,
    /// The participants' actors.
    pub actors: Vec<Reference>,
    /// The first business identifier.
    pub identifier: Option<String>,
    /// When it was created.
    pub created: Option<DateTime<Utc>>,
}

/// An Observation's elements.
#[derive(Debug, Clone)]
pub struct ObservationBody {
    /// The status code.
    pub status: &'static str,
    /// What was observed.
    pub code: Concept,
    /// Categories.
    pub categories: Vec<Concept>,
    /// Whose.
    pub subject: Option<Reference>,
    /// When (dateTime, instant or the end of a period).
    pub effective: Option<DateTime<Utc>>,
    /// The value, when a quantity.
    pub value: Option<Quantity>,
    /// Components with quantity values (blood pressure...).
    pub components: Vec<(Concept, Quantity)>,
}

/// A Communication's elements.
#[derive(Debug, Clone)]
pub struct CommunicationBody {
    /// The status code.
    pub status: &'static str,
    /// About whom.
    pub subject: Option<Reference>,
    /// Who wrote it.
    pub sender: Option<Reference>,
    /// Text payloads, in order.
    pub texts: Vec<String>,
    /// When it was sent (else received).
    pub sent: Option<DateTime<Utc>>,
    /// The thread: encounter, else part-of, else in-response-to.
    pub thread: Option<Reference>,
}

/// An Encounter's elements.
#[derive(Debug, Clone)]
pub struct EncounterBody {
    /// The status code.
    pub status: &'static str,
    /// Whose.
    pub subject: Option<Reference>,
    /// The narrative, as plain text.
    pub summary: Option<String>,
    /// The participants (the first practitioner is the author).
    pub participants: Vec<Reference>,
    /// When it ended, else started.
    pub at: Option<DateTime<Utc>>,
}

/// One entry (or the single resource) as read.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in `Bundle.entry` (0 for a single resource).
    pub index: usize,
    /// FHIRPath of the resource (`Bundle.entry[3].resource`, or `Appointment`).
    pub path: String,
    /// `fullUrl`.
    pub full_url: Option<String>,
    /// `request.method`, when given.
    pub method: Option<String>,
    /// The resource type (an R4 name), when there is a resource.
    pub resource_type: Option<&'static str>,
    /// `id`.
    pub id: Option<String>,
    /// `meta.versionId`.
    pub version: Option<String>,
    /// `meta.lastUpdated`.
    pub last_updated: Option<DateTime<Utc>>,
    /// The idempotency key: `Type/<id or fullUrl>/_history/<versionId or digest>`.
    pub key: String,
    /// What was read.
    pub body: Body,
}

/// A body as read.
#[derive(Debug, Clone)]
pub struct Received {
    /// What kind of body.
    pub kind: BodyKind,
    /// `Bundle.timestamp`.
    pub timestamp: Option<DateTime<Utc>>,
    /// The entries.
    pub entries: Vec<Entry>,
}

/// A FHIR id: 1–64 of `[A-Za-z0-9-.]`.
fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn digest(v: &Value) -> String {
    // serde_json's maps are ordered by key: the same content gives the same text.
    let text = serde_json::to_string(v).unwrap_or_default();
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

/// Reads a request body (parsed JSON) as FHIR: the Bundle or resource, its entries
/// and the elements Front Door uses. Any error names its element; none is stored.
pub fn read(value: &Value) -> Result<Received, Vec<Issue>> {
    let mut r = Reader::default();
    let Some(obj) = value.as_object() else {
        r.err(
            "structure",
            "Resource",
            "the body must be a JSON object (a FHIR resource)",
        );
        return Err(r.issues);
    };
    let Some(Value::String(rt)) = obj.get("resourceType") else {
        r.err(
            "required",
            "Resource.resourceType",
            "is required (a string)",
        );
        return Err(r.issues);
    };
    let Some(rt) = codes::resource_type(rt) else {
        r.err(
            "not-supported",
            "Resource.resourceType",
            "is not a FHIR R4 resource type",
        );
        return Err(r.issues);
    };
    structure(value, rt, &mut r.issues);
    let received = if rt == "Bundle" {
        read_bundle(value, &mut r)
    } else {
        let entry = read_entry_resource(value, rt, rt.to_string(), 0, None, None, &mut r);
        Some(Received {
            kind: BodyKind::Resource,
            timestamp: None,
            entries: vec![entry],
        })
    };
    match received {
        Some(rec) if r.issues.is_empty() => Ok(rec),
        _ => Err(r.issues),
    }
}

fn read_bundle(value: &Value, r: &mut Reader) -> Option<Received> {
    let kind = match r.required_code(value, "Bundle", "type", &codes::BUNDLE_TYPES)? {
        "transaction" => BodyKind::Transaction,
        "batch" => BodyKind::Batch,
        "collection" => BodyKind::Collection,
        "searchset" => BodyKind::Searchset,
        "history" => BodyKind::History,
        "subscription-notification" => BodyKind::SubscriptionNotification,
        _ => {
            r.err(
                "not-supported",
                "Bundle.type",
                "Front Door accepts transaction, batch, collection, searchset, history and subscription-notification bundles",
            );
            return None;
        }
    };
    let timestamp = r.date_time(value, "Bundle", "timestamp", true);
    let mut entries = Vec::new();
    for (i, (path, e)) in r.array(value, "Bundle", "entry").into_iter().enumerate() {
        if !e.is_object() {
            r.err("structure", &path, "must be an object (a Bundle entry)");
            continue;
        }
        let full_url = r.string(e, &path, "fullUrl");
        let request = r.object(e, &path, "request");
        let method = request.and_then(|q| {
            let p = format!("{path}.request");
            let m = r.required_code(
                q,
                &p,
                "method",
                &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"],
            );
            r.required_string(q, &p, "url");
            m.map(str::to_string)
        });
        if request.is_none() && matches!(kind, BodyKind::Transaction | BodyKind::Batch) {
            r.err(
                "required",
                &format!("{path}.request"),
                "is required in a transaction or batch bundle",
            );
        }
        let rpath = format!("{path}.resource");
        let entry = match r.object(e, &path, "resource") {
            Some(res) => {
                let rt = match res.get("resourceType").and_then(Value::as_str) {
                    Some(t) => match codes::resource_type(t) {
                        Some(t) => t,
                        None => {
                            r.err(
                                "not-supported",
                                &format!("{rpath}.resourceType"),
                                "is not a FHIR R4 resource type",
                            );
                            continue;
                        }
                    },
                    None => {
                        r.err(
                            "required",
                            &format!("{rpath}.resourceType"),
                            "is required (a string)",
                        );
                        continue;
                    }
                };
                read_entry_resource(res, rt, rpath, i, full_url, method, r)
            }
            None => {
                if matches!(method.as_deref(), Some("POST" | "PUT") | None) {
                    r.err(
                        "required",
                        &rpath,
                        "is required (unless the entry's request is a GET, HEAD, DELETE or PATCH)",
                    );
                }
                Entry {
                    index: i,
                    path: rpath,
                    full_url,
                    method,
                    resource_type: None,
                    id: None,
                    version: None,
                    last_updated: None,
                    key: format!("entry/{i}"),
                    body: Body::Empty,
                }
            }
        };
        entries.push(entry);
    }
    Some(Received {
        kind,
        timestamp,
        entries,
    })
}

fn read_entry_resource(
    res: &Value,
    rt: &'static str,
    path: String,
    index: usize,
    full_url: Option<String>,
    method: Option<String>,
    r: &mut Reader,
) -> Entry {
    let id = r.string(res, &path, "id");
    if id.as_deref().is_some_and(|i| !is_id(i)) {
        r.err(
            "value",
            &format!("{path}.id"),
            "must be a FHIR id (1-64 of A-Z a-z 0-9 - .)",
        );
    }
    let meta = r.object(res, &path, "meta");
    let mpath = format!("{path}.meta");
    let version = meta.and_then(|m| r.string(m, &mpath, "versionId"));
    if version.as_deref().is_some_and(|v| !is_id(v)) {
        r.err(
            "value",
            &format!("{mpath}.versionId"),
            "must be a FHIR id (1-64 of A-Z a-z 0-9 - .)",
        );
    }
    let last_updated = meta.and_then(|m| r.date_time(m, &mpath, "lastUpdated", true));
    let logical = id
        .clone()
        .or_else(|| full_url.clone())
        .unwrap_or_else(|| format!("entry-{index}"));
    let key = format!(
        "{rt}/{logical}/_history/{}",
        version.clone().unwrap_or_else(|| digest(res))
    );
    let body = match rt {
        "Patient" => read_patient(res, &path, r),
        "Appointment" => read_appointment(res, &path, r),
        "MedicationRequest" => read_medication(res, &path, false, r),
        "MedicationStatement" => read_medication(res, &path, true, r),
        "Observation" => read_observation(res, &path, r),
        "Communication" => read_communication(res, &path, r),
        "Encounter" => read_encounter(res, &path, r),
        "Practitioner" => Body::Practitioner {
            name: human_name(res, &path, r),
        },
        "PractitionerRole" => Body::PractitionerRole {
            practitioner: r.reference_opt(res, &path, "practitioner"),
            display: None,
        },
        "Location" => Body::Location {
            name: r.string(res, &path, "name"),
        },
        "Medication" => Body::MedicationDefinition {
            name: r.concept_opt(res, &path, "code").and_then(|c| c.label()),
        },
        "Organization" | "Parameters" | "Provenance" | "Device" => Body::Supporting,
        _ => Body::Unsupported,
    };
    Entry {
        index,
        path,
        full_url,
        method,
        resource_type: Some(rt),
        id,
        version,
        last_updated,
        key,
        body,
    }
}

fn human_name(res: &Value, path: &str, r: &mut Reader) -> Option<String> {
    let names = r.array(res, path, "name");
    let (npath, n) = names.first()?;
    if let Some(t) = r.string(n, npath, "text") {
        return Some(t);
    }
    let mut parts: Vec<String> = Vec::new();
    for key in ["prefix", "given"] {
        for (p, v) in r.array(n, npath, key) {
            match v.as_str() {
                Some(s) => parts.push(s.to_string()),
                None => r.err("value", &p, "must be a string"),
            }
        }
    }
    if let Some(f) = r.string(n, npath, "family") {
        parts.push(f);
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

fn read_patient(res: &Value, path: &str, r: &mut Reader) -> Body {
    let identifiers = r
        .array(res, path, "identifier")
        .into_iter()
        .map(|(p, v)| {
            let i = r.ident(v, &p);
            (p, i)
        })
        .collect();
    let telecom = r
        .array(res, path, "telecom")
        .into_iter()
        .map(|(p, v)| Telecom {
            system: r.string(v, &p, "system"),
            value: r.string(v, &p, "value"),
            use_: r.string(v, &p, "use"),
            path: p,
        })
        .collect();
    Body::Patient {
        identifiers,
        telecom,
    }
}

/// The first `https://` (or `http://`) link in a text.
fn first_url(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with("https://") || w.starts_with("http://"))
        .map(|w| w.trim_end_matches(['.', ',', ')', ';']).to_string())
}

fn telehealth_link(res: &Value, path: &str, r: &mut Reader) -> Option<String> {
    for (p, ext) in r.array(res, path, "extension") {
        let url = r.string(ext, &p, "url").unwrap_or_default();
        if url.ends_with("Appointment.virtualService") {
            for (sp, sub) in r.array(ext, &p, "extension") {
                if r.string(sub, &sp, "url").as_deref() == Some("addressUrl") {
                    if let Some(u) = r.string(sub, &sp, "valueUrl") {
                        return Some(u);
                    }
                }
            }
        }
        if let Some(u) = r.string(ext, &p, "valueUrl") {
            return Some(u);
        }
    }
    None
}

fn read_appointment(res: &Value, path: &str, r: &mut Reader) -> Body {
    let status = r.required_code(res, path, "status", &codes::APPOINTMENT_STATUS);
    let start = r.date_time(res, path, "start", true);
    let end = r.date_time(res, path, "end", true);
    // R4 invariant app-3: only proposed, cancelled or waitlisted appointments may
    // lack their start and end.
    if let Some(s) = status {
        if !matches!(s, "proposed" | "cancelled" | "waitlist") {
            for (name, v) in [("start", &start), ("end", &end)] {
                if v.is_none() && r.get(res, name).is_none() {
                    r.err(
                        "invariant",
                        &format!("{path}.{name}"),
                        "is required unless the appointment is proposed, cancelled or on the waitlist (app-3)",
                    );
                }
            }
        }
    }
    let specialty = r.concepts(res, path, "specialty");
    let service_type = r.concepts(res, path, "serviceType");
    let service_category = r.concepts(res, path, "serviceCategory");
    let department = specialty
        .iter()
        .chain(&service_type)
        .chain(&service_category)
        .find_map(Concept::label);
    let description = r.string(res, path, "description");
    let reason = r
        .concepts(res, path, "reasonCode")
        .iter()
        .find_map(Concept::label)
        .or_else(|| {
            description
                .as_deref()
                .filter(|d| first_url(d).is_none_or(|u| d.trim() != u))
                .map(str::to_string)
        });
    let telehealth_url =
        telehealth_link(res, path, r).or_else(|| description.as_deref().and_then(first_url));
    let mut actors = Vec::new();
    let participants = r.array(res, path, "participant");
    if participants.is_empty() {
        r.err(
            "required",
            &format!("{path}.participant"),
            "is required (at least one participant)",
        );
    }
    for (p, part) in participants {
        r.required_code(
            part,
            &p,
            "status",
            &["accepted", "declined", "tentative", "needs-action"],
        );
        if let Some(a) = r.reference_opt(part, &p, "actor") {
            actors.push(a);
        }
    }
    let identifier = r
        .array(res, path, "identifier")
        .first()
        .cloned()
        .and_then(|(p, v)| r.ident(v, &p).value);
    let created = r.date_time(res, path, "created", false);
    match status {
        Some(status) => Body::Appointment(Box::new(AppointmentBody {
            status,
            start,
            end,
            department,
            reason,
            telehealth_url,
            actors,
            identifier,
            created,
        })),
        None => Body::Unsupported,
    }
}

fn dosage(d: &Value, p: &str, r: &mut Reader) -> (Option<String>, Option<String>) {
    let text = r.string(d, p, "text");
    let dose = text.clone().or_else(|| {
        r.array(d, p, "doseAndRate")
            .first()
            .cloned()
            .and_then(|(dp, dr)| {
                let q = r.object(dr, &dp, "doseQuantity")?;
                let q = r.quantity(q, &format!("{dp}.doseQuantity"));
                let v = q.value?;
                Some(
                    format!(
                        "{} {}",
                        trim_number(v),
                        q.unit.or(q.code).unwrap_or_default()
                    )
                    .trim()
                    .to_string(),
                )
            })
    });
    let frequency = r.object(d, p, "timing").and_then(|t| {
        let tp = format!("{p}.timing");
        if let Some(c) = r.concept_opt(t, &tp, "code").and_then(|c| c.label()) {
            return Some(c);
        }
        let rep = r.object(t, &tp, "repeat")?;
        let rp = format!("{tp}.repeat");
        let freq = r.decimal(rep, &rp, "frequency")?;
        let period = r.decimal(rep, &rp, "period").unwrap_or(1.0);
        let unit = r
            .string(rep, &rp, "periodUnit")
            .unwrap_or_else(|| "d".into());
        Some(format!(
            "{} times per {} {unit}",
            trim_number(freq),
            trim_number(period)
        ))
    });
    (dose, frequency)
}

fn trim_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn read_medication(res: &Value, path: &str, statement: bool, r: &mut Reader) -> Body {
    let status = if statement {
        r.required_code(res, path, "status", &codes::MEDICATION_STATEMENT_STATUS)
    } else {
        r.required_code(res, path, "intent", &codes::MEDICATION_REQUEST_INTENT);
        r.required_code(res, path, "status", &codes::MEDICATION_REQUEST_STATUS)
    };
    let name = if let Some(c) = r.concept_opt(res, path, "medicationCodeableConcept") {
        Some(MedicationName::Concept(c))
    } else if let Some(rf) = r.reference_opt(res, path, "medicationReference") {
        Some(MedicationName::Reference(rf))
    } else {
        r.err(
            "required",
            &format!("{path}.medication[x]"),
            "is required (medicationCodeableConcept or medicationReference)",
        );
        None
    };
    let subject = r.reference_req(res, path, "subject");
    let dosage_name = if statement {
        "dosage"
    } else {
        "dosageInstruction"
    };
    let (dose, frequency) = r
        .array(res, path, dosage_name)
        .first()
        .cloned()
        .map(|(p, d)| dosage(d, &p, r))
        .unwrap_or((None, None));
    match status {
        Some(status) => Body::Medication {
            statement,
            status,
            name,
            subject,
            dose,
            frequency,
        },
        None => Body::Unsupported,
    }
}

fn read_observation(res: &Value, path: &str, r: &mut Reader) -> Body {
    let status = r.required_code(res, path, "status", &codes::OBSERVATION_STATUS);
    let code = match r.object(res, path, "code") {
        Some(c) => r.concept(c, &format!("{path}.code")),
        None => {
            r.err("required", &format!("{path}.code"), "is required");
            Concept::default()
        }
    };
    let categories = r.concepts(res, path, "category");
    let subject = r.reference_opt(res, path, "subject");
    let effective = r
        .date_time(res, path, "effectiveDateTime", false)
        .or_else(|| r.date_time(res, path, "effectiveInstant", true))
        .or_else(|| {
            let p = r.object(res, path, "effectivePeriod")?;
            let pp = format!("{path}.effectivePeriod");
            r.date_time(p, &pp, "end", false)
                .or_else(|| r.date_time(p, &pp, "start", false))
        });
    let value = r
        .object(res, path, "valueQuantity")
        .map(|q| r.quantity(q, &format!("{path}.valueQuantity")));
    let mut components = Vec::new();
    for (p, c) in r.array(res, path, "component") {
        let code = match r.object(c, &p, "code") {
            Some(cc) => r.concept(cc, &format!("{p}.code")),
            None => {
                r.err("required", &format!("{p}.code"), "is required");
                continue;
            }
        };
        if let Some(q) = r.object(c, &p, "valueQuantity") {
            let q = r.quantity(q, &format!("{p}.valueQuantity"));
            components.push((code, q));
        }
    }
    match status {
        Some(status) => Body::Observation(Box::new(ObservationBody {
            status,
            code,
            categories,
            subject,
            effective,
            value,
            components,
        })),
        None => Body::Unsupported,
    }
}

fn read_communication(res: &Value, path: &str, r: &mut Reader) -> Body {
    let status = r.required_code(res, path, "status", &codes::COMMUNICATION_STATUS);
    let subject = r.reference_opt(res, path, "subject");
    let sender = r.reference_opt(res, path, "sender");
    let mut texts = Vec::new();
    for (p, pl) in r.array(res, path, "payload") {
        if let Some(t) = r.string(pl, &p, "contentString") {
            texts.push(t);
        } else if r.get(pl, "contentAttachment").is_none()
            && r.get(pl, "contentReference").is_none()
        {
            r.err(
                "required",
                &format!("{p}.content[x]"),
                "is required (contentString, contentAttachment or contentReference)",
            );
        }
    }
    let sent = r
        .date_time(res, path, "sent", false)
        .or_else(|| r.date_time(res, path, "received", false));
    let thread = r
        .reference_opt(res, path, "encounter")
        .or_else(|| {
            r.array(res, path, "partOf")
                .first()
                .cloned()
                .map(|(p, v)| r.reference(v, &p))
        })
        .or_else(|| {
            r.array(res, path, "inResponseTo")
                .first()
                .cloned()
                .map(|(p, v)| r.reference(v, &p))
        });
    match status {
        Some(status) => Body::Communication(Box::new(CommunicationBody {
            status,
            subject,
            sender,
            texts,
            sent,
            thread,
        })),
        None => Body::Unsupported,
    }
}

/// The text of an XHTML narrative: tags dropped, entities decoded, spaces collapsed.
pub fn narrative_text(div: &str) -> String {
    let mut out = String::with_capacity(div.len());
    let mut in_tag = false;
    for c in div.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let decoded = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn read_encounter(res: &Value, path: &str, r: &mut Reader) -> Body {
    let status = r.required_code(res, path, "status", &codes::ENCOUNTER_STATUS);
    if r.get(res, "class").is_none() {
        r.err("required", &format!("{path}.class"), "is required");
    } else if let Some(c) = r.object(res, path, "class") {
        r.coding(c, &format!("{path}.class"));
    }
    let subject = r.reference_opt(res, path, "subject");
    let summary = r.object(res, path, "text").and_then(|t| {
        let tp = format!("{path}.text");
        r.required_string(t, &tp, "status");
        r.required_string(t, &tp, "div")
            .map(|d| narrative_text(&d))
            .filter(|s| !s.is_empty())
    });
    let mut participants = Vec::new();
    for (p, part) in r.array(res, path, "participant") {
        if let Some(i) = r.reference_opt(part, &p, "individual") {
            participants.push(i);
        }
    }
    let at = r.object(res, path, "period").and_then(|p| {
        let pp = format!("{path}.period");
        r.date_time(p, &pp, "end", false)
            .or_else(|| r.date_time(p, &pp, "start", false))
    });
    match status {
        Some(status) => Body::Encounter(Box::new(EncounterBody {
            status,
            subject,
            summary,
            participants,
            at,
        })),
        None => Body::Unsupported,
    }
}

// ---------------------------------------------------------------------------------
// Planning: entries to envelopes.

/// What becomes of one entry.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// It is (or shares) planned event `n`.
    Event(usize),
    /// Nothing to record; `unsupported` when the resource type is one Front Door does
    /// not use.
    Skip {
        /// Why, in words.
        text: String,
        /// The type is not used at all.
        unsupported: bool,
    },
    /// Cannot be used (an unresolvable patient...): answered with these issues.
    Refused(Vec<Issue>),
    /// A request Front Door does not serve (GET, DELETE, PATCH...).
    NotAllowed,
}

/// One entry's plan.
#[derive(Debug, Clone)]
pub struct EntryPlan {
    /// The entry's resource type (None for an entry without a resource).
    pub resource_type: Option<&'static str>,
    /// `W/"<versionId>"`, when the resource has one.
    pub etag: Option<String>,
    /// What becomes of it.
    pub outcome: Outcome,
    /// Warnings (an unusable telecom, a dropped medication...).
    pub notes: Vec<Issue>,
}

/// An event to store.
#[derive(Debug, Clone)]
pub struct PlannedEvent {
    /// The envelope as a JSON object (its `type` may change: a booking).
    pub object: Map<String, Value>,
    /// The validated envelope.
    pub envelope: Envelope,
    /// A booking: the edge decides booked or rescheduled from the journey.
    pub booking: Option<Booking>,
}

/// What decides booked or rescheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    /// The patient's MRN.
    pub mrn: String,
    /// The appointment.
    pub appointment_id: String,
    /// Its start.
    pub starts_at: DateTime<Utc>,
}

/// The plan of a whole body.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Per entry, in bundle order.
    pub entries: Vec<EntryPlan>,
    /// The events, in the order they are stored (patients' links first).
    pub events: Vec<PlannedEvent>,
}

impl Plan {
    /// Every issue of every refused entry.
    pub fn refusals(&self) -> Vec<Issue> {
        self.entries
            .iter()
            .filter_map(|e| match &e.outcome {
                Outcome::Refused(issues) => Some(issues.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

struct Index<'a> {
    entries: &'a [Entry],
    by_url: HashMap<&'a str, usize>,
    by_type_id: HashMap<String, usize>,
}

impl<'a> Index<'a> {
    fn new(entries: &'a [Entry]) -> Index<'a> {
        let mut by_url = HashMap::new();
        let mut by_type_id = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if let Some(u) = e.full_url.as_deref() {
                by_url.insert(u, i);
            }
            if let (Some(t), Some(id)) = (e.resource_type, e.id.as_deref()) {
                by_type_id.insert(format!("{t}/{id}"), i);
            }
        }
        Index {
            entries,
            by_url,
            by_type_id,
        }
    }

    /// The entry a reference points at (`urn:uuid:`, a fullUrl, `Type/id`, or an
    /// absolute URL ending in `Type/id`).
    fn resolve(&self, r: &Reference) -> Option<&'a Entry> {
        let s = r.reference.as_deref()?;
        if let Some(i) = self.by_url.get(s) {
            return self.entries.get(*i);
        }
        let s = s.split("/_history/").next().unwrap_or(s);
        let parts: Vec<&str> = s.trim_end_matches('/').rsplitn(3, '/').collect();
        if parts.len() >= 2 {
            let key = format!("{}/{}", parts[1], parts[0]);
            return self.by_type_id.get(&key).and_then(|i| self.entries.get(*i));
        }
        None
    }
}

fn mrn_of_identifiers<'a>(
    identifiers: &'a [(String, Ident)],
    systems: &[String],
) -> Option<(&'a str, &'a str)> {
    identifiers.iter().find_map(|(p, i)| {
        let system = i.system.as_deref()?;
        let value = i.value.as_deref()?;
        systems
            .iter()
            .any(|s| s == system)
            .then_some((p.as_str(), value))
    })
}

/// The MRN of the patient a reference names: a Patient entry of the bundle with an
/// identifier of the site's MRN systems, or a logical reference by such an identifier.
fn patient_mrn(index: &Index<'_>, r: &Reference, site: &SiteContext) -> Result<String, Issue> {
    let refused = |why: &str| Issue::error("not-found", &r.path, why.to_string());
    if let Some(e) = index.resolve(r) {
        return match &e.body {
            Body::Patient { identifiers, .. } => {
                match mrn_of_identifiers(identifiers, &site.mrn_systems) {
                    Some((p, v)) => Mrn::parse(v).map(|m| m.as_str().to_string()).map_err(|_| {
                        Issue::error(
                            "value",
                            p,
                            "is not usable as an MRN (1-64 of A-Z a-z 0-9 - _ . :)",
                        )
                    }),
                    None => Err(refused(
                        "leads to a Patient without an identifier of this site's MRN systems",
                    )),
                }
            }
            _ => Err(refused("does not lead to a Patient")),
        };
    }
    if let Some(i) = &r.identifier {
        if let (Some(system), Some(value)) = (i.system.as_deref(), i.value.as_deref()) {
            if site.mrn_systems.iter().any(|s| s == system) {
                return Mrn::parse(value)
                    .map(|m| m.as_str().to_string())
                    .map_err(|_| {
                        Issue::error(
                            "value",
                            &format!("{}.identifier.value", r.path),
                            "is not usable as an MRN (1-64 of A-Z a-z 0-9 - _ . :)",
                        )
                    });
            }
        }
    }
    Err(refused(
        "does not resolve to a Patient in this bundle, nor name one by an identifier of this site's MRN systems",
    ))
}

/// A telecom number as E.164: `+` kept; `00` is the international prefix; otherwise
/// the site's country code is put in front (a national trunk `0` dropped).
pub fn normalize_phone(raw: &str, country: &str) -> Option<PhoneNumber> {
    let t = raw.trim();
    if t.chars()
        .any(|c| !(c.is_ascii_digit() || " -().+/".contains(c)))
    {
        return None;
    }
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    let e164 = if t.starts_with('+') {
        format!("+{digits}")
    } else if let Some(rest) = digits.strip_prefix("00") {
        format!("+{rest}")
    } else if country.is_empty() {
        return None;
    } else if country == "1" && digits.len() == 11 && digits.starts_with('1') {
        format!("+{digits}")
    } else {
        format!("+{country}{}", digits.trim_start_matches('0'))
    };
    PhoneNumber::parse(&e164).ok()
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An event before it is validated: what [`Planner::push`] takes.
struct Draft {
    /// The envelope `type`.
    event_type: &'static str,
    /// The envelope `channel`.
    channel: &'static str,
    /// `occurred_at`.
    at: DateTime<Utc>,
    /// The `patient` identifiers.
    patient: Value,
    /// Type-specific fields.
    fields: Value,
    /// A booking to decide at store time.
    booking: Option<Booking>,
}

struct Planner<'a> {
    site: &'a SiteContext,
    index: Index<'a>,
    events: Vec<PlannedEvent>,
}

impl Planner<'_> {
    fn event_id(&self, key: &str) -> Uuid {
        Uuid::new_v5(
            &FHIR_NAMESPACE,
            format!("{}|{key}", self.site.site).as_bytes(),
        )
    }

    /// Adds an event, validated by the envelope contract.
    fn push(&mut self, entry: &Entry, id: Uuid, d: Draft) -> Outcome {
        let Draft {
            event_type,
            channel,
            at,
            patient,
            fields,
            booking,
        } = d;
        let mut obj = Map::new();
        obj.insert("id".into(), json!(id.to_string()));
        obj.insert("type".into(), json!(event_type));
        obj.insert("occurred_at".into(), json!(time(at)));
        obj.insert("site".into(), json!(self.site.site.to_string()));
        obj.insert("channel".into(), json!(channel));
        obj.insert("patient".into(), patient);
        obj.insert("fhir_source".into(), json!(entry.key));
        if let Value::Object(f) = fields {
            for (k, v) in f {
                if !v.is_null() {
                    obj.insert(k, v);
                }
            }
        }
        match Envelope::from_object(obj.clone()) {
            Ok(envelope) => {
                self.events.push(PlannedEvent {
                    object: obj,
                    envelope,
                    booking,
                });
                Outcome::Event(self.events.len() - 1)
            }
            Err(e) => Outcome::Refused(
                e.field_errors()
                    .into_iter()
                    .map(|f| {
                        Issue::error(
                            "processing",
                            &entry.path,
                            format!("cannot become a Front Door event: {} {}", f.field, f.reason),
                        )
                    })
                    .collect(),
            ),
        }
    }

    fn name_of(&self, r: &Reference) -> Option<String> {
        match self.index.resolve(r).map(|e| &e.body) {
            Some(Body::Practitioner { name }) => name.clone().or_else(|| r.display.clone()),
            Some(Body::PractitionerRole { practitioner, .. }) => practitioner
                .as_ref()
                .and_then(|p| self.name_of(p))
                .or_else(|| r.display.clone()),
            Some(Body::Location { name }) => name.clone().or_else(|| r.display.clone()),
            _ => r.display.clone(),
        }
    }

    fn kind_of<'r>(&'r self, r: &'r Reference) -> Option<&'r str> {
        match self.index.resolve(r) {
            Some(e) => e.resource_type,
            None => r.target_type(),
        }
    }
}

/// Maps every entry into events (or a reason why not). Nothing is stored here.
pub fn plan(received: &Received, site: &SiteContext) -> Plan {
    let mut p = Planner {
        site,
        index: Index::new(&received.entries),
        events: Vec::new(),
    };
    let n = received.entries.len();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    let mut notes: Vec<Vec<Issue>> = vec![Vec::new(); n];

    // Patients first: their links are in place before the events about them.
    for (i, e) in received.entries.iter().enumerate() {
        if let Body::Patient {
            identifiers,
            telecom,
        } = &e.body
        {
            outcomes[i] = Some(plan_patient(&mut p, e, identifiers, telecom, &mut notes[i]));
        }
    }
    // Medication lists: one per patient, at the place of its first entry.
    let mut lists: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut list_order: Vec<String> = Vec::new();
    for (i, e) in received.entries.iter().enumerate() {
        if outcomes[i].is_some() {
            continue;
        }
        if e.method
            .as_deref()
            .is_some_and(|m| !matches!(m, "POST" | "PUT"))
        {
            outcomes[i] = Some(Outcome::NotAllowed);
            continue;
        }
        let outcome = match &e.body {
            Body::Medication { subject, .. } => {
                match subject.as_ref().map(|s| patient_mrn(&p.index, s, site)) {
                    Some(Ok(mrn)) => {
                        if !lists.contains_key(&mrn) {
                            list_order.push(mrn.clone());
                        }
                        lists.entry(mrn).or_default().push(i);
                        continue;
                    }
                    Some(Err(issue)) => Outcome::Refused(vec![issue]),
                    None => Outcome::Refused(vec![Issue::error(
                        "required",
                        &format!("{}.subject", e.path),
                        "is required",
                    )]),
                }
            }
            Body::Appointment(a) => plan_appointment(&mut p, e, a),
            Body::Observation(o) => plan_observation(&mut p, e, o, &mut notes[i]),
            Body::Communication(c) => plan_communication(&mut p, e, c),
            Body::Encounter(enc) => plan_encounter(&mut p, e, enc),
            Body::Practitioner { .. }
            | Body::PractitionerRole { .. }
            | Body::Location { .. }
            | Body::MedicationDefinition { .. }
            | Body::Supporting => Outcome::Skip {
                text: "read to resolve references; nothing is recorded from it on its own".into(),
                unsupported: false,
            },
            Body::Unsupported => Outcome::Skip {
                text: format!(
                    "Front Door does not use {} resources: skipped",
                    e.resource_type.unwrap_or("these")
                ),
                unsupported: true,
            },
            Body::Empty | Body::Patient { .. } => Outcome::NotAllowed,
        };
        outcomes[i] = Some(outcome);
    }
    for mrn in list_order {
        let members = &lists[&mrn];
        let outcome = plan_medication_list(&mut p, received, &mrn, members, &mut notes);
        for &i in members {
            outcomes[i] = Some(outcome.clone());
        }
    }
    let entries = received
        .entries
        .iter()
        .zip(outcomes)
        .zip(notes)
        .map(|((e, o), notes)| EntryPlan {
            resource_type: e.resource_type,
            etag: e.version.as_ref().map(|v| format!("W/\"{v}\"")),
            outcome: o.unwrap_or(Outcome::NotAllowed),
            notes,
        })
        .collect();
    Plan {
        entries,
        events: p.events,
    }
}

fn plan_patient(
    p: &mut Planner<'_>,
    e: &Entry,
    identifiers: &[(String, Ident)],
    telecom: &[Telecom],
    notes: &mut Vec<Issue>,
) -> Outcome {
    let Some((mrn_path, mrn)) = mrn_of_identifiers(identifiers, &p.site.mrn_systems) else {
        return Outcome::Skip {
            text: "no identifier of this site's MRN systems: nothing recorded, and resources about this patient are refused".into(),
            unsupported: false,
        };
    };
    let Ok(mrn) = Mrn::parse(mrn) else {
        return Outcome::Refused(vec![Issue::error(
            "value",
            mrn_path,
            "is not usable as an MRN (1-64 of A-Z a-z 0-9 - _ . :)",
        )]);
    };
    let mut phones: Vec<(bool, PhoneNumber)> = Vec::new();
    let mut email: Option<Email> = None;
    for t in telecom {
        let Some(value) = t.value.as_deref() else {
            continue;
        };
        match t.system.as_deref() {
            Some("phone" | "sms") => match normalize_phone(value, &p.site.country_code) {
                Some(n) => phones.push((t.use_.as_deref() == Some("mobile"), n)),
                None => notes.push(Issue::warning(
                    "value",
                    &format!("{}.value", t.path),
                    "is not a phone number Front Door can use (E.164 after normalisation): not linked",
                )),
            },
            Some("email") => match Email::parse(value) {
                Ok(m) if email.is_none() => email = Some(m),
                Ok(_) => {}
                Err(_) => notes.push(Issue::warning(
                    "value",
                    &format!("{}.value", t.path),
                    "is not an email address Front Door can use: not linked",
                )),
            },
            _ => {}
        }
    }
    // A mobile number first: that is where confirmations go.
    phones.sort_by_key(|(mobile, _)| !*mobile);
    let ids = PatientIdentifiers {
        mrn: Some(mrn),
        phone: phones.into_iter().next().map(|(_, n)| n),
        email,
        portal_id: None,
    };
    if ids.phone.is_none() && ids.email.is_none() {
        return Outcome::Skip {
            text: "the MRN alone: nothing to link".into(),
            unsupported: false,
        };
    }
    let patient = serde_json::to_value(&ids).unwrap_or(Value::Null);
    let id = p.event_id(&e.key);
    let at = e.last_updated.unwrap_or(p.site.now);
    p.push(
        e,
        id,
        Draft {
            event_type: "identity.linked",
            channel: "ehr",
            at,
            patient,
            fields: json!({}),
            booking: None,
        },
    )
}

fn plan_appointment(p: &mut Planner<'_>, e: &Entry, a: &AppointmentBody) -> Outcome {
    let event_type = match a.status {
        "booked" => "appointment.booked",
        "cancelled" => "appointment.cancelled",
        "noshow" => "appointment.no_show",
        "fulfilled" | "arrived" | "checked-in" => "appointment.checked_in",
        other => {
            return Outcome::Skip {
                text: format!(
                    "an appointment that is {other}: Front Door records booked, cancelled, no-show and attended appointments"
                ),
                unsupported: false,
            }
        }
    };
    let patient_ref = a.actors.iter().find(|r| p.kind_of(r) == Some("Patient"));
    let Some(patient_ref) = patient_ref else {
        return Outcome::Refused(vec![Issue::error(
            "required",
            &format!("{}.participant", e.path),
            "names no patient (a participant whose actor is a Patient)",
        )]);
    };
    let mrn = match patient_mrn(&p.index, patient_ref, p.site) {
        Ok(m) => m,
        Err(issue) => return Outcome::Refused(vec![issue]),
    };
    let provider = a
        .actors
        .iter()
        .filter(|r| matches!(p.kind_of(r), Some("Practitioner" | "PractitionerRole")))
        .find_map(|r| p.name_of(r));
    let location = a
        .actors
        .iter()
        .filter(|r| p.kind_of(r) == Some("Location"))
        .find_map(|r| p.name_of(r));
    let appointment_id =
        e.id.clone()
            .or_else(|| a.identifier.clone())
            .or_else(|| e.full_url.clone())
            .unwrap_or_else(|| e.key.clone());
    let fields = json!({
        "appointment_id": appointment_id,
        "starts_at": a.start.map(time),
        "ends_at": a.end.map(time),
        "department": a.department,
        "reason": a.reason,
        "provider": provider,
        "location": location,
        "telehealth_url": a.telehealth_url,
    });
    let booking = (event_type == "appointment.booked")
        .then(|| {
            a.start.map(|starts_at| Booking {
                mrn: mrn.clone(),
                appointment_id: appointment_id.clone(),
                starts_at,
            })
        })
        .flatten();
    let id = p.event_id(&e.key);
    let at = e.last_updated.or(a.created).unwrap_or(p.site.now);
    p.push(
        e,
        id,
        Draft {
            event_type,
            channel: "ehr",
            at,
            patient: json!({"mrn": mrn}),
            fields,
            booking,
        },
    )
}

fn medication_label(p: &Planner<'_>, name: &Option<MedicationName>) -> Option<String> {
    match name.as_ref()? {
        MedicationName::Concept(c) => c.label(),
        MedicationName::Reference(r) => match p.index.resolve(r).map(|e| &e.body) {
            Some(Body::MedicationDefinition { name }) => name.clone().or_else(|| r.display.clone()),
            _ => r.display.clone(),
        },
    }
}

fn plan_medication_list(
    p: &mut Planner<'_>,
    received: &Received,
    mrn: &str,
    members: &[usize],
    notes: &mut [Vec<Issue>],
) -> Outcome {
    let mut items = Vec::new();
    let mut keys: Vec<&str> = Vec::new();
    let mut latest: Option<DateTime<Utc>> = None;
    for &i in members {
        let e = &received.entries[i];
        keys.push(&e.key);
        latest = latest.max(e.last_updated);
        let Body::Medication {
            status,
            name,
            dose,
            frequency,
            ..
        } = &e.body
        else {
            continue;
        };
        if *status != "active" {
            notes[i].push(Issue::info(
                "informational",
                format!("not on the current list (status {status})"),
            ));
            continue;
        }
        match medication_label(p, name) {
            Some(label) => items.push(json!({"name": label, "dose": dose, "frequency": frequency})),
            None => notes[i].push(Issue::warning(
                "incomplete",
                &e.path,
                "the medication has no text, display or code: not on the list",
            )),
        }
    }
    for item in &mut items {
        if let Value::Object(m) = item {
            m.retain(|_, v| !v.is_null());
        }
    }
    keys.sort_unstable();
    let id = p.event_id(&format!("medications|{mrn}|{}", keys.join(",")));
    let at = received.timestamp.or(latest).unwrap_or(p.site.now);
    let first = &received.entries[members[0]];
    p.push(
        first,
        id,
        Draft {
            event_type: "medications.updated",
            channel: "ehr",
            at,
            patient: json!({"mrn": mrn}),
            fields: json!({"medications": items}),
            booking: None,
        },
    )
}

fn plan_observation(
    p: &mut Planner<'_>,
    e: &Entry,
    o: &ObservationBody,
    notes: &mut Vec<Issue>,
) -> Outcome {
    if matches!(o.status, "registered" | "cancelled" | "entered-in-error") {
        return Outcome::Skip {
            text: format!("an observation that is {}: no result to keep", o.status),
            unsupported: false,
        };
    }
    let loinc = o.code.code_in(codes::LOINC);
    let glucose = loinc.and_then(codes::glucose);
    let vital = p.site.vital_signs
        && o.categories
            .iter()
            .any(|c| c.code_in(codes::OBSERVATION_CATEGORY) == Some("vital-signs"));
    let device = match (glucose, vital) {
        (Some(g), _) => g.device(),
        (None, true) => "vital-signs",
        (None, false) => {
            return Outcome::Skip {
                text: "not a glucose reading (by LOINC code), and vital signs are not kept here"
                    .into(),
                unsupported: false,
            }
        }
    };
    let Some(subject) = &o.subject else {
        return Outcome::Refused(vec![Issue::error(
            "required",
            &format!("{}.subject", e.path),
            "is required for a reading Front Door keeps",
        )]);
    };
    let mrn = match patient_mrn(&p.index, subject, p.site) {
        Ok(m) => m,
        Err(issue) => return Outcome::Refused(vec![issue]),
    };
    let mut summary = Map::new();
    summary.insert("source".into(), json!("fhir"));
    if let Some(l) = loinc {
        summary.insert("loinc".into(), json!(l));
    }
    if let Some(label) = o.code.label() {
        summary.insert("display".into(), json!(label));
    }
    if glucose.is_some() {
        summary.insert("analyte".into(), json!("glucose"));
    }
    if let Some(q) = o.value.as_ref().filter(|q| q.value.is_some()) {
        summary.insert("value".into(), json!(q.value));
        if let Some(u) = q.unit.clone().or_else(|| q.code.clone()) {
            summary.insert("unit".into(), json!(u));
        }
    } else if !o.components.is_empty() {
        let parts: Vec<Value> = o
            .components
            .iter()
            .map(|(c, q)| {
                json!({"loinc": c.code_in(codes::LOINC), "display": c.label(),
                    "value": q.value, "unit": q.unit.clone().or_else(|| q.code.clone())})
            })
            .collect();
        summary.insert("components".into(), json!(parts));
    } else {
        notes.push(Issue::warning(
            "incomplete",
            &format!("{}.value[x]", e.path),
            "is not a quantity: the reading is kept without a value",
        ));
    }
    let at = o.effective.or(e.last_updated).unwrap_or(p.site.now);
    summary.insert("at".into(), json!(time(at)));
    if glucose == Some(GlucoseSource::Cgm) && loinc.is_some_and(|l| l.starts_with("975")) {
        summary.insert("kind".into(), json!("summary"));
    }
    let id = p.event_id(&e.key);
    p.push(
        e,
        id,
        Draft {
            event_type: "device.readings",
            channel: "ehr",
            at,
            patient: json!({"mrn": mrn}),
            fields: json!({"device": device, "summary": Value::Object(summary)}),
            booking: None,
        },
    )
}

/// A contact id from a FHIR reference or key: `fhir:` and the last 120 usable characters.
fn contact_id(seed: &str) -> String {
    let cleaned: String = seed
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:".contains(c) {
                c
            } else {
                ':'
            }
        })
        .collect();
    let tail: String = cleaned
        .chars()
        .rev()
        .take(120)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("fhir:{}", tail.trim_start_matches(':'))
}

fn plan_communication(p: &mut Planner<'_>, e: &Entry, c: &CommunicationBody) -> Outcome {
    if !matches!(c.status, "completed" | "in-progress") {
        return Outcome::Skip {
            text: format!("a message that is {}: not sent, nothing to show", c.status),
            unsupported: false,
        };
    }
    if c.texts.is_empty() {
        return Outcome::Skip {
            text: "no text payload (contentString): nothing to show".into(),
            unsupported: false,
        };
    }
    let Some(subject) = &c.subject else {
        return Outcome::Refused(vec![Issue::error(
            "required",
            &format!("{}.subject", e.path),
            "is required: the patient the message is about",
        )]);
    };
    let mrn = match patient_mrn(&p.index, subject, p.site) {
        Ok(m) => m,
        Err(issue) => return Outcome::Refused(vec![issue]),
    };
    let from = match c.sender.as_ref().map(|s| p.kind_of(s)) {
        Some(Some("Patient" | "RelatedPerson")) => "patient",
        Some(Some("Practitioner" | "PractitionerRole" | "Organization" | "CareTeam")) => "staff",
        Some(Some("Device")) => "bot",
        _ => {
            return Outcome::Skip {
                text: "a message without a sender Front Door can tell (Patient, RelatedPerson, Practitioner, PractitionerRole, Organization, CareTeam or Device): not shown".into(),
                unsupported: false,
            }
        }
    };
    let thread = c
        .thread
        .as_ref()
        .and_then(|t| {
            p.index
                .resolve(t)
                .map(|te| te.id.clone().or(te.full_url.clone()).unwrap_or_default())
                .or_else(|| t.reference.clone())
        })
        .or_else(|| e.id.clone())
        .or_else(|| e.full_url.clone())
        .unwrap_or_else(|| e.key.clone());
    let id = p.event_id(&e.key);
    let at = c.sent.or(e.last_updated).unwrap_or(p.site.now);
    p.push(
        e,
        id,
        Draft {
            event_type: "contact.message",
            channel: "portal",
            at,
            patient: json!({"mrn": mrn}),
            fields: json!({"contact_id": contact_id(&thread), "from": from, "text": c.texts.join("\n")}),
            booking: None,
        },
    )
}

fn plan_encounter(p: &mut Planner<'_>, e: &Entry, enc: &EncounterBody) -> Outcome {
    if enc.status != "finished" {
        return Outcome::Skip {
            text: format!(
                "an encounter that is {}: only finished visits have a summary",
                enc.status
            ),
            unsupported: false,
        };
    }
    let Some(summary) = enc.summary.clone() else {
        return Outcome::Skip {
            text: "a finished encounter without a narrative (text.div): no summary to keep".into(),
            unsupported: false,
        };
    };
    let Some(subject) = &enc.subject else {
        return Outcome::Refused(vec![Issue::error(
            "required",
            &format!("{}.subject", e.path),
            "is required for a visit summary Front Door keeps",
        )]);
    };
    let mrn = match patient_mrn(&p.index, subject, p.site) {
        Ok(m) => m,
        Err(issue) => return Outcome::Refused(vec![issue]),
    };
    let author = enc
        .participants
        .iter()
        .find_map(|r| p.name_of(r))
        .unwrap_or_else(|| "EHR".into());
    let id = p.event_id(&e.key);
    let at = enc.at.or(e.last_updated).unwrap_or(p.site.now);
    p.push(
        e,
        id,
        Draft {
            event_type: "note.recorded",
            channel: "ehr",
            at,
            patient: json!({"mrn": mrn}),
            fields: json!({"author": author, "role": "visit summary", "text": summary}),
            booking: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> SiteContext {
        SiteContext {
            site: SiteId::parse("north").unwrap(),
            mrn_systems: vec!["urn:oid:1.2.3".into()],
            country_code: "1".into(),
            vital_signs: false,
            now: "2026-11-30T12:00:00Z".parse().unwrap(),
        }
    }

    fn bundle(kind: &str, entries: Vec<Value>) -> Value {
        json!({"resourceType": "Bundle", "type": kind, "entry": entries})
    }

    fn post(url: &str, resource: Value) -> Value {
        let rt = resource["resourceType"].as_str().unwrap().to_string();
        json!({"fullUrl": url, "resource": resource, "request": {"method": "POST", "url": rt}})
    }

    fn patient() -> Value {
        post(
            "urn:uuid:00000000-0000-4000-8000-000000000001",
            json!({"resourceType": "Patient",
              "identifier": [{"system": "urn:other", "value": "X-1"}, {"system": "urn:oid:1.2.3", "value": "MRN-7"}],
              "telecom": [{"system": "phone", "value": "(555) 010-0001", "use": "home"},
                          {"system": "phone", "value": "555.010.0002", "use": "mobile"},
                          {"system": "email", "value": "Pat@Example.org"}]}),
        )
    }

    fn glucose(status: &str) -> Value {
        post(
            "urn:uuid:00000000-0000-4000-8000-000000000002",
            json!({"resourceType": "Observation", "status": status,
              "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
              "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
              "effectiveDateTime": "2026-11-29T08:00:00Z",
              "valueQuantity": {"value": 162, "unit": "mg/dL"}}),
        )
    }

    #[test]
    fn a_patient_links_its_mrn_with_its_mobile_and_email() {
        let b = bundle("transaction", vec![patient()]);
        let plan = plan(&read(&b).unwrap(), &site());
        let e = &plan.events[0].envelope;
        assert_eq!(e.event_type, "identity.linked");
        let ids = e.patient.as_ref().unwrap();
        assert_eq!(ids.mrn.as_ref().unwrap().as_str(), "MRN-7");
        assert_eq!(ids.phone.as_ref().unwrap().as_str(), "+15550100002");
        assert_eq!(ids.email.as_ref().unwrap().as_str(), "pat@example.org");
    }

    #[test]
    fn a_glucose_observation_becomes_a_reading_of_its_patient_by_mrn() {
        let b = bundle("batch", vec![glucose("final"), patient()]);
        let plan = plan(&read(&b).unwrap(), &site());
        assert_eq!(plan.events.len(), 2);
        assert_eq!(
            plan.events[0].envelope.event_type, "identity.linked",
            "patients first"
        );
        let reading = &plan.events[1].object;
        assert_eq!(reading["device"], "lab");
        assert_eq!(reading["summary"]["value"], 162.0);
        assert_eq!(reading["patient"]["mrn"], "MRN-7");
    }

    #[test]
    fn the_same_resource_gives_the_same_event_id_and_a_changed_one_another() {
        let b = bundle("batch", vec![patient(), glucose("final")]);
        let one = plan(&read(&b).unwrap(), &site());
        let two = plan(&read(&b).unwrap(), &site());
        assert_eq!(one.events[1].envelope.id, two.events[1].envelope.id);
        let changed = bundle("batch", vec![patient(), glucose("amended")]);
        let three = plan(&read(&changed).unwrap(), &site());
        assert_ne!(one.events[1].envelope.id, three.events[1].envelope.id);
    }

    #[test]
    fn a_missing_required_element_is_named_by_its_path_and_nothing_is_planned() {
        let mut g = glucose("final");
        g["resource"].as_object_mut().unwrap().remove("status");
        let issues = read(&bundle("transaction", vec![patient(), g])).unwrap_err();
        assert_eq!(
            issues[0].expression.as_deref(),
            Some("Bundle.entry[1].resource.status")
        );
        assert_eq!(issues[0].code, "required");
    }

    #[test]
    fn a_reference_that_leads_nowhere_refuses_the_entry_not_the_batch() {
        let mut g = glucose("final");
        g["resource"]["subject"] = json!({"reference": "Patient/elsewhere"});
        let plan = plan(
            &read(&bundle("batch", vec![patient(), g])).unwrap(),
            &site(),
        );
        assert!(matches!(plan.entries[0].outcome, Outcome::Event(_)));
        let refused = plan.refusals();
        assert_eq!(
            refused[0].expression.as_deref(),
            Some("Bundle.entry[1].resource.subject")
        );
    }

    #[test]
    fn stopped_medications_are_dropped_from_the_one_list_of_the_patient() {
        let med = |url: &str, status: &str, name: &str| {
            post(
                url,
                json!({"resourceType": "MedicationRequest", "status": status, "intent": "order",
                "medicationCodeableConcept": {"text": name},
                "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
                "dosageInstruction": [{"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                    "doseAndRate": [{"doseQuantity": {"value": 500, "unit": "mg"}}]}]}),
            )
        };
        let b = bundle(
            "collection",
            vec![
                patient(),
                med("urn:uuid:a1", "active", "metformin"),
                med("urn:uuid:a2", "stopped", "glipizide"),
            ],
        );
        let plan = plan(&read(&b).unwrap(), &site());
        assert_eq!(plan.events.len(), 2);
        let list = &plan.events[1].object["medications"];
        assert_eq!(
            list,
            &json!([{"name": "metformin", "dose": "500 mg", "frequency": "2 times per 1 d"}])
        );
        assert!(matches!(plan.entries[1].outcome, Outcome::Event(1)));
        assert!(matches!(plan.entries[2].outcome, Outcome::Event(1)));
    }

    #[test]
    fn an_appointment_resolves_its_patient_provider_and_location_in_the_bundle() {
        let b = bundle(
            "transaction",
            vec![
                patient(),
                post(
                    "urn:uuid:p9",
                    json!({"resourceType": "Practitioner", "name": [{"family": "Lee", "prefix": ["Dr"]}]}),
                ),
                post(
                    "urn:uuid:l9",
                    json!({"resourceType": "Location", "name": "North Clinic"}),
                ),
                post(
                    "urn:uuid:ap",
                    json!({"resourceType": "Appointment", "id": "appt-77", "status": "booked",
                    "start": "2026-12-01T09:30:00Z", "end": "2026-12-01T10:00:00Z",
                    "specialty": [{"coding": [{"display": "Dermatology"}]}],
                    "description": "Rash on both forearms",
                    "participant": [
                        {"actor": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"}, "status": "accepted"},
                        {"actor": {"reference": "urn:uuid:p9"}, "status": "accepted"},
                        {"actor": {"reference": "urn:uuid:l9"}, "status": "accepted"}]}),
                ),
            ],
        );
        let plan = plan(&read(&b).unwrap(), &site());
        let a = &plan.events[1];
        assert_eq!(a.object["type"], "appointment.booked");
        assert_eq!(a.object["appointment_id"], "appt-77");
        assert_eq!(a.object["provider"], "Dr Lee");
        assert_eq!(a.object["location"], "North Clinic");
        assert_eq!(a.object["department"], "Dermatology");
        assert_eq!(a.object["reason"], "Rash on both forearms");
        assert_eq!(a.booking.as_ref().unwrap().mrn, "MRN-7");
    }

    #[test]
    fn an_appointment_booked_without_an_end_breaks_app_3() {
        let b = json!({"resourceType": "Appointment", "status": "booked", "start": "2026-12-01T09:30:00Z",
            "participant": [{"actor": {"reference": "Patient/1"}, "status": "accepted"}]});
        let issues = read(&b).unwrap_err();
        assert_eq!(issues[0].expression.as_deref(), Some("Appointment.end"));
        assert_eq!(issues[0].code, "invariant");
    }

    #[test]
    fn phones_are_normalised_to_e164_or_skipped() {
        let n = |s: &str| normalize_phone(s, "1").map(|p| p.as_str().to_string());
        assert_eq!(n("(555) 010-0001").as_deref(), Some("+15550100001"));
        assert_eq!(n("1-555-010-0001").as_deref(), Some("+15550100001"));
        assert_eq!(n("+44 20 7946 0958").as_deref(), Some("+442079460958"));
        assert_eq!(n("call me"), None);
        assert_eq!(normalize_phone("555 010 0001", ""), None);
    }

    #[test]
    fn an_unknown_resource_type_is_skipped_and_a_non_r4_one_is_invalid() {
        let b = bundle(
            "batch",
            vec![post("urn:uuid:c1", json!({"resourceType": "Condition"}))],
        );
        let plan = plan(&read(&b).unwrap(), &site());
        assert!(matches!(
            plan.entries[0].outcome,
            Outcome::Skip {
                unsupported: true,
                ..
            }
        ));
        let b = bundle(
            "batch",
            vec![post(
                "urn:uuid:c1",
                json!({"resourceType": "SubscriptionTopic"}),
            )],
        );
        let issues = read(&b).unwrap_err();
        assert_eq!(
            issues[0].expression.as_deref(),
            Some("Bundle.entry[0].resource.resourceType")
        );
    }

    #[test]
    fn a_portal_message_and_a_visit_summary_become_a_message_and_a_note() {
        let b = bundle(
            "collection",
            vec![
                patient(),
                post(
                    "urn:uuid:pr1",
                    json!({"resourceType": "Practitioner", "name": [{"text": "Dr Lee"}]}),
                ),
                post(
                    "urn:uuid:m1",
                    json!({"resourceType": "Communication", "id": "msg-1", "status": "completed",
                    "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
                    "sender": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
                    "sent": "2026-11-29T10:00:00Z",
                    "payload": [{"contentString": "Is the rash contagious?"}]}),
                ),
                post(
                    "urn:uuid:e1",
                    json!({"resourceType": "Encounter", "status": "finished",
                    "class": {"code": "AMB"},
                    "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
                    "participant": [{"individual": {"reference": "urn:uuid:pr1"}}],
                    "period": {"start": "2026-11-28T09:00:00Z", "end": "2026-11-28T09:30:00Z"},
                    "text": {"status": "generated", "div": "<div><p>Eczema; steroid cream.</p></div>"}}),
                ),
            ],
        );
        let plan = plan(&read(&b).unwrap(), &site());
        let msg = &plan.events[1].object;
        assert_eq!(msg["type"], "contact.message");
        assert_eq!(msg["channel"], "portal");
        assert_eq!(msg["from"], "patient");
        assert_eq!(msg["contact_id"], "fhir:msg-1");
        let note = &plan.events[2].object;
        assert_eq!(note["type"], "note.recorded");
        assert_eq!(note["author"], "Dr Lee");
        assert_eq!(note["role"], "visit summary");
        assert_eq!(note["text"], "Eczema; steroid cream.");
        assert_eq!(note["occurred_at"], "2026-11-28T09:30:00Z");
    }

    #[test]
    fn narrative_becomes_plain_text() {
        assert_eq!(
            narrative_text("<div xmlns=\"x\"><p><b>Seen</b> for rash &amp; itch.</p></div>"),
            "Seen for rash & itch."
        );
    }
}
