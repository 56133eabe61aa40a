//! Broker helpers for tests: a runtime wired to its own topology (uniquely named
//! exchanges and queues, so tests never share broker state), and a lapin client
//! playing the channel adapters' part.

use std::future::Future;
use std::time::{Duration, Instant};

use frontdoor::configuration::Settings;
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use secrecy::SecretString;
use serde_json::Value;
use uuid::Uuid;

/// The RabbitMQ tests use (override with FRONTDOOR_TEST_AMQP_URL).
pub fn amqp_url() -> String {
    std::env::var("FRONTDOOR_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// Turns the broker on in `settings` with names unique to this test, quick
/// reconnects and a small delivery limit. `url` lets a drill put a proxy between.
pub fn enable_broker(settings: &mut Settings, url: &str) {
    let tag = Uuid::new_v4().simple().to_string()[..12].to_string();
    let b = &mut settings.broker;
    b.enabled = true;
    b.url = SecretString::from(url.to_string());
    b.connection_name = format!("frontdoor-test-{tag}");
    b.events_exchange = format!("test.{tag}.events");
    b.partition_exchange = format!("test.{tag}.events.partitions");
    b.queue_prefix = format!("test.{tag}.ingest");
    b.commands_exchange = format!("test.{tag}.commands");
    b.dead_letter_exchange = format!("test.{tag}.dead");
    b.dead_letter_queue = format!("test.{tag}.dead");
    b.routing_queue = format!("test.{tag}.routing");
    b.cluster_exchange = format!("test.{tag}.cluster");
    b.partitions = 2;
    b.prefetch = 100;
    b.reconnect_min_ms = 50;
    b.reconnect_max_ms = 500;
    b.delivery_limit = 3;
    b.relay_interval_ms = 50;
    b.confirm_timeout_ms = 3000;
}

/// A channel adapter's view of the broker, on the test's topology.
pub struct Adapter {
    /// Its own connection (never through a drill's proxy).
    connection: Connection,
    /// A channel in confirm mode.
    pub channel: Channel,
    /// The runtime's broker settings (names).
    pub names: frontdoor::configuration::BrokerSettings,
    /// Queues this adapter declared (deleted by `cleanup`).
    queues: Vec<String>,
}

impl Adapter {
    /// Connects and declares the events and commands exchanges (as a real adapter
    /// may, before the runtime has started).
    pub async fn connect(settings: &Settings) -> Adapter {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("RabbitMQ must be running for the tests (see .ci/run)");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        let names = settings.broker.clone();
        for ex in [&names.events_exchange, &names.commands_exchange] {
            channel
                .exchange_declare(
                    ex.as_str().into(),
                    ExchangeKind::Topic,
                    lapin::options::ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("declare exchange");
        }
        Adapter {
            connection,
            channel,
            names,
            queues: Vec::new(),
        }
    }

    /// Publishes an envelope as an adapter must: persistent, `message_id` = event
    /// id, routing key `<site>.<channel>.<type>`, header `x-patient-key`.
    pub async fn publish_event(&self, event: &Value, patient_key: &str) {
        let key = format!(
            "{}.{}.{}",
            event["site"].as_str().unwrap_or("north"),
            event["channel"].as_str().unwrap_or("portal"),
            event["type"].as_str().unwrap_or("unknown")
        );
        let id = event["id"].as_str().unwrap_or_default().to_string();
        self.publish_raw(event.to_string().as_bytes(), &key, &id, Some(patient_key))
            .await;
    }

    /// Publishes any bytes to the events exchange and waits for the confirm.
    pub async fn publish_raw(
        &self,
        body: &[u8],
        routing_key: &str,
        id: &str,
        patient_key: Option<&str>,
    ) {
        self.publish_no_wait(body, routing_key, id, patient_key)
            .await
            .await
            .expect("publisher confirm");
    }

    /// Publishes without waiting for the confirm (pipelined); await the result.
    pub async fn publish_no_wait(
        &self,
        body: &[u8],
        routing_key: &str,
        id: &str,
        patient_key: Option<&str>,
    ) -> lapin::PublisherConfirm {
        let mut headers = FieldTable::default();
        if let Some(k) = patient_key {
            headers.insert(
                "x-patient-key".into(),
                AMQPValue::LongString(LongString::from(k.to_string())),
            );
        }
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(id))
            .with_content_type("application/json".into())
            .with_headers(headers);
        self.channel
            .basic_publish(
                self.names.events_exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .expect("publish")
    }

    /// Waits for every pipelined confirm.
    pub async fn wait_for_confirms(&self) {
        let returned = self.channel.wait_for_confirms().await.expect("confirms");
        assert!(returned.is_empty());
    }

    /// Declares a queue bound to the commands exchange with `pattern` (an agent
    /// desktop's or an SMS gateway's queue).
    pub async fn command_queue(&mut self, pattern: &str) -> String {
        let name = format!(
            "{}.sink.{}",
            self.names.commands_exchange,
            self.queues.len()
        );
        self.channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare command queue");
        self.channel
            .queue_bind(
                name.as_str().into(),
                self.names.commands_exchange.as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind command queue");
        self.queues.push(name.clone());
        name
    }

    /// Takes (and acks) every message waiting in `queue`.
    pub async fn take_all(&self, queue: &str) -> Vec<BasicGetMessage> {
        let mut out = Vec::new();
        while let Some(m) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .expect("basic.get")
        {
            m.delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
            out.push(m);
        }
        out
    }

    /// Messages ready in `queue` (not counting unacked ones). Any error fails the
    /// test: a dead channel or a missing queue must never read as "empty".
    pub async fn ready(&self, queue: &str) -> u32 {
        match self
            .channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
        {
            Ok(q) => q.message_count(),
            Err(e) => panic!("counting the messages ready in {queue} failed: {e}"),
        }
    }

    /// Ready messages over every partition queue of the runtime.
    pub async fn ready_in_partitions(&self) -> u32 {
        let mut n = 0;
        for i in 0..self.names.partitions {
            n += self.ready(&self.names.partition_queue(i)).await;
        }
        n
    }

    /// Deletes every exchange and queue of this test.
    pub async fn cleanup(&self) {
        let n = &self.names;
        let mut queues: Vec<String> = (0..n.partitions).map(|i| n.partition_queue(i)).collect();
        queues.push(n.dead_letter_queue.clone());
        queues.push(n.routing_queue.clone());
        queues.extend(self.queues.iter().cloned());
        // A fresh channel each time: one failed delete closes its channel.
        for q in queues {
            let Ok(channel) = self.connection.create_channel().await else {
                return;
            };
            let _ = channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for ex in [
            n.events_exchange.clone(),
            n.partition_exchange.clone(),
            format!("{}.unkeyed", n.partition_exchange),
            n.commands_exchange.clone(),
            n.dead_letter_exchange.clone(),
            n.cluster_exchange.clone(),
        ] {
            let Ok(channel) = self.connection.create_channel().await else {
                return;
            };
            let _ = channel
                .exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
}

/// Ready and unacknowledged messages of every queue whose name starts with
/// `prefix`, as the broker counts them (`rabbitmqctl list_queues`; about 2 s a
/// call, so for a state that holds still, not for sampling).
pub fn broker_counts(prefix: &str) -> std::collections::BTreeMap<String, (u64, u64)> {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])
        .output()
        .expect("rabbitmqctl must be installed with the broker (see .ci/run)");
    assert!(
        out.status.success(),
        "rabbitmqctl list_queues failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            let ready = f.next()?.parse().ok()?;
            let unacked = f.next()?.parse().ok()?;
            name.starts_with(prefix)
                .then(|| (name.to_string(), (ready, unacked)))
        })
        .collect()
}

/// [`broker_counts`] once they hold still: the broker refreshes them every few
/// seconds, so read until two readings agree with each other and with the exact
/// ready count of a passive declare on the runtime's partition queues.
pub async fn settled_broker_counts(
    adapter: &Adapter,
    within: Duration,
) -> std::collections::BTreeMap<String, (u64, u64)> {
    let prefix = format!("{}.", adapter.names.queue_prefix);
    let deadline = Instant::now() + within;
    let mut last = broker_counts(&prefix);
    loop {
        let exact = u64::from(adapter.ready_in_partitions().await);
        let now = broker_counts(&prefix);
        let ready: u64 = now.values().map(|c| c.0).sum();
        if now == last && ready == exact {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the broker's counts did not settle: {last:?} then {now:?}, {exact} ready"
        );
        last = now;
    }
}

/// A header of a fetched message as text.
pub fn header(m: &BasicGetMessage, name: &str) -> Option<String> {
    m.delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
        .and_then(|v| match v {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
            _ => None,
        })
}

/// Polls `check` until it returns `Some` or `within` passes (async effects over a
/// real broker and database; never a fixed sleep).
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
