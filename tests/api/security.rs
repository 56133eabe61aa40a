//! Access control, minimum necessary, the audit trail, and limits.

use frontdoor::auth::Role;
use frontdoor::http::routes::{Access, Auth, ROUTES};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{days_ago, event, principal_of, token_for, TestApp, PRINCIPALS};
use crate::on_both_backends;

const REASON: (&str, &str) = ("X-Access-Reason", "callback quality review");

/// A patient with a contact at `site`; returns its id.
async fn patient_at(app: &TestApp, site: &str, mrn: &str) -> String {
    let mut e = event(
        "contact.started",
        "voice",
        days_ago(0, 0),
        json!({"mrn": mrn}),
        json!({"contact_id": format!("call-{mrn}")}),
    );
    e["site"] = json!(site);
    app.store_event(&e).await;
    app.patient_id("mrn", mrn).await
}

/// A patient with no contact yet (an appointment booked at `site`); returns its id.
async fn patient_without_contact(app: &TestApp, site: &str, mrn: &str) -> String {
    let mut e = event(
        "appointment.booked",
        "portal",
        days_ago(1, 0),
        json!({"mrn": mrn}),
        json!({"appointment_id": format!("appt-{mrn}"), "starts_at": days_ago(-2, 0).to_rfc3339()}),
    );
    e["site"] = json!(site);
    app.store_event(&e).await;
    app.patient_id("mrn", mrn).await
}

/// An event from an agent desktop (no patient).
fn desktop_event(ty: &str, site: &str, fields: Value) -> Value {
    let mut e = event(ty, "desktop", days_ago(0, 0), Value::Null, fields);
    e.as_object_mut().unwrap().remove("patient");
    e["site"] = json!(site);
    e
}

/// The agent signs in at `site` for billing chats.
async fn sign_in(app: &TestApp, agent: &str, site: &str) {
    let e = desktop_event(
        "agent.state",
        site,
        json!({"agent_id": agent, "state": "available",
        "skills": {"billing": 3}, "capacity": {"chat": 10}}),
    );
    assert_eq!(
        app.post_event(&e).await.status().as_u16(),
        202,
        "agent.state {agent}"
    );
}

/// A billing chat from the patient starts at north (routing offers it).
async fn start_chat(app: &TestApp, mrn: &str, contact: &str) {
    app.store_event(&event(
        "contact.started",
        "chat",
        days_ago(0, 0),
        json!({"mrn": mrn}),
        json!({"contact_id": contact, "skill": "billing"}),
    ))
    .await;
}

/// An agent desktop action on a contact (offer.accepted, contact.wrapped...).
async fn desktop(app: &TestApp, ty: &str, agent: &str, contact: &str) -> u16 {
    let e = desktop_event(
        ty,
        "north",
        json!({"agent_id": agent, "contact_id": contact}),
    );
    app.post_event(&e).await.status().as_u16()
}

fn fill(path: &str, patient: &str, agent: &str, contact: &str) -> String {
    path.replace("{patient_id}", patient)
        .replace("{agent_id}", agent)
        .replace("{contact_id}", contact)
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "x".to_string()
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn audit_records(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/v1/audit?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["records"].as_array().unwrap().clone()
}

on_both_backends! {
    async fn every_endpoint_answers_every_role_as_the_route_table_says(app: TestApp) {
        // One patient per route, without contacts yet; agent-7 is signed in at north.
        let mut patients = Vec::new();
        for i in 0..ROUTES.len() {
            patients.push(patient_without_contact(&app, "north", &format!("MRN-MATRIX-{i}")).await);
        }
        sign_in(&app, "agent-7", "north").await;
        for (i, spec) in ROUTES.iter().enumerate() {
            let patient = &patients[i];
            let mrn = format!("MRN-MATRIX-{i}");
            let contact = format!("mx-{i}");
            let method = Method::from_bytes(spec.method.as_str().as_bytes()).unwrap();
            let body = (spec.method == actix_web::http::Method::POST || spec.method == actix_web::http::Method::PUT).then(|| "{}".to_string());
            let query = if spec.path == "/v1/patients" { format!("?mrn={mrn}") } else { String::new() };
            let what = format!("{} {}", spec.method, spec.path);
            // No token, and a token nobody holds.
            let path = format!("{}{query}", fill(spec.path, patient, "agent-7", &contact));
            for token in [None, Some("not-a-known-token")] {
                let status = app.request(method.clone(), &path, token, &[], body.clone()).await.status().as_u16();
                match spec.auth {
                    Auth::Required => assert_eq!(status, 401, "{what} without a valid token"),
                    Auth::Open | Auth::MetricsSetting => assert!(status < 400, "{what} is open: {status}"),
                }
            }
            for (id, role, _) in PRINCIPALS {
                let token = token_for(id);
                let send = |path: String, headers: Vec<(&'static str, &'static str)>| {
                    let (method, body, token) = (method.clone(), body.clone(), token.clone());
                    let app = &app;
                    async move {
                        app.request(method, &path, Some(&token), &headers, body).await.status().as_u16()
                    }
                };
                let own = format!("{}{query}", fill(spec.path, patient, id, &contact));
                let other = format!("{}{query}", fill(spec.path, patient, "someone-else", &contact));
                let allowed = |s: u16| s != 401 && s != 403;
                match spec.access(*role) {
                    Access::Deny => {
                        let expected = if spec.auth == Auth::Required { 403 } else { 200 };
                        assert_eq!(send(own, vec![]).await, expected, "{what} as {id}");
                    }
                    Access::Allow => assert!(allowed(send(own, vec![]).await), "{what} as {id}"),
                    Access::Own => {
                        assert!(allowed(send(own, vec![]).await), "{what} as {id} on itself");
                        assert_eq!(send(other, vec![]).await, 403, "{what} as {id} on another");
                    }
                    Access::WhileAssigned => {
                        assert_eq!(send(own.clone(), vec![]).await, 403, "{what} as {id} holding nothing");
                        if *id == "agent-7" {
                            // A chat of this patient is offered to agent-7 (signed in above).
                            start_chat(&app, &mrn, &contact).await;
                            assert!(allowed(send(own, vec![]).await), "{what} as {id} holding the patient");
                        }
                    }
                    Access::InDepartment => {
                        assert_eq!(send(own.clone(), vec![]).await, 403, "{what} as {id}: no appointment in its department");
                        if *id == "dr-derm" {
                            // A dermatology appointment at north: dr-derm treats the patient.
                            app.store_event(&event("appointment.booked", "ehr", days_ago(0, 0), json!({"mrn": mrn}),
                                json!({"appointment_id": format!("derm-{i}"), "starts_at": days_ago(-3, 0).to_rfc3339(),
                                       "department": "Dermatology"}))).await;
                            assert!(allowed(send(own, vec![]).await), "{what} as {id} with a dermatology appointment");
                        }
                    }
                    Access::WhileContactOpen => {
                        assert_eq!(send(own.clone(), vec![]).await, 403, "{what} as {id}: no open bot contact");
                        if *id == "iva-north" {
                            // The patient's IVA session is open at north: the bot may serve it.
                            app.store_event(&event("contact.started", "iva", days_ago(0, 0), json!({"mrn": mrn}),
                                json!({"contact_id": contact}))).await;
                            assert!(allowed(send(own, vec![]).await), "{what} as {id} with an open iva contact");
                        }
                    }
                    Access::WithReason => {
                        assert_eq!(send(own.clone(), vec![]).await, 403, "{what} as {id} without a reason");
                        let status = send(own, vec![REASON]).await;
                        let in_scope = PRINCIPALS.iter().any(|p| p.0 == *id && p.2.contains(&"north"));
                        if in_scope || !spec.patient_data {
                            assert!(allowed(status), "{what} as {id} with a reason: {status}");
                        } else {
                            assert_eq!(status, 403, "{what} as {id} outside its sites");
                        }
                    }
                }
            }
        }
    }

    async fn an_agent_reads_a_patient_only_while_one_of_its_contacts_is_offered_or_assigned_to_it(app: TestApp) {
        let patient = patient_without_contact(&app, "north", "MRN-AGENT-1").await;
        sign_in(&app, "agent-7", "north").await;
        let ctx = format!("/v1/patients/{patient}/context");
        let lookup = "/v1/patients?mrn=MRN-AGENT-1";
        // Before the offer.
        assert_eq!(app.get_as(Some("agent-7"), &ctx, &[]).await.0, 403);
        assert_eq!(app.get_as(Some("agent-7"), lookup, &[]).await.0, 403);
        // Routing offers the patient's chat to agent-7: treatment, minimum necessary.
        start_chat(&app, "MRN-AGENT-1", "chat-a1").await;
        let (_, c) = app.get("/v1/contacts/chat-a1").await;
        assert_eq!(c["offered_to"], "agent-7");
        let (status, body) = app.get_as(Some("agent-7"), &ctx, &[]).await;
        assert_eq!(status, 200);
        assert_eq!(body["patient_id"], json!(patient));
        assert_eq!(app.get_as(Some("agent-7"), lookup, &[]).await.0, 200);
        assert_eq!(app.get_as(Some("agent-7"), "/v1/contacts/chat-a1", &[]).await.0, 200);
        // Assigned.
        assert_eq!(desktop(&app, "offer.accepted", "agent-7", "chat-a1").await, 202);
        assert_eq!(app.get_as(Some("agent-7"), &ctx, &[]).await.0, 200);
        // Ended and wrapped up: no longer.
        app.store_event(&event("contact.ended", "chat", days_ago(0, 0), json!({"mrn": "MRN-AGENT-1"}),
            json!({"contact_id": "chat-a1"}))).await;
        assert_eq!(desktop(&app, "contact.wrapped", "agent-7", "chat-a1").await, 202);
        assert_eq!(app.get_as(Some("agent-7"), &ctx, &[]).await.0, 403);
        assert_eq!(app.get_as(Some("agent-7"), "/v1/contacts/chat-a1", &[]).await.0, 403);
        // An unknown patient or contact gets the same answer as someone else's: no oracle.
        let nobody = uuid::Uuid::new_v4();
        assert_eq!(app.get_as(Some("agent-7"), &format!("/v1/patients/{nobody}/context"), &[]).await.0, 403);
        assert_eq!(app.get_as(Some("agent-7"), "/v1/patients?mrn=NOBODY-1", &[]).await.0, 403);
        assert_eq!(app.get_as(Some("agent-7"), "/v1/contacts/nowhere", &[]).await.0, 403);
        // Another agent never could.
        assert_eq!(app.get_as(Some("agent-8"), &ctx, &[]).await.0, 403);

        let records = audit_records(&app, "principal=agent-7").await;
        let summary: Vec<(&str, &str, &str)> = records.iter().map(|r| (
            r["resource"].as_str().unwrap(), r["outcome"].as_str().unwrap(), r["purpose"].as_str().unwrap(),
        )).collect();
        let t = |a, b| (a, b, "treatment");
        assert_eq!(summary, vec![
            t("patient.context", "denied"), t("patient.lookup", "denied"),
            t("patient.context", "success"), t("patient.lookup", "success"), t("contact.detail", "success"),
            t("patient.context", "success"),
            t("patient.context", "denied"), t("contact.detail", "denied"),
            t("patient.context", "denied"), t("patient.lookup", "denied"), t("contact.detail", "denied"),
        ]);
        assert_eq!(records[2]["patient_id"], json!(patient));
        assert_eq!(records[2]["principal_role"], "agent");
    }

    async fn a_supervisor_needs_a_stated_reason_and_sees_only_patients_of_its_sites(app: TestApp) {
        let north = patient_at(&app, "north", "MRN-SUP-N").await;
        let south = patient_at(&app, "south", "MRN-SUP-S").await;
        let ctx = |p: &str| format!("/v1/patients/{p}/context");
        let (status, body) = app.get_as(Some("sup-north"), &ctx(&north), &[]).await;
        assert_eq!(status, 403);
        assert!(body["detail"].as_str().unwrap().contains("X-Access-Reason") || body["detail"].as_str().unwrap().contains("x-access-reason"));
        let bad_purpose = [REASON, ("X-Purpose-Of-Use", "curiosity")];
        assert_eq!(app.get_as(Some("sup-north"), &ctx(&north), &bad_purpose).await.0, 403);
        let with = [REASON, ("X-Purpose-Of-Use", "operations")];
        assert_eq!(app.get_as(Some("sup-north"), &ctx(&north), &with).await.0, 200);
        assert_eq!(app.get_as(Some("sup-north"), &ctx(&south), &with).await.0, 403);
        assert_eq!(app.get_as(Some("sup-south"), &ctx(&south), &with).await.0, 200);

        let records = audit_records(&app, &format!("patient={north}&principal=sup-north")).await;
        let last = records.last().unwrap();
        assert_eq!((last["outcome"].as_str(), last["reason"].as_str(), last["purpose"].as_str()),
            (Some("success"), Some("callback quality review"), Some("operations")));
    }

    async fn n_reads_of_patient_data_write_n_audit_records_denied_and_unauthenticated_included(app: TestApp) {
        let patient = patient_at(&app, "north", "MRN-N-1").await;
        let path = format!("/v1/patients/{patient}/context");
        let mut n = 0;
        for _ in 0..3 { assert_eq!(app.get(&path).await.0, 200); n += 1; }
        for _ in 0..2 { assert_eq!(app.get_as(Some("agent-7"), &path, &[]).await.0, 403); n += 1; }
        assert_eq!(app.get_as(Some("ehr-adapter"), &path, &[]).await.0, 403); n += 1;
        assert_eq!(app.get_as(None, &path, &[]).await.0, 401); n += 1;
        assert_eq!(app.get_with(&path, Some("stolen-guess"), &[]).await.0, 401); n += 1;
        let records = audit_records(&app, &format!("patient={patient}")).await;
        let reads: Vec<&Value> = records.iter().filter(|r| r["resource"] == "patient.context").collect();
        assert_eq!(reads.len(), n, "{records:?}");
        let outcomes: Vec<&str> = reads.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["success", "success", "success", "denied", "denied", "denied", "unauthenticated", "unauthenticated"]);
        assert!(reads[6]["principal_id"].is_null());
    }

    async fn identity_links_and_merges_are_audited_with_their_event(app: TestApp) {
        app.store_event(&event("contact.started", "voice", days_ago(1, 0), json!({"phone": "+15550166666"}),
            json!({"contact_id": "c-1"}))).await;
        let provisional = app.patient_id("phone", "+15550166666").await;
        app.store_event(&event("appointment.booked", "portal", days_ago(1, 0), json!({"mrn": "MRN-LINK-1"}),
            json!({"appointment_id": "a-1", "starts_at": days_ago(-3, 0).to_rfc3339()}))).await;
        let known = app.patient_id("mrn", "MRN-LINK-1").await;
        let link = event("identity.linked", "ehr", days_ago(0, 0),
            json!({"mrn": "MRN-LINK-1", "phone": "+15550166666"}), json!({}));
        assert_eq!(app.post_event_as("ehr-adapter", &link).await.status().as_u16(), 202);
        let records = audit_records(&app, &format!("patient={known}")).await;
        let resources: Vec<&str> = records.iter().map(|r| r["resource"].as_str().unwrap()).collect();
        assert!(resources.contains(&"identity.claim"), "{resources:?}");
        assert!(resources.contains(&"identity.merge"), "{resources:?}");
        let merge = records.iter().find(|r| r["resource"] == "identity.merge").unwrap();
        assert_eq!(merge["event_id"], link["id"]);
        assert_eq!(merge["detail"], json!(format!("Patient/{provisional} merged in")));
        let asked = records.iter().find(|r| r["resource"] == "identity.link").unwrap();
        assert_eq!((asked["principal_id"].as_str(), asked["principal_role"].as_str()), (Some("ehr-adapter"), Some("adapter")));
        for r in &records {
            assert!(!r.to_string().contains("15550166666") && !r.to_string().contains("MRN-LINK-1"),
                "identifier values are not copied into the audit log: {r}");
        }
    }

    async fn the_audit_log_is_served_as_fhir_audit_events_in_a_searchset_bundle(app: TestApp) {
        let patient = patient_without_contact(&app, "north", "MRN-FHIR-1").await;
        sign_in(&app, "agent-7", "north").await;
        start_chat(&app, "MRN-FHIR-1", "chat-f1").await;
        assert_eq!(app.get_as(Some("agent-7"), &format!("/v1/patients/{patient}/context"), &[]).await.0, 200);
        let res = app.request(Method::GET, &format!("/v1/audit?format=fhir&principal=agent-7&patient={patient}"),
            Some(&app.token), &[], None).await;
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(res.headers()["content-type"], "application/fhir+json");
        let bundle: Value = res.json().await.unwrap();
        assert_eq!((bundle["resourceType"].as_str(), bundle["type"].as_str()), (Some("Bundle"), Some("searchset")));
        let e = &bundle["entry"][0]["resource"];
        assert_eq!(e["resourceType"], "AuditEvent");
        assert_eq!(e["type"]["system"], "http://terminology.hl7.org/CodeSystem/audit-event-type");
        assert_eq!(e["type"]["code"], "rest");
        assert_eq!(e["subtype"][0]["system"], "http://hl7.org/fhir/restful-interaction");
        assert_eq!(e["subtype"][0]["code"], "read");
        assert_eq!(e["action"], "R");
        assert_eq!(e["outcome"], "0");
        assert!(chrono::DateTime::parse_from_rfc3339(e["recorded"].as_str().unwrap()).is_ok());
        assert_eq!(e["agent"][0]["who"]["identifier"]["value"], "agent-7");
        assert_eq!(e["agent"][0]["requestor"], true);
        assert_eq!(e["entity"][0]["what"]["reference"], json!(format!("Patient/{patient}")));
        assert_eq!(e["purposeOfEvent"][0]["coding"][0]["system"], "http://terminology.hl7.org/CodeSystem/v3-ActReason");
        assert_eq!(e["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
        assert!(e["source"]["observer"].is_object());
        assert_eq!(bundle["entry"][0]["search"]["mode"], "match");
        fn no_nulls(v: &Value) -> bool {
            match v {
                Value::Null => false,
                Value::Array(a) => a.iter().all(no_nulls),
                Value::Object(o) => o.values().all(no_nulls),
                _ => true,
            }
        }
        assert!(no_nulls(&bundle), "FHIR JSON has no null values: {bundle}");
    }

    async fn audit_searches_are_validated_paginated_and_for_admins_only(app: TestApp) {
        let patient = patient_at(&app, "north", "MRN-PAGE-1").await;
        for _ in 0..5 { app.get(&format!("/v1/patients/{patient}/context")).await; }
        for bad in ["patient=nope", "from=yesterday", "limit=0", "limit=5000", "format=xml",
                    "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "after=-1"] {
            let (status, body) = app.get(&format!("/v1/audit?{bad}")).await;
            assert_eq!(status, 400, "{bad}: {body}");
        }
        let q = format!("patient={patient}&limit=2");
        let (_, p1) = app.get(&format!("/v1/audit?{q}")).await;
        assert_eq!(p1["records"].as_array().unwrap().len(), 2);
        let next = p1["next"].as_i64().unwrap();
        let (_, p2) = app.get(&format!("/v1/audit?{q}&after={next}")).await;
        assert!(p2["records"][0]["seq"].as_i64().unwrap() > next);
        let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        let (_, none) = app.get(&format!("/v1/audit?patient={patient}&from={}", crate::helpers::urlencode(&future))).await;
        assert!(none["records"].as_array().unwrap().is_empty());
        for id in ["agent-7", "sup-north", "ehr-adapter", "prometheus"] {
            assert_eq!(app.get_as(Some(id), "/v1/audit", &[REASON]).await.0, 403, "{id}");
        }
    }

    async fn the_database_refuses_to_change_or_delete_audit_records_and_the_purge_keeps_retained_ones(app: TestApp) {
        let patient = patient_at(&app, "north", "MRN-APPEND-1").await;
        app.get(&format!("/v1/patients/{patient}/context")).await;
        let (update, delete) = app.store.audit_tamper_attempts().await;
        assert!(update.is_some(), "UPDATE of the audit log must fail");
        assert!(delete.is_some(), "DELETE of the audit log must fail");
        // Nothing is older than a day: the purge removes nothing.
        assert_eq!(app.store.audit_purge(chrono::Utc::now() - chrono::Duration::days(1)).await.unwrap(), 0);
        let kept = audit_records(&app, "limit=1000").await.len();
        assert!(kept >= 2);
        // A cutoff in the future (as if retention had passed) purges, and closes again.
        let purged = app.store.audit_purge(chrono::Utc::now() + chrono::Duration::seconds(5)).await.unwrap();
        assert!(purged as usize >= kept);
        app.get(&format!("/v1/patients/{patient}/context")).await;
        let (update, delete) = app.store.audit_tamper_attempts().await;
        assert!(update.is_some() && delete.is_some(), "the gate is closed after a purge");
    }

    async fn site_scoped_principals_act_only_for_their_sites(app: TestApp) {
        // An adapter of north posts north's events, not south's.
        let mut e = event("contact.started", "sms", days_ago(0, 0), json!({"mrn": "MRN-SITE-1"}),
            json!({"contact_id": "s-1"}));
        assert_eq!(app.post_event_as("north-adapter", &e).await.status().as_u16(), 202);
        e["id"] = json!(uuid::Uuid::new_v4().to_string());
        e["site"] = json!("south");
        assert_eq!(app.post_event_as("north-adapter", &e).await.status().as_u16(), 403);
        // A supervisor of north sets north's agents, and cannot pull a south agent north.
        sign_in(&app, "s-agent", "south").await;
        sign_in(&app, "n-agent", "north").await;
        let away = |site: &str| Some(json!({"site": site, "state": "away"}).to_string());
        let post = |path: String, body: Option<String>| {
            let app = &app;
            async move {
                app.request(Method::POST, &path, Some(&token_for("sup-north")), &[], body).await.status().as_u16()
            }
        };
        assert_eq!(post("/v1/agents/n-agent/state".into(), away("north")).await, 200);
        assert_eq!(post("/v1/agents/s-agent/state".into(), away("north")).await, 403);
        assert_eq!(post("/v1/agents/s-agent/state".into(), away("south")).await, 403);
        // Supervisors see their sites' agents only.
        let (_, agents) = app.get_as(Some("sup-north"), "/v1/agents", &[]).await;
        let ids: Vec<&str> = agents["agents"].as_array().unwrap().iter().map(|a| a["agent_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["n-agent"]);
        // An agent sets its own state only.
        let own = Some(json!({"site": "north", "state": "available", "skills": {"billing": 3}, "capacity": {"chat": 1}}).to_string());
        let res = app.request(Method::POST, "/v1/agents/agent-7/state", Some(&token_for("agent-7")), &[], own.clone()).await;
        assert_eq!(res.status().as_u16(), 200);
        let res = app.request(Method::POST, "/v1/agents/n-agent/state", Some(&token_for("agent-7")), &[], own).await;
        assert_eq!(res.status().as_u16(), 403);
    }

    async fn an_agent_announces_itself_and_is_answered_for_only_at_its_own_sites(app: TestApp) {
        let at = |site: &str| Some(json!({"site": site, "state": "available",
            "skills": {"billing": 3}, "capacity": {"chat": 5}}).to_string());
        let post_state = |who: &'static str, agent: &'static str, body: Option<String>| {
            let app = &app;
            async move {
                let res = app.request(Method::POST, &format!("/v1/agents/{agent}/state"),
                    Some(&token_for(who)), &[], body).await;
                let status = res.status().as_u16();
                let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
                (status, ct)
            }
        };
        // agent-7 works at north: it may not announce itself at south.
        assert_eq!(post_state("agent-7", "agent-7", at("south")).await,
            (403, Some("application/problem+json".to_string())));
        let (_, agents) = app.get("/v1/agents").await;
        assert!(agents["agents"].as_array().unwrap().is_empty(), "nothing was announced: {agents}");

        // Whoever put it there (an admin here), routing at south does not open south's
        // patients to an agent of north.
        assert_eq!(post_state("test-admin", "agent-7", at("south")).await.0, 200);
        let patient = patient_without_contact(&app, "south", "MRN-SCOPE-S").await;
        let mut chat = event("contact.started", "chat", days_ago(0, 0), json!({"mrn": "MRN-SCOPE-S"}),
            json!({"contact_id": "scope-chat", "skill": "billing"}));
        chat["site"] = json!("south");
        app.store_event(&chat).await;
        let (_, c) = app.get("/v1/contacts/scope-chat").await;
        assert_eq!(c["offered_to"], "agent-7", "{c}");
        assert_eq!(app.get_as(Some("agent-7"), &format!("/v1/patients/{patient}/context"), &[]).await.0, 403);
        assert_eq!(app.get_as(Some("agent-7"), "/v1/patients?mrn=MRN-SCOPE-S", &[]).await.0, 403);
        assert_eq!(app.get_as(Some("agent-7"), "/v1/contacts/scope-chat", &[]).await.0, 403);
        // Nor can it move itself home from there: both sites must be its own.
        assert_eq!(post_state("agent-7", "agent-7", at("north")).await.0, 403);

        // A desktop adapter of north: the agent it acts for must be at north too.
        let north_desktop = |ty: &str, fields: Value| {
            let e = desktop_event(ty, "north", fields);
            let app = &app;
            async move { app.post_event_as("north-adapter", &e).await.status().as_u16() }
        };
        assert_eq!(north_desktop("offer.accepted", json!({"agent_id": "agent-7", "contact_id": "scope-chat"})).await, 403);
        assert_eq!(north_desktop("offer.declined", json!({"agent_id": "agent-7", "contact_id": "scope-chat"})).await, 403);
        assert_eq!(north_desktop("contact.wrapped", json!({"agent_id": "agent-7", "contact_id": "scope-chat"})).await, 403);
        assert_eq!(north_desktop("agent.state", json!({"agent_id": "agent-7", "state": "available",
            "skills": {"billing": 3}, "capacity": {"chat": 5}})).await, 403, "pulling a south agent north");
        let (_, c) = app.get("/v1/contacts/scope-chat").await;
        assert_eq!((c["state"].as_str(), c["offered_to"].as_str()), (Some("offered"), Some("agent-7")), "{c}");
        // Its own agents it serves as before.
        assert_eq!(north_desktop("agent.state", json!({"agent_id": "n-desk", "state": "available",
            "skills": {"billing": 3}, "capacity": {"chat": 5}})).await, 202);

        let records = audit_records(&app, "principal=agent-7").await;
        assert!(records.iter().all(|r| r["outcome"] == "denied"), "{records:?}");
    }

    async fn a_supervisor_gets_the_same_refusal_for_another_sites_patient_and_for_nobody(app: TestApp) {
        let south = patient_at(&app, "south", "MRN-ORACLE-S").await;
        let nobody = uuid::Uuid::new_v4();
        let answer = |path: String| {
            let app = &app;
            async move {
                let (status, body) = app.get_as(Some("sup-north"), &path, &[REASON]).await;
                (status, body["type"].clone(), body["detail"].clone())
            }
        };
        let exists = answer(format!("/v1/patients/{south}/context")).await;
        assert_eq!(exists.0, 403);
        assert_eq!(answer(format!("/v1/patients/{nobody}/context")).await, exists);
        let exists = answer("/v1/patients?mrn=MRN-ORACLE-S".into()).await;
        assert_eq!(exists.0, 403);
        assert_eq!(answer("/v1/patients?mrn=MRN-NOBODY-AT-ALL".into()).await, exists);
        let exists = answer("/v1/contacts/call-MRN-ORACLE-S".into()).await;
        assert_eq!(exists.0, 403);
        assert_eq!(answer("/v1/contacts/no-such-contact".into()).await, exists);
        // Within its sites the answers are unchanged; an admin still hears 404 for nobody.
        let north = patient_at(&app, "north", "MRN-ORACLE-N").await;
        assert_eq!(app.get_as(Some("sup-north"), &format!("/v1/patients/{north}/context"), &[REASON]).await.0, 200);
        assert_eq!(app.get(&format!("/v1/patients/{nobody}/context")).await.0, 404);
        assert_eq!(app.get("/v1/patients?mrn=MRN-NOBODY-AT-ALL").await.0, 404);
    }

    async fn patient_data_and_every_other_answer_of_the_api_say_no_store(app: TestApp) {
        let patient = patient_at(&app, "north", "MRN-CACHE-1").await;
        for path in [
            "/v1/patients?mrn=MRN-CACHE-1".to_string(),
            format!("/v1/patients/{patient}/context"),
            "/v1/contacts/call-MRN-CACHE-1".to_string(),
            "/v1/audit".to_string(),
            "/v1/audit?format=fhir".to_string(),
        ] {
            for token in [Some(app.token.clone()), Some(token_for("agent-7")), None] {
                let res = app.request(Method::GET, &path, token.as_deref(), &[], None).await;
                let status = res.status().as_u16();
                assert_eq!(res.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"), "{path} ({status})");
                assert_eq!(res.headers().get("pragma").map(|v| v.to_str().unwrap()), Some("no-cache"), "{path} ({status})");
            }
        }
        // Every route of the table, as the admin.
        for spec in ROUTES {
            let path = format!("{}{}", fill(spec.path, &patient, "agent-7", "call-MRN-CACHE-1"),
                if spec.path == "/v1/patients" { "?mrn=MRN-CACHE-1" } else { "" });
            let method = Method::from_bytes(spec.method.as_str().as_bytes()).unwrap();
            let body = (spec.method != actix_web::http::Method::GET).then(|| "{}".to_string());
            let res = app.request(method, &path, Some(&app.token), &[], body).await;
            assert_eq!(res.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"),
                "{} {}", spec.method, spec.path);
        }
    }

    async fn missing_unknown_and_refused_callers_get_problem_details_without_patient_data(app: TestApp) {
        let patient = patient_at(&app, "north", "MRN-PROB-1").await;
        let path = format!("/v1/patients/{patient}/context");
        let res = app.request(Method::GET, &path, None, &[], None).await;
        assert_eq!(res.status().as_u16(), 401);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert!(res.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        let res = app.request(Method::GET, &path, None, &[("Authorization", "Basic dXNlcjpwYXNz")], None).await;
        assert_eq!(res.status().as_u16(), 401);
        let res = app.request(Method::GET, &path, Some(&token_for(principal_of(Role::Adapter))), &[], None).await;
        assert_eq!(res.status().as_u16(), 403);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["type"], "urn:frontdoor:problem:forbidden");
        assert!(!body.to_string().contains("MRN-PROB-1"));
        let res = app.request(Method::DELETE, "/v1/events", Some(&app.token), &[], None).await;
        assert_eq!(res.status().as_u16(), 405);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        // Every 405 names the methods its path takes (Allow), per the route table.
        let mut by_path: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for spec in ROUTES {
            by_path.entry(spec.path).or_default().push(spec.method.as_str());
        }
        for (path, methods) in by_path {
            let path = fill(path, &patient, "agent-7", "c-1");
            for m in ["GET", "POST", "PUT", "DELETE", "PATCH"].into_iter().filter(|m| !methods.contains(m)) {
                let res = app.request(Method::from_bytes(m.as_bytes()).unwrap(), &path, Some(&app.token), &[], None).await;
                assert_eq!(res.status().as_u16(), 405, "{m} {path}");
                let allow = res.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
                let mut listed: Vec<String> = allow.as_deref().unwrap_or("").split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                listed.sort();
                let mut expected: Vec<String> = methods.iter().map(|s| s.to_string()).collect();
                expected.sort();
                assert_eq!(listed, expected, "Allow of {m} {path}");
            }
        }
        // Open: liveness.
        assert_eq!(app.get_as(None, "/healthz", &[]).await.0, 200);
        assert_eq!(app.get_as(None, "/readyz", &[]).await.0, 401);
        assert_eq!(app.get_as(Some("prometheus"), "/readyz", &[]).await.0, 200);
    }
}

/// Source scan: routes are registered only from the table in `src/http/routes.rs`.
#[test]
fn no_route_is_registered_outside_the_route_table() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.ends_with("http/routes.rs") || path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for needle in [
                ".route(\"",
                "web::resource(",
                "web::scope(",
                "#[get(",
                "#[post(",
                "#[put(",
                "#[delete(",
                "#[patch(",
                ".service(",
            ] {
                if text.contains(needle) {
                    offenders.push(format!("{} uses {needle}", path.display()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "register endpoints in src/http/routes.rs ROUTES: {offenders:?}"
    );
}

mod emergency {
    use serde_json::json;

    use crate::helpers::{days_ago, event, spawn_app_with, test_settings, Backend};

    #[actix_web::test]
    async fn break_glass_reads_are_allowed_only_when_enabled_with_a_reason_and_are_audited_as_emergency(
    ) {
        for enabled in [false, true] {
            let (mut settings, dir) = test_settings(Backend::Sqlite).await;
            settings.security.break_glass_enabled = enabled;
            let app = spawn_app_with(settings, dir).await;
            let mut e = event(
                "contact.started",
                "voice",
                days_ago(0, 0),
                json!({"mrn": "MRN-BG-1"}),
                json!({"contact_id": "bg-1"}),
            );
            e["site"] = json!("south");
            app.store_event(&e).await;
            let pid = app.patient_id("mrn", "MRN-BG-1").await;
            let path = format!("/v1/patients/{pid}/context");
            let glass = [
                ("X-Purpose-Of-Use", "emergency"),
                ("X-Access-Reason", "patient collapsed on the line"),
            ];
            // Without a reason: refused either way.
            let no_reason = [("X-Purpose-Of-Use", "emergency")];
            assert_eq!(app.get_as(Some("agent-7"), &path, &no_reason).await.0, 403);
            let expected = if enabled { 200 } else { 403 };
            assert_eq!(
                app.get_as(Some("agent-7"), &path, &glass).await.0,
                expected,
                "agent, enabled={enabled}"
            );
            assert_eq!(
                app.get_as(Some("sup-north"), &path, &glass).await.0,
                expected,
                "supervisor, enabled={enabled}"
            );
            // Never for a role that has no access at all.
            assert_eq!(app.get_as(Some("ehr-adapter"), &path, &glass).await.0, 403);
            let (_, body) = app
                .get(&format!("/v1/audit?patient={pid}&principal=agent-7"))
                .await;
            let last = body["records"].as_array().unwrap().last().unwrap().clone();
            assert_eq!(last["purpose"], "emergency");
            assert_eq!(last["reason"], "patient collapsed on the line");
            assert_eq!(last["outcome"], if enabled { "success" } else { "denied" });
        }
    }
}

mod limits {
    use serde_json::json;

    use crate::helpers::{days_ago, event, spawn_app_with, test_settings, Backend};

    #[actix_web::test]
    async fn posting_events_past_the_per_token_rate_gets_429_with_retry_after() {
        let (mut settings, dir) = test_settings(Backend::Sqlite).await;
        settings.security.events_rate_per_sec = 0.01;
        settings.security.events_burst = 3;
        let app = spawn_app_with(settings, dir).await;
        for i in 0..3 {
            let e = event(
                "contact.started",
                "sms",
                days_ago(0, 0),
                json!({"phone": "+15550111111"}),
                json!({"contact_id": format!("s-{i}")}),
            );
            assert_eq!(
                app.post_event_as("ehr-adapter", &e).await.status().as_u16(),
                202
            );
        }
        let e = event(
            "contact.started",
            "sms",
            days_ago(0, 0),
            json!({"phone": "+15550111111"}),
            json!({"contact_id": "s-9"}),
        );
        let res = app.post_event_as("ehr-adapter", &e).await;
        assert_eq!(res.status().as_u16(), 429);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let wait: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(wait >= 1);
        // Another token has its own bucket.
        assert_eq!(app.post_event(&e).await.status().as_u16(), 202);
    }

    #[actix_web::test]
    async fn metrics_need_a_monitor_or_admin_token_when_configured() {
        let (mut settings, dir) = test_settings(Backend::Sqlite).await;
        settings.security.metrics_require_token = true;
        let app = spawn_app_with(settings, dir).await;
        assert_eq!(app.get_as(None, "/metrics", &[]).await.0, 401);
        assert_eq!(app.get_as(Some("agent-7"), "/metrics", &[]).await.0, 403);
        let res = app
            .request(
                reqwest::Method::GET,
                "/metrics",
                Some(&crate::helpers::token_for("prometheus")),
                &[],
                None,
            )
            .await;
        assert_eq!(res.status().as_u16(), 200);
    }

    #[actix_web::test]
    async fn a_token_added_to_the_principals_file_works_without_a_restart() {
        let (mut settings, dir) = test_settings(Backend::Sqlite).await;
        let file =
            std::env::temp_dir().join(format!("fd-principals-{}.toml", uuid::Uuid::new_v4()));
        let entry = |id: &str| {
            format!(
            "[[principal]]\nid = \"{id}\"\nrole = \"monitor\"\nsites = [\"*\"]\ntoken_sha256 = \"{}\"\n",
            frontdoor::auth::token_digest(&crate::helpers::token_for(id)))
        };
        std::fs::write(&file, entry("old-monitor")).unwrap();
        settings.security.principals_file = Some(file.clone());
        settings.security.reload_interval_secs = 1;
        let app = spawn_app_with(settings, dir).await;
        assert_eq!(app.get_as(Some("old-monitor"), "/readyz", &[]).await.0, 200);
        assert_eq!(app.get_as(Some("new-monitor"), "/readyz", &[]).await.0, 401);
        std::fs::write(&file, entry("new-monitor")).unwrap();
        // The file is polled once a second: wait for the change (bounded).
        let mut status = 0;
        for _ in 0..60 {
            status = app.get_as(Some("new-monitor"), "/readyz", &[]).await.0;
            if status == 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(status, 200, "the new token is accepted after the reload");
        assert_eq!(
            app.get_as(Some("old-monitor"), "/readyz", &[]).await.0,
            401,
            "the old one is gone"
        );
        let _ = std::fs::remove_file(&file);
    }
}

mod production {
    use frontdoor::auth::token_digest;
    use frontdoor::configuration::{Environment, PrincipalEntry};
    use frontdoor::startup::Application;

    use crate::helpers::{captured_logs, test_settings, Backend};

    fn error_of(built: anyhow::Result<Application>) -> String {
        match built {
            Ok(_) => panic!("the runtime started"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[actix_web::test]
    async fn production_refuses_to_start_with_a_published_development_token() {
        captured_logs();
        let (mut settings, _dir) = test_settings(Backend::Sqlite).await;
        settings.application.environment = Environment::Production;
        settings.security.principals.push(PrincipalEntry {
            id: "ops-console".into(),
            role: frontdoor::auth::Role::Admin,
            sites: vec!["*".into()],
            departments: Vec::new(),
            token_sha256: token_digest("dev-admin-local-token"),
        });
        let err = error_of(Application::build(settings.clone()).await);
        assert!(
            err.contains("ops-console") && err.contains("development token"),
            "{err}"
        );
        assert!(captured_logs()
            .contains("refusing to start: a principal holds a published development token"));
        // The same principals start a local runtime.
        settings.application.environment = Environment::Local;
        assert!(Application::build(settings).await.is_ok());
    }

    #[actix_web::test]
    async fn plain_http_beyond_loopback_is_refused_unless_explicitly_allowed() {
        captured_logs();
        let (mut settings, _dir) = test_settings(Backend::Sqlite).await;
        settings.application.host = "0.0.0.0".into();
        let err = error_of(Application::build(settings.clone()).await);
        assert!(err.contains("plain HTTP on 0.0.0.0"), "{err}");
        assert!(captured_logs().contains("refusing to serve plain HTTP on 0.0.0.0"));
        settings.application.allow_plain_http = true;
        assert!(Application::build(settings).await.is_ok());
    }
}

mod broker_scope {
    use std::time::Duration;

    use serde_json::json;

    use crate::amqp::{eventually, header};
    use crate::broker::{spawn_with_broker, wait_stored};
    use crate::helpers::{days_ago, event};

    #[actix_web::test]
    async fn an_envelope_published_under_another_sites_routing_key_is_dead_lettered_and_not_stored()
    {
        let (mut app, adapter) = spawn_with_broker(None).await;
        let booking = |mrn: &str| {
            event(
                "appointment.booked",
                "portal",
                days_ago(0, 0),
                json!({"mrn": mrn}),
                json!({"appointment_id": format!("appt-{mrn}"), "starts_at": days_ago(-3, 0).to_rfc3339()}),
            )
        };
        // A publisher allowed only `south.#` claims a north event.
        let claimed = booking("MRN-KEY-1");
        adapter
            .publish_raw(
                claimed.to_string().as_bytes(),
                "south.portal.appointment.booked",
                claimed["id"].as_str().unwrap(),
                Some("MRN-KEY-1"),
            )
            .await;
        let honest = booking("MRN-KEY-2");
        adapter.publish_event(&honest, "MRN-KEY-2").await;
        wait_stored(&app, 1).await;
        let dead = &adapter.names.dead_letter_queue;
        eventually(Duration::from_secs(30), "one dead letter", || async {
            (adapter.ready(dead).await == 1).then_some(())
        })
        .await;
        let letters = adapter.take_all(dead).await;
        assert_eq!(
            header(&letters[0], "x-frontdoor-reason").as_deref(),
            Some("routing_key")
        );
        assert_eq!(letters[0].delivery.data, claimed.to_string().into_bytes());
        let log = app.store.event_log().await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].1, honest["id"].as_str().unwrap());
        app.stop().await;
        adapter.cleanup().await;
    }
}
