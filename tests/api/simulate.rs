//! The simulator as a RabbitMQ adapter (`frontdoor simulate --amqp`): what it
//! publishes is what docs/contract.md asks of adapters, the runtime stores it, and
//! the desktops answer the offers the runtime relays to the commands exchange.

use std::collections::HashSet;
use std::time::Duration;

use frontdoor_simulate::amqp::{publish_with_retry, Outcome, Published};
use frontdoor_simulate::{self as simulate, AmqpOptions, SimulateOptions};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::amqp::{amqp_url, enable_broker, eventually, header, Adapter};
use crate::broker::wait_until_ready;
use crate::helpers::{principal_of, spawn_app_with, test_settings, token_for, Backend};

/// An exclusive queue bound with `#` to `exchange`: a copy of everything routed there.
async fn tap(adapter: &Adapter, exchange: &str) -> String {
    let q = adapter
        .channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare the tap");
    let name = q.name().as_str().to_string();
    adapter
        .channel
        .queue_bind(
            name.as_str().into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the tap");
    name
}

#[actix_web::test]
async fn a_simulation_over_amqp_is_confirmed_keyed_by_patient_stored_and_answered_from_the_commands_exchange(
) {
    let (mut settings, dir) = test_settings(Backend::Postgres).await;
    enable_broker(&mut settings, &amqp_url());
    // Routing's timers tick as configured (the clock itself stays put).
    settings.routing.tick_interval_ms = frontdoor::configuration::base_configuration()
        .expect("config/base.toml")
        .routing
        .tick_interval_ms;
    let adapter = Adapter::connect(&settings).await;
    let app = spawn_app_with(settings, dir).await;
    wait_until_ready(&app).await;
    let names = app.settings.broker.clone();
    let events_tap = tap(&adapter, &names.events_exchange).await;

    let opts = SimulateOptions {
        target: app.address.clone(),
        seed: 11,
        // Twelve floor hours in six minutes, twice the volume; the run stops after
        // 10 s or 200 contacts.
        day_minutes: 6.0,
        start_hour: 8.0,
        end_hour: 20.0,
        volume_scale: 2.0,
        max_duration: Duration::from_secs(10),
        max_contacts: 200,
        token: Some(token_for(principal_of(frontdoor::auth::Role::Admin)).into()),
        amqp: Some(AmqpOptions {
            url: amqp_url().into(),
            events_exchange: names.events_exchange.clone(),
            commands_exchange: names.commands_exchange.clone(),
        }),
        ..SimulateOptions::default()
    };
    let summary = simulate::run(opts).await.expect("the simulation runs");
    eprintln!("{summary}");

    // Every event confirmed, first time: nothing nacked, returned or lost.
    let sent = summary.events_sent();
    assert!(sent > 50, "too little traffic: {summary}");
    assert_eq!(summary.confirmed, sent, "{summary}");
    assert_eq!(summary.published, sent, "{summary}");
    assert_eq!((summary.nacked, summary.returned), (0, 0), "{summary}");
    assert_eq!(summary.errors(), 0, "{summary}");

    // What reached the events exchange: one message per event, each as the contract
    // says (routing key, message id, x-patient-key = MRN, or agent id on routing events).
    let messages = adapter.take_all(&events_tap).await;
    assert_eq!(
        messages.len() as u64,
        sent,
        "messages on the events exchange"
    );
    let mut patient_events = HashSet::new();
    for m in &messages {
        let body: Value = serde_json::from_slice(&m.delivery.data).expect("a JSON envelope");
        let expected_key = match body["patient"]["mrn"].as_str() {
            Some(mrn) => {
                patient_events.insert(body["id"].as_str().unwrap_or_default().to_string());
                mrn
            }
            None => body["agent_id"].as_str().expect("a routing event's agent"),
        };
        assert_eq!(
            header(m, "x-patient-key").as_deref(),
            Some(expected_key),
            "x-patient-key of a {}",
            body["type"]
        );
        assert_eq!(
            m.delivery.routing_key.as_str(),
            format!(
                "{}.{}.{}",
                body["site"].as_str().unwrap_or(""),
                body["channel"].as_str().unwrap_or(""),
                body["type"].as_str().unwrap_or("")
            ),
        );
        assert_eq!(
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str()),
            body["id"].as_str()
        );
        assert_eq!(m.delivery.properties.delivery_mode(), &Some(2));
    }

    // The runtime stored every patient event (routing events are applied, not stored
    // in the journey).
    let want = patient_events.len() as i64;
    assert!(want > 20, "too few patient events: {summary}");
    eventually(
        Duration::from_secs(60),
        &format!("{want} events stored"),
        || async {
            let got = app.store.count_events(None).await.ok()?;
            (got == want).then_some(())
        },
    )
    .await;

    // The outcome came back on the commands exchange: offers the desktops answered.
    let offers = summary
        .commands_by_type
        .get("contact.offer")
        .copied()
        .unwrap_or(0);
    assert!(offers > 0, "no contact.offer command seen: {summary}");
    assert!(
        summary.offers_seen > 0 && summary.answered > 0,
        "no offer answered from the commands: {summary}"
    );
    assert!(summary.contacts_started > 10, "{summary}");

    adapter.cleanup().await;
}

#[actix_web::test]
async fn an_event_the_broker_returns_or_nacks_is_published_again_a_bounded_number_of_times() {
    let (settings, _dir) = test_settings(Backend::Sqlite).await;
    let adapter = Adapter::connect(&settings).await;
    let tag = Uuid::new_v4().simple().to_string();
    let exchange = format!("test.{tag}.sim");
    adapter
        .channel
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare the exchange");
    let event = json!({"id": Uuid::new_v4().to_string(), "type": "contact.started",
        "site": "north", "channel": "chat", "patient": {"mrn": "SIM-10000001"}});

    // No queue bound: returned (mandatory) on each of 1 + 2 attempts.
    let p = publish_with_retry(&adapter.channel, &exchange, &event, 2).await;
    assert_eq!(
        p,
        Published {
            outcome: Outcome::Returned,
            attempts: 3,
            nacked: 0,
            returned: 3
        }
    );

    // A queue that refuses everything (max length 0, reject-publish): nacked.
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    let full = adapter
        .channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            args,
        )
        .await
        .expect("declare the full queue");
    adapter
        .channel
        .queue_bind(
            full.name().clone(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the full queue");
    let p = publish_with_retry(&adapter.channel, &exchange, &event, 1).await;
    assert_eq!((p.outcome, p.attempts, p.nacked), (Outcome::Nacked, 2, 2));

    // A queue that takes it: confirmed at once.
    let open = tap(&adapter, &exchange).await;
    let p = publish_with_retry(&adapter.channel, &exchange, &event, 2).await;
    // The full queue still nacks its copy: the broker nacks a message any queue refuses.
    assert_eq!(p.outcome, Outcome::Nacked);
    adapter
        .channel
        .queue_delete(full.name().clone(), Default::default())
        .await
        .expect("delete the full queue");
    let p = publish_with_retry(&adapter.channel, &exchange, &event, 2).await;
    assert_eq!(
        (p.outcome, p.attempts, p.nacked, p.returned),
        (Outcome::Confirmed, 1, 0, 0)
    );
    assert!(!adapter.take_all(&open).await.is_empty());
    let _ = adapter
        .channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
}
