//! The patient actor: one per resident patient, holding the folded journey.
//!
//! It is a thin shell around [`Journey`]: on start it loads the stored log and
//! folds it (the mailbox waits until it has); each [`Apply`] stores the event
//! through the [`JourneyStore`] port and only then applies it, one message at a
//! time (`AtomicResponse`), so a patient's events are applied in the order they
//! reached the actor. When idle for the configured time its shard tells it to
//! passivate, and it asks to with its count (see [`crate::shard`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::command::appointment_requests;
use crate::ehr::{self, EhrSettings};
use crate::event::Envelope;
use crate::ids::PatientId;
use crate::journey::{ContextView, IdentifierView, Journey, Limits};
use crate::outreach::{Outreach, OutreachChanges};
use crate::ports::{ActorObserver, AppendOutcome, Effects, JourneyStore, PortError, StoredJourney};
use crate::routing::request::{current_frustration, red_flag_commands, route_request};
use crate::routing::router::Routing;
use crate::shard::{PassivationRequest, PatientShard};
use crate::supervision::{Decision, RestartTracker, SupervisionPolicy};

/// What the patient actors need, shared by all of them.
#[derive(Clone)]
pub struct PatientDeps {
    /// The journey store.
    pub store: Arc<dyn JourneyStore>,
    /// Memory bounds of a journey.
    pub limits: Limits,
    /// Idle time after which a patient actor passivates.
    pub idle_timeout: Duration,
    /// Outreach: templates, reminders, sites (local time, quiet hours), links.
    pub outreach: Arc<Outreach>,
    /// Now, for planning reminders and quiet hours (a manual clock in tests).
    pub clock: Arc<dyn crate::routing::Clock>,
    /// Per-site MRN systems, for what is filed in the EHR (`ehr.document`, `ehr.identity`).
    pub ehr: Arc<EhrSettings>,
    /// Routing (None: events are stored and shown but not routed).
    pub routing: Option<Routing>,
    /// Restart policy of patient actors (reloadable).
    pub supervision: Arc<RwLock<SupervisionPolicy>>,
    /// Where restarts, escalations and poison messages are reported.
    pub observer: Arc<dyn ActorObserver>,
    /// Drills only: an event carrying `"fault_injection": "panic"` makes the actor fail
    /// in the guarded probe (before anything is stored); `"panic_after_store"` makes it
    /// die outside it, once the event is stored and before it is applied and answered.
    pub fault_injection: bool,
    /// True in a cluster: the routing request an event causes is written with the
    /// event (outbox) and reaches the leader's router through the routing queue;
    /// false: it goes straight to this node's router once the event is stored.
    pub route_through_outbox: bool,
}

/// Folds a stored journey (what activation and a read on a node that does not own
/// the patient both do): the same fold every time, so every reader sees the same.
pub fn fold_stored(id: PatientId, limits: Limits, stored: StoredJourney) -> Journey {
    let mut j = Journey::fold(
        id,
        limits,
        stored.events.iter().map(|(s, e)| (*s, e.as_ref())),
    );
    j.identifiers = stored.identifiers.into_iter().collect();
    j.merged_from = stored.merged_from;
    j
}

/// The context staff read, with the current frustration when routing rules are
/// given, and appointment times in both UTC and the site's local time.
pub fn context_of(
    journey: &Journey,
    routing: Option<&crate::routing::RoutingConfig>,
    sites: &crate::sites::SiteDirectory,
    now: DateTime<Utc>,
) -> ContextView {
    let mut view = journey.context(now);
    if let Some(cfg) = routing {
        view.frustration = current_frustration(journey, cfg, now);
    }
    for a in &mut view.appointments {
        let tz = sites.local_time(&a.site, now).timezone();
        a.time_zone = Some(tz.name().to_string());
        a.starts_at_local = a.starts_at.map(|t| {
            t.with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        });
    }
    view
}

/// Why a patient operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PatientError {
    /// The store failed; nothing was applied.
    #[error("store: {0}")]
    Store(#[from] PortError),
    /// The actor stopped (passivated or failed) before answering; retry.
    #[error("patient actor unavailable")]
    Unavailable,
    /// Processing the event failed; the actor restarted from the store; retry.
    #[error("processing failed: {0}")]
    Failed(String),
    /// Processing the event failed every time it was tried: dead-letter it.
    #[error("poison event: {0}")]
    Poison(String),
    /// Too much work in flight for patient actors: shed; retry later.
    #[error("patient actors are overloaded")]
    Overloaded,
}

/// The outcome of [`Apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Stored and applied, with its store sequence number; `relinked` as in
    /// [`AppendOutcome::Stored`].
    Stored { seq: u64, relinked: Vec<PatientId> },
    /// Seen before: nothing changed.
    Duplicate,
    /// The patient was merged into another; send the event there.
    Moved { to: PatientId },
}

/// Store an event in the patient's log and apply it to the journey.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Apply {
    /// The validated event.
    pub event: Arc<Envelope>,
    /// Identifiers resolution attached to this patient with this event.
    pub claims: Vec<IdentifierView>,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<Applied, PatientError>>,
}

/// Read the patient's context.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GetContext {
    /// The clock reading the context is computed for (upcoming appointments).
    pub now: DateTime<Utc>,
    /// Where the context goes.
    pub reply: oneshot::Sender<Result<ContextView, PatientError>>,
}

/// Rebuild the journey from the store (after a merge or an identifier move).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reload;

/// Stop now: this node gave the patient's partition to another node. Messages
/// already queued are answered first (their writes are refused by the fence).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Passivate now if nothing is pending (used by drills and the admin API).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PassivateNow;

/// One resident patient.
pub struct PatientActor {
    /// Whose journey this is.
    id: PatientId,
    /// Shared dependencies (one copy per shard: a million actors hold a pointer).
    deps: Arc<PatientDeps>,
    /// The folded journey (None until the stored log is loaded).
    journey: Option<Journey>,
    /// The shard that owns this actor (for passivation).
    shard: Addr<PatientShard>,
    /// Incarnation number given by the shard, so a stale passivation is ignored.
    generation: u64,
    /// Messages handled, compared with what the shard dispatched before passivating.
    processed: u64,
    /// Restarts within the supervision period.
    tracker: RestartTracker,
    /// Failures per event id (cleared when the event succeeds or is poisoned);
    /// almost always empty, so a vector (24 bytes) rather than a map (48).
    failures: Vec<(Uuid, u32)>,
}

impl PatientActor {
    /// A new actor; it loads its journey when started.
    pub fn new(
        id: PatientId,
        deps: Arc<PatientDeps>,
        shard: Addr<PatientShard>,
        generation: u64,
    ) -> Self {
        PatientActor {
            id,
            deps,
            journey: None,
            shard,
            generation,
            processed: 0,
            tracker: RestartTracker::default(),
            failures: Vec::new(),
        }
    }

    /// Folds a stored journey into the actor's state; a fold that panics (a poison
    /// event already in the log) leaves the actor without a journey (it stops).
    fn install(&mut self, stored: StoredJourney) -> bool {
        let id = self.id;
        let limits = self.deps.limits;
        let folded = catch_unwind(AssertUnwindSafe(|| fold_stored(id, limits, stored)));
        match folded {
            Ok(j) => {
                self.journey = Some(j);
                true
            }
            Err(p) => {
                let reason = panic_reason(&p);
                self.deps.observer.restarted("patient", &reason);
                tracing::error!(patient_id = %self.id, error.message = %reason, "folding the stored journey failed");
                self.journey = None;
                false
            }
        }
    }

    /// Runs the event through the rules on a copy of the journey, catching a
    /// failure before anything is stored. Answers the commands the event causes
    /// (`claims`: the identifiers it makes the patient claim).
    fn probe(&self, event: &Envelope, claims: &[IdentifierView]) -> Result<Effects, String> {
        let Some(j) = self.journey.as_ref() else {
            return Err("the journey is not loaded".into());
        };
        catch_unwind(AssertUnwindSafe(|| {
            if self.deps.fault_injection
                && event.field("fault_injection").and_then(|v| v.as_str()) == Some("panic")
            {
                panic!("fault injected by a drill");
            }
            let mut next = j.clone();
            next.identifiers.extend(claims.iter().cloned());
            next.apply(u64::MAX, event);
            let mut outreach = OutreachChanges::default();
            let now = self.deps.clock.now();
            let mut commands =
                crate::outreach::on_event(&self.deps.outreach, event, j, &next, now, &mut outreach);
            commands.extend(appointment_requests(event, j));
            commands.extend(ehr::commands(event, &next, claims, &self.deps.ehr));
            if let Some(r) = &self.deps.routing {
                commands.extend(red_flag_commands(&next, event, &r.config()));
                let req = route_request(&next, event, &r.config());
                if let (true, Some(req)) = (self.deps.route_through_outbox, req) {
                    commands.push(crate::command::Command::routing_request(
                        &req,
                        event.id,
                        event.site.clone(),
                        event.channel,
                        event.occurred_at,
                        self.id,
                    ));
                }
            }
            Effects { commands, outreach }
        }))
        .map_err(|p| panic_reason(&p))
    }

    /// Handles a failure while processing `event_id`: restart from the store after
    /// backoff, or escalate, per the policy. Answers the error for the caller.
    fn failed(
        &mut self,
        event_id: Option<Uuid>,
        reason: &str,
        ctx: &mut Context<Self>,
    ) -> PatientError {
        let policy = self
            .deps
            .supervision
            .read()
            .map(|p| p.clone())
            .unwrap_or_default();
        self.deps.observer.restarted("patient", reason);
        let answer = match event_id {
            Some(id) => {
                let n = match self.failures.iter_mut().find(|(e, _)| *e == id) {
                    Some((_, n)) => {
                        *n += 1;
                        *n
                    }
                    None => {
                        self.failures.push((id, 1));
                        1
                    }
                };
                tracing::error!(patient_id = %self.id, event.id = %id, attempt = n, error.message = %reason, "patient actor failed on an event; restarting from the store");
                if n >= policy.max_restarts.max(1) {
                    self.failures.retain(|(e, _)| *e != id);
                    self.deps.observer.poisoned("patient");
                    PatientError::Poison(format!("processing failed {n} times: {reason}"))
                } else {
                    PatientError::Failed(reason.to_string())
                }
            }
            None => PatientError::Failed(reason.to_string()),
        };
        self.journey = None;
        match self.tracker.record(Instant::now(), &policy) {
            Decision::Restart { after } => {
                ctx.wait(
                    tokio::time::sleep(after)
                        .into_actor(self)
                        .map(|_, act, ctx| act.load(ctx)),
                );
            }
            Decision::Escalate => {
                self.deps.observer.escalated("patient", reason);
                tracing::error!(patient_id = %self.id, "patient actor restarted too often; escalating to its shard");
                // The shard sees the stopped actor and starts a fresh incarnation on
                // the next message.
                ctx.stop();
            }
            Decision::Stop => ctx.stop(),
        }
        answer
    }

    fn load(&mut self, ctx: &mut Context<Self>) {
        let fut = self.deps.store.load_journey(self.id);
        ctx.wait(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(stored) => {
                if !act.install(stored) {
                    ctx.stop();
                }
            }
            Err(e) => {
                tracing::warn!(patient_id = %act.id, error.message = %e, "patient journey could not be loaded; stopping the actor");
                ctx.stop();
            }
        }));
    }

    fn touch(&mut self) {
        self.processed += 1;
    }

    fn request_passivation(&mut self, ctx: &mut Context<Self>) {
        let req = PassivationRequest {
            patient: self.id,
            generation: self.generation,
            processed: self.processed,
        };
        let fut = self.shard.send(req);
        ctx.wait(fut.into_actor(self).map(|res, _act, ctx| {
            if matches!(res, Ok(true)) {
                ctx.stop();
            }
        }));
    }
}

impl Actor for PatientActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // No idle timer here: the shard sweeps its residents (one timer per shard
        // instead of one per actor, about 150 bytes each).
        self.load(ctx);
    }
}

impl Handler<Apply> for PatientActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Apply, ctx: &mut Self::Context) -> Self::Result {
        self.touch();
        let Apply {
            event,
            claims,
            reply,
        } = msg;
        if self.journey.is_none() {
            let _ = reply.send(Err(PatientError::Unavailable));
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        let effects = match self.probe(&event, &claims) {
            Ok(effects) => effects,
            Err(reason) => {
                let answer = self.failed(Some(event.id), &reason, ctx);
                let _ = reply.send(Err(answer));
                return AtomicResponse::new(Box::pin(fut::ready(())));
            }
        };
        let fut = self
            .deps
            .store
            .append_event(self.id, event.clone(), effects);
        AtomicResponse::new(Box::pin(fut.into_actor(self).then(
            move |res, act, _ctx| {
                let answer = match res {
                    Ok(AppendOutcome::Stored { seq, relinked }) => {
                        act.failures.retain(|(e, _)| *e != event.id);
                        if act.deps.fault_injection
                            && event.field("fault_injection").and_then(|v| v.as_str())
                                == Some("panic_after_store")
                        {
                            panic!("fault injected by a drill after the store write");
                        }
                        if let Some(j) = act.journey.as_mut() {
                            j.identifiers.extend(claims);
                            j.apply(seq, &event);
                        }
                        Ok(Applied::Stored { seq, relinked })
                    }
                    Ok(AppendOutcome::Duplicate) => Ok(Applied::Duplicate),
                    Ok(AppendOutcome::Moved { to }) => Ok(Applied::Moved { to }),
                    Err(e) => Err(PatientError::Store(e)),
                };
                let route = match (&answer, act.journey.as_ref(), act.deps.routing.as_ref()) {
                    (Ok(Applied::Stored { .. }), Some(j), Some(r))
                        if !act.deps.route_through_outbox =>
                    {
                        route_request(j, &event, &r.config()).map(|req| (r.clone(), req))
                    }
                    _ => None,
                };
                let reload = matches!(&answer, Ok(Applied::Stored { relinked, .. }) if !relinked.is_empty())
                    || matches!(&event.kind, crate::event::EventKind::IdentityLinked)
                        && matches!(&answer, Ok(Applied::Stored { .. }));
                let load = reload.then(|| act.deps.store.load_journey(act.id));
                let patient_id = act.id;
                let event_id = event.id;
                async move {
                    if let Some((routing, req)) = route {
                        // The event is stored; a routing failure is logged, not a lost event.
                        if let Err(e) = routing.route(req, Some(event_id)).await {
                            tracing::error!(%patient_id, error.message = %e, "routing the contact failed");
                        }
                    }
                    let reloaded = match load {
                        Some(f) => Some(f.await),
                        None => None,
                    };
                    (answer, reloaded, reply)
                }
                .into_actor(act)
                .map(|(answer, reloaded, reply), act, _ctx| {
                    match reloaded {
                        Some(Ok(stored)) => {
                            act.install(stored);
                        }
                        Some(Err(e)) => {
                            // The event is stored; the next activation rebuilds the journey.
                            tracing::warn!(patient_id = %act.id, error.message = %e, "journey reload after a link failed");
                            act.journey = None;
                        }
                        None => {}
                    }
                    let _ = reply.send(answer);
                })
            },
        )))
    }
}

impl Handler<GetContext> for PatientActor {
    type Result = ();

    fn handle(&mut self, msg: GetContext, ctx: &mut Self::Context) {
        self.touch();
        match &self.journey {
            Some(j) => {
                let routing = self.deps.routing.as_ref().map(|r| r.config());
                let view = catch_unwind(AssertUnwindSafe(|| {
                    context_of(j, routing.as_deref(), &self.deps.outreach.sites, msg.now)
                }));
                match view {
                    Ok(view) => {
                        let _ = msg.reply.send(Ok(view));
                    }
                    Err(p) => {
                        let reason = panic_reason(&p);
                        let answer = self.failed(None, &reason, ctx);
                        let _ = msg.reply.send(Err(answer));
                    }
                }
            }
            None => {
                // The journey was dropped after a failed reload: rebuild, then answer.
                self.load(ctx);
                ctx.wait(
                    actix::fut::wrap_future::<_, Self>(async {}).map(move |_, act, _| {
                        let answer = act
                            .journey
                            .as_ref()
                            .map(|j| j.context(msg.now))
                            .ok_or(PatientError::Unavailable);
                        let _ = msg.reply.send(answer);
                    }),
                );
            }
        }
    }
}

impl Handler<Stop> for PatientActor {
    type Result = ();

    fn handle(&mut self, _msg: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Reload> for PatientActor {
    type Result = ();

    fn handle(&mut self, _msg: Reload, ctx: &mut Self::Context) {
        self.touch();
        self.load(ctx);
    }
}

impl Handler<PassivateNow> for PatientActor {
    type Result = ();

    fn handle(&mut self, _msg: PassivateNow, ctx: &mut Self::Context) {
        // Counted like any message, so the shard sees it as processed.
        self.processed += 1;
        self.request_passivation(ctx);
    }
}

/// The message of a caught panic (code-controlled text; never patient data).
pub fn panic_reason(p: &Box<dyn std::any::Any + Send>) -> String {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "handler panicked".to_string());
    let mut msg: String = msg.chars().take(200).collect();
    msg.insert_str(0, "panic: ");
    msg
}
