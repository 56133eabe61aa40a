//! The simulator as a RabbitMQ channel adapter (`--amqp`), doing what
//! docs/contract.md ("RabbitMQ") asks of one:
//!
//! - events go to the events exchange with routing key `<site>.<channel>.<type>`,
//!   persistent, `message_id` = the event id, `content_type` JSON, header
//!   `x-patient-key` (the patient's MRN, which the simulator always knows; routing
//!   events: the `agent_id`), `mandatory`, on a channel in confirm mode;
//! - each publish waits for its confirm; a nack or a return (no queue bound) is
//!   published again after a short backoff, at most `max_retries` times;
//! - commands are read from an exclusive, server-named queue bound with `#` to the
//!   commands exchange, acked once handed to the run loop, and deduplicated by
//!   `message_id` there (delivery is at-least-once).

use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::Value;
use tokio::sync::mpsc;

use super::args::AmqpOptions;

/// The header adapters set to the patient's key (docs/contract.md).
pub const PATIENT_KEY_HEADER: &str = "x-patient-key";

/// How long one publish waits for its confirm before it counts as lost.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Commands buffered between the consumer and the run loop; the consumer waits
/// (and the broker holds the rest, prefetch) when the run loop is behind.
const COMMAND_BUFFER: usize = 10_000;

/// A command the runtime relayed, as much of it as the simulator reads.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenCommand {
    /// `message_id` (the command id; the same command relayed twice has the same one).
    pub id: String,
    /// The command type (`contact.offer`, `notify.send`, …).
    pub kind: String,
    /// `agent_id` of an offer (or a route, a callback dial).
    pub agent_id: Option<String>,
    /// `contact_id` the command is about.
    pub contact_id: Option<String>,
}

impl SeenCommand {
    /// Reads a delivery's message id and body; `None` for a body that is not a
    /// command (counted apart by the caller).
    pub fn parse(message_id: Option<&str>, body: &[u8]) -> Option<SeenCommand> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(SeenCommand {
            id: message_id.map(str::to_string).or_else(|| text("id"))?,
            kind: text("type")?,
            agent_id: text("agent_id"),
            contact_id: text("contact_id"),
        })
    }
}

/// The connection of an `--amqp` run: a confirm-mode channel to publish on and
/// the commands the consumer took.
pub struct Link {
    /// Kept open for the run; closed by [`Link::close`].
    connection: Connection,
    /// In confirm mode.
    channel: Channel,
    /// Where events go.
    events_exchange: String,
    /// Commands from the consumer task (ends when its channel does).
    commands: mpsc::Receiver<SeenCommand>,
    /// Deliveries whose body was not a command (JSON with an id and a type).
    unreadable: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// What publishing one event came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acked by the broker and routed to a queue.
    Confirmed,
    /// Nacked by the broker on the last attempt.
    Nacked,
    /// Returned unroutable (no queue bound) on the last attempt.
    Returned,
    /// No confirm within the timeout, or the channel failed.
    Lost,
}

impl Outcome {
    /// The response class the summary counts it under.
    pub fn class(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::Nacked => "nacked",
            Outcome::Returned => "returned",
            Outcome::Lost => "unconfirmed",
        }
    }
}

/// One event's publishing: its outcome and what each attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The last attempt's outcome.
    pub outcome: Outcome,
    /// Attempts (publishes) made: 1 + retries.
    pub attempts: u32,
    /// Attempts nacked.
    pub nacked: u32,
    /// Attempts returned unroutable.
    pub returned: u32,
}

/// `<site>.<channel>.<type>` of an envelope.
pub fn routing_key(event: &Value) -> String {
    let f = |k: &str| event.get(k).and_then(Value::as_str).unwrap_or("");
    format!("{}.{}.{}", f("site"), f("channel"), f("type"))
}

/// The `x-patient-key` of an envelope: the patient's strongest identifier (MRN,
/// else portal id, email, phone); for a routing event, its `agent_id`.
pub fn patient_key(event: &Value) -> Option<String> {
    let patient = event.get("patient");
    ["mrn", "portal_id", "email", "phone"]
        .iter()
        .find_map(|k| patient.and_then(|p| p.get(*k)).and_then(Value::as_str))
        .or_else(|| event.get("agent_id").and_then(Value::as_str))
        .map(str::to_string)
}

impl Link {
    /// Connects, checks that the runtime has declared both exchanges (a passive
    /// declare: an adapter does not create the runtime's topology), puts a channel
    /// in confirm mode, and starts consuming commands.
    pub async fn connect(opts: &AmqpOptions) -> anyhow::Result<Link> {
        let url = secrecy::ExposeSecret::expose_secret(&opts.url);
        let connection = Connection::connect(
            url,
            ConnectionProperties::default().with_connection_name("frontdoor-simulate".into()),
        )
        .await
        .context("Failed to connect to RabbitMQ (--amqp)")?;
        let channel = connection
            .create_channel()
            .await
            .context("Failed to open a channel")?;
        for ex in [&opts.events_exchange, &opts.commands_exchange] {
            channel
                .exchange_declare(
                    ex.as_str().into(),
                    lapin::ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        passive: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .with_context(|| {
                    format!("Exchange {ex} does not exist: start the runtime with the broker enabled first")
                })?;
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("Failed to put the channel in confirm mode")?;

        let consuming = connection
            .create_channel()
            .await
            .context("Failed to open the commands channel")?;
        consuming
            .basic_qos(500, BasicQosOptions::default())
            .await
            .context("Failed to set the commands prefetch")?;
        let queue = consuming
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .context("Failed to declare the commands queue")?;
        let queue_name = queue.name().clone();
        consuming
            .queue_bind(
                queue_name.clone(),
                opts.commands_exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("Failed to bind the commands queue")?;
        let mut consumer = consuming
            .basic_consume(
                queue_name,
                "frontdoor-simulate".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("Failed to consume the commands queue")?;
        let (tx, commands) = mpsc::channel(COMMAND_BUFFER);
        let unreadable = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let bad = unreadable.clone();
        tokio::spawn(async move {
            // The channel is kept alive by this task.
            let _consuming = consuming;
            while let Some(Ok(delivery)) = consumer.next().await {
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.as_str());
                match SeenCommand::parse(id, &delivery.data) {
                    Some(c) => {
                        if tx.send(c).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                // Handed to the run loop: act, then ack.
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
        });
        Ok(Link {
            connection,
            channel,
            events_exchange: opts.events_exchange.clone(),
            commands,
            unreadable,
        })
    }

    /// The publishing channel (confirm mode).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The events exchange.
    pub fn events_exchange(&self) -> &str {
        &self.events_exchange
    }

    /// Every command received since the last call.
    pub fn take_commands(&mut self) -> Vec<SeenCommand> {
        let mut out = Vec::new();
        while let Ok(c) = self.commands.try_recv() {
            out.push(c);
        }
        out
    }

    /// Deliveries on the commands queue that were not commands.
    pub fn unreadable(&self) -> u64 {
        self.unreadable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes the connection (the exclusive queue goes with it).
    pub async fn close(self) {
        let _ = self.connection.close(200, "simulation over".into()).await;
    }
}

/// Publishes one event as an adapter must (see the module docs) and waits for its
/// confirm; a nack or a return is published again after 100 ms, 200 ms, … (at most
/// 2 s), up to `max_retries` times.
pub async fn publish_with_retry(
    channel: &Channel,
    exchange: &str,
    event: &Value,
    max_retries: u32,
) -> Published {
    let body = event.to_string();
    let key = routing_key(event);
    let mut headers = FieldTable::default();
    if let Some(k) = patient_key(event) {
        headers.insert(
            PATIENT_KEY_HEADER.into(),
            AMQPValue::LongString(LongString::from(k)),
        );
    }
    let id = event.get("id").and_then(Value::as_str).unwrap_or("");
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(id))
        .with_content_type("application/json".into())
        .with_headers(headers);
    let mut p = Published {
        outcome: Outcome::Lost,
        attempts: 0,
        nacked: 0,
        returned: 0,
    };
    loop {
        p.attempts += 1;
        let confirm = channel
            .basic_publish(
                exchange.into(),
                key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body.as_bytes(),
                props.clone(),
            )
            .await;
        let outcome = match confirm {
            Err(_) => Outcome::Lost,
            Ok(c) => match tokio::time::timeout(CONFIRM_TIMEOUT, c).await {
                Ok(Ok(Confirmation::Ack(None))) => Outcome::Confirmed,
                Ok(Ok(Confirmation::Ack(Some(_)))) => Outcome::Returned,
                Ok(Ok(Confirmation::Nack(_))) => Outcome::Nacked,
                // Not in confirm mode, a failed channel, no confirm in time:
                // nothing says the broker has it.
                Ok(Ok(Confirmation::NotRequested)) | Ok(Err(_)) | Err(_) => Outcome::Lost,
            },
        };
        p.outcome = outcome;
        match outcome {
            Outcome::Confirmed | Outcome::Lost => return p,
            Outcome::Nacked => p.nacked += 1,
            Outcome::Returned => p.returned += 1,
        }
        if p.attempts > max_retries {
            return p;
        }
        let backoff =
            Duration::from_millis(100 << (p.attempts - 1).min(4)).min(Duration::from_secs(2));
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_patient_key_is_the_strongest_identifier_else_the_agent() {
        let e = json!({"patient": {"phone": "+15551000001", "mrn": "SIM-10000001"}});
        assert_eq!(patient_key(&e).as_deref(), Some("SIM-10000001"));
        let e = json!({"patient": {"phone": "+15551000001", "email": "a@b.org"}});
        assert_eq!(patient_key(&e).as_deref(), Some("a@b.org"));
        let e = json!({"type": "offer.accepted", "agent_id": "north-agent-01"});
        assert_eq!(patient_key(&e).as_deref(), Some("north-agent-01"));
        assert_eq!(patient_key(&json!({})), None);
    }

    #[test]
    fn the_routing_key_is_site_channel_type() {
        let e = json!({"site": "north", "channel": "iva", "type": "bot.turn"});
        assert_eq!(routing_key(&e), "north.iva.bot.turn");
    }

    #[test]
    fn a_command_is_read_with_its_message_id_and_the_offer_fields() {
        let body = br#"{"id":"c-1","type":"contact.offer","agent_id":"north-agent-01","contact_id":"sim-1"}"#;
        let c = SeenCommand::parse(Some("m-1"), body).unwrap();
        assert_eq!(c.id, "m-1");
        assert_eq!(c.kind, "contact.offer");
        assert_eq!(c.agent_id.as_deref(), Some("north-agent-01"));
        assert_eq!(c.contact_id.as_deref(), Some("sim-1"));
        assert_eq!(SeenCommand::parse(None, body).unwrap().id, "c-1");
        assert!(SeenCommand::parse(None, b"not json").is_none());
        assert!(SeenCommand::parse(None, br#"{"id":"x"}"#).is_none());
    }
}
