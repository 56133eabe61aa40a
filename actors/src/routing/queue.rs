//! A queue: the contacts waiting for one skill at one site.
//!
//! [`QueueState`] is plain data with the decisions as methods (ordering by one
//! priority key comparable across queues, timed relaxation, matching, the sliding
//! statistics behind saturation and staffing); [`QueueActor`] is the thin actor that
//! owns one and reserves agents through their actors.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::agent::{AgentBoard, Reserve};
use super::model::{ContactState, RoutedContact};
use super::{Clock, RoutingConfig};
use crate::event::Channel;
use crate::ids::SiteId;
use crate::rules::erlang::{self, StaffingEstimate};
use crate::rules::matching::{
    choose_agent, has_room, relaxation_step, relaxed_needs, AgentView, ChoiceReason,
};
use crate::rules::overflow::{self, QueueLoad};
use crate::rules::priority::PriorityKey;

/// Sliding-window statistics of one queue.
#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    /// Arrival times.
    arrivals: VecDeque<DateTime<Utc>>,
    /// (answered at, waited seconds).
    answered: VecDeque<(DateTime<Utc>, f64)>,
    /// (abandoned at, waited seconds).
    abandoned: VecDeque<(DateTime<Utc>, f64)>,
    /// (ended at, handle seconds).
    handled: VecDeque<(DateTime<Utc>, f64)>,
}

impl QueueStats {
    fn trim(&mut self, now: DateTime<Utc>, window: Duration) {
        let cut = now - window;
        while self.arrivals.front().is_some_and(|t| *t < cut) {
            self.arrivals.pop_front();
        }
        for q in [&mut self.answered, &mut self.abandoned, &mut self.handled] {
            while q.front().is_some_and(|(t, _)| *t < cut) {
                q.pop_front();
            }
        }
    }

    /// Records an arrival.
    pub fn arrived(&mut self, at: DateTime<Utc>) {
        self.arrivals.push_back(at);
    }

    /// Records an answer after `waited` seconds.
    pub fn answered(&mut self, at: DateTime<Utc>, waited: f64) {
        self.answered.push_back((at, waited));
    }

    /// Records an abandonment after `waited` seconds.
    pub fn abandoned(&mut self, at: DateTime<Utc>, waited: f64) {
        self.abandoned.push_back((at, waited));
    }

    /// Records a handle time.
    pub fn handled(&mut self, at: DateTime<Utc>, secs: f64) {
        self.handled.push_back((at, secs));
    }
}

/// The live state of a queue, as `GET /v1/queues` and the gauges show it.
#[derive(Debug, Clone, Serialize)]
pub struct QueueSnapshot {
    /// Site.
    pub site: SiteId,
    /// Skill.
    pub skill: String,
    /// Contacts waiting.
    pub depth: u32,
    /// Wait of the oldest waiting contact.
    pub oldest_wait_secs: u64,
    /// Agents signed in (available or busy) with the skill at the site.
    pub agents_staffed: u32,
    /// Agents available with room for at least one more contact.
    pub agents_available: u32,
    /// Free contact slots across the site's skilled agents.
    pub free_capacity: u32,
    /// Estimated wait of a new contact (None: nobody staffed).
    pub estimated_wait_secs: Option<f64>,
    /// Offered load / available capacity.
    pub saturation: f64,
    /// Arrivals per minute over the window.
    pub arrivals_per_min: f64,
    /// Average handle time over the window (or the configured default).
    pub aht_secs: f64,
    /// Answered within target / (answered + abandoned) over the window.
    pub service_level: Option<f64>,
    /// Abandoned over the window.
    pub abandoned_in_window: u32,
    /// Whether the queue is shedding work to other sites.
    pub overflowing: bool,
    /// Erlang C / Erlang A staffing for the configured service-level target.
    pub staffing: Option<StaffingEstimate>,
}

/// One matching decision: which contact goes to which agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The contact.
    pub contact_id: String,
    /// The agent.
    pub agent_id: String,
    /// Why that agent.
    pub reason: ChoiceReason,
    /// The relaxation step in force.
    pub step: Option<usize>,
}

/// The contacts waiting for one (site, skill).
#[derive(Debug, Clone)]
pub struct QueueState {
    /// Site.
    pub site: SiteId,
    /// Skill.
    pub skill: String,
    /// Waiting order: the greatest key is served first.
    order: BTreeSet<PriorityKey>,
    /// Waiting contacts by id.
    contacts: HashMap<String, RoutedContact>,
    /// Sliding statistics.
    pub stats: QueueStats,
}

impl QueueState {
    /// An empty queue.
    pub fn new(site: SiteId, skill: String) -> QueueState {
        QueueState {
            site,
            skill,
            order: BTreeSet::new(),
            contacts: HashMap::new(),
            stats: QueueStats::default(),
        }
    }

    /// Contacts waiting.
    pub fn depth(&self) -> usize {
        self.contacts.len()
    }

    /// Adds a waiting contact (keeping its key: a requeued or moved contact keeps its place).
    pub fn insert(&mut self, mut c: RoutedContact) {
        c.state = ContactState::Queued;
        c.offered_to = None;
        c.offer_deadline = None;
        c.site = self.site.clone();
        self.order.insert(c.key.clone());
        self.contacts.insert(c.contact_id.to_string(), c);
    }

    /// Removes a contact.
    pub fn remove(&mut self, contact_id: &str) -> Option<RoutedContact> {
        let c = self.contacts.remove(contact_id)?;
        self.order.remove(&c.key);
        Some(c)
    }

    /// A waiting contact.
    pub fn get(&self, contact_id: &str) -> Option<&RoutedContact> {
        self.contacts.get(contact_id)
    }

    /// Waiting contacts, best first.
    pub fn iter(&self) -> impl Iterator<Item = &RoutedContact> {
        self.order
            .iter()
            .rev()
            .filter_map(|k| self.contacts.get(&k.contact_id))
    }

    /// The wait of the oldest contact.
    pub fn oldest_wait_secs(&self, now: DateTime<Utc>) -> u64 {
        self.contacts
            .values()
            .map(|c| c.waited_secs(now))
            .max()
            .unwrap_or(0)
    }

    /// Finds the best (contact, agent) pair among the first `scan_limit` contacts.
    /// `agents` are the agents with this skill (any site; needs filter sites).
    ///
    /// Free agents are bucketed by the channels they have room on, and a contact
    /// whose needs are the same as one that already found nobody in this pass
    /// (same channel, proficiency, relaxation step, no preferred or excluded
    /// agents) is skipped without scanning the agents again.
    pub fn propose<A: Borrow<AgentView>>(
        &self,
        agents: &[A],
        now: DateTime<Utc>,
        cfg: &RoutingConfig,
        skip_agents: &BTreeSet<String>,
    ) -> Option<Proposal> {
        let mut by_channel: HashMap<&str, Vec<&AgentView>> = HashMap::new();
        for a in agents
            .iter()
            .map(Borrow::borrow)
            .filter(|a: &&AgentView| a.available && !skip_agents.contains(&a.id))
        {
            for ch in a.capacity.keys() {
                if has_room(a, ch) {
                    by_channel.entry(ch.as_str()).or_default().push(a);
                }
            }
        }
        if by_channel.is_empty() {
            return None;
        }
        let mut failed: HashSet<(Channel, u8, Option<usize>, bool)> = HashSet::new();
        for c in self.iter().take(cfg.dispatch_scan_limit.max(1)) {
            let Some(candidates) = by_channel.get(c.channel.as_str()) else {
                continue;
            };
            let cross = c.cross_site && cfg.overflow.cross_site_skills.contains(&c.skill);
            let waited = c.waited_secs(now);
            let plain = c.preferred_agent.is_none() && c.excluded_agents.is_empty();
            let signature = (
                c.channel,
                c.min_proficiency,
                relaxation_step(waited, &cfg.relaxation),
                cross,
            );
            if plain && failed.contains(&signature) {
                continue;
            }
            let relaxed = relaxed_needs(&c.base_needs(), waited, &cfg.relaxation, cross);
            match choose_agent(&relaxed.needs, candidates, now) {
                Some(choice) => {
                    return Some(Proposal {
                        contact_id: c.contact_id.to_string(),
                        agent_id: choice.agent_id,
                        reason: choice.reason,
                        step: relaxed.step,
                    })
                }
                None if plain => {
                    failed.insert(signature);
                }
                None => {}
            }
        }
        None
    }

    /// The key of the best contact `agent` could take now (cross-queue fairness).
    pub fn best_for(
        &self,
        agent: &AgentView,
        now: DateTime<Utc>,
        cfg: &RoutingConfig,
    ) -> Option<PriorityKey> {
        self.iter()
            .take(cfg.dispatch_scan_limit.max(1))
            .find(|c| {
                let cross = c.cross_site && cfg.overflow.cross_site_skills.contains(&c.skill);
                let relaxed =
                    relaxed_needs(&c.base_needs(), c.waited_secs(now), &cfg.relaxation, cross);
                choose_agent(&relaxed.needs, std::slice::from_ref(agent), now).is_some()
            })
            .map(|c| c.key.clone())
    }

    /// Takes up to `count` contacts that may move between sites, best first.
    pub fn take_for_overflow(
        &mut self,
        count: u32,
        now: DateTime<Utc>,
        cfg: &RoutingConfig,
    ) -> Vec<RoutedContact> {
        let ids: Vec<String> = self
            .iter()
            .filter(|c| overflow::may_move(c.moved_at, now, &cfg.overflow))
            .take(count as usize)
            .map(|c| c.contact_id.to_string())
            .collect();
        ids.iter().filter_map(|id| self.remove(id)).collect()
    }

    /// The queue's load for saturation and overflow planning, with the agents
    /// staffed at the site for the skill and those available with room now.
    pub fn load<A: Borrow<AgentView>>(
        &mut self,
        agents: &[A],
        now: DateTime<Utc>,
        cfg: &RoutingConfig,
    ) -> (QueueLoad, u32, u32) {
        let window = Duration::seconds(i64::from(cfg.stats_window_secs.max(60)));
        self.stats.trim(now, window);
        let at_site: Vec<&AgentView> = agents
            .iter()
            .map(Borrow::borrow)
            .filter(|a: &&AgentView| {
                a.site == self.site.as_str() && a.skills.contains_key(&self.skill)
            })
            .collect();
        let staffed = at_site.len() as u32;
        let with_room = at_site
            .iter()
            .filter(|a| a.available && a.capacity.keys().any(|ch| has_room(a, ch)))
            .count() as u32;
        let free: u32 = at_site
            .iter()
            .filter(|a| a.available)
            .map(|a| {
                a.capacity
                    .iter()
                    .map(|(ch, cap)| cap.saturating_sub(a.load.get(ch).copied().unwrap_or(0)))
                    .max()
                    .unwrap_or(0)
            })
            .sum();
        let load = QueueLoad {
            site: self.site.to_string(),
            skill: self.skill.clone(),
            depth: self.depth() as u32,
            oldest_wait_secs: self.oldest_wait_secs(now),
            agents_available: at_site.iter().filter(|a| a.available).count() as u32,
            free_capacity: free,
            arrival_rate_per_sec: self.stats.arrivals.len() as f64 / window.num_seconds() as f64,
            aht_secs: self.aht(cfg),
        };
        (load, staffed, with_room)
    }

    fn aht(&self, cfg: &RoutingConfig) -> f64 {
        if self.stats.handled.is_empty() {
            cfg.default_aht_secs
        } else {
            self.stats.handled.iter().map(|(_, s)| s).sum::<f64>() / self.stats.handled.len() as f64
        }
    }

    /// The snapshot `GET /v1/queues` serves.
    pub fn snapshot<A: Borrow<AgentView>>(
        &mut self,
        agents: &[A],
        now: DateTime<Utc>,
        cfg: &RoutingConfig,
        overflowing: bool,
    ) -> QueueSnapshot {
        let (load, staffed, available_agents) = self.load(agents, now, cfg);
        let target = f64::from(cfg.service_level_target_secs);
        let answered_in_target = self
            .stats
            .answered
            .iter()
            .filter(|(_, w)| *w <= target)
            .count();
        let finished = self.stats.answered.len() + self.stats.abandoned.len();
        let service_level = (finished > 0).then(|| answered_in_target as f64 / finished as f64);
        let total_wait: f64 = self
            .stats
            .answered
            .iter()
            .chain(self.stats.abandoned.iter())
            .map(|(_, w)| w)
            .sum();
        let theta = erlang::abandonment_rate_from_observations(
            self.stats.abandoned.len() as u64,
            total_wait,
        )
        .filter(|t| *t > 0.0);
        let staffing = erlang::staffing_estimate(
            load.arrival_rate_per_sec,
            load.aht_secs,
            theta,
            staffed,
            target,
            cfg.service_level_target,
        );
        QueueSnapshot {
            site: self.site.clone(),
            skill: self.skill.clone(),
            depth: load.depth,
            oldest_wait_secs: load.oldest_wait_secs,
            agents_staffed: staffed,
            agents_available: available_agents,
            free_capacity: load.free_capacity,
            estimated_wait_secs: overflow::estimated_wait_secs(
                load.depth,
                load.agents_available,
                load.aht_secs,
            ),
            saturation: overflow::saturation(&load),
            arrivals_per_min: load.arrival_rate_per_sec * 60.0,
            aht_secs: load.aht_secs,
            service_level,
            abandoned_in_window: self.stats.abandoned.len() as u32,
            overflowing,
            staffing,
        }
    }
}

/// What a dispatch pass did.
#[derive(Debug, Clone, Default)]
pub struct DispatchOutcome {
    /// Contacts offered now (with their agent in `offered_to`).
    pub offered: Vec<RoutedContact>,
    /// Time taken per decision, in seconds.
    pub decision_secs: Vec<f64>,
}

/// Add a contact and dispatch.
#[derive(Message)]
#[rtype(result = "DispatchOutcome")]
pub struct Enqueue {
    /// The contact (its `queued_at` set).
    pub contact: RoutedContact,
    /// True for a new arrival (counted in the queue's statistics), false for a
    /// contact coming back (offer declined, moved, recovered).
    pub arrival: bool,
}

/// Try to offer waiting contacts to free agents (after relaxation or a freed agent).
#[derive(Message)]
#[rtype(result = "DispatchOutcome")]
pub struct Dispatch;

/// The best contact key this agent could take here.
#[derive(Message)]
#[rtype(result = "Option<PriorityKey>")]
pub struct BestFor(pub AgentView);

/// Remove a contact (abandoned, ended, transferred, taken by a queue elsewhere).
#[derive(Message)]
#[rtype(result = "Option<RoutedContact>")]
pub struct Remove(pub String);

/// Take contacts to move to another site.
#[derive(Message)]
#[rtype(result = "Vec<RoutedContact>")]
pub struct TakeForOverflow(pub u32);

/// The queue's load for overflow planning.
#[derive(Message)]
#[rtype(result = "QueueLoad")]
pub struct Load;

/// The queue's snapshot.
#[derive(Message)]
#[rtype(result = "QueueSnapshot")]
pub struct Snapshot {
    /// Whether the rebalancer has this queue shedding work.
    pub overflowing: bool,
}

/// Statistics to record.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Record {
    /// Answered after waiting.
    Answered { waited_secs: f64 },
    /// Abandoned after waiting.
    Abandoned { waited_secs: f64 },
    /// Handled for this long.
    Handled { secs: f64 },
}

/// The actor that owns one [`QueueState`].
pub struct QueueActor {
    /// The queue.
    state: QueueState,
    /// Agent views and addresses.
    board: Arc<AgentBoard>,
    /// Rules and thresholds (shared; replaced on reload).
    config: Arc<std::sync::RwLock<Arc<RoutingConfig>>>,
    /// The clock.
    clock: Arc<dyn Clock>,
}

impl QueueActor {
    /// A new queue actor.
    pub fn new(
        site: SiteId,
        skill: String,
        board: Arc<AgentBoard>,
        config: Arc<std::sync::RwLock<Arc<RoutingConfig>>>,
        clock: Arc<dyn Clock>,
    ) -> QueueActor {
        QueueActor {
            state: QueueState::new(site, skill),
            board,
            config,
            clock,
        }
    }

    fn cfg(&self) -> Arc<RoutingConfig> {
        self.config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Offers waiting contacts to free agents until no pair matches. Each
    /// reservation is confirmed by the agent's actor (it owns the capacity); a
    /// refused one (the view was stale) skips that agent for this pass.
    fn dispatch(&mut self) -> ResponseActFuture<Self, DispatchOutcome> {
        self.dispatch_step(DispatchOutcome::default(), BTreeSet::new())
    }

    fn dispatch_step(
        &mut self,
        mut outcome: DispatchOutcome,
        mut skip: BTreeSet<String>,
    ) -> ResponseActFuture<Self, DispatchOutcome> {
        let cfg = self.cfg();
        let now = self.clock.now();
        let started = Instant::now();
        let agents = self.board.views_with_skill(&self.state.skill);
        let Some(p) = self.state.propose(&agents, now, &cfg, &skip) else {
            return Box::pin(fut::ready(outcome));
        };
        let Some(addr) = self.board.addr(&p.agent_id) else {
            skip.insert(p.agent_id);
            return self.dispatch_step(outcome, skip);
        };
        let Some(contact) = self.state.get(&p.contact_id).cloned() else {
            return Box::pin(fut::ready(outcome));
        };
        let deadline = now + Duration::seconds(i64::from(cfg.offer_timeout_secs));
        let reserve = addr.send(Reserve {
            contact_id: contact.contact_id.clone(),
            patient_id: contact.patient_id,
            channel: contact.channel,
            deadline,
        });
        Box::pin(reserve.into_actor(self).then(move |res, act, _ctx| {
            let elapsed = started.elapsed().as_secs_f64();
            if matches!(res, Ok(Ok(()))) {
                if let Some(mut c) = act.state.remove(&p.contact_id) {
                    c.state = ContactState::Offered;
                    c.offered_to = Some(p.agent_id.clone());
                    c.offer_deadline = Some(deadline);
                    if c.relaxation_step != p.step {
                        if let Some(i) = p.step.filter(|i| *i > 0) {
                            let step = &cfg.relaxation.steps[i.min(cfg.relaxation.steps.len() - 1)];
                            c.reason(
                                "relaxation",
                                format!("waited {}s", c.waited_secs(now)),
                                format!(
                                    "widened to proficiency >= {} ({})",
                                    step.min_proficiency,
                                    if matches!(
                                        step.sites,
                                        crate::rules::matching::SiteWidening::Home
                                    ) {
                                        "home site"
                                    } else {
                                        "any allowed site"
                                    }
                                ),
                                now,
                            );
                        }
                        c.relaxation_step = p.step;
                    }
                    let (rule, effect) = match p.reason {
                        ChoiceReason::PreferredAgent => (
                            "preferred_agent",
                            "offered to the agent who last owned the issue",
                        ),
                        ChoiceReason::BestMatch => (
                            "matching",
                            "offered to the most proficient, longest-idle eligible agent",
                        ),
                    };
                    c.reason(
                        rule,
                        format!("skill {} on {}", c.skill, c.channel),
                        effect,
                        now,
                    );
                    outcome.offered.push(c);
                    outcome.decision_secs.push(elapsed);
                }
            } else {
                skip.insert(p.agent_id.clone());
            }
            act.dispatch_step(outcome, skip)
        }))
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;
}

impl Handler<Enqueue> for QueueActor {
    type Result = AtomicResponse<Self, DispatchOutcome>;

    fn handle(&mut self, msg: Enqueue, _ctx: &mut Self::Context) -> Self::Result {
        let now = self.clock.now();
        if msg.arrival {
            self.state.stats.arrived(now);
        }
        self.state.insert(msg.contact);
        AtomicResponse::new(self.dispatch())
    }
}

impl Handler<Dispatch> for QueueActor {
    type Result = AtomicResponse<Self, DispatchOutcome>;

    fn handle(&mut self, _msg: Dispatch, _ctx: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(self.dispatch())
    }
}

impl Handler<BestFor> for QueueActor {
    type Result = Option<PriorityKey>;

    fn handle(&mut self, msg: BestFor, _ctx: &mut Self::Context) -> Self::Result {
        self.state.best_for(&msg.0, self.clock.now(), &self.cfg())
    }
}

impl Handler<Remove> for QueueActor {
    type Result = Option<RoutedContact>;

    fn handle(&mut self, msg: Remove, _ctx: &mut Self::Context) -> Self::Result {
        self.state.remove(&msg.0)
    }
}

impl Handler<TakeForOverflow> for QueueActor {
    type Result = Vec<RoutedContact>;

    fn handle(&mut self, msg: TakeForOverflow, _ctx: &mut Self::Context) -> Self::Result {
        self.state
            .take_for_overflow(msg.0, self.clock.now(), &self.cfg())
    }
}

impl Handler<Load> for QueueActor {
    type Result = MessageResult<Load>;

    fn handle(&mut self, _msg: Load, _ctx: &mut Self::Context) -> Self::Result {
        let agents = self.board.views_with_skill(&self.state.skill);
        MessageResult(self.state.load(&agents, self.clock.now(), &self.cfg()).0)
    }
}

impl Handler<Snapshot> for QueueActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, msg: Snapshot, _ctx: &mut Self::Context) -> Self::Result {
        let agents = self.board.views_with_skill(&self.state.skill);
        MessageResult(
            self.state
                .snapshot(&agents, self.clock.now(), &self.cfg(), msg.overflowing),
        )
    }
}

impl Handler<Record> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: Record, _ctx: &mut Self::Context) {
        let now = self.clock.now();
        match msg {
            Record::Answered { waited_secs } => self.state.stats.answered(now, waited_secs),
            Record::Abandoned { waited_secs } => self.state.stats.abandoned(now, waited_secs),
            Record::Handled { secs } => self.state.stats.handled(now, secs),
        }
    }
}
