//! The fault drills of the broker issue, against the real RabbitMQ and PostgreSQL.
//! Each counts what was published against what is in the journey log (and in the
//! command stream): lost = 0, duplicates = 0. The log cannot hold a duplicate (its
//! ids are unique), so the drills that claim "redeliveries change nothing" also
//! show that a redelivery happened and that each effect exists once: one
//! confirmation per booking, one escalation per urgent contact, and a journey that
//! applied each event once.
//!
//! Faults are made with a throwaway TCP proxy ([`ChaosProxy`]) between the runtime
//! and RabbitMQ or PostgreSQL, so the machine's shared services keep running.
//!
//! Sizes: N = 10,000 for the in-flight drill (about 20 s here); set
//! `FRONTDOOR_DRILL_EVENTS` for a bigger manual run or a smaller one on a slow box.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::amqp::{amqp_url, enable_broker, eventually, settled_broker_counts, Adapter};
use crate::broker::{spawn_with_broker, wait_until_ready};
use crate::chaos::ChaosProxy;
use crate::child::RuntimeProcess;
use crate::helpers::{days_ago, event, spawn_app_with, test_settings, Backend, TestApp};
use frontdoor::store::Store;

const WITHIN: Duration = Duration::from_secs(60);

/// N for the in-flight drill.
fn drill_events() -> usize {
    std::env::var("FRONTDOOR_DRILL_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// One published event: its envelope and its patient key.
pub struct Published {
    /// The envelope.
    pub event: Value,
    /// Its `x-patient-key`.
    pub key: String,
}

/// `n` events over `patients` patients and three sites, interleaved patient by
/// patient (round r of every patient before round r+1).
pub fn workload(n: usize, patients: usize) -> Vec<Published> {
    let tag = &Uuid::new_v4().simple().to_string()[..6];
    let sites = ["north", "south", "east"];
    (0..n)
        .map(|i| {
            let p = i % patients;
            let round = i / patients;
            let key = format!("MRN-{tag}-{p}");
            let mut e = event(
                "survey.completed",
                "sms",
                days_ago(0, 0),
                json!({"mrn": key}),
                json!({"round": round, "score": round % 10}),
            );
            e["site"] = json!(sites[p % sites.len()]);
            Published { event: e, key }
        })
        .collect()
}

/// Like [`workload`], but each patient's first four rounds cause effects that a
/// redelivery must not repeat: round 0 books an appointment (one SMS
/// confirmation in the outbox), rounds 1–3 start contacts (the third contact in
/// 48 hours is urgent: one escalation). Needs `patients * 4 <= n`.
fn workload_with_effects(n: usize, patients: usize) -> Vec<Published> {
    let mut events = workload(n, patients);
    for (i, p) in events.iter_mut().enumerate().take(patients * 4) {
        let (who, round) = (i % patients, i / patients);
        let site = p.event["site"].clone();
        let mrn = p.key.clone();
        p.event = if round == 0 {
            event(
                "appointment.booked",
                "portal",
                days_ago(0, 0),
                json!({"mrn": mrn, "phone": format!("+1555{:07}", who)}),
                // Ten days ahead: no reminder comes due on the replacement's clock
                // (a 72 h reminder of a 3-day booking would, and rightly leave).
                json!({"appointment_id": format!("appt-{who}"), "starts_at": days_ago(-10, 0).to_rfc3339(),
                       "department": "dermatology", "location": "North Clinic", "round": 0}),
            )
        } else {
            event(
                "contact.started",
                "voice",
                days_ago(0, 0),
                json!({"mrn": mrn}),
                json!({"contact_id": format!("call-{who}-{round}"), "skill": "scheduling", "round": round}),
            )
        };
        p.event["site"] = site;
    }
    events
}

/// Publishes with pipelined confirms (windows of 500), as a busy adapter does.
pub async fn publish_all(adapter: &Adapter, events: &[Published]) {
    for chunk in events.chunks(500) {
        for p in chunk {
            let e = &p.event;
            let key = format!(
                "{}.{}.{}",
                e["site"].as_str().unwrap(),
                e["channel"].as_str().unwrap(),
                e["type"].as_str().unwrap()
            );
            // The confirm is awaited for the whole window below.
            drop(
                adapter
                    .publish_no_wait(
                        e.to_string().as_bytes(),
                        &key,
                        e["id"].as_str().unwrap(),
                        Some(&p.key),
                    )
                    .await,
            );
        }
        adapter.wait_for_confirms().await;
    }
}

/// Every patient's events are in the log in publish order; answers how many
/// patients the log holds.
pub async fn assert_in_order(store: &Store, published: &[Published]) -> usize {
    let key_of: HashMap<&str, (&str, u64)> = published
        .iter()
        .map(|p| {
            (
                p.event["id"].as_str().unwrap(),
                (p.key.as_str(), p.event["round"].as_u64().unwrap()),
            )
        })
        .collect();
    let mut last: HashMap<&str, u64> = HashMap::new();
    let mut out_of_order = 0;
    for (_, id) in store.event_log().await.unwrap() {
        let (key, round) = key_of[id.as_str()];
        if let Some(prev) = last.insert(key, round) {
            if prev > round {
                out_of_order += 1;
            }
        }
    }
    assert_eq!(
        out_of_order, 0,
        "every patient's journey is in publish order"
    );
    last.len()
}

/// A store connection of the test's own (not through any proxy).
async fn direct_store(app: &TestApp, direct_url: Option<&str>) -> Store {
    let mut s = app.settings.store.clone();
    if let Some(u) = direct_url {
        s.url = secrecy::SecretString::from(u.to_string());
    }
    Store::connect(&s).await.expect("a direct store connection")
}

/// Waits until every published event is stored and no delivery is left.
async fn wait_all_stored(store: &Store, adapter: &Adapter, n: usize) {
    eventually(
        WITHIN * 4,
        &format!("all {n} events stored and acked"),
        || async {
            let stored = store.count_events(None).await.ok()? as usize;
            (stored >= n && adapter.ready_in_partitions().await == 0).then_some(())
        },
    )
    .await;
}

/// lost = 0 and duplicates = 0: the log holds exactly the published ids.
pub async fn assert_exactly_once(store: &Store, published: &[Published]) {
    let log = store.event_log().await.expect("the event log");
    let ids: Vec<&str> = log.iter().map(|(_, id)| id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    let sent: HashSet<&str> = published
        .iter()
        .map(|p| p.event["id"].as_str().unwrap())
        .collect();
    let lost = sent.difference(&unique).count();
    let duplicates = ids.len() - unique.len();
    let unexpected = unique.difference(&sent).count();
    assert_eq!(
        (lost, duplicates, unexpected),
        (0, 0, 0),
        "lost, duplicated, unexpected"
    );
}

/// Each effect of [`workload_with_effects`] exists once: every journey applied
/// each of its events once (served context), and the commands the adapters
/// receive (deduplicated by `message_id`, as the contract asks of them) are one
/// confirmation per booking and one escalation per patient, caused by its third
/// contact, and nothing else.
async fn assert_each_effect_once(
    app: &TestApp,
    store: &Store,
    adapter: &Adapter,
    sink: &str,
    published: &[Published],
) {
    let mut per_patient: HashMap<&str, Vec<&Value>> = HashMap::new();
    for p in published {
        per_patient
            .entry(p.key.as_str())
            .or_default()
            .push(&p.event);
    }
    for (key, events) in &per_patient {
        let pid = app.patient_id("mrn", key).await;
        let ctx = app.context(&pid).await;
        assert_eq!(
            ctx["events_total"],
            json!(events.len()),
            "{key}: the journey applied each event once"
        );
        assert_eq!(ctx["appointments"].as_array().unwrap().len(), 1, "{key}");
        assert_eq!(ctx["open_contacts"].as_array().unwrap().len(), 3, "{key}");
    }
    let expected = per_patient.len() * 2;
    eventually(WITHIN, "every command relayed", || async {
        (store.outbox_counts().await.ok()? == (0, expected as i64, 0)).then_some(())
    })
    .await;
    let mut commands: HashMap<String, Value> = HashMap::new();
    for m in adapter.take_all(sink).await {
        let id = m
            .delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .to_string();
        let body: Value = serde_json::from_slice(&m.delivery.data).unwrap();
        if let Some(earlier) = commands.insert(id.clone(), body.clone()) {
            assert_eq!(
                earlier, body,
                "a republished command {id} is the same command"
            );
        }
    }
    let mut by_cause: HashMap<(String, String), usize> = HashMap::new();
    for c in commands.values() {
        let key = (
            c["type"].as_str().unwrap().to_string(),
            c["caused_by"].as_str().unwrap().to_string(),
        );
        *by_cause.entry(key).or_default() += 1;
    }
    let mut want: HashMap<(String, String), usize> = HashMap::new();
    for p in published {
        let ty = match (p.event["type"].as_str().unwrap(), p.event["round"].as_u64()) {
            ("appointment.booked", _) => "notify.send",
            ("contact.started", Some(3)) => "escalation.raised",
            _ => continue,
        };
        want.insert((ty.into(), p.event["id"].as_str().unwrap().into()), 1);
    }
    assert_eq!(
        by_cause, want,
        "one confirmation per booking, one escalation per third contact"
    );
}

fn proxied_amqp(proxy: &ChaosProxy) -> String {
    format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port)
}

#[actix_web::test]
async fn drill_1_connection_lost_twice_with_events_in_flight_every_event_is_stored_once() {
    let proxy = ChaosProxy::start("127.0.0.1:5672").await;
    let (mut app, mut adapter) = spawn_with_broker(Some(&proxied_amqp(&proxy))).await;
    let sink = adapter.command_queue("#").await;
    let n = drill_events();
    let published = workload_with_effects(n, 500);
    publish_all(&adapter, &published).await;
    let mut in_flight_at_cut = Vec::new();
    for fraction in [4, 2] {
        let stored = eventually(WITHIN * 2, "part of the events stored", || async {
            let stored = app.store.count_events(None).await.ok()? as usize;
            (stored >= n / fraction).then_some(stored)
        })
        .await;
        let connections = proxy.accepted();
        proxy.cut();
        in_flight_at_cut.push(n - stored);
        eventually(WITHIN, "the consumer and the relay reconnected", || async {
            (proxy.accepted() >= connections + 2).then_some(())
        })
        .await;
    }
    assert!(
        in_flight_at_cut.iter().all(|&left| left > 0),
        "events were in flight at each cut: {in_flight_at_cut:?}"
    );
    wait_all_stored(&app.store, &adapter, n).await;
    assert_exactly_once(&app.store, &published).await;
    // The cuts made the broker send again what it had sent: a redelivery happened,
    // and some of it had been stored already (its ack was lost with the connection).
    assert!(app.broker.redelivered() > 0, "no delivery was redelivered");
    assert!(
        app.broker.duplicates() > 0,
        "no redelivery was found already stored"
    );
    assert_each_effect_once(&app, &app.store, &adapter, &sink, &published).await;
    // Each reconnect is a supervised restart of the component, visible in /v1/runtime.
    let sup = app.runtime.stats.snapshot();
    assert!(
        sup["broker_consumer"].restarts >= 2,
        "{:?}",
        sup.get("broker_consumer")
    );
    assert!(
        sup["outbox_relay"].restarts >= 2,
        "{:?}",
        sup.get("outbox_relay")
    );
    assert!(sup["broker_consumer"].up && sup["outbox_relay"].up);
    app.stop().await;
    adapter.cleanup().await;
}

#[actix_web::test]
async fn drill_2_a_runtime_killed_between_storing_and_acking_leaves_redeliveries_that_change_nothing(
) {
    let proxy = ChaosProxy::start("127.0.0.1:5672").await;
    let (mut first, mut adapter) = spawn_with_broker(Some(&proxied_amqp(&proxy))).await;
    let sink = adapter.command_queue("#").await;
    let published = workload_with_effects(1_000, 100);
    publish_all(&adapter, &published).await;
    eventually(WITHIN, "the first runtime storing", || async {
        (first.store.count_events(None).await.ok()? >= 200).then_some(())
    })
    .await;
    // The first runtime dies as far as the broker knows: its connection is gone and
    // never comes back; what it stored but had not acked is redelivered.
    proxy.down();
    let store = direct_store(&first, None).await;
    let before = store.event_log().await.unwrap();
    // The replacement starts on the same database and topology, straight to RabbitMQ.
    let mut settings = first.settings.clone();
    settings.broker.url = secrecy::SecretString::from(amqp_url());
    let mut second = spawn_app_with(settings, None).await;
    wait_until_ready(&second).await;
    wait_all_stored(&store, &adapter, published.len()).await;
    let after = store.event_log().await.unwrap();
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "what was stored before is untouched"
    );
    assert_exactly_once(&store, &published).await;
    // The replacement was sent again what the first had stored without acking.
    assert!(
        second.broker.redelivered() > 0,
        "no delivery was redelivered"
    );
    assert!(
        second.broker.duplicates() > 0,
        "no redelivery was found already stored"
    );
    assert_each_effect_once(&second, &store, &adapter, &sink, &published).await;
    second.stop().await;
    first.stop().await;
    adapter.cleanup().await;
}

/// Posts appointment bookings over HTTP (each writes one notify.send command).
async fn book(app: &TestApp, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..n {
        let e = event(
            "appointment.booked",
            "portal",
            days_ago(0, 0),
            json!({"mrn": format!("MRN-C-{i}"), "phone": format!("+1555030{i:04}")}),
            json!({"appointment_id": format!("appt-{i}"), "starts_at": days_ago(-2, 0).to_rfc3339(),
                   "department": "oncology", "location": "East Clinic"}),
        );
        app.store_event(&e).await;
        out.push(e);
    }
    out
}

#[actix_web::test]
async fn drill_3_commands_produced_while_the_broker_is_down_wait_in_the_outbox_and_go_out_once() {
    let proxy = ChaosProxy::start("127.0.0.1:5672").await;
    let (mut app, mut adapter) = spawn_with_broker(Some(&proxied_amqp(&proxy))).await;
    let sms = adapter.command_queue("*.sms.notify.send").await;
    proxy.down();
    eventually(WITHIN, "readyz reporting the broker down", || async {
        let (status, body) = app.get("/readyz").await;
        (status == 503 && body["detail"].as_str()?.contains("broker: down")).then_some(())
    })
    .await;
    let m = 100;
    book(&app, m).await;
    assert_eq!(
        app.store.outbox_counts().await.unwrap(),
        (m as i64, 0, 0),
        "held in the outbox"
    );
    assert_eq!(adapter.ready(&sms).await, 0, "nothing reached the broker");
    proxy.up();
    eventually(WITHIN, "every command published after recovery", || async {
        (app.store.outbox_counts().await.ok()? == (0, m as i64, 0)).then_some(())
    })
    .await;
    eventually(WITHIN, "every command in the adapter's queue", || async {
        (adapter.ready(&sms).await as usize >= m).then_some(())
    })
    .await;
    let messages = adapter.take_all(&sms).await;
    let ids: HashSet<String> = messages
        .iter()
        .filter_map(|m| {
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
        })
        .collect();
    assert_eq!(
        (messages.len(), ids.len()),
        (m, m),
        "each command published once"
    );
    app.stop().await;
    adapter.cleanup().await;
}

#[actix_web::test]
async fn drill_4_an_unroutable_command_is_counted_parked_and_delivered_once_an_operator_unparks_it()
{
    let (mut app, mut adapter) = spawn_with_broker(None).await;
    // No adapter has bound a queue for SMS yet.
    book(&app, 1).await;
    eventually(WITHIN, "the command parked", || async {
        (app.store.outbox_counts().await.ok()? == (0, 0, 1)).then_some(())
    })
    .await;
    let parked = app.store.parked_commands().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].1, "notify.send");
    assert!(parked[0].2.contains("unroutable"), "{}", parked[0].2);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"frontdoor_commands_unroutable_total{type="notify.send"}"#),
        "{metrics}"
    );
    // The SMS gateway binds its queue; the operator unparks.
    let sms = adapter.command_queue("*.sms.notify.send").await;
    assert_eq!(app.store.unpark_commands().await.unwrap(), 1);
    eventually(WITHIN, "the command delivered", || async {
        (app.store.outbox_counts().await.ok()? == (0, 1, 0)).then_some(())
    })
    .await;
    let messages = adapter.take_all(&sms).await;
    assert_eq!(messages.len(), 1, "delivered exactly once");
    assert_eq!(
        messages[0]
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string()),
        Some(parked[0].0.clone())
    );
    app.stop().await;
    adapter.cleanup().await;
}

/// Node b subscribes too; which node serves which partition is the cluster
/// issue's (the first to subscribe takes every partition today).
#[actix_web::test]
async fn drill_6_batches_holding_many_events_of_a_few_patients_keep_each_patients_publish_order_through_4_partitions_shared_by_two_nodes(
) {
    let (mut settings, dir) = test_settings(Backend::Postgres).await;
    enable_broker(&mut settings, &amqp_url());
    settings.broker.partitions = 4;
    let prefetch = usize::from(settings.broker.prefetch);
    let adapter = Adapter::connect(&settings).await;
    // A first start declares the topology; the events then wait in the partition
    // queues, so every consumer batch is a full prefetch window.
    let mut declare = spawn_app_with(settings.clone(), dir).await;
    wait_until_ready(&declare).await;
    declare.stop().await;
    // 12 patients, 150 events each, published round-robin: a partition holds the
    // events of a few patients interleaved, so each batch of 100 holds dozens of
    // events of each of them, ingested concurrently across patients and one after
    // another within each.
    let patients = 12;
    let published = workload(1_800, patients);
    publish_all(&adapter, &published).await;
    let mut waiting = Vec::new();
    for i in 0..settings.broker.partitions {
        waiting.push(adapter.ready(&settings.broker.partition_queue(i)).await as usize);
    }
    assert_eq!(
        waiting.iter().sum::<usize>(),
        published.len(),
        "all waiting before any consumer: {waiting:?}"
    );
    assert!(
        waiting.iter().any(|&w| w >= 2 * prefetch),
        "full batches: {waiting:?}"
    );
    // Two cluster members: they share the partitions (2 each), each consumes its own.
    settings.cluster.enabled = true;
    settings.cluster.lease_ttl_ms = 3_000;
    settings.cluster.renew_interval_ms = 500;
    let mut a = spawn_app_with(settings.clone(), None).await;
    let mut b = spawn_app_with(settings, None).await;
    wait_until_ready(&a).await;
    wait_until_ready(&b).await;
    wait_all_stored(&a.store, &adapter, published.len()).await;
    assert_exactly_once(&a.store, &published).await;
    let owned = |app: &TestApp| app.runtime.cluster.now().mine.len();
    eventually(
        WITHIN,
        "the two nodes settled on 2 partitions each",
        || async { (owned(&a) == 2 && owned(&b) == 2).then_some(()) },
    )
    .await;
    let shares = (a.broker.delivered(), b.broker.delivered());
    assert!(
        shares.0 > 0 && shares.1 > 0 && shares.0 + shares.1 >= published.len(),
        "both nodes consumed their partitions' share: {shares:?}"
    );
    assert_eq!(assert_in_order(&a.store, &published).await, patients);
    a.stop().await;
    b.stop().await;
    adapter.cleanup().await;
}

#[actix_web::test]
async fn drill_7_postgresql_down_under_load_means_no_ack_503_and_full_recovery() {
    let pg = ChaosProxy::start("127.0.0.1:5432").await;
    let (mut settings, dir) = test_settings(Backend::Postgres).await;
    use secrecy::ExposeSecret;
    let direct_url = settings.store.url.expose_secret().to_string();
    settings.store.url = secrecy::SecretString::from(
        direct_url.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", pg.port)),
    );
    settings.store.acquire_timeout_secs = 1;
    enable_broker(&mut settings, &amqp_url());
    let adapter = Adapter::connect(&settings).await;
    let mut app = spawn_app_with(settings, dir).await;
    wait_until_ready(&app).await;
    let store = direct_store(&app, Some(&direct_url)).await;
    let published = workload(2_000, 200);
    let (first, second) = published.split_at(1_000);
    publish_all(&adapter, first).await;
    eventually(WITHIN, "the runtime storing", || async {
        (store.count_events(None).await.ok()? >= 200).then_some(())
    })
    .await;
    pg.down();
    publish_all(&adapter, second).await;
    eventually(WITHIN, "readyz reporting the store down", || async {
        let (status, body) = app.get("/readyz").await;
        (status == 503 && body["detail"].as_str()?.contains("store: down")).then_some(())
    })
    .await;
    let post = app.post_event(&first[0].event).await;
    assert_eq!(
        post.status().as_u16(),
        503,
        "the API answers 503 while the store is down"
    );
    // During the outage nothing is stored and nothing is acked: the consumer holds
    // its deliveries unacked (the broker's own count, not the runtime's) and the
    // rest waits in the queues. Two readings of the broker a few seconds apart are
    // the same: nothing is acked, requeued or taken meanwhile.
    let bound =
        usize::from(app.settings.broker.prefetch) * usize::from(app.settings.broker.partitions);
    let stored = store.count_events(None).await.unwrap();
    let held = app.broker.in_flight();
    let exact_ready = u64::from(adapter.ready_in_partitions().await);
    let after = settled_broker_counts(&adapter, WITHIN).await;
    assert_eq!(
        after.len(),
        usize::from(app.settings.broker.partitions),
        "{after:?}"
    );
    assert_eq!(
        u64::from(adapter.ready_in_partitions().await),
        exact_ready,
        "the broker saw no ack, requeue or new delivery"
    );
    let ready: u64 = after.values().map(|c| c.0).sum();
    let unacked: u64 = after.values().map(|c| c.1).sum();
    let acked = published.len() as u64 - ready - unacked;
    assert!(held > 0, "deliveries held unacked");
    assert!(
        (held as u64..=bound as u64).contains(&unacked),
        "the broker counts {unacked} unacked: what the consumer holds ({held}) and at most prefetch x partitions ({bound})"
    );
    assert!(ready > 0, "the backlog waits in the queues");
    assert!(
        acked <= stored as u64,
        "acked ({acked}) only what was stored ({stored})"
    );
    assert_eq!(app.broker.in_flight(), held, "still held");
    assert_eq!(
        store.count_events(None).await.unwrap(),
        stored,
        "nothing stored while down"
    );
    pg.up();
    wait_all_stored(&store, &adapter, published.len()).await;
    wait_until_ready(&app).await;
    assert_exactly_once(&store, &published).await;
    assert_eq!(
        app.broker.redelivered(),
        0,
        "the held deliveries were stored, never returned and sent again"
    );
    app.stop().await;
    adapter.cleanup().await;
}

/// What the bound is about, measured where it lives: the broker's own counts of
/// what it has handed to the runtime, and the runtime process's patient mailboxes
/// and resident memory. Each event carries 4 KiB of free text, so a burst held
/// in the runtime instead of the queue would show in its memory (measured: held,
/// the burst grew it by 11 MiB; waiting in the queue, by about 1 MiB).
#[actix_web::test]
async fn drill_8_a_10x_burst_waits_in_the_queue_within_the_prefetch_bound_and_loses_nothing() {
    let (mut settings, _dir) = test_settings(Backend::Postgres).await;
    enable_broker(&mut settings, &amqp_url());
    settings.broker.prefetch = 20;
    settings.broker.partitions = 2;
    let bound = 20 * 2;
    let adapter = Adapter::connect(&settings).await;
    let runtime = RuntimeProcess::start(&settings).await;
    let store = Store::connect(&settings.store)
        .await
        .expect("the test's store");
    // Steady: 200 events. Then a burst of 10x that, published as fast as RabbitMQ
    // confirms (far faster than the runtime stores).
    let mut published = workload(2_200, 400);
    let padding = "x".repeat(4 * 1024);
    for p in &mut published {
        p.event["note"] = json!(padding);
    }
    let (steady, burst) = published.split_at(200);
    publish_all(&adapter, steady).await;
    wait_all_stored(&store, &adapter, steady.len()).await;
    let rss_before = runtime.memory("VmRSS");
    publish_all(&adapter, burst).await;
    // While the runtime works through the burst: everything the broker has handed
    // out and not had acked (published - ready - stored, a lower bound of the
    // broker's unacked count) stays within prefetch x partitions, and the backlog
    // is ready in the queues.
    let mut samples = 0;
    let mut most_out = 0i64;
    let mut most_ready = 0u32;
    let mut most_mailbox = 0u64;
    loop {
        let ready = adapter.ready_in_partitions().await;
        let stored = store.count_events(None).await.unwrap();
        let mailbox = runtime.patient_mailbox_depth().await;
        let out = published.len() as i64 - i64::from(ready) - stored;
        most_out = most_out.max(out);
        most_ready = most_ready.max(ready);
        most_mailbox = most_mailbox.max(mailbox);
        samples += 1;
        if stored as usize >= published.len() {
            break;
        }
        assert!(samples < 20_000, "the burst was not stored in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_all_stored(&store, &adapter, published.len()).await;
    let rss_peak = runtime.memory("VmHWM");
    assert!(
        most_out <= bound,
        "at most prefetch x partitions handed out unacked: {most_out} > {bound}"
    );
    assert!(
        most_ready as usize > burst.len() / 2,
        "the backlog waited in the queues (at most {most_ready} ready)"
    );
    assert!(
        most_mailbox <= bound as u64,
        "patient mailboxes held at most the deliveries in hand: {most_mailbox} > {bound}"
    );
    // The burst is 2,000 x 4 KiB = 8 MiB: holding it would show.
    let grew = rss_peak.saturating_sub(rss_before);
    assert!(
        grew < 6 << 20,
        "resident memory grew {} MiB under the burst",
        grew >> 20
    );
    assert!(
        samples > 10,
        "sampled while the burst was worked through ({samples})"
    );
    assert_exactly_once(&store, &published).await;
    runtime.stop().await;
    adapter.cleanup().await;
}
