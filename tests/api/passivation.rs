//! Passivation: an idle patient actor stops and frees its memory; the next read or
//! event brings it back from the store with exactly the same state, and a patient's
//! events stay in order across it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use frontdoor_actors::event::Envelope;
use frontdoor_actors::ids::PatientId;
use frontdoor_actors::patient::Applied;
use frontdoor_actors::shard::PatientRegistry;
use serde_json::{json, Value};

use crate::helpers::{days_ago, event, spawn_app_with, test_settings, Backend, TestApp};
use crate::on_both_backends;

/// How long a test waits for actors to stop before failing.
const DEADLINE: Duration = Duration::from_secs(15);

/// Polls `resident()` until it equals `n`, failing after [`DEADLINE`].
async fn wait_until_resident(patients: &PatientRegistry, n: usize) {
    let start = Instant::now();
    loop {
        let now = patients.resident().await;
        if now == n {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{now} patient actors still resident after {DEADLINE:?}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Passivates every resident patient and waits until none is left.
async fn passivate_and_wait(app: &TestApp) {
    app.runtime.patients.passivate_all();
    wait_until_resident(&app.runtime.patients, 0).await;
}

/// The context exactly as served: status and the raw body bytes.
async fn context_bytes(app: &TestApp, patient_id: &str) -> String {
    let res = app
        .client
        .get(format!("{}/v1/patients/{patient_id}/context", app.address))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("Failed to GET the context");
    assert_eq!(res.status().as_u16(), 200);
    res.text().await.expect("context body")
}

/// The value of `frontdoor_patients_resident` in a `/metrics` scrape.
async fn resident_gauge(app: &TestApp) -> Option<f64> {
    let body = app
        .client
        .get(format!("{}/metrics", app.address))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("Failed to GET /metrics")
        .text()
        .await
        .expect("metrics body");
    body.lines()
        .find_map(|l| l.strip_prefix("frontdoor_patients_resident "))
        .and_then(|v| v.trim().parse().ok())
}

/// A journey with every patient event type, a provisional caller merged into the
/// patient by `identity.linked`, and events applied live after the merge. Returns
/// the surviving patient id.
async fn store_rich_journey(app: &TestApp) -> String {
    let mrn = json!({"mrn": "MRN-PV-1"});
    let full = json!({"mrn": "MRN-PV-1", "portal_id": "web-pv-1", "email": "pv1@example.org"});
    let ev = |ty: &str, ch: &str, at: DateTime<Utc>, who: &Value, extra: Value| {
        event(ty, ch, at, who.clone(), extra)
    };
    let events = vec![
        ev(
            "appointment.booked",
            "portal",
            days_ago(30, 0),
            &full,
            json!({
            "appointment_id": "appt-1", "starts_at": days_ago(-20, 0).to_rfc3339(),
            "department": "dermatology", "reason": "rash on both forearms",
            "provider": "Dr. Osei", "location": "North Clinic, floor 2"}),
        ),
        ev(
            "appointment.booked",
            "voice",
            days_ago(29, 0),
            &mrn,
            json!({
            "appointment_id": "appt-2", "starts_at": days_ago(-5, 0).to_rfc3339(),
            "department": "endocrinology", "telehealth_url": "https://visit.example.org/r/x1"}),
        ),
        ev(
            "appointment.rescheduled",
            "portal",
            days_ago(28, 0),
            &mrn,
            json!({
            "appointment_id": "appt-2", "starts_at": days_ago(-7, 0).to_rfc3339()}),
        ),
        ev(
            "appointment.booked",
            "portal",
            days_ago(28, 1),
            &mrn,
            json!({
            "appointment_id": "appt-3", "starts_at": days_ago(-9, 0).to_rfc3339(),
            "department": "cardiology"}),
        ),
        ev(
            "appointment.cancelled",
            "sms",
            days_ago(27, 0),
            &mrn,
            json!({"appointment_id": "appt-3"}),
        ),
        ev(
            "medications.updated",
            "ehr",
            days_ago(20, 0),
            &mrn,
            json!({
            "medications": [{"name": "methotrexate", "dose": "15 mg", "frequency": "weekly"},
                            {"name": "folic acid", "dose": "1 mg"}]}),
        ),
        // An older list arriving late must not win, live or refolded.
        ev(
            "medications.updated",
            "ehr",
            days_ago(25, 0),
            &mrn,
            json!({
            "medications": [{"name": "old list"}]}),
        ),
        ev(
            "prescription.routed",
            "ehr",
            days_ago(19, 0),
            &mrn,
            json!({
            "prescription_id": "rx-1", "medication": "insulin glargine", "pharmacy": "Main St Pharmacy"}),
        ),
        ev(
            "prescription.ready",
            "pharmacy",
            days_ago(18, 0),
            &mrn,
            json!({
            "prescription_id": "rx-1", "medication": "insulin glargine"}),
        ),
        ev(
            "prescription.routed",
            "ehr",
            days_ago(18, 2),
            &mrn,
            json!({"medication": "metformin"}),
        ),
        ev(
            "device.readings",
            "device",
            days_ago(17, 0),
            &mrn,
            json!({
            "device": "cgm", "summary": {"mean_glucose_mg_dl": 162, "time_in_range_pct": 61}}),
        ),
        ev(
            "device.readings",
            "device",
            days_ago(10, 0),
            &mrn,
            json!({
            "device": "cgm", "summary": {"mean_glucose_mg_dl": 141, "time_in_range_pct": 72}}),
        ),
        ev(
            "contact.started",
            "chat",
            days_ago(9, 0),
            &full,
            json!({
            "contact_id": "chat-1", "intent": "medication_question", "skill": "nursing"}),
        ),
        ev(
            "contact.message",
            "chat",
            days_ago(9, 0),
            &full,
            json!({
            "contact_id": "chat-1", "from": "patient", "text": "Should I stop methotrexate? «ü» 🙂"}),
        ),
        ev(
            "contact.message",
            "chat",
            days_ago(9, 0),
            &full,
            json!({
            "contact_id": "chat-1", "from": "bot", "text": "Let me find a nurse."}),
        ),
        ev(
            "contact.transferred",
            "chat",
            days_ago(9, 1),
            &full,
            json!({
            "contact_id": "chat-1", "to": "nursing", "from_agent": "bot-1"}),
        ),
        ev(
            "contact.message",
            "chat",
            days_ago(9, 1),
            &full,
            json!({
            "contact_id": "chat-1", "from": "staff", "text": "Keep taking it as prescribed."}),
        ),
        ev(
            "note.recorded",
            "desktop",
            days_ago(9, 1),
            &mrn,
            json!({
            "contact_id": "chat-1", "author": "rn-jlee", "role": "nurse", "text": "Advised to continue."}),
        ),
        ev(
            "contact.ended",
            "chat",
            days_ago(9, 2),
            &full,
            json!({
            "contact_id": "chat-1", "disposition": "answered", "summary": "medication question answered",
            "agent": "rn-jlee"}),
        ),
        ev(
            "survey.completed",
            "portal",
            days_ago(8, 0),
            &full,
            json!({
            "contact_id": "chat-1", "score": 5}),
        ),
        ev(
            "contact.started",
            "iva",
            days_ago(3, 0),
            &mrn,
            json!({"contact_id": "iva-1"}),
        ),
        ev(
            "bot.turn",
            "iva",
            days_ago(3, 0),
            &mrn,
            json!({
            "contact_id": "iva-1", "resolved": false, "intent": "refill",
            "patient_text": "I need a refill", "bot_text": "Which medication?"}),
        ),
        ev(
            "bot.turn",
            "iva",
            days_ago(3, 0),
            &mrn,
            json!({
            "contact_id": "iva-1", "resolved": false, "patient_text": "the insulin"}),
        ),
        ev(
            "contact.transferred",
            "iva",
            days_ago(3, 0),
            &mrn,
            json!({
            "contact_id": "iva-1", "to": "pharmacy"}),
        ),
        ev(
            "contact.started",
            "voice",
            days_ago(2, 0),
            &mrn,
            json!({"contact_id": "call-1"}),
        ),
        ev(
            "contact.abandoned",
            "voice",
            days_ago(2, 0),
            &mrn,
            json!({"contact_id": "call-1"}),
        ),
        ev(
            "note.recorded",
            "desktop",
            days_ago(2, 1),
            &mrn,
            json!({
            "author": "dr-osei", "text": "Review CGM at the visit."}),
        ),
    ];
    for e in &events {
        app.store_event(e).await;
    }
    // An unknown caller (a provisional record), linked to the MRN later: a merge.
    let phone = json!({"phone": "+15550133333"});
    app.store_event(&event(
        "contact.started",
        "sms",
        days_ago(1, 0),
        phone.clone(),
        json!({"contact_id": "sms-1", "intent": "billing"}),
    ))
    .await;
    app.store_event(&event(
        "contact.message",
        "sms",
        days_ago(1, 0),
        phone.clone(),
        json!({"contact_id": "sms-1", "from": "patient", "text": "Question about my bill"}),
    ))
    .await;
    let provisional = app.patient_id("phone", "+15550133333").await;
    app.store_event(&event(
        "identity.linked",
        "ehr",
        days_ago(0, -3),
        json!({"mrn": "MRN-PV-1", "phone": "+15550133333"}),
        json!({}),
    ))
    .await;
    let pid = app.patient_id("mrn", "MRN-PV-1").await;
    assert_ne!(pid, provisional);
    assert_eq!(app.patient_id("phone", "+15550133333").await, pid);
    // Applied live, after the merge rebuilt the actor.
    app.store_event(&event(
        "contact.message",
        "sms",
        days_ago(0, -2),
        phone.clone(),
        json!({"contact_id": "sms-1", "from": "staff", "text": "Billing will call you back."}),
    ))
    .await;
    app.store_event(&event(
        "note.recorded",
        "desktop",
        days_ago(0, -1),
        json!({"mrn": "MRN-PV-1"}),
        json!({"author": "billing-2", "role": "billing", "text": "Callback scheduled."}),
    ))
    .await;
    pid
}

on_both_backends! {
    async fn a_passivated_patient_comes_back_with_the_same_context_byte_for_byte(app: TestApp) {
        let pid = store_rich_journey(&app).await;
        let before = context_bytes(&app, &pid).await;
        let ctx: Value = serde_json::from_str(&before).unwrap();
        assert_eq!(ctx["events_total"], 32);
        assert_eq!(ctx["merged_from"].as_array().unwrap().len(), 1);
        assert!(app.runtime.patients.resident().await >= 1);

        passivate_and_wait(&app).await;
        let after = context_bytes(&app, &pid).await;
        assert_eq!(app.runtime.patients.resident().await, 1, "the read revived exactly one actor");
        assert_eq!(before, after, "revived context differs from the live one");

        // And once more, revived by an event rather than a read.
        passivate_and_wait(&app).await;
        app.store_event(&event("contact.started", "email", days_ago(0, 0), json!({"mrn": "MRN-PV-1"}),
            json!({"contact_id": "mail-1"}))).await;
        let live = context_bytes(&app, &pid).await;
        passivate_and_wait(&app).await;
        assert_eq!(live, context_bytes(&app, &pid).await);
    }

    async fn events_for_one_patient_stay_in_order_across_passivations(app: TestApp) {
        let who = json!({"mrn": "MRN-ORDER-1"});
        let start = days_ago(1, 0);
        app.store_event(&event("contact.started", "chat", start, who.clone(),
            json!({"contact_id": "chat-o"}))).await;
        let pid = app.patient_id("mrn", "MRN-ORDER-1").await;

        // Another task passivates every resident patient, over and over.
        let stop = Arc::new(AtomicBool::new(false));
        let passivator = {
            let (patients, stop) = (app.runtime.patients.clone(), stop.clone());
            actix_rt::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    patients.passivate_all();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        const N: usize = 60;
        for i in 0..N {
            let at = start + chrono::Duration::seconds(i as i64 + 1);
            app.store_event(&event("contact.message", "chat", at, who.clone(), json!({
                "contact_id": "chat-o", "from": "patient", "text": format!("message {i}")}))).await;
            if i % 10 == 9 {
                // A deterministic passivation between sends as well.
                passivate_and_wait(&app).await;
            }
        }
        stop.store(true, Ordering::Relaxed);
        passivator.await.unwrap();

        let ctx = app.context(&pid).await;
        assert_eq!(ctx["events_total"], (N + 1) as u64);
        assert_eq!(app.store.count_events(None).await.unwrap(), (N + 1) as i64);
        let texts: Vec<String> = ctx["open_contacts"][0]["messages"].as_array().unwrap().iter()
            .map(|m| m["text"].as_str().unwrap().to_string()).collect();
        let sent: Vec<String> = (0..N).map(|i| format!("message {i}")).collect();
        assert_eq!(texts, sent);
        let summaries: Vec<String> = ctx["timeline"].as_array().unwrap().iter().rev().skip(1)
            .map(|t| t["summary"].as_str().unwrap().to_string()).collect();
        let expected: Vec<String> = sent.iter().map(|t| format!("Patient: {t}")).collect();
        assert_eq!(summaries, expected);
    }

    async fn pipelined_events_stay_in_arrival_order_while_the_patient_is_passivated(app: TestApp) {
        let start = days_ago(1, 0);
        app.store_event(&event("contact.started", "chat", start, json!({"mrn": "MRN-ORDER-2"}),
            json!({"contact_id": "chat-p"}))).await;
        let pid = PatientId::parse(&app.patient_id("mrn", "MRN-ORDER-2").await).unwrap();
        let passivations = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let passivator = {
            let (patients, stop, n) = (app.runtime.patients.clone(), stop.clone(), passivations.clone());
            actix_rt::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    patients.passivate_all();
                    n.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        // Batches of events in flight at once (fewer than a mailbox holds, so each is
        // queued when issued), a passivation requested between batches.
        const BATCHES: usize = 12;
        const PER_BATCH: usize = 8;
        let mut sent = Vec::new();
        for b in 0..BATCHES {
            let mut batch = Vec::new();
            for k in 0..PER_BATCH {
                let i = b * PER_BATCH + k;
                // Occurrence times run backwards: order must come from arrival, not the clock.
                let at = start + chrono::Duration::seconds(10_000 - i as i64);
                let text = format!("pipelined {i}");
                let body = event("contact.message", "chat", at, json!({"mrn": "MRN-ORDER-2"}),
                    json!({"contact_id": "chat-p", "from": "patient", "text": text.clone()}));
                let env = Envelope::parse(body.to_string().as_bytes(), 1 << 16).unwrap();
                batch.push(app.runtime.patients.apply(pid, Arc::new(env), Vec::new()));
                sent.push(text);
            }
            for res in futures_util::future::join_all(batch).await {
                assert!(matches!(res, Ok(Applied::Stored { .. })), "{res:?}");
            }
            app.runtime.patients.passivate_all();
        }
        stop.store(true, Ordering::Relaxed);
        passivator.await.unwrap();
        assert!(passivations.load(Ordering::Relaxed) > 0);

        let ctx = app.context(&pid.to_string()).await;
        assert_eq!(ctx["events_total"], (BATCHES * PER_BATCH + 1) as u64);
        let texts: Vec<String> = ctx["open_contacts"][0]["messages"].as_array().unwrap().iter()
            .map(|m| m["text"].as_str().unwrap().to_string()).collect();
        assert_eq!(texts, sent);
        // The same order after one more passivation: it is the store's order too.
        let live = context_bytes(&app, &pid.to_string()).await;
        passivate_and_wait(&app).await;
        assert_eq!(live, context_bytes(&app, &pid.to_string()).await);
    }

    async fn resident_patient_actors_are_a_metric(app: TestApp) {
        for i in 0..3 {
            app.store_event(&event("contact.started", "voice", days_ago(0, 0),
                json!({"mrn": format!("MRN-RES-{i}")}), json!({"contact_id": format!("call-r{i}")}))).await;
        }
        assert_eq!(app.runtime.patients.resident().await, 3);
        // Other tests' applications share the process-wide recorder: poll until this
        // application's scrape shows its own count.
        wait_for_gauge(&app, 3.0).await;
        passivate_and_wait(&app).await;
        wait_for_gauge(&app, 0.0).await;
    }
}

/// Scrapes `/metrics` until the resident gauge shows `want`, failing after [`DEADLINE`].
async fn wait_for_gauge(app: &TestApp, want: f64) {
    let start = Instant::now();
    loop {
        let got = resident_gauge(app).await;
        if got == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "frontdoor_patients_resident is {got:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_web::test]
async fn an_idle_patient_passivates_by_itself_and_comes_back_with_the_same_context() {
    let (mut settings, dir) = test_settings(Backend::Sqlite).await;
    settings.patients.idle_timeout_secs = 1;
    let app = spawn_app_with(settings, dir).await;
    let pid = store_rich_journey(&app).await;
    let before = context_bytes(&app, &pid).await;
    // No passivation requested: the idle timer alone stops every actor.
    wait_until_resident(&app.runtime.patients, 0).await;
    let after = context_bytes(&app, &pid).await;
    assert_eq!(before, after);
    assert_eq!(app.runtime.patients.resident().await, 1);
}
