//! From a journey event to a routing request: the patient actor decides, the
//! queue obeys.
//!
//! After the patient actor applies a contact event it calls [`route_request`] with
//! the updated journey. The frustration assessment reads the whole journey (all
//! channels), so a third contact in two days is urgent whichever channel it came
//! on, a bot that failed twice hands over with its transcript, and a patient bounced
//! between departments goes to the agent who last owned the issue.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::RoutingConfig;
use crate::command::{Command, CommandType};
use crate::event::{Author, Channel, Envelope, EventKind};
use crate::ids::{ContactId, PatientId, SiteId};
use crate::journey::{
    BotTurnView, ContactState as JourneyContactState, ContactView, Journey, PrescriptionStatus,
};
use crate::rules::frustration::{
    assess, bot_should_hand_off, Action, Assessment, ContactFact, FiredSignal, JourneyFacts, Level,
    Signal,
};
use crate::rules::handoff::{asks_for_person, HandoffReason};
use crate::rules::priority::base_priority;
use crate::rules::red_flags::{detect, RedFlag};

/// Why a contact is offered first to one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreferredBecause {
    /// Transferred repeatedly: the last owner knows the issue.
    RepeatedTransfers,
    /// A returning patient: the agent who last handled the same issue.
    ReturningPatient,
}

impl PreferredBecause {
    /// The explanation shown in the contact's reasons.
    pub fn explain(self) -> &'static str {
        match self {
            PreferredBecause::RepeatedTransfers => {
                "transferred repeatedly: the last owner knows the issue"
            }
            PreferredBecause::ReturningPatient => {
                "returning patient: the agent who last handled the same issue"
            }
        }
    }
}

/// A contact that needs a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeedsHuman {
    /// The contact.
    pub contact_id: ContactId,
    /// The patient.
    pub patient_id: PatientId,
    /// Site it came in at.
    pub site: SiteId,
    /// Channel whose capacity it takes.
    pub channel: Channel,
    /// Skill it needs.
    pub skill: String,
    /// Intent.
    pub intent: Option<String>,
    /// Base priority from the intent.
    pub base_priority: i64,
    /// The frustration assessment.
    pub assessment: Assessment,
    /// The agent to offer first (who last owned the issue), if any.
    pub preferred_agent: Option<String>,
    /// Why that agent is preferred.
    pub preferred_because: Option<PreferredBecause>,
    /// A virtual agent's transcript, when handed over from a bot.
    pub transcript: Vec<BotTurnView>,
    /// True when a bot hands the contact over.
    pub from_bot: bool,
    /// The event that caused the request (command ids derive from it).
    pub cause: Uuid,
    /// When the contact started waiting, if before now (recovery after a restart).
    pub waiting_since: Option<DateTime<Utc>>,
    /// Why a bot session went to a human (None: it was not one).
    #[serde(default)]
    pub handoff: Option<HandoffReason>,
    /// The red flag that raised the contact to the emergency level.
    #[serde(default)]
    pub red_flag: Option<RedFlag>,
    /// The channel the patient is on (a bot session: `iva`), where `bot.release`
    /// and wait announcements go; `channel` is the capacity a human uses.
    #[serde(default)]
    pub contact_channel: Option<Channel>,
}

impl NeedsHuman {
    /// A routine contact that needs a human: no intent, base priority 100, no
    /// signals or preferred agent, not from a bot, waiting from now, caused by a
    /// fresh id (set the other fields on the value as needed).
    pub fn routine(
        contact_id: ContactId,
        patient_id: PatientId,
        site: SiteId,
        channel: Channel,
        skill: impl Into<String>,
    ) -> NeedsHuman {
        NeedsHuman {
            contact_id,
            patient_id,
            site,
            channel,
            skill: skill.into(),
            intent: None,
            base_priority: 100,
            assessment: Assessment {
                score: 0,
                level: Level::Normal,
                signals: Vec::new(),
            },
            preferred_agent: None,
            preferred_because: None,
            transcript: Vec::new(),
            from_bot: false,
            cause: Uuid::new_v4(),
            waiting_since: None,
            handoff: None,
            red_flag: None,
            contact_channel: None,
        }
    }

    /// Raises the contact to the emergency level for `flag`: the red-flag signal
    /// with its boost, and the emergency skill (the router keeps a contact that is
    /// already with a human where it is).
    fn raise(&mut self, flag: RedFlag, cfg: &RoutingConfig) {
        self.assessment.signals.push(FiredSignal {
            signal: Signal::RedFlag,
            boost: cfg.red_flags.boost,
            action: Action::MarkUrgent,
            detail: flag.detail(),
        });
        self.assessment.score = self.assessment.score.saturating_add(cfg.red_flags.boost);
        self.assessment.level = Level::Emergency;
        self.skill = cfg.red_flags.skill.clone();
        if self.from_bot {
            self.handoff = Some(HandoffReason::RedFlag);
        }
        self.red_flag = Some(flag);
    }
}

/// What routing must do after a journey event (also the wire form routing
/// inputs take through the broker to the leader).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum RouteRequest {
    /// A virtual agent takes the contact; the skill and intent it was given are kept
    /// for the hand-off.
    SelfService {
        contact_id: ContactId,
        patient_id: PatientId,
        site: SiteId,
        channel: Channel,
        skill: String,
        intent: Option<String>,
    },
    /// Queue the contact for a human (also after a transfer to another skill).
    Queue(Box<NeedsHuman>),
    /// The patient left while waiting.
    Abandoned { contact_id: ContactId },
    /// The contact ended (`intent`: the journey's last, which a virtual agent may
    /// have refined; labels containment per intent).
    Ended {
        contact_id: ContactId,
        #[serde(default)]
        intent: Option<String>,
    },
}

fn is_self_service(event: &Envelope) -> bool {
    event.channel == Channel::Iva
        || event
            .field("self_service")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
}

/// The channel whose capacity a human handling this contact uses.
fn human_channel(channel: Channel) -> Channel {
    match channel {
        Channel::Iva | Channel::Portal => Channel::Chat,
        other => other,
    }
}

fn fact(c: &ContactView) -> ContactFact {
    ContactFact {
        id: c.id.to_string(),
        started_at: c.started_at,
        channel: c.channel.as_str().to_string(),
        transfers: u32::try_from(c.transfers.len()).unwrap_or(u32::MAX),
        abandoned: c.state == JourneyContactState::Abandoned,
        ended: c.state != JourneyContactState::Open,
        handled_by: c.last_agent.clone(),
        skill: c.skill.clone(),
    }
}

/// The facts the frustration rules read, for one contact of the journey.
pub fn journey_facts(
    journey: &Journey,
    contact: &ContactView,
    skill: &str,
    now: DateTime<Utc>,
) -> JourneyFacts {
    let mut current = fact(contact);
    current.skill = Some(skill.to_string());
    JourneyFacts {
        now,
        current,
        contacts: journey.contacts.values().map(fact).collect(),
        unresolved_bot_exchanges: contact.unresolved_bot_exchanges(),
        upcoming_appointments: journey
            .upcoming_appointments(now)
            .into_iter()
            .filter_map(|a| a.starts_at)
            .collect(),
        prescription_question_open: journey
            .prescriptions
            .values()
            .any(|p| p.status == PrescriptionStatus::Routed)
            && contact.intent.as_deref().is_some_and(|i| {
                i.contains("prescription") || i.contains("medication") || i == "refill"
            }),
        last_owner: None,
    }
}

/// The agent who last handled a same-skill contact within the window.
fn returning_to(
    journey: &Journey,
    contact: &ContactView,
    skill: &str,
    now: DateTime<Utc>,
    cfg: &RoutingConfig,
) -> Option<String> {
    let since = now - Duration::seconds(i64::from(cfg.returning_window_secs));
    journey
        .contacts
        .values()
        .filter(|c| c.id != contact.id && c.started_at >= since)
        .filter(|c| c.skill.as_deref() == Some(skill) || c.transfers.iter().any(|t| t.to == skill))
        .filter(|c| c.last_agent.is_some())
        .max_by_key(|c| c.closed_at.unwrap_or(c.started_at))
        .and_then(|c| c.last_agent.clone())
}

/// A virtual agent takes `contact`, with the skill and intent it came with.
fn self_service(journey: &Journey, contact: &ContactView, cfg: &RoutingConfig) -> RouteRequest {
    RouteRequest::SelfService {
        contact_id: contact.id.clone(),
        patient_id: journey.patient_id,
        site: contact.site.clone(),
        channel: contact.channel,
        skill: cfg.skill_for(contact.skill.as_deref(), contact.intent.as_deref()),
        intent: contact.intent.clone(),
    }
}

/// The request to queue `contact` for a human, with its frustration assessment and
/// the agent to offer first.
fn needs_human(
    journey: &Journey,
    contact: &ContactView,
    now: DateTime<Utc>,
    cfg: &RoutingConfig,
    from_bot: bool,
    cause: Uuid,
    waiting_since: Option<DateTime<Utc>>,
) -> NeedsHuman {
    let skill = cfg.skill_for(contact.skill.as_deref(), contact.intent.as_deref());
    let facts = journey_facts(journey, contact, &skill, now);
    let assessment = assess(&facts, &cfg.frustration);
    let (preferred_agent, preferred_because) = match assessment.route_to_last_owner() {
        Some((Some(agent), _)) => (
            Some(agent.to_string()),
            Some(PreferredBecause::RepeatedTransfers),
        ),
        _ => match returning_to(journey, contact, &skill, now, cfg) {
            Some(agent) => (Some(agent), Some(PreferredBecause::ReturningPatient)),
            None => (None, None),
        },
    };
    NeedsHuman {
        contact_id: contact.id.clone(),
        patient_id: journey.patient_id,
        site: contact.site.clone(),
        channel: human_channel(contact.channel),
        base_priority: base_priority(contact.intent.as_deref(), &cfg.priority),
        intent: contact.intent.clone(),
        skill,
        assessment,
        preferred_agent,
        preferred_because,
        transcript: if from_bot {
            contact.bot_turns.clone()
        } else {
            Vec::new()
        },
        from_bot,
        cause,
        waiting_since,
        handoff: None,
        red_flag: None,
        contact_channel: Some(contact.channel),
    }
}

/// True while a virtual agent has the contact (by what the journey shows): a bot
/// channel or bot turns, and neither a transfer nor a staff message yet.
fn bot_session(c: &ContactView) -> bool {
    (c.channel == Channel::Iva || !c.bot_turns.is_empty())
        && c.transfers.is_empty()
        && !c.messages.iter().any(|m| m.from == Author::Staff)
}

/// The red flag in what the patient said or how the turn was classified, if any:
/// a patient's message, a bot turn (the patient's words and the intent), or the
/// intent a contact started with.
pub fn red_flag_of(event: &Envelope, cfg: &RoutingConfig) -> Option<RedFlag> {
    match &event.kind {
        EventKind::ContactMessage {
            from: Author::Patient,
            text,
        } => detect(Some(text), None, &cfg.red_flags),
        EventKind::BotTurn {
            intent,
            patient_text,
            ..
        } => detect(patient_text.as_deref(), intent.as_deref(), &cfg.red_flags),
        EventKind::ContactStarted { intent, .. } => detect(None, intent.as_deref(), &cfg.red_flags),
        _ => None,
    }
}

/// The `bot.instruct` command a red flag causes, to the contact's own channel (the
/// bot, the chat or SMS thread, the IVR): what to tell the patient at once. Written
/// with the event that raised it.
pub fn red_flag_commands(journey: &Journey, event: &Envelope, cfg: &RoutingConfig) -> Vec<Command> {
    let Some(contact_id) = event.contact_id.as_ref() else {
        return Vec::new();
    };
    let Some(contact) = journey.contacts.get(contact_id) else {
        return Vec::new();
    };
    if contact.state != JourneyContactState::Open {
        return Vec::new();
    }
    let Some(flag) = red_flag_of(event, cfg) else {
        return Vec::new();
    };
    let mut payload = serde_json::Map::new();
    payload.insert("contact_id".into(), contact_id.to_string().into());
    payload.insert("category".into(), flag.category.clone().into());
    payload.insert("level".into(), Level::Emergency.as_str().into());
    payload.insert("text".into(), flag.instruction.clone().into());
    vec![Command::new(
        CommandType::BotInstruct,
        event.id,
        contact_id.as_str(),
        contact.site.clone(),
        contact.channel,
        event.occurred_at,
        Some(journey.patient_id),
        payload,
    )]
}

/// After a restart, what routing must do for each open contact of the journey:
/// a bot session that has not failed is self-service again; anything else waits for
/// a human from when it started (or was last transferred), so it keeps its place.
pub fn recovery_requests(
    journey: &Journey,
    cfg: &RoutingConfig,
    now: DateTime<Utc>,
) -> Vec<RouteRequest> {
    journey
        .open_contacts()
        .into_iter()
        .map(|c| {
            let unresolved = c.unresolved_bot_exchanges();
            let staff_spoke = c
                .messages
                .iter()
                .any(|m| m.from == crate::event::Author::Staff);
            let bot_session =
                (c.channel == Channel::Iva || !c.bot_turns.is_empty()) && c.transfers.is_empty();
            let handed_off = bot_should_hand_off(unresolved, &cfg.frustration);
            if bot_session && !handed_off && !staff_spoke {
                return self_service(journey, c, cfg);
            }
            let since = c.transfers.last().map(|t| t.at).unwrap_or(c.started_at);
            let cause = Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("recover:{}", c.id).as_bytes());
            RouteRequest::Queue(Box::new(needs_human(
                journey,
                c,
                now,
                cfg,
                handed_off,
                cause,
                Some(since),
            )))
        })
        .collect()
}

/// Decides what routing must do after `event` was applied to `journey`.
pub fn route_request(
    journey: &Journey,
    event: &Envelope,
    cfg: &RoutingConfig,
) -> Option<RouteRequest> {
    let contact_id = event.contact_id.clone()?;
    let contact = journey.contacts.get(&contact_id)?;
    let now = event.occurred_at;
    let to_human = |from_bot: bool| {
        RouteRequest::Queue(Box::new(needs_human(
            journey, contact, now, cfg, from_bot, event.id, None,
        )))
    };
    if contact.state == JourneyContactState::Open {
        if let Some(flag) = red_flag_of(event, cfg) {
            let from_bot = bot_session(contact);
            let mut n = needs_human(journey, contact, now, cfg, from_bot, event.id, None);
            n.raise(flag, cfg);
            return Some(RouteRequest::Queue(Box::new(n)));
        }
    }
    let handing_over = |reason: HandoffReason, skill: Option<String>| {
        let mut n = needs_human(journey, contact, now, cfg, true, event.id, None);
        n.handoff = Some(reason);
        if let Some(skill) = skill {
            n.skill = skill;
        }
        Some(RouteRequest::Queue(Box::new(n)))
    };
    match &event.kind {
        EventKind::BotTurn {
            hand_off: true,
            intent,
            ..
        } if contact.state == JourneyContactState::Open && bot_session(contact) => handing_over(
            HandoffReason::Intent,
            intent
                .as_deref()
                .and_then(|i| cfg.skill_by_intent.get(i).cloned()),
        ),
        EventKind::BotTurn {
            intent,
            patient_text,
            ..
        } if contact.state == JourneyContactState::Open
            && bot_session(contact)
            && asks_for_person(patient_text.as_deref(), intent.as_deref(), &cfg.handoff) =>
        {
            handing_over(HandoffReason::AskedForPerson, None)
        }
        EventKind::ContactMessage {
            from: Author::Patient,
            text,
        } if contact.state == JourneyContactState::Open
            && bot_session(contact)
            && asks_for_person(Some(text), None, &cfg.handoff) =>
        {
            handing_over(HandoffReason::AskedForPerson, None)
        }
        // A reply that closed its own contact (STOP, C...) needs nobody.
        EventKind::ContactStarted { .. } if contact.state != JourneyContactState::Open => None,
        EventKind::ContactStarted { .. } if is_self_service(event) => {
            Some(self_service(journey, contact, cfg))
        }
        EventKind::ContactStarted { .. } => Some(to_human(false)),
        EventKind::BotTurn {
            resolved: false, ..
        } if contact.state == JourneyContactState::Open
            && bot_should_hand_off(contact.unresolved_bot_exchanges(), &cfg.frustration) =>
        {
            handing_over(HandoffReason::Unresolved, None)
        }
        EventKind::ContactTransferred { .. } if contact.state == JourneyContactState::Open => {
            Some(to_human(!contact.bot_turns.is_empty()))
        }
        EventKind::ContactAbandoned => Some(RouteRequest::Abandoned { contact_id }),
        EventKind::ContactEnded { .. } => Some(RouteRequest::Ended {
            contact_id,
            intent: contact.intent.clone(),
        }),
        _ => None,
    }
}

/// The frustration of the patient's latest contact (open first), as the context shows it.
pub fn current_frustration(
    journey: &Journey,
    cfg: &RoutingConfig,
    now: DateTime<Utc>,
) -> Option<Assessment> {
    let contact = journey
        .open_contacts()
        .into_iter()
        .max_by_key(|c| c.started_at)
        .or_else(|| journey.contacts.values().max_by_key(|c| c.started_at))?;
    let skill = cfg.skill_for(contact.skill.as_deref(), contact.intent.as_deref());
    Some(assess(
        &journey_facts(journey, contact, &skill, now),
        &cfg.frustration,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::Limits;
    use crate::rules::frustration::{Level, Signal};
    use serde_json::{json, Value};

    fn ev(n: u128, ty: &str, channel: &str, at: DateTime<Utc>, extra: Value) -> Envelope {
        let mut v = json!({
            "id": Uuid::from_u128(n).to_string(), "type": ty, "occurred_at": at.to_rfc3339(),
            "site": "north", "channel": channel, "patient": {"mrn": "M1"},
        });
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        Envelope::parse(v.to_string().as_bytes(), 1 << 20).unwrap()
    }

    fn run(events: &[Envelope]) -> (Journey, Option<RouteRequest>) {
        let mut j = Journey::new(PatientId::new(), Limits::default());
        let mut last = None;
        for (i, e) in events.iter().enumerate() {
            j.apply(i as u64, e);
            last = route_request(&j, e, &RoutingConfig::default());
        }
        (j, last)
    }

    fn queued(r: Option<RouteRequest>) -> NeedsHuman {
        match r {
            Some(RouteRequest::Queue(n)) => *n,
            other => panic!("expected a queue request, got {other:?}"),
        }
    }

    #[test]
    fn the_third_contact_in_two_days_on_any_channel_is_urgent() {
        let t = Utc::now();
        let (_, r) = run(&[
            ev(
                1,
                "contact.started",
                "voice",
                t - Duration::hours(30),
                json!({"contact_id": "c1", "skill": "scheduling"}),
            ),
            ev(
                2,
                "contact.started",
                "sms",
                t - Duration::hours(5),
                json!({"contact_id": "c2", "skill": "scheduling"}),
            ),
            ev(
                3,
                "contact.started",
                "chat",
                t,
                json!({"contact_id": "c3", "skill": "scheduling"}),
            ),
        ]);
        let n = queued(r);
        assert_eq!(n.assessment.level, Level::Urgent);
        assert!(n.assessment.has(Signal::RepeatContacts));
    }

    #[test]
    fn a_bot_contact_is_self_service_until_it_fails_twice_then_goes_to_a_human_with_the_transcript()
    {
        let t = Utc::now();
        let start = ev(
            1,
            "contact.started",
            "iva",
            t,
            json!({"contact_id": "b1", "intent": "medication_question"}),
        );
        let turn = |n, resolved| {
            ev(
                n,
                "bot.turn",
                "iva",
                t,
                json!({"contact_id": "b1", "resolved": resolved, "patient_text": "q", "bot_text": "a"}),
            )
        };
        let (_, r) = run(std::slice::from_ref(&start));
        match r {
            Some(RouteRequest::SelfService { skill, intent, .. }) => {
                // Kept, so the hand-off and the routing record say what it is about.
                assert_eq!(intent.as_deref(), Some("medication_question"));
                assert_eq!(skill, "nurse_advice");
            }
            other => panic!("expected self-service, got {other:?}"),
        }
        let (_, r) = run(&[start.clone(), turn(2, false)]);
        assert_eq!(r, None);
        let (_, r) = run(&[start.clone(), turn(2, false), turn(3, false)]);
        let n = queued(r);
        assert!(n.from_bot && n.transcript.len() == 2);
        assert_eq!(n.skill, "nurse_advice");
        assert_eq!(n.channel, Channel::Chat);
        let (_, r) = run(&[start, turn(2, true)]);
        assert_eq!(r, None, "a bot that resolves never reaches a queue");
    }

    #[test]
    fn a_patient_transferred_twice_calling_back_is_routed_to_the_last_owner() {
        let t = Utc::now();
        let (_, r) = run(&[
            ev(
                1,
                "contact.started",
                "voice",
                t - Duration::hours(24),
                json!({"contact_id": "c1", "skill": "billing"}),
            ),
            ev(
                2,
                "contact.transferred",
                "voice",
                t - Duration::hours(24),
                json!({"contact_id": "c1", "to": "scheduling", "from_agent": "ag-bill"}),
            ),
            ev(
                3,
                "contact.transferred",
                "voice",
                t - Duration::hours(24),
                json!({"contact_id": "c1", "to": "pharmacy", "from_agent": "ag-sched"}),
            ),
            ev(
                4,
                "contact.ended",
                "voice",
                t - Duration::hours(23),
                json!({"contact_id": "c1", "agent": "ag-pharm"}),
            ),
            ev(
                5,
                "contact.started",
                "voice",
                t,
                json!({"contact_id": "c2", "skill": "pharmacy"}),
            ),
        ]);
        let n = queued(r);
        assert!(n.assessment.has(Signal::RepeatedTransfers));
        assert_eq!(n.preferred_agent.as_deref(), Some("ag-pharm"));
    }

    #[test]
    fn a_red_flag_in_the_first_message_raises_the_contact_to_emergency_with_an_instruction() {
        let t = Utc::now();
        let start = ev(
            1,
            "contact.started",
            "chat",
            t,
            json!({"contact_id": "rf", "skill": "billing"}),
        );
        let msg = ev(
            2,
            "contact.message",
            "chat",
            t,
            json!({"contact_id": "rf", "from": "patient", "text": "I have CHEST PAIN, what do I do?"}),
        );
        let (j, r) = run(&[start, msg.clone()]);
        let n = queued(r);
        assert_eq!(n.assessment.level, Level::Emergency);
        assert!(n.assessment.has(Signal::RedFlag));
        assert_eq!(n.skill, "nurse_advice", "an emergency goes to the nurses");
        assert_eq!(n.red_flag.as_ref().unwrap().category, "chest_pain");
        let cmds = red_flag_commands(&j, &msg, &RoutingConfig::default());
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].command_type, CommandType::BotInstruct);
        assert_eq!(cmds[0].caused_by, msg.id, "within that event");
        assert_eq!(cmds[0].channel, Channel::Chat);
        assert!(cmds[0].payload["text"].as_str().unwrap().contains("911"));
        // The staff's words never raise anything.
        let staff = ev(
            3,
            "contact.message",
            "chat",
            t,
            json!({"contact_id": "rf", "from": "staff", "text": "any chest pain?"}),
        );
        assert!(red_flag_commands(&j, &staff, &RoutingConfig::default()).is_empty());
    }

    #[test]
    fn a_patient_asking_the_bot_for_a_person_is_handed_over_at_once() {
        let t = Utc::now();
        let start = ev(
            1,
            "contact.started",
            "iva",
            t,
            json!({"contact_id": "p1", "intent": "scheduling"}),
        );
        let turn = ev(
            2,
            "bot.turn",
            "iva",
            t,
            json!({"contact_id": "p1", "resolved": true, "patient_text": "Representative!"}),
        );
        let n = queued(run(&[start.clone(), turn]).1);
        assert!(n.from_bot);
        assert_eq!(n.handoff, Some(HandoffReason::AskedForPerson));
        assert_eq!(n.contact_channel, Some(Channel::Iva));
        let billing = ev(
            3,
            "bot.turn",
            "iva",
            t,
            json!({"contact_id": "p1", "resolved": false, "intent": "billing", "hand_off": true}),
        );
        let n = queued(run(&[start, billing]).1);
        assert_eq!(n.handoff, Some(HandoffReason::Intent));
        assert_eq!(n.skill, "billing", "billing hands over to billing");
    }

    #[test]
    fn an_ended_or_abandoned_contact_leaves_routing() {
        let t = Utc::now();
        let (_, r) = run(&[
            ev(
                1,
                "contact.started",
                "voice",
                t,
                json!({"contact_id": "c1"}),
            ),
            ev(
                2,
                "contact.abandoned",
                "voice",
                t,
                json!({"contact_id": "c1"}),
            ),
        ]);
        assert!(matches!(r, Some(RouteRequest::Abandoned { .. })));
    }
}
