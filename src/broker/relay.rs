//! The outbox relay: publishes pending commands with publisher confirms and
//! `mandatory`, then marks them published.
//!
//! - Confirmed and routed: marked published.
//! - Returned (`basic.return`, no queue bound for the key): logged, counted, and
//!   parked (kept and visible in the outbox with its reason), tried again after
//!   `park_retry_secs` or when an operator unparks it. Never dropped.
//! - Nacked, or no confirm in time, or the connection lost: the command stays
//!   pending and goes out on a later round. Its id is the `message_id`, derived from
//!   what caused it, so a retry never produces a second different command.

use std::time::{Duration, Instant};

use chrono::Utc;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};

use super::connection::{self, Backoff};
use super::shutdown::Shutdown;
use super::topology;
use super::{BrokerError, BrokerHealth};
use crate::cluster::Cluster;
use crate::configuration::BrokerSettings;
use crate::metrics as m;
use crate::store::outbox::{OutboxRow, RelayScope};
use crate::store::Store;
use crate::supervisor::RestartBook;
use frontdoor_actors::command::CommandType;
use std::sync::Arc;

/// Runs the relay until the drain. Returns why it stopped.
pub async fn run(
    settings: BrokerSettings,
    store: Store,
    health: BrokerHealth,
    restarts: Arc<RestartBook>,
    cluster: Cluster,
    mut shutdown: Shutdown,
) -> String {
    let (min, max) = settings.backoff();
    let mut backoff = Backoff::new(min, max);
    loop {
        if shutdown.is_triggered() {
            return "drained on shutdown".into();
        }
        match session(
            &settings,
            &store,
            &health,
            &restarts,
            &cluster,
            &shutdown,
            &mut backoff,
        )
        .await
        {
            Ok(()) => {
                health.set_relay_up(false);
                return "drained on shutdown".into();
            }
            Err(BrokerError::Config(e)) => {
                health.set_relay_up(false);
                return format!("stopped: {e}");
            }
            Err(e) => {
                health.set_relay_up(false);
                metrics::counter!(m::BROKER_RECONNECTS_TOTAL, "component" => "relay").increment(1);
                restarts.failed(&e.to_string());
                let delay = backoff.next_delay();
                tracing::warn!(error.message = %e, retry_in_ms = delay.as_millis() as u64, "outbox relay lost its broker connection; commands stay in the outbox");
                if shutdown.sleep_or_triggered(delay).await {
                    return "drained on shutdown".into();
                }
            }
        }
    }
}

async fn session(
    settings: &BrokerSettings,
    store: &Store,
    health: &BrokerHealth,
    restarts: &RestartBook,
    cluster: &Cluster,
    shutdown: &Shutdown,
    backoff: &mut Backoff,
) -> Result<(), BrokerError> {
    let session = connection::connect(settings, "relay").await?;
    let res = async {
        let channel = session.channel().await?;
        topology::declare_commands(&channel, settings).await?;
        if cluster.now().fenced() {
            // Routing requests go to the routing queue: make sure it exists before the
            // first one (a missing queue would park them).
            topology::declare_cluster(&channel, settings).await?;
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        health.set_relay_up(true);
        restarts.running();
        backoff.reset();
        tracing::info!("outbox relay connected");
        relay_loop(settings, store, &channel, cluster, shutdown.clone()).await
    }
    .await;
    session.close("relay stopped").await;
    res
}

/// The rows this node relays: all of them on a single node; in a cluster those of
/// the partitions it owns, and routing's own while it leads.
fn scope(cluster: &Cluster) -> RelayScope {
    let own = cluster.now();
    if !own.fenced() {
        return RelayScope::All;
    }
    RelayScope::Owned {
        partitions: own.mine.keys().copied().collect(),
        routing: own.is_leader(),
    }
}

async fn relay_loop(
    settings: &BrokerSettings,
    store: &Store,
    channel: &Channel,
    cluster: &Cluster,
    mut shutdown: Shutdown,
) -> Result<(), BrokerError> {
    let interval = Duration::from_millis(settings.relay_interval_ms.max(1));
    let written = store.outbox_written();
    let mut last_gauges = Instant::now() - Duration::from_secs(60);
    loop {
        if shutdown.is_triggered() {
            return Ok(());
        }
        if !channel.status().connected() {
            return Err(BrokerError::Closed);
        }
        if last_gauges.elapsed() >= Duration::from_secs(5) {
            last_gauges = Instant::now();
            if let Ok((pending, _, parked)) = store.outbox_counts().await {
                metrics::gauge!(m::OUTBOX_COMMANDS, "state" => "pending").set(pending as f64);
                metrics::gauge!(m::OUTBOX_COMMANDS, "state" => "parked").set(parked as f64);
            }
        }
        let cutoff =
            Utc::now().timestamp_millis() - (settings.park_retry_secs as i64).saturating_mul(1000);
        let rows = match store
            .relay_batch(
                i64::from(settings.relay_batch.max(1)),
                cutoff,
                &scope(cluster),
            )
            .await
        {
            Ok(rows) => rows,
            Err(_) => {
                // The store is down: nothing to relay until it is back (readyz says so).
                if shutdown.sleep_or_triggered(interval).await {
                    return Ok(());
                }
                continue;
            }
        };
        let full = rows.len() as u32 >= settings.relay_batch.max(1);
        if !rows.is_empty() {
            publish_round(settings, store, channel, rows).await?;
        }
        if !full {
            // Until the next round or a commit that wrote commands, whichever first.
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(interval) => {}
                _ = written.notified() => {}
            }
        }
    }
}

/// Publishes one round, pipelining confirms, and records each outcome.
#[tracing::instrument(name = "broker.relay_round", skip_all, fields(commands = rows.len()))]
async fn publish_round(
    settings: &BrokerSettings,
    store: &Store,
    channel: &Channel,
    rows: Vec<OutboxRow>,
) -> Result<(), BrokerError> {
    let timeout = Duration::from_millis(settings.confirm_timeout_ms.max(1));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut confirms = Vec::with_capacity(rows.len());
    let mut broken: Option<BrokerError> = None;
    for row in &rows {
        let props = BasicProperties::default()
            .with_message_id(ShortString::from(row.id.as_str()))
            .with_type(ShortString::from(row.command_type.as_str()))
            .with_app_id("frontdoor".into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_timestamp(Utc::now().timestamp().max(0) as u64);
        // Routing requests go to the leader's routing queue; the rest to adapters.
        let (exchange, key) = if row.command_type == CommandType::RoutingRequest.as_str() {
            ("", settings.routing_queue.as_str())
        } else {
            (
                settings.commands_exchange.as_str(),
                row.routing_key.as_str(),
            )
        };
        match channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                row.body.as_bytes(),
                props,
            )
            .await
        {
            Ok(c) => confirms.push(c),
            Err(e) => {
                broken = Some(e.into());
                break;
            }
        }
    }
    let mut published = Vec::new();
    let mut unroutable = Vec::new();
    let mut failed = Vec::new();
    for (row, confirm) in rows.iter().zip(confirms) {
        match tokio::time::timeout_at(deadline, confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => {
                metrics::counter!(m::COMMANDS_PUBLISHED_TOTAL, "type" => command_label(&row.command_type)).increment(1);
                published.push(row.seq);
            }
            Ok(Ok(Confirmation::Ack(Some(returned)))) => {
                metrics::counter!(m::COMMANDS_UNROUTABLE_TOTAL, "type" => command_label(&row.command_type)).increment(1);
                tracing::warn!(command.id = %row.id, command.type = %row.command_type, broker.reply_code = returned.reply_code, broker.reply_text = %returned.reply_text, "command unroutable (no queue bound for its routing key): parked");
                unroutable.push(row.seq);
            }
            Ok(Ok(_)) => failed.push(row.seq),
            Ok(Err(e)) => {
                failed.push(row.seq);
                broken = Some(e.into());
            }
            Err(_) => {
                failed.push(row.seq);
                broken = Some(BrokerError::ConfirmTimeout(timeout));
            }
        }
    }
    // If recording fails the command is published again later under the same
    // message_id: at-least-once, and consumers deduplicate by it.
    if !published.is_empty() {
        let _ = store.mark_published(&published).await;
    }
    if !unroutable.is_empty() {
        let _ = store
            .park_commands(&unroutable, "unroutable: 312 NO_ROUTE")
            .await;
    }
    if !failed.is_empty() {
        let _ = store
            .record_relay_failure(&failed, "not confirmed by the broker")
            .await;
    }
    match broken {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The command type as a bounded metric label.
fn command_label(t: &str) -> &'static str {
    match t {
        "notify.send" => "notify.send",
        "contact.offer" => "contact.offer",
        "contact.route" => "contact.route",
        "escalation.raised" => "escalation.raised",
        "routing.request" => "routing.request",
        _ => "other",
    }
}
