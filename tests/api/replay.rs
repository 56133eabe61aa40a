//! `frontdoor replay`: a live run recorded through the events endpoint and replayed
//! unchanged makes the same offers, to the same agents, in the same order; the same
//! inputs give byte-identical reports; a what-if changes the figures; bad input is
//! refused before anything runs.

use chrono::Utc;
use frontdoor::replay::{self, engine::Offer, Window};
use serde_json::{json, Value};

use crate::helpers::{
    event, principal_of, spawn_app, spawn_app_on_the_wall_clock, token_for, Backend, TestApp,
};

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

/// The window written to an export file and read back, and the file's bytes.
fn exported(w: &Window) -> (Window, Vec<u8>) {
    let mut buf = Vec::new();
    replay::write_export(w, &mut buf).unwrap();
    let path = std::env::temp_dir().join(format!("fd-replay-{}.jsonl", uuid::Uuid::new_v4()));
    std::fs::write(&path, &buf).unwrap();
    let again = replay::read_export(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    (again, buf)
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
    let sites = std::sync::Arc::new(app.settings.site_directory().unwrap());
    let (report, base, whatif) = replay::replay(&w, &current, &sites, "", &mut |_, _, _| {})
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
    let (a, _, _) = replay::replay(&w, &current, &sites, patch, &mut |_, _, _| {})
        .await
        .unwrap();
    let (b, _, wb) = replay::replay(&w, &current, &sites, patch, &mut |_, _, _| {})
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
    let (again, buf) = exported(&w);
    let (c, _, _) = replay::replay(&again, &current, &sites, patch, &mut |_, _, _| {})
        .await
        .unwrap();
    assert_eq!(text(&a), text(&c));
    // A newer schema version is refused with both versions named.
    let newer =
        String::from_utf8(buf)
            .unwrap()
            .replacen("\"schema_version\":2", "\"schema_version\":7", 1);
    let path = std::env::temp_dir().join(format!("fd-replay-{}.jsonl", uuid::Uuid::new_v4()));
    std::fs::write(&path, newer).unwrap();
    let e = replay::read_export(&path).unwrap_err().to_string();
    assert!(
        e.contains("version 7") && e.contains("up to version 2"),
        "{e}"
    );
    let _ = std::fs::remove_file(&path);
}

#[actix_web::test]
async fn bad_patches_and_empty_windows_are_refused_before_anything_runs() {
    let app = spawn_app(Backend::Sqlite).await;
    let current = replay::tunables(&app.settings);
    let sites = std::sync::Arc::new(app.settings.site_directory().unwrap());
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
        &sites,
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
        &sites,
        "[routing]\noffer_timout_secs = 10\n",
        &mut |_, _, _| {},
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("offer_timout_secs"), "{e}");
    let e = replay::replay(&empty, &current, &sites, "", &mut |_, _, _| {})
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no events in the window"), "{e}");
}

/// The longest common subsequence of two offer lists: the offers both made, in the
/// same relative order, and where each list's unmatched offers are.
fn common_offers(
    a: &[(String, String)],
    b: &[(String, String)],
) -> (usize, Vec<usize>, Vec<usize>) {
    let (n, m) = (a.len(), b.len());
    let mut t = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i][j] = if a[i] == b[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    while i < n && j < m {
        if a[i] == b[j] {
            i += 1;
            j += 1;
        } else if t[i + 1][j] >= t[i][j + 1] {
            only_a.push(i);
            i += 1;
        } else {
            only_b.push(j);
            j += 1;
        }
    }
    only_a.extend(i..n);
    only_b.extend(j..m);
    (t[0][0] as usize, only_a, only_b)
}

#[actix_web::test]
async fn a_live_simulator_run_is_replayed_in_the_routers_order_and_makes_most_of_its_offers() {
    let app = spawn_app_on_the_wall_clock(Backend::Sqlite).await;
    let since = Utc::now() - chrono::Duration::seconds(5);
    // Twelve floor hours in three minutes: about 300 contacts at three sites in 20 s,
    // sixteen requests in flight, desktops answering from GET /v1/agents.
    let opts = frontdoor_simulate::SimulateOptions {
        target: app.address.clone(),
        seed: 5,
        day_minutes: 3.0,
        start_hour: 8.0,
        end_hour: 20.0,
        max_duration: std::time::Duration::from_secs(20),
        max_contacts: 300,
        token: Some(token_for(principal_of(frontdoor::auth::Role::Admin)).into()),
        ..frontdoor_simulate::SimulateOptions::default()
    };
    let summary = frontdoor_simulate::run(opts)
        .await
        .expect("the simulation runs");
    // A desktop's answer to an offer routing already took back (the patient hung
    // up meanwhile) is refused with a 4xx: a live floor's race, not a failure.
    assert!(summary.events_sent() > 500, "{summary}");
    let live = live_offers(&app).await;
    assert!(live.len() >= 100, "the run made offers: {summary}");
    let w = window(&app, since).await;

    // The recording holds the router's order: every routing input the router
    // applied (agent events, answers, wrap-ups, the route requests of patient
    // events) has its place, and the replay feeds them in it, each patient's
    // events still in log order.
    let routed = w.events.iter().filter(|e| e.applied_seq.is_some()).count();
    let starts = w
        .events
        .iter()
        .filter(|e| e.body.contains("\"type\":\"contact.started\""))
        .count();
    assert!(
        routed >= starts,
        "every contact.started was routed and recorded: {routed} routed of {starts} starts"
    );
    // The live router's timers decided something (an east contact overflowed,
    // offers timed out) and those runs have their place too.
    let ticks = w.events.iter().filter(|e| e.tick).count();
    assert!(
        ticks > 0,
        "the timer runs that decided something are recorded"
    );
    // An export keeps the router's order and its timer runs.
    let (again, _) = exported(&w);
    let places = |w: &replay::Window| -> Vec<_> {
        w.events
            .iter()
            .map(|e| (e.applied_seq, e.applied_at_ms, e.applied_at_us, e.tick))
            .collect()
    };
    assert_eq!(places(&again), places(&w), "the export keeps every place");
    let order = replay::router_order(&w.events);
    let applied: Vec<i64> = order
        .iter()
        .filter_map(|&i| w.events[i].applied_seq)
        .collect();
    assert!(
        applied.windows(2).all(|p| p[0] < p[1]),
        "routing inputs in the router's order"
    );
    let mut last_pos: std::collections::HashMap<&str, usize> = Default::default();
    for &i in &order {
        let p = w.events[i].patient_id.as_str();
        if p.is_empty() {
            continue;
        }
        if let Some(prev) = last_pos.insert(p, i) {
            assert!(prev < i, "a patient's events keep their log order");
        }
    }

    // Replayed unchanged: the offers both runs made, in the same order.
    let current = replay::tunables(&app.settings);
    let sites = std::sync::Arc::new(app.settings.site_directory().unwrap());
    let (_, base, _) = replay::replay(&w, &current, &sites, "", &mut |_, _, _| {})
        .await
        .unwrap();
    let replayed = pairs(&base);
    let same_prefix = live
        .iter()
        .zip(&replayed)
        .take_while(|(a, b)| a == b)
        .count();
    let (common, only_live, only_replay) = common_offers(&live, &replayed);
    eprintln!(
        "live simulator run: {} events and {ticks} timer runs, {} live offers, {} replayed; the first {} identical; {} in common in the same order ({:.0} %); {} only live, {} only replayed",
        w.events.len() - ticks,
        live.len(),
        replayed.len(),
        same_prefix,
        common,
        100.0 * common as f64 / live.len() as f64,
        only_live.len(),
        only_replay.len()
    );
    if let (Some(l), Some(r)) = (live.get(same_prefix), replayed.get(same_prefix)) {
        eprintln!(
            "first difference, offer #{same_prefix}: live {l:?}, replayed {r:?} at {} ms",
            base[same_prefix].at_ms
        );
    }
    // docs/whatif.md ("Fidelity") says which differences remain and why.
    assert!(
        same_prefix >= 1,
        "the replay starts with the live run's first offer"
    );
    assert!(
        common * 2 >= live.len(),
        "most live offers are made again, in order: {common} of {}",
        live.len()
    );
}

#[actix_web::test]
async fn a_route_request_a_cluster_recorded_under_its_command_id_gives_the_event_its_place() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = spawn_app(backend).await;
        let since = Utc::now() - chrono::Duration::seconds(5);
        // A note: stored, and never routed by this node, so only the cluster's
        // record below can give it a place.
        let mut e = event(
            "note.recorded",
            "desktop",
            Utc::now(),
            json!({"mrn": "MRN-CLUSTER-ORDER"}),
            json!({"author": "rn-jlee", "role": "nurse", "text": "called about a refill"}),
        );
        e["site"] = json!("north");
        app.store_event(&e).await;
        let id: uuid::Uuid = e["id"].as_str().unwrap().parse().unwrap();
        // What a cluster's leader writes when it applies that event's routing
        // request from the routing queue: the command's id, not the event's.
        let changes = frontdoor_actors::ports::RoutingChanges {
            inputs: vec![frontdoor_actors::ports::AppliedInput::input(
                frontdoor_actors::command::Command::routing_request_id(id),
                Utc::now(),
            )],
            ..Default::default()
        };
        app.store.save_routing(&changes, None).await.unwrap();
        let w = window(&app, since).await;
        let mine = w
            .events
            .iter()
            .find(|r| r.body.contains(&id.to_string()))
            .expect("the event is in the window");
        assert!(
            mine.applied_seq.is_some() && mine.applied_at_ms.is_some(),
            "{backend:?}: the event has its place in the router's order"
        );
    }
}
