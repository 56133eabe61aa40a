//! The cluster's AMQP: one connection per node for what nodes say to each other.
//!
//! - **Calls to a node** (forwarding an event to the patient's owner, a merge's
//!   rebuild, the leader's live queues): published to the cluster exchange with the
//!   node id as routing key and `mandatory` (a node that is gone answers at once:
//!   no route), answered through RabbitMQ's direct reply-to. Transient: a call that
//!   gets no answer times out and the caller retries (the work is idempotent).
//! - **Routing inputs** go to the routing queue (persistent, confirmed) from every
//!   node; the leader consumes it (single active consumer), applies each batch,
//!   waits until the router has stored the changes, then acks and answers the
//!   inputs that asked for an answer.
//!
//! The link reconnects with backoff like the consumer and the relay; while it is
//! down this node is not eligible for work (the coordinator gives its partitions
//! and the router away).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::{oneshot, watch};

use super::connection::{self, Backoff};
use super::shutdown::Shutdown;
use super::{topology, BrokerError};
use crate::cluster::wire::{NodeHandler, NodeReply, NodeRequest, RoutingEnvelope};
use crate::configuration::BrokerSettings;
use crate::metrics as m;
use crate::store::Store;
use crate::supervisor::RestartBook;
use frontdoor_actors::routing::router::{Routing, RoutingError, RoutingInput, RoutingOutput};

/// RabbitMQ's direct reply-to pseudo-queue.
const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Why a call through the link failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The link is down (reconnecting).
    #[error("the cluster link is down")]
    Down,
    /// Nobody is bound for that node id (the node is gone).
    #[error("no such node")]
    NoRoute,
    /// No answer in time.
    #[error("no answer in time")]
    Timeout,
    /// The broker refused or failed the publish.
    #[error("broker: {0}")]
    Broker(String),
    /// The answer could not be read.
    #[error("unreadable answer: {0}")]
    Decode(String),
}

/// The link's handle (cheap to clone).
#[derive(Clone)]
pub struct NodeLink {
    inner: Arc<Inner>,
}

struct Inner {
    /// Names and timings.
    settings: BrokerSettings,
    /// This node.
    node_id: String,
    /// The channel calls go out on (confirm mode, consuming direct replies), while up.
    rpc: RwLock<Option<Channel>>,
    /// Calls waiting for their answer, by correlation id.
    pending: Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>,
    /// True while connected with the topology declared.
    up: AtomicBool,
    /// Whether this node should consume the routing queue (it leads).
    leading: watch::Sender<bool>,
    /// Whether it consumes the routing queue now.
    consuming: watch::Sender<bool>,
}

impl NodeLink {
    /// A link for this node (not connected until [`run`] connects it).
    pub fn new(settings: BrokerSettings, node_id: String) -> NodeLink {
        NodeLink {
            inner: Arc::new(Inner {
                settings,
                node_id,
                rpc: RwLock::new(None),
                pending: Mutex::new(HashMap::new()),
                up: AtomicBool::new(false),
                leading: watch::channel(false).0,
                consuming: watch::channel(false).0,
            }),
        }
    }

    /// True while the link is connected.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::SeqCst)
    }

    /// Starts or stops consuming the routing queue; answers once it has (or after
    /// `within`, when the link is down and nothing consumes anyway).
    pub async fn set_leading(&self, leading: bool, within: Duration) {
        self.inner.leading.send_replace(leading);
        if !self.is_up() && !leading {
            return;
        }
        let mut rx = self.inner.consuming.subscribe();
        let _ = tokio::time::timeout(within, rx.wait_for(|c| *c == leading)).await;
    }

    fn channel(&self) -> Result<Channel, LinkError> {
        self.inner
            .rpc
            .read()
            .ok()
            .and_then(|c| c.clone())
            .filter(|c| c.status().connected())
            .ok_or(LinkError::Down)
    }

    /// Publishes with confirm; `reply` makes it a request whose answer is awaited.
    async fn send(
        &self,
        exchange: &str,
        key: &str,
        body: Vec<u8>,
        persistent: bool,
        reply: Option<Duration>,
    ) -> Result<Option<Vec<u8>>, LinkError> {
        let channel = self.channel()?;
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_app_id("frontdoor".into());
        if persistent {
            props = props.with_delivery_mode(2);
        }
        let mut answer = None;
        let correlation = uuid::Uuid::new_v4().simple().to_string();
        if reply.is_some() {
            let (tx, rx) = oneshot::channel();
            if let Ok(mut p) = self.inner.pending.lock() {
                p.insert(correlation.clone(), tx);
            }
            props = props
                .with_reply_to(ShortString::from(REPLY_TO))
                .with_correlation_id(ShortString::from(correlation.as_str()));
            answer = Some(rx);
        }
        let forget = |inner: &Inner| {
            if let Ok(mut p) = inner.pending.lock() {
                p.remove(&correlation);
            }
        };
        let confirm_within = Duration::from_millis(self.inner.settings.confirm_timeout_ms.max(1));
        let published = channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                props,
            )
            .await;
        let confirmation = match published {
            Ok(c) => tokio::time::timeout(confirm_within, c).await,
            Err(e) => {
                forget(&self.inner);
                return Err(LinkError::Broker(e.to_string()));
            }
        };
        match confirmation {
            Ok(Ok(Confirmation::Ack(None))) => {}
            Ok(Ok(Confirmation::Ack(Some(_)))) => {
                forget(&self.inner);
                return Err(LinkError::NoRoute);
            }
            Ok(Ok(_)) => {
                forget(&self.inner);
                return Err(LinkError::Broker("the broker refused the publish".into()));
            }
            Ok(Err(e)) => {
                forget(&self.inner);
                return Err(LinkError::Broker(e.to_string()));
            }
            Err(_) => {
                forget(&self.inner);
                return Err(LinkError::Timeout);
            }
        }
        let (Some(rx), Some(within)) = (answer, reply) else {
            return Ok(None);
        };
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(bytes)) => Ok(Some(bytes)),
            Ok(Err(_)) => Err(LinkError::Down),
            Err(_) => {
                forget(&self.inner);
                Err(LinkError::Timeout)
            }
        }
    }

    /// Calls another node and waits for its answer.
    pub async fn call(
        &self,
        node: &str,
        req: &NodeRequest,
        within: Duration,
    ) -> Result<NodeReply, LinkError> {
        let body = serde_json::to_vec(req).map_err(|e| LinkError::Decode(e.to_string()))?;
        let exchange = self.inner.settings.cluster_exchange.clone();
        let res = self.send(&exchange, node, body, false, Some(within)).await;
        let outcome = match &res {
            Ok(_) => "ok",
            Err(LinkError::NoRoute) => "no_route",
            Err(LinkError::Timeout) => "timeout",
            Err(_) => "error",
        };
        metrics::counter!(m::CLUSTER_FORWARDS_TOTAL, "outcome" => outcome).increment(1);
        let bytes = res?.ok_or(LinkError::Down)?;
        serde_json::from_slice(&bytes).map_err(|e| LinkError::Decode(e.to_string()))
    }

    /// Puts a routing input on the routing queue (durable once this returns);
    /// with `answer_within`, also waits for the leader's answer.
    pub async fn route(
        &self,
        id: uuid::Uuid,
        input: RoutingInput,
        answer_within: Option<Duration>,
    ) -> Result<Option<Result<RoutingOutput, RoutingError>>, LinkError> {
        let body = serde_json::to_vec(&RoutingEnvelope { id, input })
            .map_err(|e| LinkError::Decode(e.to_string()))?;
        let queue = self.inner.settings.routing_queue.clone();
        match self.send("", &queue, body, true, answer_within).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| LinkError::Decode(e.to_string())),
        }
    }
}

/// What the link's session needs.
#[derive(Clone)]
pub struct LinkContext {
    /// The link it serves.
    pub link: NodeLink,
    /// Readiness: the link counts for a cluster member's `/readyz`.
    pub health: super::BrokerHealth,
    /// Serves calls from other nodes.
    pub handler: Arc<dyn NodeHandler>,
    /// This node's router (applies the routing queue while leading).
    pub routing: Routing,
    /// Applied-input lookups.
    pub store: Store,
    /// Reconnects, counted and escalated.
    pub restarts: Arc<RestartBook>,
}

/// Runs the link until the drain, reconnecting with backoff.
pub async fn run(ctx: LinkContext, mut shutdown: Shutdown) -> String {
    let (min, max) = ctx.link.inner.settings.backoff();
    let mut backoff = Backoff::new(min, max);
    loop {
        if shutdown.is_triggered() {
            return "drained on shutdown".into();
        }
        let res = session(&ctx, &shutdown, &mut backoff).await;
        down(&ctx.link);
        ctx.health.set_link_up(false);
        match res {
            Ok(()) => return "drained on shutdown".into(),
            Err(BrokerError::Config(e)) => return format!("stopped: {e}"),
            Err(e) => {
                metrics::counter!(m::BROKER_RECONNECTS_TOTAL, "component" => "cluster")
                    .increment(1);
                ctx.restarts.failed(&e.to_string());
                let delay = backoff.next_delay();
                tracing::warn!(error.message = %e, retry_in_ms = delay.as_millis() as u64, "cluster link lost; reconnecting");
                if shutdown.sleep_or_triggered(delay).await {
                    return "drained on shutdown".into();
                }
            }
        }
    }
}

fn down(link: &NodeLink) {
    link.inner.up.store(false, Ordering::SeqCst);
    if let Ok(mut c) = link.inner.rpc.write() {
        *c = None;
    }
    if let Ok(mut p) = link.inner.pending.lock() {
        p.clear(); // callers hear "down"
    }
    link.inner.consuming.send_replace(false);
    metrics::gauge!(m::BROKER_CONNECTED, "component" => "cluster").set(0.0);
}

async fn session(
    ctx: &LinkContext,
    shutdown: &Shutdown,
    backoff: &mut Backoff,
) -> Result<(), BrokerError> {
    let settings = &ctx.link.inner.settings;
    let session = connection::connect(settings, "cluster").await?;
    let res = async {
        let setup = session.channel().await?;
        topology::declare_cluster(&setup, settings).await?;
        let node_queue = topology::declare_node_queue(&setup, settings, &ctx.link.inner.node_id).await?;

        let rpc = session.channel().await?;
        rpc.confirm_select(ConfirmSelectOptions::default()).await?;
        let mut replies = rpc
            .basic_consume(
                REPLY_TO.into(),
                "replies".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let calls = session.channel().await?;
        calls
            .basic_qos(settings.prefetch.max(1), BasicQosOptions::default())
            .await?;
        let mut requests = calls
            .basic_consume(
                node_queue.as_str().into(),
                "calls".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        if let Ok(mut c) = ctx.link.inner.rpc.write() {
            *c = Some(rpc.clone());
        }
        ctx.link.inner.up.store(true, Ordering::SeqCst);
        ctx.health.set_link_up(true);
        metrics::gauge!(m::BROKER_CONNECTED, "component" => "cluster").set(1.0);
        ctx.restarts.running();
        backoff.reset();
        tracing::info!(node_id = %ctx.link.inner.node_id, "cluster link connected");

        let mut shutdown = shutdown.clone();
        let mut leading = ctx.link.inner.leading.subscribe();
        let mut routing: Option<RoutingConsumer> = None;
        let res = loop {
            let want = *leading.borrow_and_update();
            if want && routing.is_none() {
                match RoutingConsumer::start(ctx, &session.connection).await {
                    Ok(r) => routing = Some(r),
                    Err(e) => break Err(e),
                }
                ctx.link.inner.consuming.send_replace(true);
            } else if !want {
                if let Some(r) = routing.take() {
                    r.stop(None).await;
                }
                ctx.link.inner.consuming.send_replace(false);
            }
            let routing_done = async {
                match routing.as_mut() {
                    Some(r) => (&mut r.task).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.wait() => break Ok(()),
                // The routing consumer may wait on the dead connection (an ack)
                // without being told: the session ends here instead.
                _ = session.lost() => break Err(BrokerError::Closed),
                _ = leading.changed() => {}
                r = routing_done => {
                    routing = None;
                    ctx.link.inner.consuming.send_replace(false);
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break Err(e),
                        Err(e) => break Err(BrokerError::Config(format!("routing consumer task failed: {e}"))),
                    }
                }
                d = replies.next() => match d {
                    Some(Ok(d)) => deliver_reply(&ctx.link, d),
                    Some(Err(e)) => break Err(e.into()),
                    None => break Err(BrokerError::ConsumerCancelled { queue: REPLY_TO.into() }),
                },
                d = requests.next() => match d {
                    Some(Ok(d)) => serve(ctx, calls.clone(), d),
                    Some(Err(e)) => break Err(e.into()),
                    None => break Err(BrokerError::ConsumerCancelled { queue: node_queue.clone() }),
                },
            }
        };
        // Also on an error: the consumer is stopped, not left running. When the
        // session failed it gets a bounded moment (its connection may be gone, and
        // an ack on it never answered), then is aborted; its unacked inputs are
        // redelivered to the next leader's consumer.
        if let Some(r) = routing.take() {
            let bound = (res.is_err() || session.is_lost())
                .then(|| Duration::from_millis(settings.confirm_timeout_ms.max(1)));
            r.stop(bound).await;
        }
        res
    }
    .await;
    session.close("cluster link stopped").await;
    res
}

fn deliver_reply(link: &NodeLink, d: Delivery) {
    let Some(id) = d
        .properties
        .correlation_id()
        .as_ref()
        .map(|c| c.as_str().to_string())
    else {
        return;
    };
    let waiter = link
        .inner
        .pending
        .lock()
        .ok()
        .and_then(|mut p| p.remove(&id));
    if let Some(tx) = waiter {
        let _ = tx.send(d.data);
    }
}

/// Answers one call from another node (in its own task: calls for different
/// patients run side by side), then acks it.
fn serve(ctx: &LinkContext, channel: Channel, d: Delivery) {
    let handler = ctx.handler.clone();
    actix_rt::spawn(async move {
        let reply = match serde_json::from_slice::<NodeRequest>(&d.data) {
            Ok(req) => handler.handle(req).await,
            Err(e) => NodeReply::Failed {
                retry: false,
                reason: format!("unreadable call: {e}"),
            },
        };
        answer(&channel, &d, &reply).await;
        let _ = d.acker.ack(BasicAckOptions::default()).await;
    });
}

/// Publishes `reply` to the delivery's reply-to, if it asked for one.
async fn answer<T: serde::Serialize>(channel: &Channel, d: &Delivery, reply: &T) {
    let (Some(to), Some(id)) = (
        d.properties.reply_to().as_ref(),
        d.properties.correlation_id().as_ref(),
    ) else {
        return;
    };
    let Ok(body) = serde_json::to_vec(reply) else {
        return;
    };
    let props = BasicProperties::default()
        .with_correlation_id(id.clone())
        .with_content_type("application/json".into());
    if let Err(e) = channel
        .basic_publish(
            "".into(),
            to.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            props,
        )
        .await
    {
        tracing::warn!(error.message = %e, "could not answer a cluster call");
    }
}

/// The leader's consumer of the routing queue.
struct RoutingConsumer {
    /// Ends when stopped or failed.
    task: tokio::task::JoinHandle<Result<(), BrokerError>>,
    /// Asks it to stop after the batch in hand.
    stop: oneshot::Sender<()>,
}

impl RoutingConsumer {
    async fn start(
        ctx: &LinkContext,
        connection: &lapin::Connection,
    ) -> Result<RoutingConsumer, BrokerError> {
        let settings = &ctx.link.inner.settings;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(settings.prefetch.max(1), BasicQosOptions::default())
            .await?;
        let tag = format!("{}-routing", ctx.link.inner.node_id);
        let consumer = channel
            .basic_consume(
                settings.routing_queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(node_id = %ctx.link.inner.node_id, "consuming the routing queue (leading)");
        let (stop, mut stopped) = oneshot::channel::<()>();
        let ctx = ctx.clone();
        let prefetch = usize::from(settings.prefetch.max(1));
        let task = actix_rt::spawn(async move {
            let mut batches = consumer.ready_chunks(prefetch);
            let res = loop {
                let batch = tokio::select! {
                    biased;
                    _ = &mut stopped => break Ok(()),
                    b = batches.next() => b,
                };
                let Some(batch) = batch else {
                    break Err(BrokerError::ConsumerCancelled {
                        queue: ctx.link.inner.settings.routing_queue.clone(),
                    });
                };
                let mut deliveries = Vec::with_capacity(batch.len());
                for d in batch {
                    match d {
                        Ok(d) => deliveries.push(d),
                        Err(e) => return Err(e.into()),
                    }
                }
                if !apply_routing_batch(&ctx, &channel, deliveries).await? {
                    // The router is not active (it lost its lease or its store):
                    // leave the rest to the next leader.
                    break Ok(());
                }
            };
            // Close without cancelling first: the inputs held here go back to the
            // front of the queue before the next leader's consumer is activated.
            let _ = channel.close(200, "routing consumer stopped".into()).await;
            res
        });
        Ok(RoutingConsumer { task, stop })
    }

    /// Stops it after the batch in hand; within `bound` if given, else aborted.
    async fn stop(self, bound: Option<Duration>) {
        let _ = self.stop.send(());
        if !connection::join_within(self.task, bound).await {
            tracing::warn!("routing consumer stopped waiting on a lost connection");
        }
    }
}

/// Applies one batch of routing inputs in order; acks and answers them once the
/// router stored their effects. Answers false (nothing acked) when the router is
/// not active.
async fn apply_routing_batch(
    ctx: &LinkContext,
    channel: &Channel,
    deliveries: Vec<Delivery>,
) -> Result<bool, BrokerError> {
    let parsed: Vec<Option<RoutingEnvelope>> = deliveries
        .iter()
        .map(|d| serde_json::from_slice(&d.data).ok())
        .collect();
    let ids: Vec<uuid::Uuid> = parsed.iter().flatten().map(|e| e.id).collect();
    let applied = loop {
        match ctx.store.routing_inputs_applied(&ids).await {
            Ok(a) => break a,
            Err(e) => {
                tracing::warn!(error.message = %e, "routing inputs cannot be checked: store unavailable; holding the batch");
                tokio::time::sleep(Duration::from_millis(500)).await;
                if !ctx.routing.is_active() {
                    return Ok(false);
                }
            }
        }
    };
    let mut inputs = Vec::new();
    let mut slots = Vec::new();
    for (i, e) in parsed.iter().enumerate() {
        if let Some(e) = e.as_ref().filter(|e| !applied.contains(&e.id)) {
            inputs.push((e.input.clone(), Some(e.id)));
            slots.push(i);
        }
    }
    let results = ctx.routing.inputs(inputs).await;
    if results.iter().any(|r| {
        matches!(
            r,
            Err(RoutingError::NotLeader | RoutingError::Unavailable(_))
        )
    }) {
        return Ok(false);
    }
    let mut answers: Vec<Option<Result<RoutingOutput, RoutingError>>> =
        vec![None; deliveries.len()];
    for (slot, r) in slots.into_iter().zip(results) {
        answers[slot] = Some(r);
    }
    for (i, d) in deliveries.iter().enumerate() {
        match (&parsed[i], answers[i].take()) {
            (None, _) => {
                tracing::warn!("unreadable routing input: dead-lettered");
                d.acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: false,
                    })
                    .await?;
                continue;
            }
            (Some(_), Some(result)) => answer(channel, d, &result).await,
            (Some(_), None) => {
                // Applied before (a redelivery): nothing changes.
                answer(
                    channel,
                    d,
                    &Ok::<RoutingOutput, RoutingError>(RoutingOutput::Done),
                )
                .await
            }
        }
        d.acker.ack(BasicAckOptions::default()).await?;
    }
    Ok(true)
}
