//! Supervision drills: a patient actor failing on a marked event, escalation, a
//! flapping store, and live reload of thresholds.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Connection;

use crate::helpers::{
    days_ago, event, postgres_server_url, spawn_app, spawn_app_with, test_settings, Backend,
};

fn marked(mrn: &str, contact: &str) -> Value {
    let mut e = event(
        "contact.message",
        "chat",
        days_ago(0, 0),
        json!({"mrn": mrn}),
        json!({"contact_id": contact, "from": "patient", "text": "hello"}),
    );
    e["fault_injection"] = json!("panic");
    e
}

fn message(mrn: &str, contact: &str, text: &str) -> Value {
    event(
        "contact.message",
        "chat",
        days_ago(0, 0),
        json!({"mrn": mrn}),
        json!({"contact_id": contact, "from": "patient", "text": text}),
    )
}

#[actix_web::test]
async fn a_patient_actor_failing_on_an_event_restarts_from_the_store_and_dead_letters_it_after_its_limit(
) {
    let (mut settings, dir) = test_settings(Backend::Sqlite).await;
    settings.supervision.fault_injection = true;
    settings.supervision.patient.max_restarts = 3;
    settings.supervision.patient.backoff_ms = 5;
    let app = spawn_app_with(settings, dir).await;
    app.store_event(&message("MRN-SUP", "c-1", "before")).await;

    let poison = marked("MRN-SUP", "c-1");
    // Retried (at-least-once): twice "retry later", the third time dead-lettered.
    assert_eq!(app.post_event(&poison).await.status().as_u16(), 503);
    // Other patients are unaffected while this one restarts.
    app.store_event(&message("MRN-OTHER", "c-9", "unaffected"))
        .await;
    assert_eq!(app.post_event(&poison).await.status().as_u16(), 503);
    let third = app.post_event(&poison).await;
    assert_eq!(third.status().as_u16(), 422);
    let problem: Value = third.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("failed 3 times"),
        "{problem}"
    );

    // The actor processes what comes after; nothing before was lost; the poison never entered the log.
    app.store_event(&message("MRN-SUP", "c-1", "after")).await;
    let pid = app.patient_id("mrn", "MRN-SUP").await;
    let ctx = app.context(&pid).await;
    assert_eq!(ctx["events_total"], 2);
    let texts: Vec<&str> = ctx["open_contacts"][0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["before", "after"]);

    // Metrics are process-wide in tests: exact counts come from this app's /v1/runtime.
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"frontdoor_actor_restarts_total{kind="patient"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"frontdoor_poison_messages_total{kind="patient"}"#));
    let (_, rt) = app.get("/v1/runtime").await;
    assert_eq!(rt["supervision"]["patient"]["restarts"], 3);
    assert_eq!(rt["supervision"]["patient"]["poisoned"], 1);
}

#[actix_web::test]
async fn too_many_failures_within_the_period_escalate_to_the_shard_which_starts_a_fresh_actor() {
    let (mut settings, dir) = test_settings(Backend::Sqlite).await;
    settings.supervision.fault_injection = true;
    settings.supervision.patient.max_restarts = 2;
    settings.supervision.patient.within_secs = 60;
    settings.supervision.patient.backoff_ms = 5;
    let app = spawn_app_with(settings, dir).await;
    app.store_event(&message("MRN-ESC", "c-1", "first")).await;
    for i in 0..3 {
        let status = app
            .post_event(&marked("MRN-ESC", &format!("c-x{i}")))
            .await
            .status()
            .as_u16();
        assert!(status == 503 || status == 422, "{status}");
    }
    let (_, rt) = app.get("/v1/runtime").await;
    assert_eq!(rt["supervision"]["patient"]["escalations"], 1, "{rt}");
    // The next message starts a fresh incarnation from the store.
    app.store_event(&message("MRN-ESC", "c-1", "second")).await;
    let pid = app.patient_id("mrn", "MRN-ESC").await;
    assert_eq!(app.context(&pid).await["events_total"], 2);
    assert!(app
        .metrics()
        .await
        .contains(r#"frontdoor_actor_escalations_total{kind="patient"}"#));
}

async fn poll<F, Fut>(deadline: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if f().await {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[actix_web::test]
async fn a_flapping_store_escalates_the_probe_and_readiness_recovers_by_itself() {
    let (mut settings, dir) = test_settings(Backend::Postgres).await;
    settings.supervision.store_probe_interval_ms = 50;
    settings.supervision.tasks.max_restarts = 2;
    settings.supervision.tasks.within_secs = 60;
    settings.supervision.tasks.backoff_ms = 20;
    settings.supervision.tasks.max_backoff_ms = 200;
    settings.store.acquire_timeout_secs = 1;
    // The audit purge runs every second, so it certainly meets the outage: a periodic
    // task the store refuses must not keep the node unready once the store is back.
    settings.security.audit_purge_interval_secs = 1;
    let db = secrecy::ExposeSecret::expose_secret(&settings.store.url)
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let app = spawn_app_with(settings, dir).await;
    assert_eq!(app.get("/readyz").await.0, 200);

    // The dependency goes away: this test's database refuses connections.
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", postgres_server_url()))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"ALTER DATABASE "{db}" ALLOW_CONNECTIONS false"#
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
    )))
    .execute(&mut admin)
    .await
    .unwrap();

    let escalated = poll(Duration::from_secs(30), || async {
        let (_, rt) = app.get("/v1/runtime").await;
        rt["components_down"]
            .as_array()
            .is_some_and(|d| d.iter().any(|c| c == "store_probe"))
    })
    .await;
    let (_, rt) = app.get("/v1/runtime").await;
    assert!(escalated, "{rt}");
    assert!(
        rt["supervision"]["store_probe"]["restarts"]
            .as_u64()
            .unwrap()
            >= 2
    );
    assert_eq!(app.get("/readyz").await.0, 503);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"frontdoor_actor_escalations_total{kind="store_probe"}"#),
        "{metrics}"
    );
    // (Exact values come from this app's /v1/runtime: metrics are process-wide in tests.)
    assert!(metrics.contains(r#"frontdoor_component_up{kind="store_probe"}"#));

    // The dependency comes back: the probe recovers without a restart of the runtime.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"ALTER DATABASE "{db}" ALLOW_CONNECTIONS true"#
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    assert!(
        poll(Duration::from_secs(30), || async {
            app.get("/readyz").await.0 == 200
        })
        .await
    );
}

#[actix_web::test]
async fn a_changed_threshold_takes_effect_for_the_next_contact_and_an_invalid_one_is_rejected() {
    let app = spawn_app(Backend::Sqlite).await;
    let p = json!({"mrn": "MRN-RELOAD"});
    app.store_event(&event(
        "contact.started",
        "voice",
        days_ago(0, -2),
        p.clone(),
        json!({"contact_id": "r-1", "skill": "billing"}),
    ))
    .await;
    app.store_event(&event(
        "contact.started",
        "sms",
        days_ago(0, -1),
        p.clone(),
        json!({"contact_id": "r-2", "skill": "billing"}),
    ))
    .await;
    let (_, c) = app.get("/v1/contacts/r-2").await;
    assert_eq!(
        c["level"], "normal",
        "two contacts are not urgent by default"
    );

    let (status, body) = app
        .put(
            "/v1/runtime/config",
            &json!({"routing": {"frustration": {"repeat_contacts_threshold": 2}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config_version"], 2);
    app.store_event(&event(
        "contact.started",
        "chat",
        days_ago(0, 0),
        p,
        json!({"contact_id": "r-3", "skill": "billing"}),
    ))
    .await;
    let (_, c) = app.get("/v1/contacts/r-3").await;
    assert_eq!(c["level"], "urgent", "{c}");

    for (bad, field) in [
        (
            json!({"routing": {"offer_timeout_secs": 0}}),
            "offer_timeout_secs",
        ),
        (
            json!({"routing": {"offer_timeout_sec": 45}}),
            "offer_timeout_sec",
        ),
        (
            json!({"supervision": {"patient": {"within_secs": 0}}}),
            "within_secs",
        ),
        (json!({"store": {"url": "x"}}), "store"),
    ] {
        let (status, problem) = app.put("/v1/runtime/config", &bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{problem}"
        );
    }
    let (_, cfg) = app.get("/v1/runtime/config").await;
    assert_eq!(
        cfg["config_version"], 2,
        "rejected changes do not bump the version"
    );
    assert_eq!(cfg["config"]["routing"]["offer_timeout_secs"], 30);
    assert_eq!(
        cfg["config"]["routing"]["frustration"]["repeat_contacts_threshold"],
        2
    );
}
