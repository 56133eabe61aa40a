//! The FHIR R4 edge, fed by an independent generator (`carebundle`, synthetic US Core
//! bundles) and checked by an independent model library (`fhir.resources`), both run
//! through `tests/fhir/*.py`. Python and those packages are required: a missing one
//! fails the test (`pip install -r tests/fhir/requirements.txt`; .ci/run does it).

use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    days_ago, event, spawn_app, token_for, Backend, TestApp, CAREBUNDLE_MRN_SYSTEM,
};
use crate::on_both_backends;

/// Runs `python3 tests/fhir/<script> <args>` with `stdin`; fails the test when Python,
/// a package, or the script fails.
fn python(script: &str, args: &[&str], stdin: Option<&str>) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fhir/");
    let mut child = Command::new("python3")
        .arg(format!("{path}{script}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is required for the FHIR tests (see tests/fhir/requirements.txt)");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).expect("write to python");
        }
    }
    let out = child.wait_with_output().expect("python3 ran");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "a Python package is missing: pip install -r tests/fhir/requirements.txt\n{stderr}"
    );
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// A bundle from the generator.
fn generate(args: &[&str]) -> Value {
    serde_json::from_str(&python("generate.py", args, None)).expect("the generator prints JSON")
}

/// Validates resources with `fhir.resources` (fails the test, naming each error).
fn assert_valid_fhir(resources: &[Value]) {
    let doc = json!({"resources": resources}).to_string();
    let out = python("validate.py", &[], Some(&doc));
    assert_eq!(out.trim(), format!("ok {}", resources.len()));
}

/// POSTs a body to `/fhir/r4?site=<site>` as `principal`.
async fn post_fhir(app: &TestApp, principal: &str, site: &str, body: &str) -> (u16, String, Value) {
    let res = app
        .client
        .post(format!("{}/fhir/r4?site={site}", app.address))
        .bearer_auth(token_for(principal))
        .header("Content-Type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST /fhir/r4");
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, res.json().await.unwrap_or(Value::Null))
}

fn resources_of(bundle: &Value, resource_type: &str) -> Vec<Value> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .filter(|r| r["resourceType"] == resource_type)
        .collect()
}

fn mrn_of(bundle: &Value) -> String {
    resources_of(bundle, "Patient")[0]["identifier"][0]["value"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The outbox's commands of one type, as JSON bodies.
async fn commands(app: &TestApp, command_type: &str) -> Vec<Value> {
    app.store
        .pending_commands(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.command_type == command_type)
        .map(|c| serde_json::from_str(&c.body).unwrap())
        .collect()
}

fn appointment_args<'a>(id: &'a str, start: &'a str, end: &'a str) -> Vec<&'a str> {
    vec![
        "appointment",
        "--seed",
        "7",
        "--phone",
        "(555) 010-0007",
        "--start",
        start,
        "--end",
        end,
        "--department",
        "dermatology",
        "--location",
        "North Clinic, floor 2",
        "--reason",
        "rash on both forearms",
        "--id",
        id,
    ]
}

#[test]
fn the_generator_still_names_its_mrns_with_the_system_the_test_sites_configure() {
    assert_eq!(
        python("generate.py", &["mrn-system"], None).trim(),
        CAREBUNDLE_MRN_SYSTEM
    );
}

on_both_backends! {
    async fn a_diabetic_patients_bundle_gives_medications_and_glucose_readings_in_the_context(app: TestApp) {
        let bundle = generate(&["diabetic", "--seed", "42"]);
        let (status, ct, answer) = post_fhir(&app, "ehr-adapter", "north", &bundle.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(ct, "application/fhir+json");
        assert_eq!(answer["type"], "transaction-response");
        let sent = bundle["entry"].as_array().unwrap().len();
        assert_eq!(answer["entry"].as_array().unwrap().len(), sent, "one response per entry");
        assert_valid_fhir(std::slice::from_ref(&answer));
        for e in answer["entry"].as_array().unwrap() {
            assert_eq!(e["response"]["outcome"]["resourceType"], "OperationOutcome");
            let s = e["response"]["status"].as_str().unwrap();
            assert!(s.starts_with("201") || s.starts_with("200"), "{e}");
        }

        let patient = app.patient_id("mrn", &mrn_of(&bundle)).await;
        let ctx = app.context(&patient).await;
        // Medications: the active MedicationRequests, by their text.
        let mut expected: Vec<String> = resources_of(&bundle, "MedicationRequest").iter()
            .filter(|m| m["status"] == "active")
            .map(|m| m["medicationCodeableConcept"]["text"].as_str().unwrap().to_string())
            .collect();
        expected.sort();
        assert!(expected.iter().any(|m| m.contains("metformin")), "{expected:?}");
        let mut got: Vec<String> = ctx["medications"]["items"].as_array().unwrap().iter()
            .map(|m| m["name"].as_str().unwrap().to_string()).collect();
        got.sort();
        assert_eq!(got, expected);
        // Glucose: the serum/plasma glucose (LOINC 2345-7) as a lab reading, with its value.
        let lab = resources_of(&bundle, "Observation").into_iter()
            .find(|o| o["code"]["coding"][0]["code"] == "2345-7").expect("a glucose lab");
        let readings = ctx["device_readings"].as_array().unwrap();
        assert_eq!(readings.len(), 1, "only glucose is kept (vital signs are not configured): {readings:?}");
        assert_eq!(readings[0]["device"], "lab");
        assert_eq!(readings[0]["summary"]["loinc"], "2345-7");
        assert_eq!(readings[0]["summary"]["value"].as_f64(), lab["valueQuantity"]["value"].as_f64());
        // The finished encounter's narrative is the visit summary.
        assert_eq!(ctx["notes"][0]["role"], "visit summary");

        // The same context as a FHIR Bundle, valid by the independent models.
        let res = app.request(Method::GET, &format!("/fhir/r4/Patient/{patient}/$front-door-context"),
            Some(&app.token), &[], None).await;
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(res.headers()["content-type"], "application/fhir+json");
        let fhir: Value = res.json().await.unwrap();
        assert_eq!(fhir["type"], "collection");
        assert_valid_fhir(std::slice::from_ref(&fhir));
        assert_eq!(resources_of(&fhir, "MedicationStatement").len(), expected.len());
        let obs = resources_of(&fhir, "Observation");
        assert_eq!(obs[0]["code"]["coding"][0]["code"], "2345-7");
        let p = &resources_of(&fhir, "Patient")[0];
        assert_eq!(p["identifier"][0]["value"], json!(mrn_of(&bundle)));

        // No PHI of the bundle in the logs (debug level, every span closed).
        let logs = crate::helpers::captured_logs();
        let family = resources_of(&bundle, "Patient")[0]["name"][0]["family"].as_str().unwrap().to_string();
        for phi in [mrn_of(&bundle), family, expected[0].clone()] {
            assert!(!logs.contains(&phi), "the logs hold PHI from the bundle");
        }

        // Types Front Door does not use are counted and skipped.
        let metrics = app.metrics().await;
        assert!(metrics.lines().any(|l| l.starts_with("frontdoor_fhir_entries_total")
            && l.contains("outcome=\"unsupported\"") && l.contains("resource=\"Condition\"")), "{metrics}");
    }

    async fn the_same_bundle_twice_changes_nothing(app: TestApp) {
        let bundle = generate(&["diabetic", "--seed", "43"]).to_string();
        let (status, _, first) = post_fhir(&app, "ehr-adapter", "north", &bundle).await;
        assert_eq!(status, 200, "{first}");
        let events = app.store.count_events(None).await.unwrap();
        let outbox = app.store.pending_commands(10_000).await.unwrap().len();
        let mrn = mrn_of(&serde_json::from_str(&bundle).unwrap());
        let patient = app.patient_id("mrn", &mrn).await;
        let before = app.context(&patient).await;

        let (status, _, second) = post_fhir(&app, "ehr-adapter", "north", &bundle).await;
        assert_eq!(status, 200, "{second}");
        assert_eq!(app.store.count_events(None).await.unwrap(), events);
        assert_eq!(app.store.pending_commands(10_000).await.unwrap().len(), outbox);
        let after = app.context(&patient).await;
        assert_eq!(after["events_total"], before["events_total"]);
        assert_eq!(after["medications"], before["medications"]);
        for (a, b) in first["entry"].as_array().unwrap().iter().zip(second["entry"].as_array().unwrap()) {
            if a["response"]["status"] == "201 Created" {
                assert_eq!(b["response"]["status"], "200 OK", "stored once: {b}");
                let text = b["response"]["outcome"]["issue"][0]["diagnostics"].as_str().unwrap();
                assert!(text.starts_with("already stored"), "{text}");
            }
        }
    }

    async fn a_malformed_bundle_gets_a_400_operation_outcome_naming_elements_and_stores_nothing(app: TestApp) {
        // carebundle's defect injector drops every `status` (required in R4).
        let bundle = generate(&["malformed", "--seed", "42"]);
        let (status, ct, body) = post_fhir(&app, "ehr-adapter", "north", &bundle.to_string()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(ct, "application/fhir+json");
        assert_eq!(body["resourceType"], "OperationOutcome");
        assert_valid_fhir(std::slice::from_ref(&body));
        let issues = body["issue"].as_array().unwrap();
        let entries_with_status = bundle["entry"].as_array().unwrap().iter().enumerate()
            .filter(|(_, e)| matches!(e["resource"]["resourceType"].as_str(),
                Some("Observation" | "MedicationRequest" | "Encounter")))
            .count();
        let status_paths: Vec<&str> = issues.iter()
            .filter_map(|i| i["expression"][0].as_str())
            .filter(|p| p.ends_with(".resource.status"))
            .collect();
        assert_eq!(status_paths.len(), entries_with_status, "{issues:?}");
        assert!(status_paths.iter().all(|p| p.starts_with("Bundle.entry[")));
        assert!(issues.iter().all(|i| i["severity"] == "error"));
        // Never a value: neither the MRN nor any name reaches the answer.
        let text = body.to_string();
        assert!(!text.contains(&mrn_of(&bundle)));
        let family = resources_of(&bundle, "Patient")[0]["name"][0]["family"].as_str().unwrap().to_string();
        assert!(!text.contains(&family));
        assert_eq!(app.store.count_events(None).await.unwrap(), 0, "nothing stored");

        // Not JSON, not a FHIR resource, not FHIR's media type.
        let (status, _, body) = post_fhir(&app, "ehr-adapter", "north", "{\"resourceType\": \"Bundle\",").await;
        assert_eq!((status, body["resourceType"].as_str()), (400, Some("OperationOutcome")));
        let (status, _, body) = post_fhir(&app, "ehr-adapter", "north", "{\"resourceType\": \"Chart\"}").await;
        assert_eq!((status, body["issue"][0]["expression"][0].as_str()), (400, Some("Resource.resourceType")));
        let res = app.client.post(format!("{}/fhir/r4?site=north", app.address))
            .bearer_auth(token_for("ehr-adapter")).header("Content-Type", "text/plain")
            .body("hello").send().await.unwrap();
        assert_eq!(res.status().as_u16(), 415);
        assert_eq!(app.store.count_events(None).await.unwrap(), 0);
    }

    async fn an_appointment_booked_by_fhir_sends_the_same_sms_confirmation_as_the_envelope_path(app: TestApp) {
        let (start, end) = (days_ago(-5, 0), days_ago(-5, 0) + chrono::Duration::minutes(30));
        let (start, end) = (start.format("%Y-%m-%dT%H:%M:%SZ").to_string(), end.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        let bundle = generate(&appointment_args("appt-fhir-7", &start, &end));
        let (status, _, answer) = post_fhir(&app, "ehr-adapter", "north", &bundle.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        let sms = commands(&app, "notify.send").await;
        assert_eq!(sms.len(), 1, "{sms:?}");
        let by_fhir = &sms[0];
        assert_eq!(by_fhir["to"], "+15550100007");
        assert_eq!(by_fhir["channel"], "sms");

        // The same booking through the envelope path, on a fresh runtime.
        let other = spawn_app(Backend::Sqlite).await;
        let practitioner = &resources_of(&bundle, "Practitioner")[0]["name"][0];
        let provider = format!("{} {}", practitioner["given"][0].as_str().unwrap(), practitioner["family"].as_str().unwrap());
        let mut e = event("appointment.booked", "portal", days_ago(0, 0),
            json!({"mrn": mrn_of(&bundle), "phone": "+15550100007"}),
            json!({"appointment_id": "appt-fhir-7", "starts_at": start, "department": "dermatology",
                   "reason": "rash on both forearms", "location": "North Clinic, floor 2", "provider": provider}));
        e["site"] = json!("north");
        other.store_event(&e).await;
        let by_envelope = &commands(&other, "notify.send").await[0];
        let payload = |c: &Value| {
            let mut c = c.clone();
            for k in ["id", "caused_by", "issued_at", "patient_id"] {
                c.as_object_mut().unwrap().remove(k);
            }
            c
        };
        assert_eq!(payload(by_fhir), payload(by_envelope));

        // The same bundle again: no second message.
        post_fhir(&app, "ehr-adapter", "north", &bundle.to_string()).await;
        assert_eq!(commands(&app, "notify.send").await.len(), 1);
        // A new version at another time: a reschedule, and its own message.
        let (start2, end2) = (days_ago(-6, 0).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            (days_ago(-6, 0) + chrono::Duration::minutes(30)).format("%Y-%m-%dT%H:%M:%SZ").to_string());
        let moved = generate(&appointment_args("appt-fhir-7", &start2, &end2));
        let (status, _, answer) = post_fhir(&app, "ehr-adapter", "north", &moved.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        let sms = commands(&app, "notify.send").await;
        assert_eq!(sms.len(), 2);
        assert_eq!(sms[1]["template"], "appointment.rescheduled");
        let patient = app.patient_id("mrn", &mrn_of(&bundle)).await;
        let ctx = app.context(&patient).await;
        assert_eq!(ctx["appointments"][0]["status"], "rescheduled");
        assert_eq!(ctx["appointments"][0]["ends_at"], json!(chrono::DateTime::parse_from_rfc3339(&end2).unwrap().with_timezone(&chrono::Utc)));
    }

    async fn a_nurse_chat_ending_emits_a_valid_communication_and_a_claimed_phone_a_suggestion(app: TestApp) {
        let (start, end) = (days_ago(-5, 0).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            (days_ago(-5, 0) + chrono::Duration::minutes(30)).format("%Y-%m-%dT%H:%M:%SZ").to_string());
        let bundle = generate(&appointment_args("appt-fhir-8", &start, &end));
        let (status, _, _) = post_fhir(&app, "ehr-adapter", "north", &bundle.to_string()).await;
        assert_eq!(status, 200);
        let mrn = mrn_of(&bundle);
        let chat = |ty: &str, extra: Value| {
            let mut x = json!({"contact_id": "chat-nurse-1"});
            for (k, v) in extra.as_object().unwrap() {
                x[k] = v.clone();
            }
            event(ty, "chat", days_ago(0, 0), json!({"mrn": mrn}), x)
        };
        app.store_event(&chat("contact.started", json!({"skill": "dermatology", "intent": "medication_question"}))).await;
        app.store_event(&chat("contact.message", json!({"from": "patient", "text": "The cream burns, should I stop?"}))).await;
        app.store_event(&chat("contact.message", json!({"from": "staff", "text": "Use it every other day until your visit."}))).await;
        assert!(commands(&app, "ehr.document").await.is_empty(), "not before the contact ends");
        app.store_event(&chat("contact.ended", json!({"agent": "rn-4", "summary": "Advised every other day."}))).await;
        let docs = commands(&app, "ehr.document").await;
        assert_eq!(docs.len(), 1);
        let c = &docs[0];
        assert_eq!((c["channel"].as_str(), c["site"].as_str()), (Some("ehr"), Some("north")));
        let r = &c["resource"];
        assert_valid_fhir(std::slice::from_ref(r));
        assert_eq!(r["resourceType"], "Communication");
        assert_eq!(r["subject"]["identifier"]["system"], CAREBUNDLE_MRN_SYSTEM);
        assert_eq!(r["subject"]["identifier"]["value"], json!(mrn));
        assert_eq!(r["recipient"][0]["identifier"]["value"], json!(mrn));
        assert_eq!(r["sender"]["identifier"]["value"], "rn-4");
        assert_eq!(r["about"][0]["reference"], "Appointment/appt-fhir-8");
        let payload: Vec<&str> = r["payload"].as_array().unwrap().iter().map(|p| p["contentString"].as_str().unwrap()).collect();
        assert!(payload[0].ends_with("Patient: The cream burns, should I stop?"), "{payload:?}");
        assert!(payload[1].ends_with("Staff: Use it every other day until your visit."), "{payload:?}");
        assert!(r["sent"].as_str().is_some());

        // A call from a number Front Door has not seen, for this MRN: a suggestion.
        app.store_event(&event("contact.started", "voice", days_ago(0, 0),
            json!({"mrn": mrn, "phone": "+15550109999"}), json!({"contact_id": "call-new-phone"}))).await;
        let suggestions = commands(&app, "ehr.identity").await;
        assert_eq!(suggestions.len(), 1, "{suggestions:?}");
        assert_eq!(suggestions[0]["action"], "suggest");
        let p = &suggestions[0]["resource"];
        assert_valid_fhir(std::slice::from_ref(p));
        assert_eq!(p["telecom"][0]["value"], "+15550109999");
        assert_eq!(p["identifier"][0]["value"], json!(mrn));
    }

    async fn a_clinician_reads_patients_with_an_appointment_in_its_department_audited_as_treatment(app: TestApp) {
        let (start, end) = (days_ago(-5, 0).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            (days_ago(-5, 0) + chrono::Duration::minutes(30)).format("%Y-%m-%dT%H:%M:%SZ").to_string());
        let bundle = generate(&appointment_args("appt-fhir-9", &start, &end));
        assert_eq!(post_fhir(&app, "ehr-adapter", "north", &bundle.to_string()).await.0, 200);
        let patient = app.patient_id("mrn", &mrn_of(&bundle)).await;
        let paths = [format!("/v1/patients/{patient}/context"), format!("/fhir/r4/Patient/{patient}/$front-door-context")];
        for p in &paths {
            assert_eq!(app.get_as(Some("dr-derm"), p, &[]).await.0, 200, "{p}");
            assert_eq!(app.get_as(Some("dr-cardio"), p, &[]).await.0, 403, "{p}: another department");
        }
        assert_eq!(app.get_as(Some("dr-derm"), &format!("/v1/patients?mrn={}", mrn_of(&bundle)), &[]).await.0, 200);
        // What the specialist sees as FHIR: valid, with the appointment and the patient's phone.
        let (_, fhir) = app.get_as(Some("dr-derm"), &paths[1], &[]).await;
        assert_valid_fhir(std::slice::from_ref(&fhir));
        let appt = &resources_of(&fhir, "Appointment")[0];
        assert_eq!((appt["status"].as_str(), appt["start"].as_str(), appt["end"].as_str()),
            (Some("booked"), Some(start.as_str()), Some(end.as_str())));
        assert_eq!(appt["specialty"][0]["text"], "dermatology");
        assert_eq!(resources_of(&fhir, "Patient")[0]["telecom"][0]["value"], "+15550100007");
        // The same department at a site outside the clinician's: refused.
        let mut south = event("appointment.booked", "ehr", days_ago(0, 0), json!({"mrn": "MRN-SOUTH-DERM"}),
            json!({"appointment_id": "s-1", "starts_at": start, "department": "dermatology"}));
        south["site"] = json!("south");
        app.store_event(&south).await;
        let south_patient = app.patient_id("mrn", "MRN-SOUTH-DERM").await;
        assert_eq!(app.get_as(Some("dr-derm"), &format!("/v1/patients/{south_patient}/context"), &[]).await.0, 403);
        // An unknown patient: the same 403 (no oracle).
        assert_eq!(app.get_as(Some("dr-derm"), &format!("/v1/patients/{}/context", uuid::Uuid::new_v4()), &[]).await.0, 403);

        let (_, audit) = app.get(&format!("/v1/audit?principal=dr-derm&patient={patient}")).await;
        let records = audit["records"].as_array().unwrap();
        assert_eq!(records.len(), 4, "{records:?}");
        for r in records {
            assert_eq!((r["purpose"].as_str(), r["outcome"].as_str(), r["principal_role"].as_str()),
                (Some("treatment"), Some("success"), Some("clinician")));
        }
        assert_eq!(records[1]["detail"], "as a FHIR Bundle");

        // Cancelled by the EHR: the relationship ends.
        let mut cancelled = bundle.clone();
        for e in cancelled["entry"].as_array_mut().unwrap() {
            if e["resource"]["resourceType"] == "Appointment" {
                e["resource"]["status"] = json!("cancelled");
            }
        }
        assert_eq!(post_fhir(&app, "ehr-adapter", "north", &cancelled.to_string()).await.0, 200);
        assert_eq!(app.get_as(Some("dr-derm"), &paths[0], &[]).await.0, 403);
    }

    async fn an_adapter_posts_fhir_only_for_its_sites(app: TestApp) {
        let bundle = generate(&["diabetic", "--seed", "44"]).to_string();
        let (status, ct, _) = post_fhir(&app, "north-adapter", "south", &bundle).await;
        assert_eq!((status, ct.as_str()), (403, "application/fhir+json"));
        // Its only site is the default.
        let res = app.client.post(format!("{}/fhir/r4", app.address))
            .bearer_auth(token_for("north-adapter")).header("Content-Type", "application/fhir+json")
            .body(bundle.clone()).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let (_, body) = app.get_as(Some("dr-derm"), "/readyz", &[]).await;
        assert_eq!(body["status"], "ready");
        let res = app.request(Method::POST, "/fhir/r4?site=north", Some(&token_for("agent-7")), &[], Some(bundle)).await;
        assert_eq!(res.status().as_u16(), 403);
    }
}
