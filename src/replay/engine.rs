//! One replay run: the recorded window fed through the journey rules and the real
//! router on a manual clock, with answers, handle times, wrap-up and abandons
//! modelled from the recording (see docs/whatif.md).
//!
//! A recorded answer, end, wrap-up or abandon is *anchored*: while the run makes
//! the same decision as the live run (the same agent is offered the contact no
//! later than it answered live), it happens at the recorded time and in the
//! recorded order. Once the run diverges it is *modelled*: the agent answers after
//! `answer_secs`, the contact lasts its recorded handle time (else its queue's
//! median), and a waiting patient leaves after their patience.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use frontdoor_actors::command::{Command, CommandType};
use frontdoor_actors::event::{Envelope, EventKind, Presence};
use frontdoor_actors::ids::{PatientId, SiteId};
use frontdoor_actors::journey::{Journey, Limits};
use frontdoor_actors::ports::{
    BoxFuture, NoObserver, PortError, RoutingChanges, RoutingSnapshot, RoutingStore,
};
use frontdoor_actors::routing::request::{route_request, RouteRequest};
use frontdoor_actors::routing::router::{AgentUpdate, Routing, RoutingDeps};
use frontdoor_actors::routing::{ManualClock, RoutingConfig};
use uuid::Uuid;

use super::patch::Staffing;
use super::stats::{QueueKey, RunStats};

/// One recorded event in replay order.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Patient it was filed under (None: a routing event).
    pub patient: Option<PatientId>,
    /// Replay time: when the router applied it, else when the runtime received it
    /// (ms since the epoch).
    pub at_ms: i64,
    /// The same in microseconds (the router's own precision where it kept it).
    pub at_us: i64,
    /// The event (None: a run of the router's timers that decided something live;
    /// the replay runs them there too).
    pub event: Option<Envelope>,
}

/// What the recording says about one contact.
#[derive(Debug, Clone, Default)]
struct ContactFacts {
    /// (agent, at, index) of each `offer.accepted`.
    accepts: Vec<(String, i64, usize)>,
    /// (agent, at, index) of each `offer.declined`.
    declines: Vec<(String, i64, usize)>,
    /// (agent, at, index) of each `contact.wrapped`.
    wraps: Vec<(String, i64, usize)>,
    /// (at, index) of `contact.ended`.
    ended: Option<(i64, usize)>,
    /// (at, index) of `contact.abandoned`.
    abandoned: Option<(i64, usize)>,
    /// Time of the last `contact.transferred`.
    last_transfer: Option<i64>,
    /// When it first needed a human under the configuration in force.
    entry: Option<i64>,
    /// Queue it entered then.
    queue: Option<QueueKey>,
}

/// What the recording says, read once and shared by both runs.
#[derive(Debug, Default)]
pub struct Facts {
    contacts: HashMap<String, ContactFacts>,
    /// Observed patience of the patients who abandoned, by queue (sorted, ms).
    patience: BTreeMap<QueueKey, Vec<i64>>,
    /// Observed handle times (accept to end), by queue (sorted, ms).
    handle: BTreeMap<QueueKey, Vec<i64>>,
}

impl Facts {
    /// Reads the recording; `base` is the configuration in force (it decides when
    /// each contact needed a human live).
    pub fn of(recorded: &[Recorded], base: &RoutingConfig) -> Facts {
        let mut f = Facts::default();
        let mut journeys: HashMap<PatientId, Journey> = HashMap::new();
        for (i, r) in recorded.iter().enumerate() {
            let Some(e) = &r.event else {
                continue;
            };
            let cid = e.contact_id.as_ref().map(|c| c.to_string());
            match &e.kind {
                EventKind::OfferAccepted { agent_id } => {
                    if let Some(c) = &cid {
                        f.contacts.entry(c.clone()).or_default().accepts.push((
                            agent_id.clone(),
                            r.at_ms,
                            i,
                        ));
                    }
                }
                EventKind::OfferDeclined { agent_id } => {
                    if let Some(c) = &cid {
                        f.contacts.entry(c.clone()).or_default().declines.push((
                            agent_id.clone(),
                            r.at_ms,
                            i,
                        ));
                    }
                }
                EventKind::ContactWrapped { agent_id } => {
                    if let Some(c) = &cid {
                        f.contacts.entry(c.clone()).or_default().wraps.push((
                            agent_id.clone(),
                            r.at_ms,
                            i,
                        ));
                    }
                }
                EventKind::AgentState { .. } => {}
                _ => {
                    let (Some(p), Some(c)) = (r.patient, &cid) else {
                        continue;
                    };
                    let j = journeys
                        .entry(p)
                        .or_insert_with(|| Journey::new(p, Limits::default()));
                    j.apply(i as u64, e);
                    let cf = f.contacts.entry(c.clone()).or_default();
                    match &e.kind {
                        EventKind::ContactEnded { .. } => cf.ended = Some((r.at_ms, i)),
                        EventKind::ContactAbandoned => cf.abandoned = Some((r.at_ms, i)),
                        EventKind::ContactTransferred { .. } => cf.last_transfer = Some(r.at_ms),
                        _ => {}
                    }
                    if cf.entry.is_none() {
                        if let Some(RouteRequest::Queue(n)) = route_request(j, e, base) {
                            cf.entry = Some(r.at_ms);
                            cf.queue = Some(QueueKey::new(&n.site, &n.skill));
                        }
                    }
                }
            }
        }
        for c in f.contacts.values() {
            let (Some(entry), Some(q)) = (c.entry, &c.queue) else {
                continue;
            };
            if let Some((at, _)) = c.abandoned {
                if c.accepts.is_empty() && at >= entry {
                    f.patience.entry(q.clone()).or_default().push(at - entry);
                }
            }
            if let (Some((_, acc, _)), Some((end, _))) = (c.accepts.last(), c.ended) {
                if end >= *acc {
                    f.handle.entry(q.clone()).or_default().push(end - acc);
                }
            }
        }
        for v in f.patience.values_mut().chain(f.handle.values_mut()) {
            v.sort_unstable();
        }
        f
    }

    /// Mean observed patience of a queue, seconds (Erlang A's θ is its inverse).
    pub fn mean_patience_secs(&self, q: &QueueKey) -> Option<f64> {
        let v = self.patience.get(q)?;
        (!v.is_empty()).then(|| v.iter().sum::<i64>() as f64 / v.len() as f64 / 1000.0)
    }

    /// Contacts that needed a human in the recording.
    pub fn queued_contacts(&self) -> usize {
        self.contacts.values().filter(|c| c.entry.is_some()).count()
    }

    fn median_handle(&self, q: &QueueKey) -> Option<i64> {
        let v = self.handle.get(q)?;
        v.get(v.len() / 2).copied()
    }

    /// The patience of a contact that waits `entry..`: its recorded one if it
    /// abandoned; if it was answered after waiting `w`, one of its queue's observed
    /// patiences longer than `w`, picked by a hash of its id (None: it never leaves).
    fn patience(&self, contact: &str, q: &QueueKey) -> Option<i64> {
        let c = self.contacts.get(contact);
        if let Some(c) = c {
            if let (Some((at, _)), Some(entry)) = (c.abandoned, c.entry) {
                if c.accepts.is_empty() {
                    return Some((at - entry).max(0));
                }
            }
        }
        let waited = c
            .and_then(|c| Some(c.accepts.first()?.1 - c.entry?))
            .unwrap_or(0);
        let pool = self.patience.get(q)?;
        let longer: &[i64] = &pool[pool.partition_point(|p| *p <= waited)..];
        if longer.is_empty() {
            return None;
        }
        Some(longer[(fnv(contact) % longer.len() as u64) as usize])
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A routing store that keeps only what the replay reads back: the commands.
#[derive(Default)]
struct ReplayStore {
    commands: Mutex<Vec<Command>>,
}

impl RoutingStore for ReplayStore {
    fn load_routing(&self) -> BoxFuture<'static, Result<RoutingSnapshot, PortError>> {
        Box::pin(async { Ok(RoutingSnapshot::default()) })
    }

    fn save_routing(&self, changes: RoutingChanges) -> BoxFuture<'static, Result<(), PortError>> {
        if let Ok(mut c) = self.commands.lock() {
            c.extend(
                changes
                    .commands
                    .into_iter()
                    .filter(|c| c.command_type == CommandType::ContactOffer),
            );
        }
        Box::pin(async { Ok(()) })
    }
}

/// A modelled or anchored step of the run.
#[derive(Debug, Clone)]
enum Action {
    Answer {
        contact: String,
        agent: String,
        accept: bool,
    },
    End {
        contact: String,
        agent: String,
    },
    Wrap {
        contact: String,
        agent: String,
    },
    Abandon {
        contact: String,
        entry: i64,
    },
    Staff(AgentUpdate),
    /// A modelled unresolved bot exchange of a patient who, under this run's
    /// hand-off threshold, is still with the bot when the recording handed over.
    BotTurn {
        contact: String,
        left: u32,
    },
    /// Routing's timers are due (a wrap-up timer; or, for a contact still waiting
    /// unanswered, an offer timeout or relaxation step).
    Wake(Option<String>),
}

/// Where a contact is in this run.
#[derive(Debug, Clone)]
struct Live {
    queue: QueueKey,
    patient: PatientId,
    start: Envelope,
    /// When it last started waiting for a human (None: not waiting).
    waiting_since: Option<i64>,
    /// First entry into a human queue.
    entry: i64,
    /// Agent holding it (accepted).
    agent: Option<String>,
    accepted_at: Option<i64>,
    ended: bool,
}

/// One offer the run made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Offer {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// Contact.
    pub contact_id: String,
    /// Agent.
    pub agent_id: String,
}

/// What one run produced.
pub struct RunOutput {
    /// Offers in the order routing made them.
    pub offers: Vec<Offer>,
    /// Figures.
    pub stats: RunStats,
}

/// Knobs of the model (the patch's `[replay]` section).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    /// Seconds a modelled agent takes to answer an offer.
    pub answer_secs: f64,
    /// Seconds between modelled bot exchanges (a later hand-off than recorded).
    pub bot_turn_secs: f64,
    /// Seconds between routing's timer runs while contacts wait (overflow and
    /// relaxation are checked then; offer timeouts, relaxation steps and wrap-up
    /// timers also run exactly when due).
    pub tick_secs: f64,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            answer_secs: 3.0,
            bot_turn_secs: 20.0,
            tick_secs: 5.0,
        }
    }
}

/// Ranks of steps at the same millisecond: recorded events (and the anchored
/// steps that stand for them) keep the recorded order; modelled ones come after.
const MODELLED: u64 = 1 << 62;

/// The index of the recorded event an anchored step's rank stands for (None: a
/// modelled step).
fn anchored_event(rank: u64) -> Option<usize> {
    (rank < MODELLED && rank % 2 == 1).then(|| usize::try_from((rank - 1) / 2).ok())?
}

struct Run<'a> {
    cfg: RoutingConfig,
    facts: &'a Facts,
    model: ModelSettings,
    routing: Routing,
    clock: Arc<ManualClock>,
    store: Arc<ReplayStore>,
    now: i64,
    heap: BinaryHeap<Reverse<(i64, u64, u64)>>,
    actions: HashMap<u64, Action>,
    next_action: u64,
    journeys: HashMap<PatientId, Journey>,
    contacts: HashMap<String, Live>,
    waiting: usize,
    offers: Vec<Offer>,
    used_answers: HashSet<usize>,
    stats: RunStats,
    agent_sites: HashMap<String, (SiteId, BTreeMap<String, u8>, Presence)>,
    seq: u64,
    /// The latest event of each contact still with the bot (for modelled turns).
    bot_last: HashMap<String, (PatientId, Envelope)>,
    /// When routing's timers last ran.
    last_tick: i64,
}

/// What one run replays under: routing's thresholds, the site directory (hours and
/// holidays), the agents added, and the replay model's knobs.
pub struct Setup<'a> {
    /// Routing's thresholds.
    pub routing: RoutingConfig,
    /// The site directory in force.
    pub sites: Arc<frontdoor_actors::sites::SiteDirectory>,
    /// Agents added by the patch.
    pub staffing: &'a Staffing,
    /// The replay model's knobs.
    pub model: ModelSettings,
}

/// Runs the window (up to `until_ms`) under `setup`; `progress` is told how far it
/// got.
pub async fn run(
    recorded: &[Recorded],
    until_ms: i64,
    facts: &Facts,
    setup: Setup<'_>,
    progress: &mut dyn FnMut(usize),
) -> anyhow::Result<RunOutput> {
    let Setup {
        routing: cfg,
        sites,
        staffing,
        model,
    } = setup;
    let Some(first) = recorded.first() else {
        anyhow::bail!("no events to replay");
    };
    let start = first.at_ms;
    let clock = Arc::new(ManualClock::new(
        DateTime::<Utc>::from_timestamp_millis(start).unwrap_or_default(),
    ));
    let store = Arc::new(ReplayStore::default());
    let routing = Routing::new(RoutingDeps {
        config: cfg.clone(),
        clock: clock.clone(),
        store: store.clone(),
        observer: Arc::new(NoObserver),
        // The site directory in force: opening hours and holidays close sites and
        // their queues on virtual time, as they did live.
        sites,
    });
    routing
        .activate()
        .await
        .map_err(|e| anyhow::anyhow!("routing: {e}"))?;
    let mut run = Run {
        stats: RunStats::new(cfg.service_level_target_secs),
        cfg,
        facts,
        model,
        routing,
        clock,
        store,
        now: start,
        heap: BinaryHeap::new(),
        actions: HashMap::new(),
        next_action: 0,
        journeys: HashMap::new(),
        contacts: HashMap::new(),
        waiting: 0,
        offers: Vec::new(),
        used_answers: HashSet::new(),
        agent_sites: HashMap::new(),
        seq: 0,
        bot_last: HashMap::new(),
        last_tick: i64::MIN,
    };
    let last = recorded.last().map(|r| r.at_ms).unwrap_or(start);
    for (at, u) in staffing.updates(start, last) {
        run.schedule(at, MODELLED, Action::Staff(u));
    }
    let tick = ((run.model.tick_secs * 1000.0) as i64).max(1);
    let mut next_tick = start - start.rem_euclid(tick) + tick;
    let mut i = 0usize;
    loop {
        let rec = recorded.get(i).map(|r| (r.at_ms, 2 * i as u64 + 1));
        let act = run.heap.peek().map(|Reverse((t, rank, _))| (*t, *rank));
        let next = match (rec, act) {
            (None, None) => break,
            (Some(r), None) => r,
            (None, Some(a)) => a,
            (Some(r), Some(a)) => r.min(a),
        };
        if next.0 >= until_ms {
            // The window is over: what the live run had not decided by then is not
            // decided here either.
            break;
        }
        let next_at = next.0.max(run.now);
        // Timers run every `tick_secs` while something waits (overflow);
        // deadlines (offer timeouts, relaxation steps, wrap-up) are Wake steps.
        if run.waiting > 0 {
            while next_tick <= next_at {
                run.advance(next_tick);
                run.last_tick = next_tick;
                run.routing.tick().await;
                run.drain(MODELLED);
                next_tick += tick;
                if run.waiting == 0 {
                    break;
                }
            }
        }
        if next_tick <= next_at {
            next_tick = next_at - next_at.rem_euclid(tick) + tick;
        }
        if Some(next) == rec {
            run.advance(next_at);
            run.recorded(i, &recorded[i]).await;
            i += 1;
            if i.is_multiple_of(2048) {
                progress(i);
            }
        } else if let Some(Reverse((_, rank, id))) = run.heap.pop() {
            run.advance(next_at);
            // An anchored step stands for recorded event (rank - 1) / 2: in that
            // event's millisecond it runs at the router's microsecond, as the live
            // answer, end or wrap-up did (agents freed in one millisecond keep
            // their live order as "idle since").
            if let Some(r) = anchored_event(rank).and_then(|k| recorded.get(k)) {
                if r.at_ms == next_at {
                    run.clock.advance_to(
                        DateTime::<Utc>::from_timestamp_micros(r.at_us).unwrap_or_default(),
                    );
                }
            }
            if let Some(a) = run.actions.remove(&id) {
                run.action(a, rank).await;
            }
        }
    }
    progress(recorded.len());
    let end = run.now;
    run.stats.close(end);
    Ok(RunOutput {
        offers: run.offers,
        stats: run.stats,
    })
}

impl Run<'_> {
    fn schedule(&mut self, at: i64, rank: u64, a: Action) {
        let id = self.next_action;
        self.next_action += 1;
        let rank = if rank >= MODELLED {
            MODELLED + id
        } else {
            rank
        };
        self.actions.insert(id, a);
        self.heap.push(Reverse((at, rank, id)));
    }

    fn advance(&mut self, to: i64) {
        if to > self.now {
            self.clock
                .advance_to(DateTime::<Utc>::from_timestamp_millis(to).unwrap_or_default());
            self.now = to;
        }
    }

    fn at(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(self.now).unwrap_or_default()
    }

    fn synthetic_id(&mut self, what: &str, contact: &str) -> Uuid {
        self.seq += 1;
        Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("replay:{what}:{contact}:{}", self.seq).as_bytes(),
        )
    }

    /// Reads the offers routing made since the last call and schedules their answers.
    fn drain(&mut self, _rank: u64) {
        let cmds: Vec<Command> = match self.store.commands.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => return,
        };
        for c in cmds {
            let field = |k: &str| {
                c.payload
                    .get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let (agent, contact) = (field("agent_id"), field("contact_id"));
            self.offers.push(Offer {
                at_ms: self.now,
                contact_id: contact.clone(),
                agent_id: agent.clone(),
            });
            self.answer_offer(contact.clone(), agent);
            let deadline = self.now + i64::from(self.cfg.offer_timeout_secs) * 1000;
            self.schedule(deadline, MODELLED, Action::Wake(Some(contact)));
        }
    }

    /// How the agent offered `contact` answers: as recorded when the recording has
    /// this agent's answer no earlier than now; no answer (the offer times out) when
    /// the agent did not answer live and someone else took it later than the
    /// timeout; otherwise an acceptance after `answer_secs`.
    fn answer_offer(&mut self, contact: String, agent: String) {
        let now = self.now;
        let modelled_at = now + (self.model.answer_secs * 1000.0) as i64;
        let facts = self.facts.contacts.get(&contact);
        let recorded = facts.and_then(|f| {
            f.declines
                .iter()
                .map(|(a, t, i)| (a, *t, *i, false))
                .chain(f.accepts.iter().map(|(a, t, i)| (a, *t, *i, true)))
                .filter(|(a, t, i, _)| **a == agent && *t >= now && !self.used_answers.contains(i))
                .min_by_key(|(_, t, i, _)| (*t, *i))
        });
        if let Some((_, t, i, accept)) = recorded {
            self.used_answers.insert(i);
            self.schedule(
                t,
                2 * i as u64 + 1,
                Action::Answer {
                    contact,
                    agent,
                    accept,
                },
            );
            return;
        }
        let answered_live = facts.is_some_and(|f| {
            f.accepts
                .iter()
                .chain(f.declines.iter())
                .any(|(a, _, _)| *a == agent)
        });
        let timeout_ms = i64::from(self.cfg.offer_timeout_secs) * 1000;
        let taken_later = facts.and_then(|f| {
            f.accepts
                .iter()
                .map(|(_, t, _)| *t)
                .find(|t| *t >= now + timeout_ms)
        });
        if !answered_live && taken_later.is_some() {
            return;
        }
        let declined_live = facts.is_some_and(|f| f.declines.iter().any(|(a, _, _)| *a == agent));
        self.schedule(
            modelled_at,
            MODELLED,
            Action::Answer {
                contact,
                agent,
                accept: !declined_live,
            },
        );
    }

    async fn route(&mut self, req: RouteRequest) {
        let _ = self.routing.route(req, None).await;
        self.drain(MODELLED);
    }

    /// A recorded event.
    async fn recorded(&mut self, i: usize, r: &Recorded) {
        // Within its millisecond, at the router's microsecond.
        self.clock
            .advance_to(DateTime::<Utc>::from_timestamp_micros(r.at_us).unwrap_or_default());
        let Some(e) = &r.event else {
            // Where the live router's timers decided something.
            self.routing.tick().await;
            self.drain(MODELLED);
            return;
        };
        match &e.kind {
            EventKind::AgentState {
                agent_id,
                presence,
                skills,
                capacity,
            } => {
                self.agent_state(AgentUpdate {
                    agent_id: agent_id.clone(),
                    site: e.site.clone(),
                    presence: *presence,
                    skills: skills.clone(),
                    capacity: capacity.clone(),
                })
                .await;
            }
            // Modelled (anchored to the recording while the run agrees with it).
            EventKind::OfferAccepted { .. }
            | EventKind::OfferDeclined { .. }
            | EventKind::ContactWrapped { .. } => {}
            _ => {
                let Some(p) = r.patient else { return };
                let cid = e.contact_id.as_ref().map(|c| c.to_string());
                let human = cid.as_ref().and_then(|c| self.contacts.get(c)).is_some();
                if human
                    && matches!(
                        e.kind,
                        EventKind::ContactEnded { .. } | EventKind::ContactAbandoned
                    )
                {
                    // Ends and abandons of contacts that reached a human queue in
                    // this run are modelled.
                    return;
                }
                let j = self
                    .journeys
                    .entry(p)
                    .or_insert_with(|| Journey::new(p, Limits::default()));
                j.apply(i as u64, e);
                let req = route_request(j, e, &self.cfg);
                if let Some(c) = &cid {
                    if !self.contacts.contains_key(c) {
                        self.bot_last.insert(c.clone(), (p, e.clone()));
                        // The recording handed over here; this run keeps the bot:
                        // the patient goes on with modelled failed exchanges.
                        let handed_over_live = self
                            .facts
                            .contacts
                            .get(c)
                            .is_some_and(|f| f.entry == Some(r.at_ms));
                        if handed_over_live
                            && matches!(e.kind, EventKind::BotTurn { .. })
                            && !matches!(req, Some(RouteRequest::Queue(_)))
                        {
                            let at = self.now + (self.model.bot_turn_secs * 1000.0) as i64;
                            self.schedule(
                                at,
                                MODELLED,
                                Action::BotTurn {
                                    contact: c.clone(),
                                    left: 5,
                                },
                            );
                        }
                    }
                }
                let Some(req) = req else {
                    return;
                };
                if let (RouteRequest::Queue(n), Some(c)) = (&req, cid) {
                    self.queued(&c, p, e, n.site.as_str(), &n.skill, &n.assessment.signals);
                }
                self.route(req).await;
            }
        }
    }

    /// A contact needs a human now.
    fn queued(
        &mut self,
        contact: &str,
        patient: PatientId,
        e: &Envelope,
        site: &str,
        skill: &str,
        signals: &[frontdoor_actors::rules::frustration::FiredSignal],
    ) {
        let now = self.now;
        let queue = QueueKey::from_parts(site, skill);
        for s in signals {
            self.stats.escalation(&queue, now, s.signal.as_str());
        }
        let is_new = !self.contacts.contains_key(contact);
        let live = self
            .contacts
            .entry(contact.to_string())
            .or_insert_with(|| Live {
                queue: queue.clone(),
                patient,
                start: e.clone(),
                waiting_since: None,
                entry: now,
                agent: None,
                accepted_at: None,
                ended: false,
            });
        if live.ended {
            return;
        }
        if live.waiting_since.is_none() {
            self.waiting += 1;
        }
        live.waiting_since = Some(now);
        live.queue = queue.clone();
        if let Some(agent) = live.agent.take() {
            // A transfer: the agent's part of the contact is over.
            let from = live.accepted_at.take().unwrap_or(now);
            self.stats.busy(&queue, &agent, from, now);
        }
        let steps: Vec<u32> = self
            .cfg
            .relaxation
            .steps
            .iter()
            .map(|s| s.after_secs)
            .filter(|s| *s > 0)
            .collect();
        for after in steps {
            self.schedule(
                now + i64::from(after) * 1000,
                MODELLED,
                Action::Wake(Some(contact.to_string())),
            );
        }
        if is_new {
            self.stats.arrival(&queue, now);
            let entry = now;
            if let Some(p) = self.facts.patience(contact, &queue) {
                let anchored = self
                    .facts
                    .contacts
                    .get(contact)
                    .and_then(|f| (f.entry == Some(entry)).then_some(f.abandoned?.1))
                    .map(|i| 2 * i as u64 + 1)
                    .unwrap_or(MODELLED);
                self.schedule(
                    entry + p,
                    anchored,
                    Action::Abandon {
                        contact: contact.to_string(),
                        entry,
                    },
                );
            }
        }
    }

    async fn agent_state(&mut self, u: AgentUpdate) {
        self.stats.staffing(
            &u.agent_id,
            u.site.as_str(),
            &u.skills,
            u.presence != Presence::Offline,
            self.now,
        );
        self.agent_sites.insert(
            u.agent_id.clone(),
            (u.site.clone(), u.skills.clone(), u.presence),
        );
        let _ = self.routing.agent_state(u).await;
        self.drain(MODELLED);
    }

    fn synthetic(
        &mut self,
        contact: &str,
        kind: EventKind,
        event_type: &str,
    ) -> Option<(PatientId, Envelope)> {
        let live = self.contacts.get(contact)?;
        let mut e = live.start.clone();
        let p = live.patient;
        e.id = self.synthetic_id(event_type, contact);
        e.event_type = event_type.to_string();
        e.kind = kind;
        e.occurred_at = self.at();
        e.raw = Arc::new(serde_json::Map::new());
        Some((p, e))
    }

    async fn apply_synthetic(&mut self, p: PatientId, e: Envelope) {
        let j = self
            .journeys
            .entry(p)
            .or_insert_with(|| Journey::new(p, Limits::default()));
        j.apply(u64::MAX, &e);
        if let Some(req) = route_request(j, &e, &self.cfg) {
            self.route(req).await;
        }
    }

    async fn action(&mut self, a: Action, rank: u64) {
        let now = self.now;
        match a {
            Action::BotTurn { contact, left } => {
                if self.contacts.contains_key(&contact) {
                    return;
                }
                let Some((p, mut e)) = self.bot_last.get(&contact).cloned() else {
                    return;
                };
                e.id = self.synthetic_id("bot.turn", &contact);
                e.event_type = "bot.turn".into();
                e.kind = EventKind::BotTurn {
                    resolved: false,
                    intent: None,
                    patient_text: None,
                    bot_text: None,
                    hand_off: false,
                };
                e.occurred_at = self.at();
                e.raw = Arc::new(serde_json::Map::new());
                let j = self
                    .journeys
                    .entry(p)
                    .or_insert_with(|| Journey::new(p, Limits::default()));
                let Some(cid) = e.contact_id.clone() else {
                    return;
                };
                if j.contacts
                    .get(&cid)
                    .is_none_or(|c| c.state != frontdoor_actors::journey::ContactState::Open)
                {
                    return;
                }
                j.apply(u64::MAX, &e);
                match route_request(j, &e, &self.cfg) {
                    Some(RouteRequest::Queue(n)) => {
                        self.queued(
                            &contact,
                            p,
                            &e,
                            n.site.as_str(),
                            &n.skill,
                            &n.assessment.signals,
                        );
                        self.route(RouteRequest::Queue(n)).await;
                    }
                    _ if left > 1 => {
                        let at = now + (self.model.bot_turn_secs * 1000.0) as i64;
                        self.schedule(
                            at,
                            MODELLED,
                            Action::BotTurn {
                                contact,
                                left: left - 1,
                            },
                        );
                    }
                    _ => {}
                }
            }
            Action::Wake(contact) => {
                // Nothing to time out or relax once the contact is answered or gone;
                // one timer run per instant is enough.
                let idle = contact.as_ref().is_some_and(|c| {
                    self.contacts
                        .get(c)
                        .is_none_or(|l| l.ended || l.waiting_since.is_none())
                });
                if idle || self.last_tick == now {
                    return;
                }
                self.last_tick = now;
                self.routing.tick().await;
                self.drain(MODELLED);
            }
            Action::Staff(u) => self.agent_state(u).await,
            Action::Answer {
                contact,
                agent,
                accept,
            } => {
                if !accept {
                    let _ = self.routing.offer_declined(&agent, &contact).await;
                    self.drain(MODELLED);
                    return;
                }
                if self.routing.offer_accepted(&agent, &contact).await.is_err() {
                    self.drain(MODELLED);
                    return;
                }
                self.drain(MODELLED);
                let Some(live) = self.contacts.get_mut(&contact) else {
                    return;
                };
                let queue = live.queue.clone();
                if let Some(since) = live.waiting_since.take() {
                    self.waiting -= 1;
                    let _ = since;
                }
                let wait = now - live.entry;
                live.agent = Some(agent.clone());
                live.accepted_at = Some(now);
                let site_of_agent = self
                    .agent_sites
                    .get(&agent)
                    .map(|a| a.0.as_str().to_string());
                self.stats.answered(&queue, live.entry, wait);
                if site_of_agent.as_deref().is_some_and(|s| s != queue.site()) {
                    self.stats.overflow(&queue, live.entry);
                }
                // When does it end? Anchored to the recorded end if this is the
                // recorded acceptance; else after its recorded (or its queue's
                // median) handle time. A later recorded transfer requeues it instead.
                let facts = self.facts.contacts.get(&contact);
                if facts.and_then(|f| f.last_transfer).is_some_and(|t| t > now) {
                    return;
                }
                let anchored = facts.and_then(|f| {
                    let (a, t, _) = f.accepts.last()?;
                    let (end, idx) = f.ended?;
                    (*a == agent && *t == now && rank < MODELLED).then_some((end, idx))
                });
                let (at, rank) = match anchored {
                    Some((end, idx)) => (end.max(now), 2 * idx as u64 + 1),
                    None => {
                        let handle = facts
                            .and_then(|f| Some(f.ended?.0 - f.accepts.last()?.1))
                            .filter(|h| *h >= 0)
                            .or_else(|| self.facts.median_handle(&queue))
                            .unwrap_or((self.cfg.default_aht_secs * 1000.0) as i64);
                        (now + handle, MODELLED)
                    }
                };
                self.schedule(at, rank, Action::End { contact, agent });
            }
            Action::End { contact, agent } => {
                let Some(live) = self.contacts.get_mut(&contact) else {
                    return;
                };
                if live.ended || live.agent.as_deref() != Some(agent.as_str()) {
                    return;
                }
                live.ended = true;
                let queue = live.queue.clone();
                let from = live.accepted_at.unwrap_or(now);
                let kind = EventKind::ContactEnded {
                    disposition: None,
                    summary: None,
                    agent: Some(agent.clone()),
                };
                if let Some((p, e)) = self.synthetic(&contact, kind, "contact.ended") {
                    self.apply_synthetic(p, e).await;
                }
                // Wrap-up: as recorded (anchored, or its recorded length), else
                // routing's own wrap-up timer.
                let facts = self.facts.contacts.get(&contact);
                let recorded_wrap = facts.and_then(|f| {
                    let (a, t, i) = f.wraps.iter().rev().find(|(a, _, _)| *a == agent)?;
                    Some((a.clone(), *t, *i, f.ended?.0))
                });
                let wrap_end = match recorded_wrap {
                    Some((_, t, i, end)) if end == now && rank < MODELLED => {
                        self.schedule(
                            t,
                            2 * i as u64 + 1,
                            Action::Wrap {
                                contact,
                                agent: agent.clone(),
                            },
                        );
                        t
                    }
                    Some((_, t, _, end)) => {
                        let at = now + (t - end).max(0);
                        self.schedule(
                            at,
                            MODELLED,
                            Action::Wrap {
                                contact,
                                agent: agent.clone(),
                            },
                        );
                        at
                    }
                    None => {
                        let at = now + i64::from(self.cfg.wrap_up_secs) * 1000;
                        self.schedule(at, MODELLED, Action::Wake(None));
                        at
                    }
                };
                self.stats.busy(&queue, &agent, from, wrap_end);
            }
            Action::Wrap { contact, agent } => {
                let _ = self.routing.contact_wrapped(&agent, &contact).await;
                self.drain(MODELLED);
            }
            Action::Abandon { contact, entry } => {
                let Some(live) = self.contacts.get(&contact) else {
                    return;
                };
                if live.ended || live.agent.is_some() || live.entry != entry {
                    return;
                }
                let queue = live.queue.clone();
                if let Some(c) = self.contacts.get_mut(&contact) {
                    c.ended = true;
                    if c.waiting_since.take().is_some() {
                        self.waiting -= 1;
                    }
                }
                self.stats.abandoned(&queue, entry, now - entry);
                if let Some((p, e)) =
                    self.synthetic(&contact, EventKind::ContactAbandoned, "contact.abandoned")
                {
                    self.apply_synthetic(p, e).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{anchored_event, MODELLED};

    #[test]
    fn an_anchored_rank_names_its_recorded_event_and_a_modelled_one_none() {
        assert_eq!(anchored_event(2 * 7 + 1), Some(7));
        assert_eq!(anchored_event(1), Some(0));
        assert_eq!(anchored_event(MODELLED), None);
        assert_eq!(anchored_event(MODELLED + 5), None);
    }
}
