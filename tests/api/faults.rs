//! Faults after the store write: the event is durable but the live path after it
//! fails. Nothing may be lost, and the journey must match the log afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use frontdoor_actors::event::Envelope;
use frontdoor_actors::ids::PatientId;
use frontdoor_actors::patient::{Applied, PatientError};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sqlx::{Connection, Executor};

use crate::helpers::{days_ago, event, spawn_app, spawn_app_with, test_settings, Backend, TestApp};

fn message(mrn: &str, text: &str) -> Value {
    event(
        "contact.message",
        "chat",
        days_ago(0, 0),
        json!({"mrn": mrn}),
        json!({"contact_id": format!("chat-{mrn}"), "from": "patient", "text": text}),
    )
}

/// The context as served, passivating first when `refold` (a fold of the log).
async fn context(app: &TestApp, pid: &str, refold: bool) -> String {
    if refold {
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

#[actix_web::test]
async fn a_patient_actor_dying_after_the_store_write_loses_nothing_and_its_journey_matches_the_log()
{
    let (mut settings, dir) = test_settings(Backend::Sqlite).await;
    settings.supervision.fault_injection = true;
    let app = spawn_app_with(settings, dir).await;
    let mrn = "MRN-FAULT-1";
    app.store_event(&message(mrn, "before")).await;
    let pid = app.patient_id("mrn", mrn).await;
    let patient = PatientId::parse(&pid).unwrap();

    // Four events in the actor's mailbox at once; the second kills the actor once
    // it is stored (outside the guarded probe), with the last two queued behind it.
    let mut sent = vec![
        message(mrn, "one"),
        message(mrn, "two"),
        message(mrn, "three"),
        message(mrn, "four"),
    ];
    sent[1]["fault_injection"] = json!("panic_after_store");
    let answers = futures_util::future::join_all(sent.iter().map(|e| {
        let env = Envelope::parse(e.to_string().as_bytes(), 1 << 16).unwrap();
        app.runtime
            .patients
            .apply(patient, Arc::new(env), Vec::new())
    }))
    .await;
    assert!(
        matches!(answers[0], Ok(Applied::Stored { .. })),
        "{answers:?}"
    );
    for a in &answers[1..] {
        assert!(
            matches!(a, Err(PatientError::Unavailable)),
            "the dead actor's callers hear an error, never silence: {a:?}"
        );
    }
    // The callers retry (503 over HTTP means retry): the event stored before the
    // actor died is a duplicate, the others are stored now, by a fresh incarnation.
    assert_eq!(app.post_event(&sent[1]).await.status().as_u16(), 200);
    for e in &sent[2..] {
        app.store_event(e).await;
    }

    let log = app.store.event_log().await.unwrap();
    for e in &sent {
        let id = e["id"].as_str().unwrap();
        assert_eq!(log.iter().filter(|(_, i)| i == id).count(), 1, "{id}");
    }
    let live = context(&app, &pid, false).await;
    let ctx: Value = serde_json::from_str(&live).unwrap();
    assert_eq!(ctx["events_total"], 5);
    let texts: Vec<&str> = ctx["open_contacts"][0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["before", "one", "two", "three", "four"]);
    assert_eq!(live, context(&app, &pid, true).await, "live and refolded");
    let (_, runtime) = app.get("/v1/runtime").await;
    assert!(
        runtime["supervision"]["patient"]["restarts"].as_u64() >= Some(1),
        "the shard counted the restart: {runtime}"
    );
}

/// A trigger in the test's own database refuses events whose body holds the mark:
/// a non-transient error the store did not cause.
async fn refuse_marked_events(app: &TestApp) {
    let url = app.settings.store.url.expose_secret().to_string();
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        c.execute(
            "CREATE FUNCTION refuse_marked() RETURNS trigger AS $$ BEGIN \
             IF NEW.body LIKE '%refuse-me%' THEN RAISE EXCEPTION 'refused by the test'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql",
        )
        .await
        .unwrap();
        c.execute(
            "CREATE TRIGGER refuse_marked BEFORE INSERT ON events \
             FOR EACH ROW EXECUTE FUNCTION refuse_marked()",
        )
        .await
        .unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        c.execute(
            "CREATE TRIGGER refuse_marked BEFORE INSERT ON events \
             WHEN NEW.body LIKE '%refuse-me%' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .await
        .unwrap();
    }
}

async fn a_non_transient_error_in_a_group_commit_batch_undoes_only_its_own_event(backend: Backend) {
    let app = spawn_app(backend).await;
    refuse_marked_events(&app).await;
    // Straight to the store: one batch of three, the middle one refused.
    let batch: Vec<_> = ["kept-1", "refuse-me", "kept-2"]
        .iter()
        .map(|text| {
            let e = message(&format!("MRN-GC-{text}"), text);
            let env = Envelope::parse(e.to_string().as_bytes(), 1 << 16).unwrap();
            (PatientId::new(), Arc::new(env), Default::default())
        })
        .collect();
    let outcomes = app
        .store
        .append_batch(&batch)
        .await
        .expect("the batch commits");
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    let refused = outcomes[1]
        .as_ref()
        .expect_err("the marked event is refused");
    assert!(!refused.is_transient(), "{refused}");
    let log: Vec<String> = app
        .store
        .event_log()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let id = |i: usize| batch[i].1.id.to_string();
    assert_eq!(log, [id(0), id(2)], "the others in the batch are stored");

    // Through the runtime, sent together so they share batches: the refused one is
    // answered 422 and never applied; every journey matches its log.
    let mut events: Vec<Value> = (0..6)
        .map(|i| message(&format!("MRN-GC-{i}"), &format!("kept {i}")))
        .collect();
    events[3]["patient"] = json!({"mrn": "MRN-GC-0"});
    events[3]["text"] = json!("refuse-me");
    let statuses: Vec<u16> =
        futures_util::future::join_all(events.iter().map(|e| app.post_event(e)))
            .await
            .iter()
            .map(|r| r.status().as_u16())
            .collect();
    assert_eq!(statuses, [202, 202, 202, 422, 202, 202]);
    for i in [0, 1, 2, 4, 5] {
        let pid = app.patient_id("mrn", &format!("MRN-GC-{i}")).await;
        let live = context(&app, &pid, false).await;
        let ctx: Value = serde_json::from_str(&live).unwrap();
        assert_eq!(ctx["events_total"], 1, "MRN-GC-{i}: {ctx}");
        assert_eq!(live, context(&app, &pid, true).await, "live and refolded");
    }
}

#[actix_web::test]
async fn a_non_transient_error_in_a_group_commit_batch_undoes_only_its_own_event_on_sqlite() {
    a_non_transient_error_in_a_group_commit_batch_undoes_only_its_own_event(Backend::Sqlite).await;
}

#[actix_web::test]
async fn a_non_transient_error_in_a_group_commit_batch_undoes_only_its_own_event_on_postgres() {
    a_non_transient_error_in_a_group_commit_batch_undoes_only_its_own_event(Backend::Postgres)
        .await;
}
