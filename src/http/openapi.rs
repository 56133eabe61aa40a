//! The OpenAPI 3.1 document of the HTTP API, generated from [`ROUTES`]: the same
//! rows that register the routes and carry their policies. Each row's method, path,
//! token requirement, rate limit and per-role access come from the table; what a
//! route takes and answers (parameters, body, success schema) from [`details`],
//! keyed by the row. A row without details fails a test, so a new route cannot be
//! served undocumented; the checked-in `docs/openapi.json` must equal
//! [`document`] (another test), so it cannot drift either.
//!
//! Every error is `application/problem+json` ([`super::problem::Problem`]), except
//! the FHIR routes' own answers (an `OperationOutcome`, `application/fhir+json`).

use std::collections::BTreeMap;

use actix_web::http::Method;
use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

use super::routes::{Access, Auth, RouteSpec, ROUTES};
use crate::auth::Role;

/// What one route takes and answers beyond what its row says.
pub struct Details {
    /// One line.
    pub summary: &'static str,
    /// Parameters (path and query), OpenAPI parameter objects.
    pub parameters: Value,
    /// The request body object, if any.
    pub request_body: Option<Value>,
    /// Success and route-specific answers: status → response object.
    pub responses: Vec<(u16, Value)>,
    /// The answers that are FHIR `OperationOutcome`s rather than problem+json.
    pub fhir: bool,
}

fn path_param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": schema})
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn header_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "header", "required": false, "description": description,
           "schema": {"type": "string"}})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn fhir_response(description: &str) -> Value {
    json!({"description": description,
           "content": {"application/fhir+json": {"schema": {"type": "object", "required": ["resourceType"]}}}})
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

/// Reasons of access given by supervisors (and break-glass): see docs/security.md.
fn reason_headers() -> Vec<Value> {
    vec![
        header_param(
            "X-Access-Reason",
            "Why the caller reads this (supervisors: required; recorded in the audit log).",
        ),
        header_param(
            "X-Purpose-Of-Use",
            "`emergency` for break-glass access (when security.break_glass_enabled).",
        ),
    ]
}

/// What each route takes and answers, by method and path.
pub fn details(method: &Method, path: &str) -> Option<Details> {
    let identifier = json!({"type": "string", "minLength": 1, "maxLength": 320});
    let d = match (method.as_str(), path) {
        ("GET", "/healthz") => Details {
            summary: "Liveness: the process answers.",
            parameters: json!([]),
            request_body: None,
            responses: vec![(200, json_response("Alive.", object(&["status"], json!({"status": {"const": "ok"}}))))],
            fhir: false,
        },
        ("GET", "/openapi.json") => Details {
            summary: "This document (OpenAPI 3.1), generated from the route table.",
            parameters: json!([]),
            request_body: None,
            responses: vec![(200, json_response("The document.", object(&["openapi", "paths"], json!({"openapi": {"type": "string"}, "paths": {"type": "object"}}))))],
            fhir: false,
        },
        ("GET", "/readyz") => Details {
            summary: "Readiness: the store, the broker, the cluster link, the configuration version and the supervised components.",
            parameters: json!([]),
            request_body: None,
            responses: vec![(
                200,
                json_response(
                    "Ready.",
                    object(
                        &["status", "store", "broker", "cluster"],
                        json!({"status": {"const": "ready"}, "store": {"type": "string"},
                               "broker": {"type": "string"}, "cluster": {"type": "string"},
                               "config_version": {"type": "integer"}}),
                    ),
                ),
            )],
            fhir: false,
        },
        ("GET", "/metrics") => Details {
            summary: "Prometheus metrics (docs/metrics.md).",
            parameters: json!([]),
            request_body: None,
            responses: vec![(
                200,
                json!({"description": "The Prometheus text format.",
                       "content": {"text/plain": {"schema": {"type": "string"}}}}),
            )],
            fhir: false,
        },
        ("POST", "/v1/events") => Details {
            summary: "Post one event envelope (docs/contract.md); stored durably before the answer.",
            parameters: json!([]),
            request_body: Some(json!({"required": true, "content": {"application/json": {"schema": schema_ref("Envelope")}}})),
            responses: vec![
                (202, json_response("Stored (or, for a routing input, applied).", schema_ref("EventAccepted"))),
                (200, json_response("Already stored (the same id): nothing changed.", schema_ref("EventAccepted"))),
                (422, problem_response("Valid but unusable (e.g. an identity link that cannot be made).")),
            ],
            fhir: false,
        },
        ("GET", "/v1/patients") => Details {
            summary: "Find a patient by exactly one identifier.",
            parameters: {
                let mut p = vec![
                    query_param("mrn", "Medical record number.", identifier.clone()),
                    query_param("phone", "E.164 phone number.", identifier.clone()),
                    query_param("email", "E-mail address.", identifier.clone()),
                    query_param("portal_id", "Patient portal id.", identifier.clone()),
                ];
                p.extend(reason_headers());
                Value::Array(p)
            },
            request_body: None,
            responses: vec![
                (200, json_response("The patient.", object(&["patient_id"], json!({"patient_id": {"type": "string", "format": "uuid"}})))),
                (404, problem_response("No patient has that identifier.")),
            ],
            fhir: false,
        },
        ("GET", "/v1/patients/{patient_id}/context") => Details {
            summary: "The patient's journey: identity, appointments, medications, contacts, notes (audited).",
            parameters: {
                let mut p = vec![path_param("patient_id", "The patient id (UUID).", json!({"type": "string"}))];
                p.extend(reason_headers());
                Value::Array(p)
            },
            request_body: None,
            responses: vec![
                (200, json_response("The context.", json!({"type": "object"}))),
                (404, problem_response("No such patient.")),
            ],
            fhir: false,
        },
        ("GET", "/v1/contacts/{contact_id}") => Details {
            summary: "A contact's routing record: queue, skill, priority, offers, why it went where it went.",
            parameters: {
                let mut p = vec![path_param("contact_id", "The contact id.", json!({"type": "string"}))];
                p.extend(reason_headers());
                Value::Array(p)
            },
            request_body: None,
            responses: vec![
                (200, json_response("The routing record.", json!({"type": "object"}))),
                (404, problem_response("No such contact.")),
            ],
            fhir: false,
        },
        ("GET", "/v1/queues") => Details {
            summary: "Live queues of the caller's sites with service level and Erlang C/A staffing.",
            parameters: json!([]),
            request_body: None,
            responses: vec![(200, json_response("The queues.", object(&["queues"], json!({"queues": {"type": "array", "items": {"type": "object"}}}))))],
            fhir: false,
        },
        ("GET", "/v1/agents") => Details {
            summary: "Agents of the caller's sites: presence, skills, load.",
            parameters: json!([]),
            request_body: None,
            responses: vec![(200, json_response("The agents.", object(&["agents"], json!({"agents": {"type": "array", "items": {"type": "object"}}}))))],
            fhir: false,
        },
        ("POST", "/v1/agents/{agent_id}/state") => Details {
            summary: "Set an agent's presence, skills and capacity (as an agent.state event would).",
            parameters: json!([path_param("agent_id", "The agent id.", json!({"type": "string"}))]),
            request_body: Some(json!({"required": true, "content": {"application/json": {"schema": schema_ref("AgentStateRequest")}}})),
            responses: vec![
                (200, json_response("Applied.", object(&["agent_id", "state", "site"], json!({"agent_id": {"type": "string"}, "state": {}, "site": {"type": "string"}})))),
                (202, json_response("Queued for the cluster's router.", object(&["agent_id", "queued"], json!({"agent_id": {"type": "string"}, "queued": {"const": true}})))),
                (422, problem_response("Routing refused the change.")),
            ],
            fhir: false,
        },
        ("GET", "/v1/runtime") => Details {
            summary: "The live runtime: config version, cluster ownership, actors, mailboxes, restarts.",
            parameters: json!([]),
            request_body: None,
            responses: vec![(200, json_response("The runtime.", object(&["config_version", "node_id", "cluster"], json!({"config_version": {"type": "integer"}, "node_id": {"type": "string"}, "cluster": {"type": "object"}}))))],
            fhir: false,
        },
        ("GET", "/v1/runtime/config") => Details {
            summary: "The reloadable values in force and their version.",
            parameters: json!([]),
            request_body: None,
            responses: vec![(200, json_response("The values in force.", schema_ref("RuntimeConfig")))],
            fhir: false,
        },
        ("PUT", "/v1/runtime/config") => Details {
            summary: "Change reloadable values (a JSON merge patch over routing, supervision.patient, supervision.tasks), stored with who, when and why, and applied by every node.",
            parameters: json!([header_param("X-Access-Reason", "Why (recorded with the change), unless the body says `reason`.")]),
            request_body: Some(json!({"required": true, "content": {"application/json": {"schema": schema_ref("ConfigChange")}}})),
            responses: vec![(200, json_response("Stored and applied here.", schema_ref("RuntimeConfig")))],
            fhir: false,
        },
        ("GET", "/v1/runtime/config/history") => Details {
            summary: "Every stored configuration change, newest first: version, who, when, why, the patch.",
            parameters: json!([query_param("limit", "At most this many (1 to 1000, default 100).", json!({"type": "integer", "minimum": 1, "maximum": 1000}))]),
            request_body: None,
            responses: vec![(200, json_response("The history.", object(&["config_version", "changes"], json!({"config_version": {"type": "integer"}, "changes": {"type": "array", "items": schema_ref("ConfigChangeRecord")}}))))],
            fhir: false,
        },
        ("POST", "/v1/runtime/config/revert") => Details {
            summary: "Make the values of an earlier version the values in force again (a new version, recorded like any change).",
            parameters: json!([]),
            request_body: Some(json!({"required": true, "content": {"application/json": {"schema": json!({"type": "object", "required": ["version"], "additionalProperties": false, "properties": {"version": {"type": "integer", "minimum": 1}, "reason": {"type": ["string", "null"], "minLength": 1, "maxLength": 500}}})}}})),
            responses: vec![
                (200, json_response("Stored and applied here.", schema_ref("RuntimeConfig"))),
                (404, problem_response("No such version.")),
            ],
            fhir: false,
        },
        ("POST", "/v1/contacts/{contact_id}/callback") => Details {
            summary: "A caller waiting in a voice queue asks to be called back: the contact keeps its place, and callback.dial goes out when an agent takes it.",
            parameters: json!([path_param("contact_id", "The contact id.", json!({"type": "string"}))]),
            request_body: None,
            responses: vec![
                (200, json_response("The routing record, with its callback.", json!({"type": "object"}))),
                (409, problem_response("The contact is not waiting in a voice queue.")),
            ],
            fhir: false,
        },
        ("POST", "/v1/bot/contacts/{contact_id}/answer") => Details {
            summary: "The virtual agent's self-service answer to one routine intent (appointment.next, directions, refill.status, billing) for the patient of an open iva, chat or sms contact; recorded as a bot.turn and audited.",
            parameters: json!([path_param("contact_id", "The open bot contact.", json!({"type": "string"}))]),
            request_body: Some(json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["intent"], "additionalProperties": false, "properties": {"intent": {"type": "string"}, "patient_text": {"type": ["string", "null"]}}}}}})),
            responses: vec![
                (200, json_response("The answer.", object(&["intent", "resolved", "handed_over", "text"], json!({"intent": {"type": "string"}, "resolved": {"type": "boolean"}, "handed_over": {"type": "boolean"}, "text": {"type": "string"}})))),
                (409, problem_response("An agent has taken the contact; the bot no longer answers it.")),
                (422, problem_response("An intent the endpoint does not know (named); the contact is handed over.")),
            ],
            fhir: false,
        },
        ("POST", "/v1/bot/contacts/{contact_id}/appointment") => Details {
            summary: "The patient asks the virtual agent to confirm, cancel or reschedule the upcoming appointment: an appointment.requested event and an appointment.request command.",
            parameters: json!([path_param("contact_id", "The open bot contact.", json!({"type": "string"}))]),
            request_body: Some(json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["appointment_id", "action"], "additionalProperties": false, "properties": {"appointment_id": {"type": "string"}, "action": {"type": "string", "enum": ["confirm", "cancel", "reschedule"]}, "patient_text": {"type": ["string", "null"]}}}}}})),
            responses: vec![
                (202, json_response("Recorded and sent to scheduling.", json!({"type": "object"}))),
                (422, problem_response("Not the patient's upcoming appointment, or an unknown action.")),
            ],
            fhir: false,
        },
        ("GET", "/v1/audit") => Details {
            summary: "Search the audit trail (JSON, or FHIR AuditEvent with format=fhir).",
            parameters: json!([
                query_param("patient", "Patient id (UUID).", json!({"type": "string"})),
                query_param("principal", "Principal id.", json!({"type": "string"})),
                query_param("from", "RFC 3339, inclusive.", json!({"type": "string"})),
                query_param("to", "RFC 3339, exclusive.", json!({"type": "string"})),
                query_param("limit", "Page size, 1 to 1000.", json!({"type": "integer"})),
                query_param("after", "The previous page's `next`.", json!({"type": "integer"})),
                query_param("format", "`json` (default) or `fhir`.", json!({"type": "string"})),
            ]),
            request_body: None,
            responses: vec![(
                200,
                json!({"description": "One page of records.",
                       "content": {
                           "application/json": {"schema": object(&["records"], json!({"records": {"type": "array", "items": {"type": "object"}}, "next": {"type": ["integer", "null"]}}))},
                           "application/fhir+json": {"schema": {"type": "object"}}}}),
            )],
            fhir: false,
        },
        ("POST", "/fhir/r4") => Details {
            summary: "Post a FHIR R4 transaction (or batch) Bundle, or one resource (docs/fhir.md).",
            parameters: json!([query_param("site", "The site the body is for (default: the caller's only site).", json!({"type": "string"}))]),
            request_body: Some(json!({"required": true, "content": {
                "application/fhir+json": {"schema": {"type": "object", "required": ["resourceType"]}},
                "application/json": {"schema": {"type": "object", "required": ["resourceType"]}}}})),
            responses: vec![
                (200, fhir_response("A transaction-response (or batch-response) Bundle, one OperationOutcome per entry.")),
                (400, fhir_response("Not valid FHIR R4: an OperationOutcome naming each element.")),
                (413, fhir_response("Larger than fhir.max_bundle_bytes.")),
                (415, fhir_response("Not application/fhir+json or application/json.")),
                (422, fhir_response("Valid FHIR that cannot be used; nothing stored.")),
            ],
            fhir: true,
        },
        ("GET", "/fhir/r4/Patient/{patient_id}/$front-door-context") => Details {
            summary: "The patient's context as a FHIR R4 Bundle (audited).",
            parameters: {
                let mut p = vec![path_param("patient_id", "The patient id (UUID).", json!({"type": "string"}))];
                p.extend(reason_headers());
                Value::Array(p)
            },
            request_body: None,
            responses: vec![
                (200, fhir_response("A collection Bundle.")),
                (404, fhir_response("No such patient.")),
            ],
            fhir: true,
        },
        _ => return None,
    };
    Some(d)
}

fn problem_response(description: &str) -> Value {
    json!({"description": description,
           "content": {"application/problem+json": {"schema": schema_ref("Problem")}}})
}

/// An error answer: problem+json, and on FHIR routes also an OperationOutcome
/// (the handler's own refusals are FHIR; the guard's are problem+json).
fn error_response(description: &str, fhir: bool) -> Value {
    let mut r = problem_response(description);
    if fhir {
        r["content"]["application/fhir+json"] =
            json!({"schema": {"type": "object", "required": ["resourceType"]}});
    }
    r
}

fn access_name(a: Access) -> &'static str {
    match a {
        Access::Deny => "deny",
        Access::Allow => "allow",
        Access::Own => "own",
        Access::WhileAssigned => "while-assigned",
        Access::WithReason => "with-reason",
        Access::InDepartment => "in-department",
        Access::WhileContactOpen => "while-contact-open",
    }
}

/// The operation object of one row.
fn operation(spec: &RouteSpec) -> Value {
    let d = details(&spec.method, spec.path).unwrap_or_else(|| Details {
        summary: "Undocumented route (a test fails until src/http/openapi.rs describes it).",
        parameters: json!([]),
        request_body: None,
        responses: vec![(200, json!({"description": "OK"}))],
        fhir: false,
    });
    let mut responses: BTreeMap<String, Value> = d
        .responses
        .into_iter()
        .map(|(s, r)| (s.to_string(), r))
        .collect();
    let mut add = |status: u16, description: &str, fhir: bool| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(description, fhir));
    };
    let takes_input =
        d.request_body.is_some() || d.parameters.as_array().is_some_and(|p| !p.is_empty());
    if takes_input {
        add(
            400,
            "The request is invalid: `errors` names each field.",
            d.fhir,
        );
    }
    if spec.auth != Auth::Open {
        add(401, "No token, or a token nobody holds.", false);
        add(
            403,
            "The caller's role or scope does not allow this.",
            d.fhir,
        );
    }
    if spec.rate_limited {
        add(
            429,
            "Over the per-token rate limit; see Retry-After.",
            false,
        );
    }
    if spec.auth != Auth::Open {
        add(503, "A dependency is unavailable (store, routing, the cluster) or the node is not ready; retry after Retry-After.", d.fhir);
    }
    let mut access = Map::new();
    for role in Role::ALL {
        access.insert(role.as_str().into(), json!(access_name(spec.access(role))));
    }
    let mut op = json!({
        "operationId": operation_id(spec),
        "summary": d.summary,
        "tags": [tag(spec.path)],
        "parameters": d.parameters,
        "responses": responses,
        "x-frontdoor-resource": spec.resource,
        "x-frontdoor-access": access,
        "x-frontdoor-patient-data": spec.patient_data,
        "x-frontdoor-rate-limited": spec.rate_limited,
    });
    op["security"] = match spec.auth {
        Auth::Required => json!([{"bearer": []}]),
        Auth::Open => json!([]),
        Auth::MetricsSetting => json!([{}, {"bearer": []}]),
    };
    if let Some(body) = d.request_body {
        op["requestBody"] = body;
    }
    op
}

fn tag(path: &str) -> &'static str {
    if path.starts_with("/fhir") {
        "fhir"
    } else if path.starts_with("/v1/runtime") {
        "runtime"
    } else if path.starts_with("/v1/audit") {
        "audit"
    } else if path.starts_with("/v1/patients") {
        "patients"
    } else if path.starts_with("/v1/events") {
        "events"
    } else if path.starts_with("/v1/") {
        "routing"
    } else {
        "operations"
    }
}

fn operation_id(spec: &RouteSpec) -> String {
    let mut id = spec.method.as_str().to_lowercase();
    for part in spec.path.split(['/', '-', '$', '.']) {
        let part = part.trim_matches(['{', '}']);
        for word in part.split('_').filter(|w| !w.is_empty()) {
            let mut c = word.chars();
            if let Some(first) = c.next() {
                id.push(first.to_ascii_uppercase());
                id.push_str(c.as_str());
            }
        }
    }
    id
}

fn components() -> Value {
    let mut envelope: Value = serde_json::from_str(include_str!("../../docs/envelope.schema.json"))
        .unwrap_or_else(|_| json!({"type": "object"}));
    if let Value::Object(m) = &mut envelope {
        m.remove("$schema");
        m.remove("$id");
    }
    json!({
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A principal's bearer token (docs/security.md); only its SHA-256 is configured."
            }
        },
        "schemas": {
            "Problem": {
                "type": "object",
                "description": "RFC 9457 problem details; never names a patient, an identifier or the token.",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {"type": "string", "description": "urn:frontdoor:problem:<slug>"},
                    "title": {"type": "string"},
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "detail": {"type": "string"},
                    "errors": {"type": "array", "items": {
                        "type": "object", "required": ["field", "reason"],
                        "properties": {"field": {"type": "string"}, "reason": {"type": "string"}}}}
                }
            },
            "Envelope": envelope,
            "EventAccepted": {
                "type": "object",
                "required": ["id", "status"],
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "status": {"enum": ["stored", "duplicate", "applied"]},
                    "patient_id": {"type": "string", "format": "uuid"},
                    "seq": {"type": "integer"}
                }
            },
            "AgentStateRequest": {
                "type": "object",
                "required": ["site", "state"],
                "properties": {
                    "site": {"type": "string"},
                    "state": {"type": "string", "description": "available, busy, away, offline..."},
                    "skills": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "capacity": {"type": "object"}
                }
            },
            "RuntimeConfig": {
                "type": "object",
                "required": ["config_version", "config"],
                "properties": {
                    "config_version": {"type": "integer", "minimum": 1},
                    "config": {"type": "object", "required": ["routing", "supervision"]}
                }
            },
            "ConfigChange": {
                "type": "object",
                "description": "A JSON merge patch (RFC 7396) over the reloadable values: a null removes an earlier change of that key; `reason` (or the X-Access-Reason header) says why.",
                "properties": {
                    "routing": {"type": ["object", "null"]},
                    "supervision": {"type": ["object", "null"], "properties": {
                        "patient": {"type": ["object", "null"]}, "tasks": {"type": ["object", "null"]}}},
                    "reason": {"type": ["string", "null"], "minLength": 1, "maxLength": 500}
                }
            },
            "ConfigChangeRecord": {
                "type": "object",
                "required": ["version", "changed_at", "changed_by", "kind", "patch", "overlay"],
                "properties": {
                    "version": {"type": "integer"},
                    "changed_at": {"type": "string", "format": "date-time"},
                    "changed_by": {"type": "string"},
                    "kind": {"enum": ["change", "revert"]},
                    "reason": {"type": ["string", "null"]},
                    "patch": {"type": "object"},
                    "overlay": {"type": "object", "description": "Every change in force at this version, merged (what each node merges over its files)."}
                }
            }
        }
    })
}

/// The OpenAPI 3.1 document of every route in [`ROUTES`].
pub fn document() -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for spec in ROUTES {
        paths
            .entry(spec.path.to_string())
            .or_default()
            .insert(spec.method.as_str().to_lowercase(), operation(spec));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Front Door",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A real-time contact-center runtime for multi-site health systems. Generated from the route table (src/http/routes.rs); every route but /healthz, /openapi.json (and /metrics unless security.metrics_require_token) needs a bearer token. x-frontdoor-access gives each role's access to an operation (docs/security.md).",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "servers": [{"url": "http://127.0.0.1:8080", "description": "the local default"}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "events"}, {"name": "patients"}, {"name": "routing"}, {"name": "runtime"},
            {"name": "audit"}, {"name": "fhir"}, {"name": "operations"}
        ],
        "paths": paths,
        "components": components(),
    })
}

/// [`document`] as pretty JSON (what docs/openapi.json holds).
pub fn document_pretty() -> String {
    // unwrap: a serde_json::Value always serializes.
    serde_json::to_string_pretty(&document()).unwrap()
}

/// `GET /openapi.json`.
pub async fn serve() -> HttpResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOC.get_or_init(|| document().to_string()).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_in_the_table_is_described() {
        for spec in ROUTES {
            assert!(
                details(&spec.method, spec.path).is_some(),
                "{} {} has no OpenAPI details in src/http/openapi.rs",
                spec.method,
                spec.path
            );
        }
    }

    #[test]
    fn the_document_has_every_route_its_security_and_the_problem_shape() {
        let doc = document();
        for spec in ROUTES {
            let op = &doc["paths"][spec.path][spec.method.as_str().to_lowercase()];
            assert!(op.is_object(), "{} {}", spec.method, spec.path);
            match spec.auth {
                Auth::Required => {
                    assert_eq!(op["security"], json!([{"bearer": []}]), "{}", spec.path);
                    assert!(op["responses"]["401"].is_object(), "{}", spec.path);
                }
                Auth::Open => assert_eq!(op["security"], json!([]), "{}", spec.path),
                Auth::MetricsSetting => assert_eq!(op["security"][0], json!({})),
            }
            for (k, role) in Role::ALL.iter().enumerate() {
                assert_eq!(
                    op["x-frontdoor-access"][role.as_str()],
                    access_name(spec.access(*role)),
                    "{k}"
                );
            }
        }
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["components"]["schemas"]["Problem"].is_object());
        assert!(doc["components"]["schemas"]["Envelope"]["properties"]["channel"].is_object());
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn the_checked_in_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in.trim_end() == document_pretty(),
            "docs/openapi.json is stale: regenerate it with `cargo run -- openapi > docs/openapi.json`"
        );
    }
}
