//! The router: one task that owns routing's coordination state, drives the queue
//! and agent actors, runs the timers, rebalances across sites, and keeps the
//! explainable record of every contact.
//!
//! # One owner per piece of state
//! - A queue actor owns its waiting contacts and statistics; an agent actor owns
//!   its agent (presence, capacity, offers, assignments).
//! - The router task owns the contact records, the overflow plan, and the index of
//!   agent views it matches with. The index is only ever replaced by the view an
//!   agent actor answers with, so it cannot drift from the agent.
//! - [`Routing`] is a cloneable handle that sends the router messages; nothing is
//!   shared behind a lock. The router handles one message at a time, awaiting the
//!   actors it needs with its state borrowed mutably (no lock held across an await),
//!   so each decision sees a consistent picture: one contact is never offered twice,
//!   an agent never over capacity (its actor refuses a stale reservation).
//!
//! # Durable before anyone hears of it
//! Every change a step makes (contact records, agent states) and the commands it
//! decides (offers, routes, escalations) are written in one transaction through the
//! [`RoutingStore`] port before any caller is answered or any command can leave
//! the outbox. Messages that arrive together are handled together and written once
//! (group commit). If the write fails, the router drops its in-memory state (it
//! becomes inactive) rather than run ahead of what is stored; the runtime activates
//! it again, and activation rebuilds everything from the store: every open contact
//! with its place and waiting time, every agent with its load, every outstanding
//! offer with its deadline. That is also how a new leader takes over.
//!
//! Timers run on [`Clock`]: every `tick_interval_ms` the router expires offers and
//! wrap-ups, re-dispatches queues (relaxation widens with waiting time), plans
//! overflow and publishes gauges. Tests use a manual clock and call [`Routing::tick`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration as StdDuration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::agent::{self, AgentActor, AgentState, Held, Presence};
use super::model::{ContactRoutingView, RouteState, RoutedContact};
use super::queue::{self, AgentViews, QueueActor, QueueSnapshot};
use super::request::{NeedsHuman, RouteRequest};
use super::{Clock, RoutingConfig};
use crate::command::{Command, CommandType};
use crate::event::Channel;
use crate::ids::SiteId;
use crate::ports::{PortError, RoutingChanges, RoutingObserver, RoutingStore};
use crate::rules::frustration::{Action, Level};
use crate::rules::handoff::HandoffReason;
use crate::rules::matching::AgentView;
use crate::rules::overflow::{plan_overflow, OverflowStates};
use crate::rules::priority::{effective_boosts, priority_key};
use crate::rules::waiting::{after_no_answer, announcement_text, AfterNoAnswer, Callback};

/// Why a routing call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
pub enum RoutingError {
    #[error("unknown agent")]
    UnknownAgent,
    #[error("unknown contact")]
    UnknownContact,
    #[error("the contact is not offered to that agent")]
    NotOffered,
    /// This node's router is not active (not the leader, or rebuilding).
    #[error("routing is not active on this node")]
    NotLeader,
    #[error("routing unavailable: {0}")]
    Unavailable(String),
    /// A callback asked for a contact that is not waiting in a voice queue.
    #[error("the contact is not waiting in a voice queue")]
    NotWaiting,
}

/// What the router needs.
pub struct RoutingDeps {
    /// Thresholds.
    pub config: RoutingConfig,
    /// Time source of the timers.
    pub clock: Arc<dyn Clock>,
    /// Where routing state and its commands are written (the outbox).
    pub store: Arc<dyn RoutingStore>,
    /// Metrics.
    pub observer: Arc<dyn RoutingObserver>,
    /// Sites' time zones, opening hours and holidays (queue hours, after hours).
    pub sites: Arc<crate::sites::SiteDirectory>,
}

/// An agent's `agent.state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentUpdate {
    /// Agent id.
    pub agent_id: String,
    /// Site.
    pub site: SiteId,
    /// Presence.
    pub presence: Presence,
    /// Skills with proficiency 1–5.
    pub skills: BTreeMap<String, u8>,
    /// Capacity per channel.
    pub capacity: BTreeMap<String, u32>,
}

/// One input to routing, as it travels to the router (in process, or through the
/// broker to the leader of a cluster).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum RoutingInput {
    /// What a patient actor decided after a contact event.
    Route(RouteRequest),
    /// An agent's presence, skills and capacity.
    AgentState(AgentUpdate),
    /// An agent accepted an offer.
    OfferAccepted {
        agent_id: String,
        contact_id: String,
    },
    /// An agent declined an offer.
    OfferDeclined {
        agent_id: String,
        contact_id: String,
    },
    /// An agent finished wrap-up.
    ContactWrapped {
        agent_id: String,
        contact_id: String,
    },
    /// The patient waiting in a voice queue asked to be called back.
    Callback { contact_id: String },
    /// The voice channel dialled a callback: answered or not.
    CallbackResult {
        agent_id: String,
        contact_id: String,
        answered: bool,
    },
}

impl RoutingInput {
    /// A bounded label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RoutingInput::Route(_) => "route",
            RoutingInput::AgentState(_) => "agent_state",
            RoutingInput::OfferAccepted { .. } => "offer_accepted",
            RoutingInput::OfferDeclined { .. } => "offer_declined",
            RoutingInput::ContactWrapped { .. } => "contact_wrapped",
            RoutingInput::Callback { .. } => "callback",
            RoutingInput::CallbackResult { .. } => "callback_result",
        }
    }
}

/// What the router answers to an input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "output", rename_all = "snake_case")]
pub enum RoutingOutput {
    /// The contact's routing record after the input.
    Contact {
        contact: Option<Box<ContactRoutingView>>,
    },
    /// The agent after the input.
    Agent { agent: AgentState },
    /// Applied; nothing to show.
    Done,
}

/// How an offer ended without an answer from the agent that kept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferOutcome {
    /// The agent accepted.
    Accepted,
    /// The agent declined.
    Declined,
    /// The agent did not answer in time.
    Timeout,
    /// The agent went away (presence not available) before answering.
    AgentLeft,
}

impl OfferOutcome {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            OfferOutcome::Accepted => "accepted",
            OfferOutcome::Declined => "declined",
            OfferOutcome::Timeout => "timeout",
            OfferOutcome::AgentLeft => "agent_left",
        }
    }

    /// The rule recorded on the contact when an offer failed this way.
    fn rule(self) -> &'static str {
        match self {
            OfferOutcome::Accepted => "accepted",
            OfferOutcome::Declined => "offer_declined",
            OfferOutcome::Timeout => "offer_timeout",
            OfferOutcome::AgentLeft => "agent_left",
        }
    }
}

type Reply<T> = oneshot::Sender<T>;

enum Msg {
    Input {
        input: RoutingInput,
        id: Option<uuid::Uuid>,
        reply: Reply<Result<RoutingOutput, RoutingError>>,
    },
    Tick {
        reply: Reply<()>,
    },
    Queues {
        reply: Reply<Vec<QueueSnapshot>>,
    },
    Agents {
        reply: Reply<Vec<AgentState>>,
    },
    Contact {
        id: String,
        reply: Reply<Option<ContactRoutingView>>,
    },
    Activate {
        reply: Reply<Result<usize, RoutingError>>,
    },
    Deactivate {
        reply: Reply<()>,
    },
}

/// Messages handled together before one write (group commit).
const MAX_BATCH: usize = 256;

/// The routing handle (cheap to clone; every clone talks to the same router).
#[derive(Clone)]
pub struct Routing {
    /// The router's mailbox (bounded).
    tx: mpsc::Sender<Msg>,
    /// Thresholds in force (read by the router, its queues and patient actors).
    config: Arc<RwLock<Arc<RoutingConfig>>>,
    /// Whether the router holds routing state now (set by the router only).
    active: Arc<AtomicBool>,
}

impl Routing {
    /// Starts the router task on the current actix system, inactive: call
    /// [`Routing::activate`] to rebuild its state from the store and start routing.
    pub fn new(deps: RoutingDeps) -> Routing {
        let config = Arc::new(RwLock::new(Arc::new(deps.config)));
        let active = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(1024);
        let router = Router {
            config: config.clone(),
            clock: deps.clock,
            store: deps.store,
            observer: deps.observer,
            sites: deps.sites,
            active: active.clone(),
            state: None,
            changes: Pending::default(),
            skill_views: RefCell::default(),
        };
        actix::spawn(router.run(rx));
        Routing { tx, config, active }
    }

    /// Runs [`Routing::tick`] every `tick_interval_ms` (read each time: reloadable),
    /// forever; the runtime runs it under its supervisor.
    pub async fn run_timers(self) {
        loop {
            let ms = self.config().tick_interval_ms.max(1);
            tokio::time::sleep(StdDuration::from_millis(ms)).await;
            self.tick().await;
        }
    }

    /// The thresholds in force.
    pub fn config(&self) -> Arc<RoutingConfig> {
        self.config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replaces the thresholds after validating them; the old ones stay on error.
    pub fn reload(&self, config: RoutingConfig) -> Result<(), String> {
        config.validate()?;
        let mut guard = self
            .config
            .write()
            .map_err(|_| "configuration lock poisoned".to_string())?;
        *guard = Arc::new(config);
        Ok(())
    }

    /// Whether this router holds routing state now.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Msg) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Rebuilds routing state from the store and starts routing; answers how many
    /// contacts were restored (an active router answers at once).
    pub async fn activate(&self) -> Result<usize, RoutingError> {
        self.ask(|reply| Msg::Activate { reply })
            .await
            .unwrap_or(Err(RoutingError::Unavailable("the router stopped".into())))
    }

    /// Drops routing state (this node lost the router's lease, or is stopping).
    pub async fn deactivate(&self) {
        let _ = self.ask(|reply| Msg::Deactivate { reply }).await;
    }

    /// Applies one routing input; `id` (the event or command it came from) makes a
    /// redelivered input recognisable. Answered once the change is stored.
    pub async fn input(
        &self,
        input: RoutingInput,
        id: Option<uuid::Uuid>,
    ) -> Result<RoutingOutput, RoutingError> {
        self.ask(|reply| Msg::Input { input, id, reply })
            .await
            .unwrap_or(Err(RoutingError::Unavailable("the router stopped".into())))
    }

    /// Applies several inputs in their order, handled together (one write); answers
    /// each once the changes are stored.
    pub async fn inputs(
        &self,
        inputs: Vec<(RoutingInput, Option<uuid::Uuid>)>,
    ) -> Vec<Result<RoutingOutput, RoutingError>> {
        let mut waiting = Vec::with_capacity(inputs.len());
        for (input, id) in inputs {
            let (reply, rx) = oneshot::channel();
            if self.tx.send(Msg::Input { input, id, reply }).await.is_err() {
                break;
            }
            waiting.push(rx);
        }
        let mut out = Vec::with_capacity(waiting.len());
        for rx in waiting {
            out.push(
                rx.await
                    .unwrap_or(Err(RoutingError::Unavailable("the router stopped".into()))),
            );
        }
        out
    }

    /// Routes a contact as the patient actor decided; `event` is the id of the
    /// patient event that asked, kept with the applied inputs in the router's order
    /// (what `frontdoor replay` replays concurrent inputs in).
    pub async fn route(
        &self,
        req: RouteRequest,
        event: Option<uuid::Uuid>,
    ) -> Result<Option<ContactRoutingView>, RoutingError> {
        match self.input(RoutingInput::Route(req), event).await? {
            RoutingOutput::Contact { contact } => Ok(contact.map(|c| *c)),
            _ => Ok(None),
        }
    }

    /// Applies an `agent.state`.
    pub async fn agent_state(&self, u: AgentUpdate) -> Result<AgentState, RoutingError> {
        match self.input(RoutingInput::AgentState(u), None).await? {
            RoutingOutput::Agent { agent } => Ok(agent),
            _ => Err(RoutingError::UnknownAgent),
        }
    }

    /// An input whose answer is the contact's record (offer answers).
    async fn contact_input(&self, input: RoutingInput) -> Result<ContactRoutingView, RoutingError> {
        match self.input(input, None).await? {
            RoutingOutput::Contact {
                contact: Some(contact),
            } => Ok(*contact),
            _ => Err(RoutingError::UnknownContact),
        }
    }

    /// `offer.accepted`.
    pub async fn offer_accepted(
        &self,
        agent_id: &str,
        contact_id: &str,
    ) -> Result<ContactRoutingView, RoutingError> {
        self.contact_input(RoutingInput::OfferAccepted {
            agent_id: agent_id.to_string(),
            contact_id: contact_id.to_string(),
        })
        .await
    }

    /// `offer.declined`.
    pub async fn offer_declined(
        &self,
        agent_id: &str,
        contact_id: &str,
    ) -> Result<ContactRoutingView, RoutingError> {
        self.contact_input(RoutingInput::OfferDeclined {
            agent_id: agent_id.to_string(),
            contact_id: contact_id.to_string(),
        })
        .await
    }

    /// `contact.wrapped`: the agent finished after-contact work.
    pub async fn contact_wrapped(
        &self,
        agent_id: &str,
        contact_id: &str,
    ) -> Result<(), RoutingError> {
        let input = RoutingInput::ContactWrapped {
            agent_id: agent_id.to_string(),
            contact_id: contact_id.to_string(),
        };
        self.input(input, None).await.map(|_| ())
    }

    /// One timer tick: offer timeouts, wrap-up ends, relaxation, overflow, gauges.
    /// The patient waiting in a voice queue asked for a callback (keeps its place).
    pub async fn callback(&self, contact_id: &str) -> Result<ContactRoutingView, RoutingError> {
        self.contact_input(RoutingInput::Callback {
            contact_id: contact_id.to_string(),
        })
        .await
    }

    /// The voice channel's answer to a `callback.dial`.
    pub async fn callback_result(
        &self,
        agent_id: &str,
        contact_id: &str,
        answered: bool,
    ) -> Result<ContactRoutingView, RoutingError> {
        self.contact_input(RoutingInput::CallbackResult {
            agent_id: agent_id.to_string(),
            contact_id: contact_id.to_string(),
            answered,
        })
        .await
    }

    pub async fn tick(&self) {
        let _ = self.ask(|reply| Msg::Tick { reply }).await;
    }

    /// An open contact's routing record, as this router holds it (the runtime
    /// serves reads from the store, which also has ended contacts).
    pub async fn contact(&self, contact_id: &str) -> Option<ContactRoutingView> {
        self.ask(|reply| Msg::Contact {
            id: contact_id.to_string(),
            reply,
        })
        .await
        .flatten()
    }

    /// Every queue's live state (empty when the router is not active).
    pub async fn queues(&self) -> Vec<QueueSnapshot> {
        self.ask(|reply| Msg::Queues { reply })
            .await
            .unwrap_or_default()
    }

    /// Every agent's state, as this router holds it (empty when not active).
    pub async fn agents(&self) -> Vec<AgentState> {
        self.ask(|reply| Msg::Agents { reply })
            .await
            .unwrap_or_default()
    }
}

/// An agent as the router knows it: its actor and its latest view.
struct AgentEntry {
    /// The actor that owns the agent.
    addr: Addr<AgentActor>,
    /// The view the actor last answered with (the matching index).
    view: Arc<AgentView>,
    /// The presence the router last set (agents by presence, for the gauges).
    presence: Presence,
}

/// The routing state an active router holds.
#[derive(Default)]
struct State {
    /// Queue actors by (site, skill).
    queues: BTreeMap<(String, String), Addr<QueueActor>>,
    /// Agents by id.
    agents: BTreeMap<String, AgentEntry>,
    /// Contacts not ended, by id.
    contacts: HashMap<String, RoutedContact>,
    /// Cross-site overflow hysteresis.
    overflow: OverflowStates,
    /// Bot sessions' outcomes over the statistics window (containment).
    bot_outcomes: VecDeque<(DateTime<Utc>, bool)>,
}

/// What the current step changed and has not written yet.
#[derive(Default)]
struct Pending {
    /// Contacts to write (ended ones are dropped from memory once written).
    contacts: BTreeMap<String, RoutedContact>,
    /// Agents to write.
    agents: BTreeSet<String>,
    /// Commands decided.
    commands: Vec<Command>,
    /// Inputs applied and timer runs that changed something, with their times.
    inputs: Vec<crate::ports::AppliedInput>,
    /// Edits made to the step so far, counted even when they change a contact or an
    /// agent already in it (a timer run that made one decided something).
    edits: u64,
    /// The overflow flags to write, when the step flipped one.
    overflow: Option<OverflowStates>,
}

impl Pending {
    /// Adds a decided command to the step.
    fn command(&mut self, c: Command) {
        self.edits += 1;
        self.commands.push(c);
    }

    /// Adds a contact's new record to the step.
    fn contact(&mut self, id: String, c: RoutedContact) {
        self.edits += 1;
        self.contacts.insert(id, c);
    }

    /// Adds an agent whose state changed to the step.
    fn agent(&mut self, id: String) {
        self.edits += 1;
        self.agents.insert(id);
    }

    /// A site started or stopped overflowing: later moves depend on the flags, so
    /// they are written with the step (and the next leader starts from them).
    fn overflow(&mut self, flags: OverflowStates) {
        self.edits += 1;
        self.overflow = Some(flags);
    }
}

/// A reply held until the step is written.
enum Answer {
    Input(
        Reply<Result<RoutingOutput, RoutingError>>,
        Result<RoutingOutput, RoutingError>,
    ),
    Tick(Reply<()>),
}

struct Router {
    config: Arc<RwLock<Arc<RoutingConfig>>>,
    clock: Arc<dyn Clock>,
    store: Arc<dyn RoutingStore>,
    observer: Arc<dyn RoutingObserver>,
    /// The site directory (hours, holidays, time zones).
    sites: Arc<crate::sites::SiteDirectory>,
    /// Mirrors `state.is_some()` for [`Routing::is_active`].
    active: Arc<AtomicBool>,
    /// Routing state while active.
    state: Option<State>,
    /// Unwritten changes of the current step.
    changes: Pending,
    /// The agents with each skill, as of the views the router holds: built on
    /// first use and dropped whenever a view changes, so the dispatches, ticks and
    /// positions between two agent changes share one list instead of walking every
    /// agent each time (the top cost of a replay, docs/benchmarks.md).
    skill_views: RefCell<HashMap<String, AgentViews>>,
}

impl Router {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        while let Some(first) = rx.recv().await {
            let mut answers = Vec::new();
            let mut next = Some(first);
            let mut handled = 0;
            while let Some(msg) = next.take() {
                if let Some(a) = self.handle(msg).await {
                    answers.push(a);
                }
                handled += 1;
                if handled < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            let written = self.write().await;
            for a in answers {
                match a {
                    Answer::Input(reply, result) => {
                        let _ = reply.send(match &written {
                            Ok(()) => result,
                            Err(e) => Err(e.clone()),
                        });
                    }
                    Answer::Tick(reply) => {
                        let _ = reply.send(());
                    }
                }
            }
        }
    }

    fn cfg(&self) -> Arc<RoutingConfig> {
        self.config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn handle(&mut self, msg: Msg) -> Option<Answer> {
        match msg {
            Msg::Input { input, id, reply } => {
                let result = if self.state.is_some() {
                    let at = self.now();
                    let r = self.apply(input).await;
                    if let Some(id) = id {
                        self.changes
                            .inputs
                            .push(crate::ports::AppliedInput::input(id, at));
                    }
                    r
                } else {
                    Err(RoutingError::NotLeader)
                };
                Some(Answer::Input(reply, result))
            }
            Msg::Tick { reply } => {
                if self.state.is_some() {
                    let at = self.now();
                    let before = self.changes.edits;
                    self.tick().await;
                    // A timer run that decided something takes its place among the
                    // inputs, so a replay runs the timers where the router did.
                    if self.changes.edits != before {
                        self.changes
                            .inputs
                            .push(crate::ports::AppliedInput::tick(at));
                    }
                }
                Some(Answer::Tick(reply))
            }
            Msg::Queues { reply } => {
                let _ = reply.send(self.queue_snapshots().await);
                None
            }
            Msg::Agents { reply } => {
                let _ = reply.send(self.agent_states().await);
                None
            }
            Msg::Contact { id, reply } => {
                let now = self.now();
                let found = self
                    .state
                    .as_ref()
                    .and_then(|s| s.contacts.get(&id))
                    .or_else(|| self.changes.contacts.get(&id))
                    .map(|c| c.view(now));
                let _ = reply.send(found);
                None
            }
            Msg::Activate { reply } => {
                let r = self.activate().await;
                let _ = reply.send(r);
                None
            }
            Msg::Deactivate { reply } => {
                self.deactivate("deactivated");
                let _ = reply.send(());
                None
            }
        }
    }

    /// Writes the step's changes; on failure drops the routing state (the store
    /// is the truth; activation rebuilds from it).
    async fn write(&mut self) -> Result<(), RoutingError> {
        if self.changes.contacts.is_empty()
            && self.changes.agents.is_empty()
            && self.changes.commands.is_empty()
            && self.changes.inputs.is_empty()
            && self.changes.overflow.is_none()
        {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.changes);
        let mut agents = Vec::with_capacity(pending.agents.len());
        if let Some(st) = &self.state {
            for id in &pending.agents {
                if let Some(a) = st.agents.get(id) {
                    if let Ok(s) = a.addr.send(agent::GetAgent).await {
                        agents.push(s);
                    }
                }
            }
        }
        let changes = RoutingChanges {
            contacts: pending.contacts.into_values().collect(),
            agents,
            commands: pending.commands,
            inputs: pending.inputs,
            overflow: pending.overflow,
        };
        match self.store.save_routing(changes).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let reason = e.to_string();
                match e {
                    PortError::Fenced(_) => {
                        tracing::warn!(error.message = %reason, "routing write fenced: another node leads routing now; dropping routing state")
                    }
                    _ => {
                        tracing::error!(error.message = %reason, "routing state could not be written; dropping it until it is rebuilt from the store")
                    }
                }
                self.deactivate("write failed");
                Err(RoutingError::Unavailable(reason))
            }
        }
    }

    fn deactivate(&mut self, why: &str) {
        self.views_changed();
        if self.state.take().is_some() {
            tracing::info!(reason = why, "router inactive: routing state dropped");
        }
        self.changes = Pending::default();
        self.active.store(false, Ordering::SeqCst);
    }

    async fn activate(&mut self) -> Result<usize, RoutingError> {
        if let Some(st) = &self.state {
            return Ok(st.contacts.len());
        }
        let snapshot = self
            .store
            .load_routing()
            .await
            .map_err(|e| RoutingError::Unavailable(e.to_string()))?;
        let mut st = State {
            overflow: snapshot.overflow,
            ..State::default()
        };
        for a in snapshot.agents {
            let view = Arc::new(a.view());
            let id = a.id.clone();
            let presence = a.presence;
            let addr = AgentActor::new(a, self.clock.clone()).start();
            st.agents.insert(
                id,
                AgentEntry {
                    addr,
                    view,
                    presence,
                },
            );
        }
        let restored = snapshot.contacts.len();
        let mut queued = Vec::new();
        let now = self.now();
        for c in snapshot.contacts {
            let retry_later = c
                .callback
                .as_ref()
                .and_then(|cb| cb.retry_at)
                .is_some_and(|t| t > now);
            if c.state == RouteState::Queued && !retry_later {
                queued.push(c.clone());
            }
            st.contacts.insert(c.contact_id.to_string(), c);
        }
        self.state = Some(st);
        self.views_changed();
        self.active.store(true, Ordering::SeqCst);
        for c in queued {
            let addr = self.queue_addr(&c.site, &c.skill);
            let _ = addr
                .send(queue::Enqueue {
                    contact: c,
                    arrival: false,
                })
                .await;
        }
        self.dispatch_all().await;
        tracing::info!(
            contacts = restored,
            "router active: routing state rebuilt from the store"
        );
        Ok(restored)
    }

    fn st(&mut self) -> &mut State {
        // unwrap-free: callers check `state.is_some()` first; an inactive router
        // answers NotLeader before reaching here.
        self.state.get_or_insert_with(State::default)
    }

    fn queue_addr(&mut self, site: &SiteId, skill: &str) -> Addr<QueueActor> {
        let key = (site.to_string(), skill.to_string());
        if let Some(a) = self.st().queues.get(&key).filter(|a| a.connected()) {
            return a.clone();
        }
        let addr = QueueActor::new(
            site.clone(),
            skill.to_string(),
            self.config.clone(),
            self.clock.clone(),
        )
        .start();
        self.st().queues.insert(key, addr.clone());
        addr
    }

    /// The views of the agents with `skill` (any site), in agent-id order.
    fn views_with_skill(&self, skill: &str) -> AgentViews {
        if let Some(v) = self.skill_views.borrow().get(skill) {
            return v.clone();
        }
        let views: AgentViews = self
            .state
            .as_ref()
            .map(|st| {
                st.agents
                    .values()
                    .filter(|a| a.view.skills.contains_key(skill))
                    .map(|a| a.view.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.skill_views
            .borrow_mut()
            .insert(skill.to_string(), views.clone());
        views
    }

    /// Forgets the per-skill lists (an agent was added or its view changed).
    fn views_changed(&self) {
        self.skill_views.borrow_mut().clear();
    }

    fn set_view(&mut self, view: AgentView) {
        let id = view.id.clone();
        if let Some(a) = self.st().agents.get_mut(&id) {
            a.view = Arc::new(view);
        }
        self.views_changed();
        self.changes.agent(id);
    }

    fn agent_addr(&self, agent_id: &str) -> Result<Addr<AgentActor>, RoutingError> {
        self.state
            .as_ref()
            .and_then(|st| st.agents.get(agent_id))
            .map(|a| a.addr.clone())
            .ok_or(RoutingError::UnknownAgent)
    }

    /// Records a contact's new state (to be written with the step).
    fn remember(&mut self, c: RoutedContact) {
        let id = c.contact_id.to_string();
        if c.state == RouteState::Ended {
            self.st().contacts.remove(&id);
        } else {
            self.st().contacts.insert(id.clone(), c.clone());
        }
        self.changes.contact(id, c);
    }

    fn contact_record(&self, id: &str) -> Option<RoutedContact> {
        self.state
            .as_ref()
            .and_then(|s| s.contacts.get(id))
            .cloned()
    }

    async fn apply(&mut self, input: RoutingInput) -> Result<RoutingOutput, RoutingError> {
        let now = self.now();
        match input {
            RoutingInput::Route(req) => {
                let id = match &req {
                    RouteRequest::SelfService { contact_id, .. }
                    | RouteRequest::Abandoned { contact_id }
                    | RouteRequest::Ended { contact_id, .. } => contact_id.to_string(),
                    RouteRequest::Queue(n) => n.contact_id.to_string(),
                };
                self.route(req, now).await;
                let contact = self
                    .contact_record(&id)
                    .or_else(|| self.changes.contacts.get(&id).cloned())
                    .map(|c| Box::new(c.view(now)));
                Ok(RoutingOutput::Contact { contact })
            }
            RoutingInput::AgentState(u) => self
                .agent_state(u, now)
                .await
                .map(|agent| RoutingOutput::Agent { agent }),
            RoutingInput::OfferAccepted {
                agent_id,
                contact_id,
            } => self
                .offer_accepted(&agent_id, &contact_id, now)
                .await
                .map(|c| RoutingOutput::Contact {
                    contact: Some(Box::new(c)),
                }),
            RoutingInput::OfferDeclined {
                agent_id,
                contact_id,
            } => self
                .offer_declined(&agent_id, &contact_id, now)
                .await
                .map(|c| RoutingOutput::Contact {
                    contact: Some(Box::new(c)),
                }),
            RoutingInput::ContactWrapped {
                agent_id,
                contact_id,
            } => {
                let addr = self.agent_addr(&agent_id)?;
                let (_, view) = addr
                    .send(agent::Wrapped(contact_id))
                    .await
                    .map_err(|e| RoutingError::Unavailable(e.to_string()))?;
                self.set_view(view);
                self.agent_freed(&agent_id).await;
                Ok(RoutingOutput::Done)
            }
            RoutingInput::Callback { contact_id } => {
                self.callback_requested(&contact_id, now)
                    .map(|c| RoutingOutput::Contact {
                        contact: Some(Box::new(c)),
                    })
            }
            RoutingInput::CallbackResult {
                agent_id,
                contact_id,
                answered,
            } => self
                .callback_result(&agent_id, &contact_id, answered, now)
                .await
                .map(|c| RoutingOutput::Contact {
                    contact: Some(Box::new(c)),
                }),
        }
    }

    async fn route(&mut self, req: RouteRequest, now: DateTime<Utc>) {
        let cfg = self.cfg();
        match req {
            RouteRequest::SelfService {
                contact_id,
                patient_id,
                site,
                channel,
                skill,
                intent,
            } => {
                if self.contact_record(contact_id.as_str()).is_none() {
                    let mut c =
                        RoutedContact::new(contact_id, patient_id, site, channel, &cfg, now);
                    c.state = RouteState::SelfService;
                    c.skill = skill;
                    c.intent = intent;
                    c.reason(
                        "self_service",
                        format!("started on {channel}"),
                        "a virtual agent answers first",
                        now,
                    );
                    self.remember(c);
                }
            }
            RouteRequest::Queue(n) => self.queue_for_human(*n, &cfg, now).await,
            RouteRequest::Abandoned { contact_id } => {
                self.close(contact_id.as_str(), true, &cfg, now).await
            }
            RouteRequest::Ended { contact_id, intent } => {
                // A bot session's last intent labels its containment.
                if let (Some(intent), Some(mut c)) =
                    (intent, self.contact_record(contact_id.as_str()))
                {
                    if c.state == RouteState::SelfService {
                        c.intent = Some(intent);
                        self.st().contacts.insert(contact_id.to_string(), c);
                    }
                }
                self.close(contact_id.as_str(), false, &cfg, now).await
            }
        }
    }

    async fn queue_for_human(&mut self, n: NeedsHuman, cfg: &RoutingConfig, now: DateTime<Utc>) {
        let id = n.contact_id.to_string();
        let mut n = n;
        let previous = self.contact_record(&id);
        if let Some(p) = &previous {
            if n.red_flag.is_some() {
                match p.state {
                    // Raised once; later messages change nothing.
                    _ if p.level == Level::Emergency => return,
                    // With a human (or being offered to one): stay there, page supervisors.
                    RouteState::Assigned | RouteState::Offered => {
                        self.raise_in_place(p.clone(), &n, now);
                        return;
                    }
                    // Waiting: keep its waiting time, jump ahead as an emergency.
                    RouteState::Queued => n.waiting_since = p.queued_at,
                    RouteState::SelfService | RouteState::Ended => {}
                }
            } else {
                let same_skill = p.skill == n.skill;
                match p.state {
                    RouteState::Queued | RouteState::Offered if same_skill => return,
                    RouteState::Assigned if same_skill && !n.from_bot => return,
                    RouteState::Queued | RouteState::Offered | RouteState::Assigned
                        if n.from_bot && n.handoff.is_some() =>
                    {
                        // The bot already handed over: a late turn changes nothing.
                        return;
                    }
                    _ => {}
                }
            }
            // A transfer (or a bot hand-off): release where it was.
            self.release(p).await;
        }
        let handed_off = previous
            .as_ref()
            .is_some_and(|p| p.state == RouteState::SelfService)
            || (previous.is_none() && n.handoff.is_some());
        let urgent = n.assessment.level >= Level::Urgent;
        let boosts = effective_boosts(n.base_priority, n.assessment.score, urgent, &cfg.priority);
        let mut c = RoutedContact::new(
            n.contact_id.clone(),
            n.patient_id,
            n.site.clone(),
            n.channel,
            cfg,
            now,
        );
        c.cause = n.cause;
        c.skill = n.skill.clone();
        c.intent = n.intent.clone();
        c.cross_site = cfg.overflow.cross_site_skills.contains(&n.skill);
        c.base_priority = n.base_priority;
        c.boosts = boosts;
        c.level = n.assessment.level;
        let since = n.waiting_since.unwrap_or(now).min(now);
        c.key = priority_key(n.base_priority, boosts, since, &id, &cfg.priority);
        c.queued_at = n.waiting_since.map(|t| t.min(now));
        c.transcript = std::mem::take(&mut n.transcript);
        c.signals = n.assessment.signals.clone();
        c.contact_channel = n.contact_channel;
        c.handoff = if handed_off {
            Some(n.handoff.unwrap_or(HandoffReason::Unresolved))
        } else {
            None
        };
        if let Some(p) = previous {
            c.reasons = p.reasons;
            c.offers_made = p.offers_made;
            c.announced = p.announced;
            c.callback = p.callback;
            // A bot handing over on its own skill is no transfer (its signal says why).
            if p.skill != n.skill || p.state != RouteState::SelfService {
                c.reason(
                    "transfer",
                    format!("from {} to {}", p.skill, n.skill),
                    "queued for the new skill",
                    now,
                );
            }
        }
        c.reason(
            "priority",
            format!(
                "base {} for intent {}",
                n.base_priority,
                n.intent.as_deref().unwrap_or("unknown")
            ),
            format!("score {} (boosts {boosts})", n.base_priority + boosts),
            now,
        );
        for s in &n.assessment.signals {
            self.observer.escalation(s.signal.as_str());
            let effect = match &s.action {
                Action::Boost => format!("priority +{}", s.boost),
                Action::MarkUrgent => format!("marked urgent, priority +{}", s.boost),
                Action::HandToHuman => {
                    "handed to a human with the transcript and intent".to_string()
                }
                Action::RouteToLastOwner { .. } => {
                    "routed to the agent who last owned the issue".to_string()
                }
            };
            c.reason(s.signal.as_str(), s.detail.clone(), effect, now);
        }
        if let Some(agent) = n.preferred_agent.take() {
            let until = now + Duration::seconds(i64::from(cfg.preferred_agent_secs));
            let because = n
                .preferred_because
                .unwrap_or(super::request::PreferredBecause::ReturningPatient);
            c.reason(
                "preferred_agent",
                because.explain(),
                format!(
                    "offered first to that agent for {}s, then to anyone skilled",
                    cfg.preferred_agent_secs
                ),
                now,
            );
            c.preferred_agent = Some(agent);
            c.preferred_until = Some(until);
        }
        if cfg.after_hours.enabled {
            self.after_hours(&mut c, &n, cfg, now);
        }
        if let Some(flag) = &n.red_flag {
            self.observer.red_flag(&flag.category);
            c.reason(
                "red_flag",
                flag.detail(),
                "raised to emergency, supervisors paged, the channel told what to say",
                now,
            );
        }
        if handed_off {
            let reason = c.handoff.unwrap_or(HandoffReason::Unresolved);
            self.observer.bot_contact("handed_off");
            self.observer.bot_intent(
                cfg.handoff.intent_label(c.intent.as_deref()),
                "handed_off",
                reason.as_str(),
            );
            self.record_bot(now, false, cfg);
            c.reason(
                "bot_handoff",
                format!("virtual agent handed over: {}", reason.as_str()),
                "bot released; queued for a human",
                now,
            );
            // The release tells the wait; the next announcement comes an interval later.
            c.next_announce_at =
                Some(now + Duration::seconds(i64::from(cfg.announce.interval_secs)));
        }
        self.observer
            .queued(c.site.as_str(), &c.skill, c.channel.as_str());
        if urgent {
            self.changes.command(escalation_command(&c, now));
        }
        let id = c.contact_id.to_string();
        self.enqueue(c, now).await;
        if handed_off {
            if let Some(c) = self.contact_record(&id) {
                let (position, estimate) = self.position_of(&c).await;
                self.changes
                    .command(release_command(&c, position, estimate, now));
            }
        }
    }

    /// A contact reaching a closed queue: clinical to the on-call queue (across sites
    /// only where licensure allows), scheduling and billing offered the virtual agent
    /// or a callback, anything else waits for opening; the reason is recorded. An
    /// emergency is never held for opening.
    fn after_hours(
        &mut self,
        c: &mut RoutedContact,
        n: &NeedsHuman,
        cfg: &RoutingConfig,
        now: DateTime<Utc>,
    ) {
        use crate::rules::after_hours::{policy, queue_open, AfterHours};
        let hours = queue_open(&self.sites, &c.site, &c.skill, &cfg.after_hours, now);
        if hours.open {
            return;
        }
        let opens = hours
            .next_opening
            .map(|t| self.sites.patient_time(&c.site, t))
            .unwrap_or_else(|| "no opening scheduled".into());
        let detail = format!("{} is closed until {opens}", c.skill);
        let decided = policy(&c.skill, &cfg.after_hours);
        self.observer.after_hours(decided.as_str());
        match decided {
            AfterHours::OnCall { skill } => {
                c.reason(
                    "after_hours",
                    detail,
                    format!("clinical: to the on-call queue {skill}"),
                    now,
                );
                c.cross_site = cfg.overflow.cross_site_skills.contains(&skill);
                c.skill = skill;
            }
            _ if n.red_flag.is_some() => c.reason(
                "after_hours",
                detail,
                "an emergency is not held for opening",
                now,
            ),
            AfterHours::SelfServiceOrCallback => {
                let mut options = Vec::new();
                if !n.from_bot {
                    options.push("virtual_agent");
                }
                if c.channel == Channel::Voice {
                    options.push("callback");
                }
                c.reason(
                    "after_hours",
                    detail,
                    format!(
                        "offered {}; keeps its place until opening",
                        if options.is_empty() {
                            "nothing else (it came from the virtual agent)".to_string()
                        } else {
                            options.join(" or ")
                        }
                    ),
                    now,
                );
                self.changes.command(after_hours_command(
                    c,
                    &options,
                    hours.next_opening,
                    &opens,
                    now,
                ));
            }
            AfterHours::WaitForOpening => c.reason(
                "after_hours",
                detail,
                "waits for opening, keeping its place",
                now,
            ),
        }
    }

    /// A red flag on a contact already with (or being offered to) a human: it stays
    /// there, raised to the emergency level, and supervisors are paged.
    fn raise_in_place(&mut self, mut c: RoutedContact, n: &NeedsHuman, now: DateTime<Utc>) {
        c.level = Level::Emergency;
        c.cause = n.cause;
        if let Some(s) = n
            .assessment
            .signals
            .iter()
            .find(|s| s.signal == crate::rules::frustration::Signal::RedFlag)
        {
            c.signals.push(s.clone());
        }
        if let Some(flag) = &n.red_flag {
            self.observer.red_flag(&flag.category);
            c.reason(
                "red_flag",
                flag.detail(),
                "raised to emergency with the agent it is with; supervisors paged",
                now,
            );
        }
        self.changes.command(escalation_command(&c, now));
        self.remember(c);
    }

    /// A waiting contact's position (1 = next) and estimated wait; (0, Some(0)) once
    /// it is offered or with an agent, (None, None) when not queued.
    async fn position_of(&mut self, c: &RoutedContact) -> (Option<u32>, Option<f64>) {
        match c.state {
            RouteState::Offered | RouteState::Assigned => (Some(0), Some(0.0)),
            RouteState::Queued => {
                let agents = self.views_with_skill(&c.skill);
                let addr = self.queue_addr(&c.site, &c.skill);
                match addr
                    .send(queue::Position {
                        contact_id: c.contact_id.to_string(),
                        agents,
                    })
                    .await
                {
                    Ok(Some((p, e))) => (Some(p), e),
                    _ => (None, None),
                }
            }
            _ => (None, None),
        }
    }

    /// Puts a contact in its queue and dispatches that queue.
    async fn enqueue(&mut self, mut c: RoutedContact, now: DateTime<Utc>) {
        let arrival = c.queued_at.is_none();
        if arrival {
            c.queued_at = Some(now);
        }
        if c.next_announce_at.is_none() && self.cfg().announce.on(c.patient_channel()) {
            // On queue entry: the first announcement goes out with this step.
            c.next_announce_at = Some(now);
        }
        c.state = RouteState::Queued;
        c.offered_to = None;
        c.offer_deadline = None;
        let (site, skill) = (c.site.clone(), c.skill.clone());
        let id = c.contact_id.to_string();
        let addr = self.queue_addr(&site, &skill);
        self.remember(c.clone());
        if let Err(e) = addr
            .send(queue::Enqueue {
                contact: c,
                arrival,
            })
            .await
        {
            tracing::error!(error.message = %e, "queue actor unavailable");
            return;
        }
        self.dispatch(&addr, &skill).await;
        self.announce_if_due(&id, now).await;
    }

    /// Sends the contact's channel its position and estimated wait if an
    /// announcement is due and it is still waiting (never once offered).
    async fn announce_if_due(&mut self, id: &str, now: DateTime<Utc>) {
        let Some(mut c) = self.contact_record(id) else {
            return;
        };
        let cfg = self.cfg();
        if c.state != RouteState::Queued
            || c.callback.is_some()
            || !cfg.announce.on(c.patient_channel())
            || c.next_announce_at.is_none_or(|t| t > now)
        {
            return;
        }
        let (position, estimate) = self.position_of(&c).await;
        if position.is_none() {
            return; // not in its queue (a callback waiting to retry)
        }
        c.announced += 1;
        c.next_announce_at = Some(now + Duration::seconds(i64::from(cfg.announce.interval_secs)));
        self.observer.announcement(c.patient_channel().as_str());
        self.changes
            .command(announce_command(&c, position, estimate, now));
        self.remember(c);
    }

    /// Offers the queue's waiting contacts to free agents until no pair matches:
    /// the queue proposes, the agent's actor confirms the reservation, the queue
    /// hands the contact over as offered. A refused reservation (the view was
    /// stale) skips that agent for this pass.
    async fn dispatch(&mut self, addr: &Addr<QueueActor>, skill: &str) {
        let offer_timeout = Duration::seconds(i64::from(self.cfg().offer_timeout_secs));
        let mut skip = BTreeSet::new();
        loop {
            let started = Instant::now();
            let agents = self.views_with_skill(skill);
            let proposal = match addr
                .send(queue::Propose {
                    agents,
                    skip: skip.clone(),
                })
                .await
            {
                Ok(Some(p)) => p,
                _ => return,
            };
            let Ok(agent) = self.agent_addr(&proposal.agent_id) else {
                skip.insert(proposal.agent_id);
                continue;
            };
            let Some(contact) = self.contact_record(&proposal.contact_id) else {
                // Not ours to offer (should not happen): take it out of the queue.
                let _ = addr.send(queue::Remove(proposal.contact_id)).await;
                continue;
            };
            let now = self.now();
            let deadline = now + offer_timeout;
            let reserved = agent
                .send(agent::Reserve {
                    contact_id: contact.contact_id.clone(),
                    patient_id: contact.patient_id,
                    channel: contact.channel,
                    deadline,
                })
                .await;
            match reserved {
                Ok(Ok(view)) => {
                    self.set_view(view);
                    let agent_id = proposal.agent_id.clone();
                    let taken = addr
                        .send(queue::TakeOffered { proposal, deadline })
                        .await
                        .ok()
                        .flatten();
                    match taken {
                        Some(mut c) => {
                            // The router's record is the truth for what the queue's copy
                            // does not track (announcements, callback).
                            c.announced = contact.announced;
                            c.next_announce_at = contact.next_announce_at;
                            c.callback = contact.callback.clone();
                            self.observer.decision(started.elapsed().as_secs_f64());
                            c.offers_made += 1;
                            self.changes.command(offer_command(&c, now));
                            self.remember(c);
                        }
                        None => {
                            // The contact left the queue meanwhile: give the slot back.
                            if let Ok((_, view)) = agent
                                .send(agent::Decline(contact.contact_id.to_string()))
                                .await
                            {
                                self.set_view(view);
                            }
                            skip.insert(agent_id);
                        }
                    }
                }
                Ok(Err(_)) | Err(_) => {
                    skip.insert(proposal.agent_id);
                }
            }
        }
    }

    async fn dispatch_all(&mut self) {
        let queues: Vec<((String, String), Addr<QueueActor>)> = self
            .state
            .as_ref()
            .map(|st| {
                st.queues
                    .iter()
                    .map(|(k, a)| (k.clone(), a.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for ((_, skill), addr) in queues {
            self.dispatch(&addr, &skill).await;
        }
    }

    /// Offers work to an agent who has room again: the queues it serves are
    /// dispatched in the order of the best contact each has for it, so the
    /// highest-priority contact anywhere is served first.
    async fn agent_freed(&mut self, agent_id: &str) {
        let Some(view) = self
            .state
            .as_ref()
            .and_then(|st| st.agents.get(agent_id))
            .map(|a| AgentView::clone(&a.view))
        else {
            return;
        };
        if !view.available {
            return;
        }
        let queues: Vec<((String, String), Addr<QueueActor>)> = self
            .state
            .as_ref()
            .map(|st| {
                st.queues
                    .iter()
                    .filter(|((_, skill), _)| view.skills.contains_key(skill))
                    .map(|(k, a)| (k.clone(), a.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut ranked = Vec::new();
        for ((_, skill), addr) in queues {
            if let Ok(Some(key)) = addr.send(queue::BestFor(view.clone())).await {
                ranked.push((key, skill, addr));
            }
        }
        ranked.sort_by(|a, b| b.0.cmp(&a.0));
        for (_, skill, addr) in ranked {
            self.dispatch(&addr, &skill).await;
        }
    }

    /// Takes a contact out of wherever it is (queue, offer, assignment).
    async fn release(&mut self, c: &RoutedContact) {
        let id = c.contact_id.to_string();
        match c.state {
            RouteState::Queued => {
                let addr = self.queue_addr(&c.site, &c.skill);
                let _ = addr.send(queue::Remove(id)).await;
            }
            RouteState::Offered => {
                if let Some(agent) = c.offered_to.as_deref() {
                    if let Ok(a) = self.agent_addr(agent) {
                        if let Ok((_, view)) = a.send(agent::Decline(id)).await {
                            self.set_view(view);
                        }
                        self.agent_freed(agent).await;
                    }
                }
            }
            RouteState::Assigned => {
                if let Some(agent) = c.assigned_agent.as_deref() {
                    if let Ok(a) = self.agent_addr(agent) {
                        if let Ok((_, view)) = a.send(agent::Wrapped(id)).await {
                            self.set_view(view);
                        }
                        self.agent_freed(agent).await;
                    }
                }
            }
            RouteState::SelfService | RouteState::Ended => {}
        }
    }

    async fn close(&mut self, id: &str, abandoned: bool, cfg: &RoutingConfig, now: DateTime<Utc>) {
        let Some(mut c) = self.contact_record(id) else {
            return;
        };
        let waited = c.waited_secs(now) as f64;
        match c.state {
            RouteState::Ended => return,
            RouteState::SelfService => {
                self.observer.bot_contact("contained");
                self.observer.bot_intent(
                    cfg.handoff.intent_label(c.intent.as_deref()),
                    "contained",
                    "none",
                );
                self.record_bot(now, true, cfg);
                c.reason(
                    "contained",
                    "ended by the virtual agent",
                    "no human needed",
                    now,
                );
            }
            RouteState::Queued | RouteState::Offered => {
                let q = self.queue_addr(&c.site, &c.skill);
                if abandoned {
                    self.observer.abandoned(c.site.as_str(), &c.skill);
                    let _ = q
                        .send(queue::Record::Abandoned {
                            waited_secs: waited,
                        })
                        .await;
                }
                self.release(&c).await;
            }
            RouteState::Assigned => {
                if let Some(agent) = c.assigned_agent.clone() {
                    if let Ok(a) = self.agent_addr(&agent) {
                        let end = agent::End {
                            contact_id: id.to_string(),
                            wrap_until: agent::wrap_until(now, cfg.wrap_up_secs),
                        };
                        if let Ok((_, view)) = a.send(end).await {
                            self.set_view(view);
                        }
                    }
                }
                if let Some(answered) = c.answered_at {
                    let q = self.queue_addr(&c.site, &c.skill);
                    let secs = (now - answered).num_milliseconds().max(0) as f64 / 1000.0;
                    let _ = q.send(queue::Record::Handled { secs }).await;
                }
            }
        }
        if abandoned {
            c.reason(
                "abandoned",
                format!("after waiting {waited:.0}s"),
                "left routing",
                now,
            );
        }
        c.state = RouteState::Ended;
        c.offered_to = None;
        c.offer_deadline = None;
        self.remember(c);
    }

    async fn agent_state(
        &mut self,
        u: AgentUpdate,
        now: DateTime<Utc>,
    ) -> Result<AgentState, RoutingError> {
        let addr = match self.agent_addr(&u.agent_id) {
            Ok(a) => a,
            Err(_) => {
                let state = AgentState::new(u.agent_id.clone(), u.site.clone(), now);
                let view = Arc::new(state.view());
                let addr = AgentActor::new(state, self.clock.clone()).start();
                self.st().agents.insert(
                    u.agent_id.clone(),
                    AgentEntry {
                        addr: addr.clone(),
                        view,
                        presence: Presence::Offline,
                    },
                );
                self.views_changed();
                addr
            }
        };
        if let Some(a) = self.st().agents.get_mut(&u.agent_id) {
            a.presence = u.presence;
        }
        for skill in u.skills.keys() {
            self.queue_addr(&u.site, skill);
        }
        let (back, view) = addr
            .send(agent::SetState {
                site: u.site,
                presence: u.presence,
                skills: u.skills,
                capacity: u.capacity,
            })
            .await
            .map_err(|e| RoutingError::Unavailable(e.to_string()))?;
        self.set_view(view);
        for held in back {
            self.offer_failed(&u.agent_id, held, OfferOutcome::AgentLeft, now)
                .await;
        }
        self.agent_freed(&u.agent_id).await;
        addr.send(agent::GetAgent)
            .await
            .map_err(|e| RoutingError::Unavailable(e.to_string()))
    }

    /// An offer that ended without acceptance: back to its queue, in its place.
    async fn offer_failed(
        &mut self,
        agent_id: &str,
        held: Held,
        outcome: OfferOutcome,
        now: DateTime<Utc>,
    ) {
        let Some(mut c) = self.contact_record(held.contact_id.as_str()) else {
            return;
        };
        if c.state != RouteState::Offered || c.offered_to.as_deref() != Some(agent_id) {
            return;
        }
        self.observer
            .offer(c.site.as_str(), &c.skill, outcome.as_str());
        let detail = match outcome {
            OfferOutcome::Timeout => format!(
                "the agent did not answer within {}s",
                self.cfg().offer_timeout_secs
            ),
            OfferOutcome::Declined => "the agent declined".to_string(),
            _ => "the agent went away before answering".to_string(),
        };
        c.reason(
            outcome.rule(),
            detail,
            "offered to the next eligible agent, keeping its place in the queue",
            now,
        );
        if !c.excluded_agents.iter().any(|a| a == agent_id) {
            c.excluded_agents.push(agent_id.to_string());
        }
        if c.preferred_agent.as_deref() == Some(agent_id) {
            c.preferred_agent = None;
            c.preferred_until = None;
        }
        self.enqueue(c, now).await;
    }

    async fn offer_accepted(
        &mut self,
        agent_id: &str,
        contact_id: &str,
        now: DateTime<Utc>,
    ) -> Result<ContactRoutingView, RoutingError> {
        let cfg = self.cfg();
        let addr = self.agent_addr(agent_id)?;
        let mut c = self
            .contact_record(contact_id)
            .ok_or(RoutingError::UnknownContact)?;
        if c.state == RouteState::Assigned && c.assigned_agent.as_deref() == Some(agent_id) {
            return Ok(c.view(now)); // a redelivered accept changes nothing
        }
        let (held, view) = addr
            .send(agent::Accept(contact_id.to_string()))
            .await
            .map_err(|e| RoutingError::Unavailable(e.to_string()))?
            .map_err(|_| RoutingError::NotOffered)?;
        self.set_view(view);
        let waited = c.waited_secs(now) as f64;
        let within = waited <= f64::from(cfg.service_level_target_secs);
        self.observer
            .offer(c.site.as_str(), &c.skill, OfferOutcome::Accepted.as_str());
        self.observer.answered(c.site.as_str(), &c.skill, within);
        let q = self.queue_addr(&c.site, &c.skill);
        let _ = q
            .send(queue::Record::Answered {
                waited_secs: waited,
            })
            .await;
        c.state = RouteState::Assigned;
        c.assigned_agent = Some(agent_id.to_string());
        c.offered_to = None;
        c.offer_deadline = None;
        c.answered_at = Some(now);
        c.reason(
            OfferOutcome::Accepted.rule(),
            format!("answered after {waited:.0}s"),
            "assigned to the agent",
            now,
        );
        if let Some(cb) = c.callback.as_mut() {
            // The agent is reserved for this callback: dial the patient.
            cb.attempts += 1;
            cb.retry_at = None;
            let attempt = cb.attempts;
            self.observer.callback("dialed");
            c.reason(
                "callback_dial",
                format!("attempt {attempt}"),
                "the voice channel dials the patient for the agent",
                now,
            );
            self.changes.command(dial_command(&c, agent_id, now));
        } else if held.channel == Channel::Voice {
            self.changes.command(route_command(&c, agent_id, now));
        }
        self.remember(c.clone());
        Ok(c.view(now))
    }

    async fn offer_declined(
        &mut self,
        agent_id: &str,
        contact_id: &str,
        now: DateTime<Utc>,
    ) -> Result<ContactRoutingView, RoutingError> {
        let addr = self.agent_addr(agent_id)?;
        if self.contact_record(contact_id).is_none() {
            return Err(RoutingError::UnknownContact);
        }
        let (held, view) = addr
            .send(agent::Decline(contact_id.to_string()))
            .await
            .map_err(|e| RoutingError::Unavailable(e.to_string()))?;
        self.set_view(view);
        if let Some(held) = held {
            self.offer_failed(agent_id, held, OfferOutcome::Declined, now)
                .await;
            self.agent_freed(agent_id).await;
        }
        self.contact_record(contact_id)
            .or_else(|| self.changes.contacts.get(contact_id).cloned())
            .map(|c| c.view(now))
            .ok_or(RoutingError::UnknownContact)
    }

    async fn tick(&mut self) {
        let now = self.now();
        let cfg = self.cfg();
        let agents: Vec<(String, Addr<AgentActor>)> = self
            .state
            .as_ref()
            .map(|st| {
                st.agents
                    .iter()
                    .map(|(id, a)| (id.clone(), a.addr.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (id, addr) in agents {
            let Ok(expired) = addr.send(agent::Expire).await else {
                continue;
            };
            if let Some(view) = expired.view {
                self.set_view(view);
            }
            for held in expired.offers {
                self.offer_failed(&id, held, OfferOutcome::Timeout, now)
                    .await;
            }
            if !expired.wraps.is_empty() {
                self.agent_freed(&id).await;
            }
        }
        self.retry_callbacks(now).await;
        self.dispatch_all().await;
        self.rebalance(&cfg, now).await;
        let due: Vec<String> = self
            .state
            .as_ref()
            .map(|st| {
                st.contacts
                    .values()
                    .filter(|c| c.state == RouteState::Queued)
                    .filter(|c| c.next_announce_at.is_some_and(|t| t <= now))
                    .map(|c| c.contact_id.to_string())
                    .collect()
            })
            .unwrap_or_default();
        for id in due {
            self.announce_if_due(&id, now).await;
        }
        self.publish_gauges(&cfg, now).await;
    }

    /// Callbacks whose retry time came: back in their queue, in their place.
    async fn retry_callbacks(&mut self, now: DateTime<Utc>) {
        let due: Vec<RoutedContact> = self
            .state
            .as_ref()
            .map(|st| {
                st.contacts
                    .values()
                    .filter(|c| c.state == RouteState::Queued)
                    .filter(|c| {
                        c.callback
                            .as_ref()
                            .and_then(|cb| cb.retry_at)
                            .is_some_and(|t| t <= now)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for mut c in due {
            if let Some(cb) = c.callback.as_mut() {
                cb.retry_at = None;
            }
            self.enqueue(c, now).await;
        }
    }

    /// The patient waiting in a voice queue asked to be called back: the contact
    /// keeps its place (its key and waiting time); only a waiting voice contact may.
    fn callback_requested(
        &mut self,
        contact_id: &str,
        now: DateTime<Utc>,
    ) -> Result<ContactRoutingView, RoutingError> {
        let mut c = self
            .contact_record(contact_id)
            .ok_or(RoutingError::UnknownContact)?;
        if c.state != RouteState::Queued || c.channel != Channel::Voice {
            return Err(RoutingError::NotWaiting);
        }
        if c.callback.is_none() {
            c.callback = Some(Callback {
                requested_at: now,
                attempts: 0,
                retry_at: None,
            });
            c.reason(
                "callback_requested",
                format!("after waiting {}s", c.waited_secs(now)),
                "keeps its place; the patient is called back when an agent takes it",
                now,
            );
            self.observer.callback("requested");
            self.remember(c.clone());
        }
        Ok(c.view(now))
    }

    /// The voice channel dialled a callback: answered (the agent has the patient) or
    /// not (retried per policy, then the contact closes with the reason).
    async fn callback_result(
        &mut self,
        agent_id: &str,
        contact_id: &str,
        answered: bool,
        now: DateTime<Utc>,
    ) -> Result<ContactRoutingView, RoutingError> {
        let mut c = self
            .contact_record(contact_id)
            .ok_or(RoutingError::UnknownContact)?;
        if c.state != RouteState::Assigned
            || c.assigned_agent.as_deref() != Some(agent_id)
            || c.callback.is_none()
        {
            return Err(RoutingError::NotOffered);
        }
        if answered {
            self.observer.callback("answered");
            c.reason(
                "callback_answered",
                "the patient answered",
                "connected",
                now,
            );
            self.remember(c.clone());
            return Ok(c.view(now));
        }
        let cfg = self.cfg();
        let attempts = c.callback.as_ref().map(|cb| cb.attempts).unwrap_or(0);
        // The agent was never connected: free the slot without wrap-up.
        if let Ok(a) = self.agent_addr(agent_id) {
            if let Ok((_, view)) = a.send(agent::Wrapped(contact_id.to_string())).await {
                self.set_view(view);
            }
        }
        c.assigned_agent = None;
        c.answered_at = None;
        match after_no_answer(attempts, now, &cfg.callback) {
            AfterNoAnswer::Retry(at) => {
                self.observer.callback("retried");
                c.reason(
                    "callback_no_answer",
                    format!(
                        "attempt {attempts} of {} unanswered",
                        cfg.callback.max_attempts
                    ),
                    format!("tried again from {}", at.to_rfc3339()),
                    now,
                );
                if let Some(cb) = c.callback.as_mut() {
                    cb.retry_at = Some(at);
                }
                c.state = RouteState::Queued;
                self.remember(c.clone());
            }
            AfterNoAnswer::GiveUp => {
                self.observer.callback("failed");
                c.reason(
                    "callback_failed",
                    format!("{attempts} attempts unanswered"),
                    "contact closed",
                    now,
                );
                c.state = RouteState::Ended;
                self.remember(c.clone());
            }
        }
        self.agent_freed(agent_id).await;
        Ok(c.view(now))
    }

    async fn rebalance(&mut self, cfg: &RoutingConfig, now: DateTime<Utc>) {
        let queues: Vec<((String, String), Addr<QueueActor>)> = self
            .state
            .as_ref()
            .map(|st| {
                st.queues
                    .iter()
                    .map(|(k, a)| (k.clone(), a.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut loads = Vec::new();
        for ((_, skill), addr) in &queues {
            let agents = self.views_with_skill(skill);
            if let Ok(l) = addr.send(queue::Load { agents }).await {
                loads.push(l);
            }
        }
        let flags = self.st().overflow.overflowing();
        let moves = plan_overflow(&loads, &mut self.st().overflow, &cfg.overflow, now);
        if self.st().overflow.overflowing() != flags {
            // A timer run that only flipped a site's hysteresis moved nothing yet,
            // but decides later moves: the flags are written with the step, and the
            // run is recorded for a replay all the same.
            let flags = self.st().overflow.clone();
            self.changes.overflow(flags);
        }
        for m in moves {
            let (Ok(from_site), Ok(to_site)) =
                (SiteId::parse(&m.from_site), SiteId::parse(&m.to_site))
            else {
                continue;
            };
            let from = self.queue_addr(&from_site, &m.skill);
            let Ok(taken) = from.send(queue::TakeForOverflow(m.count)).await else {
                continue;
            };
            if taken.is_empty() {
                continue;
            }
            self.observer
                .overflow(&m.from_site, &m.to_site, &m.skill, taken.len() as u64);
            for mut c in taken {
                if let Some(r) = self.contact_record(c.contact_id.as_str()) {
                    c.announced = r.announced;
                    c.next_announce_at = r.next_announce_at;
                    c.callback = r.callback;
                }
                c.moved_at = Some(now);
                c.site = to_site.clone();
                c.reason(
                    "overflow",
                    m.reason.clone(),
                    format!("moved from {} to {}", m.from_site, m.to_site),
                    now,
                );
                self.enqueue(c, now).await;
            }
        }
    }

    async fn queue_snapshots(&self) -> Vec<QueueSnapshot> {
        let Some(st) = &self.state else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for ((site, skill), addr) in st.queues.iter() {
            let overflowing = st
                .overflow
                .by_skill
                .get(skill)
                .and_then(|s| s.get(site))
                .is_some_and(|s| s.overflowing);
            let agents = self.views_with_skill(skill);
            if let Ok(mut s) = addr
                .send(queue::Snapshot {
                    agents,
                    overflowing,
                })
                .await
            {
                let hours = crate::rules::after_hours::queue_open(
                    &self.sites,
                    &s.site,
                    &s.skill,
                    &self.cfg().after_hours,
                    self.now(),
                );
                s.open = hours.open;
                s.next_opening = hours.next_opening;
                s.hours_from = hours.hours_from.to_string();
                out.push(s);
            }
        }
        out
    }

    async fn agent_states(&self) -> Vec<AgentState> {
        let Some(st) = &self.state else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for a in st.agents.values() {
            if let Ok(s) = a.addr.send(agent::GetAgent).await {
                out.push(s);
            }
        }
        out
    }

    async fn publish_gauges(&mut self, cfg: &RoutingConfig, now: DateTime<Utc>) {
        if !self.observer.wants_gauges() {
            self.trim_bot(now, cfg);
            return;
        }
        for s in self.queue_snapshots().await {
            self.observer.queue(&s);
        }
        // Every (site, presence) pair is published, zeros included, so an agent
        // who changes state leaves no stale count behind.
        let mut by: BTreeMap<String, [u64; 3]> = BTreeMap::new();
        if let Some(st) = &self.state {
            for a in st.agents.values() {
                let i = match a.presence {
                    Presence::Available => 0,
                    Presence::Away => 1,
                    Presence::Offline => 2,
                };
                by.entry(a.view.site.clone()).or_default()[i] += 1;
            }
        }
        for (site, counts) in by {
            for (p, n) in [Presence::Available, Presence::Away, Presence::Offline]
                .iter()
                .zip(counts)
            {
                self.observer.agents(&site, p.as_str(), n);
            }
        }
        self.trim_bot(now, cfg);
        let outcomes = &self.st().bot_outcomes;
        if !outcomes.is_empty() {
            let contained = outcomes.iter().filter(|(_, c)| *c).count();
            let ratio = contained as f64 / outcomes.len() as f64;
            self.observer.containment(ratio);
        }
    }

    fn record_bot(&mut self, now: DateTime<Utc>, contained: bool, cfg: &RoutingConfig) {
        self.st().bot_outcomes.push_back((now, contained));
        self.trim_bot(now, cfg);
    }

    fn trim_bot(&mut self, now: DateTime<Utc>, cfg: &RoutingConfig) {
        let cut = now - Duration::seconds(i64::from(cfg.stats_window_secs));
        let outcomes = &mut self.st().bot_outcomes;
        while outcomes.front().is_some_and(|(t, _)| *t < cut) {
            outcomes.pop_front();
        }
    }
}

/// The payload of a `contact.offer` command: what the agent's desktop shows.
#[derive(Debug, Serialize)]
struct OfferPayload<'a> {
    agent_id: &'a str,
    contact_id: String,
    skill: &'a str,
    contact_channel: &'static str,
    intent: &'a Option<String>,
    level: Level,
    priority_score: i64,
    signals: Vec<SignalPayload<'a>>,
    transcript: &'a [crate::journey::BotTurnView],
    expires_at: Option<String>,
    context: String,
}

/// One frustration signal as commands carry it.
#[derive(Debug, Serialize)]
struct SignalPayload<'a> {
    signal: &'static str,
    detail: &'a str,
}

/// The payload of a `contact.route` command: connect the call to the agent.
#[derive(Debug, Serialize)]
struct RoutePayload<'a> {
    agent_id: &'a str,
    contact_id: String,
}

/// The payload of an `escalation.raised` command: supervisors are paged.
#[derive(Debug, Serialize)]
struct EscalationPayload<'a> {
    contact_id: String,
    skill: &'a str,
    level: Level,
    signals: Vec<SignalPayload<'a>>,
}

fn signals(c: &RoutedContact) -> Vec<SignalPayload<'_>> {
    c.signals
        .iter()
        .map(|s| SignalPayload {
            signal: s.signal.as_str(),
            detail: &s.detail,
        })
        .collect()
}

fn payload(p: impl Serialize) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(p) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

fn offer_command(c: &RoutedContact, now: DateTime<Utc>) -> Command {
    let agent = c.offered_to.clone().unwrap_or_default();
    let body = OfferPayload {
        agent_id: &agent,
        contact_id: c.contact_id.to_string(),
        skill: &c.skill,
        contact_channel: c.channel.as_str(),
        intent: &c.intent,
        level: c.level,
        priority_score: crate::rules::priority::score_at(&c.key, now),
        signals: signals(c),
        transcript: &c.transcript,
        expires_at: c.offer_deadline.map(|d| d.to_rfc3339()),
        context: format!("/v1/patients/{}/context", c.patient_id),
    };
    Command::new(
        CommandType::ContactOffer,
        c.cause,
        &format!("{}:{}:{}", c.contact_id, agent, c.offers_made),
        c.site.clone(),
        Channel::Desktop,
        now,
        Some(c.patient_id),
        payload(body),
    )
}

fn route_command(c: &RoutedContact, agent_id: &str, now: DateTime<Utc>) -> Command {
    let body = RoutePayload {
        agent_id,
        contact_id: c.contact_id.to_string(),
    };
    Command::new(
        CommandType::ContactRoute,
        c.cause,
        &format!("{}:{}:{}", c.contact_id, agent_id, c.offers_made),
        c.site.clone(),
        c.channel,
        now,
        Some(c.patient_id),
        payload(body),
    )
}

fn escalation_command(c: &RoutedContact, now: DateTime<Utc>) -> Command {
    let body = EscalationPayload {
        contact_id: c.contact_id.to_string(),
        skill: &c.skill,
        level: c.level,
        signals: signals(c),
    };
    Command::new(
        CommandType::EscalationRaised,
        c.cause,
        &c.contact_id.to_string(),
        c.site.clone(),
        Channel::Desktop,
        now,
        Some(c.patient_id),
        payload(body),
    )
}

/// The payload of a `bot.release` / `queue.announce`: where the patient stands.
#[derive(Debug, Serialize)]
struct WaitPayload<'a> {
    contact_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    skill: &'a str,
    queue_position: Option<u32>,
    estimated_wait_secs: Option<u64>,
    estimate_known: bool,
    text: String,
}

fn wait_payload<'a>(
    c: &'a RoutedContact,
    reason: Option<&'static str>,
    position: Option<u32>,
    estimate: Option<f64>,
    text: String,
) -> WaitPayload<'a> {
    WaitPayload {
        contact_id: c.contact_id.to_string(),
        reason,
        skill: &c.skill,
        queue_position: position,
        estimated_wait_secs: estimate.map(|e| e.max(0.0).ceil() as u64),
        estimate_known: estimate.is_some(),
        text,
    }
}

fn release_command(
    c: &RoutedContact,
    position: Option<u32>,
    estimate: Option<f64>,
    now: DateTime<Utc>,
) -> Command {
    let reason = c.handoff.unwrap_or(HandoffReason::Unresolved);
    let text = format!(
        "I'm connecting you with a member of our team. {}",
        announcement_text(position, estimate)
    );
    Command::new(
        CommandType::BotRelease,
        c.cause,
        &c.contact_id.to_string(),
        c.site.clone(),
        c.patient_channel(),
        now,
        Some(c.patient_id),
        payload(wait_payload(
            c,
            Some(reason.as_str()),
            position,
            estimate,
            text,
        )),
    )
}

fn announce_command(
    c: &RoutedContact,
    position: Option<u32>,
    estimate: Option<f64>,
    now: DateTime<Utc>,
) -> Command {
    Command::new(
        CommandType::QueueAnnounce,
        c.cause,
        &format!("{}:{}", c.contact_id, c.announced),
        c.site.clone(),
        c.patient_channel(),
        now,
        Some(c.patient_id),
        payload(wait_payload(
            c,
            None,
            position,
            estimate,
            announcement_text(position, estimate),
        )),
    )
}

/// The payload of an `after_hours.offer`: the queue is closed; what the patient may do.
#[derive(Debug, Serialize)]
struct AfterHoursPayload<'a> {
    contact_id: String,
    skill: &'a str,
    options: &'a [&'static str],
    opens_at: Option<String>,
    text: String,
}

fn after_hours_command(
    c: &RoutedContact,
    options: &[&'static str],
    opens_at: Option<DateTime<Utc>>,
    opens_local: &str,
    now: DateTime<Utc>,
) -> Command {
    let offer = match (
        options.contains(&"virtual_agent"),
        options.contains(&"callback"),
    ) {
        (true, true) => " You can get answers from our virtual assistant now, or ask us to call you back when we open.",
        (true, false) => " You can get answers from our virtual assistant now.",
        (false, true) => " You can ask us to call you back when we open.",
        (false, false) => "",
    };
    Command::new(
        CommandType::AfterHoursOffer,
        c.cause,
        &c.contact_id.to_string(),
        c.site.clone(),
        c.patient_channel(),
        now,
        Some(c.patient_id),
        payload(AfterHoursPayload {
            contact_id: c.contact_id.to_string(),
            skill: &c.skill,
            options,
            opens_at: opens_at.map(|t| t.to_rfc3339()),
            text: format!("We are closed until {opens_local}.{offer}"),
        }),
    )
}

/// The payload of a `callback.dial`: call the patient back for this agent.
#[derive(Debug, Serialize)]
struct DialPayload<'a> {
    agent_id: &'a str,
    contact_id: String,
    attempt: u32,
}

fn dial_command(c: &RoutedContact, agent_id: &str, now: DateTime<Utc>) -> Command {
    let attempt = c.callback.as_ref().map(|cb| cb.attempts).unwrap_or(1);
    Command::new(
        CommandType::CallbackDial,
        c.cause,
        &format!("{}:{attempt}", c.contact_id),
        c.site.clone(),
        Channel::Voice,
        now,
        Some(c.patient_id),
        payload(DialPayload {
            agent_id,
            contact_id: c.contact_id.to_string(),
            attempt,
        }),
    )
}

/// A routing store that keeps everything in memory (benchmarks and unit tests;
/// behind the `test-util` feature).
#[cfg(any(test, feature = "test-util"))]
#[derive(Default)]
pub struct MemoryRoutingStore {
    /// Commands written.
    pub commands: std::sync::Mutex<Vec<Command>>,
    /// Contact records by id.
    pub contacts: std::sync::Mutex<HashMap<String, RoutedContact>>,
    /// Agents by id.
    pub agents: std::sync::Mutex<BTreeMap<String, AgentState>>,
    /// Applied inputs and timer runs, in the order written.
    pub inputs: std::sync::Mutex<Vec<crate::ports::AppliedInput>>,
    /// The overflow flags last written.
    pub overflow: std::sync::Mutex<OverflowStates>,
}

#[cfg(any(test, feature = "test-util"))]
impl Routing {
    /// Routing on `clock` with the default thresholds, an in-memory store, no
    /// metrics and no site directory (tests and benchmarks); not yet activated.
    pub fn in_memory(clock: Arc<dyn Clock>) -> (Routing, Arc<MemoryRoutingStore>) {
        let store = Arc::new(MemoryRoutingStore::default());
        let routing = Routing::new(RoutingDeps {
            config: RoutingConfig::default(),
            clock,
            store: store.clone(),
            observer: Arc::new(crate::ports::NoObserver),
            sites: Arc::default(),
        });
        (routing, store)
    }
}

#[cfg(any(test, feature = "test-util"))]
impl RoutingStore for MemoryRoutingStore {
    fn load_routing(
        &self,
    ) -> crate::ports::BoxFuture<'static, Result<crate::ports::RoutingSnapshot, PortError>> {
        let contacts = self
            .contacts
            .lock()
            .map(|c| {
                c.values()
                    .filter(|c| c.state != RouteState::Ended)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let agents = self
            .agents
            .lock()
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default();
        let overflow = self.overflow.lock().map(|o| o.clone()).unwrap_or_default();
        Box::pin(async move {
            Ok(crate::ports::RoutingSnapshot {
                contacts,
                agents,
                overflow,
            })
        })
    }

    fn save_routing(
        &self,
        changes: RoutingChanges,
    ) -> crate::ports::BoxFuture<'static, Result<(), PortError>> {
        if let Ok(mut c) = self.contacts.lock() {
            for x in changes.contacts {
                c.insert(x.contact_id.to_string(), x);
            }
        }
        if let Ok(mut a) = self.agents.lock() {
            for x in changes.agents {
                a.insert(x.id.clone(), x);
            }
        }
        if let Ok(mut c) = self.commands.lock() {
            c.extend(changes.commands);
        }
        if let Ok(mut i) = self.inputs.lock() {
            i.extend(changes.inputs);
        }
        if let (Some(flags), Ok(mut o)) = (changes.overflow, self.overflow.lock()) {
            *o = flags;
        }
        Box::pin(async { Ok(()) })
    }
}
