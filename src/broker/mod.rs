//! RabbitMQ: events in, commands out. All AMQP lives under this module.
//!
//! Delivery is at-least-once end to end: a delivery is acked only after
//! [`Ingest::ingest`](crate::ingest::Ingest::ingest) has stored it (or found it
//! already stored), and commands leave the outbox only when the broker confirms
//! them. Every event and every command carries an id, so a redelivery or a relay
//! retry changes nothing.
//!
//! # Layout
//! - [`connection`]: connecting with heartbeats, the reconnect backoff, and the
//!   `connection.blocked` watch.
//! - [`topology`]: the exchanges and queues declared at start (see docs/contract.md).
//! - [`consumer`]: one consumer per partition queue, ingesting in per-patient order
//!   and acking the completed prefix.
//! - [`relay`]: the outbox relay with publisher confirms and `mandatory`.
//! - [`cluster`]: what nodes say to each other: calls to a patient's owner, and the
//!   routing queue the leader consumes.
//! - [`shutdown`]: the drain signal shared by the server, consumer and relay.

pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod relay;
pub mod shutdown;
pub mod topology;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a broker operation failed (the one error type of this boundary).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The settings cannot work (bad URL, ...); retrying will not help.
    #[error("broker settings are invalid: {0}")]
    Config(String),
    /// The connection or a channel failed; the caller reconnects.
    #[error("broker connection failed: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker cancelled our consumer (queue deleted, or the node went away).
    #[error("the broker cancelled the consumer of {queue}")]
    ConsumerCancelled {
        /// Which queue.
        queue: String,
    },
    /// The connection or channel is no longer open (noticed while idle).
    #[error("the broker connection is closed")]
    Closed,
    /// The broker did not confirm in time.
    #[error("the broker did not confirm within {0:?}")]
    ConfirmTimeout(std::time::Duration),
    /// The broker refused (nacked) a publish that must not be lost.
    #[error("the broker refused a publish")]
    Nacked,
}

/// What `/readyz` knows about the broker side (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct BrokerHealth(Arc<HealthInner>);

#[derive(Debug, Default)]
struct HealthInner {
    /// The broker is configured at all (`[broker] enabled`).
    enabled: AtomicBool,
    /// The consumer's connection is up with its topology declared.
    consumer_up: AtomicBool,
    /// The relay's connection is up.
    relay_up: AtomicBool,
    /// A cluster member: the cluster link counts for readiness too.
    clustered: AtomicBool,
    /// The cluster link (node calls, routing queue) is up.
    link_up: AtomicBool,
    /// Deliveries received and not yet settled, over all partitions.
    in_flight: AtomicUsize,
    /// The most ever in flight (bounded by prefetch x partitions; drills check it).
    max_in_flight: AtomicUsize,
    /// Deliveries the broker flagged `redelivered` (sent before and not acked).
    redelivered: AtomicUsize,
    /// Deliveries settled as duplicates (their event was already stored).
    duplicates: AtomicUsize,
    /// Deliveries received since start (a node's share of the partition queues).
    delivered: AtomicUsize,
}

impl BrokerHealth {
    /// Health for a runtime with the broker on or off.
    pub fn new(enabled: bool) -> BrokerHealth {
        let h = BrokerHealth::default();
        h.0.enabled.store(enabled, Ordering::Relaxed);
        h
    }

    /// `disabled`, `up` or `down`.
    pub fn state(&self) -> &'static str {
        if !self.0.enabled.load(Ordering::Relaxed) {
            "disabled"
        } else if self.0.consumer_up.load(Ordering::Relaxed)
            && self.0.relay_up.load(Ordering::Relaxed)
            && (!self.0.clustered.load(Ordering::Relaxed) || self.0.link_up.load(Ordering::Relaxed))
        {
            "up"
        } else {
            "down"
        }
    }

    /// Deliveries received and not yet settled.
    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::Relaxed)
    }

    /// The most deliveries ever held at once.
    pub fn max_in_flight(&self) -> usize {
        self.0.max_in_flight.load(Ordering::Relaxed)
    }

    /// Deliveries received with the broker's `redelivered` flag set, since start.
    pub fn redelivered(&self) -> usize {
        self.0.redelivered.load(Ordering::Relaxed)
    }

    /// Deliveries received since start, over every partition this node consumed.
    pub fn delivered(&self) -> usize {
        self.0.delivered.load(Ordering::Relaxed)
    }

    /// Deliveries found to be duplicates (already stored), since start.
    pub fn duplicates(&self) -> usize {
        self.0.duplicates.load(Ordering::Relaxed)
    }

    pub(crate) fn took_redelivered(&self, n: usize) {
        self.0.redelivered.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn settled_duplicate(&self) {
        self.0.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn took(&self, n: usize) {
        self.0.delivered.fetch_add(n, Ordering::Relaxed);
        let now = self.0.in_flight.fetch_add(n, Ordering::Relaxed) + n;
        self.0.max_in_flight.fetch_max(now, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::BROKER_IN_FLIGHT).set(now as f64);
    }

    pub(crate) fn settled(&self, n: usize) {
        let now = self
            .0
            .in_flight
            .fetch_sub(n, Ordering::Relaxed)
            .saturating_sub(n);
        metrics::gauge!(crate::metrics::BROKER_IN_FLIGHT).set(now as f64);
    }

    /// This node is a cluster member: its cluster link counts for readiness.
    pub fn clustered(self) -> BrokerHealth {
        self.0.clustered.store(true, Ordering::Relaxed);
        self
    }

    pub(crate) fn set_link_up(&self, up: bool) {
        self.0.link_up.store(up, Ordering::Relaxed);
    }

    pub(crate) fn set_consumer_up(&self, up: bool) {
        self.0.consumer_up.store(up, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::BROKER_CONNECTED, "component" => "consumer").set(if up {
            1.0
        } else {
            0.0
        });
    }

    pub(crate) fn set_relay_up(&self, up: bool) {
        self.0.relay_up.store(up, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::BROKER_CONNECTED, "component" => "relay").set(if up {
            1.0
        } else {
            0.0
        });
    }
}
