//! A queue: the contacts waiting for one skill at one site.
//!
//! [`QueueState`] is plain data with the decisions as methods (ordering by one
//! priority key comparable across queues, timed relaxation, matching, the sliding
//! statistics behind saturation and staffing); [`QueueActor`] is the thin actor that
//! owns one. The router drives a dispatch: it asks the queue for a proposal, has
//! the agent's actor confirm the reservation, then takes the contact as offered.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::model::{RouteState, RoutedContact};
use super::{Clock, RoutingConfig};
use crate::event::Channel;
use crate::ids::SiteId;
use crate::rules::erlang::{self, StaffingEstimate};
use crate::rules::matching::{
    choose_agent, has_room, relaxation_step, relaxed_needs, AgentView, ChoiceReason, SiteWidening,
};
use crate::rules::overflow::{self, QueueLoad};
use crate::rules::priority::PriorityKey;

/// The views of the agents with a queue's skill, shared by the router between
/// agent changes (cloning the list is one reference count).
pub type AgentViews = Arc<[Arc<AgentView>]>;

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
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
    /// Open now by its hours (its own, else its site's; always without any).
    #[serde(default = "always_open")]
    pub open: bool,
    /// The next opening (now when open; None: none within a year).
    #[serde(default)]
    pub next_opening: Option<DateTime<Utc>>,
    /// Where its hours come from: `queue`, `site` or `always`.
    #[serde(default)]
    pub hours_from: String,
}

fn always_open() -> bool {
    true
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
        c.state = RouteState::Queued;
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
        // Most dispatches find the queue empty (every tick and every freed agent
        // dispatches each queue): answer before bucketing the agents.
        if self.contacts.is_empty() {
            return None;
        }
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

    /// Takes the proposed contact out of the queue as offered to its agent, with
    /// the reasons that explain the offer (relaxation step reached, how the agent
    /// was chosen). None if the contact left the queue meanwhile.
    pub fn take_offered(
        &mut self,
        p: &Proposal,
        deadline: DateTime<Utc>,
        now: DateTime<Utc>,
        cfg: &RoutingConfig,
    ) -> Option<RoutedContact> {
        let mut c = self.remove(&p.contact_id)?;
        c.state = RouteState::Offered;
        c.offered_to = Some(p.agent_id.clone());
        c.offer_deadline = Some(deadline);
        if c.relaxation_step != p.step {
            if let Some(step) = p
                .step
                .filter(|i| *i > 0)
                .and_then(|i| cfg.relaxation.steps.get(i))
            {
                let scope = match step.sites {
                    SiteWidening::Home => "home site",
                    _ => "any allowed site",
                };
                c.reason(
                    "relaxation",
                    format!("waited {}s", c.waited_secs(now)),
                    format!(
                        "widened to proficiency >= {} ({scope})",
                        step.min_proficiency
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
        Some(c)
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

    /// Where a waiting contact stands: its position (1 = served next) and its
    /// estimated wait, on the same estimate as the snapshot's (None: nobody
    /// available, so no honest estimate).
    pub fn position<A: Borrow<AgentView>>(
        &mut self,
        contact_id: &str,
        agents: &[A],
        now: DateTime<Utc>,
        cfg: &RoutingConfig,
    ) -> Option<(u32, Option<f64>)> {
        let pos = self
            .iter()
            .position(|c| c.contact_id.as_str() == contact_id)?;
        let pos = u32::try_from(pos + 1).unwrap_or(u32::MAX);
        let (load, _, _) = self.load(agents, now, cfg);
        Some((
            pos,
            overflow::estimated_wait_secs(pos, load.agents_available, load.aht_secs),
        ))
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
            open: true,
            next_opening: None,
            hours_from: String::new(),
        }
    }
}

/// Add a waiting contact (the router dispatches next).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue {
    /// The contact (its `queued_at` set).
    pub contact: RoutedContact,
    /// True for a new arrival (counted in the queue's statistics), false for a
    /// contact coming back (offer declined, moved, recovered).
    pub arrival: bool,
}

/// The best (contact, agent) pair among `agents` (the agents with the queue's skill).
#[derive(Message)]
#[rtype(result = "Option<Proposal>")]
pub struct Propose {
    /// Views of the agents with the queue's skill, any site.
    pub agents: AgentViews,
    /// Agents refused for this pass (their reservation failed).
    pub skip: BTreeSet<String>,
}

/// Take the proposed contact out of the queue, offered to its agent (the agent
/// confirmed the reservation).
#[derive(Message)]
#[rtype(result = "Option<RoutedContact>")]
pub struct TakeOffered {
    /// The proposal the agent confirmed.
    pub proposal: Proposal,
    /// When the offer times out.
    pub deadline: DateTime<Utc>,
}

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
pub struct Load {
    /// Views of the agents with the queue's skill.
    pub agents: AgentViews,
}

/// The queue's snapshot.
#[derive(Message)]
#[rtype(result = "QueueSnapshot")]
pub struct Snapshot {
    /// Views of the agents with the queue's skill.
    pub agents: AgentViews,
    /// Whether the rebalancer has this queue shedding work.
    pub overflowing: bool,
}

/// A waiting contact's position and estimated wait.
#[derive(Message)]
#[rtype(result = "Option<(u32, Option<f64>)>")]
pub struct Position {
    /// The contact.
    pub contact_id: String,
    /// Views of the agents with the queue's skill.
    pub agents: AgentViews,
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

/// The actor that owns one [`QueueState`]: its waiting contacts and statistics.
/// It never awaits anyone: the router proposes, reserves at the agent, then takes.
pub struct QueueActor {
    /// The queue.
    state: QueueState,
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
        config: Arc<std::sync::RwLock<Arc<RoutingConfig>>>,
        clock: Arc<dyn Clock>,
    ) -> QueueActor {
        QueueActor {
            state: QueueState::new(site, skill),
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
}

impl Actor for QueueActor {
    type Context = Context<Self>;
}

impl Handler<Enqueue> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, _ctx: &mut Self::Context) {
        if msg.arrival {
            self.state.stats.arrived(self.clock.now());
        }
        self.state.insert(msg.contact);
    }
}

impl Handler<Propose> for QueueActor {
    type Result = Option<Proposal>;

    fn handle(&mut self, msg: Propose, _ctx: &mut Self::Context) -> Self::Result {
        self.state
            .propose(&msg.agents, self.clock.now(), &self.cfg(), &msg.skip)
    }
}

impl Handler<TakeOffered> for QueueActor {
    type Result = Option<RoutedContact>;

    fn handle(&mut self, msg: TakeOffered, _ctx: &mut Self::Context) -> Self::Result {
        self.state
            .take_offered(&msg.proposal, msg.deadline, self.clock.now(), &self.cfg())
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

    fn handle(&mut self, msg: Load, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.state
                .load(&msg.agents, self.clock.now(), &self.cfg())
                .0,
        )
    }
}

impl Handler<Snapshot> for QueueActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, msg: Snapshot, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.snapshot(
            &msg.agents,
            self.clock.now(),
            &self.cfg(),
            msg.overflowing,
        ))
    }
}

impl Handler<Position> for QueueActor {
    type Result = Option<(u32, Option<f64>)>;

    fn handle(&mut self, msg: Position, _ctx: &mut Self::Context) -> Self::Result {
        let now = self.clock.now();
        self.state
            .position(&msg.contact_id, &msg.agents, now, &self.cfg())
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
