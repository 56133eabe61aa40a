//! Ports: what the actors need from the outside world, as traits the runtime
//! implements. This crate knows no SQL, AMQP or HTTP; the runtime's store and broker
//! adapters implement these.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::command::Command;
use crate::event::Envelope;
use crate::ids::PatientId;
use crate::journey::IdentifierView;
use crate::routing::agent::AgentState;
use crate::routing::model::RoutedContact;

/// A boxed, sendable future (what a port returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The adapter's own error behind a [`PortError`], kept whole (shared, so the
/// error stays cheap to clone into every waiting caller).
pub type PortCause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why a port call failed; the adapter's error is its source.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PortError {
    /// The dependency cannot be reached now; the caller may retry later.
    #[error("dependency unavailable: {0}")]
    Unavailable(#[source] PortCause),
    /// The call was understood and failed; retrying the same input will fail again.
    #[error("rejected: {0}")]
    Rejected(#[source] PortCause),
    /// The write depended on a lease (a patient partition, the router) that this
    /// node no longer holds: another node owns that work now. Nothing was written.
    #[error("fenced: {0}")]
    Fenced(String),
}

impl PortError {
    /// The dependency cannot be reached now, because of `cause`.
    pub fn unavailable(cause: impl std::error::Error + Send + Sync + 'static) -> PortError {
        PortError::Unavailable(Arc::new(cause))
    }

    /// The call failed for good, because of `cause`.
    pub fn rejected(cause: impl std::error::Error + Send + Sync + 'static) -> PortError {
        PortError::Rejected(Arc::new(cause))
    }
}

/// A patient's stored journey, as needed to rebuild the actor's state.
#[derive(Debug, Clone, Default)]
pub struct StoredJourney {
    /// Identifiers linked to the patient now.
    pub identifiers: Vec<IdentifierView>,
    /// Provisional records merged into this patient.
    pub merged_from: Vec<PatientId>,
    /// The event log of the patient and of every record merged into it, in store order.
    pub events: Vec<(u64, Arc<Envelope>)>,
}

/// The result of appending an event to a patient's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored with this sequence number. `relinked` lists other patients whose
    /// records this event changed (merged away or lost an identifier): their
    /// resident actors must be rebuilt.
    Stored { seq: u64, relinked: Vec<PatientId> },
    /// Already stored before (same event id): nothing changed.
    Duplicate,
    /// The patient was merged into another one: nothing was stored; send the event there.
    Moved { to: PatientId },
}

/// What an event causes besides its place in the log, written with it in one
/// transaction: commands for the outbox and outreach changes (reminder plans,
/// records of held, suppressed and failed messages, consent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// Commands to relay (the outbox).
    pub commands: Vec<Command>,
    /// Reminders, message records, consent, confirmations.
    pub outreach: crate::outreach::OutreachChanges,
}

impl From<Vec<Command>> for Effects {
    fn from(commands: Vec<Command>) -> Effects {
        Effects {
            commands,
            ..Effects::default()
        }
    }
}

/// The journey store.
pub trait JourneyStore: Send + Sync + 'static {
    /// Loads a patient's journey (the log of it and of every record merged into it).
    fn load_journey(
        &self,
        patient: PatientId,
    ) -> BoxFuture<'static, Result<StoredJourney, PortError>>;

    /// Appends an event to a patient's log, atomically with its effects (identity
    /// links, the commands it causes, written to the outbox, and its outreach
    /// changes). Idempotent by event id: a duplicate stores nothing, effects included.
    fn append_event(
        &self,
        patient: PatientId,
        event: Arc<Envelope>,
        effects: Effects,
    ) -> BoxFuture<'static, Result<AppendOutcome, PortError>>;
}

/// Routing state as persisted: what a router (the next leader, or this one after a
/// restart) rebuilds from.
#[derive(Debug, Clone, Default)]
pub struct RoutingSnapshot {
    /// Contacts not ended: self-service, queued (with their place), offered (with
    /// the agent and the deadline), assigned.
    pub contacts: Vec<RoutedContact>,
    /// Every known agent: presence, skills, capacity, offers and assignments.
    pub agents: Vec<AgentState>,
    /// Which sites are overflowing, per skill (cross-site overflow's hysteresis):
    /// a new leader keeps shedding where the last one did.
    pub overflow: crate::rules::overflow::OverflowStates,
}

/// What one router step changed, written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct RoutingChanges {
    /// Contacts whose record changed (ended ones included, for reads).
    pub contacts: Vec<RoutedContact>,
    /// Agents whose state changed.
    pub agents: Vec<AgentState>,
    /// Commands the step decided (offers, routes, escalations), for the outbox.
    pub commands: Vec<Command>,
    /// The routing inputs applied by the step, in the order applied, and the timer
    /// runs that decided something: a redelivery of an input is recognised and
    /// applied only once, and `frontdoor replay` replays them in this order at these
    /// times.
    pub inputs: Vec<AppliedInput>,
    /// The overflow flags after the step, when it started or stopped a site
    /// overflowing (all of them: a handful of sites and skills).
    pub overflow: Option<crate::rules::overflow::OverflowStates>,
}

/// One routing input the router applied, or one run of its timers that changed
/// something, with the router's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedInput {
    /// The input's id (a timer run: derived from its time).
    pub id: uuid::Uuid,
    /// When the router applied it.
    pub at: chrono::DateTime<chrono::Utc>,
    /// A timer run (offer timeouts, wrap-ups, overflow, announcements), not an input.
    pub tick: bool,
}

/// Ids of timer runs (`AppliedInput::tick`).
const TICK_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x2d6e_71a4_5b0c_4f19_9e3d_c8a1_04f7_b6e2);

impl AppliedInput {
    /// An input applied at `at`.
    pub fn input(id: uuid::Uuid, at: chrono::DateTime<chrono::Utc>) -> AppliedInput {
        AppliedInput {
            id,
            at,
            tick: false,
        }
    }

    /// A timer run at `at` that changed something.
    pub fn tick(at: chrono::DateTime<chrono::Utc>) -> AppliedInput {
        let nanos = at.timestamp_nanos_opt().unwrap_or(at.timestamp_micros());
        AppliedInput {
            id: uuid::Uuid::new_v5(&TICK_NAMESPACE, format!("tick:{nanos}").as_bytes()),
            at,
            tick: true,
        }
    }
}

impl RoutingChanges {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
            && self.agents.is_empty()
            && self.commands.is_empty()
            && self.inputs.is_empty()
            && self.overflow.is_none()
    }
}

/// Where routing keeps its state: every change is written (with the commands it
/// causes) before anyone hears of it, so the next router rebuilds exactly what
/// was promised. The runtime's implementation is fenced by the router's lease.
pub trait RoutingStore: Send + Sync + 'static {
    /// The persisted routing state.
    fn load_routing(&self) -> BoxFuture<'static, Result<RoutingSnapshot, PortError>>;

    /// Writes one step's changes and commands atomically.
    fn save_routing(&self, changes: RoutingChanges) -> BoxFuture<'static, Result<(), PortError>>;
}

/// What routing reports for the runtime's metrics (the names live in the runtime).
/// Every label is a bounded value: site, skill, channel, signal, outcome.
pub trait RoutingObserver: Send + Sync + 'static {
    /// A contact entered a queue for a human.
    fn queued(&self, site: &str, skill: &str, channel: &str);
    /// An offer ended: `accepted`, `declined` or `timeout`.
    fn offer(&self, site: &str, skill: &str, outcome: &'static str);
    /// A contact was answered, within the service-level target or not.
    fn answered(&self, site: &str, skill: &str, within_target: bool);
    /// A contact was abandoned while queued.
    fn abandoned(&self, site: &str, skill: &str);
    /// A frustration signal fired.
    fn escalation(&self, signal: &'static str);
    /// Contacts moved between sites.
    fn overflow(&self, from_site: &str, to_site: &str, skill: &str, count: u64);
    /// A bot contact ended: `contained` or `handed_off`.
    fn bot_contact(&self, outcome: &'static str);
    /// One routing decision took this long.
    fn decision(&self, secs: f64);
    /// The live state of a queue.
    fn queue(&self, snapshot: &crate::routing::queue::QueueSnapshot);
    /// Agents by site and presence.
    fn agents(&self, site: &str, presence: &'static str, count: u64);
    /// Containment over the window.
    fn containment(&self, ratio: f64);
    /// A red flag raised a contact to the emergency level (`category` is a
    /// configured, bounded label).
    fn red_flag(&self, _category: &str) {}
    /// A bot session ended `contained` or `handed_off` (with `reason`) for an
    /// intent (a bounded label: configured intents, else `other`).
    fn bot_intent(&self, _intent: &str, _outcome: &'static str, _reason: &'static str) {}
    /// A callback step: `requested`, `dialed`, `answered`, `retried`, `failed`.
    fn callback(&self, _outcome: &'static str) {}
    /// A wait announcement went to a channel.
    fn announcement(&self, _channel: &'static str) {}
    /// A contact reached a closed queue; the policy applied (`on_call`,
    /// `self_service_or_callback`, `wait_for_opening`).
    fn after_hours(&self, _policy: &'static str) {}
    /// Whether the gauges (queue snapshots, agents by presence, containment) are
    /// wanted: computing queue snapshots on every tick is the costly part of a tick,
    /// so an observer that drops them (a replay) says no.
    fn wants_gauges(&self) -> bool {
        true
    }
}

/// An observer that records nothing (benchmarks, unit tests).
pub struct NoObserver;

impl RoutingObserver for NoObserver {
    fn queued(&self, _: &str, _: &str, _: &str) {}
    fn offer(&self, _: &str, _: &str, _: &'static str) {}
    fn answered(&self, _: &str, _: &str, _: bool) {}
    fn abandoned(&self, _: &str, _: &str) {}
    fn escalation(&self, _: &'static str) {}
    fn overflow(&self, _: &str, _: &str, _: &str, _: u64) {}
    fn bot_contact(&self, _: &'static str) {}
    fn decision(&self, _: f64) {}
    fn queue(&self, _: &crate::routing::queue::QueueSnapshot) {}
    fn agents(&self, _: &str, _: &'static str, _: u64) {}
    fn containment(&self, _: f64) {}
    fn wants_gauges(&self) -> bool {
        false
    }
}

/// What supervision reports for the runtime's metrics and logs.
pub trait ActorObserver: Send + Sync + 'static {
    /// An actor of `kind` failed and is being restarted (state rebuilt).
    fn restarted(&self, kind: &'static str, reason: &str);
    /// An actor of `kind` failed too often within its period: escalated to its parent.
    fn escalated(&self, kind: &'static str, reason: &str);
    /// A message failed processing too many times and goes to the dead-letter path.
    fn poisoned(&self, kind: &'static str);
    /// A message was refused because the mailboxes of `kind` are full.
    fn shed(&self, kind: &'static str);
}

/// An actor observer that records nothing.
pub struct NoActorObserver;

impl ActorObserver for NoActorObserver {
    fn restarted(&self, _: &'static str, _: &str) {}
    fn escalated(&self, _: &'static str, _: &str) {}
    fn poisoned(&self, _: &'static str) {}
    fn shed(&self, _: &'static str) {}
}
