//! The virtual agent and the waiting patient: self-service answers for an open bot
//! contact (audited, refused without one), the hand-off protocol (`bot.release` with
//! the wait), red flags (escalated within the event that carried them), wait
//! announcements and queued callbacks. Timers run on the manual clock.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    days_ago, event, spawn_app, spawn_app_with, test_settings, token_for, Backend, TestApp,
};

const BOT: &str = "iva-north";

async fn agent(app: &TestApp, id: &str, skills: Value, capacity: Value) {
    let mut e = event(
        "agent.state",
        "desktop",
        days_ago(0, 0),
        Value::Null,
        json!({"agent_id": id, "state": "available", "skills": skills, "capacity": capacity}),
    );
    e.as_object_mut().unwrap().remove("patient");
    assert_eq!(
        app.post_event(&e).await.status().as_u16(),
        202,
        "agent {id}"
    );
}

async fn desktop(app: &TestApp, ty: &str, agent_id: &str, contact_id: &str, extra: Value) -> u16 {
    let mut fields = json!({"agent_id": agent_id, "contact_id": contact_id});
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    let mut e = event(ty, "voice", days_ago(0, 0), Value::Null, fields);
    e.as_object_mut().unwrap().remove("patient");
    app.post_event(&e).await.status().as_u16()
}

async fn start(app: &TestApp, patient: Value, channel: &str, contact: &str, extra: Value) {
    let mut fields = json!({"contact_id": contact});
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    app.store_event(&event(
        "contact.started",
        channel,
        days_ago(0, 0),
        patient,
        fields,
    ))
    .await;
}

/// Pending commands of a type, as JSON, oldest first.
async fn commands(app: &TestApp, ty: &str) -> Vec<Value> {
    app.store
        .pending_commands(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.command_type == ty)
        .map(|c| serde_json::from_str(&c.body).unwrap())
        .collect()
}

async fn for_contact(app: &TestApp, ty: &str, contact: &str) -> Vec<Value> {
    commands(app, ty)
        .await
        .into_iter()
        .filter(|c| c["contact_id"] == contact)
        .collect()
}

async fn routed(app: &TestApp, contact: &str) -> Value {
    let (status, body) = app.get(&format!("/v1/contacts/{contact}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn bot_post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let res = app
        .request(
            Method::POST,
            path,
            Some(&token_for(BOT)),
            &[],
            Some(body.to_string()),
        )
        .await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn ask(app: &TestApp, contact: &str, intent: &str) -> (u16, Value) {
    bot_post(
        app,
        &format!("/v1/bot/contacts/{contact}/answer"),
        json!({"intent": intent}),
    )
    .await
}

/// The bot turns recorded in a contact, from the patient's context.
async fn turns(app: &TestApp, mrn: &str, contact: &str) -> Vec<Value> {
    let pid = app.patient_id("mrn", mrn).await;
    let ctx = app.context(&pid).await;
    ctx["open_contacts"]
        .as_array()
        .unwrap()
        .iter()
        .chain(ctx["recent_contacts"].as_array().unwrap())
        .find(|c| c["id"] == contact)
        .map(|c| c["bot_turns"].as_array().unwrap().clone())
        .unwrap_or_default()
}

#[actix_web::test]
async fn each_routine_intent_is_answered_from_the_journey_audited_and_recorded_as_a_turn() {
    let app = spawn_app(Backend::Sqlite).await;
    let p = json!({"mrn": "MRN-IVA-1", "phone": "+15550104401"});
    let starts = days_ago(-2, 0);
    app.store_event(&event(
        "appointment.booked",
        "ehr",
        days_ago(1, 0),
        p.clone(),
        json!({"appointment_id": "appt-9", "starts_at": starts.to_rfc3339(),
               "department": "dermatology", "location": "North Clinic, floor 2",
               "reason": "rash on both forearms", "provider": "Dr. Lee"}),
    ))
    .await;
    app.store_event(&event(
        "prescription.ready",
        "pharmacy",
        days_ago(0, -1),
        p.clone(),
        json!({"medication": "amoxicillin 500 mg", "pharmacy": "Main St Pharmacy"}),
    ))
    .await;
    start(
        &app,
        p.clone(),
        "iva",
        "iva-1",
        json!({"intent": "scheduling"}),
    )
    .await;

    let (status, a) = ask(&app, "iva-1", "appointment.next").await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["resolved"], true);
    assert_eq!(a["appointment_id"], "appt-9");
    assert_eq!(a["department"], "dermatology");
    assert_eq!(a["location"], "North Clinic, floor 2");
    assert_eq!(a["starts_at"], starts.to_rfc3339());
    assert_eq!(a["actions"], json!(["confirm", "cancel", "reschedule"]));
    // Minimum necessary: not the reason for the visit, not the provider.
    assert!(
        a.get("reason").is_none() && a.get("provider").is_none(),
        "{a}"
    );
    assert!(!a.to_string().contains("rash"), "{a}");

    // Local time from the site directory (north: America/Chicago in config/base.toml).
    let tz: chrono_tz::Tz = "America/Chicago".parse().unwrap();
    let local = starts.with_timezone(&tz);
    assert_eq!(a["time"], local.format("%H:%M").to_string());
    assert_eq!(a["time_zone"], local.format("%Z").to_string());
    assert!(
        a["text"]
            .as_str()
            .unwrap()
            .contains(&local.format("%H:%M %Z").to_string()),
        "{a}"
    );

    let (status, d) = ask(&app, "iva-1", "directions").await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["resolved"], true);
    assert_eq!(d["name"], "North Clinic");
    assert!(d["address"].as_str().unwrap().contains("Lakeshore"), "{d}");
    assert!(
        d["directions"].as_str().unwrap().contains("garage B"),
        "{d}"
    );
    assert_eq!(d["hours"]["mon"], json!(["08:00-17:00"]));
    assert!(d["phone"].is_string() && d["open_now"].is_boolean());

    let (status, r) = ask(&app, "iva-1", "refill.status").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["resolved"], true);
    assert_eq!(r["prescriptions"][0]["medication"], "amoxicillin 500 mg");
    assert_eq!(r["prescriptions"][0]["status"], "ready");
    assert!(r["text"].as_str().unwrap().contains("ready for pickup"));

    // Confirm the appointment: an event in the journey and a request to scheduling.
    let (status, c) = bot_post(
        &app,
        "/v1/bot/contacts/iva-1/appointment",
        json!({"appointment_id": "appt-9", "action": "confirm"}),
    )
    .await;
    assert_eq!(status, 202, "{c}");
    let req = commands(&app, "appointment.request").await;
    assert_eq!(req.len(), 1, "{req:?}");
    assert_eq!(
        (
            req[0]["appointment_id"].as_str(),
            req[0]["action"].as_str(),
            req[0]["channel"].as_str()
        ),
        (Some("appt-9"), Some("confirm"), Some("ehr"))
    );

    let t = turns(&app, "MRN-IVA-1", "iva-1").await;
    let intents: Vec<(&str, bool)> = t
        .iter()
        .map(|t| {
            (
                t["intent"].as_str().unwrap(),
                t["resolved"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        intents,
        vec![
            ("appointment.next", true),
            ("directions", true),
            ("refill.status", true),
            ("appointment.confirm", true)
        ]
    );
    // Audited like any read of patient data: who, which patient, why, what intent.
    let pid = app.patient_id("mrn", "MRN-IVA-1").await;
    let (_, audit) = app
        .get(&format!("/v1/audit?principal={BOT}&patient={pid}"))
        .await;
    let records = audit["records"].as_array().unwrap();
    let details: Vec<&str> = records
        .iter()
        .filter_map(|r| r["detail"].as_str())
        .collect();
    assert!(
        details.contains(&"bot intent appointment.next"),
        "{records:?}"
    );
    assert!(details.contains(&"bot intent refill.status"), "{records:?}");
    assert!(details.contains(&"bot intent directions"), "{records:?}");
    for r in records {
        assert_eq!(r["principal_role"], "bot");
        assert_eq!(r["purpose"], "treatment");
    }

    // Billing goes to people: the bot is released, the contact queued for billing.
    let (status, b) = ask(&app, "iva-1", "billing").await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(
        (b["resolved"].as_bool(), b["handed_over"].as_bool()),
        (Some(false), Some(true))
    );
    let c = routed(&app, "iva-1").await;
    assert_eq!(
        (c["state"].as_str(), c["skill"].as_str()),
        (Some("queued"), Some("billing"))
    );
    let release = for_contact(&app, "bot.release", "iva-1").await;
    assert_eq!(release.len(), 1, "{release:?}");
    assert_eq!(release[0]["reason"], "intent");
    assert_eq!(release[0]["channel"], "iva");
}

#[actix_web::test]
async fn the_bot_is_refused_without_an_open_bot_contact_and_an_unknown_intent_is_named_and_handed_over(
) {
    let app = spawn_app(Backend::Sqlite).await;
    let p = json!({"mrn": "MRN-IVA-2"});
    // No such contact.
    assert_eq!(ask(&app, "nobody", "appointment.next").await.0, 403);
    // A voice call is not a bot contact.
    start(
        &app,
        p.clone(),
        "voice",
        "call-2",
        json!({"skill": "scheduling"}),
    )
    .await;
    assert_eq!(ask(&app, "call-2", "appointment.next").await.0, 403);
    // An ended chat is not open.
    start(
        &app,
        p.clone(),
        "chat",
        "chat-2",
        json!({"self_service": true}),
    )
    .await;
    app.store_event(&event(
        "contact.ended",
        "chat",
        days_ago(0, 0),
        p.clone(),
        json!({"contact_id": "chat-2"}),
    ))
    .await;
    let (status, body) = ask(&app, "chat-2", "appointment.next").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        turns(&app, "MRN-IVA-2", "chat-2").await.is_empty(),
        "nothing recorded"
    );
    // Other roles may not use it at all (adapters still get 403 on patient data).
    let res = app
        .request(
            Method::POST,
            "/v1/bot/contacts/chat-2/answer",
            Some(&token_for("north-adapter")),
            &[],
            Some(json!({"intent": "directions"}).to_string()),
        )
        .await;
    assert_eq!(res.status().as_u16(), 403);
    // Refusals are audited.
    let (_, audit) = app.get(&format!("/v1/audit?principal={BOT}")).await;
    let denied = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "denied")
        .count();
    assert_eq!(denied, 3, "{audit}");

    // An intent it does not know: 422 naming it, and the bot hands over.
    start(
        &app,
        p.clone(),
        "sms",
        "sms-2",
        json!({"self_service": true}),
    )
    .await;
    let (status, body) = ask(&app, "sms-2", "pet.insurance").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "intent");
    assert!(
        body["detail"].as_str().unwrap().contains("'pet.insurance'"),
        "{body}"
    );
    assert_eq!(routed(&app, "sms-2").await["state"], "queued");
    let release = for_contact(&app, "bot.release", "sms-2").await;
    assert_eq!(release.len(), 1);
    assert_eq!(release[0]["channel"], "sms");
}

#[actix_web::test]
async fn a_bot_failing_twice_is_released_with_the_wait_and_queue_position() {
    let app = spawn_app(Backend::Sqlite).await;
    // One nurse, busy with another chat: the hand-off waits, with an estimate.
    agent(&app, "rn-1", json!({"nurse_advice": 3}), json!({"chat": 1})).await;
    start(
        &app,
        json!({"mrn": "MRN-BUSY"}),
        "chat",
        "busy-chat",
        json!({"skill": "nurse_advice"}),
    )
    .await;
    assert_eq!(routed(&app, "busy-chat").await["state"], "offered");

    let p = json!({"mrn": "MRN-IVA-3"});
    start(
        &app,
        p.clone(),
        "iva",
        "iva-3",
        json!({"intent": "medication_question"}),
    )
    .await;
    for n in 0..2 {
        app.store_event(&event(
            "bot.turn",
            "iva",
            days_ago(0, 0),
            p.clone(),
            json!({"contact_id": "iva-3", "resolved": false, "intent": "medication_question",
                   "patient_text": format!("question {n}")}),
        ))
        .await;
        let released = for_contact(&app, "bot.release", "iva-3").await.len();
        assert_eq!(released, n, "released only after the second failure");
    }
    let release = for_contact(&app, "bot.release", "iva-3").await;
    assert_eq!(release.len(), 1);
    let r = &release[0];
    assert_eq!(
        r["channel"], "iva",
        "to the bot, not the agent's chat capacity"
    );
    assert_eq!(r["reason"], "unresolved");
    assert_eq!(r["queue_position"], 1);
    assert_eq!(r["estimate_known"], true);
    assert_eq!(
        r["estimated_wait_secs"], 300,
        "1 ahead x default AHT 300 s / 1 agent"
    );
    assert!(
        r["text"].as_str().unwrap().contains("about 5 minutes"),
        "{r}"
    );
    let c = routed(&app, "iva-3").await;
    assert_eq!(c["handoff"], "unresolved");
    assert_eq!(c["state"], "queued");

    // Counted per intent (other tests share the process's counters: presence only).
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"frontdoor_bot_intents_total{intent="medication_question",outcome="handed_off",reason="unresolved"}"#),
        "{}",
        metrics.lines().filter(|l| l.contains("bot_intents")).collect::<Vec<_>>().join("\n")
    );
}

#[actix_web::test]
async fn a_patient_asking_the_bot_for_a_person_is_released_at_once() {
    let app = spawn_app(Backend::Sqlite).await;
    let p = json!({"mrn": "MRN-IVA-4"});
    start(
        &app,
        p.clone(),
        "iva",
        "iva-4",
        json!({"intent": "scheduling"}),
    )
    .await;
    app.store_event(&event(
        "bot.turn",
        "iva",
        days_ago(0, 0),
        p.clone(),
        json!({"contact_id": "iva-4", "resolved": true, "patient_text": "Can I talk to someone?"}),
    ))
    .await;
    let release = for_contact(&app, "bot.release", "iva-4").await;
    assert_eq!(release.len(), 1);
    assert_eq!(release[0]["reason"], "asked_for_person");
    // Nobody staffed: the release says the wait is unknown rather than guessing.
    assert_eq!(release[0]["estimate_known"], false);
    assert!(release[0]["estimated_wait_secs"].is_null());
    assert!(release[0]["text"]
        .as_str()
        .unwrap()
        .contains("cannot estimate"));
}

#[actix_web::test]
async fn a_red_flag_phrase_in_the_first_message_escalates_within_that_event() {
    let app = spawn_app(Backend::Sqlite).await;
    let p = json!({"mrn": "MRN-RF-1"});
    start(
        &app,
        p.clone(),
        "chat",
        "rf-chat",
        json!({"self_service": true, "intent": "billing"}),
    )
    .await;
    let msg = event(
        "contact.message",
        "chat",
        days_ago(0, 0),
        p.clone(),
        json!({"contact_id": "rf-chat", "from": "patient", "text": "I have CHEST PAIN and my left arm hurts!!"}),
    );
    let id = msg["id"].as_str().unwrap().to_string();
    let res = app.post_event(&msg).await;
    assert_eq!(res.status().as_u16(), 202);
    // By the time the event is acknowledged, both commands are written, caused by it.
    let esc = for_contact(&app, "escalation.raised", "rf-chat").await;
    assert_eq!(esc.len(), 1, "{esc:?}");
    assert_eq!(esc[0]["caused_by"], id);
    assert_eq!(esc[0]["level"], "emergency");
    assert_eq!(esc[0]["signals"][0]["signal"], "red_flag");
    assert!(
        !esc[0].to_string().contains("CHEST"),
        "no patient words in the page"
    );
    let instruct = for_contact(&app, "bot.instruct", "rf-chat").await;
    assert_eq!(instruct.len(), 1);
    assert_eq!(instruct[0]["caused_by"], id);
    assert_eq!(instruct[0]["channel"], "chat");
    assert!(instruct[0]["text"].as_str().unwrap().contains("911"));
    let c = routed(&app, "rf-chat").await;
    assert_eq!(
        (c["level"].as_str(), c["skill"].as_str()),
        (Some("emergency"), Some("nurse_advice"))
    );
    assert_eq!(c["state"], "queued");
    // Another alarming message changes nothing more: one page per emergency.
    app.store_event(&event(
        "contact.message",
        "chat",
        days_ago(0, 0),
        p.clone(),
        json!({"contact_id": "rf-chat", "from": "patient", "text": "chest pain still"}),
    ))
    .await;
    assert_eq!(
        for_contact(&app, "escalation.raised", "rf-chat")
            .await
            .len(),
        1
    );

    // A 988 phrase in a call already with an agent: it stays with the agent, paged.
    agent(&app, "ag-1", json!({"scheduling": 3}), json!({"voice": 1})).await;
    let q = json!({"mrn": "MRN-RF-2"});
    start(
        &app,
        q.clone(),
        "voice",
        "rf-call",
        json!({"skill": "scheduling"}),
    )
    .await;
    assert_eq!(
        desktop(&app, "offer.accepted", "ag-1", "rf-call", json!({})).await,
        202
    );
    app.store_event(&event(
        "contact.message",
        "voice",
        days_ago(0, 0),
        q,
        json!({"contact_id": "rf-call", "from": "patient", "text": "honestly I want to die"}),
    ))
    .await;
    let c = routed(&app, "rf-call").await;
    assert_eq!(
        (
            c["state"].as_str(),
            c["assigned_agent"].as_str(),
            c["level"].as_str()
        ),
        (Some("assigned"), Some("ag-1"), Some("emergency"))
    );
    let i = for_contact(&app, "bot.instruct", "rf-call").await;
    assert!(i[0]["text"].as_str().unwrap().contains("988"));
    assert_eq!(
        for_contact(&app, "escalation.raised", "rf-call")
            .await
            .len(),
        1
    );
    assert!(app
        .metrics()
        .await
        .contains(r#"frontdoor_red_flags_total{category="suicidal"}"#));
}

#[actix_web::test]
async fn announcements_repeat_at_the_interval_and_stop_when_the_contact_is_offered() {
    let app = announcing_app().await;
    // Offers wait long enough for an announcement to fall due while offered.
    let (status, _) = app
        .put(
            "/v1/runtime/config",
            &json!({"routing": {"offer_timeout_secs": 600}}),
        )
        .await;
    assert_eq!(status, 200);
    start(
        &app,
        json!({"mrn": "MRN-ANN"}),
        "voice",
        "ann-call",
        json!({"skill": "scheduling"}),
    )
    .await;
    // On queue entry, nobody staffed: position 1, the wait is unknown and said so.
    let a = for_contact(&app, "queue.announce", "ann-call").await;
    assert_eq!(a.len(), 1);
    assert_eq!(
        (
            a[0]["queue_position"].as_u64(),
            a[0]["estimate_known"].as_bool()
        ),
        (Some(1), Some(false))
    );
    assert!(a[0]["text"].as_str().unwrap().contains("cannot estimate"));
    assert_eq!(a[0]["channel"], "voice");
    app.advance(30).await;
    assert_eq!(
        for_contact(&app, "queue.announce", "ann-call").await.len(),
        1,
        "not before the interval"
    );
    app.advance(30).await;
    assert_eq!(
        for_contact(&app, "queue.announce", "ann-call").await.len(),
        2
    );
    app.advance(60).await;
    assert_eq!(
        for_contact(&app, "queue.announce", "ann-call").await.len(),
        3
    );
    // Offered: announcements stop.
    agent(
        &app,
        "ag-ann",
        json!({"scheduling": 3}),
        json!({"voice": 1}),
    )
    .await;
    assert_eq!(routed(&app, "ann-call").await["state"], "offered");
    app.advance(60).await; // the next one is due now: an offered contact hears none
    app.advance(60).await;
    assert_eq!(routed(&app, "ann-call").await["state"], "offered");
    assert_eq!(
        for_contact(&app, "queue.announce", "ann-call").await.len(),
        3
    );
    assert_eq!(
        desktop(&app, "offer.accepted", "ag-ann", "ann-call", json!({})).await,
        202
    );
    app.advance(60).await;
    assert_eq!(
        for_contact(&app, "queue.announce", "ann-call").await.len(),
        3
    );

    // A channel switched off hears nothing.
    let patch = json!({"routing": {"announce": {"channels": ["sms", "chat", "iva"]}}});
    let (status, body) = app.put("/v1/runtime/config", &patch).await;
    assert_eq!(status, 200, "{body}");
    start(
        &app,
        json!({"mrn": "MRN-ANN-2"}),
        "voice",
        "quiet-call",
        json!({"skill": "billing"}),
    )
    .await;
    app.advance(120).await;
    assert!(for_contact(&app, "queue.announce", "quiet-call")
        .await
        .is_empty());
}

#[actix_web::test]
async fn a_callback_keeps_its_place_dials_when_an_agent_takes_it_and_closes_after_the_retries() {
    let app = announcing_app().await;
    start(
        &app,
        json!({"mrn": "MRN-CB-1"}),
        "voice",
        "cb-first",
        json!({"skill": "scheduling"}),
    )
    .await;
    app.advance(10).await;
    start(
        &app,
        json!({"mrn": "MRN-CB-2"}),
        "voice",
        "cb-second",
        json!({"skill": "scheduling"}),
    )
    .await;
    let (status, body) = app.post("/v1/contacts/cb-first/callback", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["callback"]["attempts"], 0);
    // Not waiting (a chat, an unknown contact): 409.
    start(
        &app,
        json!({"mrn": "MRN-CB-3"}),
        "chat",
        "cb-chat",
        json!({"skill": "scheduling"}),
    )
    .await;
    let (status, body) = app.post("/v1/contacts/cb-chat/callback", &json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "urn:frontdoor:problem:conflict");
    assert_eq!(
        app.post("/v1/contacts/nobody/callback", &json!({})).await.0,
        409
    );

    // An agent: the callback, first in line, is offered first (it kept its place).
    agent(&app, "ag-cb", json!({"scheduling": 3}), json!({"voice": 1})).await;
    let c = routed(&app, "cb-first").await;
    assert_eq!(
        (c["state"].as_str(), c["offered_to"].as_str()),
        (Some("offered"), Some("ag-cb"))
    );
    assert_eq!(routed(&app, "cb-second").await["state"], "queued");
    // No announcements to someone who hung up for a callback.
    let before = for_contact(&app, "queue.announce", "cb-first").await.len();
    assert_eq!(
        desktop(&app, "offer.accepted", "ag-cb", "cb-first", json!({})).await,
        202
    );
    let dial = for_contact(&app, "callback.dial", "cb-first").await;
    assert_eq!(dial.len(), 1);
    assert_eq!(
        (dial[0]["agent_id"].as_str(), dial[0]["attempt"].as_u64()),
        (Some("ag-cb"), Some(1))
    );
    assert!(
        for_contact(&app, "contact.route", "cb-first")
            .await
            .is_empty(),
        "dialled, not routed"
    );
    // A second request for the assigned contact: 409.
    assert_eq!(
        app.post("/v1/contacts/cb-first/callback", &json!({}))
            .await
            .0,
        409
    );

    // No answer: retried after the policy's delay, then closed after the last attempt.
    for attempt in 1..=3u64 {
        let status = desktop(
            &app,
            "callback.result",
            "ag-cb",
            "cb-first",
            json!({"answered": false}),
        )
        .await;
        assert_eq!(status, 202, "attempt {attempt}");
        if attempt == 3 {
            break;
        }
        // The agent is free but the callback waits out the retry delay: the next caller is offered.
        let c = routed(&app, "cb-first").await;
        assert_eq!(c["state"], "queued", "{c}");
        if attempt == 1 {
            assert_eq!(routed(&app, "cb-second").await["state"], "offered");
            assert_eq!(
                desktop(&app, "offer.declined", "ag-cb", "cb-second", json!({})).await,
                202
            );
        }
        app.advance(121).await;
        let c = routed(&app, "cb-first").await;
        assert_eq!(c["state"], "offered", "{c}");
        assert_eq!(
            desktop(&app, "offer.accepted", "ag-cb", "cb-first", json!({})).await,
            202
        );
        assert_eq!(
            for_contact(&app, "callback.dial", "cb-first").await.len() as u64,
            attempt + 1
        );
    }
    let c = routed(&app, "cb-first").await;
    assert_eq!(c["state"], "ended");
    let rules: Vec<&str> = c["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules.last(), Some(&"callback_failed"), "{rules:?}");
    assert_eq!(
        for_contact(&app, "queue.announce", "cb-first").await.len(),
        before
    );
    let metrics = app.metrics().await;
    assert!(!metrics.contains(r#"frontdoor_callbacks_total{outcome="failed"} 0"#));
    assert!(!metrics.contains(r#"frontdoor_callbacks_total{outcome="dialed"} 0"#));
}

/// An app with the default wait announcements (voice, SMS, chat, IVA).
async fn announcing_app() -> TestApp {
    let (mut settings, dir) = test_settings(Backend::Sqlite).await;
    settings.routing.announce = Default::default();
    spawn_app_with(settings, dir).await
}

/// Settings with after-hours routing on and site north (Chicago) open only on
/// `open_days` (all day), closed on `holidays`.
async fn after_hours_app(open_days: &[&str], holidays: &[String]) -> TestApp {
    let (mut settings, dir) = test_settings(Backend::Sqlite).await;
    settings.routing.after_hours.enabled = true;
    let north = settings.sites.entry("north".into()).or_default();
    north.time_zone = "America/Chicago".into();
    north.hours = open_days
        .iter()
        .map(|d| (d.to_string(), vec!["00:00-23:59".to_string()]))
        .collect();
    north.holidays = holidays.to_vec();
    spawn_app_with(settings, dir).await
}

/// Today's and tomorrow's weekday keys and dates in Chicago.
fn chicago_days() -> (String, String, String) {
    use chrono::Datelike;
    let tz: chrono_tz::Tz = "America/Chicago".parse().unwrap();
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    let key = |d: chrono::NaiveDate| d.weekday().to_string().to_lowercase()[..3].to_string();
    (
        key(today),
        key(today.succ_opt().unwrap()),
        today.to_string(),
    )
}

#[actix_web::test]
async fn after_hours_clinical_goes_on_call_scheduling_is_offered_the_virtual_agent_or_a_callback_and_the_rest_waits(
) {
    // Open tomorrow only: closed now, whatever the time of day the test runs.
    let (_, tomorrow, _) = chicago_days();
    let app = after_hours_app(&[tomorrow.as_str()], &[]).await;
    agent(
        &app,
        "rn-oncall",
        json!({"nurse_on_call": 4}),
        json!({"chat": 2, "voice": 1}),
    )
    .await;

    start(
        &app,
        json!({"mrn": "MRN-AH-1"}),
        "chat",
        "ah-clinical",
        json!({"skill": "nurse_advice"}),
    )
    .await;
    let c = routed(&app, "ah-clinical").await;
    assert_eq!(c["skill"], "nurse_on_call", "{c}");
    assert_eq!(
        (c["state"].as_str(), c["offered_to"].as_str()),
        (Some("offered"), Some("rn-oncall"))
    );
    assert!(
        !c["cross_site"].as_bool().unwrap(),
        "clinical on-call stays within licensure"
    );
    let r = c["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "after_hours")
        .unwrap()
        .clone();
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("nurse_advice is closed until"),
        "{r}"
    );

    start(
        &app,
        json!({"mrn": "MRN-AH-2"}),
        "voice",
        "ah-sched",
        json!({"skill": "scheduling"}),
    )
    .await;
    let c = routed(&app, "ah-sched").await;
    assert_eq!(
        (c["state"].as_str(), c["skill"].as_str()),
        (Some("queued"), Some("scheduling"))
    );
    let offer = for_contact(&app, "after_hours.offer", "ah-sched").await;
    assert_eq!(offer.len(), 1);
    assert_eq!(offer[0]["options"], json!(["virtual_agent", "callback"]));
    assert_eq!(offer[0]["channel"], "voice");
    assert!(
        offer[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("We are closed until"),
        "{}",
        offer[0]
    );
    assert!(offer[0]["opens_at"].is_string());
    // The callback it was offered: it keeps its place until an agent takes it.
    assert_eq!(
        app.post("/v1/contacts/ah-sched/callback", &json!({}))
            .await
            .0,
        200
    );

    start(
        &app,
        json!({"mrn": "MRN-AH-3"}),
        "chat",
        "ah-other",
        json!({"skill": "general"}),
    )
    .await;
    let c = routed(&app, "ah-other").await;
    assert_eq!(c["state"], "queued");
    let r = c["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "after_hours")
        .unwrap()
        .clone();
    assert_eq!(r["effect"], "waits for opening, keeping its place");
    assert!(for_contact(&app, "after_hours.offer", "ah-other")
        .await
        .is_empty());

    // An emergency is not held for opening: red flags go on call at once.
    let q = json!({"mrn": "MRN-AH-4"});
    start(
        &app,
        q.clone(),
        "chat",
        "ah-rf",
        json!({"skill": "billing"}),
    )
    .await;
    app.store_event(&event(
        "contact.message",
        "chat",
        days_ago(0, 0),
        q,
        json!({"contact_id": "ah-rf", "from": "patient", "text": "I can't breathe"}),
    ))
    .await;
    let c = routed(&app, "ah-rf").await;
    assert_eq!(
        (c["skill"].as_str(), c["level"].as_str()),
        (Some("nurse_on_call"), Some("emergency")),
        "{c}"
    );

    // GET /v1/queues: closed, with the next opening.
    let (_, q) = app.get("/v1/queues").await;
    let sched = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["site"] == "north" && q["skill"] == "scheduling")
        .unwrap()
        .clone();
    assert_eq!(
        (sched["open"].as_bool(), sched["hours_from"].as_str()),
        (Some(false), Some("site"))
    );
    assert!(sched["next_opening"].is_string(), "{sched}");
}

#[actix_web::test]
async fn a_holiday_closes_a_queue() {
    let every_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let (_, _, today) = chicago_days();
    let app = after_hours_app(&every_day, std::slice::from_ref(&today)).await;
    agent(
        &app,
        "sched-1",
        json!({"scheduling": 3}),
        json!({"chat": 0}),
    )
    .await;
    let (_, q) = app.get("/v1/queues").await;
    let sched = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["site"] == "north" && q["skill"] == "scheduling")
        .unwrap()
        .clone();
    assert_eq!(sched["open"], false, "{sched}");
    // It opens at local midnight after the holiday.
    let opens =
        chrono::DateTime::parse_from_rfc3339(sched["next_opening"].as_str().unwrap()).unwrap();
    let tz: chrono_tz::Tz = "America/Chicago".parse().unwrap();
    let local = opens.with_timezone(&tz);
    assert_eq!(local.date_naive().to_string(), chicago_days_after(&today));
    assert_eq!(local.format("%H:%M").to_string(), "00:00");
    start(
        &app,
        json!({"mrn": "MRN-HOL"}),
        "chat",
        "hol-chat",
        json!({"skill": "general"}),
    )
    .await;
    let c = routed(&app, "hol-chat").await;
    assert!(
        c["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "after_hours"),
        "{c}"
    );

    // The same site without the holiday: open.
    let app = after_hours_app(&every_day, &[]).await;
    agent(
        &app,
        "sched-1",
        json!({"scheduling": 3}),
        json!({"chat": 0}),
    )
    .await;
    let (_, q) = app.get("/v1/queues").await;
    assert!(
        q["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["skill"] == "scheduling" && q["open"] == true),
        "{q}"
    );
}

fn chicago_days_after(date: &str) -> String {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    d.succ_opt().unwrap().to_string()
}

#[actix_web::test]
async fn overlapping_or_impossible_hours_are_refused_at_start_and_on_reload_with_the_key() {
    let (mut settings, _dir) = test_settings(Backend::Sqlite).await;
    settings.routing.after_hours.queues.insert(
        "north.billing".into(),
        frontdoor_actors::rules::after_hours::QueueHours {
            hours: [(
                "mon".to_string(),
                vec!["08:00-12:00".to_string(), "11:30-15:00".to_string()],
            )]
            .into(),
            holidays: vec![],
        },
    );
    let err = frontdoor::startup::Application::build(settings)
        .await
        .err()
        .expect("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("after_hours.queues.north.billing.hours.mon"),
        "{msg}"
    );
    assert!(msg.contains("overlaps"), "{msg}");

    let (mut settings, _dir2) = test_settings(Backend::Sqlite).await;
    settings.sites.entry("north".into()).or_default().hours =
        [("tue".to_string(), vec!["17:00-08:00".to_string()])].into();
    let err = frontdoor::startup::Application::build(settings)
        .await
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("sites.north.hours.tue"),
        "{err:#}"
    );

    let app = spawn_app(Backend::Sqlite).await;
    let (status, body) = app
        .put(
            "/v1/runtime/config",
            &json!({"routing": {"after_hours": {"queues": {"north.billing": {"hours": {"fri": ["09:00-10:00", "09:30-11:00"]}}}}}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("after_hours.queues.north.billing.hours.fri"),
        "{body}"
    );
    let (_, cfg) = app.get("/v1/runtime/config").await;
    assert_eq!(cfg["config_version"], 1, "the bad hours were not applied");
}

#[actix_web::test]
async fn containment_is_counted_under_the_intent_the_bot_answered() {
    let app = spawn_app(Backend::Sqlite).await;
    let p = json!({"mrn": "MRN-CONTAIN"});
    app.store_event(&event(
        "prescription.ready",
        "pharmacy",
        days_ago(0, -1),
        p.clone(),
        json!({"medication": "lisinopril 10 mg", "pharmacy": "Main St Pharmacy"}),
    ))
    .await;
    // The IVR said "prescription"; the bot answered refill.status and the patient hung up happy.
    start(
        &app,
        p.clone(),
        "iva",
        "iva-c",
        json!({"intent": "prescription"}),
    )
    .await;
    assert_eq!(ask(&app, "iva-c", "refill.status").await.0, 200);
    app.store_event(&event(
        "contact.ended",
        "iva",
        days_ago(0, 0),
        p,
        json!({"contact_id": "iva-c", "disposition": "self_service"}),
    ))
    .await;
    let c = routed(&app, "iva-c").await;
    assert_eq!(
        (c["state"].as_str(), c["intent"].as_str()),
        (Some("ended"), Some("refill.status"))
    );
    // The series starts at zero at boot; this containment counted (>= 1: the process's
    // counters are shared by the tests).
    let metrics = app.metrics().await;
    let series =
        r#"frontdoor_bot_intents_total{intent="refill.status",outcome="contained",reason="none"} "#;
    let value: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(value >= 1.0, "{value}");
}

#[actix_web::test]
async fn the_bot_stops_answering_a_chat_once_an_agent_has_taken_it() {
    let app = spawn_app(Backend::Sqlite).await;
    start(
        &app,
        json!({"mrn": "MRN-IVA-TAKEN"}),
        "chat",
        "chat-taken",
        json!({"skill": "scheduling"}),
    )
    .await;
    // Waiting for a person, the bot may still answer a routine question.
    assert_eq!(ask(&app, "chat-taken", "directions").await.0, 200);
    agent(
        &app,
        "ag-taken",
        json!({"scheduling": 3}),
        json!({"chat": 2}),
    )
    .await;
    assert_eq!(routed(&app, "chat-taken").await["state"], "offered");
    assert_eq!(
        desktop(&app, "offer.accepted", "ag-taken", "chat-taken", json!({})).await,
        202
    );
    assert_eq!(routed(&app, "chat-taken").await["state"], "assigned");
    let (status, body) = ask(&app, "chat-taken", "directions").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "urn:frontdoor:problem:conflict");
}
