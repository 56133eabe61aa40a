//! Concurrency at the HTTP edge: requests that race each other.

use std::collections::HashSet;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{days_ago, event, spawn_app, Backend, TestApp};
use crate::on_both_backends;

/// Sends every body at once; answers (status, JSON body) in order.
async fn all_at_once(app: &TestApp, bodies: &[Value]) -> Vec<(u16, Value)> {
    join_all(bodies.iter().map(|b| async move {
        let res = app.post_event(b).await;
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }))
    .await
}

on_both_backends! {
    async fn concurrent_first_events_of_one_unknown_caller_make_one_patient_without_an_error(app: TestApp) {
        let phone = "+15550160001";
        let bodies: Vec<Value> = (0..10).map(|i| event("contact.message", "sms", days_ago(0, 0),
            json!({"phone": phone}), json!({"contact_id": "sms-race", "from": "patient", "text": format!("m{i}")})))
            .collect();
        let answers = all_at_once(&app, &bodies).await;
        assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");
        let patients: HashSet<&str> = answers.iter().map(|(_, b)| b["patient_id"].as_str().unwrap()).collect();
        assert_eq!(patients.len(), 1, "one patient: {patients:?}");
        let pid = app.patient_id("phone", phone).await;
        assert!(patients.contains(pid.as_str()));
        assert_eq!(app.context(&pid).await["events_total"], 10);
    }

    async fn concurrent_duplicates_of_one_event_store_one_row_and_answer_200_to_the_others(app: TestApp) {
        let e = event("contact.started", "voice", days_ago(0, 0), json!({"phone": "+15550160002"}),
            json!({"contact_id": "call-race"}));
        let answers = all_at_once(&app, &vec![e.clone(); 10]).await;
        let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
        statuses.sort();
        assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 200, 200, 202], "{answers:?}");
        assert!(answers.iter().filter(|(s, _)| *s == 200).all(|(_, b)| b["status"] == "duplicate"));
        let log = app.store.event_log().await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].1, e["id"].as_str().unwrap());
        let pid = app.patient_id("phone", "+15550160002").await;
        assert_eq!(app.context(&pid).await["events_total"], 1);
    }
}

fn desktop(ty: &str, agent: &str, contact: &str) -> Value {
    let mut e = event(
        ty,
        "desktop",
        days_ago(0, 0),
        Value::Null,
        json!({"agent_id": agent, "contact_id": contact}),
    );
    e.as_object_mut().unwrap().remove("patient");
    e
}

async fn sign_in(app: &TestApp, agent: &str, skill: &str) {
    let (status, body) = app
        .post(
            &format!("/v1/agents/{agent}/state"),
            &json!({"site": "north", "state": "available",
                    "skills": {skill: 3}, "capacity": {"chat": 5}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn offered_to(app: &TestApp, contact: &str) -> String {
    let (status, c) = app.get(&format!("/v1/contacts/{contact}")).await;
    assert_eq!(status, 200, "{c}");
    c["offered_to"]
        .as_str()
        .unwrap_or_else(|| panic!("{contact} not offered: {c}"))
        .to_string()
}

#[actix_web::test]
async fn two_agents_accepting_one_contact_at_once_leave_it_with_exactly_one() {
    let app = spawn_app(Backend::Sqlite).await;
    sign_in(&app, "a-1", "nurse_advice").await;
    sign_in(&app, "a-2", "nurse_advice").await;
    let contacts: Vec<String> = (0..10).map(|i| format!("race-{i}")).collect();
    for (i, c) in contacts.iter().enumerate() {
        app.store_event(&event(
            "contact.started",
            "chat",
            days_ago(0, 0),
            json!({"mrn": format!("MRN-RACE-{i}")}),
            json!({"contact_id": c, "skill": "nurse_advice"}),
        ))
        .await;
    }
    let mut offers = Vec::new();
    for c in &contacts {
        offers.push(offered_to(&app, c).await);
    }
    // Both agents accept every contact at once: only the one offered wins each.
    let bodies: Vec<Value> = contacts
        .iter()
        .flat_map(|c| {
            [
                desktop("offer.accepted", "a-1", c),
                desktop("offer.accepted", "a-2", c),
            ]
        })
        .collect();
    let answers = all_at_once(&app, &bodies).await;
    for (i, c) in contacts.iter().enumerate() {
        let won: Vec<&str> = ["a-1", "a-2"]
            .iter()
            .zip(&answers[2 * i..2 * i + 2])
            .filter(|(_, (s, _))| *s == 202)
            .map(|(a, _)| *a)
            .collect();
        assert_eq!(won, [offers[i].as_str()], "{c}: {answers:?}");
        let (_, view) = app.get(&format!("/v1/contacts/{c}")).await;
        assert_eq!(view["assigned_agent"], offers[i].as_str());
    }
    let (_, agents) = app.get("/v1/agents").await;
    let mut held: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["contacts"].as_array().unwrap())
        .map(|c| c.as_str().unwrap())
        .collect();
    held.sort();
    assert_eq!(held, contacts, "each contact held once: {agents}");

    // An offer that timed out at one agent and went to the other: the late accept
    // and the new one race, and only the new one wins.
    sign_in(&app, "p-1", "pharmacy").await;
    sign_in(&app, "p-2", "pharmacy").await;
    app.store_event(&event(
        "contact.started",
        "chat",
        days_ago(0, 0),
        json!({"mrn": "MRN-RACE-LATE"}),
        json!({"contact_id": "race-late", "skill": "pharmacy"}),
    ))
    .await;
    let first = offered_to(&app, "race-late").await;
    app.advance(31).await;
    let second = offered_to(&app, "race-late").await;
    assert_ne!(first, second, "re-offered to the other agent");
    let answers = all_at_once(
        &app,
        &[
            desktop("offer.accepted", &first, "race-late"),
            desktop("offer.accepted", &second, "race-late"),
        ],
    )
    .await;
    assert_eq!((answers[0].0, answers[1].0), (422, 202), "{answers:?}");
    let (_, view) = app.get("/v1/contacts/race-late").await;
    assert_eq!(view["assigned_agent"], second.as_str());
}
