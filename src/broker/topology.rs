//! The topology the runtime declares at start (idempotent; documented in
//! docs/contract.md, section "RabbitMQ").
//!
//! ```text
//! adapters ──► events (topic, <site>.<channel>.<type>)
//!                 └─#─► partitions (x-consistent-hash on header x-patient-key)
//!                          ├─► <prefix>.0 … <prefix>.N-1  (quorum, single active consumer,
//!                          │                               x-delivery-limit, DLX)
//!                          └─(no x-patient-key: hashed like any value, so one partition
//!                             for all; the alternate exchange ─► <prefix>.0 catches
//!                             them only where the broker leaves them unrouted)
//! dead-letter exchange (topic) ─#─► dead-letter queue
//! runtime ──► commands (topic, <site>.<channel>.<command>) ──► adapters' queues
//! ```

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use super::BrokerError;
use crate::configuration::BrokerSettings;

/// The header adapters set to the patient's key (MRN when they have it); events
/// with the same key land in the same partition and are applied in order.
pub const PATIENT_KEY_HEADER: &str = "x-patient-key";
/// Header on a dead-lettered envelope: why it was rejected (`validation`, `syntax`,
/// `too_large`).
pub const REASON_HEADER: &str = "x-frontdoor-reason";
/// Header on a dead-lettered envelope: the fields at fault and what is wrong with
/// each (never their values).
pub const ERRORS_HEADER: &str = "x-frontdoor-errors";

fn durable() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_string()))
}

/// The alternate exchange of the partition exchange (events without a key).
pub fn unkeyed_exchange(settings: &BrokerSettings) -> String {
    format!("{}.unkeyed", settings.partition_exchange)
}

/// Declares the events side: exchanges, partition queues, dead letters.
#[tracing::instrument(name = "broker.declare_ingest", skip_all)]
pub async fn declare_ingest(channel: &Channel, s: &BrokerSettings) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            s.events_exchange.as_str().into(),
            ExchangeKind::Topic,
            durable(),
            FieldTable::default(),
        )
        .await?;
    let unkeyed = unkeyed_exchange(s);
    channel
        .exchange_declare(
            unkeyed.as_str().into(),
            ExchangeKind::Fanout,
            durable(),
            FieldTable::default(),
        )
        .await?;
    let mut hash_args = FieldTable::default();
    hash_args.insert("hash-header".into(), text(PATIENT_KEY_HEADER));
    hash_args.insert("alternate-exchange".into(), text(&unkeyed));
    channel
        .exchange_declare(
            s.partition_exchange.as_str().into(),
            ExchangeKind::Custom("x-consistent-hash".into()),
            durable(),
            hash_args,
        )
        .await?;
    channel
        .exchange_bind(
            s.partition_exchange.as_str().into(),
            s.events_exchange.as_str().into(),
            "#".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    channel
        .exchange_declare(
            s.dead_letter_exchange.as_str().into(),
            ExchangeKind::Topic,
            durable(),
            FieldTable::default(),
        )
        .await?;
    let mut dlq_args = FieldTable::default();
    dlq_args.insert("x-queue-type".into(), text("quorum"));
    declare_queue(channel, &s.dead_letter_queue, dlq_args).await?;
    channel
        .queue_bind(
            s.dead_letter_queue.as_str().into(),
            s.dead_letter_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    for i in 0..s.partitions.max(1) {
        let queue = s.partition_queue(i);
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text("quorum"));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(s.delivery_limit.max(1))),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            text(&s.dead_letter_exchange),
        );
        // At-least-once dead-lettering (3.10+) needs reject-publish overflow.
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args.insert("x-overflow".into(), text("reject-publish"));
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        declare_queue(channel, &queue, args).await?;
        // Consistent-hash bindings carry a weight as their key: equal shares.
        channel
            .queue_bind(
                queue.as_str().into(),
                s.partition_exchange.as_str().into(),
                "1".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        if i == 0 {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    unkeyed.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
    }
    Ok(())
}

/// Declares the commands exchange (adapters bind their own queues to it).
#[tracing::instrument(name = "broker.declare_commands", skip_all)]
pub async fn declare_commands(channel: &Channel, s: &BrokerSettings) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            s.commands_exchange.as_str().into(),
            ExchangeKind::Topic,
            durable(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> Result<(), BrokerError> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    Ok(())
}
