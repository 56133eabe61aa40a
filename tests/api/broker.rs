//! The RabbitMQ edge: events in (acked only once stored), rejected envelopes
//! dead-lettered with their reason, commands out with confirms, readiness and drain.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::amqp::{amqp_url, enable_broker, eventually, header, settled_broker_counts, Adapter};
use crate::chaos::ChaosProxy;
use crate::helpers::{days_ago, event, spawn_app_with, test_settings, Backend, TestApp};

const WITHIN: Duration = Duration::from_secs(30);

/// A runtime on PostgreSQL wired to its own broker topology, and an adapter.
pub async fn spawn_with_broker(url: Option<&str>) -> (TestApp, Adapter) {
    let (mut settings, dir) = test_settings(Backend::Postgres).await;
    enable_broker(&mut settings, url.unwrap_or(&amqp_url()));
    let adapter = Adapter::connect(&settings).await;
    let app = spawn_app_with(settings, dir).await;
    wait_until_ready(&app).await;
    (app, adapter)
}

/// Waits for `/readyz` to say the broker is up.
pub async fn wait_until_ready(app: &TestApp) {
    eventually(WITHIN, "the broker side to be ready", || async {
        let (status, body) = app.get("/readyz").await;
        (status == 200 && body["broker"] == "up").then_some(())
    })
    .await;
}

/// Waits until `n` events are stored.
pub async fn wait_stored(app: &TestApp, n: i64) {
    eventually(WITHIN * 4, &format!("{n} events stored"), || async {
        let got = app.store.count_events(None).await.ok()?;
        (got >= n).then_some(())
    })
    .await;
}

fn booking(mrn: &str, phone: &str) -> serde_json::Value {
    event(
        "appointment.booked",
        "portal",
        days_ago(0, 0),
        json!({"mrn": mrn, "phone": phone}),
        json!({"appointment_id": format!("appt-{}", &Uuid::new_v4().simple().to_string()[..8]),
               "starts_at": days_ago(-3, 0).to_rfc3339(), "department": "cardiology",
               "location": "North Clinic, floor 3"}),
    )
}

#[actix_web::test]
async fn an_event_published_by_an_adapter_is_stored_once_even_when_published_twice() {
    let (mut app, adapter) = spawn_with_broker(None).await;
    let e = booking("MRN-B-1", "+15550101001");
    adapter.publish_event(&e, "MRN-B-1").await;
    adapter.publish_event(&e, "MRN-B-1").await;
    wait_stored(&app, 1).await;
    eventually(WITHIN, "both deliveries acked", || async {
        (adapter.ready_in_partitions().await == 0).then_some(())
    })
    .await;
    let log = app.store.event_log().await.unwrap();
    assert_eq!(log.len(), 1, "stored exactly once");
    assert_eq!(log[0].1, e["id"].as_str().unwrap());
    let pid = app.patient_id("mrn", "MRN-B-1").await;
    let ctx = app.context(&pid).await;
    assert_eq!(
        ctx["timeline"].as_array().unwrap().len(),
        1,
        "the journey applied it once"
    );
    app.stop().await;
    adapter.cleanup().await;
}

#[actix_web::test]
async fn readiness_reports_the_store_and_the_broker_separately() {
    let (mut app, adapter) = spawn_with_broker(None).await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(body["store"], "up");
    assert_eq!(body["broker"], "up");
    app.stop().await;
    adapter.cleanup().await;

    let embedded = crate::helpers::spawn_app(Backend::Sqlite).await;
    let (status, body) = embedded.get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["broker"], "disabled",
        "the embedded default needs no broker"
    );
}

#[actix_web::test]
async fn malformed_envelopes_are_dead_lettered_with_their_reason_and_nothing_is_stored() {
    let (mut app, adapter) = spawn_with_broker(None).await;
    // Valid JSON, invalid event: a bad phone and no occurred_at.
    let mut bad = booking("MRN-B-2", "+15550101002");
    bad["patient"]["phone"] = json!("555-CANARY-PHI");
    bad.as_object_mut().unwrap().remove("occurred_at");
    adapter.publish_event(&bad, "MRN-B-2").await;
    adapter
        .publish_raw(
            b"{not json",
            "north.portal.appointment.booked",
            "x-1",
            Some("MRN-B-2"),
        )
        .await;
    let dead = &adapter.names.dead_letter_queue;
    eventually(WITHIN, "two dead letters", || async {
        (adapter.ready(dead).await == 2).then_some(())
    })
    .await;
    let letters = adapter.take_all(dead).await;
    let first = &letters[0];
    assert_eq!(
        header(first, "x-frontdoor-reason").as_deref(),
        Some("validation")
    );
    let errors = header(first, "x-frontdoor-errors").unwrap();
    assert!(
        errors.contains("patient.phone") && errors.contains("occurred_at"),
        "{errors}"
    );
    assert!(
        !errors.contains("CANARY"),
        "the reason never carries a value: {errors}"
    );
    assert_eq!(
        first.delivery.data,
        bad.to_string().into_bytes(),
        "the original body is kept"
    );
    assert_eq!(
        header(&letters[1], "x-frontdoor-reason").as_deref(),
        Some("syntax")
    );
    assert_eq!(
        adapter.ready_in_partitions().await,
        0,
        "acked after dead-lettering"
    );
    assert_eq!(app.store.count_events(None).await.unwrap(), 0);
    app.stop().await;
    adapter.cleanup().await;
}

#[actix_web::test]
async fn an_event_that_fails_every_time_is_dead_lettered_after_the_delivery_limit() {
    // Processing fails on every attempt while the store answers (a failing actor
    // whose restart limit is never reached locally): the broker's delivery limit,
    // not an endless requeue, ends it.
    let (mut settings, dir) = test_settings(Backend::Postgres).await;
    enable_broker(&mut settings, &amqp_url());
    settings.supervision.fault_injection = true;
    settings.supervision.patient.max_restarts = 1_000;
    settings.supervision.patient.backoff_ms = 1;
    let adapter = Adapter::connect(&settings).await;
    let mut app = spawn_app_with(settings, dir).await;
    wait_until_ready(&app).await;
    let mut poison = booking("MRN-B-3", "+15550101003");
    poison["fault_injection"] = json!("panic");
    adapter.publish_event(&poison, "poison").await;
    let fine = booking("MRN-B-4", "+15550101004");
    adapter.publish_event(&fine, "MRN-B-4").await;
    let dead = &adapter.names.dead_letter_queue;
    eventually(
        WITHIN,
        "the poison message dead-lettered by the broker",
        || async { (adapter.ready(dead).await == 1).then_some(()) },
    )
    .await;
    let letters = adapter.take_all(dead).await;
    let reason = header(&letters[0], "x-first-death-reason");
    assert_eq!(reason.as_deref(), Some("delivery_limit"));
    wait_stored(&app, 1).await;
    assert_eq!(adapter.ready_in_partitions().await, 0, "no endless requeue");
    let log = app.store.event_log().await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].1,
        fine["id"].as_str().unwrap(),
        "the good event behind it went through"
    );
    app.stop().await;
    adapter.cleanup().await;
}

#[actix_web::test]
async fn commands_go_out_with_their_deterministic_id_as_message_id() {
    let (mut app, mut adapter) = spawn_with_broker(None).await;
    let sms = adapter.command_queue("*.sms.notify.send").await;
    let e = booking("MRN-B-5", "+15550101005");
    adapter.publish_event(&e, "MRN-B-5").await;
    eventually(WITHIN, "the confirmation SMS command", || async {
        (adapter.ready(&sms).await == 1).then_some(())
    })
    .await;
    let got = adapter.take_all(&sms).await;
    let m = &got[0];
    assert_eq!(m.delivery.routing_key.as_str(), "north.sms.notify.send");
    let body: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
    assert_eq!(
        m.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_string()),
        body["id"].as_str().map(str::to_string)
    );
    assert_eq!(m.delivery.properties.delivery_mode(), &Some(2));
    eventually(WITHIN, "the command marked published", || async {
        (app.store.outbox_counts().await.ok()? == (0, 1, 0)).then_some(())
    })
    .await;
    app.stop().await;
    adapter.cleanup().await;
}

#[actix_web::test]
async fn sigterm_drains_acks_what_was_stored_and_stops_within_the_grace_period() {
    let (mut app, adapter) = spawn_with_broker(None).await;
    let n = 300;
    let mut confirms = Vec::new();
    for i in 0..n {
        let e = booking(
            &format!("MRN-D-{}", i % 30),
            &format!("+1555020{:04}", i % 30),
        );
        let key = format!("MRN-D-{}", i % 30);
        confirms.push(
            adapter
                .publish_no_wait(
                    e.to_string().as_bytes(),
                    "north.portal.appointment.booked",
                    e["id"].as_str().unwrap(),
                    Some(&key),
                )
                .await,
        );
    }
    adapter.wait_for_confirms().await;
    wait_stored(&app, 20).await;
    let started = std::time::Instant::now();
    app.stop().await;
    assert!(started.elapsed() < Duration::from_secs(app.settings.application.shutdown_grace_secs));
    // After the drain the runtime holds nothing and acked exactly what it stored:
    // every event is either stored or back in the queue, never both (the batch in
    // hand was finished and acked) and never neither.
    let store = frontdoor::store::Store::connect(&app.settings.store)
        .await
        .unwrap();
    let stored = store.count_events(None).await.unwrap();
    assert!(stored < n, "the drain came before the end of the work");
    let counts = settled_broker_counts(&adapter, WITHIN).await;
    let unacked: u64 = counts.values().map(|c| c.1).sum();
    assert_eq!(
        unacked, 0,
        "nothing left unacked after the drain: {counts:?}"
    );
    let ready = i64::from(adapter.ready_in_partitions().await);
    assert_eq!(
        ready + stored,
        n,
        "stored ({stored}) and acked, or back in the queue ({ready}): exactly one of the two"
    );
    // The next start takes the rest; nothing it receives was stored before.
    let mut next = spawn_app_with(app.settings.clone(), None).await;
    wait_stored(&next, n).await;
    eventually(WITHIN, "the queue empty", || async {
        (adapter.ready_in_partitions().await == 0).then_some(())
    })
    .await;
    assert_eq!(
        next.broker.duplicates(),
        0,
        "nothing stored before the drain was delivered again"
    );
    let log = store.event_log().await.unwrap();
    let unique: std::collections::HashSet<_> = log.iter().map(|(_, id)| id).collect();
    assert_eq!((log.len(), unique.len()), (n as usize, n as usize));
    next.stop().await;
    adapter.cleanup().await;
}

#[actix_web::test]
async fn an_event_that_crashes_its_patient_actor_every_time_is_dead_lettered_and_the_partition_moves_on(
) {
    let (mut settings, dir) = test_settings(Backend::Postgres).await;
    enable_broker(&mut settings, &amqp_url());
    settings.supervision.fault_injection = true;
    settings.supervision.patient.max_restarts = 3;
    settings.supervision.patient.backoff_ms = 5;
    let adapter = Adapter::connect(&settings).await;
    let mut app = spawn_app_with(settings, dir).await;
    wait_until_ready(&app).await;
    let mut poison = booking("MRN-B-6", "+15550101006");
    poison["fault_injection"] = json!("panic");
    adapter.publish_event(&poison, "MRN-B-6").await;
    let after = booking("MRN-B-6", "+15550101006");
    adapter.publish_event(&after, "MRN-B-6").await;
    let dead = &adapter.names.dead_letter_queue;
    eventually(WITHIN, "the crashing event dead-lettered", || async {
        (adapter.ready(dead).await == 1).then_some(())
    })
    .await;
    let letters = adapter.take_all(dead).await;
    assert_eq!(
        letters[0]
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string()),
        poison["id"].as_str().map(str::to_string)
    );
    wait_stored(&app, 1).await;
    let log = app.store.event_log().await.unwrap();
    assert_eq!(log.len(), 1, "the crashing event was never stored");
    assert_eq!(
        log[0].1,
        after["id"].as_str().unwrap(),
        "the patient's next event went through"
    );
    app.stop().await;
    adapter.cleanup().await;
}

#[actix_web::test]
async fn events_without_a_patient_key_all_go_to_one_partition_and_keep_each_patients_order() {
    let (mut settings, dir) = test_settings(Backend::Postgres).await;
    enable_broker(&mut settings, &amqp_url());
    settings.broker.partitions = 4;
    let adapter = Adapter::connect(&settings).await;
    // A first start declares the topology; the events then wait where they land.
    let mut declare = spawn_app_with(settings.clone(), dir).await;
    wait_until_ready(&declare).await;
    declare.stop().await;
    let mut sent = Vec::new();
    for round in 0..10 {
        for p in 0..4 {
            let e = event(
                "contact.message",
                "sms",
                days_ago(0, 0),
                json!({"mrn": format!("MRN-UK-{p}")}),
                json!({"contact_id": format!("sms-uk-{p}"), "from": "patient", "text": format!("{round}")}),
            );
            adapter
                .publish_raw(
                    e.to_string().as_bytes(),
                    "north.sms.contact.message",
                    e["id"].as_str().unwrap(),
                    None,
                )
                .await;
            sent.push(e);
        }
    }
    let mut waiting = Vec::new();
    for i in 0..4 {
        waiting.push(adapter.ready(&settings.broker.partition_queue(i)).await);
    }
    // All in one partition (RabbitMQ 3.10 hashes the missing header like a value:
    // partition 1 of 4 here, not the alternate exchange's partition 0).
    let mut sorted = waiting.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [0, 0, 0, 40],
        "every unkeyed event in one partition: {waiting:?}"
    );
    let mut app = spawn_app_with(settings, None).await;
    wait_stored(&app, 40).await;
    for p in 0..4 {
        let pid = app.patient_id("mrn", &format!("MRN-UK-{p}")).await;
        let ctx = app.context(&pid).await;
        let texts: Vec<&str> = ctx["open_contacts"][0]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    }
    app.stop().await;
    adapter.cleanup().await;
}

#[actix_web::test]
async fn an_envelope_over_the_size_limit_is_dead_lettered_as_too_large_and_nothing_is_stored() {
    let (mut settings, dir) = test_settings(Backend::Postgres).await;
    enable_broker(&mut settings, &amqp_url());
    settings.application.max_event_bytes = 2_048;
    let adapter = Adapter::connect(&settings).await;
    let mut app = spawn_app_with(settings, dir).await;
    wait_until_ready(&app).await;
    let mut big = booking("MRN-B-7", "+15550101007");
    big["reason"] = json!("x".repeat(3_000));
    adapter.publish_event(&big, "MRN-B-7").await;
    let fine = booking("MRN-B-8", "+15550101008");
    adapter.publish_event(&fine, "MRN-B-8").await;
    let dead = &adapter.names.dead_letter_queue;
    eventually(WITHIN, "the oversized envelope dead-lettered", || async {
        (adapter.ready(dead).await == 1).then_some(())
    })
    .await;
    let letters = adapter.take_all(dead).await;
    assert_eq!(
        header(&letters[0], "x-frontdoor-reason").as_deref(),
        Some("too_large")
    );
    let errors = header(&letters[0], "x-frontdoor-errors").unwrap();
    assert!(errors.starts_with("body:"), "{errors}");
    assert_eq!(letters[0].delivery.data, big.to_string().into_bytes());
    wait_stored(&app, 1).await;
    eventually(WITHIN, "both deliveries acked", || async {
        (adapter.ready_in_partitions().await == 0).then_some(())
    })
    .await;
    let log = app.store.event_log().await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].1, fine["id"].as_str().unwrap());
    app.stop().await;
    adapter.cleanup().await;
}

#[actix_web::test]
async fn a_relay_cut_between_publish_and_confirm_sends_the_same_command_again_and_nothing_else() {
    let proxy = ChaosProxy::start("127.0.0.1:5672").await;
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    let (mut app, mut adapter) = spawn_with_broker(Some(&url)).await;
    let sink = adapter.command_queue("#").await;
    // The broker receives what the relay publishes; its confirms never arrive.
    proxy.swallow_replies(true);
    let e = booking("MRN-B-9", "+15550101009");
    app.store_event(&e).await;
    eventually(WITHIN, "the command at the broker", || async {
        (adapter.ready(&sink).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        app.store.outbox_counts().await.unwrap(),
        (1, 0, 0),
        "unconfirmed: still pending"
    );
    // The connection is cut before the confirm gets through; the relay reconnects.
    proxy.swallow_replies(false);
    proxy.cut();
    eventually(
        WITHIN,
        "the command confirmed after the reconnect",
        || async { (app.store.outbox_counts().await.ok()? == (0, 1, 0)).then_some(()) },
    )
    .await;
    let got = adapter.take_all(&sink).await;
    assert_eq!(
        got.len(),
        2,
        "the same command twice on the wire, nothing else"
    );
    let id = |m: &lapin::message::BasicGetMessage| {
        m.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
    };
    assert_eq!(id(&got[0]), id(&got[1]), "one message_id");
    assert_eq!(got[0].delivery.data, got[1].delivery.data, "one body");
    let body: serde_json::Value = serde_json::from_slice(&got[0].delivery.data).unwrap();
    assert_eq!(body["caused_by"], e["id"]);
    app.stop().await;
    adapter.cleanup().await;
}
