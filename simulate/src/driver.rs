//! The run loop: a clock that runs `compression` times faster than the wall,
//! Poisson arrivals per site, the patients' and agents' behaviour as scheduled
//! actions, and the agents' desktops answering the offers the runtime makes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

use super::amqp::{self, Link, SeenCommand};
use super::args::SimulateOptions;
use super::arrivals::{Arrival, ArrivalStream};
use super::rng::Rng;
use super::scenario::{
    roster, AgentSpec, Events, Patient, ASKS_FOR_PERSON, CHANNELS, RED_FLAG_SHARE, SITES, SKILLS,
};
use super::summary::Summary;

/// Where a contact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// With the virtual agent (channel `iva`).
    Bot,
    /// Waiting for a human.
    Waiting,
    /// Offered to an agent who has not answered yet.
    Offered,
    /// With an agent.
    Handling,
    /// Finished (ended, abandoned).
    Done,
}

/// A contact the simulator started.
#[derive(Debug, Clone)]
struct Contact {
    /// Contact id (the channel's call or conversation id).
    id: String,
    /// Index into [`SITES`].
    site: usize,
    /// Index into [`SKILLS`].
    skill: usize,
    /// Channel name.
    channel: &'static str,
    /// The patient.
    patient: Patient,
    /// Mean patience of this channel, simulated seconds.
    patience_mean: f64,
    /// Where it is.
    stage: Stage,
    /// When it (last) started waiting for a human, on the wall clock.
    queued_at: Option<Instant>,
    /// Bumped each time it is (re)queued, so stale patience timers are ignored.
    queue_generation: u32,
    /// The agent handling it.
    agent: Option<String>,
    /// Transfers so far.
    transfers: u32,
    /// Virtual-agent turns so far.
    bot_turns: u32,
    /// When its patience ends while it waits (simulated seconds).
    patience_at: f64,
    /// Acceptances so far: a scheduled finish belongs to one of them.
    accepts: u32,
    /// The real wait counted when it was last answered (taken back if the
    /// runtime refuses the acceptance).
    answered_wait: Option<f64>,
}

/// Something scheduled on the simulated clock.
#[derive(Debug, Clone)]
enum Action {
    /// The patient's next exchange with the virtual agent.
    BotTurn(usize),
    /// The patient's patience ends (if still waiting on this queue generation).
    PatienceOut(usize, u32),
    /// A desktop answers an offer.
    Respond {
        contact: usize,
        agent: String,
        accept: bool,
    },
    /// The agent finishes the contact (of that acceptance).
    Finish(usize, u32),
    /// The agent finishes wrap-up.
    Wrap {
        site: usize,
        agent: String,
        contact_id: String,
    },
    /// The pharmacy says a prescription is ready.
    PrescriptionReady {
        site: usize,
        patient: Patient,
        prescription_id: String,
    },
    /// A patient who gave up calls again.
    CallBack { site: usize, patient: Patient },
    /// An agent back from a break.
    BackFromBreak(usize),
    /// An agent signs in (late starters: the small clinic after its huddle).
    SignIn(usize),
}

/// An agent on the floor.
#[derive(Debug, Clone)]
struct Agent {
    /// Who.
    spec: AgentSpec,
    /// Signed in (late starters are not, until their start time).
    signed_in: bool,
    /// On a break.
    away: bool,
    /// Contacts in hand (to decide when a break is possible).
    active: usize,
}

/// A batch of events that must be sent in order (one contact's or agent's).
type Group = Vec<Value>;

/// How long an `--amqp` run waits at the end for the runtime to settle what the
/// broker confirmed, before it reads the runtime's totals.
const SETTLE_WAIT: Duration = Duration::from_secs(15);

/// The simulation state.
struct Sim {
    /// Options.
    opts: SimulateOptions,
    /// Random source.
    rng: Rng,
    /// HTTP client.
    client: reqwest::Client,
    /// The broker link of an `--amqp` run (events out, commands in); `None`: HTTP.
    link: Option<Link>,
    /// Command ids seen (a relay may deliver one twice).
    commands_seen: HashSet<String>,
    /// Every contact started (indexes are stable).
    contacts: Vec<Contact>,
    /// Contact id → index.
    by_id: HashMap<String, usize>,
    /// Agents.
    agents: Vec<Agent>,
    /// Agent id → index.
    agent_index: HashMap<String, usize>,
    /// Offers already answered or being answered, by (agent, contact).
    offers_handled: HashSet<(String, String)>,
    /// New contacts, drawn from the seed alone.
    arrivals: ArrivalStream,
    /// Scheduled actions: (due simulated ms, sequence).
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    /// Action by sequence.
    actions: HashMap<u64, Action>,
    /// Next sequence.
    seq: u64,
    /// Events to send this tick.
    outbox: Vec<Group>,
    /// The counters.
    summary: Summary,
    /// The simulated time of the current tick, seconds.
    now_sim: f64,
}

/// Runs a simulation against a running runtime and returns its summary.
pub async fn run(opts: SimulateOptions) -> anyhow::Result<Summary> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &opts.token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!(
            "Bearer {}",
            secrecy::ExposeSecret::expose_secret(token)
        ))
        .context("The token is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(opts.concurrency)
        .build()
        .context("Failed to build the HTTP client")?;
    client
        .get(format!("{}/healthz", opts.target))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("Failed to reach the runtime at {}", opts.target))?;
    let link = match &opts.amqp {
        Some(a) => Some(Link::connect(a).await?),
        None => None,
    };
    let mut sim = Sim::new(opts, client, link);
    sim.run().await?;
    if let Some(link) = sim.link.take() {
        sim.summary.commands_unreadable = link.unreadable();
        link.close().await;
    }
    Ok(sim.summary)
}

impl Sim {
    /// A simulation not started yet: the seed's agents, nobody signed in.
    fn new(opts: SimulateOptions, client: reqwest::Client, link: Option<Link>) -> Sim {
        let mut rng = Rng::new(opts.seed);
        let mut agents = Vec::new();
        for site in SITES.iter() {
            for spec in roster(site, &mut rng) {
                agents.push(Agent {
                    spec,
                    signed_in: false,
                    away: false,
                    active: 0,
                });
            }
        }
        let agent_index = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.spec.id.clone(), i))
            .collect();
        let arrivals = ArrivalStream::new(
            opts.seed,
            opts.start_hour,
            opts.weekday,
            opts.volume_scale,
            opts.surge,
        );
        Sim {
            summary: Summary {
                sl_target_secs: opts.sl_target_secs,
                over_amqp: link.is_some(),
                ..Summary::default()
            },
            opts,
            rng,
            client,
            link,
            commands_seen: HashSet::new(),
            contacts: Vec::new(),
            by_id: HashMap::new(),
            agents,
            agent_index,
            offers_handled: HashSet::new(),
            arrivals,
            queue: BinaryHeap::new(),
            actions: HashMap::new(),
            seq: 0,
            outbox: Vec::new(),
            now_sim: 0.0,
        }
    }

    fn schedule(&mut self, at_sim_secs: f64, action: Action) {
        self.seq += 1;
        let due = (at_sim_secs.max(0.0) * 1000.0) as u64;
        self.queue.push(Reverse((due, self.seq)));
        self.actions.insert(self.seq, action);
    }

    fn events(&mut self) -> Events<'_> {
        Events { rng: &mut self.rng }
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let compression = self.opts.compression();
        let day_secs = (self.opts.end_hour - self.opts.start_hour) * 3600.0;
        tracing::info!(
            target_url = %self.opts.target,
            seed = self.opts.seed,
            compression,
            surge = self.opts.surge,
            over_amqp = self.link.is_some(),
            "simulation starting"
        );
        // The floor opens: everyone signs in, late starters at their time.
        for i in 0..self.agents.len() {
            let site = SITES.iter().find(|s| s.id == self.agents[i].spec.site);
            let after = site.map_or(0.0, |s| s.signs_in_after_mins);
            if after > 0.0 {
                self.schedule(after * 60.0, Action::SignIn(i));
            } else {
                self.sign_in(i);
            }
        }
        self.flush().await;

        let start = Instant::now();
        let mut last_sim = 0.0f64;
        let mut last_progress = Instant::now();
        let mut tick = tokio::time::interval(self.opts.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let elapsed = start.elapsed();
            let now_sim = (elapsed.as_secs_f64() * compression).min(day_secs);
            let dt = now_sim - last_sim;
            last_sim = now_sim;
            self.now_sim = now_sim;
            let stop = now_sim >= day_secs
                || elapsed >= self.opts.max_duration
                || self.summary.contacts_started >= self.opts.max_contacts;
            if !stop {
                self.arrivals(now_sim);
                self.breaks(now_sim, dt);
            }
            self.due_actions(now_sim);
            self.poll_offers(now_sim).await;
            self.flush().await;
            if last_progress.elapsed() >= self.opts.progress_every {
                last_progress = Instant::now();
                self.progress(now_sim);
            }
            if stop {
                break;
            }
        }
        self.close().await;
        self.summary.elapsed_secs = start.elapsed().as_secs_f64();
        self.summary.simulated_hours = last_sim / 3600.0;
        // Over AMQP a confirm means the broker has the event, not that the runtime
        // took it: wait (a bounded while) until its consumer has settled as many.
        let settle_until = Instant::now() + SETTLE_WAIT;
        loop {
            let Some(text) = self.runtime_metrics().await else {
                break;
            };
            let mut now = Summary::default();
            now.read_runtime_metrics(&text);
            let settled: f64 = now.broker_deliveries.values().sum();
            let done = !self.summary.over_amqp
                || settled >= self.summary.confirmed as f64
                || Instant::now() >= settle_until;
            if done {
                self.summary.read_runtime_metrics(&text);
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }

    /// The runtime's `/metrics` text, if it answers.
    async fn runtime_metrics(&self) -> Option<String> {
        let r = self
            .client
            .get(format!("{}/metrics", self.opts.target))
            .send()
            .await
            .ok()?;
        r.text().await.ok()
    }

    fn progress(&self, now_sim: f64) {
        let hour = self.opts.start_hour + now_sim / 3600.0;
        let count = |s: Stage| self.contacts.iter().filter(|c| c.stage == s).count();
        tracing::info!(
            sim_time = %format!("{:02}:{:02}", hour as u32, ((hour.fract()) * 60.0) as u32),
            contacts = self.summary.contacts_started,
            with_bot = count(Stage::Bot),
            waiting = count(Stage::Waiting) + count(Stage::Offered),
            handling = count(Stage::Handling),
            answered = self.summary.answered,
            abandoned = self.summary.abandoned,
            events = self.summary.events_sent(),
            errors = self.summary.errors(),
            "simulating"
        );
    }

    /// New contacts up to `now_sim`, from the seeded arrival stream.
    fn arrivals(&mut self, now_sim: f64) {
        for a in self.arrivals.until(now_sim) {
            if self.summary.contacts_started >= self.opts.max_contacts {
                return;
            }
            self.start_contact(a, now_sim);
        }
    }

    /// A patient who gave up tries again (not part of the seeded stream: it
    /// depends on what the runtime did).
    fn call_back(&mut self, site: usize, patient: Patient, now_sim: f64) {
        let weights: Vec<f64> = SKILLS
            .iter()
            .map(|s| {
                if self.opts.surge {
                    s.surge_share
                } else {
                    s.share
                }
            })
            .collect();
        let skill = self.rng.weighted(&weights);
        let channel = self
            .rng
            .weighted(&CHANNELS.iter().map(|c| c.1).collect::<Vec<_>>());
        let contact_id = format!("sim-{}", self.rng.uuid().simple());
        self.start_contact(
            Arrival {
                at_sim: now_sim,
                site,
                skill,
                channel,
                patient,
                repeat: true,
                contact_id,
            },
            now_sim,
        );
    }

    fn start_contact(&mut self, a: Arrival, now_sim: f64) {
        let Arrival {
            site,
            skill,
            channel: ch,
            patient,
            repeat,
            contact_id: id,
            ..
        } = a;
        let (channel, _, patience_mean) = CHANNELS[ch];
        let spec = SKILLS[skill];
        let started = self.events().contact(
            "contact.started",
            SITES[site].id,
            channel,
            &patient,
            &id,
            json!({"intent": spec.intent, "skill": spec.skill}),
        );
        self.outbox.push(vec![started]);
        let idx = self.contacts.len();
        let stage = if channel == "iva" {
            Stage::Bot
        } else {
            Stage::Waiting
        };
        self.contacts.push(Contact {
            id: id.clone(),
            site,
            skill,
            channel,
            patient: patient.clone(),
            patience_mean,
            stage,
            queued_at: None,
            queue_generation: 0,
            agent: None,
            transfers: 0,
            bot_turns: 0,
            patience_at: f64::INFINITY,
            accepts: 0,
            answered_wait: None,
        });
        self.by_id.insert(id, idx);
        self.summary.contacts_started += 1;
        if repeat {
            self.summary.repeat_contacts += 1;
        }
        if stage == Stage::Bot {
            self.summary.bot_contacts += 1;
            let at = now_sim + self.rng.range(20.0, 60.0);
            self.schedule(at, Action::BotTurn(idx));
        } else {
            self.enqueue(idx, now_sim);
        }
    }

    /// The contact now waits for a human: its patience starts.
    fn enqueue(&mut self, idx: usize, now_sim: f64) {
        self.summary.queued += 1;
        let c = &mut self.contacts[idx];
        c.stage = Stage::Waiting;
        c.queued_at = Some(Instant::now());
        c.queue_generation += 1;
        let generation = c.queue_generation;
        let mean = c.patience_mean;
        let patience = self.rng.exponential(mean).max(5.0);
        self.contacts[idx].patience_at = now_sim + patience;
        self.schedule(now_sim + patience, Action::PatienceOut(idx, generation));
    }

    fn sign_in(&mut self, i: usize) {
        self.agents[i].signed_in = true;
        let spec = self.agents[i].spec.clone();
        let e = self.events().agent_state(&spec, "available");
        self.outbox.push(vec![e]);
    }

    /// Agents with nothing in hand take short breaks now and then.
    fn breaks(&mut self, now_sim: f64, dt: f64) {
        for i in 0..self.agents.len() {
            let a = &self.agents[i];
            if !a.signed_in || a.away || a.active > 0 {
                continue;
            }
            // About one break per agent every three hours.
            if self.rng.chance(dt / (3.0 * 3600.0)) {
                self.agents[i].away = true;
                let spec = self.agents[i].spec.clone();
                let e = self.events().agent_state(&spec, "away");
                self.outbox.push(vec![e]);
                let back = now_sim + self.rng.range(600.0, 1200.0);
                self.schedule(back, Action::BackFromBreak(i));
            }
        }
    }

    fn due_actions(&mut self, now_sim: f64) {
        let now_ms = (now_sim * 1000.0) as u64;
        while let Some(Reverse((due, seq))) = self.queue.peek().copied() {
            if due > now_ms {
                break;
            }
            self.queue.pop();
            if let Some(action) = self.actions.remove(&seq) {
                self.act(action, now_sim);
            }
        }
    }

    fn act(&mut self, action: Action, now_sim: f64) {
        match action {
            Action::BotTurn(idx) => self.bot_turn(idx, now_sim),
            Action::PatienceOut(idx, generation) => {
                let c = &self.contacts[idx];
                if c.queue_generation == generation
                    && matches!(c.stage, Stage::Waiting | Stage::Offered)
                {
                    self.contacts[idx].stage = Stage::Done;
                    let c = self.contacts[idx].clone();
                    let e = self.events().contact(
                        "contact.abandoned",
                        SITES[c.site].id,
                        c.channel,
                        &c.patient,
                        &c.id,
                        json!({}),
                    );
                    self.outbox.push(vec![e]);
                    self.summary.abandoned += 1;
                    // Many who give up try again later.
                    if self.rng.chance(0.4) {
                        let at = now_sim + self.rng.range(300.0, 1800.0);
                        self.schedule(
                            at,
                            Action::CallBack {
                                site: c.site,
                                patient: c.patient,
                            },
                        );
                    }
                }
            }
            Action::Respond {
                contact,
                agent,
                accept,
            } => self.respond(contact, agent, accept, now_sim),
            Action::Finish(idx, accept) => {
                if self.contacts[idx].accepts == accept {
                    self.finish(idx, now_sim);
                }
            }
            Action::Wrap {
                site,
                agent,
                contact_id,
            } => {
                let e =
                    self.events()
                        .desktop("contact.wrapped", SITES[site].id, &agent, &contact_id);
                self.outbox.push(vec![e]);
                if let Some(&i) = self.agent_index.get(&agent) {
                    self.agents[i].active = self.agents[i].active.saturating_sub(1);
                }
            }
            Action::PrescriptionReady {
                site,
                patient,
                prescription_id,
            } => {
                let mut e = self.events().envelope(
                    "prescription.ready",
                    SITES[site].id,
                    "pharmacy",
                    json!({"prescription_id": prescription_id, "medication": "amoxicillin 500 mg", "pharmacy": "Main St Pharmacy"}),
                );
                e["patient"] = json!({"mrn": patient.mrn});
                self.outbox.push(vec![e]);
                self.summary.follow_ups += 1;
            }
            Action::CallBack { site, patient } => {
                if self.summary.contacts_started < self.opts.max_contacts {
                    self.call_back(site, patient, now_sim);
                }
            }
            Action::SignIn(i) => self.sign_in(i),
            Action::BackFromBreak(i) => {
                self.agents[i].away = false;
                let spec = self.agents[i].spec.clone();
                let e = self.events().agent_state(&spec, "available");
                self.outbox.push(vec![e]);
            }
        }
    }

    /// One exchange with the virtual agent. Routine intents (the next appointment, a
    /// refill's status) are mostly contained; billing is handed over at once (the bot
    /// marks the turn `hand_off`); symptoms get no answer and hand over after two
    /// failures; a few patients ask for a person, and a rare symptom contact opens
    /// with a red flag. The runtime decides the hand-offs; the simulator follows.
    fn bot_turn(&mut self, idx: usize, now_sim: f64) {
        let c = self.contacts[idx].clone();
        if c.stage != Stage::Bot {
            return;
        }
        let turn = c.bot_turns + 1;
        self.contacts[idx].bot_turns = turn;
        let spec = SKILLS[c.skill];
        let site = SITES[c.site].id;
        let asks_person = self.rng.chance(ASKS_FOR_PERSON);
        let red_flag = turn == 1 && spec.bot_intent.is_none() && self.rng.chance(RED_FLAG_SHARE);
        let p = if turn == 1 { spec.bot_first_turn } else { 0.3 };
        let resolved = !spec.bot_hands_over && !asks_person && !red_flag && self.rng.chance(p);
        let patient_text = if red_flag {
            "I have chest pain and feel dizzy"
        } else if asks_person {
            "can I talk to someone please"
        } else {
            "simulated patient question"
        };
        let turn_event = self.events().contact(
            "bot.turn",
            site,
            "iva",
            &c.patient,
            &c.id,
            json!({
                "resolved": resolved,
                "intent": spec.bot_intent.unwrap_or(spec.intent),
                "patient_text": patient_text,
                "bot_text": if resolved { "Here is what you need." } else { "Sorry, I did not get that." },
                "hand_off": spec.bot_hands_over,
            }),
        );
        if resolved {
            let ended = self.events().contact(
                "contact.ended",
                site,
                "iva",
                &c.patient,
                &c.id,
                json!({"disposition": "self_service", "summary": "resolved by the virtual agent"}),
            );
            self.outbox.push(vec![turn_event, ended]);
            self.contacts[idx].stage = Stage::Done;
            self.summary.bot_contained += 1;
        } else if turn >= 2 || spec.bot_hands_over || asks_person || red_flag {
            // The runtime hands the contact to a human (bot.release).
            self.outbox.push(vec![turn_event]);
            self.summary.bot_handed_off += 1;
            if red_flag {
                self.summary.red_flags += 1;
            }
            self.enqueue(idx, now_sim);
        } else {
            self.outbox.push(vec![turn_event]);
            let at = now_sim + self.rng.range(20.0, 60.0);
            self.schedule(at, Action::BotTurn(idx));
        }
    }

    /// The offers made to the simulated agents: over HTTP the desktops poll
    /// `GET /v1/agents`; over AMQP they read the `contact.offer` commands (every
    /// command received is counted by type).
    async fn poll_offers(&mut self, now_sim: f64) {
        if self.link.is_some() {
            self.take_commands(now_sim);
            return;
        }
        let url = format!("{}/v1/agents", self.opts.target);
        let body: Value = match self.client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
            _ => return,
        };
        for (agent, contact_id) in find_offers(&body) {
            self.offer_seen(agent, contact_id, now_sim);
        }
    }

    /// Counts the commands the runtime relayed since the last tick (duplicates
    /// by `message_id` apart) and answers the offers among them.
    fn take_commands(&mut self, now_sim: f64) {
        let commands = match self.link.as_mut() {
            Some(link) => link.take_commands(),
            None => return,
        };
        for SeenCommand {
            id,
            kind,
            agent_id,
            contact_id,
        } in commands
        {
            if !self.commands_seen.insert(id) {
                self.summary.commands_duplicate += 1;
                continue;
            }
            if let ("contact.offer", Some(agent), Some(contact)) =
                (kind.as_str(), agent_id, contact_id)
            {
                self.offer_seen(agent, contact, now_sim);
            }
            *self.summary.commands_by_type.entry(kind).or_default() += 1;
        }
    }

    /// A desktop sees an offer: it answers a few seconds later (once per offer).
    fn offer_seen(&mut self, agent: String, contact_id: String, now_sim: f64) {
        let Some(&idx) = self.by_id.get(&contact_id) else {
            return;
        };
        if !self.agent_index.contains_key(&agent)
            || !self.offers_handled.insert((agent.clone(), contact_id))
        {
            return;
        }
        if self.contacts[idx].stage != Stage::Waiting {
            return;
        }
        self.contacts[idx].stage = Stage::Offered;
        self.summary.offers_seen += 1;
        let accept = self.rng.chance(0.94);
        let at = now_sim + self.rng.range(2.0, 8.0);
        self.schedule(
            at,
            Action::Respond {
                contact: idx,
                agent,
                accept,
            },
        );
    }

    /// The runtime refused an acceptance because the offer had ended before it
    /// arrived (it timed out under back-pressure, or the contact went elsewhere):
    /// the desktop shows the offer withdrawn, the agent is free again, and the
    /// patient, not answered after all, waits on with the patience left (leaving
    /// at once if it ran out meanwhile). The answer is taken back from the counts.
    fn acceptance_refused(&mut self, contact_id: &str, agent: &str) {
        let Some(&idx) = self.by_id.get(contact_id) else {
            return;
        };
        let c = &self.contacts[idx];
        if c.stage != Stage::Handling || c.agent.as_deref() != Some(agent) {
            return;
        }
        self.summary.answered -= 1;
        self.summary.answers_refused += 1;
        if let Some(wait) = c.answered_wait {
            self.summary.wait_secs_sum -= wait;
            if wait <= self.opts.sl_target_secs {
                self.summary.answered_within_target -= 1;
            }
        }
        if let Some(&i) = self.agent_index.get(agent) {
            self.agents[i].active = self.agents[i].active.saturating_sub(1);
        }
        // A new offer of this contact to the same agent is answered again.
        self.offers_handled
            .remove(&(agent.to_string(), contact_id.to_string()));
        let c = &mut self.contacts[idx];
        c.stage = Stage::Waiting;
        c.agent = None;
        c.answered_wait = None;
        // The scheduled finish of that acceptance no longer applies.
        c.accepts += 1;
        let (at, generation) = (c.patience_at.max(self.now_sim), c.queue_generation);
        self.schedule(at, Action::PatienceOut(idx, generation));
    }

    fn respond(&mut self, idx: usize, agent: String, accept: bool, now_sim: f64) {
        let c = self.contacts[idx].clone();
        if c.stage != Stage::Offered {
            return;
        }
        let site = SITES[c.site].id;
        if !accept {
            let e = self.events().desktop("offer.declined", site, &agent, &c.id);
            self.outbox.push(vec![e]);
            self.summary.offers_declined += 1;
            self.contacts[idx].stage = Stage::Waiting;
            return;
        }
        let mut group = vec![self.events().desktop("offer.accepted", site, &agent, &c.id)];
        self.summary.answered += 1;
        let answered_wait = c.queued_at.map(|q| q.elapsed().as_secs_f64());
        if let Some(wait) = answered_wait {
            self.summary.wait_secs_sum += wait;
            if wait <= self.opts.sl_target_secs {
                self.summary.answered_within_target += 1;
            }
        }
        if matches!(c.channel, "chat" | "sms") && self.rng.chance(0.5) {
            group.push(self.events().contact(
                "contact.message",
                site,
                c.channel,
                &c.patient,
                &c.id,
                json!({"from": "patient", "text": "Hi, I have a question."}),
            ));
            group.push(self.events().contact(
                "contact.message",
                site,
                c.channel,
                &c.patient,
                &c.id,
                json!({"from": "staff", "text": "Happy to help."}),
            ));
        }
        self.outbox.push(group);
        if let Some(&i) = self.agent_index.get(&agent) {
            self.agents[i].active += 1;
        }
        let c = &mut self.contacts[idx];
        c.stage = Stage::Handling;
        c.agent = Some(agent);
        c.accepts += 1;
        c.answered_wait = answered_wait;
        let accept_no = c.accepts;
        let factor = match c.channel {
            "chat" | "sms" => 1.6,
            "email" => 2.0,
            _ => 1.0,
        };
        let mean = SKILLS[c.skill].aht_secs * factor;
        let handle = mean * 0.3 + self.rng.exponential(mean * 0.7);
        self.schedule(now_sim + handle, Action::Finish(idx, accept_no));
    }

    fn finish(&mut self, idx: usize, now_sim: f64) {
        let c = self.contacts[idx].clone();
        if c.stage != Stage::Handling {
            return;
        }
        let Some(agent) = c.agent.clone() else {
            return;
        };
        let site = SITES[c.site].id;
        let wrap_at = now_sim + self.rng.range(20.0, 60.0);
        self.schedule(
            wrap_at,
            Action::Wrap {
                site: c.site,
                agent: agent.clone(),
                contact_id: c.id.clone(),
            },
        );
        // A few contacts need another department.
        if c.transfers < 2 && self.rng.chance(0.06) {
            let to = (c.skill + 1 + self.rng.below(SKILLS.len() - 1)) % SKILLS.len();
            let e = self.events().contact(
                "contact.transferred",
                site,
                c.channel,
                &c.patient,
                &c.id,
                json!({"to": SKILLS[to].skill, "from_agent": agent}),
            );
            self.outbox.push(vec![e]);
            self.summary.transfers += 1;
            let cm = &mut self.contacts[idx];
            cm.transfers += 1;
            cm.skill = to;
            cm.agent = None;
            self.enqueue(idx, now_sim);
            return;
        }
        let spec = SKILLS[c.skill];
        let mut group = vec![self.events().contact(
            "contact.ended",
            site,
            c.channel,
            &c.patient,
            &c.id,
            json!({"disposition": "resolved", "summary": format!("{} handled", spec.skill), "agent": agent}),
        )];
        match spec.skill {
            "scheduling" if self.rng.chance(0.6) => {
                let appt = format!("sim-appt-{}", self.rng.uuid().simple());
                let starts = chrono::Utc::now()
                    + chrono::Duration::hours(12 + self.rng.below(24 * 14) as i64);
                let mut e = self.events().envelope(
                    "appointment.booked",
                    site,
                    c.channel,
                    json!({"appointment_id": appt, "starts_at": starts.to_rfc3339(), "department": "primary care", "reason": "follow-up visit"}),
                );
                e["patient"] = json!({"mrn": c.patient.mrn});
                group.push(e);
                self.summary.follow_ups += 1;
            }
            "pharmacy" if self.rng.chance(0.6) => {
                let rx = format!("sim-rx-{}", self.rng.uuid().simple());
                let mut e = self.events().envelope(
                    "prescription.routed",
                    site,
                    "pharmacy",
                    json!({"prescription_id": rx, "medication": "amoxicillin 500 mg", "pharmacy": "Main St Pharmacy"}),
                );
                e["patient"] = json!({"mrn": c.patient.mrn});
                group.push(e);
                self.summary.follow_ups += 1;
                let at = now_sim + self.rng.range(1200.0, 3600.0);
                self.schedule(
                    at,
                    Action::PrescriptionReady {
                        site: c.site,
                        patient: c.patient.clone(),
                        prescription_id: rx,
                    },
                );
            }
            "nurse_advice" if self.rng.chance(0.5) => {
                let mut e = self.events().envelope(
                    "note.recorded",
                    site,
                    "ehr",
                    json!({"author": agent, "role": "nurse", "text": "Advice given; call back if symptoms worsen."}),
                );
                e["patient"] = json!({"mrn": c.patient.mrn});
                group.push(e);
                self.summary.follow_ups += 1;
            }
            _ => {}
        }
        self.outbox.push(group);
        self.summary.served += 1;
        self.contacts[idx].stage = Stage::Done;
    }

    /// The floor closes: a short grace for waiting contacts, then whoever is
    /// still waiting leaves, handled contacts end, agents sign out.
    async fn close(&mut self) {
        let grace = Instant::now();
        while grace.elapsed() < Duration::from_secs(2)
            && self
                .contacts
                .iter()
                .any(|c| matches!(c.stage, Stage::Waiting | Stage::Offered))
        {
            tokio::time::sleep(self.opts.poll_interval).await;
            self.poll_offers(f64::MAX / 4.0).await;
            // Offers seen now are answered immediately.
            let pending: Vec<(u64, u64)> = self.queue.iter().map(|r| r.0).collect();
            for (_, seq) in pending {
                if let Some(Action::Respond { .. }) = self.actions.get(&seq) {
                    if let Some(a) = self.actions.remove(&seq) {
                        self.act(a, 0.0);
                    }
                }
            }
            self.flush().await;
        }
        for idx in 0..self.contacts.len() {
            let c = self.contacts[idx].clone();
            let site = SITES[c.site].id;
            match c.stage {
                Stage::Waiting | Stage::Offered | Stage::Bot => {
                    let e = self.events().contact(
                        "contact.abandoned",
                        site,
                        c.channel,
                        &c.patient,
                        &c.id,
                        json!({}),
                    );
                    self.outbox.push(vec![e]);
                    if c.stage != Stage::Bot {
                        self.summary.left_at_close += 1;
                    }
                }
                Stage::Handling => {
                    let agent = c.agent.clone().unwrap_or_default();
                    let ended = self.events().contact(
                        "contact.ended",
                        site,
                        c.channel,
                        &c.patient,
                        &c.id,
                        json!({"disposition": "resolved", "agent": agent}),
                    );
                    let wrapped = self
                        .events()
                        .desktop("contact.wrapped", site, &agent, &c.id);
                    self.outbox.push(vec![ended, wrapped]);
                    self.summary.served += 1;
                }
                Stage::Done => {}
            }
            self.contacts[idx].stage = Stage::Done;
        }
        self.flush().await;
        for i in 0..self.agents.len() {
            if !self.agents[i].signed_in {
                continue;
            }
            let spec = self.agents[i].spec.clone();
            let e = self.events().agent_state(&spec, "offline");
            self.outbox.push(vec![e]);
        }
        self.flush().await;
    }

    /// Sends this tick's events: groups concurrently, each group in order.
    async fn flush(&mut self) {
        let groups = std::mem::take(&mut self.outbox);
        if groups.is_empty() {
            return;
        }
        if self.link.is_some() {
            self.publish(groups).await;
            return;
        }
        let client = &self.client;
        let url = format!("{}/v1/events", self.opts.target);
        let max_retries = self.opts.max_retries;
        let results: Vec<Vec<(Value, String, u32)>> = stream::iter(groups)
            .map(|group| {
                let url = url.clone();
                async move {
                    let mut out = Vec::with_capacity(group.len());
                    for e in group {
                        let (class, retries) = send_with_retry(client, &url, &e, max_retries).await;
                        out.push((e, class, retries));
                    }
                    out
                }
            })
            .buffer_unordered(self.opts.concurrency)
            .collect()
            .await;
        for (e, class, retries) in results.into_iter().flatten() {
            let t = e["type"].as_str().unwrap_or("?").to_string();
            self.summary.retries += u64::from(retries);
            if class == OFFER_ENDED_CLASS && t == "offer.accepted" {
                if let (Some(contact), Some(agent)) =
                    (e["contact_id"].as_str(), e["agent_id"].as_str())
                {
                    self.acceptance_refused(contact, agent);
                }
            }
            if !matches!(class.as_str(), "2xx" | OFFER_ENDED_CLASS)
                && self.summary.error_samples.len() < 10
            {
                let sample = format!("{t}: {class}");
                if !self.summary.error_samples.contains(&sample) {
                    self.summary.error_samples.push(sample);
                }
            }
            *self.summary.events_by_type.entry(t).or_default() += 1;
            *self.summary.responses.entry(class).or_default() += 1;
        }
    }
}

impl Sim {
    /// [`Sim::flush`] over AMQP: groups concurrently, each group in order, each
    /// event confirmed (or given up on) before the next of its group.
    async fn publish(&mut self, groups: Vec<Group>) {
        let Some(link) = self.link.as_ref() else {
            return;
        };
        let channel = link.channel();
        let exchange = link.events_exchange();
        let max_retries = self.opts.max_retries;
        let results: Vec<Vec<(String, amqp::Published)>> = stream::iter(groups)
            .map(|group| async move {
                let mut out = Vec::with_capacity(group.len());
                for e in group {
                    let t = e["type"].as_str().unwrap_or("?").to_string();
                    let p = amqp::publish_with_retry(channel, exchange, &e, max_retries).await;
                    out.push((t, p));
                }
                out
            })
            .buffer_unordered(self.opts.concurrency)
            .collect()
            .await;
        for (t, p) in results.into_iter().flatten() {
            let class = p.outcome.class();
            self.summary.published += u64::from(p.attempts);
            self.summary.nacked += u64::from(p.nacked);
            self.summary.returned += u64::from(p.returned);
            self.summary.retries += u64::from(p.attempts.saturating_sub(1));
            if p.outcome == amqp::Outcome::Confirmed {
                self.summary.confirmed += 1;
            } else if self.summary.error_samples.len() < 10 {
                let sample = format!("{t}: {class}");
                if !self.summary.error_samples.contains(&sample) {
                    self.summary.error_samples.push(sample);
                }
            }
            *self.summary.events_by_type.entry(t).or_default() += 1;
            *self.summary.responses.entry(class.to_string()).or_default() += 1;
        }
    }
}

/// Finds `(agent_id, contact_id)` offers in a `GET /v1/agents` body: any object
/// with an `agent_id` (or `id`) whose offer list (a key containing `offer`)
/// holds contact ids or objects with a `contact_id`.
pub fn find_offers(body: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(body, &mut out);
    out
}

fn walk(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
        Value::Object(obj) => {
            let agent = obj
                .get("agent_id")
                .or_else(|| obj.get("id"))
                .and_then(Value::as_str);
            for (k, val) in obj {
                if let (Some(agent), true) = (agent, k.contains("offer")) {
                    if let Value::Array(offers) = val {
                        for o in offers {
                            let contact = o
                                .as_str()
                                .or_else(|| o.get("contact_id").and_then(Value::as_str));
                            if let Some(c) = contact {
                                out.push((agent.to_string(), c.to_string()));
                            }
                        }
                    }
                } else {
                    walk(val, out);
                }
            }
        }
        _ => {}
    }
}

/// The runtime's reasons (problem `detail`) for refusing an offer answer because
/// the offer is no longer open: it timed out and went elsewhere, or the contact
/// is gone (the patient left).
const OFFER_ENDED: [&str; 2] = [
    "the contact is not offered to that agent",
    "unknown contact",
];

/// The response class of an offer answer refused for one of [`OFFER_ENDED`].
pub const OFFER_ENDED_CLASS: &str = "offer_ended";

/// An `offer.accepted` or `offer.declined` event.
fn is_offer_answer(event: &Value) -> bool {
    matches!(
        event["type"].as_str(),
        Some("offer.accepted" | "offer.declined")
    )
}

/// The longest `Retry-After` honoured, seconds (a longer one is capped).
const MAX_RETRY_AFTER_SECS: u64 = 10;

/// Sends one event as an adapter must: a 429 (rate limited) or 503 (shed,
/// unavailable) is retried after its `Retry-After` (else 1 s, at most
/// [`MAX_RETRY_AFTER_SECS`]), up to `max_retries` times. Answers the outcome class
/// (`2xx`, `throttled` or `shed` when the retries ran out, `4xx`, `5xx`,
/// `transport`) and the retries made.
pub async fn send_with_retry(
    client: &reqwest::Client,
    url: &str,
    event: &Value,
    max_retries: u32,
) -> (String, u32) {
    let mut retries = 0;
    loop {
        let r = match client.post(url).json(event).send().await {
            Ok(r) => r,
            Err(_) => return ("transport".to_string(), retries),
        };
        let status = r.status().as_u16();
        if status == 422 && is_offer_answer(event) {
            // The offer ended (timed out, or the patient left) before this answer
            // arrived: what a desktop sees when its answer is late, not a fault.
            let body = r.text().await.unwrap_or_default();
            if OFFER_ENDED.iter().any(|why| body.contains(why)) {
                return (OFFER_ENDED_CLASS.to_string(), retries);
            }
            return (crate::summary::response_class(status), retries);
        }
        if status != 429 && status != 503 {
            return (crate::summary::response_class(status), retries);
        }
        if retries >= max_retries {
            let class = if status == 429 { "throttled" } else { "shed" };
            return (class.to_string(), retries);
        }
        let wait = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(1)
            .clamp(1, MAX_RETRY_AFTER_SECS);
        retries += 1;
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

#[cfg(test)]
mod tests {
    /// A peer answering the scripted statuses in turn (one connection each).
    async fn peer(script: Vec<(u16, Option<&'static str>)>) -> String {
        peer_with_bodies(script.into_iter().map(|(s, r)| (s, r, "")).collect()).await
    }

    /// [`peer`] answering a body with each status.
    async fn peer_with_bodies(script: Vec<(u16, Option<&'static str>, &'static str)>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for (status, retry_after, body) in script {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                loop {
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some(h) = text.find("\r\n\r\n") {
                        let len = text[..h]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= h + 4 + len {
                            break;
                        }
                    }
                }
                let extra = retry_after
                    .map(|r| format!("retry-after: {r}\r\n"))
                    .unwrap_or_default();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            }
        });
        format!("http://{addr}/v1/events")
    }

    #[tokio::test]
    async fn a_429_or_503_is_retried_after_retry_after_and_counted_apart_when_retries_run_out() {
        let client = reqwest::Client::new();
        let e = json!({"type": "contact.started"});
        let url = peer(vec![(429, Some("1")), (503, None), (202, None)]).await;
        let t = Instant::now();
        assert_eq!(
            send_with_retry(&client, &url, &e, 5).await,
            ("2xx".to_string(), 2)
        );
        assert!(
            t.elapsed() >= Duration::from_secs(2),
            "waited Retry-After (1 s) and the 1 s default"
        );
        let url = peer(vec![(429, Some("1")), (429, Some("1"))]).await;
        assert_eq!(
            send_with_retry(&client, &url, &e, 1).await,
            ("throttled".to_string(), 1)
        );
        let url = peer(vec![(503, Some("1"))]).await;
        assert_eq!(
            send_with_retry(&client, &url, &e, 0).await,
            ("shed".to_string(), 0)
        );
        let url = peer(vec![(400, None)]).await;
        assert_eq!(
            send_with_retry(&client, &url, &e, 3).await,
            ("4xx".to_string(), 0)
        );
    }

    #[tokio::test]
    async fn an_offer_answer_refused_because_the_offer_ended_is_told_apart_from_other_422s() {
        let client = reqwest::Client::new();
        let ended = r#"{"status":422,"detail":"the contact is not offered to that agent"}"#;
        let gone = r#"{"status":422,"detail":"unknown contact"}"#;
        let other = r#"{"status":422,"detail":"unknown agent"}"#;
        let accepted = json!({"type": "offer.accepted", "agent_id": "a", "contact_id": "c"});
        let declined = json!({"type": "offer.declined", "agent_id": "a", "contact_id": "c"});
        for (event, body, class) in [
            (&accepted, ended, OFFER_ENDED_CLASS),
            (&declined, gone, OFFER_ENDED_CLASS),
            (&accepted, other, "4xx"),
            (&json!({"type": "contact.started"}), ended, "4xx"),
        ] {
            let url = peer_with_bodies(vec![(422, None, body)]).await;
            assert_eq!(
                send_with_retry(&client, &url, event, 3).await,
                (class.to_string(), 0),
                "{event} answered {body}"
            );
        }
    }

    use super::*;

    /// A simulation with one voice contact waiting since simulated second 0.
    fn one_waiting_contact() -> (Sim, String) {
        let mut sim = Sim::new(SimulateOptions::default(), reqwest::Client::new(), None);
        let agent = sim.agents[0].spec.id.clone();
        sim.start_contact(
            Arrival {
                at_sim: 0.0,
                site: 0,
                skill: 0,
                channel: 0,
                patient: Patient::new(0, 1),
                repeat: false,
                contact_id: "sim-1".into(),
            },
            0.0,
        );
        assert_eq!(sim.contacts[0].stage, Stage::Waiting);
        (sim, agent)
    }

    #[test]
    fn an_acceptance_refused_as_too_late_is_taken_back_and_the_contact_waits_for_the_next_offer() {
        let (mut sim, agent) = one_waiting_contact();
        sim.offer_seen(agent.clone(), "sim-1".into(), 1.0);
        sim.respond(0, agent.clone(), true, 1.0);
        assert_eq!(sim.summary.answered, 1);
        assert_eq!(sim.agents[0].active, 1);
        assert_eq!(sim.contacts[0].stage, Stage::Handling);

        sim.now_sim = 2.0;
        sim.acceptance_refused("sim-1", &agent);
        assert_eq!(
            sim.summary.answered, 0,
            "the refused acceptance is not an answer"
        );
        assert_eq!(sim.summary.answered_within_target, 0);
        assert_eq!(sim.summary.wait_secs_sum, 0.0);
        assert_eq!(sim.summary.answers_refused, 1);
        assert_eq!(sim.agents[0].active, 0, "the agent is free again");
        assert_eq!(sim.contacts[0].stage, Stage::Waiting);

        // The same agent is offered it again: the desktop answers this offer too.
        sim.offer_seen(agent.clone(), "sim-1".into(), 3.0);
        assert_eq!(sim.summary.offers_seen, 2);
        sim.respond(0, agent.clone(), true, 3.0);
        assert_eq!(sim.summary.answered, 1);
        // The refused acceptance's finish is stale; the new one's ends the contact.
        sim.act(Action::Finish(0, 1), 4.0);
        assert_eq!(sim.contacts[0].stage, Stage::Handling);
        let accepts = sim.contacts[0].accepts;
        sim.act(Action::Finish(0, accepts), 4.0);
        assert_ne!(sim.contacts[0].stage, Stage::Handling);
    }

    #[test]
    fn a_patient_whose_patience_ran_out_while_a_refused_acceptance_held_them_leaves_at_once() {
        let (mut sim, agent) = one_waiting_contact();
        let patience_at = sim.contacts[0].patience_at;
        sim.offer_seen(agent.clone(), "sim-1".into(), 1.0);
        sim.respond(0, agent.clone(), true, 1.0);
        // The patience timer runs out while the contact is (believed) answered.
        sim.due_actions(patience_at + 1.0);
        assert_eq!(sim.summary.abandoned, 0);
        sim.now_sim = patience_at + 2.0;
        sim.acceptance_refused("sim-1", &agent);
        sim.due_actions(patience_at + 2.0);
        assert_eq!(sim.summary.abandoned, 1, "the patient left");
        assert_eq!(sim.contacts[0].stage, Stage::Done);
    }

    #[test]
    fn offers_are_found_in_an_agents_listing() {
        let body = json!({"agents": [
            {"agent_id": "north-agent-01", "state": "available",
             "offers": [{"contact_id": "sim-1", "expires_at": "x"}], "assignments": [{"contact_id": "sim-0"}]},
            {"agent_id": "north-agent-02", "pending_offers": ["sim-2"]},
            {"agent_id": "north-agent-03", "offers": []}
        ]});
        assert_eq!(
            find_offers(&body),
            vec![
                ("north-agent-01".to_string(), "sim-1".to_string()),
                ("north-agent-02".to_string(), "sim-2".to_string())
            ]
        );
        assert!(find_offers(&Value::Null).is_empty());
    }
}
