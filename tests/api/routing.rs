//! Routing end to end through the events endpoint: escalation from the journey,
//! bot hand-off, last-owner routing, capacity, offer timeouts and declines,
//! cross-site overflow, and the reasons behind each decision. Timers run on the
//! test's manual clock (`app.advance`), never on sleeps.

use serde_json::{json, Value};

use crate::helpers::{days_ago, event, spawn_app, Backend, TestApp};

async fn agent(app: &TestApp, id: &str, site: &str, skills: Value, capacity: Value) {
    let mut e = event(
        "agent.state",
        "desktop",
        days_ago(0, 0),
        Value::Null,
        json!({
        "agent_id": id, "state": "available", "skills": skills, "capacity": capacity}),
    );
    e.as_object_mut().unwrap().remove("patient");
    e["site"] = json!(site);
    let res = app.post_event(&e).await;
    assert_eq!(res.status().as_u16(), 202, "agent.state {id}");
}

async fn desktop(app: &TestApp, ty: &str, agent_id: &str, contact_id: &str) -> u16 {
    let mut e = event(
        ty,
        "desktop",
        days_ago(0, 0),
        Value::Null,
        json!({"agent_id": agent_id, "contact_id": contact_id}),
    );
    e.as_object_mut().unwrap().remove("patient");
    app.post_event(&e).await.status().as_u16()
}

async fn start(
    app: &TestApp,
    patient: Value,
    channel: &str,
    contact: &str,
    extra: Value,
    at: chrono::DateTime<chrono::Utc>,
) {
    let mut fields = json!({"contact_id": contact});
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    app.store_event(&event("contact.started", channel, at, patient, fields))
        .await;
}

async fn routed(app: &TestApp, contact: &str) -> Value {
    let (status, body) = app.get(&format!("/v1/contacts/{contact}")).await;
    assert_eq!(status, 200, "contact {contact}: {body}");
    body
}

fn rules(c: &Value) -> Vec<String> {
    c["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap().to_string())
        .collect()
}

async fn offers_in_outbox(app: &TestApp) -> Vec<Value> {
    app.store
        .pending_commands(1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.command_type == "contact.offer")
        .map(|c| serde_json::from_str(&c.body).unwrap())
        .collect()
}

#[actix_web::test]
async fn the_third_contact_in_two_days_is_urgent_and_served_before_an_older_routine_one() {
    let app = spawn_app(Backend::Sqlite).await;
    let sched = json!({"skill": "scheduling"});
    // An older routine chat waits first.
    start(
        &app,
        json!({"mrn": "ROUTINE-1"}),
        "chat",
        "routine-chat",
        sched.clone(),
        days_ago(0, -1),
    )
    .await;
    // The patient: a call Monday, an SMS Tuesday, a portal chat Tuesday.
    let p = json!({"mrn": "MRN-URG"});
    start(
        &app,
        p.clone(),
        "voice",
        "mon-call",
        sched.clone(),
        days_ago(1, -6),
    )
    .await;
    app.store_event(&event(
        "contact.ended",
        "voice",
        days_ago(1, -5),
        p.clone(),
        json!({"contact_id": "mon-call"}),
    ))
    .await;
    start(
        &app,
        p.clone(),
        "sms",
        "tue-sms",
        sched.clone(),
        days_ago(0, -3),
    )
    .await;
    app.store_event(&event(
        "contact.ended",
        "sms",
        days_ago(0, -2),
        p.clone(),
        json!({"contact_id": "tue-sms"}),
    ))
    .await;
    start(
        &app,
        p.clone(),
        "chat",
        "tue-chat",
        sched.clone(),
        days_ago(0, 0),
    )
    .await;

    let urgent = routed(&app, "tue-chat").await;
    assert_eq!(urgent["state"], "queued");
    assert_eq!(urgent["level"], "urgent");
    assert!(
        urgent["priority_score"].as_i64()
            > routed(&app, "routine-chat").await["priority_score"].as_i64()
    );
    assert!(
        rules(&urgent).contains(&"repeat_contacts".to_string()),
        "{urgent}"
    );

    agent(
        &app,
        "sched-1",
        "north",
        json!({"scheduling": 3}),
        json!({"chat": 1}),
    )
    .await;
    let urgent = routed(&app, "tue-chat").await;
    assert_eq!(
        (urgent["state"].as_str(), urgent["offered_to"].as_str()),
        (Some("offered"), Some("sched-1"))
    );
    assert_eq!(routed(&app, "routine-chat").await["state"], "queued");
    let escalations: Vec<_> = app
        .store
        .pending_commands(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.command_type == "escalation.raised")
        .collect();
    assert_eq!(escalations.len(), 1);
    // The patient context shows the frustration.
    let pid = app.patient_id("mrn", "MRN-URG").await;
    assert_eq!(app.context(&pid).await["frustration"]["level"], "urgent");
}

#[actix_web::test]
async fn a_bot_failing_twice_hands_the_chat_to_a_nurse_with_transcript_and_intent() {
    let app = spawn_app(Backend::Sqlite).await;
    agent(
        &app,
        "rn-1",
        "north",
        json!({"nurse_advice": 4}),
        json!({"chat": 2}),
    )
    .await;
    let p = json!({"portal_id": "web-bot-1"});
    start(
        &app,
        p.clone(),
        "chat",
        "bot-chat",
        json!({"self_service": true, "intent": "medication_question"}),
        days_ago(0, 0),
    )
    .await;
    assert_eq!(routed(&app, "bot-chat").await["state"], "self_service");
    for (i, q) in [
        "Can I take ibuprofen with my meds?",
        "That did not answer me",
    ]
    .iter()
    .enumerate()
    {
        app.store_event(&event(
            "bot.turn",
            "chat",
            days_ago(0, 0),
            p.clone(),
            json!({
            "contact_id": "bot-chat", "resolved": false, "intent": "medication_question",
            "patient_text": q, "bot_text": format!("answer {i}")}),
        ))
        .await;
    }
    let c = routed(&app, "bot-chat").await;
    assert_eq!(
        (c["state"].as_str(), c["offered_to"].as_str()),
        (Some("offered"), Some("rn-1"))
    );
    assert_eq!(c["skill"], "nurse_advice");
    assert!(rules(&c).contains(&"bot_not_resolving".to_string()), "{c}");
    let offer = offers_in_outbox(&app)
        .await
        .into_iter()
        .find(|o| o["contact_id"] == "bot-chat")
        .unwrap();
    assert_eq!(offer["intent"], "medication_question");
    assert_eq!(offer["transcript"].as_array().unwrap().len(), 2);
    assert_eq!(
        offer["transcript"][0]["patient_text"],
        "Can I take ibuprofen with my meds?"
    );
    assert_eq!(offer["agent_id"], "rn-1");

    // A bot that resolves in one exchange never reaches a queue.
    let q = json!({"portal_id": "web-bot-2"});
    start(
        &app,
        q.clone(),
        "iva",
        "bot-ok",
        json!({"intent": "clinic_hours"}),
        days_ago(0, 0),
    )
    .await;
    app.store_event(&event(
        "bot.turn",
        "iva",
        days_ago(0, 0),
        q.clone(),
        json!({"contact_id": "bot-ok", "resolved": true}),
    ))
    .await;
    app.store_event(&event(
        "contact.ended",
        "iva",
        days_ago(0, 0),
        q,
        json!({"contact_id": "bot-ok"}),
    ))
    .await;
    let ok = routed(&app, "bot-ok").await;
    assert_eq!(ok["state"], "ended");
    assert_eq!(rules(&ok), vec!["self_service", "contained"]);
    assert!(offers_in_outbox(&app)
        .await
        .iter()
        .all(|o| o["contact_id"] != "bot-ok"));
}

#[actix_web::test]
async fn a_caller_transferred_twice_is_offered_first_to_the_last_owner_then_to_anyone_skilled() {
    let app = spawn_app(Backend::Sqlite).await;
    let p = json!({"phone": "+15550123000"});
    // Yesterday: billing -> scheduling -> pharmacy, handled last by ph-a.
    start(
        &app,
        p.clone(),
        "voice",
        "y-call",
        json!({"skill": "billing"}),
        days_ago(1, 0),
    )
    .await;
    for (to, from) in [("scheduling", "bill-1"), ("pharmacy", "sched-1")] {
        app.store_event(&event(
            "contact.transferred",
            "voice",
            days_ago(1, 0),
            p.clone(),
            json!({"contact_id": "y-call", "to": to, "from_agent": from}),
        ))
        .await;
    }
    app.store_event(&event(
        "contact.ended",
        "voice",
        days_ago(1, 1),
        p.clone(),
        json!({"contact_id": "y-call", "agent": "ph-a"}),
    ))
    .await;
    // ph-b has been idle longer than ph-a; without the rule ph-b would get it.
    agent(
        &app,
        "ph-b",
        "north",
        json!({"pharmacy": 3}),
        json!({"voice": 1}),
    )
    .await;
    app.advance(1).await;
    agent(
        &app,
        "ph-a",
        "north",
        json!({"pharmacy": 3}),
        json!({"voice": 1}),
    )
    .await;

    start(
        &app,
        p.clone(),
        "voice",
        "t-call",
        json!({"skill": "pharmacy"}),
        days_ago(0, 0),
    )
    .await;
    let c = routed(&app, "t-call").await;
    assert_eq!(c["offered_to"], "ph-a", "{c}");
    assert!(rules(&c).contains(&"repeated_transfers".to_string()));
    assert!(rules(&c).contains(&"preferred_agent".to_string()));

    app.advance(31).await; // ph-a does not answer in time
    let c = routed(&app, "t-call").await;
    assert_eq!(c["offered_to"], "ph-b", "{c}");
    assert!(rules(&c).contains(&"offer_timeout".to_string()));
    assert_eq!(desktop(&app, "offer.accepted", "ph-b", "t-call").await, 202);
    let c = routed(&app, "t-call").await;
    assert_eq!(
        (c["state"].as_str(), c["assigned_agent"].as_str()),
        (Some("assigned"), Some("ph-b"))
    );
    let route: Vec<_> = app
        .store
        .pending_commands(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.command_type == "contact.route")
        .collect();
    assert_eq!(route.len(), 1, "a voice contact is connected to its agent");
}

#[actix_web::test]
async fn an_agent_holds_three_chats_and_no_fourth_and_one_call() {
    let app = spawn_app(Backend::Sqlite).await;
    agent(
        &app,
        "s-1",
        "north",
        json!({"scheduling": 3}),
        json!({"chat": 3, "voice": 1}),
    )
    .await;
    for i in 0..4 {
        start(
            &app,
            json!({"mrn": format!("CAP-{i}")}),
            "chat",
            &format!("chat-{i}"),
            json!({"skill": "scheduling"}),
            days_ago(0, 0),
        )
        .await;
    }
    for i in 0..3 {
        assert_eq!(
            desktop(&app, "offer.accepted", "s-1", &format!("chat-{i}")).await,
            202
        );
    }
    assert_eq!(routed(&app, "chat-3").await["state"], "queued");
    start(
        &app,
        json!({"mrn": "CAP-V1"}),
        "voice",
        "call-1",
        json!({"skill": "scheduling"}),
        days_ago(0, 0),
    )
    .await;
    start(
        &app,
        json!({"mrn": "CAP-V2"}),
        "voice",
        "call-2",
        json!({"skill": "scheduling"}),
        days_ago(0, 0),
    )
    .await;
    assert_eq!(routed(&app, "call-1").await["state"], "offered");
    assert_eq!(routed(&app, "call-2").await["state"], "queued");
    let (_, agents) = app.get("/v1/agents").await;
    assert_eq!(agents["agents"][0]["load"], json!({"chat": 3, "voice": 1}));

    // A chat ends: the slot stays taken through wrap-up, then the fourth chat is offered.
    app.store_event(&event(
        "contact.ended",
        "chat",
        days_ago(0, 0),
        json!({"mrn": "CAP-0"}),
        json!({"contact_id": "chat-0"}),
    ))
    .await;
    assert_eq!(routed(&app, "chat-3").await["state"], "queued");
    assert_eq!(desktop(&app, "contact.wrapped", "s-1", "chat-0").await, 202);
    assert_eq!(routed(&app, "chat-3").await["offered_to"], "s-1");
}

#[actix_web::test]
async fn a_timed_out_or_declined_offer_goes_to_the_next_agent() {
    let app = spawn_app(Backend::Sqlite).await;
    agent(
        &app,
        "a-1",
        "north",
        json!({"billing": 3}),
        json!({"chat": 1}),
    )
    .await;
    app.advance(1).await;
    agent(
        &app,
        "a-2",
        "north",
        json!({"billing": 3}),
        json!({"chat": 1}),
    )
    .await;
    start(
        &app,
        json!({"mrn": "TO-1"}),
        "chat",
        "to-chat",
        json!({"skill": "billing"}),
        days_ago(0, 0),
    )
    .await;
    assert_eq!(routed(&app, "to-chat").await["offered_to"], "a-1");
    app.advance(29).await;
    assert_eq!(
        routed(&app, "to-chat").await["offered_to"],
        "a-1",
        "not before the timeout"
    );
    app.advance(2).await;
    let c = routed(&app, "to-chat").await;
    assert_eq!(c["offered_to"], "a-2");
    assert_eq!(c["excluded_agents"], json!(["a-1"]));
    assert!(rules(&c).contains(&"offer_timeout".to_string()));

    start(
        &app,
        json!({"mrn": "DEC-1"}),
        "chat",
        "dec-chat",
        json!({"skill": "billing"}),
        days_ago(0, 0),
    )
    .await;
    assert_eq!(routed(&app, "dec-chat").await["offered_to"], "a-1");
    assert_eq!(
        desktop(&app, "offer.declined", "a-1", "dec-chat").await,
        202
    );
    let c = routed(&app, "dec-chat").await;
    assert_eq!(
        c["state"], "queued",
        "a-2 is busy: it waits in its place: {c}"
    );
    assert!(rules(&c).contains(&"offer_declined".to_string()));
    assert_eq!(desktop(&app, "offer.accepted", "a-2", "to-chat").await, 202);
    app.store_event(&event(
        "contact.ended",
        "chat",
        days_ago(0, 0),
        json!({"mrn": "TO-1"}),
        json!({"contact_id": "to-chat"}),
    ))
    .await;
    assert_eq!(
        desktop(&app, "contact.wrapped", "a-2", "to-chat").await,
        202
    );
    assert_eq!(routed(&app, "dec-chat").await["offered_to"], "a-2");
    // An accept for an offer that is not yours is refused and changes nothing.
    assert_eq!(
        desktop(&app, "offer.accepted", "a-1", "dec-chat").await,
        422
    );
}

#[actix_web::test]
async fn a_saturated_site_overflows_to_idle_schedulers_elsewhere_but_clinical_work_stays_home() {
    let app = spawn_app(Backend::Sqlite).await;
    agent(
        &app,
        "n-1",
        "north",
        json!({"scheduling": 3, "nurse_advice": 3}),
        json!({"chat": 1}),
    )
    .await;
    start(
        &app,
        json!({"mrn": "OV-0"}),
        "chat",
        "ov-0",
        json!({"skill": "scheduling"}),
        days_ago(0, 0),
    )
    .await;
    assert_eq!(desktop(&app, "offer.accepted", "n-1", "ov-0").await, 202);
    for i in 1..=5 {
        start(
            &app,
            json!({"mrn": format!("OV-{i}")}),
            "chat",
            &format!("ov-{i}"),
            json!({"skill": "scheduling"}),
            days_ago(0, 0),
        )
        .await;
        start(
            &app,
            json!({"mrn": format!("CL-{i}")}),
            "chat",
            &format!("cl-{i}"),
            json!({"skill": "nurse_advice"}),
            days_ago(0, 0),
        )
        .await;
    }
    for i in 1..=3 {
        agent(
            &app,
            &format!("s-{i}"),
            "south",
            json!({"scheduling": 3, "nurse_advice": 3}),
            json!({"chat": 1}),
        )
        .await;
    }
    app.advance(1).await;
    let moved: Vec<Value> = {
        let mut v = Vec::new();
        for i in 1..=5 {
            let c = routed(&app, &format!("ov-{i}")).await;
            if c["site"] == "south" {
                v.push(c);
            }
        }
        v
    };
    assert!(
        !moved.is_empty(),
        "saturated north sheds scheduling work to south"
    );
    for c in &moved {
        assert_eq!(c["origin_site"], "north");
        assert!(rules(c).contains(&"overflow".to_string()));
        assert!(c["offered_to"].as_str().unwrap().starts_with("s-"));
    }
    for i in 1..=5 {
        let c = routed(&app, &format!("cl-{i}")).await;
        assert_eq!(c["site"], "north", "clinical skills are not cross-site");
        assert!(!rules(&c).contains(&"overflow".to_string()));
    }
    // North recovers: new contacts stay at north.
    for i in 1..=5 {
        let _ = app.post(&format!("/v1/agents/n-extra-{i}/state"), &json!({
            "site": "north", "state": "available", "skills": {"scheduling": 3}, "capacity": {"chat": 5}})).await;
    }
    app.advance(1).await;
    start(
        &app,
        json!({"mrn": "OV-NEW"}),
        "chat",
        "ov-new",
        json!({"skill": "scheduling"}),
        days_ago(0, 0),
    )
    .await;
    app.advance(1).await;
    let c = routed(&app, "ov-new").await;
    assert_eq!(c["site"], "north", "{c}");
    assert!(c["offered_to"].as_str().unwrap().starts_with("n-"));
    let (_, q) = app.get("/v1/queues").await;
    let north = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["site"] == "north" && q["skill"] == "scheduling")
        .unwrap();
    assert!(
        north["staffing"]["required_agents_erlang_c"].is_u64(),
        "{north}"
    );
}

#[actix_web::test]
async fn a_contact_moved_to_another_site_waits_there_and_does_not_move_again_within_the_window() {
    let app = spawn_app(Backend::Sqlite).await;
    // North's one scheduler is busy; three scheduling chats wait; south has idle
    // schedulers: the first tick moves north's waiting chats to south.
    agent(
        &app,
        "n-1",
        "north",
        json!({"scheduling": 3}),
        json!({"chat": 1}),
    )
    .await;
    start(
        &app,
        json!({"mrn": "HY-0"}),
        "chat",
        "hy-0",
        json!({"skill": "scheduling"}),
        days_ago(0, 0),
    )
    .await;
    assert_eq!(desktop(&app, "offer.accepted", "n-1", "hy-0").await, 202);
    for i in 1..=3 {
        start(
            &app,
            json!({"mrn": format!("HY-{i}")}),
            "chat",
            &format!("hy-{i}"),
            json!({"skill": "scheduling"}),
            days_ago(0, 0),
        )
        .await;
    }
    for i in 1..=3 {
        agent(
            &app,
            &format!("s-{i}"),
            "south",
            json!({"scheduling": 3}),
            json!({"chat": 1}),
        )
        .await;
    }
    app.advance(1).await;
    let mut moved = Vec::new();
    for i in 1..=3 {
        let c = routed(&app, &format!("hy-{i}")).await;
        if c["site"] == "south" {
            moved.push(c["contact_id"].as_str().unwrap().to_string());
        }
    }
    assert!(!moved.is_empty(), "north shed work to south");
    // South's schedulers leave before answering: the moved chats wait in south's
    // queue, and south is now the saturated site. A chat that never moved waits
    // there too. East opens with idle schedulers.
    for i in 1..=3 {
        let _ = app.post(&format!("/v1/agents/s-{i}/state"), &json!({
            "site": "south", "state": "away", "skills": {"scheduling": 3}, "capacity": {"chat": 1}})).await;
    }
    for id in &moved {
        let c = routed(&app, id).await;
        assert_eq!(
            (c["state"].as_str(), c["site"].as_str()),
            (Some("queued"), Some("south")),
            "{c}"
        );
    }
    let mut fresh = event(
        "contact.started",
        "chat",
        days_ago(0, 0),
        json!({"mrn": "HY-SOUTH"}),
        json!({"contact_id": "hy-south", "skill": "scheduling"}),
    );
    fresh["site"] = json!("south");
    app.store_event(&fresh).await;
    for i in 1..=3 {
        agent(
            &app,
            &format!("e-{i}"),
            "east",
            json!({"scheduling": 3}),
            json!({"chat": 2}),
        )
        .await;
    }
    // Within the window (min_move_interval_secs = 120) the next rebalance moves the
    // chat that never moved, and none of those moved 11 s ago.
    app.advance(10).await;
    let c = routed(&app, "hy-south").await;
    assert_eq!(c["site"], "east", "south sheds to east: {c}");
    assert!(rules(&c).contains(&"overflow".to_string()));
    for id in &moved {
        let c = routed(&app, id).await;
        assert_eq!(c["site"], "south", "moved again within the window: {c}");
        assert_eq!(rules(&c).iter().filter(|r| *r == "overflow").count(), 1);
    }
}

#[actix_web::test]
async fn agent_state_over_http_is_validated_and_unknown_contacts_are_not_found() {
    let app = spawn_app(Backend::Sqlite).await;
    let (status, body) = app
        .post(
            "/v1/agents/x-1/state",
            &json!({"site": "north", "state": "napping", "skills": {"a": 9}}),
        )
        .await;
    assert_eq!(status, 400);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["state", "skills.a"]);
    let (status, _) = app.post("/v1/agents/x-1/state", &json!({"site": "north", "state": "away", "skills": {"billing": 2}, "capacity": {"voice": 1}})).await;
    assert_eq!(status, 200);
    assert_eq!(app.get("/v1/contacts/nope").await.0, 404);
}

#[actix_web::test]
async fn after_a_restart_waiting_contacts_are_routed_again_keeping_their_place() {
    use crate::helpers::{spawn_app_with, test_settings};
    let (settings, dir) = test_settings(Backend::Sqlite).await;
    let before = spawn_app_with(settings.clone(), dir).await;
    start(
        &before,
        json!({"mrn": "RST-1"}),
        "voice",
        "rst-call",
        json!({"skill": "billing"}),
        days_ago(0, 0),
    )
    .await;
    start(
        &before,
        json!({"mrn": "RST-2"}),
        "iva",
        "rst-bot",
        json!({"intent": "clinic_hours"}),
        days_ago(0, 0),
    )
    .await;
    start(
        &before,
        json!({"mrn": "RST-3"}),
        "chat",
        "rst-done",
        json!({"skill": "billing"}),
        days_ago(0, 0),
    )
    .await;
    before
        .store_event(&event(
            "contact.ended",
            "chat",
            days_ago(0, 0),
            json!({"mrn": "RST-3"}),
            json!({"contact_id": "rst-done"}),
        ))
        .await;
    let waited_from = routed(&before, "rst-call").await["queued_at"].clone();

    // A second runtime on the same store rebuilds routing from it.
    let after = spawn_app_with(settings, None).await;
    let call = routed(&after, "rst-call").await;
    assert_eq!(call["state"], "queued");
    assert_eq!(call["skill"], "billing");
    let t = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let drift = (t(&call["queued_at"]) - t(&waited_from))
        .num_milliseconds()
        .abs();
    assert!(
        drift < 1000,
        "keeps its waiting time (drift {drift} ms): {call}"
    );
    assert_eq!(routed(&after, "rst-bot").await["state"], "self_service");
    assert_eq!(
        routed(&after, "rst-done").await["state"],
        "ended",
        "an ended contact is not routed again"
    );
    agent(
        &after,
        "b-1",
        "north",
        json!({"billing": 3}),
        json!({"voice": 1}),
    )
    .await;
    assert_eq!(routed(&after, "rst-call").await["offered_to"], "b-1");
}

#[actix_web::test]
async fn a_self_service_contact_keeps_the_intent_and_skill_it_came_with() {
    let app = spawn_app(Backend::Sqlite).await;
    start(
        &app,
        json!({"phone": "+15550123999"}),
        "iva",
        "iva-directions",
        json!({"intent": "directions", "skill": "front_desk"}),
        days_ago(0, 0),
    )
    .await;
    let c = routed(&app, "iva-directions").await;
    assert_eq!(
        (
            c["state"].as_str(),
            c["skill"].as_str(),
            c["intent"].as_str()
        ),
        (Some("self_service"), Some("front_desk"), Some("directions")),
        "{c}"
    );
    // The hand-off routes on them: to the front desk, as a hand-off (no transfer).
    for _ in 0..2 {
        app.store_event(&event(
            "bot.turn",
            "iva",
            days_ago(0, 0),
            json!({"phone": "+15550123999"}),
            json!({"contact_id": "iva-directions", "resolved": false}),
        ))
        .await;
    }
    let c = routed(&app, "iva-directions").await;
    assert_eq!(
        (
            c["state"].as_str(),
            c["skill"].as_str(),
            c["intent"].as_str()
        ),
        (Some("queued"), Some("front_desk"), Some("directions")),
        "{c}"
    );
    let rules = rules(&c);
    assert!(
        rules.contains(&"bot_not_resolving".to_string()),
        "{rules:?}"
    );
    assert!(!rules.contains(&"transfer".to_string()), "{rules:?}");
}

#[actix_web::test]
async fn contacts_routed_again_after_a_restart_raise_no_second_escalation() {
    use crate::helpers::{spawn_app_with, test_settings};
    let (settings, dir) = test_settings(Backend::Sqlite).await;
    let before = spawn_app_with(settings.clone(), dir).await;
    // The third contact in two days is urgent: one escalation to supervisors.
    for i in 0..3 {
        start(
            &before,
            json!({"mrn": "URG-1"}),
            "voice",
            &format!("urg-{i}"),
            json!({"skill": "billing"}),
            days_ago(0, 0),
        )
        .await;
    }
    let escalations = |app: &TestApp| {
        let store = app.store.clone();
        async move {
            store
                .pending_commands(1000)
                .await
                .unwrap()
                .into_iter()
                .filter(|c| c.command_type == "escalation.raised")
                .count()
        }
    };
    assert_eq!(escalations(&before).await, 1);
    // A second runtime on the same store rebuilds routing from it.
    let after = spawn_app_with(settings, None).await;
    assert_eq!(routed(&after, "urg-2").await["level"], "urgent");
    assert_eq!(
        escalations(&after).await,
        1,
        "the restart pages nobody again"
    );
}

#[actix_web::test]
async fn the_overflow_flags_a_step_writes_are_what_the_next_leader_loads_on_both_backends() {
    use frontdoor_actors::ports::RoutingChanges;
    use frontdoor_actors::rules::overflow::{OverflowState, OverflowStates};
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = spawn_app(backend).await;
        let nothing = app.store.load_routing().await.unwrap();
        assert_eq!(nothing.overflow, OverflowStates::default(), "{backend:?}");
        let since = chrono::Utc::now();
        let mut flags = OverflowStates::default();
        for (site, overflowing) in [("north", true), ("south", false)] {
            flags
                .by_skill
                .entry("scheduling".to_string())
                .or_default()
                .insert(site.to_string(), OverflowState { overflowing, since });
        }
        // Written twice: the step that started north, then one that stopped it.
        for flags in [flags.clone(), OverflowStates::default()] {
            let changes = RoutingChanges {
                overflow: Some(flags),
                ..Default::default()
            };
            app.store.save_routing(&changes, None).await.unwrap();
        }
        assert_eq!(
            app.store.load_routing().await.unwrap().overflow,
            OverflowStates::default(),
            "{backend:?}: the last flags written"
        );
        let changes = RoutingChanges {
            overflow: Some(flags.clone()),
            ..Default::default()
        };
        app.store.save_routing(&changes, None).await.unwrap();
        // A step that flips nothing leaves them as they are.
        app.store
            .save_routing(&RoutingChanges::default(), None)
            .await
            .unwrap();
        assert_eq!(
            app.store.load_routing().await.unwrap().overflow,
            flags,
            "{backend:?}"
        );
    }
}

/// Whether `GET /v1/queues` says `site`'s `skill` queue is shedding work to other sites.
async fn overflowing(app: &TestApp, site: &str, skill: &str) -> bool {
    let (_, q) = app.get("/v1/queues").await;
    let queue = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["site"] == site && q["skill"] == skill)
        .cloned()
        .unwrap_or_else(|| panic!("no {site}/{skill} queue: {q}"));
    queue["overflowing"].as_bool().unwrap()
}

#[actix_web::test]
async fn a_site_overflowing_when_routing_is_rebuilt_is_still_overflowing_after() {
    use crate::helpers::{spawn_app_with, test_settings};
    let (settings, dir) = test_settings(Backend::Sqlite).await;
    let before = spawn_app_with(settings.clone(), dir).await;
    // A scheduling chat waits at north and no site has an agent: north is
    // saturated at the next timer run.
    start(
        &before,
        json!({"mrn": "OVR-1"}),
        "chat",
        "ovr-1",
        json!({"skill": "scheduling"}),
        days_ago(0, 0),
    )
    .await;
    before.advance(1).await;
    assert!(overflowing(&before, "north", "scheduling").await);

    // A second runtime on the same store (a restart, or the next leader) rebuilds
    // routing from it, before any timer run of its own.
    let after = spawn_app_with(settings, None).await;
    assert!(
        overflowing(&after, "north", "scheduling").await,
        "north still sheds scheduling work"
    );
}
