//! Broker ingest load generator (`cargo bench --bench broker_ingest`).
//!
//! Publishes N events across M patients and S sites and reports, in one run:
//! 1. the raw broker rate: a bare lapin consumer (same queue type and prefetch as
//!    the runtime, ack `multiple=true` every 100) draining N persistent messages;
//! 2. the runtime's end-to-end rate: N events queued, then the runtime consumes,
//!    resolves identity, stores in PostgreSQL (with the outbox row for bookings),
//!    applies to the journey and acks; timed from start to the last event stored;
//!    and the mix it wrote (events by type, outbox commands, routed contacts);
//! 3. p50/p99 publish-to-stored latency: L events published at a steady rate (half
//!    the end-to-end rate just measured) into the running runtime; stored = the row's
//!    `received_at_ms`, written in the storing transaction;
//! 4. the raw PostgreSQL baseline (benches/common/baseline.rs), after the runtime has
//!    stopped: the N event rows the runtime stored in step 2, re-inserted into a fresh
//!    table (same columns and indexes as `events`) in a fresh database, in UNNEST
//!    batches of `store.group_commit_max_batch`, one transaction per batch (the
//!    median of BENCH_BASELINE_ROUNDS rounds, 5);
//! 5. a summary: the ratios end to end / raw broker and end to end / raw PostgreSQL,
//!    and the latency.
//!
//! Environment: BENCH_EVENTS (N, 20000), BENCH_PATIENTS (M, 2000), BENCH_SITES
//! (S, 3), BENCH_LATENCY_EVENTS (L, 3000), BENCH_MIX (`mixed`: a quarter bookings,
//! half contact starts routed to a queue, a quarter surveys; `surveys`: surveys only),
//! BENCH_AMQP_URL, BENCH_POSTGRES_URL.

// The SQLite baseline is http_ingest's.
#[allow(dead_code)]
#[path = "common/baseline.rs"]
mod baseline;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use frontdoor::broker::topology;
use frontdoor::configuration::{base_configuration, Settings};
use frontdoor::startup::Application;
use frontdoor::store::Store;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::Connection as _;
use uuid::Uuid;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_str(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// BENCH_MIX=surveys: only `survey.completed` (no routing, no outbox) to isolate the
/// store path.
fn only_surveys() -> bool {
    std::env::var("BENCH_MIX").is_ok_and(|v| v == "surveys")
}

/// One event: envelope, routing key, patient key.
struct Msg {
    id: String,
    body: Vec<u8>,
    routing_key: String,
    key: String,
}

/// `n` events over `patients` patients and `sites` sites: bookings (which write an
/// outbox command), contact starts and surveys.
fn workload(n: usize, patients: usize, sites: usize, tag: &str) -> Vec<Msg> {
    (0..n)
        .map(|i| {
            let p = i % patients;
            let site = format!("site{}", p % sites);
            let mrn = format!("MRN-{tag}-{p}");
            let id = Uuid::new_v4().to_string();
            let now = chrono::Utc::now().to_rfc3339();
            let pick = if only_surveys() { 3 } else { i % 4 };
            let (ty, channel, extra): (&str, &str, Value) = match pick {
                0 => (
                    "appointment.booked",
                    "portal",
                    json!({"appointment_id": format!("a-{i}"), "starts_at": now,
                           "department": "cardiology", "location": "Clinic 3"}),
                ),
                1 | 2 => (
                    "contact.started",
                    "voice",
                    json!({"contact_id": format!("c-{i}"), "intent": "scheduling"}),
                ),
                _ => ("survey.completed", "sms", json!({"score": i % 10})),
            };
            let mut e = json!({"id": id, "type": ty, "occurred_at": now, "site": site,
                "channel": channel,
                "patient": {"mrn": mrn, "phone": format!("+1555{:07}", p)}});
            if let (Value::Object(o), Value::Object(x)) = (&mut e, extra) {
                o.extend(x);
            }
            Msg {
                routing_key: format!("{site}.{channel}.{ty}"),
                body: e.to_string().into_bytes(),
                id,
                key: mrn,
            }
        })
        .collect()
}

async fn publish(channel: &Channel, exchange: &str, m: &Msg) -> lapin::PublisherConfirm {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-patient-key".into(),
        AMQPValue::LongString(LongString::from(m.key.clone())),
    );
    channel
        .basic_publish(
            exchange.into(),
            m.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            &m.body,
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(ShortString::from(m.id.as_str()))
                .with_headers(headers),
        )
        .await
        .expect("publish")
}

/// Publishes everything with pipelined confirms (window 1,000).
async fn publish_all(channel: &Channel, exchange: &str, msgs: &[Msg]) {
    for chunk in msgs.chunks(1000) {
        for m in chunk {
            drop(publish(channel, exchange, m).await);
        }
        channel.wait_for_confirms().await.expect("confirms");
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn settings(pg: &str, amqp: &str, db: &str, tag: &str) -> Settings {
    let mut s = base_configuration().expect("config/base.toml");
    s.application.port = 0;
    s.store.url = SecretString::from(format!("{pg}/{db}"));
    s.store.max_connections = 16;
    let b = &mut s.broker;
    b.enabled = true;
    b.url = SecretString::from(amqp.to_string());
    b.connection_name = format!("bench-{tag}");
    b.events_exchange = format!("bench.{tag}.events");
    b.partition_exchange = format!("bench.{tag}.partitions");
    b.queue_prefix = format!("bench.{tag}.ingest");
    b.commands_exchange = format!("bench.{tag}.commands");
    b.dead_letter_exchange = format!("bench.{tag}.dead");
    b.dead_letter_queue = format!("bench.{tag}.dead");
    s
}

async fn raw_rate(conn: &Connection, msgs: &[Msg], prefetch: u16, tag: &str) -> f64 {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let queue = format!("bench.{tag}.raw");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum".to_string())),
    );
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("declare raw queue");
    for chunk in msgs.chunks(1000) {
        for m in chunk {
            drop(
                ch.basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &m.body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("publish"),
            );
        }
        ch.wait_for_confirms().await.expect("confirms");
    }
    let cch = conn.create_channel().await.expect("channel");
    cch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = cch
        .basic_consume(
            queue.as_str().into(),
            "bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let start = Instant::now();
    let mut n = 0usize;
    while let Some(d) = consumer.next().await {
        let d = d.expect("delivery");
        n += 1;
        if n.is_multiple_of(100) || n == msgs.len() {
            d.acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .expect("ack");
        }
        if n == msgs.len() {
            break;
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    rate
}

async fn run() {
    let n = env_usize("BENCH_EVENTS", 20_000);
    let patients = env_usize("BENCH_PATIENTS", 2_000);
    let sites = env_usize("BENCH_SITES", 3);
    let latency_n = env_usize("BENCH_LATENCY_EVENTS", 3_000);
    let rounds = env_usize("BENCH_BASELINE_ROUNDS", 5);
    let amqp = env_str("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    let pg = env_str("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432");
    let tag = Uuid::new_v4().simple().to_string()[..8].to_string();

    let conn = Connection::connect(&amqp, ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let msgs = workload(n, patients, sites, &tag);
    let avg_bytes = msgs.iter().map(|m| m.body.len()).sum::<usize>() / n.max(1);
    let base = base_configuration().expect("config");
    let prefetch = base.broker.prefetch;
    println!("broker_ingest: N={n} events, M={patients} patients, S={sites} sites, ~{avg_bytes} bytes each, prefetch {prefetch}, partitions {}", base.broker.partitions);

    // 1. Raw broker consume+ack.
    let raw = raw_rate(&conn, &msgs, prefetch, &tag).await;
    println!("raw broker consume+ack (bare lapin consumer): {raw:.0} msg/s");

    // 2. The runtime end to end, from a backlog of N.
    let db = format!("frontdoor_bench_{tag}");
    let mut admin = sqlx::PgConnection::connect(&format!("{pg}/postgres"))
        .await
        .expect("PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{db}""#)))
        .execute(&mut admin)
        .await
        .expect("create the bench database");
    let settings = settings(&pg, &amqp, &db, &tag);
    let ch = conn.create_channel().await.expect("channel");
    topology::declare_ingest(&ch, &settings.broker)
        .await
        .expect("declare topology");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    publish_all(&ch, &settings.broker.events_exchange, &msgs).await;
    let store_settings = settings.store.clone();
    let b = settings.broker.clone();
    // An SMS gateway's queue, so the booking confirmations are routed, not parked.
    topology::declare_commands(&ch, &b)
        .await
        .expect("declare commands");
    let sink = format!("bench.{tag}.sms");
    ch.queue_declare(
        sink.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare the sink");
    ch.queue_bind(
        sink.as_str().into(),
        b.commands_exchange.as_str().into(),
        "#".into(),
        lapin::options::QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind the sink");
    let app = Application::build(settings).await.expect("runtime");
    let port = app.port();
    let start = Instant::now();
    let shutdown = app.shutdown_trigger();
    let running = actix_rt::spawn(app.run_until_stopped());
    let store = Store::connect(&store_settings).await.expect("store");
    loop {
        if store.count_events(None).await.unwrap_or(0) as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e2e = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "runtime end to end (consume, resolve, store in PostgreSQL, apply, ack): {e2e:.0} events/s"
    );
    println!("ratio runtime / raw broker: {:.3}", e2e / raw);
    let db_url = format!("{pg}/{db}");
    println!("mix: {}", baseline::mix(&db_url).await);
    print_store_breakdown(port).await;

    // 3. Publish-to-stored latency at a steady rate of half the end-to-end rate.
    let rate = (e2e / 2.0).max(50.0);
    // The same patients (warm), new event ids.
    let late = workload(latency_n, patients, sites, &tag);
    let gap = Duration::from_secs_f64(1.0 / rate);
    let mut sent_at: HashMap<String, i64> = HashMap::new();
    let mut tick = tokio::time::interval(gap);
    for m in &late {
        tick.tick().await;
        sent_at.insert(m.id.clone(), chrono::Utc::now().timestamp_millis());
        drop(publish(&ch, &b.events_exchange, m).await);
    }
    ch.wait_for_confirms().await.expect("confirms");
    loop {
        if store.count_events(None).await.unwrap_or(0) as usize >= n + latency_n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat: Vec<i64> = store
        .event_receipts()
        .await
        .expect("receipts")
        .into_iter()
        .filter_map(|(id, at)| sent_at.get(&id).map(|s| at - s))
        .collect();
    lat.sort_unstable();
    let latency = format!(
        "publish-to-stored latency at {rate:.0} events/s ({}; {latency_n} events): p50 {} ms, p99 {} ms, max {} ms",
        if e2e / 2.0 >= 50.0 {
            format!("half of this run's {e2e:.0} events/s end to end")
        } else {
            format!("the floor of 50 events/s; half of this run's end to end is {:.0}", e2e / 2.0)
        },
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0)
    );
    println!("{latency}");

    shutdown.trigger();
    let _ = running.await;
    for i in 0..b.partitions {
        let _ = ch
            .queue_delete(
                b.partition_queue(i).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
    }
    for q in [b.dead_letter_queue.clone(), sink] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for ex in [
        b.events_exchange.clone(),
        b.partition_exchange.clone(),
        topology::unkeyed_exchange(&b),
        b.commands_exchange.clone(),
        b.dead_letter_exchange.clone(),
    ] {
        let _ = ch
            .exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }

    // 4. The raw PostgreSQL baseline: the N rows of step 2, the runtime stopped.
    let batch = base.store.group_commit_max_batch;
    let rows = baseline::stored_rows(&db_url, n).await;
    let pg_base = baseline::postgres(&pg, &rows, batch, rounds).await;
    println!(
        "raw PostgreSQL baseline: the event rows stored in step 2 (~{} bytes of body each), UNNEST batches of {batch}, one transaction each: {}",
        baseline::mean_body_bytes(&rows),
        pg_base.describe()
    );

    // 5. Summary.
    println!("summary:");
    println!("  raw broker: {raw:.0} msg/s");
    println!("  raw PostgreSQL UNNEST: {:.0} rows/s", pg_base.rate());
    println!("  end to end: {e2e:.0} events/s");
    println!("  ratio end to end / raw broker: {:.3}", e2e / raw);
    println!(
        "  ratio end to end / raw PostgreSQL: {:.3}",
        e2e / pg_base.rate()
    );
    println!("  {latency}");
}

/// Mean store operation latency by operation, from the runtime's own histograms.
async fn print_store_breakdown(port: u16) {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if stream.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    let mut sums: HashMap<String, (f64, f64)> = HashMap::new();
    for line in text.lines() {
        let (name, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        for (suffix, slot) in [("_sum{", 0), ("_count{", 1)] {
            let prefix = format!("frontdoor_store_operation_duration_seconds{suffix}");
            let prefix_ingest = format!("frontdoor_event_ingest_duration_seconds{suffix}");
            let label = if let Some(rest) = name.strip_prefix(&prefix) {
                rest.split("operation=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .map(|op| format!("store {op}"))
            } else if name.starts_with(&prefix_ingest) && name.contains("outcome=\"accepted\"") {
                Some("ingest (whole path)".to_string())
            } else {
                None
            };
            if let Some(l) = label {
                let e = sums.entry(l).or_insert((0.0, 0.0));
                if slot == 0 {
                    e.0 += v
                } else {
                    e.1 += v
                }
            }
        }
    }
    let mut rows: Vec<_> = sums.into_iter().filter(|(_, (_, c))| *c > 0.0).collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    for (op, (sum, count)) in rows {
        println!(
            "  mean {op}: {:.2} ms over {count} calls",
            sum / count * 1000.0
        );
    }
}

fn main() {
    actix_rt::System::new().block_on(run());
}
