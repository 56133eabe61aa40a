//! `frontdoor replay`: a live run recorded through the events endpoint and replayed
//! unchanged makes the same offers, to the same agents, in the same order; the same
//! inputs give byte-identical reports; a what-if changes the figures; bad input is
//! refused before anything runs.

use chrono::Utc;
use frontdoor::replay::{self, engine::Offer, Window};
use serde_json::{json, Value};

use crate::helpers::{event, spawn_app, Backend, TestApp};

async fn agent(app: &TestApp, id: &str, site: &str, state: &str, skills: Value, capacity: Value) {
    let mut e = event(
        "agent.state",
        "desktop",
        Utc::now(),
        Value::Null,
        json!({"agent_id": id, "state": state, "skills": skills, "capacity": capacity}),
    );
    e.as_object_mut().unwrap().remove("patient");
    e["site"] = json!(site);
    assert_eq!(
        app.post_event(&e).await.status().as_u16(),
        202,
        "agent.state {id}"
    );
}

async fn desktop(app: &TestApp, ty: &str, agent_id: &str, contact_id: &str) -> u16 {
    let mut e = event(
        ty,
        "desktop",
        Utc::now(),
        Value::Null,
        json!({"agent_id": agent_id, "contact_id": contact_id}),
    );
    e.as_object_mut().unwrap().remove("patient");
    app.post_event(&e).await.status().as_u16()
}

async fn patient_event(
    app: &TestApp,
    ty: &str,
    channel: &str,
    site: &str,
    mrn: &str,
    fields: Value,
) {
    let mut e = event(ty, channel, Utc::now(), json!({"mrn": mrn}), fields);
    e["site"] = json!(site);
    app.store_event(&e).await;
}

/// The live offers, in outbox order, as (contact, agent).
async fn live_offers(app: &TestApp) -> Vec<(String, String)> {
    app.store
        .pending_commands(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.command_type == "contact.offer")
        .map(|c| {
            let v: Value = serde_json::from_str(&c.body).unwrap();
            let p = &v;
            (
                p["contact_id"].as_str().unwrap().to_string(),
                p["agent_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(offers: &[Offer]) -> Vec<(String, String)> {
    offers
        .iter()
        .map(|o| (o.contact_id.clone(), o.agent_id.clone()))
        .collect()
}

/// A small recorded day: agents at two sites log in and out, contacts arrive on
/// voice and chat, a bot hands over after failing twice, agents decline and
/// accept, contacts end and are wrapped, a patient abandons, a contact is
/// transferred.
async fn recorded_day(app: &TestApp) {
    let sched = json!({"scheduling": 3, "billing": 2});
    let nurse = json!({"nurse_advice": 4, "scheduling": 1});
    let cap = json!({"voice": 1, "chat": 2});
    agent(app, "n-1", "north", "available", sched.clone(), cap.clone()).await;
    agent(app, "n-2", "north", "available", nurse.clone(), cap.clone()).await;
    agent(
        app,
        "s-1",
        "south",
        "available",
        sched.clone(),
        json!({"voice": 1, "chat": 1}),
    )
    .await;
    let mut answered = std::collections::HashSet::new();
    let mut step = 0usize;
    for n in 0..14usize {
        let site = if n % 3 == 2 { "south" } else { "north" };
        let contact = format!("day-{n}");
        let mrn = format!("MRN-R{}", n % 9);
        match n % 4 {
            // A bot session that fails twice and hands over.
            3 => {
                patient_event(
                    app,
                    "contact.started",
                    "iva",
                    site,
                    &mrn,
                    json!({"contact_id": contact, "intent": "medication_question"}),
                )
                .await;
                for _ in 0..2 {
                    patient_event(app, "bot.turn", "iva", site, &mrn,
                        json!({"contact_id": contact, "resolved": false, "patient_text": "?", "bot_text": "?"})).await;
                }
            }
            k => {
                let channel = if k == 0 { "voice" } else { "chat" };
                let skill = if k == 2 { "billing" } else { "scheduling" };
                patient_event(
                    app,
                    "contact.started",
                    channel,
                    site,
                    &mrn,
                    json!({"contact_id": contact, "skill": skill}),
                )
                .await;
            }
        }
        // Answer the offers made so far: the first offer of every third contact is
        // declined, the rest accepted; every accepted contact ends two steps later.
        for (c, a) in live_offers(app).await {
            if answered.contains(&(c.clone(), a.clone())) {
                continue;
            }
            answered.insert((c.clone(), a.clone()));
            step += 1;
            let idx: usize = c.trim_start_matches("day-").parse().unwrap();
            if idx.is_multiple_of(3) && step % 2 == 1 {
                assert_eq!(desktop(app, "offer.declined", &a, &c).await, 202);
            } else if desktop(app, "offer.accepted", &a, &c).await == 202 {
                if idx == 5 {
                    patient_event(
                        app,
                        "contact.transferred",
                        "chat",
                        "north",
                        "MRN-R5",
                        json!({"contact_id": c, "to": "nurse_advice", "from_agent": a}),
                    )
                    .await;
                    continue;
                }
                let channel = if idx.is_multiple_of(4) {
                    "voice"
                } else {
                    "chat"
                };
                let site = if idx % 3 == 2 { "south" } else { "north" };
                patient_event(
                    app,
                    "contact.ended",
                    channel,
                    site,
                    &format!("MRN-R{}", idx % 9),
                    json!({"contact_id": c, "agent": a}),
                )
                .await;
                assert_eq!(desktop(app, "contact.wrapped", &a, &c).await, 202);
            }
        }
        if n == 6 {
            agent(
                app,
                "s-1",
                "south",
                "away",
                sched.clone(),
                json!({"voice": 1, "chat": 1}),
            )
            .await;
        }
        if n == 9 {
            agent(
                app,
                "s-1",
                "south",
                "available",
                sched.clone(),
                json!({"voice": 1, "chat": 1}),
            )
            .await;
            agent(app, "n-3", "north", "available", sched.clone(), cap.clone()).await;
        }
    }
    // Whoever still waits gives up.
    for n in [12usize, 13] {
        let c = format!("day-{n}");
        let (status, body) = app.get(&format!("/v1/contacts/{c}")).await;
        if status == 200 && body["state"] == "queued" {
            let site = if n % 3 == 2 { "south" } else { "north" };
            patient_event(
                app,
                "contact.abandoned",
                "chat",
                site,
                &format!("MRN-R{}", n % 9),
                json!({"contact_id": c}),
            )
            .await;
        }
    }
}

async fn window(app: &TestApp, since: chrono::DateTime<Utc>) -> Window {
    let until = Utc::now() + chrono::Duration::seconds(5);
    Window {
        since: since.to_rfc3339(),
        until: until.to_rfc3339(),
        events: app.store.recorded_window(since, until).await.unwrap(),
    }
}

#[actix_web::test]
async fn a_recorded_day_replayed_unchanged_makes_the_live_offers_in_the_same_order() {
    let app = spawn_app(Backend::Sqlite).await;
    let since = Utc::now() - chrono::Duration::seconds(5);
    recorded_day(&app).await;
    let live = live_offers(&app).await;
    assert!(live.len() >= 10, "the day made offers: {live:?}");
    let w = window(&app, since).await;
    let current = replay::tunables(&app.settings);
    let (report, base, whatif) = replay::replay(&w, &current, "", &mut |_, _, _| {})
        .await
        .unwrap();
    assert_eq!(
        pairs(&base),
        live,
        "the unchanged replay makes the live offers"
    );
    assert_eq!(pairs(&whatif), live, "an empty patch changes nothing");
    assert!(!report.queues.is_empty());

    // Byte-identical reports for the same inputs.
    let text = |r: &replay::report::Report| {
        (
            replay::report::table(r),
            replay::report::html(r),
            serde_json::to_string(r).unwrap(),
        )
    };
    let patch = "[routing.frustration]\nbot_handoff_after_exchanges = 1\n\n[[staffing.add]]\nsite = \"south\"\nskill = \"scheduling\"\nagents = 2\nfrom = \"00:00\"\nto = \"23:59\"\n";
    let (a, _, _) = replay::replay(&w, &current, patch, &mut |_, _, _| {})
        .await
        .unwrap();
    let (b, _, wb) = replay::replay(&w, &current, patch, &mut |_, _, _| {})
        .await
        .unwrap();
    assert_eq!(text(&a), text(&b));
    // The what-if changed who got what.
    assert_ne!(
        pairs(&wb),
        live,
        "added agents and an earlier bot hand-off change the offers"
    );
    assert!(
        wb.iter().any(|o| o.agent_id.starts_with("whatif-")),
        "the added agents take offers"
    );

    // Export and re-read: the same report.
    let mut buf = Vec::new();
    replay::write_export(&w, &mut buf).unwrap();
    let path = std::env::temp_dir().join(format!("fd-replay-{}.jsonl", uuid::Uuid::new_v4()));
    std::fs::write(&path, &buf).unwrap();
    let again = replay::read_export(&path).unwrap();
    let (c, _, _) = replay::replay(&again, &current, patch, &mut |_, _, _| {})
        .await
        .unwrap();
    assert_eq!(text(&a), text(&c));
    // A newer schema version is refused with both versions named.
    let newer =
        String::from_utf8(buf)
            .unwrap()
            .replacen("\"schema_version\":1", "\"schema_version\":7", 1);
    std::fs::write(&path, newer).unwrap();
    let e = replay::read_export(&path).unwrap_err().to_string();
    assert!(
        e.contains("version 7") && e.contains("up to version 1"),
        "{e}"
    );
    let _ = std::fs::remove_file(&path);
}

#[actix_web::test]
async fn bad_patches_and_empty_windows_are_refused_before_anything_runs() {
    let app = spawn_app(Backend::Sqlite).await;
    let current = replay::tunables(&app.settings);
    let since = Utc::now() - chrono::Duration::hours(30);
    let empty = Window {
        since: since.to_rfc3339(),
        until: (since + chrono::Duration::hours(1)).to_rfc3339(),
        events: app
            .store
            .recorded_window(since, since + chrono::Duration::hours(1))
            .await
            .unwrap(),
    };
    let e = replay::replay(
        &empty,
        &current,
        "[routing]\noffer_timeout_secs = 0\n",
        &mut |_, _, _| {},
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("patch refused") && e.contains("offer_timeout_secs"),
        "{e}"
    );
    let e = replay::replay(
        &empty,
        &current,
        "[routing]\noffer_timout_secs = 10\n",
        &mut |_, _, _| {},
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("offer_timout_secs"), "{e}");
    let e = replay::replay(&empty, &current, "", &mut |_, _, _| {})
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no events in the window"), "{e}");
}
