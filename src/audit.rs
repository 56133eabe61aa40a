//! The audit trail's vocabulary: what is recorded for every read of patient data,
//! every denied attempt and every identity link, and its FHIR R4 `AuditEvent` form.
//!
//! The records live in the store (`store::audit`, append-only); this module knows no
//! SQL and no HTTP.

use chrono::{DateTime, TimeZone, Utc};
use frontdoor_actors::ids::PatientId;
use serde::Serialize;
use serde_json::{json, Value};

/// Why data was accessed (HL7 v3 PurposeOfUse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Treatment (`TREAT`): an agent handling the patient's contact.
    Treatment,
    /// Health-care operations (`HOPERAT`): supervision, quality, identity upkeep.
    Operations,
    /// Payment (`HPAYMT`).
    Payment,
    /// Emergency treatment, break-glass (`ETREAT`).
    Emergency,
}

impl Purpose {
    /// Parses the `X-Purpose-Of-Use` header (names or v3 codes, any case).
    pub fn parse(s: &str) -> Option<Purpose> {
        match s.trim().to_ascii_lowercase().as_str() {
            "treatment" | "treat" => Some(Purpose::Treatment),
            "operations" | "hoperat" => Some(Purpose::Operations),
            "payment" | "hpaymt" => Some(Purpose::Payment),
            "emergency" | "etreat" => Some(Purpose::Emergency),
            _ => None,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Treatment => "treatment",
            Purpose::Operations => "operations",
            Purpose::Payment => "payment",
            Purpose::Emergency => "emergency",
        }
    }

    fn from_stored(s: &str) -> Purpose {
        Purpose::parse(s).unwrap_or(Purpose::Operations)
    }

    /// The HL7 v3 ActReason code.
    pub fn v3_code(self) -> (&'static str, &'static str) {
        match self {
            Purpose::Treatment => ("TREAT", "treatment"),
            Purpose::Operations => ("HOPERAT", "healthcare operations"),
            Purpose::Payment => ("HPAYMT", "healthcare payment"),
            Purpose::Emergency => ("ETREAT", "Emergency Treatment"),
        }
    }
}

/// What became of the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Done.
    Success,
    /// A known principal was refused (403).
    Denied,
    /// No or an unknown token (401).
    Unauthenticated,
    /// Allowed, but the subject does not exist (404).
    NotFound,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::NotFound => "not-found",
        }
    }

    fn from_stored(s: &str) -> Outcome {
        match s {
            "success" => Outcome::Success,
            "unauthenticated" => Outcome::Unauthenticated,
            "not-found" => Outcome::NotFound,
            _ => Outcome::Denied,
        }
    }

    /// FHIR `AuditEvent.outcome`: 0 success, 4 minor failure (refused, not found).
    pub fn fhir_code(self) -> &'static str {
        match self {
            Outcome::Success => "0",
            _ => "4",
        }
    }
}

/// The kind of access (FHIR `AuditEvent.action`: C, R, U, D, E).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read (R).
    Read,
    /// Create (C): an identifier claimed by a patient.
    Create,
    /// Update (U): a merge or an identifier moved between patients.
    Update,
    /// Execute (E): a query or search.
    Execute,
}

impl Action {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Execute => "execute",
        }
    }

    fn from_stored(s: &str) -> Action {
        match s {
            "create" => Action::Create,
            "update" => Action::Update,
            "execute" => Action::Execute,
            _ => Action::Read,
        }
    }

    fn fhir_code(self) -> &'static str {
        match self {
            Action::Read => "R",
            Action::Create => "C",
            Action::Update => "U",
            Action::Execute => "E",
        }
    }

    fn restful_interaction(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Execute => "search-type",
        }
    }
}

/// One audit record to write.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Principal id; None when the caller was not authenticated.
    pub principal_id: Option<String>,
    /// Role name (`system` for automatic identity rules).
    pub principal_role: Option<String>,
    /// Kind of access.
    pub action: Action,
    /// What was accessed (`patient.context`, `patient.lookup`, `identity.merge`...).
    pub resource: String,
    /// Whose data, when known.
    pub patient_id: Option<PatientId>,
    /// Why.
    pub purpose: Purpose,
    /// The stated reason (free text from the caller; stored, never logged).
    pub reason: Option<String>,
    /// Outcome.
    pub outcome: Outcome,
    /// A short non-PHI note (identifier kind, the patient merged from, HTTP status).
    pub detail: Option<String>,
    /// The event that caused it, for identity links.
    pub event_id: Option<String>,
}

/// One stored audit record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// Position in the log (the pagination cursor).
    pub seq: i64,
    /// Stable id (the FHIR resource id).
    pub id: String,
    /// When.
    pub recorded_at: DateTime<Utc>,
    /// Who.
    pub principal_id: Option<String>,
    /// Their role.
    pub principal_role: Option<String>,
    /// Kind of access.
    pub action: Action,
    /// What.
    pub resource: String,
    /// Whose data.
    pub patient_id: Option<String>,
    /// Why.
    pub purpose: Purpose,
    /// The stated reason.
    pub reason: Option<String>,
    /// Outcome.
    pub outcome: Outcome,
    /// Note.
    pub detail: Option<String>,
    /// Causing event.
    pub event_id: Option<String>,
}

impl AuditRecord {
    /// Builds a record from stored columns.
    #[allow(clippy::too_many_arguments)]
    pub fn from_row(
        seq: i64,
        id: String,
        recorded_at_ms: i64,
        principal_id: Option<String>,
        principal_role: Option<String>,
        action: &str,
        resource: String,
        patient_id: Option<String>,
        purpose: &str,
        reason: Option<String>,
        outcome: &str,
        detail: Option<String>,
        event_id: Option<String>,
    ) -> AuditRecord {
        AuditRecord {
            seq,
            id,
            recorded_at: Utc
                .timestamp_millis_opt(recorded_at_ms)
                .single()
                .unwrap_or_default(),
            principal_id,
            principal_role,
            action: Action::from_stored(action),
            resource,
            patient_id,
            purpose: Purpose::from_stored(purpose),
            reason,
            outcome: Outcome::from_stored(outcome),
            detail,
            event_id,
        }
    }

    /// The record as a FHIR R4 `AuditEvent`.
    pub fn to_fhir(&self) -> Value {
        let (purpose_code, purpose_display) = self.purpose.v3_code();
        let system_actor = self.principal_role.as_deref() == Some("system");
        let who = match &self.principal_id {
            Some(id) => json!({
                "identifier": {"system": "urn:frontdoor:principal", "value": id},
                "display": id,
            }),
            None => json!({"display": "unauthenticated caller"}),
        };
        let mut agent = json!({
            "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                "code": "humanuser",
                "display": "human user",
            }]},
            "who": who,
            "requestor": true,
        });
        if system_actor {
            agent["type"] = json!({"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                "code": "dataprocessor",
                "display": "data processor",
            }]});
        }
        if let Some(role) = &self.principal_role {
            agent["role"] = json!([{"coding": [{"system": "urn:frontdoor:role", "code": role}]}]);
        }
        let mut purpose = json!({"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
            "code": purpose_code,
            "display": purpose_display,
        }]});
        if let Some(reason) = &self.reason {
            purpose["text"] = json!(reason);
        }
        let mut event = json!({
            "resourceType": "AuditEvent",
            "id": self.id,
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                "code": "rest",
                "display": "Restful Operation",
            },
            "subtype": [{
                "system": "http://hl7.org/fhir/restful-interaction",
                "code": self.action.restful_interaction(),
            }, {
                "system": "urn:frontdoor:audit-resource",
                "code": self.resource,
            }],
            "action": self.action.fhir_code(),
            "recorded": self.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "outcome": self.outcome.fhir_code(),
            "outcomeDesc": self.outcome.as_str(),
            "purposeOfEvent": [purpose],
            "agent": [agent],
            "source": {
                "site": "frontdoor",
                "observer": {"display": "Front Door"},
                "type": [{
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }],
            },
        });
        if let Some(p) = &self.patient_id {
            event["entity"] = json!([{
                "what": {"reference": format!("Patient/{p}")},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                    "display": "Person",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            }]);
            // FHIR JSON has no nulls: the description only when there is one.
            if let Some(d) = &self.detail {
                event["entity"][0]["description"] = json!(d);
            }
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: &str) -> AuditRecord {
        AuditRecord::from_row(
            7,
            "a1".into(),
            1_700_000_000_000,
            Some("agent-7".into()),
            Some("agent".into()),
            "read",
            "patient.context".into(),
            Some("7f0c2b7e-0000-4000-8000-000000000001".into()),
            "treatment",
            None,
            outcome,
            None,
            None,
        )
    }

    #[test]
    fn a_context_read_becomes_a_fhir_audit_event_with_action_r_and_the_patient_entity() {
        let e = record("success").to_fhir();
        assert_eq!(e["resourceType"], "AuditEvent");
        assert_eq!(e["action"], "R");
        assert_eq!(e["outcome"], "0");
        assert_eq!(e["type"]["code"], "rest");
        assert_eq!(e["subtype"][0]["code"], "read");
        assert_eq!(e["recorded"], "2023-11-14T22:13:20.000Z");
        assert_eq!(e["agent"][0]["who"]["identifier"]["value"], "agent-7");
        assert_eq!(e["agent"][0]["requestor"], true);
        assert_eq!(
            e["entity"][0]["what"]["reference"],
            "Patient/7f0c2b7e-0000-4000-8000-000000000001"
        );
        assert_eq!(e["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
        assert_eq!(e["source"]["observer"]["display"], "Front Door");
    }

    #[test]
    fn a_denied_attempt_is_a_minor_failure() {
        assert_eq!(record("denied").to_fhir()["outcome"], "4");
    }

    #[test]
    fn purposes_parse_from_names_and_v3_codes() {
        assert_eq!(Purpose::parse("TREAT"), Some(Purpose::Treatment));
        assert_eq!(Purpose::parse(" operations "), Some(Purpose::Operations));
        assert_eq!(Purpose::parse("curiosity"), None);
    }
}
