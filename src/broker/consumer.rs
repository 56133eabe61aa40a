//! The event consumer: one consumer per partition queue, all on one connection.
//!
//! Each consumer takes what the broker has sent (at most `prefetch` deliveries),
//! parses every envelope at the edge, and ingests the batch with one task per
//! patient key: deliveries of one key run one after another in delivery order,
//! different keys run concurrently. Then it settles the batch: rejected envelopes
//! are republished to the dead-letter exchange with their reason (confirmed) and
//! acked; events that cannot be processed are nacked with requeue, so the broker
//! dead-letters them after `x-delivery-limit`; everything else is acked with one
//! `multiple=true` ack on the batch's last tag.
//!
//! While the store is unavailable nothing is acked and nothing new is taken: the
//! consumer keeps its unacked deliveries (the broker sends no more than the
//! prefetch), waits for the store with backoff, then retries them in order.
//! Holding instead of nack/requeue matters on RabbitMQ 3.10 quorum queues: every
//! requeue counts towards `x-delivery-limit`, so an outage would otherwise
//! dead-letter valid events.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use frontdoor_actors::event::{ContractError, Envelope};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Confirmation};

use super::connection::{self, Backoff, Session};
use super::shutdown::{Shutdown, ShutdownTrigger};
use super::topology::{self, ERRORS_HEADER, PATIENT_KEY_HEADER, REASON_HEADER};
use super::{BrokerError, BrokerHealth};
use crate::configuration::BrokerSettings;
use crate::ingest::{Ingest, IngestError, IngestOutcome};
use crate::metrics as m;
use tokio::sync::watch;

/// Everything a partition consumer needs (cheap to clone).
#[derive(Clone)]
pub struct ConsumerContext {
    /// Broker settings.
    pub settings: BrokerSettings,
    /// The one ingest path.
    pub ingest: Ingest,
    /// Readiness.
    pub health: BrokerHealth,
    /// Largest accepted envelope.
    pub max_event_bytes: usize,
    /// Restarts (reconnects) counted and escalated under the task policy.
    pub restarts: std::sync::Arc<crate::supervisor::RestartBook>,
    /// Which partition queues to consume (all of them on a single node; the
    /// partitions this node owns in a cluster).
    pub assignment: Assignment,
}

/// Which partition queues this node consumes: set by the coordinator, applied by
/// the consumer, which reports when it has (a stopped partition has settled its
/// batch in hand and cancelled its consumer).
#[derive(Clone)]
pub struct Assignment {
    /// (version, partitions) wanted.
    want: Arc<watch::Sender<(u64, BTreeSet<u16>)>>,
    /// Version the consumer has applied.
    done: Arc<watch::Sender<u64>>,
    /// True while a session is connected (otherwise nothing consumes anyway).
    connected: Arc<AtomicBool>,
}

impl Assignment {
    /// Consume these partitions from the start.
    pub fn of(partitions: impl IntoIterator<Item = u16>) -> Assignment {
        Assignment {
            want: Arc::new(watch::channel((1, partitions.into_iter().collect())).0),
            done: Arc::new(watch::channel(0).0),
            connected: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Consume exactly `partitions`; answers once the consumer has (or at once when
    /// it is not connected, or after `within`).
    pub async fn assign(&self, partitions: BTreeSet<u16>, within: Duration) {
        let mut version = 0;
        self.want.send_if_modified(|(v, set)| {
            if *set == partitions {
                version = *v;
                return false;
            }
            *v += 1;
            version = *v;
            *set = partitions;
            true
        });
        if !self.connected.load(Ordering::SeqCst) {
            return;
        }
        let mut rx = self.done.subscribe();
        let _ = tokio::time::timeout(within, rx.wait_for(|d| *d >= version)).await;
    }

    /// The partitions wanted now.
    pub fn wanted(&self) -> BTreeSet<u16> {
        self.want.borrow().1.clone()
    }
}

/// Aborts the partition tasks still running when a session ends.
struct Running(
    BTreeMap<
        u16,
        (
            tokio::task::JoinHandle<Result<(), BrokerError>>,
            ShutdownTrigger,
        ),
    >,
);

impl Drop for Running {
    fn drop(&mut self) {
        for (h, _) in self.0.values() {
            h.abort();
        }
    }
}

/// Runs the consumer until the drain: connect, declare, consume every partition,
/// reconnect with backoff when the connection is lost. Returns why it stopped.
pub async fn run(ctx: ConsumerContext, mut shutdown: Shutdown) -> String {
    let (min, max) = ctx.settings.backoff();
    let mut backoff = Backoff::new(min, max);
    loop {
        if shutdown.is_triggered() {
            return "drained on shutdown".into();
        }
        match session(&ctx, &shutdown, &mut backoff).await {
            Ok(()) => {
                ctx.health.set_consumer_up(false);
                return "drained on shutdown".into();
            }
            Err(BrokerError::Config(e)) => {
                ctx.health.set_consumer_up(false);
                return format!("stopped: {e}");
            }
            Err(e) => {
                ctx.health.set_consumer_up(false);
                ctx.assignment.connected.store(false, Ordering::SeqCst);
                metrics::counter!(m::BROKER_RECONNECTS_TOTAL, "component" => "consumer")
                    .increment(1);
                ctx.restarts.failed(&e.to_string());
                let delay = backoff.next_delay();
                tracing::warn!(error.message = %e, retry_in_ms = delay.as_millis() as u64, "broker consumer lost its connection; reconnecting");
                if shutdown.sleep_or_triggered(delay).await {
                    return "drained on shutdown".into();
                }
            }
        }
    }
}

/// One connection's life: Ok on drain, Err when it broke.
async fn session(
    ctx: &ConsumerContext,
    shutdown: &Shutdown,
    backoff: &mut Backoff,
) -> Result<(), BrokerError> {
    let session = connection::connect(&ctx.settings, "consumer").await?;
    let res = consume_all(ctx, &session, shutdown, backoff).await;
    session.close("consumer stopped").await;
    res
}

async fn consume_all(
    ctx: &ConsumerContext,
    session: &Session,
    shutdown: &Shutdown,
    backoff: &mut Backoff,
) -> Result<(), BrokerError> {
    let setup = session.channel().await?;
    topology::declare_ingest(&setup, &ctx.settings).await?;
    let dead_letters = session.channel().await?;
    dead_letters
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    ctx.health.set_consumer_up(true);
    ctx.assignment.connected.store(true, Ordering::SeqCst);
    ctx.restarts.running();
    backoff.reset();
    tracing::info!(
        partitions = ctx.settings.partitions,
        prefetch = ctx.settings.prefetch,
        "broker consumer connected"
    );
    let mut want = ctx.assignment.want.subscribe();
    let mut running = Running(BTreeMap::new());
    let mut shutdown = shutdown.clone();
    let res = loop {
        let (version, wanted) = want.borrow_and_update().clone();
        // Stop what this node no longer consumes: each settles its batch in hand.
        let gone: Vec<u16> = running
            .0
            .keys()
            .filter(|p| !wanted.contains(p))
            .copied()
            .collect();
        for p in gone {
            if let Some((handle, stop)) = running.0.remove(&p) {
                stop.trigger();
                match handle.await {
                    Ok(Ok(())) => tracing::info!(partition = p, "stopped consuming partition"),
                    Ok(Err(e)) => break_err(&e),
                    Err(_) => {}
                }
            }
        }
        let new: Vec<u16> = wanted
            .iter()
            .filter(|p| !running.0.contains_key(p))
            .copied()
            .collect();
        for p in new {
            // Not a session channel: it closes itself when its partition stops
            // (or is dropped), so the next consumer of the queue takes over.
            let channel = session.connection.create_channel().await?;
            channel
                .basic_qos(ctx.settings.prefetch.max(1), BasicQosOptions::default())
                .await?;
            let (stop, watch) = shutdown.child();
            let queue = ctx.settings.partition_queue(p);
            let task = actix_rt::spawn({
                let ctx = ctx.clone();
                let dead_letters = dead_letters.clone();
                async move { consume_partition(&ctx, channel, queue, &dead_letters, watch).await }
            });
            running.0.insert(p, (task, stop));
        }
        ctx.assignment.done.send_replace(version);
        let finished = async {
            if running.0.is_empty() {
                std::future::pending::<(u16, Result<Result<(), BrokerError>, tokio::task::JoinError>)>().await
            } else {
                let (res, i, _) =
                    futures_util::future::select_all(running.0.iter_mut().map(|(p, (h, _))| {
                        let p = *p;
                        Box::pin(async move { (p, h.await) })
                    }))
                    .await;
                let _ = i;
                res
            }
        };
        tokio::select! {
            _ = shutdown.wait() => break Ok(()),
            // A partition waiting on the dead connection (an ack, a dead-letter
            // confirm) may never be told: the session ends here instead.
            _ = session.lost() => break Err(BrokerError::Closed),
            _ = want.changed() => {}
            (p, r) = finished => {
                running.0.remove(&p);
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(e),
                    Err(e) => break Err(BrokerError::Config(format!("partition consumer task failed: {e}"))),
                }
            }
        }
    };
    // Drain: every partition finishes its batch in hand and acks what was stored.
    // With the connection gone nothing can be acked: each gets a bounded moment,
    // then is stopped (its deliveries are redelivered, and stored ones are found
    // already stored).
    let bound = session
        .is_lost()
        .then(|| Duration::from_millis(ctx.settings.confirm_timeout_ms.max(1)));
    for (p, (handle, stop)) in std::mem::take(&mut running.0) {
        stop.trigger();
        if !connection::join_within(handle, bound).await {
            tracing::warn!(
                partition = p,
                "partition consumer stopped waiting on a lost connection"
            );
        }
    }
    ctx.assignment.connected.store(false, Ordering::SeqCst);
    res
}

fn break_err(e: &BrokerError) {
    tracing::warn!(error.message = %e, "a partition consumer failed while stopping");
}

/// Consumes one partition queue until the drain or a failure.
#[tracing::instrument(name = "broker.partition", skip_all, fields(queue = %queue))]
async fn consume_partition(
    ctx: &ConsumerContext,
    channel: Channel,
    queue: String,
    dead_letters: &Channel,
    mut shutdown: Shutdown,
) -> Result<(), BrokerError> {
    let tag = format!("{}-{}", ctx.settings.connection_name, queue);
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut batches = consumer.ready_chunks(usize::from(ctx.settings.prefetch.max(1)));
    loop {
        let batch = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            b = batches.next() => b,
        };
        let Some(batch) = batch else {
            return Err(BrokerError::ConsumerCancelled { queue });
        };
        let mut deliveries = Vec::with_capacity(batch.len());
        for d in batch {
            deliveries.push(d?);
        }
        ctx.health
            .took_redelivered(deliveries.iter().filter(|d| d.redelivered).count());
        // Settled in the gauge also when the task is stopped mid-batch.
        let _in_flight = InFlight::took(&ctx.health, deliveries.len());
        process_batch(ctx, deliveries, dead_letters, &mut shutdown).await?;
    }
    // Drain: close the channel without cancelling first. Closing returns what the
    // broker sent and we did not take to the front of the queue *before* the next
    // single active consumer (another node taking this partition) is activated; a
    // basic.cancel first would activate it while these deliveries are still held
    // here, and it would get later events of a patient before earlier ones.
    let _ = channel.close(200, "drained".into()).await;
    Ok(())
}

/// A batch counted in flight until dropped (settled, failed, or its task stopped).
struct InFlight<'a>(&'a BrokerHealth, usize);

impl<'a> InFlight<'a> {
    fn took(health: &'a BrokerHealth, n: usize) -> InFlight<'a> {
        health.took(n);
        InFlight(health, n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.settled(self.1);
    }
}

/// Where one delivery stands within its batch.
enum State {
    /// Valid; waiting to be stored.
    Pending(Box<Envelope>),
    /// Stored now or before: ack.
    Stored(&'static str),
    /// Not a valid envelope: dead-letter with the reason, then ack.
    Invalid {
        reason: &'static str,
        errors: String,
    },
    /// Valid, but processing failed for good this time: nack with requeue (the
    /// broker dead-letters it after the delivery limit).
    Failed,
}

/// The grouping key: the adapter's `x-patient-key`, else the first identifier.
fn patient_key(d: &Delivery, e: &Envelope) -> String {
    let header = d
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(PATIENT_KEY_HEADER))
        .and_then(|v| match v {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
            _ => None,
        });
    header.unwrap_or_else(|| {
        e.patient
            .as_ref()
            .and_then(|p| p.to_list().into_iter().next())
            .map(|i| format!("{}:{}", i.kind().as_str(), i.value()))
            .unwrap_or_default()
    })
}

fn invalid(e: ContractError) -> State {
    let reason = e.reason();
    metrics::counter!(m::EVENTS_REJECTED_TOTAL, "reason" => reason).increment(1);
    let errors = e
        .field_errors()
        .iter()
        .map(|f| format!("{}: {}", f.field, f.reason))
        .collect::<Vec<_>>()
        .join("; ");
    State::Invalid { reason, errors }
}

async fn process_batch(
    ctx: &ConsumerContext,
    deliveries: Vec<Delivery>,
    dead_letters: &Channel,
    shutdown: &mut Shutdown,
) -> Result<(), BrokerError> {
    let mut states: Vec<State> = deliveries
        .iter()
        .map(|d| {
            match Envelope::parse(&d.data, ctx.max_event_bytes)
                .and_then(|e| topology::check_routing_key(d.routing_key.as_str(), e))
            {
                Ok(e) => State::Pending(Box::new(e)),
                Err(e) => invalid(e),
            }
        })
        .collect();
    let keys: Vec<String> = deliveries
        .iter()
        .zip(&states)
        .map(|(d, s)| match s {
            State::Pending(e) => patient_key(d, e),
            _ => String::new(),
        })
        .collect();

    let (min, max) = ctx.settings.backoff();
    let mut store_backoff = Backoff::new(min, max);
    let mut paused = false;
    // "Unavailable" while the store answers its ping: not an outage but something
    // about these events (an actor that keeps failing on them, shedding). Retried
    // here a few times, then returned to the broker, whose delivery limit decides.
    let mut unexplained = vec![0u32; states.len()];
    loop {
        ingest_pending(&ctx.ingest, &mut states, &keys).await;
        if !states.iter().any(|s| matches!(s, State::Pending(_))) {
            break;
        }
        if ctx.ingest.store().ping().await.is_ok() {
            for (i, s) in states.iter_mut().enumerate() {
                if matches!(s, State::Pending(_)) {
                    unexplained[i] += 1;
                    if unexplained[i] >= ctx.settings.delivery_limit.max(1) {
                        tracing::warn!("event keeps failing while the store is up; returned to the broker towards the delivery limit");
                        *s = State::Failed;
                    }
                }
            }
            if shutdown
                .sleep_or_triggered(store_backoff.next_delay())
                .await
            {
                return settle(&deliveries, &states, dead_letters, ctx).await;
            }
            continue;
        }
        // The store is unavailable: keep the deliveries unacked, take nothing new,
        // and wait for it to come back.
        if !paused {
            paused = true;
            metrics::counter!(m::BROKER_STORE_PAUSES_TOTAL).increment(1);
            tracing::warn!("store unavailable: consumer paused, nothing acked until it is back");
        }
        loop {
            if shutdown
                .sleep_or_triggered(store_backoff.next_delay())
                .await
            {
                // Drain with the store down: ack what was stored; the rest stays
                // unacked and is redelivered when the channel closes.
                return settle(&deliveries, &states, dead_letters, ctx).await;
            }
            if ctx.ingest.store().ping().await.is_ok() {
                break;
            }
        }
    }
    if paused {
        tracing::info!("store is back: consumer resumed");
    }
    settle(&deliveries, &states, dead_letters, ctx).await
}

/// Ingests every pending delivery: one task per key, each key in order; a key
/// stops at its first "unavailable" so later events of that patient wait too.
async fn ingest_pending(ingest: &Ingest, states: &mut [State], keys: &[String]) {
    let pending: Vec<bool> = states
        .iter()
        .map(|s| matches!(s, State::Pending(_)))
        .collect();
    let groups = group_by_key(keys, &pending);
    let jobs = groups.into_iter().map(|idxs| {
        let events: Vec<(usize, Envelope)> = idxs
            .iter()
            .filter_map(|&i| match &states[i] {
                State::Pending(e) => Some((i, (**e).clone())),
                _ => None,
            })
            .collect();
        async move {
            let mut done = Vec::with_capacity(events.len());
            for (i, e) in events {
                match ingest.ingest(e).await {
                    Ok(IngestOutcome::Accepted { .. }) => done.push((i, State::Stored("stored"))),
                    Ok(IngestOutcome::Duplicate { .. }) => {
                        done.push((i, State::Stored("duplicate")))
                    }
                    Ok(IngestOutcome::Routed) => done.push((i, State::Stored("routed"))),
                    Err(IngestError::Rejected(reason)) => {
                        tracing::warn!(error.message = %reason, "event cannot be processed; requeued towards the delivery limit");
                        done.push((i, State::Failed));
                    }
                    Err(IngestError::Unavailable(_)) => break,
                }
            }
            done
        }
    });
    for (i, s) in futures_util::future::join_all(jobs)
        .await
        .into_iter()
        .flatten()
    {
        states[i] = s;
    }
}

/// The pending deliveries grouped by key, each group in delivery order, groups in
/// order of their first delivery: one group runs sequentially, groups concurrently.
fn group_by_key(keys: &[String], pending: &[bool]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        if !pending[i] {
            continue;
        }
        let g = *by_key.entry(key.as_str()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

/// Dead-letters the invalid, nacks the failed, acks the rest.
async fn settle(
    deliveries: &[Delivery],
    states: &[State],
    dead_letters: &Channel,
    ctx: &ConsumerContext,
) -> Result<(), BrokerError> {
    for (d, s) in deliveries.iter().zip(states) {
        if let State::Invalid { reason, errors } = s {
            dead_letter(dead_letters, &ctx.settings, d, reason, errors).await?;
        }
    }
    let mut last_done = None;
    let mut all_settled = true;
    for (d, s) in deliveries.iter().zip(states) {
        let outcome = match s {
            State::Pending(_) => {
                all_settled = false;
                continue;
            }
            State::Failed => {
                d.acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await?;
                "requeued"
            }
            State::Stored(o) => {
                last_done = Some(d);
                if *o == "duplicate" {
                    ctx.health.settled_duplicate();
                }
                o
            }
            State::Invalid { .. } => {
                last_done = Some(d);
                "dead_lettered"
            }
        };
        metrics::counter!(m::BROKER_DELIVERIES_TOTAL, "outcome" => outcome).increment(1);
    }
    if all_settled {
        // One ack for the whole completed prefix (failed ones are already nacked).
        if let Some(d) = last_done {
            d.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
    } else {
        for (d, s) in deliveries.iter().zip(states) {
            if matches!(s, State::Stored(_) | State::Invalid { .. }) {
                d.acker.ack(BasicAckOptions::default()).await?;
            }
        }
    }
    Ok(())
}

/// Republishes a rejected envelope to the dead-letter exchange with its reason,
/// and waits for the broker to confirm it (only then is the original acked).
async fn dead_letter(
    channel: &Channel,
    s: &BrokerSettings,
    d: &Delivery,
    reason: &str,
    errors: &str,
) -> Result<(), BrokerError> {
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    headers.insert(
        REASON_HEADER.into(),
        AMQPValue::LongString(LongString::from(reason.to_string())),
    );
    headers.insert(
        ERRORS_HEADER.into(),
        AMQPValue::LongString(LongString::from(errors.to_string())),
    );
    let props = d
        .properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(2);
    let confirm = channel
        .basic_publish(
            s.dead_letter_exchange.as_str().into(),
            d.routing_key.clone(),
            BasicPublishOptions::default(),
            &d.data,
            props,
        )
        .await?;
    let timeout = Duration::from_millis(s.confirm_timeout_ms.max(1));
    match tokio::time::timeout(timeout, confirm).await {
        Err(_) => Err(BrokerError::ConfirmTimeout(timeout)),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(Confirmation::Nack(_))) => Err(BrokerError::Nacked),
        Ok(Ok(_)) => {
            tracing::info!(
                broker.reason = reason,
                broker.errors = errors,
                "rejected envelope dead-lettered"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::group_by_key;

    #[test]
    fn deliveries_of_one_patient_stay_in_one_group_in_delivery_order() {
        let keys: Vec<String> = ["a", "b", "a", "c", "b", "a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let pending = [true; 6];
        assert_eq!(
            group_by_key(&keys, &pending),
            vec![vec![0, 2, 5], vec![1, 4], vec![3]]
        );
    }

    #[test]
    fn settled_deliveries_are_left_out_of_the_retry() {
        let keys: Vec<String> = ["a", "a", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            group_by_key(&keys, &[false, true, true]),
            vec![vec![1], vec![2]]
        );
    }
}
