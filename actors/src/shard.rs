//! Patient shards: who owns which resident patient actor.
//!
//! A patient id hashes to one [`PatientShard`]; each shard runs on its own arbiter
//! (thread) and keeps the address of every resident patient of its share,
//! activating one on demand and forwarding messages in arrival order.
//!
//! Passivation without losing a message: the shard counts what it dispatched to
//! each actor and the actor counts what it processed. The shard notices an idle
//! actor (nothing dispatched to it for the idle timeout; one sweep per shard, not
//! a timer per actor) and tells it to passivate; the actor asks with its count; the
//! shard agrees only when the two match (nothing is queued), removes it, and the
//! actor stops. Anything later starts a new incarnation that loads from the store,
//! which by then holds every event the old one stored.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::event::Envelope;
use crate::ids::PatientId;
use crate::journey::{ContextView, IdentifierView};
use crate::patient::{
    Applied, Apply, GetContext, PassivateNow, PatientActor, PatientDeps, PatientError, Reload, Stop,
};

/// Forward a message to a patient, activating it if needed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Dispatch<M> {
    /// The patient.
    pub patient: PatientId,
    /// The message.
    pub msg: M,
}

/// Sent by an idle patient actor; answered `true` when it may stop.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct PassivationRequest {
    /// Who asks.
    pub patient: PatientId,
    /// Its incarnation.
    pub generation: u64,
    /// How many messages it has processed.
    pub processed: u64,
}

/// Drop the resident actor of a patient whose record changed elsewhere (after a
/// merge or an identifier move): it stops once its queue is empty, and the next
/// message starts a fresh one from the store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evict {
    /// The patient.
    pub patient: PatientId,
}

/// How many patients are resident in this shard.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ResidentCount;

/// Ask every resident patient to passivate now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PassivateAll;

/// Drop the resident actors of these partitions (this node gave them away, or
/// just took them: the next message loads a fresh actor from the store). Answers
/// how many were dropped.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct DropPartitions {
    /// The partitions.
    pub partitions: Arc<std::collections::HashSet<u32>>,
    /// The partition count (`PatientId::partition`).
    pub total: u32,
}

struct Entry {
    /// The resident actor.
    addr: Addr<PatientActor>,
    /// Messages sent to it (the passivation handshake compares them).
    dispatched: u64,
    /// Its incarnation.
    generation: u64,
    /// When a message was last sent to it (the idle sweep reads it).
    last_dispatch: Instant,
    /// `dispatched` when the sweep last told it to passivate, so an idle actor
    /// that has not yet answered is not told again.
    asked_at: u64,
}

/// One shard of resident patients.
pub struct PatientShard {
    /// Dependencies handed to each new patient actor (one copy for all of them).
    deps: Arc<PatientDeps>,
    /// Resident patients.
    patients: HashMap<PatientId, Entry>,
    /// Next incarnation number.
    next_generation: u64,
}

impl PatientShard {
    /// A shard with no resident patients.
    pub fn new(deps: PatientDeps) -> Self {
        PatientShard {
            deps: Arc::new(deps),
            patients: HashMap::new(),
            next_generation: 0,
        }
    }

    fn entry(&mut self, patient: PatientId, ctx: &mut Context<Self>) -> &mut Entry {
        let stale = self
            .patients
            .get(&patient)
            .is_some_and(|e| !e.addr.connected());
        if stale {
            self.patients.remove(&patient);
            self.deps
                .observer
                .restarted("patient", "actor stopped; restarted by its shard");
        }
        let deps = &self.deps;
        let next = &mut self.next_generation;
        let me = ctx.address();
        self.patients.entry(patient).or_insert_with(|| {
            *next += 1;
            let generation = *next;
            let deps = deps.clone();
            let addr = PatientActor::new(patient, deps, me, generation).start();
            Entry {
                addr,
                dispatched: 0,
                generation,
                last_dispatch: Instant::now(),
                asked_at: u64::MAX,
            }
        })
    }

    /// Tells every actor idle for the idle timeout to passivate (once per idle spell).
    fn sweep_idle(&mut self) {
        let idle = self.deps.idle_timeout;
        for e in self.patients.values_mut() {
            if e.asked_at != e.dispatched && e.last_dispatch.elapsed() >= idle {
                e.dispatched += 1;
                e.asked_at = e.dispatched;
                e.addr.do_send(PassivateNow);
            }
        }
    }
}

impl Actor for PatientShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let tick = (self.deps.idle_timeout / 2).max(Duration::from_millis(50));
        ctx.run_interval(tick, |shard, _ctx| shard.sweep_idle());
    }
}

impl<M> Handler<Dispatch<M>> for PatientShard
where
    M: Message<Result = ()> + Send + 'static,
    PatientActor: Handler<M>,
    <PatientActor as Actor>::Context: ToEnvelope<PatientActor, M>,
{
    type Result = ();

    fn handle(&mut self, msg: Dispatch<M>, ctx: &mut Self::Context) {
        let entry = self.entry(msg.patient, ctx);
        entry.dispatched += 1;
        entry.last_dispatch = Instant::now();
        // do_send keeps arrival order; the bound on in-flight work is upstream
        // (broker prefetch, HTTP concurrency), each caller awaiting its reply.
        entry.addr.do_send(msg.msg);
    }
}

impl Handler<PassivationRequest> for PatientShard {
    type Result = bool;

    fn handle(&mut self, msg: PassivationRequest, _ctx: &mut Self::Context) -> bool {
        match self.patients.get(&msg.patient) {
            Some(e) if e.generation == msg.generation && e.dispatched == msg.processed => {
                self.patients.remove(&msg.patient);
                // Give memory back after a wave of passivations (a map keeps its capacity).
                if self.patients.capacity() > 1_024
                    && self.patients.capacity() > 4 * self.patients.len()
                {
                    self.patients.shrink_to(self.patients.len() * 2);
                }
                true
            }
            Some(e) if e.generation == msg.generation => false,
            // Evicted or replaced already: this incarnation may stop.
            _ => true,
        }
    }
}

impl Handler<Evict> for PatientShard {
    type Result = ();

    fn handle(&mut self, msg: Evict, _ctx: &mut Self::Context) {
        if let Some(e) = self.patients.get_mut(&msg.patient) {
            // Rebuild in place: the reload queues behind whatever is pending, so
            // order holds and no second incarnation races the first.
            e.dispatched += 1;
            e.addr.do_send(Reload);
        }
    }
}

impl Handler<ResidentCount> for PatientShard {
    type Result = usize;

    fn handle(&mut self, _msg: ResidentCount, _ctx: &mut Self::Context) -> usize {
        self.patients.len()
    }
}

impl Handler<DropPartitions> for PatientShard {
    type Result = usize;

    fn handle(&mut self, msg: DropPartitions, _ctx: &mut Self::Context) -> usize {
        let gone: Vec<PatientId> = self
            .patients
            .keys()
            .filter(|p| msg.partitions.contains(&p.partition(msg.total)))
            .copied()
            .collect();
        for p in &gone {
            if let Some(e) = self.patients.remove(p) {
                e.addr.do_send(Stop);
            }
        }
        gone.len()
    }
}

impl Handler<PassivateAll> for PatientShard {
    type Result = ();

    fn handle(&mut self, _msg: PassivateAll, _ctx: &mut Self::Context) {
        for e in self.patients.values_mut() {
            e.dispatched += 1;
            e.addr.do_send(PassivateNow);
        }
    }
}

/// Bounds on work in flight to patient actors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxBounds {
    /// Messages queued or being processed across all patient actors at most.
    pub max_in_flight: usize,
    /// How long a producer waits for room before the message is shed.
    pub wait: std::time::Duration,
    /// Capacity of each shard's mailbox.
    pub shard_mailbox: usize,
}

impl Default for MailboxBounds {
    fn default() -> Self {
        MailboxBounds {
            max_in_flight: 10_000,
            wait: std::time::Duration::from_secs(2),
            shard_mailbox: 1_024,
        }
    }
}

/// The shards' arbiter threads; dropping the set stops them.
struct Arbiters(Vec<Arbiter>);

impl Drop for Arbiters {
    fn drop(&mut self) {
        for a in &self.0 {
            a.stop();
        }
    }
}

/// The handle the runtime uses to reach patients: routes by patient id to its shard.
///
/// Every message to a patient holds a permit of one semaphore until its answer
/// comes back, so patient mailboxes together never hold more than
/// `max_in_flight` messages: a producer waits up to `wait` for room, then the
/// message is shed (counted, and answered "overloaded" so the edge can retry).
#[derive(Clone)]
pub struct PatientRegistry {
    /// The shards, each on its own arbiter.
    shards: Arc<Vec<Addr<PatientShard>>>,
    /// The shards' arbiters, stopped when the last registry handle goes away (an
    /// arbiter thread otherwise runs until told to stop, keeping its actors alive).
    _arbiters: Arc<Arbiters>,
    /// Permits for messages in flight.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// The bounds.
    bounds: MailboxBounds,
    /// Where shedding is reported.
    observer: Arc<dyn crate::ports::ActorObserver>,
}

impl PatientRegistry {
    /// Starts `shards` shards, each on a new arbiter (thread).
    pub fn start(deps: PatientDeps, shards: usize, bounds: MailboxBounds) -> PatientRegistry {
        let observer = deps.observer.clone();
        let mut arbiters = Vec::new();
        let shards = (0..shards.max(1))
            .map(|_| {
                let arbiter = Arbiter::new();
                let deps = deps.clone();
                let cap = bounds.shard_mailbox.max(1);
                let addr = PatientShard::start_in_arbiter(&arbiter.handle(), move |ctx| {
                    ctx.set_mailbox_capacity(cap);
                    PatientShard::new(deps)
                });
                arbiters.push(arbiter);
                addr
            })
            .collect();
        PatientRegistry {
            shards: Arc::new(shards),
            _arbiters: Arc::new(Arbiters(arbiters)),
            in_flight: Arc::new(tokio::sync::Semaphore::new(bounds.max_in_flight.max(1))),
            bounds,
            observer,
        }
    }

    /// Messages to patient actors queued or in progress now.
    pub fn in_flight(&self) -> usize {
        self.bounds
            .max_in_flight
            .max(1)
            .saturating_sub(self.in_flight.available_permits())
    }

    fn shard(&self, patient: PatientId) -> &Addr<PatientShard> {
        let mut h = DefaultHasher::new();
        patient.hash(&mut h);
        let i = (h.finish() % self.shards.len() as u64) as usize;
        &self.shards[i]
    }

    async fn dispatch<M, T>(
        &self,
        patient: PatientId,
        make: impl FnOnce(oneshot::Sender<Result<T, PatientError>>) -> M,
    ) -> Result<T, PatientError>
    where
        M: Message<Result = ()> + Send + 'static,
        PatientActor: Handler<M>,
        <PatientActor as Actor>::Context: ToEnvelope<PatientActor, M>,
    {
        let permit =
            match tokio::time::timeout(self.bounds.wait, self.in_flight.clone().acquire_owned())
                .await
            {
                Ok(Ok(p)) => p,
                _ => {
                    self.observer.shed("patient");
                    tracing::warn!(%patient, "patient mailboxes full; message shed");
                    return Err(PatientError::Overloaded);
                }
            };
        let (tx, rx) = oneshot::channel();
        self.shard(patient)
            .send(Dispatch {
                patient,
                msg: make(tx),
            })
            .await
            .map_err(|_| PatientError::Unavailable)?;
        let answer = rx.await.map_err(|_| PatientError::Unavailable)?;
        drop(permit);
        answer
    }

    /// Stores and applies an event to a patient's journey.
    pub async fn apply(
        &self,
        patient: PatientId,
        event: Arc<Envelope>,
        claims: Vec<IdentifierView>,
    ) -> Result<Applied, PatientError> {
        self.dispatch(patient, |reply| Apply {
            event,
            claims,
            reply,
        })
        .await
    }

    /// Reads a patient's context.
    pub async fn context(
        &self,
        patient: PatientId,
        now: DateTime<Utc>,
    ) -> Result<ContextView, PatientError> {
        self.dispatch(patient, |reply| GetContext { now, reply })
            .await
    }

    /// Rebuilds resident actors of patients whose records changed elsewhere.
    pub fn evict(&self, patients: &[PatientId]) {
        for p in patients {
            self.shard(*p).do_send(Evict { patient: *p });
        }
    }

    /// Resident patient actors across all shards.
    pub async fn resident(&self) -> usize {
        let mut n = 0;
        for s in self.shards.iter() {
            n += s.send(ResidentCount).await.unwrap_or(0);
        }
        n
    }

    /// Drops the resident actors of `partitions` (of `total`) in every shard;
    /// answers how many went.
    pub async fn drop_partitions(&self, partitions: &[u32], total: u32) -> usize {
        if partitions.is_empty() {
            return 0;
        }
        let set = Arc::new(partitions.iter().copied().collect());
        let mut n = 0;
        for s in self.shards.iter() {
            n += s
                .send(DropPartitions {
                    partitions: Arc::clone(&set),
                    total,
                })
                .await
                .unwrap_or(0);
        }
        n
    }

    /// Asks every resident patient to passivate now.
    pub fn passivate_all(&self) {
        for s in self.shards.iter() {
            s.do_send(PassivateAll);
        }
    }
}
