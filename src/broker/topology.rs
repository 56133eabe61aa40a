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
//!
//! cluster:  nodes ──► <routing_queue> (quorum, single active consumer: the leader)
//!           nodes ──► <cluster_exchange> (direct, by node id) ──► <cluster_exchange>.node.<id>
//!                                                               (exclusive, per node)
//! ```

use frontdoor_actors::event::{ContractError, Envelope};
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
/// Header on a dead-lettered envelope: why it was rejected
/// ([`ContractError::reason`]: `validation`, `syntax`, `too_large`, `routing_key`).
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

/// Refuses an envelope whose routing key is not `<site>.<channel>.<type>` of the
/// envelope itself. RabbitMQ authorises a publisher by routing key (topic
/// permissions on the events exchange, e.g. `^north\\.` for an adapter of north), so
/// this check is what binds the site an envelope claims to the sites its publisher
/// may write: the broker edge's equivalent of a token's sites over HTTP.
pub fn check_routing_key(routing_key: &str, event: Envelope) -> Result<Envelope, ContractError> {
    let expected = format!(
        "{}.{}.{}",
        event.site.as_str(),
        event.channel.as_str(),
        event.event_type
    );
    if routing_key == expected {
        Ok(event)
    } else {
        Err(ContractError::RoutingKey)
    }
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
        declare_queue(channel, &queue, partition_args(s)).await?;
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

/// Declares a cluster's shared topology: the routing queue the leader consumes
/// (quorum, single active consumer, delivery limit, dead-lettering) and the direct
/// exchange the nodes' private queues are bound to.
#[tracing::instrument(name = "broker.declare_cluster", skip_all)]
pub async fn declare_cluster(channel: &Channel, s: &BrokerSettings) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            s.cluster_exchange.as_str().into(),
            ExchangeKind::Direct,
            durable(),
            FieldTable::default(),
        )
        .await?;
    declare_queue(channel, &s.routing_queue, partition_args(s)).await
}

/// Arguments of a queue whose messages must be consumed in order by one node and
/// never lost: quorum, single active consumer, delivery limit, dead-lettering.
fn partition_args(s: &BrokerSettings) -> FieldTable {
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
    args
}

/// Declares this node's private queue (gone with its connection) on the cluster
/// exchange, keyed by node id.
pub async fn declare_node_queue(
    channel: &Channel,
    s: &BrokerSettings,
    node_id: &str,
) -> Result<String, BrokerError> {
    let queue = format!("{}.node.{node_id}", s.cluster_exchange);
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            s.cluster_exchange.as_str().into(),
            node_id.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(queue)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(site: &str) -> Envelope {
        let body = serde_json::json!({
            "id": "6f1c2b1e-8f0a-4c7e-9a43-0d4c1f6a2b11", "type": "appointment.booked",
            "occurred_at": "2026-11-23T23:00:00Z", "site": site, "channel": "portal",
            "patient": {"mrn": "M1"}, "appointment_id": "a-1",
            "starts_at": "2026-11-30T09:30:00Z"
        });
        Envelope::parse(body.to_string().as_bytes(), 1 << 16).unwrap()
    }

    #[test]
    fn an_envelope_must_claim_the_site_its_routing_key_was_authorised_for() {
        let key = "north.portal.appointment.booked";
        assert!(check_routing_key(key, envelope("north")).is_ok());
        assert_eq!(
            check_routing_key(key, envelope("south")).unwrap_err(),
            ContractError::RoutingKey
        );
        // A dotted site cannot hide behind a prefix of another one.
        assert!(check_routing_key(key, envelope("north.campus")).is_err());
        assert!(check_routing_key("north.sms.appointment.booked", envelope("north")).is_err());
    }
}
