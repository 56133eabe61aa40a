//! The seed's journeys: context follows the patient across channels and identities.

use serde_json::{json, Value};

use crate::helpers::{days_ago, event};
use crate::on_both_backends;

fn types(ctx: &Value) -> Vec<String> {
    ctx["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap().to_string())
        .collect()
}

on_both_backends! {
    async fn a_portal_chat_shows_the_booked_appointment_and_medications_without_the_patient_repeating_them(app: TestApp) {
        let patient = json!({"portal_id": "web-4471", "mrn": "MRN-100200"});
        // 23:00 three days ago: dermatology booked on the portal.
        let booked_at = days_ago(3, 0);
        app.store_event(&event("appointment.booked", "portal", booked_at, patient.clone(), json!({
            "appointment_id": "appt-77", "starts_at": days_ago(-4, 0).to_rfc3339(),
            "department": "dermatology", "reason": "spreading rash on both forearms",
            "provider": "Dr. Osei", "location": "North Clinic, floor 2"
        }))).await;
        app.store_event(&event("medications.updated", "ehr", days_ago(2, 0), json!({"mrn": "MRN-100200"}), json!({
            "medications": [{"name": "methotrexate", "dose": "15 mg", "frequency": "weekly"},
                            {"name": "folic acid", "dose": "1 mg", "frequency": "daily"}]
        }))).await;
        // Today: a portal chat, identified by the portal login only.
        let chat = json!({"portal_id": "web-4471"});
        app.store_event(&event("contact.started", "chat", days_ago(0, -1), chat.clone(),
            json!({"contact_id": "chat-9001", "intent": "medication_question"}))).await;
        app.store_event(&event("contact.message", "chat", days_ago(0, -1), chat.clone(), json!({
            "contact_id": "chat-9001", "from": "patient",
            "text": "Should I stop methotrexate before my dermatology visit?"}))).await;

        let pid = app.patient_id("portal_id", "web-4471").await;
        assert_eq!(pid, app.patient_id("mrn", "MRN-100200").await, "one patient across identifiers");
        let ctx = app.context(&pid).await;
        let appt = &ctx["appointments"][0];
        assert_eq!(appt["department"], "dermatology");
        assert_eq!(appt["reason"], "spreading rash on both forearms");
        assert_eq!(appt["status"], "booked");
        assert_eq!(ctx["upcoming_appointments"], json!(["appt-77"]));
        let meds: Vec<&str> = ctx["medications"]["items"].as_array().unwrap().iter()
            .map(|m| m["name"].as_str().unwrap()).collect();
        assert_eq!(meds, vec!["methotrexate", "folic acid"]);
        assert_eq!(ctx["open_contacts"][0]["id"], "chat-9001");
        assert_eq!(ctx["open_contacts"][0]["messages"][0]["from"], "patient");

        // The nurse answers; the dermatologist later sees question and answer.
        app.store_event(&event("note.recorded", "desktop", days_ago(0, 0), json!({"mrn": "MRN-100200"}), json!({
            "contact_id": "chat-9001", "author": "rn-jlee", "role": "nurse",
            "text": "Continue methotrexate as prescribed; the dermatologist will review at the visit."}))).await;
        app.store_event(&event("contact.ended", "chat", days_ago(0, 0), chat, json!({
            "contact_id": "chat-9001", "disposition": "answered", "agent": "rn-jlee"}))).await;
        let later = app.context(&pid).await;
        let t = types(&later);
        assert_eq!(t[..2], ["contact.ended", "note.recorded"]);
        assert!(t.contains(&"contact.message".to_string()) && t.contains(&"appointment.booked".to_string()));
        assert_eq!(later["notes"][0]["role"], "nurse");
        assert_eq!(later["notes"][0]["contact_id"], "chat-9001");
        let chat_contact = &later["recent_contacts"][0];
        assert_eq!(chat_contact["messages"][0]["text"], "Should I stop methotrexate before my dermatology visit?");
        assert_eq!(chat_contact["state"], "ended");
        assert!(later["open_contacts"].as_array().unwrap().is_empty());
    }

    async fn a_diabetic_patient_calling_from_a_linked_phone_resolves_to_the_full_history(app: TestApp) {
        let mrn = json!({"mrn": "MRN-D-55"});
        app.store_event(&event("appointment.booked", "portal", days_ago(16, 0), mrn.clone(), json!({
            "appointment_id": "tele-1", "starts_at": days_ago(14, 0).to_rfc3339(),
            "department": "endocrinology", "reason": "diabetes follow-up",
            "telehealth_url": "https://visit.example.org/r/abc"}))).await;
        app.store_event(&event("device.readings", "device", days_ago(14, -2), mrn.clone(), json!({
            "device": "cgm", "summary": {"mean_glucose_mg_dl": 162, "time_in_range_pct": 61}}))).await;
        app.store_event(&event("contact.started", "video", days_ago(14, 0), mrn.clone(), json!({"contact_id": "visit-1"}))).await;
        app.store_event(&event("contact.ended", "video", days_ago(14, 1), mrn.clone(), json!({
            "contact_id": "visit-1", "disposition": "completed",
            "summary": "A1c up; start basal insulin, recheck CGM in two weeks"}))).await;
        app.store_event(&event("prescription.routed", "ehr", days_ago(14, 1), mrn.clone(), json!({
            "prescription_id": "rx-9", "medication": "insulin glargine", "pharmacy": "Main St Pharmacy"}))).await;
        app.store_event(&event("prescription.ready", "pharmacy", days_ago(13, 0), mrn.clone(), json!({
            "prescription_id": "rx-9", "medication": "insulin glargine", "pharmacy": "Main St Pharmacy"}))).await;
        app.store_event(&event("identity.linked", "ehr", days_ago(13, 0),
            json!({"mrn": "MRN-D-55", "phone": "+15550142222"}), json!({}))).await;

        // Two weeks later the patient calls.
        app.store_event(&event("contact.started", "voice", days_ago(0, 0), json!({"phone": "+15550142222"}),
            json!({"contact_id": "call-77", "intent": "prescription"}))).await;
        let by_phone = app.patient_id("phone", "+15550142222").await;
        assert_eq!(by_phone, app.patient_id("mrn", "MRN-D-55").await);
        let ctx = app.context(&by_phone).await;
        assert_eq!(ctx["events_total"], 8);
        assert_eq!(ctx["prescriptions"][0]["status"], "ready");
        assert_eq!(ctx["device_readings"][0]["summary"]["time_in_range_pct"], 61);
        assert_eq!(ctx["recent_contacts"][0]["summary"], "A1c up; start basal insulin, recheck CGM in two weeks");
        assert_eq!(ctx["open_contacts"][0]["channel"], "voice");
        let kinds: Vec<&str> = ctx["identifiers"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, vec!["mrn", "phone"]);
    }

    async fn an_unknown_caller_linked_later_shows_both_histories_in_one_timeline(app: TestApp) {
        // Known patient with history under the MRN.
        app.store_event(&event("appointment.booked", "portal", days_ago(5, 0), json!({"mrn": "MRN-300"}), json!({
            "appointment_id": "a-300", "starts_at": days_ago(-2, 0).to_rfc3339(), "department": "cardiology",
            "reason": "palpitations"}))).await;
        let known = app.patient_id("mrn", "MRN-300").await;
        // An unknown caller: a provisional patient keyed by the phone.
        app.store_event(&event("contact.started", "voice", days_ago(1, 0), json!({"phone": "+15550177777"}),
            json!({"contact_id": "call-1"}))).await;
        app.store_event(&event("contact.abandoned", "voice", days_ago(1, 0), json!({"phone": "+15550177777"}),
            json!({"contact_id": "call-1"}))).await;
        let provisional = app.patient_id("phone", "+15550177777").await;
        assert_ne!(known, provisional);
        assert_eq!(app.context(&provisional).await["identifiers"].as_array().unwrap().len(), 1);

        // Registration links the phone to the MRN.
        app.store_event(&event("identity.linked", "ehr", days_ago(0, 0),
            json!({"mrn": "MRN-300", "phone": "+15550177777"}), json!({}))).await;
        assert_eq!(app.patient_id("phone", "+15550177777").await, known);
        let ctx = app.context(&known).await;
        assert_eq!(ctx["merged_from"], json!([provisional]));
        let t = types(&ctx);
        assert_eq!(t, vec!["identity.linked", "contact.abandoned", "contact.started", "appointment.booked"]);
        // The provisional id still answers, with the surviving record.
        assert_eq!(app.context(&provisional).await["patient_id"], json!(known));
        // New events for the phone land in the surviving journey.
        app.store_event(&event("contact.started", "sms", days_ago(0, 0), json!({"phone": "+15550177777"}),
            json!({"contact_id": "sms-1"}))).await;
        assert_eq!(app.context(&known).await["events_total"], 5);
    }

    async fn a_new_mrn_on_a_shared_family_phone_is_not_merged_into_the_other_patient(app: TestApp) {
        app.store_event(&event("contact.started", "voice", days_ago(1, 0),
            json!({"mrn": "PARENT-1", "phone": "+15550188888"}), json!({"contact_id": "c-1"}))).await;
        app.store_event(&event("contact.started", "voice", days_ago(0, 0),
            json!({"mrn": "CHILD-2", "phone": "+15550188888"}), json!({"contact_id": "c-2"}))).await;
        let parent = app.patient_id("mrn", "PARENT-1").await;
        let child = app.patient_id("mrn", "CHILD-2").await;
        assert_ne!(parent, child);
        assert_eq!(app.patient_id("phone", "+15550188888").await, parent);
        assert_eq!(app.context(&child).await["events_total"], 1);
    }
}

mod notifications {
    use serde_json::{json, Value};

    use crate::helpers::{days_ago, event};
    use crate::on_both_backends;

    on_both_backends! {
        async fn a_booking_writes_one_confirmation_to_the_outbox_even_when_sent_twice(app: TestApp) {
            let e = event("appointment.booked", "portal", days_ago(0, 0),
                json!({"mrn": "MRN-N1", "phone": "+15550199999"}), json!({
                "appointment_id": "appt-n1", "starts_at": days_ago(-3, 0).to_rfc3339(),
                "department": "dermatology", "location": "North Clinic"}));
            app.store_event(&e).await;
            assert_eq!(app.post_event(&e).await.status().as_u16(), 200);
            let pending = app.store.pending_commands(10).await.unwrap();
            assert_eq!(pending.len(), 1);
            assert_eq!(pending[0].routing_key, "north.sms.notify.send");
            let body: Value = serde_json::from_str(&pending[0].body).unwrap();
            assert_eq!(body["template"], "appointment.confirmation");
            assert_eq!(body["location"], "North Clinic");
            assert_eq!(body["caused_by"], e["id"]);
        }
    }
}

/// Live application agrees with a refold of the stored log, for any sequence of
/// events: each case sends a random journey over HTTP (out-of-order occurrence
/// times, duplicates, a provisional caller merged by `identity.linked`, identifiers
/// claimed along the way, limits small enough to trim) with passivations at random
/// points, then compares the context served live with the one served after a last
/// passivation (a fold of the stored log). Shrinks a failure to a minimal journey.
mod refold {
    use std::time::{Duration, Instant};

    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    use serde_json::{json, Value};

    use crate::helpers::{event, spawn_app_with, test_settings, Backend, TestApp};

    /// Who an event names.
    #[derive(Debug, Clone, Copy)]
    enum Who {
        /// The MRN.
        Mrn,
        /// Only a phone (at first an unknown caller: a provisional patient).
        Phone,
        /// The MRN and a new email (claimed live).
        MrnAndEmail,
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A patient event: its type (index into TYPES), contact, who, minutes ago, a flag.
        Event(usize, u8, Who, i64, bool),
        /// The i-th event sent so far, again (same id).
        Resend(usize),
        /// `identity.linked` of the MRN and the phone.
        Link,
        /// Every resident patient passivates.
        Passivate,
    }

    const TYPES: &[&str] = &[
        "contact.started",
        "contact.message",
        "contact.ended",
        "contact.abandoned",
        "contact.transferred",
        "bot.turn",
        "appointment.booked",
        "appointment.rescheduled",
        "appointment.cancelled",
        "medications.updated",
        "prescription.routed",
        "prescription.ready",
        "device.readings",
        "note.recorded",
        "survey.completed",
    ];

    fn step() -> impl Strategy<Value = Step> {
        let who = prop_oneof![Just(Who::Mrn), Just(Who::Phone), Just(Who::MrnAndEmail)];
        prop_oneof![
            8 => (0..TYPES.len(), 0u8..3, who, 0i64..14_400, any::<bool>())
                .prop_map(|(t, c, w, m, f)| Step::Event(t, c, w, m, f)),
            2 => (0usize..40).prop_map(Step::Resend),
            1 => Just(Step::Link),
            2 => Just(Step::Passivate),
        ]
    }

    fn fields(ty: &str, contact: &str, flag: bool, n: usize) -> Value {
        let c = contact;
        match ty {
            "contact.started" => {
                json!({"contact_id": c, "intent": "billing", "self_service": flag})
            }
            "contact.message" => {
                json!({"contact_id": c, "from": if flag {"patient"} else {"staff"}, "text": format!("message {n}")})
            }
            "contact.ended" => {
                json!({"contact_id": c, "disposition": "resolved", "agent": "a-1", "summary": format!("summary {n}")})
            }
            "contact.abandoned" => json!({"contact_id": c}),
            "contact.transferred" => json!({"contact_id": c, "to": "billing", "from_agent": "a-1"}),
            "bot.turn" => {
                json!({"contact_id": c, "resolved": flag, "intent": "billing", "patient_text": "help", "bot_text": "ok"})
            }
            "appointment.booked" | "appointment.rescheduled" => {
                json!({"appointment_id": format!("appt-{c}"),
                "starts_at": (chrono::Utc::now() + chrono::Duration::days(if flag {30} else {-30})).to_rfc3339(),
                "department": "cardiology", "reason": format!("reason {n}")})
            }
            "appointment.cancelled" => json!({"appointment_id": format!("appt-{c}")}),
            "medications.updated" => json!({"medications": [{"name": format!("drug {n}")}]}),
            "prescription.routed" | "prescription.ready" => {
                json!({"medication": "insulin", "prescription_id": format!("rx-{c}")})
            }
            "device.readings" => json!({"device": "cgm", "summary": {"mean": n}}),
            "note.recorded" => {
                json!({"author": "rn-1", "text": format!("note {n}"), "contact_id": c})
            }
            _ => json!({"score": n}),
        }
    }

    async fn passivate(app: &TestApp) {
        app.runtime.patients.passivate_all();
        let start = Instant::now();
        while app.runtime.patients.resident().await > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "passivation stuck"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn context_text(app: &TestApp, pid: &str) -> String {
        let res = app
            .client
            .get(format!("{}/v1/patients/{pid}/context", app.address))
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        res.text().await.unwrap()
    }

    /// Runs one journey; Err names how live and refolded differ.
    async fn check(app: &TestApp, case: usize, steps: &[Step]) -> Result<(), String> {
        let mrn = format!("MRN-RF-{case}");
        let phone = format!("+1555{case:07}");
        let email = format!("rf{case}@example.org");
        let base = chrono::Utc::now();
        let mut sent: Vec<Value> = Vec::new();
        for (n, s) in steps.iter().enumerate() {
            let body = match s {
                Step::Event(t, c, who, minutes, flag) => {
                    let patient = match who {
                        Who::Mrn => json!({"mrn": mrn}),
                        Who::Phone => json!({"phone": phone}),
                        Who::MrnAndEmail => json!({"mrn": mrn, "email": email}),
                    };
                    let ty = TYPES[*t];
                    let contact = format!("c-{case}-{c}");
                    let at = base - chrono::Duration::minutes(*minutes);
                    event(ty, "chat", at, patient, fields(ty, &contact, *flag, n))
                }
                Step::Resend(i) if !sent.is_empty() => sent[i % sent.len()].clone(),
                Step::Resend(_) => continue,
                Step::Link => event(
                    "identity.linked",
                    "ehr",
                    base,
                    json!({"mrn": mrn, "phone": phone}),
                    json!({}),
                ),
                Step::Passivate => {
                    passivate(app).await;
                    continue;
                }
            };
            let status = app.post_event(&body).await.status().as_u16();
            if status != 202 && status != 200 {
                return Err(format!("step {n} answered {status}"));
            }
            sent.push(body);
        }
        let mut pids = Vec::new();
        for (kind, value) in [("mrn", &mrn), ("phone", &phone)] {
            let (status, body) = app
                .get(&format!(
                    "/v1/patients?{kind}={}",
                    crate::helpers::urlencode(value)
                ))
                .await;
            if status == 200 {
                pids.push(body["patient_id"].as_str().unwrap().to_string());
            }
        }
        pids.dedup();
        for pid in pids {
            let live = context_text(app, &pid).await;
            passivate(app).await;
            let refolded = context_text(app, &pid).await;
            if live != refolded {
                return Err(format!("live:\n{live}\nrefolded:\n{refolded}"));
            }
        }
        Ok(())
    }

    #[actix_web::test]
    async fn live_application_and_a_refold_of_the_stored_log_serve_the_same_context() {
        let (mut settings, dir) = test_settings(Backend::Sqlite).await;
        let p = &mut settings.patients;
        (p.timeline_limit, p.notes_limit, p.closed_contacts_limit) = (4, 2, 1);
        (p.messages_per_contact_limit, p.device_readings_limit) = (2, 1);
        let app = spawn_app_with(settings, dir).await;
        let journeys = vec(step(), 1..24);
        let mut runner = TestRunner::new(Config {
            cases: 24,
            failure_persistence: None,
            ..Config::default()
        });
        let mut case = 0;
        for _ in 0..24 {
            let mut tree = journeys.new_tree(&mut runner).unwrap();
            case += 1;
            let Err(first) = check(&app, case, &tree.current()).await else {
                continue;
            };
            // Shrink as proptest does: simplify after a failure, complicate after a pass.
            let mut minimal = (tree.current(), first);
            let mut failed = true;
            for _ in 0..200 {
                let moved = if failed {
                    tree.simplify()
                } else {
                    tree.complicate()
                };
                if !moved {
                    break;
                }
                case += 1;
                match check(&app, case, &tree.current()).await {
                    Err(why) => {
                        minimal = (tree.current(), why);
                        failed = true;
                    }
                    Ok(()) => failed = false,
                }
            }
            panic!(
                "live and refolded contexts differ; minimal journey {:?}\n{}",
                minimal.0, minimal.1
            );
        }
    }
}
