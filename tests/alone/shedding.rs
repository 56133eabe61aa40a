//! The patient mailbox bound (`patients.max_in_flight`, `mailbox_wait_ms`): past it,
//! work is shed with an answer the edge can act on (503 over HTTP, a requeue from
//! the broker), counted, and nothing is lost once there is room again.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sqlx::{Connection, Executor};

use crate::amqp::{amqp_url, enable_broker, eventually, Adapter};
use crate::helpers::{days_ago, event, spawn_app_with, test_settings, Backend};
use crate::{alone, series};

const WITHIN: Duration = Duration::from_secs(60);

fn message(mrn: &str, text: &str) -> Value {
    event(
        "contact.message",
        "sms",
        days_ago(0, 0),
        json!({"mrn": mrn}),
        json!({"contact_id": format!("sms-{mrn}"), "from": "patient", "text": text}),
    )
}

#[actix_web::test]
async fn past_the_mailbox_bound_work_is_shed_as_503_or_a_requeue_counted_and_stored_once_there_is_room(
) {
    let _alone = alone().await;
    let (mut settings, dir) = test_settings(Backend::Postgres).await;
    enable_broker(&mut settings, &amqp_url());
    settings.patients.max_in_flight = 1;
    settings.patients.mailbox_wait_ms = 200;
    settings.broker.delivery_limit = 5;
    let adapter = Adapter::connect(&settings).await;
    let app = spawn_app_with(settings.clone(), dir).await;
    eventually(WITHIN, "the broker side ready", || async {
        let (status, body) = app.get("/readyz").await;
        (status == 200 && body["broker"] == "up").then_some(())
    })
    .await;
    // Three known patients (resolving them reads the store, never writes).
    for i in 0..3 {
        app.store_event(&message(&format!("MRN-SH-{i}"), "first"))
            .await;
    }
    let before = app.metrics().await;
    let shed_series = r#"frontdoor_messages_shed_total{kind="patient"}"#;
    let requeued_series = r#"frontdoor_broker_deliveries_total{outcome="requeued"}"#;

    // The test holds a lock on the event log: the next append waits for it while
    // its message holds the only mailbox permit.
    let mut lock = sqlx::PgConnection::connect(settings.store.url.expose_secret())
        .await
        .expect("a connection of the test's own");
    lock.execute("BEGIN").await.unwrap();
    lock.execute("LOCK TABLE events IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let holder = message("MRN-SH-0", "held");
    let held = {
        let (client, address, token, body) = (
            app.client.clone(),
            app.address.clone(),
            app.token.clone(),
            holder.to_string(),
        );
        actix_rt::spawn(async move {
            client
                .post(format!("{address}/v1/events"))
                .bearer_auth(token)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    eventually(WITHIN, "the permit held", || async {
        (app.runtime.patients.in_flight() == 1).then_some(())
    })
    .await;

    // Over HTTP: shed after mailbox_wait_ms, 503 with Retry-After, nothing stored.
    let shed = message("MRN-SH-1", "shed");
    let res = tokio::time::timeout(Duration::from_secs(10), app.post_event(&shed))
        .await
        .expect("shed within the wait, not queued behind the held message");
    assert_eq!(res.status().as_u16(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );

    // From the broker: shed, retried in place, then returned to the queue (the
    // broker sends it again, flagged redelivered).
    let queued = message("MRN-SH-2", "through the broker");
    adapter.publish_event(&queued, "MRN-SH-2").await;
    eventually(
        WITHIN,
        "a shed delivery requeued and sent again",
        || async { (app.broker.redelivered() >= 1).then_some(()) },
    )
    .await;
    // The depth gauge (refreshed every 5 s) shows the one held message.
    eventually(WITHIN, "the mailbox depth in metrics", || async {
        let depth = series(
            &app.metrics().await,
            r#"frontdoor_mailbox_depth{kind="patient"}"#,
        );
        (depth == 1.0).then_some(())
    })
    .await;

    // Room again: everything goes through, once.
    lock.execute("ROLLBACK").await.unwrap();
    assert_eq!(held.await.unwrap().unwrap(), 202, "the held event stored");
    app.store_event(&shed).await;
    eventually(WITHIN, "the requeued event stored", || async {
        (app.store.count_events(None).await.ok()? == 6).then_some(())
    })
    .await;
    let log = app.store.event_log().await.unwrap();
    for e in [&holder, &shed, &queued] {
        let id = e["id"].as_str().unwrap();
        assert_eq!(log.iter().filter(|(_, i)| i == id).count(), 1, "{id}");
    }
    assert_eq!(
        adapter.ready(&adapter.names.dead_letter_queue).await,
        0,
        "nothing dead-lettered"
    );

    // Counted: the runtime's own count and the metric agree.
    let after = app.metrics().await;
    let (_, runtime) = app.get("/v1/runtime").await;
    let shed_count = runtime["supervision"]["patient"]["shed"].as_u64().unwrap();
    assert!(
        shed_count >= 2,
        "one over HTTP, at least one from the broker: {runtime}"
    );
    assert_eq!(
        series(&after, shed_series) - series(&before, shed_series),
        shed_count as f64
    );
    assert!(series(&after, requeued_series) - series(&before, requeued_series) >= 1.0);
    adapter.cleanup().await;
}
