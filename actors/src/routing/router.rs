//! The router: coordinates queue and agent actors, runs the timers, rebalances
//! across sites, and keeps the explainable record of every contact.
//!
//! [`Routing`] is a cloneable handle. Its coordination runs one step at a time (a
//! mutex held across the awaits on queue and agent actors, which never call back),
//! so each decision sees a consistent picture: one contact is never offered twice,
//! an agent never over capacity (the agent actor refuses a stale reservation).
//!
//! Timers run on [`Clock`]: every `tick_interval_ms` the router expires offers and
//! wrap-ups, re-dispatches queues (relaxation widens with waiting time), plans
//! overflow and publishes gauges. Tests use a manual clock and call [`Routing::tick`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration as StdDuration;

use actix::prelude::*;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

use super::agent::{self, AgentActor, AgentBoard, AgentState, Held, Presence};
use super::model::{ContactRoutingView, ContactState, RoutedContact};
use super::queue::{self, DispatchOutcome, QueueActor, QueueSnapshot};
use super::request::{NeedsHuman, RouteRequest};
use super::{Clock, RoutingConfig};
use crate::command::{Command, CommandType};
use crate::event::Channel;
use crate::ids::{PatientId, SiteId};
use crate::ports::{CommandSink, RoutingObserver};
use crate::rules::frustration::{Action, Level};
use crate::rules::overflow::{plan_overflow, OverflowStates};
use crate::rules::priority::{effective_boosts, priority_key};

/// Why a routing call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error("unknown agent")]
    UnknownAgent,
    #[error("unknown contact")]
    UnknownContact,
    #[error("the contact is not offered to that agent")]
    NotOffered,
    #[error("routing unavailable: {0}")]
    Unavailable(String),
}

/// What the router needs.
pub struct RoutingDeps {
    /// Thresholds.
    pub config: RoutingConfig,
    /// Time source of the timers.
    pub clock: Arc<dyn Clock>,
    /// Where commands go (the outbox).
    pub commands: Arc<dyn CommandSink>,
    /// Metrics.
    pub observer: Arc<dyn RoutingObserver>,
}

/// An agent's `agent.state`.
#[derive(Debug, Clone, PartialEq)]
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

struct RouterState {
    queues: BTreeMap<(String, String), Addr<QueueActor>>,
    contacts: HashMap<String, RoutedContact>,
    ended: VecDeque<String>,
    overflow: OverflowStates,
    bot_outcomes: VecDeque<(DateTime<Utc>, bool)>,
}

struct Inner {
    config: Arc<RwLock<Arc<RoutingConfig>>>,
    clock: Arc<dyn Clock>,
    commands: Arc<dyn CommandSink>,
    observer: Arc<dyn RoutingObserver>,
    board: Arc<AgentBoard>,
    state: Mutex<RouterState>,
}

/// The routing handle.
#[derive(Clone)]
pub struct Routing {
    inner: Arc<Inner>,
}

/// Ended contacts kept for `GET /v1/contacts/{id}`.
const ENDED_KEPT: usize = 10_000;

impl Routing {
    /// A router; call [`Routing::spawn_timers`] inside an actix system to run ticks.
    pub fn new(deps: RoutingDeps) -> Routing {
        Routing {
            inner: Arc::new(Inner {
                config: Arc::new(RwLock::new(Arc::new(deps.config))),
                clock: deps.clock,
                commands: deps.commands,
                observer: deps.observer,
                board: Arc::new(AgentBoard::default()),
                state: Mutex::new(RouterState {
                    queues: BTreeMap::new(),
                    contacts: HashMap::new(),
                    ended: VecDeque::new(),
                    overflow: OverflowStates::default(),
                    bot_outcomes: VecDeque::new(),
                }),
            }),
        }
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
        self.inner
            .config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replaces the thresholds after validating them; the old ones stay on error.
    pub fn reload(&self, config: RoutingConfig) -> Result<(), String> {
        config.validate()?;
        let mut guard = self
            .inner
            .config
            .write()
            .map_err(|_| "configuration lock poisoned".to_string())?;
        *guard = Arc::new(config);
        Ok(())
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn queue_addr(&self, st: &mut RouterState, site: &SiteId, skill: &str) -> Addr<QueueActor> {
        let key = (site.to_string(), skill.to_string());
        if let Some(a) = st.queues.get(&key).filter(|a| a.connected()) {
            return a.clone();
        }
        let addr = QueueActor::new(
            site.clone(),
            skill.to_string(),
            self.inner.board.clone(),
            self.inner.config.clone(),
            self.inner.clock.clone(),
        )
        .start();
        st.queues.insert(key, addr.clone());
        addr
    }

    fn remember(&self, st: &mut RouterState, c: RoutedContact) {
        let id = c.contact_id.to_string();
        if c.state == ContactState::Ended {
            st.ended.push_back(id.clone());
            while st.ended.len() > ENDED_KEPT {
                if let Some(old) = st.ended.pop_front() {
                    if st
                        .contacts
                        .get(&old)
                        .is_some_and(|c| c.state == ContactState::Ended)
                    {
                        st.contacts.remove(&old);
                    }
                }
            }
        }
        st.contacts.insert(id, c);
    }

    async fn emit(&self, commands: Vec<Command>) {
        if commands.is_empty() {
            return;
        }
        if let Err(e) = self.inner.commands.enqueue(commands).await {
            // The offer stays held; if its command never reaches the desktop the
            // offer times out and is made again, with a new command.
            tracing::error!(error.message = %e, "routing commands could not be written to the outbox");
        }
    }

    async fn process(&self, st: &mut RouterState, outcome: DispatchOutcome) {
        let mut commands = Vec::new();
        for secs in &outcome.decision_secs {
            self.inner.observer.decision(*secs);
        }
        for mut c in outcome.offered {
            c.offers_made += 1;
            commands.push(offer_command(&c, self.now()));
            self.remember(st, c);
        }
        self.emit(commands).await;
    }

    async fn enqueue(&self, st: &mut RouterState, mut c: RoutedContact) {
        let arrival = c.queued_at.is_none();
        if arrival {
            c.queued_at = Some(self.now());
        }
        c.state = ContactState::Queued;
        c.offered_to = None;
        c.offer_deadline = None;
        let addr = self.queue_addr(st, &c.site, &c.skill);
        self.remember(st, c.clone());
        match addr
            .send(queue::Enqueue {
                contact: c,
                arrival,
            })
            .await
        {
            Ok(outcome) => self.process(st, outcome).await,
            Err(e) => tracing::error!(error.message = %e, "queue actor unavailable"),
        }
    }

    /// Offers work to an agent who has room again: the queues it serves are
    /// dispatched in the order of the best contact each has for it, so the
    /// highest-priority contact anywhere is served first.
    async fn agent_freed(&self, st: &mut RouterState, agent_id: &str) {
        let Some(view) = self.inner.board.view(agent_id) else {
            return;
        };
        if !view.available {
            return;
        }
        let mut ranked = Vec::new();
        for ((site, skill), addr) in st.queues.iter() {
            if !view.skills.contains_key(skill) {
                continue;
            }
            if let Ok(Some(key)) = addr.send(queue::BestFor(view.clone())).await {
                ranked.push((key, site.clone(), skill.clone(), addr.clone()));
            }
        }
        ranked.sort_by(|a, b| b.0.cmp(&a.0));
        for (_, _, _, addr) in ranked {
            if let Ok(outcome) = addr.send(queue::Dispatch).await {
                self.process(st, outcome).await;
            }
        }
    }

    /// Routes a contact as the patient actor decided.
    pub async fn route(
        &self,
        req: RouteRequest,
    ) -> Result<Option<ContactRoutingView>, RoutingError> {
        let now = self.now();
        let cfg = self.config();
        let mut st = self.inner.state.lock().await;
        let id = match &req {
            RouteRequest::SelfService { contact_id, .. }
            | RouteRequest::Abandoned { contact_id }
            | RouteRequest::Ended { contact_id } => contact_id.to_string(),
            RouteRequest::Queue(n) => n.contact_id.to_string(),
        };
        match req {
            RouteRequest::SelfService {
                contact_id,
                patient_id,
                site,
                channel,
            } => {
                if !st.contacts.contains_key(&id) {
                    let mut c =
                        RoutedContact::new(contact_id, patient_id, site, channel, &cfg, now);
                    c.state = ContactState::SelfService;
                    c.reason(
                        "self_service",
                        format!("started on {channel}"),
                        "a virtual agent answers first",
                        now,
                    );
                    self.remember(&mut st, c);
                }
            }
            RouteRequest::Queue(n) => self.queue_for_human(&mut st, *n, &cfg, now).await?,
            RouteRequest::Abandoned { .. } => self.close(&mut st, &id, true, &cfg, now).await,
            RouteRequest::Ended { .. } => self.close(&mut st, &id, false, &cfg, now).await,
        }
        Ok(st.contacts.get(&id).map(|c| c.view(now)))
    }

    async fn queue_for_human(
        &self,
        st: &mut RouterState,
        n: NeedsHuman,
        cfg: &RoutingConfig,
        now: DateTime<Utc>,
    ) -> Result<(), RoutingError> {
        let id = n.contact_id.to_string();
        let previous = st.contacts.get(&id).cloned();
        if let Some(p) = &previous {
            let same_skill = p.skill == n.skill;
            match p.state {
                ContactState::Queued | ContactState::Offered if same_skill => return Ok(()),
                ContactState::Assigned if same_skill && !n.from_bot => return Ok(()),
                _ => {}
            }
            // A transfer (or a bot hand-off): release where it was.
            self.release(st, p).await;
        }
        let urgent = n.assessment.level == Level::Urgent;
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
        c.transcript = n.transcript;
        c.signals = n.assessment.signals.clone();
        if let Some(p) = previous {
            c.reasons = p.reasons;
            c.offers_made = p.offers_made;
            c.reason(
                "transfer",
                format!("from {} to {}", p.skill, n.skill),
                "queued for the new skill",
                now,
            );
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
            self.inner.observer.escalation(s.signal.as_str());
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
        if let Some(agent) = n.preferred_agent {
            let until = now + Duration::seconds(i64::from(cfg.preferred_agent_secs));
            c.reason(
                "preferred_agent",
                match n.preferred_because {
                    Some("repeated_transfers") => {
                        "transferred repeatedly: the last owner knows the issue".to_string()
                    }
                    _ => "returning patient: the agent who last handled the same issue".to_string(),
                },
                format!(
                    "offered first to that agent for {}s, then to anyone skilled",
                    cfg.preferred_agent_secs
                ),
                now,
            );
            c.preferred_agent = Some(agent);
            c.preferred_until = Some(until);
        }
        if n.from_bot {
            self.inner.observer.bot_contact("handed_off");
            record_bot(st, now, false, cfg);
        }
        self.inner
            .observer
            .queued(c.site.as_str(), &c.skill, c.channel.as_str());
        // A contact routed again after a restart (`waiting_since`) had its escalation
        // raised when it was first queued; raising it again would page supervisors
        // twice for one signal (the recovery's cause, and so the command id, differs).
        if urgent && n.waiting_since.is_none() {
            self.emit(vec![escalation_command(&c, now)]).await;
        }
        self.enqueue(st, c).await;
        Ok(())
    }

    /// Takes a contact out of wherever it is (queue, offer, assignment).
    async fn release(&self, st: &mut RouterState, c: &RoutedContact) {
        let id = c.contact_id.to_string();
        match c.state {
            ContactState::Queued => {
                let addr = self.queue_addr(st, &c.site, &c.skill);
                let _ = addr.send(queue::Remove(id)).await;
            }
            ContactState::Offered => {
                if let Some(agent) = c.offered_to.as_deref() {
                    if let Some(a) = self.inner.board.addr(agent) {
                        let _ = a.send(agent::Decline(id)).await;
                        self.agent_freed(st, agent).await;
                    }
                }
            }
            ContactState::Assigned => {
                if let Some(agent) = c.assigned_agent.as_deref() {
                    if let Some(a) = self.inner.board.addr(agent) {
                        let _ = a.send(agent::Wrapped(id)).await;
                        self.agent_freed(st, agent).await;
                    }
                }
            }
            ContactState::SelfService | ContactState::Ended => {}
        }
    }

    async fn close(
        &self,
        st: &mut RouterState,
        id: &str,
        abandoned: bool,
        cfg: &RoutingConfig,
        now: DateTime<Utc>,
    ) {
        let Some(mut c) = st.contacts.get(id).cloned() else {
            return;
        };
        let waited = c.waited_secs(now) as f64;
        match c.state {
            ContactState::Ended => return,
            ContactState::SelfService => {
                self.inner.observer.bot_contact("contained");
                record_bot(st, now, true, cfg);
                c.reason(
                    "contained",
                    "ended by the virtual agent",
                    "no human needed",
                    now,
                );
            }
            ContactState::Queued | ContactState::Offered => {
                let q = self.queue_addr(st, &c.site, &c.skill);
                if abandoned {
                    self.inner.observer.abandoned(c.site.as_str(), &c.skill);
                    let _ = q
                        .send(queue::Record::Abandoned {
                            waited_secs: waited,
                        })
                        .await;
                }
                self.release(st, &c).await;
            }
            ContactState::Assigned => {
                if let Some(agent) = c.assigned_agent.clone() {
                    if let Some(a) = self.inner.board.addr(&agent) {
                        let _ = a
                            .send(agent::End {
                                contact_id: id.to_string(),
                                wrap_until: agent::wrap_until(now, cfg.wrap_up_secs),
                            })
                            .await;
                    }
                }
                if let Some(answered) = c.answered_at {
                    let q = self.queue_addr(st, &c.site, &c.skill);
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
        c.state = ContactState::Ended;
        c.offered_to = None;
        c.offer_deadline = None;
        self.remember(st, c);
    }

    /// Applies an `agent.state`.
    pub async fn agent_state(&self, u: AgentUpdate) -> Result<AgentState, RoutingError> {
        let now = self.now();
        let mut st = self.inner.state.lock().await;
        let addr = match self.inner.board.addr(&u.agent_id) {
            Some(a) => a,
            None => {
                let state = AgentState::new(u.agent_id.clone(), u.site.clone(), now);
                let a = AgentActor::new(state, self.inner.board.clone(), self.inner.clock.clone())
                    .start();
                self.inner.board.register(&u.agent_id, a.clone());
                a
            }
        };
        for skill in u.skills.keys() {
            self.queue_addr(&mut st, &u.site, skill);
        }
        let back = addr
            .send(agent::SetState {
                site: u.site,
                presence: u.presence,
                skills: u.skills,
                capacity: u.capacity,
            })
            .await
            .map_err(|e| RoutingError::Unavailable(e.to_string()))?;
        for held in back {
            self.offer_failed(&mut st, &u.agent_id, held, "agent_left", now)
                .await;
        }
        self.agent_freed(&mut st, &u.agent_id).await;
        addr.send(agent::GetAgent)
            .await
            .map_err(|e| RoutingError::Unavailable(e.to_string()))
    }

    /// An offer that ended without acceptance: back to its queue, in its place.
    async fn offer_failed(
        &self,
        st: &mut RouterState,
        agent_id: &str,
        held: Held,
        outcome: &'static str,
        now: DateTime<Utc>,
    ) {
        let id = held.contact_id.to_string();
        let Some(mut c) = st.contacts.get(&id).cloned() else {
            return;
        };
        if c.state != ContactState::Offered || c.offered_to.as_deref() != Some(agent_id) {
            return;
        }
        self.inner
            .observer
            .offer(c.site.as_str(), &c.skill, outcome);
        let detail = match outcome {
            "timeout" => format!(
                "the agent did not answer within {}s",
                self.config().offer_timeout_secs
            ),
            "declined" => "the agent declined".to_string(),
            _ => "the agent went away before answering".to_string(),
        };
        c.reason(
            match outcome {
                "timeout" => "offer_timeout",
                "declined" => "offer_declined",
                _ => "agent_left",
            },
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
        self.enqueue(st, c).await;
    }

    /// The actor of a known agent.
    fn agent(&self, agent_id: &str) -> Result<Addr<AgentActor>, RoutingError> {
        self.inner
            .board
            .addr(agent_id)
            .ok_or(RoutingError::UnknownAgent)
    }

    /// `offer.accepted`.
    pub async fn offer_accepted(
        &self,
        agent_id: &str,
        contact_id: &str,
    ) -> Result<ContactRoutingView, RoutingError> {
        let now = self.now();
        let cfg = self.config();
        let mut st = self.inner.state.lock().await;
        let addr = self.agent(agent_id)?;
        let mut c = st
            .contacts
            .get(contact_id)
            .cloned()
            .ok_or(RoutingError::UnknownContact)?;
        if c.state == ContactState::Assigned && c.assigned_agent.as_deref() == Some(agent_id) {
            return Ok(c.view(now)); // a redelivered accept changes nothing
        }
        let held = addr
            .send(agent::Accept(contact_id.to_string()))
            .await
            .map_err(|e| RoutingError::Unavailable(e.to_string()))?
            .map_err(|_| RoutingError::NotOffered)?;
        let waited = c.waited_secs(now) as f64;
        let within = waited <= f64::from(cfg.service_level_target_secs);
        self.inner
            .observer
            .offer(c.site.as_str(), &c.skill, "accepted");
        self.inner
            .observer
            .answered(c.site.as_str(), &c.skill, within);
        let q = self.queue_addr(&mut st, &c.site, &c.skill);
        let _ = q
            .send(queue::Record::Answered {
                waited_secs: waited,
            })
            .await;
        c.state = ContactState::Assigned;
        c.assigned_agent = Some(agent_id.to_string());
        c.offered_to = None;
        c.offer_deadline = None;
        c.answered_at = Some(now);
        c.reason(
            "accepted",
            format!("answered after {waited:.0}s"),
            "assigned to the agent",
            now,
        );
        if held.channel == Channel::Voice {
            self.emit(vec![route_command(&c, agent_id, now)]).await;
        }
        self.remember(&mut st, c.clone());
        Ok(c.view(now))
    }

    /// `offer.declined`.
    pub async fn offer_declined(
        &self,
        agent_id: &str,
        contact_id: &str,
    ) -> Result<ContactRoutingView, RoutingError> {
        let now = self.now();
        let mut st = self.inner.state.lock().await;
        let addr = self.agent(agent_id)?;
        if !st.contacts.contains_key(contact_id) {
            return Err(RoutingError::UnknownContact);
        }
        let held = addr
            .send(agent::Decline(contact_id.to_string()))
            .await
            .map_err(|e| RoutingError::Unavailable(e.to_string()))?;
        if let Some(held) = held {
            self.offer_failed(&mut st, agent_id, held, "declined", now)
                .await;
            self.agent_freed(&mut st, agent_id).await;
        }
        st.contacts
            .get(contact_id)
            .map(|c| c.view(now))
            .ok_or(RoutingError::UnknownContact)
    }

    /// `contact.wrapped`: the agent finished after-contact work.
    pub async fn contact_wrapped(
        &self,
        agent_id: &str,
        contact_id: &str,
    ) -> Result<(), RoutingError> {
        let mut st = self.inner.state.lock().await;
        let addr = self.agent(agent_id)?;
        addr.send(agent::Wrapped(contact_id.to_string()))
            .await
            .map_err(|e| RoutingError::Unavailable(e.to_string()))?;
        self.agent_freed(&mut st, agent_id).await;
        Ok(())
    }

    /// One timer tick: offer timeouts, wrap-up ends, relaxation, overflow, gauges.
    pub async fn tick(&self) {
        let now = self.now();
        let cfg = self.config();
        let mut st = self.inner.state.lock().await;
        for addr in self.inner.board.addrs() {
            let Ok((offers, wraps)) = addr.send(agent::Expire).await else {
                continue;
            };
            let Ok(agent) = addr.send(agent::GetAgent).await else {
                continue;
            };
            for held in offers {
                self.offer_failed(&mut st, &agent.id, held, "timeout", now)
                    .await;
            }
            if !wraps.is_empty() {
                self.agent_freed(&mut st, &agent.id).await;
            }
        }
        let queues: Vec<Addr<QueueActor>> = st.queues.values().cloned().collect();
        for q in &queues {
            if let Ok(outcome) = q.send(queue::Dispatch).await {
                self.process(&mut st, outcome).await;
            }
        }
        self.rebalance(&mut st, &cfg, now).await;
        self.publish_gauges(&mut st, &cfg, now).await;
    }

    async fn rebalance(&self, st: &mut RouterState, cfg: &RoutingConfig, now: DateTime<Utc>) {
        let mut loads = Vec::new();
        for addr in st.queues.values() {
            if let Ok(l) = addr.send(queue::Load).await {
                loads.push(l);
            }
        }
        let moves = plan_overflow(&loads, &mut st.overflow, &cfg.overflow, now);
        for m in moves {
            let Ok(from_site) = SiteId::parse(&m.from_site) else {
                continue;
            };
            let from = self.queue_addr(st, &from_site, &m.skill);
            let Ok(taken) = from.send(queue::TakeForOverflow(m.count)).await else {
                continue;
            };
            if taken.is_empty() {
                continue;
            }
            self.inner
                .observer
                .overflow(&m.from_site, &m.to_site, &m.skill, taken.len() as u64);
            let to_site = match SiteId::parse(&m.to_site) {
                Ok(s) => s,
                Err(_) => continue,
            };
            for mut c in taken {
                c.moved_at = Some(now);
                c.site = to_site.clone();
                c.reason(
                    "overflow",
                    m.reason.clone(),
                    format!("moved from {} to {}", m.from_site, m.to_site),
                    now,
                );
                self.enqueue(st, c).await;
            }
        }
    }

    async fn publish_gauges(&self, st: &mut RouterState, cfg: &RoutingConfig, now: DateTime<Utc>) {
        for ((site, skill), addr) in st.queues.iter() {
            let overflowing = st
                .overflow
                .by_skill
                .get(skill)
                .and_then(|s| s.get(site))
                .is_some_and(|s| s.overflowing);
            if let Ok(s) = addr.send(queue::Snapshot { overflowing }).await {
                self.inner.observer.queue(&s);
            }
        }
        // Every (site, presence) pair is published, zeros included, so an agent
        // who changes state leaves no stale count behind.
        let mut by: BTreeMap<String, [u64; 3]> = BTreeMap::new();
        for a in self.inner.board.addrs() {
            if let Ok(agent) = a.send(agent::GetAgent).await {
                let i = match agent.presence {
                    Presence::Available => 0,
                    Presence::Away => 1,
                    Presence::Offline => 2,
                };
                by.entry(agent.site.to_string()).or_default()[i] += 1;
            }
        }
        for (site, counts) in by {
            for (p, n) in [Presence::Available, Presence::Away, Presence::Offline]
                .iter()
                .zip(counts)
            {
                self.inner.observer.agents(&site, p.as_str(), n);
            }
        }
        trim_bot(st, now, cfg);
        if !st.bot_outcomes.is_empty() {
            let contained = st.bot_outcomes.iter().filter(|(_, c)| *c).count();
            self.inner
                .observer
                .containment(contained as f64 / st.bot_outcomes.len() as f64);
        }
    }

    /// A contact's routing record.
    pub async fn contact(&self, contact_id: &str) -> Option<ContactRoutingView> {
        let now = self.now();
        let st = self.inner.state.lock().await;
        st.contacts.get(contact_id).map(|c| c.view(now))
    }

    /// Every queue's live state.
    pub async fn queues(&self) -> Vec<QueueSnapshot> {
        let st = self.inner.state.lock().await;
        let mut out = Vec::new();
        for ((site, skill), addr) in st.queues.iter() {
            let overflowing = st
                .overflow
                .by_skill
                .get(skill)
                .and_then(|s| s.get(site))
                .is_some_and(|s| s.overflowing);
            if let Ok(s) = addr.send(queue::Snapshot { overflowing }).await {
                out.push(s);
            }
        }
        out
    }

    /// Every agent's state.
    pub async fn agents(&self) -> Vec<AgentState> {
        let mut out = Vec::new();
        for a in self.inner.board.addrs() {
            if let Ok(s) = a.send(agent::GetAgent).await {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Whether an agent holds (offered, assigned or wrapping up) a contact of the patient.
    pub async fn agent_holds_patient(&self, agent_id: &str, patient: PatientId) -> bool {
        match self.inner.board.addr(agent_id) {
            Some(a) => a
                .send(agent::GetAgent)
                .await
                .map(|s| s.holds_patient(patient))
                .unwrap_or(false),
            None => false,
        }
    }
}

fn record_bot(st: &mut RouterState, now: DateTime<Utc>, contained: bool, cfg: &RoutingConfig) {
    st.bot_outcomes.push_back((now, contained));
    trim_bot(st, now, cfg);
}

fn trim_bot(st: &mut RouterState, now: DateTime<Utc>, cfg: &RoutingConfig) {
    let cut = now - Duration::seconds(i64::from(cfg.stats_window_secs));
    while st.bot_outcomes.front().is_some_and(|(t, _)| *t < cut) {
        st.bot_outcomes.pop_front();
    }
}

fn signals_json(c: &RoutedContact) -> Value {
    Value::Array(
        c.signals
            .iter()
            .map(|s| json!({"signal": s.signal.as_str(), "detail": s.detail}))
            .collect(),
    )
}

fn offer_command(c: &RoutedContact, now: DateTime<Utc>) -> Command {
    let agent = c.offered_to.clone().unwrap_or_default();
    let mut p = Map::new();
    p.insert("agent_id".into(), agent.clone().into());
    p.insert("contact_id".into(), c.contact_id.to_string().into());
    p.insert("skill".into(), c.skill.clone().into());
    p.insert("contact_channel".into(), c.channel.as_str().into());
    p.insert("intent".into(), c.intent.clone().into());
    p.insert("level".into(), json!(c.level));
    p.insert(
        "priority_score".into(),
        crate::rules::priority::score_at(&c.key, now).into(),
    );
    p.insert("signals".into(), signals_json(c));
    p.insert("transcript".into(), json!(c.transcript));
    p.insert(
        "expires_at".into(),
        c.offer_deadline.map(|d| d.to_rfc3339()).into(),
    );
    p.insert(
        "context".into(),
        format!("/v1/patients/{}/context", c.patient_id).into(),
    );
    Command::new(
        CommandType::ContactOffer,
        c.cause,
        &format!("{}:{}:{}", c.contact_id, agent, c.offers_made),
        c.site.clone(),
        Channel::Desktop,
        now,
        Some(c.patient_id),
        p,
    )
}

fn route_command(c: &RoutedContact, agent_id: &str, now: DateTime<Utc>) -> Command {
    let mut p = Map::new();
    p.insert("agent_id".into(), agent_id.into());
    p.insert("contact_id".into(), c.contact_id.to_string().into());
    Command::new(
        CommandType::ContactRoute,
        c.cause,
        &format!("{}:{}:{}", c.contact_id, agent_id, c.offers_made),
        c.site.clone(),
        c.channel,
        now,
        Some(c.patient_id),
        p,
    )
}

fn escalation_command(c: &RoutedContact, now: DateTime<Utc>) -> Command {
    let mut p = Map::new();
    p.insert("contact_id".into(), c.contact_id.to_string().into());
    p.insert("skill".into(), c.skill.clone().into());
    p.insert("level".into(), json!(c.level));
    p.insert("signals".into(), signals_json(c));
    Command::new(
        CommandType::EscalationRaised,
        c.cause,
        &c.contact_id.to_string(),
        c.site.clone(),
        Channel::Desktop,
        now,
        Some(c.patient_id),
        p,
    )
}

/// A command sink that keeps commands in memory (benchmarks and unit tests).
#[derive(Default)]
pub struct MemorySink {
    /// Commands received.
    pub commands: std::sync::Mutex<Vec<Command>>,
}

impl CommandSink for MemorySink {
    fn enqueue(
        &self,
        commands: Vec<Command>,
    ) -> crate::ports::BoxFuture<'static, Result<(), crate::ports::PortError>> {
        if let Ok(mut c) = self.commands.lock() {
            c.extend(commands);
        }
        Box::pin(async { Ok(()) })
    }
}
